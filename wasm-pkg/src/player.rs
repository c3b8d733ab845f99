//! `PlayerSync`: keeps one media player on the room's playback clock. It reads the timing
//! vector from a [`Client`], loads/plays/pauses the player to match, and while playing runs
//! the core's [`DriftController`] every tick, applying its rate nudges and seeks.
//!
//! Players are reached through [`MediaAdapter`]; each adapter declares its
//! [`PlayerCapabilities`] and the controller picks its tier from them (rate nudges for an HTML5
//! media element, quantised rates or seeks for YouTube, seeks only for Spotify). Every adapter is
//! a JavaScript object behind [`JsAdapter`]: the built-in ones ([`html_media`], [`youtube`],
//! [`spotify`]) are in `js/adapters.js`, since all they do is call each player's JavaScript API;
//! a page can bring its own (`PlayerSync.custom`).

use crate::prelude::*;

use crate::cell::RefCell;
use alloc::rc::{Rc, Weak};

use unisono_core::{
    drift::{Correction, DriftConfig, DriftController, Mode, PlayerCapabilities},
    protocol::{ReportDrift, Request, SetReady},
    song::Song,
    tree::{Object, ToTree, Tree},
};
use wasm_bindgen::prelude::*;

use crate::{
    client::{Change, Client, ClientEvent, ListenerId},
    sys,
};

/// Time between drift updates (a background tab may stretch it to a second; positions are
/// computed from the vector, so nothing accumulates).
const TICK_MS: f64 = 100.0;
/// A scheduled start closer than this is armed with its own timer, to start at the instant.
const ARM_START_MS: f64 = 1.5 * TICK_MS;
/// While paused or waiting, a player further than this from the held position is moved.
const HOLD_TOLERANCE_MS: f64 = 40.0;
/// How often the measured drift is reported to the room (`report-drift`).
const REPORT_EVERY_MS: f64 = 2000.0;
/// Length of the drift history kept for charts.
const HISTORY_MS: f64 = 60_000.0;
/// After a start or a big correction seek, the player's real start-up lag is measured and
/// corrected by seeking (at most `STARTUP_SEEKS` times, `STARTUP_SETTLE_MS` apart, within
/// `STARTUP_MS`); the lag learnt becomes the lead of the next seek. Rate nudges alone would take seconds for a 300 ms lag.
const STARTUP_MS: f64 = 4000.0;
const STARTUP_SETTLE_MS: f64 = 400.0;
const STARTUP_SEEKS: u32 = 3;
/// Start-up errors up to this are left to the drift controller.
const STARTUP_TOLERANCE_MS: f64 = 12.0;

/// A media player, as the sync loop drives it. Positions are song milliseconds.
pub trait MediaAdapter {
    fn capabilities(&self) -> PlayerCapabilities;
    /// Prepares `song`; `false` if this player cannot play it (the sync then leaves it alone).
    fn load(&mut self, song: &Song) -> bool;
    /// The player's position, `None` while it cannot tell (nothing loaded, metadata pending).
    fn position_ms(&self) -> Option<f64>;
    fn is_playing(&self) -> bool;
    fn play(&mut self);
    fn pause(&mut self);
    fn seek(&mut self, ms: f64);
    fn set_rate(&mut self, rate: f64);
    /// True when the player refused to start (autoplay policy): the page should ask for a click.
    fn blocked(&self) -> bool {
        false
    }
}

/// Figures for a sync panel (JavaScript: `PlayerSync.stats()`, camelCase).
#[derive(Debug, Clone, Default, PartialEq, serde::Serialize)]
#[serde(rename_all = "camelCase")]
pub struct SyncInfo {
    /// Player position minus expected position (ms, positive: ahead), while playing.
    pub drift_ms: Option<f64>,
    pub mode: Mode,
    /// The rate the player was last set to.
    pub rate: f64,
    pub seeks: u32,
    pub rate_changes: u32,
    /// `(server time, drift)` over the last minute.
    pub history: Vec<(f64, f64)>,
    /// The player refused to play (autoplay policy).
    pub blocked: bool,
}

/// `{driftMs, mode, rate, seeks, rateChanges, history: [[serverTime, driftMs]…], blocked}`, the
/// shape of the serde derive (the native reference, tested below).
impl ToTree for SyncInfo {
    fn to_tree<T: Tree>(&self) -> T {
        let mut history = T::new_array();
        for (t, d) in &self.history {
            history.push([*t, *d].to_tree());
        }
        Object::new()
            .set("driftMs", &self.drift_ms)
            .set("mode", &self.mode)
            .set("rate", &self.rate)
            .set("seeks", &self.seeks)
            .set("rateChanges", &self.rate_changes)
            .put("history", history)
            .set("blocked", &self.blocked)
            .build()
    }
}

