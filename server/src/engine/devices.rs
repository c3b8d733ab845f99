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
//!
//! In a cluster a tenant's hub runs on one node ([`super::hubs`]): every method here first finds
//! where ([`Devices::place`]) and either runs here or sends a [`DeviceCall`] there, which that
//! node takes in order ([`Devices::serve`]).

use std::{
    collections::{HashMap, VecDeque},
    io::Write as _,
    sync::{
        Arc, Mutex,
        atomic::{AtomicU64, Ordering},
    },
};

use futures_util::future::BoxFuture;
use serde_json::{Value, json, value::RawValue};
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

use super::hubs::{
    DeviceAnswer, DeviceCall, DeviceOp, HubDirectory, HubPlace, Link, NOT_HERE, RemoteWriter, ToConn, close_reason,
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
    /// This node lost the tenant's lease: stop at once, storing nothing more.
    Abandon,
}

/// A [`DeviceCall`] from another node, taken in arrival order; `answer`: unless it is a tell.
struct Job {
    from: Arc<str>,
    call: DeviceCall,
    answer: Option<oneshot::Sender<Box<RawValue>>>,
}

/// Connections on other nodes attached to hubs here: conn → (tenant, node).
type RemoteConns = HashMap<ConnId, (Arc<str>, Arc<str>)>;

/// Calls from other nodes waiting to be taken, before they are refused.
const JOBS: usize = 65_536;

