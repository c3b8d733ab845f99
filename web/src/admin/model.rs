//! The dashboard's sans-IO state: devices (state kept current by applying RFC 7396 patches
//! with core's `merge_patch`, the same code as the server), command runs and their results, the
//! alert feed and usage samples. Every input is a JSON payload of the admin protocol
//! (docs/socketio.md §3), decoded with the server's own types (`unisono_core::protocol::device`),
//! and the current server time; what the page must do next (resync a device, fetch its snapshot)
//! comes back as [`Effect`]s. Tested natively.

use std::collections::VecDeque;

use serde::de::DeserializeOwned;
use serde_json::Value;
use unisono::client::ClientError;
use unisono_core::{
    merge_patch,
    protocol::{CommandOutcome, DeviceList, DevicePush, DeviceView, STATUS_FAILED, TenantStats},
};

/// `v` read as `T`; a payload that is not one is left out (and said on the console).
fn decode<T: DeserializeOwned>(what: &str, v: &Value) -> Option<T> {
    match serde_json::from_value(v.clone()) {
        Ok(t) => Some(t),
        Err(e) => {
            web_sys_log(&format!("admin: a {what} that does not decode: {e}"));
            None
        }
    }
}

#[cfg(target_arch = "wasm32")]
fn web_sys_log(msg: &str) {
    web_sys::console::warn_1(&wasm_bindgen::JsValue::from_str(msg));
}

#[cfg(not(target_arch = "wasm32"))]
fn web_sys_log(msg: &str) {
    eprintln!("{msg}");
}

/// Alerts kept, newest first.
pub const MAX_ALERTS: usize = 50;
/// Command runs kept, newest first.
pub const MAX_RUNS: usize = 30;
/// Usage samples kept (at one poll every 2 s: ten minutes).
pub const MAX_SAMPLES: usize = 300;

/// What the page must do after an input.
#[derive(Debug, Clone, PartialEq)]
pub enum Effect {
    /// A patch did not apply to our rev (we missed one): ask for the full state.
    Resync(String),
    /// The device may have a new snapshot image: fetch it.
    FetchSnapshot(String),
}

#[derive(Debug, Clone, PartialEq)]
pub struct Device {
    pub id: String,
    pub name: String,
    pub online: bool,
    /// Server time (epoch ms) the device was last heard from.
    pub last_seen: f64,
    pub rev: u64,
    pub state: Value,
    /// Object URL of the latest snapshot image, once fetched.
    pub thumb: Option<String>,
}

impl Device {
    fn new(id: &str) -> Self {
        Device {
            id: id.to_owned(),
            name: String::new(),
            online: false,
            last_seen: 0.0,
            rev: 0,
            state: Value::Object(Default::default()),
            thumb: None,
        }
    }

    /// Fills the device from what the server shows of it.
    fn load(&mut self, v: DeviceView) {
        self.name = v.name;
        self.online = v.online;
        self.last_seen = v.last_seen;
        self.rev = v.rev;
        self.state = v.state;
    }

    /// The name, or the id when it has none.
    pub fn label(&self) -> &str {
        if self.name.is_empty() { &self.id } else { &self.name }
    }
}

#[derive(Debug, Clone, PartialEq)]
pub enum RunStatus {
    Pending,
    Ok,
    /// The device answered with a failure, or the server refused the command: the code.
    Error(String),
    /// No answer in time (`COMMAND_TIMEOUT` from the server, or no reply at all).
    Timeout(String),
}

