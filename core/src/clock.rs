//! The playback clock: a *timing vector*, not a ticking counter.
//!
//! A clock is anchored at (`server_time`, `position_ms`). While playing, the position at server
//! time `now` is `position_ms + (now - server_time) * rate`, clamped to the song. Nothing is
//! written while time passes; only changes (pause, seek, rate, load) move the anchor and bump
//! `rev`. An anchor in the future is a *scheduled start*: the position holds until then, so a
//! command can take effect on every client at one common instant.

use serde::{Deserialize, Serialize};

use crate::{Millis, song::Song};

/// Slowest and fastest playback rate a room accepts.
pub const MIN_RATE: f64 = 0.25;
pub const MAX_RATE: f64 = 4.0;

/// The room's playback timing vector. Serialized as the `playback` object of the protocol.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PlaybackClock {
    /// The loaded song, if any.
    pub song: Option<Song>,
    /// Position (ms into the song) at the anchor `server_time`.
    pub position_ms: Millis,
    /// Server time of the anchor. In the future while a start is scheduled.
    pub server_time: Millis,
    pub is_playing: bool,
    /// Playback speed, the same for every member.
    pub rate: f64,
    /// Strictly increases on every change of the vector.
    pub rev: u64,
}

impl Default for PlaybackClock {
    fn default() -> Self {
        Self { song: None, position_ms: 0.0, server_time: 0.0, is_playing: false, rate: 1.0, rev: 0 }
    }
}

impl PlaybackClock {
    /// Song duration, or `None` when no song is loaded or its duration is unknown (0).
    pub fn duration(&self) -> Option<Millis> {
        self.song.as_ref().map(|s| s.duration_ms).filter(|d| *d > 0.0)
    }

    fn clamp(&self, pos: Millis) -> Millis {
        let pos = if pos < 0.0 { 0.0 } else { pos };
        match self.duration() {
            Some(d) if pos > d => d,
            _ => pos,
        }
    }

    /// The position at server time `now`, clamped to `[0, duration]`.
    pub fn position_at(&self, now: Millis) -> Millis {
        if !self.is_playing || now <= self.server_time {
            return self.clamp(self.position_ms);
        }
        self.clamp(self.position_ms + (now - self.server_time) * self.rate)
    }

    /// True when a start is scheduled after `now`.
    pub fn is_scheduled(&self, now: Millis) -> bool {
        self.is_playing && self.server_time > now
    }

    /// Seed 002's `startedAt`: the server time at which position 0 played (or would have), if
    /// playing.
    pub fn started_at(&self) -> Option<Millis> {
        self.is_playing.then(|| self.server_time - self.position_ms / self.rate)
    }

    /// Seed 002's `pausedAt`: the server time playback stopped, if paused.
    pub fn paused_at(&self) -> Option<Millis> {
        (!self.is_playing && self.song.is_some()).then_some(self.server_time)
    }

    /// The server time at which the song reaches its end, if it is playing and has a duration.
    pub fn end_time(&self) -> Option<Millis> {
        let d = self.duration()?;
        if !self.is_playing {
            return None;
        }
        let start = self.clamp(self.position_ms);
        Some(self.server_time + (d - start) / self.rate)
    }

    /// True when playing and the end of the song has been reached at `now`.
    pub fn has_ended(&self, now: Millis) -> bool {
        match self.end_time() {
            Some(end) => now >= end,
            None => false,
        }
    }

    fn bump(&mut self) {
        self.rev += 1;
    }

    /// Loads a song at position 0, paused, or playing from `start_at` (≥ `now`).
    pub fn load(&mut self, song: Song, now: Millis, start_at: Option<Millis>) {
        self.song = Some(song);
        self.position_ms = 0.0;
        match start_at {
            Some(t) => {
                self.is_playing = true;
                self.server_time = if t > now { t } else { now };
            }
            None => {
                self.is_playing = false;
                self.server_time = now;
            }
        }
        self.bump();
    }

    /// Unloads the song (end of queue with nothing loaded).
    pub fn unload(&mut self, now: Millis) {
        self.song = None;
        self.position_ms = 0.0;
        self.is_playing = false;
        self.server_time = now;
        self.bump();
    }

