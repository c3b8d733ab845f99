//! Namespace `/admin`: a tenant's device admins (seed 003's App Administradora), with an
//! `admin` token. Everything is scoped to the token's tenant.
//!
//! Events (all with acks): `devices:list` → `{devices}`; from its connection on an admin gets
//! `state:updated` {deviceId, rev, baseRev, patch} for every device (RFC 7396 merge patch; the
//! first per device a full state with `baseRev` 0; apply when your rev for the device equals
//! `baseRev`, else `devices:resync`); `devices:subscribe` {deviceIds?} → `{devices}` full states
//! (and narrows to those ids); `devices:unsubscribe` opts out; `devices:stats` → the tenant's running totals; `devices:resync`
//! {deviceId} → the device; `command` {deviceId, command, params, timeoutMs?, retries?, queue?,
//! ttlMs?} → the device's answer (also sent as `command:response`). Presence: `device:online`,
//! `device:offline` {deviceId, name, lastSeen}.

use std::sync::Arc;

use socketioxide::{SocketIo, extract::SocketRef, handler::ConnectHandler};
use unisono_core::protocol::AdminRequest;

use super::{ConnectAuth, ConnectRefused, Route, SioConfig};
use crate::{
    auth::Role,
    engine::{EdgeRequest, Engine, connections::Kind},
};

pub(super) fn register(io: &SocketIo, engine: Engine, cfg: Arc<SioConfig>) {
    let middleware = super::middleware(engine, cfg, setup);
    io.ns("/admin", (async |s: SocketRef| super::start_pump(s, None)).with(middleware));
}

async fn setup(s: SocketRef, auth: ConnectAuth, engine: Engine, cfg: Arc<SioConfig>) -> Result<(), ConnectRefused> {
    let principal = super::authenticate(&engine, &s, &auth, &[Role::Admin], "socketio:/admin")?;
    let wiring = super::wire(&s, cfg.queue, cfg.max_event_bytes);
    let att = super::attach(&engine, &s, Kind::Admin, principal, &wiring, None).await;
    tokio::spawn(super::serve_jobs(wiring, att, cfg.events_per_sec, |_, event, data| {
        match AdminRequest::parse(event, &data) {
            Ok(req) => Route::Engine(EdgeRequest::Admin(req)),
            Err(e) => Route::Answer(Err(e)),
        }
    }));
    Ok(())
}
