//! [`FromTree`] and [`ToTree`] for the types the client reads and writes: the pushed types and
//! the playback state (`protocol`), songs and queue items, request payloads, and the drift and
//! estimator types the npm API takes and returns. Each mirrors its serde derive field for field
//! (names, defaults, `null` versus left out); `tests/tree_codec.rs` checks that it does.

use super::{FromTree, Object, ToTree, Tree, TreeError};
use crate::{
    clock::PlaybackClock,
    drift::{Correction, DriftConfig, Mode, PlayerCapabilities},
    estimator::EstimatorConfig,
    protocol::{
        Connected, CreateRoom, ErrorBody, ErrorCode, GetMembers, HostChanged, JoinRoom, LoadSong, MemberInfo,
        MemberJoined, MemberLeft, MemberUpdated, PlaybackState, Push, QueueAdd, QueueMove, QueueRemove, QueueUpdated,
        ReportDrift, RoomClosed, RoomInfo, RoomJoined, SeekPlayback, SetRate, SetReady, SettingsUpdated, TimeSync,
        TimeSyncReply, TransferHost, UpdatePlayback, UpdateSettings,
    },
    room::{QueueItem, RoomSettings, RoomSettingsPatch},
    song::{Provider, Song},
};

/// A request frame `{"event", "data"?, "id"?}` (see [`crate::protocol::Request::to_tree`]).
pub fn frame<T: Tree>(event: &str, data: Option<T>, id: Option<u64>) -> T {
    let mut f = T::new_object();
    f.insert("event", T::from_string(event));
    if let Some(d) = data {
        f.insert("data", d);
    }
    if let Some(id) = id {
        f.insert("id", T::from_u64(id));
    }
    f
}

/// Implements [`FromTree`] and [`ToTree`] for a struct whose fields are all plain: required
/// (`get`, an `Option` may be missing and is written as `null`), with a default (`or`, written
/// always), or optional and left out when `None` (`some`).
macro_rules! plain_struct {
    ($ty:ident { $( $kind:ident $field:ident : $key:literal ),* $(,)? }) => {
        impl FromTree for $ty {
            fn from_tree<T: Tree>(t: &T) -> Result<Self, TreeError> {
                let f = super::Fields::of(t)?;
                Ok($ty { $( $field: plain_struct!(@read $kind f $key), )* })
            }
        }

        impl ToTree for $ty {
            fn to_tree<T: Tree>(&self) -> T {
                let o = Object::new();
                $( let o = plain_struct!(@write $kind o $key self.$field); )*
                o.build()
            }
        }
    };
    (@read get $f:ident $key:literal) => { $f.get($key)? };
    (@read or $f:ident $key:literal) => { $f.or($key, Default::default())? };
    (@read some $f:ident $key:literal) => { $f.get($key)? };
    (@write get $o:ident $key:literal $v:expr) => { $o.set($key, &$v) };
    (@write or $o:ident $key:literal $v:expr) => { $o.set($key, &$v) };
    (@write some $o:ident $key:literal $v:expr) => { $o.set_some($key, &$v) };
}

// ---- songs, queue, settings ---------------------------------------------------------------

impl FromTree for Provider {
    fn from_tree<T: Tree>(t: &T) -> Result<Self, TreeError> {
        match t.string().as_deref() {
            Some("youtube") => Ok(Provider::Youtube),
            Some("spotify") => Ok(Provider::Spotify),
            Some("url") => Ok(Provider::Url),
            _ => Err(TreeError("")),
        }
    }
}

impl ToTree for Provider {
    fn to_tree<T: Tree>(&self) -> T {
        T::from_string(match self {
            Provider::Youtube => "youtube",
            Provider::Spotify => "spotify",
            Provider::Url => "url",
        })
    }
}

plain_struct!(Song {
    get id: "id",
    or title: "title",
    or provider: "provider",
    or url: "url",
    or duration_ms: "durationMs",
});

plain_struct!(QueueItem {
    get item_id: "itemId",
    get song: "song",
    or added_by: "addedBy",
    or added_at: "addedAt",
});

