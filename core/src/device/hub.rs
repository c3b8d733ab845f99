//! One tenant's devices and admins as a state machine: [`DeviceHub::apply`] takes a
//! [`DeviceInput`] and the current server time and returns the [`DeviceEffect`]s for the driver
//! to carry out, in order. Like a room, the hub reads no clock and does no IO.
//!
//! - **Registry and presence.** A device is known by its `deviceId` (its token's subject), so a
//!   reconnect finds the same entry, history and queued commands; a second connection of the same
//!   device replaces the first ([`DeviceEffect::Close`] 4001).
//! - **Nothing is shown before it is stored.** A registration, a state and a disconnect are
//!   [`DeviceEffect::Persist`]ed first; what admins see of them, and the device's ack, follow the
//!   driver's [`DeviceInput::Committed`] for that write. A state becomes the device's current
//!   state (REST, `devices:list`, patches) only then, and a failed write acknowledges nothing.
//! - **Coalesced patches.** Admins get `state:updated` as a JSON Merge Patch against the state
//!   they were last sent, at most `admin_updates_per_sec` per device (latest wins): a chatty
//!   device cannot flood dashboards.
//! - **Commands.** Validated against the [`CommandCatalog`], delivered as `player:command`,
//!   re-delivered with the **same** `commandId` after each timeout while retries last, answered
//!   by the device's `player:command:response`; an offline device fails at once with
//!   `DEVICE_OFFLINE` unless the command asked to be queued (then it waits up to its TTL for the
//!   device). The outcome is one [`DeviceEffect::CommandDone`].
//! - **Deadlines.** Retries, timeouts, TTLs and coalesced flushes are kept in one ordered index:
//!   the driver sleeps until [`DeviceHub::next_deadline`] and then applies [`DeviceInput::Tick`].

use crate::prelude::*;

use alloc::collections::{BTreeMap, BTreeSet};

use serde_json::{Map, Value};

use super::{catalog::CommandCatalog, timers::Timers};
use crate::{
    Millis, merge_patch,
    protocol::{
        CommandOutcome, CommandRequest, CommandResponse, DeviceList, DevicePresence, DevicePush, DeviceView, ErrorBody,
        ErrorCode, PlayerCommand, Register, Registered, StateAck, StateUpdated, TenantStats,
    },
};

/// A connection, as the driver numbers them (devices and admins alike).
pub type ConnId = u64;
/// A request the driver waits to answer ([`DeviceEffect::Reply`], [`DeviceEffect::CommandDone`]).
pub type RequestId = u64;
/// A write the driver reports back as [`DeviceInput::Committed`].
pub type WriteId = u64;

/// Close code for a connection replaced by a newer one of the same device.
pub const CLOSE_REPLACED: u16 = 4001;
/// Longest device id or name accepted, in characters.
pub const MAX_ID_CHARS: usize = 128;

/// Limits and timers of one tenant's hub, from configuration.
#[derive(Debug, Clone, PartialEq)]
pub struct HubConfig {
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
    pub max_devices: usize,
    /// Commands waiting for their devices, per tenant.
    pub max_pending: usize,
    pub commands: CommandCatalog,
}

impl Default for HubConfig {
    fn default() -> Self {
        HubConfig {
            admin_updates_per_sec: 2.0,
            default_timeout_ms: 5_000,
            max_timeout_ms: 120_000,
            default_retries: 2,
            max_retries: 10,
            max_queue_ttl_ms: 3_600_000,
            max_devices: 100_000,
            max_pending: 10_000,
            commands: CommandCatalog::builtin(),
        }
    }
}

/// The durable part of a device: what the store writes and restores.
#[derive(Debug, Clone, PartialEq)]
pub struct DeviceRecord {
    pub device_id: String,
    pub name: String,
    pub info: Value,
    pub state: Value,
    pub rev: u64,
    pub last_seen: Millis,
}

/// What to write.
#[derive(Debug, Clone, PartialEq)]
pub enum DeviceWrite {
    /// The registry fields (name, info, last seen); never the state or rev, which only state
    /// writes change, so a presence write committed after a state cannot undo it.
    Info(DeviceRecord),
    /// A new state and rev, and a history entry for it.
    State(DeviceRecord),
}

