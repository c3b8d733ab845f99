//! The native WebSocket protocol (`/ws`): JSON text frames, documented in `docs/protocol.md`.
//!
//! - Client → server: [`ClientFrame`] `{"event", "data", "id"?}`, parsed into a [`Request`] by
//!   [`Request::parse`], which tells an unknown event ([`ErrorCode::UnknownEvent`]) from a bad
//!   payload ([`ErrorCode::InvalidPayload`]).
//! - Server → client: a [`Reply`] for every frame that carried an `id`, and [`Push`] events.
//!
//! Event names are fixed by existing clients (seed 002): kebab-case, e.g. `pause-playback`.
//! The same types are used by the server, the wasm client and the tests.

use crate::prelude::*;

use alloc::borrow::Cow;

use serde::{Deserialize, Deserializer, Serialize, de::DeserializeOwned};
use serde_json::{Value, value::RawValue};

use crate::{
    Millis,
    clock::PlaybackClock,
    room::{QueueItem, RoomSettingsPatch},
    song::Song,
    tree::FromTree,
};

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
pub struct Reply {
    pub id: u64,
    pub ok: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub data: Option<Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<ErrorBody>,
}

impl Reply {
    pub fn ok(id: u64, data: Value) -> Self {
        Self { id, ok: true, data: Some(data), error: None }
    }
    pub fn err(id: u64, error: ErrorBody) -> Self {
        Self { id, ok: false, data: None, error: Some(error) }
    }
}

// ---------------------------------------------------------------------------------------------
// Requests
// ---------------------------------------------------------------------------------------------

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct TimeSync {
    pub t0: f64,
}

