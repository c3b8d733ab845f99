//! The room directory: where does room X live — here (a handle to its actor) or on another
//! node.
//!
//! The engine asks the directory before every room request; it never keeps its own map of
//! rooms. A room is in the directory while this node owns it (it created it, or restored it at
//! start: the store's ownership record says so, [`crate::store::Lease`]); its actor takes itself
//! out when it closes or loses its lease. [`LocalDirectory`] is the single-node directory: every
//! room it knows is here and any other room does not exist. A cluster directory implements the
//! same trait and answers [`Location::Node`] for a room another node owns.

use std::{
    collections::HashMap,
    sync::{Arc, Mutex},
};

use futures_util::future::BoxFuture;
use unisono_core::{
    RoomCommand,
    protocol::{ErrorBody, ErrorCode, MemberInfo},
};

use super::rooms::{RoomHandle, RoomResult};

/// Where a room lives.
#[derive(Clone)]
pub enum Location {
    /// On this node: its actor.
    Here(RoomHandle),
    /// On another node (by id): requests for it are forwarded there.
    Node(Arc<str>),
}

/// The directory couldn't answer (a cluster directory whose shared state is unreachable).
#[derive(Debug, Clone, thiserror::Error)]
#[error("the room directory is unavailable: {0}")]
pub struct DirectoryError(pub String);

/// Where rooms live, and the rooms this node owns.
pub trait Directory: Send + Sync + 'static {
    /// Where room `code` lives; `None` when no node holds it.
    fn locate<'a>(&'a self, code: &'a str) -> BoxFuture<'a, Result<Option<Location>, DirectoryError>>;
    /// Takes the lease of room `code` for this node (a room it creates or restores, or one it
    /// takes over): false if another node holds it.
    fn acquire<'a>(&'a self, code: &'a str) -> BoxFuture<'a, Result<bool, DirectoryError>>;
    /// Whether this node takes over open rooms that no node holds (a cluster's, whose owner is
    /// gone). A single node never does: every room it may own it created or restored at start.
    fn takes_over(&self) -> bool;
    /// Sends a command to room `code` of `tenant` on node `node`, which owns it, and waits for
    /// the answer.
    fn forward<'a>(
        &'a self,
        node: &'a str,
        tenant: &'a str,
        code: &'a str,
        cmd: RoomCommand,
    ) -> BoxFuture<'a, RoomResult>;
    /// This node now owns the room of `handle`.
    fn insert(&self, handle: RoomHandle);
    /// This node no longer owns room `code` (closed, or its lease was lost).
    fn remove(&self, code: &str);
    /// The rooms this node owns.
    fn owned(&self) -> Vec<RoomHandle>;
    /// How many rooms this node owns.
    fn count(&self) -> usize;
    /// How many rooms of `tenant` this node owns.
    fn count_of(&self, tenant: &str) -> usize;

    /// Member `member` of room `code` (which this node owns) is connected through `node`.
    /// A cluster directory records it in shared state, so that a node taking the room over
    /// knows the members its dead owner had ([`Directory::members`]); a single node keeps
    /// nothing (its members are all its own).
    fn member_here(&self, code: &str, node: &str, member: &MemberInfo) {
        let _ = (code, node, member);
    }
    /// Session `session` left room `code`.
    fn member_gone(&self, code: &str, session: &str) {
        let _ = (code, session);
    }
    /// Room `code` closed: its members are forgotten.
    fn forget_members(&self, code: &str) {
        let _ = code;
    }
    /// The members recorded for room `code`, with the node each is on.
    fn members<'a>(&'a self, code: &'a str) -> BoxFuture<'a, Vec<(String, MemberInfo)>> {
        let _ = code;
        Box::pin(std::future::ready(Vec::new()))
    }
}

/// The directory of a single node.
#[derive(Default)]
pub struct LocalDirectory {
    rooms: Mutex<HashMap<String, RoomHandle>>,
}

impl LocalDirectory {
    /// Whether this node owns room `code`.
    pub fn owns(&self, code: &str) -> bool {
        self.lock().contains_key(code)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, RoomHandle>> {
        self.rooms.lock().unwrap_or_else(|e| e.into_inner())
    }
}

impl Directory for LocalDirectory {
    fn locate<'a>(&'a self, code: &'a str) -> BoxFuture<'a, Result<Option<Location>, DirectoryError>> {
        let found = self.lock().get(code).cloned().map(Location::Here);
        Box::pin(std::future::ready(Ok(found)))
    }

    fn insert(&self, handle: RoomHandle) {
        let mut rooms = self.lock();
        rooms.insert(handle.code.to_string(), handle);
        crate::metrics::METRICS.rooms.set(rooms.len() as i64);
    }

    fn remove(&self, code: &str) {
        let mut rooms = self.lock();
        rooms.remove(code);
        crate::metrics::METRICS.rooms.set(rooms.len() as i64);
    }

    fn owned(&self) -> Vec<RoomHandle> {
        self.lock().values().cloned().collect()
    }

    fn count(&self) -> usize {
        self.lock().len()
    }

    fn count_of(&self, tenant: &str) -> usize {
        self.lock().values().filter(|h| *h.tenant == *tenant).count()
    }

    /// One node holds every lease it asks for.
    fn acquire<'a>(&'a self, _code: &'a str) -> BoxFuture<'a, Result<bool, DirectoryError>> {
        Box::pin(std::future::ready(Ok(true)))
    }

    fn takes_over(&self) -> bool {
        false
    }

    fn forward<'a>(&'a self, node: &'a str, _: &'a str, _: &'a str, _: RoomCommand) -> BoxFuture<'a, RoomResult> {
        let e = ErrorBody::new(ErrorCode::ClusterUnavailable, format!("node {node} is not in this node's cluster"));
        Box::pin(std::future::ready(Err(e)))
    }
}
