//! Every live connection by a public id, with its tenant: what operators act on (forced
//! disconnect over REST) and what server-side publishing reaches (`POST /api/publish`).
//!
//! Ids: a room session's `sessionId` (both edges), and the Socket.IO socket id of every
//! Socket.IO connection (`connection-status.socketId` for browsers; devices and admins).

use std::{
    collections::HashMap,
    sync::{
        Mutex,
        atomic::{AtomicU64, Ordering},
    },
};

use crate::bus::{Outbox, Outgoing};

/// What a connection is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Kind {
    /// A browser or app using rooms (`/ws` or Socket.IO `/`).
    Browser,
    /// A device on `/players`.
    Device,
    /// A device admin on `/admin`.
    Admin,
}

struct Entry {
    tenant: String,
    kind: Kind,
    outbox: Outbox,
    device: Option<String>,
    token: u64,
}

/// The registry; one per engine.
#[derive(Default)]
pub struct Connections {
    by_id: Mutex<HashMap<String, Entry>>,
    next: AtomicU64,
}

/// What an operator or publisher does to connections of one tenant, by public id: here, or on
/// another node of the cluster (serializable, so that it can be sent there).
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
#[serde(tag = "op", rename_all = "camelCase", rename_all_fields = "camelCase")]
pub enum ConnectionOp {
    /// Close connection `id` ([`CLOSE_OPERATOR`]).
    Disconnect { id: String },
    /// Send a frame (its `/ws` text, `{event, data}`) to every browser and admin connection.
    ToTenant { text: String },
    /// … to the connections of device `id`.
    ToDevice { id: String, text: String },
    /// … to connection `id`.
    ToConnection { id: String, text: String },
}

impl ConnectionOp {
    /// Whether it is about one connection (which lives on one node only).
    pub fn is_one(&self) -> bool {
        matches!(self, ConnectionOp::Disconnect { .. } | ConnectionOp::ToConnection { .. })
    }
}

/// Close code sent to a connection an operator disconnected.
pub const CLOSE_OPERATOR: u16 = 4009;

impl Connections {
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, Entry>> {
        self.by_id.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Registers a connection; returns the token to pass to [`Connections::remove`] (so a stale
    /// removal cannot drop a newer connection of the same id).
    pub fn add(&self, id: &str, tenant: &str, kind: Kind, outbox: Outbox, device: Option<String>) -> u64 {
        let token = self.next.fetch_add(1, Ordering::Relaxed);
        self.lock().insert(id.to_owned(), Entry { tenant: tenant.to_owned(), kind, outbox, device, token });
        token
    }

    pub fn remove(&self, id: &str, token: u64) {
        let mut map = self.lock();
        if map.get(id).is_some_and(|e| e.token == token) {
            map.remove(id);
        }
    }

    /// Marks a device connection with the device it registered as.
    pub fn set_device(&self, id: &str, device: &str) {
        if let Some(e) = self.lock().get_mut(id) {
            e.device = Some(device.to_owned());
        }
    }

    /// Closes connection `id` of `tenant`. False if no such connection in that tenant.
    pub fn disconnect(&self, tenant: &str, id: &str) -> bool {
        let map = self.lock();
        match map.get(id) {
            Some(e) if e.tenant == tenant => {
                e.outbox.close(CLOSE_OPERATOR, "disconnected by an operator");
                true
            }
            _ => false,
        }
    }

    /// Does `op` to `tenant`'s connections here; how many it reached.
    pub fn apply(&self, tenant: &str, op: &ConnectionOp) -> usize {
        let frame = |text: &str| match Outgoing::from_text(text.to_owned()) {
            Ok(f) => Some(f),
            Err(e) => {
                tracing::warn!(error = %e, "a frame to deliver that does not decode");
                None
            }
        };
        match op {
            ConnectionOp::Disconnect { id } => usize::from(self.disconnect(tenant, id)),
            ConnectionOp::ToTenant { text } => {
                frame(text).map_or(0, |f| self.to_tenant(tenant, &[Kind::Browser, Kind::Admin], &f))
            }
            ConnectionOp::ToDevice { id, text } => frame(text).map_or(0, |f| self.to_device(tenant, id, &f)),
            ConnectionOp::ToConnection { id, text } => frame(text).map_or(0, |f| self.to_connection(tenant, id, f)),
        }
    }

    /// Closes every connection (shutdown).
    pub fn close_all(&self, code: u16, reason: &'static str) {
        for e in self.lock().values() {
            e.outbox.close(code, reason);
        }
    }

    /// Sends a frame to every connection of `tenant` of the given kinds; returns how many.
    pub fn to_tenant(&self, tenant: &str, kinds: &[Kind], frame: &Outgoing) -> usize {
        let map = self.lock();
        let mut n = 0;
        for e in map.values().filter(|e| e.tenant == tenant && kinds.contains(&e.kind)) {
            if e.outbox.push(frame.clone()) {
                n += 1;
            }
        }
        n
    }

    /// Sends a frame to connection `id` of `tenant`.
    pub fn to_connection(&self, tenant: &str, id: &str, frame: Outgoing) -> usize {
        match self.lock().get(id) {
            Some(e) if e.tenant == tenant => usize::from(e.outbox.push(frame)),
            _ => 0,
        }
    }

    /// Sends a frame to the connections of device `device` of `tenant`.
    pub fn to_device(&self, tenant: &str, device: &str, frame: &Outgoing) -> usize {
        let map = self.lock();
        map.values()
            .filter(|e| e.tenant == tenant && e.device.as_deref() == Some(device))
            .filter(|e| e.outbox.push(frame.clone()))
            .count()
    }

    /// Connections per (tenant, kind): counts only, for staff.
    pub fn counts(&self) -> Vec<(String, Kind, usize)> {
        let mut counts: HashMap<(String, Kind), usize> = HashMap::new();
        for e in self.lock().values() {
            *counts.entry((e.tenant.clone(), e.kind)).or_default() += 1;
        }
        let mut v: Vec<_> = counts.into_iter().map(|((t, k), n)| (t, k, n)).collect();
        v.sort_by(|a, b| (&a.0, a.1 as u8).cmp(&(&b.0, b.1 as u8)));
        v
    }
}
