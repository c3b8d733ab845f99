//! Devices (seed 003's App Players) and the admins who watch and command them.
//!
//! Everything is kept per tenant: a device, an admin, a command or a state update never
//! reaches another tenant. Owns:
//! - the registry (identity = `deviceId`, so a reconnect finds the same entry, its history and
//!   any queued commands) and presence (`device:online` / `device:offline` to admins);
//! - state: `player:state` is stored (current + bounded history, committed before the ack) and
//!   sent to subscribed admins as a JSON Merge Patch against the state they last got
//!   (`state:updated {deviceId, rev, baseRev, patch}`), coalesced per device to at most
//!   `admin_updates_per_sec` (latest wins), so a chatty device cannot flood dashboards. A
//!   `null` member of a state means "absent" (RFC 7396 cannot carry it) and is not stored;
//! - commands: validated against the [`CommandCatalog`], given a `commandId`, delivered as
//!   `player:command`, retried with the **same** `commandId` after each timeout (devices may
//!   see a command twice), answered by `player:command:response`; an offline device gives
//!   `DEVICE_OFFLINE` at once unless the admin asked to queue the command with a TTL;
//! - snapshots: images in `vlc:snapshot` results are stored gzip-compressed and replaced by a
//!   reference (`/api/devices/{id}/snapshot`) before anything is sent to admins.
//!
//! Connections are [`Outbox`]es carrying pre-serialized `{event, data}` pushes, as for rooms:
//! the edges (Socket.IO today) know nothing of devices.

use std::{
    collections::{HashMap, HashSet},
    io::Write as _,
    sync::{
        Arc, Mutex,
        atomic::{AtomicU64, Ordering},
    },
    time::{Duration, Instant},
};

use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use tokio::sync::{Notify, mpsc};
use unisono_core::{
    Millis,
    command::CommandCatalog,
    merge_patch,
    protocol::{ErrorBody, ErrorCode},
};

use crate::{
    bus::{Frame, Outbox},
    store::{DeviceRow, HistoryEntry, Snapshot, Store},
    time::now_ms,
};

/// Limits and timers of the device registry.
#[derive(Debug, Clone)]
pub struct DevicesConfig {
    /// History entries kept per device.
    pub history_len: usize,
    /// History older than this is dropped (ms).
    pub history_age_ms: f64,
    /// Most `state:updated` pushes per device per second to admins (latest wins).
    pub admin_updates_per_sec: f64,
    /// Command timeout when the admin gives none (ms), and the most it may ask for.
    pub default_timeout_ms: u64,
    pub max_timeout_ms: u64,
    /// Retries when the admin gives none, and the most it may ask for.
    pub default_retries: u32,
    pub max_retries: u32,
    /// Longest a queued command waits for an offline device (ms).
    pub max_queue_ttl_ms: u64,
    /// Most devices per tenant.
    pub max_devices_per_tenant: usize,
    /// Largest snapshot image accepted (bytes, decoded).
    pub max_snapshot_bytes: usize,
    /// Commands in flight (waiting for a device) per tenant.
    pub max_pending_per_tenant: usize,
    pub commands: CommandCatalog,
}

impl Default for DevicesConfig {
    fn default() -> Self {
        DevicesConfig {
            history_len: 100,
            history_age_ms: 24.0 * 3600.0 * 1000.0,
            admin_updates_per_sec: 2.0,
            default_timeout_ms: 5_000,
            max_timeout_ms: 120_000,
            default_retries: 2,
            max_retries: 10,
            max_queue_ttl_ms: 3_600_000,
            max_devices_per_tenant: 100_000,
            max_snapshot_bytes: 8 * 1024 * 1024,
            max_pending_per_tenant: 10_000,
            commands: CommandCatalog::builtin(),
        }
    }
}

