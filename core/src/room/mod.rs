//! The room state machine: members, host, permissions, queue, ready barrier and host hand-over.
//!
//! A [`Room`] is a plain value. [`Room::apply`] takes a [`RoomCommand`] and the current server time
//! and returns the [`RoomEffect`]s for the driver to carry out, in order:
//! [`RoomEffect::Persist`] always comes first when durable state changed, so a driver that writes
//! before sending anything never acknowledges or broadcasts a change it could lose.
//! Timers are not run here: the driver asks [`Room::next_deadline`] and sends [`RoomCommand::Tick`]
//! when it passes (host grace, ready-barrier timeout, end of song, empty-room TTL).

mod command;
mod host;
mod limits;
mod members;
mod playback;
mod record;

use crate::prelude::*;

use crate::{
    Millis,
    clock::{self, PlaybackClock},
    protocol::{
        ErrorCode, HostReply, InvalidSettings, MembersPage, PlaybackState, Push, QueueItem, QueueReply, QueueUpdated,
        ReadyReply, RoomClosed, RoomDescription, RoomInfo, RoomJoined, RoomReply, RoomSettings, SettingsReply,
        SettingsUpdated,
    },
    song::Song,
};

pub use command::{RoomCommand, RoomEffect};
pub use limits::RoomLimits;
use record::default_tenant;
pub use record::{DEFAULT_TENANT, RoomRecord};

use members::Members;
use playback::Barrier;

/// A session's id: opaque, server-assigned.
pub type SessionId = String;

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

impl From<InvalidSettings> for RoomError {
    fn from(e: InvalidSettings) -> Self {
        RoomError::Invalid(e.0)
    }
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
    effects: Vec<RoomEffect>,
}

