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
//! request queue) and replies are sent after every push that preceded them, as on `/ws`. Each
//! namespace only authenticates, parses its events into the engine's typed requests and attaches
//! the connection ([`crate::engine::Engine::attach`]); the lifecycle is the engine's.

pub mod admin;
pub mod players;
pub mod rooms;

use std::{convert::Infallible, net::IpAddr, sync::Arc, time::Duration};

use serde::{Deserialize, Serialize};
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
    protocol::{CommandResponse, ErrorBody, ErrorCode, Push},
};

use crate::{
    auth::{AuthError, Principal, Role},
    bus::{Outbox, Outgoing, outbox::Inbox},
    edge::{ConnLimiter, PeerAddr, bearer, query_param},
    engine::{Answer, Attachment, EdgeRequest, Engine, ReplyData},
    metrics::METRICS,
    time::now_ms,
};

/// Settings of the Socket.IO edge.
#[derive(Debug, Clone)]
pub struct SioConfig {
    /// Engine.IO `pingInterval`.
    pub ping_interval: Duration,
    /// Engine.IO `pingTimeout`: a dead peer is noticed within `pingInterval + pingTimeout`.
    pub ping_timeout: Duration,
    /// How long a client may stay without joining a namespace (CONNECT) before it is closed.
    pub connect_timeout: Duration,
    /// Largest event (bytes) on `/` and `/admin`, like `--max-frame-bytes` on `/ws`.
    pub max_event_bytes: usize,
    /// Largest event on `/players` (snapshot images), which is also Engine.IO's packet limit.
    pub max_device_event_bytes: usize,
    /// Packets buffered per socket, and requests waiting per connection.
    pub queue: usize,
    /// Events a connection may send per second (sustained; bursts to twice this).
    pub events_per_sec: u32,
}

/// Builds the Socket.IO layer with every namespace registered.
pub fn layer(engine: Engine, cfg: SioConfig) -> (SocketIoLayer, SocketIo) {
    let (layer, io) = SocketIo::builder()
        .ping_interval(cfg.ping_interval)
        .ping_timeout(cfg.ping_timeout)
        .connect_timeout(cfg.connect_timeout)
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
    let token =
        auth.token.as_deref().or_else(|| bearer(&parts.headers)).or_else(|| query_param(parts.uri.query(), "token"));
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

/// The connection's request queue and its namespace's event size limit (a socket extension,
/// removed at disconnect: then the request task ends and detaches the connection). Jobs are
/// boxed: a tokio channel allocates its first block of 32 slots up front, so a slot's size is
/// paid 32 times by every idle connection (the reply channel's too).
#[derive(Clone)]
pub(crate) struct Queue(pub mpsc::Sender<Box<Job>>, pub usize);

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
            let _ = job.ack.send(&AckReply::err(ErrorBody::new(ErrorCode::Internal, "connection not ready")));
            return Ok(InOrder);
        };
        if size > max_bytes {
            // As `/ws` closes with 1009: say why, then drop the connection.
            METRICS.oversized_frames.inc();
            let e = ErrorBody::new(ErrorCode::BadFrame, format!("event over the {max_bytes}-byte limit"));
            let _ = s.emit("error", &e);
            let _ = job.ack.send(&AckReply::err(e));
            let sock = s.clone();
            tokio::spawn(async move {
                tokio::time::sleep(Duration::from_millis(50)).await;
                let _ = sock.disconnect();
            });
            return Ok(InOrder);
        }
        if let Err(mpsc::error::TrySendError::Full(job)) = q.try_send(Box::new(job)) {
            let e = ErrorBody::new(ErrorCode::RateLimited, "too many requests waiting on this connection");
            METRICS.errors.with_label_values(&[e.code.as_str()]).inc();
            let _ = job.ack.send(&AckReply::err(e));
        }
        Ok(InOrder)
    }
}