/// `player:register` payload: `deviceId`, `name`, and anything else (kept as device info).
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Register {
    pub device_id: Option<String>,
    pub name: Option<String>,
    #[serde(flatten)]
    pub info: serde_json::Map<String, Value>,
}

/// `player:command:response` payload.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct CommandResponse {
    pub command_id: String,
    pub status: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub result: Option<Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<Value>,
}

/// An admin's `command` request.
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct CommandRequest {
    pub device_id: String,
    pub command: String,
    #[serde(default)]
    pub params: Value,
    pub timeout_ms: Option<u64>,
    pub retries: Option<u32>,
    /// Queue for an offline device instead of failing with `DEVICE_OFFLINE`.
    #[serde(default)]
    pub queue: bool,
    /// How long a queued command waits for the device (ms).
    pub ttl_ms: Option<u64>,
}

/// The outcome of a command, as the admin gets it (ack data and `command:response`).
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct CommandOutcome {
    pub command_id: String,
    pub device_id: String,
    pub command: String,
    /// The device's status (`success`, `error`, …).
    pub status: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub result: Option<Value>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<Value>,
    /// Deliveries made (1 + retries used).
    pub attempts: u32,
}

/// What admins see of a device.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct DeviceView {
    pub device_id: String,
    pub name: String,
    pub online: bool,
    pub last_seen: Millis,
    pub info: Value,
    pub rev: u64,
    pub state: Value,
}

struct Link {
    conn: u64,
    outbox: Outbox,
}

struct Device {
    name: String,
    info: Value,
    state: Value,
    /// The rev of the latest committed state (what admins and REST see).
    rev: u64,
    /// The rev given to the latest accepted state (may still be waiting for its commit).
    accepted_rev: u64,
    last_seen: Millis,
    link: Option<Link>,
    /// Wakes commands queued for this device when it (re)registers.
    online: Arc<Notify>,
    /// What admins were last sent, and its rev (patches are computed against it).
    sent_state: Value,
    sent_rev: u64,
    last_sent: Option<Instant>,
    flush_scheduled: bool,
}

impl Device {
    fn view(&self, id: &str) -> DeviceView {
        DeviceView {
            device_id: id.to_owned(),
            name: self.name.clone(),
            online: self.link.is_some(),
            last_seen: self.last_seen,
            info: self.info.clone(),
            rev: self.rev,
            state: self.state.clone(),
        }
    }
    /// The view admins subscribe from: the state they were last sent, so the next patch's
    /// `baseRev` matches.
    fn sent_view(&self, id: &str) -> DeviceView {
        DeviceView { rev: self.sent_rev, state: self.sent_state.clone(), ..self.view(id) }
    }
    fn row(&self, tenant: &str, id: &str) -> DeviceRow {
        DeviceRow {
            tenant: tenant.to_owned(),
            device_id: id.to_owned(),
            name: self.name.clone(),
            info: self.info.clone(),
            state: self.state.clone(),
            rev: self.rev,
            last_seen: self.last_seen,
        }
    }
}

enum Subscription {
    None,
    All,
    Some(HashSet<String>),
}

struct Admin {
    outbox: Outbox,
    subs: Subscription,
}

#[derive(Default)]
struct Tenant {
    devices: HashMap<String, Device>,
    admins: HashMap<u64, Admin>,
    stats: TenantStats,
}

/// Running totals of one tenant, for its dashboard (rates are computed by the reader).
#[derive(Debug, Clone, Default, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct TenantStats {
    pub states: u64,
    pub commands: u64,
    pub commands_failed: u64,
    pub devices: usize,
    pub online: usize,
}

impl Tenant {
    fn to_admins(&self, frame: &Frame, device: Option<&str>) {
        for a in self.admins.values() {
            let wanted = match (&a.subs, device) {
                (_, None) => true,
                (Subscription::All, _) => true,
                (Subscription::Some(ids), Some(d)) => ids.contains(d),
                (Subscription::None, Some(_)) => false,
            };
            if wanted {
                a.outbox.push(frame.clone());
            }
        }
    }
}

