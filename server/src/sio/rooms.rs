//! Namespace `/`: the room protocol over Socket.IO.
//!
//! Same events and payloads as `/ws` (docs/protocol.md): a client emits `join-room` with
//! `{code}` and an ack callback and gets `{ok: true, data}` or `{ok: false, error: {code,
//! message}}`; pushes (`connected`, `room-joined`, `playback-paused`, …) arrive as events of
//! the same names. Seed 004's browsers also get `connection-status` `{connected, socketId}`.
//! `auth: {token, resume}` in the CONNECT packet authenticates and resumes a session.

use std::sync::Arc;

use futures_util::FutureExt;
use socketioxide::{SocketIo, extract::SocketRef, handler::ConnectHandler};
use unisono_core::protocol::{ErrorBody, ErrorCode, Request};

use super::{Answer, ConnectAuth, ConnectRefused, SioConfig};
use crate::{
    auth::{Principal, ROOM_ROLES, Role},
    engine::{Engine, connections::Kind},
    metrics::METRICS,
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
/// socket half set up: authenticates, attaches the session, starts the request task and
/// registers the disconnect handler.
async fn setup(s: SocketRef, auth: ConnectAuth, engine: Engine, cfg: Arc<SioConfig>) -> Result<(), ConnectRefused> {
    let principal = super::authenticate(&engine, &s, &auth, ROOM_ROLES, "socketio")?;
    let tenant = principal.tenant.clone();
    let principal_copy = principal.clone();
    METRICS.connections.inc();
    let wiring = super::wire(&s, cfg.queue, cfg.max_event_bytes);
    let outbox = wiring.outbox.clone();
    let conn = Box::pin(engine.connect(auth.resume.as_deref(), outbox.clone(), super::peer_ip(&s), principal)).await;
    // Reachable by its session id and its socket id (`connection-status.socketId`).
    let sid = s.id.to_string();
    let by_session = engine.connections().add(&conn.session, &tenant, Kind::Browser, outbox.clone(), None);
    let by_sid = engine.connections().add(&sid, &tenant, Kind::Browser, outbox.clone(), None);
    let (e, session, me) = (engine.clone(), conn.session.clone(), Arc::new(principal_copy));
    tokio::spawn(super::serve_jobs(wiring, cfg.events_per_sec, move |event, data, received_at| {
        let (e, session, me) = (e.clone(), session.clone(), me.clone());
        async move {
            if event == "join-system" {
                return Answer::Now(join_system(&me, &data));
            }
            Answer::Now(match Request::parse(&event, data) {
                Ok(req) => Box::pin(e.handle(&session, req, received_at)).await,
                Err(err) => Err(err),
            })
        }
        .boxed()
    }));
    s.on_disconnect(async move || {
        outbox.close(1000, "bye");
        engine.connections().remove(&conn.session, by_session);
        engine.connections().remove(&sid, by_sid);
        Box::pin(engine.disconnect(&conn)).await;
        METRICS.connections.dec();
    });
    Ok(())
}

/// Seed 004's `join-system` {systemId}: a browser joins its tenant's broadcasts (which a
/// connection receives anyway once authenticated) — or, for `staff`, `admin-dashboard`. Any
/// other system is refused without saying whether it exists.
fn join_system(me: &Principal, data: &serde_json::Value) -> Result<serde_json::Value, ErrorBody> {
    let system = data.get("systemId").and_then(serde_json::Value::as_str).unwrap_or_default();
    let allowed = system == me.tenant || (system == "admin-dashboard" && me.role == Role::Staff);
    if allowed {
        Ok(serde_json::json!({ "systemId": system }))
    } else {
        Err(ErrorBody::new(ErrorCode::Forbidden, "this token cannot join that system"))
    }
}
