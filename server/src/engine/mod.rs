//! The engine: rooms, sessions, devices, tenants and connections, independent of any wire
//! protocol.
//!
//! Edges (`/ws`, the Socket.IO namespaces, REST) attach a connection with [`Engine::attach`]
//! ([`lifecycle`]), which returns the [`Attachment`] they pass each request to, typed
//! ([`EdgeRequest`]); dropping it (or [`Attachment::detach`]) detaches the connection. The
//! engine never sees a socket: messages leave through the connection's
//! [`Outbox`](crate::bus::Outbox). Three seams carry everything that a cluster changes:
//! - the [`directory`] says where a room lives (here: its actor, [`rooms`]; or another node);
//! - the ownership record in the store ([`crate::store::Lease`]) says which node may write it;
//! - the [`Bus`] carries a room's broadcasts and a session's own messages by topic.
//!
//! Devices are one actor per tenant around the core's `DeviceHub` ([`devices`]); sessions
//! ([`sessions`]) map a connection to its room and outlive it for a grace period.

pub mod connections;
pub mod devices;
pub mod directory;
pub mod hubs;
pub mod lifecycle;
pub mod member_nodes;
pub mod peers;
pub mod rooms;
pub mod sessions;

use std::{
    collections::HashMap,
    net::{IpAddr, Ipv4Addr},
    num::NonZeroU32,
    sync::Arc,
    time::Duration,
};

use governor::{DefaultKeyedRateLimiter, Quota, RateLimiter, clock::Clock};
use rand::Rng;
use serde::Serialize;
use serde_json::value::RawValue;
use tokio_util::{sync::CancellationToken, task::TaskTracker};
use unisono_core::{
    Millis, Room, RoomCommand, code,
    protocol::{
        CreateRoom, ErrorBody, ErrorCode, JoinedReply, MemberInfo, Push, Request, RoomClosed, RoomDescription,
        RoomReply, RoomSettings, TimeSyncReply,
    },
    room::RoomLimits,
};

use crate::{
    auth::Auth,
    bus::{Bus, Outgoing, room_topic},
    metrics::METRICS,
    store::{Store, StoreError},
    time::now_ms,
};
use connections::Connections;
use devices::{Devices, DevicesConfig};
use directory::{Directory, Location};
pub use lifecycle::{Attach, Attachment, EdgeRequest};
use rooms::{RoomHandle, RoomResult};
use sessions::Sessions;

/// A room as the engine reaches it: its actor on this node, or its owner on another.
#[derive(Clone)]
pub(crate) enum RoomRef {
    Here(RoomHandle),
    There { node: Arc<str>, tenant: String, code: String },
}

/// A reply's data, serialized once for whichever edge sends it.
pub type ReplyData = Box<RawValue>;