struct Inner {
    client: Client,
    adapter: Box<dyn MediaAdapter>,
    drift: DriftController,
    loaded: Option<Song>,
    /// Whether `loaded` is playable by the adapter.
    playable: bool,
    info: SyncInfo,
    /// Room rate the player was last aligned with.
    base_rate: f64,
    last_report: f64,
    ready_sent_rev: Option<u64>,
    armed_rev: Option<u64>,
    generation: u32,
    listener: Option<ListenerId>,
    /// Seek lead (ms of song at rate 1): the player's measured start/seek lag.
    lead_ms: f64,
    /// While set: `(until, last seek or start, seeks so far)` of the start-up correction.
    startup: Option<(f64, f64, u32)>,
}

/// Binds a [`Client`] to a [`MediaAdapter`]. See the [module docs](self).
#[derive(Clone)]
pub struct PlayerSync(Rc<RefCell<Inner>>);

impl PlayerSync {
    pub fn new(client: &Client, adapter: Box<dyn MediaAdapter>) -> Self {
        let caps = adapter.capabilities();
        let lead_ms = caps.seek_latency_ms;
        let drift = DriftController::new(DriftConfig::for_player(&caps), caps);
        PlayerSync(Rc::new(RefCell::new(Inner {
            client: client.clone(),
            adapter,
            drift,
            loaded: None,
            playable: false,
            info: SyncInfo { rate: 1.0, ..SyncInfo::default() },
            base_rate: 1.0,
            last_report: 0.0,
            ready_sent_rev: None,
            armed_rev: None,
            generation: 0,
            listener: None,
            lead_ms,
            startup: None,
        })))
    }

    /// Starts the loop: a tick every 100 ms and at once on every playback change.
    pub fn start(&self) {
        let (client, generation) = {
            let mut inner = self.0.borrow_mut();
            inner.generation += 1;
            (inner.client.clone(), inner.generation)
        };
        let weak = Rc::downgrade(&self.0);
        let id = client.subscribe(move |e| {
            if let ClientEvent::Changed(Change::Playback(_) | Change::Room) = e
                && let Some(s) = weak.upgrade()
            {
                PlayerSync(s).tick();
            }
        });
        let old = self.0.borrow_mut().listener.replace(id);
        if let Some(old) = old {
            client.unsubscribe(old);
        }
        schedule(Rc::downgrade(&self.0), generation);
    }

    /// Stops the loop and pauses the player.
    pub fn stop(&self) {
        let mut inner = self.0.borrow_mut();
        inner.generation += 1;
        if let Some(id) = inner.listener.take() {
            inner.client.unsubscribe(id);
        }
        inner.adapter.pause();
    }

    pub fn info(&self) -> SyncInfo {
        self.0.borrow().info.clone()
    }

    /// Reads the figures without copying the history.
    pub fn with_info<R>(&self, f: impl FnOnce(&SyncInfo) -> R) -> R {
        f(&self.0.borrow().info)
    }

    /// Retries a start the browser blocked (call from a click handler).
    pub fn unblock(&self) {
        let mut inner = self.0.borrow_mut();
        inner.adapter.play();
        inner.info.blocked = false;
    }

    /// One step of the loop; also safe to call directly.
    pub fn tick(&self) {
        let armed = {
            let Ok(mut inner) = self.0.try_borrow_mut() else { return };
            inner.step()
        };
        if let Some((delay, generation)) = armed {
            let weak = Rc::downgrade(&self.0);
            sys::set_timeout(delay, move || {
                if let Some(s) = weak.upgrade() {
                    let mut inner = s.borrow_mut();
                    if inner.generation == generation {
                        inner.start_now();
                    }
                }
            });
        }
    }
}

fn schedule(weak: Weak<RefCell<Inner>>, generation: u32) {
    sys::set_timeout(TICK_MS, move || {
        let Some(s) = weak.upgrade() else { return };
        if s.borrow().generation != generation {
            return;
        }
        PlayerSync(s.clone()).tick();
        schedule(Rc::downgrade(&s), generation);
    });
}

