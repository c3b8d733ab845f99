//! Sessions: identity that outlives a connection, and a restart.
//!
//! A session is created on connect and gets a resume token. When its connection drops it stays
//! for a grace period; `/ws?resume=TOKEN` within that period attaches a new connection to the
//! same session, with its room and host role.
//!
//! Resume tokens are signed, not stored: `ID.ISSUED.MAC`, the session id, the issue time and an
//! HMAC-SHA256 over both and the principal, under a key derived from the server secret (which
//! lives in the data dir or the config, like the JWT secret). A token therefore still proves
//! its session after a restart or after the grace period: the connection gets the same session
//! id back (without room, which the client re-joins), so a host who re-joins its restored room
//! is still its host. Tokens older than [`RESUME_TOKEN_MAX_AGE_MS`] are refused (a fresh
//! session), and every attach issues a new one.

use std::{
    collections::HashMap,
    net::IpAddr,
    sync::{Arc, Mutex},
};

use rand::Rng;

use unisono_core::protocol::MemberInfo;

use crate::{auth::Principal, bus::Outbox};

/// One session (its id is its key in [`Sessions`]; its resume token is signed, not stored).
pub struct Session {
    /// The live connection's queue; `None` while disconnected.
    pub outbox: Option<Outbox>,
    /// Increments on every (re)connection, so a stale disconnect cannot end a newer one.
    pub conn: u64,
    /// Code of the room the session is in.
    pub room: Option<String>,
    /// Address of the peer of the latest connection (for per-address limits).
    pub ip: Option<IpAddr>,
    /// Who the session is; its tenant scopes every room it can see. Shared with the
    /// connection's attachment (one copy per session).
    pub principal: Arc<Principal>,
    /// The session's entry in its room, as the room last answered it (re-announced to the
    /// room's new owner when the room moves to another node).
    pub member: Option<Box<MemberInfo>>,
}

impl Session {
    /// Its room entry, connected as it is now.
    fn member_now(&self) -> Option<MemberInfo> {
        let mut m = MemberInfo::clone(self.member.as_deref()?);
        m.connected = self.outbox.is_some();
        Some(m)
    }
}

/// A resume token older than this starts a new session (one day).
pub const RESUME_TOKEN_MAX_AGE_MS: u64 = 24 * 3600 * 1000;

/// All sessions of this server.
pub struct Sessions {
    inner: Mutex<Inner>,
    key: [u8; 32],
}

#[derive(Default)]
struct Inner {
    by_id: HashMap<String, Session>,
}

fn mac(key: &[u8; 32], id: &str, issued: &str, p: &Principal) -> String {
    let parts = [id, issued, &p.tenant, &p.sub, p.role.as_str()].map(str::as_bytes);
    crate::auth::hmac_sha256(key, &parts)[..16].iter().map(|b| format!("{b:02x}")).collect()
}

/// Signs a resume token for session `id` of `principal`, issued at `now_ms`.
pub fn sign(key: &[u8; 32], id: &str, principal: &Principal, now_ms: u64) -> String {
    let issued = format!("{now_ms:x}");
    let mac = mac(key, id, &issued, principal);
    format!("{id}.{issued}.{mac}")
}

