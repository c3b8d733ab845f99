//! The few host facilities the client needs, bound so they work in a page, a worker and Node:
//! the monotonic clock (`performance.now()`, never `Date`), timers and randomness.

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
