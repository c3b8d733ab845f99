//! The device driver: one actor per tenant owns that tenant's [`DeviceHub`] (the sans-IO state
//! machine in `unisono_core::device`) and carries out its effects, as `rooms.rs` does for rooms.
//!
//! The actor feeds the hub every input with the current server time, then performs what comes
//! out, in order: writes go to the store and their commits come back as
//! [`DeviceInput::Committed`]; pushes are serialized once and handed to the connections'
//! [`Outbox`]es (non-blocking); replies complete the callers' oneshots. It sleeps until the hub's
//! next deadline (retries, timeouts, TTLs, coalesced patches) and then ticks it. Nothing here
//! holds a lock shared by tenants while it writes to a socket: the only shared lock is the map
//! from tenant to actor, held to find or start one.
//!
//! Snapshots: an image in a `vlc:snapshot` result is stored gzip-compressed and replaced by a
//! reference (`/api/devices/{id}/snapshot`) before the admin gets the outcome.

use std::{
    collections::{HashMap, VecDeque},
    io::Write as _,
    sync::{
        Arc, Mutex,
        atomic::{AtomicU64, Ordering},
    },
};

use serde_json::{Value, json};
use tokio::sync::{mpsc, oneshot};
use tokio_util::task::TaskTracker;
use unisono_core::{
    device::{
        ConnId, DeviceEffect, DeviceHub, DeviceInput, DeviceRecord, DeviceReply, DeviceWrite, HubConfig, RequestId,
        WriteId,
    },
    protocol::{
        CommandOutcome, CommandRequest, CommandResponse, DevicePush, DeviceView, ErrorBody, ErrorCode, Register,
        TenantStats,
    },
};

use crate::{
    bus::{Outbox, Outgoing},
    metrics::METRICS,
    store::{Committed, HistoryEntry, Snapshot, Store, StoreError},
    time::{instant_at, now_ms},
};

/// Limits and timers of the device registry.
#[derive(Debug, Clone)]
pub struct DevicesConfig {
    /// Each tenant's hub: rates, command timeouts and retries, per-tenant limits, the catalog.
    pub hub: HubConfig,
    /// History entries kept per device.
    pub history_len: usize,
    /// History older than this is dropped (ms).
    pub history_age_ms: f64,
    /// Largest snapshot image accepted (bytes, decoded).
    pub max_snapshot_bytes: usize,
}

impl Default for DevicesConfig {
    fn default() -> Self {
        DevicesConfig {
            hub: HubConfig::default(),
            history_len: 100,
            history_age_ms: 24.0 * 3600.0 * 1000.0,
            max_snapshot_bytes: 8 * 1024 * 1024,
        }
    }
}

/// Inputs waiting per tenant actor before callers are slowed down.
const MAILBOX: usize = 4096;

type Waiter = oneshot::Sender<Result<DeviceReply, ErrorBody>>;
type CommandWaiter = oneshot::Sender<Result<CommandOutcome, ErrorBody>>;

enum Msg {
    /// A connection's outbox, so the hub's pushes to `conn` reach it; `admin`: it is an admin.
    Attach {
        conn: ConnId,
        outbox: Outbox,
        admin: bool,
    },
    Input {
        input: DeviceInput,
        waiter: Option<(RequestId, Waiter)>,
    },
    Command {
        input: DeviceInput,
        req: RequestId,
        waiter: CommandWaiter,
    },
    Query(Box<dyn FnOnce(&DeviceHub) + Send>),
    Shutdown(oneshot::Sender<()>),
}

struct Inner {
    cfg: DevicesConfig,
    store: Store,
    hubs: Mutex<HashMap<String, mpsc::Sender<Msg>>>,
    next_conn: AtomicU64,
    next_req: AtomicU64,
    tasks: TaskTracker,
    /// Set by shutdown: no actor starts after it.
    closed: std::sync::atomic::AtomicBool,
}

/// The device registry and command router; cheap to clone.
#[derive(Clone)]
pub struct Devices {
    inner: Arc<Inner>,
}

fn err(code: ErrorCode, msg: impl Into<String>) -> ErrorBody {
    ErrorBody::new(code, msg)
}

fn gone() -> ErrorBody {
    err(ErrorCode::Internal, "the device registry is shutting down")
}

