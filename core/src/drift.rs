//! Drift correction: given where the local player is and where the playback clock says it should
//! be, decide between doing nothing, nudging the playback rate and seeking.
//!
//! Rate nudges are inaudible and smooth but slow; seeks are immediate but audible and cost
//! `seek_latency_ms`. The controller therefore:
//!
//! - smooths the readings of players that report their position coarsely, predicting the
//!   error's motion from the rate it set itself, so that noise is neither chased nor lagged;
//! - ignores errors inside a dead band, and once it starts nudging keeps going until the error is
//!   inside a narrower exit band (hysteresis), so noise around one threshold cannot make it flap;
//! - nudges proportionally (aiming to remove the error over `correction_horizon_ms`), capped at a
//!   small rate delta near the target and a larger one further out, and quantised to what the
//!   player can actually set, and only tells the player when the rate to set changes;
//! - seeks only for large errors (or moderate ones when the player cannot change rate), lands
//!   ahead by the seek latency, and then waits for the player to settle before judging again;
//! - counts its seeks, and when it would exceed `max_seeks` within `seek_window_ms` (thrashing:
//!   the player cannot hold a position, or its seek latency is not what it claims) stops seeking
//!   for `seek_backoff_ms` and widens its seek thresholds (longer and wider if it recurs).
//!
//! The controller is fed positions in song milliseconds; it should only be called while the room
//! is playing.

use crate::prelude::*;

use serde::{Deserialize, Serialize};

use crate::Millis;

/// Each thrashing episode doubles the widening of the seek thresholds (and the length of the next
/// backoff), up to this factor.
const MAX_THRESHOLD_SCALE: f64 = 8.0;

/// What a player can do, and how precisely it reports its position.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PlayerCapabilities {
    /// Whether the playback rate can be changed at all (Spotify's cannot).
    pub can_set_rate: bool,
    /// Rates the player accepts are multiples of this step (`Some(0.05)`: 0.95, 1.0, 1.05...);
    /// `None` for a continuous rate. A step coarser than
    /// [`DriftConfig::far_max_rate_delta`] makes the player seek-only: any nudge it could take
    /// would be audible.
    pub rate_step: Option<f64>,
    /// Typical time between asking for a seek and the player playing from the new position.
    pub seek_latency_ms: Millis,
    /// How far off a reported position can be (coarse polling, interpolation). Readings are
    /// smoothed, and no threshold is set below this noise floor.
    pub position_granularity_ms: Millis,
}

/// Tuning of a [`DriftController`]. Thresholds are absolute errors, `|local - expected|`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, rename_all = "camelCase")]
pub struct DriftConfig {
    /// Errors up to this are left alone (raised to the player's position granularity).
    pub dead_band_ms: Millis,
    /// Once nudging, continue until the error is below this (hysteresis; at most `dead_band_ms`).
    pub exit_band_ms: Millis,
    /// Largest relative rate change while the error is below `near_threshold_ms`.
    pub near_max_rate_delta: f64,
    /// Largest relative rate change ever.
    pub far_max_rate_delta: f64,
    /// Errors below this get `near_max_rate_delta`, larger ones `far_max_rate_delta`.
    pub near_threshold_ms: Millis,
    /// Seek above this error when the player can nudge.
    pub seek_threshold_ms: Millis,
    /// Seek above this error when the player cannot nudge; below it, nothing can be done.
    pub seek_only_threshold_ms: Millis,
    /// A nudge aims to remove the error over this much time (then is capped, see above).
    pub correction_horizon_ms: Millis,
    /// At most this many seeks within `seek_window_ms`; wanting another one is thrashing.
    pub max_seeks: u32,
    /// Span over which seeks are counted.
    pub seek_window_ms: Millis,
    /// After thrashing, no seek for this long.
    pub seek_backoff_ms: Millis,
    /// Errors are ignored for `seek_latency_ms + seek_settle_ms` after a seek, until the player
    /// reports positions from after the jump.
    pub seek_settle_ms: Millis,
    /// Nudges for continuous-rate players are multiples of this, so that a correction is a
    /// handful of rate changes rather than one per update. `0` nudges continuously.
    pub rate_resolution: f64,
    /// Weight of each new reading in the error estimate of a player with a non-zero
    /// `position_granularity_ms` (an exponential moving average; `1` disables smoothing).
    /// Players reporting exact positions are never smoothed.
    pub smoothing: f64,
    /// After a nudge ends, the next one starts no sooner than this (seeks are not held back).
    /// A minimum dwell: real drift grows slowly, so it is position-reading noise that would
    /// otherwise start a nudge right after the last one, each costing two rate changes.
    pub nudge_rest_ms: Millis,
}

impl Default for DriftConfig {
    fn default() -> Self {
        Self {
            dead_band_ms: 10.0,
            exit_band_ms: 5.0,
            near_max_rate_delta: 0.02,
            far_max_rate_delta: 0.05,
            near_threshold_ms: 100.0,
            seek_threshold_ms: 1000.0,
            seek_only_threshold_ms: 150.0,
            correction_horizon_ms: 2000.0,
            max_seeks: 3,
            seek_window_ms: 10_000.0,
            seek_backoff_ms: 5000.0,
            seek_settle_ms: 500.0,
            rate_resolution: 0.005,
            smoothing: 0.2,
            nudge_rest_ms: 0.0,
        }
    }
}