/// The session id of a genuine, unexpired token of `principal`.
pub fn verify<'t>(key: &[u8; 32], token: &'t str, principal: &Principal, now_ms: u64) -> Option<&'t str> {
    let mut parts = token.split('.');
    let (id, issued, given) = (parts.next()?, parts.next()?, parts.next()?);
    if parts.next().is_some() || id.is_empty() || id.len() > 64 {
        return None;
    }
    let at = u64::from_str_radix(issued, 16).ok()?;
    if now_ms.saturating_sub(at) > RESUME_TOKEN_MAX_AGE_MS {
        return None;
    }
    let expected = mac(key, id, issued, principal);
    // Constant-time comparison: the MAC is the secret part.
    let same =
        expected.len() == given.len() && expected.bytes().zip(given.bytes()).fold(0, |d, (a, b)| d | (a ^ b)) == 0;
    same.then_some(id)
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
    /// `key` signs the resume tokens ([`crate::auth::Auth::resume_key`]).
    pub fn new(key: [u8; 32]) -> Sessions {
        Sessions { inner: Mutex::default(), key }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        // A panic while holding this lock would be a bug; keep serving with the data as is.
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Attaches a connection: resumes the session of `resume` if the token is genuine and
    /// belongs to the same principal (with its room if the session is still here, with its id
    /// only after a restart or its grace period), else creates one.
    pub fn attach(
        &self,
        resume: Option<&str>,
        outbox: Outbox,
        ip: Option<IpAddr>,
        principal: Arc<Principal>,
    ) -> Attached {
        let now = crate::time::now_ms().max(0.0) as u64;
        let mut inner = self.lock();
        let claimed = resume.and_then(|t| verify(&self.key, t, &principal, now)).map(str::to_owned);
        if let Some(id) = &claimed
            && let Some(s) = inner.by_id.get_mut(id)
            && *s.principal == *principal
        {
            let replaced = s.outbox.replace(outbox);
            s.conn += 1;
            s.ip = ip;
            return Attached {
                id: id.clone(),
                resume_token: sign(&self.key, id, &principal, now),
                conn: s.conn,
                resumed: true,
                room: s.room.clone(),
                replaced,
            };
        }
        // A genuine token whose session is gone (restart, grace over) keeps its id.
        let id = match claimed {
            Some(id) if !inner.by_id.contains_key(&id) => id,
            _ => random_id(12),
        };
        let resume_token = sign(&self.key, &id, &principal, now);
        inner
            .by_id
            .insert(id.clone(), Session { outbox: Some(outbox), conn: 1, room: None, ip, principal, member: None });
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
        crate::metrics::METRICS.sessions.set(inner.by_id.len() as i64);
        Some(s.room)
    }

    pub fn outbox(&self, id: &str) -> Option<Outbox> {
        self.lock().by_id.get(id).and_then(|s| s.outbox.clone())
    }

    /// The live connection of session `id` of `tenant` (`None` for another tenant's session).
    pub fn outbox_in(&self, tenant: &str, id: &str) -> Option<Outbox> {
        self.lock().by_id.get(id).filter(|s| s.principal.tenant == tenant).and_then(|s| s.outbox.clone())
    }

    pub fn room(&self, id: &str) -> Option<String> {
        self.lock().by_id.get(id).and_then(|s| s.room.clone())
    }

    /// The session's room, and its entry there (`None`: no room).
    pub fn set_member(&self, id: &str, room: Option<(String, MemberInfo)>) {
        if let Some(s) = self.lock().by_id.get_mut(id) {
            let (room, member) = room.unzip();
            s.room = room;
            s.member = member.map(Box::new);
        }
    }

    /// The session's entry in its room, as the room last answered it.
    pub fn member(&self, id: &str) -> Option<MemberInfo> {
        self.lock().by_id.get(id).and_then(Session::member_now)
    }

    /// The rooms this node's sessions are in: (tenant, code) → the sessions' entries there.
    pub fn members_by_room(&self) -> HashMap<(String, String), Vec<MemberInfo>> {
        let mut out: HashMap<(String, String), Vec<MemberInfo>> = HashMap::new();
        for s in self.lock().by_id.values() {
            if let (Some(room), Some(m)) = (&s.room, s.member_now()) {
                out.entry((s.principal.tenant.clone(), room.clone())).or_default().push(m);
            }
        }
        out
    }

    pub fn set_room(&self, id: &str, room: Option<String>) {
        if let Some(s) = self.lock().by_id.get_mut(id) {
            if room.is_none() {
                s.member = None;
            }
            s.room = room;
        }
    }

    /// Clears the room of a session only if it is still `code`.
    pub fn clear_room_if(&self, id: &str, code: &str) {
        if let Some(s) = self.lock().by_id.get_mut(id)
            && s.room.as_deref() == Some(code)
        {
            s.room = None;
            s.member = None;
        }
    }

    /// The tenant of a session and the room it is in (`None`: no such session, or no room).
    pub fn tenant_and_room(&self, id: &str) -> Option<(String, String)> {
        let inner = self.lock();
        let s = inner.by_id.get(id)?;
        Some((s.principal.tenant.clone(), s.room.clone()?))
    }

    /// The tenant of a session.
    pub fn tenant(&self, id: &str) -> Option<String> {
        self.lock().by_id.get(id).map(|s| s.principal.tenant.clone())
    }

    pub fn ip(&self, id: &str) -> Option<IpAddr> {
        self.lock().by_id.get(id).and_then(|s| s.ip)
    }

    /// Who session `id` is.
    pub fn principal(&self, id: &str) -> Option<Arc<Principal>> {
        self.lock().by_id.get(id).map(|s| s.principal.clone())
    }

    /// The connected sessions of `tenant`, as peers see them.
    pub fn seen(&self, tenant: &str) -> Vec<super::peers::SeenSession> {
        self.lock()
            .by_id
            .iter()
            .filter(|(_, s)| s.outbox.is_some() && s.principal.tenant == tenant)
            .map(|(id, s)| super::peers::SeenSession {
                session: id.clone(),
                sub: s.principal.sub.clone(),
                ip: s.ip,
                room: s.room.clone(),
            })
            .collect()
    }

    /// The outboxes of the connected sessions of `tenant` whose principal passes `keep`.
    pub fn outboxes_where(&self, tenant: &str, keep: impl Fn(&Principal) -> bool) -> Vec<Outbox> {
        self.lock()
            .by_id
            .values()
            .filter(|s| s.principal.tenant == tenant && keep(&s.principal))
            .filter_map(|s| s.outbox.clone())
            .collect()
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::auth::Role;

    fn alice() -> Principal {
        Principal { sub: "alice".into(), tenant: "acme".into(), role: Role::User }
    }

    #[test]
    fn tokens_verify_for_their_principal_only() {
        let key = [7; 32];
        let t = sign(&key, "abc123", &alice(), 1_000);
        assert_eq!(verify(&key, &t, &alice(), 2_000), Some("abc123"));
        let bob = Principal { sub: "bob".into(), ..alice() };
        assert_eq!(verify(&key, &t, &bob, 2_000), None, "another principal");
        assert_eq!(verify(&[8; 32], &t, &alice(), 2_000), None, "another key");
        assert_eq!(verify(&key, &t, &alice(), 1_000 + RESUME_TOKEN_MAX_AGE_MS + 1), None, "too old");
        let forged = t.replacen("abc123", "abc124", 1);
        assert_eq!(verify(&key, &forged, &alice(), 2_000), None, "another id");
        for bad in ["", "x", "a.b", "a.b.c.d", "abc123.zz.00", ".3e8.00"] {
            assert_eq!(verify(&key, bad, &alice(), 2_000), None, "{bad:?}");
        }
    }

    #[test]
    fn a_genuine_token_keeps_its_id_after_a_restart() {
        let (out, _inbox) = Outbox::new(4);
        let before = Sessions::new([1; 32]);
        let a = before.attach(None, out.clone(), None, alice().into());
        // A new server with the same secret: no session in memory.
        let after = Sessions::new([1; 32]);
        let b = after.attach(Some(&a.resume_token), out.clone(), None, alice().into());
        assert_eq!((b.id.as_str(), b.resumed), (a.id.as_str(), false));
        // Same server: a resume of a live session is a resume.
        let c = after.attach(Some(&b.resume_token), out.clone(), None, alice().into());
        assert_eq!((c.id.as_str(), c.resumed, c.conn), (a.id.as_str(), true, 2));
        // Another secret: a new session.
        let other = Sessions::new([2; 32]);
        assert_ne!(other.attach(Some(&a.resume_token), out, None, alice().into()).id, a.id);
    }
}
