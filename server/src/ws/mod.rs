//! The native WebSocket edge at `/ws`: JSON text frames ↔ engine calls.
//!
//! The upgrade is accepted here, below warp ([`accept`], called by the accept loop for `/ws`),
//! because warp's `Ws` cannot set tungstenite's buffer sizes: its default 128 KiB read buffer per
//! connection, zero-filled on reads, cost 135 KiB of RSS per idle connection and ~11 % of CPU
//! under load (docs/benchmarks.md). Here the read buffer is 2 KiB, and writes do not go through
//! tungstenite's buffer at all ([`writer`]).
//!
//! One task reads frames and calls the engine in order (so a client's requests are handled in
//! the order sent). Frames to the client are written by whoever pushes them, straight into the
//! socket ([`writer`]); a writer task only finishes what the socket did not take at once,
//! pings, and closes when told to (slow consumer, oversized frame, shutdown, replaced session).
//! Nothing here knows about rooms.

pub mod writer;

use std::{
    net::IpAddr,
    sync::{
        Arc,
        atomic::{AtomicU64, Ordering},
    },
    time::{Duration, Instant},
};

use futures_util::StreamExt;
use hyper::{
    Request, StatusCode,
    header::{CONNECTION, HeaderValue, SEC_WEBSOCKET_ACCEPT, SEC_WEBSOCKET_KEY, SEC_WEBSOCKET_VERSION, UPGRADE},
};
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;
use tokio_tungstenite::{
    WebSocketStream,
    tungstenite::{
        self, Message,
        handshake::derive_accept_key,
        protocol::{Role, WebSocketConfig},
    },
};
use unisono_core::protocol::{ClientRequest, ErrorBody, ErrorCode, Push};
use warp::{Reply as _, reply::Response};

use crate::{
    auth::{Principal, ROOM_ROLES},
    bus::{Outbox, Outgoing},
    edge::{ConnLimiter, bearer, query_param},
    engine::{Answer, Attach, EdgeRequest, Engine, ReplyData, connections::Kind},
    metrics::METRICS,
    time::now_ms,
};

/// Settings of the WebSocket edge.
#[derive(Debug, Clone)]
pub struct WsConfig {
    pub max_frame_bytes: usize,
    pub session_queue: usize,
    pub frames_per_sec: u32,
    pub ping_interval: Duration,
}

type WebSocket = WebSocketStream<writer::ReadSide>;

/// Per-connection read buffer. tungstenite zero-fills it on every read, so all of it is resident;
/// client frames are a few hundred bytes, and bigger ones grow it transiently.
const READ_BUFFER: usize = 2 * 1024;
/// tungstenite's own writes are control frames (pongs, the close reply), a few bytes each.
const WRITE_BUFFER: usize = 256;

/// True if `req` asks to upgrade `/ws` to a WebSocket.
pub fn is_upgrade<B>(req: &Request<B>) -> bool {
    req.uri().path() == "/ws"
        && req.headers().get(UPGRADE).and_then(|v| v.to_str().ok()).is_some_and(|v| v.eq_ignore_ascii_case("websocket"))
}