/// Dead band for players that report exact positions and take any rate (an HTML5 media
/// element): tight enough that two such players stay well within 10 ms of each other.
pub const PRECISE_DEAD_BAND_MS: Millis = 3.0;
/// Exit band paired with [`PRECISE_DEAD_BAND_MS`].
pub const PRECISE_EXIT_BAND_MS: Millis = 1.0;
/// Rest between nudges paired with [`PRECISE_DEAD_BAND_MS`]: a band this tight is crossed by
/// reading noise alone on a loaded machine; resting 2 s keeps a player at ≤ ~50 rate changes
/// per minute whatever the noise (each nudge lasts ≥ ~0.3 s and costs two changes).
pub const PRECISE_NUDGE_REST_MS: Millis = 2000.0;

impl DriftConfig {
    /// The defaults, tightened for players that can afford it. A player with exact positions
    /// and a continuous rate gets a [`PRECISE_DEAD_BAND_MS`] dead band: with the default 10 ms,
    /// each of two players may rest anywhere within ±10 ms of the clock, so two of them can sit
    /// 20 ms apart without either correcting. Coarse or rate-less players keep the defaults
    /// (their noise floor or seek cost would make a tight band flap).
    pub fn for_player(caps: &PlayerCapabilities) -> Self {
        let precise = caps.can_set_rate && caps.rate_step.is_none() && caps.position_granularity_ms <= 0.0;
        if precise {
            Self {
                dead_band_ms: PRECISE_DEAD_BAND_MS,
                exit_band_ms: PRECISE_EXIT_BAND_MS,
                nudge_rest_ms: PRECISE_NUDGE_REST_MS,
                ..Self::default()
            }
        } else {
            Self::default()
        }
    }
}

/// What the player should do now.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "camelCase", rename_all_fields = "camelCase")]
pub enum Correction {
    /// Leave the player alone.
    None,
    /// Set the playback rate to this absolute value (the room rate, nudged or restored).
    Rate { rate: f64 },
    /// Seek to this position; it already includes the distance played during the seek.
    Seek { to_ms: Millis },
}

/// What the controller is doing, for diagnostics.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Mode {
    /// In sync, or out of sync but unable to do anything about it.
    #[default]
    Idle,
    /// Running a rate nudge.
    Nudging,
    /// Waiting for a seek to land.
    Seeking,
    /// Seeking too often: seeks are suspended (rate nudges continue).
    Backoff,
}

/// Thresholds derived once from the config and the player's capabilities.
#[derive(Debug, Clone, PartialEq)]
struct Limits {
    dead_band: Millis,
    exit_band: Millis,
    /// Seek threshold for this player, before any widening for thrashing.
    seek_threshold: Millis,
    /// Quantum of a rate nudge: `None` if the player cannot nudge, `Some(0.0)` if continuous.
    nudge_step: Option<f64>,
    /// Weight of a new reading in the smoothed error, in `(0, 1]`.
    smoothing: f64,
    /// A reading this far from the prediction is a real jump (a stall, a seek), not noise.
    jump: Millis,
}

impl Limits {
    fn new(config: &DriftConfig, caps: &PlayerCapabilities) -> Self {
        // `max` also maps a NaN on the left to the right-hand side.
        let noise = caps.position_granularity_ms.max(0.0);
        let dead_band = config.dead_band_ms.max(noise);
        let exit_band = config.exit_band_ms.max(noise / 2.0).min(dead_band);
        let step = match caps.rate_step {
            Some(step) if step > 0.0 => step,
            _ => config.rate_resolution.max(0.0),
        };
        let far = config.far_max_rate_delta;
        let nudge_step = (caps.can_set_rate && far > 0.0 && step <= far).then_some(step);
        let seek_threshold = match nudge_step {
            Some(_) => config.seek_threshold_ms,
            None => config.seek_only_threshold_ms,
        };
        let k = config.smoothing;
        let smoothing = if noise > 0.0 && k > 0.0 && k < 1.0 { k } else { 1.0 };
        Self {
            dead_band,
            exit_band,
            // A seek lands within the noise at best, so it is only worth it well outside it.
            seek_threshold: seek_threshold.max(2.0 * dead_band),
            nudge_step,
            smoothing,
            jump: 4.0 * noise,
        }
    }
}

/// Decides, update after update, how to keep a player on the playback clock. See the
/// [module docs](self).
#[derive(Debug, Clone)]
pub struct DriftController {
    config: DriftConfig,
    caps: PlayerCapabilities,
    limits: Limits,
    mode: Mode,
    last_error: Option<Millis>,
    /// Smoothed error and the time it was computed; cleared while a seek lands.
    smoothed: Option<(Millis, Millis)>,
    /// Direction of the running nudge: `Some(true)` while slowing down because local is ahead.
    nudge: Option<bool>,
    /// The rate last set by the controller; `None` when the player is at the room rate.
    applied_rate: Option<f64>,
    /// While set, a seek is landing and errors are ignored.
    settle_until: Option<Millis>,
    /// While set, seeks are suspended because of thrashing.
    backoff_until: Option<Millis>,
    /// While set, no new nudge starts (`nudge_rest_ms` after the last one ended).
    rest_until: Option<Millis>,
    /// When the recent seeks were issued, oldest first, pruned to `seek_window_ms`.
    seeks: Vec<Millis>,
    /// Widening factor of the seek thresholds, `1` unless thrashing was detected.
    threshold_scale: f64,
    /// Last time the error exceeded the unwidened seek threshold; widening is undone once this
    /// is a full seek window ago.
    last_seek_wanted: Option<Millis>,
}