impl Inner {
    /// Returns a delay (ms) after which the caller must start the player, for a start that is
    /// scheduled within the next tick.
    fn step(&mut self) -> Option<(f64, u32)> {
        let Some(pb) = self.client.with_room(|r| r.map(|r| r.playback.clone())) else {
            self.idle();
            return None;
        };
        let Some(song) = pb.clock.song.clone() else {
            self.idle();
            return None;
        };
        if self.loaded.as_ref().is_none_or(|s| s.id != song.id || s.url != song.url) {
            self.playable = self.adapter.load(&song);
            self.loaded = Some(song);
            self.drift.reset();
            self.info.history.clear();
        }
        if !self.playable {
            return None;
        }
        self.info.blocked = self.adapter.blocked();
        let now = self.client.server_now();
        let clock = &pb.clock;
        if clock.rate != self.base_rate {
            self.base_rate = clock.rate;
            self.set_rate(clock.rate);
            self.drift.reset();
        }
        let expected = clock.position_at(now);
        let position = self.adapter.position_ms();

        if !clock.is_playing || now < clock.server_time {
            // Paused, waiting for the barrier, or a start scheduled at `serverTime`: hold the
            // player at the anchor position.
            self.info.drift_ms = None;
            if self.adapter.is_playing() {
                self.adapter.pause();
            }
            if position.is_none_or(|p| (p - clock.position_ms).abs() > HOLD_TOLERANCE_MS) {
                self.adapter.seek(clock.position_ms);
            }
            if pb.awaiting_ready && position.is_some() && self.ready_sent_rev != Some(clock.rev) {
                self.ready_sent_rev = Some(clock.rev);
                self.client.send(Request::SetReady(SetReady { ready: true }));
            }
            let wait = clock.server_time - now;
            if clock.is_playing && wait <= ARM_START_MS && self.armed_rev != Some(clock.rev) {
                self.armed_rev = Some(clock.rev);
                return Some((wait, self.generation));
            }
            return None;
        }

        if !self.adapter.is_playing() {
            // Start (late joiner, resume without a scheduled start, or a missed armed start).
            self.adapter.seek(expected + self.lead_ms * clock.rate);
            self.set_rate(clock.rate);
            self.adapter.play();
            self.drift.reset();
            self.startup = Some((now + STARTUP_MS, now, 0));
            return None;
        }
        let local = position?;
        let drift_ms = local - expected;
        self.info.drift_ms = Some(drift_ms);
        self.info.history.push((now, drift_ms));
        let h = &mut self.info.history;
        let stale = h.iter().take_while(|(t, _)| now - t > HISTORY_MS).count();
        h.copy_within(stale.., 0);
        h.truncate(h.len() - stale);
        if let Some((until, last, seeks)) = self.startup {
            if now - last < STARTUP_SETTLE_MS {
                return None;
            }
            if now < until && seeks < STARTUP_SEEKS && drift_ms.abs() > STARTUP_TOLERANCE_MS {
                // Behind by the lag the player took to get going: lead by that much more.
                self.lead_ms = (self.lead_ms - drift_ms / clock.rate).clamp(0.0, 2000.0);
                self.adapter.seek(expected + self.lead_ms * clock.rate);
                self.info.seeks += 1;
                self.startup = Some((until, now, seeks + 1));
                return None;
            }
            self.startup = None;
            self.drift.reset();
        }
        match self.drift.update(now, local, expected, clock.rate) {
            Correction::None => {}
            Correction::Rate { rate } => self.set_rate(rate),
            Correction::Seek { .. } => {
                // Land like a start: lead by the player's measured lag, then measure what is
                // left and seek it out (rate nudges alone take seconds for a few hundred ms).
                self.info.seeks += 1;
                self.adapter.seek(expected + self.lead_ms * clock.rate);
                self.startup = Some((now + STARTUP_MS, now, 0));
            }
        }
        self.info.mode = self.drift.mode();
        if now - self.last_report >= REPORT_EVERY_MS {
            self.last_report = now;
            self.client.send(Request::ReportDrift(ReportDrift { drift_ms }));
        }
        None
    }

    /// The armed start fires: play from the anchor position, exactly at `serverTime`.
    fn start_now(&mut self) {
        let Some(pb) = self.client.with_room(|r| r.map(|r| r.playback.clone())) else { return };
        if !pb.clock.is_playing || !self.playable {
            return;
        }
        let expected = pb.clock.position_at(self.client.server_now());
        if self.adapter.position_ms().is_none_or(|p| (p - expected).abs() > HOLD_TOLERANCE_MS) {
            self.adapter.seek(expected);
        }
        self.set_rate(pb.clock.rate);
        self.adapter.play();
        self.drift.reset();
        let now = self.client.server_now();
        self.startup = Some((now + STARTUP_MS, now, 0));
    }

    fn set_rate(&mut self, rate: f64) {
        if rate != self.info.rate {
            self.info.rate = rate;
            self.info.rate_changes += 1;
        }
        self.adapter.set_rate(rate);
    }

    fn idle(&mut self) {
        self.info.drift_ms = None;
        if self.adapter.is_playing() {
            self.adapter.pause();
        }
        self.loaded = None;
    }
}

// ---------------------------------------------------------------------------------------------
// Adapters
// ---------------------------------------------------------------------------------------------

