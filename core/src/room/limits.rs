//! A room's server-side limits and timers.

use crate::Millis;

/// Server-side limits and timers, from configuration (not client-settable).
#[derive(Debug, Clone, PartialEq)]
pub struct RoomLimits {
    pub max_members: usize,
    pub max_queue: usize,
    /// How long a disconnected host keeps the role before it passes on.
    pub host_grace_ms: Millis,
    /// How long a room with no members stays open.
    pub empty_ttl_ms: Millis,
    /// Longest member or room name, in characters.
    pub max_name_chars: usize,
    /// Most members listed in a `room-joined` snapshot (the rest: `get-members`). Keeps a join
    /// O(1) in the room size instead of O(N).
    pub snapshot_members: usize,
    /// Above this many members, member-joined/left/updated go to the host only: in a very large
    /// room a push to everyone per arrival would cost O(N²) deliveries in total.
    pub presence_broadcast_max: usize,
}

impl Default for RoomLimits {
    fn default() -> Self {
        Self {
            max_members: 20_000,
            max_queue: 500,
            host_grace_ms: 10_000.0,
            empty_ttl_ms: 600_000.0,
            max_name_chars: 64,
            snapshot_members: 200,
            presence_broadcast_max: 1000,
        }
    }
}
