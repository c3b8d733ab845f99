//! `fanout`: one room, one host, N members. The host seeks `--rate` times a second for
//! `--seconds`; every member records when each `playback-seeked` arrives.
//!
//! Figures: per push, the time until the **last** member had it (p50/p99/max over pushes;
//! target p99 ≤ 50 ms), the same over all deliveries, missed deliveries, and the server's CPU
//! per delivery.

use std::{collections::HashMap, time::Duration};

use anyhow::{Context, Result};
use clap::Args;
use serde_json::json;
use tokio::{
    sync::{oneshot, watch},
    time::Instant,
};

use super::{print_machine_note, workers_for};
use crate::{
    Target,
    pool::{Pool, split},
    proto,
    report::{print_json, print_pairs, thousands},
    roles::{self, HostPlan, Shared},
    server::Server,
    stats::{Histogram, PushArrivals, fmt_ms},
    sys,
};

#[derive(Debug, Args)]
pub struct Opts {
    /// Members besides the host.
    #[arg(long, default_value_t = 10_000)]
    members: usize,
    /// Seeks per second.
    #[arg(long, default_value_t = 10.0)]
    rate: f64,
    /// Seconds of seeking.
    #[arg(long, default_value_t = 10.0)]
    seconds: f64,
    /// Seconds to wait for the last pushes after the last reply.
    #[arg(long, default_value_t = 2.0)]
    drain: f64,
}

/// Target: p99 of the time until the last member has a push.
const TARGET_P99_MS: f64 = 50.0;

