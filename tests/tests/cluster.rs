//! Several real `unisono` processes as one service, over the local Redis and a shared
//! PostgreSQL database (each test its own database and Redis prefix, removed afterwards).
//! `#[ignore]`d unless both services are configured: `cargo xtask test` runs them
//! (`--include-ignored`) and, under CI=true, they fail without the services.

use std::time::Duration;

use anyhow::{Context, Result};
use serde_json::{Value, json};
use unisono_e2e::{CLUSTER_SECRET, Client, Cluster, eventually, position_at, server_now, song, token};

/// The names in a `get-members` page, sorted.
fn member_names(page: &Value) -> Vec<String> {
    let mut names: Vec<String> = page["members"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|x| x["name"].as_str().map(str::to_owned))
        .collect();
    names.sort();
    names
}

/// A room created on node `host_node` (which owns it), its host there, and two members named
/// `names` joined through the two other nodes, in node order.
async fn room_on(cluster: &Cluster, host_node: usize, names: [&str; 2]) -> Result<(String, Client, Client, Client)> {
    let mut host = Client::connect(&cluster.nodes[host_node]).await?;
    let code =
        host.ok("create-room", json!({ "memberName": "host" })).await?["code"].as_str().unwrap_or_default().to_owned();
    let mut members = Vec::new();
    for (node, name) in (0..3).filter(|n| *n != host_node).zip(names) {
        let mut m = Client::connect(&cluster.nodes[node]).await?;
        m.ok("join-room", json!({ "code": code, "name": name })).await?;
        members.push(m);
    }
    let (Some(c), Some(b)) = (members.pop(), members.pop()) else { anyhow::bail!("two members") };
    Ok((code, host, b, c))
}

/// A room created on node A, its host there, and members joined through nodes B and C.
async fn room_across(cluster: &Cluster) -> Result<(String, Client, Client, Client)> {
    room_on(cluster, 0, ["bea", "cai"]).await
}

/// The revs of `member`'s `playback-seeked` pushes, up to and including the one of rev `rev`.
async fn seeks_until(member: &mut Client, rev: u64) -> Result<Vec<u64>> {
    let mut seeks = Vec::new();
    while seeks.last() != Some(&rev) {
        seeks.push(member.expect_push("playback-seeked").await?["rev"].as_u64().unwrap_or(0));
    }
    Ok(seeks)
}

#[tokio::test]
#[ignore = "needs PostgreSQL at 127.0.0.1:5432 and Redis at 127.0.0.1:6379 (cargo xtask test runs it)"]
async fn members_on_three_nodes_get_every_push_once_in_rev_order() -> Result<()> {
    let cluster = Cluster::start(3, &[])?;
    let (_code, mut host, mut b, mut c) = room_across(&cluster).await?;
    host.ok("load-song", json!({ "song": song("s1", 600_000.0), "autoplay": true })).await?;
    let mut revs = Vec::new();
    for i in 1..=20 {
        let r = host.ok("seek-playback", json!({ "positionMs": 1000.0 * i as f64 })).await?;
        revs.push(r["playback"]["rev"].as_u64().unwrap_or(0));
    }
    let last = *revs.last().unwrap_or(&0);
    for (name, m) in [("b", &mut b), ("c", &mut c)] {
        // Every seek once, in rev order, with the host's own playback state.
        let mut all: Vec<Value> = m.drain_pushes("playback-seeked");
        while all.len() < revs.len() {
            all.push(m.expect_push("playback-seeked").await?);
        }
        let got: Vec<u64> = all.iter().map(|p| p["rev"].as_u64().unwrap_or(0)).collect();
        assert_eq!(got, revs, "member {name}: every seek once, in rev order");
        assert!(m.drain_pushes("playback-seeked").is_empty(), "member {name}: no duplicate");
        let state = m.ok("get-playback-state", json!({})).await?;
        assert_eq!(state["playback"]["rev"].as_u64(), Some(last), "member {name} reads the owner's state");
    }
    Ok(())
}

