//! `PlayerSync`: keeps one media player on the room's playback clock. It reads the timing
//! vector from a [`Client`], loads/plays/pauses the player to match, and while playing runs
//! the core's [`DriftController`] every tick, applying its rate nudges and seeks.
//!
//! Players are reached through [`MediaAdapter`]; each adapter declares its
//! [`PlayerCapabilities`] and the controller picks its tier from them (rate nudges for an HTML5
//! media element, quantised rates or seeks for YouTube, seeks only for Spotify). Adapters here:
//! [`HtmlMediaAdapter`], [`YouTubeAdapter`], [`SpotifyAdapter`] and [`JsAdapter`] (any object
//! with the same methods).

use std::{
    cell::RefCell,
    collections::VecDeque,
    rc::{Rc, Weak},
};

use js_sys::{Function, Reflect};
use unisono_core::{
    drift::{Correction, DriftConfig, DriftController, Mode, PlayerCapabilities},
    protocol::{ReportDrift, Request, SetReady},
    song::{Provider, Song},
    tree::{Object, ToTree, Tree},
};
use wasm_bindgen::{JsCast, JsValue};
use web_sys::HtmlMediaElement;

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
    pub history: VecDeque<(f64, f64)>,
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
        self.info.history.push_back((now, drift_ms));
        while self.info.history.front().is_some_and(|(t, _)| now - t > HISTORY_MS) {
            self.info.history.pop_front();
        }
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

/// An HTML5 `<audio>`/`<video>` element: continuous rate (pitch preserved), precise
/// `currentTime`, fast seeks. Plays songs whose provider is `url`.
pub struct HtmlMediaAdapter {
    el: HtmlMediaElement,
    blocked: Rc<RefCell<bool>>,
}

impl HtmlMediaAdapter {
    pub fn new(el: HtmlMediaElement) -> Self {
        el.set_preload("auto");
        Self { el, blocked: Rc::new(RefCell::new(false)) }
    }
}

impl MediaAdapter for HtmlMediaAdapter {
    fn capabilities(&self) -> PlayerCapabilities {
        PlayerCapabilities { can_set_rate: true, rate_step: None, seek_latency_ms: 30.0, position_granularity_ms: 0.0 }
    }
    fn load(&mut self, song: &Song) -> bool {
        if song.provider != Provider::Url || song.url.is_empty() {
            self.el.pause().ok();
            return false;
        }
        if self.el.src() != song.url {
            self.el.set_src(&song.url);
        }
        true
    }
    fn position_ms(&self) -> Option<f64> {
        // HAVE_METADATA (1) or more: the position is meaningful.
        (self.el.ready_state() >= 1).then(|| self.el.current_time() * 1000.0)
    }
    fn is_playing(&self) -> bool {
        !self.el.paused()
    }
    fn play(&mut self) {
        if let Ok(p) = self.el.play() {
            let blocked = self.blocked.clone();
            *blocked.borrow_mut() = false;
            sys::on_settled(&p, move |r| {
                if r.is_err() {
                    *blocked.borrow_mut() = true;
                }
            });
        }
    }
    fn pause(&mut self) {
        let _ = self.el.pause();
    }
    fn seek(&mut self, ms: f64) {
        self.el.set_current_time((ms / 1000.0).max(0.0));
    }
    fn set_rate(&mut self, rate: f64) {
        if self.el.playback_rate() != rate {
            self.el.set_playback_rate(rate);
        }
    }
    fn blocked(&self) -> bool {
        *self.blocked.borrow()
    }
}

fn call(obj: &JsValue, method: &str, args: &[JsValue]) -> JsValue {
    let Ok(f) = Reflect::get(obj, &JsValue::from_str(method)) else { return JsValue::UNDEFINED };
    let Some(f) = f.dyn_ref::<Function>() else { return JsValue::UNDEFINED };
    let arr: js_sys::Array = args.iter().collect();
    f.apply(obj, &arr).unwrap_or(JsValue::UNDEFINED)
}

/// A YouTube IFrame player (`YT.Player`): `seekTo`, `setPlaybackRate` restricted to
/// `getAvailablePlaybackRates()` (the step decides whether rate nudges are possible at all), and
/// a coarse `getCurrentTime()`. Plays songs whose provider is `youtube` (`song.id` = video id).
pub struct YouTubeAdapter {
    player: JsValue,
    step: Option<f64>,
}

