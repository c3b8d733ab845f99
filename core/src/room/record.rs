//! The durable part of a room: what the store writes and restores, and rolling back to it.

use crate::prelude::*;

use serde::{Deserialize, Serialize};

use super::{Members, Room, RoomLimits, SessionId};
use crate::{
    Millis,
    clock::PlaybackClock,
    protocol::{QueueItem, RoomSettings},
};

/// The tenant of rooms created without one (anonymous use).
pub const DEFAULT_TENANT: &str = "default";

pub(super) fn default_tenant() -> String {
    DEFAULT_TENANT.to_owned()
}

/// The durable part of a room: what the store writes and restores.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RoomRecord {
    pub code: String,
    /// The tenant that owns the room (seed 004's `systemId`); [`DEFAULT_TENANT`] when unset.
    #[serde(default = "default_tenant")]
    pub tenant: String,
    pub name: String,
    pub created_at: Millis,
    pub host: Option<SessionId>,
    pub settings: RoomSettings,
    pub queue: Vec<QueueItem>,
    pub next_item: u64,
    pub clock: PlaybackClock,
    pub closed: bool,
}

impl Room {
    /// Rebuilds a room from its stored record after a restart. Members are not durable: the
    /// room starts empty, and the stored host keeps the role for one grace period.
    pub fn restore(rec: RoomRecord, limits: RoomLimits, now: Millis) -> Room {
        let host_grace_until = rec.host.as_ref().map(|_| now + limits.host_grace_ms);
        Room {
            code: rec.code,
            tenant: rec.tenant,
            name: rec.name,
            created_at: rec.created_at,
            settings: rec.settings,
            limits,
            host: rec.host,
            members: Members::default(),
            queue: rec.queue,
            next_item: rec.next_item,
            clock: rec.clock,
            barrier: None,
            host_grace_until,
            empty_since: Some(now),
            closed: rec.closed,
        }
    }

    /// Puts the durable state back to `rec` after a write of a newer state failed, so memory
    /// never runs ahead of the database. Members (not durable) are kept; a pending barrier is
    /// dropped with the change that started it.
    pub fn rollback(&mut self, rec: RoomRecord) {
        self.name = rec.name;
        self.host = rec.host;
        self.settings = rec.settings;
        self.queue = rec.queue;
        self.next_item = rec.next_item;
        self.clock = rec.clock;
        self.closed = rec.closed;
        self.barrier = None;
    }

    /// The durable part of the room.
    pub fn record(&self) -> RoomRecord {
        RoomRecord {
            code: self.code.clone(),
            tenant: self.tenant.clone(),
            name: self.name.clone(),
            created_at: self.created_at,
            host: self.host.clone(),
            settings: self.settings.clone(),
            queue: self.queue.clone(),
            next_item: self.next_item,
            clock: self.clock.clone(),
            closed: self.closed,
        }
    }
}