#[tokio::test]
#[ignore = "needs PostgreSQL at 127.0.0.1:5432 and Redis at 127.0.0.1:6379 (cargo xtask test runs it)"]
async fn control_members_and_late_joiners_work_through_any_node() -> Result<()> {
    let cluster = Cluster::start(3, &[])?;
    let (code, mut host, mut b, mut c) = room_across(&cluster).await?;
    host.ok("load-song", json!({ "song": song("s1", 600_000.0), "autoplay": true })).await?;
    // Not the host, through another node: refused, and nothing changes.
    assert_eq!(b.err_code("pause-playback", json!({})).await?, "NOT_HOST");
    assert_eq!(c.err_code("seek-playback", json!({ "positionMs": 5.0 })).await?, "NOT_HOST");
    // Members of every node, listed through any node.
    for m in [&mut host, &mut b, &mut c] {
        let page = m.ok("get-members", json!({})).await?;
        assert_eq!(member_names(&page), ["bea", "cai", "host"]);
        assert_eq!(page["total"], json!(3));
    }
    // A late joiner through node C starts where the host expects.
    tokio::time::sleep(Duration::from_millis(700)).await; // playback runs for a while
    let mut late = Client::connect(&cluster.nodes[2]).await?;
    late.ok("join-room", json!({ "code": code })).await?;
    let snap = late.expect_push("room-joined").await?;
    let now_late = server_now(&mut late).await?;
    let now_host = server_now(&mut host).await?;
    let theirs = position_at(&snap["playback"], now_late);
    let host_state = host.ok("get-playback-state", json!({})).await?;
    let ours = position_at(&host_state["playback"], now_host);
    let elapsed = now_host - now_late;
    assert!((theirs + elapsed - ours).abs() < 50.0, "late joiner {theirs} vs host {ours} ({elapsed} ms apart)");
    // The room's metrics say where it lives: one node owns it, the others forwarded to it.
    let owner_rooms = cluster.nodes[0].metric("unisono_rooms").await?;
    assert_eq!(owner_rooms, 1.0);
    assert_eq!(cluster.nodes[1].metric("unisono_rooms").await?, 0.0);
    assert!(cluster.nodes[1].metric("unisono_cluster_forwarded_total").await? >= 3.0);
    Ok(())
}

#[tokio::test]
#[ignore = "needs PostgreSQL at 127.0.0.1:5432 and Redis at 127.0.0.1:6379 (cargo xtask test runs it)"]
async fn a_node_subscribes_a_room_only_while_it_has_members_of_it() -> Result<()> {
    let cluster = Cluster::start(3, &[])?;
    let (_code, mut host, b, _c) = room_across(&cluster).await?;
    let subs = |i: usize| {
        let node = &cluster.nodes[i];
        async move { node.metric("unisono_cluster_subscriptions").await }
    };
    // B: its member's session and the room; the third node has nothing of this room but its own.
    let b_before = subs(1).await?;
    b.close().await;
    eventually("B unsubscribes the room when its member leaves", Duration::from_secs(3), async || {
        Ok((subs(1).await? <= b_before - 1.0).then_some(()))
    })
    .await?;
    // Traffic of the room no longer reaches B.
    let before = cluster.nodes[1].metric("unisono_cluster_messages_in_total").await?;
    host.ok("load-song", json!({ "song": song("s2", 600_000.0), "autoplay": true })).await?;
    for i in 0..10 {
        host.ok("seek-playback", json!({ "positionMs": 100.0 * i as f64 })).await?;
    }
    tokio::time::sleep(Duration::from_millis(300)).await; // what B would receive has arrived
    let after = cluster.nodes[1].metric("unisono_cluster_messages_in_total").await?;
    assert!(after - before < 3.0, "B got {} messages of a room it has no member of", after - before);
    Ok(())
}

