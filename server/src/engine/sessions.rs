//! Sessions: identity that outlives a connection.
//!
//! A session is created on connect and gets a secret resume token. When its connection drops it
//! stays for a grace period; `/ws?resume=TOKEN` within that period attaches a new connection to
//! the same session, with its room and host role.

use std::{collections::HashMap, net::IpAddr, sync::Mutex};

use rand::Rng;

use crate::{
    auth::Principal,
    bus::{Frame, Outbox},
};

/// One session.
pub struct Session {
    pub id: String,
    pub resume_token: String,
    /// The live connection's queue; `None` while disconnected.
    pub outbox: Option<Outbox>,
    /// Increments on every (re)connection, so a stale disconnect cannot end a newer one.
    pub conn: u64,
    /// Code of the room the session is in.
    pub room: Option<String>,
    /// Address of the peer of the latest connection (for per-address limits).
    pub ip: Option<IpAddr>,
    /// Who the session is; its tenant scopes every room it can see.
    pub principal: Principal,
}

/// All sessions of this server.
#[derive(Default)]
pub struct Sessions {
    inner: Mutex<Inner>,
}

#[derive(Default)]
struct Inner {
    by_id: HashMap<String, Session>,
    by_token: HashMap<String, String>,
}

fn random_id(len: usize) -> String {
    const ALPHABET: &[u8] = b"abcdefghijkmnopqrstuvwxyzABCDEFGHJKLMNPQRSTUVWXYZ23456789";
    let mut rng = rand::rng();
    (0..len).map(|_| ALPHABET[rng.random_range(0..ALPHABET.len())] as char).collect()
}

/// What [`Sessions::attach`] did.
pub struct Attached {
    pub id: String,
    pub resume_token: String,
    pub conn: u64,
    pub resumed: bool,
    pub room: Option<String>,
    /// The connection this one replaced (a resume while the old one was still open).
    pub replaced: Option<Outbox>,
}

impl Sessions {
    pub fn new() -> Sessions {
        Sessions::default()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        // A panic while holding this lock would be a bug; keep serving with the data as is.
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Attaches a connection: resumes the session of `resume` if it exists and belongs to the
    /// same principal, else creates one.
    pub fn attach(&self, resume: Option<&str>, outbox: Outbox, ip: Option<IpAddr>, principal: Principal) -> Attached {
        let mut inner = self.lock();
        if let Some(token) = resume
            && let Some(id) = inner.by_token.get(token).cloned()
            && let Some(s) = inner.by_id.get_mut(&id)
            && s.principal == principal
        {
            let replaced = s.outbox.replace(outbox);
            s.conn += 1;
            s.ip = ip;
            return Attached {
                id,
                resume_token: s.resume_token.clone(),
                conn: s.conn,
                resumed: true,
                room: s.room.clone(),
                replaced,
            };
        }
        let id = random_id(12);
        let resume_token = random_id(32);
        inner.by_token.insert(resume_token.clone(), id.clone());
        inner.by_id.insert(
            id.clone(),
            Session {
                id: id.clone(),
                resume_token: resume_token.clone(),
                outbox: Some(outbox),
                conn: 1,
                room: None,
                ip,
                principal,
            },
        );
        crate::metrics::METRICS.sessions.set(inner.by_id.len() as i64);
        Attached { id, resume_token, conn: 1, resumed: false, room: None, replaced: None }
    }

    /// Marks the session disconnected if `conn` is still its connection. Returns its room.
    pub fn detach(&self, id: &str, conn: u64) -> Option<Option<String>> {
        let mut inner = self.lock();
        let s = inner.by_id.get_mut(id)?;
        if s.conn != conn {
            return None;
        }
        s.outbox = None;
        Some(s.room.clone())
    }

    /// Removes the session if it is still disconnected from connection `conn`. Returns its room.
    pub fn expire(&self, id: &str, conn: u64) -> Option<Option<String>> {
        let mut inner = self.lock();
        let s = inner.by_id.get(id)?;
        if s.conn != conn || s.outbox.is_some() {
            return None;
        }
        let s = inner.by_id.remove(id)?;
        inner.by_token.remove(&s.resume_token);
        crate::metrics::METRICS.sessions.set(inner.by_id.len() as i64);
        Some(s.room)
    }

    pub fn outbox(&self, id: &str) -> Option<Outbox> {
        self.lock().by_id.get(id).and_then(|s| s.outbox.clone())
    }

    pub fn room(&self, id: &str) -> Option<String> {
        self.lock().by_id.get(id).and_then(|s| s.room.clone())
    }

    pub fn set_room(&self, id: &str, room: Option<String>) {
        if let Some(s) = self.lock().by_id.get_mut(id) {
            s.room = room;
        }
    }

    /// Clears the room of a session only if it is still `code`.
    pub fn clear_room_if(&self, id: &str, code: &str) {
        if let Some(s) = self.lock().by_id.get_mut(id)
            && s.room.as_deref() == Some(code)
        {
            s.room = None;
        }
    }

    /// The tenant of a session.
    pub fn tenant(&self, id: &str) -> Option<String> {
        self.lock().by_id.get(id).map(|s| s.principal.tenant.clone())
    }

    pub fn ip(&self, id: &str) -> Option<IpAddr> {
        self.lock().by_id.get(id).and_then(|s| s.ip)
    }

    /// Sends a frame to one session, if connected.
    pub fn send(&self, id: &str, frame: Frame) -> bool {
        match self.outbox(id) {
            Some(o) => o.push(frame),
            None => false,
        }
    }

    /// Every live connection's outbox (for shutdown).
    pub fn all_outboxes(&self) -> Vec<Outbox> {
        self.lock().by_id.values().filter_map(|s| s.outbox.clone()).collect()
    }

    pub fn len(&self) -> usize {
        self.lock().by_id.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}