/// How the engine answers one request.
pub enum Answer {
    /// Answered in order, before the connection's next request is handled.
    Now(Result<ReplyData, ErrorBody>),
    /// Long-running (a device command, a state's commit): answered when done, while later
    /// requests go on.
    Later(futures_util::future::BoxFuture<'static, Result<ReplyData, ErrorBody>>),
}

/// Serializes a reply; a failure is a bug, answered `INTERNAL` and logged, never an empty reply.
pub fn reply_data(v: &impl Serialize) -> Result<ReplyData, ErrorBody> {
    serde_json::value::to_raw_value(v).map_err(|e| {
        tracing::error!(error = %e, "a reply did not serialize");
        ErrorBody::new(ErrorCode::Internal, "the reply could not be serialized")
    })
}

/// Engine limits and timers, from configuration.
#[derive(Debug, Clone)]
pub struct EngineConfig {
    /// This node's id: the owner named in the rooms it creates and restores.
    pub node_id: Arc<str>,
    pub limits: RoomLimits,
    pub max_rooms: usize,
    pub max_rooms_per_tenant: usize,
    pub resume_grace: Duration,
    pub joins_per_min: u32,
}

struct Inner {
    config: EngineConfig,
    auth: Arc<Auth>,
    devices: Devices,
    connections: Connections,
    store: Store,
    bus: Arc<dyn Bus>,
    directory: Arc<dyn Directory>,
    sessions: Sessions,
    /// `join-room` attempts per peer address: room codes must not be enumerable, and a new
    /// connection must not buy a fresh allowance.
    joins: DefaultKeyedRateLimiter<IpAddr>,
    /// Every task the engine starts (room and device actors, grace timers, commits), awaited
    /// at shutdown.
    tasks: TaskTracker,
    /// Cancelled at shutdown: ends the engine's own loops and timers.
    stopping: CancellationToken,
    /// Held while a room is taken over, so one room is never restored twice here.
    taking_over: tokio::sync::Mutex<()>,
    started_at: Millis,
    /// This node's link to its cluster, if it is in one (the cluster status).
    cluster: std::sync::OnceLock<crate::cluster::Cluster>,
    /// The peer links (seed 001), told of sessions coming, joining and going.
    watcher: std::sync::OnceLock<Arc<dyn peers::SessionWatcher>>,
}

/// The engine handle; cheap to clone.
#[derive(Clone)]
pub struct Engine {
    inner: Arc<Inner>,
}

/// What the engine is built from.
pub struct Parts {
    pub config: EngineConfig,
    pub store: Store,
    pub bus: Arc<dyn Bus>,
    pub directory: Arc<dyn Directory>,
    pub auth: Arc<Auth>,
    pub devices: DevicesConfig,
    /// Where each tenant's device hub runs, in a cluster (`None`: here).
    pub hubs: Option<Arc<dyn hubs::HubDirectory>>,
}

fn err(code: ErrorCode, msg: impl Into<String>) -> ErrorBody {
    ErrorBody::new(code, msg)
}

fn not_found() -> ErrorBody {
    err(ErrorCode::RoomNotFound, "no open room has this code")
}

/// How many codes creation tries before giving up (each a unique insert; a collision is rare).
const CODE_ATTEMPTS: usize = 16;

impl Engine {
    /// Builds the engine and restores the open rooms this node owns.
    pub async fn start(parts: Parts) -> Result<Engine, StoreError> {
        let Parts { config, store, bus, directory, auth, devices, hubs } = parts;
        let tasks = TaskTracker::new();
        let devices = Devices::start(devices, store.clone(), tasks.clone(), hubs).await?;
        let per_min = NonZeroU32::new(config.joins_per_min.max(1)).unwrap_or(NonZeroU32::MIN);
        let engine = Engine {
            inner: Arc::new(Inner {
                sessions: Sessions::new(auth.resume_key()),
                config,
                auth,
                devices,
                connections: Connections::default(),
                store,
                bus,
                directory,
                joins: RateLimiter::keyed(Quota::per_minute(per_min)),
                tasks,
                stopping: CancellationToken::new(),
                taking_over: tokio::sync::Mutex::new(()),
                started_at: now_ms(),
                cluster: std::sync::OnceLock::new(),
                watcher: std::sync::OnceLock::new(),
            }),
        };
        // Forget addresses whose allowance is full again, so the limiter's memory stays bounded.
        let weak = Arc::downgrade(&engine.inner);
        let stopping = engine.inner.stopping.clone();
        engine.inner.tasks.spawn(async move {
            let mut every = tokio::time::interval(Duration::from_secs(60));
            loop {
                tokio::select! {
                    _ = every.tick() => {}
                    _ = stopping.cancelled() => break,
                }
                let Some(inner) = weak.upgrade() else { break };
                inner.joins.retain_recent();
                inner.joins.shrink_to_fit();
            }
        });
        let now = now_ms();
        let owned = engine.inner.store.claim_rooms(&engine.inner.config.node_id).await?;
        let restored = owned.len();
        for (rec, lease) in owned {
            // A room whose lease another node holds is that node's now (in a cluster).
            match engine.directory().acquire(&rec.code).await {
                Ok(false) => continue,
                Err(e) => tracing::warn!(room = rec.code, error = %e, "could not take a room's lease at start"),
                _ => {}
            }
            let room = Room::restore(rec, engine.inner.config.limits.clone(), now);
            engine.directory().insert(RoomHandle::spawn(room, lease, engine.clone()));
        }
        tracing::info!(restored, node = %engine.inner.config.node_id, "rooms restored");
        Ok(engine)
    }

    /// Every live connection by public id (forced disconnect, publishing).
    pub fn connections(&self) -> &Connections {
        &self.inner.connections
    }
    /// The device registry and command router.
    pub fn devices(&self) -> &Devices {
        &self.inner.devices
    }
    /// Token checks shared by every edge.
    pub fn auth(&self) -> &Auth {
        &self.inner.auth
    }
    pub fn store(&self) -> &Store {
        &self.inner.store
    }
    pub fn bus(&self) -> &dyn Bus {
        &*self.inner.bus
    }
    pub fn directory(&self) -> &dyn Directory {
        &*self.inner.directory
    }
    pub fn sessions(&self) -> &Sessions {
        &self.inner.sessions
    }
    pub fn node_id(&self) -> &Arc<str> {
        &self.inner.config.node_id
    }
    /// Rooms this node owns.
    pub fn room_count(&self) -> usize {
        self.directory().count()
    }
    pub(crate) fn tasks(&self) -> &TaskTracker {
        &self.inner.tasks
    }
    /// This node's cluster, if it is in one.
    pub fn cluster(&self) -> Option<&crate::cluster::Cluster> {
        self.inner.cluster.get()
    }
    pub(crate) fn set_cluster(&self, cluster: crate::cluster::Cluster) {
        let _ = self.inner.cluster.set(cluster);
    }

