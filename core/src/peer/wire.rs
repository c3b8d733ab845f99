//! Seed 001's messages: one UTF-8 JSON object per line, the envelope `{type, origin, payload}`
//! (`docs/peers.md` has an example line of every type).
//!
//! Decoding tells apart a line that is not a JSON object, an unknown `type` (a newer peer's, or
//! an extension this side does not speak) and a known type whose payload misses fields, so the
//! link can count each and go on.

use crate::prelude::*;

use serde::{Deserialize, Serialize, de::DeserializeOwned};
use serde_json::{Map, Value};

/// Default longest line accepted (1 MiB); a longer one is dropped, the link stays up.
pub const MAX_LINE: usize = 1024 * 1024;

/// Capability (in HELLO's `capabilities`) of a peer that sends and expects `PING` lines.
pub const CAP_HEARTBEAT: &str = "heartbeat";
/// Capability of a Unisono peer (it takes Unisono's extension types).
pub const CAP_UNISONO: &str = "unisono";

/// A session as peers describe it (`SYNC_STATE`, `CLIENT_CONNECTED`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PeerSession {
    pub server_id: String,
    pub session_id: String,
    /// The user's id: a number in the seed (Unisono sends a token's subject as a number when
    /// it is one), else a string.
    pub cliente_id: Value,
    pub usuario: String,
    pub ip: String,
    /// The channels it is in: numbers in the seed, room codes from Unisono.
    #[serde(default)]
    pub canales: Vec<Value>,
}

/// HELLO's payload: the seed's `serverId`, and what Unisono adds (a peer that does not know
/// them ignores them).
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Hello {
    pub server_id: String,
    /// The shared secret (`--peer-secret`), when one is configured.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub secret: Option<String>,
    /// Extensions this side speaks ([`CAP_HEARTBEAT`], [`CAP_UNISONO`]).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub capabilities: Vec<String>,
}

/// One message between servers.
#[derive(Debug, Clone, PartialEq)]
pub enum PeerMessage {
    Hello(Hello),
    SyncState {
        sessions: Vec<PeerSession>,
    },
    ClientConnected(PeerSession),
    ClientDisconnected {
        session_id: String,
        cliente_id: Value,
    },
    /// A session joined channel `canal_id` (`action` is `JOIN` in the seed).
    ChannelMembership {
        session_id: String,
        cliente_id: Value,
        canal_id: Value,
        action: String,
    },
    /// For every session of user `user_id`.
    DirectMessage {
        user_id: Value,
        message: Value,
    },
    /// For every member of channel `canal_id`.
    ChannelMessage {
        canal_id: Value,
        message: Value,
    },
    /// For session `session_id`.
    SessionMessage {
        session_id: String,
        message: Value,
    },
    /// For every session.
    Broadcast {
        message: Value,
    },
    /// Extension [`CAP_HEARTBEAT`]: a link's sign of life, sent only to a peer that announced it.
    Ping,
}

impl PeerMessage {
    /// The envelope's `type`.
    pub fn kind(&self) -> &'static str {
        match self {
            PeerMessage::Hello(_) => "HELLO",
            PeerMessage::SyncState { .. } => "SYNC_STATE",
            PeerMessage::ClientConnected(_) => "CLIENT_CONNECTED",
            PeerMessage::ClientDisconnected { .. } => "CLIENT_DISCONNECTED",
            PeerMessage::ChannelMembership { .. } => "CHANNEL_MEMBERSHIP",
            PeerMessage::DirectMessage { .. } => "DIRECT_MESSAGE",
            PeerMessage::ChannelMessage { .. } => "CHANNEL_MESSAGE",
            PeerMessage::SessionMessage { .. } => "SESSION_MESSAGE",
            PeerMessage::Broadcast { .. } => "BROADCAST",
            PeerMessage::Ping => "PING",
        }
    }

    /// Whether it is an extension (sent only to a peer that announced it).
    pub fn is_extension(&self) -> bool {
        matches!(self, PeerMessage::Ping)
    }
}

/// Why a line was not taken.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum PeerError {
    #[error("a line of {0} bytes, over the limit")]
    TooLong(usize),
    #[error("not a JSON envelope {{type, origin, payload}}: {0}")]
    BadJson(String),
    #[error("unknown message type {0:?}")]
    UnknownType(String),
    #[error("{kind} with a bad payload: {reason}")]
    BadPayload { kind: String, reason: String },
}

impl PeerError {
    /// A short label for counting (`/metrics`).
    pub fn label(&self) -> &'static str {
        match self {
            PeerError::TooLong(_) => "too_long",
            PeerError::BadJson(_) => "bad_json",
            PeerError::UnknownType(_) => "unknown_type",
            PeerError::BadPayload { .. } => "bad_payload",
        }
    }
}

