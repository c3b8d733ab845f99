//! Listening rooms end to end: late joiners, control fan-out, permissions, host hand-over,
//! resume, ready barrier, room codes and empty-room expiry — against the real binary.

use std::time::{Duration, Instant};

use anyhow::Result;
use serde_json::json;
use unisono_e2e::{Client, Server, WAIT, eventually, local_ms, position_at, server_now, song};

async fn room_with_host(server: &Server) -> Result<(Client, String)> {
    let mut host = Client::connect(server).await?;
    let created = host.ok("create-room", json!({ "name": "party", "memberName": "host" })).await?;
    let code = created["code"].as_str().unwrap_or_default().to_owned();
    assert_eq!(code.len(), 6, "{created}");
    host.expect_push("room-joined").await?;
    Ok((host, code))
}

#[tokio::test]
async fn late_joiner_starts_within_50ms_of_the_hosts_expectation() -> Result<()> {
    let server = Server::start(&[])?;
    let (mut host, code) = room_with_host(&server).await?;
    host.ok("load-song", json!({ "song": song("a", 180_000.0), "autoplay": true })).await?;
    let playing = host.expect_push("song-changed").await?;
    assert_eq!(playing["isPlaying"], json!(true));
    // The host's view of the server clock, from time sync.
    let host_offset = server_now(&mut host).await? - local_ms();

    // The point of the test: the song plays on for 1.5 s before the guest joins late.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let mut guest = Client::connect(&server).await?;
    guest.ok("join-room", json!({ "code": code.to_lowercase(), "name": "guest" })).await?;
    let (arrived, joined) = guest.expect_push_within("room-joined", Duration::from_secs(5)).await?;
    let arrived_local = local_ms() - arrived.elapsed().as_secs_f64() * 1000.0;

    // The joiner's position when the snapshot arrived: shouldStartAt advanced by transit time.
    let guest_offset = server_now(&mut guest).await? - local_ms();
    let server_at_arrival = arrived_local + guest_offset;
    let transit = server_at_arrival - joined["serverTime"].as_f64().unwrap_or(0.0);
    let guest_pos = joined["shouldStartAt"].as_f64().unwrap_or(-1.0) + transit.max(0.0);
    // What the host expects at that same instant, from its own vector and clock.
    let host_pos = position_at(&playing, arrived_local + host_offset);
    assert!(host_pos > 1400.0, "host position {host_pos}");
    assert!((guest_pos - host_pos).abs() <= 50.0, "guest {guest_pos} vs host {host_pos}");
    assert_eq!(joined["playback"]["rev"], playing["rev"]);
    assert_eq!(joined["host"], json!(host.session_id));
    assert_eq!(joined["members"].as_array().map(Vec::len), Some(2));
    Ok(())
}

#[tokio::test]
async fn pause_seek_rate_resume_reach_every_member_with_the_same_rev() -> Result<()> {
    let server = Server::start(&[])?;
    let (mut host, code) = room_with_host(&server).await?;
    let mut a = Client::connect(&server).await?;
    let mut b = Client::connect(&server).await?;
    for c in [&mut a, &mut b] {
        c.ok("join-room", json!({ "code": code })).await?;
        c.expect_push("room-joined").await?;
    }
    host.ok("load-song", json!({ "song": song("s", 180_000.0), "autoplay": true })).await?;
    let mut last_rev = 0;
    for (event, data, push) in [
        ("pause-playback", json!({}), "playback-paused"),
        ("seek-playback", json!({ "positionMs": 42_000.0 }), "playback-seeked"),
        ("set-rate", json!({ "rate": 1.25 }), "playback-state-update"),
        ("resume-playback", json!({}), "playback-resumed"),
    ] {
        let reply = host.ok(event, data).await?;
        let h = host.expect_push(push).await?;
        let pa = a.expect_push(push).await?;
        let pb = b.expect_push(push).await?;
        assert_eq!(h, pa, "{event}: host and a differ");
        assert_eq!(h, pb, "{event}: host and b differ");
        assert_eq!(reply["playback"], h, "{event}: reply and push differ");
        let rev = h["rev"].as_u64().unwrap_or(0);
        assert!(rev > last_rev, "{event}: rev {rev} after {last_rev}");
        last_rev = rev;
    }
    let state = b.ok("get-playback-state", json!({})).await?;
    assert_eq!(state["playback"]["rate"], json!(1.25));
    assert_eq!(state["playback"]["isPlaying"], json!(true));
    assert!(state["positionMs"].as_f64().unwrap_or(0.0) >= 42_000.0);
    Ok(())
}