    /// Does `op` to `tenant`'s connections wherever they are: here, then (for all of a tenant's,
    /// or when the one connection is not here) on every other live node at once, each within
    /// the cluster's request timeout. How many connections it reached; `CLUSTER_UNAVAILABLE`
    /// when it reached none and a node that might have them did not answer.
    pub async fn connections_everywhere(
        &self,
        tenant: &str,
        op: connections::ConnectionOp,
    ) -> Result<usize, ErrorBody> {
        let here = self.connections().apply(tenant, &op);
        let Some(cluster) = self.cluster() else { return Ok(here) };
        if here > 0 && op.is_one() {
            return Ok(here);
        }
        let request = crate::cluster::NodeRequest::Connections { tenant: tenant.to_owned(), op };
        let unavailable = |e: &dyn std::fmt::Display| err(ErrorCode::ClusterUnavailable, format!("the cluster: {e}"));
        let answers = match cluster.ask_others(&request).await {
            Ok(a) => a,
            Err(e) if here == 0 => return Err(unavailable(&e)),
            Err(_) => return Ok(here),
        };
        let mut reached = here;
        let mut failed = None;
        for a in answers {
            match a.map(|raw| serde_json::from_str::<crate::cluster::Reached>(raw.get())) {
                Ok(Ok(r)) => reached += r.reached,
                Ok(Err(e)) => failed = Some(e.to_string()),
                Err(e) => failed = Some(e.to_string()),
            }
        }
        match failed {
            Some(e) if reached == 0 => Err(unavailable(&e)),
            _ => Ok(reached),
        }
    }

    /// The nodes of this node's cluster (this node alone without one), from their registry
    /// entries: a dead node's has expired, so this never waits for one.
    pub async fn cluster_status(&self) -> Result<Vec<crate::cluster::NodeInfo>, ErrorBody> {
        match self.cluster() {
            Some(c) => c.nodes().await.map_err(|e| err(ErrorCode::ClusterUnavailable, e.to_string())),
            None => Ok(vec![crate::cluster::NodeInfo {
                node_id: self.node_id().to_string(),
                address: String::new(),
                started_at: self.inner.started_at,
                rooms: self.room_count(),
                connections: METRICS.connections.get().max(0) as usize,
                device_hubs: self.devices().hub_count(),
            }]),
        }
    }

    /// Cancelled at shutdown.
    pub(crate) fn stopping(&self) -> &CancellationToken {
        &self.inner.stopping
    }

    /// Re-announces this node's members of rooms owned elsewhere to their owners, and takes
    /// over the rooms whose owner is gone (their lease expired): the cluster's directory calls
    /// it every lease renewal, with the owner it saw for each room. Returns the owner now seen
    /// per room, for the next call.
    pub(crate) async fn adopt(
        &self,
        rooms: HashMap<(String, String), Vec<MemberInfo>>,
        owners: &HashMap<String, Option<Arc<str>>>,
        announced: &HashMap<String, Arc<str>>,
        is_dead: impl Fn(&str) -> bool,
        last_owner: impl Fn(&str) -> Option<Arc<str>>,
    ) -> HashMap<String, Arc<str>> {
        let mut seen = HashMap::new();
        for ((tenant, code), members) in rooms {
            let owner = owners.get(&code).cloned().flatten();
            let room = match owner.clone() {
                // Ours: remembered, so that if it moves away (this node was paused past its
                // lease), the new owner learns this node's members.
                Some(node) if *node == **self.node_id() => {
                    seen.insert(code, node);
                    continue;
                }
                Some(node) => RoomRef::There { node, tenant: tenant.clone(), code: code.clone() },
                // Nobody holds it, but its owner lives (Redis lost the lease): it takes the lease
                // again itself.
                None if last_owner(&code).is_some_and(|o| *o != **self.node_id() && !is_dead(&o)) => {
                    if let Some(o) = announced.get(&code) {
                        seen.insert(code, o.clone());
                    }
                    continue;
                }
                // Nobody holds it: take it over, here.
                None => match self.room(&tenant, &code).await {
                    Ok(Some(room @ RoomRef::Here(_))) => room,
                    _ => continue,
                },
            };
            let (node, took_over) = match &room {
                RoomRef::Here(_) => (self.node_id().clone(), true),
                RoomRef::There { node, .. } => (node.clone(), false),
            };
            // Members joined through the owner first seen are known to it; a room taken over
            // here, or whose owner changed since, learns this node's members now.
            let moved = match announced.get(&code) {
                Some(before) => *before != node,
                None => took_over,
            };
            if moved {
                let mut all_ok = true;
                for member in members {
                    if let Err(e) = self.call(&room, RoomCommand::Restore { member }).await {
                        tracing::debug!(room = code, error = %e.message, "re-announcing a member failed");
                        all_ok = false;
                    }
                }
                if !all_ok {
                    continue;
                }
            }
            seen.insert(code, node);
        }
        seen
    }