pub async fn run(target: &Target, opts: Opts) -> Result<()> {
    let mut server = Server::start(target)?;
    let t0 = sys::now_us();

    // The host creates the room and keeps reading (member-joined storms) until the start.
    let mut host_ws = proto::connect(&server.ws_url).await.context("host connect")?;
    let code = proto::create_room(&mut host_ws, "fanout").await?;
    let (go_tx, go_rx) = watch::channel(None);
    let (done_tx, done_rx) = oneshot::channel();
    let plan = HostPlan {
        offset: Duration::ZERO,
        interval: Some(Duration::from_secs_f64(1.0 / opts.rate.max(0.001))),
        seconds: Duration::from_secs_f64(opts.seconds),
    };
    tokio::spawn(roles::host(host_ws, plan, go_rx, Shared::new(t0, false), false, true, done_tx));

    eprintln!("fanout: room {code}, {} members joining", opts.members);
    let workers = workers_for(target, opts.members);
    let mut offset = 0;
    let mut modes = Vec::new();
    for n in split(opts.members, workers) {
        modes.push(vec![
            "members".into(),
            "--code".into(),
            code.clone(),
            "--clients".into(),
            n.to_string(),
            "--offset".into(),
            offset.to_string(),
        ]);
        offset += n;
    }
    let mut pool = Pool::spawn(target, &server.urls(), t0, modes)?;
    let ready = pool.wait_ready(opts.members as u64, Duration::from_secs(600)).await?;
    for e in &ready.errors {
        eprintln!("  join errors: {e}");
    }
    ready.require_all("members")?;
    // Let the last member-joined pushes drain before measuring.
    tokio::time::sleep(Duration::from_secs(1)).await;
    server.check_alive()?;
    let server_rss_kib = server.rss_kib();

    eprintln!("fanout: seeking {}×/s for {} s", opts.rate, opts.seconds);
    let cpu = server.cpu()?;
    let cluster = super::ClusterMeter::start(&server, target).await?;
    pool.command("go").await?;
    let started = Instant::now();
    let _ = go_tx.send(Some(started));
    let host = done_rx.await.context("host task ended without an outcome")?;
    let send_secs = started.elapsed().as_secs_f64();
    tokio::time::sleep(Duration::from_secs_f64(opts.drain)).await;
    pool.command("report").await?;
    let results = pool.wait_results(Duration::from_secs(60)).await?;
    let server_cpu_time = cpu.map(|c| c.elapsed()).transpose()?;
    let server_cpu = server_cpu_time.map(|t| t.total());
    let cluster = match cluster {
        Some(c) => Some(c.finish(server.ws_urls.len()).await?),
        None => None,
    };
    server.check_alive()?;
    pool.shutdown().await;

    // Merge: per push, the slowest member and how many members had it.
    let mut all = Histogram::default();
    let mut per_push: HashMap<u64, PushArrivals> = HashMap::new();
    let mut ended: HashMap<String, u64> = HashMap::new();
    let mut client_cpu = 0.0;
    let mut malformed = 0;
    for r in &results {
        all.merge_sparse(&r.hist);
        for (key, a) in &r.per_push {
            let e = per_push.entry(*key).or_default();
            e.max_us = e.max_us.max(a.max_us);
            e.count += a.count;
        }
        for (k, v) in &r.ended {
            *ended.entry(k.clone()).or_default() += v;
        }
        client_cpu += r.cpu_secs;
        malformed += r.malformed;
    }
    let members = ready.connected;
    let mut last_member = Histogram::default();
    let mut incomplete = 0u64;
    let mut missed = 0u64;
    // Per push in send order: [sent at (ms after the first seek), last member's latency (ms)].
    let first_key = host.keys.first().copied().unwrap_or(0);
    let mut series = Vec::with_capacity(host.keys.len());
    for key in &host.keys {
        let a = per_push.get(key).copied().unwrap_or_default();
        series.push([(key - first_key) as f64 / 1000.0, a.max_us as f64 / 1000.0]);
        missed += members.saturating_sub(a.count);
        if a.count >= members {
            last_member.record(a.max_us);
        } else {
            incomplete += 1;
        }
    }
    let deliveries = all.count();
    let last = last_member.summary_ms();
    let every = all.summary_ms();
    let per_cpu_sec = server_cpu.filter(|s| *s > 0.0).map(|s| deliveries as f64 / s);
    // Server and load generator share this machine's cores: a push is not at its last member
    // before the CPU work of delivering it and reading it everywhere is done, spread over every
    // core at best. Above this floor, the rest is the server's (or the scheduler's).
    let cores = super::cores() as f64;
    let pushes = host.ok.max(1) as f64;
    let cpu_per_push_ms = server_cpu.map(|s| (s * 1e3 / pushes, client_cpu * 1e3 / pushes));
    let floor_ms = cpu_per_push_ms.map(|(s, c)| (s + c) / cores);

    println!(
        "\nfanout: 1 room, {} members + host, {} seeks/s for {} s (target p99 to the last member ≤ {TARGET_P99_MS} ms)",
        thousands(members),
        opts.rate,
        opts.seconds
    );
    print_pairs(&[
        (
            "members joined",
            format!("{} of {} ({:.1} s)", thousands(members), thousands(opts.members as u64), ready.secs),
        ),
        (
            "memory after setup: server / load generator",
            format!(
                "{} / {:.0} MiB",
                server_rss_kib.map(|k| format!("{:.0} MiB", k as f64 / 1024.0)).unwrap_or_else(|| "-".into()),
                ready.rss_kib as f64 / 1024.0
            ),
        ),
        ("seeks sent / ok / failed", format!("{} / {} / {}", host.sent, host.ok, host.failed)),
        ("deliveries", format!("{} of {}", thousands(deliveries), thousands(host.keys.len() as u64 * members))),
        ("missed deliveries", thousands(missed)),
        ("pushes not reaching every member", thousands(incomplete)),
        ("last member p50", fmt_ms(last.p50_ms)),
        ("last member p99", fmt_ms(last.p99_ms)),
        ("last member max", fmt_ms(last.max_ms)),
        ("all deliveries p50", fmt_ms(every.p50_ms)),
        ("all deliveries p99", fmt_ms(every.p99_ms)),
        ("all deliveries max", fmt_ms(every.max_ms)),
        ("deliveries/s", format!("{:.0}", deliveries as f64 / send_secs.max(1e-9))),
        ("server CPU", server_cpu_time.map(|t| t.to_string()).unwrap_or_else(|| "-".into())),
        ("deliveries per server CPU-second", per_cpu_sec.map(|d| format!("{d:.0}")).unwrap_or_else(|| "-".into())),
        ("load generator CPU (workers)", format!("{client_cpu:.2} s")),
        (
            "CPU per push: server / load generator",
            cpu_per_push_ms.map(|(s, c)| format!("{s:.1} / {c:.1} ms")).unwrap_or_else(|| "-".into()),
        ),
        (
            "last-member floor on these cores",
            floor_ms
                .map(|f| format!("{f:.1} ms ((server + load generator CPU per push) / {cores} cores)"))
                .unwrap_or_else(|| "-".into()),
        ),
        ("connections ended during run", format!("{ended:?}")),
    ]);
    if !host.errors.is_empty() {
        println!("  seek errors: {:?}", host.errors);
    }
    if malformed > 0 {
        println!("  malformed frames: {malformed}");
    }
    if let Some(c) = &cluster {
        c.print(deliveries, host.ok);
    }
    print_machine_note(true);
    print_json(&json!({
        "cluster": cluster.as_ref().map(|c| c.json(deliveries, host.ok)),
        "server_rss_kib_after_setup": server_rss_kib,
        "client_rss_kib_after_setup": ready.rss_kib,
        "scenario": "fanout",
        "members": opts.members,
        "members_joined": members,
        "join_failures": ready.failed,
        "join_secs": ready.secs,
        "rate": opts.rate,
        "seconds": opts.seconds,
        "seeks_sent": host.sent,
        "seeks_ok": host.ok,
        "seeks_failed": host.failed,
        "seek_errors": host.errors,
        "deliveries": deliveries,
        "deliveries_missed": missed,
        "pushes_incomplete": incomplete,
        "last_member": last,
        "all_deliveries": every,
        "deliveries_per_sec": deliveries as f64 / send_secs.max(1e-9),
        "server_cpu_secs": server_cpu,
        "server_cpu": server_cpu_time,
        "deliveries_per_server_cpu_sec": per_cpu_sec,
        "client_cpu_secs": client_cpu,
        "cpu_per_push_ms": cpu_per_push_ms.map(|(s, c)| json!({ "server": s, "load_generator": c })),
        "last_member_floor_ms": floor_ms,
        "cores": cores,
        "connections_ended": ended,
        "target_p99_ms": TARGET_P99_MS,
        "per_push_last_member_ms": series,
    }));
    Ok(())
}