/// An input to the hub.
#[derive(Debug, Clone, PartialEq)]
pub enum DeviceInput {
    /// `player:register` on connection `conn`, authenticated as `sub` (the device id).
    Register { conn: ConnId, sub: String, register: Register, req: RequestId },
    /// `player:state`.
    State { conn: ConnId, state: Value, req: RequestId },
    /// `player:command:response`, or the ack of a `player:command` (then no `req`).
    CommandResponse { conn: ConnId, response: CommandResponse, req: Option<RequestId> },
    /// An admin's `command`; `command_id` is the driver's fresh random id, `admin` the connection
    /// that gets `command:response`.
    Command { admin: Option<ConnId>, command_id: String, request: CommandRequest, req: RequestId },
    /// An admin connection arrived (presence reaches it; device states once it subscribes).
    AdminAttach { conn: ConnId },
    /// `devices:subscribe`: these devices (`None`: all, including future ones).
    Subscribe { conn: ConnId, device_ids: Option<Vec<String>>, req: RequestId },
    /// `devices:unsubscribe`.
    Unsubscribe { conn: ConnId },
    /// A connection (device or admin) closed.
    Disconnect { conn: ConnId },
    /// The write `write` committed (`ok`) or failed.
    Committed { write: WriteId, ok: bool },
    /// Time passed: run whatever deadline is due.
    Tick,
    /// Graceful shutdown: every connected device goes offline; only writes follow.
    Shutdown,
}

/// What a request answers (serializable: a cluster node answers another's request with it).
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum DeviceReply {
    Registered(Registered),
    State(StateAck),
    Devices(DeviceList),
    Done,
}

/// An output for the driver to carry out, in order.
#[derive(Debug, Clone, PartialEq)]
pub enum DeviceEffect {
    /// Write this, then apply [`DeviceInput::Committed`] with `write` and the result.
    Persist { write: WriteId, what: DeviceWrite },
    /// Send to these admin connections (serialized once).
    ToAdmins { admins: Vec<ConnId>, push: DevicePush },
    /// Send to one connection.
    Deliver { to: ConnId, push: DevicePush },
    /// Close a connection.
    Close { conn: ConnId, code: u16, reason: &'static str },
    /// Answer request `req`.
    Reply { req: RequestId, result: Result<DeviceReply, ErrorBody> },
    /// A command ended: answer `req` (with the outcome, or with its failure when the status is
    /// `failed`) and send `command:response` to `admin`. A result carrying an image is the
    /// driver's to store as a snapshot first.
    CommandDone { req: RequestId, admin: Option<ConnId>, outcome: CommandOutcome },
}

struct Device {
    name: String,
    info: Value,
    /// The latest committed state and its rev (what admins and REST see).
    state: Value,
    rev: u64,
    /// The rev given to the latest accepted state (its commit may be pending).
    accepted_rev: u64,
    last_seen: Millis,
    link: Option<ConnId>,
    /// What admins were last sent, and its rev (patches are computed against it).
    sent_state: Value,
    sent_rev: u64,
    last_sent: Option<Millis>,
}

impl Device {
    fn new(now: Millis) -> Device {
        Device {
            name: String::new(),
            info: Value::Object(Map::new()),
            state: Value::Object(Map::new()),
            rev: 0,
            accepted_rev: 0,
            last_seen: now,
            link: None,
            sent_state: Value::Object(Map::new()),
            sent_rev: 0,
            last_sent: None,
        }
    }

    fn restore(r: DeviceRecord) -> Device {
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
            last_sent: None,
        }
    }

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

    fn record(&self, id: &str) -> DeviceRecord {
        DeviceRecord {
            device_id: id.to_owned(),
            name: self.name.clone(),
            info: self.info.clone(),
            state: self.state.clone(),
            rev: self.rev,
            last_seen: self.last_seen,
        }
    }

    fn presence(&self, id: &str) -> DevicePresence {
        DevicePresence { device_id: id.to_owned(), name: self.name.clone(), last_seen: self.last_seen }
    }
}

#[derive(Debug, Clone, PartialEq)]
enum Subscription {
    None,
    All,
    Some(BTreeSet<String>),
}

/// An attached admin: which devices' states it gets (every device until it narrows or opts
/// out, as seed 003's App Administradora expects), and the devices it has a base for (a full
/// state from `devices:subscribe` or a full push), so that every patch it gets applies.
struct Admin {
    subs: Subscription,
    based: BTreeSet<String>,
}

impl Admin {
    fn wants(&self, device: &str) -> bool {
        match &self.subs {
            Subscription::All => true,
            Subscription::Some(ids) => ids.contains(device),
            Subscription::None => false,
        }
    }
}

