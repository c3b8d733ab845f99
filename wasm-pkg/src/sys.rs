//! The few host facilities the client needs, bound so they work in a page, a worker and Node:
//! the monotonic clock (`performance.now()`, never `Date`), timers, randomness, the
//! `WebSocket`, promises, calling JavaScript functions, and values crossing to and from JavaScript as [`Js`] trees: JSON is parsed and
//! written by the host's `JSON.parse` / `JSON.stringify`, read and built by the core's
//! `tree` codec, so the wasm carries no serde_json.
//!
//! Declared here rather than taken from js-sys and web-sys: these ~30 imports are all the package
//! uses, and linking js-sys alone keeps ~3 KB of closure glue for its callback-taking methods in
//! the wasm whether they are called or not (docs/benchmarks.md, "npm package size").

use crate::prelude::*;

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
    #[wasm_bindgen(js_namespace = Math, js_name = exp)]
    fn math_exp(x: f64) -> f64;
    #[wasm_bindgen(catch, js_namespace = JSON, js_name = parse)]
    fn json_parse(text: &JsValue) -> Result<JsValue, JsValue>;
    #[wasm_bindgen(catch, js_namespace = JSON, js_name = stringify)]
    fn json_stringify(v: &JsValue) -> Result<JsValue, JsValue>;
    #[wasm_bindgen(js_namespace = Reflect, js_name = get)]
    fn reflect_get(target: &JsValue, key: &str) -> JsValue;
    #[wasm_bindgen(js_namespace = Reflect, js_name = set)]
    fn reflect_set(target: &JsValue, key: &str, value: &JsValue) -> bool;
    #[wasm_bindgen(js_namespace = Array, js_name = isArray)]
    fn is_array(v: &JsValue) -> bool;

    #[wasm_bindgen(js_name = Array)]
    type JsArray;
    #[wasm_bindgen(constructor, js_class = "Array")]
    fn new() -> JsArray;
    #[wasm_bindgen(method, getter)]
    fn length(this: &JsArray) -> u32;
    #[wasm_bindgen(method, indexing_getter)]
    fn at(this: &JsArray, i: u32) -> JsValue;
    #[wasm_bindgen(method)]
    fn push(this: &JsArray, v: &JsValue) -> u32;

    #[wasm_bindgen(js_name = Object)]
    type JsObject;
    #[wasm_bindgen(constructor, js_class = "Object")]
    fn new() -> JsObject;

    /// A JavaScript function, called with an array of arguments.
    pub type Function;
    #[wasm_bindgen(method, catch)]
    fn apply(this: &Function, this_arg: &JsValue, args: &JsValue) -> Result<JsValue, JsValue>;

    /// A `Promise`, made around a callback (`Promise::new`).
    #[wasm_bindgen(typescript_type = "Promise<any>")]
    pub type Promise;
    #[wasm_bindgen(constructor, js_class = "Promise")]
    pub fn new(executor: &mut dyn FnMut(Function, Function)) -> Promise;

    /// An `Error` with a message.
    #[wasm_bindgen(js_name = Error)]
    pub type Error;
    #[wasm_bindgen(constructor, js_class = "Error")]
    pub fn new(message: &str) -> Error;

    /// The host's `WebSocket` (the browser's, or Node's global one).
    pub type WebSocket;
    #[wasm_bindgen(constructor, catch, js_class = "WebSocket")]
    pub fn new(url: &str) -> Result<WebSocket, JsValue>;
    /// `send(data)`, with a string parsed or built on the JavaScript side: no copy through the
    /// wasm memory.
    #[wasm_bindgen(method, catch)]
    fn send(this: &WebSocket, data: &JsValue) -> Result<(), JsValue>;
    #[wasm_bindgen(method, catch)]
    pub fn close(this: &WebSocket) -> Result<(), JsValue>;
    #[wasm_bindgen(method, getter, js_name = readyState)]
    pub fn ready_state(this: &WebSocket) -> u16;
    #[wasm_bindgen(method, setter)]
    pub fn set_onopen(this: &WebSocket, f: &JsValue);
    #[wasm_bindgen(method, setter)]
    pub fn set_onmessage(this: &WebSocket, f: &JsValue);
    #[wasm_bindgen(method, setter)]
    pub fn set_onclose(this: &WebSocket, f: &JsValue);
    #[wasm_bindgen(method, setter)]
    pub fn set_onerror(this: &WebSocket, f: &JsValue);
}

/// `WebSocket.OPEN`.
pub const OPEN: u16 = 1;

/// Local monotonic time in ms (`performance.now()`): immune to wall-clock jumps.
pub fn now() -> f64 {
    performance_now()
}

/// `e^x` by the host's `Math.exp` (libm's is 0.5 KB of the package; the client's smoothing does
/// not need bit-exact results). Native builds (unit tests) use libm's.
#[cfg(target_arch = "wasm32")]
pub fn exp(x: f64) -> f64 {
    math_exp(x)
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
        let v = reflect_get(&self.0, key);
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
        self.0.is_object() && !is_array(&self.0)
    }
    fn length(&self) -> Option<usize> {
        is_array(&self.0).then(|| self.0.unchecked_ref::<JsArray>().length() as usize)
    }
    fn element(&self, i: usize) -> Option<Self> {
        Some(Js(self.0.unchecked_ref::<JsArray>().at(i as u32)))
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
        Js(JsArray::new().into())
    }
    fn push(&mut self, v: Self) {
        self.0.unchecked_ref::<JsArray>().push(&v.0);
    }
    fn new_object() -> Self {
        Js(JsObject::new().into())
    }
    fn insert(&mut self, key: &str, v: Self) {
        reflect_set(&self.0, key, &v.0);
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
    json_stringify(v).ok()
}

/// Sends a JavaScript string on the socket, as it is.
pub fn send(ws: &WebSocket, text: &JsValue) {
    let _ = ws.send(text);
}

/// `v[key]` of an object or function; `undefined` for anything else or a missing key.
pub fn field(v: &JsValue, key: &str) -> JsValue {
    if v.is_object() || v.is_function() { reflect_get(v, key) } else { JsValue::UNDEFINED }
}

/// Sets `v[key]` (an object's).
#[cfg(feature = "js")]
pub fn set_field(v: &JsValue, key: &str, value: &JsValue) {
    if v.is_object() {
        reflect_set(v, key, value);
    }
}

/// A JavaScript array of `items`.
pub fn array(items: &[JsValue]) -> JsValue {
    let a = JsArray::new();
    for v in items {
        a.push(v);
    }
    a.into()
}

/// `f(...args)` with `this` = `this_arg`; `undefined` if `f` is not a function or throws.
pub fn call_function(f: &JsValue, this_arg: &JsValue, args: &[JsValue]) -> JsValue {
    if !f.is_function() {
        return JsValue::UNDEFINED;
    }
    f.unchecked_ref::<Function>().apply(this_arg, &array(args)).unwrap_or(JsValue::UNDEFINED)
}

/// `obj[method](...args)`; `undefined` if there is no such method or it throws.
pub fn call_method(obj: &JsValue, method: &str, args: &[JsValue]) -> JsValue {
    call_function(&field(obj, method), obj, args)
}
