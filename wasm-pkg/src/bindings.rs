//! The npm API over the core's math (feature `js`): a thin layer where every function converts
//! arguments, calls the core and converts the result.
//!
//! - [`position_at`] (`positionAt`): position of a playback state at a server time.
//! - [`Estimator`]: clock-offset estimation from `time-sync` round trips.
//! - [`Drift`]: the drift controller for a player with given capabilities.
//! - [`encode_request`] / [`decode_server_frame`]: protocol frames, validated by the core.
//! - [`check_vectors`]: recomputes the core's test vectors (proves identical math in this build).

use serde::Serialize as _;
use unisono_core::{
    drift::{DriftConfig, DriftController, PlayerCapabilities},
    estimator::{ClockOffsetEstimator, EstimatorConfig},
    protocol::{PlaybackState, Request},
    vectors,
};
use wasm_bindgen::prelude::*;

fn js_err(e: impl std::fmt::Display) -> JsError {
    JsError::new(&e.to_string())
}

/// Position (ms) of a playback state (`playback` object of any push) at server time `now`.
#[wasm_bindgen(js_name = positionAt)]
pub fn position_at(playback: JsValue, now: f64) -> Result<f64, JsError> {
    let state: PlaybackState = serde_wasm_bindgen::from_value(playback).map_err(js_err)?;
    Ok(state.clock.position_at(now))
}

/// NTP-style clock-offset estimator (`offset = server − local`).
#[wasm_bindgen]
pub struct Estimator(ClockOffsetEstimator);

#[wasm_bindgen]
impl Estimator {
    /// A new estimator; `config` (optional) overrides defaults, e.g. `{window: 32}`.
    #[wasm_bindgen(constructor)]
    pub fn new(config: JsValue) -> Result<Estimator, JsError> {
        let config: EstimatorConfig = if config.is_undefined() || config.is_null() {
            EstimatorConfig::default()
        } else {
            serde_wasm_bindgen::from_value(config).map_err(js_err)?
        };
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
    /// `capabilities`: `{canSetRate, rateStep, seekLatencyMs, positionGranularityMs}`;
    /// `config` (optional) overrides the defaults, which depend on the capabilities (a tighter
    /// dead band for exact, continuous-rate players: `DriftConfig::for_player`).
    #[wasm_bindgen(constructor)]
    pub fn new(capabilities: JsValue, config: JsValue) -> Result<Drift, JsError> {
        let caps: PlayerCapabilities = serde_wasm_bindgen::from_value(capabilities).map_err(js_err)?;
        let config: DriftConfig = if config.is_undefined() || config.is_null() {
            DriftConfig::for_player(&caps)
        } else {
            serde_wasm_bindgen::from_value(config).map_err(js_err)?
        };
        Ok(Drift(DriftController::new(config, caps)))
    }

    /// One control step: returns `{kind: "none"}`, `{kind: "rate", rate}` or `{kind: "seek", toMs}`.
    pub fn update(&mut self, now: f64, local_ms: f64, expected_ms: f64, base_rate: f64) -> Result<JsValue, JsError> {
        let c = self.0.update(now, local_ms, expected_ms, base_rate);
        serde_wasm_bindgen::to_value(&c).map_err(js_err)
    }

    /// `idle`, `nudging`, `seeking` or `backoff`.
    pub fn mode(&self) -> Result<JsValue, JsError> {
        serde_wasm_bindgen::to_value(&self.0.mode()).map_err(js_err)
    }

    pub fn reset(&mut self) {
        self.0.reset();
    }
}

/// Encodes a request frame after validating it as the server would; throws with the server's
/// error code (e.g. `INVALID_PAYLOAD: …`) if it is not valid.
#[wasm_bindgen(js_name = encodeRequest)]
pub fn encode_request(event: &str, data: JsValue, id: Option<u32>) -> Result<String, JsError> {
    let data: serde_json::Value = if data.is_undefined() {
        serde_json::Value::Null
    } else {
        serde_wasm_bindgen::from_value(data).map_err(js_err)?
    };
    let req = Request::parse(event, data).map_err(js_err)?;
    serde_json::to_string(&req.to_frame(id.map(u64::from))).map_err(js_err)
}

/// Parses a server frame (a push or a reply) into a plain object, with exact floats.
#[wasm_bindgen(js_name = decodeServerFrame)]
pub fn decode_server_frame(text: &str) -> Result<JsValue, JsError> {
    let v: serde_json::Value = serde_json::from_str(text).map_err(js_err)?;
    v.serialize(&serde_wasm_bindgen::Serializer::json_compatible()).map_err(js_err)
}

/// Recomputes every test vector in `text` (JSON lines); returns the failures (empty = identical).
#[wasm_bindgen(js_name = checkVectors)]
pub fn check_vectors(text: &str) -> Vec<String> {
    text.lines()
        .enumerate()
        .filter_map(|(i, line)| match serde_json::from_str::<vectors::Case>(line) {
            Ok(case) => vectors::check(&case).err().map(|e| format!("case {i}: {e}")),
            Err(e) => Some(format!("case {i}: unreadable: {e}")),
        })
        .collect()
}