/// `#[serde(default)]` on the whole struct: every field falls back to `RoomSettings::default()`.
impl FromTree for RoomSettings {
    fn from_tree<T: Tree>(t: &T) -> Result<Self, TreeError> {
        let f = super::Fields::of(t)?;
        let mut s = RoomSettings::default();
        f.over("anyoneCanControl", &mut s.anyone_can_control)?;
        f.over("readyBarrier", &mut s.ready_barrier)?;
        f.over("readyTimeoutMs", &mut s.ready_timeout_ms)?;
        f.over("startDelayMs", &mut s.start_delay_ms)?;
        Ok(s)
    }
}

impl ToTree for RoomSettings {
    fn to_tree<T: Tree>(&self) -> T {
        Object::new()
            .set("anyoneCanControl", &self.anyone_can_control)
            .set("readyBarrier", &self.ready_barrier)
            .set("readyTimeoutMs", &self.ready_timeout_ms)
            .set("startDelayMs", &self.start_delay_ms)
            .build()
    }
}

plain_struct!(RoomSettingsPatch {
    some anyone_can_control: "anyoneCanControl",
    some ready_barrier: "readyBarrier",
    some ready_timeout_ms: "readyTimeoutMs",
    some start_delay_ms: "startDelayMs",
});

// ---- playback, members, room --------------------------------------------------------------

impl FromTree for PlaybackState {
    fn from_tree<T: Tree>(t: &T) -> Result<Self, TreeError> {
        let f = super::Fields::of(t)?;
        let clock = PlaybackClock {
            song: f.get("song")?,
            position_ms: f.get("positionMs")?,
            server_time: f.get("serverTime")?,
            is_playing: f.get("isPlaying")?,
            rate: f.get("rate")?,
            rev: f.get("rev")?,
        };
        Ok(PlaybackState {
            clock,
            started_at: f.get("startedAt")?,
            paused_at: f.get("pausedAt")?,
            awaiting_ready: f.or("awaitingReady", false)?,
        })
    }
}

impl ToTree for PlaybackState {
    fn to_tree<T: Tree>(&self) -> T {
        let c = &self.clock;
        Object::new()
            .set("song", &c.song)
            .set("positionMs", &c.position_ms)
            .set("serverTime", &c.server_time)
            .set("isPlaying", &c.is_playing)
            .set("rate", &c.rate)
            .set("rev", &c.rev)
            .set("startedAt", &self.started_at)
            .set("pausedAt", &self.paused_at)
            .set("awaitingReady", &self.awaiting_ready)
            .build()
    }
}

plain_struct!(MemberInfo {
    get session_id: "sessionId",
    get name: "name",
    get joined_at: "joinedAt",
    get is_host: "isHost",
    get ready: "ready",
    get connected: "connected",
    some drift_ms: "driftMs",
});

plain_struct!(RoomInfo {
    get code: "code",
    get name: "name",
    get created_at: "createdAt",
    get settings: "settings",
});

plain_struct!(RoomJoined {
    get room: "room",
    get you: "you",
    get members: "members",
    or member_count: "memberCount",
    get host: "host",
    get queue: "queue",
    get playback: "playback",
    get server_time: "serverTime",
    get should_start_at: "shouldStartAt",
});

plain_struct!(Connected {
    get session_id: "sessionId",
    get resume_token: "resumeToken",
    get server_time: "serverTime",
    or resumed: "resumed",
});

plain_struct!(MemberJoined { get member: "member" });
plain_struct!(MemberLeft { get session_id: "sessionId" });
plain_struct!(MemberUpdated { get member: "member" });
plain_struct!(HostChanged { get host: "host", get previous: "previous" });
plain_struct!(QueueUpdated { get queue: "queue" });
plain_struct!(RoomClosed { get code: "code", get reason: "reason" });
plain_struct!(SettingsUpdated { get settings: "settings" });
plain_struct!(TimeSyncReply { get t0: "t0", get t1: "t1", get t2: "t2" });

impl FromTree for ErrorCode {
    fn from_tree<T: Tree>(t: &T) -> Result<Self, TreeError> {
        t.string().and_then(|s| ErrorCode::from_wire(&s)).ok_or(TreeError(""))
    }
}

