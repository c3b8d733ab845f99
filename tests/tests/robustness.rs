//! Bad input, oversized frames, rate limits, health, metrics and graceful shutdown: the server
//! stays up and every other member keeps getting every push.

use std::{
    collections::{BTreeMap, BTreeSet},
    time::Duration,
};

use anyhow::{Result, bail};
use rand::{Rng, SeedableRng, rngs::StdRng};
use serde_json::{Value, json};
use unisono_e2e::{Client, Server, WAIT, eventually, song};

/// A frame that is wrong in one of many ways, and the id the server can read from it (`None`:
/// it must answer with an `error` push instead of a reply).
fn bad_frame(rng: &mut StdRng, i: usize) -> (String, Option<u64>) {
    let id = i as u64 + 1000;
    let events = [
        "seek-playback",
        "set-rate",
        "join-room",
        "load-song",
        "queue-add",
        "transfer-host",
        "queue-move",
        "time-sync",
        "update-playback",
    ];
    let event = events[rng.random_range(0..events.len())];
    match rng.random_range(0..12) {
        0 => ("{not json".into(), None),
        1 => (
            String::from_utf8_lossy(&(0..rng.random_range(1..64)).map(|_| rng.random::<u8>()).collect::<Vec<_>>())
                .into_owned(),
            None,
        ),
        2 => (json!({ "event": format!("no-such-{i}"), "id": id }).to_string(), Some(id)),
        3 => (json!({ "event": event, "data": "string", "id": id }).to_string(), Some(id)),
        4 => (
            json!({ "event": event, "data": { "positionMs": "x", "rate": [], "song": 5, "code": 7 }, "id": id })
                .to_string(),
            Some(id),
        ),
        5 => (
            json!({ "event": "set-rate", "data": { "rate": rng.random_range(-100.0..0.2) }, "id": id }).to_string(),
            Some(id),
        ),
        6 => (json!({ "event": "seek-playback", "data": { "positionMs": -1.0 }, "id": id }).to_string(), Some(id)),
        7 => (json!({ "event": 42, "id": id }).to_string(), Some(id)),
        8 => (json!([1, 2, 3]).to_string(), None),
        9 => (
            json!({ "event": "load-song", "data": { "song": { "id": "", "durationMs": 1e300 } }, "id": id })
                .to_string(),
            Some(id),
        ),
        10 => (json!({ "event": "queue-remove", "data": { "itemId": "nope" }, "id": id }).to_string(), Some(id)),
        _ => (json!({ "data": {}, "id": id }).to_string(), Some(id)),
    }
}

