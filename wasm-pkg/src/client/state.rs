//! The client's sans-IO half: what it knows about its session, the server clock and its room,
//! and how each server frame changes that. No socket, no timer, no clock: time is a parameter,
//! so this part is unit-tested natively like the core.

use crate::prelude::*;

use serde::Serialize;
use unisono_core::{
    estimator::{ClockOffsetEstimator, EstimatorConfig},
    protocol::{ErrorBody, MemberInfo, PlaybackState, Push, QueueItem, RoomInfo, RoomSettings, TimeSyncReply},
    tree::{Fields, FromTree, Object, ToTree, Tree, TreeError},
};

/// A new offset estimate within this of the applied one is slewed towards, not jumped to, so
/// the jitter of single samples does not make the expected position (and the player) jump.
const SLEW_MAX_MS: f64 = 25.0;
/// Time constant of the slew: the applied offset covers 63% of a change in this long.
const SLEW_TAU_MS: f64 = 3000.0;

/// The room as this client sees it, replaced by every `room-joined` and patched by pushes.
/// Written for JavaScript's `room` as `{room, you, members, memberCount, host, queue,
/// playback}` ([`ToTree`]; the serde derive is the native reference it is tested against).
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct RoomView {
    #[serde(rename = "room")]
    pub info: RoomInfo,
    /// This client's session id in the room.
    pub you: String,
    pub members: Vec<MemberInfo>,
    /// Members in all (the snapshot lists at most the first `--snapshot-members`).
    pub member_count: usize,
    pub host: Option<String>,
    pub queue: Vec<QueueItem>,
    pub playback: PlaybackState,
}

impl ToTree for RoomView {
    fn to_tree<T: Tree>(&self) -> T {
        Object::new()
            .set("room", &self.info)
            .set("you", &self.you)
            .set("members", &self.members)
            .set("memberCount", &self.member_count)
            .set("host", &self.host)
            .set("queue", &self.queue)
            .set("playback", &self.playback)
            .build()
    }
}

impl RoomView {
    /// Whether this client may control playback (host, or `anyoneCanControl`).
    pub fn can_control(&self) -> bool {
        self.info.settings.anyone_can_control || self.is_host()
    }

    pub fn is_host(&self) -> bool {
        self.host.as_deref() == Some(self.you.as_str())
    }
}

/// What changed, for listeners. Read the new state from the client.
#[derive(Debug, Clone, PartialEq)]
pub enum Change {
    /// Joined a room (snapshot), left it (`None`), or its settings changed.
    Room,
    /// A new timing vector; the string is the push that carried it (`room-joined`, `song-changed`…).
    Playback(&'static str),
    Members,
    Queue,
    /// The clock-offset estimate changed.
    Sync,
    /// An `error` push (the failure of a frame without an id), or a connection problem.
    Error(ClientError),
}

/// The reply to a request: `data` when `ok`, else `error` (its code kept as text, so a code
/// this client does not know yet still reaches the caller). `T` is the tree the frame was
/// parsed into (a JavaScript value in the browser).
#[derive(Debug)]
pub struct IncomingReply<T> {
    pub id: u64,
    pub ok: bool,
    pub data: Option<T>,
    pub error: Option<ClientError>,
}

/// A decoded server frame.
#[derive(Debug)]
pub enum Incoming<T> {
    Reply(IncomingReply<T>),
    Push(Box<Push>),
    /// A push the room protocol does not model (the device admin protocol's `device:online`,
    /// `state:updated`…, or a newer server's): passed on to listeners as it came.
    Other(RawPush<T>),
}

/// A push by name with its payload as parsed, for protocols the client carries but does not
/// interpret (docs/socketio.md §3: the device admin protocol on `/ws`).
#[derive(Debug, Clone, PartialEq)]
pub struct RawPush<T> {
    pub event: String,
    pub data: T,
}

/// A failed request or an error push: the server's stable `code` (e.g. `NOT_HOST`) or one of the
/// client's own (`DISCONNECTED`, `TIMEOUT`, `CLOSED`, `NOT_CONNECTED`, `SESSION_TAKEN_OVER`).
#[derive(Debug, Clone, PartialEq)]
pub struct ClientError {
    pub code: String,
    pub message: String,
}

impl ClientError {
    pub fn new(code: &str, message: impl Into<String>) -> Self {
        Self { code: code.to_owned(), message: message.into() }
    }
}

impl From<ErrorBody> for ClientError {
    fn from(e: ErrorBody) -> Self {
        Self { code: e.code.as_str().to_owned(), message: e.message }
    }
}

impl FromTree for ClientError {
    fn from_tree<T: Tree>(t: &T) -> Result<Self, TreeError> {
        let f = Fields::of(t)?;
        Ok(Self { code: f.get(&"code")?, message: f.get(&"message")? })
    }
}

impl core::fmt::Display for ClientError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        write!(f, "{}: {}", self.code, self.message)
    }
}

