//! `rooms`: many small rooms (host + members). Every host seeks `--rate` times a second,
//! staggered over the first second, or with `--max` as fast as its replies come back.
//!
//! Figures: deliveries per second (a `playback-seeked` reaching one member, host included),
//! latency over all deliveries, and the server's CPU time per delivery, from `/proc/PID/stat`
//! before and after the run (target ≥ 150k deliveries per CPU-second).

use std::{collections::BTreeMap, time::Duration};

use anyhow::{Result, bail};
use clap::Args;
use serde_json::json;
use tokio::time::Instant;

use super::print_machine_note;
use crate::{
    Target,
    pool::{Pool, split},
    report::{print_json, print_pairs, thousands},
    server::Server,
    stats::{Histogram, fmt_ms},
    sys,
};

#[derive(Debug, Args)]
pub struct Opts {
    #[arg(long, default_value_t = 2000)]
    rooms: usize,
    /// Members per room, the host included.
    #[arg(long, default_value_t = 5)]
    members: usize,
    /// Seconds of seeking.
    #[arg(long, default_value_t = 10.0)]
    seconds: f64,
    /// Seeks per second per host (ignored with --max).
    #[arg(long, default_value_t = 1.0)]
    rate: f64,
    /// Unpaced: each host seeks again as soon as its previous seek is answered.
    #[arg(long)]
    max: bool,
    /// Seconds to wait for the last pushes after the last reply.
    #[arg(long, default_value_t = 2.0)]
    drain: f64,
}

/// Target: deliveries per second of server CPU.
const TARGET_PER_CPU_SEC: f64 = 150_000.0;

