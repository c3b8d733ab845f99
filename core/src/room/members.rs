//! Members: who is in the room, join order, presence news, and who may do what.

use crate::prelude::*;

use alloc::collections::BTreeMap;

use super::{Out, Room, RoomError, SessionId, clean_name};
use crate::{
    Millis,
    protocol::{JoinedReply, MemberInfo, MemberJoined, MemberLeft, MemberUpdated, Push, RoomReply},
};

#[derive(Debug, Clone, PartialEq)]
pub(super) struct Member {
    pub(super) session: SessionId,
    pub(super) name: String,
    pub(super) joined_at: Millis,
    pub(super) ready: bool,
    pub(super) connected: bool,
    pub(super) drift_ms: Option<f64>,
}

/// Members in join order (longest-present first) with O(log n) lookup by session id, so a
/// 10,000-member room does not scan a list on every command.
#[derive(Debug, Clone, PartialEq, Default)]
pub(super) struct Members {
    pub(super) by_seq: BTreeMap<u64, Member>,
    pub(super) seq_of: BTreeMap<SessionId, u64>,
    pub(super) next_seq: u64,
}

impl Members {
    pub(super) fn get(&self, session: &str) -> Option<&Member> {
        self.seq_of.get(session).and_then(|seq| self.by_seq.get(seq))
    }
    pub(super) fn get_mut(&mut self, session: &str) -> Option<&mut Member> {
        self.seq_of.get(session).and_then(|seq| self.by_seq.get_mut(seq))
    }
    pub(super) fn iter(&self) -> impl Iterator<Item = &Member> {
        self.by_seq.values()
    }
    pub(super) fn iter_mut(&mut self) -> impl Iterator<Item = &mut Member> {
        self.by_seq.values_mut()
    }
    pub(super) fn len(&self) -> usize {
        self.by_seq.len()
    }
    pub(super) fn is_empty(&self) -> bool {
        self.by_seq.is_empty()
    }
    pub(super) fn push(&mut self, m: Member) {
        let seq = self.next_seq;
        self.next_seq += 1;
        self.seq_of.insert(m.session.clone(), seq);
        self.by_seq.insert(seq, m);
    }
    pub(super) fn remove(&mut self, session: &str) -> Option<Member> {
        let seq = self.seq_of.remove(session)?;
        self.by_seq.remove(&seq)
    }
}

impl Room {
    /// [`RoomCommand::Restore`](super::RoomCommand::Restore): the member as its node knew it.
    pub(super) fn restore_member(&mut self, m: MemberInfo, now: Millis) -> Result<(), RoomError> {
        if let Some(known) = self.member_mut(&m.session_id) {
            known.connected = known.connected || m.connected;
        } else {
            if self.members.len() >= self.limits.max_members {
                return Err(RoomError::RoomFull(self.limits.max_members));
            }
            self.members.push(Member {
                session: m.session_id.clone(),
                name: clean_name(&m.name, self.limits.max_name_chars),
                joined_at: m.joined_at,
                ready: m.ready,
                connected: m.connected,
                drift_ms: m.drift_ms,
            });
            self.empty_since = None;
        }
        // A host back before its grace ended keeps the role.
        if self.host.as_deref() == Some(m.session_id.as_str()) && m.connected {
            self.host_grace_until = None;
        }
        let _ = now;
        Ok(())
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
    pub(super) fn presence(&self, out: &mut Out, push: Push, except: Option<&str>) {
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

    pub(super) fn member(&self, session: &str) -> Option<&Member> {
        self.members.get(session)
    }

    pub(super) fn member_mut(&mut self, session: &str) -> Option<&mut Member> {
        self.members.get_mut(session)
    }

    pub(super) fn member_info(&self, m: &Member) -> MemberInfo {
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

    pub(super) fn member_updated(&self, session: &str) -> Option<Push> {
        self.member(session).map(|m| Push::MemberUpdated(MemberUpdated { member: self.member_info(m) }))
    }

    pub(super) fn ensure_member(&self, session: &str) -> Result<(), RoomError> {
        if self.member(session).is_some() { Ok(()) } else { Err(RoomError::NotInRoom) }
    }

    pub(super) fn ensure_host(&self, session: &str) -> Result<(), RoomError> {
        self.ensure_member(session)?;
        if self.host.as_deref() == Some(session) { Ok(()) } else { Err(RoomError::NotHost) }
    }

    pub(super) fn ensure_control(&self, session: &str) -> Result<(), RoomError> {
        self.ensure_member(session)?;
        if self.settings.anyone_can_control || self.host.as_deref() == Some(session) {
            Ok(())
        } else {
            Err(RoomError::NotHost)
        }
    }

    pub(super) fn join(
        &mut self,
        session: SessionId,
        name: String,
        now: Millis,
        out: &mut Out,
    ) -> Result<(), RoomError> {
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
        let member = self.member(&session).map(|m| self.member_info(m));
        let member = member.ok_or(RoomError::NotInRoom)?;
        out.reply(RoomReply::Joined(JoinedReply { code: self.code.clone(), room: snapshot.room.clone(), member }));
        out.send(&session, Push::RoomJoined(Box::new(snapshot)));
        Ok(())
    }

    pub(super) fn remove_member(&mut self, session: &str, now: Millis, out: &mut Out) {
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
}