    /// Freezes the position at `now`. Returns `false` (and changes nothing) if already paused.
    pub fn pause(&mut self, now: Millis) -> bool {
        if !self.is_playing {
            return false;
        }
        self.position_ms = self.position_at(now);
        self.server_time = now;
        self.is_playing = false;
        self.bump();
        true
    }

    /// Starts playing from the held position at `start_at` (clamped to ≥ `now`). Returns `false`
    /// if already playing.
    pub fn play(&mut self, now: Millis, start_at: Millis) -> bool {
        if self.is_playing {
            return false;
        }
        self.position_ms = self.clamp(self.position_ms);
        self.server_time = if start_at > now { start_at } else { now };
        self.is_playing = true;
        self.bump();
        true
    }

    /// Jumps to `position_ms` (clamped). A pending scheduled start stays scheduled.
    pub fn seek(&mut self, position_ms: Millis, now: Millis) {
        self.position_ms = self.clamp(position_ms);
        if !(self.is_playing && self.server_time > now) {
            self.server_time = now;
        }
        self.bump();
    }

    /// Changes the rate from `now` on, keeping the position continuous. The caller validates the
    /// range ([`MIN_RATE`]..=[`MAX_RATE`]).
    pub fn set_rate(&mut self, rate: f64, now: Millis) {
        if self.is_playing && self.server_time > now {
            // Still waiting for a scheduled start: the held position is unchanged.
        } else {
            self.position_ms = self.position_at(now);
            self.server_time = now;
        }
        self.rate = rate;
        self.bump();
    }

    /// Sets song position and play state at once (seed 000's UPDATE_PLAYBACK).
    pub fn set(&mut self, position_ms: Millis, is_playing: bool, now: Millis) {
        self.position_ms = self.clamp(position_ms);
        self.server_time = now;
        self.is_playing = is_playing;
        self.bump();
    }
}

/// Validates a client-supplied rate.
pub fn valid_rate(rate: f64) -> bool {
    rate.is_finite() && (MIN_RATE..=MAX_RATE).contains(&rate)
}

/// Validates a client-supplied position.
pub fn valid_position(pos: Millis) -> bool {
    pos.is_finite() && (0.0..=crate::song::MAX_DURATION_MS).contains(&pos)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::song::Provider;
    #[cfg(target_arch = "wasm32")]
    use wasm_bindgen_test::wasm_bindgen_test as test;

    fn song(d: Millis) -> Song {
        Song { id: "s".into(), title: "t".into(), provider: Provider::Url, url: String::new(), duration_ms: d }
    }

    #[test]
    fn position_advances_with_rate_and_clamps() {
        let mut c = PlaybackClock::default();
        c.load(song(10_000.0), 1000.0, Some(1000.0));
        assert_eq!(c.position_at(1000.0), 0.0);
        assert_eq!(c.position_at(2000.0), 1000.0);
        c.set_rate(2.0, 2000.0);
        assert_eq!(c.position_at(3000.0), 3000.0);
        assert_eq!(c.position_at(1_000_000.0), 10_000.0);
        assert!(c.has_ended(6500.0));
        assert!(!c.has_ended(6499.0));
    }

    #[test]
    fn scheduled_start_holds_position() {
        let mut c = PlaybackClock::default();
        c.load(song(0.0), 0.0, Some(500.0));
        assert!(c.is_scheduled(100.0));
        assert_eq!(c.position_at(400.0), 0.0);
        assert_eq!(c.position_at(600.0), 100.0);
        c.seek(5000.0, 100.0);
        assert_eq!(c.server_time, 500.0, "seek while waiting keeps the common start instant");
        assert_eq!(c.position_at(700.0), 5200.0);
    }

    #[test]
    fn derived_started_and_paused_at() {
        let mut c = PlaybackClock::default();
        c.load(song(100_000.0), 10_000.0, Some(10_000.0));
        c.seek(4000.0, 12_000.0);
        assert_eq!(c.started_at(), Some(8000.0));
        assert_eq!(c.paused_at(), None);
        c.pause(13_000.0);
        assert_eq!(c.paused_at(), Some(13_000.0));
        assert_eq!(c.position_at(99_999.0), 5000.0);
    }
}
