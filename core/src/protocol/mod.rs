//! The native WebSocket protocol (`/ws`): JSON text frames, documented in `docs/protocol.md`.
//!
//! - Client → server: [`ClientFrame`] `{"event", "data", "id"?}`, parsed into a [`Request`] by
//!   [`Request::parse`], which tells an unknown event ([`ErrorCode::UnknownEvent`]) from a bad
//!   payload ([`ErrorCode::InvalidPayload`]) ([`request`]).
//! - Server → client: a [`ReplyFrame`] for every frame that carried an `id`, its data one of the
//!   typed replies of [`reply`], and [`Push`] events ([`push`]).
//! - The room's own wire types (settings, queue items) are in [`room`]; the device protocol's
//!   (seed 003: register, state, commands, what admins see) in [`device`].
//!
//! Event names are fixed by existing clients (seeds 002 and 003): kebab-case, e.g.
//! `pause-playback`; `player:state` for devices. The same types are used by the server, the wasm
//! client, the web dashboard and the tests.

pub mod device;
pub mod push;
pub mod reply;
pub mod request;
pub mod room;

use crate::prelude::*;

use serde::{Deserialize, Serialize, de::DeserializeOwned};
use serde_json::Value;

pub use device::*;
pub use push::*;
pub use reply::*;
pub use request::*;
pub use room::*;

/// A frame as sent by a client, before its payload is interpreted.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ClientFrame {
    pub event: String,
    #[serde(default, skip_serializing_if = "Value::is_null")]
    pub data: Value,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub id: Option<u64>,
}

/// Stable error codes. Clients switch on these; never rename one.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum ErrorCode {
    /// The frame is not JSON, or not a JSON object with a string `event`.
    BadFrame,
    /// `event` names no known request.
    UnknownEvent,
    /// The payload misses a field or has a field of the wrong type or range.
    InvalidPayload,
    /// Playback control by a member who is not the host (and the room is host-only).
    NotHost,
    /// No open room has this code.
    RoomNotFound,
    /// The request needs a room and the session is in none.
    NotInRoom,
    /// The request needs a loaded song.
    NoSong,
    /// No queue item has this id.
    ItemNotFound,
    /// No member has this session id.
    MemberNotFound,
    RoomFull,
    QueueFull,
    /// The tenant or server reached its room limit.
    TooManyRooms,
    /// Too many requests of this kind; retry later.
    RateLimited,
    /// The room was closed.
    RoomClosed,
    /// The change could not be stored; nothing changed.
    StorageUnavailable,
    /// No device of the caller's tenant has this id.
    DeviceNotFound,
    /// The device is not connected (and the command was not queued).
    DeviceOffline,
    /// The command is unknown or its params do not match its schema.
    InvalidCommand,
    /// The device did not answer within the timeout, after every retry.
    CommandTimeout,
    /// A device must send `player:register` first.
    NotRegistered,
    /// The caller's role or identity does not allow this.
    Forbidden,
    /// The request needs another node of the cluster, which cannot be reached now (or the room
    /// just moved to another node): retry.
    ClusterUnavailable,
    Internal,
}

impl ErrorCode {
    /// Every code, in declaration order.
    pub const ALL: &[ErrorCode] = &[
        ErrorCode::BadFrame,
        ErrorCode::UnknownEvent,
        ErrorCode::InvalidPayload,
        ErrorCode::NotHost,
        ErrorCode::RoomNotFound,
        ErrorCode::NotInRoom,
        ErrorCode::NoSong,
        ErrorCode::ItemNotFound,
        ErrorCode::MemberNotFound,
        ErrorCode::RoomFull,
        ErrorCode::QueueFull,
        ErrorCode::TooManyRooms,
        ErrorCode::RateLimited,
        ErrorCode::RoomClosed,
        ErrorCode::StorageUnavailable,
        ErrorCode::DeviceNotFound,
        ErrorCode::DeviceOffline,
        ErrorCode::InvalidCommand,
        ErrorCode::CommandTimeout,
        ErrorCode::NotRegistered,
        ErrorCode::Forbidden,
        ErrorCode::ClusterUnavailable,
        ErrorCode::Internal,
    ];