/// Completes the RFC 6455 handshake for `/ws` and spawns the connection. The response is 101,
/// or 400 for a malformed upgrade request.
pub fn accept<B>(mut req: Request<B>, peer: Option<IpAddr>, engine: Engine, cfg: Arc<WsConfig>) -> Response {
    let bad = |msg: &str| {
        let body = serde_json::json!({ "error": { "code": "BAD_UPGRADE", "message": msg } });
        let mut r = body.to_string().into_response();
        *r.status_mut() = StatusCode::BAD_REQUEST;
        r
    };
    if req.method() != hyper::Method::GET {
        return bad("websocket upgrades use GET");
    }
    if req.headers().get(SEC_WEBSOCKET_VERSION).map(HeaderValue::as_bytes) != Some(b"13") {
        return bad("sec-websocket-version must be 13");
    }
    let Some(key) = req.headers().get(SEC_WEBSOCKET_KEY) else {
        return bad("missing sec-websocket-key");
    };
    let accept_key = derive_accept_key(key.as_bytes());
    // Resume tokens and JWTs are URL-safe: no percent-decoding needed.
    let resume = query_param(req.uri().query(), "resume").map(str::to_owned);
    let token = query_param(req.uri().query(), "token").or_else(|| bearer(req.headers()));
    let principal = match engine.auth().authenticate(token, ROOM_ROLES, peer, "ws") {
        Ok(p) => p,
        Err(e) => {
            let body = serde_json::json!({ "error": { "code": e.code(), "message": e.to_string() } });
            let mut r = body.to_string().into_response();
            *r.status_mut() = StatusCode::UNAUTHORIZED;
            return r;
        }
    };
    let on_upgrade = hyper::upgrade::on(&mut req);
    let config = WebSocketConfig::default()
        .read_buffer_size(READ_BUFFER)
        .write_buffer_size(WRITE_BUFFER)
        .max_message_size(Some(cfg.max_frame_bytes))
        .max_frame_size(Some(cfg.max_frame_bytes));
    tokio::spawn(async move {
        let upgraded = match on_upgrade.await {
            Ok(u) => u,
            Err(e) => {
                tracing::debug!(error = %e, "websocket upgrade failed");
                return;
            }
        };
        // The accept loop serves plain TCP connections, so the upgraded stream is one.
        let Ok(parts) = upgraded.downcast::<TokioIo<TcpStream>>() else {
            tracing::error!("websocket upgrade of a connection that is not TCP");
            return;
        };
        let (rd, wr) = parts.io.into_inner().into_split();
        let w = writer::SocketWriter::new(wr, cfg.session_queue);
        let read = writer::ReadSide::new(parts.read_buf, rd, w.clone());
        let socket = WebSocketStream::from_raw_socket(read, Role::Server, Some(config)).await;
        serve(socket, w, resume, peer, principal, engine, cfg).await;
    });
    let mut res = String::new().into_response();
    *res.status_mut() = StatusCode::SWITCHING_PROTOCOLS;
    let h = res.headers_mut();
    h.insert(CONNECTION, HeaderValue::from_static("upgrade"));
    h.insert(UPGRADE, HeaderValue::from_static("websocket"));
    if let Ok(v) = HeaderValue::from_str(&accept_key) {
        h.insert(SEC_WEBSOCKET_ACCEPT, v);
    }
    res
}

/// Close code for a message over the size limit (RFC 6455 "message too big").
pub const CLOSE_TOO_BIG: u16 = 1009;

/// How long a closing connection waits for its writer to send the close frame.
const CLOSE_GRACE: Duration = Duration::from_secs(2);

/// `{"id": …, "ok": true, "data": …}`: the reply to a request with an `id`.
#[derive(serde::Serialize)]
struct ReplyOk<'a> {
    id: u64,
    ok: bool,
    data: &'a serde_json::value::RawValue,
}

/// `{"id": …, "ok": false, "error": …}`.
#[derive(serde::Serialize)]
struct ReplyErr<'a> {
    id: u64,
    ok: bool,
    error: &'a ErrorBody,
}

fn error_frame(id: Option<u64>, e: ErrorBody) -> Option<Outgoing> {
    METRICS.errors.with_label_values(&[e.code.as_str()]).inc();
    let encoded = match id {
        Some(id) => serde_json::to_string(&ReplyErr { id, ok: false, error: &e }).map(Outgoing::ws_text),
        None => Push::Error(e).to_json().map(Outgoing::ws_text),
    };
    encoded.map_err(|e| tracing::error!(error = %e, "an error reply did not serialize")).ok()
}

/// Answers a request: a reply when it has an `id`, an `error` push when it failed without one.
fn reply(outbox: &Outbox, id: Option<u64>, result: Result<ReplyData, ErrorBody>) {
    let frame = match (id, result) {
        (Some(id), Ok(data)) => serde_json::to_string(&ReplyOk { id, ok: true, data: &data })
            .map(Outgoing::ws_text)
            .map_err(|e| tracing::error!(error = %e, "a reply did not serialize"))
            .ok(),
        (id, Err(e)) => error_frame(id, e),
        (None, Ok(_)) => None,
    };
    if let Some(f) = frame {
        outbox.push(f);
    }
}

