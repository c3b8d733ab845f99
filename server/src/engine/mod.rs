//! The engine: rooms and sessions, independent of any wire protocol.
//!
//! Edges (the `/ws` WebSocket today, Socket.IO and REST later) call [`Engine::connect`],
//! [`Engine::handle`] and [`Engine::disconnect`]; the engine never sees a socket. Each room is
//! an actor ([`rooms`]); sessions ([`sessions`]) map a connection to its room; fan-out goes
//! through the [`Bus`](crate::bus::Bus).

pub mod admin;
pub mod connections;
pub mod devices;
pub mod rooms;
pub mod sessions;

use std::{
    collections::HashMap,
    net::{IpAddr, Ipv4Addr},
    num::NonZeroU32,
    sync::{Arc, Mutex},
    time::Duration,
};

use governor::{DefaultKeyedRateLimiter, Quota, RateLimiter, clock::Clock};
use rand::Rng;
use serde_json::{Value, json};
use unisono_core::{
    Command, Millis, Room, RoomSettings, code,
    protocol::{Connected, ErrorBody, ErrorCode, Push, Request, RoomClosed, TimeSyncReply},
    room::RoomLimits,
};

use crate::{
    auth::{Auth, Principal},
    bus::{Bus, Frame, Outbox, room_topic},
    metrics::METRICS,
    store::Store,
    time::now_ms,
};
use connections::Connections;
use devices::{Devices, DevicesConfig};
use rooms::RoomHandle;
use sessions::Sessions;

