//! The device protocol's wire types (seed 003): what a device (`/players`) sends and receives,
//! and what its tenant's admins (`/admin`, or `/ws` with an admin token) ask and are told.
//!
//! Device → server: `player:register` [`Register`], `player:state` (any object),
//! `player:command:response` [`CommandResponse`]. Server → device: `player:registered`
//! [`Registered`], `player:command` [`PlayerCommand`]. Admin → server: [`AdminRequest`].
//! Server → admin: [`DevicePush`] (`device:online`, `device:offline`, `state:updated`,
//! `command:response`). The server, the web dashboard and the tests use these same types.

use crate::prelude::*;

use serde::{Deserialize, Serialize, Serializer, de::DeserializeOwned};
use serde_json::{Map, Value};

use super::{ErrorBody, ErrorCode};
use crate::Millis;

/// `player:register`: `deviceId`, `name`, and anything else (kept as the device's info).
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Register {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub device_id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    #[serde(flatten)]
    pub info: Map<String, Value>,
}

/// `player:registered` (an event and the ack of `player:register`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Registered {
    pub device_id: String,
    pub name: String,
    pub registered_at: Millis,
    /// The rev of the device's stored state (its next state gets a higher one).
    pub rev: u64,
}

/// The ack of `player:state`, once the state is stored.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct StateAck {
    pub rev: u64,
}

/// `player:command`: server → device. A retry carries the same `commandId`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PlayerCommand {
    pub command: String,
    pub params: Value,
    pub command_id: String,
}

/// `player:command:response`: device → server (or the ack of `player:command`, without
/// `commandId`).
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct CommandResponse {
    pub command_id: String,
    pub status: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub result: Option<Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<Value>,
}

/// An admin's `command` request.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct CommandRequest {
    pub device_id: String,
    pub command: String,
    #[serde(default)]
    pub params: Value,
    #[serde(default, skip_serializing_if = "Option::is_none", deserialize_with = "integer")]
    pub timeout_ms: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none", deserialize_with = "integer")]
    pub retries: Option<u32>,
    /// Queue for an offline device instead of failing with `DEVICE_OFFLINE`.
    #[serde(default)]
    pub queue: bool,
    /// How long a queued command waits for the device (ms).
    #[serde(default, skip_serializing_if = "Option::is_none", deserialize_with = "integer")]
    pub ttl_ms: Option<u64>,
}

/// A non-negative integer as JSON Schema (and JavaScript) count one: `5` or `5.0`, not `5.5`.
/// The REST API's OpenAPI document says `integer`, and a schema-valid body must be accepted.
fn integer<'de, D, T>(d: D) -> Result<Option<T>, D::Error>
where
    D: serde::Deserializer<'de>,
    T: TryFrom<u64>,
{
    use serde::de::Error;
    let Some(n) = Option::<serde_json::Number>::deserialize(d)? else { return Ok(None) };
    // 2^64 as f64: every integral f64 below it fits a u64.
    let whole = |f: f64| ((0.0..18_446_744_073_709_551_616.0).contains(&f) && libm::trunc(f) == f).then_some(f as u64);
    n.as_u64()
        .or_else(|| n.as_f64().and_then(whole))
        .and_then(|u| T::try_from(u).ok())
        .map(Some)
        .ok_or_else(|| D::Error::custom(format!("expected a non-negative integer in range, got {n}")))
}

/// Status of a command the server gave up on (offline, timed out): its `error` is an
/// [`ErrorBody`].
pub const STATUS_FAILED: &str = "failed";

/// The outcome of a command, as the admin gets it (the ack data and `command:response`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct CommandOutcome {
    pub command_id: String,
    pub device_id: String,
    pub command: String,
    /// The device's status (`success`, `error`, …), or [`STATUS_FAILED`].
    pub status: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub result: Option<Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<Value>,
    /// Deliveries made (1 + retries used).
    pub attempts: u32,
}

impl CommandOutcome {
    /// The server's own failure as a [`STATUS_FAILED`] outcome.
    pub fn failed(command_id: &str, req: &CommandRequest, error: &ErrorBody, attempts: u32) -> CommandOutcome {
        CommandOutcome {
            command_id: command_id.to_owned(),
            device_id: req.device_id.clone(),
            command: req.command.clone(),
            status: STATUS_FAILED.to_owned(),
            result: None,
            error: Some(error.to_value()),
            attempts,
        }
    }

