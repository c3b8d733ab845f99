//! Server → client: [`Push`] events and the shapes they carry (playback state, members, the
//! room snapshot).

use crate::prelude::*;

use serde::{Deserialize, Deserializer, Serialize, de::DeserializeOwned};
use serde_json::value::RawValue;

use super::{ErrorBody, QueueItem, RoomSettings};
use crate::{Millis, clock::PlaybackClock, tree::FromTree};

/// The playback timing vector as sent to clients: the clock's fields (side by side: `song`,
/// `positionMs`, `serverTime`, `isPlaying`, `rate`, `rev`) plus derived seed-002 fields.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(from = "PlaybackStateWire", into = "PlaybackStateWire")]
pub struct PlaybackState {
    pub clock: PlaybackClock,
    /// Seed 002: server time at which position 0 played, when playing.
    pub started_at: Option<Millis>,
    /// Seed 002: server time playback stopped, when paused.
    pub paused_at: Option<Millis>,
    /// True while the ready barrier holds playback until members report ready.
    #[serde(default)]
    pub awaiting_ready: bool,
}

/// [`PlaybackState`] as it is on the wire, written out rather than `#[serde(flatten)]`: the
/// buffering behind `flatten` was about a fifth of the npm package's wasm. Same JSON.
#[derive(Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
struct PlaybackStateWire {
    song: Option<crate::song::Song>,
    position_ms: Millis,
    server_time: Millis,
    is_playing: bool,
    rate: f64,
    rev: u64,
    started_at: Option<Millis>,
    paused_at: Option<Millis>,
    #[serde(default)]
    awaiting_ready: bool,
}

impl From<PlaybackStateWire> for PlaybackState {
    fn from(w: PlaybackStateWire) -> Self {
        let clock = PlaybackClock {
            song: w.song,
            position_ms: w.position_ms,
            server_time: w.server_time,
            is_playing: w.is_playing,
            rate: w.rate,
            rev: w.rev,
        };
        Self { clock, started_at: w.started_at, paused_at: w.paused_at, awaiting_ready: w.awaiting_ready }
    }
}

impl From<PlaybackState> for PlaybackStateWire {
    fn from(p: PlaybackState) -> Self {
        let PlaybackClock { song, position_ms, server_time, is_playing, rate, rev } = p.clock;
        Self {
            song,
            position_ms,
            server_time,
            is_playing,
            rate,
            rev,
            started_at: p.started_at,
            paused_at: p.paused_at,
            awaiting_ready: p.awaiting_ready,
        }
    }
}

impl PlaybackState {
    pub fn from_clock(clock: &PlaybackClock, awaiting_ready: bool) -> Self {
        Self { clock: clock.clone(), started_at: clock.started_at(), paused_at: clock.paused_at(), awaiting_ready }
    }
}

/// A member as shown to clients.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct MemberInfo {
    pub session_id: String,
    pub name: String,
    pub joined_at: Millis,
    pub is_host: bool,
    pub ready: bool,
    pub connected: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub drift_ms: Option<f64>,
}

/// Room identity and settings.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RoomInfo {
    pub code: String,
    pub name: String,
    pub created_at: Millis,
    pub settings: RoomSettings,
}