#[derive(Deserialize)]
struct Envelope {
    #[serde(rename = "type")]
    kind: String,
    #[serde(default)]
    origin: String,
    #[serde(default)]
    payload: Value,
}

#[derive(Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
struct Sync {
    sessions: Vec<PeerSession>,
}

#[derive(Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
struct Disconnected {
    session_id: String,
    cliente_id: Value,
}

#[derive(Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
struct Membership {
    session_id: String,
    cliente_id: Value,
    canal_id: Value,
    #[serde(default = "join")]
    action: String,
}

fn join() -> String {
    "JOIN".into()
}

#[derive(Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
struct Direct {
    user_id: Value,
    message: Value,
}

#[derive(Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
struct Channel {
    canal_id: Value,
    message: Value,
}

#[derive(Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
struct Session {
    session_id: String,
    message: Value,
}

#[derive(Serialize, Deserialize)]
struct Broadcast {
    message: Value,
}

fn payload<T: DeserializeOwned>(kind: &str, v: Value) -> Result<T, PeerError> {
    serde_json::from_value(v).map_err(|e| PeerError::BadPayload { kind: kind.into(), reason: e.to_string() })
}

/// Decodes one line (without its newline): the sender's `origin` and the message.
pub fn decode_line(line: &str, max: usize) -> Result<(String, PeerMessage), PeerError> {
    if line.len() > max {
        return Err(PeerError::TooLong(line.len()));
    }
    let env: Envelope = serde_json::from_str(line).map_err(|e| PeerError::BadJson(e.to_string()))?;
    let k = env.kind.as_str();
    let p = env.payload;
    let msg = match k {
        "HELLO" => PeerMessage::Hello(payload(k, p)?),
        "SYNC_STATE" => PeerMessage::SyncState { sessions: payload::<Sync>(k, p)?.sessions },
        "CLIENT_CONNECTED" => PeerMessage::ClientConnected(payload(k, p)?),
        "CLIENT_DISCONNECTED" => {
            let d: Disconnected = payload(k, p)?;
            PeerMessage::ClientDisconnected { session_id: d.session_id, cliente_id: d.cliente_id }
        }
        "CHANNEL_MEMBERSHIP" => {
            let m: Membership = payload(k, p)?;
            PeerMessage::ChannelMembership {
                session_id: m.session_id,
                cliente_id: m.cliente_id,
                canal_id: m.canal_id,
                action: m.action,
            }
        }
        "DIRECT_MESSAGE" => {
            let d: Direct = payload(k, p)?;
            PeerMessage::DirectMessage { user_id: d.user_id, message: d.message }
        }
        "CHANNEL_MESSAGE" => {
            let c: Channel = payload(k, p)?;
            PeerMessage::ChannelMessage { canal_id: c.canal_id, message: c.message }
        }
        "SESSION_MESSAGE" => {
            let s: Session = payload(k, p)?;
            PeerMessage::SessionMessage { session_id: s.session_id, message: s.message }
        }
        "BROADCAST" => PeerMessage::Broadcast { message: payload::<Broadcast>(k, p)?.message },
        "PING" => PeerMessage::Ping,
        other => return Err(PeerError::UnknownType(other.into())),
    };
    Ok((env.origin, msg))
}

/// The line (without its newline) that carries `msg` from `origin`.
pub fn encode_line(origin: &str, msg: &PeerMessage) -> String {
    fn v<T: Serialize>(t: &T) -> Value {
        serde_json::to_value(t).unwrap_or(Value::Null)
    }
    let payload = match msg {
        PeerMessage::Hello(h) => v(h),
        PeerMessage::SyncState { sessions } => v(&Sync { sessions: sessions.clone() }),
        PeerMessage::ClientConnected(s) => v(s),
        PeerMessage::ClientDisconnected { session_id, cliente_id } => {
            v(&Disconnected { session_id: session_id.clone(), cliente_id: cliente_id.clone() })
        }
        PeerMessage::ChannelMembership { session_id, cliente_id, canal_id, action } => v(&Membership {
            session_id: session_id.clone(),
            cliente_id: cliente_id.clone(),
            canal_id: canal_id.clone(),
            action: action.clone(),
        }),
        PeerMessage::DirectMessage { user_id, message } => {
            v(&Direct { user_id: user_id.clone(), message: message.clone() })
        }
        PeerMessage::ChannelMessage { canal_id, message } => {
            v(&Channel { canal_id: canal_id.clone(), message: message.clone() })
        }
        PeerMessage::SessionMessage { session_id, message } => {
            v(&Session { session_id: session_id.clone(), message: message.clone() })
        }
        PeerMessage::Broadcast { message } => v(&Broadcast { message: message.clone() }),
        PeerMessage::Ping => Value::Object(Map::new()),
    };
    let mut env = Map::new();
    env.insert("type".into(), Value::String(msg.kind().into()));
    env.insert("origin".into(), Value::String(origin.into()));
    env.insert("payload".into(), payload);
    Value::Object(env).to_string()
}