    /// The server's failure, when the status is [`STATUS_FAILED`].
    pub fn failure(&self) -> Option<ErrorBody> {
        let e = self.error.as_ref().filter(|_| self.status == STATUS_FAILED)?;
        let code = e.get("code").and_then(Value::as_str).and_then(ErrorCode::from_wire)?;
        Some(ErrorBody::new(code, e.get("message").and_then(Value::as_str).unwrap_or_default()))
    }
}

impl ErrorBody {
    /// `{code, message}` as a JSON value.
    pub fn to_value(&self) -> Value {
        let mut m = Map::new();
        m.insert("code".into(), Value::String(self.code.as_str().into()));
        m.insert("message".into(), Value::String(self.message.clone()));
        Value::Object(m)
    }
}

/// What admins see of a device.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct DeviceView {
    pub device_id: String,
    pub name: String,
    pub online: bool,
    pub last_seen: Millis,
    pub info: Value,
    pub rev: u64,
    pub state: Value,
}

/// `device:online` and `device:offline`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct DevicePresence {
    pub device_id: String,
    pub name: String,
    pub last_seen: Millis,
}

/// `state:updated`: a JSON Merge Patch (RFC 7396) from the state of rev `baseRev` (the one this
/// admin was last sent) to the state of rev `rev`. Apply it only when your rev equals `baseRev`;
/// else ask `devices:resync`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct StateUpdated {
    pub device_id: String,
    pub rev: u64,
    pub base_rev: u64,
    pub patch: Value,
}

/// A tenant's running totals, for its dashboard (rates are computed by the reader).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct TenantStats {
    pub states: u64,
    pub commands: u64,
    pub commands_failed: u64,
    pub devices: usize,
    pub online: usize,
}

/// `devices:list` and `devices:subscribe`: devices with their state.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DeviceList {
    pub devices: Vec<DeviceView>,
}

/// `devices:subscribe` {deviceIds?}: these devices (all, including future ones, without).
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Subscribe {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub device_ids: Option<Vec<String>>,
}

/// `devices:resync` {deviceId}.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct DeviceRef {
    pub device_id: String,
}

/// Server → device and server → admin events.
#[derive(Debug, Clone, PartialEq)]
pub enum DevicePush {
    Registered(Registered),
    Command(PlayerCommand),
    Online(DevicePresence),
    Offline(DevicePresence),
    StateUpdated(StateUpdated),
    CommandResponse(CommandOutcome),
}

impl DevicePush {
    /// The event name.
    pub fn event(&self) -> &'static str {
        match self {
            DevicePush::Registered(_) => "player:registered",
            DevicePush::Command(_) => "player:command",
            DevicePush::Online(_) => "device:online",
            DevicePush::Offline(_) => "device:offline",
            DevicePush::StateUpdated(_) => "state:updated",
            DevicePush::CommandResponse(_) => "command:response",
        }
    }

    /// Decodes a push from its event name and data; `None` for an event that is not one of these.
    pub fn decode(event: &str, data: Value) -> Option<Result<DevicePush, serde_json::Error>> {
        fn read<T: DeserializeOwned>(v: Value) -> Result<T, serde_json::Error> {
            serde_json::from_value(v)
        }
        Some(match event {
            "player:registered" => read(data).map(DevicePush::Registered),
            "player:command" => read(data).map(DevicePush::Command),
            "device:online" => read(data).map(DevicePush::Online),
            "device:offline" => read(data).map(DevicePush::Offline),
            "state:updated" => read(data).map(DevicePush::StateUpdated),
            "command:response" => read(data).map(DevicePush::CommandResponse),
            _ => return None,
        })
    }

    /// The push's data, serialized (the frame's `data`).
    pub fn data_raw(&self) -> Result<Box<serde_json::value::RawValue>, serde_json::Error> {
        use serde_json::value::to_raw_value as raw;
        match self {
            DevicePush::Registered(d) => raw(d),
            DevicePush::Command(d) => raw(d),
            DevicePush::Online(d) | DevicePush::Offline(d) => raw(d),
            DevicePush::StateUpdated(d) => raw(d),
            DevicePush::CommandResponse(d) => raw(d),
        }
    }
}