impl RunStatus {
    pub fn as_str(&self) -> &'static str {
        match self {
            RunStatus::Pending => "pending",
            RunStatus::Ok => "ok",
            RunStatus::Error(_) => "error",
            RunStatus::Timeout(_) => "timeout",
        }
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct CommandRun {
    pub id: u64,
    pub device_id: String,
    pub command: String,
    pub started: f64,
    pub status: RunStatus,
    /// Deliveries the server made (retries re-send the same command).
    pub attempts: Option<u64>,
    pub detail: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AlertKind {
    Online,
    Offline,
    CommandFailed,
}

impl AlertKind {
    pub fn as_str(self) -> &'static str {
        match self {
            AlertKind::Online => "online",
            AlertKind::Offline => "offline",
            AlertKind::CommandFailed => "command",
        }
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct Alert {
    pub at: f64,
    pub kind: AlertKind,
    pub device_id: String,
    pub text: String,
}

/// One usage sample: rates over the last poll interval and devices online.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Sample {
    pub at: f64,
    pub commands_per_min: f64,
    pub states_per_min: f64,
    pub online: f64,
}

/// Running totals of `devices:stats`.
#[derive(Debug, Clone, Copy, PartialEq)]
struct Totals {
    at: f64,
    commands: f64,
    states: f64,
}

#[derive(Debug, Default)]
pub struct Model {
    /// Sorted by id.
    pub devices: Vec<Device>,
    pub alerts: VecDeque<Alert>,
    pub runs: VecDeque<CommandRun>,
    pub samples: VecDeque<Sample>,
    /// The latest `devices:stats` answer (totals, for the figures).
    pub totals: Option<TenantStats>,
    last: Option<Totals>,
    next_run: u64,
    /// Devices with a `devices:resync` in flight (patches until then would only ask again).
    resyncing: Vec<String>,
}

fn str_of<'a>(v: &'a Value, key: &str) -> Option<&'a str> {
    v.get(key).and_then(Value::as_str)
}

impl Model {
    pub fn device_mut(&mut self, id: &str) -> Option<&mut Device> {
        self.devices.binary_search_by(|d| d.id.as_str().cmp(id)).ok().map(|i| &mut self.devices[i])
    }

    /// The device with this id, added (in id order) if new.
    fn entry(&mut self, id: &str) -> &mut Device {
        let i = match self.devices.binary_search_by(|d| d.id.as_str().cmp(id)) {
            Ok(i) => i,
            Err(i) => {
                self.devices.insert(i, Device::new(id));
                i
            }
        };
        &mut self.devices[i]
    }

    /// Every thumbnail URL, taken out of the devices (to be released).
    pub fn take_thumbs(&mut self) -> Vec<String> {
        self.devices.iter_mut().filter_map(|d| d.thumb.take()).collect()
    }

    /// Replaces the device list with a `devices:subscribe` answer `{devices: [Device]}` (the
    /// full state patches continue from); snapshots already fetched are kept. Asks for every
    /// device's snapshot.
    pub fn load(&mut self, reply: &Value) -> Vec<Effect> {
        let list = decode::<DeviceList>("device list", reply).map(|l| l.devices).unwrap_or_default();
        let old = std::mem::take(&mut self.devices);
        for v in list {
            let id = v.device_id.clone();
            self.entry(&id).load(v);
        }
        // Keep the thumbnails of devices still listed (the page releases the others later).
        for d in old {
            if let (Some(t), Some(new)) = (d.thumb, self.device_mut(&d.id)) {
                new.thumb = Some(t);
            }
        }
        self.devices.iter().map(|d| Effect::FetchSnapshot(d.id.clone())).collect()
    }

    /// A `devices:resync` answer: one device's full state.
    pub fn resynced(&mut self, v: &Value) {
        if let Some(v) = decode::<DeviceView>("device", v) {
            let id = v.device_id.clone();
            self.resyncing.retain(|r| *r != id);
            self.entry(&id).load(v);
        }
    }

    /// A `devices:resync` failed: the next patch that does not apply asks again.
    pub fn resync_failed(&mut self, id: &str) {
        self.resyncing.retain(|r| r != id);
    }

