//! The `unisono` binary: `unisono serve [flags]`.

use clap::{Parser, Subcommand};
use tracing_subscriber::EnvFilter;
use unisono_server::config::{Config, LogFormat};

#[derive(Parser)]
#[command(name = "unisono", version, about = "Real-time sync engine: listening rooms in lockstep")]
struct Cli {
    #[command(subcommand)]
    command: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Run the server (embedded defaults: a SQLite file, no other service).
    Serve(Config),
}

fn init_tracing(format: LogFormat) {
    let filter = EnvFilter::try_from_env("UNISONO_LOG").unwrap_or_else(|_| EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr);
    match format {
        LogFormat::Json => builder.json().init(),
        LogFormat::Text => builder.init(),
    }
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    match cli.command {
        Cmd::Serve(config) => {
            init_tracing(config.log_format);
            unisono_server::server::run(config).await
        }
    }
}