#[tokio::test]
#[ignore = "needs PostgreSQL at 127.0.0.1:5432 and Redis at 127.0.0.1:6379 (cargo xtask test runs it)"]
async fn the_cluster_status_lists_the_live_nodes_and_forgets_a_dead_one() -> Result<()> {
    let mut cluster = Cluster::start(3, &[])?;
    let admin = token(CLUSTER_SECRET, "acme", "admin", "ops")?;
    let listed = async |node: &unisono_e2e::Server| -> Result<Vec<String>> {
        let (status, body) = node.get_as("/api/cluster", &admin).await?;
        anyhow::ensure!(status == 200, "GET /api/cluster answered {status}: {body}");
        let v: Value = serde_json::from_str(&body)?;
        Ok(v["nodes"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|n| n["nodeId"].as_str().map(str::to_owned))
            .collect())
    };
    // Every node lists all three (once each has sent its first heartbeat).
    eventually("every node is listed", Duration::from_secs(3), async || {
        Ok((listed(&cluster.nodes[2]).await? == ["node-a", "node-b", "node-c"]).then_some(()))
    })
    .await?;
    let (status, _) = cluster.nodes[0].get("/api/cluster").await?;
    assert_eq!(status, 401, "the status needs an admin token");
    // A node killed with -9 says nothing; its entry expires by itself (three heartbeats).
    cluster.nodes[1].kill9();
    let started = std::time::Instant::now();
    eventually("the dead node leaves the status", Duration::from_secs(5), async || {
        Ok((listed(&cluster.nodes[0]).await? == ["node-a", "node-c"]).then_some(()))
    })
    .await?;
    assert!(started.elapsed() < Duration::from_secs(5));
    eventually("the node count follows", Duration::from_secs(3), async || {
        Ok((cluster.nodes[2].metric("unisono_cluster_nodes").await? == 2.0).then_some(()))
    })
    .await?;
    Ok(())
}

/// The rooms this node owns, by its metric.
async fn owned(node: &unisono_e2e::Server) -> Result<f64> {
    node.metric("unisono_rooms").await
}

#[tokio::test]
#[ignore = "needs PostgreSQL at 127.0.0.1:5432 and Redis at 127.0.0.1:6379 (cargo xtask test runs it)"]
async fn when_the_owner_is_killed_another_node_takes_the_room_over_and_nothing_is_lost() -> Result<()> {
    let mut cluster = Cluster::start(3, &["--host-grace-secs", "10"])?;
    // Host on node B: B owns the room. Members on A and C.
    let (code, mut host, mut a, mut c) = room_on(&cluster, 1, ["ada", "cai"]).await?;
    let (host_id, token) = (host.session_id.clone(), host.resume_token.clone());
    host.ok("load-song", json!({ "song": song("s1", 600_000.0), "autoplay": true })).await?;
    let acked = host.ok("seek-playback", json!({ "positionMs": 30_000.0 })).await?;
    let acked_rev = acked["playback"]["rev"].as_u64().unwrap_or(0);
    assert_eq!(owned(&cluster.nodes[1]).await?, 1.0);

    // kill -9 of the owner, while members on A and C keep playing.
    cluster.nodes[1].kill9();
    let killed = std::time::Instant::now();
    eventually("another node owns the room", Duration::from_secs(6), async || {
        let n = owned(&cluster.nodes[0]).await? + owned(&cluster.nodes[2]).await?;
        Ok((n == 1.0).then_some(()))
    })
    .await?;
    let moved_in = killed.elapsed();
    assert!(moved_in < Duration::from_secs(5), "taken over after {moved_in:?}");
    // Restored from PostgreSQL: same song, the acknowledged seek, still playing by the clock.
    for (name, m) in [("ada", &mut a), ("cai", &mut c)] {
        let state = m.ok("get-playback-state", json!({})).await?;
        let p = &state["playback"];
        assert_eq!(p["song"]["id"], json!("s1"), "{name}");
        assert_eq!(p["isPlaying"], json!(true), "{name}: never paused");
        assert!(p["rev"].as_u64().unwrap_or(0) >= acked_rev, "{name}: the acknowledged seek is kept");
        let now = server_now(m).await?;
        let pos = position_at(p, now);
        assert!(pos >= 30_000.0 && pos < 30_000.0 + killed.elapsed().as_millis() as f64 + 3_000.0, "{name}: at {pos}");
    }
    // The host comes back through C with its resume token: same session, still host.
    let mut host = Client::resume(&cluster.nodes[2], &token).await?;
    assert_eq!(host.session_id, host_id, "the session id survives its node");
    host.ok("join-room", json!({ "code": code, "name": "host" })).await?;
    let snap = host.expect_push("room-joined").await?;
    assert_eq!(snap["host"], json!(host_id), "still the host within the grace period");
    let r = host.ok("seek-playback", json!({ "positionMs": 5_000.0 })).await?;
    let rev = r["playback"]["rev"].as_u64().unwrap_or(0);
    assert!(rev > acked_rev, "rev continues upward: {rev} after {acked_rev}");
    for (name, m) in [("ada", &mut a), ("cai", &mut c)] {
        // Everything the member saw of the playback, before and after the take-over: the new
        // owner's seek last, strictly increasing revs (no duplicate, no reordering), no pause.
        let seeks = seeks_until(m, rev).await?;
        let mut revs: Vec<u64> =
            m.drain_pushes("song-changed").iter().map(|p| p["rev"].as_u64().unwrap_or(0)).collect();
        assert!(m.drain_pushes("playback-paused").is_empty(), "{name} was paused");
        revs.extend(seeks);
        assert!(revs.windows(2).all(|w| w[0] < w[1]), "{name}: revs not strictly increasing: {revs:?}");
        assert_eq!(revs.first().copied(), Some(acked_rev - 1), "{name}: from the load on: {revs:?}");
    }
    // Members re-announced to the new owner: a member's own request works (no NOT_IN_ROOM).
    assert_eq!(a.err_code("pause-playback", json!({})).await?, "NOT_HOST");
    let page = c.ok("get-members", json!({})).await?;
    assert_eq!(member_names(&page), ["ada", "cai", "host"]);
    Ok(())
}