impl core::error::Error for ClientError {}

/// Decodes one server frame, parsed (`JSON.parse` in the browser): a reply has no `event`
/// key, a push always has one; the payload of a reply or of an unmodelled push is left as it
/// is.
pub fn decode<T: Tree>(frame: &T) -> Result<Incoming<T>, String> {
    let f = Fields::of(frame).map_err(|_| "invalid frame from server: not an object".to_owned())?;
    let Some(event) = frame.field("event") else {
        let id: Option<u64> = f.get(&"id").map_err(|e| malformed("reply", e))?;
        let id = id.ok_or("malformed reply: no id")?;
        return Ok(Incoming::Reply(IncomingReply {
            id,
            ok: f.or(&"ok", false).map_err(|e| malformed("reply", e))?,
            data: frame.field("data"),
            error: f.get(&"error").map_err(|e| malformed("reply", e))?,
        }));
    };
    let event = event.string().ok_or("invalid frame from server: `event` is not a string")?;
    let data = frame.field("data").unwrap_or_else(T::null);
    match Push::from_tree(&event, &data) {
        Some(Ok(p)) => Ok(Incoming::Push(Box::new(p))),
        Some(Err(e)) => Err(malformed(&event, e)),
        None => Ok(Incoming::Other(RawPush { event, data })),
    }
}

/// `e^x`: the host's `Math.exp` in the wasm, libm's natively (where this state is unit-tested).
fn exp(x: f64) -> f64 {
    #[cfg(target_arch = "wasm32")]
    return crate::sys::exp(x);
    #[cfg(not(target_arch = "wasm32"))]
    return libm::exp(x);
}

/// "malformed EVENT push: missing or invalid field `x`", without `core::fmt`.
fn malformed(what: &str, e: TreeError) -> String {
    let mut m = String::from("malformed ");
    m.push_str(what);
    if what != "reply" {
        m.push_str(" push");
    }
    m.push_str(": ");
    m.push_str(&e.message());
    m
}

/// Latest round-trip figures, for a sync panel.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct SyncStats {
    /// Server clock minus local clock (ms), once estimated.
    pub offset: Option<f64>,
    /// The true offset is within `offset ± errorBound`.
    pub error_bound: Option<f64>,
    /// Round trip of the last accepted sample (server processing excluded).
    pub rtt: Option<f64>,
    /// Smallest round trip in the window.
    pub min_rtt: Option<f64>,
    pub samples: usize,
    pub stable: bool,
}

/// For JavaScript's `syncStats()`: `{offset, errorBound, rtt, minRtt, samples, stable}`.
impl ToTree for SyncStats {
    fn to_tree<T: Tree>(&self) -> T {
        Object::new()
            .set("offset", &self.offset)
            .set("errorBound", &self.error_bound)
            .set("rtt", &self.rtt)
            .set("minRtt", &self.min_rtt)
            .set("samples", &self.samples)
            .set("stable", &self.stable)
            .build()
    }
}