#[tokio::test]
async fn members_who_are_not_host_get_not_host_and_nothing_changes() -> Result<()> {
    let server = Server::start(&[])?;
    let (mut host, code) = room_with_host(&server).await?;
    host.ok("load-song", json!({ "song": song("s", 60_000.0) })).await?;
    let mut guest = Client::connect(&server).await?;
    guest.ok("join-room", json!({ "code": code })).await?;
    let before = guest.ok("get-playback-state", json!({})).await?;
    for (event, data) in [
        ("pause-playback", json!({})),
        ("resume-playback", json!({})),
        ("seek-playback", json!({ "positionMs": 1000.0 })),
        ("set-rate", json!({ "rate": 2.0 })),
        ("load-song", json!({ "song": song("x", 1000.0) })),
        ("play-next", json!({})),
        ("update-playback", json!({ "positionMs": 5.0, "isPlaying": true })),
        ("transfer-host", json!({ "sessionId": guest.session_id.clone() })),
        ("update-settings", json!({ "settings": { "anyoneCanControl": true } })),
    ] {
        assert_eq!(guest.err_code(event, data).await?, "NOT_HOST", "{event}");
    }
    let after = guest.ok("get-playback-state", json!({})).await?;
    assert_eq!(before["playback"], after["playback"]);
    assert_eq!(guest.err_code("join-room", json!({ "code": "ZZZZZZ" })).await?, "ROOM_NOT_FOUND");

    // With anyoneCanControl the guest may control playback.
    host.ok("update-settings", json!({ "settings": { "anyoneCanControl": true } })).await?;
    guest.ok("resume-playback", json!({})).await?;
    Ok(())
}

#[tokio::test]
async fn host_hand_over_after_grace_and_resume_within_grace_keeps_the_role() -> Result<()> {
    let server = Server::start(&["--host-grace-secs", "0.6", "--resume-grace-secs", "5"])?;
    let (host, code) = room_with_host(&server).await?;
    let host_id = host.session_id.clone();
    let token = host.resume_token.clone();
    let mut first = Client::connect(&server).await?;
    first.ok("join-room", json!({ "code": code })).await?;
    let mut second = Client::connect(&server).await?;
    second.ok("join-room", json!({ "code": code })).await?;

    // Drop the host's connection and come back inside the grace period: still host. Resume only
    // once the server has noticed the disconnect (the members see the host as disconnected), so
    // the grace period has really begun.
    let dropped = Instant::now();
    drop(host);
    eventually("the host to show as disconnected", WAIT, async || {
        let gone = first
            .drain_pushes("member-updated")
            .iter()
            .any(|p| p["member"]["sessionId"] == json!(host_id) && p["member"]["connected"] == json!(false));
        Ok(gone.then_some(()))
    })
    .await?;
    let mut host = Client::resume(&server, &token).await?;
    assert_eq!(host.session_id, host_id);
    assert_eq!(host.connected["resumed"], json!(true));
    let snapshot = host.expect_push("room-joined").await?;
    assert_eq!(snapshot["host"], json!(host_id));
    // A check that nothing happens needs the time to pass: until well after the 0.6 s grace
    // period that began at the drop would have ended.
    tokio::time::sleep(Duration::from_millis(1000).saturating_sub(dropped.elapsed())).await;
    assert!(first.drain_pushes("host-changed").is_empty(), "host changed during grace");
    // Still in control (NO_SONG, not NOT_HOST).
    assert_eq!(host.err_code("pause-playback", json!({})).await?, "NO_SONG");

    // Now vanish for longer than the grace period: the longest-present member takes over.
    let gone = Instant::now();
    drop(host);
    let (_, changed) = first.expect_push_within("host-changed", Duration::from_secs(5)).await?;
    assert!(gone.elapsed() >= Duration::from_millis(550), "handed over before the grace period");
    assert_eq!(changed["host"], json!(first.session_id));
    assert_eq!(changed["previous"], json!(host_id));
    first.ok("load-song", json!({ "song": song("n", 1000.0) })).await?;

    // An explicit leave hands over at once.
    second.clear();
    first.ok("leave-room", json!({})).await?;
    let changed = second.expect_push("host-changed").await?;
    assert_eq!(changed["host"], json!(second.session_id));
    Ok(())
}

