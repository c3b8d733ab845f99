//! Slow consumer: one member stops reading; the others still get every push within 100 ms and
//! the server's memory stays bounded (the stalled session is cut off, not buffered for).
//! Kept in its own test binary so it does not share the CPU with the other suites' servers.

use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use futures_util::SinkExt;
use serde_json::json;
use tokio_tungstenite::tungstenite::Message;
use unisono_e2e::{Client, Server, WAIT, eventually, song, temp_dir};

#[tokio::test]
async fn a_member_that_stops_reading_never_delays_the_others_and_memory_stays_bounded() -> Result<()> {
    // The database lives in tmpfs: this test is about fan-out, not about the disk's fsync latency.
    let dir = temp_dir("slow");
    let shm = std::path::Path::new("/dev/shm");
    let db =
        if shm.is_dir() { shm.join(format!("unisono-slow-{}.db", std::process::id())) } else { dir.join("unisono.db") };
    let server = Server::start_with(
        &format!("sqlite:{}", db.display()),
        &["--session-queue", "64", "--frames-per-sec", "100000"],
        dir,
    )?;
    let mut host = Client::connect(&server).await?;
    let code = host.ok("create-room", json!({})).await?["code"].as_str().unwrap_or_default().to_owned();
    host.ok("load-song", json!({ "song": song("s", 600_000.0), "autoplay": true })).await?;
    // Big queue so every queue push is ~100 KB: a stalled reader fills its buffers fast.
    let long = "t".repeat(300);
    for i in 0..100 {
        host.ok("queue-add", json!({ "song": { "id": format!("q{i}"), "title": long, "url": format!("https://example.invalid/{i}/{long}") } })).await?;
    }
    // The stalled member: a raw socket that never reads after joining.
    let (mut stalled, _) = tokio_tungstenite::connect_async(server.ws_url()).await?;
    stalled.send(Message::text(json!({ "event": "join-room", "data": { "code": code } }).to_string())).await?;
    let mut fast = Client::connect(&server).await?;
    fast.ok("join-room", json!({ "code": code })).await?;
    fast.clear();
    // The stalled member's join was sent without waiting for its reply: wait until the server
    // has it in the room (host, stalled, fast), or it would never be sent anything.
    eventually("the stalled member to be in the room", WAIT, async || {
        let page = fast.ok("get-members", json!({ "offset": 0, "limit": 10 })).await?;
        Ok((page["total"] == json!(3)).then_some(()))
    })
    .await?;
    let rss_before = server.rss_kib().context("the memory bound cannot be checked")?;

    let mut worst = Duration::ZERO;
    let mut all = Vec::new();
    let mut item_ids = Vec::new();
    for round in 0..300 {
        let sent = Instant::now();
        if round % 2 == 0 {
            let r = host.ok("queue-add", json!({ "song": { "id": format!("r{round}"), "title": long } })).await?;
            item_ids.push(r["itemId"].as_str().unwrap_or_default().to_owned());
            let (at, _) = fast.expect_push_within("queue-updated", Duration::from_secs(2)).await?;
            worst = worst.max(at.saturating_duration_since(sent));
            all.push(at.saturating_duration_since(sent));
        } else {
            let id = item_ids.pop().unwrap_or_default();
            host.ok("queue-remove", json!({ "itemId": id })).await?;
            let (at, _) = fast.expect_push_within("queue-updated", Duration::from_secs(2)).await?;
            worst = worst.max(at.saturating_duration_since(sent));
        }
    }
    let rss_after = server.rss_kib().context("the memory bound cannot be checked")?;
    all.sort();
    eprintln!("push latency p50 {:?} p90 {:?} max {:?}", all[all.len() / 2], all[all.len() * 9 / 10], worst);
    assert!(worst <= Duration::from_millis(100), "a push took {worst:?} to reach the reading member");
    let (_, metrics) = server.get("/metrics").await?;
    let dropped: f64 = metrics
        .lines()
        .find_map(|l| l.strip_prefix("unisono_slow_consumer_disconnects_total "))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(0.0);
    assert!(dropped >= 1.0, "the stalled member was never cut off:\n{metrics}");
    // 300 pushes of ~100 KB = 30 MB would have queued for the stalled member without a bound.
    let growth = rss_after.saturating_sub(rss_before);
    assert!(growth < 16 * 1024, "server RSS grew by {growth} KiB");
    drop(stalled);
    for suffix in ["", "-wal", "-shm"] {
        let _ = std::fs::remove_file(format!("{}{suffix}", db.display()));
    }
    Ok(())
}