/// Serves one upgraded connection until it closes.
#[allow(clippy::too_many_arguments)]
async fn serve(
    mut stream: WebSocket,
    w: Arc<writer::SocketWriter>,
    resume: Option<String>,
    peer: Option<IpAddr>,
    principal: Principal,
    engine: Engine,
    cfg: Arc<WsConfig>,
) {
    let outbox = Outbox::writer(w.clone());
    let started = Instant::now();
    let last_seen = Arc::new(AtomicU64::new(0));
    let mut writer = tokio::spawn(writer::run(w.clone(), cfg.ping_interval, last_seen.clone(), started));
    // An admin token also speaks the device admin protocol here (docs/socketio.md §3).
    let att = Box::pin(engine.attach(Attach {
        kind: Kind::Browser,
        principal,
        outbox: outbox.clone(),
        peer,
        resume: resume.as_deref(),
        socket_id: None,
    }))
    .await;
    let limiter = ConnLimiter::new(cfg.frames_per_sec);

    // A request is read only when a batch of replies fits in the queue (`Outbox::room_for`).
    let headroom = (cfg.session_queue / 4).max(1);
    let mut writer_done = false;
    loop {
        let msg = tokio::select! {
            m = async {
                outbox.room_for(headroom).await;
                stream.next().await
            } => m,
            _ = &mut writer => {
                writer_done = true;
                break;
            }
        };
        let msg = match msg {
            Some(Ok(m)) => m,
            Some(Err(tungstenite::Error::Capacity(_))) => {
                METRICS.oversized_frames.inc();
                outbox.close(CLOSE_TOO_BIG, "message too big");
                break;
            }
            Some(Err(e)) => {
                tracing::debug!(error = %e, "websocket read error");
                break;
            }
            None => break,
        };
        last_seen.store(started.elapsed().as_millis() as u64, Ordering::Relaxed);
        let text = match &msg {
            Message::Close(_) => break,
            Message::Ping(_) | Message::Pong(_) | Message::Frame(_) => continue,
            Message::Binary(_) => {
                METRICS.frames_in.inc();
                let _ = limiter.check();
                let e = ErrorBody::new(ErrorCode::BadFrame, "binary frames are not supported; send JSON text");
                reply(&outbox, None, Err(e));
                continue;
            }
            Message::Text(t) => t.as_str(),
        };
        METRICS.frames_in.inc();
        let received_at = now_ms();
        if text.len() > cfg.max_frame_bytes {
            METRICS.oversized_frames.inc();
            outbox.close(CLOSE_TOO_BIG, "message too big");
            break;
        }
        // Every frame counts against the rate, good or bad.
        let limited = limiter.check();
        let (id, req) = match ClientRequest::parse_frame(text) {
            Ok(parsed) => parsed,
            Err((id, e)) => {
                reply(&outbox, id, Err(e));
                continue;
            }
        };
        if let Err(e) = limited {
            reply(&outbox, id, Err(e));
            continue;
        }
        let req = match req {
            ClientRequest::Room(r) => EdgeRequest::Room(r),
            ClientRequest::Admin(r) => EdgeRequest::Admin(r),
        };
        // Boxed: the request future is large and only lives during a request, while this task
        // lives as long as the connection (idle connections must stay small). The connection is
        // corked meanwhile, so the pushes its request causes leave with its reply.
        w.cork();
        match Box::pin(att.handle(req, received_at)).await {
            Answer::Now(result) => reply(&outbox, id, result),
            Answer::Later(fut) => {
                let outbox = outbox.clone();
                tokio::spawn(async move { reply(&outbox, id, fut.await) });
            }
        }
        w.uncork();
    }
    Box::pin(att.detach()).await;
    if !writer_done {
        // The writer sends the close frame; wait for it so the peer sees the code.
        let _ = tokio::time::timeout(CLOSE_GRACE, writer).await;
    }
}
