//! What one connection does during a run: one task per connection.
//!
//! - [`member`]: reads until the connection ends, recording each `playback-seeked` arrival.
//!   Idle connections run it too (they never see a seek, but keep answering pings).
//! - [`host`]: drains its connection until the run starts, then sends `seek-playback` on a
//!   schedule (or, unpaced, each after the previous reply), counts replies, and keeps reading.

use std::{
    collections::BTreeMap,
    sync::{
        Arc, Mutex,
        atomic::{AtomicU64, Ordering},
    },
    time::Duration,
};

use futures_util::{SinkExt, StreamExt};
use serde::{Deserialize, Serialize};
use tokio::{
    sync::{oneshot, watch},
    time::{Instant, sleep_until},
};
use tokio_tungstenite::tungstenite::Message;

use crate::{
    proto::{Frame, Ws, classify, close_reason, seek_frame},
    stats::Recorder,
    sys::now_us,
};

/// State shared by the connections of one process.
pub struct Shared {
    /// The run's epoch (µs since the Unix epoch); seek positions are µs after it.
    pub t0_us: u64,
    pub recorder: Mutex<Recorder>,
    pub deliveries: AtomicU64,
    /// How connections ended during the run (reason → count).
    pub ended: Mutex<BTreeMap<String, u64>>,
    /// Frames that could not be understood.
    pub malformed: AtomicU64,
}

impl Shared {
    pub fn new(t0_us: u64, track_pushes: bool) -> Arc<Shared> {
        Arc::new(Shared {
            t0_us,
            recorder: Mutex::new(Recorder::new(track_pushes)),
            deliveries: AtomicU64::new(0),
            ended: Mutex::new(BTreeMap::new()),
            malformed: AtomicU64::new(0),
        })
    }

    fn record(&self, key: u64) {
        let arrived = now_us().saturating_sub(self.t0_us);
        self.recorder.lock().unwrap_or_else(|e| e.into_inner()).record(key, arrived);
        self.deliveries.fetch_add(1, Ordering::Relaxed);
    }

    fn ended(&self, reason: String) {
        *self.ended.lock().unwrap_or_else(|e| e.into_inner()).entry(reason).or_default() += 1;
    }

    /// Handles one frame a connection received; returns the reply it carried, if any.
    fn on_message(&self, text: &str) -> Option<(u64, Result<(), String>)> {
        match classify(text) {
            Frame::Seeked { key } => self.record(key),
            Frame::Reply { id, result } => return Some((id, result.map(|_| ()).map_err(|e| e.code))),
            Frame::Other => {}
            Frame::Malformed => {
                self.malformed.fetch_add(1, Ordering::Relaxed);
            }
        }
        None
    }
}

/// Reads a member's connection until it ends.
pub async fn member(mut ws: Ws, shared: Arc<Shared>) {
    let reason = loop {
        match ws.next().await {
            Some(Ok(Message::Text(t))) => {
                shared.on_message(&t);
            }
            Some(Ok(Message::Ping(_) | Message::Pong(_) | Message::Binary(_) | Message::Frame(_))) => {}
            other => break close_reason(other),
        }
    };
    shared.ended(reason);
}

/// When and how often a host seeks, relative to the start signal.
#[derive(Debug, Clone, Copy)]
pub struct HostPlan {
    /// Delay of the first seek after the start (staggering hosts).
    pub offset: Duration,
    /// Time between seeks; `None`: the next seek right after the previous reply.
    pub interval: Option<Duration>,
    /// How long seeks are sent.
    pub seconds: Duration,
}

/// What a host did.
#[derive(Debug, Default, Clone, Serialize, Deserialize)]
pub struct HostOutcome {
    pub sent: u64,
    pub ok: u64,
    pub failed: u64,
    /// Error code → count.
    pub errors: BTreeMap<String, u64>,
    /// Send time (key) of every seek, when asked for.
    pub keys: Vec<u64>,
    /// Set if the connection ended before every reply came.
    pub ended: Option<String>,
}

/// Longest wait for outstanding replies after the last seek.
const REPLY_GRACE: Duration = Duration::from_secs(10);

/// Runs a host: waits for the start instant on `go`, seeks per `plan`, reports the outcome on
/// `done`, then keeps reading its connection (so the server never sees it go away mid-run).
pub async fn host(
    mut ws: Ws,
    plan: HostPlan,
    mut go: watch::Receiver<Option<Instant>>,
    shared: Arc<Shared>,
    record_own: bool,
    keep_keys: bool,
    done: oneshot::Sender<HostOutcome>,
) {
    let mut out = HostOutcome::default();
    // Until the start: drain setup pushes (member-joined storms) so the server's queue for us
    // never fills.
    let start = loop {
        tokio::select! {
            changed = go.changed() => {
                if changed.is_err() {
                    return;
                }
                if let Some(at) = *go.borrow() {
                    break at;
                }
            }
            msg = ws.next() => match msg {
                Some(Ok(Message::Text(_) | Message::Ping(_) | Message::Pong(_) | Message::Frame(_) | Message::Binary(_))) => {}
                other => {
                    out.ended = Some(close_reason(other));
                    let _ = done.send(out);
                    return;
                }
            },
        }
    };
    let end = start + plan.seconds;
    let mut next_send = start + plan.offset;
    let mut awaiting: Option<u64> = None; // the reply an unpaced host waits for
    let mut pending = 0u64;
    let mut next_id = 100u64;
    loop {
        let now = Instant::now();
        if now >= end && pending == 0 {
            break;
        }
        // The guard is checked when the wait starts, so it must hold when the wait ends too.
        let may_send = next_send < end && awaiting.is_none();
        tokio::select! {
            _ = sleep_until(next_send), if may_send => {
                let (frame, key) = seek_frame(shared.t0_us, next_id);
                if let Err(e) = ws.send(Message::text(frame)).await {
                    out.ended = Some(format!("send: {e}"));
                    break;
                }
                out.sent += 1;
                pending += 1;
                if keep_keys {
                    out.keys.push(key);
                }
                match plan.interval {
                    Some(i) => {
                        next_send += i;
                        // A host that fell behind does not burst to catch up.
                        let now = Instant::now();
                        if next_send < now {
                            next_send = now;
                        }
                    }
                    None => awaiting = Some(next_id),
                }
                next_id += 1;
            }
            // Wake at the end of the run (to stop if nothing is pending), and give up on
            // replies that have not come within the grace.
            _ = sleep_until(if now < end { end } else { end + REPLY_GRACE }) => {
                if Instant::now() >= end + REPLY_GRACE {
                    break;
                }
            }
            msg = ws.next() => match msg {
                Some(Ok(Message::Text(t))) => {
                    let reply = if record_own { shared.on_message(&t) } else {
                        match classify(&t) {
                            Frame::Reply { id, result } => Some((id, result.map(|_| ()).map_err(|e| e.code))),
                            _ => None,
                        }
                    };
                    if let Some((id, result)) = reply && id >= 100 {
                        pending = pending.saturating_sub(1);
                        match result {
                            Ok(()) => out.ok += 1,
                            Err(code) => {
                                out.failed += 1;
                                *out.errors.entry(code).or_default() += 1;
                            }
                        }
                        if awaiting == Some(id) {
                            awaiting = None;
                            next_send = Instant::now();
                        }
                    }
                }
                Some(Ok(_)) => {}
                other => {
                    out.ended = Some(close_reason(other));
                    break;
                }
            },
        }
    }
    let ended = out.ended.is_some();
    let _ = done.send(out);
    if !ended {
        member(ws, shared).await;
    }
}