impl Out {
    fn persist(&mut self) {
        self.persist = true;
    }
    fn broadcast(&mut self, push: Push) {
        self.effects.push(RoomEffect::Broadcast { push, except: None });
    }
    fn broadcast_except(&mut self, push: Push, except: &str) {
        self.effects.push(RoomEffect::Broadcast { push, except: Some(except.to_owned()) });
    }
    fn send(&mut self, to: &str, push: Push) {
        self.effects.push(RoomEffect::Send { to: to.to_owned(), push });
    }
    fn reply(&mut self, v: RoomReply) {
        self.effects.push(RoomEffect::Reply(v));
    }
    fn finish(mut self) -> Vec<RoomEffect> {
        if self.persist {
            self.effects.insert(0, RoomEffect::Persist);
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
    /// A new, empty room. The driver then sends [`RoomCommand::Join`] for its creator.
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

    /// The earliest server time at which [`RoomCommand::Tick`] has something to do.
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

    /// Applies one command at server time `now`.
    pub fn apply(&mut self, cmd: RoomCommand, now: Millis) -> Result<Vec<RoomEffect>, RoomError> {
        if self.closed {
            return Err(RoomError::Closed);
        }
        let mut out = Out::default();
        match cmd {
            RoomCommand::Join { session, name } => self.join(session, name, now, &mut out)?,
            RoomCommand::Leave { session } => {
                self.ensure_member(&session)?;
                self.remove_member(&session, now, &mut out);
                out.reply(RoomReply::Done);
            }
            RoomCommand::Disconnect { session } => {
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
            RoomCommand::Reconnect { session } => {
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
            RoomCommand::Restore { member } => {
                self.restore_member(member, now)?;
                out.reply(RoomReply::Done);
            }
            RoomCommand::Load { session, song, autoplay } => {
                self.ensure_control(&session)?;
                song.validate().map_err(RoomError::Invalid)?;
                self.load(song, autoplay, now, &mut out);
                out.reply(self.playback_reply(now));
            }
            RoomCommand::Pause { session } => {
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
            RoomCommand::Resume { session } => {
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
            RoomCommand::Seek { session, position_ms } => {
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
            RoomCommand::SetRate { session, rate } => {
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
            RoomCommand::Update { session, song_id, position_ms, is_playing } => {
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
            RoomCommand::GetPlayback { session } => {
                self.ensure_member(&session)?;
                out.reply(self.playback_reply(now));
            }
            RoomCommand::QueueAdd { session, song } => {
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
                out.reply(RoomReply::Queue(QueueReply { item_id: Some(item_id), queue: self.queue.clone() }));
            }
            RoomCommand::QueueRemove { session, item_id } => {
                self.ensure_member(&session)?;
                let i = self.queue.iter().position(|q| q.item_id == item_id).ok_or(RoomError::ItemNotFound)?;
                if self.queue[i].added_by.as_deref() != Some(session.as_str()) {
                    self.ensure_control(&session)?;
                }
                self.queue.remove(i);
                out.persist();
                out.broadcast(Push::QueueUpdated(QueueUpdated { queue: self.queue.clone() }));
                out.reply(RoomReply::Queue(QueueReply { item_id: None, queue: self.queue.clone() }));
            }
            RoomCommand::QueueMove { session, item_id, to_index } => {
                self.ensure_control(&session)?;
                let i = self.queue.iter().position(|q| q.item_id == item_id).ok_or(RoomError::ItemNotFound)?;
                let item = self.queue.remove(i);
                let to = to_index.min(self.queue.len());
                self.queue.insert(to, item);
                out.persist();
                out.broadcast(Push::QueueUpdated(QueueUpdated { queue: self.queue.clone() }));
                out.reply(RoomReply::Queue(QueueReply { item_id: None, queue: self.queue.clone() }));
            }
            RoomCommand::PlayNext { session } => {
                self.ensure_control(&session)?;
                self.advance(now, &mut out);
                out.reply(self.playback_reply(now));
            }
            RoomCommand::TransferHost { session, to } => {
                self.ensure_host(&session)?;
                // Only to someone who is here: a disconnected host would leave the room uncontrolled.
                if !self.member(&to).is_some_and(|m| m.connected) {
                    return Err(RoomError::MemberNotFound);
                }
                self.set_host(Some(to), &mut out);
                out.reply(RoomReply::Host(HostReply { host: self.host.clone() }));
            }
            RoomCommand::SetReady { session, ready } => {
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
                out.reply(RoomReply::Ready(ReadyReply { ready, playback: self.playback() }));
            }
            RoomCommand::UpdateSettings { session, patch } => {
                self.ensure_host(&session)?;
                self.settings.apply_patch(&patch)?;
                if !self.settings.ready_barrier {
                    self.release_barrier(now, &mut out);
                }
                out.persist();
                out.broadcast(Push::SettingsUpdated(SettingsUpdated { settings: self.settings.clone() }));
                out.reply(RoomReply::Settings(SettingsReply { settings: self.settings.clone() }));
            }
            RoomCommand::ReportDrift { session, drift_ms } => {
                if !drift_ms.is_finite() {
                    return Err(RoomError::Invalid("driftMs must be a finite number".into()));
                }
                let m = self.member_mut(&session).ok_or(RoomError::NotInRoom)?;
                m.drift_ms = Some(drift_ms);
                out.reply(RoomReply::Done);
            }
            RoomCommand::GetMembers { session, offset, limit } => {
                self.ensure_member(&session)?;
                out.reply(RoomReply::Members(MembersPage {
                    members: self.members_page(offset, limit),
                    total: self.members.len(),
                    offset,
                }));
            }
            RoomCommand::Tick => self.tick(now, &mut out),
            RoomCommand::Describe => out.reply(RoomReply::Description(Box::new(RoomDescription {
                room: self.info(),
                host: self.host.clone(),
                member_count: self.members.len(),
                playback: self.playback(),
                queue_length: self.queue.len(),
            }))),
            RoomCommand::Close { reason } => self.close(reason, &mut out),
        }
        Ok(out.finish())
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
        out.effects.push(RoomEffect::Closed);
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