/// An ack: `{ok: true, data}` or `{ok: false, error: {code, message}}` (a `/ws` reply without
/// `id`).
#[derive(Serialize)]
#[serde(untagged)]
pub(crate) enum AckReply {
    Ok { ok: bool, data: ReplyData },
    Err { ok: bool, error: ErrorBody },
}

impl AckReply {
    fn ok(data: ReplyData) -> AckReply {
        AckReply::Ok { ok: true, data }
    }
    fn err(error: ErrorBody) -> AckReply {
        AckReply::Err { ok: false, error }
    }
}

/// A reply waiting for the pump, so it leaves after every push enqueued before it.
pub(crate) type PendingAck = Box<(AckSender, AckReply)>;

/// What runs when a client acks a server event: `(the event's data, the ack's data)`.
pub(crate) type OnAck = dyn Fn(&RawValue, serde_json::Value) + Send + Sync;

/// Server-to-client acks for one event: when the client answers `event` through its ack
/// callback, `on_ack(emitted data, ack data)` runs.
#[derive(Clone)]
pub(crate) struct AckHook {
    pub event: &'static str,
    pub on_ack: Arc<OnAck>,
}

/// Moves the session's outbox into the socket: each engine message becomes a Socket.IO event
/// (same name, its data passed through as serialized by the engine, never re-parsed), and acks
/// leave after the pushes that preceded them. Ends when the socket goes or the engine closes the
/// session (slow consumer, replaced by a resume, shutdown): then the socket is disconnected.
pub(crate) fn spawn_pump(s: SocketRef, mut inbox: Inbox, mut acks: mpsc::Receiver<PendingAck>, hook: Option<AckHook>) {
    tokio::spawn(async move {
        let kill = inbox.kill.clone();
        let emit = |s: &SocketRef, msg: Outgoing| -> bool {
            // `/ws`-only frames (replies) never reach this edge.
            let Some((event, data)) = msg.as_event() else { return true };
            let ok = match &hook {
                // The client may answer this event through its ack callback.
                Some(h) if event == h.event => match s.emit_with_ack::<_, serde_json::Value>(event, data) {
                    Ok(answer) => {
                        let on_ack = h.on_ack.clone();
                        let msg = msg.clone();
                        tokio::spawn(async move {
                            if let (Ok(reply), Some((_, sent))) = (answer.await, msg.as_event()) {
                                on_ack(sent, reply);
                            }
                        });
                        true
                    }
                    Err(_) => false,
                },
                _ => s.emit(event, data).is_ok(),
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
                    // Not after the client's own DISCONNECT (`41`): the protocol has no answer.
                    if s.connected() {
                        let _ = s.disconnect();
                    }
                    break;
                }
                msg = inbox.rx.recv() => {
                    let Some(msg) = msg else { break };
                    if !emit(&s, msg) {
                        if s.connected() {
                            // The socket's own buffer is full: the same slow-consumer policy as /ws.
                            METRICS.slow_consumers.inc();
                            let _ = s.disconnect();
                        }
                        break;
                    }
                }
                pending = acks.recv() => {
                    let Some(pending) = pending else { break };
                    let (ack, reply) = *pending;
                    let mut sent = true;
                    while let Ok(msg) = inbox.rx.try_recv() {
                        if !emit(&s, msg) {
                            sent = false;
                            break;
                        }
                    }
                    // A reply the socket's buffer cannot take means what a push that does not
                    // fit means: the client stopped reading. Dropping the reply instead would
                    // leave a client that only sends requests connected, unanswered, for ever.
                    if !sent || ack.send(&reply).is_err() {
                        if s.connected() {
                            METRICS.slow_consumers.inc();
                            let _ = s.disconnect();
                        }
                        break;
                    }
                }
            }
        }
    });
}

/// Socket plumbing shared by the namespaces, created in the CONNECT middleware.
pub(crate) struct Wiring {
    pub outbox: Outbox,
    pub jobs: mpsc::Receiver<Box<Job>>,
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
    // Closing the request queue ends the request task, which detaches the connection.
    s.on_disconnect(async |s: SocketRef| {
        s.extensions.remove::<Queue>();
    });
    Wiring { outbox, jobs: job_rx, acks: ack_tx }
}