impl ToTree for ErrorCode {
    fn to_tree<T: Tree>(&self) -> T {
        T::from_string(self.as_str())
    }
}

plain_struct!(ErrorBody { get code: "code", get message: "message" });

impl Push {
    /// Reads a push from its event name and its `data` tree: [`Push::decode`] for trees.
    /// `None` for an event this protocol does not define.
    pub fn from_tree<T: Tree>(event: &str, data: &T) -> Option<Result<Push, TreeError>> {
        fn read<T: Tree, V: FromTree>(data: &T, wrap: fn(V) -> Push) -> Result<Push, TreeError> {
            V::from_tree(data).map(wrap)
        }
        Some(match event {
            "connected" => read(data, Push::Connected),
            "room-joined" => read(data, |j| Push::RoomJoined(Box::new(j))),
            "member-joined" => read(data, Push::MemberJoined),
            "member-left" => read(data, Push::MemberLeft),
            "member-updated" => read(data, Push::MemberUpdated),
            "host-changed" => read(data, Push::HostChanged),
            "playback-state-update" => read(data, Push::PlaybackStateUpdate),
            "playback-paused" => read(data, Push::PlaybackPaused),
            "playback-resumed" => read(data, Push::PlaybackResumed),
            "playback-seeked" => read(data, Push::PlaybackSeeked),
            "song-changed" => read(data, Push::SongChanged),
            "queue-updated" => read(data, Push::QueueUpdated),
            "settings-updated" => read(data, Push::SettingsUpdated),
            "room-closed" => read(data, Push::RoomClosed),
            "error" => read(data, Push::Error),
            _ => return None,
        })
    }
}

// ---- request payloads (written by clients) ------------------------------------------------

plain_struct!(TimeSync { get t0: "t0" });
plain_struct!(CreateRoom { some name: "name", some settings: "settings", some member_name: "memberName" });
plain_struct!(JoinRoom { get code: "code", some name: "name" });
plain_struct!(LoadSong { get song: "song", or autoplay: "autoplay" });
plain_struct!(SeekPlayback { get position_ms: "positionMs" });
plain_struct!(SetRate { get rate: "rate" });
plain_struct!(UpdatePlayback { some song_id: "songId", get position_ms: "positionMs", get is_playing: "isPlaying" });
plain_struct!(QueueAdd { get song: "song" });
plain_struct!(QueueRemove { get item_id: "itemId" });
plain_struct!(QueueMove { get item_id: "itemId", get to_index: "toIndex" });
plain_struct!(TransferHost { get session_id: "sessionId" });
plain_struct!(SetReady { get ready: "ready" });
plain_struct!(UpdateSettings { get settings: "settings" });
plain_struct!(ReportDrift { get drift_ms: "driftMs" });
plain_struct!(GetMembers { or offset: "offset", some limit: "limit" });

// ---- player, drift, estimator ---------------------------------------------------------------

plain_struct!(PlayerCapabilities {
    get can_set_rate: "canSetRate",
    get rate_step: "rateStep",
    get seek_latency_ms: "seekLatencyMs",
    get position_granularity_ms: "positionGranularityMs",
});

impl DriftConfig {
    /// `base` with the fields present in `t` replaced (serde reads a partial config over
    /// `DriftConfig::default()`; the npm API reads it over the player's own defaults).
    pub fn from_tree_over<T: Tree>(base: DriftConfig, t: &T) -> Result<Self, TreeError> {
        let f = super::Fields::of(t)?;
        let mut c = base;
        f.over("deadBandMs", &mut c.dead_band_ms)?;
        f.over("exitBandMs", &mut c.exit_band_ms)?;
        f.over("nearMaxRateDelta", &mut c.near_max_rate_delta)?;
        f.over("farMaxRateDelta", &mut c.far_max_rate_delta)?;
        f.over("nearThresholdMs", &mut c.near_threshold_ms)?;
        f.over("seekThresholdMs", &mut c.seek_threshold_ms)?;
        f.over("seekOnlyThresholdMs", &mut c.seek_only_threshold_ms)?;
        f.over("correctionHorizonMs", &mut c.correction_horizon_ms)?;
        f.over("maxSeeks", &mut c.max_seeks)?;
        f.over("seekWindowMs", &mut c.seek_window_ms)?;
        f.over("seekBackoffMs", &mut c.seek_backoff_ms)?;
        f.over("seekSettleMs", &mut c.seek_settle_ms)?;
        f.over("rateResolution", &mut c.rate_resolution)?;
        f.over("smoothing", &mut c.smoothing)?;
        f.over("nudgeRestMs", &mut c.nudge_rest_ms)?;
        Ok(c)
    }
}