/// A command waiting for its device.
struct Pending {
    req: RequestId,
    admin: Option<ConnId>,
    request: CommandRequest,
    params: Value,
    timeout_ms: f64,
    retries: u32,
    /// Until when a queued command waits for its device (`None`: not queued).
    queued_until: Option<Millis>,
    /// Deliveries made.
    attempts: u32,
    /// Delivered and waiting for an answer (else waiting for the device).
    delivered: bool,
}

/// What a pending write was for.
enum AfterWrite {
    Registered {
        req: RequestId,
        conn: ConnId,
        device: String,
        came_online: bool,
    },
    State {
        req: RequestId,
        device: String,
        rev: u64,
        state: Value,
    },
    Offline {
        device: String,
    },
    /// Nothing follows (shutdown).
    Nothing,
}

#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
enum Timer {
    Flush(String),
    Command(String),
}

/// One tenant's devices, admins and commands.
pub struct DeviceHub {
    config: HubConfig,
    devices: BTreeMap<String, Device>,
    /// Device connections: which device each one registered as.
    links: BTreeMap<ConnId, String>,
    admins: BTreeMap<ConnId, Admin>,
    pending: BTreeMap<String, Pending>,
    writes: BTreeMap<WriteId, AfterWrite>,
    next_write: WriteId,
    timers: Timers<Timer>,
    stats: TenantStats,
}

fn err(code: ErrorCode, msg: impl Into<String>) -> ErrorBody {
    ErrorBody::new(code, msg)
}

/// Collects effects.
#[derive(Default)]
struct Out(Vec<DeviceEffect>);

impl Out {
    fn reply(&mut self, req: RequestId, result: Result<DeviceReply, ErrorBody>) {
        self.0.push(DeviceEffect::Reply { req, result });
    }
    fn deliver(&mut self, to: ConnId, push: DevicePush) {
        self.0.push(DeviceEffect::Deliver { to, push });
    }
}

impl DeviceHub {
    /// A tenant's hub with its stored devices (all offline until they connect).
    pub fn restore(config: HubConfig, records: impl IntoIterator<Item = DeviceRecord>) -> DeviceHub {
        let devices = records.into_iter().map(|r| (r.device_id.clone(), Device::restore(r))).collect();
        DeviceHub {
            config,
            devices,
            links: BTreeMap::new(),
            admins: BTreeMap::new(),
            pending: BTreeMap::new(),
            writes: BTreeMap::new(),
            next_write: 1,
            timers: Timers::default(),
            stats: TenantStats::default(),
        }
    }

    /// Applies one input at server time `now`.
    pub fn apply(&mut self, input: DeviceInput, now: Millis) -> Vec<DeviceEffect> {
        let mut out = Out::default();
        match input {
            DeviceInput::Register { conn, sub, register, req } => {
                self.register(conn, sub, register, req, now, &mut out)
            }
            DeviceInput::State { conn, state, req } => self.state(conn, state, req, now, &mut out),
            DeviceInput::CommandResponse { conn, response, req } => {
                let result = self.command_response(conn, response, &mut out);
                if let Some(req) = req {
                    out.reply(req, result.map(|()| DeviceReply::Done));
                }
            }
            DeviceInput::Command { admin, command_id, request, req } => {
                self.command(admin, command_id, request, req, now, &mut out)
            }
            DeviceInput::AdminAttach { conn } => {
                self.admins.insert(conn, Admin { subs: Subscription::All, based: BTreeSet::new() });
            }
            DeviceInput::Subscribe { conn, device_ids, req } => {
                let result =
                    self.subscribe(conn, device_ids).map(|devices| DeviceReply::Devices(DeviceList { devices }));
                out.reply(req, result);
            }
            DeviceInput::Unsubscribe { conn } => {
                if let Some(a) = self.admins.get_mut(&conn) {
                    a.subs = Subscription::None;
                    // Patches it no longer gets leave its bases stale.
                    a.based.clear();
                }
            }
            DeviceInput::Disconnect { conn } => self.disconnect(conn, now, &mut out),
            DeviceInput::Committed { write, ok } => self.committed(write, ok, now, &mut out),
            DeviceInput::Tick => self.tick(now, &mut out),
            DeviceInput::Shutdown => {
                for (conn, id) in core::mem::take(&mut self.links) {
                    self.go_offline(&id, conn, now, AfterWriteKind::Nothing, &mut out);
                }
            }
        }
        out.0
    }

