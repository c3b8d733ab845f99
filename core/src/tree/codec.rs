//! [`FromTree`] and [`ToTree`] for the types the client reads and writes: the pushed types and
//! the playback state (`protocol`), songs and queue items, request payloads, and the drift and
//! estimator types the npm API takes and returns. Each mirrors its serde derive field for field
//! (names, defaults, `null` versus left out); `tests/tree_codec.rs` checks that it does.

use crate::prelude::*;

use super::{FromTree, Object, ToTree, Tree, TreeError};
use crate::{
    clock::PlaybackClock,
    drift::{Correction, DriftConfig, Mode, PlayerCapabilities},
    estimator::EstimatorConfig,
    protocol::{
        Connected, CreateRoom, ErrorBody, ErrorCode, GetMembers, HostChanged, HostReply, JoinRoom, JoinedReply,
        LoadSong, MemberInfo, MemberJoined, MemberLeft, MemberUpdated, MembersPage, PlaybackReply, PlaybackState, Push,
        PushPayload, QueueAdd, QueueItem, QueueMove, QueueRemove, QueueReply, QueueUpdated, ReadyReply, ReportDrift,
        RoomClosed, RoomDescription, RoomInfo, RoomJoined, RoomReply, RoomSettings, RoomSettingsPatch, SeekPlayback,
        SetRate, SetReady, SettingsReply, SettingsUpdated, TimeSync, TimeSyncReply, TransferHost, UpdatePlayback,
        UpdateSettings,
    },
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
    (@read get $f:ident $key:literal) => { $f.get(&$key)? };
    (@read or $f:ident $key:literal) => { $f.or(&$key, Default::default())? };
    (@read some $f:ident $key:literal) => { $f.get(&$key)? };
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
            _ => Err(TreeError(&"")),
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
        f.over(&"anyoneCanControl", &mut s.anyone_can_control)?;
        f.over(&"readyBarrier", &mut s.ready_barrier)?;
        f.over(&"readyTimeoutMs", &mut s.ready_timeout_ms)?;
        f.over(&"startDelayMs", &mut s.start_delay_ms)?;
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
            song: f.get(&"song")?,
            position_ms: f.get(&"positionMs")?,
            server_time: f.get(&"serverTime")?,
            is_playing: f.get(&"isPlaying")?,
            rate: f.get(&"rate")?,
            rev: f.get(&"rev")?,
        };
        Ok(PlaybackState {
            clock,
            started_at: f.get(&"startedAt")?,
            paused_at: f.get(&"pausedAt")?,
            awaiting_ready: f.or(&"awaitingReady", false)?,
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

// ---- replies ----------------------------------------------------------------------------------

plain_struct!(JoinedReply { get code: "code", get room: "room", get member: "member" });
plain_struct!(PlaybackReply { get playback: "playback", get server_time: "serverTime", get position_ms: "positionMs" });
plain_struct!(QueueReply { some item_id: "itemId", get queue: "queue" });
plain_struct!(HostReply { get host: "host" });
plain_struct!(ReadyReply { get ready: "ready", get playback: "playback" });
plain_struct!(SettingsReply { get settings: "settings" });
plain_struct!(MembersPage { get members: "members", get total: "total", get offset: "offset" });
plain_struct!(RoomDescription {
    get room: "room",
    get host: "host",
    get member_count: "memberCount",
    get playback: "playback",
    get queue_length: "queueLength",
});

/// A reply written as its variant's object (`Done` as `{}`), as serde writes it.
impl ToTree for RoomReply {
    fn to_tree<T: Tree>(&self) -> T {
        match self {
            RoomReply::Done => Object::new().build(),
            RoomReply::Joined(r) => r.to_tree(),
            RoomReply::Playback(r) => r.to_tree(),
            RoomReply::Queue(r) => r.to_tree(),
            RoomReply::Host(r) => r.to_tree(),
            RoomReply::Ready(r) => r.to_tree(),
            RoomReply::Settings(r) => r.to_tree(),
            RoomReply::Members(r) => r.to_tree(),
            RoomReply::Description(r) => r.as_ref().to_tree(),
        }
    }
}

impl FromTree for ErrorCode {
    fn from_tree<T: Tree>(t: &T) -> Result<Self, TreeError> {
        t.string().and_then(|s| ErrorCode::from_wire(&s)).ok_or(TreeError(&""))
    }
}

impl ToTree for ErrorCode {
    fn to_tree<T: Tree>(&self) -> T {
        T::from_string(self.as_str())
    }
}

plain_struct!(ErrorBody { get code: "code", get message: "message" });

/// A payload as a parsed tree, for the tree codec.
struct TreePayload<'a, T>(&'a T);

impl<T: Tree> PushPayload for TreePayload<'_, T> {
    type Error = TreeError;
    fn read<V: serde::de::DeserializeOwned + FromTree>(self) -> Result<V, TreeError> {
        V::from_tree(self.0)
    }
}