/// A fresh random id (command ids, snapshot ids).
pub(crate) fn random_id() -> String {
    use rand::Rng;
    let mut rng = rand::rng();
    (0..16).map(|_| char::from_digit(rng.random_range(0..16u32), 16).unwrap_or('0')).collect()
}

impl Devices {
    /// Loads every stored device (all offline until they connect) into its tenant's hub.
    pub async fn start(cfg: DevicesConfig, store: Store, tasks: TaskTracker) -> Result<Devices, StoreError> {
        let mut by_tenant: HashMap<String, Vec<DeviceRecord>> = HashMap::new();
        for (tenant, record) in store.load_devices().await? {
            by_tenant.entry(tenant).or_default().push(record);
        }
        let devices = Devices {
            inner: Arc::new(Inner {
                cfg,
                store,
                hubs: Mutex::new(HashMap::new()),
                next_conn: AtomicU64::new(1),
                next_req: AtomicU64::new(1),
                tasks,
                closed: Default::default(),
            }),
        };
        for (tenant, records) in by_tenant {
            devices.spawn_hub(&tenant, records);
        }
        Ok(devices)
    }

    /// A fresh connection id (devices and admins).
    pub fn next_conn(&self) -> ConnId {
        self.inner.next_conn.fetch_add(1, Ordering::Relaxed)
    }

    fn next_req(&self) -> RequestId {
        self.inner.next_req.fetch_add(1, Ordering::Relaxed)
    }

    fn spawn_hub(&self, tenant: &str, records: Vec<DeviceRecord>) -> mpsc::Sender<Msg> {
        let (tx, rx) = mpsc::channel(MAILBOX);
        let hub = DeviceHub::restore(self.inner.cfg.hub.clone(), records);
        let actor = Actor {
            tenant: tenant.into(),
            hub,
            devices: self.clone(),
            inflight: VecDeque::new(),
            outboxes: HashMap::new(),
            waiting: HashMap::new(),
            commands: HashMap::new(),
            online: 0,
        };
        self.inner.tasks.spawn(actor.run(rx));
        self.lock_hubs().insert(tenant.to_owned(), tx.clone());
        tx
    }

    fn lock_hubs(&self) -> std::sync::MutexGuard<'_, HashMap<String, mpsc::Sender<Msg>>> {
        self.inner.hubs.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The tenant's actor, started if it has none yet.
    fn hub(&self, tenant: &str) -> mpsc::Sender<Msg> {
        if let Some(tx) = self.lock_hubs().get(tenant) {
            return tx.clone();
        }
        if self.inner.closed.load(Ordering::Acquire) {
            // Shut down: a sender nobody reads, so callers get `gone()`.
            return mpsc::channel(1).0;
        }
        self.spawn_hub(tenant, Vec::new())
    }

    /// The tenant's actor if it exists (reads of a tenant without devices need none).
    fn existing(&self, tenant: &str) -> Option<mpsc::Sender<Msg>> {
        self.lock_hubs().get(tenant).cloned()
    }

    async fn send(&self, tenant: &str, msg: Msg) -> Result<(), ErrorBody> {
        self.hub(tenant).send(msg).await.map_err(|_| gone())
    }

    /// Applies `input` (built with a fresh request id) and waits for its reply.
    async fn call(&self, tenant: &str, input: impl FnOnce(RequestId) -> DeviceInput) -> Result<DeviceReply, ErrorBody> {
        self.submit(tenant, input).await?.await
    }

    /// Queues `input` for the tenant's hub now (inputs of one caller reach the hub in the
    /// order submitted) and returns the wait for its reply.
    async fn submit(
        &self,
        tenant: &str,
        input: impl FnOnce(RequestId) -> DeviceInput,
    ) -> Result<Awaiting<DeviceReply>, ErrorBody> {
        let req = self.next_req();
        let (tx, rx) = oneshot::channel();
        self.send(tenant, Msg::Input { input: input(req), waiter: Some((req, tx)) }).await?;
        Ok(Awaiting(rx))
    }

    async fn tell(&self, tenant: &str, input: DeviceInput) {
        let _ = self.send(tenant, Msg::Input { input, waiter: None }).await;
    }