#[tokio::test]
#[ignore = "needs PostgreSQL at 127.0.0.1:5432 and Redis at 127.0.0.1:6379 (cargo xtask test runs it)"]
async fn a_paused_owner_loses_its_room_and_writes_nothing_when_it_wakes() -> Result<()> {
    let cluster = Cluster::start(3, &[])?;
    let (_code, mut host, mut a, mut c) = room_on(&cluster, 1, ["ada", "cai"]).await?;
    host.ok("load-song", json!({ "song": song("s1", 600_000.0), "autoplay": true })).await?;
    let before =
        host.ok("seek-playback", json!({ "positionMs": 10_000.0 })).await?["playback"]["rev"].as_u64().unwrap_or(0);
    // The owner stops (a paused VM, a GC pause, SIGSTOP): its sockets stay open, it renews nothing.
    let pid = cluster.nodes[1].pid().to_string();
    std::process::Command::new("kill").args(["-STOP", &pid]).status()?;
    let resume = scopeguard(pid.clone());
    eventually("another node takes the room over", Duration::from_secs(6), async || {
        let n = owned(&cluster.nodes[0]).await? + owned(&cluster.nodes[2]).await?;
        Ok((n == 1.0).then_some(()))
    })
    .await?;
    // The new owner is in charge: a member's request works there.
    assert_eq!(a.err_code("pause-playback", json!({})).await?, "NOT_HOST");
    // The paused node wakes up: it finds its lease taken and gives the room up; whatever it
    // tries to write is refused by the store (fencing), so no member sees a stale push.
    drop(resume);
    eventually("the woken node gives the room up", Duration::from_secs(5), async || {
        Ok((owned(&cluster.nodes[1]).await? == 0.0).then_some(()))
    })
    .await?;
    // Its client goes on through it: requests now reach the new owner.
    let r = host.ok("seek-playback", json!({ "positionMs": 20_000.0 })).await?;
    let after = r["playback"]["rev"].as_u64().unwrap_or(0);
    assert!(after > before, "rev continues upward on the new owner: {after} after {before}");
    for (name, m) in [("ada", &mut a), ("cai", &mut c)] {
        let seeks = seeks_until(m, after).await?;
        assert!(seeks.windows(2).all(|w| w[0] < w[1]), "{name}: a stale or duplicate push: {seeks:?}");
        assert!(m.drain_pushes("playback-paused").is_empty(), "{name} was paused");
    }
    let stored = host.ok("get-playback-state", json!({})).await?;
    assert_eq!(stored["playback"]["rev"].as_u64(), Some(after));
    Ok(())
}

/// Sends SIGCONT to `pid` when dropped (also when the test fails, so no process stays stopped).
fn scopeguard(pid: String) -> impl Drop {
    struct Cont(String);
    impl Drop for Cont {
        fn drop(&mut self) {
            let _ = std::process::Command::new("kill").args(["-CONT", &self.0]).status();
        }
    }
    Cont(pid)
}