/// Session, clock and room state of one client.
#[derive(Debug, Clone)]
pub struct State {
    pub session_id: Option<String>,
    pub resume_token: Option<String>,
    estimator: ClockOffsetEstimator,
    /// `serverTime − local` from the `connected` push: a rough offset until time-sync answers.
    rough_offset: Option<f64>,
    last_rtt: Option<f64>,
    /// `(applied offset, local time)` when the estimate last changed: the slew's start.
    slew: Option<(f64, f64)>,
    pub room: Option<RoomView>,
    next_id: u64,
}

impl Default for State {
    fn default() -> Self {
        Self {
            session_id: None,
            resume_token: None,
            estimator: ClockOffsetEstimator::new(EstimatorConfig::default()),
            rough_offset: None,
            last_rtt: None,
            slew: None,
            room: None,
            next_id: 1,
        }
    }
}

impl State {
    /// A fresh request id (JavaScript-safe: far below 2^53).
    pub fn next_id(&mut self) -> u64 {
        let id = self.next_id;
        self.next_id += 1;
        id
    }

    /// The offset applied at local time `local`: the estimate, approached exponentially from
    /// the previously applied value when the change is small (see [`SLEW_MAX_MS`]).
    fn applied_offset(&self, local: f64) -> Option<f64> {
        let target = self.estimator.offset()?;
        Some(match self.slew {
            Some((from, at)) if (target - from).abs() <= SLEW_MAX_MS => {
                let k = exp(-(local - at).max(0.0) / SLEW_TAU_MS);
                target + (from - target) * k
            }
            _ => target,
        })
    }

    fn offset_at(&self, local: f64) -> f64 {
        self.applied_offset(local).or(self.rough_offset).unwrap_or(0.0)
    }

    /// Server time for local time `local`: the (slewed) estimate, else the rough offset.
    pub fn server_time(&self, local: f64) -> f64 {
        local + self.offset_at(local)
    }

    /// Local time for server time `server` (inverse of [`State::server_time`], to well below a
    /// millisecond: the slew moves slowly).
    pub fn local_time(&self, server: f64) -> f64 {
        let guess = server - self.offset_at(server - self.offset_at(0.0));
        server - self.offset_at(guess)
    }

    /// The room's position at local time `local`, if in a room.
    pub fn position_at_local(&self, local: f64) -> Option<f64> {
        let room = self.room.as_ref()?;
        Some(room.playback.clock.position_at(self.server_time(local)))
    }

    pub fn sync_stats(&self) -> SyncStats {
        SyncStats {
            offset: self.estimator.offset().or(self.rough_offset),
            error_bound: self.estimator.error_bound(),
            rtt: self.last_rtt,
            min_rtt: self.estimator.min_delay(),
            samples: self.estimator.sample_count(),
            stable: self.estimator.is_stable(),
        }
    }

    /// Records a `time-sync` reply (`t0`, `t3` local). True if the sample was accepted.
    pub fn on_time_sync<T: Tree>(&mut self, t0: f64, data: &T, t3: f64) -> bool {
        let Ok(TimeSyncReply { t1, t2, .. }) = TimeSyncReply::from_tree(data) else { return false };
        let applied = self.applied_offset(t3);
        match self.estimator.add_sample(t0, t1, t2, t3) {
            Ok(s) => {
                self.last_rtt = Some(s.delay);
                self.slew = applied.map(|a| (a, t3));
                true
            }
            Err(_) => false,
        }
    }

    /// Applies a reply's data to the room: a `playback` newer than ours replaces it
    /// (protocol §2.6: a reply's vector may be older than a push that arrived first).
    pub fn on_reply_data<T: Tree>(&mut self, data: &T) -> Vec<Change> {
        let Some(room) = self.room.as_mut() else { return vec![] };
        let Some(Ok(pb)) = data.field("playback").map(|p| PlaybackState::from_tree(&p)) else { return vec![] };
        if pb.clock.rev > room.playback.clock.rev {
            room.playback = pb;
            return vec![Change::Playback("reply")];
        }
        vec![]
    }

