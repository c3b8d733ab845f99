//! The native WebSocket edge at `/ws`: JSON text frames ↔ engine calls.
//!
//! One task reads frames and calls the engine in order (so a client's requests are handled in
//! the order sent); a writer task drains the session's bounded [`Outbox`] into the socket,
//! pings, and closes when told to (slow consumer, oversized frame, shutdown, replaced session).
//! Nothing here knows about rooms.

use std::{
    net::IpAddr,
    num::NonZeroU32,
    sync::{
        Arc,
        atomic::{AtomicU64, Ordering},
    },
    time::{Duration, Instant},
};

use futures_util::{SinkExt, StreamExt, stream::SplitSink};
use governor::{Quota, RateLimiter};
use unisono_core::protocol::{ErrorBody, ErrorCode, Push, Reply, Request};
use warp::ws::{Message, WebSocket};

use crate::{
    bus::{Frame, Outbox, outbox::Inbox},
    engine::Engine,
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

/// Close code for a message over the size limit (RFC 6455 "message too big").
pub const CLOSE_TOO_BIG: u16 = 1009;
/// Most frames written per flush.
const WRITE_BATCH: usize = 64;

fn error_frame(id: Option<u64>, e: ErrorBody) -> Frame {
    METRICS.errors.with_label_values(&[e.code.as_str()]).inc();
    let text = match id {
        Some(id) => serde_json::to_string(&Reply::err(id, e)).unwrap_or_default(),
        None => Push::Error(e).to_json(),
    };
    Frame::text(text)
}

/// Serves one upgraded connection until it closes.
pub async fn serve(
    socket: WebSocket,
    resume: Option<String>,
    peer: Option<IpAddr>,
    engine: Engine,
    cfg: Arc<WsConfig>,
) {
    METRICS.connections.inc();
    let (outbox, inbox) = Outbox::new(cfg.session_queue);
    let (sink, mut stream) = socket.split();
    let started = Instant::now();
    let last_seen = Arc::new(AtomicU64::new(0));
    let mut writer = tokio::spawn(write_loop(sink, inbox, cfg.ping_interval, last_seen.clone(), started));
    let conn = engine.connect(resume.as_deref(), outbox.clone(), peer).await;

    let per_sec = NonZeroU32::new(cfg.frames_per_sec.max(1)).unwrap_or(NonZeroU32::MIN);
    let burst = NonZeroU32::new(cfg.frames_per_sec.saturating_mul(2).max(1)).unwrap_or(NonZeroU32::MIN);
    let limiter = RateLimiter::direct(Quota::per_second(per_sec).allow_burst(burst));

    let mut writer_done = false;
    loop {
        let msg = tokio::select! {
            m = stream.next() => m,
            _ = &mut writer => {
                writer_done = true;
                break;
            }
        };
        let msg = match msg {
            Some(Ok(m)) => m,
            Some(Err(e)) => {
                let text = e.to_string();
                if text.contains("Message too long") || text.contains("Space limit exceeded") {
                    METRICS.oversized_frames.inc();
                    outbox.close(CLOSE_TOO_BIG, "message too big");
                } else {
                    tracing::debug!(error = %text, "websocket read error");
                }
                break;
            }
            None => break,
        };
        last_seen.store(started.elapsed().as_millis() as u64, Ordering::Relaxed);
        if msg.is_close() {
            break;
        }
        if msg.is_ping() || msg.is_pong() {
            continue;
        }
        METRICS.frames_in.inc();
        let received_at = now_ms();
        let Ok(text) = msg.to_str() else {
            outbox.push(error_frame(
                None,
                ErrorBody::new(ErrorCode::BadFrame, "binary frames are not supported; send JSON text"),
            ));
            continue;
        };
        if text.len() > cfg.max_frame_bytes {
            METRICS.oversized_frames.inc();
            outbox.close(CLOSE_TOO_BIG, "message too big");
            break;
        }
        match Request::parse_frame(text) {
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
                let result = engine.handle(&conn.session, req, received_at).await;
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
            Err((id, e)) => {
                let _ = limiter.check();
                outbox.push(error_frame(id, e));
            }
        }
    }
    outbox.close(1000, "bye");
    engine.disconnect(&conn).await;
    if !writer_done {
        // The writer sends the close frame; wait for it so the peer sees the code.
        let _ = tokio::time::timeout(Duration::from_secs(2), writer).await;
    }
    METRICS.connections.dec();
}

type Sink = SplitSink<WebSocket, Message>;

async fn write_loop(mut sink: Sink, mut inbox: Inbox, ping: Duration, last_seen: Arc<AtomicU64>, started: Instant) {
    let mut tick = tokio::time::interval_at((Instant::now() + ping).into(), ping);
    let kill = inbox.kill.clone();
    loop {
        tokio::select! {
            biased;
            (code, reason) = kill.killed() => {
                let _ = tokio::time::timeout(Duration::from_millis(500), sink.send(Message::close_with(code, reason))).await;
                break;
            }
            frame = inbox.rx.recv() => {
                let Some(frame) = frame else { break };
                let mut batch = vec![frame];
                while batch.len() < WRITE_BATCH {
                    match inbox.rx.try_recv() {
                        Ok(f) => batch.push(f),
                        Err(_) => break,
                    }
                }
                let write = async {
                    for f in batch {
                        match f {
                            Frame::Text(t) => {
                                sink.feed(Message::text(t.as_ref())).await?;
                                METRICS.frames_out.inc();
                            }
                            Frame::Close(code, reason) => {
                                sink.send(Message::close_with(code, reason)).await?;
                                return Ok::<bool, warp::Error>(false);
                            }
                        }
                    }
                    sink.flush().await?;
                    Ok(true)
                };
                // A client that stops reading blocks the write; the kill switch still wins.
                let go_on = tokio::select! {
                    r = write => matches!(r, Ok(true)),
                    (code, reason) = kill.killed() => {
                        let _ = tokio::time::timeout(Duration::from_millis(200), sink.send(Message::close_with(code, reason))).await;
                        false
                    }
                };
                if !go_on {
                    break;
                }
            }
            _ = tick.tick() => {
                let silent_ms = started.elapsed().as_millis() as u64 - last_seen.load(Ordering::Relaxed);
                if silent_ms > 2 * ping.as_millis() as u64 {
                    let _ = tokio::time::timeout(Duration::from_millis(200), sink.send(Message::close_with(1001u16, "ping timeout"))).await;
                    break;
                }
                if tokio::time::timeout(ping, sink.send(Message::ping(Vec::new()))).await.is_err() {
                    break;
                }
            }
        }
    }
    let _ = tokio::time::timeout(Duration::from_millis(200), sink.close()).await;
}