struct Inner {
    cfg: DevicesConfig,
    store: Store,
    hubs: Mutex<HashMap<String, mpsc::Sender<Msg>>>,
    next_conn: AtomicU64,
    next_req: AtomicU64,
    tasks: TaskTracker,
    /// Set by shutdown: no actor starts after it.
    closed: std::sync::atomic::AtomicBool,
    /// Where each tenant's hub runs, in a cluster (`None`: always here).
    route: Option<Arc<dyn HubDirectory>>,
    /// In a cluster: what this node's connections told their hub (to tell a new one again).
    links: Mutex<HashMap<ConnId, Link>>,
    /// Connections on other nodes attached to hubs here: conn → (tenant, node).
    remote: Mutex<RemoteConns>,
    /// Held while a hub starts here, so it starts once.
    starting: tokio::sync::Mutex<()>,
    /// Calls from other nodes, in arrival order.
    jobs: Option<mpsc::Sender<Job>>,
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
    /// Loads every stored device (all offline until they connect) into its tenant's hub. In a
    /// cluster (`route`) nothing is loaded now: a tenant's hub starts on the node that takes
    /// its lease, from the store.
    pub async fn start(
        cfg: DevicesConfig,
        store: Store,
        tasks: TaskTracker,
        route: Option<Arc<dyn HubDirectory>>,
    ) -> Result<Devices, StoreError> {
        let mut by_tenant: HashMap<String, Vec<DeviceRecord>> = HashMap::new();
        if route.is_none() {
            for (tenant, record) in store.load_devices().await? {
                by_tenant.entry(tenant).or_default().push(record);
            }
        }
        // Connection ids name a connection in the whole cluster: random high bits per node.
        let first_conn = match route {
            Some(_) => (u64::from(rand::random::<u32>()) << 32) | 1,
            None => 1,
        };
        let (jobs, jobs_rx) = match route {
            Some(_) => {
                let (tx, rx) = mpsc::channel(JOBS);
                (Some(tx), Some(rx))
            }
            None => (None, None),
        };
        let devices = Devices {
            inner: Arc::new(Inner {
                cfg,
                store,
                hubs: Mutex::new(HashMap::new()),
                next_conn: AtomicU64::new(first_conn),
                next_req: AtomicU64::new(1),
                tasks,
                closed: Default::default(),
                route,
                links: Mutex::new(HashMap::new()),
                remote: Mutex::new(HashMap::new()),
                starting: tokio::sync::Mutex::new(()),
                jobs,
            }),
        };
        for (tenant, records) in by_tenant {
            devices.spawn_hub(&tenant, records);
        }
        if let Some(rx) = jobs_rx {
            let weak = Arc::downgrade(&devices.inner);
            devices.inner.tasks.spawn(serve_jobs(weak, rx));
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

    /// The tenant's actor, started if it has none yet (in a cluster only [`Devices::place`]
    /// starts one, under the tenant's lease).
    fn hub(&self, tenant: &str) -> mpsc::Sender<Msg> {
        if let Some(tx) = self.lock_hubs().get(tenant) {
            return tx.clone();
        }
        if self.inner.closed.load(Ordering::Acquire) || self.inner.route.is_some() {
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
        self.start_query(tenant, read).await?.await.ok()
    }

    /// Queues a read of the tenant's hub now; the returned wait resolves with it.
    async fn start_query<T: Send + 'static>(
        &self,
        tenant: &str,
        read: impl FnOnce(&DeviceHub) -> T + Send + 'static,
    ) -> Option<oneshot::Receiver<T>> {
        let hub = self.existing(tenant)?;
        let (tx, rx) = oneshot::channel();
        hub.send(Msg::Query(Box::new(move |h| {
            let _ = tx.send(read(h));
        })))
        .await
        .ok()?;
        Some(rx)
    }

    // ----- where the hub runs -----

    /// Where the tenant's hub runs (always here on one node). In a cluster a hub whose lease
    /// this node just took starts here now, from the store.
    async fn place(&self, tenant: &str) -> Result<HubPlace, ErrorBody> {
        if self.inner.route.is_none() || self.existing(tenant).is_some() {
            return Ok(HubPlace::Here);
        }
        self.locate(tenant).await
    }

    /// [`Devices::place`] through the cluster's directory. (Boxed: starting a hub attaches this
    /// node's connections to it, which places it again.)
    fn locate<'a>(&'a self, tenant: &'a str) -> BoxFuture<'a, Result<HubPlace, ErrorBody>> {
        Box::pin(async move {
            let Some(route) = &self.inner.route else { return Ok(HubPlace::Here) };
            match route.locate(tenant).await? {
                HubPlace::Here => {
                    self.start_hub(tenant).await?;
                    Ok(HubPlace::Here)
                }
                there => Ok(there),
            }
        })
    }

    /// Starts the tenant's hub here (this node holds its lease), then attaches this node's own
    /// connections of the tenant to it again.
    async fn start_hub(&self, tenant: &str) -> Result<(), ErrorBody> {
        {
            let _once = self.inner.starting.lock().await;
            if self.existing(tenant).is_some() || self.inner.closed.load(Ordering::Acquire) {
                return Ok(());
            }
            let records = self
                .inner
                .store
                .load_devices_of(tenant)
                .await
                .map_err(|e| err(ErrorCode::StorageUnavailable, e.to_string()))?;
            tracing::info!(tenant, devices = records.len(), "running the tenant's device hub here");
            self.spawn_hub(tenant, records);
        }
        self.relink(tenant).await;
        Ok(())
    }

    /// Sends `op` to the tenant's hub on `node` now (in order with this node's other calls
    /// there); the returned wait decodes its answer. A node that no longer runs the hub (or does
    /// not answer) makes this node look the hub up again.
    fn start_remote<T: serde::de::DeserializeOwned + Send + 'static>(
        &self,
        node: &str,
        tenant: &str,
        op: DeviceOp,
        wait: Option<std::time::Duration>,
    ) -> BoxFuture<'static, Result<T, ErrorBody>> {
        let Some(route) = self.inner.route.clone() else { return Box::pin(std::future::ready(Err(gone()))) };
        let call = DeviceCall { tenant: tenant.to_owned(), op };
        let answer = route.call(node, &call, wait.unwrap_or_else(|| route.timeout()));
        let tenant = call.tenant;
        Box::pin(async move {
            let result = answer.await.and_then(|raw| DeviceAnswer::decode(&raw));
            if matches!(&result, Err(e) if e.code == ErrorCode::ClusterUnavailable) {
                route.forget(&tenant);
            }
            result
        })
    }