#[tokio::test]
#[ignore = "needs PostgreSQL at 127.0.0.1:5432 and Redis at 127.0.0.1:6379 (cargo xtask test runs it)"]
async fn a_live_owner_keeps_its_room_lease_after_lease() -> Result<()> {
    // Short leases: several renewals pass in a second and a half.
    let cluster = Cluster::start(3, &["--room-lease-ms", "300"])?;
    let (_code, mut host, mut b, _c) = room_across(&cluster).await?;
    tokio::time::sleep(Duration::from_millis(1500)).await; // five leases pass, renewed each time
    for node in &cluster.nodes {
        assert_eq!(node.metric("unisono_cluster_takeovers_total").await?, 0.0, "a live owner's room moved");
    }
    assert_eq!(owned(&cluster.nodes[0]).await?, 1.0);
    host.ok("load-song", json!({ "song": song("s1", 60_000.0) })).await?;
    b.expect_push("song-changed").await?;
    Ok(())
}

/// Waits (up to `wait`) for `member`'s `member-left` push of session `left`; when it came.
async fn left_push(member: &mut Client, left: &str, wait: Duration) -> Result<std::time::Instant> {
    let deadline = std::time::Instant::now() + wait;
    loop {
        let rest = deadline.saturating_duration_since(std::time::Instant::now());
        let (at, p) = member.expect_push_within("member-left", rest).await?;
        if p["sessionId"] == json!(left) {
            return Ok(at);
        }
    }
}

#[tokio::test]
#[ignore = "needs PostgreSQL at 127.0.0.1:5432 and Redis at 127.0.0.1:6379 (cargo xtask test runs it)"]
async fn the_sessions_of_a_dead_node_leave_presence_everywhere() -> Result<()> {
    let grace = Duration::from_secs(1);
    let mut cluster = Cluster::start(3, &["--resume-grace-secs", "1"])?;
    // Host on A (the owner), bea on B, cai on C.
    let (_code, mut host, b, mut c) = room_across(&cluster).await?;
    let bea = b.session_id.clone();
    // B dies: its sockets close with it, but nobody tells the owner that bea is gone.
    cluster.nodes[1].kill9();
    let killed = std::time::Instant::now();
    let within = Duration::from_secs(5) + grace + Duration::from_secs(2);
    for (name, m) in [("host", &mut host), ("cai", &mut c)] {
        let at = left_push(m, &bea, within).await.with_context(|| format!("{name} sees bea leave"))?;
        let after = at.duration_since(killed);
        assert!(after <= Duration::from_secs(5) + grace, "{name}: bea left {after:?} after her node died");
    }
    // And she is out of every listing, through any live node.
    let page = c.ok("get-members", json!({})).await?;
    assert_eq!(member_names(&page), ["cai", "host"]);
    let page = host.ok("get-members", json!({})).await?;
    assert_eq!(member_names(&page), ["cai", "host"]);
    Ok(())
}

#[tokio::test]
#[ignore = "needs PostgreSQL at 127.0.0.1:5432 and Redis at 127.0.0.1:6379 (cargo xtask test runs it)"]
async fn the_members_of_a_dead_owner_leave_presence_on_the_new_owner() -> Result<()> {
    let grace = Duration::from_secs(1);
    let mut cluster = Cluster::start(3, &["--resume-grace-secs", "1"])?;
    // Host and ann on A (the owner), bea on B, cai on C.
    let (code, _host, mut b, mut c) = room_across(&cluster).await?;
    let mut ann = Client::connect(&cluster.nodes[0]).await?;
    ann.ok("join-room", json!({ "code": code, "name": "ann" })).await?;
    let ann_id = ann.session_id.clone();
    assert_eq!(member_names(&c.ok("get-members", json!({})).await?), ["ann", "bea", "cai", "host"]);
    // The owner dies with two of the room's members: the node taking the room over has only
    // the record in Redis to know them by.
    cluster.nodes[0].kill9();
    let killed = std::time::Instant::now();
    let within = Duration::from_secs(10) + grace;
    for (name, m) in [("bea", &mut b), ("cai", &mut c)] {
        let at = left_push(m, &ann_id, within).await.with_context(|| format!("{name} sees ann leave"))?;
        let after = at.duration_since(killed);
        // The owner's registry entry and lease expire (3 s), the room is taken over at the next
        // check (1 s), its dead members are disconnected there at once and leave after the grace.
        assert!(after <= Duration::from_secs(5) + grace, "{name}: ann left {after:?} after her node died");
        eprintln!("{name}: ann left {after:?} after her node died");
    }
    eventually("the dead owner's members are gone from the room", Duration::from_secs(5), async || {
        let names = member_names(&b.ok("get-members", json!({})).await?);
        Ok((names == ["bea", "cai"]).then_some(()))
    })
    .await?;
    Ok(())
}