#[tokio::test]
async fn ready_barrier_starts_everyone_at_one_future_instant() -> Result<()> {
    let server = Server::start(&[])?;
    let mut host = Client::connect(&server).await?;
    let created =
        host.ok("create-room", json!({ "settings": { "readyBarrier": true, "readyTimeoutMs": 3000 } })).await?;
    let code = created["code"].as_str().unwrap_or_default().to_owned();
    let mut guest = Client::connect(&server).await?;
    guest.ok("join-room", json!({ "code": code })).await?;
    host.ok("load-song", json!({ "song": song("s", 60_000.0), "autoplay": true })).await?;
    let held = guest.expect_push("song-changed").await?;
    assert_eq!(held["awaitingReady"], json!(true));
    assert_eq!(held["isPlaying"], json!(false));
    host.ok("set-ready", json!({ "ready": true })).await?;
    // A late joiner does not hold the others.
    let mut late = Client::connect(&server).await?;
    late.ok("join-room", json!({ "code": code })).await?;
    guest.ok("set-ready", json!({ "ready": true })).await?;
    let started = guest.expect_push("playback-resumed").await?;
    let now = server_now(&mut guest).await?;
    assert_eq!(started["isPlaying"], json!(true));
    assert!(started["serverTime"].as_f64().unwrap_or(0.0) > now - 50.0, "start is not in the future: {started}");
    assert_eq!(late.expect_push("playback-resumed").await?, started);

    // A silent member cannot deadlock the room: the timeout releases the start.
    host.clear();
    host.ok("seek-playback", json!({ "positionMs": 10_000.0 })).await?;
    let t = Instant::now();
    let (_, resumed) = host.expect_push_within("playback-resumed", Duration::from_secs(6)).await?;
    assert!(t.elapsed() >= Duration::from_millis(2500), "released before the timeout");
    assert_eq!(resumed["positionMs"], json!(10_000.0));
    Ok(())
}

#[tokio::test]
async fn queue_add_move_remove_and_next() -> Result<()> {
    let server = Server::start(&[])?;
    let (mut host, code) = room_with_host(&server).await?;
    let mut guest = Client::connect(&server).await?;
    guest.ok("join-room", json!({ "code": code })).await?;
    let a = guest.ok("queue-add", json!({ "song": song("a", 1000.0) })).await?["itemId"].clone();
    let b = host.ok("queue-add", json!({ "song": song("b", 1000.0) })).await?["itemId"].clone();
    host.ok("queue-move", json!({ "itemId": b, "toIndex": 0 })).await?;
    let q = guest.ok("get-playback-state", json!({})).await?;
    assert!(q["playback"]["song"].is_null());
    assert_eq!(guest.err_code("queue-remove", json!({ "itemId": b })).await?, "NOT_HOST");
    guest.ok("queue-remove", json!({ "itemId": a })).await?;
    host.ok("play-next", json!({})).await?;
    let changed = guest.expect_push("song-changed").await?;
    assert_eq!(changed["song"]["id"], json!("b"));
    // Auto-advance: "b" is one second long and the queue is empty, so playback stops at its end.
    let (_, paused) = guest.expect_push_within("playback-paused", Duration::from_secs(3)).await?;
    assert_eq!(paused["positionMs"], json!(1000.0));
    assert_eq!(host.err_code("queue-remove", json!({ "itemId": "q99" })).await?, "ITEM_NOT_FOUND");
    Ok(())
}