    /// Takes the members whose node is dead (`is_dead`) out of the rooms this node owns: at
    /// once disconnected, after the resume grace gone (see [`member_nodes`]).
    pub(crate) async fn sweep_members(&self, is_dead: impl Fn(&str) -> bool) {
        let now = std::time::Instant::now();
        for room in self.directory().owned() {
            if room.member_nodes.is_empty() {
                continue;
            }
            for cmd in room.member_nodes.sweep(&is_dead, now, self.inner.config.resume_grace) {
                METRICS.cluster_members_swept.inc();
                room.tell(cmd).await;
            }
        }
    }

    /// The rooms this node's sessions are in: (tenant, code) → the sessions' entries there.
    pub(crate) fn members_by_room(&self) -> HashMap<(String, String), Vec<MemberInfo>> {
        self.inner.sessions.members_by_room()
    }

    /// A command another node forwarded to room `code` of `tenant`, which it found this node
    /// owns.
    pub(crate) async fn serve_forwarded(
        &self,
        tenant: &str,
        code: &str,
        cmd: RoomCommand,
        from: Arc<str>,
    ) -> RoomResult {
        match self.directory().locate(code).await {
            Ok(Some(Location::Here(h))) if *h.tenant == *tenant => h.call_from(cmd, Some(from)).await,
            Ok(Some(Location::Here(_))) => Err(not_found()),
            // Moved (or lost) since the sender looked: it asks again.
            _ => Err(err(ErrorCode::ClusterUnavailable, "the room is not on this node; retry")),
        }
    }

    /// Runs a command on `room`: its actor here, or its owner through the directory.
    pub(crate) async fn call(&self, room: &RoomRef, cmd: RoomCommand) -> RoomResult {
        match room {
            RoomRef::Here(h) => h.call(cmd).await,
            RoomRef::There { node, tenant, code } => self.directory().forward(node, tenant, code, cmd).await,
        }
    }

    /// [`Engine::call`] for a command of `session`: when the room's owner does not know the
    /// session (the room moved to it and this node has not yet told it who is here), the
    /// session is re-announced and the command tried once more.
    pub(crate) async fn call_as(&self, session: &str, room: &RoomRef, cmd: RoomCommand) -> RoomResult {
        let first = self.call(room, cmd.clone()).await;
        let unknown = matches!((&first, room), (Err(e), RoomRef::There { .. }) if e.code == ErrorCode::NotInRoom);
        if !unknown {
            return first;
        }
        let Some(member) = self.inner.sessions.member(session) else { return first };
        match self.call(room, RoomCommand::Restore { member }).await {
            Ok(_) => self.call(room, cmd).await,
            Err(_) => first,
        }
    }

    /// [`Engine::call`] without waiting for the answer (disconnects, expiries).
    pub(crate) async fn tell(&self, room: &RoomRef, cmd: RoomCommand) {
        match room {
            RoomRef::Here(h) => h.tell(cmd).await,
            RoomRef::There { .. } => {
                let (engine, room) = (self.clone(), room.clone());
                self.inner.tasks.spawn(async move {
                    if let Err(e) = engine.call(&room, cmd).await {
                        tracing::debug!(error = %e.message, "a forwarded room command failed");
                    }
                });
            }
        }
    }

    /// The room `code` of `tenant` (`None` also for another tenant's room: no existence leak).
    /// A room with no live owner is taken over (in a cluster) when the store has it open.
    pub(crate) async fn room(&self, tenant: &str, code: &str) -> Result<Option<RoomRef>, ErrorBody> {
        match self.directory().locate(code).await {
            Ok(Some(Location::Here(h))) => Ok((*h.tenant == *tenant).then_some(RoomRef::Here(h))),
            Ok(Some(Location::Node(node))) => {
                Ok(Some(RoomRef::There { node, tenant: tenant.to_owned(), code: code.to_owned() }))
            }
            Ok(None) => self.take_over(tenant, code).await,
            Err(e) => Err(err(ErrorCode::ClusterUnavailable, e.to_string())),
        }
    }