struct Pending {
    tenant: String,
    device_id: String,
    tx: mpsc::Sender<CommandResponse>,
}

/// Commands waiting for their device, by `commandId`, with a count per tenant (for the limit).
#[derive(Default)]
struct PendingTable {
    by_id: HashMap<String, Pending>,
    per_tenant: HashMap<String, usize>,
}

struct Inner {
    cfg: DevicesConfig,
    store: Store,
    tenants: Mutex<HashMap<String, Tenant>>,
    pending: Mutex<PendingTable>,
    next_conn: AtomicU64,
}

/// The device registry and command router; cheap to clone.
#[derive(Clone)]
pub struct Devices {
    inner: Arc<Inner>,
}

fn push(event: &str, data: impl Serialize) -> Frame {
    Frame::text(json!({ "event": event, "data": data }).to_string())
}

fn err(code: ErrorCode, msg: impl Into<String>) -> ErrorBody {
    ErrorBody::new(code, msg)
}

fn random_id() -> String {
    use rand::Rng;
    let mut rng = rand::rng();
    (0..16).map(|_| format!("{:x}", rng.random_range(0..16u8))).collect()
}

/// Longest device id or name accepted.
const MAX_ID_CHARS: usize = 128;

impl Devices {
    /// Loads every stored device (all offline until they connect).
    pub async fn start(cfg: DevicesConfig, store: Store) -> Result<Devices, crate::store::StoreError> {
        let rows = store.load_devices().await?;
        let mut tenants: HashMap<String, Tenant> = HashMap::new();
        for r in rows {
            tenants.entry(r.tenant).or_default().devices.insert(
                r.device_id,
                Device {
                    name: r.name,
                    info: r.info,
                    sent_state: r.state.clone(),
                    state: r.state,
                    rev: r.rev,
                    accepted_rev: r.rev,
                    sent_rev: r.rev,
                    last_seen: r.last_seen,
                    link: None,
                    online: Arc::new(Notify::new()),
                    last_sent: None,
                    flush_scheduled: false,
                },
            );
        }
        Ok(Devices {
            inner: Arc::new(Inner {
                cfg,
                store,
                tenants: Mutex::new(tenants),
                pending: Mutex::new(PendingTable::default()),
                next_conn: AtomicU64::new(1),
            }),
        })
    }

    fn tenants(&self) -> std::sync::MutexGuard<'_, HashMap<String, Tenant>> {
        self.inner.tenants.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// A fresh connection id (devices and admins).
    pub fn next_conn(&self) -> u64 {
        self.inner.next_conn.fetch_add(1, Ordering::Relaxed)
    }

    // ----- devices -----