/// The room a channel id names: a string as it is, a number by its decimal form.
pub fn channel_name(canal_id: &Value) -> Option<String> {
    match canal_id {
        Value::String(s) if !s.is_empty() => Some(s.clone()),
        Value::Number(n) => Some(n.to_string()),
        _ => None,
    }
}

/// A user id as peers write it: a number when `sub` is one, else the string.
pub fn user_id(sub: &str) -> Value {
    match sub.parse::<u64>() {
        Ok(n) if n.to_string() == sub => Value::from(n),
        _ => Value::String(sub.into()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    /// Every example of seed 001, as its lines would be written.
    fn seed_examples() -> Vec<Value> {
        let session = json!({ "serverId": "srv-a", "sessionId": "0c6f4e25", "clienteId": 12, "usuario": "carlos", "ip": "192.168.1.10", "canales": [3, 8] });
        vec![
            json!({ "type": "HELLO", "origin": "srv-a", "payload": { "serverId": "srv-a" } }),
            json!({ "type": "SYNC_STATE", "origin": "srv-a", "payload": { "sessions": [session] } }),
            json!({ "type": "CLIENT_CONNECTED", "origin": "srv-a", "payload": session }),
            json!({ "type": "CLIENT_DISCONNECTED", "origin": "srv-a", "payload": { "sessionId": "ce9f", "clienteId": 12 } }),
            json!({ "type": "CHANNEL_MEMBERSHIP", "origin": "srv-a", "payload": { "sessionId": "ce9f", "clienteId": 12, "canalId": 3, "action": "JOIN" } }),
            json!({ "type": "DIRECT_MESSAGE", "origin": "srv-a", "payload": { "userId": 42, "message": { "command": "EVENT", "payload": { "evento": "NEW_MESSAGE", "mensajeId": 981, "contenido": "hola" } } } }),
            json!({ "type": "CHANNEL_MESSAGE", "origin": "srv-a", "payload": { "canalId": 3, "message": { "command": "EVENT" } } }),
            json!({ "type": "SESSION_MESSAGE", "origin": "srv-a", "payload": { "sessionId": "ce9f", "message": { "command": "EVENT", "payload": { "tipo": "ACK" } } } }),
            json!({ "type": "BROADCAST", "origin": "srv-a", "payload": { "message": { "command": "EVENT", "payload": { "tipo": "SERVER_ALERT" } } } }),
        ]
    }

    #[test]
    fn every_seed_example_decodes_and_encodes_to_the_same_json() {
        for ex in seed_examples() {
            let line = ex.to_string();
            let (origin, msg) = decode_line(&line, MAX_LINE).unwrap_or_else(|e| panic!("{line}: {e}"));
            assert_eq!(origin, "srv-a");
            assert_eq!(msg.kind(), ex["type"]);
            let back: Value = serde_json::from_str(&encode_line("srv-a", &msg)).expect("json");
            assert_eq!(back, ex, "round trip of {}", ex["type"]);
        }
    }

    #[test]
    fn bad_lines_say_why() {
        assert!(matches!(decode_line("not json", MAX_LINE), Err(PeerError::BadJson(_))));
        assert!(matches!(decode_line("[1,2]", MAX_LINE), Err(PeerError::BadJson(_))));
        let unknown = json!({ "type": "GOSSIP", "origin": "x", "payload": {} }).to_string();
        assert_eq!(decode_line(&unknown, MAX_LINE), Err(PeerError::UnknownType("GOSSIP".into())));
        let missing = json!({ "type": "DIRECT_MESSAGE", "origin": "x", "payload": { "userId": 1 } }).to_string();
        assert!(matches!(decode_line(&missing, MAX_LINE), Err(PeerError::BadPayload { .. })));
        assert_eq!(decode_line(&"x".repeat(11), 10), Err(PeerError::TooLong(11)));
    }

    #[test]
    fn channels_and_users_map_as_documented() {
        assert_eq!(channel_name(&json!(3)).as_deref(), Some("3"));
        assert_eq!(channel_name(&json!("K7QX4M")).as_deref(), Some("K7QX4M"));
        assert_eq!(channel_name(&json!(null)), None);
        assert_eq!(user_id("42"), json!(42));
        assert_eq!(user_id("042"), json!("042"));
        assert_eq!(user_id("alice"), json!("alice"));
    }
}
