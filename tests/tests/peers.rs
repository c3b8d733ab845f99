//! Seed 001's peer protocol against the real binary, with a fake seed-001 peer written here
//! from the seed alone (plain TCP, JSON lines, serde_json; no Unisono code): the lifecycle and
//! the exact field names and types of what Unisono sends, what its messages reach, and what a
//! peer's sessions and a closed link do.

use std::time::Duration;

use anyhow::{Context, Result, bail};
use serde_json::{Value, json};
use tokio::{
    io::{AsyncBufReadExt, AsyncWriteExt, BufReader},
    net::{TcpListener, TcpStream, tcp::OwnedWriteHalf},
};
use unisono_e2e::{Client, Server, eventually, free_port, token};

const SECRET: &str = "e2e-peer-secret-0123456789abcdef";

/// The fake peer's end of a link.
struct FakePeer {
    lines: tokio::io::Lines<BufReader<tokio::net::tcp::OwnedReadHalf>>,
    wr: OwnedWriteHalf,
}

impl FakePeer {
    fn new(s: TcpStream) -> FakePeer {
        let (rd, wr) = s.into_split();
        FakePeer { lines: BufReader::new(rd).lines(), wr }
    }

    async fn send(&mut self, v: &Value) -> Result<()> {
        self.send_raw(&v.to_string()).await
    }

    async fn send_raw(&mut self, line: &str) -> Result<()> {
        self.wr.write_all(line.as_bytes()).await?;
        self.wr.write_all(b"\n").await?;
        Ok(())
    }

    /// The next line, as JSON, skipping PINGs (an extension a seed peer never asked for:
    /// Unisono must not send them, which `next` checks).
    async fn next(&mut self) -> Result<Value> {
        let line = tokio::time::timeout(Duration::from_secs(5), self.lines.next_line())
            .await
            .context("waiting for a line from unisono")??
            .context("the link closed")?;
        let v: Value = serde_json::from_str(&line).with_context(|| format!("not JSON: {line}"))?;
        if v["type"] == "PING" {
            bail!("a PING to a peer that did not announce the heartbeat");
        }
        Ok(v)
    }

    async fn expect(&mut self, kind: &str) -> Result<Value> {
        let v = self.next().await?;
        if v["type"] != kind {
            bail!("expected {kind}, got {v}");
        }
        Ok(v)
    }
}

fn envelope(kind: &str, payload: Value) -> Value {
    json!({ "type": kind, "origin": "srv-a", "payload": payload })
}

/// The `peer-message` (or other) pushes `c` got so far named `event`.
fn pushes(c: &mut Client, event: &str) -> Vec<Value> {
    c.drain_pushes(event)
}

/// Peer lines not taken, over every reason (`unisono_peer_lines_total{result!="ok"}`).
async fn not_taken(s: &Server) -> Result<f64> {
    let (_, text) = s.get("/metrics").await?;
    Ok(text
        .lines()
        .filter(|l| l.starts_with("unisono_peer_lines_total{") && !l.contains("result=\"ok\""))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum())
}

async fn peers_listed(s: &Server, admin: &str) -> Result<Value> {
    let (status, body) = s.get_as("/api/peers", admin).await?;
    anyhow::ensure!(status == 200, "GET /api/peers: {status} {body}");
    Ok(serde_json::from_str(&body)?)
}