    /// The earliest server time at which [`DeviceInput::Tick`] has something to do.
    pub fn next_deadline(&self) -> Option<Millis> {
        self.timers.next()
    }

    fn persist(&mut self, what: DeviceWrite, after: AfterWrite, out: &mut Out) {
        let write = self.next_write;
        self.next_write += 1;
        self.writes.insert(write, after);
        out.0.push(DeviceEffect::Persist { write, what });
    }

    // ----- devices -----

    fn register(&mut self, conn: ConnId, sub: String, reg: Register, req: RequestId, now: Millis, out: &mut Out) {
        let id = reg.device_id.unwrap_or(sub.clone());
        if id.is_empty() || id.chars().count() > MAX_ID_CHARS {
            let msg = format!("deviceId must be 1 to {MAX_ID_CHARS} characters");
            return out.reply(req, Err(err(ErrorCode::InvalidPayload, msg)));
        }
        if id != sub {
            let msg = "a player token may only register the device named by its subject";
            return out.reply(req, Err(err(ErrorCode::Forbidden, msg)));
        }
        if !self.devices.contains_key(&id) && self.devices.len() >= self.config.max_devices {
            return out.reply(req, Err(err(ErrorCode::Forbidden, "this tenant has reached its device limit")));
        }
        let d = self.devices.entry(id.clone()).or_insert_with(|| Device::new(now));
        let came_online = d.link.is_none();
        // Registering again on the same connection is harmless; another connection of the same
        // device replaces the old one.
        if let Some(old) = d.link.replace(conn).filter(|&old| old != conn) {
            self.links.remove(&old);
            out.0.push(DeviceEffect::Close {
                conn: old,
                code: CLOSE_REPLACED,
                reason: "device registered on another connection",
            });
        }
        self.links.insert(conn, id.clone());
        if let Some(name) = reg.name {
            d.name = name.chars().take(MAX_ID_CHARS).collect();
        }
        if !reg.info.is_empty() {
            d.info = Value::Object(reg.info);
        }
        d.last_seen = now;
        let record = d.record(&id);
        self.deliver_queued(&id, conn, now, out);
        self.persist(DeviceWrite::Info(record), AfterWrite::Registered { req, conn, device: id, came_online }, out);
    }

    fn state(&mut self, conn: ConnId, state: Value, req: RequestId, now: Millis, out: &mut Out) {
        if !state.is_object() {
            return out.reply(req, Err(err(ErrorCode::InvalidPayload, "player:state takes the state object")));
        }
        let Some((id, d)) = self.linked(conn) else {
            return out.reply(req, Err(not_registered()));
        };
        let id = id.to_owned();
        d.accepted_rev += 1;
        d.last_seen = now;
        // Null members cannot travel in a merge patch: store the state without them, so the
        // full state and every patched copy agree.
        let state = merge_patch::strip_nulls(&state);
        let record = DeviceRecord { state: state.clone(), rev: d.accepted_rev, ..d.record(&id) };
        let rev = d.accepted_rev;
        self.stats.states += 1;
        self.persist(DeviceWrite::State(record), AfterWrite::State { req, device: id, rev, state }, out);
    }

    fn disconnect(&mut self, conn: ConnId, now: Millis, out: &mut Out) {
        self.admins.remove(&conn);
        if let Some(id) = self.links.remove(&conn) {
            self.go_offline(&id, conn, now, AfterWriteKind::Offline, out);
        }
    }

    /// Marks device `id`, linked through `conn` (already out of `links`), offline and writes its
    /// last-seen time.
    fn go_offline(&mut self, id: &str, conn: ConnId, now: Millis, then: AfterWriteKind, out: &mut Out) {
        let Some(d) = self.devices.get_mut(id).filter(|d| d.link == Some(conn)) else { return };
        let id = id.to_owned();
        d.link = None;
        d.last_seen = now;
        let record = d.record(&id);
        let after = match then {
            AfterWriteKind::Offline => AfterWrite::Offline { device: id },
            AfterWriteKind::Nothing => AfterWrite::Nothing,
        };
        self.persist(DeviceWrite::Info(record), after, out);
    }

