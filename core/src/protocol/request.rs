//! Client → server: the request payloads, the [`Request`] enum generated from one list, and the
//! frame envelope parser.

use crate::prelude::*;

use alloc::borrow::Cow;

use serde::{Deserialize, Serialize};
use serde_json::{Value, value::RawValue};

use super::{ClientFrame, ErrorBody, ErrorCode, RoomSettingsPatch, payload_json};
use crate::{Millis, song::Song};

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

            pub fn to_json(&self, id: Option<u64>) -> Result<String, serde_json::Error> {
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

/// A client frame's JSON text: `{"event", "data"?, "id"?}`. `data` may be any serializable value,
/// including a [`RawValue`] passed through unparsed.
pub fn encode_frame<T: Serialize + ?Sized>(
    event: &str,
    data: Option<&T>,
    id: Option<u64>,
) -> Result<String, serde_json::Error> {
    #[derive(Serialize)]
    struct Frame<'a, T: ?Sized> {
        event: &'a str,
        #[serde(skip_serializing_if = "Option::is_none")]
        data: Option<&'a T>,
        #[serde(skip_serializing_if = "Option::is_none")]
        id: Option<u64>,
    }
    serde_json::to_string(&Frame { event, data, id })
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
        let Envelope { event, data, id } = envelope(text)?;
        Request::parse_json(&event, data.map(RawValue::get)).map(|r| (id, r)).map_err(|e| (id, e))
    }

    /// The payload as a JSON value (`null` for requests without one).
    pub fn data(&self) -> Result<Value, serde_json::Error> {
        Ok(self.to_frame(None)?.data)
    }

    /// This request as a client frame.
    pub fn to_frame(&self, id: Option<u64>) -> Result<ClientFrame, serde_json::Error> {
        serde_json::from_str(&self.to_json(id)?)
    }
}

/// Reads a frame's envelope, its payload left as text.
fn envelope(text: &str) -> Result<Envelope<'_>, (Option<u64>, ErrorBody)> {
    match serde_json::from_str::<Envelope>(text) {
        Ok(f) => Ok(f),
        // Only a bad frame pays for a second parse, to tell bad JSON from a bad envelope and to
        // find the id to reply to.
        Err(e) => Err(match serde_json::from_str::<Value>(text) {
            Err(e) => (None, ErrorBody::new(ErrorCode::BadFrame, format!("invalid JSON: {e}"))),
            Ok(v) => (
                v.get("id").and_then(Value::as_u64),
                ErrorBody::new(ErrorCode::BadFrame, format!("expected {{event, data?, id?}}: {e}")),
            ),
        }),
    }
}

/// Any request a connection may send on `/ws`: the room protocol's, or the device admin
/// protocol's (answered only for an admin token).
#[derive(Debug, Clone, PartialEq)]
pub enum ClientRequest {
    Room(Request),
    Admin(super::AdminRequest),
}

impl ClientRequest {
    /// [`Request::parse_frame`] over both protocols: an admin event is read as an
    /// [`AdminRequest`](super::AdminRequest), anything else as a room request.
    pub fn parse_frame(text: &str) -> Result<(Option<u64>, ClientRequest), (Option<u64>, ErrorBody)> {
        let Envelope { event, data, id } = envelope(text)?;
        let data = data.map(RawValue::get);
        let parsed = if super::AdminRequest::is_admin_event(&event) {
            super::AdminRequest::parse_json(&event, data).map(ClientRequest::Admin)
        } else {
            Request::parse_json(&event, data).map(ClientRequest::Room)
        };
        parsed.map(|r| (id, r)).map_err(|e| (id, e))
    }
}
