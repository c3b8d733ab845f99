//! The `unisono` binary: `unisono serve [flags]` runs the server; `unisono token …` mints a
//! JWT for local use with the same secret `serve` uses; `unisono cluster status` lists a
//! cluster's live nodes from its Redis registry.

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
    /// A cluster's state, read from its Redis (no node is asked, so a dead one never delays it).
    #[command(subcommand)]
    Cluster(ClusterCmd),
}

#[derive(Subcommand)]
enum ClusterCmd {
    /// The live nodes: id, address, age, rooms owned, device hubs run, connections.
    Status(StatusArgs),
}

#[derive(Args)]
struct StatusArgs {
    /// The cluster's Redis (as given to its nodes' `serve --redis-url`).
    #[arg(long, env = "UNISONO_REDIS_URL", default_value = "redis://127.0.0.1:6379")]
    redis_url: String,
    /// The deployment's key prefix (`serve --redis-prefix`).
    #[arg(long, env = "UNISONO_REDIS_PREFIX", default_value = "unisono")]
    redis_prefix: String,
    /// Print the nodes as a JSON array instead of a table.
    #[arg(long)]
    json: bool,
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

/// `1h02m`, `3m05s`, `42s`.
fn age(ms: f64) -> String {
    let s = (ms.max(0.0) / 1000.0) as u64;
    match s {
        0..60 => format!("{s}s"),
        60..3600 => format!("{}m{:02}s", s / 60, s % 60),
        _ => format!("{}h{:02}m", s / 3600, s % 3600 / 60),
    }
}

async fn cluster_status(a: StatusArgs) -> anyhow::Result<()> {
    let nodes = unisono_server::cluster::status(&a.redis_url, &a.redis_prefix)
        .await
        .with_context(|| format!("reading the cluster registry at {}", a.redis_url))?;
    if a.json {
        println!("{}", serde_json::to_string_pretty(&nodes)?);
        return Ok(());
    }
    if nodes.is_empty() {
        println!("no live nodes under prefix {:?} at {}", a.redis_prefix, a.redis_url);
        return Ok(());
    }
    let now = unisono_server::time::now_ms();
    let width = nodes.iter().map(|n| n.node_id.len()).max().unwrap_or(4).max(4);
    let addr = nodes.iter().map(|n| n.address.len()).max().unwrap_or(7).max(7);
    println!(
        "{:width$}  {:addr$}  {:>7}  {:>6}  {:>11}  {:>11}",
        "NODE", "ADDRESS", "AGE", "ROOMS", "DEVICE HUBS", "CONNECTIONS"
    );
    for n in &nodes {
        println!(
            "{:width$}  {:addr$}  {:>7}  {:>6}  {:>11}  {:>11}",
            n.node_id,
            n.address,
            age(now - n.started_at),
            n.rooms,
            n.device_hubs,
            n.connections
        );
    }
    let rooms: usize = nodes.iter().map(|n| n.rooms).sum();
    let conns: usize = nodes.iter().map(|n| n.connections).sum();
    println!("{} nodes, {rooms} rooms, {conns} connections", nodes.len());
    Ok(())
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
        Cmd::Cluster(ClusterCmd::Status(a)) => cluster_status(a).await,
    }
}