    /// Reads the tenant's hub.
    async fn query<T: Send + 'static>(
        &self,
        tenant: &str,
        read: impl FnOnce(&DeviceHub) -> T + Send + 'static,
    ) -> Option<T> {
        let hub = self.existing(tenant)?;
        let (tx, rx) = oneshot::channel();
        hub.send(Msg::Query(Box::new(move |h| {
            let _ = tx.send(read(h));
        })))
        .await
        .ok()?;
        rx.await.ok()
    }

    // ----- connections -----

    /// Attaches connection `conn` of `tenant`: pushes to it reach `outbox`. An admin receives
    /// presence at once and device states once it subscribes.
    pub async fn attach(&self, tenant: &str, conn: ConnId, outbox: Outbox, admin: bool) {
        let _ = self.send(tenant, Msg::Attach { conn, outbox, admin }).await;
    }

    /// Connection `conn` closed (a device goes offline unless it already reconnected).
    pub async fn detach(&self, tenant: &str, conn: ConnId) {
        if self.existing(tenant).is_some() {
            self.tell(tenant, DeviceInput::Disconnect { conn }).await;
        }
    }

    // ----- devices -----

    /// `player:register`, as `sub` (the token's subject). Returns the `player:registered` data.
    pub async fn register(
        &self,
        tenant: &str,
        sub: &str,
        conn: ConnId,
        register: Register,
    ) -> Result<DeviceReply, ErrorBody> {
        self.call(tenant, |req| DeviceInput::Register { conn, sub: sub.to_owned(), register, req }).await
    }

    /// `player:state`: queued now, in the order received; the returned wait resolves once the
    /// state is stored (then admins see it).
    pub async fn state(&self, tenant: &str, conn: ConnId, state: Value) -> Result<Awaiting<DeviceReply>, ErrorBody> {
        self.submit(tenant, move |req| DeviceInput::State { conn, state, req }).await
    }

    /// `player:command:response` from connection `conn`.
    pub async fn command_response(
        &self,
        tenant: &str,
        conn: ConnId,
        response: CommandResponse,
    ) -> Result<DeviceReply, ErrorBody> {
        self.call(tenant, |req| DeviceInput::CommandResponse { conn, response, req: Some(req) }).await
    }

    /// A device answered `player:command` through the event's ack: nothing to answer back.
    pub async fn command_ack(&self, tenant: &str, conn: ConnId, response: CommandResponse) {
        self.tell(tenant, DeviceInput::CommandResponse { conn, response, req: None }).await;
    }

    // ----- admins -----

    /// `devices:subscribe`: the devices' full states, from which patches continue.
    pub async fn subscribe(
        &self,
        tenant: &str,
        conn: ConnId,
        device_ids: Option<Vec<String>>,
    ) -> Result<DeviceReply, ErrorBody> {
        self.call(tenant, |req| DeviceInput::Subscribe { conn, device_ids, req }).await
    }

    pub async fn unsubscribe(&self, tenant: &str, conn: ConnId) {
        self.tell(tenant, DeviceInput::Unsubscribe { conn }).await;
    }

    /// Sends a command and waits for its outcome (retries and timeouts are the hub's). `admin`:
    /// the connection that gets `command:response`.
    pub async fn command(
        &self,
        tenant: &str,
        request: CommandRequest,
        admin: Option<ConnId>,
    ) -> Result<CommandOutcome, ErrorBody> {
        self.submit_command(tenant, request, admin).await?.await
    }

    /// [`Devices::command`], queued now; the returned wait resolves with the outcome.
    pub async fn submit_command(
        &self,
        tenant: &str,
        request: CommandRequest,
        admin: Option<ConnId>,
    ) -> Result<Awaiting<CommandOutcome>, ErrorBody> {
        let req = self.next_req();
        let (tx, rx) = oneshot::channel();
        let input = DeviceInput::Command { admin, command_id: random_id(), request, req };
        self.send(tenant, Msg::Command { input, req, waiter: tx }).await?;
        Ok(Awaiting(rx))
    }

    /// Every device of the tenant, with its current state.
    pub async fn list(&self, tenant: &str) -> Vec<DeviceView> {
        self.query(tenant, DeviceHub::list).await.unwrap_or_default()
    }

    /// One device of the tenant (`None` also for another tenant's device: no existence leak).
    pub async fn get(&self, tenant: &str, device_id: &str) -> Option<DeviceView> {
        let id = device_id.to_owned();
        self.query(tenant, move |h| h.get(&id)).await.flatten()
    }

    /// The full state admins patch from (after a rev gap).
    pub async fn resync(&self, tenant: &str, device_id: &str) -> Option<DeviceView> {
        let id = device_id.to_owned();
        self.query(tenant, move |h| h.resync(&id)).await.flatten()
    }

    /// The tenant's running totals (dashboard usage stats).
    pub async fn stats(&self, tenant: &str) -> TenantStats {
        self.query(tenant, DeviceHub::stats).await.unwrap_or_default()
    }

    /// Devices known, online, and admins attached, per tenant (for staff: counts only).
    pub async fn counts(&self) -> Vec<(String, usize, usize, usize)> {
        let tenants: Vec<String> = self.lock_hubs().keys().cloned().collect();
        let mut v = Vec::with_capacity(tenants.len());
        for t in tenants {
            if let Some((n, online, admins)) = self.query(&t, |h| (h.len(), h.online(), h.admins())).await {
                v.push((t, n, online, admins));
            }
        }
        v.sort();
        v
    }

    /// A device's stored history, newest first.
    pub async fn history(&self, tenant: &str, device_id: &str, limit: usize) -> Result<Vec<HistoryEntry>, ErrorBody> {
        if self.get(tenant, device_id).await.is_none() {
            return Err(err(ErrorCode::DeviceNotFound, "no such device"));
        }
        self.inner
            .store
            .device_history(tenant, device_id, limit.min(self.inner.cfg.history_len))
            .await
            .map_err(|e| err(ErrorCode::StorageUnavailable, e.to_string()))
    }

    /// The latest snapshot image of a device of the tenant.
    pub async fn snapshot(&self, tenant: &str, device_id: &str) -> Result<Option<Snapshot>, ErrorBody> {
        if self.get(tenant, device_id).await.is_none() {
            return Err(err(ErrorCode::DeviceNotFound, "no such device"));
        }
        self.inner
            .store
            .latest_snapshot(tenant, device_id)
            .await
            .map_err(|e| err(ErrorCode::StorageUnavailable, e.to_string()))
    }

    /// Graceful shutdown: every connected device is marked offline and its last-seen time
    /// stored, tenant by tenant, before the store closes.
    pub async fn shutdown(&self) {
        self.inner.closed.store(true, Ordering::Release);
        let hubs: Vec<mpsc::Sender<Msg>> = self.lock_hubs().drain().map(|(_, tx)| tx).collect();
        for hub in hubs {
            let (tx, rx) = oneshot::channel();
            if hub.send(Msg::Shutdown(tx)).await.is_ok() {
                let _ = rx.await;
            }
        }
        METRICS.devices_online.set(0);
    }

    /// If `result` carries an image (`image` or `data`, base64 or a data: URL), stores it
    /// compressed and replaces it with a reference.
    async fn extract_snapshot(&self, tenant: &str, device_id: &str, result: &mut Value) {
        use base64::Engine as _;
        let Some(obj) = result.as_object_mut() else { return };
        let key = ["image", "data"].into_iter().find(|k| obj.get(*k).is_some_and(Value::is_string));
        let Some(key) = key else { return };
        let Some(text) = obj.get(key).and_then(Value::as_str).map(str::to_owned) else { return };
        let (mime, b64) = match text.strip_prefix("data:").and_then(|r| r.split_once(";base64,")) {
            Some((mime, b64)) => (mime.to_owned(), b64.to_owned()),
            None => (obj.get("mime").and_then(Value::as_str).unwrap_or("image/png").to_owned(), text),
        };
        let Ok(raw) = base64::engine::general_purpose::STANDARD.decode(b64.trim()) else { return };
        if raw.len() > self.inner.cfg.max_snapshot_bytes {
            obj.insert(key.into(), json!({ "error": "SNAPSHOT_TOO_LARGE", "bytes": raw.len() }));
            return;
        }
        let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
        let gzip = match gz.write_all(&raw).and_then(|()| gz.finish()) {
            Ok(g) => g,
            Err(e) => {
                tracing::error!(error = %e, "compressing a snapshot failed");
                return;
            }
        };
        let snap = Snapshot {
            id: random_id(),
            device_id: device_id.to_owned(),
            at: now_ms(),
            mime: mime.clone(),
            bytes: raw.len() as u64,
            gzip,
        };
        match self.inner.store.save_snapshot(tenant, &snap).await {
            Ok(()) => {
                obj.remove(key);
                obj.insert(
                    "snapshot".into(),
                    json!({
                        "snapshotId": snap.id,
                        "url": format!("/api/devices/{device_id}/snapshot"),
                        "mime": mime,
                        "bytes": snap.bytes,
                        "storedBytes": snap.gzip.len(),
                    }),
                );
            }
            Err(e) => tracing::warn!(error = %e, "storing a snapshot failed"),
        }
    }
}