/// How the engine answers one request.
pub enum Answer {
    /// Answered in order, before the connection's next request is handled.
    Now(Result<Value, ErrorBody>),
    /// Long-running (a device command): answered when done, while later requests go on.
    Later(futures_util::future::BoxFuture<'static, Result<Value, ErrorBody>>),
}

/// Engine limits and timers, from configuration.
#[derive(Debug, Clone)]
pub struct EngineConfig {
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
    sessions: Sessions,
    rooms: Mutex<HashMap<String, RoomHandle>>,
    /// `join-room` attempts per peer address: room codes must not be enumerable, and a new
    /// connection must not buy a fresh allowance.
    joins: DefaultKeyedRateLimiter<IpAddr>,
}

/// The engine handle; cheap to clone.
#[derive(Clone)]
pub struct Engine {
    inner: Arc<Inner>,
}

/// A connection attached to a session.
#[derive(Debug, Clone)]
pub struct Connection {
    pub session: String,
    pub conn: u64,
}

fn err(code: ErrorCode, msg: impl Into<String>) -> ErrorBody {
    ErrorBody::new(code, msg)
}

impl Engine {
    /// Builds the engine and restores every open room from the store.
    pub async fn start(
        config: EngineConfig,
        store: Store,
        bus: Arc<dyn Bus>,
        auth: Arc<Auth>,
        devices: DevicesConfig,
    ) -> Result<Engine, crate::store::StoreError> {
        let devices = Devices::start(devices, store.clone()).await?;
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
                rooms: Mutex::new(HashMap::new()),
                joins: RateLimiter::keyed(Quota::per_minute(per_min)),
            }),
        };
        // Forget addresses whose allowance is full again, so the limiter's memory stays bounded.
        let weak = Arc::downgrade(&engine.inner);
        tokio::spawn(async move {
            let mut every = tokio::time::interval(Duration::from_secs(60));
            loop {
                every.tick().await;
                let Some(inner) = weak.upgrade() else { break };
                inner.joins.retain_recent();
                inner.joins.shrink_to_fit();
            }
        });
        let now = now_ms();
        let records = engine.inner.store.load_open_rooms().await?;
        let restored = records.len();
        for rec in records {
            let room = Room::restore(rec, engine.inner.config.limits.clone(), now);
            let code = room.code().to_owned();
            let handle = RoomHandle::spawn(room, engine.clone());
            engine.rooms().insert(code, handle);
        }
        METRICS.rooms.set(engine.rooms().len() as i64);
        tracing::info!(restored, "rooms restored");
        Ok(engine)
    }

    fn rooms(&self) -> std::sync::MutexGuard<'_, HashMap<String, RoomHandle>> {
        self.inner.rooms.lock().unwrap_or_else(|e| e.into_inner())
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
    pub fn sessions(&self) -> &Sessions {
        &self.inner.sessions
    }
    pub fn room_count(&self) -> usize {
        self.rooms().len()
    }

    fn room(&self, code: &str) -> Option<RoomHandle> {
        self.rooms().get(code).cloned()
    }

    pub(crate) fn forget_room(&self, code: &str) {
        let mut rooms = self.rooms();
        rooms.remove(code);
        METRICS.rooms.set(rooms.len() as i64);
    }

    /// Attaches a new connection: a new session, or the session of `resume` if the token is
    /// valid (then the room gets a fresh `room-joined` for it). Pushes `connected` first.
    pub async fn connect(
        &self,
        resume: Option<&str>,
        outbox: Outbox,
        ip: Option<IpAddr>,
        principal: Principal,
    ) -> Connection {
        let a = self.inner.sessions.attach(resume, outbox.clone(), ip, principal);
        if let Some(old) = a.replaced {
            old.close(4001, "session resumed on another connection");
        }
        let hello = Push::Connected(Connected {
            session_id: a.id.clone(),
            resume_token: a.resume_token,
            server_time: now_ms(),
            resumed: a.resumed,
        });
        outbox.push(Frame::text(hello.to_json()));
        if let Some(code) = a.room {
            match self.room(&code) {
                Some(room) => {
                    self.bus().subscribe(&room_topic(&code), &a.id, outbox);
                    if room.call(Command::Reconnect { session: a.id.clone() }).await.is_err() {
                        self.bus().unsubscribe(&room_topic(&code), &a.id);
                        self.inner.sessions.set_room(&a.id, None);
                    }
                }
                None => {
                    // The room closed while the session was away: say so instead of going quiet.
                    self.inner.sessions.set_room(&a.id, None);
                    let closed = Push::RoomClosed(RoomClosed { code, reason: "closed".into() });
                    self.inner.sessions.send(&a.id, Frame::text(closed.to_json()));
                }
            }
        }
        Connection { session: a.id, conn: a.conn }
    }

    /// The connection closed. The session waits `resume_grace` for a resume, then leaves.
    pub async fn disconnect(&self, c: &Connection) {
        let Some(room_code) = self.inner.sessions.detach(&c.session, c.conn) else { return };
        if let Some(code) = &room_code {
            self.bus().unsubscribe(&room_topic(code), &c.session);
            if let Some(room) = self.room(code) {
                room.tell(Command::Disconnect { session: c.session.clone() }).await;
            }
        }
        let engine = self.clone();
        let c = c.clone();
        tokio::spawn(async move {
            tokio::time::sleep(engine.inner.config.resume_grace).await;
            if let Some(Some(code)) = engine.inner.sessions.expire(&c.session, c.conn)
                && let Some(room) = engine.room(&code)
            {
                room.tell(Command::Leave { session: c.session.clone() }).await;
            }
        });
    }

    /// Handles one request of `session`. `received_at` is the server time the frame arrived
    /// (the `t1` of time sync).
    pub async fn handle(&self, session: &str, req: Request, received_at: Millis) -> Result<Value, ErrorBody> {
        match req {
            Request::TimeSync(t) => {
                let reply = TimeSyncReply { t0: t.t0, t1: received_at, t2: now_ms() };
                Ok(json!(reply))
            }
            Request::CreateRoom(c) => self.create_room(session, c).await,
            Request::JoinRoom(j) => {
                let ip = self.inner.sessions.ip(session).unwrap_or(IpAddr::V4(Ipv4Addr::UNSPECIFIED));
                if let Err(not_until) = self.inner.joins.check_key(&ip) {
                    let wait = not_until.wait_time_from(governor::clock::DefaultClock::default().now());
                    return Err(err(
                        ErrorCode::RateLimited,
                        format!("too many join attempts; retry in {} ms", wait.as_millis()),
                    ));
                }
                let code = code::normalize(&j.code)
                    .ok_or_else(|| err(ErrorCode::RoomNotFound, "no open room has this code"))?;
                self.join_room(session, &code, j.name.unwrap_or_default()).await
            }
            Request::LeaveRoom => {
                let code = self
                    .inner
                    .sessions
                    .room(session)
                    .ok_or_else(|| err(ErrorCode::NotInRoom, "you are not in a room"))?;
                let result = match self.room(&code) {
                    Some(room) => room.call(Command::Leave { session: session.to_owned() }).await,
                    None => Ok(json!({})),
                };
                self.bus().unsubscribe(&room_topic(&code), session);
                self.inner.sessions.clear_room_if(session, &code);
                result
            }
            other => {
                let code =
                    self.inner.sessions.room(session).ok_or_else(|| err(ErrorCode::NotInRoom, "join a room first"))?;
                let room = self.room(&code).ok_or_else(|| {
                    self.inner.sessions.clear_room_if(session, &code);
                    err(ErrorCode::RoomClosed, "the room is closed")
                })?;
                let cmd = Command::from_request(session.to_owned(), other)
                    .ok_or_else(|| err(ErrorCode::Internal, "not a room request"))?;
                room.call(cmd).await
            }
        }
    }

    async fn create_room(&self, session: &str, c: unisono_core::protocol::CreateRoom) -> Result<Value, ErrorBody> {
        let mut settings = RoomSettings::default();
        if let Some(patch) = &c.settings {
            settings.apply_patch(patch).map_err(|e| err(e.code(), e.to_string()))?;
        }
        let now = now_ms();
        let tenant = self.inner.sessions.tenant(session).ok_or_else(|| err(ErrorCode::Internal, "no session"))?;
        let code = {
            let mut rooms = self.rooms();
            if rooms.len() >= self.inner.config.max_rooms {
                return Err(err(
                    ErrorCode::TooManyRooms,
                    format!("this server holds at most {} rooms", self.inner.config.max_rooms),
                ));
            }
            let per_tenant = self.inner.config.max_rooms_per_tenant;
            if rooms.values().filter(|r| *r.tenant == *tenant).take(per_tenant).count() >= per_tenant {
                return Err(err(ErrorCode::TooManyRooms, format!("a tenant holds at most {per_tenant} open rooms")));
            }
            let mut rng = rand::rng();
            let code = loop {
                let candidate = code::generate(|| rng.random());
                if !rooms.contains_key(&candidate) {
                    break candidate;
                }
            };
            let room = Room::new(
                code.clone(),
                c.name.as_deref().unwrap_or(""),
                settings,
                self.inner.config.limits.clone(),
                now,
            )
            .with_tenant(tenant);
            rooms.insert(code.clone(), RoomHandle::spawn(room, self.clone()));
            METRICS.rooms.set(rooms.len() as i64);
            code
        };
        // Joining makes the creator host, which writes the room: the reply means it is stored.
        match self.join_room(session, &code, c.member_name.unwrap_or_default()).await {
            Ok(v) => Ok(json!({ "code": code, "room": v.get("room").cloned().unwrap_or(Value::Null) })),
            Err(e) => {
                if let Some(room) = self.room(&code) {
                    room.tell(Command::Close { reason: "creation failed".into() }).await;
                }
                self.forget_room(&code);
                Err(e)
            }
        }
    }

    async fn join_room(&self, session: &str, code: &str, name: String) -> Result<Value, ErrorBody> {
        // A room of another tenant does not exist for this session (same error, no leak).
        let tenant = self.inner.sessions.tenant(session);
        let room = self
            .room(code)
            .filter(|r| tenant.as_deref() == Some(&*r.tenant))
            .ok_or_else(|| err(ErrorCode::RoomNotFound, "no open room has this code"))?;
        let previous = self.inner.sessions.room(session);
        if let Some(prev) = previous.as_deref().filter(|p| *p != code) {
            if let Some(old) = self.room(prev) {
                let _ = old.call(Command::Leave { session: session.to_owned() }).await;
            }
            self.bus().unsubscribe(&room_topic(prev), session);
            self.inner.sessions.clear_room_if(session, prev);
        }
        let outbox = self.inner.sessions.outbox(session).ok_or_else(|| err(ErrorCode::Internal, "no connection"))?;
        // Subscribe before joining so no broadcast after the snapshot is missed.
        let topic = room_topic(code);
        self.bus().subscribe(&topic, session, outbox);
        match room.call(Command::Join { session: session.to_owned(), name }).await {
            Ok(v) => {
                self.inner.sessions.set_room(session, Some(code.to_owned()));
                Ok(v)
            }
            Err(e) => {
                if previous.as_deref() != Some(code) {
                    self.bus().unsubscribe(&topic, session);
                }
                Err(e)
            }
        }
    }

    /// The open rooms of `tenant`, described (REST).
    pub async fn describe_rooms(&self, tenant: &str) -> Vec<Value> {
        let handles: Vec<RoomHandle> = self.rooms().values().filter(|r| *r.tenant == *tenant).cloned().collect();
        let mut out = Vec::with_capacity(handles.len());
        for h in handles {
            if let Ok(v) = h.call(Command::Describe).await {
                out.push(v);
            }
        }
        out
    }

    /// One open room of `tenant`, described (`None` also for another tenant's room).
    pub async fn describe_room(&self, tenant: &str, code: &str) -> Option<Value> {
        let code = code::normalize(code)?;
        let h = self.room(&code).filter(|r| *r.tenant == *tenant)?;
        h.call(Command::Describe).await.ok()
    }

    /// Publishes a pre-serialized push to every member of a room of `tenant`; returns false if
    /// the tenant has no such room.
    pub fn publish_room(&self, tenant: &str, code: &str, frame: Frame) -> bool {
        let Some(code) = code::normalize(code) else { return false };
        if self.room(&code).filter(|r| *r.tenant == *tenant).is_none() {
            return false;
        }
        self.bus().publish(&room_topic(&code), &frame, None);
        true
    }

    /// Closes every connection (1001) and flushes the store: graceful shutdown.
    pub async fn shutdown(&self) {
        // Devices first, while the store is open: their last-seen times are kept.
        self.inner.devices.shutdown().await;
        for o in self.inner.sessions.all_outboxes() {
            o.close(1001, "server shutting down");
        }
        // Socket.IO devices and admins too (room sessions are in both lists; closing twice is a no-op).
        self.inner.connections.close_all(1001, "server shutting down");
        self.inner.store.close().await;
    }
}
