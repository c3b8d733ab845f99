//! The room's inputs ([`RoomCommand`]) and outputs ([`RoomEffect`]).

use crate::prelude::*;

use serde::{Deserialize, Serialize};

use super::SessionId;
use crate::{
    Millis,
    protocol::{Push, Request, RoomReply, RoomSettingsPatch},
    song::Song,
};

/// An input to the room. Serializable, so that a node can send one to the room's owner.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "command", rename_all = "camelCase", rename_all_fields = "camelCase")]
pub enum RoomCommand {
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
    /// A member re-announced by the node its session is on, after the room moved to a new owner
    /// (members are not durable): added as it was, silently (no push, nothing to store).
    Restore {
        member: crate::protocol::MemberInfo,
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

impl RoomCommand {
    /// True if the command can never change durable state (no need to keep a rollback copy).
    pub fn is_read_only(&self) -> bool {
        matches!(
            self,
            RoomCommand::GetPlayback { .. }
                | RoomCommand::ReportDrift { .. }
                | RoomCommand::GetMembers { .. }
                | RoomCommand::Describe
        )
    }

    /// Maps a protocol request of `session` to a room command. `None` for requests that are not
    /// about the session's current room (`time-sync`, `create-room`, `join-room`).
    pub fn from_request(session: SessionId, req: Request) -> Option<RoomCommand> {
        Some(match req {
            Request::LeaveRoom => RoomCommand::Leave { session },
            Request::LoadSong(r) => RoomCommand::Load { session, song: r.song, autoplay: r.autoplay },
            Request::PausePlayback => RoomCommand::Pause { session },
            Request::ResumePlayback => RoomCommand::Resume { session },
            Request::SeekPlayback(r) => RoomCommand::Seek { session, position_ms: r.position_ms },
            Request::SetRate(r) => RoomCommand::SetRate { session, rate: r.rate },
            Request::UpdatePlayback(r) => RoomCommand::Update {
                session,
                song_id: r.song_id,
                position_ms: r.position_ms,
                is_playing: r.is_playing,
            },
            Request::GetPlaybackState => RoomCommand::GetPlayback { session },
            Request::QueueAdd(r) => RoomCommand::QueueAdd { session, song: r.song },
            Request::QueueRemove(r) => RoomCommand::QueueRemove { session, item_id: r.item_id },
            Request::QueueMove(r) => RoomCommand::QueueMove { session, item_id: r.item_id, to_index: r.to_index },
            Request::PlayNext => RoomCommand::PlayNext { session },
            Request::TransferHost(r) => RoomCommand::TransferHost { session, to: r.session_id },
            Request::SetReady(r) => RoomCommand::SetReady { session, ready: r.ready },
            Request::UpdateSettings(r) => RoomCommand::UpdateSettings { session, patch: r.settings },
            Request::ReportDrift(r) => RoomCommand::ReportDrift { session, drift_ms: r.drift_ms },
            Request::GetMembers(r) => RoomCommand::GetMembers {
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
pub enum RoomEffect {
    /// Durable state changed: write [`Room::record`] before carrying out anything after this.
    Persist,
    /// Send to every member (except one, if set).
    Broadcast { push: Push, except: Option<SessionId> },
    /// Send to one member.
    Send { to: SessionId, push: Push },
    /// Reply data for the session that sent the command.
    Reply(RoomReply),
    /// The room is closed; the driver drops it.
    Closed,
}
