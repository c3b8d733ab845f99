//! The client side of Unisono's `/ws` protocol, as much as the benchmarks need: connect and
//! await `connected`, send a request and await its reply, and recognise `playback-seeked`
//! pushes cheaply (most frames a member receives during setup are `member-joined`, which are
//! skipped by looking at the event name only).
//!
//! Latency is carried in the pushes themselves: a host seeks to `positionMs` = its send time in
//! ms since the run's epoch `t0` (µs precision), and the server echoes that position in the
//! `playback-seeked` push, so the receiver computes `arrival − send` without any lookup.

use std::{borrow::Cow, time::Duration};

use anyhow::{Context, Result, anyhow, bail};
use futures_util::{SinkExt, StreamExt};
use serde::Deserialize;
use serde_json::{Value, json};
use tokio::net::TcpStream;
use tokio_tungstenite::{
    WebSocketStream,
    tungstenite::{Message, protocol::WebSocketConfig},
};

use crate::sys::now_us;

/// One client connection.
pub type Ws = WebSocketStream<TcpStream>;

/// Song duration: the longest the server accepts, so positions (send times) are never clamped.
pub const SONG_DURATION_MS: f64 = 604_800_000.0;
/// How long setup steps (connect, a request) may take.
const SETUP_TIMEOUT: Duration = Duration::from_secs(60);

/// Small buffers keep a client connection at a few KiB (the defaults are 128 KiB each).
fn ws_config() -> WebSocketConfig {
    WebSocketConfig::default().read_buffer_size(4096).write_buffer_size(0)
}

/// The parts of a server frame the benchmarks look at; everything else is skipped.
#[derive(Debug, Deserialize)]
pub struct Incoming<'a> {
    #[serde(borrow, default)]
    pub event: Option<Cow<'a, str>>,
    #[serde(default)]
    pub id: Option<u64>,
    #[serde(default)]
    pub ok: Option<bool>,
    #[serde(default)]
    pub data: Option<Data>,
    #[serde(default)]
    pub error: Option<ErrorBody>,
}

/// Fields of a push's or reply's `data` that some scenario needs.
#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Data {
    /// `create-room` reply.
    pub code: Option<String>,
    /// `playback-seeked` push.
    pub position_ms: Option<f64>,
}

#[derive(Debug, Deserialize)]
pub struct ErrorBody {
    pub code: String,
    #[serde(default)]
    pub message: String,
}

impl std::fmt::Display for ErrorBody {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {}", self.code, self.message)
    }
}

/// The event name of a push, read from the frame's first bytes (the server writes `event`
/// first). `None` for replies, or if the frame is laid out differently.
fn leading_event(text: &str) -> Option<&str> {
    let rest = text.strip_prefix("{\"event\":\"")?;
    rest.split_once('"').map(|(name, _)| name)
}

/// What a frame means to a benchmark client.
pub enum Frame {
    /// A `playback-seeked` push for the seek sent at `key` µs after `t0`.
    Seeked { key: u64 },
    /// The reply to request `id`.
    Reply { id: u64, result: Result<Data, ErrorBody> },
    /// Anything else (other pushes).
    Other,
    /// Not understood.
    Malformed,
}

/// Classifies a text frame, parsing it only if it can matter.
pub fn classify(text: &str) -> Frame {
    if let Some(event) = leading_event(text)
        && event != "playback-seeked"
    {
        return Frame::Other;
    }
    let Ok(msg) = serde_json::from_str::<Incoming>(text) else { return Frame::Malformed };
    match (msg.event.as_deref(), msg.id, msg.ok) {
        (Some("playback-seeked"), _, _) => match msg.data.and_then(|d| d.position_ms) {
            Some(ms) if ms.is_finite() && ms >= 0.0 => Frame::Seeked { key: (ms * 1000.0).round() as u64 },
            _ => Frame::Malformed,
        },
        (Some(_), _, _) => Frame::Other,
        (None, Some(id), Some(true)) => Frame::Reply { id, result: Ok(msg.data.unwrap_or_default()) },
        (None, Some(id), Some(false)) => Frame::Reply {
            id,
            result: Err(msg.error.unwrap_or(ErrorBody { code: "?".into(), message: "no error body".into() })),
        },
        _ => Frame::Malformed,
    }
}

/// `host:port` of a `ws://host:port/path` URL.
fn authority(url: &str) -> Result<&str> {
    let rest = url.strip_prefix("ws://").with_context(|| format!("{url}: only ws:// URLs are supported"))?;
    Ok(rest.split('/').next().unwrap_or(rest))
}