impl YouTubeAdapter {
    pub fn new(player: JsValue) -> Self {
        let rates: Vec<f64> = js_sys::Array::from(&call(&player, "getAvailablePlaybackRates", &[]))
            .iter()
            .filter_map(|v| v.as_f64())
            .collect();
        // The finest spacing around 1.0; the usual list (0.25 steps) makes YouTube seek-only.
        let step = rates
            .windows(2)
            .map(|w| (w[1] - w[0]).abs())
            .filter(|d| *d > 0.0)
            .fold(None, |m: Option<f64>, d| Some(m.map_or(d, |m| m.min(d))));
        Self { player, step: step.or(Some(0.25)) }
    }
}

impl MediaAdapter for YouTubeAdapter {
    fn capabilities(&self) -> PlayerCapabilities {
        PlayerCapabilities {
            can_set_rate: true,
            rate_step: self.step,
            seek_latency_ms: 300.0,
            position_granularity_ms: 50.0,
        }
    }
    fn load(&mut self, song: &Song) -> bool {
        if song.provider != Provider::Youtube {
            return false;
        }
        let data = call(&self.player, "getVideoData", &[]);
        let current = Reflect::get(&data, &"video_id".into()).ok().and_then(|v| v.as_string());
        if current.as_deref() != Some(song.id.as_str()) {
            call(&self.player, "cueVideoById", &[JsValue::from_str(&song.id)]);
        }
        true
    }
    fn position_ms(&self) -> Option<f64> {
        call(&self.player, "getCurrentTime", &[]).as_f64().map(|s| s * 1000.0)
    }
    fn is_playing(&self) -> bool {
        // YT.PlayerState.PLAYING = 1, BUFFERING = 3.
        matches!(call(&self.player, "getPlayerState", &[]).as_f64(), Some(1.0) | Some(3.0))
    }
    fn play(&mut self) {
        call(&self.player, "playVideo", &[]);
    }
    fn pause(&mut self) {
        call(&self.player, "pauseVideo", &[]);
    }
    fn seek(&mut self, ms: f64) {
        call(&self.player, "seekTo", &[JsValue::from_f64((ms / 1000.0).max(0.0)), JsValue::TRUE]);
    }
    fn set_rate(&mut self, rate: f64) {
        let q = match self.step {
            Some(s) if s > 0.0 => (rate / s).round() * s,
            _ => rate,
        };
        call(&self.player, "setPlaybackRate", &[JsValue::from_f64(q)]);
    }
}

/// Spotify's Web API call that starts a track on a device.
pub const SPOTIFY_PLAY_URL: &str = "https://api.spotify.com/v1/me/player/play";

/// A Spotify Web Playback SDK player (`Spotify.Player`): seek only, no rate. Its state comes
/// from the asynchronous `getCurrentState()`, polled each tick and extrapolated in between.
/// Plays songs whose provider is `spotify` (`song.id` is the track id). The SDK cannot choose a
/// track; with [`SpotifyAdapter::with_web_api`] the adapter starts each song on the SDK's
/// device through the Web API, otherwise that is the page's job.
pub struct SpotifyAdapter {
    player: JsValue,
    /// `(position ms, paused, local time read)` from the last `getCurrentState()`.
    last: Rc<RefCell<Option<(f64, bool, f64)>>>,
    /// `(device id, OAuth token)` for starting tracks through the Web API.
    web_api: Option<(String, String)>,
}

impl SpotifyAdapter {
    pub fn new(player: JsValue) -> Self {
        Self { player, last: Rc::new(RefCell::new(None)), web_api: None }
    }

    /// Also starts each loaded song on the SDK's `device_id` (its `ready` event gives it) with
    /// `PUT /v1/me/player/play` and the user's OAuth `token` (Premium, scope `streaming`).
    pub fn with_web_api(player: JsValue, device_id: String, token: String) -> Self {
        Self { web_api: Some((device_id, token)), ..Self::new(player) }
    }