#[tokio::test]
async fn a_seed_001_peer_links_syncs_sessions_and_reaches_exactly_the_right_clients() -> Result<()> {
    let listener = TcpListener::bind("127.0.0.1:0").await?;
    let peer_addr = listener.local_addr()?.to_string();
    let s = Server::start(&[
        "--jwt-secret",
        SECRET,
        "--peers",
        &peer_addr,
        "--peer-tenant",
        "acme",
        "--peer-max-line-bytes",
        "4096",
        "--api-key",
        "acme=acme-key-0123456789abcdef",
    ])?;
    let admin = token(SECRET, "acme", "admin", "ops")?;
    let on =
        |sub: &str| -> Result<String> { Ok(format!("{}?token={}", s.ws_url(), token(SECRET, "acme", "user", sub)?)) };
    // A session in a room before the link is up: SYNC_STATE carries it.
    let mut c1 = Client::connect_url(&on("12")?).await?;
    let code =
        c1.ok("create-room", json!({ "memberName": "carlos" })).await?["code"].as_str().unwrap_or_default().to_owned();

    // Lifecycle: Unisono's HELLO {serverId}, ours, then its SYNC_STATE.
    let (stream, _) = tokio::time::timeout(Duration::from_secs(5), listener.accept()).await??;
    let mut peer = FakePeer::new(stream);
    let hello = peer.expect("HELLO").await?;
    let node = hello["origin"].as_str().context("origin")?.to_owned();
    assert_eq!(hello["payload"]["serverId"], json!(node), "serverId is the origin");
    peer.send(&envelope("HELLO", json!({ "serverId": "srv-a" }))).await?;
    let sync = peer.expect("SYNC_STATE").await?;
    assert_eq!(sync["origin"], json!(node));
    let sessions = sync["payload"]["sessions"].as_array().context("sessions")?;
    assert_eq!(sessions.len(), 1, "{sync}");
    let s1 = &sessions[0];
    assert_eq!(s1["serverId"], json!(node));
    assert_eq!(s1["sessionId"], json!(c1.session_id));
    assert_eq!(s1["clienteId"], json!(12), "a numeric subject is a number");
    assert_eq!(s1["usuario"], json!("12"));
    assert_eq!(s1["ip"], json!("127.0.0.1"));
    assert_eq!(s1["canales"], json!([code]));
    let mut keys: Vec<&str> = s1.as_object().context("object")?.keys().map(String::as_str).collect();
    keys.sort();
    assert_eq!(keys, ["canales", "clienteId", "ip", "serverId", "sessionId", "usuario"]);

    // Its sessions show up (GET /api/peers, the peer tenant's admins).
    let remote = json!({ "serverId": "srv-a", "sessionId": "remote-1", "clienteId": 42, "usuario": "ana", "ip": "10.0.0.1", "canales": [3] });
    peer.send(&envelope("SYNC_STATE", json!({ "sessions": [remote] }))).await?;
    eventually("the peer's sessions listed", Duration::from_secs(1), async || {
        let v = peers_listed(&s, &admin).await?;
        Ok((v["peers"][0]["sessions"][0]["sessionId"] == "remote-1").then_some(()))
    })
    .await?;

    // Local publishers reach the peer's sessions: REST publish to a user, a session of the
    // peer, a room and the tenant.
    let key = "acme-key-0123456789abcdef";
    for (target, id, kind) in [
        ("user", Some("42"), "DIRECT_MESSAGE"),
        ("session", Some("remote-1"), "SESSION_MESSAGE"),
        ("room", Some(code.as_str()), "CHANNEL_MESSAGE"),
        ("tenant", None, "BROADCAST"),
    ] {
        let mut body = json!({ "target": target, "event": "news", "data": { "n": 1 } });
        if let Some(id) = id {
            body["id"] = json!(id);
        }
        let (status, reply) = s.post_as("/api/publish", key, &body).await?;
        assert_eq!(status, 200, "{target}: {reply}");
        let got = peer.expect(kind).await?;
        assert_eq!(got["payload"]["message"], json!({ "event": "news", "data": { "n": 1 } }), "{target}");
        match target {
            "user" => assert_eq!(got["payload"]["userId"], json!(42)),
            "session" => assert_eq!(got["payload"]["sessionId"], json!("remote-1")),
            "room" => assert_eq!(got["payload"]["canalId"], json!(code)),
            _ => {}
        }
    }
    c1.drain_pushes("news");

    // Local sessions coming, joining and going.
    let mut c2 = Client::connect_url(&on("alice")?).await?;
    let connected = peer.expect("CLIENT_CONNECTED").await?;
    assert_eq!(connected["payload"]["sessionId"], json!(c2.session_id));
    assert_eq!(connected["payload"]["clienteId"], json!("alice"));
    assert_eq!(connected["payload"]["serverId"], json!(node));
    assert_eq!(connected["payload"]["canales"], json!([]));
    c2.ok("join-room", json!({ "code": code, "name": "alice" })).await?;
    let joined = peer.expect("CHANNEL_MEMBERSHIP").await?;
    assert_eq!(
        joined["payload"],
        json!({ "sessionId": c2.session_id, "clienteId": "alice", "canalId": code, "action": "JOIN" })
    );
    let mut c3 = Client::connect_url(&on("bob")?).await?;
    peer.expect("CLIENT_CONNECTED").await?;
    // Another tenant's sessions are not the peer's business.
    let mut other =
        Client::connect_url(&format!("{}?token={}", s.ws_url(), token(SECRET, "globex", "user", "12")?)).await?;

    // Its messages reach exactly the right clients.
    let seed_msg = json!({ "command": "EVENT", "payload": { "evento": "NEW_CHANNEL_MESSAGE", "mensajeId": 982 } });
    peer.send(&envelope("CHANNEL_MESSAGE", json!({ "canalId": code, "message": seed_msg }))).await?;
    assert_eq!(c1.expect_push("peer-message").await?, seed_msg, "delivered unchanged");
    assert_eq!(c2.expect_push("peer-message").await?, seed_msg);
    peer.send(&envelope(
        "DIRECT_MESSAGE",
        json!({ "userId": 12, "message": { "event": "chat", "data": { "text": "hola" } } }),
    ))
    .await?;
    assert_eq!(c1.expect_push("chat").await?, json!({ "text": "hola" }), "a {{event, data}} message is that push");
    peer.send(&envelope("SESSION_MESSAGE", json!({ "sessionId": c2.session_id, "message": { "tipo": "ACK" } })))
        .await?;
    assert_eq!(c2.expect_push("peer-message").await?, json!({ "tipo": "ACK" }));
    peer.send(&envelope("BROADCAST", json!({ "message": { "tipo": "SERVER_ALERT" } }))).await?;
    for c in [&mut c1, &mut c2, &mut c3] {
        assert_eq!(c.expect_push("peer-message").await?, json!({ "tipo": "SERVER_ALERT" }));
    }
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert!(pushes(&mut c3, "peer-message").is_empty(), "bob got only the broadcast");
    assert!(pushes(&mut c3, "chat").is_empty() && pushes(&mut c2, "chat").is_empty(), "the direct message was 12's");
    assert!(pushes(&mut c1, "peer-message").is_empty(), "carlos got no session message");
    assert!(pushes(&mut other, "peer-message").is_empty() && pushes(&mut other, "chat").is_empty(), "no other tenant");

    // 1,000 malformed lines: the link survives, nothing else changes, all counted.
    let before = not_taken(&s).await?;
    for i in 0..1000 {
        let line = match i % 5 {
            0 => "{not json".to_owned(),
            1 => envelope("GOSSIP", json!({})).to_string(),
            2 => envelope("DIRECT_MESSAGE", json!({ "userId": 12 })).to_string(),
            3 => "x".repeat(5000),
            _ => "[1,2,3]".to_owned(),
        };
        peer.send_raw(&line).await?;
    }
    peer.send(&envelope("BROADCAST", json!({ "message": "still here" }))).await?;
    assert_eq!(c3.expect_push("peer-message").await?, json!("still here"), "the link survived");
    assert!(pushes(&mut c1, "chat").is_empty(), "a bad DIRECT_MESSAGE delivered nothing");
    let after = not_taken(&s).await?;
    assert_eq!(after - before, 1000.0, "every bad line counted: {before} → {after}");
    assert_eq!(peers_listed(&s, &admin).await?["peers"][0]["sessions"].as_array().map(Vec::len), Some(1));

    // A local session goes.
    c2.close().await;
    let gone = peer.expect("CLIENT_DISCONNECTED").await?;
    assert_eq!(gone["payload"]["clienteId"], json!("alice"));
    assert!(gone["payload"]["sessionId"].is_string());

    // The link closes: the peer and its sessions are gone within 1 s.
    drop(peer);
    eventually("the closed peer gone", Duration::from_secs(1), async || {
        let v = peers_listed(&s, &admin).await?;
        Ok((v["peers"].as_array().map(Vec::len) == Some(0)).then_some(()))
    })
    .await?;
    // And Unisono dials again (capped backoff): a new link, a new HELLO.
    let (stream, _) = tokio::time::timeout(Duration::from_secs(5), listener.accept()).await??;
    FakePeer::new(stream).expect("HELLO").await?;
    Ok(())
}