    /// Room `code` has no live owner: if the directory lets this node take it (a cluster node;
    /// never a single one) and the store has it open, restore it here under a new epoch.
    async fn take_over(&self, tenant: &str, code: &str) -> Result<Option<RoomRef>, ErrorBody> {
        let unavailable = |e: directory::DirectoryError| err(ErrorCode::ClusterUnavailable, e.to_string());
        if !self.directory().takes_over() {
            return Ok(None);
        }
        let _one_at_a_time = self.inner.taking_over.lock().await;
        // Taken over here meanwhile?
        if let Ok(Some(Location::Here(h))) = self.directory().locate(code).await {
            return Ok((*h.tenant == *tenant).then_some(RoomRef::Here(h)));
        }
        if !self.directory().acquire(code).await.map_err(unavailable)? {
            return Ok(None);
        }
        match self.inner.store.claim_room(code, &self.inner.config.node_id).await {
            Ok(Some((rec, lease))) => {
                let room = Room::restore(rec, self.inner.config.limits.clone(), now_ms());
                let handle = RoomHandle::spawn(room, lease, self.clone());
                self.directory().insert(handle.clone());
                METRICS.cluster_takeovers.inc();
                tracing::info!(room = code, "took over a room without a live owner");
                // The members recorded on other nodes first, disconnected: a live node
                // re-announces its own (and they are connected again), a dead node's leave after
                // the resume grace ([`member_nodes`]).
                for (node, mut member) in self.directory().members(code).await {
                    if *node != **self.node_id() {
                        member.connected = false;
                        let _ = handle.call_from(RoomCommand::Restore { member }, Some(node.into())).await;
                    }
                }
                // Then this node's own members, at once (other nodes tell theirs when they see
                // the new owner, or when a request of theirs finds it does not know them).
                let here = self.inner.sessions.members_by_room().remove(&(handle.tenant.to_string(), code.to_owned()));
                for member in here.unwrap_or_default() {
                    let _ = handle.call(RoomCommand::Restore { member }).await;
                }
                Ok((*handle.tenant == *tenant).then_some(RoomRef::Here(handle)))
            }
            Ok(None) => {
                self.directory().remove(code);
                Ok(None)
            }
            Err(e) => {
                self.directory().remove(code);
                tracing::error!(room = code, error = %e, "could not claim a room");
                Err(err(ErrorCode::StorageUnavailable, "the room could not be loaded"))
            }
        }
    }

    /// The session's tenant (every request comes from an attached session).
    fn tenant_of(&self, session: &str) -> Result<String, ErrorBody> {
        self.inner.sessions.tenant(session).ok_or_else(|| err(ErrorCode::Internal, "no session"))
    }

    /// Handles one room request of `session`. `received_at` is the server time the frame arrived
    /// (the `t1` of time sync).
    async fn handle_room(&self, session: &str, req: Request, received_at: Millis) -> Result<ReplyData, ErrorBody> {
        match req {
            Request::TimeSync(t) => reply_data(&TimeSyncReply { t0: t.t0, t1: received_at, t2: now_ms() }),
            Request::CreateRoom(c) => {
                let made = self.create_room(session, c).await?;
                self.watch_join(session, &made.code);
                reply_data(&made)
            }
            Request::JoinRoom(j) => {
                let ip = self.inner.sessions.ip(session).unwrap_or(IpAddr::V4(Ipv4Addr::UNSPECIFIED));
                if let Err(not_until) = self.inner.joins.check_key(&ip) {
                    let wait = not_until.wait_time_from(governor::clock::DefaultClock::default().now());
                    return Err(err(
                        ErrorCode::RateLimited,
                        format!("too many join attempts; retry in {} ms", wait.as_millis()),
                    ));
                }
                let code = code::normalize(&j.code).ok_or_else(not_found)?;
                let joined = self.join_room(session, &code, j.name.unwrap_or_default()).await?;
                self.watch_join(session, &code);
                reply_data(&joined)
            }
            Request::LeaveRoom => {
                let tenant = self.tenant_of(session)?;
                let code = self
                    .inner
                    .sessions
                    .room(session)
                    .ok_or_else(|| err(ErrorCode::NotInRoom, "you are not in a room"))?;
                let result = match self.room(&tenant, &code).await {
                    Ok(Some(room)) => self.call(&room, RoomCommand::Leave { session: session.to_owned() }).await,
                    Ok(None) => Ok(RoomReply::Done),
                    Err(e) => Err(e),
                };
                self.bus().unsubscribe(&room_topic(&tenant, &code), session);
                self.inner.sessions.clear_room_if(session, &code);
                reply_data(&result?)
            }
            other => {
                let (tenant, code) = self.inner.sessions.tenant_and_room(session).ok_or_else(|| {
                    match self.inner.sessions.tenant(session) {
                        Some(_) => err(ErrorCode::NotInRoom, "join a room first"),
                        None => err(ErrorCode::Internal, "no session"),
                    }
                })?;
                let room = self.room(&tenant, &code).await?.ok_or_else(|| {
                    self.inner.sessions.clear_room_if(session, &code);
                    err(ErrorCode::RoomClosed, "the room is closed")
                })?;
                let cmd = RoomCommand::from_request(session.to_owned(), other)
                    .ok_or_else(|| err(ErrorCode::Internal, "not a room request"))?;
                reply_data(&self.call_as(session, &room, cmd).await?)
            }
        }
    }