#[wasm_bindgen(module = "/js/adapters.js")]
extern "C" {
    #[wasm_bindgen(catch, js_name = mediaElement)]
    fn media_element_js(el: &JsValue) -> Result<JsValue, JsValue>;
    #[wasm_bindgen(js_name = youTube)]
    fn youtube_js(player: &JsValue) -> JsValue;
    #[wasm_bindgen(js_name = spotify)]
    fn spotify_js(player: &JsValue, web_api: &JsValue) -> JsValue;
}

/// An `<audio>`/`<video>` element (`js/adapters.js`, `mediaElement`): plays `url` songs, with
/// rate nudges (continuous rate). `Err` if `el` is not a media element.
pub fn html_media(el: &JsValue) -> Result<Box<dyn MediaAdapter>, JsValue> {
    media_element_js(el).map(JsAdapter::built_in)
}

/// A YouTube IFrame player, `YT.Player` (`js/adapters.js`, `youTube`): plays `youtube` songs
/// (`song.id` is the video id); `setPlaybackRate` restricted to `getAvailablePlaybackRates()`
/// (the step decides whether rate nudges are possible at all), coarse `getCurrentTime()`.
pub fn youtube(player: &JsValue) -> Box<dyn MediaAdapter> {
    JsAdapter::built_in(youtube_js(player))
}

/// A Spotify Web Playback SDK player, `Spotify.Player` (`js/adapters.js`, `spotify`): plays
/// `spotify` songs (`song.id` is the track id), seeks only. With `web_api = {deviceId, token}`
/// each loaded song is started on that device through the Web API
/// (`PUT /v1/me/player/play`); without (`undefined`), that is the page's job.
pub fn spotify(player: &JsValue, web_api: &JsValue) -> Box<dyn MediaAdapter> {
    JsAdapter::built_in(spotify_js(player, web_api))
}

/// Any JavaScript object with the adapter's methods: `capabilities` (property: `{canSetRate,
/// rateStep, seekLatencyMs, positionGranularityMs}`), `load(song) → bool`, `positionMs() →
/// number|null`, `isPlaying() → bool`, `play()`, `pause()`, `seek(ms)`, `setRate(rate)`.
pub struct JsAdapter {
    obj: JsValue,
    caps: PlayerCapabilities,
}

impl JsAdapter {
    pub fn new(obj: JsValue, caps: PlayerCapabilities) -> Self {
        Self { obj, caps }
    }

    /// `obj[method](...args)`, `undefined` if there is no such method or it throws.
    fn call(&self, method: &str, args: &[JsValue]) -> JsValue {
        sys::call_method(&self.obj, method, args)
    }

    /// One of `js/adapters.js`'s, which carries its `capabilities`.
    fn built_in(obj: JsValue) -> Box<dyn MediaAdapter> {
        // Always there; were it not, seeks alone are safe with any player.
        let caps = sys::from_js(&sys::field(&obj, "capabilities")).ok().flatten().unwrap_or(PlayerCapabilities {
            can_set_rate: false,
            rate_step: None,
            seek_latency_ms: 0.0,
            position_granularity_ms: 0.0,
        });
        Box::new(Self::new(obj, caps))
    }
}

impl MediaAdapter for JsAdapter {
    fn capabilities(&self) -> PlayerCapabilities {
        self.caps.clone()
    }
    fn load(&mut self, song: &Song) -> bool {
        self.call("load", &[sys::to_js(song)]).as_bool().unwrap_or(true)
    }
    fn position_ms(&self) -> Option<f64> {
        self.call("positionMs", &[]).as_f64()
    }
    fn is_playing(&self) -> bool {
        self.call("isPlaying", &[]).as_bool().unwrap_or(false)
    }
    fn play(&mut self) {
        self.call("play", &[]);
    }
    fn pause(&mut self) {
        self.call("pause", &[]);
    }
    fn seek(&mut self, ms: f64) {
        self.call("seek", &[JsValue::from_f64(ms)]);
    }
    fn set_rate(&mut self, rate: f64) {
        self.call("setRate", &[JsValue::from_f64(rate)]);
    }
    fn blocked(&self) -> bool {
        self.call("blocked", &[]).as_bool().unwrap_or(false)
    }
}

#[cfg(test)]
mod tests {
    use serde_json::Value;

    use super::*;

    #[test]
    fn sync_info_is_written_as_its_serde_derive_writes_it() {
        let info = SyncInfo {
            drift_ms: Some(-2.5),
            mode: Mode::Nudging,
            rate: 1.02,
            seeks: 1,
            rate_changes: 7,
            history: vec![(1000.0, 1.5), (1250.0, -0.25)],
            blocked: true,
        };
        assert_eq!(info.to_tree::<Value>(), serde_json::to_value(&info).expect("json"));
        let empty = SyncInfo::default();
        assert_eq!(empty.to_tree::<Value>(), serde_json::to_value(&empty).expect("json"));
    }
}
