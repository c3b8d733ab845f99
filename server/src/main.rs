//! The `unisono` binary: `unisono serve [flags]` runs the server; `unisono token …` mints a
//! JWT for local use with the same secret `serve` uses.

use std::{path::PathBuf, time::Duration};

use anyhow::{Context, bail};
use clap::{Args, Parser, Subcommand};
use tracing_subscriber::EnvFilter;
use unisono_server::{
    auth::{Auth, Role, load_or_create_secret},
    config::{AuthConfig, Config, LogFormat},
};

#[derive(Parser)]
#[command(name = "unisono", version, about = "Real-time sync engine: listening rooms in lockstep")]
struct Cli {
    #[command(subcommand)]
    command: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Run the server (embedded defaults: a SQLite file, no other service).
    Serve(Box<Config>),
    /// Print a signed token (HS256 JWT) on the last line of output.
    Token(TokenArgs),
}

#[derive(Args)]
struct TokenArgs {
    /// The tenant (seed 004's systemId) everything the token touches is scoped to.
    #[arg(long)]
    tenant: String,
    #[arg(long, value_enum)]
    role: Role,
    /// Subject: a user name or a device id.
    #[arg(long, default_value = "local")]
    sub: String,
    /// Validity: seconds, or a number with s, m, h or d.
    #[arg(long, default_value = "24h")]
    ttl: String,
    /// Folder holding the generated secret (same default as `serve`).
    #[arg(long, env = "UNISONO_DATA_DIR", default_value = "data")]
    data_dir: PathBuf,
    #[command(flatten)]
    auth: AuthConfig,
}

fn parse_ttl(s: &str) -> anyhow::Result<Duration> {
    let s = s.trim();
    let (num, unit) = match s.find(|c: char| !c.is_ascii_digit()) {
        Some(i) => s.split_at(i),
        None => (s, "s"),
    };
    let n: u64 = num.parse().with_context(|| format!("bad --ttl {s:?}"))?;
    let secs = match unit {
        "s" => n,
        "m" => n * 60,
        "h" => n * 3600,
        "d" => n * 86_400,
        _ => bail!("bad --ttl unit {unit:?}: use s, m, h or d"),
    };
    Ok(Duration::from_secs(secs))
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
            unisono_server::server::run(*config).await
        }
        Cmd::Token(t) => {
            let secret = load_or_create_secret(t.auth.jwt_secret.as_deref(), &t.data_dir)
                .with_context(|| format!("reading the JWT secret in {}", t.data_dir.display()))?;
            let auth = Auth::new(&secret, false, 1);
            let token = auth.mint(&t.sub, &t.tenant, t.role, parse_ttl(&t.ttl)?).context("signing the token")?;
            println!("{token}");
            Ok(())
        }
    }
}