    /// A push of the admin protocol at server time `now`.
    pub fn on_push(&mut self, event: &str, data: &Value, now: f64) -> Vec<Effect> {
        let push = match DevicePush::decode(event, data.clone()) {
            Some(Ok(p)) => p,
            Some(Err(e)) => {
                web_sys_log(&format!("admin: {event} that does not decode: {e}"));
                return vec![];
            }
            None => return vec![],
        };
        match push {
            DevicePush::Online(p) | DevicePush::Offline(p) => {
                let online = event == "device:online";
                let d = self.entry(&p.device_id);
                d.online = online;
                d.name = p.name;
                d.last_seen = p.last_seen;
                let text = format!("{} is {}", d.label(), if online { "online" } else { "offline" });
                let kind = if online { AlertKind::Online } else { AlertKind::Offline };
                self.alert(now, kind, &p.device_id, text);
                vec![]
            }
            DevicePush::StateUpdated(u) => {
                let id = u.device_id;
                let d = self.entry(&id);
                if u.rev <= d.rev {
                    return vec![]; // already have it (e.g. a resync overtook the patch)
                }
                if u.base_rev != d.rev {
                    if self.resyncing.contains(&id) {
                        return vec![];
                    }
                    self.resyncing.push(id.clone());
                    return vec![Effect::Resync(id)];
                }
                merge_patch::apply(&mut d.state, &u.patch);
                d.rev = u.rev;
                d.last_seen = now;
                // A device reports snapshots in its state's `snapshot` member (seed 003).
                if u.patch.get("snapshot").is_some() { vec![Effect::FetchSnapshot(id)] } else { vec![] }
            }
            // The page gets command outcomes through its requests' replies (`finish`).
            DevicePush::CommandResponse(_) | DevicePush::Registered(_) | DevicePush::Command(_) => vec![],
        }
    }

    /// Records a command sent to a device; returns the run's id for [`Model::finish`].
    pub fn start(&mut self, device_id: &str, command: &str, now: f64) -> u64 {
        self.next_run += 1;
        self.runs.push_front(CommandRun {
            id: self.next_run,
            device_id: device_id.to_owned(),
            command: command.to_owned(),
            started: now,
            status: RunStatus::Pending,
            attempts: None,
            detail: String::new(),
        });
        self.runs.truncate(MAX_RUNS);
        self.next_run
    }

    /// The reply to a `command`: the device's `CommandOutcome`, or the server's refusal.
    pub fn finish(&mut self, run: u64, reply: Result<Value, ClientError>, now: f64) -> Vec<Effect> {
        let Some(r) = self.runs.iter_mut().find(|r| r.id == run) else { return vec![] };
        let mut effects = vec![];
        let reply = reply.and_then(|v| {
            serde_json::from_value::<CommandOutcome>(v).map_err(|e| {
                ClientError::new("INVALID_PAYLOAD", format!("a command outcome that does not decode: {e}"))
            })
        });
        match reply {
            Ok(out) => {
                r.attempts = Some(u64::from(out.attempts));
                let status = out.status.as_str();
                if matches!(status, "success" | "ok" | "done") {
                    r.status = RunStatus::Ok;
                    r.detail = out.result.as_ref().map(short_json).unwrap_or_default();
                    if out.result.as_ref().and_then(|r| r.get("snapshot")).is_some() {
                        effects.push(Effect::FetchSnapshot(r.device_id.clone()));
                    }
                } else {
                    // The device's own error (`{code, message}`, a string, or just the status),
                    // or the server's (`failed`, an error body).
                    let err = out.error.as_ref();
                    let fallback = if status == STATUS_FAILED { "FAILED" } else { status };
                    let code =
                        err.and_then(|e| str_of(e, "code").or_else(|| e.as_str())).unwrap_or(fallback).to_owned();
                    r.detail = err.and_then(|e| str_of(e, "message")).unwrap_or_default().to_owned();
                    r.status = RunStatus::Error(code);
                }
            }
            Err(e) if e.code == "COMMAND_TIMEOUT" || e.code == "TIMEOUT" => {
                r.status = RunStatus::Timeout(e.code);
                r.detail = e.message;
            }
            Err(e) => {
                r.status = RunStatus::Error(e.code);
                r.detail = e.message;
            }
        }
        let code = match &r.status {
            RunStatus::Error(c) | RunStatus::Timeout(c) => Some(c.clone()),
            _ => None,
        };
        if let Some(code) = code {
            let (device, text) = (r.device_id.clone(), format!("{} on {} failed: {code}", r.command, r.device_id));
            self.alert(now, AlertKind::CommandFailed, &device, text);
        }
        effects
    }

