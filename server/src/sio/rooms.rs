//! Namespace `/`: the room protocol over Socket.IO.
//!
//! Same events and payloads as `/ws` (docs/protocol.md): a client emits `join-room` with
//! `{code}` and an ack callback and gets `{ok: true, data}` or `{ok: false, error: {code,
//! message}}`; pushes (`connected`, `room-joined`, `playback-paused`, …) arrive as events of
//! the same names. Seed 004's browsers also get `connection-status` `{connected, socketId}`.
//! `auth: {token, resume}` in the CONNECT packet authenticates and resumes a session.

use std::sync::Arc;

use futures_util::FutureExt;
use socketioxide::{
    SocketIo,
    extract::{SocketRef, TryData},
    handler::ConnectHandler,
};
use unisono_core::protocol::Request;

use super::{Answer, ConnectAuth, ConnectRefused, SioConfig};
use crate::{auth::ROOM_ROLES, engine::Engine, metrics::METRICS};

pub(super) fn register(io: &SocketIo, engine: Engine, cfg: Arc<SioConfig>) {
    let middleware = move |s: SocketRef, TryData(auth): TryData<ConnectAuth>| {
        let (engine, cfg) = (engine.clone(), cfg.clone());
        async move { setup(s, auth.unwrap_or_default(), engine, cfg).await }
    };
    let on_connect = async |s: SocketRef| {
        // Seed 004's hand-shake, then the engine's pushes (`connected` first).
        let _ = s.emit("connection-status", &serde_json::json!({ "connected": true, "socketId": s.id.to_string() }));
        super::start_pump(s);
    };
    io.ns("/", on_connect.with(middleware));
}

/// Runs before the CONNECT is acknowledged, so nothing the client sends afterwards can find the
/// socket half set up: authenticates, attaches the session, starts the request task and
/// registers the disconnect handler.
async fn setup(s: SocketRef, auth: ConnectAuth, engine: Engine, cfg: Arc<SioConfig>) -> Result<(), ConnectRefused> {
    let principal = super::authenticate(&engine, &s, &auth, ROOM_ROLES, "socketio")?;
    METRICS.connections.inc();
    let wiring = super::wire(&s, cfg.queue, cfg.max_event_bytes);
    let outbox = wiring.outbox.clone();
    let conn = Box::pin(engine.connect(auth.resume.as_deref(), outbox.clone(), super::peer_ip(&s), principal)).await;
    let (e, session) = (engine.clone(), conn.session.clone());
    tokio::spawn(super::serve_jobs(wiring, cfg.events_per_sec, move |event, data, received_at| {
        let (e, session) = (e.clone(), session.clone());
        async move {
            Answer::Now(match Request::parse(&event, data) {
                Ok(req) => Box::pin(e.handle(&session, req, received_at)).await,
                Err(err) => Err(err),
            })
        }
        .boxed()
    }));
    s.on_disconnect(async move || {
        outbox.close(1000, "bye");
        Box::pin(engine.disconnect(&conn)).await;
        METRICS.connections.dec();
    });
    Ok(())
}
