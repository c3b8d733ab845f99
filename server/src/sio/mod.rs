//! The Socket.IO edge at `/socket.io/` (Engine.IO v4 / Socket.IO v5, long-polling and
//! WebSocket with upgrade), built on `socketioxide`, on the same port as everything else.
//!
//! Socket.IO is one more edge, like `/ws`: it authenticates the CONNECT packet, then turns
//! events into engine calls and engine pushes into events. The engine stays the only owner of
//! rooms, devices and tenants.
//!
//! Namespaces:
//! - `/`: the room protocol of `docs/protocol.md` with the same event names and payloads;
//!   requests are answered through Socket.IO acks ([`rooms`]).
//! - `/players`: devices (seed 003), with a `player` token ([`players`]).
//! - `/admin`: device admins of one tenant, with an `admin` token ([`admin`]).
//!
//! Per connection, events are handled **in the order received** (socketioxide spawns a task per
//! event; [`InOrder`] enqueues synchronously, before that spawn, into the connection's bounded
//! request queue) and replies are sent after every push that preceded them, as on `/ws`.

pub mod admin;
pub mod players;
pub mod rooms;

use std::{convert::Infallible, net::IpAddr, sync::Arc, time::Duration};

use serde::Deserialize;
use serde_json::value::RawValue;
use socketioxide::{
    SocketIo,
    adapter::LocalAdapter,
    extract::{AckSender, Event, SocketRef, TryData},
    handler::FromMessageParts,
    layer::SocketIoLayer,
    socket::Socket,
};
use socketioxide_core::Value as SioValue;
use tokio::sync::mpsc;
use unisono_core::{
    Millis,
    protocol::{ErrorBody, ErrorCode},
};

use crate::{
    auth::{AuthError, Principal, Role},
    bus::{Frame, Outbox, outbox::Inbox},
    engine::Engine,
    metrics::METRICS,
    time::now_ms,
};

/// Settings of the Socket.IO edge.
#[derive(Debug, Clone)]
pub struct SioConfig {
    /// Engine.IO `pingInterval`; `pingTimeout` is the same, so a dead peer is noticed within
    /// twice this.
    pub ping_interval: Duration,
    /// Largest event (bytes) on `/` and `/admin`, like `--max-frame-bytes` on `/ws`.
    pub max_event_bytes: usize,
    /// Largest event on `/players` (snapshot images), which is also Engine.IO's packet limit.
    pub max_device_event_bytes: usize,
    /// Packets buffered per socket, and requests waiting per connection.
    pub queue: usize,
    /// Events a connection may send per second (sustained; bursts to twice this).
    pub events_per_sec: u32,
}

/// The peer address of the TCP connection, put into each request's extensions by the accept
/// loop so that edges below it can apply per-address limits.
#[derive(Debug, Clone, Copy)]
pub struct PeerAddr(pub IpAddr);

/// Builds the Socket.IO layer with every namespace registered.
pub fn layer(engine: Engine, cfg: SioConfig) -> (SocketIoLayer, SocketIo) {
    let (layer, io) = SocketIo::builder()
        .ping_interval(cfg.ping_interval)
        .ping_timeout(cfg.ping_interval)
        .max_payload(cfg.max_device_event_bytes.max(cfg.max_event_bytes) as u64)
        .max_buffer_size(cfg.queue.max(16))
        .ws_max_message_size(cfg.max_device_event_bytes.max(cfg.max_event_bytes))
        .ws_max_frame_size(cfg.max_device_event_bytes.max(cfg.max_event_bytes))
        .ws_read_buffer_size(4 * 1024)
        // Server-to-client acks answer device commands, whose timeouts go up to 120 s.
        .ack_timeout(Duration::from_secs(125))
        .build_layer();
    let cfg = Arc::new(cfg);
    rooms::register(&io, engine.clone(), cfg.clone());
    players::register(&io, engine.clone(), cfg.clone());
    admin::register(&io, engine, cfg);
    (layer, io)
}

/// The `auth` object of a CONNECT packet.
#[derive(Debug, Default, Deserialize)]
pub struct ConnectAuth {
    /// A JWT (alternatively `Authorization: Bearer` on the handshake request).
    pub token: Option<String>,
    /// A resume token from an earlier `connected` event.
    pub resume: Option<String>,
}