pub async fn run(target: &Target, opts: Opts) -> Result<()> {
    if opts.members < 1 || opts.rooms < 1 {
        bail!("need at least one room of at least one member");
    }
    let mut server = Server::start(target)?;
    let t0 = sys::now_us();
    let rooms_per_worker = (target.per_worker as usize / opts.members).max(1);
    let workers = opts.rooms.div_ceil(rooms_per_worker);
    let mut offset = 0;
    let mut modes = Vec::new();
    for n in split(opts.rooms, workers) {
        let mut m: Vec<String> = vec![
            "rooms".into(),
            "--rooms".into(),
            n.to_string(),
            "--offset".into(),
            offset.to_string(),
            "--total-rooms".into(),
            opts.rooms.to_string(),
            "--room-size".into(),
            opts.members.to_string(),
            "--seconds".into(),
            opts.seconds.to_string(),
            "--rate".into(),
            opts.rate.to_string(),
            "--drain".into(),
            opts.drain.to_string(),
        ];
        if opts.max {
            m.push("--max".into());
        }
        modes.push(m);
        offset += n;
    }
    let total = (opts.rooms * opts.members) as u64;
    eprintln!("rooms: {} rooms × {} members = {total} connections", opts.rooms, opts.members);
    let mut pool = Pool::spawn(target, &server.urls(), t0, modes)?;
    let ready = pool.wait_ready(total, Duration::from_secs(600)).await?;
    for e in &ready.errors {
        eprintln!("  setup errors: {e}");
    }
    ready.require_all("connections")?;
    tokio::time::sleep(Duration::from_secs(1)).await;
    server.check_alive()?;
    let server_rss_kib = server.rss_kib();

    let pace = if opts.max { "unpaced (--max)".to_owned() } else { format!("{}/s per host", opts.rate) };
    eprintln!("rooms: seeking {pace} for {} s", opts.seconds);
    let cpu = server.cpu()?;
    let cluster = super::ClusterMeter::start(&server, target).await?;
    let started = Instant::now();
    pool.command("go").await?;
    let results = pool.wait_results(Duration::from_secs_f64(opts.seconds + opts.drain + 60.0)).await?;
    let wall = started.elapsed().as_secs_f64();
    let server_cpu_time = cpu.map(|c| c.elapsed()).transpose()?;
    let server_cpu = server_cpu_time.map(|t| t.total());
    let cluster = match cluster {
        Some(c) => Some(c.finish(server.ws_urls.len()).await?),
        None => None,
    };
    server.check_alive()?;
    pool.shutdown().await;

    let mut all = Histogram::default();
    let (mut sent, mut ok, mut failed) = (0u64, 0u64, 0u64);
    let mut errors: BTreeMap<String, u64> = BTreeMap::new();
    let mut ended: BTreeMap<String, u64> = BTreeMap::new();
    let mut client_cpu = 0.0;
    for r in &results {
        all.merge_sparse(&r.hist);
        sent += r.hosts.sent;
        ok += r.hosts.ok;
        failed += r.hosts.failed;
        for (k, v) in &r.hosts.errors {
            *errors.entry(k.clone()).or_default() += v;
        }
        for (k, v) in &r.ended {
            *ended.entry(k.clone()).or_default() += v;
        }
        client_cpu += r.cpu_secs;
    }
    let deliveries = all.count();
    let expected = ok * opts.members as u64;
    let missed = expected.saturating_sub(deliveries);
    let per_sec = deliveries as f64 / opts.seconds.max(1e-9);
    let lat = all.summary_ms();
    let us_per_delivery = server_cpu.filter(|_| deliveries > 0).map(|s| s * 1e6 / deliveries as f64);
    let per_cpu_sec = server_cpu.filter(|s| *s > 0.0).map(|s| deliveries as f64 / s);

    println!(
        "\nrooms: {} rooms × {} members (host included), {pace}, {} s (target ≥ {} deliveries per server CPU-second)",
        thousands(opts.rooms as u64),
        opts.members,
        opts.seconds,
        thousands(TARGET_PER_CPU_SEC as u64)
    );
    let opt = |v: Option<f64>, f: &dyn Fn(f64) -> String| v.map(f).unwrap_or_else(|| "-".into());
    print_pairs(&[
        ("connections", format!("{} of {} ({:.1} s setup)", thousands(ready.connected), thousands(total), ready.secs)),
        (
            "memory after setup: server / load generator",
            format!(
                "{} / {:.0} MiB",
                server_rss_kib.map(|k| format!("{:.0} MiB", k as f64 / 1024.0)).unwrap_or_else(|| "-".into()),
                ready.rss_kib as f64 / 1024.0
            ),
        ),
        ("seeks sent / ok / failed", format!("{} / {} / {}", thousands(sent), thousands(ok), thousands(failed))),
        ("seeks/s", format!("{:.0}", ok as f64 / opts.seconds.max(1e-9))),
        ("deliveries", format!("{} of {}", thousands(deliveries), thousands(expected))),
        ("missed deliveries", thousands(missed)),
        ("deliveries/s", format!("{per_sec:.0}")),
        ("latency p50", fmt_ms(lat.p50_ms)),
        ("latency p99", fmt_ms(lat.p99_ms)),
        ("latency max", fmt_ms(lat.max_ms)),
        ("server CPU", server_cpu_time.map(|t| format!("{t} over {wall:.1} s")).unwrap_or_else(|| "-".into())),
        ("server CPU per delivery", opt(us_per_delivery, &|u| format!("{u:.2} µs"))),
        ("deliveries per server CPU-second", opt(per_cpu_sec, &|d| format!("{d:.0}"))),
        ("load generator CPU (workers)", format!("{client_cpu:.2} s")),
        ("connections ended during run", format!("{ended:?}")),
    ]);
    if !errors.is_empty() {
        println!("  seek errors: {errors:?}");
    }
    if let Some(c) = &cluster {
        c.print(deliveries, ok);
    }
    print_machine_note(true);
    print_json(&json!({
        "cluster": cluster.as_ref().map(|c| c.json(deliveries, ok)),
        "server_rss_kib_after_setup": server_rss_kib,
        "client_rss_kib_after_setup": ready.rss_kib,
        "scenario": "rooms",
        "rooms": opts.rooms,
        "members": opts.members,
        "max": opts.max,
        "rate": opts.rate,
        "seconds": opts.seconds,
        "connections": ready.connected,
        "setup_failures": ready.failed,
        "setup_secs": ready.secs,
        "seeks_sent": sent,
        "seeks_ok": ok,
        "seeks_failed": failed,
        "seek_errors": errors,
        "deliveries": deliveries,
        "deliveries_expected": expected,
        "deliveries_missed": missed,
        "deliveries_per_sec": per_sec,
        "latency": lat,
        "server_cpu_secs": server_cpu,
        "server_cpu": server_cpu_time,
        "server_cpu_us_per_delivery": us_per_delivery,
        "deliveries_per_server_cpu_sec": per_cpu_sec,
        "client_cpu_secs": client_cpu,
        "wall_secs": wall,
        "connections_ended": ended,
        "target_deliveries_per_cpu_sec": TARGET_PER_CPU_SEC,
    }));
    Ok(())
}