    /// Applies a push at local time `local`; returns what changed.
    pub fn on_push(&mut self, push: Push, local: f64) -> Vec<Change> {
        match push {
            Push::Connected(c) => {
                self.session_id = Some(c.session_id);
                self.resume_token = Some(c.resume_token);
                self.rough_offset = Some(c.server_time - local);
                if !c.resumed {
                    // A new session is in no room; the caller re-joins by code if it wants.
                    return self.leave_room();
                }
                vec![]
            }
            Push::RoomJoined(j) => {
                let j = *j;
                self.room = Some(RoomView {
                    info: j.room,
                    you: j.you,
                    member_count: j.member_count.max(j.members.len()),
                    members: j.members,
                    host: j.host,
                    queue: j.queue,
                    playback: j.playback,
                });
                vec![Change::Room, Change::Members, Change::Queue, Change::Playback("room-joined")]
            }
            Push::MemberJoined(m) => self.with_room(|r| {
                if let Some(old) = r.members.iter_mut().find(|x| x.session_id == m.member.session_id) {
                    *old = m.member;
                } else {
                    r.members.push(m.member);
                    r.member_count += 1;
                }
                vec![Change::Members]
            }),
            Push::MemberLeft(m) => {
                let me = self.room.as_ref().is_some_and(|r| r.you == m.session_id);
                if me {
                    return self.leave_room();
                }
                self.with_room(|r| {
                    let before = r.members.len();
                    r.members.retain(|x| x.session_id != m.session_id);
                    if r.members.len() < before || r.member_count > r.members.len() {
                        r.member_count = r.member_count.saturating_sub(1).max(r.members.len());
                    }
                    vec![Change::Members]
                })
            }
            Push::MemberUpdated(m) => self.with_room(|r| {
                if let Some(old) = r.members.iter_mut().find(|x| x.session_id == m.member.session_id) {
                    *old = m.member;
                }
                vec![Change::Members]
            }),
            Push::HostChanged(h) => self.with_room(|r| {
                // `isHost` is not pushed again on a host change: derive it (protocol §4.0.4).
                for m in &mut r.members {
                    m.is_host = h.host.as_deref() == Some(m.session_id.as_str());
                }
                r.host = h.host;
                vec![Change::Members, Change::Room]
            }),
            Push::QueueUpdated(q) => self.with_room(|r| {
                r.queue = q.queue;
                vec![Change::Queue]
            }),
            Push::SettingsUpdated(s) => self.with_room(|r| {
                r.info.settings = s.settings;
                vec![Change::Room]
            }),
            Push::RoomClosed(_) => self.leave_room(),
            Push::Error(e) => vec![Change::Error(e.into())],
            push => {
                let name = playback_event_name(&push);
                let Some(pb) = push_playback(push) else { return vec![] };
                self.with_room(|r| {
                    // Pushes are authoritative in arrival order (§2.6).
                    r.playback = pb;
                    vec![Change::Playback(name)]
                })
            }
        }
    }

    /// Forgets the room (left, closed, or a new session).
    pub fn leave_room(&mut self) -> Vec<Change> {
        if self.room.take().is_some() { vec![Change::Room, Change::Members, Change::Queue] } else { vec![] }
    }

    fn with_room(&mut self, f: impl FnOnce(&mut RoomView) -> Vec<Change>) -> Vec<Change> {
        self.room.as_mut().map(f).unwrap_or_default()
    }

    /// Room settings, if in a room.
    pub fn settings(&self) -> Option<&RoomSettings> {
        self.room.as_ref().map(|r| &r.info.settings)
    }
}

fn playback_event_name(push: &Push) -> &'static str {
    match push {
        Push::PlaybackPaused(_) => "playback-paused",
        Push::PlaybackResumed(_) => "playback-resumed",
        Push::PlaybackSeeked(_) => "playback-seeked",
        Push::SongChanged(_) => "song-changed",
        _ => "playback-state-update",
    }
}