    fn committed(&mut self, write: WriteId, ok: bool, now: Millis, out: &mut Out) {
        let Some(after) = self.writes.remove(&write) else { return };
        match after {
            AfterWrite::Registered { req, conn, device, came_online } => {
                let Some(d) = self.devices.get_mut(&device) else { return };
                if !ok {
                    // Not registered after all: the device may try again.
                    if d.link == Some(conn) {
                        d.link = None;
                        self.links.remove(&conn);
                    }
                    return out.reply(req, Err(storage("the device")));
                }
                let registered = Registered {
                    device_id: device.clone(),
                    name: d.name.clone(),
                    registered_at: d.last_seen,
                    rev: d.rev,
                };
                let presence = d.presence(&device);
                if d.link == Some(conn) {
                    out.deliver(conn, DevicePush::Registered(registered.clone()));
                }
                out.reply(req, Ok(DeviceReply::Registered(registered)));
                if came_online {
                    self.to_admins(DevicePush::Online(presence), out);
                }
            }
            AfterWrite::State { req, device, rev, state } => {
                if !ok {
                    return out.reply(req, Err(storage("the state")));
                }
                if let Some(d) = self.devices.get_mut(&device)
                    && rev > d.rev
                {
                    d.state = state;
                    d.rev = rev;
                }
                out.reply(req, Ok(DeviceReply::State(StateAck { rev })));
                self.publish_state(&device, now, out);
            }
            AfterWrite::Offline { device } => {
                // A failed write loses a last-seen time, not the fact: the connection is gone.
                if let Some(d) = self.devices.get(&device)
                    && d.link.is_none()
                {
                    self.to_admins(DevicePush::Offline(d.presence(&device)), out);
                }
            }
            AfterWrite::Nothing => {}
        }
    }

    /// Sends the latest state to subscribed admins now, or schedules that for when the device's
    /// rate allows (one flush pending per device: latest wins).
    fn publish_state(&mut self, id: &str, now: Millis, out: &mut Out) {
        let Some(d) = self.devices.get(id) else { return };
        let key = Timer::Flush(id.to_owned());
        let interval = 1000.0 / self.config.admin_updates_per_sec.max(0.001);
        match d.last_sent {
            Some(at) if now - at < interval => {
                if !self.timers.contains(&key) {
                    self.timers.set(key, at + interval);
                }
            }
            _ => self.flush(id, now, out),
        }
    }

    fn flush(&mut self, id: &str, now: Millis, out: &mut Out) {
        let Some(d) = self.devices.get_mut(id) else { return };
        let Some(patch) = merge_patch::diff(&d.sent_state, &d.state) else { return };
        let base_rev = d.sent_rev;
        d.sent_state = d.state.clone();
        d.sent_rev = d.rev;
        d.last_sent = Some(now);
        let (rev, full) = (d.rev, d.state.clone());
        // Admins with a base get the patch; the others the full state first (a patch from
        // nothing: `baseRev` 0), which is their base from then on.
        let (mut patched, mut fresh) = (Vec::new(), Vec::new());
        for (conn, a) in self.admins.iter_mut().filter(|(_, a)| a.wants(id)) {
            if a.based.contains(id) {
                patched.push(*conn);
            } else {
                a.based.insert(id.to_owned());
                fresh.push(*conn);
            }
        }
        if !patched.is_empty() {
            let push = DevicePush::StateUpdated(StateUpdated { device_id: id.to_owned(), rev, base_rev, patch });
            out.0.push(DeviceEffect::ToAdmins { admins: patched, push });
        }
        if !fresh.is_empty() {
            let push =
                DevicePush::StateUpdated(StateUpdated { device_id: id.to_owned(), rev, base_rev: 0, patch: full });
            out.0.push(DeviceEffect::ToAdmins { admins: fresh, push });
        }
    }

    /// Sends a presence push to every admin.
    fn to_admins(&self, push: DevicePush, out: &mut Out) {
        let admins: Vec<ConnId> = self.admins.keys().copied().collect();
        if !admins.is_empty() {
            out.0.push(DeviceEffect::ToAdmins { admins, push });
        }
    }

    fn linked(&mut self, conn: ConnId) -> Option<(&str, &mut Device)> {
        let id = self.links.get(&conn)?;
        let d = self.devices.get_mut(id)?;
        (d.link == Some(conn)).then_some((id.as_str(), d))
    }

    // ----- commands -----

