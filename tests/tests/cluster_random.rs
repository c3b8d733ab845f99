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
    sync::{
        Arc, Mutex,
        atomic::{AtomicBool, AtomicUsize, Ordering},
    },
    time::{Duration, Instant},
};

use anyhow::{Context, Result, ensure};
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

/// What the members share: which nodes are up, what was acknowledged, what went wrong.
struct Shared {
    urls: Vec<String>,
    codes: Vec<String>,
    live: [AtomicBool; 3],
    acked: Mutex<Vec<Vec<u64>>>,
    violations: Mutex<Vec<String>>,
    requests: AtomicUsize,
    acks: AtomicUsize,
    errors: Mutex<HashMap<String, usize>>,
}

impl Shared {
    fn violation(&self, v: String) {
        self.violations.lock().unwrap_or_else(|e| e.into_inner()).push(v);
    }

    fn error(&self, code: &str) {
        *self.errors.lock().unwrap_or_else(|e| e.into_inner()).entry(code.to_owned()).or_default() += 1;
    }
}

fn random_command(rng: &mut StdRng) -> (&'static str, Value) {
    match rng.random_range(0..5) {
        0 => ("seek-playback", json!({ "positionMs": rng.random_range(0.0..3_000_000.0_f64).round() })),
        1 => ("pause-playback", json!({})),
        2 => ("resume-playback", json!({})),
        3 => {
            let rate = [0.5, 1.0, 1.25, 2.0][rng.random_range(0..4)];
            ("set-rate", json!({ "rate": rate }))
        }
        _ => {
            let id = format!("s{}", rng.random::<u32>());
            ("load-song", json!({ "song": song(&id, 3_600_000.0), "autoplay": rng.random_bool(0.5) }))
        }
    }
}

impl Member {
    /// Takes its pushes; a closed connection (its node died) reconnects to a live node with its
    /// resume token; one not back in its room joins it again.
    async fn service(&mut self, shared: &Shared) {
        let closed = {
            let mut v = Vec::new();
            let closed = self.absorb(&mut v);
            for x in v {
                shared.violation(x);
            }
            closed
        };
        if closed || self.client.is_none() {
            self.client = None;
            let Some(node) = (0..3).map(|i| (self.node + i) % 3).find(|n| shared.live[*n].load(Ordering::Acquire))
            else {
                return;
            };
            match Client::connect_url(&format!("{}?resume={}", shared.urls[node], self.token)).await {
                Ok(c) => {
                    if c.session_id != self.session {
                        shared.violation(format!("{}: resumed as another session", self.name));
                    }
                    self.node = node;
                    self.playback = None;
                    self.rejoin = true;
                    self.reconnects += 1;
                    self.client = Some(c);
                }
                Err(e) => tracing_note(&format!("{}: reconnect failed, retried: {e:#}", self.name)),
            }
        }
        if self.rejoin
            && let Some(c) = self.client.as_mut()
        {
            let code = &shared.codes[self.room];
            match c.request("join-room", json!({ "code": code, "name": self.name })).await {
                Ok(Ok(_)) => self.rejoin = false,
                // The room is moving (its owner just died): try again later.
                Ok(Err(e)) => tracing_note(&format!("{}: join again later: {e}", self.name)),
                Err(_) => self.client = None,
            }
        }
    }

    /// One random request: a control command (the host's succeed, the others' get NOT_HOST) or
    /// a read.
    async fn act(&mut self, rng: &mut StdRng, shared: &Shared) {
        if self.rejoin {
            return;
        }
        let Some(c) = self.client.as_mut() else { return };
        let is_host = self.host == self.session;
        let (event, data) = match (is_host, rng.random_bool(0.5)) {
            (true, _) | (false, true) => random_command(rng),
            (false, false) => ("get-playback-state", json!({})),
        };
        shared.requests.fetch_add(1, Ordering::Relaxed);
        match c.request(event, data).await {
            Ok(Ok(_)) if event == "get-playback-state" => {}
            Ok(Ok(_)) if !is_host => shared.violation(format!("{}: {event} by a non-host succeeded", self.name)),
            Ok(Ok(reply)) => {
                shared.acks.fetch_add(1, Ordering::Relaxed);
                let rev = reply["playback"]["rev"].as_u64().unwrap_or(0);
                shared.acked.lock().unwrap_or_else(|e| e.into_inner())[self.room].push(rev);
            }
            Ok(Err(e)) => {
                let code = e["code"].as_str().unwrap_or_default();
                match code {
                    "NOT_HOST" if !is_host => {}
                    // The room is moving (owner died, lease not yet taken) or was just taken.
                    "CLUSTER_UNAVAILABLE" | "STORAGE_UNAVAILABLE" | "NOT_IN_ROOM" | "NOT_HOST" => {}
                    _ => shared.violation(format!("{}: {event}: unexpected error {e}", self.name)),
                }
                shared.error(code);
            }
            // Its connection went (node killed) or the reply timed out: reconnect.
            Err(e) => {
                tracing_note(&format!("{}: {event}: {e:#}", self.name));
                shared.error("transport");
                self.client = None;
            }
        }
    }

