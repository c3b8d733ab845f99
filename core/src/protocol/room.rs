//! The room's own wire types: settings a host may change (and a partial update of them) and queue
//! items. The room state machine (`crate::room`) keeps them; clients read and write them.

use crate::prelude::*;

use serde::{Deserialize, Serialize};

use super::ErrorCode;
use crate::{Millis, song::Song};

/// A settings patch was refused (a field out of range); nothing changed.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("{0}")]
pub struct InvalidSettings(pub String);

impl InvalidSettings {
    pub fn code(&self) -> ErrorCode {
        ErrorCode::InvalidPayload
    }
}

/// Room settings a host may change.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct RoomSettings {
    /// Let every member control playback, not only the host.
    pub anyone_can_control: bool,
    /// Hold starts until members report ready (or `readyTimeoutMs` passes).
    pub ready_barrier: bool,
    /// Longest a start waits for ready reports.
    pub ready_timeout_ms: Millis,
    /// Lead time added to every start so all members begin at one common future instant.
    pub start_delay_ms: Millis,
}

impl Default for RoomSettings {
    fn default() -> Self {
        Self { anyone_can_control: false, ready_barrier: false, ready_timeout_ms: 5000.0, start_delay_ms: 0.0 }
    }
}

/// Longest ready timeout and start lead a room may set.
pub const MAX_READY_TIMEOUT_MS: Millis = 60_000.0;
pub const MAX_START_DELAY_MS: Millis = 10_000.0;
/// Minimum lead of a start released by the ready barrier, so the push reaches everyone first.
pub const BARRIER_START_LEAD_MS: Millis = 250.0;

/// A partial update of [`RoomSettings`] (`create-room` and `update-settings`).
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RoomSettingsPatch {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub anyone_can_control: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ready_barrier: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ready_timeout_ms: Option<Millis>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub start_delay_ms: Option<Millis>,
}

impl RoomSettings {
    /// Applies a patch after validating every field; on error nothing changes.
    pub fn apply_patch(&mut self, p: &RoomSettingsPatch) -> Result<(), InvalidSettings> {
        let in_range = |v: Millis, max: Millis| v.is_finite() && (0.0..=max).contains(&v);
        if let Some(t) = p.ready_timeout_ms
            && !in_range(t, MAX_READY_TIMEOUT_MS)
        {
            return Err(InvalidSettings(format!("readyTimeoutMs must be 0..={MAX_READY_TIMEOUT_MS}")));
        }
        if let Some(t) = p.start_delay_ms
            && !in_range(t, MAX_START_DELAY_MS)
        {
            return Err(InvalidSettings(format!("startDelayMs must be 0..={MAX_START_DELAY_MS}")));
        }
        if let Some(v) = p.anyone_can_control {
            self.anyone_can_control = v;
        }
        if let Some(v) = p.ready_barrier {
            self.ready_barrier = v;
        }
        if let Some(v) = p.ready_timeout_ms {
            self.ready_timeout_ms = v;
        }
        if let Some(v) = p.start_delay_ms {
            self.start_delay_ms = v;
        }
        Ok(())
    }
}

/// One queued song.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct QueueItem {
    pub item_id: String,
    pub song: Song,
    #[serde(default)]
    pub added_by: Option<String>,
    #[serde(default)]
    pub added_at: Millis,
}
