//! A worker process: `unisono-bench worker …`, started by a scenario to hold up to 15k
//! connections (the open-file limit is per process).
//!
//! It talks to its coordinator in JSON lines: it writes [`Report`]s on stdout and reads
//! commands on stdin — `go` (rooms: start seeking; the result follows on its own), `report`
//! (write the result now), `exit` or end of input (quit).

use std::{
    collections::BTreeMap,
    io::Write,
    sync::{Arc, atomic::Ordering},
    time::Duration,
};

use anyhow::Result;
use clap::Subcommand;
use serde::{Deserialize, Serialize};
use serde_json::json;
use tokio::{
    sync::{Semaphore, mpsc, oneshot, watch},
    time::Instant,
};

use crate::{
    proto::{self, Ws},
    roles::{self, HostOutcome, HostPlan, Shared},
    stats::{PushArrivals, SparseHistogram},
    sys::{self, CpuMeter},
};

/// What a worker does.
#[derive(Debug, Clone, Subcommand)]
pub enum Mode {
    /// Open idle connections.
    Idle {
        #[arg(long)]
        clients: usize,
    },
    /// Open connections that join room `code` and record its seeks.
    Members {
        #[arg(long)]
        code: String,
        #[arg(long)]
        clients: usize,
        /// Index of the first client (for names).
        #[arg(long, default_value_t = 0)]
        offset: usize,
    },
    /// Create rooms (host + members each) and, on `go`, seek in each.
    Rooms {
        #[arg(long)]
        rooms: usize,
        /// Index of this worker's first room among all rooms (for staggering).
        #[arg(long, default_value_t = 0)]
        offset: usize,
        #[arg(long)]
        total_rooms: usize,
        /// Members per room, host included.
        #[arg(long)]
        room_size: usize,
        #[arg(long)]
        seconds: f64,
        /// Seeks per second per host.
        #[arg(long)]
        rate: f64,
        /// Unpaced: each host seeks again as soon as its previous seek is answered.
        #[arg(long)]
        max: bool,
        /// Longest wait for the last pushes after the last reply, in seconds.
        #[arg(long, default_value_t = 2.0)]
        drain: f64,
    },
}

/// A line a worker writes on stdout.
#[derive(Debug, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "kebab-case")]
pub enum Report {
    /// Setup progress (every 2 s).
    Progress { connected: u64 },
    /// Setup done: every connection is open (and joined) or has failed.
    Ready { connected: u64, failed: u64, errors: BTreeMap<String, u64>, rss_kib: u64 },
    /// The measurements.
    Result(Box<RunResult>),
}

/// A worker's measurements.
#[derive(Debug, Default, Serialize, Deserialize)]
pub struct RunResult {
    pub hist: SparseHistogram,
    /// Per push (fan-out only): send-time key and arrivals.
    pub per_push: Vec<(u64, PushArrivals)>,
    /// Hosts in this worker (rooms only), summed.
    pub hosts: HostOutcome,
    /// How connections ended during the run.
    pub ended: BTreeMap<String, u64>,
    pub malformed: u64,
    /// This worker's CPU seconds during the run.
    pub cpu_secs: f64,
    pub rss_kib: u64,
}

fn emit(report: &Report) {
    if let Ok(line) = serde_json::to_string(report) {
        let mut out = std::io::stdout().lock();
        let _ = writeln!(out, "{line}");
        let _ = out.flush();
    }
}

/// Short form of an error for grouping (the first line, without socket addresses).
fn error_kind(e: &anyhow::Error) -> String {
    format!("{e:#}").lines().next().unwrap_or("error").chars().take(160).collect()
}

/// Connects with up to three attempts (a refused or reset handshake under load is retried).
async fn connect_retry(url: &str) -> Result<Ws> {
    let mut last = None;
    for attempt in 0..3u64 {
        match proto::connect(url).await {
            Ok(ws) => return Ok(ws),
            Err(e) => last = Some(e),
        }
        tokio::time::sleep(Duration::from_millis(200 * (attempt + 1))).await;
    }
    Err(last.unwrap_or_else(|| anyhow::anyhow!("connect failed")))
}

type SetupTx = mpsc::UnboundedSender<Result<(), String>>;

