//! The few host facilities the client needs, bound so they work in a page, a worker and Node:
//! the monotonic clock (`performance.now()`, never `Date`), timers, randomness, and values
//! crossing to JavaScript as JSON text (`JSON.parse` / `JSON.stringify`), so that the wasm
//! carries one serde path (serde_json over text) and no second (de)serializer.

use serde::Serialize;
#[cfg(feature = "js")]
use serde::de::DeserializeOwned;
use wasm_bindgen::{JsCast, prelude::*};

#[wasm_bindgen]
extern "C" {
    #[wasm_bindgen(js_namespace = performance, js_name = now)]
    fn performance_now() -> f64;
    #[wasm_bindgen(js_name = setTimeout)]
    fn set_timeout_js(f: &JsValue, ms: f64) -> JsValue;
    #[wasm_bindgen(js_namespace = Math, js_name = random)]
    fn math_random() -> f64;
}

/// Local monotonic time in ms (`performance.now()`): immune to wall-clock jumps.
pub fn now() -> f64 {
    performance_now()
}

/// A uniform random number in `[0, 1)`.
pub fn random() -> f64 {
    math_random()
}

/// Runs `f` once after `ms`. Timers are never cleared: callers hold a generation counter and the
/// callback returns early when it is stale, so a fired closure is always freed.
pub fn set_timeout(ms: f64, f: impl FnOnce() + 'static) {
    let cb = Closure::once_into_js(f);
    set_timeout_js(cb.unchecked_ref::<JsValue>(), ms.max(0.0));
}

/// A plain JavaScript object of `pairs` (an `undefined` value leaves its key out of the JSON).
pub fn object(pairs: &[(&str, JsValue)]) -> JsValue {
    let o = js_sys::Object::new();
    for (k, v) in pairs {
        let _ = js_sys::Reflect::set(&o, &JsValue::from_str(k), v);
    }
    o.into()
}

/// A Rust value as a plain JavaScript one. Floats are exact: serde_json writes the shortest text
/// that reads back to the same `f64`, and `JSON.parse` rounds correctly.
pub fn to_js<T: Serialize + ?Sized>(v: &T) -> JsValue {
    serde_json::to_string(v).ok().and_then(|t| js_sys::JSON::parse(&t).ok()).unwrap_or(JsValue::NULL)
}

/// A JavaScript value as JSON text; `None` for `undefined` and `null`. Fails on what
/// `JSON.stringify` rejects (a `BigInt`, a cycle).
#[cfg(feature = "js")]
pub fn json_text(v: &JsValue) -> Result<Option<String>, String> {
    if v.is_undefined() || v.is_null() {
        return Ok(None);
    }
    let s = js_sys::JSON::stringify(v).map_err(|_| "not representable as JSON".to_owned())?;
    Ok(s.as_string())
}

/// A JavaScript value read as `T` (through its JSON text); `None` for `undefined` and `null`.
#[cfg(feature = "js")]
pub fn from_js<T: DeserializeOwned>(v: &JsValue) -> Result<Option<T>, String> {
    match json_text(v)? {
        None => Ok(None),
        Some(t) => serde_json::from_str(&t).map(Some).map_err(|e| e.to_string()),
    }
}