#[tokio::test]
async fn a_peer_without_the_shared_secret_is_refused_and_a_second_link_replaces_the_first() -> Result<()> {
    let listen = format!("127.0.0.1:{}", free_port()?);
    let _s = Server::start(&["--jwt-secret", SECRET, "--peer-listen", &listen, "--peer-secret", "s3cret"])?;
    let connect = async || -> Result<FakePeer> {
        for _ in 0..50 {
            if let Ok(s) = TcpStream::connect(&listen).await {
                return Ok(FakePeer::new(s));
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        bail!("--peer-listen not listening")
    };
    let mut bad = connect().await?;
    let hello = bad.expect("HELLO").await?;
    assert!(hello["payload"].get("secret").is_some(), "its HELLO carries the secret");
    bad.send(&envelope("HELLO", json!({ "serverId": "srv-x" }))).await?;
    let end = tokio::time::timeout(Duration::from_secs(2), bad.lines.next_line()).await?;
    assert!(matches!(end, Ok(None) | Err(_)), "closed without SYNC_STATE: {end:?}");
    let mut good = connect().await?;
    good.expect("HELLO").await?;
    good.send(&envelope("HELLO", json!({ "serverId": "srv-y", "secret": "s3cret" }))).await?;
    good.expect("SYNC_STATE").await?;
    // A second link from the same server replaces the first, which is closed.
    let mut again = connect().await?;
    again.expect("HELLO").await?;
    again.send(&envelope("HELLO", json!({ "serverId": "srv-y", "secret": "s3cret" }))).await?;
    again.expect("SYNC_STATE").await?;
    let end = tokio::time::timeout(Duration::from_secs(2), good.lines.next_line()).await?;
    assert!(matches!(end, Ok(None) | Err(_)), "the first link closed: {end:?}");
    Ok(())
}

#[tokio::test]
async fn two_unisono_nodes_see_each_others_sessions_and_a_half_open_link_dies_within_3_s() -> Result<()> {
    let listen = format!("127.0.0.1:{}", free_port()?);
    let a = Server::start(&["--jwt-secret", SECRET, "--peer-listen", &listen, "--node-id", "uni-a"])?;
    let b = Server::start(&["--jwt-secret", SECRET, "--peers", &listen, "--node-id", "uni-b"])?;
    let admin = token(SECRET, "default", "admin", "ops")?;
    // A session on B shows up on A (and the other way round).
    let mut on_b = Client::connect(&b).await?;
    let _on_a = Client::connect(&a).await?;
    eventually("B's session listed on A", Duration::from_secs(5), async || {
        let v = peers_listed(&a, &admin).await?;
        let ids: Vec<&str> = v["peers"][0]["sessions"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|s| s["sessionId"].as_str())
            .collect();
        Ok((v["peers"][0]["serverId"] == "uni-b" && ids.contains(&on_b.session_id.as_str())).then_some(()))
    })
    .await?;
    eventually("A's session listed on B", Duration::from_secs(5), async || {
        let v = peers_listed(&b, &admin).await?;
        Ok((v["peers"][0]["serverId"] == "uni-a" && v["peers"][0]["sessions"].as_array().map(Vec::len) == Some(1))
            .then_some(()))
    })
    .await?;
    // Both announced the heartbeat: B paused (its socket open, silent) is dead on A within 3 s.
    let pid = b.pid().to_string();
    let _resume = Resume(pid.clone());
    std::process::Command::new("kill").args(["-STOP", &pid]).status()?;
    let paused = std::time::Instant::now();
    eventually("B gone from A", Duration::from_secs(5), async || {
        let v = peers_listed(&a, &admin).await?;
        Ok((v["peers"].as_array().map(Vec::len) == Some(0)).then_some(()))
    })
    .await?;
    let after = paused.elapsed();
    assert!(after <= Duration::from_millis(3_500), "a half-open link ended {after:?} after its peer went silent");
    on_b.clear();
    Ok(())
}

/// Sends SIGCONT to a paused process when dropped (also when the test fails).
struct Resume(String);

impl Drop for Resume {
    fn drop(&mut self) {
        let _ = std::process::Command::new("kill").args(["-CONT", &self.0]).status();
    }
}
