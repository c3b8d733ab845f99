//! What peer links (seed 001, `crate::peers`) need of the engine: a [`SessionWatcher`] told
//! when a session connects, joins a room and goes, the sessions there are now
//! ([`Engine::seen_sessions`]), and deliveries to this node's sessions by user, room, session
//! or tenant.

use std::net::IpAddr;

use serde_json::Value;

use super::Engine;
use crate::bus::{Outgoing, room_topic};

/// A local session as peers see it.
#[derive(Debug, Clone)]
pub struct SeenSession {
    pub session: String,
    /// Its token's subject.
    pub sub: String,
    pub ip: Option<IpAddr>,
    /// The room it is in.
    pub room: Option<String>,
}

/// Told of the sessions' lives (the peer links). Calls never wait.
pub trait SessionWatcher: Send + Sync + 'static {
    fn connected(&self, tenant: &str, s: &SeenSession);
    fn disconnected(&self, tenant: &str, session: &str, sub: &str);
    fn joined(&self, tenant: &str, session: &str, sub: &str, code: &str);
    /// What `GET /api/peers` shows.
    fn status(&self) -> Value;
    /// Sends a server publish of `tenant` (`POST /api/publish`) on to the peers it concerns;
    /// the links it went out on.
    fn publish(&self, tenant: &str, to: PeerTarget<'_>, message: &Value) -> usize;
}

/// Whom a publish is for, among the peers' sessions.
#[derive(Debug, Clone, Copy)]
pub enum PeerTarget<'a> {
    /// Every session (BROADCAST).
    All,
    /// Every member of a channel (CHANNEL_MESSAGE).
    Channel(&'a str),
    /// Every session of a user (DIRECT_MESSAGE).
    User(&'a str),
    /// One session (SESSION_MESSAGE, to the peer that has it).
    Session(&'a str),
}

impl Engine {
    /// Peer links watch the sessions from now on.
    pub fn set_watcher(&self, w: std::sync::Arc<dyn SessionWatcher>) {
        let _ = self.inner.watcher.set(w);
    }

    pub(crate) fn watcher(&self) -> Option<&std::sync::Arc<dyn SessionWatcher>> {
        self.inner.watcher.get()
    }

    /// Tells the watcher that `session` joined room `code`.
    pub(crate) fn watch_join(&self, session: &str, code: &str) {
        if let Some(w) = self.watcher()
            && let Some(p) = self.inner.sessions.principal(session)
        {
            w.joined(&p.tenant, session, &p.sub, code);
        }
    }

    /// A server publish of `tenant` passed on to the peers (`0`: no peer links, or none
    /// concerned).
    pub fn publish_to_peers(&self, tenant: &str, to: PeerTarget<'_>, event: &str, data: &Value) -> usize {
        let message = serde_json::json!({ "event": event, "data": data });
        self.watcher().map_or(0, |w| w.publish(tenant, to, &message))
    }

    /// The peer links' status (`None`: none configured).
    pub fn peer_status(&self) -> Option<Value> {
        self.watcher().map(|w| w.status())
    }

    /// This node's connected sessions of `tenant`.
    pub fn seen_sessions(&self, tenant: &str) -> Vec<SeenSession> {
        self.inner.sessions.seen(tenant)
    }

    /// `msg` to every connected session of user `sub` of `tenant`; how many.
    pub fn deliver_to_user(&self, tenant: &str, sub: &str, msg: &Outgoing) -> usize {
        let outboxes = self.inner.sessions.outboxes_where(tenant, |p| p.sub == sub);
        outboxes.iter().filter(|o| o.push(msg.clone())).count()
    }

    /// `msg` to every member of room `code` of `tenant` (through the bus: in a cluster, on
    /// every node).
    pub fn deliver_to_room(&self, tenant: &str, code: &str, msg: &Outgoing) {
        self.bus().publish(&room_topic(tenant, code), msg, None);
    }

    /// `msg` to session `id` of `tenant`, if it is connected here.
    pub fn deliver_to_session(&self, tenant: &str, id: &str, msg: &Outgoing) -> bool {
        self.inner.sessions.outbox_in(tenant, id).is_some_and(|o| o.push(msg.clone()))
    }

    /// `msg` to every connected session of `tenant`; how many.
    pub fn deliver_to_tenant(&self, tenant: &str, msg: &Outgoing) -> usize {
        let outboxes = self.inner.sessions.outboxes_where(tenant, |_| true);
        outboxes.iter().filter(|o| o.push(msg.clone())).count()
    }
}