impl FromTree for DriftConfig {
    fn from_tree<T: Tree>(t: &T) -> Result<Self, TreeError> {
        DriftConfig::from_tree_over(DriftConfig::default(), t)
    }
}

impl ToTree for DriftConfig {
    fn to_tree<T: Tree>(&self) -> T {
        Object::new()
            .set("deadBandMs", &self.dead_band_ms)
            .set("exitBandMs", &self.exit_band_ms)
            .set("nearMaxRateDelta", &self.near_max_rate_delta)
            .set("farMaxRateDelta", &self.far_max_rate_delta)
            .set("nearThresholdMs", &self.near_threshold_ms)
            .set("seekThresholdMs", &self.seek_threshold_ms)
            .set("seekOnlyThresholdMs", &self.seek_only_threshold_ms)
            .set("correctionHorizonMs", &self.correction_horizon_ms)
            .set("maxSeeks", &self.max_seeks)
            .set("seekWindowMs", &self.seek_window_ms)
            .set("seekBackoffMs", &self.seek_backoff_ms)
            .set("seekSettleMs", &self.seek_settle_ms)
            .set("rateResolution", &self.rate_resolution)
            .set("smoothing", &self.smoothing)
            .set("nudgeRestMs", &self.nudge_rest_ms)
            .build()
    }
}

impl FromTree for EstimatorConfig {
    fn from_tree<T: Tree>(t: &T) -> Result<Self, TreeError> {
        let f = super::Fields::of(t)?;
        let mut c = EstimatorConfig::default();
        f.over("window", &mut c.window)?;
        f.over("bestOf", &mut c.best_of)?;
        f.over("outlierFactor", &mut c.outlier_factor)?;
        f.over("outlierSlackMs", &mut c.outlier_slack_ms)?;
        f.over("stableMinSamples", &mut c.stable_min_samples)?;
        f.over("stableMaxErrorMs", &mut c.stable_max_error_ms)?;
        Ok(c)
    }
}

impl ToTree for EstimatorConfig {
    fn to_tree<T: Tree>(&self) -> T {
        Object::new()
            .set("window", &self.window)
            .set("bestOf", &self.best_of)
            .set("outlierFactor", &self.outlier_factor)
            .set("outlierSlackMs", &self.outlier_slack_ms)
            .set("stableMinSamples", &self.stable_min_samples)
            .set("stableMaxErrorMs", &self.stable_max_error_ms)
            .build()
    }
}

impl ToTree for Correction {
    fn to_tree<T: Tree>(&self) -> T {
        match self {
            Correction::None => Object::new().set("kind", "none"),
            Correction::Rate { rate } => Object::new().set("kind", "rate").set("rate", rate),
            Correction::Seek { to_ms } => Object::new().set("kind", "seek").set("toMs", to_ms),
        }
        .build()
    }
}

impl FromTree for Correction {
    fn from_tree<T: Tree>(t: &T) -> Result<Self, TreeError> {
        let f = super::Fields::of(t)?;
        match f.get::<String>("kind")?.as_str() {
            "none" => Ok(Correction::None),
            "rate" => Ok(Correction::Rate { rate: f.get("rate")? }),
            "seek" => Ok(Correction::Seek { to_ms: f.get("toMs")? }),
            _ => Err(TreeError("kind")),
        }
    }
}

impl ToTree for Mode {
    fn to_tree<T: Tree>(&self) -> T {
        T::from_string(match self {
            Mode::Idle => "idle",
            Mode::Nudging => "nudging",
            Mode::Seeking => "seeking",
            Mode::Backoff => "backoff",
        })
    }
}
