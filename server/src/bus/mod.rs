//! Fan-out: how a frame reaches every session subscribed to a topic (a room, later a tenant).
//!
//! The engine publishes a frame serialized **once**; the bus hands each subscriber a pointer to
//! it. [`local::LocalBus`] delivers inside this process; a cluster bus (seed 001's peer
//! protocol, Redis) implements the same trait and also forwards to other servers.

pub mod local;
pub mod outbox;

pub use local::LocalBus;
pub use outbox::{Frame, Outbox};

/// A topic name, e.g. `room:ABC234`.
pub type Topic = str;

/// Topic of a room's broadcasts.
pub fn room_topic(code: &str) -> String {
    format!("room:{code}")
}

/// Publish/subscribe of pre-serialized frames to sessions.
pub trait Bus: Send + Sync + 'static {
    /// Subscribes (or re-subscribes with a new outbox, after a resume) a session.
    fn subscribe(&self, topic: &Topic, session: &str, outbox: Outbox);
    fn unsubscribe(&self, topic: &Topic, session: &str);
    /// Delivers `frame` to every subscriber except `except`; returns how many got it.
    fn publish(&self, topic: &Topic, frame: &Frame, except: Option<&str>) -> usize;
    /// Drops every subscriber of a topic (room closed).
    fn remove_topic(&self, topic: &Topic);
}