impl DriftController {
    pub fn new(config: DriftConfig, caps: PlayerCapabilities) -> Self {
        let limits = Limits::new(&config, &caps);
        Self {
            config,
            caps,
            limits,
            mode: Mode::Idle,
            last_error: None,
            smoothed: None,
            nudge: None,
            applied_rate: None,
            settle_until: None,
            backoff_until: None,
            rest_until: None,
            seeks: Vec::new(),
            threshold_scale: 1.0,
            last_seek_wanted: None,
        }
    }

    pub fn config(&self) -> &DriftConfig {
        &self.config
    }

    pub fn capabilities(&self) -> &PlayerCapabilities {
        &self.caps
    }

    /// Decides what to do at time `now` (any monotonic clock: only intervals matter), given the
    /// player's reported position and the position the playback clock expects.
    /// `error = local - expected`, positive when the player is ahead. `base_rate` is the room's
    /// rate. Non-finite inputs or a non-positive rate change nothing and yield
    /// [`Correction::None`].
    pub fn update(&mut self, now: Millis, local_ms: Millis, expected_ms: Millis, base_rate: f64) -> Correction {
        let finite = [now, local_ms, expected_ms, base_rate].iter().all(|x| x.is_finite());
        if !finite || base_rate <= 0.0 {
            return Correction::None;
        }
        let reading = local_ms - expected_ms;
        self.expire(now);

        let correction = if self.settle_until.is_some() {
            // The player is still landing; its position says nothing yet, and smoothing must
            // start afresh from where it lands.
            self.smoothed = None;
            self.last_error = Some(reading);
            Correction::None
        } else {
            let error = self.smooth(now, reading, base_rate);
            self.last_error = Some(error);
            self.decide(now, error, expected_ms, base_rate)
        };
        self.mode = if self.settle_until.is_some() {
            Mode::Seeking
        } else if self.backoff_until.is_some() {
            Mode::Backoff
        } else if self.nudge.is_some() {
            Mode::Nudging
        } else {
            Mode::Idle
        };
        correction
    }

    /// Drops state whose time has passed.
    fn expire(&mut self, now: Millis) {
        let window = self.config.seek_window_ms;
        let stale = self.seeks.iter().take_while(|t| now - **t >= window).count();
        self.seeks.copy_within(stale.., 0);
        self.seeks.truncate(self.seeks.len() - stale);
        if self.settle_until.is_some_and(|t| now >= t) {
            self.settle_until = None;
        }
        if self.backoff_until.is_some_and(|t| now >= t) {
            self.backoff_until = None;
        }
        if self.rest_until.is_some_and(|t| now >= t) {
            self.rest_until = None;
        }
        // Judged before this update's error is seen: calm means no seek was wanted over the
        // full window up to now, so the widening is undone even if a new error calls for one.
        let calm = self.last_seek_wanted.is_none_or(|t| now - t >= window);
        if self.backoff_until.is_none() && calm {
            self.threshold_scale = 1.0;
        }
    }

    /// Blends a reading into the running error estimate. Between updates the error moves by the
    /// difference between the rate the controller set and the room rate, so the estimate is
    /// carried forward by that before blending: smoothing then removes noise without lagging
    /// behind the controller's own corrections. A reading far outside the noise is a real jump
    /// and is taken as it is.
    fn smooth(&mut self, now: Millis, reading: Millis, base_rate: f64) -> Millis {
        let k = self.limits.smoothing;
        let error = match self.smoothed {
            Some((then, previous)) if k < 1.0 && now >= then => {
                let rate = self.applied_rate.unwrap_or(base_rate);
                let predicted = previous + (rate - base_rate) * (now - then);
                let innovation = reading - predicted;
                if innovation.abs() > self.limits.jump { reading } else { predicted + k * innovation }
            }
            _ => reading,
        };
        self.smoothed = Some((now, error));
        error
    }

    fn decide(&mut self, now: Millis, error: Millis, expected: Millis, base_rate: f64) -> Correction {
        if error.abs() > self.limits.seek_threshold {
            self.last_seek_wanted = Some(now);
        }
        if error.abs() > self.limits.seek_threshold * self.threshold_scale
            && let Some(seek) = self.try_seek(now, expected, base_rate)
        {
            return seek;
        }
        match self.limits.nudge_step {
            Some(step) => self.nudge(now, error, base_rate, step),
            None => self.restore_rate(base_rate),
        }
    }

