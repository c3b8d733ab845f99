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
    num::NonZeroU32,
    sync::{
        Arc,
        atomic::{AtomicU64, Ordering},
    },
    time::{Duration, Instant},
};

use futures_util::StreamExt;
use governor::{Quota, RateLimiter};
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
use unisono_core::protocol::{ClientFrame, ErrorBody, ErrorCode, Push, Reply, Request as ClientRequest};
use warp::{Reply as _, reply::Response};

use crate::{
    auth::{Principal, ROOM_ROLES, Role as AuthRole},
    bus::{Frame, Outbox},
    engine::{Answer, Engine, connections::Kind},
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

pub(crate) fn query_param<'a>(query: Option<&'a str>, name: &str) -> Option<&'a str> {
    query?.split('&').find_map(|kv| kv.strip_prefix(name)?.strip_prefix('='))
}

/// The token of an `Authorization: Bearer …` header.
pub(crate) fn bearer(headers: &hyper::HeaderMap) -> Option<&str> {
    let v = headers.get(hyper::header::AUTHORIZATION)?.to_str().ok()?;
    v.strip_prefix("Bearer ").or_else(|| v.strip_prefix("bearer ")).map(str::trim)
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
fn error_frame(id: Option<u64>, e: ErrorBody) -> Frame {
    METRICS.errors.with_label_values(&[e.code.as_str()]).inc();
    let text = match id {
        Some(id) => serde_json::to_string(&Reply::err(id, e)).unwrap_or_default(),
        None => Push::Error(e).to_json(),
    };
    Frame::text(text)
}

/// Answers a request: a reply when it has an `id`, an `error` push when it failed without one.
fn reply(outbox: &Outbox, id: Option<u64>, result: Result<serde_json::Value, ErrorBody>) {
    match (id, result) {
        (Some(id), Ok(data)) => {
            outbox.push(Frame::text(serde_json::to_string(&Reply::ok(id, data)).unwrap_or_default()));
        }
        (id, Err(e)) => {
            outbox.push(error_frame(id, e));
        }
        (None, Ok(_)) => {}
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
    METRICS.connections.inc();
    let outbox = Outbox::writer(w.clone());
    let started = Instant::now();
    let last_seen = Arc::new(AtomicU64::new(0));
    let mut writer = tokio::spawn(writer::run(w.clone(), cfg.ping_interval, last_seen.clone(), started));
    let tenant = principal.tenant.clone();
    // An admin token also speaks the device admin protocol here (docs/socketio.md §3).
    let admin = (principal.role == AuthRole::Admin).then(|| {
        let id = engine.devices().next_conn();
        engine.devices().admin_attach(&tenant, id, outbox.clone());
        id
    });
    let conn = Box::pin(engine.connect(resume.as_deref(), outbox.clone(), peer, principal)).await;
    let registered = engine.connections().add(&conn.session, &tenant, Kind::Browser, outbox.clone(), None);

    let per_sec = NonZeroU32::new(cfg.frames_per_sec.max(1)).unwrap_or(NonZeroU32::MIN);
    let burst = NonZeroU32::new(cfg.frames_per_sec.saturating_mul(2).max(1)).unwrap_or(NonZeroU32::MIN);
    let limiter = RateLimiter::direct(Quota::per_second(per_sec).allow_burst(burst));

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
                outbox.push(error_frame(
                    None,
                    ErrorBody::new(ErrorCode::BadFrame, "binary frames are not supported; send JSON text"),
                ));
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
        match ClientRequest::parse_frame(text) {
            Ok((id, req)) => {
                if limiter.check().is_err() {
                    outbox.push(error_frame(
                        id,
                        ErrorBody::new(
                            ErrorCode::RateLimited,
                            format!("more than {} frames per second", cfg.frames_per_sec),
                        ),
                    ));
                    continue;
                }
                // Boxed: the request future is large and only lives during a request, while this
                // task lives as long as the connection (idle connections must stay small).
                w.cork();
                let result = Box::pin(engine.handle(&conn.session, req, received_at)).await;
                reply(&outbox, id, result);
                w.uncork();
            }
            Err((id, e)) if e.code == ErrorCode::UnknownEvent => {
                if limiter.check().is_err() {
                    let msg = format!("more than {} frames per second", cfg.frames_per_sec);
                    outbox.push(error_frame(id, ErrorBody::new(ErrorCode::RateLimited, msg)));
                    continue;
                }
                match (admin, serde_json::from_str::<ClientFrame>(text)) {
                    (Some(admin), Ok(f)) if crate::engine::admin::is_admin_event(&f.event) => {
                        let devices = engine.devices();
                        match crate::engine::admin::handle(devices, &tenant, admin, &outbox, &f.event, f.data) {
                            Answer::Now(result) => reply(&outbox, f.id, result),
                            Answer::Later(fut) => {
                                let outbox = outbox.clone();
                                tokio::spawn(async move { reply(&outbox, f.id, fut.await) });
                            }
                        }
                    }
                    (None, Ok(f)) if crate::engine::admin::is_admin_event(&f.event) => {
                        let e = ErrorBody::new(ErrorCode::Forbidden, "device admin events need an admin token");
                        outbox.push(error_frame(id, e));
                    }
                    _ => {
                        outbox.push(error_frame(id, e));
                    }
                }
            }
            Err((id, e)) => {
                let _ = limiter.check();
                outbox.push(error_frame(id, e));
            }
        }
    }
    outbox.close(1000, "bye");
    engine.connections().remove(&conn.session, registered);
    if let Some(admin) = admin {
        engine.devices().admin_detach(&tenant, admin);
    }
    Box::pin(engine.disconnect(&conn)).await;
    if !writer_done {
        // The writer sends the close frame; wait for it so the peer sees the code.
        let _ = tokio::time::timeout(Duration::from_secs(2), writer).await;
    }
    METRICS.connections.dec();
}