    /// `PUT /v1/me/player/play?device_id=…` with `{"uris": ["spotify:track:ID"]}`; the result
    /// shows in the SDK's state, which the sync polls.
    fn start_track(&self, track_id: &str) {
        let Some((device, token)) = &self.web_api else { return };
        let device: String = js_sys::encode_uri_component(device).into();
        let url = sys::text(&[SPOTIFY_PLAY_URL, "?device_id=", &device]);
        let uris = js_sys::Array::of1(&sys::text(&["spotify:track:", track_id]).into());
        let body = sys::stringify(&sys::object(&[("uris", uris.into())])).unwrap_or(JsValue::NULL);
        let headers = sys::object(&[
            ("Authorization", sys::text(&["Bearer ", token]).into()),
            ("Content-Type", "application/json".into()),
        ]);
        let init = sys::object(&[("method", "PUT".into()), ("headers", headers), ("body", body)]);
        call(&js_sys::global(), "fetch", &[url.into(), init]);
    }

    fn poll(&self) {
        let p = call(&self.player, "getCurrentState", &[]);
        let last = self.last.clone();
        sys::on_settled(&p, move |r| {
            if let Ok(state) = r {
                let get = |k: &str| Reflect::get(&state, &k.into()).ok();
                let pos = get("position").and_then(|v| v.as_f64());
                let paused = get("paused").and_then(|v| v.as_bool()).unwrap_or(true);
                *last.borrow_mut() = pos.map(|p| (p, paused, sys::now()));
            }
        });
    }
}

impl MediaAdapter for SpotifyAdapter {
    fn capabilities(&self) -> PlayerCapabilities {
        PlayerCapabilities {
            can_set_rate: false,
            rate_step: None,
            seek_latency_ms: 300.0,
            position_granularity_ms: 100.0,
        }
    }
    fn load(&mut self, song: &Song) -> bool {
        if song.provider != Provider::Spotify {
            return false;
        }
        *self.last.borrow_mut() = None;
        self.start_track(&song.id);
        true
    }
    fn position_ms(&self) -> Option<f64> {
        self.poll();
        let (pos, paused, at) = (*self.last.borrow())?;
        Some(if paused { pos } else { pos + (sys::now() - at) })
    }
    fn is_playing(&self) -> bool {
        self.last.borrow().is_some_and(|(_, paused, _)| !paused)
    }
    fn play(&mut self) {
        call(&self.player, "resume", &[]);
        if let Some(l) = self.last.borrow_mut().as_mut() {
            l.1 = false;
        }
    }
    fn pause(&mut self) {
        call(&self.player, "pause", &[]);
        if let Some(l) = self.last.borrow_mut().as_mut() {
            l.1 = true;
        }
    }
    fn seek(&mut self, ms: f64) {
        call(&self.player, "seek", &[JsValue::from_f64(ms.max(0.0).round())]);
        if let Some(l) = self.last.borrow_mut().as_mut() {
            *l = (ms, l.1, sys::now());
        }
    }
    fn set_rate(&mut self, _rate: f64) {}
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
}

impl MediaAdapter for JsAdapter {
    fn capabilities(&self) -> PlayerCapabilities {
        self.caps.clone()
    }
    fn load(&mut self, song: &Song) -> bool {
        call(&self.obj, "load", &[sys::to_js(song)]).as_bool().unwrap_or(true)
    }
    fn position_ms(&self) -> Option<f64> {
        call(&self.obj, "positionMs", &[]).as_f64()
    }
    fn is_playing(&self) -> bool {
        call(&self.obj, "isPlaying", &[]).as_bool().unwrap_or(false)
    }
    fn play(&mut self) {
        call(&self.obj, "play", &[]);
    }
    fn pause(&mut self) {
        call(&self.obj, "pause", &[]);
    }
    fn seek(&mut self, ms: f64) {
        call(&self.obj, "seek", &[JsValue::from_f64(ms)]);
    }
    fn set_rate(&mut self, rate: f64) {
        call(&self.obj, "setRate", &[JsValue::from_f64(rate)]);
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
            history: VecDeque::from(vec![(1000.0, 1.5), (1250.0, -0.25)]),
            blocked: true,
        };
        assert_eq!(info.to_tree::<Value>(), serde_json::to_value(&info).expect("json"));
        let empty = SyncInfo::default();
        assert_eq!(empty.to_tree::<Value>(), serde_json::to_value(&empty).expect("json"));
    }
}