impl Push {
    /// Reads a push from its event name and its `data` tree: [`Push::decode`] for trees.
    /// `None` for an event this protocol does not define.
    pub fn from_tree<T: Tree>(event: &str, data: &T) -> Option<Result<Push, TreeError>> {
        Push::by_event(event, TreePayload(data))
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

/// A config's fields of one type, by wire name: one table serves its reader and its writer.
type Slots<C, V> = [(&'static str, fn(&mut C) -> &mut V)];

const DRIFT_NUMBERS: &Slots<DriftConfig, f64> = &[
    ("deadBandMs", |c| &mut c.dead_band_ms),
    ("exitBandMs", |c| &mut c.exit_band_ms),
    ("nearMaxRateDelta", |c| &mut c.near_max_rate_delta),
    ("farMaxRateDelta", |c| &mut c.far_max_rate_delta),
    ("nearThresholdMs", |c| &mut c.near_threshold_ms),
    ("seekThresholdMs", |c| &mut c.seek_threshold_ms),
    ("seekOnlyThresholdMs", |c| &mut c.seek_only_threshold_ms),
    ("correctionHorizonMs", |c| &mut c.correction_horizon_ms),
    ("seekWindowMs", |c| &mut c.seek_window_ms),
    ("seekBackoffMs", |c| &mut c.seek_backoff_ms),
    ("seekSettleMs", |c| &mut c.seek_settle_ms),
    ("rateResolution", |c| &mut c.rate_resolution),
    ("smoothing", |c| &mut c.smoothing),
    ("nudgeRestMs", |c| &mut c.nudge_rest_ms),
];
const DRIFT_COUNTS: &Slots<DriftConfig, u32> = &[("maxSeeks", |c| &mut c.max_seeks)];

const ESTIMATOR_NUMBERS: &Slots<EstimatorConfig, f64> = &[
    ("outlierFactor", |c| &mut c.outlier_factor),
    ("outlierSlackMs", |c| &mut c.outlier_slack_ms),
    ("stableMaxErrorMs", |c| &mut c.stable_max_error_ms),
];
const ESTIMATOR_COUNTS: &Slots<EstimatorConfig, usize> = &[
    ("window", |c| &mut c.window),
    ("bestOf", |c| &mut c.best_of),
    ("stableMinSamples", |c| &mut c.stable_min_samples),
];

/// Reads into `c` those of the fields `slots` name that `t` has.
fn read_over<T: Tree, C, V: FromTree>(
    f: &super::Fields<'_, T>,
    c: &mut C,
    slots: &'static Slots<C, V>,
) -> Result<(), TreeError> {
    for (key, slot) in slots {
        f.over(key, slot(c))?;
    }
    Ok(())
}

/// `o` with the fields `slots` name set from `c`.
fn write<T: Tree, C: Clone, V: ToTree>(mut o: Object<T>, c: &C, slots: &Slots<C, V>) -> Object<T> {
    let mut c = c.clone();
    for (key, slot) in slots {
        o = o.set(key, slot(&mut c));
    }
    o
}

impl DriftConfig {
    /// `base` with the fields present in `t` replaced (serde reads a partial config over
    /// `DriftConfig::default()`; the npm API reads it over the player's own defaults).
    pub fn from_tree_over<T: Tree>(base: DriftConfig, t: &T) -> Result<Self, TreeError> {
        let f = super::Fields::of(t)?;
        let mut c = base;
        read_over(&f, &mut c, DRIFT_NUMBERS)?;
        read_over(&f, &mut c, DRIFT_COUNTS)?;
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
        write(write(Object::new(), self, DRIFT_NUMBERS), self, DRIFT_COUNTS).build()
    }
}

impl FromTree for EstimatorConfig {
    fn from_tree<T: Tree>(t: &T) -> Result<Self, TreeError> {
        let f = super::Fields::of(t)?;
        let mut c = EstimatorConfig::default();
        read_over(&f, &mut c, ESTIMATOR_NUMBERS)?;
        read_over(&f, &mut c, ESTIMATOR_COUNTS)?;
        Ok(c)
    }
}

impl ToTree for EstimatorConfig {
    fn to_tree<T: Tree>(&self) -> T {
        write(write(Object::new(), self, ESTIMATOR_NUMBERS), self, ESTIMATOR_COUNTS).build()
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
        match f.get::<String>(&"kind")?.as_str() {
            "none" => Ok(Correction::None),
            "rate" => Ok(Correction::Rate { rate: f.get(&"rate")? }),
            "seek" => Ok(Correction::Seek { to_ms: f.get(&"toMs")? }),
            _ => Err(TreeError(&"kind")),
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