    /// A seek, or the rate restore that must precede it; `None` if seeking is suspended.
    fn try_seek(&mut self, now: Millis, expected: Millis, base_rate: f64) -> Option<Correction> {
        if self.backoff_until.is_some() {
            return None;
        }
        if self.seeks.len() >= self.config.max_seeks as usize {
            // Thrashing. Repeated episodes back off longer and widen further, so a player that
            // cannot hold a position at all ends up seeking rarely instead of every window.
            self.backoff_until = Some(now + self.config.seek_backoff_ms * self.threshold_scale);
            self.threshold_scale = (self.threshold_scale * 2.0).min(MAX_THRESHOLD_SCALE);
            return None;
        }
        // A seek keeps the current rate: leaving a nudge in place would make the player drift
        // away right after landing. Restore first; the next update seeks.
        self.nudge = None;
        if let restore @ Correction::Rate { .. } = self.restore_rate(base_rate) {
            return Some(restore);
        }
        let latency = self.caps.seek_latency_ms.max(0.0);
        self.smoothed = None;
        self.seeks.push(now);
        self.settle_until = Some(now + latency + self.config.seek_settle_ms.max(0.0));
        Some(Correction::Seek { to_ms: expected + latency * base_rate })
    }

    fn nudge(&mut self, now: Millis, error: Millis, base_rate: f64, step: f64) -> Correction {
        let ahead = error > 0.0;
        let magnitude = error.abs();
        let keep_going = match self.nudge {
            None => magnitude > self.limits.dead_band && self.rest_until.is_none(),
            // Past a zero crossing the error is an overshoot of this nudge; chasing it would
            // oscillate, so stop and let the dead band judge it afresh.
            Some(was_ahead) => was_ahead == ahead && magnitude >= self.limits.exit_band,
        };
        if !keep_going {
            if self.nudge.take().is_some() && self.config.nudge_rest_ms > 0.0 {
                self.rest_until = Some(now + self.config.nudge_rest_ms);
            }
            return self.restore_rate(base_rate);
        }
        let continuing = self.nudge.is_some();
        self.nudge = Some(ahead);

        let far = self.config.far_max_rate_delta;
        let cap =
            if magnitude < self.config.near_threshold_ms { self.config.near_max_rate_delta.min(far) } else { far };
        // Position runs at `base_rate * (1 ± delta)` against an expected `base_rate`, so the
        // error shrinks by `base_rate * delta` per millisecond.
        let wanted = magnitude / (self.config.correction_horizon_ms * base_rate);
        let delta = quantise(wanted, step, cap);
        // Within a nudge, a reading's noise moves `wanted` across a step boundary and back on
        // every update; each move would be a rate change. The nudge eases off as the error
        // shrinks (a step at a time), but steps up only for a rise of two steps: noise then
        // costs at most one extra change per nudge, a real rise of the error is still followed.
        if continuing
            && step > 0.0
            && let Some(applied) = self.applied_rate
        {
            let current = (applied / base_rate - 1.0).abs();
            if delta > current - 1e-9 && delta < current + 2.0 * step - 1e-9 {
                return Correction::None;
            }
        }
        let rate = if ahead { base_rate * (1.0 - delta) } else { base_rate * (1.0 + delta) };
        self.set_rate(rate, base_rate)
    }

    fn set_rate(&mut self, rate: f64, base_rate: f64) -> Correction {
        if rate == self.applied_rate.unwrap_or(base_rate) {
            return Correction::None;
        }
        self.applied_rate = Some(rate);
        Correction::Rate { rate }
    }

    /// Puts the player back at the room rate, if the controller had moved it away.
    fn restore_rate(&mut self, base_rate: f64) -> Correction {
        match self.applied_rate.take() {
            Some(rate) if rate != base_rate => Correction::Rate { rate: base_rate },
            _ => Correction::None,
        }
    }

    pub fn mode(&self) -> Mode {
        self.mode
    }

    /// The error (`local - expected`) at the last valid update: the smoothed estimate the
    /// controller acted on, or the raw reading while a seek was landing.
    pub fn last_error_ms(&self) -> Option<Millis> {
        self.last_error
    }

    /// The rate the controller has set on the player, or `None` while the player is at the room
    /// rate as far as the controller knows.
    pub fn applied_rate(&self) -> Option<f64> {
        self.applied_rate
    }

    /// Seeks issued within the last `seek_window_ms` before `now`.
    pub fn seeks_in_window(&self, now: Millis) -> u32 {
        let n = self.seeks.iter().filter(|t| now - **t < self.config.seek_window_ms).count();
        u32::try_from(n).unwrap_or(u32::MAX)
    }

    /// Whether seeks are suspended at `now` because the controller wanted to seek more than
    /// `max_seeks` times within `seek_window_ms`.
    pub fn is_thrashing(&self, now: Millis) -> bool {
        self.backoff_until.is_some_and(|t| now < t)
    }

    /// Starts afresh, e.g. after a song change or a room seek: the position jumped on purpose,
    /// so the seek history, nudge and backoff are forgotten. A rate the controller had set is
    /// remembered, so the next update restores the room rate if needed.
    pub fn reset(&mut self) {
        let applied_rate = self.applied_rate;
        *self = Self::new(self.config.clone(), self.caps.clone());
        self.applied_rate = applied_rate;
    }
}