    async fn create_room(&self, session: &str, c: CreateRoom) -> Result<JoinedReply, ErrorBody> {
        let mut settings = RoomSettings::default();
        if let Some(patch) = &c.settings {
            settings.apply_patch(patch).map_err(|e| err(e.code(), e.to_string()))?;
        }
        let tenant = self.tenant_of(session)?;
        if self.directory().count() >= self.inner.config.max_rooms {
            return Err(err(
                ErrorCode::TooManyRooms,
                format!("this server holds at most {} rooms", self.inner.config.max_rooms),
            ));
        }
        // Per tenant across the service: a cluster counts every node's rooms in the shared
        // store (checked before the insert, so rooms created at the same instant on different
        // nodes may pass it together).
        let per_tenant = self.inner.config.max_rooms_per_tenant;
        let held = match self.cluster() {
            Some(_) => self
                .inner
                .store
                .open_rooms_of(&tenant)
                .await
                .map_err(|e| err(ErrorCode::StorageUnavailable, e.to_string()))?,
            None => self.directory().count_of(&tenant),
        };
        if held >= per_tenant {
            return Err(err(ErrorCode::TooManyRooms, format!("a tenant holds at most {per_tenant} open rooms")));
        }
        // A code is taken by inserting its row: unique across every node sharing the database.
        let now = now_ms();
        let mut created = None;
        for _ in 0..CODE_ATTEMPTS {
            let code = code::generate(|| rand::rng().random());
            let room = Room::new(
                code,
                c.name.as_deref().unwrap_or(""),
                settings.clone(),
                self.inner.config.limits.clone(),
                now,
            )
            .with_tenant(tenant.clone());
            match self.inner.store.create_room(&room.record(), &self.inner.config.node_id, now).await {
                Ok(lease) => {
                    created = Some((room, lease));
                    break;
                }
                Err(StoreError::CodeTaken(_)) => continue,
                Err(e) => {
                    tracing::error!(error = %e, "could not store a new room");
                    return Err(err(ErrorCode::StorageUnavailable, "the room could not be stored; nothing changed"));
                }
            }
        }
        let (room, lease) = created.ok_or_else(|| err(ErrorCode::Internal, "no free room code found"))?;
        let code = room.code().to_owned();
        // A new code is nobody's: the lease is this node's (a cluster directory records it).
        let unavailable = |e: directory::DirectoryError| err(ErrorCode::ClusterUnavailable, e.to_string());
        if !self.directory().acquire(&code).await.map_err(unavailable)? {
            return Err(err(ErrorCode::ClusterUnavailable, "the new room's lease could not be taken"));
        }
        self.directory().insert(RoomHandle::spawn(room, lease, self.clone()));
        // Joining makes the creator host, which writes the room: the reply means it is stored.
        match self.join_room(session, &code, c.member_name.unwrap_or_default()).await {
            Ok(joined) => Ok(joined),
            Err(e) => {
                if let Ok(Some(room)) = self.room(&tenant, &code).await {
                    self.tell(&room, RoomCommand::Close { reason: "creation failed".into() }).await;
                }
                Err(e)
            }
        }
    }