fn push_playback(push: Push) -> Option<PlaybackState> {
    match push {
        Push::PlaybackStateUpdate(p)
        | Push::PlaybackPaused(p)
        | Push::PlaybackResumed(p)
        | Push::PlaybackSeeked(p)
        | Push::SongChanged(p) => Some(p),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use serde_json::Value;

    use super::*;

    /// A frame as `JSON.parse` gives it to the browser client, natively.
    fn parse(text: &str) -> Value {
        serde_json::from_str(text).expect("test frames are JSON")
    }

    fn decode(text: &str) -> Result<Incoming<Value>, String> {
        super::decode(&parse(text))
    }

    const JOINED: &str = r#"{"event":"room-joined","data":{"room":{"code":"K7QX4M","name":"F","createdAt":1.0,"settings":{"anyoneCanControl":false,"readyBarrier":false,"readyTimeoutMs":5000.0,"startDelayMs":0.0}},"you":"B","members":[{"sessionId":"A","name":"Alice","joinedAt":1.0,"isHost":true,"ready":true,"connected":true},{"sessionId":"B","name":"Bob","joinedAt":2.0,"isHost":false,"ready":true,"connected":true}],"host":"A","queue":[],"playback":{"song":{"id":"s","title":"","provider":"url","url":"","durationMs":60000.0},"positionMs":0.0,"serverTime":1000.0,"isPlaying":true,"rate":1.0,"rev":2,"startedAt":1000.0,"pausedAt":null,"awaitingReady":false},"serverTime":2000.0,"shouldStartAt":1000.0}}"#;

    fn push(text: &str) -> Push {
        match decode(text) {
            Ok(Incoming::Push(p)) => *p,
            other => panic!("not a push: {other:?}"),
        }
    }

    #[test]
    fn snapshot_then_pushes_keep_the_room_current() {
        let mut s = State::default();
        s.on_push(push(JOINED), 0.0);
        let room = s.room.as_ref().expect("room");
        assert_eq!((room.members.len(), room.host.as_deref(), room.is_host()), (2, Some("A"), false));
        s.on_push(push(r#"{"event":"host-changed","data":{"host":"B","previous":"A"}}"#), 0.0);
        let room = s.room.as_ref().expect("room");
        assert!(room.is_host() && room.members[1].is_host && !room.members[0].is_host);
        s.on_push(push(r#"{"event":"member-left","data":{"sessionId":"A"}}"#), 0.0);
        assert_eq!(s.room.as_ref().map(|r| r.members.len()), Some(1));
        s.on_push(push(r#"{"event":"member-left","data":{"sessionId":"B"}}"#), 0.0);
        assert!(s.room.is_none(), "our own member-left means we left");
    }

    #[test]
    fn position_uses_the_estimated_offset() {
        let mut s = State::default();
        s.on_push(push(JOINED), 0.0);
        // Offset +1000 (server ahead), 10 ms each way, 1 ms processing.
        assert!(s.on_time_sync(0.0, &parse(r#"{"t0": 0.0, "t1": 1010.0, "t2": 1011.0}"#), 21.0));
        assert_eq!(s.server_time(500.0), 1500.0);
        assert_eq!(s.position_at_local(500.0), Some(500.0));
        assert_eq!(s.sync_stats().rtt, Some(20.0));
    }

    #[test]
    fn small_offset_changes_are_slewed_large_ones_jump() {
        let mut s = State::default();
        let sync = |s: &mut State, t0: f64, offset: f64| {
            // 10 ms each way, no processing time.
            let data = serde_json::json!({"t0": t0, "t1": t0 + 10.0 + offset, "t2": t0 + 10.0 + offset});
            assert!(s.on_time_sync(t0, &data, t0 + 20.0));
        };
        sync(&mut s, 0.0, 1000.0);
        assert_eq!(s.server_time(20.0), 1020.0);
        // A better sample (5 ms each way) moves the estimate by 4 ms: applied gradually.
        assert!(s.on_time_sync(100.0, &parse(r#"{"t0": 100.0, "t1": 1109.0, "t2": 1109.0}"#), 110.0));
        let est = s.sync_stats().offset.expect("estimate");
        assert!((est - 1000.0).abs() > 1.0, "the estimate moved: {est}");
        assert_eq!(s.server_time(110.0) - 110.0, 1000.0);
        let later = s.server_time(110.0 + 3.0 * SLEW_TAU_MS) - (110.0 + 3.0 * SLEW_TAU_MS);
        assert!((later - est).abs() < 0.3, "converged: {later} vs {est}");
        assert!((s.local_time(s.server_time(5000.0)) - 5000.0).abs() < 1e-6);
        // A jump of 100 ms (e.g. the server's clock stepped) applies at once.
        let mut j = State::default();
        sync(&mut j, 0.0, 1000.0);
        for i in 1..20 {
            sync(&mut j, f64::from(i) * 100.0, 1100.0);
        }
        let off = j.server_time(2000.0) - 2000.0;
        assert!(off > 1050.0, "large changes are not slewed: {off}");
    }

    #[test]
    fn a_stale_reply_does_not_roll_playback_back() {
        let mut s = State::default();
        s.on_push(push(JOINED), 0.0);
        let old = r#"{"playback": {"song": null, "positionMs": 0.0, "serverTime": 0.0, "isPlaying": false, "rate": 1.0, "rev": 1, "startedAt": null, "pausedAt": null, "awaitingReady": false}}"#;
        assert!(s.on_reply_data(&parse(old)).is_empty());
        assert_eq!(s.room.as_ref().map(|r| r.playback.clock.rev), Some(2));
        let newer = old.replace("\"rev\": 1", "\"rev\": 3");
        assert_eq!(s.on_reply_data(&parse(&newer)), vec![Change::Playback("reply")]);
        assert_eq!(s.room.as_ref().map(|r| r.playback.clock.rev), Some(3));
    }

    #[test]
    fn unmodelled_pushes_pass_through_and_replies_decode() {
        let other = decode(r#"{"event":"state:updated","data":{"deviceId":"k","rev":2,"baseRev":1,"patch":{}}}"#);
        match other {
            Ok(Incoming::Other(RawPush { event, data })) => {
                assert_eq!(event, "state:updated");
                assert_eq!(data, parse(r#"{"deviceId":"k","rev":2,"baseRev":1,"patch":{}}"#));
            }
            other => panic!("expected a raw push: {other:?}"),
        }
        assert!(decode(r#"{"event":7}"#).is_err());
        let r = decode(r#"{"id":7,"ok":false,"error":{"code":"NOT_HOST","message":"no"}}"#);
        assert!(
            matches!(r, Ok(Incoming::Reply(IncomingReply { id: 7, ok: false, error: Some(ClientError { ref code, .. }), .. })) if code == "NOT_HOST")
        );
        // A code this client does not know yet still reaches the caller.
        let r = decode(r#"{"id":8,"ok":false,"error":{"code":"SHINY_NEW","message":"later"}}"#);
        assert!(
            matches!(r, Ok(Incoming::Reply(IncomingReply { error: Some(ClientError { ref code, .. }), .. })) if code == "SHINY_NEW")
        );
        let r = decode(r#"{"id":9,"ok":true,"data":{"code":"K7QX4M"}}"#);
        assert!(
            matches!(r, Ok(Incoming::Reply(IncomingReply { id: 9, ok: true, data: Some(ref d), .. })) if *d == parse(r#"{"code":"K7QX4M"}"#))
        );
        assert!(decode(r#"{"event":"member-left","data":{"who":"A"}}"#).is_err(), "a malformed room push is an error");
    }

    #[test]
    fn the_room_view_is_written_as_its_serde_derive_writes_it() {
        let mut s = State::default();
        s.on_push(push(JOINED), 0.0);
        let room = s.room.as_ref().expect("room");
        assert_eq!(room.to_tree::<Value>(), serde_json::to_value(room).expect("json"));
    }

    #[test]
    fn frames_that_are_not_objects_or_have_bad_envelopes_are_errors() {
        assert!(decode("[1]").is_err());
        assert!(decode(r#"{"id":"7","ok":true}"#).is_err());
        assert!(decode(r#"{"ok":true}"#).is_err(), "a reply needs an id");
        let e = decode(r#"{"event":"member-left","data":{"who":"A"}}"#).expect_err("malformed");
        assert_eq!(e, "malformed member-left push: missing or invalid field `sessionId`");
    }
}
