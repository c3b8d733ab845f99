//! The data of replies: what a room request answers (`{ok: true, data}` on `/ws`, the ack on
//! Socket.IO). Typed like [`Push`](super::Push), held to the same two codecs (serde here, the
//! tree codec in `crate::tree` for the wasm client) by `tests/tree_codec.rs`.

use crate::prelude::*;

use serde::{Deserialize, Serialize, Serializer};

use super::{MemberInfo, PlaybackState, QueueItem, RoomInfo, RoomSettings};
use crate::Millis;

/// Reply data of `time-sync`: the client's `t0`, server receive time `t1`, server send time `t2`.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct TimeSyncReply {
    pub t0: f64,
    pub t1: f64,
    pub t2: f64,
}

/// `create-room` and `join-room`: the room now joined (its snapshot follows as `room-joined`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct JoinedReply {
    pub code: String,
    pub room: RoomInfo,
    /// The joiner's own entry in the room.
    pub member: MemberInfo,
}

/// Playback control and `get-playback-state`: the vector, and the position it gives at
/// `serverTime` (the reply's own instant).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PlaybackReply {
    pub playback: PlaybackState,
    pub server_time: Millis,
    pub position_ms: Millis,
}

/// `queue-add` (with the new item's id), `queue-remove`, `queue-move`: the queue after it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct QueueReply {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub item_id: Option<String>,
    pub queue: Vec<QueueItem>,
}

/// `transfer-host`: the host now.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct HostReply {
    pub host: Option<String>,
}

/// `set-ready`: the member's flag and the playback state after it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ReadyReply {
    pub ready: bool,
    pub playback: PlaybackState,
}

/// `update-settings`: the settings now.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct SettingsReply {
    pub settings: RoomSettings,
}

/// `get-members`: a page of members, longest-present first, and how many there are.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct MembersPage {
    pub members: Vec<MemberInfo>,
    pub total: usize,
    pub offset: usize,
}

/// An operator's view of a room (REST `GET /api/rooms…`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RoomDescription {
    pub room: RoomInfo,
    pub host: Option<String>,
    pub member_count: usize,
    pub playback: PlaybackState,
    pub queue_length: usize,
}

/// What a room command answers. Serialized as the variant's own object (`Done` as `{}`); a
/// client knows which one to expect from the request it sent.
#[derive(Debug, Clone, PartialEq)]
pub enum RoomReply {
    /// `leave-room`, `report-drift`: nothing to say.
    Done,
    Joined(JoinedReply),
    Playback(PlaybackReply),
    Queue(QueueReply),
    Host(HostReply),
    Ready(ReadyReply),
    Settings(SettingsReply),
    Members(MembersPage),
    Description(Box<RoomDescription>),
}

impl RoomReply {
    /// The variant's name, which [`RoomReply::decode`] reads it back by.
    pub fn kind(&self) -> &'static str {
        match self {
            RoomReply::Done => "done",
            RoomReply::Joined(_) => "joined",
            RoomReply::Playback(_) => "playback",
            RoomReply::Queue(_) => "queue",
            RoomReply::Host(_) => "host",
            RoomReply::Ready(_) => "ready",
            RoomReply::Settings(_) => "settings",
            RoomReply::Members(_) => "members",
            RoomReply::Description(_) => "description",
        }
    }

    /// A reply from its [`kind`](RoomReply::kind) and its JSON text (as [`Serialize`] writes it).
    pub fn decode(kind: &str, data: &str) -> Result<RoomReply, serde_json::Error> {
        use serde::de::Error;
        Ok(match kind {
            "done" => RoomReply::Done,
            "joined" => RoomReply::Joined(serde_json::from_str(data)?),
            "playback" => RoomReply::Playback(serde_json::from_str(data)?),
            "queue" => RoomReply::Queue(serde_json::from_str(data)?),
            "host" => RoomReply::Host(serde_json::from_str(data)?),
            "ready" => RoomReply::Ready(serde_json::from_str(data)?),
            "settings" => RoomReply::Settings(serde_json::from_str(data)?),
            "members" => RoomReply::Members(serde_json::from_str(data)?),
            "description" => RoomReply::Description(Box::new(serde_json::from_str(data)?)),
            other => return Err(serde_json::Error::custom(format!("unknown reply kind {other:?}"))),
        })
    }
}

impl Serialize for RoomReply {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match self {
            RoomReply::Done => serde::ser::SerializeMap::end(s.serialize_map(Some(0))?),
            RoomReply::Joined(r) => r.serialize(s),
            RoomReply::Playback(r) => r.serialize(s),
            RoomReply::Queue(r) => r.serialize(s),
            RoomReply::Host(r) => r.serialize(s),
            RoomReply::Ready(r) => r.serialize(s),
            RoomReply::Settings(r) => r.serialize(s),
            RoomReply::Members(r) => r.serialize(s),
            RoomReply::Description(r) => r.serialize(s),
        }
    }
}