/// Opens a connection and waits for the `connected` push.
pub async fn connect(url: &str) -> Result<Ws> {
    let fut = async {
        let tcp = TcpStream::connect(authority(url)?).await.context("tcp connect")?;
        tcp.set_nodelay(true)?;
        let (mut ws, _) = tokio_tungstenite::client_async_with_config(url, tcp, Some(ws_config()))
            .await
            .context("websocket handshake")?;
        loop {
            match ws.next().await {
                Some(Ok(Message::Text(t))) if leading_event(&t) == Some("connected") => return Ok(ws),
                Some(Ok(Message::Close(f))) => bail!("closed before `connected`: {f:?}"),
                Some(Ok(_)) => {}
                Some(Err(e)) => bail!("read before `connected`: {e}"),
                None => bail!("connection ended before `connected`"),
            }
        }
    };
    tokio::time::timeout(SETUP_TIMEOUT, fut).await.map_err(|_| anyhow!("connect timed out"))?
}

/// A request frame.
pub fn request_frame(event: &str, data: &Value, id: u64) -> String {
    json!({ "event": event, "data": data, "id": id }).to_string()
}

/// Sends a request and waits for its reply, skipping pushes. Fails on an error reply.
pub async fn request(ws: &mut Ws, id: u64, event: &str, data: Value) -> Result<Data> {
    let fut = async {
        ws.send(Message::text(request_frame(event, &data, id))).await.with_context(|| format!("send {event}"))?;
        loop {
            match ws.next().await {
                Some(Ok(Message::Text(t))) => {
                    if let Frame::Reply { id: got, result } = classify(&t)
                        && got == id
                    {
                        return result.map_err(|e| anyhow!("{event}: {e}"));
                    }
                }
                Some(Ok(Message::Close(f))) => bail!("closed while waiting for {event}: {f:?}"),
                Some(Ok(_)) => {}
                Some(Err(e)) => bail!("read while waiting for {event}: {e}"),
                None => bail!("connection ended while waiting for {event}"),
            }
        }
    };
    tokio::time::timeout(SETUP_TIMEOUT, fut).await.map_err(|_| anyhow!("{event} timed out"))?
}

/// Creates a room with a loaded, paused song (so seeks are never clamped); returns its code.
pub async fn create_room(ws: &mut Ws, name: &str) -> Result<String> {
    let code = request(ws, 1, "create-room", json!({ "name": name, "memberName": "host" }))
        .await?
        .code
        .context("create-room reply has no code")?;
    let song = json!({
        "id": "bench", "title": "Benchmark", "provider": "url",
        "url": "https://example.invalid/bench.mp3", "durationMs": SONG_DURATION_MS,
    });
    request(ws, 2, "load-song", json!({ "song": song, "autoplay": false })).await?;
    Ok(code)
}

/// A `seek-playback` frame whose position encodes the send time; returns it with its key.
pub fn seek_frame(t0_us: u64, id: u64) -> (String, u64) {
    let key = now_us().saturating_sub(t0_us);
    let frame = request_frame("seek-playback", &json!({ "positionMs": key as f64 / 1000.0 }), id);
    (frame, key)
}

/// Describes how a connection ended.
pub fn close_reason(msg: Option<Result<Message, tokio_tungstenite::tungstenite::Error>>) -> String {
    match msg {
        Some(Ok(Message::Close(Some(f)))) => format!("close {} {}", u16::from(f.code), f.reason),
        Some(Ok(Message::Close(None))) => "close (no code)".into(),
        Some(Err(e)) => format!("error: {e}"),
        _ => "ended".into(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn classifies_frames() {
        let seeked = r#"{"event":"playback-seeked","data":{"song":null,"positionMs":1234.567,"rev":3}}"#;
        assert!(matches!(classify(seeked), Frame::Seeked { key: 1_234_567 }));
        assert!(matches!(classify(r#"{"event":"member-joined","data":{}}"#), Frame::Other));
        let ok = r#"{"id":7,"ok":true,"data":{"code":"K7QX4M","room":{}}}"#;
        assert!(matches!(classify(ok), Frame::Reply { id: 7, result: Ok(Data { code: Some(_), .. }) }));
        let err = r#"{"id":8,"ok":false,"error":{"code":"NOT_HOST","message":"no"}}"#;
        assert!(matches!(classify(err), Frame::Reply { id: 8, result: Err(_) }));
        assert!(matches!(classify("not json"), Frame::Malformed));
        assert!(matches!(classify(r#"{"event":"playback-seeked","data":{"positionMs":-1}}"#), Frame::Malformed));
    }

    #[test]
    fn seek_positions_round_trip() {
        let (frame, key) = seek_frame(0, 5);
        let v: Value = serde_json::from_str(&frame).unwrap_or_default();
        let ms = v["data"]["positionMs"].as_f64().unwrap_or(-1.0);
        assert_eq!((ms * 1000.0).round() as u64, key);
    }
}