#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct CreateRoom {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub settings: Option<RoomSettingsPatch>,
    /// Display name of the creator in the room.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub member_name: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct JoinRoom {
    pub code: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct LoadSong {
    pub song: Song,
    #[serde(default)]
    pub autoplay: bool,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct SeekPlayback {
    pub position_ms: Millis,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct SetRate {
    pub rate: f64,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct UpdatePlayback {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub song_id: Option<String>,
    pub position_ms: Millis,
    pub is_playing: bool,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct QueueAdd {
    pub song: Song,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct QueueRemove {
    pub item_id: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct QueueMove {
    pub item_id: String,
    pub to_index: usize,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct TransferHost {
    pub session_id: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct SetReady {
    pub ready: bool,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct UpdateSettings {
    pub settings: RoomSettingsPatch,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ReportDrift {
    /// Local player position minus expected position, in ms (positive: ahead).
    pub drift_ms: f64,
}

#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct GetMembers {
    #[serde(default)]
    pub offset: usize,
    /// At most [`MAX_MEMBERS_PAGE`]; default 200.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub limit: Option<usize>,
}

/// Largest page of `get-members`.
pub const MAX_MEMBERS_PAGE: usize = 1000;

/// Declares the requests once: each variant, its payload type (if any) and its wire name give
/// the enum, [`REQUEST_EVENTS`], [`Request::parse_json`], [`Request::event`] and [`Request::to_json`].
macro_rules! requests {
    ($( $variant:ident $( ($payload:ty) )? = $name:literal, )*) => {
        /// A client request, parsed from a [`ClientFrame`].
        #[derive(Debug, Clone, PartialEq)]
        pub enum Request {
            $( $variant $( ($payload) )?, )*
        }

        /// Every request event name, in protocol order.
        pub const REQUEST_EVENTS: &[&str] = &[ $( $name, )* ];

        impl Request {
            /// Interprets `data` (JSON text; `None` reads as `{}`) according to `event`. The one
            /// decoder of request payloads: [`Request::parse`] and [`Request::parse_frame`] call it.
            pub fn parse_json(event: &str, data: Option<&str>) -> Result<Request, ErrorBody> {
                Ok(match event {
                    $( $name => Request::$variant $( (payload_json::<$payload>(event, data)?) )?, )*
                    other => {
                        let shown: String = other.chars().take(64).collect();
                        return Err(ErrorBody::new(ErrorCode::UnknownEvent, format!("unknown event {shown:?}")));
                    }
                })
            }

            /// The wire name of this request.
            pub fn event(&self) -> &'static str {
                match self {
                    $( Request::$variant { .. } => $name, )*
                }
            }

            /// Encodes this request as a client frame's JSON text, `{"event", "data"?, "id"?}`
            /// (no `data` key for requests without a payload).
            /// The request as a frame tree, `{"event", "data"?, "id"?}`: the same shape as
            /// [`Request::to_json`], written through [`crate::tree`] (the wasm client's way).
            pub fn to_tree<T: crate::tree::Tree>(&self, id: Option<u64>) -> T {
                match self {
                    $( $( Request::$variant(d) => crate::tree::frame($name, Some(<$payload as crate::tree::ToTree>::to_tree(d)), id), )? )*
                    #[allow(unreachable_patterns)]
                    _ => crate::tree::frame(self.event(), None, id),
                }
            }

            pub fn to_json(&self, id: Option<u64>) -> String {
                match self {
                    $( $( Request::$variant(d) => encode_frame::<$payload>($name, Some(d), id), )? )*
                    #[allow(unreachable_patterns)]
                    _ => encode_frame::<()>(self.event(), None, id),
                }
            }
        }
    };
}

requests! {
    TimeSync(TimeSync) = "time-sync",
    CreateRoom(CreateRoom) = "create-room",
    JoinRoom(JoinRoom) = "join-room",
    LeaveRoom = "leave-room",
    LoadSong(LoadSong) = "load-song",
    PausePlayback = "pause-playback",
    ResumePlayback = "resume-playback",
    SeekPlayback(SeekPlayback) = "seek-playback",
    SetRate(SetRate) = "set-rate",
    UpdatePlayback(UpdatePlayback) = "update-playback",
    GetPlaybackState = "get-playback-state",
    QueueAdd(QueueAdd) = "queue-add",
    QueueRemove(QueueRemove) = "queue-remove",
    QueueMove(QueueMove) = "queue-move",
    PlayNext = "play-next",
    TransferHost(TransferHost) = "transfer-host",
    SetReady(SetReady) = "set-ready",
    UpdateSettings(UpdateSettings) = "update-settings",
    ReportDrift(ReportDrift) = "report-drift",
    GetMembers(GetMembers) = "get-members",
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
fn payload_json<T: DeserializeOwned>(event: &str, data: Option<&str>) -> Result<T, ErrorBody> {
    serde_json::from_str(data.unwrap_or("{}"))
        .map_err(|e| ErrorBody::new(ErrorCode::InvalidPayload, format!("{event}: {e}")))
}

/// A client frame's JSON text: `{"event", "data"?, "id"?}`. `data` may be any serializable value,
/// including a [`RawValue`] passed through unparsed.
pub fn encode_frame<T: Serialize + ?Sized>(event: &str, data: Option<&T>, id: Option<u64>) -> String {
    #[derive(Serialize)]
    struct Frame<'a, T: ?Sized> {
        event: &'a str,
        #[serde(skip_serializing_if = "Option::is_none")]
        data: Option<&'a T>,
        #[serde(skip_serializing_if = "Option::is_none")]
        id: Option<u64>,
    }
    // Plain structs with string keys: serialization cannot fail.
    serde_json::to_string(&Frame { event, data, id }).unwrap_or_default()
}

/// The envelope of a client frame with its payload left as text.
#[derive(Deserialize)]
struct Envelope<'a> {
    #[serde(borrow)]
    event: Cow<'a, str>,
    #[serde(default, borrow)]
    data: Option<&'a RawValue>,
    #[serde(default)]
    id: Option<u64>,
}

impl Request {
    /// Interprets a `Value` payload (the Socket.IO edge's) according to `event`, through
    /// [`Request::parse_json`].
    pub fn parse(event: &str, data: Value) -> Result<Request, ErrorBody> {
        if data.is_null() {
            return Request::parse_json(event, None);
        }
        Request::parse_json(event, Some(&data.to_string()))
    }

    /// Parses a whole text frame. On failure returns the frame's `id` (if it could be read) with
    /// the error, so the caller can reply instead of pushing.
    pub fn parse_frame(text: &str) -> Result<(Option<u64>, Request), (Option<u64>, ErrorBody)> {
        match serde_json::from_str::<Envelope>(text) {
            Ok(f) => Request::parse_json(&f.event, f.data.map(RawValue::get)).map(|r| (f.id, r)).map_err(|e| (f.id, e)),
            // Only a bad frame pays for a second parse, to tell bad JSON from a bad envelope
            // and to find the id to reply to.
            Err(e) => Err(match serde_json::from_str::<Value>(text) {
                Err(e) => (None, ErrorBody::new(ErrorCode::BadFrame, format!("invalid JSON: {e}"))),
                Ok(v) => (
                    v.get("id").and_then(Value::as_u64),
                    ErrorBody::new(ErrorCode::BadFrame, format!("expected {{event, data?, id?}}: {e}")),
                ),
            }),
        }
    }

    /// The payload as a JSON value (`null` for requests without one).
    pub fn data(&self) -> Value {
        self.to_frame(None).data
    }

    /// This request as a client frame.
    pub fn to_frame(&self, id: Option<u64>) -> ClientFrame {
        // Same bytes as `to_json`; read back, it cannot fail.
        serde_json::from_str(&self.to_json(id)).unwrap_or_else(|_| ClientFrame {
            event: self.event().to_owned(),
            data: Value::Null,
            id,
        })
    }
}

// ---------------------------------------------------------------------------------------------
// Pushes and reply payloads
// ---------------------------------------------------------------------------------------------

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
    pub settings: crate::room::RoomSettings,
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
    pub settings: crate::room::RoomSettings,
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
    pub fn to_json(&self) -> String {
        // Every push is a tree of plain structs with string keys: serialization cannot fail.
        serde_json::to_string(self).unwrap_or_else(|_| String::from("{\"event\":\"error\"}"))
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

/// Reply data of `time-sync`: the client's `t0`, server receive time `t1`, server send time `t2`.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct TimeSyncReply {
    pub t0: f64,
    pub t1: f64,
    pub t2: f64,
}