    fn command(
        &mut self,
        admin: Option<ConnId>,
        command_id: String,
        request: CommandRequest,
        req: RequestId,
        now: Millis,
        out: &mut Out,
    ) {
        let cfg = &self.config;
        if let Err(e) = cfg.commands.validate(&request.command, &request.params) {
            return out.reply(req, Err(err(ErrorCode::InvalidCommand, e.to_string())));
        }
        let Some(d) = self.devices.get(&request.device_id) else {
            return out.reply(req, Err(err(ErrorCode::DeviceNotFound, "no such device")));
        };
        if self.pending.len() >= cfg.max_pending {
            let msg = format!("{} commands of this tenant are already waiting for devices", self.pending.len());
            return out.reply(req, Err(err(ErrorCode::RateLimited, msg)));
        }
        let timeout_ms = request.timeout_ms.unwrap_or(cfg.default_timeout_ms).clamp(1, cfg.max_timeout_ms) as f64;
        let retries = request.retries.unwrap_or(cfg.default_retries).min(cfg.max_retries);
        let ttl = request.ttl_ms.unwrap_or(cfg.max_queue_ttl_ms).min(cfg.max_queue_ttl_ms) as f64;
        let params = if request.params.is_null() { Value::Object(Map::new()) } else { request.params.clone() };
        let link = d.link;
        let queued_until = request.queue.then_some(now + ttl);
        let p =
            Pending { req, admin, request, params, timeout_ms, retries, queued_until, attempts: 0, delivered: false };
        self.pending.insert(command_id.clone(), p);
        match (link, queued_until) {
            (Some(conn), _) => self.deliver(&command_id, conn, now, out),
            (None, Some(until)) => self.timers.set(Timer::Command(command_id), until),
            (None, None) => {
                self.finish_failed(&command_id, err(ErrorCode::DeviceOffline, "the device is offline"), out)
            }
        }
    }

    /// Delivers (again) pending command `id` to `conn` and starts its timeout.
    fn deliver(&mut self, id: &str, conn: ConnId, now: Millis, out: &mut Out) {
        let Some(p) = self.pending.get_mut(id) else { return };
        p.attempts += 1;
        p.delivered = true;
        let push = DevicePush::Command(PlayerCommand {
            command: p.request.command.clone(),
            params: p.params.clone(),
            command_id: id.to_owned(),
        });
        let deadline = now + p.timeout_ms;
        out.deliver(conn, push);
        self.timers.set(Timer::Command(id.to_owned()), deadline);
    }

    /// A device (re)connected on `conn`: its queued commands go out now.
    fn deliver_queued(&mut self, device: &str, conn: ConnId, now: Millis, out: &mut Out) {
        let waiting: Vec<String> = self
            .pending
            .iter()
            .filter(|(_, p)| !p.delivered && p.request.device_id == device)
            .map(|(id, _)| id.clone())
            .collect();
        for id in waiting {
            self.deliver(&id, conn, now, out);
        }
    }

    fn command_response(&mut self, conn: ConnId, resp: CommandResponse, out: &mut Out) -> Result<(), ErrorBody> {
        let device = self.links.get(&conn).cloned().ok_or_else(not_registered)?;
        match self.pending.get(&resp.command_id) {
            Some(p) if p.request.device_id == device && p.delivered => {}
            // Late (after a timeout), never delivered, or not this device's: nothing waits for it.
            _ => return Err(err(ErrorCode::InvalidPayload, "no command with this commandId is waiting")),
        }
        let Some(p) = self.pending.remove(&resp.command_id) else { return Ok(()) };
        self.timers.cancel(&Timer::Command(resp.command_id.clone()));
        let outcome = CommandOutcome {
            command_id: resp.command_id,
            device_id: p.request.device_id,
            command: p.request.command,
            status: resp.status,
            result: resp.result,
            error: resp.error,
            attempts: p.attempts,
        };
        self.done(p.req, p.admin, outcome, out);
        Ok(())
    }

    /// Ends pending command `id` with the server's own failure.
    fn finish_failed(&mut self, id: &str, e: ErrorBody, out: &mut Out) {
        let Some(p) = self.pending.remove(id) else { return };
        self.timers.cancel(&Timer::Command(id.to_owned()));
        let outcome = CommandOutcome::failed(id, &p.request, &e, p.attempts);
        self.done(p.req, p.admin, outcome, out);
    }

    fn done(&mut self, req: RequestId, admin: Option<ConnId>, outcome: CommandOutcome, out: &mut Out) {
        self.stats.commands += 1;
        if outcome.status != "success" {
            self.stats.commands_failed += 1;
        }
        out.0.push(DeviceEffect::CommandDone { req, admin, outcome });
    }