    async fn join_room(&self, session: &str, code: &str, name: String) -> Result<JoinedReply, ErrorBody> {
        let tenant = self.tenant_of(session)?;
        let room = self.room(&tenant, code).await?.ok_or_else(not_found)?;
        let previous = self.inner.sessions.room(session);
        if let Some(prev) = previous.as_deref().filter(|p| *p != code) {
            if let Ok(Some(old)) = self.room(&tenant, prev).await {
                let _ = self.call(&old, RoomCommand::Leave { session: session.to_owned() }).await;
            }
            self.bus().unsubscribe(&room_topic(&tenant, prev), session);
            self.inner.sessions.clear_room_if(session, prev);
        }
        let outbox = self.inner.sessions.outbox(session).ok_or_else(|| err(ErrorCode::Internal, "no connection"))?;
        // Subscribe before joining so no broadcast after the snapshot is missed.
        let topic = room_topic(&tenant, code);
        self.bus().subscribe(&topic, session, outbox).await;
        match self.call(&room, RoomCommand::Join { session: session.to_owned(), name }).await {
            Ok(RoomReply::Joined(joined)) => {
                self.inner.sessions.set_member(session, Some((code.to_owned(), joined.member.clone())));
                Ok(joined)
            }
            Ok(other) => {
                tracing::error!(?other, "a join answered something else");
                Err(err(ErrorCode::Internal, "unexpected join reply"))
            }
            Err(e) => {
                if previous.as_deref() != Some(code) {
                    self.bus().unsubscribe(&topic, session);
                }
                Err(e)
            }
        }
    }

    /// The session's room after a resume: it gets a fresh snapshot, or `room-closed` when the
    /// room closed while it was away.
    async fn rejoin(&self, session: &str, code: String) {
        let Ok(tenant) = self.tenant_of(session) else { return };
        match self.room(&tenant, &code).await {
            Ok(Some(room)) => {
                if let Some(outbox) = self.inner.sessions.outbox(session) {
                    self.bus().subscribe(&room_topic(&tenant, &code), session, outbox).await;
                }
                if self.call(&room, RoomCommand::Reconnect { session: session.to_owned() }).await.is_err() {
                    self.bus().unsubscribe(&room_topic(&tenant, &code), session);
                    self.inner.sessions.set_room(session, None);
                }
            }
            Ok(None) => {
                self.inner.sessions.set_room(session, None);
                let closed = Push::RoomClosed(RoomClosed { code, reason: "closed".into() });
                rooms::send(self, &tenant, session, &closed);
            }
            // The room's node is unreachable: the session keeps its room and retries with its
            // next request.
            Err(e) => tracing::warn!(session, error = %e.message, "could not rejoin a room"),
        }
    }

    /// The open rooms of `tenant` this node owns, described (REST).
    pub async fn describe_rooms(&self, tenant: &str) -> Vec<RoomDescription> {
        let mut out = Vec::new();
        for h in self.directory().owned().into_iter().filter(|r| *r.tenant == *tenant) {
            if let Ok(RoomReply::Description(d)) = h.call(RoomCommand::Describe).await {
                out.push(*d);
            }
        }
        out
    }

    /// One open room of `tenant`, described (`None` also for another tenant's room).
    pub async fn describe_room(&self, tenant: &str, code: &str) -> Result<Option<RoomDescription>, ErrorBody> {
        let Some(code) = code::normalize(code) else { return Ok(None) };
        let Some(room) = self.room(tenant, &code).await? else { return Ok(None) };
        Ok(match self.call(&room, RoomCommand::Describe).await {
            Ok(RoomReply::Description(d)) => Some(*d),
            _ => None,
        })
    }

    /// Publishes a message to every member of a room of `tenant`; false if the tenant has no
    /// such room.
    pub async fn publish_room(&self, tenant: &str, code: &str, msg: Outgoing) -> Result<bool, ErrorBody> {
        let Some(code) = code::normalize(code) else { return Ok(false) };
        if self.room(tenant, &code).await?.is_none() {
            return Ok(false);
        }
        self.bus().publish(&room_topic(tenant, &code), &msg, None);
        Ok(true)
    }

    /// Graceful shutdown: devices go offline (stored), every connection is closed (1001), the
    /// engine's tasks end and are awaited, and the store is flushed and closed.
    pub async fn shutdown(&self) {
        // Devices first, while the store is open: their last-seen times are kept.
        self.inner.devices.shutdown().await;
        for o in self.inner.sessions.all_outboxes() {
            o.close(1001, "server shutting down");
        }
        // Socket.IO devices and admins too (room sessions are in both lists; closing twice is a no-op).
        self.inner.connections.close_all(1001, "server shutting down");
        self.inner.stopping.cancel();
        // Room actors end when their handles go; what is in flight gets a moment to finish.
        for h in self.directory().owned() {
            self.directory().remove(&h.code);
        }
        self.inner.tasks.close();
        if tokio::time::timeout(Duration::from_secs(5), self.inner.tasks.wait()).await.is_err() {
            tracing::warn!(tasks = self.inner.tasks.len(), "engine tasks still running at shutdown");
        }
        self.inner.store.close().await;
    }
}

#[cfg(test)]
mod tests {
    use unisono_core::protocol::{CreateRoom, ErrorCode, JoinRoom, Request};