/// A namespace's CONNECT middleware: decodes the `auth` object and runs the namespace's
/// `setup` (authenticate, wire, attach) before the CONNECT is acknowledged.
pub(crate) fn middleware<F, Fut>(
    engine: Engine,
    cfg: Arc<SioConfig>,
    setup: F,
) -> impl Fn(SocketRef, TryData<ConnectAuth>) -> futures_util::future::BoxFuture<'static, Result<(), ConnectRefused>>
+ Clone
+ Send
+ Sync
+ 'static
where
    F: Fn(SocketRef, ConnectAuth, Engine, Arc<SioConfig>) -> Fut + Copy + Send + Sync + 'static,
    Fut: std::future::Future<Output = Result<(), ConnectRefused>> + Send + 'static,
{
    move |s: SocketRef, TryData(auth): TryData<ConnectAuth>| {
        Box::pin(setup(s, auth.unwrap_or_default(), engine.clone(), cfg.clone()))
    }
}

pub(crate) fn peer_ip(s: &Socket) -> Option<IpAddr> {
    s.req_parts().extensions.get::<PeerAddr>().map(|p| p.0)
}

/// Authenticates a namespace CONNECT: the token comes from `auth.token`, else the handshake's
/// `Authorization: Bearer` header, else the `token` query parameter.
pub(crate) fn authenticate(
    engine: &Engine,
    s: &Socket,
    auth: &ConnectAuth,
    roles: &[Role],
    edge: &'static str,
) -> Result<Principal, ConnectRefused> {
    let parts = s.req_parts();
    let token = auth
        .token
        .as_deref()
        .or_else(|| crate::ws::bearer(&parts.headers))
        .or_else(|| crate::ws::query_param(parts.uri.query(), "token"));
    engine.auth().authenticate(token, roles, peer_ip(s), edge).map_err(ConnectRefused)
}

/// A refused CONNECT; its text is the CONNECT_ERROR `message`: `CODE: explanation`.
#[derive(Debug)]
pub struct ConnectRefused(pub AuthError);

impl std::fmt::Display for ConnectRefused {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {}", self.0.code(), self.0)
    }
}

impl std::error::Error for ConnectRefused {}

/// One event waiting for the connection's request task.
pub(crate) struct Job {
    pub event: String,
    pub data: serde_json::Value,
    pub ack: AckSender,
    /// Whether the client asked for an ack (else errors are pushed as an `error` event).
    pub wants_ack: bool,
    /// Server time the event arrived (the `t1` of time sync).
    pub received_at: Millis,
}

/// The connection's request queue and its namespace's event size limit (a socket extension).
#[derive(Clone)]
pub(crate) struct Queue(pub mpsc::Sender<Job>, pub usize);

/// An extractor that does its work while being extracted: socketioxide extracts synchronously,
/// in arrival order, then spawns the handler; enqueueing here keeps a connection's events in
/// order. A full queue answers `RATE_LIMITED` at once.
pub(crate) struct InOrder;

impl FromMessageParts<LocalAdapter> for InOrder {
    type Error = Infallible;
    fn from_message_parts(s: &Arc<Socket>, v: &mut SioValue, ack_id: &Option<i64>) -> Result<Self, Infallible> {
        let received_at = now_ms();
        let size = match &*v {
            SioValue::Str(text, bins) => text.len() + bins.as_ref().map_or(0, |b| b.iter().map(|b| b.len()).sum()),
            SioValue::Bytes(b) => b.len(),
        };
        let event = match Event::from_message_parts(s, v, ack_id) {
            Ok(Event(e)) => e,
            Err(_) => return Ok(InOrder),
        };
        let TryData(data) = match TryData::<serde_json::Value>::from_message_parts(s, v, ack_id) {
            Ok(d) => d,
            Err(never) => match never {},
        };
        let data = match data {
            Ok(serde_json::Value::Null) | Err(_) => serde_json::Value::Object(Default::default()),
            Ok(d) => d,
        };
        let ack = match AckSender::from_message_parts(s, v, ack_id) {
            Ok(a) => a,
            Err(never) => match never {},
        };
        let job = Job { event, data, ack, wants_ack: ack_id.is_some(), received_at };
        let Some(Queue(q, max_bytes)) = s.extensions.get::<Queue>() else {
            let _ = job.ack.send(&error_reply(&ErrorBody::new(ErrorCode::Internal, "connection not ready")));
            return Ok(InOrder);
        };
        if size > max_bytes {
            // As `/ws` closes with 1009: say why, then drop the connection.
            METRICS.oversized_frames.inc();
            let e = ErrorBody::new(ErrorCode::BadFrame, format!("event over the {max_bytes}-byte limit"));
            let _ = job.ack.send(&error_reply(&e));
            let _ = s.emit("error", &e);
            let sock = s.clone();
            tokio::spawn(async move {
                tokio::time::sleep(Duration::from_millis(50)).await;
                let _ = sock.disconnect();
            });
            return Ok(InOrder);
        }
        if let Err(mpsc::error::TrySendError::Full(job)) = q.try_send(job) {
            let e = ErrorBody::new(ErrorCode::RateLimited, "too many requests waiting on this connection");
            METRICS.errors.with_label_values(&[e.code.as_str()]).inc();
            let _ = job.ack.send(&error_reply(&e));
        }
        Ok(InOrder)
    }
}