    fn tick(&mut self, now: Millis, out: &mut Out) {
        for timer in self.timers.take_due(now) {
            match timer {
                Timer::Flush(device) => self.flush(&device, now, out),
                Timer::Command(id) => self.command_due(&id, now, out),
            }
        }
    }

    /// Pending command `id` reached its deadline: a timeout (retry or give up) or, queued and not
    /// yet delivered, the end of its TTL.
    fn command_due(&mut self, id: &str, now: Millis, out: &mut Out) {
        let Some(p) = self.pending.get_mut(id) else { return };
        let link = self.devices.get(&p.request.device_id).and_then(|d| d.link);
        let queue_open = p.queued_until.is_some_and(|until| now < until);
        if !p.delivered {
            let msg = if p.attempts == 0 {
                "the device did not come online before the command's TTL"
            } else {
                "the device is offline"
            };
            return self.finish_failed(id, err(ErrorCode::DeviceOffline, msg), out);
        }
        if p.attempts > p.retries {
            let msg = format!("no answer after {} deliveries of {} ms", p.attempts, p.timeout_ms);
            return self.finish_failed(id, err(ErrorCode::CommandTimeout, msg), out);
        }
        match (link, p.queued_until) {
            (Some(conn), _) => self.deliver(id, conn, now, out),
            (None, Some(until)) if queue_open => {
                // Back in the queue until the device returns or the TTL ends.
                p.delivered = false;
                self.timers.set(Timer::Command(id.to_owned()), until);
            }
            _ => self.finish_failed(id, err(ErrorCode::DeviceOffline, "the device is offline"), out),
        }
    }

    // ----- admins -----

    fn subscribe(&mut self, conn: ConnId, ids: Option<Vec<String>>) -> Result<Vec<DeviceView>, ErrorBody> {
        let views: Vec<DeviceView> = match &ids {
            None => self.devices.iter().map(|(id, d)| d.sent_view(id)).collect(),
            Some(ids) => ids.iter().filter_map(|id| self.devices.get(id).map(|d| d.sent_view(id))).collect(),
        };
        let admin = self.admins.get_mut(&conn).ok_or_else(|| err(ErrorCode::Internal, "admin not attached"))?;
        // Every device; or narrowed to these (from every device, the default), or these more.
        admin.subs = match (ids, core::mem::replace(&mut admin.subs, Subscription::None)) {
            (None, _) => Subscription::All,
            (Some(ids), Subscription::Some(mut have)) => {
                have.extend(ids);
                Subscription::Some(have)
            }
            (Some(ids), Subscription::All | Subscription::None) => Subscription::Some(ids.into_iter().collect()),
        };
        admin.based.extend(views.iter().map(|v| v.device_id.clone()));
        Ok(views)
    }

    // ----- queries -----

    /// Every device, with its current state, sorted by id.
    pub fn list(&self) -> Vec<DeviceView> {
        self.devices.iter().map(|(id, d)| d.view(id)).collect()
    }

    /// One device.
    pub fn get(&self, id: &str) -> Option<DeviceView> {
        self.devices.get(id).map(|d| d.view(id))
    }

    /// The full state admins patch from (after a rev gap).
    pub fn resync(&self, id: &str) -> Option<DeviceView> {
        self.devices.get(id).map(|d| d.sent_view(id))
    }

    /// The tenant's running totals.
    pub fn stats(&self) -> TenantStats {
        TenantStats { devices: self.devices.len(), online: self.online(), ..self.stats.clone() }
    }

    /// Devices connected now.
    pub fn online(&self) -> usize {
        self.links.len()
    }

    /// Devices known.
    pub fn len(&self) -> usize {
        self.devices.len()
    }

    pub fn is_empty(&self) -> bool {
        self.devices.is_empty()
    }

    /// Admin connections attached.
    pub fn admins(&self) -> usize {
        self.admins.len()
    }

    /// Commands waiting for their devices.
    pub fn pending(&self) -> usize {
        self.pending.len()
    }
}

/// What follows a device going offline.
enum AfterWriteKind {
    Offline,
    Nothing,
}

fn not_registered() -> ErrorBody {
    err(ErrorCode::NotRegistered, "send player:register first")
}

fn storage(what: &str) -> ErrorBody {
    err(ErrorCode::StorageUnavailable, format!("could not store {what}; nothing changed"))
}