#[tokio::test]
#[ignore = "needs PostgreSQL at 127.0.0.1:5432 and Redis at 127.0.0.1:6379 (cargo xtask test runs it)"]
async fn seed_004_disconnect_and_publish_reach_connections_on_any_node() -> Result<()> {
    let acme_key = "acme-key-0123456789abcdef";
    let cluster = Cluster::start(
        3,
        &["--api-key", &format!("acme={acme_key}"), "--api-key", "globex=globex-key-0123456789abcdef"],
    )?;
    let as_user = |tenant: &str, sub: &str| token(CLUSTER_SECRET, tenant, "user", sub);
    let on = |node: usize, t: &str| format!("{}?token={t}", cluster.nodes[node].ws_url());
    // acme's users on B and C, globex's on C.
    let mut bob = Client::connect_url(&on(1, &as_user("acme", "bob")?)).await?;
    let mut cai = Client::connect_url(&on(2, &as_user("acme", "cai")?)).await?;
    let mut gil = Client::connect_url(&on(2, &as_user("globex", "gil")?)).await?;
    let admin = token(CLUSTER_SECRET, "acme", "admin", "ops")?;

    // A publish to the tenant through A reaches acme's connections on B and C, not globex's.
    let body = json!({ "target": "tenant", "event": "news", "data": { "n": 1 } });
    let (status, text) = cluster.nodes[0].post_as("/api/publish", acme_key, &body).await?;
    assert_eq!(status, 200, "{text}");
    assert_eq!(serde_json::from_str::<Value>(&text)?["delivered"], json!(2), "{text}");
    for (name, c) in [("bob", &mut bob), ("cai", &mut cai)] {
        assert_eq!(c.expect_push("news").await?, json!({ "n": 1 }), "{name}");
    }
    // One session, by its id, on another node.
    let body = json!({ "target": "session", "id": cai.session_id, "event": "only-you", "data": {} });
    let (status, text) = cluster.nodes[0].post_as("/api/publish", acme_key, &body).await?;
    assert_eq!((status, serde_json::from_str::<Value>(&text)?["delivered"].clone()), (200, json!(1)), "{text}");
    cai.expect_push("only-you").await?;
    // Another tenant's session is not found through acme's key.
    let body = json!({ "target": "session", "id": gil.session_id, "event": "x", "data": {} });
    let (_, text) = cluster.nodes[0].post_as("/api/publish", acme_key, &body).await?;
    assert_eq!(serde_json::from_str::<Value>(&text)?["delivered"], json!(0), "{text}");

    // A forced disconnect through A closes bob's connection on B within a second.
    let path = format!("/api/connections/{}/disconnect", bob.session_id);
    let asked = std::time::Instant::now();
    let (status, text) = cluster.nodes[0].post_as(&path, &admin, &json!({})).await?;
    assert_eq!(status, 200, "{text}");
    assert_eq!(bob.expect_close(Duration::from_secs(1)).await?, Some(4009));
    assert!(asked.elapsed() < Duration::from_secs(1), "closed after {:?}", asked.elapsed());
    // Unknown anywhere, or another tenant's: 404, and gil is still connected.
    let (status, _) = cluster.nodes[0].post_as("/api/connections/nobody/disconnect", &admin, &json!({})).await?;
    assert_eq!(status, 404);
    let path = format!("/api/connections/{}/disconnect", gil.session_id);
    assert_eq!(cluster.nodes[0].post_as(&path, &admin, &json!({})).await?.0, 404);
    gil.ok("time-sync", json!({ "t0": 1.0 })).await?;
    drop(gil);
    Ok(())
}