/// Rounds a wanted rate delta to the nudge step, within `[one step, cap]`. A player whose step
/// exceeds `cap` gets one step: the smallest nudge it can do (the caller has already ensured
/// that a step never exceeds the far cap). `step == 0` means continuous: clamped to `cap` only.
///
/// `round` and `floor` are exact (IEEE-754 roundToIntegral), so results stay bit-identical
/// across targets.
fn quantise(wanted: f64, step: f64, cap: f64) -> f64 {
    if step == 0.0 {
        // Written so that a NaN `wanted` (degenerate config) yields `cap`.
        return if wanted < cap { wanted } else { cap };
    }
    // The epsilon absorbs representation error, e.g. 0.15 / 0.05 = 2.9999999999999996.
    let max_steps = libm::floor(cap / step + 1e-9).max(1.0);
    let steps = libm::round(wanted / step);
    let steps = if steps > max_steps {
        max_steps
    } else if steps >= 1.0 {
        steps
    } else {
        1.0
    };
    steps * step
}

#[cfg(test)]
mod tests {
    use super::*;
    #[cfg(target_arch = "wasm32")]
    use wasm_bindgen_test::wasm_bindgen_test as test;

    fn html5() -> PlayerCapabilities {
        PlayerCapabilities { can_set_rate: true, rate_step: None, seek_latency_ms: 200.0, position_granularity_ms: 0.0 }
    }

    fn youtube() -> PlayerCapabilities {
        PlayerCapabilities { rate_step: Some(0.05), ..html5() }
    }

    fn spotify() -> PlayerCapabilities {
        PlayerCapabilities { can_set_rate: false, ..html5() }
    }

    fn controller(caps: PlayerCapabilities) -> DriftController {
        DriftController::new(DriftConfig::default(), caps)
    }

    /// Feeds an error at `now` with the expected position fixed at 10 s and room rate 1.
    fn step(c: &mut DriftController, now: f64, error: f64) -> Correction {
        c.update(now, 10_000.0 + error, 10_000.0, 1.0)
    }

    fn rate(c: Correction) -> f64 {
        match c {
            Correction::Rate { rate } => rate,
            other => panic!("expected a rate correction, got {other:?}"),
        }
    }

    #[test]
    fn quantisation() {
        assert_eq!(quantise(0.013, 0.005, 0.02), 0.015);
        assert_eq!(quantise(0.5, 0.005, 0.02), 0.02);
        assert_eq!(quantise(0.001, 0.005, 0.02), 0.005, "at least one step");
        assert_eq!(quantise(0.001, 0.05, 0.02), 0.05, "one step even above the near cap");
        assert_eq!(quantise(0.2, 0.05, 0.15), 0.15000000000000002, "three steps fit in 0.15");
        assert_eq!(quantise(0.013, 0.0, 0.02), 0.013);
        assert_eq!(quantise(0.5, 0.0, 0.02), 0.02);
        assert_eq!(quantise(f64::NAN, 0.0, 0.02), 0.02);
        assert_eq!(quantise(f64::INFINITY, 0.005, 0.02), 0.02);
    }

    #[test]
    fn dead_band_does_nothing() {
        let mut c = controller(html5());
        for (i, e) in [0.0, 9.9, -10.0, 10.0, -3.0].into_iter().enumerate() {
            assert_eq!(step(&mut c, i as f64 * 50.0, e), Correction::None);
            assert_eq!(c.mode(), Mode::Idle);
        }
        assert_eq!(c.last_error_ms(), Some(-3.0));
    }

    #[test]
    fn ahead_slows_down_and_behind_speeds_up() {
        let mut c = controller(html5());
        // 30 ms / 2000 ms = 0.015 below the near cap.
        assert_eq!(rate(step(&mut c, 0.0, 30.0)), 0.985);
        assert_eq!(c.mode(), Mode::Nudging);
        let mut c = controller(html5());
        assert_eq!(rate(step(&mut c, 0.0, -30.0)), 1.015);
    }

    #[test]
    fn nudges_are_capped_near_and_far() {
        let mut c = controller(html5());
        assert_eq!(rate(step(&mut c, 0.0, 99.0)), 0.98, "near cap");
        assert_eq!(rate(step(&mut c, 50.0, 100.0)), 0.95, "far cap");
        assert_eq!(step(&mut c, 100.0, 900.0), Correction::None, "still the far cap");
    }

    #[test]
    fn nudge_is_relative_to_the_room_rate() {
        let mut c = controller(html5());
        // 30 ms over 2 s at rate 1.5 needs delta 0.01.
        assert_eq!(rate(c.update(0.0, 10_030.0, 10_000.0, 1.5)), 1.5 * 0.99);
    }

    #[test]
    fn youtube_uses_whole_steps() {
        let mut c = controller(youtube());
        // 12 ms would want 0.006, below one 0.05 step: one step anyway.
        assert_eq!(rate(step(&mut c, 0.0, -12.0)), 1.05);
        assert_eq!(step(&mut c, 50.0, -9.0), Correction::None, "same rate is not resent");
    }