/// Runs a worker until told to exit.
/// `urls`: the servers (a cluster's nodes): a room's host on node `index % n`, its member `m`
/// on node `(index + m) % n`; a plain member `i` on node `i % n`.
pub async fn run(urls: Vec<String>, t0_us: u64, concurrency: usize, mode: Mode) -> Result<()> {
    let urls: Arc<[String]> = urls.into();
    let shared = Shared::new(t0_us, matches!(mode, Mode::Members { .. }));
    let permits = Arc::new(Semaphore::new(concurrency.max(1)));
    let (setup_tx, mut setup_rx) = mpsc::unbounded_channel();
    let (go_tx, go_rx) = watch::channel(None);
    let (host_tx, mut host_rx) = mpsc::unbounded_channel::<HostOutcome>();

    let expected = match &mode {
        Mode::Idle { clients } => {
            spawn_members(&urls, *clients, None, 0, &permits, &shared, &setup_tx);
            *clients
        }
        Mode::Members { code, clients, offset } => {
            spawn_members(&urls, *clients, Some(code.clone()), *offset, &permits, &shared, &setup_tx);
            *clients
        }
        Mode::Rooms { rooms, offset, total_rooms, room_size, seconds, rate, max, .. } => {
            let interval = Duration::from_secs_f64(1.0 / rate.max(0.001));
            for r in 0..*rooms {
                let g = offset + r;
                let plan = HostPlan {
                    offset: if *max {
                        Duration::ZERO
                    } else {
                        interval.mul_f64(g as f64 / (*total_rooms).max(1) as f64)
                    },
                    interval: (!max).then_some(interval),
                    seconds: Duration::from_secs_f64(*seconds),
                };
                let ctx = RoomCtx {
                    urls: urls.clone(),
                    index: g,
                    size: *room_size,
                    plan,
                    permits: permits.clone(),
                    shared: shared.clone(),
                    setup: setup_tx.clone(),
                    go: go_rx.clone(),
                    hosts: host_tx.clone(),
                };
                tokio::spawn(room(ctx));
            }
            rooms * room_size
        }
    };
    drop(setup_tx);
    drop(host_tx);

    // Setup: wait for every connection's outcome, reporting progress.
    let mut connected = 0u64;
    let mut failed = 0u64;
    let mut errors: BTreeMap<String, u64> = BTreeMap::new();
    let mut tick = tokio::time::interval(Duration::from_secs(2));
    tick.tick().await;
    while ((connected + failed) as usize) < expected {
        tokio::select! {
            r = setup_rx.recv() => match r {
                Some(Ok(())) => connected += 1,
                Some(Err(e)) => {
                    failed += 1;
                    *errors.entry(e).or_default() += 1;
                }
                None => break,
            },
            _ = tick.tick() => emit(&Report::Progress { connected }),
        }
    }
    let rss_kib = sys::rss_kib(std::process::id()).unwrap_or(0);
    emit(&Report::Ready { connected, failed, errors, rss_kib });

    let mut lines = stdin_lines();
    let mut cpu = CpuMeter::start(std::process::id()).ok();
    while let Some(line) = lines.recv().await {
        match line.trim() {
            "go" => {
                cpu = CpuMeter::start(std::process::id()).ok();
                let Mode::Rooms { room_size, drain, .. } = &mode else { continue };
                let _ = go_tx.send(Some(Instant::now()));
                let mut hosts = HostOutcome::default();
                while let Some(h) = host_rx.recv().await {
                    merge_host(&mut hosts, h);
                }
                // Every answered seek was broadcast to the whole room (the host included).
                let want = hosts.ok * *room_size as u64;
                let deadline = Instant::now() + Duration::from_secs_f64(*drain);
                while shared.deliveries.load(Ordering::Relaxed) < want && Instant::now() < deadline {
                    tokio::time::sleep(Duration::from_millis(10)).await;
                }
                emit(&Report::Result(Box::new(result(&shared, hosts, cpu.as_ref()))));
            }
            "report" => emit(&Report::Result(Box::new(result(&shared, HostOutcome::default(), cpu.as_ref())))),
            "exit" => break,
            _ => {}
        }
    }
    Ok(())
}

/// Lines of stdin, read on a plain thread (the channel closes at end of input).
fn stdin_lines() -> mpsc::UnboundedReceiver<String> {
    let (tx, rx) = mpsc::unbounded_channel();
    std::thread::spawn(move || {
        for line in std::io::stdin().lines().map_while(Result::ok) {
            if tx.send(line).is_err() {
                return;
            }
        }
    });
    rx
}

fn merge_host(into: &mut HostOutcome, h: HostOutcome) {
    into.sent += h.sent;
    into.ok += h.ok;
    into.failed += h.failed;
    for (k, v) in h.errors {
        *into.errors.entry(k).or_default() += v;
    }
    if let Some(e) = h.ended {
        *into.errors.entry(format!("host connection ended: {e}")).or_default() += 1;
    }
}