#[tokio::test]
async fn join_attempts_are_rate_limited_so_codes_cannot_be_enumerated() -> Result<()> {
    let server = Server::start(&["--joins-per-min", "5"])?;
    let mut c = Client::connect(&server).await?;
    let mut codes = Vec::new();
    for _ in 0..8 {
        codes.push(c.err_code("join-room", json!({ "code": "BBBBBB" })).await?);
    }
    assert_eq!(&codes[..5], ["ROOM_NOT_FOUND"; 5]);
    assert!(codes[5..].iter().all(|c| c == "RATE_LIMITED"), "{codes:?}");
    // A new connection from the same address does not get a fresh allowance.
    let mut again = Client::connect(&server).await?;
    assert_eq!(again.err_code("join-room", json!({ "code": "BBBBBB" })).await?, "RATE_LIMITED");
    Ok(())
}

#[tokio::test]
async fn empty_rooms_close_after_their_ttl() -> Result<()> {
    let server = Server::start(&["--empty-room-ttl-secs", "0.5"])?;
    let (mut host, code) = room_with_host(&server).await?;
    host.ok("leave-room", json!({})).await?;
    let left = Instant::now();
    // Watched on /metrics: probing with join-room would fill the room again and restart its TTL.
    eventually("the empty room to close", WAIT, async || {
        Ok((server.metric("unisono_rooms").await? == 0.0).then_some(()))
    })
    .await?;
    assert!(left.elapsed() >= Duration::from_millis(400), "closed {:?} after emptying, TTL 0.5 s", left.elapsed());
    assert_eq!(host.err_code("join-room", json!({ "code": code })).await?, "ROOM_NOT_FOUND");
    Ok(())
}

#[tokio::test]
async fn large_rooms_send_capped_snapshots_and_page_members() -> Result<()> {
    let server = Server::start(&["--snapshot-members", "2", "--presence-max-members", "3"])?;
    let (mut host, code) = room_with_host(&server).await?;
    let mut guests = Vec::new();
    for _ in 0..4 {
        let mut g = Client::connect(&server).await?;
        g.ok("join-room", json!({ "code": code })).await?;
        guests.push(g);
    }
    let last = guests.last_mut().expect("guest");
    let joined = last.expect_push("room-joined").await?;
    assert_eq!(joined["memberCount"], json!(5));
    assert_eq!(joined["members"].as_array().map(Vec::len), Some(2));
    let page = last.ok("get-members", json!({ "offset": 1, "limit": 10 })).await?;
    assert_eq!(page["total"], json!(5));
    assert_eq!(page["members"].as_array().map(Vec::len), Some(4));
    // Above the presence limit the host still hears about arrivals; the others do not.
    host.clear();
    guests[0].clear();
    let mut late = Client::connect(&server).await?;
    late.ok("join-room", json!({ "code": code })).await?;
    let joined = host.expect_push("member-joined").await?;
    assert_eq!(joined["member"]["sessionId"], json!(late.session_id));
    // A check that nothing arrives needs the time to pass: 200 ms after the host's push, one to
    // guests[0] (fanned out at the same time) would have arrived.
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert!(guests[0].drain_pushes("member-joined").is_empty());
    Ok(())
}

#[tokio::test]
async fn a_malformed_websocket_upgrade_gets_400() -> Result<()> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let server = Server::start(&[])?;
    let mut s = tokio::net::TcpStream::connect(&server.addr).await?;
    let req = format!(
        "GET /ws HTTP/1.1\r\nHost: {}\r\nConnection: Upgrade\r\nUpgrade: websocket\r\nSec-WebSocket-Version: 13\r\n\r\n",
        server.addr
    );
    s.write_all(req.as_bytes()).await?;
    let mut buf = vec![0u8; 1024];
    let n = tokio::time::timeout(Duration::from_secs(5), s.read(&mut buf)).await??;
    let head = String::from_utf8_lossy(&buf[..n]);
    assert!(head.starts_with("HTTP/1.1 400"), "{head}");
    assert!(head.contains("BAD_UPGRADE"), "{head}");
    Ok(())
}