/// The ack payload of a successful request: `{ok: true, data}` (a `/ws` reply without `id`).
pub(crate) fn ok_reply(data: serde_json::Value) -> serde_json::Value {
    serde_json::json!({ "ok": true, "data": data })
}

/// The ack payload of a failed request: `{ok: false, error: {code, message}}`.
pub(crate) fn error_reply(e: &ErrorBody) -> serde_json::Value {
    serde_json::json!({ "ok": false, "error": e })
}

/// A reply waiting for the pump, so it leaves after every push enqueued before it.
pub(crate) type PendingAck = (AckSender, serde_json::Value);

/// Server-to-client acks for one event: when the client answers `event` through its ack
/// callback, `on_ack(emitted data, ack data)` runs.
#[derive(Clone)]
pub(crate) struct AckHook {
    pub event: &'static str,
    pub on_ack: Arc<dyn Fn(serde_json::Value, serde_json::Value) + Send + Sync>,
}

/// A push as the engine serialized it: `{"event": …, "data": …}`.
#[derive(Deserialize)]
struct PushRef<'a> {
    #[serde(borrow)]
    event: std::borrow::Cow<'a, str>,
    #[serde(borrow)]
    data: Option<&'a RawValue>,
}

/// Moves the session's outbox into the socket: each engine push becomes a Socket.IO event
/// (same name, same payload, serialized once by the engine), and acks leave after the pushes
/// that preceded them. Ends when the socket goes or the engine closes the session (slow
/// consumer, replaced by a resume, shutdown): then the socket is disconnected.
pub(crate) fn spawn_pump(s: SocketRef, mut inbox: Inbox, mut acks: mpsc::Receiver<PendingAck>, hook: Option<AckHook>) {
    tokio::spawn(async move {
        let kill = inbox.kill.clone();
        let emit = |s: &SocketRef, frame: Frame| -> bool {
            let text = frame.as_text();
            let Ok(p) = serde_json::from_str::<PushRef>(text.as_str()) else { return true };
            let ok = match (p.data, &hook) {
                // The client may answer this event through its ack callback.
                (Some(d), Some(h)) if p.event == h.event => match s.emit_with_ack::<_, serde_json::Value>(&*p.event, d)
                {
                    Ok(answer) => {
                        let (on_ack, sent) = (h.on_ack.clone(), serde_json::from_str(d.get()).unwrap_or_default());
                        tokio::spawn(async move {
                            if let Ok(reply) = answer.await {
                                on_ack(sent, reply);
                            }
                        });
                        true
                    }
                    Err(_) => false,
                },
                (Some(d), _) => s.emit(&*p.event, d).is_ok(),
                (None, _) => s.emit(&*p.event, &()).is_ok(),
            };
            if ok {
                METRICS.frames_out.inc();
            }
            ok
        };
        loop {
            tokio::select! {
                biased;
                (code, reason) = kill.killed() => {
                    tracing::debug!(code, reason, sid = %s.id, "closing socket.io connection");
                    let _ = s.disconnect();
                    break;
                }
                frame = inbox.rx.recv() => {
                    let Some(frame) = frame else { break };
                    if !emit(&s, frame) {
                        if s.connected() {
                            // The socket's own buffer is full: the same slow-consumer policy as /ws.
                            METRICS.slow_consumers.inc();
                            let _ = s.disconnect();
                        }
                        break;
                    }
                }
                pending = acks.recv() => {
                    let Some((ack, reply)) = pending else { break };
                    while let Ok(frame) = inbox.rx.try_recv() {
                        if !emit(&s, frame) {
                            break;
                        }
                    }
                    let _ = ack.send(&reply);
                }
            }
        }
    });
}

