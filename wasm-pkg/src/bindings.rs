//! The npm API over the core's math (feature `js`): a thin layer where every function converts
//! arguments, calls the core and converts the result.
//!
//! - [`position_at`] (`positionAt`): position of a playback state at a server time.
//! - [`PlaybackClock`]: the timing vector with the core's transitions.
//! - [`Estimator`]: clock-offset estimation from `time-sync` round trips.
//! - [`Drift`]: the drift controller for a player with given capabilities.
//! - [`encode_request`] / [`decode_server_frame`]: protocol frames (the event name checked on
//!   the way out, a room push's payload on the way in; request payloads are the server's).
//!
//! Objects cross as JavaScript values read and built by the core's tree codec
//! (`crate::sys::to_js` / `from_js`). The test vectors are checked
//! from JavaScript through these functions (`tests/npm/vectors.mjs`), not by a checker shipped
//! in the package.

use crate::prelude::*;

use unisono_core::{
    drift::{DriftConfig, DriftController, PlayerCapabilities},
    estimator::{ClockOffsetEstimator, EstimatorConfig},
    protocol::{PlaybackState, REQUEST_EVENTS},
    tree::{FromTree, TreeError, frame},
};
use wasm_bindgen::prelude::*;

use crate::{
    client::state,
    sys::{self, Js},
};

fn js_err(e: TreeError) -> JsError {
    JsError::new(&e.message())
}

/// An optional argument read as `T`; `None` when left out, `undefined` or `null`.
fn optional<T: FromTree>(v: Option<JsValue>) -> Result<Option<T>, JsError> {
    v.map_or(Ok(None), |v| sys::from_js(&v).map_err(js_err))
}

/// `v` read as `T`; `undefined` or `null` is an error naming `what`.
fn required<T: FromTree>(v: &JsValue, what: &str) -> Result<T, JsError> {
    sys::from_js(v).map_err(js_err)?.ok_or_else(|| JsError::new(&sys::text(&[what, " is required"])))
}

/// Position (ms) of a playback state (`playback` object of any push) at server time `now`.
#[wasm_bindgen(js_name = positionAt)]
pub fn position_at(
    #[wasm_bindgen(unchecked_param_type = "Playback")] playback: JsValue,
    now: f64,
) -> Result<f64, JsError> {
    let state: PlaybackState = required(&playback, "playback")?;
    Ok(state.clock.position_at(now))
}

/// NTP-style clock-offset estimator (`offset = server − local`).
#[wasm_bindgen]
pub struct Estimator(ClockOffsetEstimator);

#[wasm_bindgen]
impl Estimator {
    /// A new estimator; `config` (optional) overrides defaults, e.g. `{window: 32}`.
    #[wasm_bindgen(constructor)]
    pub fn new(
        #[wasm_bindgen(unchecked_optional_param_type = "Partial<EstimatorConfig>")] config: Option<JsValue>,
    ) -> Result<Estimator, JsError> {
        let config: EstimatorConfig = optional(config)?.unwrap_or_default();
        Ok(Estimator(ClockOffsetEstimator::new(config)))
    }

    /// Adds one round trip (`t0`, `t3` local; `t1`, `t2` from the reply). False if rejected.
    #[wasm_bindgen(js_name = addSample)]
    pub fn add_sample(&mut self, t0: f64, t1: f64, t2: f64, t3: f64) -> bool {
        self.0.add_sample(t0, t1, t2, t3).is_ok()
    }

    pub fn offset(&self) -> Option<f64> {
        self.0.offset()
    }

    #[wasm_bindgen(js_name = errorBound)]
    pub fn error_bound(&self) -> Option<f64> {
        self.0.error_bound()
    }

    #[wasm_bindgen(js_name = isStable)]
    pub fn is_stable(&self) -> bool {
        self.0.is_stable()
    }

    #[wasm_bindgen(js_name = sampleCount)]
    pub fn sample_count(&self) -> usize {
        self.0.sample_count()
    }

    /// Server time for a local time, once there is an estimate.
    #[wasm_bindgen(js_name = toServer)]
    pub fn to_server(&self, local: f64) -> Option<f64> {
        self.0.to_server(local)
    }
}

/// Drift controller for one player.
#[wasm_bindgen]
pub struct Drift(DriftController);

#[wasm_bindgen]
impl Drift {
    /// `capabilities`: `{canSetRate, rateStep, seekLatencyMs, positionGranularityMs}`.
    /// Without `config`, the defaults for these capabilities (`DriftConfig::for_player`: a
    /// tighter dead band for exact, continuous-rate players); with one, its fields over the
    /// plain defaults (`DriftConfig::default()`, as the server's serde reads it), so `{}` is the
    /// controller the test vectors were made with.
    #[wasm_bindgen(constructor)]
    pub fn new(
        #[wasm_bindgen(unchecked_param_type = "PlayerCapabilities")] capabilities: JsValue,
        #[wasm_bindgen(unchecked_optional_param_type = "Partial<DriftConfig>")] config: Option<JsValue>,
    ) -> Result<Drift, JsError> {
        let caps: PlayerCapabilities = required(&capabilities, "capabilities")?;
        let config: DriftConfig = optional(config)?.unwrap_or_else(|| DriftConfig::for_player(&caps));
        Ok(Drift(DriftController::new(config, caps)))
    }

