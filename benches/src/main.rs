//! `unisono-bench`: the load generator behind `docs/benchmarks.md`.
//!
//! Scenarios (each prints a table and then one JSON line of figures):
//!
//! - `idle-rss --counts 1000,10000,19000`: server memory per idle connection;
//! - `fanout --members 10000 --rate 10 --seconds 10`: one room, push latency to every member;
//! - `rooms --rooms 2000 --members 5 --seconds 10 [--max]`: many small rooms, deliveries per
//!   second and server CPU per delivery.
//!
//! By default each scenario starts the release server (`--server-bin`) on a fresh SQLite file;
//! `--url` targets a running server instead. Connections are held by worker processes
//! (`unisono-bench worker …`, at most `--per-worker` each) because the open-file limit is per
//! process; the coordinator gathers their JSON results over stdout.

mod pool;
mod proto;
mod report;
mod roles;
mod scenarios;
mod server;
mod stats;
mod sys;
mod worker;

use std::{path::PathBuf, process::ExitCode};

use clap::{Args, Parser, Subcommand};

#[derive(Debug, Parser)]
#[command(name = "unisono-bench", about = "Load generator for Unisono's benchmarks (docs/benchmarks.md)")]
struct Cli {
    #[command(flatten)]
    target: Target,
    #[command(subcommand)]
    command: Cmd,
}

/// Where the server is and how clients are spread.
#[derive(Debug, Clone, Args)]
pub struct Target {
    /// The `unisono` binary to start for each run.
    #[arg(long, global = true, default_value = "target/release/unisono")]
    pub server_bin: PathBuf,
    /// Use a running server (`ws://HOST:PORT/ws`) instead of starting one. Start it with the
    /// raised limits the scenarios need (see docs/benchmarks.md).
    #[arg(long, global = true)]
    pub url: Option<String>,
    /// With `--url`: the server's pid, to read its memory and CPU time from /proc.
    #[arg(long, global = true)]
    pub server_pid: Option<u32>,
    /// Most connections per worker process (the open-file limit is per process).
    #[arg(long, global = true, default_value_t = 10_000, value_parser = clap::value_parser!(u32).range(1..=15_000))]
    pub per_worker: u32,
    /// Connections being set up at once, over all workers.
    #[arg(long, global = true, default_value_t = 200)]
    pub connect_concurrency: usize,
    /// Servers to start: with more than one, a cluster over `--redis-url` and a fresh
    /// PostgreSQL database, each room's members spread over the nodes (host on one, the others
    /// round-robin), CPU and memory summed over the nodes.
    #[arg(long, global = true, default_value_t = 1, value_parser = clap::value_parser!(u32).range(1..=8))]
    pub nodes: u32,
    /// Store the started servers' data in a fresh PostgreSQL database (always so with
    /// `--nodes` above 1) instead of a SQLite file.
    #[arg(long, global = true)]
    pub postgres: bool,
    /// The PostgreSQL server for `--postgres` and clusters (a database is created and dropped).
    #[arg(long, global = true, default_value = "postgres://postgres@127.0.0.1:5432")]
    pub pg_url: String,
    /// The Redis of a cluster (`--nodes` above 1); its keys get a prefix of the run's own.
    #[arg(long, global = true, default_value = "redis://127.0.0.1:6379")]
    pub redis_url: String,
}

#[derive(Debug, Subcommand)]
enum Cmd {
    /// Server memory with N idle connections (server restarted for each N).
    IdleRss(scenarios::idle_rss::Opts),
    /// One room: a host seeks, every member's arrival time is recorded.
    Fanout(scenarios::fanout::Opts),
    /// Many small rooms: every host seeks; throughput, latency, server CPU per delivery.
    Rooms(scenarios::rooms::Opts),
    /// (internal) A worker process holding connections for a scenario.
    #[command(hide = true)]
    Worker {
        /// The run's epoch in µs since the Unix epoch (seek positions are relative to it).
        #[arg(long)]
        t0_us: u64,
        #[command(subcommand)]
        mode: worker::Mode,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    if let Err(e) = sys::raise_nofile_limit() {
        eprintln!("unisono-bench: could not raise the open-file limit: {e:#}");
    }
    let runtime = match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
        Ok(r) => r,
        Err(e) => {
            eprintln!("unisono-bench: tokio runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let result = runtime.block_on(async {
        match cli.command {
            Cmd::IdleRss(o) => scenarios::idle_rss::run(&cli.target, o).await,
            Cmd::Fanout(o) => scenarios::fanout::run(&cli.target, o).await,
            Cmd::Rooms(o) => scenarios::rooms::run(&cli.target, o).await,
            Cmd::Worker { t0_us, mode } => {
                let Some(url) = cli.target.url.clone() else {
                    return Err(anyhow::anyhow!("worker needs --url"));
                };
                // A cluster's nodes, comma-separated.
                let urls = url.split(',').map(str::to_owned).collect();
                worker::run(urls, t0_us, cli.target.connect_concurrency, mode).await
            }
        }
    });
    let code = match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("unisono-bench: {e:#}");
            ExitCode::FAILURE
        }
    };
    // Thousands of connection tasks: exiting is faster than dropping the runtime.
    std::process::exit(if code == ExitCode::SUCCESS { 0 } else { 1 })
}
