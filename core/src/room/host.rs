//! The host role: who holds it, its grace period after a disconnect, hand-over.

use super::{Out, Room, SessionId};
use crate::{
    Millis,
    protocol::{HostChanged, Push},
};

impl Room {
    /// The host is missing: none, not a member, or disconnected past its grace period.
    pub(super) fn host_vacant(&self, now: Millis) -> bool {
        match self.host.as_deref().and_then(|h| self.member(h)) {
            None => self.host.is_none() || self.host_grace_until.is_none_or(|t| now >= t),
            Some(m) => !m.connected && self.host_grace_until.is_none_or(|t| now >= t),
        }
    }

    pub(super) fn set_host(&mut self, new: Option<SessionId>, out: &mut Out) {
        if self.host == new {
            return;
        }
        let previous = core::mem::replace(&mut self.host, new.clone());
        self.host_grace_until = None;
        out.persist();
        out.broadcast(Push::HostChanged(HostChanged { host: new, previous }));
    }

    /// Hands the host role to the longest-present connected member other than the current host.
    pub(super) fn hand_over(&mut self, out: &mut Out) {
        let current = self.host.clone();
        let next = self
            .members
            .iter()
            .find(|m| m.connected && Some(&m.session) != current.as_ref())
            .map(|m| m.session.clone());
        if next.is_some() || current.as_ref().is_none_or(|h| self.member(h).is_none()) {
            self.set_host(next, out);
        } else {
            // Nobody connected to take over: the absent host keeps the role until someone joins.
            self.host_grace_until = None;
        }
    }
}