    /// One control step: returns `{kind: "none"}`, `{kind: "rate", rate}` or `{kind: "seek", toMs}`.
    #[wasm_bindgen(unchecked_return_type = "Correction")]
    pub fn update(
        &mut self,
        now: f64,
        #[wasm_bindgen(js_name = localMs)] local_ms: f64,
        #[wasm_bindgen(js_name = expectedMs)] expected_ms: f64,
        #[wasm_bindgen(js_name = baseRate)] base_rate: f64,
    ) -> JsValue {
        sys::to_js(&self.0.update(now, local_ms, expected_ms, base_rate))
    }

    /// `idle`, `nudging`, `seeking` or `backoff`.
    #[wasm_bindgen(unchecked_return_type = "DriftMode")]
    pub fn mode(&self) -> JsValue {
        sys::to_js(&self.0.mode())
    }

    pub fn reset(&mut self) {
        self.0.reset();
    }
}

/// Encodes a request frame, `{"event", "data"?, "id"?}`; throws `UNKNOWN_EVENT` for an event the
/// room protocol does not define. The payload is the server's to validate (it answers
/// `INVALID_PAYLOAD`): the package carries no second copy of the request decoders.
#[wasm_bindgen(js_name = encodeRequest)]
pub fn encode_request(event: &str, data: JsValue, id: Option<u32>) -> Result<String, JsError> {
    if !REQUEST_EVENTS.contains(&event) {
        return Err(JsError::new(&sys::text(&["UNKNOWN_EVENT: unknown event \"", event, "\""])));
    }
    let data = if data.is_undefined() || data.is_null() { None } else { Some(Js(data)) };
    sys::stringify(&frame(event, data, id.map(u64::from)).0)
        .and_then(|t| t.as_string())
        .ok_or_else(|| JsError::new("not representable as JSON"))
}

/// Parses a server frame (a push or a reply) into a plain object, with exact floats; throws if
/// it is not a frame of this protocol (a room push with a malformed payload, a reply without an
/// id). Pushes of other protocols (the device admin protocol's) come back as they are.
#[wasm_bindgen(js_name = decodeServerFrame, unchecked_return_type = "{ event: string; data: any } | { id: number; ok: boolean; data?: any; error?: { code: string; message: string } }")]
pub fn decode_server_frame(text: &str) -> Result<JsValue, JsError> {
    let v = sys::parse(&JsValue::from_str(text)).ok_or_else(|| JsError::new("invalid JSON"))?;
    state::decode(&Js(v.clone())).map_err(|e| JsError::new(&e))?;
    Ok(v)
}

/// The playback clock itself, for JavaScript that keeps or predicts a timing vector (an
/// optimistic UI, a local preview): the core's transitions, each bumping `rev`.
///
/// ```js
/// const c = new PlaybackClock();
/// c.load({ id: "a", durationMs: 60000 }, 0, 500); // playing from t = 500
/// c.positionAt(1500); // 1000
/// ```
#[wasm_bindgen]
pub struct PlaybackClock(unisono_core::clock::PlaybackClock);

#[wasm_bindgen]
impl PlaybackClock {
    /// From a `playback` object (of a push or `UnisonoClient.playback`), or empty.
    #[wasm_bindgen(constructor)]
    pub fn new(
        #[wasm_bindgen(unchecked_optional_param_type = "Playback")] playback: Option<JsValue>,
    ) -> Result<PlaybackClock, JsError> {
        let p: Option<PlaybackState> = optional(playback)?;
        Ok(PlaybackClock(p.map(|p| p.clock).unwrap_or_default()))
    }

    /// Loads `song` at 0, paused, or playing from `startAt` (clamped to ≥ `now`).
    pub fn load(
        &mut self,
        #[wasm_bindgen(unchecked_param_type = "SongInput")] song: JsValue,
        now: f64,
        #[wasm_bindgen(js_name = startAt)] start_at: Option<f64>,
    ) -> Result<(), JsError> {
        self.0.load(required(&song, "song")?, now, start_at);
        Ok(())
    }

    /// Freezes the position at `now`; false (and no change) if already paused.
    pub fn pause(&mut self, now: f64) -> bool {
        self.0.pause(now)
    }

    /// Plays from the held position at `startAt` (≥ `now`); false if already playing.
    pub fn play(&mut self, now: f64, #[wasm_bindgen(js_name = startAt)] start_at: f64) -> bool {
        self.0.play(now, start_at)
    }

    pub fn seek(&mut self, #[wasm_bindgen(js_name = positionMs)] position_ms: f64, now: f64) {
        self.0.seek(position_ms, now);
    }

    /// Changes the rate from `now` on (the position stays continuous).
    #[wasm_bindgen(js_name = setRate)]
    pub fn set_rate(&mut self, rate: f64, now: f64) {
        self.0.set_rate(rate, now);
    }

    /// Position and play state at once (`update-playback`).
    pub fn set(
        &mut self,
        #[wasm_bindgen(js_name = positionMs)] position_ms: f64,
        #[wasm_bindgen(js_name = isPlaying)] is_playing: bool,
        now: f64,
    ) {
        self.0.set(position_ms, is_playing, now);
    }

    /// Position (ms) at server time `now`, clamped to the song.
    #[wasm_bindgen(js_name = positionAt)]
    pub fn position_at(&self, now: f64) -> f64 {
        self.0.position_at(now)
    }

    /// The timing vector as a `playback` object (`song`, `positionMs`, `serverTime`,
    /// `isPlaying`, `rate`, `rev`, `startedAt`, `pausedAt`).
    #[wasm_bindgen(unchecked_return_type = "Playback")]
    pub fn state(&self) -> JsValue {
        sys::to_js(&PlaybackState::from_clock(&self.0, false))
    }
}