    /// `player:register`. `sub` is the token's subject: a device registers as itself (its id
    /// defaults to `sub`, and another id is refused). Returns the `player:registered` data.
    pub async fn register(
        &self,
        tenant: &str,
        sub: &str,
        conn: u64,
        outbox: Outbox,
        reg: Register,
    ) -> Result<Value, ErrorBody> {
        let id = reg.device_id.unwrap_or_else(|| sub.to_owned());
        if id.is_empty() || id.chars().count() > MAX_ID_CHARS {
            return Err(err(ErrorCode::InvalidPayload, format!("deviceId must be 1 to {MAX_ID_CHARS} characters")));
        }
        if id != sub {
            return Err(err(ErrorCode::Forbidden, "a player token may only register the device named by its subject"));
        }
        let now = now_ms();
        let (row, came_online, replaced) = {
            let mut tenants = self.tenants();
            let t = tenants.entry(tenant.to_owned()).or_default();
            if !t.devices.contains_key(&id) && t.devices.len() >= self.inner.cfg.max_devices_per_tenant {
                return Err(err(ErrorCode::Forbidden, "this tenant has reached its device limit"));
            }
            let d = t.devices.entry(id.clone()).or_insert_with(|| Device {
                name: String::new(),
                info: Value::Object(Default::default()),
                state: Value::Object(Default::default()),
                rev: 0,
                accepted_rev: 0,
                last_seen: now,
                link: None,
                online: Arc::new(Notify::new()),
                sent_state: Value::Object(Default::default()),
                sent_rev: 0,
                last_sent: None,
                flush_scheduled: false,
            });
            let came_online = d.link.is_none();
            if came_online {
                crate::metrics::METRICS.devices_online.inc();
            }
            // Registering again on the same connection is harmless; another connection of the
            // same device replaces the old one.
            let replaced = d.link.replace(Link { conn, outbox }).filter(|l| l.conn != conn).map(|l| l.outbox);
            if let Some(name) = reg.name {
                d.name = name.chars().take(MAX_ID_CHARS).collect();
            }
            if !reg.info.is_empty() {
                d.info = Value::Object(reg.info);
            }
            d.last_seen = now;
            d.online.notify_waiters();
            let row = d.row(tenant, &id);
            if came_online {
                let f = push("device:online", json!({ "deviceId": id, "name": d.name, "lastSeen": now }));
                t.to_admins(&f, None);
            }
            (row, came_online, replaced)
        };
        if let Some(old) = replaced {
            old.close(4001, "device registered on another connection");
        }
        tracing::info!(tenant, device = %id, came_online, "device registered");
        self.inner
            .store
            .save_device(&row)
            .await
            .map_err(|e| err(ErrorCode::StorageUnavailable, format!("could not store the device: {e}")))?;
        Ok(json!({ "deviceId": id, "name": row.name, "registeredAt": now, "rev": row.rev }))
    }

    /// The connection `conn` of a device closed: it is offline unless it already reconnected.
    pub async fn device_disconnected(&self, tenant: &str, device_id: &str, conn: u64) {
        let now = now_ms();
        let row = {
            let mut tenants = self.tenants();
            let Some(t) = tenants.get_mut(tenant) else { return };
            let Some(d) = t.devices.get_mut(device_id) else { return };
            if d.link.as_ref().map(|l| l.conn) != Some(conn) {
                return;
            }
            d.link = None;
            d.last_seen = now;
            crate::metrics::METRICS.devices_online.dec();
            let f = push("device:offline", json!({ "deviceId": device_id, "name": d.name, "lastSeen": now }));
            let row = d.row(tenant, device_id);
            t.to_admins(&f, None);
            row
        };
        tracing::info!(tenant, device = device_id, "device offline");
        if let Err(e) = self.inner.store.save_device(&row).await {
            tracing::warn!(error = %e, "storing device presence failed");
        }
    }