/// `room-joined`: everything a joiner needs to play in sync at once.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RoomJoined {
    pub room: RoomInfo,
    /// The joiner's own session id.
    pub you: String,
    /// The first members (longest-present first, host always included); `memberCount` says
    /// how many there are in all, `get-members` pages through the rest.
    pub members: Vec<MemberInfo>,
    #[serde(default)]
    pub member_count: usize,
    pub host: Option<String>,
    pub queue: Vec<QueueItem>,
    pub playback: PlaybackState,
    /// Server time this snapshot was taken.
    pub server_time: Millis,
    /// The exact position at `serverTime` (seed 002).
    pub should_start_at: Millis,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Connected {
    pub session_id: String,
    pub resume_token: String,
    pub server_time: Millis,
    /// True when `/ws?resume=` restored an existing session.
    #[serde(default)]
    pub resumed: bool,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct MemberJoined {
    pub member: MemberInfo,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct MemberLeft {
    pub session_id: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct MemberUpdated {
    pub member: MemberInfo,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct HostChanged {
    pub host: Option<String>,
    pub previous: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct QueueUpdated {
    pub queue: Vec<QueueItem>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RoomClosed {
    pub code: String,
    pub reason: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct SettingsUpdated {
    pub settings: RoomSettings,
}

/// Server → client events. Serialized as `{"event": "kebab-name", "data": {...}}`; deserialized
/// (from serde_json only) by [`Push::decode`] on the event name, not by serde's adjacent-tag
/// buffering, which was the largest part of the npm package's wasm.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(tag = "event", content = "data", rename_all = "kebab-case")]
pub enum Push {
    Connected(Connected),
    RoomJoined(Box<RoomJoined>),
    MemberJoined(MemberJoined),
    MemberLeft(MemberLeft),
    MemberUpdated(MemberUpdated),
    HostChanged(HostChanged),
    PlaybackStateUpdate(PlaybackState),
    PlaybackPaused(PlaybackState),
    PlaybackResumed(PlaybackState),
    PlaybackSeeked(PlaybackState),
    SongChanged(PlaybackState),
    QueueUpdated(QueueUpdated),
    SettingsUpdated(SettingsUpdated),
    RoomClosed(RoomClosed),
    Error(ErrorBody),
}

impl Push {
    /// The playback state this push carries, if it is a playback push.
    pub fn playback(&self) -> Option<&PlaybackState> {
        match self {
            Push::PlaybackStateUpdate(p)
            | Push::PlaybackPaused(p)
            | Push::PlaybackResumed(p)
            | Push::PlaybackSeeked(p)
            | Push::SongChanged(p) => Some(p),
            Push::RoomJoined(j) => Some(&j.playback),
            _ => None,
        }
    }

    /// The push's event name.
    pub fn event(&self) -> &'static str {
        match self {
            Push::Connected(_) => "connected",
            Push::RoomJoined(_) => "room-joined",
            Push::MemberJoined(_) => "member-joined",
            Push::MemberLeft(_) => "member-left",
            Push::MemberUpdated(_) => "member-updated",
            Push::HostChanged(_) => "host-changed",
            Push::PlaybackStateUpdate(_) => "playback-state-update",
            Push::PlaybackPaused(_) => "playback-paused",
            Push::PlaybackResumed(_) => "playback-resumed",
            Push::PlaybackSeeked(_) => "playback-seeked",
            Push::SongChanged(_) => "song-changed",
            Push::QueueUpdated(_) => "queue-updated",
            Push::SettingsUpdated(_) => "settings-updated",
            Push::RoomClosed(_) => "room-closed",
            Push::Error(_) => "error",
        }
    }

    /// The push's `data`, serialized (what the frame carries beside the event name).
    pub fn data_raw(&self) -> Result<Box<RawValue>, serde_json::Error> {
        use serde_json::value::to_raw_value as raw;
        match self {
            Push::Connected(d) => raw(d),
            Push::RoomJoined(d) => raw(d),
            Push::MemberJoined(d) => raw(d),
            Push::MemberLeft(d) => raw(d),
            Push::MemberUpdated(d) => raw(d),
            Push::HostChanged(d) => raw(d),
            Push::PlaybackStateUpdate(d)
            | Push::PlaybackPaused(d)
            | Push::PlaybackResumed(d)
            | Push::PlaybackSeeked(d)
            | Push::SongChanged(d) => raw(d),
            Push::QueueUpdated(d) => raw(d),
            Push::SettingsUpdated(d) => raw(d),
            Push::RoomClosed(d) => raw(d),
            Push::Error(d) => raw(d),
        }
    }

    /// Decodes a push from its event name and its `data` as JSON text; `None` for an event this
    /// protocol does not define (a device admin push, or a newer server's).
    pub fn decode(event: &str, data: &str) -> Option<Result<Push, serde_json::Error>> {
        Push::by_event(event, JsonText(data))
    }

    /// The push named `event`, its payload read by `data`: the one table of push names, shared
    /// by serde's decoder ([`Push::decode`]) and the tree codec's ([`Push::from_tree`]).
    pub(crate) fn by_event<P: PushPayload>(event: &str, data: P) -> Option<Result<Push, P::Error>> {
        Some(match event {
            "connected" => data.read().map(Push::Connected),
            "room-joined" => data.read().map(|j| Push::RoomJoined(Box::new(j))),
            "member-joined" => data.read().map(Push::MemberJoined),
            "member-left" => data.read().map(Push::MemberLeft),
            "member-updated" => data.read().map(Push::MemberUpdated),
            "host-changed" => data.read().map(Push::HostChanged),
            "playback-state-update" => data.read().map(Push::PlaybackStateUpdate),
            "playback-paused" => data.read().map(Push::PlaybackPaused),
            "playback-resumed" => data.read().map(Push::PlaybackResumed),
            "playback-seeked" => data.read().map(Push::PlaybackSeeked),
            "song-changed" => data.read().map(Push::SongChanged),
            "queue-updated" => data.read().map(Push::QueueUpdated),
            "settings-updated" => data.read().map(Push::SettingsUpdated),
            "room-closed" => data.read().map(Push::RoomClosed),
            "error" => data.read().map(Push::Error),
            _ => return None,
        })
    }

    /// Serializes the push to its JSON text frame.
    pub fn to_json(&self) -> Result<String, serde_json::Error> {
        serde_json::to_string(self)
    }
}

/// A push's payload, readable as any payload type: JSON text read by serde, or a parsed tree read
/// by the tree codec (`crate::tree`). Only the reader's own path is compiled in (the wasm
/// client never instantiates serde's).
pub(crate) trait PushPayload {
    type Error;
    fn read<T: DeserializeOwned + FromTree>(self) -> Result<T, Self::Error>;
}

/// A payload as JSON text, for serde.
struct JsonText<'a>(&'a str);

impl PushPayload for JsonText<'_> {
    type Error = serde_json::Error;
    fn read<T: DeserializeOwned + FromTree>(self) -> Result<T, serde_json::Error> {
        serde_json::from_str(self.0)
    }
}

/// A push frame as text: `{"event", "data"}` through [`Push::decode`]. Works with serde_json's
/// deserializers only (the payload is captured as a [`RawValue`]).
impl<'de> Deserialize<'de> for Push {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        use serde::de::Error;
        #[derive(Deserialize)]
        struct Frame {
            event: String,
            data: Box<RawValue>,
        }
        let f = Frame::deserialize(d)?;
        match Push::decode(&f.event, f.data.get()) {
            Some(r) => r.map_err(D::Error::custom),
            None => Err(D::Error::custom(format!("unknown push event {:?}", f.event))),
        }
    }
}
