//! [`Outgoing`]: one message for sessions, edge-neutral and serialized once.
//!
//! An event is its name and its data as JSON text ([`RawValue`]), serialized once by whoever
//! published it and shared by every recipient (an `Arc`). Each edge derives its own bytes from
//! those parts, at most once per message, however many sessions get it:
//! - `/ws` writes `{"event": NAME, "data": DATA}` (built with the message), encoded as a
//!   WebSocket frame once (server frames are unmasked, so every member gets the same bytes);
//! - Socket.IO emits event NAME with DATA passed through as raw JSON (no parse per recipient;
//!   socketioxide itself still encodes its packet per socket, see docs/ARCHITECTURE.md).
//!
//! The `/ws` edge also queues its replies (`{"id", "ok", …}`), which are not events: those are
//! [`Outgoing::ws_text`] and never reach another edge.

use std::{
    borrow::Cow,
    fmt,
    sync::{Arc, OnceLock},
};

use bytes::Bytes;
use serde::Serialize;
use serde_json::value::RawValue;
use tokio_tungstenite::tungstenite::Utf8Bytes;
use unisono_core::protocol::{DevicePush, Push};

/// A message for sessions; cheap to clone.
#[derive(Clone)]
pub struct Outgoing(Arc<Inner>);

struct Inner {
    body: Body,
    /// The `/ws` text.
    text: Utf8Bytes,
    /// The `/ws` WebSocket frame, encoded once.
    encoded: OnceLock<Bytes>,
}

enum Body {
    Event {
        name: Cow<'static, str>,
        data: Box<RawValue>,
    },
    /// A `/ws` frame that is not an event (a reply).
    WsText,
}

/// A message could not be serialized. The types the engine sends always serialize; this is a
/// bug, reported loudly by the caller rather than replaced by an empty frame.
#[derive(Debug, thiserror::Error)]
#[error("serializing {what}: {source}")]
pub struct EncodeError {
    pub what: &'static str,
    #[source]
    pub source: serde_json::Error,
}

impl Outgoing {
    /// Event `name` with `data` already serialized.
    pub fn event(name: impl Into<Cow<'static, str>>, data: Box<RawValue>) -> Result<Outgoing, EncodeError> {
        let name = name.into();
        #[derive(Serialize)]
        struct Frame<'a> {
            event: &'a str,
            data: &'a RawValue,
        }
        let text = serde_json::to_string(&Frame { event: &name, data: &data })
            .map_err(|source| EncodeError { what: "an event frame", source })?;
        Ok(Outgoing::new(Body::Event { name, data }, text))
    }

    /// Event `name` with `data` serialized now.
    pub fn serialize(name: impl Into<Cow<'static, str>>, data: &impl Serialize) -> Result<Outgoing, EncodeError> {
        let data = serde_json::value::to_raw_value(data).map_err(|source| EncodeError { what: "an event", source })?;
        Outgoing::event(name, data)
    }

    /// A room protocol push.
    pub fn push(push: &Push) -> Result<Outgoing, EncodeError> {
        let data = push.data_raw().map_err(|source| EncodeError { what: push.event(), source })?;
        Outgoing::event(push.event(), data)
    }

    /// A device protocol push.
    pub fn device(push: &DevicePush) -> Result<Outgoing, EncodeError> {
        let data = push.data_raw().map_err(|source| EncodeError { what: push.event(), source })?;
        Outgoing::event(push.event(), data)
    }

    /// An event from its `/ws` text, `{"event": …, "data": …}` (what the cluster bus carries):
    /// the text is kept as it is, so every node delivers the publisher's bytes.
    pub fn from_text(text: String) -> Result<Outgoing, serde_json::Error> {
        #[derive(serde::Deserialize)]
        struct Frame<'a> {
            #[serde(borrow)]
            event: Cow<'a, str>,
            #[serde(borrow)]
            data: &'a RawValue,
        }
        let f: Frame = serde_json::from_str(&text)?;
        let body = Body::Event { name: Cow::Owned(f.event.into_owned()), data: f.data.to_owned() };
        Ok(Outgoing::new(body, text))
    }

    /// A `/ws`-only text frame (a reply): no other edge receives these.
    pub fn ws_text(text: impl Into<String>) -> Outgoing {
        Outgoing::new(Body::WsText, text.into())
    }

    fn new(body: Body, text: String) -> Outgoing {
        Outgoing(Arc::new(Inner { body, text: Utf8Bytes::from(text), encoded: OnceLock::new() }))
    }

    /// The event's name and data, or `None` for a `/ws`-only frame.
    pub fn as_event(&self) -> Option<(&str, &RawValue)> {
        match &self.0.body {
            Body::Event { name, data } => Some((name, data)),
            Body::WsText => None,
        }
    }

    /// The `/ws` text: `{"event": …, "data": …}` for an event.
    pub fn as_text(&self) -> &Utf8Bytes {
        &self.0.text
    }

    /// The `/ws` frame encoded by `encode`, computed once for every session it is delivered to.
    pub fn encoded(&self, encode: impl FnOnce(&Utf8Bytes) -> Bytes) -> &Bytes {
        self.0.encoded.get_or_init(|| encode(self.as_text()))
    }
}

impl fmt::Debug for Outgoing {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_tuple("Outgoing").field(&self.as_text().as_str()).finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use unisono_core::protocol::{MemberLeft, Push};

    #[test]
    fn an_event_is_the_same_json_as_the_push_and_its_parts_are_kept() {
        let push = Push::MemberLeft(MemberLeft { session_id: "s\"1".into() });
        let o = Outgoing::push(&push).expect("serializes");
        let text: serde_json::Value = serde_json::from_str(o.as_text()).expect("json");
        assert_eq!(text, serde_json::to_value(&push).expect("json"));
        let (name, data) = o.as_event().expect("an event");
        assert_eq!((name, data.get()), ("member-left", r#"{"sessionId":"s\"1"}"#));
        assert!(Outgoing::ws_text("{}").as_event().is_none());
    }
}