pub(crate) use crate::engine::Answer;

/// Socket plumbing shared by the namespaces, created in the CONNECT middleware.
pub(crate) struct Wiring {
    pub outbox: Outbox,
    pub jobs: mpsc::Receiver<Job>,
    pub acks: mpsc::Sender<PendingAck>,
}

/// State handed from the middleware to the connect handler (which starts the pump once the
/// CONNECT is acknowledged, so no event precedes it).
#[derive(Clone)]
struct PumpParts(Arc<std::sync::Mutex<Option<PumpInput>>>);

/// What the pump drains: the session's outbox and the replies waiting their turn.
type PumpInput = (Inbox, mpsc::Receiver<PendingAck>);

/// Creates the socket's outbox, request queue and ack path, and routes every event through
/// [`InOrder`]. Call from the middleware; then [`start_pump`] from the connect handler.
pub(crate) fn wire(s: &SocketRef, queue: usize, max_event_bytes: usize) -> Wiring {
    let (outbox, inbox) = Outbox::new(queue);
    let (ack_tx, ack_rx) = mpsc::channel(queue.max(1));
    let (job_tx, job_rx) = mpsc::channel(queue.max(1));
    s.extensions.insert(Queue(job_tx, max_event_bytes));
    s.extensions.insert(PumpParts(Arc::new(std::sync::Mutex::new(Some((inbox, ack_rx))))));
    s.on_fallback(async |_: InOrder| {});
    Wiring { outbox, jobs: job_rx, acks: ack_tx }
}

/// Starts delivering the socket's outbox (see [`wire`]).
pub(crate) fn start_pump(s: SocketRef, hook: Option<AckHook>) {
    let parts = s.extensions.get::<PumpParts>().and_then(|p| p.0.lock().ok().and_then(|mut g| g.take()));
    if let Some((inbox, acks)) = parts {
        spawn_pump(s, inbox, acks, hook);
    }
}

/// Handles one connection's events in arrival order (like the `/ws` reader loop): the rate
/// limit, the namespace's `handle`, then the ack (or an `error` event when no ack was asked).
pub(crate) async fn serve_jobs<H>(mut w: Wiring, events_per_sec: u32, mut handle: H)
where
    H: FnMut(String, serde_json::Value, Millis) -> futures_util::future::BoxFuture<'static, Answer>,
{
    let per_sec = std::num::NonZeroU32::new(events_per_sec.max(1)).unwrap_or(std::num::NonZeroU32::MIN);
    let burst = std::num::NonZeroU32::new(events_per_sec.saturating_mul(2).max(1)).unwrap_or(std::num::NonZeroU32::MIN);
    let limiter = governor::RateLimiter::direct(governor::Quota::per_second(per_sec).allow_burst(burst));
    while let Some(job) = w.jobs.recv().await {
        METRICS.frames_in.inc();
        let answer = if limiter.check().is_err() {
            Answer::Now(Err(ErrorBody::new(
                ErrorCode::RateLimited,
                format!("more than {events_per_sec} events per second"),
            )))
        } else {
            handle(job.event, job.data, job.received_at).await
        };
        match answer {
            Answer::Now(result) => {
                if !send_reply(&w.acks, &w.outbox, job.ack, job.wants_ack, result).await {
                    break;
                }
            }
            Answer::Later(fut) => {
                let (acks, outbox) = (w.acks.clone(), w.outbox.clone());
                tokio::spawn(async move {
                    let result = fut.await;
                    send_reply(&acks, &outbox, job.ack, job.wants_ack, result).await;
                });
            }
        }
    }
}

async fn send_reply(
    acks: &mpsc::Sender<PendingAck>,
    outbox: &Outbox,
    ack: AckSender,
    wants_ack: bool,
    result: Result<serde_json::Value, ErrorBody>,
) -> bool {
    let reply = match result {
        Ok(data) => ok_reply(data),
        Err(e) => {
            METRICS.errors.with_label_values(&[e.code.as_str()]).inc();
            if !wants_ack {
                // No callback to reject: tell the client the way `/ws` does.
                outbox.push(Frame::text(unisono_core::protocol::Push::Error(e).to_json()));
                return true;
            }
            error_reply(&e)
        }
    };
    !wants_ack || acks.send((ack, reply)).await.is_ok()
}