/// The wait for a queued input's answer.
pub struct Awaiting<T>(oneshot::Receiver<Result<T, ErrorBody>>);

impl<T> std::future::Future for Awaiting<T> {
    type Output = Result<T, ErrorBody>;
    fn poll(mut self: std::pin::Pin<&mut Self>, cx: &mut std::task::Context<'_>) -> std::task::Poll<Self::Output> {
        std::pin::Pin::new(&mut self.0).poll(cx).map(|r| r.unwrap_or_else(|_| Err(gone())))
    }
}

/// One tenant's actor.
struct Actor {
    tenant: Arc<str>,
    hub: DeviceHub,
    devices: Devices,
    /// Writes submitted and not yet committed, in submission order (the order the store
    /// commits them in), so their `Committed` inputs arrive in that order too.
    inflight: VecDeque<(WriteId, Committed)>,
    outboxes: HashMap<ConnId, Outbox>,
    waiting: HashMap<RequestId, Waiter>,
    commands: HashMap<RequestId, CommandWaiter>,
    /// Devices online, as last counted into the global gauge.
    online: usize,
}

impl Actor {
    async fn run(mut self, mut rx: mpsc::Receiver<Msg>) {
        loop {
            let deadline = self.hub.next_deadline().map(instant_at);
            let event = tokio::select! {
                biased;
                done = next_commit(&mut self.inflight) => Event::Committed(done),
                m = rx.recv() => match m {
                    Some(m) => Event::Msg(m),
                    None => break,
                },
                _ = sleep_until(deadline), if deadline.is_some() => Event::Tick,
            };
            let msg = match event {
                Event::Committed((write, ok)) => {
                    self.inflight.pop_front();
                    self.apply(DeviceInput::Committed { write, ok }).await;
                    continue;
                }
                Event::Tick => {
                    self.apply(DeviceInput::Tick).await;
                    continue;
                }
                Event::Msg(m) => m,
            };
            match msg {
                Msg::Attach { conn, outbox, admin } => {
                    self.outboxes.insert(conn, outbox);
                    if admin {
                        self.apply(DeviceInput::AdminAttach { conn }).await;
                    }
                }
                Msg::Input { input, waiter } => {
                    if let DeviceInput::Disconnect { conn } = &input {
                        self.outboxes.remove(conn);
                    }
                    if let Some((req, tx)) = waiter {
                        self.waiting.insert(req, tx);
                    }
                    self.apply(input).await;
                }
                Msg::Command { input, req, waiter } => {
                    self.commands.insert(req, waiter);
                    self.apply(input).await;
                }
                Msg::Query(read) => read(&self.hub),
                Msg::Shutdown(done) => {
                    // Writes in flight first, then every connected device offline.
                    while let Some((_, c)) = self.inflight.pop_front() {
                        let _ = c.await;
                    }
                    let effects = self.hub.apply(DeviceInput::Shutdown, now_ms());
                    let mut commits = Vec::new();
                    for e in effects {
                        if let DeviceEffect::Persist { what: DeviceWrite::Info(r), .. } = e {
                            match self.devices.inner.store.submit_device_info(&self.tenant, &r).await {
                                Ok(c) => commits.push(c),
                                Err(e) => tracing::warn!(error = %e, "storing device presence at shutdown failed"),
                            }
                        }
                    }
                    let n = commits.len();
                    for c in commits {
                        let _ = c.await;
                    }
                    tracing::info!(tenant = %self.tenant, devices = n, "devices marked offline");
                    let _ = done.send(());
                    break;
                }
            }
        }
    }