    #[test]
    fn coarse_rate_step_means_seek_only() {
        let caps = PlayerCapabilities { rate_step: Some(0.25), ..html5() };
        let mut c = controller(caps);
        assert_eq!(step(&mut c, 0.0, 140.0), Correction::None);
        assert!(matches!(step(&mut c, 50.0, 160.0), Correction::Seek { .. }));
    }

    #[test]
    fn hysteresis_and_single_restore() {
        let mut c = controller(html5());
        assert_eq!(rate(step(&mut c, 0.0, 20.0)), 0.99);
        // Inside the dead band but outside the exit band: keep nudging (rate unchanged).
        // 8 / 2000 = 0.004 rounds to one 0.005 step.
        assert_eq!(rate(step(&mut c, 50.0, 8.0)), 0.995);
        assert_eq!(c.mode(), Mode::Nudging);
        assert_eq!(step(&mut c, 75.0, 7.0), Correction::None, "same rate is not resent");
        assert_eq!(step(&mut c, 100.0, 4.9), Correction::Rate { rate: 1.0 });
        assert_eq!(c.mode(), Mode::Idle);
        assert_eq!(c.applied_rate(), None);
        assert_eq!(step(&mut c, 150.0, 4.0), Correction::None, "restored only once");
        assert_eq!(step(&mut c, 200.0, 9.0), Correction::None, "back to the dead band");
    }

    #[test]
    fn zero_crossing_ends_a_nudge() {
        let mut c = controller(youtube());
        assert_eq!(rate(step(&mut c, 0.0, 20.0)), 0.95);
        assert_eq!(step(&mut c, 50.0, -7.0), Correction::Rate { rate: 1.0 });
        assert_eq!(c.mode(), Mode::Idle);
    }

    #[test]
    fn seeks_ahead_by_the_latency_then_settles() {
        let mut c = controller(html5());
        let seek = c.update(0.0, 12_000.0, 10_000.0, 2.0);
        assert_eq!(seek, Correction::Seek { to_ms: 10_000.0 + 200.0 * 2.0 });
        assert_eq!(c.mode(), Mode::Seeking);
        assert_eq!(c.seeks_in_window(0.0), 1);
        // The player still reports its old position for a while: ignored for 200 + 500 ms.
        assert_eq!(step(&mut c, 650.0, 2000.0), Correction::None);
        assert_eq!(c.mode(), Mode::Seeking);
        assert_eq!(step(&mut c, 700.0, 3.0), Correction::None);
        assert_eq!(c.mode(), Mode::Idle);
        assert_eq!(c.seeks_in_window(10_000.0), 0);
    }

    #[test]
    fn a_running_nudge_is_undone_before_seeking() {
        let mut c = controller(html5());
        assert_eq!(rate(step(&mut c, 0.0, 500.0)), 0.95);
        assert_eq!(step(&mut c, 50.0, 1500.0), Correction::Rate { rate: 1.0 });
        assert!(matches!(step(&mut c, 100.0, 1500.0), Correction::Seek { .. }));
    }

    #[test]
    fn seek_only_player() {
        let mut c = controller(spotify());
        assert_eq!(step(&mut c, 0.0, 149.0), Correction::None);
        assert_eq!(c.mode(), Mode::Idle);
        assert_eq!(step(&mut c, 50.0, -151.0), Correction::Seek { to_ms: 10_200.0 });
    }

    #[test]
    fn granularity_raises_the_thresholds() {
        // Smoothing off, to see the thresholds alone.
        let config = DriftConfig { smoothing: 1.0, ..DriftConfig::default() };
        let caps = PlayerCapabilities { position_granularity_ms: 100.0, ..spotify() };
        let mut c = DriftController::new(config.clone(), caps);
        assert_eq!(step(&mut c, 0.0, 199.0), Correction::None, "seek threshold is 2 × 100");
        let caps = PlayerCapabilities { position_granularity_ms: 30.0, ..html5() };
        let mut c = DriftController::new(config, caps);
        assert_eq!(step(&mut c, 0.0, 29.0), Correction::None, "dead band is 30");
        assert_eq!(rate(step(&mut c, 50.0, 31.0)), 0.985);
        assert_eq!(rate(step(&mut c, 100.0, 16.0)), 0.99, "exit band is 15");
        assert_eq!(step(&mut c, 150.0, 14.0), Correction::Rate { rate: 1.0 });
    }

    #[test]
    fn precise_players_get_a_tight_band() {
        let config = DriftConfig::for_player(&html5());
        assert_eq!(config.dead_band_ms, PRECISE_DEAD_BAND_MS);
        let mut c = DriftController::new(config, html5());
        assert_eq!(step(&mut c, 0.0, 2.5), Correction::None);
        assert_eq!(rate(step(&mut c, 100.0, 6.0)), 0.995, "6 ms ahead: the smallest nudge");
        assert_eq!(step(&mut c, 200.0, 1.5), Correction::None, "still outside the exit band");
        assert_eq!(step(&mut c, 300.0, 0.5), Correction::Rate { rate: 1.0 });
        // Coarse or rate-less players keep the defaults.
        let coarse = PlayerCapabilities { position_granularity_ms: 50.0, ..html5() };
        assert_eq!(DriftConfig::for_player(&coarse), DriftConfig::default());
        assert_eq!(DriftConfig::for_player(&spotify()), DriftConfig::default());
    }

