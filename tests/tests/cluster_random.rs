//! The randomized cluster test: six rooms with their members spread over three real nodes,
//! random commands from random members through their nodes for 32 s, one node killed with
//! `-9` at 12 s and started again at 15 s (its clients reconnect to another node with their
//! resume tokens and join again). Afterwards:
//! - every member saw a gap-free, strictly increasing `rev` sequence of playback pushes (each
//!   exactly one more than the last), from its first snapshot or from the fresh snapshot after
//!   its own reconnect;
//! - every member's last state is the owner's (same `rev`, song, play state, rate, position);
//! - the database holds every acknowledged change: each room's stored `rev` is at least every
//!   `rev` acknowledged for it, and its stored clock is the owner's.
//!
//! `#[ignore]`d like the other cluster tests (`cargo xtask test` runs it).

use std::{
    collections::HashMap,
    time::{Duration, Instant},
};

use anyhow::{Context, Result, bail, ensure};
use rand::{Rng, SeedableRng, rngs::StdRng};
use serde_json::{Value, json};
use unisono_e2e::{Client, Cluster, local_ms, position_at, song};

const ROOMS: usize = 6;
const RUN: Duration = Duration::from_secs(32);
const KILL_AT: Duration = Duration::from_secs(12);
const RESTART_AT: Duration = Duration::from_secs(15);
/// The node killed midway: it owns rooms 1 and 4 (their hosts created them there).
const VICTIM: usize = 1;

const PLAYBACK_PUSHES: [&str; 5] =
    ["playback-state-update", "playback-paused", "playback-resumed", "playback-seeked", "song-changed"];

struct Member {
    name: String,
    room: usize,
    node: usize,
    client: Option<Client>,
    session: String,
    token: String,
    /// Whether it must join its room again (after its own reconnect).
    rejoin: bool,
    /// The last playback state it holds, from a snapshot or a push (`None` until a snapshot).
    playback: Option<Value>,
    /// The host of its room, as it last heard.
    host: String,
    /// Each stretch of its connections in the room: the snapshot's rev, then every playback
    /// push's rev, in arrival order.
    epochs: Vec<(u64, Vec<u64>)>,
    pushes: usize,
    reconnects: usize,
}

impl Member {
    fn rev(&self) -> Option<u64> {
        self.playback.as_ref().and_then(|p| p["rev"].as_u64())
    }

    /// Starts a stretch at snapshot `playback`.
    fn snapshot(&mut self, playback: Value) {
        self.epochs.push((playback["rev"].as_u64().unwrap_or(0), Vec::new()));
        self.playback = Some(playback);
    }

    /// Takes the pushes received so far; a rev that is not greater than the last is a violation
    /// (whether one is missing is checked at the end, against every push of the room).
    fn absorb(&mut self, violations: &mut Vec<String>) -> bool {
        let Some(c) = self.client.as_mut() else { return false };
        let (pushes, closed) = c.drain_all();
        for p in pushes {
            let event = p["event"].as_str().unwrap_or_default();
            let data = &p["data"];
            match event {
                "room-joined" => {
                    self.snapshot(data["playback"].clone());
                    self.host = data["host"].as_str().unwrap_or_default().to_owned();
                }
                "host-changed" => self.host = data["host"].as_str().unwrap_or_default().to_owned(),
                "room-closed" => violations.push(format!("{}: room closed: {data}", self.name)),
                e if PLAYBACK_PUSHES.contains(&e) => {
                    self.pushes += 1;
                    let rev = data["rev"].as_u64().unwrap_or(0);
                    match self.rev() {
                        // Before its snapshot (just reconnected): the snapshot replaces it.
                        None => continue,
                        Some(last) if rev > last => {}
                        Some(last) => violations.push(format!("{}: {e} rev {rev} after rev {last}", self.name)),
                    }
                    if let Some((_, seen)) = self.epochs.last_mut() {
                        seen.push(rev);
                    }
                    self.playback = Some(data.clone());
                }
                _ => {}
            }
        }
        closed
    }
}

/// What the test did, for the report.
#[derive(Default, Debug)]
struct Tally {
    requests: usize,
    acked: usize,
    errors: HashMap<String, usize>,
}

