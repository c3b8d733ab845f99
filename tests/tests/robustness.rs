//! Bad input, oversized frames, rate limits, health, metrics and graceful shutdown: the server
//! stays up and every other member keeps getting every push.

use std::time::Duration;

use anyhow::{Result, bail};
use rand::{Rng, SeedableRng, rngs::StdRng};
use serde_json::{Value, json};
use unisono_e2e::{Client, Server, song};

/// A frame that is wrong in one of many ways.
fn bad_frame(rng: &mut StdRng, i: usize) -> (String, bool) {
    let id = json!(i as u64 + 1000);
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
        0 => ("{not json".into(), false),
        1 => (
            String::from_utf8_lossy(&(0..rng.random_range(1..64)).map(|_| rng.random::<u8>()).collect::<Vec<_>>())
                .into_owned(),
            false,
        ),
        2 => (json!({ "event": format!("no-such-{i}"), "id": id }).to_string(), true),
        3 => (json!({ "event": event, "data": "string", "id": id }).to_string(), true),
        4 => (
            json!({ "event": event, "data": { "positionMs": "x", "rate": [], "song": 5, "code": 7 }, "id": id })
                .to_string(),
            true,
        ),
        5 => (
            json!({ "event": "set-rate", "data": { "rate": rng.random_range(-100.0..0.2) }, "id": id }).to_string(),
            true,
        ),
        6 => (json!({ "event": "seek-playback", "data": { "positionMs": -1.0 }, "id": id }).to_string(), true),
        7 => (json!({ "event": 42, "id": id }).to_string(), true),
        8 => (json!([1, 2, 3]).to_string(), false),
        9 => (
            json!({ "event": "load-song", "data": { "song": { "id": "", "durationMs": 1e300 } }, "id": id })
                .to_string(),
            true,
        ),
        10 => (json!({ "event": "queue-remove", "data": { "itemId": "nope" }, "id": id }).to_string(), true),
        _ => (json!({ "data": {}, "id": id }).to_string(), true),
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
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        Ok::<_, anyhow::Error>((host, revs))
    });
    let mut with_id = 0;
    for i in 0..1000 {
        let (text, has_id) = bad_frame(&mut rng, i);
        fuzzer.send_text(text).await?;
        if has_id {
            with_id += 1;
        }
    }
    // Every frame got an error (reply or push), and the connection is still usable.
    let check = fuzzer.ok("get-playback-state", json!({})).await?;
    assert!(check["playback"]["song"].is_object());
    let errors_replied = fuzzer.drain_pushes("error").len();
    assert!(errors_replied > 0, "frames without id must get an error push");
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
    assert!(with_id > 500);
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