    /// Two precise players started 9 ms apart (inside the default 10 ms band) end up within
    /// 2 × the exit band of each other, with a handful of rate changes and no seek.
    #[test]
    fn precise_players_converge_together() {
        let mut players = [(-4.5, 1.0, 0u32), (4.5, 1.0, 0u32)];
        for (error, rate, changes) in players.iter_mut() {
            let mut c = DriftController::new(DriftConfig::for_player(&html5()), html5());
            let mut now = 0.0;
            while now < 20_000.0 {
                match c.update(now, 1000.0 + now + *error, 1000.0 + now, 1.0) {
                    Correction::Rate { rate: r } => {
                        *rate = r;
                        *changes += 1;
                    }
                    Correction::Seek { .. } => panic!("no seek for a few ms"),
                    Correction::None => {}
                }
                now += 100.0;
                *error += (*rate - 1.0) * 100.0;
            }
        }
        let apart = (players[0].0 - players[1].0).abs();
        assert!(apart <= 2.0 * PRECISE_EXIT_BAND_MS + 0.5, "players {apart} ms apart");
        assert!(players.iter().all(|p| p.2 <= 4), "rate changes {:?}", players.map(|p| p.2));
    }

    #[test]
    fn coarse_readings_are_smoothed() {
        let caps = PlayerCapabilities { position_granularity_ms: 5.0, ..html5() };
        let mut c = controller(caps);
        // A true error of 7 ms read with ±5 ms of noise: single readings leave the dead band,
        // the estimate does not.
        for (i, noise) in [0.0, 5.0, -5.0, 5.0, 5.0, 5.0, -5.0, 5.0, 5.0].into_iter().enumerate() {
            assert_eq!(step(&mut c, i as f64 * 50.0, 7.0 + noise), Correction::None);
        }
        let estimate = c.last_error_ms().unwrap();
        assert!((estimate - 7.0).abs() < 5.0, "estimate {estimate}");

        // A jump far outside the noise (a stall) is taken at once.
        assert_eq!(rate(step(&mut c, 400.0, -60.0)), 1.02);
        assert_eq!(c.last_error_ms(), Some(-60.0));
        // While nudging at 1.02 for 50 ms the error is predicted to move by +1 ms; a reading
        // that agrees leaves the estimate on the prediction.
        assert_eq!(step(&mut c, 450.0, -59.0), Correction::None);
        let estimate = c.last_error_ms().unwrap();
        assert!((estimate + 59.0).abs() < 1e-9, "estimate {estimate}");
    }

    #[test]
    fn thrashing_backs_off_and_widens() {
        // A player that never lands where it is told: the error stays at 1.5 s.
        let mut c = controller(spotify());
        let mut seeks = Vec::new();
        let mut now = 0.0;
        while now < 5000.0 {
            if matches!(step(&mut c, now, 1500.0), Correction::Seek { .. }) {
                seeks.push(now);
            }
            now += 50.0;
        }
        // Three seeks 700 ms apart (latency + settle), then the fourth is refused.
        assert_eq!(seeks, [0.0, 700.0, 1400.0]);
        assert!(c.is_thrashing(now));
        assert_eq!(c.mode(), Mode::Backoff);
        assert_eq!(c.seeks_in_window(now), 3);

        // Keeps thrashing: backoffs of 5 s, then 10 s (the window still held 3 seeks), then
        // 20 s, with the seek threshold widened to 300, 600, 1200 ms.
        while now < 60_000.0 {
            if matches!(step(&mut c, now, 1500.0), Correction::Seek { .. }) {
                seeks.push(now);
            }
            now += 50.0;
        }
        assert_eq!(seeks.len(), 9);
        assert_eq!(seeks[3..], [17_100.0, 17_800.0, 18_500.0, 39_200.0, 39_900.0, 40_600.0]);
        assert!(c.is_thrashing(now), "now backing off for 40 s");
        // The widening (capped at 8 × 150 ms) outlives the backoff while errors persist.
        while now < 90_000.0 {
            assert_eq!(step(&mut c, now, 1199.0), Correction::None, "at {now}");
            now += 50.0;
        }
        assert!(!c.is_thrashing(now));
    }

    #[test]
    fn widening_is_undone_after_a_calm_window() {
        let mut c = controller(spotify());
        let mut now = 0.0;
        while now < 2500.0 {
            step(&mut c, now, 1500.0);
            now += 50.0;
        }
        assert!(c.is_thrashing(now));
        // Back in sync. The backoff ends at 7.1 s, and the last wanted seek was at 2.45 s.
        while now < 12_450.0 {
            assert_eq!(step(&mut c, now, 0.0), Correction::None);
            now += 50.0;
        }
        assert!(matches!(step(&mut c, now, 160.0), Correction::Seek { .. }));
    }

    #[test]
    fn nudging_continues_during_backoff() {
        let mut c = controller(html5());
        let mut now = 0.0;
        for _ in 0..3 {
            // Seek, settle, still 2 s off.
            assert!(matches!(step(&mut c, now, 2000.0), Correction::Seek { .. }));
            now += 700.0;
        }
        assert_eq!(rate(step(&mut c, now, 2000.0)), 0.95);
        assert_eq!(c.mode(), Mode::Backoff);
    }