    /// Applies `input` now, then every effect in order (a failed submit feeds `Committed`
    /// back at once, whose effects follow).
    async fn apply(&mut self, input: DeviceInput) {
        let mut queue: VecDeque<DeviceEffect> = self.hub.apply(input, now_ms()).into();
        while let Some(effect) = queue.pop_front() {
            match effect {
                DeviceEffect::Persist { write, what } => {
                    let cfg = &self.devices.inner.cfg;
                    let store = &self.devices.inner.store;
                    let submitted = match &what {
                        DeviceWrite::Info(r) => store.submit_device_info(&self.tenant, r).await,
                        DeviceWrite::State(r) => {
                            store.submit_device_state(&self.tenant, r, cfg.history_len, cfg.history_age_ms).await
                        }
                    };
                    match submitted {
                        Ok(committed) => self.inflight.push_back((write, committed)),
                        Err(e) => {
                            tracing::error!(error = %e, "could not submit a device change");
                            queue.extend(self.hub.apply(DeviceInput::Committed { write, ok: false }, now_ms()));
                        }
                    }
                }
                DeviceEffect::ToAdmins { admins, push } => {
                    if let Some(msg) = encode(&push) {
                        for a in admins {
                            if let Some(o) = self.outboxes.get(&a) {
                                o.push(msg.clone());
                            }
                        }
                    }
                }
                DeviceEffect::Deliver { to, push } => {
                    if let (Some(o), Some(msg)) = (self.outboxes.get(&to), encode(&push)) {
                        o.push(msg);
                    }
                }
                DeviceEffect::Close { conn, code, reason } => {
                    if let Some(o) = self.outboxes.get(&conn) {
                        o.close(code, reason);
                    }
                }
                DeviceEffect::Reply { req, result } => {
                    if let Some(tx) = self.waiting.remove(&req) {
                        let _ = tx.send(result);
                    } else if let Some(tx) = self.commands.remove(&req) {
                        // A command refused before it started (unknown device, bad params, limit).
                        let _ = tx.send(result.and_then(|_| Err(err(ErrorCode::Internal, "a command answered early"))));
                    }
                }
                DeviceEffect::CommandDone { req, admin, outcome } => self.command_done(req, admin, outcome),
            }
        }
        let online = self.hub.online();
        METRICS.devices_online.add(online as i64 - self.online as i64);
        self.online = online;
    }