fn result(shared: &Shared, hosts: HostOutcome, cpu: Option<&CpuMeter>) -> RunResult {
    let rec = shared.recorder.lock().unwrap_or_else(|e| e.into_inner());
    RunResult {
        hist: rec.all.to_sparse(),
        per_push: rec.per_push.as_ref().map(|m| m.iter().map(|(k, v)| (*k, *v)).collect()).unwrap_or_default(),
        hosts,
        ended: shared.ended.lock().unwrap_or_else(|e| e.into_inner()).clone(),
        malformed: shared.malformed.load(Ordering::Relaxed),
        cpu_secs: cpu.and_then(|c| c.elapsed().ok()).map(|t| t.total()).unwrap_or(0.0),
        rss_kib: sys::rss_kib(std::process::id()).unwrap_or(0),
    }
}

/// Connects `n` clients (optionally joining `code`), each then reading as a member.
fn spawn_members(
    urls: &Arc<[String]>,
    n: usize,
    code: Option<String>,
    offset: usize,
    permits: &Arc<Semaphore>,
    shared: &Arc<Shared>,
    setup: &SetupTx,
) {
    for i in 0..n {
        let url = urls[(offset + i) % urls.len()].clone();
        let (code, permits, shared, setup) = (code.clone(), permits.clone(), shared.clone(), setup.clone());
        tokio::spawn(async move {
            let ws = {
                let Ok(_permit) = permits.acquire().await else { return };
                let joined = async {
                    let mut ws = connect_retry(&url).await?;
                    if let Some(code) = &code {
                        proto::request(
                            &mut ws,
                            1,
                            "join-room",
                            json!({ "code": code, "name": format!("m{}", offset + i) }),
                        )
                        .await?;
                    }
                    Ok::<Ws, anyhow::Error>(ws)
                };
                match joined.await {
                    Ok(ws) => ws,
                    Err(e) => {
                        let _ = setup.send(Err(error_kind(&e)));
                        return;
                    }
                }
            };
            let _ = setup.send(Ok(()));
            roles::member(ws, shared).await;
        });
    }
}

/// Everything one room's setup task needs.
struct RoomCtx {
    urls: Arc<[String]>,
    index: usize,
    size: usize,
    plan: HostPlan,
    permits: Arc<Semaphore>,
    shared: Arc<Shared>,
    setup: SetupTx,
    go: watch::Receiver<Option<Instant>>,
    hosts: mpsc::UnboundedSender<HostOutcome>,
}

/// Sets up one room: the host creates it, then the other members join; every connection
/// reports its setup outcome. Hosts report their run on `hosts`.
async fn room(ctx: RoomCtx) {
    let fail_all = |e: String, n: usize| {
        for _ in 0..n {
            let _ = ctx.setup.send(Err(e.clone()));
        }
    };
    let created = async {
        let _permit = ctx.permits.acquire().await?;
        let mut ws = connect_retry(&ctx.urls[ctx.index % ctx.urls.len()]).await?;
        let code = proto::create_room(&mut ws, &format!("bench {}", ctx.index)).await?;
        Ok::<(Ws, String), anyhow::Error>((ws, code))
    };
    let (ws, code) = match created.await {
        Ok(x) => x,
        Err(e) => {
            fail_all(format!("host: {}", error_kind(&e)), ctx.size);
            return;
        }
    };
    let _ = ctx.setup.send(Ok(()));
    let (done_tx, done_rx) = oneshot::channel();
    tokio::spawn(roles::host(ws, ctx.plan, ctx.go.clone(), ctx.shared.clone(), true, false, done_tx));
    let hosts = ctx.hosts.clone();
    tokio::spawn(async move {
        if let Ok(outcome) = done_rx.await {
            let _ = hosts.send(outcome);
        }
    });
    for m in 1..ctx.size {
        let joined = async {
            let _permit = ctx.permits.acquire().await?;
            let mut ws = connect_retry(&ctx.urls[(ctx.index + m) % ctx.urls.len()]).await?;
            proto::request(&mut ws, 1, "join-room", json!({ "code": code, "name": format!("r{}m{m}", ctx.index) }))
                .await?;
            Ok::<Ws, anyhow::Error>(ws)
        };
        match joined.await {
            Ok(ws) => {
                let _ = ctx.setup.send(Ok(()));
                tokio::spawn(roles::member(ws, ctx.shared.clone()));
            }
            Err(e) => {
                let _ = ctx.setup.send(Err(error_kind(&e)));
            }
        }
    }
}