    /// `player:state`: queues the state for the store (in the order received) and returns a
    /// future that resolves, with the new rev, once it is committed; then the state becomes
    /// visible and the coalesced patch goes to admins. The caller need not hold up the device's
    /// next events while the commit is pending.
    pub async fn state(
        &self,
        tenant: &str,
        device_id: &str,
        conn: u64,
        state: Value,
    ) -> Result<impl std::future::Future<Output = Result<Value, ErrorBody>> + Send + 'static, ErrorBody> {
        if !state.is_object() {
            return Err(err(ErrorCode::InvalidPayload, "player:state takes the state object"));
        }
        let row = {
            let mut tenants = self.tenants();
            let t =
                tenants.get_mut(tenant).ok_or_else(|| err(ErrorCode::NotRegistered, "send player:register first"))?;
            t.stats.states += 1;
            let d = t
                .devices
                .get_mut(device_id)
                .filter(|d| d.link.as_ref().map(|l| l.conn) == Some(conn))
                .ok_or_else(|| err(ErrorCode::NotRegistered, "send player:register first"))?;
            d.accepted_rev += 1;
            d.last_seen = now_ms();
            // Null members cannot travel in a merge patch: store the state without them, so the
            // full state and every patched copy agree.
            DeviceRow { state: merge_patch::strip_nulls(&state), rev: d.accepted_rev, ..d.row(tenant, device_id) }
        };
        let cfg = &self.inner.cfg;
        let committed = self
            .inner
            .store
            .submit_device_state(&row, cfg.history_len, cfg.history_age_ms)
            .await
            .map_err(|e| err(ErrorCode::StorageUnavailable, format!("could not store the state: {e}")))?;
        let me = self.clone();
        let (tenant, device_id) = (tenant.to_owned(), device_id.to_owned());
        Ok(async move {
            committed
                .wait()
                .await
                .map_err(|e| err(ErrorCode::StorageUnavailable, format!("could not store the state: {e}")))?;
            // Only now is the state visible (admins, REST): nothing is shown before it is stored.
            {
                let mut tenants = me.tenants();
                if let Some(d) = tenants.get_mut(&tenant).and_then(|t| t.devices.get_mut(&device_id))
                    && row.rev > d.rev
                {
                    d.state = row.state;
                    d.rev = row.rev;
                }
            }
            me.publish_state(&tenant, &device_id);
            Ok(json!({ "rev": row.rev }))
        })
    }

    /// Sends the latest state to subscribed admins now, or schedules it for when the device's
    /// rate allows (one pending flush per device: latest wins).
    fn publish_state(&self, tenant: &str, device_id: &str) {
        let interval = Duration::from_secs_f64(1.0 / self.inner.cfg.admin_updates_per_sec.max(0.001));
        let wait = {
            let mut tenants = self.tenants();
            let Some(t) = tenants.get_mut(tenant) else { return };
            let Some(d) = t.devices.get_mut(device_id) else { return };
            if d.flush_scheduled {
                return;
            }
            match d.last_sent.map(|at| at.elapsed()) {
                Some(elapsed) if elapsed < interval => {
                    d.flush_scheduled = true;
                    interval - elapsed
                }
                _ => {
                    Self::flush(t, device_id);
                    return;
                }
            }
        };
        let me = self.clone();
        let (tenant, device_id) = (tenant.to_owned(), device_id.to_owned());
        tokio::spawn(async move {
            tokio::time::sleep(wait).await;
            let mut tenants = me.tenants();
            if let Some(t) = tenants.get_mut(&tenant) {
                if let Some(d) = t.devices.get_mut(&device_id) {
                    d.flush_scheduled = false;
                }
                Self::flush(t, &device_id);
            }
        });
    }

    fn flush(t: &mut Tenant, device_id: &str) {
        let Some(d) = t.devices.get_mut(device_id) else { return };
        let Some(patch) = merge_patch::diff(&d.sent_state, &d.state) else { return };
        let base = d.sent_rev;
        d.sent_state = d.state.clone();
        d.sent_rev = d.rev;
        d.last_sent = Some(Instant::now());
        let f = push("state:updated", json!({ "deviceId": device_id, "rev": d.rev, "baseRev": base, "patch": patch }));
        t.to_admins(&f, Some(device_id));
    }

    /// `player:command:response` from device `device_id`.
    pub async fn command_response(
        &self,
        tenant: &str,
        device_id: &str,
        resp: CommandResponse,
    ) -> Result<(), ErrorBody> {
        let tx = {
            let pending = self.inner.pending.lock().unwrap_or_else(|e| e.into_inner());
            match pending.by_id.get(&resp.command_id) {
                Some(p) if p.tenant == tenant && p.device_id == device_id => p.tx.clone(),
                // Late (after a timeout) or not this device's: nothing waits for it.
                _ => return Err(err(ErrorCode::InvalidPayload, "no command with this commandId is waiting")),
            }
        };
        let _ = tx.try_send(resp);
        Ok(())
    }

    // ----- admins -----

    /// Attaches an admin connection (no subscriptions yet; presence events always reach it).
    pub fn admin_attach(&self, tenant: &str, conn: u64, outbox: Outbox) {
        self.tenants()
            .entry(tenant.to_owned())
            .or_default()
            .admins
            .insert(conn, Admin { outbox, subs: Subscription::None });
    }

    pub fn admin_detach(&self, tenant: &str, conn: u64) {
        if let Some(t) = self.tenants().get_mut(tenant) {
            t.admins.remove(&conn);
        }
    }

    /// Every device of the tenant, with its current state.
    pub fn list(&self, tenant: &str) -> Vec<DeviceView> {
        let tenants = self.tenants();
        let mut v: Vec<DeviceView> =
            tenants.get(tenant).map(|t| t.devices.iter().map(|(id, d)| d.view(id)).collect()).unwrap_or_default();
        v.sort_by(|a, b| a.device_id.cmp(&b.device_id));
        v
    }

    /// One device of the tenant (`None` also for another tenant's device: no existence leak).
    pub fn get(&self, tenant: &str, device_id: &str) -> Option<DeviceView> {
        self.tenants().get(tenant)?.devices.get(device_id).map(|d| d.view(device_id))
    }

    /// Subscribes an admin to some devices (`None`: all, including future ones) and returns
    /// their full state, from which `state:updated` patches continue.
    pub fn subscribe(&self, tenant: &str, conn: u64, ids: Option<Vec<String>>) -> Result<Vec<DeviceView>, ErrorBody> {
        let mut tenants = self.tenants();
        let t = tenants.entry(tenant.to_owned()).or_default();
        let views: Vec<DeviceView> = match &ids {
            None => t.devices.iter().map(|(id, d)| d.sent_view(id)).collect(),
            Some(ids) => ids.iter().filter_map(|id| t.devices.get(id).map(|d| d.sent_view(id))).collect(),
        };
        let admin = t.admins.get_mut(&conn).ok_or_else(|| err(ErrorCode::Internal, "admin not attached"))?;
        admin.subs = match (ids, std::mem::replace(&mut admin.subs, Subscription::None)) {
            (None, _) => Subscription::All,
            (Some(_), Subscription::All) => Subscription::All,
            (Some(ids), Subscription::Some(mut have)) => {
                have.extend(ids);
                Subscription::Some(have)
            }
            (Some(ids), Subscription::None) => Subscription::Some(ids.into_iter().collect()),
        };
        Ok(views)
    }

    /// Drops an admin's subscriptions.
    pub fn unsubscribe(&self, tenant: &str, conn: u64) {
        if let Some(a) = self.tenants().get_mut(tenant).and_then(|t| t.admins.get_mut(&conn)) {
            a.subs = Subscription::None;
        }
    }

    /// The full state admins patch from (after a rev gap).
    pub fn resync(&self, tenant: &str, device_id: &str) -> Option<DeviceView> {
        self.tenants().get(tenant)?.devices.get(device_id).map(|d| d.sent_view(device_id))
    }

    /// A device's stored history, newest first.
    pub async fn history(&self, tenant: &str, device_id: &str, limit: usize) -> Result<Vec<HistoryEntry>, ErrorBody> {
        if self.get(tenant, device_id).is_none() {
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
        if self.get(tenant, device_id).is_none() {
            return Err(err(ErrorCode::DeviceNotFound, "no such device"));
        }
        self.inner
            .store
            .latest_snapshot(tenant, device_id)
            .await
            .map_err(|e| err(ErrorCode::StorageUnavailable, e.to_string()))
    }

    /// Sends a command and waits for the device's answer, retrying on timeout. `admin`: the
    /// connection to send `command:response` to when done.
    pub async fn command(
        &self,
        tenant: &str,
        req: CommandRequest,
        admin: Option<&Outbox>,
    ) -> Result<CommandOutcome, ErrorBody> {
        let cfg = &self.inner.cfg;
        cfg.commands.validate(&req.command, &req.params).map_err(|e| err(ErrorCode::InvalidCommand, e.to_string()))?;
        let timeout =
            Duration::from_millis(req.timeout_ms.unwrap_or(cfg.default_timeout_ms).clamp(1, cfg.max_timeout_ms));
        let retries = req.retries.unwrap_or(cfg.default_retries).min(cfg.max_retries);
        let ttl = Duration::from_millis(req.ttl_ms.unwrap_or(cfg.max_queue_ttl_ms).min(cfg.max_queue_ttl_ms));
        let params = if req.params.is_null() { json!({}) } else { req.params.clone() };
        let command_id = random_id();
        let online = {
            let tenants = self.tenants();
            let d = tenants
                .get(tenant)
                .and_then(|t| t.devices.get(&req.device_id))
                .ok_or_else(|| err(ErrorCode::DeviceNotFound, "no such device"))?;
            d.online.clone()
        };
        let (tx, mut rx) = mpsc::channel(4);
        {
            let mut pending = self.inner.pending.lock().unwrap_or_else(|e| e.into_inner());
            let in_flight = pending.per_tenant.entry(tenant.to_owned()).or_default();
            if *in_flight >= cfg.max_pending_per_tenant {
                return Err(err(
                    ErrorCode::RateLimited,
                    format!("{in_flight} commands of this tenant are already waiting for devices"),
                ));
            }
            *in_flight += 1;
            let p = Pending { tenant: tenant.to_owned(), device_id: req.device_id.clone(), tx };
            pending.by_id.insert(command_id.clone(), p);
        }
        let _cleanup = PendingGuard { devices: self.clone(), command_id: command_id.clone() };
        let frame =
            push("player:command", json!({ "command": req.command, "params": params, "commandId": command_id }));
        let queued_until = Instant::now() + ttl;
        let mut attempts = 0u32;
        let outcome = loop {
            // Deliver (or wait for the device when queued).
            let delivered = loop {
                let notified = online.notified();
                let sent = {
                    let tenants = self.tenants();
                    let link =
                        tenants.get(tenant).and_then(|t| t.devices.get(&req.device_id)).and_then(|d| d.link.as_ref());
                    link.map(|l| l.outbox.push(frame.clone())).unwrap_or(false)
                };
                if sent {
                    break true;
                }
                if !req.queue || Instant::now() >= queued_until {
                    break false;
                }
                if tokio::time::timeout_at(queued_until.into(), notified).await.is_err() {
                    break false;
                }
            };
            if !delivered {
                break Err(if req.queue && attempts == 0 {
                    err(ErrorCode::DeviceOffline, "the device did not come online before the command's TTL")
                } else {
                    err(ErrorCode::DeviceOffline, "the device is offline")
                });
            }
            attempts += 1;
            match tokio::time::timeout(timeout, rx.recv()).await {
                Ok(Some(resp)) => {
                    break Ok(self.outcome(tenant, &req, &command_id, resp, attempts).await);
                }
                Ok(None) => break Err(err(ErrorCode::Internal, "command channel closed")),
                Err(_) if attempts <= retries => {
                    tracing::info!(tenant, device = %req.device_id, command_id, attempts, "command timed out; retrying");
                    continue;
                }
                Err(_) => {
                    break Err(err(
                        ErrorCode::CommandTimeout,
                        format!("no answer after {attempts} deliveries of {} ms", timeout.as_millis()),
                    ));
                }
            }
        };
        let label = match &outcome {
            Ok(o) if o.status == "success" => "success",
            Ok(_) => "device_error",
            Err(e) if e.code == ErrorCode::CommandTimeout => "timeout",
            Err(e) if e.code == ErrorCode::DeviceOffline => "offline",
            Err(_) => "failed",
        };
        crate::metrics::METRICS.device_commands.with_label_values(&[label]).inc();
        if let Some(t) = self.tenants().get_mut(tenant) {
            t.stats.commands += 1;
            if label != "success" {
                t.stats.commands_failed += 1;
            }
        }
        if let Some(admin) = admin {
            let data = match &outcome {
                Ok(o) => serde_json::to_value(o).unwrap_or(Value::Null),
                Err(e) => json!({
                    "commandId": command_id, "deviceId": req.device_id, "command": req.command,
                    "status": "failed", "error": e, "attempts": attempts,
                }),
            };
            admin.push(push("command:response", data));
        }
        outcome
    }

    /// Turns a device's answer into the admin's outcome, storing any snapshot image.
    async fn outcome(
        &self,
        tenant: &str,
        req: &CommandRequest,
        command_id: &str,
        resp: CommandResponse,
        attempts: u32,
    ) -> CommandOutcome {
        let mut result = resp.result;
        if let Some(r) = result.as_mut() {
            self.extract_snapshot(tenant, &req.device_id, r).await;
        }
        CommandOutcome {
            command_id: command_id.to_owned(),
            device_id: req.device_id.clone(),
            command: req.command.clone(),
            status: resp.status,
            result,
            error: resp.error,
            attempts,
        }
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
        if gz.write_all(&raw).is_err() {
            return;
        }
        let Ok(gzip) = gz.finish() else { return };
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

    /// The tenant's running totals (dashboard usage stats).
    pub fn stats(&self, tenant: &str) -> TenantStats {
        let tenants = self.tenants();
        let Some(t) = tenants.get(tenant) else { return TenantStats::default() };
        TenantStats {
            devices: t.devices.len(),
            online: t.devices.values().filter(|d| d.link.is_some()).count(),
            ..t.stats.clone()
        }
    }

    /// Graceful shutdown: marks every connected device offline now and stores their last-seen
    /// times in one batch, before the store closes (their disconnects then find nothing to do).
    pub async fn shutdown(&self) {
        let now = now_ms();
        let rows: Vec<DeviceRow> = {
            let mut tenants = self.tenants();
            let mut rows = Vec::new();
            for (tenant, t) in tenants.iter_mut() {
                for (id, d) in t.devices.iter_mut().filter(|(_, d)| d.link.is_some()) {
                    d.link = None;
                    d.last_seen = now;
                    rows.push(d.row(tenant, id));
                }
            }
            rows
        };
        crate::metrics::METRICS.devices_online.set(0);
        let mut pending = Vec::with_capacity(rows.len());
        for row in &rows {
            match self.inner.store.submit_device_info(row).await {
                Ok(c) => pending.push(c),
                Err(e) => tracing::warn!(error = %e, "storing device presence at shutdown failed"),
            }
        }
        for c in pending {
            let _ = c.wait().await;
        }
        tracing::info!(devices = rows.len(), "devices marked offline");
    }

    /// Devices and admins connected, per tenant (for staff: counts, never payloads).
    pub fn counts(&self) -> Vec<(String, usize, usize, usize)> {
        let tenants = self.tenants();
        let mut v: Vec<_> = tenants
            .iter()
            .map(|(name, t)| {
                let online = t.devices.values().filter(|d| d.link.is_some()).count();
                (name.clone(), t.devices.len(), online, t.admins.len())
            })
            .collect();
        v.sort();
        v
    }
}

/// Removes a command from the pending table however the command ends.
struct PendingGuard {
    devices: Devices,
    command_id: String,
}

impl Drop for PendingGuard {
    fn drop(&mut self) {
        let mut pending = self.devices.inner.pending.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(p) = pending.by_id.remove(&self.command_id)
            && let Some(n) = pending.per_tenant.get_mut(&p.tenant)
        {
            *n = n.saturating_sub(1);
            if *n == 0 {
                pending.per_tenant.remove(&p.tenant);
            }
        }
    }
}