#[tokio::test]
async fn a_thousand_malformed_frames_get_errors_and_other_members_miss_nothing() -> Result<()> {
    let server = Server::start(&["--frames-per-sec", "100000"])?;
    let mut host = Client::connect(&server).await?;
    let code = host.ok("create-room", json!({})).await?["code"].as_str().unwrap_or_default().to_owned();
    host.ok("load-song", json!({ "song": song("s", 600_000.0), "autoplay": true })).await?;
    let mut fuzzer = Client::connect(&server).await?;
    fuzzer.ok("join-room", json!({ "code": code })).await?;
    let mut listener = Client::connect(&server).await?;
    listener.ok("join-room", json!({ "code": code })).await?;
    listener.clear();

    let mut rng = StdRng::seed_from_u64(7);
    let host_task = tokio::spawn(async move {
        let mut revs = Vec::new();
        for i in 0..40 {
            let r = host.ok("seek-playback", json!({ "positionMs": 1000.0 * i as f64 })).await?;
            revs.push(r["playback"]["rev"].as_u64().unwrap_or(0));
            // Part of the scenario, not a wait for anything: spreads the host's seeks over the
            // whole flood, so the listener's pushes are fanned out while the fuzzer's errors are.
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        Ok::<_, anyhow::Error>((host, revs))
    });
    let mut ids = BTreeSet::new();
    let mut without_id = 0;
    for i in 0..1000 {
        let (text, id) = bad_frame(&mut rng, i);
        fuzzer.send_text(text).await?;
        match id {
            Some(id) => assert!(ids.insert(id), "bad_frame repeated id {id}"),
            None => without_id += 1,
        }
    }
    // The connection is still usable.
    let check = fuzzer.ok("get-playback-state", json!({})).await?;
    assert!(check["playback"]["song"].is_object());

    // Every frame got its error: one reply per id, one `error` push per frame without one.
    let mut replies: BTreeMap<u64, Vec<Value>> = BTreeMap::new();
    let mut error_pushes = Vec::new();
    let collect = |fuzzer: &mut Client, replies: &mut BTreeMap<u64, Vec<Value>>, pushes: &mut Vec<Value>| {
        for (id, frame) in fuzzer.drain_replies() {
            replies.entry(id).or_default().push(frame);
        }
        pushes.extend(fuzzer.drain_pushes("error"));
    };
    let all_answered = eventually("an error for every bad frame", WAIT, async || {
        collect(&mut fuzzer, &mut replies, &mut error_pushes);
        Ok((ids.iter().all(|id| replies.contains_key(id)) && error_pushes.len() >= without_id).then_some(()))
    })
    .await;
    // One more round trip, so that a second answer to any frame would have arrived by now.
    fuzzer.ok("time-sync", json!({ "t0": 0 })).await?;
    collect(&mut fuzzer, &mut replies, &mut error_pushes);
    let missing: Vec<_> = ids.iter().filter(|id| !replies.contains_key(id)).collect();
    assert!(missing.is_empty(), "{} of {} frames with an id got no reply: {missing:?}", missing.len(), ids.len());
    let unasked: Vec<_> = replies.keys().filter(|id| !ids.contains(id)).collect();
    assert!(unasked.is_empty(), "replies to ids that were never sent: {unasked:?}");
    for (id, got) in &replies {
        assert_eq!(got.len(), 1, "frame {id} got {} replies: {got:?}", got.len());
        assert_eq!(got[0]["ok"], json!(false), "bad frame {id} got a success reply: {}", got[0]);
        assert!(got[0]["error"]["code"].is_string(), "reply to {id} has no error code: {}", got[0]);
    }
    assert_eq!(error_pushes.len(), without_id, "error pushes vs frames sent without an id");
    for e in &error_pushes {
        assert_eq!(e["code"], json!("BAD_FRAME"), "{e}");
    }
    all_answered?;
    let (_host, revs) = host_task.await??;
    let mut seen = Vec::new();
    while seen.len() < revs.len() {
        let p = listener.expect_push("playback-seeked").await?;
        seen.push(p["rev"].as_u64().unwrap_or(0));
    }
    assert_eq!(seen, revs, "the listener missed or reordered pushes");
    let (status, metrics) = server.get("/metrics").await?;
    assert_eq!(status, 200);
    assert!(metrics.contains("unisono_errors_total{code=\"INVALID_PAYLOAD\"}"), "{metrics}");
    assert!(ids.len() > 500 && without_id > 100, "{} frames with an id, {without_id} without", ids.len());
    Ok(())
}

#[tokio::test]
async fn every_bad_frame_with_an_id_gets_exactly_one_error_reply() -> Result<()> {
    let server = Server::start(&["--frames-per-sec", "100000"])?;
    let mut c = Client::connect(&server).await?;
    let cases = [
        (json!({ "event": "nope", "id": 1 }), "UNKNOWN_EVENT"),
        (json!({ "event": "seek-playback", "data": { "positionMs": "x" }, "id": 2 }), "INVALID_PAYLOAD"),
        (json!({ "event": "seek-playback", "id": 3 }), "INVALID_PAYLOAD"),
        (json!({ "event": "pause-playback", "id": 4 }), "NOT_IN_ROOM"),
        (json!({ "event": 5, "id": 5 }), "BAD_FRAME"),
    ];
    for (frame, code) in cases {
        let id = frame["id"].as_u64().unwrap_or(0);
        c.send_text(frame.to_string()).await?;
        match c.reply(id).await? {
            Err(e) => assert_eq!(e["code"], json!(code), "{frame}"),
            Ok(v) => bail!("{frame} succeeded: {v}"),
        }
    }
    c.send_text("{broken").await?;
    let e = c.expect_push("error").await?;
    assert_eq!(e["code"], json!("BAD_FRAME"));
    c.send_binary(vec![1, 2, 3]).await?;
    assert_eq!(c.expect_push("error").await?["code"], json!("BAD_FRAME"));
    Ok(())
}

#[tokio::test]
async fn a_frame_over_the_limit_closes_with_1009_and_others_are_unaffected() -> Result<()> {
    let server = Server::start(&["--max-frame-bytes", "4096"])?;
    let mut host = Client::connect(&server).await?;
    let code = host.ok("create-room", json!({})).await?["code"].as_str().unwrap_or_default().to_owned();
    let mut big = Client::connect(&server).await?;
    big.ok("join-room", json!({ "code": code })).await?;
    let padding = "x".repeat(8192);
    big.send_text(json!({ "event": "time-sync", "data": { "t0": 1, "pad": padding } }).to_string()).await?;
    assert_eq!(big.expect_close(Duration::from_secs(5)).await?, Some(1009));
    host.ok("load-song", json!({ "song": song("a", 1000.0) })).await?;
    assert!(host.ok("get-playback-state", json!({})).await?["playback"]["song"].is_object());
    Ok(())
}

#[tokio::test]
async fn flooding_trips_the_rate_limit_for_that_connection_only() -> Result<()> {
    let server = Server::start(&["--frames-per-sec", "5"])?;
    let mut flooder = Client::connect(&server).await?;
    let mut calm = Client::connect(&server).await?;
    let mut limited = 0;
    for _ in 0..100 {
        if let Err(e) = flooder.request("time-sync", json!({ "t0": 0 })).await? {
            assert_eq!(e["code"], json!("RATE_LIMITED"));
            limited += 1;
        }
    }
    assert!(limited >= 50, "only {limited} of 100 limited");
    calm.ok("time-sync", json!({ "t0": 0 })).await?;
    Ok(())
}

#[tokio::test]
async fn healthz_and_metrics_answer() -> Result<()> {
    let server = Server::start(&[])?;
    let _c = Client::connect(&server).await?;
    let (status, body) = server.get("/healthz").await?;
    assert_eq!(status, 200);
    let health: Value = serde_json::from_str(&body)?;
    assert_eq!(health["status"], json!("ok"));
    assert_eq!(health["store"], json!("sqlite"));
    let (status, metrics) = server.get("/metrics").await?;
    assert_eq!(status, 200);
    for name in [
        "unisono_connections 1",
        "unisono_rooms",
        "unisono_frames_in_total",
        "unisono_frames_out_total",
        "unisono_fanout_seconds_bucket",
    ] {
        assert!(metrics.contains(name), "missing {name}");
    }
    let (status, _) = server.get("/nope").await?;
    assert_eq!(status, 404);
    Ok(())
}

#[tokio::test]
async fn sigterm_closes_clients_with_1001_and_exits_cleanly() -> Result<()> {
    let mut server = Server::start(&[])?;
    let mut c = Client::connect(&server).await?;
    c.ok("create-room", json!({})).await?;
    let status = server.terminate()?;
    assert!(status.success(), "exit status {status}");
    assert_eq!(c.expect_close(Duration::from_secs(5)).await?, Some(1001));
    Ok(())
}

/// Behind a trusted proxy, per-address limits apply to the forwarded client address; without
/// `--trust-proxy` the header is ignored (a client cannot spoof its way out of a limit).
#[tokio::test]
async fn join_limits_follow_x_forwarded_for_only_behind_a_trusted_proxy() -> Result<()> {
    for trusted in [true, false] {
        let flag = if trusted { "true" } else { "false" };
        let server = Server::start(&["--joins-per-min", "2", "--trust-proxy", flag])?;
        let mut a = Client::connect_with_headers(&server.ws_url(), &[("x-forwarded-for", "203.0.113.1")]).await?;
        for _ in 0..2 {
            assert_eq!(a.err_code("join-room", json!({ "code": "ZZZZZZ" })).await?, "ROOM_NOT_FOUND");
        }
        assert_eq!(a.err_code("join-room", json!({ "code": "ZZZZZZ" })).await?, "RATE_LIMITED");
        let mut b = Client::connect_with_headers(&server.ws_url(), &[("x-forwarded-for", "198.51.100.7")]).await?;
        let expected = if trusted { "ROOM_NOT_FOUND" } else { "RATE_LIMITED" };
        assert_eq!(b.err_code("join-room", json!({ "code": "ZZZZZZ" })).await?, expected, "trusted={trusted}");
    }
    Ok(())
}

/// With anonymous use off (production), a connection needs a token; a minted user token works.
#[tokio::test]
async fn anonymous_off_requires_a_token() -> Result<()> {
    let server = Server::start(&["--anonymous", "false", "--jwt-secret", "robustness-secret"])?;
    let refused = Client::connect(&server).await;
    assert!(refused.is_err(), "a tokenless /ws connection must be refused");
    let out = std::process::Command::new(unisono_e2e::binary())
        .args(["token", "--tenant", "acme", "--role", "user", "--sub", "u1", "--jwt-secret", "robustness-secret"])
        .output()?;
    assert!(out.status.success());
    let token = String::from_utf8_lossy(&out.stdout).lines().last().unwrap_or_default().trim().to_owned();
    let mut c = Client::connect_url(&format!("{}?token={token}", server.ws_url())).await?;
    let created = c.ok("create-room", json!({ "name": "private" })).await?;
    assert!(created["code"].is_string());
    Ok(())
}

/// Reads from `s` until the server closes it; how long that took (`None`: still open after `max`).
async fn closed_within(s: &mut tokio::net::TcpStream, max: Duration) -> Option<Duration> {
    use tokio::io::AsyncReadExt;
    let started = std::time::Instant::now();
    let mut buf = [0u8; 1024];
    loop {
        match tokio::time::timeout(max.saturating_sub(started.elapsed()), s.read(&mut buf)).await {
            Ok(Ok(0)) | Ok(Err(_)) => return Some(started.elapsed()),
            Ok(Ok(_)) => {}
            Err(_) => return None,
        }
    }
}

#[tokio::test]
async fn connections_that_never_finish_their_headers_are_dropped_after_the_header_timeout() -> Result<()> {
    use tokio::io::AsyncWriteExt;
    let s = Server::start(&["--header-timeout-secs", "1"])?;
    let addr = s.http_url("").trim_start_matches("http://").to_owned();
    // One says nothing; one is a slow-loris: a header byte every 200 ms, never the blank line.
    let mut silent = tokio::net::TcpStream::connect(&addr).await?;
    let mut loris = tokio::net::TcpStream::connect(&addr).await?;
    loris.write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-Slow: ").await?;
    let dripping = tokio::spawn(async move {
        for _ in 0..40 {
            // Closed by the server: a write fails (the first after the close may still pass).
            if loris.write_all(b"a").await.is_err() {
                return true;
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        false
    });
    // Meanwhile everyone else is served.
    assert_eq!(s.get("/healthz").await?.0, 200);
    let silent_after = closed_within(&mut silent, Duration::from_secs(5)).await;
    assert!(
        silent_after.is_some_and(|d| d < Duration::from_secs(3)),
        "a silent connection stayed open: {silent_after:?}"
    );
    assert!(dripping.await?, "the slow-loris connection stayed open for 8 s");
    assert_eq!(s.get("/healthz").await?.0, 200);
    Ok(())
}
