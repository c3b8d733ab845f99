//! Namespace `/`: the room protocol over Socket.IO.
//!
//! Same events and payloads as `/ws` (docs/protocol.md): a client emits `join-room` with
//! `{code}` and an ack callback and gets `{ok: true, data}` or `{ok: false, error: {code,
//! message}}`; pushes (`connected`, `room-joined`, `playback-paused`, …) arrive as events of
//! the same names. Seed 004's browsers also get `connection-status` `{connected, socketId}`.
//! `auth: {token, resume}` in the CONNECT packet authenticates and resumes a session.

use std::sync::Arc;

use socketioxide::{SocketIo, extract::SocketRef, handler::ConnectHandler};
use unisono_core::protocol::{ErrorBody, ErrorCode, Request};

use super::{ConnectAuth, ConnectRefused, Route, SioConfig};
use crate::{
    auth::{Principal, ROOM_ROLES, Role},
    engine::{EdgeRequest, Engine, connections::Kind, reply_data},
};

pub(super) fn register(io: &SocketIo, engine: Engine, cfg: Arc<SioConfig>) {
    let middleware = super::middleware(engine, cfg, setup);
    let on_connect = async |s: SocketRef| {
        // Seed 004's hand-shake, then the engine's pushes (`connected` first).
        let _ = s.emit("connection-status", &serde_json::json!({ "connected": true, "socketId": s.id.to_string() }));
        super::start_pump(s, None);
    };
    io.ns("/", on_connect.with(middleware));
}

/// Runs before the CONNECT is acknowledged, so nothing the client sends afterwards can find the
/// socket half set up: authenticates, wires the socket, attaches the connection.
async fn setup(s: SocketRef, auth: ConnectAuth, engine: Engine, cfg: Arc<SioConfig>) -> Result<(), ConnectRefused> {
    let principal = super::authenticate(&engine, &s, &auth, ROOM_ROLES, "socketio")?;
    let wiring = super::wire(&s, cfg.queue, cfg.max_event_bytes);
    // Reachable by its session id and its socket id (`connection-status.socketId`).
    let att = super::attach(&engine, &s, Kind::Browser, principal, &wiring, auth.resume.as_deref()).await;
    tokio::spawn(super::serve_jobs(wiring, att, cfg.events_per_sec, |att, event, data| {
        if event == "join-system" {
            return Route::Answer(join_system(&att.principal, &data));
        }
        match Request::parse(event, data) {
            Ok(req) => Route::Engine(EdgeRequest::Room(req)),
            Err(e) => Route::Answer(Err(e)),
        }
    }));
    Ok(())
}

/// Seed 004's `join-system` {systemId}: a browser joins its tenant's broadcasts (which a
/// connection receives anyway once authenticated) — or, for `staff`, `admin-dashboard`. Any
/// other system is refused without saying whether it exists.
fn join_system(me: &Principal, data: &serde_json::Value) -> Result<crate::engine::ReplyData, ErrorBody> {
    let system = data.get("systemId").and_then(serde_json::Value::as_str).unwrap_or_default();
    let allowed = system == me.tenant || (system == "admin-dashboard" && me.role == Role::Staff);
    if allowed {
        reply_data(&serde_json::json!({ "systemId": system }))
    } else {
        Err(ErrorBody::new(ErrorCode::Forbidden, "this token cannot join that system"))
    }
}
