//! The few host facilities the client needs, bound so they work in a page, a worker and Node:
//! the monotonic clock (`performance.now()`, never `Date`), timers, randomness, sending on a
//! socket, and values crossing to and from JavaScript as [`Js`] trees: JSON is parsed and
//! written by the host's `JSON.parse` / `JSON.stringify`, read and built by the core's
//! `tree` codec, so the wasm carries no serde_json.

use unisono_core::tree::{FromTree, ToTree, Tree, TreeError};
use wasm_bindgen::{JsCast, prelude::*};

#[wasm_bindgen]
extern "C" {
    #[wasm_bindgen(js_namespace = performance, js_name = now)]
    fn performance_now() -> f64;
    #[wasm_bindgen(js_name = setTimeout)]
    fn set_timeout_js(f: &JsValue, ms: f64) -> JsValue;
    #[wasm_bindgen(js_namespace = Math, js_name = random)]
    fn math_random() -> f64;
    #[wasm_bindgen(catch, js_namespace = JSON, js_name = parse)]
    fn json_parse(text: &JsValue) -> Result<JsValue, JsValue>;
    #[wasm_bindgen(js_namespace = Promise, js_name = allSettled)]
    fn promise_all_settled(promises: &js_sys::Array) -> JsValue;
    /// A promise, for `then` with a plain function.
    type Thenable;
    #[wasm_bindgen(method)]
    fn then(this: &Thenable, f: &JsValue) -> JsValue;
    /// Anything with `send(data)`: a `WebSocket` seen through `unchecked_ref`, so a string
    /// parsed or built on the JavaScript side is sent without a copy into the wasm memory.
    type Sender;
    #[wasm_bindgen(method, catch)]
    fn send(this: &Sender, data: &JsValue) -> Result<(), JsValue>;
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
    set_timeout_boxed(ms, Box::new(f));
}

/// One closure type for every timer: wasm-bindgen's glue is per closure type.
fn set_timeout_boxed(ms: f64, f: Box<dyn FnOnce()>) {
    let cb = Closure::once_into_js(f);
    set_timeout_js(cb.unchecked_ref::<JsValue>(), ms.max(0.0));
}

/// Calls `f` once `p` settles: `Ok(value)` or `Err(reason)`. Through `Promise.allSettled`, so
/// one closure serves both outcomes and is always called, hence freed (a pair of `then`
/// closures would leave the uncalled one behind).
pub fn on_settled(p: &JsValue, f: impl FnOnce(Result<JsValue, JsValue>) + 'static) {
    on_settled_boxed(p, Box::new(f));
}

fn on_settled_boxed(p: &JsValue, f: Box<dyn FnOnce(Result<JsValue, JsValue>)>) {
    let cb = Closure::once_into_js(move |results: JsValue| {
        let outcome = js_sys::Reflect::get_u32(&results, 0).unwrap_or(JsValue::UNDEFINED);
        let get = |k: &str| js_sys::Reflect::get(&outcome, &JsValue::from_str(k)).unwrap_or(JsValue::UNDEFINED);
        if get("status").as_string().as_deref() == Some("fulfilled") {
            f(Ok(get("value")))
        } else {
            f(Err(get("reason")))
        }
    });
    let all = promise_all_settled(&js_sys::Array::of1(p));
    let _ = all.unchecked_ref::<Thenable>().then(&cb);
}

/// A plain JavaScript object of `pairs` (an `undefined` value leaves its key out of the JSON).
pub fn object(pairs: &[(&str, JsValue)]) -> JsValue {
    let mut o = Js::new_object();
    for (k, v) in pairs {
        o.insert(k, Js(v.clone()));
    }
    o.0
}

/// `parts` joined (`[..].concat()` costs a generic join in the wasm).
pub fn text(parts: &[&str]) -> String {
    let mut s = String::new();
    for p in parts {
        s.push_str(p);
    }
    s
}

/// `n` in decimal (without `core::fmt`).
pub fn decimal(mut n: u64) -> String {
    let mut digits = Vec::new();
    loop {
        digits.push(b'0' + (n % 10) as u8);
        n /= 10;
        if n == 0 {
            break;
        }
    }
    digits.iter().rev().map(|&d| char::from(d)).collect()
}

/// A JavaScript value as a core [`Tree`]: the client reads what `JSON.parse` built and builds
/// what `JSON.stringify` writes through `unisono_core::tree`, so the wasm carries no JSON
/// parser or formatter of its own (docs/ARCHITECTURE.md, "Two codecs").
#[derive(Debug, Clone, PartialEq)]
pub struct Js(pub JsValue);

impl Tree for Js {
    fn field(&self, key: &str) -> Option<Self> {
        if !self.0.is_object() {
            return None;
        }
        let v = js_sys::Reflect::get(&self.0, &JsValue::from_str(key)).ok()?;
        if v.is_undefined() { None } else { Some(Js(v)) }
    }
    fn number(&self) -> Option<f64> {
        self.0.as_f64().filter(|v| v.is_finite())
    }
    fn string(&self) -> Option<String> {
        self.0.as_string()
    }
    fn boolean(&self) -> Option<bool> {
        self.0.as_bool()
    }
    fn is_null(&self) -> bool {
        self.0.is_null()
    }
    fn is_object(&self) -> bool {
        self.0.is_object() && !js_sys::Array::is_array(&self.0)
    }
    fn length(&self) -> Option<usize> {
        js_sys::Array::is_array(&self.0).then(|| self.0.unchecked_ref::<js_sys::Array>().length() as usize)
    }
    fn element(&self, i: usize) -> Option<Self> {
        Some(Js(self.0.unchecked_ref::<js_sys::Array>().get(i as u32)))
    }
    fn null() -> Self {
        Js(JsValue::NULL)
    }
    fn from_number(v: f64) -> Self {
        Js(JsValue::from_f64(v))
    }
    fn from_string(v: &str) -> Self {
        Js(JsValue::from_str(v))
    }
    fn from_bool(v: bool) -> Self {
        Js(JsValue::from_bool(v))
    }
    fn new_array() -> Self {
        Js(js_sys::Array::new().into())
    }
    fn push(&mut self, v: Self) {
        self.0.unchecked_ref::<js_sys::Array>().push(&v.0);
    }
    fn new_object() -> Self {
        Js(js_sys::Object::new().into())
    }
    fn insert(&mut self, key: &str, v: Self) {
        let _ = js_sys::Reflect::set(&self.0, &JsValue::from_str(key), &v.0);
    }
}

/// A Rust value as a plain JavaScript one (the shape its serde derive writes).
pub fn to_js<V: ToTree + ?Sized>(v: &V) -> JsValue {
    v.to_tree::<Js>().0
}

/// A JavaScript value read as `V`; `None` for `undefined` and `null`.
pub fn from_js<V: FromTree>(v: &JsValue) -> Result<Option<V>, TreeError> {
    if v.is_undefined() || v.is_null() {
        return Ok(None);
    }
    V::from_tree(&Js(v.clone())).map(Some)
}

/// `JSON.parse(text)`, on a JavaScript string as it came (no copy through the wasm memory).
pub fn parse(text: &JsValue) -> Option<JsValue> {
    json_parse(text).ok()
}

/// `JSON.stringify(v)`; `None` for what it rejects (a `BigInt`, a cycle).
pub fn stringify(v: &JsValue) -> Option<JsValue> {
    js_sys::JSON::stringify(v).ok().map(JsValue::from)
}

/// Sends a JavaScript string on the socket, as it is.
pub fn send(ws: &web_sys::WebSocket, text: &JsValue) {
    let _ = ws.unchecked_ref::<Sender>().send(text);
}