    /// A `devices:stats` answer `{devices, online, states, commands, commandsFailed}` (running
    /// totals) at server time `now`: rates since the previous one.
    pub fn on_stats(&mut self, v: &Value, now: f64) {
        let Some(stats) = decode::<TenantStats>("devices:stats answer", v) else { return };
        let t = Totals { at: now, commands: stats.commands as f64, states: stats.states as f64 };
        if let Some(prev) = self.last.filter(|p| now > p.at) {
            let per_min = |a: f64, b: f64| ((b - a).max(0.0)) * 60_000.0 / (now - prev.at);
            self.samples.push_back(Sample {
                at: now,
                commands_per_min: per_min(prev.commands, t.commands),
                states_per_min: per_min(prev.states, t.states),
                online: stats.online as f64,
            });
            while self.samples.len() > MAX_SAMPLES {
                self.samples.pop_front();
            }
        }
        self.last = Some(t);
        self.totals = Some(stats);
    }

    fn alert(&mut self, at: f64, kind: AlertKind, device_id: &str, text: String) {
        self.alerts.push_front(Alert { at, kind, device_id: device_id.to_owned(), text });
        self.alerts.truncate(MAX_ALERTS);
    }

    /// The latest run of a command on a device, newest first.
    pub fn last_run(&self, device_id: &str) -> Option<&CommandRun> {
        self.runs.iter().find(|r| r.device_id == device_id)
    }
}

