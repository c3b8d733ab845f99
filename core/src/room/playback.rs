//! Playback: starts (through the ready barrier), loads, queue advance, playback replies.

use crate::prelude::*;

use super::{Out, Room, SessionId};
use crate::protocol::BARRIER_START_LEAD_MS;
use crate::{
    Millis,
    protocol::{PlaybackReply, Push, QueueUpdated, RoomReply},
    song::Song,
};

#[derive(Debug, Clone, PartialEq)]
pub(super) struct Barrier {
    pub(super) deadline: Millis,
    pub(super) waiting: Vec<SessionId>,
}

impl Room {
    /// The lead time for a start: the room's start delay, at least the barrier lead if the
    /// barrier released it.
    pub(super) fn start_at(&self, now: Millis, from_barrier: bool) -> Millis {
        let lead = if from_barrier {
            self.settings.start_delay_ms.max(BARRIER_START_LEAD_MS)
        } else {
            self.settings.start_delay_ms
        };
        now + lead
    }

    /// Starts playback, through the ready barrier if the room uses one and someone is not ready.
    pub(super) fn request_start(&mut self, now: Millis) {
        if self.settings.ready_barrier {
            let waiting: Vec<SessionId> =
                self.members.iter().filter(|m| m.connected && !m.ready).map(|m| m.session.clone()).collect();
            if !waiting.is_empty() {
                self.barrier = Some(Barrier { deadline: now + self.settings.ready_timeout_ms, waiting });
                return;
            }
        }
        let at = self.start_at(now, self.settings.ready_barrier);
        self.clock.play(now, at);
    }

    pub(super) fn release_barrier(&mut self, now: Millis, out: &mut Out) {
        if self.barrier.take().is_some() {
            let at = self.start_at(now, true);
            self.clock.play(now, at);
            out.persist();
            out.broadcast(Push::PlaybackResumed(self.playback()));
        }
    }

    /// A load or seek invalidates every member's buffer.
    pub(super) fn reset_ready(&mut self) {
        if self.settings.ready_barrier {
            for m in self.members.iter_mut() {
                m.ready = false;
            }
        }
    }

    pub(super) fn load(&mut self, song: Song, autoplay: bool, now: Millis, out: &mut Out) {
        self.barrier = None;
        self.clock.load(song, now, None);
        self.reset_ready();
        if autoplay {
            self.request_start(now);
        }
        out.persist();
        out.broadcast(Push::SongChanged(self.playback()));
    }

    /// Plays the next queued song; with an empty queue, stops at the end of the current one.
    pub(super) fn advance(&mut self, now: Millis, out: &mut Out) {
        if self.queue.is_empty() {
            if self.clock.song.is_some() {
                self.barrier = None;
                self.clock.unload(now);
                out.persist();
                out.broadcast(Push::SongChanged(self.playback()));
            }
            return;
        }
        let item = self.queue.remove(0);
        self.load(item.song, true, now, out);
        out.broadcast(Push::QueueUpdated(QueueUpdated { queue: self.queue.clone() }));
    }

    pub(super) fn playback_reply(&self, now: Millis) -> RoomReply {
        RoomReply::Playback(PlaybackReply {
            playback: self.playback(),
            server_time: now,
            position_ms: self.clock.position_at(now),
        })
    }

    pub(super) fn drop_from_barrier(&mut self, session: &str, now: Millis, out: &mut Out) {
        if let Some(b) = &mut self.barrier {
            b.waiting.retain(|s| s != session);
            if b.waiting.is_empty() {
                self.release_barrier(now, out);
            }
        }
    }
}
