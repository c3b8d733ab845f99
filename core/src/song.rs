//! What a room can play: a [`Song`] and the [`Provider`] whose player renders it.

use crate::prelude::*;

use serde::{Deserialize, Serialize};

use crate::Millis;

/// Which player renders a song. Decides the drift-correction tier on the client (Spotify, for
/// example, cannot change rate).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum Provider {
    Youtube,
    Spotify,
    #[default]
    Url,
}

/// A playable item. `duration_ms` bounds the playback position; `0` means unknown (no clamp at
/// the end, no auto-advance).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Song {
    pub id: String,
    #[serde(default)]
    pub title: String,
    #[serde(default)]
    pub provider: Provider,
    #[serde(default)]
    pub url: String,
    #[serde(default)]
    pub duration_ms: Millis,
}

/// Upper bounds on song fields, so a client cannot make every member carry megabytes.
pub const MAX_ID_LEN: usize = 256;
pub const MAX_TITLE_LEN: usize = 512;
pub const MAX_URL_LEN: usize = 2048;
/// One week: longer than any real song or stream VOD.
pub const MAX_DURATION_MS: Millis = 7.0 * 24.0 * 3600.0 * 1000.0;

impl Song {
    /// Checks the fields a client sent. Returns a human-readable reason on failure.
    pub fn validate(&self) -> Result<(), String> {
        if self.id.is_empty() || self.id.len() > MAX_ID_LEN {
            return Err(format!("song.id must be 1..={MAX_ID_LEN} bytes"));
        }
        if self.title.len() > MAX_TITLE_LEN {
            return Err(format!("song.title must be at most {MAX_TITLE_LEN} bytes"));
        }
        if self.url.len() > MAX_URL_LEN {
            return Err(format!("song.url must be at most {MAX_URL_LEN} bytes"));
        }
        if !self.duration_ms.is_finite() || self.duration_ms < 0.0 || self.duration_ms > MAX_DURATION_MS {
            return Err("song.durationMs must be a finite number between 0 and one week".into());
        }
        Ok(())
    }
}