    #[test]
    fn reset_forgets_history_but_restores_rate() {
        let mut c = controller(html5());
        assert_eq!(rate(step(&mut c, 0.0, 50.0)), 0.98);
        c.reset();
        assert_eq!(c.mode(), Mode::Idle);
        assert_eq!(c.last_error_ms(), None);
        assert_eq!(step(&mut c, 50.0, 0.0), Correction::Rate { rate: 1.0 });
        assert_eq!(step(&mut c, 100.0, 0.0), Correction::None);
    }

    #[test]
    fn invalid_input_is_ignored() {
        let mut c = controller(html5());
        assert_eq!(c.update(0.0, f64::NAN, 0.0, 1.0), Correction::None);
        assert_eq!(c.update(0.0, 5000.0, 0.0, 0.0), Correction::None);
        assert_eq!(c.update(f64::INFINITY, 5000.0, 0.0, 1.0), Correction::None);
        assert_eq!(c.last_error_ms(), None);
    }

    #[test]
    fn serde_shapes() {
        let json = |v| serde_json::to_string(&v).unwrap();
        assert_eq!(json(Correction::Seek { to_ms: 1.5 }), r#"{"kind":"seek","toMs":1.5}"#);
        assert_eq!(json(Correction::Rate { rate: 1.0 }), r#"{"kind":"rate","rate":1.0}"#);
        assert_eq!(json(Correction::None), r#"{"kind":"none"}"#);
        assert_eq!(serde_json::to_string(&Mode::Backoff).unwrap(), r#""backoff""#);
        let config: DriftConfig = serde_json::from_str(r#"{"maxSeeks": 1}"#).unwrap();
        assert_eq!(config, DriftConfig { max_seeks: 1, ..DriftConfig::default() });
    }

    /// Rate changes over a minute of readings that are only noise (uniform ±`amp` ms around the
    /// clock, one every 50 ms), for the precise player's config with a given rest.
    fn rate_changes_per_minute_of_noise(rest_ms: f64, amp: f64) -> usize {
        let config = DriftConfig { nudge_rest_ms: rest_ms, ..DriftConfig::for_player(&precise()) };
        let mut c = DriftController::new(config, precise());
        let mut x: u64 = 0x9E37_79B9_7F4A_7C15;
        (0..1200)
            .filter(|i| {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                let noise = ((x >> 11) as f64 / (1u64 << 53) as f64 * 2.0 - 1.0) * amp;
                matches!(step(&mut c, f64::from(*i) * 50.0, noise), Correction::Rate { .. })
            })
            .count()
    }

    fn precise() -> PlayerCapabilities {
        PlayerCapabilities { position_granularity_ms: 0.0, ..html5() }
    }

    #[test]
    fn resting_between_nudges_bounds_the_churn_of_reading_noise() {
        assert_eq!(DriftConfig::for_player(&precise()).nudge_rest_ms, PRECISE_NUDGE_REST_MS);
        let without = rate_changes_per_minute_of_noise(0.0, 6.0);
        let with = rate_changes_per_minute_of_noise(PRECISE_NUDGE_REST_MS, 6.0);
        assert!(without > 60, "the noise alone churns without a rest: {without}/min");
        assert!(with <= 60, "at most one rate change per second with the rest: {with}/min");
    }

    #[test]
    fn a_rest_delays_the_next_nudge_but_not_a_seek() {
        let config = DriftConfig { nudge_rest_ms: 2000.0, ..DriftConfig::for_player(&precise()) };
        let mut c = DriftController::new(config, precise());
        assert!(matches!(step(&mut c, 0.0, 8.0), Correction::Rate { .. }), "a nudge starts");
        assert_eq!(step(&mut c, 100.0, 0.5), Correction::Rate { rate: 1.0 }, "and ends in the exit band");
        assert_eq!(step(&mut c, 200.0, 8.0), Correction::None, "resting");
        assert!(matches!(step(&mut c, 300.0, 5000.0), Correction::Seek { .. }), "a seek is not held back");
        let mut c = DriftController::new(
            DriftConfig { nudge_rest_ms: 2000.0, ..DriftConfig::for_player(&precise()) },
            precise(),
        );
        step(&mut c, 0.0, 8.0);
        step(&mut c, 100.0, 0.5);
        assert!(matches!(step(&mut c, 2100.0, 8.0), Correction::Rate { .. }), "after the rest, nudges again");
    }

    #[test]
    fn a_nudge_steps_up_only_for_a_rise_of_two_steps() {
        let mut c = controller(html5());
        assert_eq!(rate(step(&mut c, 0.0, 12.0)), 0.995, "12 / 2000 rounds to one step");
        assert_eq!(step(&mut c, 50.0, 20.0), Correction::None, "one step up is noise");
        assert_eq!(step(&mut c, 100.0, 11.0), Correction::None);
        assert_eq!(rate(step(&mut c, 150.0, 31.0)), 0.985, "three steps wanted: followed");
        assert_eq!(rate(step(&mut c, 200.0, 20.0)), 0.99, "easing off goes a step at a time");
    }
}