    /// Stores a snapshot the outcome carries (off the actor), then answers the admin.
    fn command_done(&mut self, req: RequestId, admin: Option<ConnId>, mut outcome: CommandOutcome) {
        let failure = outcome.failure();
        let label = match &failure {
            None if outcome.status == "success" => "success",
            None => "device_error",
            Some(e) if e.code == ErrorCode::CommandTimeout => "timeout",
            Some(e) if e.code == ErrorCode::DeviceOffline => "offline",
            Some(_) => "failed",
        };
        METRICS.device_commands.with_label_values(&[label]).inc();
        let waiter = self.commands.remove(&req);
        let admin = admin.and_then(|a| self.outboxes.get(&a).cloned());
        let (devices, tenant) = (self.devices.clone(), self.tenant.clone());
        self.devices.inner.tasks.spawn(async move {
            if let Some(r) = outcome.result.as_mut() {
                devices.extract_snapshot(&tenant, &outcome.device_id, r).await;
            }
            if let (Some(admin), Some(msg)) = (admin, encode(&DevicePush::CommandResponse(outcome.clone()))) {
                admin.push(msg);
            }
            if let Some(tx) = waiter {
                let _ = tx.send(match failure {
                    Some(e) => Err(e),
                    None => Ok(outcome),
                });
            }
        });
    }
}

/// Serializes a push once; a failure is a bug, logged loudly and counted.
fn encode(push: &DevicePush) -> Option<Outgoing> {
    match Outgoing::device(push) {
        Ok(m) => Some(m),
        Err(e) => {
            tracing::error!(error = %e, "a device push did not serialize");
            METRICS.errors.with_label_values(&[ErrorCode::Internal.as_str()]).inc();
            None
        }
    }
}

enum Event {
    Committed((WriteId, bool)),
    Msg(Msg),
    Tick,
}

/// Waits for the oldest write in flight to commit (never, when none is).
async fn next_commit(inflight: &mut VecDeque<(WriteId, Committed)>) -> (WriteId, bool) {
    match inflight.front_mut() {
        Some((write, committed)) => {
            let result = committed.await;
            if let Err(e) = &result {
                tracing::error!(error = %e, "storing a device change failed");
            }
            (*write, result.is_ok())
        }
        None => std::future::pending().await,
    }
}

async fn sleep_until(deadline: Option<std::time::Instant>) {
    match deadline {
        Some(d) => tokio::time::sleep_until(d.into()).await,
        None => std::future::pending().await,
    }
}