/// A value as compact JSON, cut to 80 characters (for result and state summaries).
pub fn short_json(v: &Value) -> String {
    let s = match v {
        Value::String(s) => s.clone(),
        other => other.to_string(),
    };
    if s.chars().count() > 80 { format!("{}…", s.chars().take(79).collect::<String>()) } else { s }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn dev<'a>(m: &'a Model, id: &str) -> &'a Device {
        m.devices.iter().find(|d| d.id == id).expect(id)
    }

    fn loaded() -> Model {
        let mut m = Model::default();
        let fx = m.load(&json!({"devices": [{"deviceId": "k1", "name": "Lobby", "online": true, "lastSeen": 5.0,
            "info": {}, "rev": 3, "state": {"vlc": {"state": "paused", "time": 1}, "activePlaylist": {"id": "p1"}}}]}));
        assert_eq!(fx, vec![Effect::FetchSnapshot("k1".into())]);
        m
    }

    #[test]
    fn patches_apply_in_order_and_a_gap_asks_for_a_resync() {
        let mut m = loaded();
        let fx = m.on_push(
            "state:updated",
            &json!({"deviceId": "k1", "rev": 4, "baseRev": 3,
            "patch": {"vlc": {"state": "playing"}, "activePlaylist": null}}),
            10.0,
        );
        assert!(fx.is_empty());
        let d = &dev(&m, "k1");
        assert_eq!((d.rev, &d.state), (4, &json!({"vlc": {"state": "playing", "time": 1}})));
        // A duplicate is ignored; a patch from a rev we never saw needs the full state.
        assert!(
            m.on_push("state:updated", &json!({"deviceId": "k1", "rev": 4, "baseRev": 3, "patch": {}}), 11.0)
                .is_empty()
        );
        let fx =
            m.on_push("state:updated", &json!({"deviceId": "k1", "rev": 7, "baseRev": 6, "patch": {"x": 1}}), 12.0);
        assert_eq!(fx, vec![Effect::Resync("k1".into())]);
        assert_eq!(dev(&m, "k1").rev, 4, "nothing applied across the gap");
        let again = json!({"deviceId": "k1", "rev": 8, "baseRev": 7, "patch": {}});
        assert!(m.on_push("state:updated", &again, 12.5).is_empty(), "one resync at a time");
        m.resynced(&json!({"deviceId": "k1", "name": "Lobby", "online": true, "lastSeen": 12.0, "info": {},
            "rev": 8, "state": {"x": 1}}));
        assert_eq!((dev(&m, "k1").rev, &dev(&m, "k1").state), (8, &json!({"x": 1})));
        // A patch touching `snapshot` means a new image.
        let fx = m.on_push(
            "state:updated",
            &json!({"deviceId": "k1", "rev": 9, "baseRev": 8, "patch": {"snapshot": {"at": 1}}}),
            13.0,
        );
        assert_eq!(fx, vec![Effect::FetchSnapshot("k1".into())]);
    }

    #[test]
    fn presence_changes_raise_alerts_newest_first_and_bounded() {
        let mut m = loaded();
        m.on_push("device:offline", &json!({"deviceId": "k1", "name": "Lobby", "lastSeen": 20.0}), 21.0);
        assert!(!dev(&m, "k1").online);
        assert_eq!(dev(&m, "k1").last_seen, 20.0);
        m.on_push("device:online", &json!({"deviceId": "k2", "name": "Bar", "lastSeen": 22.0}), 22.0);
        assert!(dev(&m, "k2").online, "a new device appears");
        assert_eq!((m.alerts[0].kind, m.alerts[1].kind), (AlertKind::Online, AlertKind::Offline));
        for i in 0..100 {
            let at = 30.0 + f64::from(i);
            m.on_push("device:online", &json!({"deviceId": "k2", "name": "Bar", "lastSeen": at}), at);
        }
        assert_eq!(m.alerts.len(), MAX_ALERTS);
        assert_eq!(m.alerts[0].at, 129.0);
    }

    #[test]
    fn command_runs_go_from_pending_to_their_outcome() {
        let mut m = loaded();
        let ok = m.start("k1", "vlc:play", 1.0);
        let err = m.start("k1", "vlc:pause", 2.0);
        let lost = m.start("k1", "vlc:stop", 3.0);
        let snap = m.start("k1", "vlc:snapshot", 4.0);
        assert_eq!(m.last_run("k1").map(|r| &r.status), Some(&RunStatus::Pending));
        let outcome = |command: &str, rest: Value| {
            let mut o = json!({"commandId": "c", "deviceId": "k1", "command": command, "attempts": 1});
            if let (Some(o), Value::Object(rest)) = (o.as_object_mut(), rest) {
                o.extend(rest);
            }
            o
        };
        let done = outcome("vlc:play", json!({"status": "success", "result": {"playing": true}}));
        assert!(m.finish(ok, Ok(done), 5.0).is_empty());
        let failed =
            outcome("vlc:pause", json!({"status": "error", "error": {"code": "VLC_DOWN", "message": "no vlc"}}));
        m.finish(err, Ok(failed), 6.0);
        m.finish(lost, Err(ClientError::new("COMMAND_TIMEOUT", "no answer")), 7.0);
        let snapshot = outcome(
            "vlc:snapshot",
            json!({"status": "success", "result": {"snapshot": {"url": "/api/devices/k1/snapshot"}}}),
        );
        let fx = m.finish(snap, Ok(snapshot), 8.0);
        assert_eq!(fx, vec![Effect::FetchSnapshot("k1".into())]);
        let status = |id| m.runs.iter().find(|r| r.id == id).map(|r| r.status.clone());
        assert_eq!(status(ok), Some(RunStatus::Ok));
        assert_eq!(status(err), Some(RunStatus::Error("VLC_DOWN".into())));
        assert_eq!(status(lost), Some(RunStatus::Timeout("COMMAND_TIMEOUT".into())));
        // A payload that is not an outcome is an error of the run, not a success.
        let odd = m.start("k1", "vlc:play", 9.0);
        m.finish(odd, Ok(json!({"status": "success"})), 9.5);
        let status = |id| m.runs.iter().find(|r| r.id == id).map(|r| r.status.clone());
        assert_eq!(status(odd), Some(RunStatus::Error("INVALID_PAYLOAD".into())));
        let failed: Vec<_> =
            m.alerts.iter().filter(|a| a.kind == AlertKind::CommandFailed).map(|a| a.text.as_str()).collect();
        assert_eq!(
            failed,
            [
                "vlc:play on k1 failed: INVALID_PAYLOAD",
                "vlc:stop on k1 failed: COMMAND_TIMEOUT",
                "vlc:pause on k1 failed: VLC_DOWN"
            ]
        );
    }

    #[test]
    fn stats_become_rates_per_minute() {
        let mut m = Model::default();
        m.on_stats(&json!({"devices": 2, "online": 1, "states": 10, "commands": 4, "commandsFailed": 0}), 1000.0);
        assert!(m.samples.is_empty(), "a rate needs two totals");
        m.on_stats(&json!({"devices": 2, "online": 2, "states": 20, "commands": 6, "commandsFailed": 1}), 3000.0);
        assert_eq!(
            m.samples.back().copied(),
            Some(Sample { at: 3000.0, commands_per_min: 60.0, states_per_min: 300.0, online: 2.0 })
        );
    }
}