#[tokio::test]
#[ignore = "needs PostgreSQL at 127.0.0.1:5432 and Redis at 127.0.0.1:6379 (cargo xtask test runs it)"]
async fn a_redis_outage_stops_only_cross_node_work_and_the_cluster_heals_by_itself() -> Result<()> {
    let mut redis = unisono_e2e::RedisServer::start()?;
    let cluster = Cluster::start_on(&redis.url(), 2, &[])?;
    let [a, b] = [&cluster.nodes[0], &cluster.nodes[1]];
    // Room X across the nodes (owner A, a member on B); room Y entirely on A.
    let mut host_x = Client::connect(a).await?;
    let x =
        host_x.ok("create-room", json!({ "memberName": "hx" })).await?["code"].as_str().unwrap_or_default().to_owned();
    host_x.ok("load-song", json!({ "song": song("s1", 600_000.0), "autoplay": true })).await?;
    let mut bea = Client::connect(b).await?;
    bea.ok("join-room", json!({ "code": x, "name": "bea" })).await?;
    let mut host_y = Client::connect(a).await?;
    let y =
        host_y.ok("create-room", json!({ "memberName": "hy" })).await?["code"].as_str().unwrap_or_default().to_owned();
    let mut ann = Client::connect(a).await?;
    ann.ok("join-room", json!({ "code": y, "name": "ann" })).await?;
    host_y.ok("load-song", json!({ "song": song("s1", 600_000.0), "autoplay": true })).await?;

    redis.kill9();
    let outage = std::time::Instant::now();
    // Local work goes on: a seek on A reaches A's member, acknowledged and stored.
    let r = host_y.ok("seek-playback", json!({ "positionMs": 42_000.0 })).await?;
    let acked = r["playback"]["rev"].as_u64().unwrap_or(0);
    assert_eq!(ann.expect_push("playback-seeked").await?["rev"].as_u64(), Some(acked));
    // Work that needs the other node gets a clear error, quickly.
    let asked = std::time::Instant::now();
    assert_eq!(bea.err_code("get-members", json!({})).await?, "CLUSTER_UNAVAILABLE");
    assert!(asked.elapsed() < Duration::from_secs(3), "answered after {:?}", asked.elapsed());
    // Ten seconds without Redis: both nodes still serve.
    tokio::time::sleep(Duration::from_secs(10).saturating_sub(outage.elapsed())).await;
    for node in [a, b] {
        assert_eq!(node.get("/healthz").await?.0, 200);
    }

    // Redis is back, empty. Within 5 s the cluster works again without any restart: forwarded
    // requests, cross-node pushes (subscriptions restored), the registry.
    redis.restart()?;
    let back = std::time::Instant::now();
    eventually("forwarded requests work again", Duration::from_secs(5), async || {
        Ok(bea.request("get-members", json!({})).await?.ok().map(|page| member_names(&page)))
    })
    .await
    .map(|names| assert_eq!(names, ["bea", "hx"]))?;
    eventually("pushes cross nodes again", Duration::from_secs(5), async || {
        let r = host_x.ok("seek-playback", json!({ "positionMs": 1_000.0 })).await?;
        let rev = r["playback"]["rev"].as_u64().unwrap_or(0);
        let got = bea.expect_push_within("playback-seeked", Duration::from_millis(300)).await.ok();
        bea.drain_pushes("playback-seeked");
        Ok(got.filter(|(_, p)| p["rev"].as_u64() >= Some(rev)).map(|_| ()))
    })
    .await?;
    eventually("both nodes are listed again", Duration::from_secs(5), async || {
        let (_, text) = a.get_as("/api/cluster", &token(CLUSTER_SECRET, "acme", "admin", "ops")?).await?;
        let nodes = serde_json::from_str::<Value>(&text)?["nodes"].as_array().map_or(0, Vec::len);
        Ok((nodes == 2).then_some(()))
    })
    .await?;
    assert!(back.elapsed() < Duration::from_secs(5), "healed after {:?}", back.elapsed());
    // Nothing acknowledged was lost, and room Y stayed where it was.
    let state = host_y.ok("get-playback-state", json!({})).await?;
    assert!(state["playback"]["rev"].as_u64().unwrap_or(0) >= acked);
    assert_eq!(owned(a).await?, 2.0, "A still owns both rooms");
    Ok(())
}

#[test]
#[ignore = "needs PostgreSQL at 127.0.0.1:5432 and Redis at 127.0.0.1:6379 (cargo xtask test runs it)"]
fn devices_and_admins_work_across_nodes_and_survive_the_hub_node() -> Result<()> {
    let cluster = Cluster::start(3, &[])?;
    let urls: Vec<String> = cluster.nodes.iter().map(|n| n.http_url("")).collect();
    let pids: Vec<String> = cluster.nodes.iter().map(|n| n.pid().to_string()).collect();
    unisono_e2e::run_node(
        "sio_cluster_devices.mjs",
        &cluster.nodes[0],
        &[("UNISONO_URLS", &urls.join(",")), ("UNISONO_PIDS", &pids.join(",")), ("UNISONO_JWT_SECRET", CLUSTER_SECRET)],
    )
}

