//! `idle-rss`: what an idle connection costs the server in memory.
//!
//! For each N: a fresh server (baseline VmRSS with no connection), N connections opened by
//! workers, all past `connected`, a settle pause, VmRSS again. Reports the delta and the delta
//! per connection (target ≤ 8 KiB).

use std::time::Duration;

use anyhow::{Result, bail};
use clap::Args;
use serde_json::json;

use super::{print_machine_note, workers_for};
use crate::{
    Target,
    pool::{Pool, split},
    report::{Table, print_json, thousands},
    server::Server,
    sys,
};

#[derive(Debug, Args)]
pub struct Opts {
    /// Connection counts to measure, one server each.
    #[arg(long, value_delimiter = ',', default_value = "1000,10000,19000")]
    counts: Vec<usize>,
    /// Seconds to wait after the last connection before reading the server's memory.
    #[arg(long, default_value_t = 2.0)]
    settle: f64,
}

/// Target: server memory per idle connection.
const TARGET_KIB: f64 = 8.0;

pub async fn run(target: &Target, opts: Opts) -> Result<()> {
    if target.url.is_some() {
        eprintln!(
            "note: with --url the server is not restarted between counts; deltas include earlier runs' leftovers"
        );
    }
    let mut table = Table::new(&[
        "connections",
        "connected",
        "failed",
        "baseline RSS",
        "RSS",
        "delta",
        "KiB/conn",
        "setup",
        "client KiB/conn",
    ]);
    let mut figures = Vec::new();
    for &n in &opts.counts {
        eprintln!("idle-rss: {n} connections");
        let mut server = Server::start(target)?;
        let pid = server.require_pid("idle-rss")?;
        tokio::time::sleep(Duration::from_secs(1)).await;
        let baseline = sys::rss_kib(pid)?;

        let workers = workers_for(target, n);
        let modes =
            split(n, workers).into_iter().map(|c| vec!["idle".into(), "--clients".into(), c.to_string()]).collect();
        let mut pool = Pool::spawn(target, &server.urls(), sys::now_us(), modes)?;
        let ready = pool.wait_ready(n as u64, Duration::from_secs(300)).await?;
        tokio::time::sleep(Duration::from_secs_f64(opts.settle)).await;
        server.check_alive()?;
        let rss = sys::rss_kib(pid)?;
        pool.shutdown().await;
        drop(server);

        let delta = rss.saturating_sub(baseline);
        let per_conn = if ready.connected > 0 { delta as f64 / ready.connected as f64 } else { f64::NAN };
        let client_per_conn =
            if ready.connected > 0 { ready.rss_kib as f64 / ready.connected as f64 } else { f64::NAN };
        table.row(vec![
            thousands(n as u64),
            thousands(ready.connected),
            thousands(ready.failed),
            format!("{:.1} MiB", baseline as f64 / 1024.0),
            format!("{:.1} MiB", rss as f64 / 1024.0),
            format!("{:.1} MiB", delta as f64 / 1024.0),
            format!("{per_conn:.2}"),
            format!("{:.1} s", ready.secs),
            format!("{client_per_conn:.1}"),
        ]);
        for e in &ready.errors {
            eprintln!("  connection errors: {e}");
        }
        figures.push(json!({
            "connections": n,
            "connected": ready.connected,
            "failed": ready.failed,
            "errors": ready.errors,
            "baseline_rss_kib": baseline,
            "rss_kib": rss,
            "delta_kib": delta,
            "kib_per_connection": per_conn,
            "setup_secs": ready.secs,
            "workers": workers,
            "client_rss_kib": ready.rss_kib,
        }));
    }
    if figures.is_empty() {
        bail!("no counts given");
    }
    println!("\nidle-rss: server VmRSS with idle connections (target ≤ {TARGET_KIB} KiB per connection)");
    table.print();
    print_machine_note(false);
    print_json(&json!({ "scenario": "idle-rss", "target_kib_per_connection": TARGET_KIB, "runs": figures }));
    Ok(())
}