fn random_command(rng: &mut StdRng, n: usize) -> (&'static str, Value) {
    match rng.random_range(0..5) {
        0 => ("seek-playback", json!({ "positionMs": rng.random_range(0.0..3_000_000.0_f64).round() })),
        1 => ("pause-playback", json!({})),
        2 => ("resume-playback", json!({})),
        3 => {
            let rate = [0.5, 1.0, 1.25, 2.0][rng.random_range(0..4)];
            ("set-rate", json!({ "rate": rate }))
        }
        _ => ("load-song", json!({ "song": song(&format!("s{n}"), 3_600_000.0), "autoplay": rng.random_bool(0.5) })),
    }
}

/// Connects `m` to a live node (resuming its session) and joins its room again.
async fn reconnect(m: &mut Member, cluster: &Cluster, live: &[bool], code: &str) -> Result<()> {
    let node = (0..3).map(|i| (m.node + i) % 3).find(|n| live[*n]).context("a live node")?;
    let mut c = Client::resume(&cluster.nodes[node], &m.token).await?;
    ensure!(c.session_id == m.session, "{}: the session id survives its node", m.name);
    m.node = node;
    m.playback = None;
    m.reconnects += 1;
    match c.request("join-room", json!({ "code": code, "name": m.name })).await? {
        Ok(_) => m.rejoin = false,
        Err(e) => {
            // The room is moving (its owner just died): try again later.
            m.rejoin = true;
            tracing_note(&format!("{}: join again later: {e}", m.name));
        }
    }
    m.client = Some(c);
    Ok(())
}

fn tracing_note(s: &str) {
    if std::env::var_os("UNISONO_TEST_VERBOSE").is_some() {
        eprintln!("{s}");
    }
}

