//! The room state machine: members, host, permissions, queue, ready barrier and host hand-over.
//!
//! A [`Room`] is a plain value. [`Room::apply`] takes a [`Command`] and the current server time
//! and returns the [`Effect`]s for the driver to carry out, in order:
//! [`Effect::Persist`] always comes first when durable state changed, so a driver that writes
//! before sending anything never acknowledges or broadcasts a change it could lose.
//! Timers are not run here: the driver asks [`Room::next_deadline`] and sends [`Command::Tick`]
//! when it passes (host grace, ready-barrier timeout, end of song, empty-room TTL).

use crate::prelude::*;

use alloc::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use crate::{
    Millis,
    clock::{self, PlaybackClock},
    protocol::{
        ErrorCode, HostChanged, MemberInfo, MemberJoined, MemberLeft, MemberUpdated, PlaybackState, Push, QueueUpdated,
        Request, RoomClosed, RoomInfo, RoomJoined, SettingsUpdated,
    },
    song::Song,
};

/// A session's id: opaque, server-assigned.
pub type SessionId = String;

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
    pub fn apply_patch(&mut self, p: &RoomSettingsPatch) -> Result<(), RoomError> {
        let in_range = |v: Millis, max: Millis| v.is_finite() && (0.0..=max).contains(&v);
        if let Some(t) = p.ready_timeout_ms
            && !in_range(t, MAX_READY_TIMEOUT_MS)
        {
            return Err(RoomError::Invalid(format!("readyTimeoutMs must be 0..={MAX_READY_TIMEOUT_MS}")));
        }
        if let Some(t) = p.start_delay_ms
            && !in_range(t, MAX_START_DELAY_MS)
        {
            return Err(RoomError::Invalid(format!("startDelayMs must be 0..={MAX_START_DELAY_MS}")));
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

/// Why a command was refused. Nothing changed.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum RoomError {
    #[error("only the host can do this")]
    NotHost,
    #[error("you are not a member of this room")]
    NotInRoom,
    #[error("no song is loaded")]
    NoSong,
    #[error("no queue item has this id")]
    ItemNotFound,
    #[error("no member has this session id")]
    MemberNotFound,
    #[error("the room is full ({0} members)")]
    RoomFull(usize),
    #[error("the queue is full ({0} items)")]
    QueueFull(usize),
    #[error("the room is closed")]
    Closed,
    #[error("{0}")]
    Invalid(String),
}

impl RoomError {
    pub fn code(&self) -> ErrorCode {
        match self {
            RoomError::NotHost => ErrorCode::NotHost,
            RoomError::NotInRoom => ErrorCode::NotInRoom,
            RoomError::NoSong => ErrorCode::NoSong,
            RoomError::ItemNotFound => ErrorCode::ItemNotFound,
            RoomError::MemberNotFound => ErrorCode::MemberNotFound,
            RoomError::RoomFull(_) => ErrorCode::RoomFull,
            RoomError::QueueFull(_) => ErrorCode::QueueFull,
            RoomError::Closed => ErrorCode::RoomClosed,
            RoomError::Invalid(_) => ErrorCode::InvalidPayload,
        }
    }
}

/// An input to the room.
#[derive(Debug, Clone, PartialEq)]
pub enum Command {
    Join {
        session: SessionId,
        name: String,
    },
    /// Deliberate leave (or the end of a disconnected session's grace period).
    Leave {
        session: SessionId,
    },
    /// The session's connection dropped; it may come back with its resume token.
    Disconnect {
        session: SessionId,
    },
    Reconnect {
        session: SessionId,
    },
    Load {
        session: SessionId,
        song: Song,
        autoplay: bool,
    },
    Pause {
        session: SessionId,
    },
    Resume {
        session: SessionId,
    },
    Seek {
        session: SessionId,
        position_ms: Millis,
    },
    SetRate {
        session: SessionId,
        rate: f64,
    },
    /// Seed 000's UPDATE_PLAYBACK: song, position and play state at once.
    Update {
        session: SessionId,
        song_id: Option<String>,
        position_ms: Millis,
        is_playing: bool,
    },
    GetPlayback {
        session: SessionId,
    },
    QueueAdd {
        session: SessionId,
        song: Song,
    },
    QueueRemove {
        session: SessionId,
        item_id: String,
    },
    QueueMove {
        session: SessionId,
        item_id: String,
        to_index: usize,
    },
    PlayNext {
        session: SessionId,
    },
    TransferHost {
        session: SessionId,
        to: SessionId,
    },
    SetReady {
        session: SessionId,
        ready: bool,
    },
    UpdateSettings {
        session: SessionId,
        patch: RoomSettingsPatch,
    },
    ReportDrift {
        session: SessionId,
        drift_ms: f64,
    },
    /// A page of the member list.
    GetMembers {
        session: SessionId,
        offset: usize,
        limit: usize,
    },
    /// Time passed: run whatever deadline is due.
    Tick,
    /// An operator's read of the room (REST): info, host, member count, playback, queue.
    Describe,
    /// Close the room (operator action or shutdown of a tenant).
    Close {
        reason: String,
    },
}

impl Command {
    /// True if the command can never change durable state (no need to keep a rollback copy).
    pub fn is_read_only(&self) -> bool {
        matches!(
            self,
            Command::GetPlayback { .. } | Command::ReportDrift { .. } | Command::GetMembers { .. } | Command::Describe
        )
    }

    /// Maps a protocol request of `session` to a room command. `None` for requests that are not
    /// about the session's current room (`time-sync`, `create-room`, `join-room`).
    pub fn from_request(session: SessionId, req: Request) -> Option<Command> {
        Some(match req {
            Request::LeaveRoom => Command::Leave { session },
            Request::LoadSong(r) => Command::Load { session, song: r.song, autoplay: r.autoplay },
            Request::PausePlayback => Command::Pause { session },
            Request::ResumePlayback => Command::Resume { session },
            Request::SeekPlayback(r) => Command::Seek { session, position_ms: r.position_ms },
            Request::SetRate(r) => Command::SetRate { session, rate: r.rate },
            Request::UpdatePlayback(r) => {
                Command::Update { session, song_id: r.song_id, position_ms: r.position_ms, is_playing: r.is_playing }
            }
            Request::GetPlaybackState => Command::GetPlayback { session },
            Request::QueueAdd(r) => Command::QueueAdd { session, song: r.song },
            Request::QueueRemove(r) => Command::QueueRemove { session, item_id: r.item_id },
            Request::QueueMove(r) => Command::QueueMove { session, item_id: r.item_id, to_index: r.to_index },
            Request::PlayNext => Command::PlayNext { session },
            Request::TransferHost(r) => Command::TransferHost { session, to: r.session_id },
            Request::SetReady(r) => Command::SetReady { session, ready: r.ready },
            Request::UpdateSettings(r) => Command::UpdateSettings { session, patch: r.settings },
            Request::ReportDrift(r) => Command::ReportDrift { session, drift_ms: r.drift_ms },
            Request::GetMembers(r) => Command::GetMembers {
                session,
                offset: r.offset,
                limit: r.limit.unwrap_or(200).min(crate::protocol::MAX_MEMBERS_PAGE),
            },
            Request::TimeSync(_) | Request::CreateRoom(_) | Request::JoinRoom(_) => return None,
        })
    }
}

/// An output for the driver to carry out, in order.
#[derive(Debug, Clone, PartialEq)]
pub enum Effect {
    /// Durable state changed: write [`Room::record`] before carrying out anything after this.
    Persist,
    /// Send to every member (except one, if set).
    Broadcast { push: Push, except: Option<SessionId> },
    /// Send to one member.
    Send { to: SessionId, push: Push },
    /// Reply data for the session that sent the command.
    Reply(Value),
    /// The room is closed; the driver drops it.
    Closed,
}

#[derive(Debug, Clone, PartialEq)]
struct Member {
    session: SessionId,
    name: String,
    joined_at: Millis,
    ready: bool,
    connected: bool,
    drift_ms: Option<f64>,
}

/// Members in join order (longest-present first) with O(log n) lookup by session id, so a
/// 10,000-member room does not scan a list on every command.
#[derive(Debug, Clone, PartialEq, Default)]
struct Members {
    by_seq: BTreeMap<u64, Member>,
    seq_of: BTreeMap<SessionId, u64>,
    next_seq: u64,
}

impl Members {
    fn get(&self, session: &str) -> Option<&Member> {
        self.seq_of.get(session).and_then(|seq| self.by_seq.get(seq))
    }
    fn get_mut(&mut self, session: &str) -> Option<&mut Member> {
        self.seq_of.get(session).and_then(|seq| self.by_seq.get_mut(seq))
    }
    fn iter(&self) -> impl Iterator<Item = &Member> {
        self.by_seq.values()
    }
    fn iter_mut(&mut self) -> impl Iterator<Item = &mut Member> {
        self.by_seq.values_mut()
    }
    fn len(&self) -> usize {
        self.by_seq.len()
    }
    fn is_empty(&self) -> bool {
        self.by_seq.is_empty()
    }
    fn push(&mut self, m: Member) {
        let seq = self.next_seq;
        self.next_seq += 1;
        self.seq_of.insert(m.session.clone(), seq);
        self.by_seq.insert(seq, m);
    }
    fn remove(&mut self, session: &str) -> Option<Member> {
        let seq = self.seq_of.remove(session)?;
        self.by_seq.remove(&seq)
    }
}

#[derive(Debug, Clone, PartialEq)]
struct Barrier {
    deadline: Millis,
    waiting: Vec<SessionId>,
}

/// The tenant of rooms created without one (anonymous use).
pub const DEFAULT_TENANT: &str = "default";

fn default_tenant() -> String {
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

/// One listening room.
#[derive(Debug, Clone, PartialEq)]
pub struct Room {
    code: String,
    tenant: String,
    name: String,
    created_at: Millis,
    settings: RoomSettings,
    limits: RoomLimits,
    host: Option<SessionId>,
    members: Members,
    queue: Vec<QueueItem>,
    next_item: u64,
    clock: PlaybackClock,
    barrier: Option<Barrier>,
    host_grace_until: Option<Millis>,
    empty_since: Option<Millis>,
    closed: bool,
}

/// Collects effects; `Persist` is put first when any durable change happened.
#[derive(Default)]
struct Out {
    persist: bool,
    effects: Vec<Effect>,
}

impl Out {
    fn persist(&mut self) {
        self.persist = true;
    }
    fn broadcast(&mut self, push: Push) {
        self.effects.push(Effect::Broadcast { push, except: None });
    }
    fn broadcast_except(&mut self, push: Push, except: &str) {
        self.effects.push(Effect::Broadcast { push, except: Some(except.to_owned()) });
    }
    fn send(&mut self, to: &str, push: Push) {
        self.effects.push(Effect::Send { to: to.to_owned(), push });
    }
    fn reply(&mut self, v: Value) {
        self.effects.push(Effect::Reply(v));
    }
    fn finish(mut self) -> Vec<Effect> {
        if self.persist {
            self.effects.insert(0, Effect::Persist);
        }
        self.effects
    }
}

/// Validates a client-supplied `positionMs`.
fn check_position(pos: Millis) -> Result<(), RoomError> {
    if clock::valid_position(pos) {
        Ok(())
    } else {
        Err(RoomError::Invalid("positionMs must be a finite, non-negative number".into()))
    }
}

fn clean_name(name: &str, max_chars: usize) -> String {
    name.trim().chars().filter(|c| !c.is_control()).take(max_chars).collect()
}

impl Room {
    /// A new, empty room. The driver then sends [`Command::Join`] for its creator.
    pub fn new(code: String, name: &str, settings: RoomSettings, limits: RoomLimits, now: Millis) -> Room {
        let name = clean_name(name, limits.max_name_chars);
        Room {
            code,
            tenant: default_tenant(),
            name,
            created_at: now,
            settings,
            limits,
            host: None,
            members: Members::default(),
            queue: Vec::new(),
            next_item: 1,
            clock: PlaybackClock { server_time: now, ..PlaybackClock::default() },
            barrier: None,
            host_grace_until: None,
            empty_since: Some(now),
            closed: false,
        }
    }

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

    /// Sets the owning tenant; rooms are invisible to sessions of other tenants.
    pub fn with_tenant(mut self, tenant: impl Into<String>) -> Room {
        self.tenant = tenant.into();
        self
    }

    pub fn code(&self) -> &str {
        &self.code
    }
    pub fn tenant(&self) -> &str {
        &self.tenant
    }
    pub fn host(&self) -> Option<&str> {
        self.host.as_deref()
    }
    pub fn clock(&self) -> &PlaybackClock {
        &self.clock
    }
    pub fn queue(&self) -> &[QueueItem] {
        &self.queue
    }
    pub fn settings(&self) -> &RoomSettings {
        &self.settings
    }
    pub fn is_closed(&self) -> bool {
        self.closed
    }
    pub fn member_count(&self) -> usize {
        self.members.len()
    }
    pub fn is_member(&self, session: &str) -> bool {
        self.member(session).is_some()
    }
    /// Session ids of all members, longest-present first.
    pub fn member_ids(&self) -> impl Iterator<Item = &str> {
        self.members.iter().map(|m| m.session.as_str())
    }

    /// The playback state as sent to clients.
    pub fn playback(&self) -> PlaybackState {
        PlaybackState::from_clock(&self.clock, self.barrier.is_some())
    }

    pub fn info(&self) -> RoomInfo {
        RoomInfo {
            code: self.code.clone(),
            name: self.name.clone(),
            created_at: self.created_at,
            settings: self.settings.clone(),
        }
    }

    /// Members `offset..offset + limit`, longest-present first.
    pub fn members_page(&self, offset: usize, limit: usize) -> Vec<MemberInfo> {
        self.members.iter().skip(offset).take(limit).map(|m| self.member_info(m)).collect()
    }

    /// The members listed in a snapshot: the first `snapshot_members`, and the host always.
    pub fn members(&self) -> Vec<MemberInfo> {
        let mut list = self.members_page(0, self.limits.snapshot_members);
        if let Some(h) = self.host.as_deref().and_then(|h| self.member(h))
            && !list.iter().any(|m| m.session_id == h.session)
        {
            list.push(self.member_info(h));
        }
        list
    }

    /// Presence news (member joined, left, updated): to everyone in rooms up to
    /// `presence_broadcast_max` members, to the host only above that.
    fn presence(&self, out: &mut Out, push: Push, except: Option<&str>) {
        if self.members.len() <= self.limits.presence_broadcast_max {
            match except {
                Some(e) => out.broadcast_except(push, e),
                None => out.broadcast(push),
            }
        } else if let Some(h) = self.host.as_deref()
            && Some(h) != except
            && self.member(h).is_some()
        {
            out.send(h, push);
        }
    }

    /// The snapshot a (re)joining member receives.
    pub fn joined_snapshot(&self, you: &str, now: Millis) -> RoomJoined {
        RoomJoined {
            room: self.info(),
            you: you.to_owned(),
            members: self.members(),
            member_count: self.members.len(),
            host: self.host.clone(),
            queue: self.queue.clone(),
            playback: self.playback(),
            server_time: now,
            should_start_at: self.clock.position_at(now),
        }
    }

    /// The earliest server time at which [`Command::Tick`] has something to do.
    pub fn next_deadline(&self) -> Option<Millis> {
        [
            self.host_grace_until,
            self.barrier.as_ref().map(|b| b.deadline),
            self.clock.end_time(),
            self.empty_since.map(|t| t + self.limits.empty_ttl_ms),
        ]
        .into_iter()
        .flatten()
        .reduce(f64::min)
    }

    fn member(&self, session: &str) -> Option<&Member> {
        self.members.get(session)
    }
    fn member_mut(&mut self, session: &str) -> Option<&mut Member> {
        self.members.get_mut(session)
    }
    fn member_info(&self, m: &Member) -> MemberInfo {
        MemberInfo {
            session_id: m.session.clone(),
            name: m.name.clone(),
            joined_at: m.joined_at,
            is_host: self.host.as_deref() == Some(m.session.as_str()),
            ready: m.ready,
            connected: m.connected,
            drift_ms: m.drift_ms,
        }
    }
    fn member_updated(&self, session: &str) -> Option<Push> {
        self.member(session).map(|m| Push::MemberUpdated(MemberUpdated { member: self.member_info(m) }))
    }

    fn ensure_member(&self, session: &str) -> Result<(), RoomError> {
        if self.member(session).is_some() { Ok(()) } else { Err(RoomError::NotInRoom) }
    }
    fn ensure_host(&self, session: &str) -> Result<(), RoomError> {
        self.ensure_member(session)?;
        if self.host.as_deref() == Some(session) { Ok(()) } else { Err(RoomError::NotHost) }
    }
    fn ensure_control(&self, session: &str) -> Result<(), RoomError> {
        self.ensure_member(session)?;
        if self.settings.anyone_can_control || self.host.as_deref() == Some(session) {
            Ok(())
        } else {
            Err(RoomError::NotHost)
        }
    }

    /// The host is missing: none, not a member, or disconnected past its grace period.
    fn host_vacant(&self, now: Millis) -> bool {
        match self.host.as_deref().and_then(|h| self.member(h)) {
            None => self.host.is_none() || self.host_grace_until.is_none_or(|t| now >= t),
            Some(m) => !m.connected && self.host_grace_until.is_none_or(|t| now >= t),
        }
    }

    fn set_host(&mut self, new: Option<SessionId>, out: &mut Out) {
        if self.host == new {
            return;
        }
        let previous = core::mem::replace(&mut self.host, new.clone());
        self.host_grace_until = None;
        out.persist();
        out.broadcast(Push::HostChanged(HostChanged { host: new, previous }));
    }

    /// Hands the host role to the longest-present connected member other than the current host.
    fn hand_over(&mut self, out: &mut Out) {
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

    /// The lead time for a start: the room's start delay, at least the barrier lead if the
    /// barrier released it.
    fn start_at(&self, now: Millis, from_barrier: bool) -> Millis {
        let lead = if from_barrier {
            self.settings.start_delay_ms.max(BARRIER_START_LEAD_MS)
        } else {
            self.settings.start_delay_ms
        };
        now + lead
    }

    /// Starts playback, through the ready barrier if the room uses one and someone is not ready.
    fn request_start(&mut self, now: Millis) {
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

    fn release_barrier(&mut self, now: Millis, out: &mut Out) {
        if self.barrier.take().is_some() {
            let at = self.start_at(now, true);
            self.clock.play(now, at);
            out.persist();
            out.broadcast(Push::PlaybackResumed(self.playback()));
        }
    }

    /// A load or seek invalidates every member's buffer.
    fn reset_ready(&mut self) {
        if self.settings.ready_barrier {
            for m in self.members.iter_mut() {
                m.ready = false;
            }
        }
    }

    fn load(&mut self, song: Song, autoplay: bool, now: Millis, out: &mut Out) {
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
    fn advance(&mut self, now: Millis, out: &mut Out) {
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

    fn playback_reply(&self, now: Millis) -> Value {
        json!({ "playback": self.playback(), "serverTime": now, "positionMs": self.clock.position_at(now) })
    }

    /// Applies one command at server time `now`.
    pub fn apply(&mut self, cmd: Command, now: Millis) -> Result<Vec<Effect>, RoomError> {
        if self.closed {
            return Err(RoomError::Closed);
        }
        let mut out = Out::default();
        match cmd {
            Command::Join { session, name } => self.join(session, name, now, &mut out)?,
            Command::Leave { session } => {
                self.ensure_member(&session)?;
                self.remove_member(&session, now, &mut out);
                out.reply(json!({}));
            }
            Command::Disconnect { session } => {
                let Some(m) = self.member_mut(&session) else { return Ok(Vec::new()) };
                m.connected = false;
                if self.host.as_deref() == Some(session.as_str()) {
                    self.host_grace_until = Some(now + self.limits.host_grace_ms);
                }
                self.drop_from_barrier(&session, now, &mut out);
                if let Some(p) = self.member_updated(&session) {
                    self.presence(&mut out, p, Some(&session));
                }
            }
            Command::Reconnect { session } => {
                let Some(m) = self.member_mut(&session) else { return Err(RoomError::NotInRoom) };
                m.connected = true;
                if self.host.as_deref() == Some(session.as_str()) {
                    self.host_grace_until = None;
                } else if self.host_vacant(now) {
                    self.set_host(Some(session.clone()), &mut out);
                }
                out.send(&session, Push::RoomJoined(Box::new(self.joined_snapshot(&session, now))));
                if let Some(p) = self.member_updated(&session) {
                    self.presence(&mut out, p, Some(&session));
                }
            }
            Command::Load { session, song, autoplay } => {
                self.ensure_control(&session)?;
                song.validate().map_err(RoomError::Invalid)?;
                self.load(song, autoplay, now, &mut out);
                out.reply(self.playback_reply(now));
            }
            Command::Pause { session } => {
                self.ensure_control(&session)?;
                if self.clock.song.is_none() {
                    return Err(RoomError::NoSong);
                }
                let cancelled = self.barrier.take().is_some();
                let paused = self.clock.pause(now);
                if paused || cancelled {
                    if !paused {
                        // Only the pending start went away (`awaitingReady` flips): still a new
                        // state, so it needs a new rev or clients ordering by rev drop it.
                        self.clock.rev += 1;
                    }
                    out.persist();
                    out.broadcast(Push::PlaybackPaused(self.playback()));
                }
                out.reply(self.playback_reply(now));
            }
            Command::Resume { session } => {
                self.ensure_control(&session)?;
                if self.clock.song.is_none() {
                    if self.queue.is_empty() {
                        return Err(RoomError::NoSong);
                    }
                    self.advance(now, &mut out);
                } else if !self.clock.is_playing && self.barrier.is_none() {
                    if self.clock.duration().is_some_and(|d| self.clock.position_at(now) >= d) {
                        // Resuming a song that stopped at its end plays it again from the start.
                        self.clock.seek(0.0, now);
                    }
                    self.request_start(now);
                    if self.barrier.is_some() {
                        // Held by the ready barrier: the clock did not move, but the pushed state
                        // (`awaitingReady`) did, so it needs a new rev like any other change.
                        self.clock.rev += 1;
                    }
                    out.persist();
                    out.broadcast(Push::PlaybackResumed(self.playback()));
                }
                out.reply(self.playback_reply(now));
            }
            Command::Seek { session, position_ms } => {
                self.ensure_control(&session)?;
                check_position(position_ms)?;
                if self.clock.song.is_none() {
                    return Err(RoomError::NoSong);
                }
                let wants_play = self.clock.is_playing || self.barrier.is_some();
                if self.settings.ready_barrier && wants_play {
                    // Everyone re-buffers at the new position; play resumes through the barrier.
                    self.barrier = None;
                    self.clock.pause(now);
                    self.clock.seek(position_ms, now);
                    self.reset_ready();
                    self.request_start(now);
                } else {
                    self.clock.seek(position_ms, now);
                }
                out.persist();
                out.broadcast(Push::PlaybackSeeked(self.playback()));
                out.reply(self.playback_reply(now));
            }
            Command::SetRate { session, rate } => {
                self.ensure_control(&session)?;
                if !clock::valid_rate(rate) {
                    return Err(RoomError::Invalid(format!(
                        "rate must be between {} and {}",
                        clock::MIN_RATE,
                        clock::MAX_RATE
                    )));
                }
                self.clock.set_rate(rate, now);
                out.persist();
                out.broadcast(Push::PlaybackStateUpdate(self.playback()));
                out.reply(self.playback_reply(now));
            }
            Command::Update { session, song_id, position_ms, is_playing } => {
                self.ensure_control(&session)?;
                check_position(position_ms)?;
                let current = self.clock.song.as_ref().map(|s| s.id.as_str());
                let song_changed = match &song_id {
                    Some(id) => Some(id.as_str()) != current,
                    None => false,
                };
                if song_changed {
                    let id = song_id.unwrap_or_default();
                    let song = match self.queue.iter().position(|q| q.song.id == id) {
                        Some(i) => self.queue.remove(i).song,
                        None => Song { id, ..Song::default_for_id() },
                    };
                    song.validate().map_err(RoomError::Invalid)?;
                    self.clock.load(song, now, None);
                } else if self.clock.song.is_none() {
                    return Err(RoomError::NoSong);
                }
                self.barrier = None;
                self.clock.set(position_ms, is_playing, now);
                out.persist();
                if song_changed {
                    out.broadcast(Push::SongChanged(self.playback()));
                    out.broadcast(Push::QueueUpdated(QueueUpdated { queue: self.queue.clone() }));
                } else {
                    out.broadcast(Push::PlaybackStateUpdate(self.playback()));
                }
                out.reply(self.playback_reply(now));
            }
            Command::GetPlayback { session } => {
                self.ensure_member(&session)?;
                out.reply(self.playback_reply(now));
            }
            Command::QueueAdd { session, song } => {
                self.ensure_member(&session)?;
                song.validate().map_err(RoomError::Invalid)?;
                if self.queue.len() >= self.limits.max_queue {
                    return Err(RoomError::QueueFull(self.limits.max_queue));
                }
                let item_id = format!("q{}", self.next_item);
                self.next_item += 1;
                self.queue.push(QueueItem { item_id: item_id.clone(), song, added_by: Some(session), added_at: now });
                out.persist();
                out.broadcast(Push::QueueUpdated(QueueUpdated { queue: self.queue.clone() }));
                out.reply(json!({ "itemId": item_id, "queue": self.queue }));
            }
            Command::QueueRemove { session, item_id } => {
                self.ensure_member(&session)?;
                let i = self.queue.iter().position(|q| q.item_id == item_id).ok_or(RoomError::ItemNotFound)?;
                if self.queue[i].added_by.as_deref() != Some(session.as_str()) {
                    self.ensure_control(&session)?;
                }
                self.queue.remove(i);
                out.persist();
                out.broadcast(Push::QueueUpdated(QueueUpdated { queue: self.queue.clone() }));
                out.reply(json!({ "queue": self.queue }));
            }
            Command::QueueMove { session, item_id, to_index } => {
                self.ensure_control(&session)?;
                let i = self.queue.iter().position(|q| q.item_id == item_id).ok_or(RoomError::ItemNotFound)?;
                let item = self.queue.remove(i);
                let to = to_index.min(self.queue.len());
                self.queue.insert(to, item);
                out.persist();
                out.broadcast(Push::QueueUpdated(QueueUpdated { queue: self.queue.clone() }));
                out.reply(json!({ "queue": self.queue }));
            }
            Command::PlayNext { session } => {
                self.ensure_control(&session)?;
                self.advance(now, &mut out);
                out.reply(self.playback_reply(now));
            }
            Command::TransferHost { session, to } => {
                self.ensure_host(&session)?;
                // Only to someone who is here: a disconnected host would leave the room uncontrolled.
                if !self.member(&to).is_some_and(|m| m.connected) {
                    return Err(RoomError::MemberNotFound);
                }
                self.set_host(Some(to), &mut out);
                out.reply(json!({ "host": self.host }));
            }
            Command::SetReady { session, ready } => {
                let m = self.member_mut(&session).ok_or(RoomError::NotInRoom)?;
                if m.ready != ready {
                    m.ready = ready;
                    if let Some(p) = self.member_updated(&session) {
                        self.presence(&mut out, p, None);
                    }
                }
                if ready {
                    self.drop_from_barrier(&session, now, &mut out);
                }
                out.reply(json!({ "ready": ready, "playback": self.playback() }));
            }
            Command::UpdateSettings { session, patch } => {
                self.ensure_host(&session)?;
                self.settings.apply_patch(&patch)?;
                if !self.settings.ready_barrier {
                    self.release_barrier(now, &mut out);
                }
                out.persist();
                out.broadcast(Push::SettingsUpdated(SettingsUpdated { settings: self.settings.clone() }));
                out.reply(json!({ "settings": self.settings }));
            }
            Command::ReportDrift { session, drift_ms } => {
                if !drift_ms.is_finite() {
                    return Err(RoomError::Invalid("driftMs must be a finite number".into()));
                }
                let m = self.member_mut(&session).ok_or(RoomError::NotInRoom)?;
                m.drift_ms = Some(drift_ms);
                out.reply(json!({}));
            }
            Command::GetMembers { session, offset, limit } => {
                self.ensure_member(&session)?;
                out.reply(json!({
                    "members": self.members_page(offset, limit),
                    "total": self.members.len(),
                    "offset": offset,
                }));
            }
            Command::Tick => self.tick(now, &mut out),
            Command::Describe => out.reply(serde_json::json!({
                "room": self.info(),
                "host": self.host,
                "memberCount": self.members.len(),
                "playback": self.playback(),
                "queueLength": self.queue.len(),
            })),
            Command::Close { reason } => self.close(reason, &mut out),
        }
        Ok(out.finish())
    }

    fn join(&mut self, session: SessionId, name: String, now: Millis, out: &mut Out) -> Result<(), RoomError> {
        let name = clean_name(&name, self.limits.max_name_chars);
        if let Some(m) = self.member_mut(&session) {
            // Joining again is a re-sync: same member, fresh snapshot.
            m.connected = true;
            if !name.is_empty() {
                m.name = name;
            }
        } else {
            if self.members.len() >= self.limits.max_members {
                return Err(RoomError::RoomFull(self.limits.max_members));
            }
            let name = if name.is_empty() { format!("Guest {}", self.members.len() + 1) } else { name };
            // A late joiner is not in any pending barrier: it never holds the others.
            self.members.push(Member {
                session: session.clone(),
                name,
                joined_at: now,
                ready: !self.settings.ready_barrier || self.barrier.is_none(),
                connected: true,
                drift_ms: None,
            });
            self.empty_since = None;
            if let Some(m) = self.member(&session) {
                let push = Push::MemberJoined(MemberJoined { member: self.member_info(m) });
                self.presence(out, push, Some(&session));
            }
        }
        if self.host.as_deref() == Some(session.as_str()) {
            self.host_grace_until = None;
        } else if self.host_vacant(now) {
            self.set_host(Some(session.clone()), out);
        }
        let snapshot = self.joined_snapshot(&session, now);
        out.reply(json!({ "room": snapshot.room, "code": self.code }));
        out.send(&session, Push::RoomJoined(Box::new(snapshot)));
        Ok(())
    }

    fn remove_member(&mut self, session: &str, now: Millis, out: &mut Out) {
        self.members.remove(session);
        self.presence(out, Push::MemberLeft(MemberLeft { session_id: session.to_owned() }), None);
        if self.host.as_deref() == Some(session) {
            self.hand_over(out);
        }
        self.drop_from_barrier(session, now, out);
        if self.members.is_empty() {
            self.empty_since = Some(now);
        }
    }

    fn drop_from_barrier(&mut self, session: &str, now: Millis, out: &mut Out) {
        if let Some(b) = &mut self.barrier {
            b.waiting.retain(|s| s != session);
            if b.waiting.is_empty() {
                self.release_barrier(now, out);
            }
        }
    }

    fn tick(&mut self, now: Millis, out: &mut Out) {
        if self.host_grace_until.is_some_and(|t| now >= t) {
            let host_present = self.host.as_deref().and_then(|h| self.member(h)).is_some_and(|m| m.connected);
            if host_present {
                self.host_grace_until = None;
            } else {
                self.hand_over(out);
            }
        }
        if self.barrier.as_ref().is_some_and(|b| now >= b.deadline) {
            self.release_barrier(now, out);
        }
        if self.clock.has_ended(now) {
            if self.queue.is_empty() {
                // Stop at the end of the last song; the song stays loaded.
                self.clock.pause(now);
                out.persist();
                out.broadcast(Push::PlaybackPaused(self.playback()));
            } else {
                self.advance(now, out);
            }
        }
        if self.members.is_empty() && self.empty_since.is_some_and(|t| now >= t + self.limits.empty_ttl_ms) {
            self.close("empty".into(), out);
        }
    }

    fn close(&mut self, reason: String, out: &mut Out) {
        self.closed = true;
        self.barrier = None;
        out.persist();
        out.broadcast(Push::RoomClosed(RoomClosed { code: self.code.clone(), reason }));
        out.effects.push(Effect::Closed);
    }
}

impl Song {
    /// A song known only by id (seed 000's `current_song_id`).
    fn default_for_id() -> Song {
        Song {
            id: String::new(),
            title: String::new(),
            provider: Default::default(),
            url: String::new(),
            duration_ms: 0.0,
        }
    }
}