/// Attaches the socket's connection to the engine (one lifecycle for every edge: see
/// `engine/lifecycle.rs`), reachable by its socket id as well.
pub(crate) async fn attach(
    engine: &Engine,
    s: &SocketRef,
    kind: crate::engine::connections::Kind,
    principal: Principal,
    wiring: &Wiring,
    resume: Option<&str>,
) -> Attachment {
    let a = crate::engine::Attach {
        kind,
        principal,
        outbox: wiring.outbox.clone(),
        peer: peer_ip(s),
        resume,
        socket_id: Some(s.id.to_string()),
    };
    Box::pin(engine.attach(a)).await
}

/// Starts delivering the socket's outbox (see [`wire`]).
pub(crate) fn start_pump(s: SocketRef, hook: Option<AckHook>) {
    let parts = s.extensions.get::<PumpParts>().and_then(|p| p.0.lock().ok().and_then(|mut g| g.take()));
    if let Some((inbox, acks)) = parts {
        spawn_pump(s, inbox, acks, hook);
    }
}

/// How a namespace routes one event: to the engine, or answered by the edge itself.
pub(crate) enum Route {
    Engine(EdgeRequest),
    Answer(Result<ReplyData, ErrorBody>),
}

/// Handles one connection's events in arrival order (like the `/ws` reader loop): the rate
/// limit, the namespace's `route`, the engine, then the ack (or an `error` event when no ack was
/// asked). Detaches the connection when the socket goes.
pub(crate) async fn serve_jobs<R>(mut w: Wiring, att: Attachment, events_per_sec: u32, route: R)
where
    R: Fn(&Attachment, &str, serde_json::Value) -> Route,
{
    let limiter = ConnLimiter::new(events_per_sec);
    while let Some(job) = w.jobs.recv().await {
        let job = *job;
        METRICS.frames_in.inc();
        let answer = match limiter.check() {
            Err(mut e) => {
                e.message = format!("more than {events_per_sec} events per second");
                Answer::Now(Err(e))
            }
            Ok(()) => match route(&att, &job.event, job.data) {
                Route::Answer(a) => Answer::Now(a),
                Route::Engine(req) => Box::pin(att.handle(req, job.received_at)).await,
            },
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
    att.detach().await;
}

async fn send_reply(
    acks: &mpsc::Sender<PendingAck>,
    outbox: &Outbox,
    ack: AckSender,
    wants_ack: bool,
    result: Result<ReplyData, ErrorBody>,
) -> bool {
    let reply = match result {
        Ok(data) => AckReply::ok(data),
        Err(e) => {
            METRICS.errors.with_label_values(&[e.code.as_str()]).inc();
            if !wants_ack {
                // No callback to reject: tell the client the way `/ws` does.
                if let Ok(msg) = Outgoing::push(&Push::Error(e)) {
                    outbox.push(msg);
                }
                return true;
            }
            AckReply::err(e)
        }
    };
    !wants_ack || acks.send(Box::new((ack, reply))).await.is_ok()
}

/// A device's ack of `player:command`, `{status, result?, error?}` (socket.io-client passes ack
/// arguments as an array), for the command `sent`.
pub(crate) fn command_ack(sent: &RawValue, reply: serde_json::Value) -> Option<CommandResponse> {
    #[derive(Deserialize)]
    #[serde(rename_all = "camelCase")]
    struct Sent {
        command_id: String,
    }
    let Sent { command_id } = serde_json::from_str(sent.get()).ok()?;
    let reply = match reply {
        serde_json::Value::Array(mut args) if !args.is_empty() => args.swap_remove(0),
        other => other,
    };
    Some(CommandResponse {
        command_id,
        status: reply.get("status").and_then(serde_json::Value::as_str).unwrap_or("success").to_owned(),
        result: reply.get("result").cloned(),
        error: reply.get("error").cloned(),
    })
}