    /// [`Devices::start_remote`], waited for.
    async fn remote<T: serde::de::DeserializeOwned + Send + 'static>(
        &self,
        node: &str,
        tenant: &str,
        op: DeviceOp,
        wait: Option<std::time::Duration>,
    ) -> Result<T, ErrorBody> {
        self.start_remote(node, tenant, op, wait).await
    }

    /// Sends `op` to the tenant's hub on `node` without waiting.
    fn remote_tell(&self, node: &str, tenant: &str, op: DeviceOp) {
        if let Some(route) = &self.inner.route {
            route.tell(node, &DeviceCall { tenant: tenant.to_owned(), op });
        }
    }

    /// [`Devices::start_remote`] as an [`Awaiting`] (the call has left when this returns).
    fn remote_later<T: serde::de::DeserializeOwned + Send + 'static>(
        &self,
        node: Arc<str>,
        tenant: &str,
        op: DeviceOp,
        wait: Option<std::time::Duration>,
    ) -> Awaiting<T> {
        let (tx, rx) = oneshot::channel();
        let answer = self.start_remote(&node, tenant, op, wait);
        tokio::spawn(async move {
            let _ = tx.send(answer.await);
        });
        Awaiting(rx)
    }

    fn lock_links(&self) -> std::sync::MutexGuard<'_, HashMap<ConnId, Link>> {
        self.inner.links.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn lock_remote(&self) -> std::sync::MutexGuard<'_, RemoteConns> {
        self.inner.remote.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Updates what connection `conn` told its hub (in a cluster).
    fn note(&self, conn: ConnId, f: impl FnOnce(&mut Link)) {
        if self.inner.route.is_some()
            && let Some(l) = self.lock_links().get_mut(&conn)
        {
            f(l);
        }
    }

    /// Attaches `conn` wherever the tenant's hub runs, and notes where.
    async fn attach_at(&self, tenant: &str, conn: ConnId, outbox: Outbox, admin: bool) {
        let at = match self.place(tenant).await {
            Ok(HubPlace::Here) => {
                let _ = self.send(tenant, Msg::Attach { conn, outbox, admin }).await;
                Some(HubPlace::Here)
            }
            Ok(HubPlace::Node(node)) => {
                self.remote_tell(&node, tenant, DeviceOp::Attach { conn, admin });
                Some(HubPlace::Node(node))
            }
            Err(e) => {
                tracing::warn!(tenant, error = %e.message, "the tenant's device hub cannot be reached (retried)");
                None
            }
        };
        self.note(conn, |l| l.at = at);
    }

    /// Tells the tenant's hub (wherever it runs now) again what each of this node's
    /// connections of the tenant told the previous one: attached, registered, subscribed.
    pub async fn relink(&self, tenant: &str) {
        let place = match self.place(tenant).await {
            Ok(p) => p,
            Err(e) => {
                tracing::warn!(tenant, error = %e.message, "the tenant's device hub cannot be reached (retried)");
                return;
            }
        };
        let links: Vec<(ConnId, Link)> = self
            .lock_links()
            .iter()
            .filter(|(_, l)| &*l.tenant == tenant && l.at.as_ref() != Some(&place))
            .map(|(c, l)| (*c, l.clone()))
            .collect();
        for (conn, link) in links {
            self.attach_at(tenant, conn, link.outbox.clone(), link.admin).await;
            if let Some((sub, register)) = link.registered
                && let Err(e) = self.register(tenant, &sub, conn, register).await
            {
                tracing::warn!(tenant, error = %e.message, "registering a device again failed");
            }
            if let Some(ids) = link.subscribed {
                let _ = self.subscribe(tenant, conn, ids).await;
            }
        }
    }

    /// The tenants this node has connections of, and where each connection's hub is (in a
    /// cluster; what its directory checks).
    pub fn linked(&self) -> Vec<(Arc<str>, Option<HubPlace>)> {
        let mut v: Vec<(Arc<str>, Option<HubPlace>)> =
            self.lock_links().values().map(|l| (l.tenant.clone(), l.at.clone())).collect();
        v.sort_by(|a, b| a.0.cmp(&b.0));
        v.dedup_by(|a, b| a.0 == b.0 && a.1 == b.1);
        v
    }

    /// How many tenants' hubs run here.
    pub fn hub_count(&self) -> usize {
        self.lock_hubs().len()
    }

    /// The tenants whose hub runs here.
    pub fn hubs_here(&self) -> Vec<String> {
        self.lock_hubs().keys().cloned().collect()
    }

    /// This node lost the tenant's lease: its hub stops at once (another node runs it now);
    /// this node's connections of the tenant attach there at the next check.
    pub async fn abandon(&self, tenant: &str) {
        let Some(hub) = self.lock_hubs().remove(tenant) else { return };
        tracing::warn!(tenant, "lost the tenant's device hub lease; giving the hub up");
        let _ = hub.send(Msg::Abandon).await;
        self.lock_remote().retain(|_, (t, _)| &**t != tenant);
        for l in self.lock_links().values_mut().filter(|l| &*l.tenant == tenant) {
            l.at = None;
        }
    }

    /// Connections on nodes that died leave the hubs here (devices go offline).
    pub async fn sweep_nodes(&self, is_dead: impl Fn(&str) -> bool) {
        let gone: Vec<(ConnId, Arc<str>)> = {
            let mut remote = self.lock_remote();
            let dead: Vec<ConnId> = remote.iter().filter(|(_, (_, n))| is_dead(n)).map(|(c, _)| *c).collect();
            dead.into_iter().filter_map(|c| remote.remove(&c).map(|(t, _)| (c, t))).collect()
        };
        for (conn, tenant) in gone {
            self.tell(&tenant, DeviceInput::Disconnect { conn }).await;
        }
    }

    /// A call from node `from` (the request handler runs this inline, in arrival order);
    /// resolves with the answer, `None` for a tell.
    pub fn serve(&self, from: Arc<str>, call: DeviceCall, answer: bool) -> BoxFuture<'static, Option<Box<RawValue>>> {
        let (tx, rx) = match answer {
            true => {
                let (tx, rx) = oneshot::channel();
                (Some(tx), Some(rx))
            }
            false => (None, None),
        };
        let queued = match &self.inner.jobs {
            Some(jobs) => jobs.try_send(Job { from, call, answer: tx }).is_ok(),
            None => false,
        };
        if !queued {
            METRICS.cluster_dropped.inc();
            tracing::warn!("device calls from other nodes are not being taken fast enough: one was refused");
        }
        Box::pin(async move {
            match rx {
                Some(rx) => Some(rx.await.unwrap_or_else(|_| DeviceAnswer::Err(gone()).encode())),
                None => None,
            }
        })
    }

    /// Takes one call from another node up to the point where its order is fixed (queued at
    /// the hub); returns the wait for its answer.
    async fn take(&self, from: Arc<str>, call: DeviceCall) -> BoxFuture<'static, DeviceAnswer> {
        fn now(a: DeviceAnswer) -> BoxFuture<'static, DeviceAnswer> {
            Box::pin(std::future::ready(a))
        }
        fn later<T: serde::Serialize + Send + 'static>(
            w: Result<Awaiting<T>, ErrorBody>,
        ) -> BoxFuture<'static, DeviceAnswer> {
            match w {
                Ok(w) => Box::pin(async move { DeviceAnswer::of(w.await) }),
                Err(e) => now(DeviceAnswer::Err(e)),
            }
        }
        fn read<T: serde::Serialize + Send + 'static>(
            r: Option<oneshot::Receiver<T>>,
        ) -> BoxFuture<'static, DeviceAnswer> {
            match r {
                Some(r) => Box::pin(async move { DeviceAnswer::of(r.await.map_err(|_| gone())) }),
                None => now(DeviceAnswer::Err(gone())),
            }
        }
        let DeviceCall { tenant, op } = call;
        if self.existing(&tenant).is_none() {
            return now(DeviceAnswer::Err(err(ErrorCode::ClusterUnavailable, NOT_HERE)));
        }
        let done = || now(DeviceAnswer::of(Ok(DeviceReply::Done)));
        match op {
            DeviceOp::Attach { conn, admin } => {
                let Some(route) = self.inner.route.clone() else { return now(DeviceAnswer::Err(gone())) };
                self.lock_remote().insert(conn, (tenant.as_str().into(), from.clone()));
                let outbox = RemoteWriter::outbox(route, from, conn);
                let _ = self.send(&tenant, Msg::Attach { conn, outbox, admin }).await;
                done()
            }
            DeviceOp::Detach { conn } => {
                self.lock_remote().remove(&conn);
                self.tell(&tenant, DeviceInput::Disconnect { conn }).await;
                done()
            }
            DeviceOp::Register { conn, sub, register } => {
                later(self.submit(&tenant, |req| DeviceInput::Register { conn, sub, register, req }).await)
            }
            DeviceOp::State { conn, state } => {
                later(self.submit(&tenant, move |req| DeviceInput::State { conn, state, req }).await)
            }
            DeviceOp::CommandResponse { conn, response } => {
                later(self.submit(&tenant, |req| DeviceInput::CommandResponse { conn, response, req: Some(req) }).await)
            }
            DeviceOp::CommandAck { conn, response } => {
                self.tell(&tenant, DeviceInput::CommandResponse { conn, response, req: None }).await;
                done()
            }
            DeviceOp::Subscribe { conn, device_ids } => {
                later(self.submit(&tenant, |req| DeviceInput::Subscribe { conn, device_ids, req }).await)
            }
            DeviceOp::Unsubscribe { conn } => {
                self.tell(&tenant, DeviceInput::Unsubscribe { conn }).await;
                done()
            }
            DeviceOp::Command { request, admin } => later(self.queue_command(&tenant, request, admin).await),
            DeviceOp::List => read(self.start_query(&tenant, DeviceHub::list).await),
            DeviceOp::Get { device_id } => read(self.start_query(&tenant, move |h| h.get(&device_id)).await),
            DeviceOp::Resync { device_id } => read(self.start_query(&tenant, move |h| h.resync(&device_id)).await),
            DeviceOp::Stats => read(self.start_query(&tenant, DeviceHub::stats).await),
        }
    }

    /// The commands admins may send (built in, and `--commands-file`'s).
    pub fn commands(&self) -> &unisono_core::device::CommandCatalog {
        &self.inner.cfg.hub.commands
    }

    /// What a hub on another node sends one of this node's connections.
    pub fn to_conn(&self, msg: ToConn) {
        let links = self.lock_links();
        match msg {
            ToConn::Deliver { conn, text } => {
                let Some(l) = links.get(&conn) else { return };
                match Outgoing::from_text(text) {
                    Ok(m) => {
                        l.outbox.push(m);
                    }
                    Err(e) => tracing::warn!(error = %e, "a device push from another node that does not decode"),
                }
            }
            ToConn::Close { conn, code } => {
                if let Some(l) = links.get(&conn) {
                    l.outbox.close(code, close_reason(code));
                }
            }
        }
    }

    /// How long a command's outcome may take at most, for a remote wait.
    fn command_wait(&self, r: &CommandRequest) -> std::time::Duration {
        let h = &self.inner.cfg.hub;
        let timeout = r.timeout_ms.unwrap_or(h.default_timeout_ms).min(h.max_timeout_ms);
        let tries = u64::from(r.retries.unwrap_or(h.default_retries).min(h.max_retries)) + 1;
        let queued = if r.queue { r.ttl_ms.unwrap_or(h.max_queue_ttl_ms).min(h.max_queue_ttl_ms) } else { 0 };
        let base = self.inner.route.as_ref().map(|r| r.timeout()).unwrap_or_default();
        base + std::time::Duration::from_millis(timeout.saturating_mul(tries).saturating_add(queued))
    }

    // ----- connections -----

    /// Attaches connection `conn` of `tenant`: pushes to it reach `outbox`. An admin receives
    /// presence at once and device states once it subscribes.
    pub async fn attach(&self, tenant: &str, conn: ConnId, outbox: Outbox, admin: bool) {
        if self.inner.route.is_some() {
            let link = Link {
                tenant: tenant.into(),
                outbox: outbox.clone(),
                admin,
                at: None,
                registered: None,
                subscribed: None,
            };
            self.lock_links().insert(conn, link);
        }
        self.attach_at(tenant, conn, outbox, admin).await;
    }

    /// Connection `conn` closed (a device goes offline unless it already reconnected).
    pub async fn detach(&self, tenant: &str, conn: ConnId) {
        if self.inner.route.is_some() {
            let link = self.lock_links().remove(&conn);
            match link.and_then(|l| l.at) {
                Some(HubPlace::Node(node)) => self.remote_tell(&node, tenant, DeviceOp::Detach { conn }),
                Some(HubPlace::Here) if self.existing(tenant).is_some() => {
                    self.tell(tenant, DeviceInput::Disconnect { conn }).await
                }
                _ => {}
            }
            return;
        }
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
        let kept = self.inner.route.as_ref().map(|_| register.clone());
        let result = match self.place(tenant).await? {
            HubPlace::Here => {
                self.call(tenant, |req| DeviceInput::Register { conn, sub: sub.to_owned(), register, req }).await
            }
            HubPlace::Node(node) => {
                self.remote(&node, tenant, DeviceOp::Register { conn, sub: sub.to_owned(), register }, None).await
            }
        };
        if let (Ok(_), Some(register)) = (&result, kept) {
            self.note(conn, |l| l.registered = Some((sub.to_owned(), register)));
        }
        result
    }

    /// `player:state`: queued now, in the order received; the returned wait resolves once the
    /// state is stored (then admins see it).
    pub async fn state(&self, tenant: &str, conn: ConnId, state: Value) -> Result<Awaiting<DeviceReply>, ErrorBody> {
        match self.place(tenant).await? {
            HubPlace::Here => self.submit(tenant, move |req| DeviceInput::State { conn, state, req }).await,
            HubPlace::Node(node) => Ok(self.remote_later(node, tenant, DeviceOp::State { conn, state }, None)),
        }
    }

    /// `player:command:response` from connection `conn`.
    pub async fn command_response(
        &self,
        tenant: &str,
        conn: ConnId,
        response: CommandResponse,
    ) -> Result<DeviceReply, ErrorBody> {
        match self.place(tenant).await? {
            HubPlace::Here => {
                self.call(tenant, |req| DeviceInput::CommandResponse { conn, response, req: Some(req) }).await
            }
            HubPlace::Node(node) => {
                self.remote(&node, tenant, DeviceOp::CommandResponse { conn, response }, None).await
            }
        }
    }

    /// A device answered `player:command` through the event's ack: nothing to answer back.
    pub async fn command_ack(&self, tenant: &str, conn: ConnId, response: CommandResponse) {
        match self.place(tenant).await {
            Ok(HubPlace::Here) => self.tell(tenant, DeviceInput::CommandResponse { conn, response, req: None }).await,
            Ok(HubPlace::Node(node)) => self.remote_tell(&node, tenant, DeviceOp::CommandAck { conn, response }),
            Err(e) => tracing::warn!(tenant, error = %e.message, "a command ack could not reach the device hub"),
        }
    }

    // ----- admins -----

    /// `devices:subscribe`: the devices' full states, from which patches continue.
    pub async fn subscribe(
        &self,
        tenant: &str,
        conn: ConnId,
        device_ids: Option<Vec<String>>,
    ) -> Result<DeviceReply, ErrorBody> {
        let kept = self.inner.route.as_ref().map(|_| device_ids.clone());
        let result = match self.place(tenant).await? {
            HubPlace::Here => self.call(tenant, |req| DeviceInput::Subscribe { conn, device_ids, req }).await,
            HubPlace::Node(node) => self.remote(&node, tenant, DeviceOp::Subscribe { conn, device_ids }, None).await,
        };
        if let (Ok(_), Some(ids)) = (&result, kept) {
            self.note(conn, |l| l.subscribed = Some(ids));
        }
        result
    }

    pub async fn unsubscribe(&self, tenant: &str, conn: ConnId) {
        self.note(conn, |l| l.subscribed = None);
        match self.place(tenant).await {
            Ok(HubPlace::Here) => self.tell(tenant, DeviceInput::Unsubscribe { conn }).await,
            Ok(HubPlace::Node(node)) => self.remote_tell(&node, tenant, DeviceOp::Unsubscribe { conn }),
            Err(e) => tracing::warn!(tenant, error = %e.message, "an unsubscribe could not reach the device hub"),
        }
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
        match self.place(tenant).await? {
            HubPlace::Here => self.queue_command(tenant, request, admin).await,
            HubPlace::Node(node) => {
                let wait = Some(self.command_wait(&request));
                Ok(self.remote_later(node, tenant, DeviceOp::Command { request, admin }, wait))
            }
        }
    }

    /// Queues a command at the tenant's hub here.
    async fn queue_command(
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

    /// Reads the tenant's hub wherever it runs (`None`: it has none, or it cannot be reached).
    async fn read<T: serde::de::DeserializeOwned + Send + 'static>(
        &self,
        tenant: &str,
        op: DeviceOp,
        here: impl FnOnce(&DeviceHub) -> T + Send + 'static,
    ) -> Option<T> {
        let failed = match self.place(tenant).await {
            Ok(HubPlace::Here) => return self.query(tenant, here).await,
            Ok(HubPlace::Node(node)) => match self.remote(&node, tenant, op, None).await {
                Ok(v) => return Some(v),
                Err(e) => e,
            },
            Err(e) => e,
        };
        // The hub's node does not answer (it died and the hub has not moved yet, or Redis is
        // out of reach): the stored devices, none of them known online, rather than nothing.
        tracing::warn!(tenant, error = %failed.message, "the device hub cannot be reached; answering from the store");
        let records = self.inner.store.load_devices_of(tenant).await.ok()?;
        Some(here(&DeviceHub::restore(self.inner.cfg.hub.clone(), records)))
    }

    /// Every device of the tenant, with its current state.
    pub async fn list(&self, tenant: &str) -> Vec<DeviceView> {
        self.read(tenant, DeviceOp::List, DeviceHub::list).await.unwrap_or_default()
    }

    /// One device of the tenant (`None` also for another tenant's device: no existence leak).
    pub async fn get(&self, tenant: &str, device_id: &str) -> Option<DeviceView> {
        let id = device_id.to_owned();
        let op = DeviceOp::Get { device_id: id.clone() };
        self.read(tenant, op, move |h| h.get(&id)).await.flatten()
    }

    /// The full state admins patch from (after a rev gap).
    pub async fn resync(&self, tenant: &str, device_id: &str) -> Option<DeviceView> {
        let id = device_id.to_owned();
        let op = DeviceOp::Resync { device_id: id.clone() };
        self.read(tenant, op, move |h| h.resync(&id)).await.flatten()
    }

    /// The tenant's running totals (dashboard usage stats).
    pub async fn stats(&self, tenant: &str) -> TenantStats {
        self.read(tenant, DeviceOp::Stats, DeviceHub::stats).await.unwrap_or_default()
    }

    /// Devices known, online, and admins attached, per tenant whose hub runs here (for staff:
    /// counts only).
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
        let hubs: Vec<(String, mpsc::Sender<Msg>)> = self.lock_hubs().drain().collect();
        for (tenant, hub) in hubs {
            let (tx, rx) = oneshot::channel();
            if hub.send(Msg::Shutdown(tx)).await.is_ok() {
                let _ = rx.await;
            }
            // Another node takes the tenant's hub at once (its connections here are closing).
            if let Some(route) = &self.inner.route {
                route.release(&tenant);
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
                Msg::Abandon => break,
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

/// Takes the calls of other nodes in arrival order: each is queued at its hub before the next
/// is looked at; their answers are sent as they complete.
async fn serve_jobs(devices: std::sync::Weak<Inner>, mut jobs: mpsc::Receiver<Job>) {
    while let Some(Job { from, call, answer }) = jobs.recv().await {
        let Some(inner) = devices.upgrade() else { break };
        let pending = Devices { inner }.take(from, call).await;
        match answer {
            Some(tx) => {
                tokio::spawn(async move {
                    let _ = tx.send(pending.await.encode());
                });
            }
            // A tell's result is only its effects.
            None => drop(pending),
        }
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
