//! The device admin protocol, edge-agnostic: Socket.IO's `/admin` namespace and `/ws`
//! connections with an `admin` token both call [`handle`] (docs/socketio.md §3).

use serde::Deserialize;
use serde_json::{Value, json};
use unisono_core::protocol::{ErrorBody, ErrorCode, payload};

use super::{
    Answer,
    devices::{CommandRequest, Devices},
};
use crate::bus::Outbox;

/// Events of the admin protocol.
pub const EVENTS: &[&str] =
    &["devices:list", "devices:subscribe", "devices:unsubscribe", "devices:resync", "devices:stats", "command"];

/// True for an event of the admin protocol.
pub fn is_admin_event(event: &str) -> bool {
    EVENTS.contains(&event)
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

/// Handles one admin event of connection `conn` (attached with [`Devices::admin_attach`]);
/// `outbox` receives `command:response`. Commands are answered later, without holding up the
/// connection's next events.
pub fn handle(devices: &Devices, tenant: &str, conn: u64, outbox: &Outbox, event: &str, data: Value) -> Answer {
    let not_found = || ErrorBody::new(ErrorCode::DeviceNotFound, "no such device");
    match event {
        "devices:list" => Answer::Now(Ok(json!({ "devices": devices.list(tenant) }))),
        "devices:subscribe" => Answer::Now(
            payload::<Subscribe>(event, data)
                .and_then(|sub| devices.subscribe(tenant, conn, sub.device_ids))
                .map(|views| json!({ "devices": views })),
        ),
        "devices:stats" => Answer::Now(Ok(json!(devices.stats(tenant)))),
        "devices:unsubscribe" => {
            devices.unsubscribe(tenant, conn);
            Answer::Now(Ok(json!({})))
        }
        "devices:resync" => Answer::Now(
            payload::<DeviceRef>(event, data)
                .and_then(|d| devices.resync(tenant, &d.device_id).map(|v| json!(v)).ok_or_else(not_found)),
        ),
        "command" => match payload::<CommandRequest>(event, data) {
            Ok(req) => {
                let (devices, tenant, outbox) = (devices.clone(), tenant.to_owned(), outbox.clone());
                Answer::Later(Box::pin(
                    async move { devices.command(&tenant, req, Some(&outbox)).await.map(|o| json!(o)) },
                ))
            }
            Err(e) => Answer::Now(Err(e)),
        },
        other => Answer::Now(Err(ErrorBody::new(
            ErrorCode::UnknownEvent,
            format!("unknown admin event {:?}", other.chars().take(64).collect::<String>()),
        ))),
    }
}