#[tokio::test]
#[ignore = "needs PostgreSQL at 127.0.0.1:5432 and Redis at 127.0.0.1:6379 (cargo xtask test runs it)"]
async fn random_commands_on_three_nodes_with_a_node_killed_and_restarted_midway() -> Result<()> {
    let mut cluster = Cluster::start(3, &["--host-grace-secs", "20", "--resume-grace-secs", "20"])?;
    let seed: u64 = std::env::var("UNISONO_TEST_SEED").ok().and_then(|s| s.parse().ok()).unwrap_or_else(rand::random);
    eprintln!("seed {seed} (UNISONO_TEST_SEED={seed} repeats this run)");
    let mut rng = StdRng::seed_from_u64(seed);

    // Six rooms: room r's host on node r % 3 (which owns it), a member on each other node.
    let mut codes = Vec::new();
    let mut members: Vec<Member> = Vec::new();
    for r in 0..ROOMS {
        let host_node = r % 3;
        for (i, node) in [host_node, (host_node + 1) % 3, (host_node + 2) % 3].into_iter().enumerate() {
            let mut c = Client::connect(&cluster.nodes[node]).await?;
            let name = format!("r{r}m{i}");
            if i == 0 {
                let made = c.ok("create-room", json!({ "memberName": name })).await?;
                codes.push(made["code"].as_str().unwrap_or_default().to_owned());
                c.ok("load-song", json!({ "song": song("s0", 3_600_000.0), "autoplay": true })).await?;
            } else {
                c.ok("join-room", json!({ "code": codes[r], "name": name })).await?;
            }
            members.push(Member {
                name,
                room: r,
                node,
                session: c.session_id.clone(),
                token: c.resume_token.clone(),
                client: Some(c),
                rejoin: false,
                playback: None,
                host: String::new(),
                epochs: Vec::new(),
                pushes: 0,
                reconnects: 0,
            });
        }
    }
    let mut violations = Vec::new();
    for m in &mut members {
        // Each member's snapshot first (room-joined), then the pushes since.
        let c = m.client.as_mut().context("connected")?;
        let snap = c.expect_push("room-joined").await?;
        m.host = snap["host"].as_str().unwrap_or_default().to_owned();
        c.clear();
        // The host's own load came after its snapshot: take it from the state.
        let state = c.ok("get-playback-state", json!({})).await?;
        m.snapshot(state["playback"].clone());
    }

    let mut tally = Tally::default();
    let mut acked: Vec<Vec<(u64, Value)>> = vec![Vec::new(); ROOMS];
    let mut live = [true; 3];
    let (mut killed, mut restarted) = (false, false);
    let started = Instant::now();
    let mut n = 1;
    while started.elapsed() < RUN {
        if !killed && started.elapsed() >= KILL_AT {
            cluster.nodes[VICTIM].kill9();
            live[VICTIM] = false;
            killed = true;
        }
        if !restarted && started.elapsed() >= RESTART_AT {
            cluster.nodes[VICTIM].restart()?;
            live[VICTIM] = true;
            restarted = true;
        }
        // Every member takes its pushes; a closed connection (its node died) reconnects.
        for i in 0..members.len() {
            let closed = members[i].absorb(&mut violations);
            let m = &mut members[i];
            if closed || m.client.is_none() {
                m.client = None;
                if let Err(e) = reconnect(m, &cluster, &live, &codes[m.room]).await {
                    tracing_note(&format!("{}: reconnect failed, retried: {e:#}", m.name));
                }
            } else if m.rejoin
                && let Some(c) = m.client.as_mut()
                && c.request("join-room", json!({ "code": codes[m.room], "name": m.name })).await?.is_ok()
            {
                m.rejoin = false;
            }
        }
        // One random member sends one request through its node.
        let i = rng.random_range(0..members.len());
        let m = &mut members[i];
        let Some(c) = m.client.as_mut() else { continue };
        if m.rejoin {
            continue;
        }
        let is_host = m.host == m.session;
        let (event, data) = match (is_host, rng.random_bool(0.5)) {
            (true, _) | (false, true) => random_command(&mut rng, n),
            (false, false) => ("get-playback-state", json!({})),
        };
        n += 1;
        tally.requests += 1;
        match c.request(event, data).await {
            Ok(Ok(reply)) => {
                if event == "get-playback-state" {
                    continue;
                }
                if !is_host {
                    violations.push(format!("{}: {event} by a non-host succeeded", m.name));
                    continue;
                }
                tally.acked += 1;
                let p = reply["playback"].clone();
                acked[m.room].push((p["rev"].as_u64().unwrap_or(0), p));
            }
            Ok(Err(e)) => {
                let code = e["code"].as_str().unwrap_or_default().to_owned();
                match code.as_str() {
                    "NOT_HOST" if !is_host => {}
                    // The room is moving (owner died, lease not yet taken) or was just taken.
                    "CLUSTER_UNAVAILABLE" | "STORAGE_UNAVAILABLE" | "NOT_IN_ROOM" | "NOT_HOST" => {}
                    _ => violations.push(format!("{}: {event}: unexpected error {e}", m.name)),
                }
                *tally.errors.entry(code).or_default() += 1;
            }
            // Its connection went (node killed) or the reply timed out: reconnect.
            Err(e) => {
                tracing_note(&format!("{}: {event}: {e:#}", m.name));
                *tally.errors.entry("transport".into()).or_default() += 1;
                m.client = None;
            }
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    ensure!(killed && restarted, "the node was killed and restarted");

    // Quiet: everyone back in, then every push delivered.
    let settle = Instant::now();
    while members.iter().any(|m| m.client.is_none() || m.rejoin || m.playback.is_none()) {
        if settle.elapsed() > Duration::from_secs(15) {
            let stuck: Vec<&str> =
                members.iter().filter(|m| m.client.is_none() || m.rejoin).map(|m| &*m.name).collect();
            bail!("members not back in their rooms after 15 s: {stuck:?}");
        }
        for m in &mut members {
            let closed = m.absorb(&mut violations);
            if closed || m.client.is_none() {
                m.client = None;
                let _ = reconnect(m, &cluster, &live, &codes[m.room]).await;
            } else if m.rejoin
                && let Some(c) = m.client.as_mut()
                && c.request("join-room", json!({ "code": codes[m.room], "name": m.name })).await?.is_ok()
            {
                m.rejoin = false;
            }
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    tokio::time::sleep(Duration::from_millis(1500)).await;
    for m in &mut members {
        m.absorb(&mut violations);
    }

    // The owner's state of each room, through the first member's node; every member holds it.
    let now = local_ms();
    let db = cluster.database().query(
        "SELECT code, rev, is_playing, rate, COALESCE(current_song_id, ''), position_ms, anchor_time \
         FROM rooms WHERE state = 'open'",
    )?;
    let stored: HashMap<String, Vec<String>> =
        db.iter().map(|l| l.split('|').map(str::to_owned).collect::<Vec<_>>()).map(|f| (f[0].clone(), f)).collect();
    for (r, code) in codes.iter().enumerate() {
        let first = members.iter_mut().find(|m| m.room == r).context("a member")?;
        let owner =
            first.client.as_mut().context("connected")?.ok("get-playback-state", json!({})).await?["playback"].clone();
        let rev = owner["rev"].as_u64().context("owner rev")?;
        // Every rev the room pushed: what any member saw, and every acknowledged change.
        let mut pushed: Vec<u64> = members
            .iter()
            .filter(|m| m.room == r)
            .flat_map(|m| m.epochs.iter().flat_map(|(_, seen)| seen.iter().copied()))
            .chain(acked[r].iter().map(|(rev, _)| *rev))
            .collect();
        pushed.sort_unstable();
        pushed.dedup();
        for m in members.iter().filter(|m| m.room == r) {
            // Each stretch saw every push of the room after its snapshot, up to its end (the
            // owner's rev for the last one), in order and once.
            for (k, (start, seen)) in m.epochs.iter().enumerate() {
                let end = if k + 1 == m.epochs.len() { rev } else { seen.last().copied().unwrap_or(*start) };
                let expected: Vec<u64> = pushed.iter().copied().filter(|x| x > start && *x <= end).collect();
                if *seen != expected {
                    let missing: Vec<u64> = expected.iter().copied().filter(|x| !seen.contains(x)).collect();
                    violations.push(format!(
                        "{}: stretch {k} from rev {start}: missed {missing:?} (saw {} of {})",
                        m.name,
                        seen.len(),
                        expected.len()
                    ));
                }
            }
        }
        for m in members.iter().filter(|m| m.room == r) {
            let mine = m.playback.as_ref().context("a state")?;
            let same = mine["rev"] == owner["rev"]
                && mine["song"]["id"] == owner["song"]["id"]
                && mine["isPlaying"] == owner["isPlaying"]
                && mine["rate"] == owner["rate"]
                && (position_at(mine, now) - position_at(&owner, now)).abs() < 1.0;
            if !same {
                violations.push(format!("{}: last state {mine} is not the owner's {owner}", m.name));
            }
        }
        // Nothing acknowledged is missing from the database; the stored clock is the owner's.
        let row = stored.get(code).with_context(|| format!("room {code} stored"))?;
        let db_rev: u64 = row[1].parse()?;
        if db_rev != rev {
            violations.push(format!("room {code}: stored rev {db_rev}, owner's {rev}"));
        }
        let revs: Vec<u64> = acked[r].iter().map(|(rev, _)| *rev).collect();
        // Non-decreasing: a command that changes nothing (resume while playing) acknowledges
        // the current rev.
        if !revs.windows(2).all(|w| w[0] <= w[1]) {
            violations.push(format!("room {code}: acknowledged revs going back: {revs:?}"));
        }
        if let Some(max) = revs.iter().max()
            && *max > db_rev
        {
            violations.push(format!("room {code}: acknowledged rev {max} is not stored (stored {db_rev})"));
        }
        let playing = row[2] == "t" || row[2] == "true";
        let (rate, position, anchor): (f64, f64, f64) = (row[3].parse()?, row[5].parse()?, row[6].parse()?);
        let db_pos = if playing { position + (now - anchor) * rate } else { position };
        let owner_pos = position_at(&owner, now);
        if playing != (owner["isPlaying"] == json!(true))
            || (db_pos - owner_pos).abs() > 1.0
            || row[4] != owner["song"]["id"].as_str().unwrap_or_default()
        {
            violations.push(format!("room {code}: stored {row:?} is not the owner's {owner}"));
        }
    }
    let pushes: usize = members.iter().map(|m| m.pushes).sum();
    let reconnects: usize = members.iter().map(|m| m.reconnects).sum();
    eprintln!(
        "{} requests, {} acknowledged changes, {pushes} playback pushes checked, {reconnects} reconnects, errors {:?}",
        tally.requests, tally.acked, tally.errors
    );
    ensure!(violations.is_empty(), "{} violations (seed {seed}):\n{}", violations.len(), violations.join("\n"));
    ensure!(tally.acked > 100, "too few acknowledged changes to mean anything: {}", tally.acked);
    ensure!(reconnects >= ROOMS, "the victim's clients reconnected: {reconnects}");
    Ok(())
}