    use super::*;
    use crate::{
        auth::{Principal, Role},
        bus::Outbox,
        engine::connections::Kind,
        testing,
    };

    fn browser(outbox: Outbox) -> Attach<'static> {
        Attach {
            kind: Kind::Browser,
            principal: Principal { sub: "ann".into(), tenant: "acme".into(), role: Role::User },
            outbox,
            peer: None,
            resume: None,
            socket_id: None,
        }
    }

    async fn ok(att: &Attachment, req: Request) -> serde_json::Value {
        match att.handle(EdgeRequest::Room(req), now_ms()).await {
            Answer::Now(Ok(data)) => serde_json::from_str(data.get()).expect("json"),
            Answer::Now(Err(e)) => panic!("{e:?}"),
            Answer::Later(_) => panic!("a room request is answered now"),
        }
    }

    async fn err(att: &Attachment, req: Request) -> ErrorCode {
        match att.handle(EdgeRequest::Room(req), now_ms()).await {
            Answer::Now(Err(e)) => e.code,
            _ => panic!("expected an error"),
        }
    }

    /// The ownership record is the store's: a room whose row another node took over (a newer
    /// epoch) is given up at its next write, without applying or broadcasting the change.
    #[tokio::test]
    async fn a_room_whose_lease_moved_on_is_given_up_at_its_next_write() {
        let (engine, _dir) = testing::engine("engine-fence").await;
        let (outbox, _inbox) = Outbox::new(64);
        let host = engine.attach(browser(outbox)).await;
        let code = ok(&host, Request::CreateRoom(CreateRoom::default())).await["code"].as_str().map(str::to_owned);
        let code = code.expect("a code");
        assert_eq!(engine.room_count(), 1);
        // The row's code was taken by insert, with this node as owner under epoch 1.
        let row = sqlx::query("SELECT owner, epoch FROM rooms WHERE code = $1")
            .bind(&code)
            .fetch_one(engine.store().pool())
            .await
            .map(|r| {
                use sqlx::Row;
                (r.get::<String, _>("owner"), r.get::<i64, _>("epoch"))
            })
            .expect("row");
        assert_eq!(row, ("test-node".to_owned(), 1));
        // Another node takes the room over.
        sqlx::query("UPDATE rooms SET owner = 'other-node', epoch = epoch + 1 WHERE code = $1")
            .bind(&code)
            .execute(engine.store().pool())
            .await
            .expect("take over");
        let song = unisono_core::Song {
            id: "s".into(),
            title: String::new(),
            provider: Default::default(),
            url: "https://example.invalid/a.mp3".into(),
            duration_ms: 60_000.0,
        };
        let load = Request::LoadSong(unisono_core::protocol::LoadSong { song, autoplay: true });
        assert_eq!(err(&host, load).await, ErrorCode::ClusterUnavailable);
        testing::eventually("the room leaves the directory", std::time::Duration::from_secs(2), || {
            engine.room_count() == 0
        })
        .await;
        // Nothing of the refused change reached the row.
        let stored = engine.store().load_open_rooms().await.expect("load");
        assert!(stored.iter().any(|r| r.code == code && r.clock.song.is_none()));
        // This node no longer has the room.
        let join = Request::JoinRoom(JoinRoom { code: code.clone(), name: None });
        assert_eq!(err(&host, join).await, ErrorCode::RoomNotFound);
    }

    /// A restart restores the rooms this node owns, and only those.
    #[tokio::test]
    async fn a_node_restores_the_rooms_it_owns() {
        let (engine, dir) = testing::engine("engine-restore").await;
        let host = engine.attach(browser(Outbox::new(64).0)).await;
        let mine = ok(&host, Request::CreateRoom(CreateRoom::default())).await["code"].as_str().map(str::to_owned);
        let theirs = ok(&host, Request::CreateRoom(CreateRoom::default())).await["code"].as_str().map(str::to_owned);
        sqlx::query("UPDATE rooms SET owner = 'other-node' WHERE code = $1")
            .bind(theirs.clone())
            .execute(engine.store().pool())
            .await
            .expect("give one away");
        drop(host);
        engine.shutdown().await;
        let url = format!("sqlite:{}", dir.0.join("db.sqlite").display());
        let store = Store::open(&url, Duration::from_millis(1)).await.expect("reopen");
        let claimed = store.claim_rooms(&"test-node".into()).await.expect("claim");
        let codes: Vec<Option<String>> = claimed.iter().map(|(r, _)| Some(r.code.clone())).collect();
        assert_eq!(codes, vec![mine]);
        assert_eq!(claimed[0].1.epoch, 2, "claimed under a new epoch");
        store.close().await;
    }
}