    /// Acts at random until `until`, then gets back into its room (at most 15 s more).
    async fn run(mut self, seed: u64, until: Instant, shared: Arc<Shared>) -> Member {
        let mut rng = StdRng::seed_from_u64(seed);
        while Instant::now() < until {
            self.service(&shared).await;
            self.act(&mut rng, &shared).await;
            tokio::time::sleep(Duration::from_millis(rng.random_range(20..200))).await;
        }
        let settle = Instant::now();
        while self.client.is_none() || self.rejoin || self.playback.is_none() {
            if settle.elapsed() > Duration::from_secs(15) {
                shared.violation(format!("{}: not back in its room 15 s after the run", self.name));
                break;
            }
            self.service(&shared).await;
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        self
    }
}

fn tracing_note(s: &str) {
    if std::env::var_os("UNISONO_TEST_VERBOSE").is_some() {
        eprintln!("{s}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs PostgreSQL at 127.0.0.1:5432 and Redis at 127.0.0.1:6379 (cargo xtask test runs it)"]
async fn random_commands_on_three_nodes_with_a_node_killed_and_restarted_midway() -> Result<()> {
    let mut cluster = Cluster::start(3, &["--host-grace-secs", "20", "--resume-grace-secs", "20"])?;
    let seed: u64 = std::env::var("UNISONO_TEST_SEED").ok().and_then(|s| s.parse().ok()).unwrap_or_else(rand::random);
    eprintln!("seed {seed} (UNISONO_TEST_SEED={seed} repeats this run)");

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
    let violations = Vec::new();
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

    let shared = Arc::new(Shared {
        urls: cluster.nodes.iter().map(|n| n.ws_url()).collect(),
        codes: codes.clone(),
        live: [AtomicBool::new(true), AtomicBool::new(true), AtomicBool::new(true)],
        acked: Mutex::new(vec![Vec::new(); ROOMS]),
        violations: Mutex::new(violations),
        requests: AtomicUsize::new(0),
        acks: AtomicUsize::new(0),
        errors: Mutex::new(HashMap::new()),
    });
    // Every member acts on its own, concurrently, while the victim is killed and restarted.
    let started = Instant::now();
    let tasks: Vec<_> = members
        .into_iter()
        .enumerate()
        .map(|(i, m)| tokio::spawn(m.run(seed.wrapping_add(i as u64), started + RUN, shared.clone())))
        .collect();
    tokio::time::sleep_until((started + KILL_AT).into()).await;
    shared.live[VICTIM].store(false, Ordering::Release);
    cluster.nodes[VICTIM].kill9();
    tokio::time::sleep_until((started + RESTART_AT).into()).await;
    cluster.nodes[VICTIM].restart()?;
    shared.live[VICTIM].store(true, Ordering::Release);
    let mut members = Vec::new();
    for t in tasks {
        members.push(t.await?);
    }
    // Quiet: every push delivered.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let mut violations = std::mem::take(&mut *shared.violations.lock().unwrap_or_else(|e| e.into_inner()));
    for m in &mut members {
        m.absorb(&mut violations);
    }
    let acked = std::mem::take(&mut *shared.acked.lock().unwrap_or_else(|e| e.into_inner()));

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
            .chain(acked[r].iter().copied())
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
        let revs = &acked[r];
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
    let (requests, acks) = (shared.requests.load(Ordering::Relaxed), shared.acks.load(Ordering::Relaxed));
    eprintln!(
        "{requests} requests, {acks} acknowledged changes, {pushes} playback pushes checked, {reconnects} reconnects, \
         errors {:?}",
        shared.errors.lock().unwrap_or_else(|e| e.into_inner())
    );
    ensure!(violations.is_empty(), "{} violations (seed {seed}):\n{}", violations.len(), violations.join("\n"));
    ensure!(acks > 100, "too few acknowledged changes to mean anything: {acks}");
    ensure!(reconnects >= ROOMS, "the victim's clients reconnected: {reconnects}");
    Ok(())
}