/// `{"event": …, "data": …}`, as every push.
impl Serialize for DevicePush {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeStruct;
        let mut st = s.serialize_struct("DevicePush", 2)?;
        st.serialize_field("event", self.event())?;
        match self {
            DevicePush::Registered(d) => st.serialize_field("data", d)?,
            DevicePush::Command(d) => st.serialize_field("data", d)?,
            DevicePush::Online(d) | DevicePush::Offline(d) => st.serialize_field("data", d)?,
            DevicePush::StateUpdated(d) => st.serialize_field("data", d)?,
            DevicePush::CommandResponse(d) => st.serialize_field("data", d)?,
        }
        st.end()
    }
}

/// The admin protocol's requests (Socket.IO `/admin`, or `/ws` with an admin token).
#[derive(Debug, Clone, PartialEq)]
pub enum AdminRequest {
    List,
    Subscribe(Subscribe),
    Unsubscribe,
    Resync(DeviceRef),
    Stats,
    Command(CommandRequest),
}

/// Events of the admin protocol.
pub const ADMIN_EVENTS: &[&str] =
    &["devices:list", "devices:subscribe", "devices:unsubscribe", "devices:resync", "devices:stats", "command"];

impl AdminRequest {
    /// True for an event of the admin protocol.
    pub fn is_admin_event(event: &str) -> bool {
        ADMIN_EVENTS.contains(&event)
    }

    /// Interprets `data` (JSON text; `None` reads as `{}`) according to `event`.
    pub fn parse_json(event: &str, data: Option<&str>) -> Result<AdminRequest, ErrorBody> {
        fn p<T: DeserializeOwned>(event: &str, data: Option<&str>) -> Result<T, ErrorBody> {
            super::payload_json(event, data)
        }
        Ok(match event {
            "devices:list" => AdminRequest::List,
            "devices:subscribe" => AdminRequest::Subscribe(p(event, data)?),
            "devices:unsubscribe" => AdminRequest::Unsubscribe,
            "devices:resync" => AdminRequest::Resync(p(event, data)?),
            "devices:stats" => AdminRequest::Stats,
            "command" => AdminRequest::Command(p(event, data)?),
            other => {
                let shown: String = other.chars().take(64).collect();
                return Err(ErrorBody::new(ErrorCode::UnknownEvent, format!("unknown admin event {shown:?}")));
            }
        })
    }

    /// [`AdminRequest::parse_json`] over a parsed value (the Socket.IO edge's).
    pub fn parse(event: &str, data: &Value) -> Result<AdminRequest, ErrorBody> {
        if data.is_null() {
            return AdminRequest::parse_json(event, None);
        }
        AdminRequest::parse_json(event, Some(&data.to_string()))
    }
}

/// What a device may send (`/players`).
#[derive(Debug, Clone, PartialEq)]
pub enum DeviceRequest {
    /// `player:register`.
    Register(Register),
    /// `player:state`: the device's whole state, an object.
    State(Value),
    /// `player:command:response`.
    CommandResponse(CommandResponse),
}

impl DeviceRequest {
    /// Interprets `data` according to `event`.
    pub fn parse(event: &str, data: Value) -> Result<DeviceRequest, ErrorBody> {
        Ok(match event {
            "player:register" => DeviceRequest::Register(super::payload(event, data)?),
            "player:state" => DeviceRequest::State(data),
            "player:command:response" => DeviceRequest::CommandResponse(super::payload(event, data)?),
            other => {
                let shown: String = other.chars().take(64).collect();
                return Err(ErrorBody::new(ErrorCode::UnknownEvent, format!("unknown event {shown:?} on /players")));
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    #[cfg(target_arch = "wasm32")]
    use wasm_bindgen_test::wasm_bindgen_test as test;

    fn command(extra: &str) -> Result<CommandRequest, serde_json::Error> {
        serde_json::from_str(&format!(r#"{{"deviceId":"k","command":"vlc:stop"{extra}}}"#))
    }

    /// Integers as JSON Schema counts them (the OpenAPI document says `integer`): `5.0` is 5.
    #[test]
    fn command_numbers_are_whole_non_negative_and_in_range() {
        assert_eq!(
            command(r#","retries":3.0,"timeoutMs":250"#).map(|c| (c.retries, c.timeout_ms)).ok(),
            Some((Some(3), Some(250)))
        );
        assert_eq!(command(r#","ttlMs":null"#).map(|c| c.ttl_ms).ok(), Some(None));
        for bad in [
            r#","retries":2.5"#,
            r#","retries":-1"#,
            r#","retries":4294967296"#,
            r#","timeoutMs":1e30"#,
            r#","ttlMs":"5""#,
        ] {
            assert!(command(bad).is_err(), "{bad} was accepted");
        }
    }
}
