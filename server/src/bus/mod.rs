//! Fan-out: how a message reaches every session subscribed to a topic.
//!
//! Topics are a room's broadcasts ([`room_topic`]) and one session's own messages
//! ([`session_topic`]): a room reaches its members, and the engine reaches one session, the same
//! way, so a session on another node is reached like a local one once a cluster bus carries the
//! topic. The engine publishes a message serialized **once** ([`Outgoing`]); the bus hands each
//! subscriber a pointer to it. [`local::LocalBus`] delivers inside this process; a cluster bus
//! (Redis, seed 001's peer links) implements the same trait and also carries topics between
//! nodes. `publish` does not wait for, or count, deliveries elsewhere.

pub mod local;
pub mod outbox;
pub mod outgoing;
pub mod redis;

pub use local::LocalBus;
pub use outbox::{FrameWriter, Outbox};
pub use outgoing::{EncodeError, Outgoing};

/// A topic name, e.g. `room:ABC234`.
pub type Topic = str;

/// Topic of a room's broadcasts. Topics name their tenant, so that a cluster bus carries no
/// tenant's messages on another's channel.
pub fn room_topic(tenant: &str, code: &str) -> String {
    format!("room:{tenant}:{code}")
}

/// Topic of one session's own messages (its `room-joined`, presence for a host, publishes).
pub fn session_topic(tenant: &str, session: &str) -> String {
    format!("session:{tenant}:{session}")
}

/// Publish/subscribe of pre-serialized messages to sessions.
pub trait Bus: Send + Sync + 'static {
    /// Subscribes (or re-subscribes with a new outbox, after a resume) a session; resolves once
    /// every message published on the topic afterwards will reach it.
    fn subscribe(&self, topic: &Topic, session: &str, outbox: Outbox) -> futures_util::future::BoxFuture<'static, ()>;
    fn unsubscribe(&self, topic: &Topic, session: &str);
    /// Makes a session's own topic ([`session_topic`]) reach it from other nodes. The engine
    /// delivers to this node's sessions itself, from its session registry, and publishes on the
    /// topic only for a session that is not here: a bus that delivers only locally keeps
    /// nothing per session (the default), a cluster bus subscribes the topic.
    fn subscribe_session(
        &self,
        topic: &Topic,
        session: &str,
        outbox: Outbox,
    ) -> futures_util::future::BoxFuture<'static, ()> {
        let _ = (topic, session, outbox);
        Box::pin(std::future::ready(()))
    }
    fn unsubscribe_session(&self, topic: &Topic, session: &str) {
        let _ = (topic, session);
    }
    /// Delivers `msg` to every subscriber except `except`, without waiting for anyone.
    fn publish(&self, topic: &Topic, msg: &Outgoing, except: Option<&str>);
    /// Drops every subscriber of a topic (room closed).
    fn remove_topic(&self, topic: &Topic);
}