#[test]
#[ignore = "needs PostgreSQL at 127.0.0.1:5432 and Redis at 127.0.0.1:6379 (cargo xtask test runs it)"]
fn device_limits_per_tenant_hold_for_the_whole_cluster() -> Result<()> {
    let cluster = Cluster::start(3, &["--max-devices-per-tenant", "2", "--max-pending-commands", "1"])?;
    let urls: Vec<String> = cluster.nodes.iter().map(|n| n.http_url("")).collect();
    unisono_e2e::run_node(
        "sio_cluster_limits.mjs",
        &cluster.nodes[0],
        &[("UNISONO_URLS", &urls.join(",")), ("UNISONO_JWT_SECRET", CLUSTER_SECRET)],
    )
}

#[tokio::test]
#[ignore = "needs PostgreSQL at 127.0.0.1:5432 and Redis at 127.0.0.1:6379 (cargo xtask test runs it)"]
async fn rooms_per_tenant_are_counted_on_every_node() -> Result<()> {
    let cluster = Cluster::start(3, &["--max-rooms-per-tenant", "2"])?;
    let acme = token(CLUSTER_SECRET, "acme", "user", "u1")?;
    let mut clients = Vec::new();
    for node in &cluster.nodes {
        clients.push(Client::connect_url(&format!("{}?token={acme}", node.ws_url())).await?);
    }
    clients[0].ok("create-room", json!({ "memberName": "a" })).await?;
    clients[1].ok("create-room", json!({ "memberName": "b" })).await?;
    assert_eq!(clients[2].err_code("create-room", json!({ "memberName": "c" })).await?, "TOO_MANY_ROOMS");
    // Another tenant counts its own.
    let globex = token(CLUSTER_SECRET, "globex", "user", "u2")?;
    let mut g = Client::connect_url(&format!("{}?token={globex}", cluster.nodes[2].ws_url())).await?;
    g.ok("create-room", json!({ "memberName": "g" })).await?;
    Ok(())
}

/// `unisono cluster status ARGS` against the test's Redis prefix: its stdout.
fn status_cli(cluster: &Cluster, extra: &[&str]) -> Result<String> {
    let out = std::process::Command::new(unisono_e2e::binary())
        .args(["cluster", "status", "--redis-url", unisono_e2e::REDIS_URL, "--redis-prefix", &cluster.prefix])
        .args(extra)
        .output()
        .context("running unisono cluster status")?;
    anyhow::ensure!(out.status.success(), "cluster status failed: {}", String::from_utf8_lossy(&out.stderr));
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

#[tokio::test]
#[ignore = "needs PostgreSQL at 127.0.0.1:5432 and Redis at 127.0.0.1:6379 (cargo xtask test runs it)"]
async fn cluster_status_on_the_command_line_lists_the_live_nodes() -> Result<()> {
    let mut cluster = Cluster::start(3, &[])?;
    let mut host = Client::connect(&cluster.nodes[1]).await?;
    host.ok("create-room", json!({ "memberName": "host" })).await?;
    let nodes: Vec<Value> = eventually("three nodes, node-b owning a room", Duration::from_secs(5), async || {
        let nodes: Vec<Value> = serde_json::from_str(&status_cli(&cluster, &["--json"])?)?;
        Ok((nodes.len() == 3 && nodes[1]["rooms"] == 1).then_some(nodes))
    })
    .await?;
    let ids: Vec<&str> = nodes.iter().filter_map(|n| n["nodeId"].as_str()).collect();
    assert_eq!(ids, ["node-a", "node-b", "node-c"]);
    let addr = cluster.nodes[0].http_url("");
    assert_eq!(nodes[0]["address"].as_str().map(|a| format!("http://{a}")), Some(addr));
    let table = status_cli(&cluster, &[])?;
    assert!(table.starts_with("NODE"), "{table}");
    assert!(table.contains("3 nodes, 1 rooms"), "{table}");
    cluster.nodes[2].kill9();
    eventually("node-c gone from the status", Duration::from_secs(5), async || {
        let nodes: Vec<Value> = serde_json::from_str(&status_cli(&cluster, &["--json"])?)?;
        Ok((nodes.len() == 2).then_some(()))
    })
    .await?;
    Ok(())
}
