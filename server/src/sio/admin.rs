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
use serde::Deserialize;
use serde_json::{Value, json};
use socketioxide::{
    SocketIo,
    extract::{SocketRef, TryData},
    handler::ConnectHandler,
};
use unisono_core::protocol::{ErrorBody, ErrorCode};

use super::{Answer, ConnectAuth, ConnectRefused, SioConfig};
use crate::{
    auth::Role,
    engine::{Engine, connections::Kind, devices::CommandRequest},
    metrics::METRICS,
};

pub(super) fn register(io: &SocketIo, engine: Engine, cfg: Arc<SioConfig>) {
    let middleware = move |s: SocketRef, TryData(auth): TryData<ConnectAuth>| {
        let (engine, cfg) = (engine.clone(), cfg.clone());
        async move { setup(s, auth.unwrap_or_default(), engine, cfg).await }
    };
    io.ns("/admin", (async |s: SocketRef| super::start_pump(s)).with(middleware));
}

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
struct Subscribe {
    device_ids: Option<Vec<String>>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct DeviceRef {
    device_id: String,
}

fn payload<T: serde::de::DeserializeOwned>(event: &str, data: Value) -> Result<T, ErrorBody> {
    serde_json::from_value(data).map_err(|e| ErrorBody::new(ErrorCode::InvalidPayload, format!("{event}: {e}")))
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
            async move {
                let not_found = || ErrorBody::new(ErrorCode::DeviceNotFound, "no such device");
                match event.as_str() {
                    "devices:list" => Answer::Now(Ok(json!({ "devices": devices.list(&tenant) }))),
                    "devices:subscribe" => Answer::Now(
                        payload::<Subscribe>(&event, data)
                            .and_then(|sub| devices.subscribe(&tenant, conn, sub.device_ids))
                            .map(|views| json!({ "devices": views })),
                    ),
                    "devices:stats" => Answer::Now(Ok(json!(devices.stats(&tenant)))),
                    "devices:unsubscribe" => {
                        devices.unsubscribe(&tenant, conn);
                        Answer::Now(Ok(json!({})))
                    }
                    "devices:resync" => {
                        Answer::Now(payload::<DeviceRef>(&event, data).and_then(|d| {
                            devices.resync(&tenant, &d.device_id).map(|v| json!(v)).ok_or_else(not_found)
                        }))
                    }
                    "command" => match payload::<CommandRequest>(&event, data) {
                        Ok(req) => Answer::Later(
                            async move { devices.command(&tenant, req, Some(&outbox)).await.map(|o| json!(o)) }.boxed(),
                        ),
                        Err(e) => Answer::Now(Err(e)),
                    },
                    other => Answer::Now(Err(ErrorBody::new(
                        ErrorCode::UnknownEvent,
                        format!("unknown event {:?} on /admin", other.chars().take(64).collect::<String>()),
                    ))),
                }
            }
            .boxed()
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
