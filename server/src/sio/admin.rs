//! Namespace `/admin`: a tenant's device admins (seed 003's App Administradora), with an
//! `admin` token. Everything is scoped to the token's tenant.
//!
//! Events (all with acks): `devices:list` → `{devices}`; `devices:subscribe` {deviceIds?} →
//! `{devices}` full states, then `state:updated` {deviceId, rev, baseRev, patch} (RFC 7396
//! merge patch; apply when your rev for the device equals `baseRev`, else `devices:resync`);
//! `devices:unsubscribe`; `devices:stats` → the tenant's running totals; `devices:resync` {deviceId} → the device; `command` {deviceId,
//! command, params, timeoutMs?, retries?, queue?, ttlMs?} → the device's answer (also sent as
//! `command:response`). Presence: `device:online`, `device:offline` {deviceId, name, lastSeen}.

use std::sync::Arc;

use futures_util::FutureExt;
use socketioxide::{SocketIo, extract::SocketRef, handler::ConnectHandler};

use super::{ConnectAuth, ConnectRefused, SioConfig};
use crate::{
    auth::Role,
    engine::{Engine, connections::Kind},
    metrics::METRICS,
};

pub(super) fn register(io: &SocketIo, engine: Engine, cfg: Arc<SioConfig>) {
    let middleware = super::middleware(engine, cfg, setup);
    io.ns("/admin", (async |s: SocketRef| super::start_pump(s, None)).with(middleware));
}

async fn setup(s: SocketRef, auth: ConnectAuth, engine: Engine, cfg: Arc<SioConfig>) -> Result<(), ConnectRefused> {
    let principal = super::authenticate(&engine, &s, &auth, &[Role::Admin], "socketio:/admin")?;
    METRICS.connections.inc();
    let wiring = super::wire(&s, cfg.queue, cfg.max_event_bytes);
    let outbox = wiring.outbox.clone();
    let devices = engine.devices().clone();
    let conn = devices.next_conn();
    let tenant: Arc<str> = principal.tenant.into();
    devices.admin_attach(&tenant, conn, outbox.clone());
    let sid = s.id.to_string();
    let token = engine.connections().add(&sid, &tenant, Kind::Admin, outbox.clone(), None);
    {
        let (devices, tenant, outbox) = (devices.clone(), tenant.clone(), outbox.clone());
        tokio::spawn(super::serve_jobs(wiring, cfg.events_per_sec, move |event, data, _| {
            let (devices, tenant, outbox) = (devices.clone(), tenant.clone(), outbox.clone());
            async move { crate::engine::admin::handle(&devices, &tenant, conn, &outbox, &event, data) }.boxed()
        }));
    }
    s.on_disconnect(async move || {
        outbox.close(1000, "bye");
        engine.connections().remove(&sid, token);
        devices.admin_detach(&tenant, conn);
        METRICS.connections.dec();
    });
    Ok(())
}