    /// The code of its wire form (`NOT_HOST`), if it is one.
    pub fn from_wire(s: &str) -> Option<ErrorCode> {
        ErrorCode::ALL.iter().copied().find(|c| c.as_str() == s)
    }

    /// The code as it appears on the wire (e.g. `NOT_HOST`).
    pub fn as_str(self) -> &'static str {
        match self {
            ErrorCode::BadFrame => "BAD_FRAME",
            ErrorCode::UnknownEvent => "UNKNOWN_EVENT",
            ErrorCode::InvalidPayload => "INVALID_PAYLOAD",
            ErrorCode::NotHost => "NOT_HOST",
            ErrorCode::RoomNotFound => "ROOM_NOT_FOUND",
            ErrorCode::NotInRoom => "NOT_IN_ROOM",
            ErrorCode::NoSong => "NO_SONG",
            ErrorCode::ItemNotFound => "ITEM_NOT_FOUND",
            ErrorCode::MemberNotFound => "MEMBER_NOT_FOUND",
            ErrorCode::RoomFull => "ROOM_FULL",
            ErrorCode::QueueFull => "QUEUE_FULL",
            ErrorCode::TooManyRooms => "TOO_MANY_ROOMS",
            ErrorCode::RateLimited => "RATE_LIMITED",
            ErrorCode::RoomClosed => "ROOM_CLOSED",
            ErrorCode::StorageUnavailable => "STORAGE_UNAVAILABLE",
            ErrorCode::DeviceNotFound => "DEVICE_NOT_FOUND",
            ErrorCode::DeviceOffline => "DEVICE_OFFLINE",
            ErrorCode::InvalidCommand => "INVALID_COMMAND",
            ErrorCode::CommandTimeout => "COMMAND_TIMEOUT",
            ErrorCode::NotRegistered => "NOT_REGISTERED",
            ErrorCode::Forbidden => "FORBIDDEN",
            ErrorCode::ClusterUnavailable => "CLUSTER_UNAVAILABLE",
            ErrorCode::Internal => "INTERNAL",
        }
    }
}

/// The `error` object of a failed reply or an `error` push.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, thiserror::Error)]
#[error("{code:?}: {message}")]
pub struct ErrorBody {
    pub code: ErrorCode,
    pub message: String,
}

impl ErrorBody {
    pub fn new(code: ErrorCode, message: impl Into<String>) -> Self {
        Self { code, message: message.into() }
    }
}

/// The one reply to a frame that carried an `id`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ReplyFrame {
    pub id: u64,
    pub ok: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub data: Option<Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<ErrorBody>,
}

impl ReplyFrame {
    pub fn ok(id: u64, data: Value) -> Self {
        Self { id, ok: true, data: Some(data), error: None }
    }
    pub fn err(id: u64, error: ErrorBody) -> Self {
        Self { id, ok: false, data: None, error: Some(error) }
    }
}

/// Decodes the payload of `event` (a missing one reads as `{}`), or `INVALID_PAYLOAD` naming the
/// event. The device protocol's edges decode their events' `Value`s through this.
pub fn payload<T: DeserializeOwned>(event: &str, data: Value) -> Result<T, ErrorBody> {
    // A missing `data` is the same as `{}`, so optional-only payloads may be omitted.
    let data = if data.is_null() { Value::Object(Default::default()) } else { data };
    serde_json::from_value(data).map_err(|e| ErrorBody::new(ErrorCode::InvalidPayload, format!("{event}: {e}")))
}

/// [`payload`] over JSON text: what room requests use, so that a client (the npm package's
/// wasm) needs only serde_json's text deserializer, never `Value`'s.
pub(crate) fn payload_json<T: DeserializeOwned>(event: &str, data: Option<&str>) -> Result<T, ErrorBody> {
    serde_json::from_str(data.unwrap_or("{}"))
        .map_err(|e| ErrorBody::new(ErrorCode::InvalidPayload, format!("{event}: {e}")))
}
