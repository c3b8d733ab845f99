//! Third-party player scripts (YouTube's IFrame API, Spotify's Web Playback SDK): add a
//! script tag once, then poll until what it defines appears. Shared by `youtube.rs` and
//! `spotify.rs`, which own everything provider-specific.

use js_sys::{Promise, Reflect};
use wasm_bindgen::JsValue;
use wasm_bindgen_futures::JsFuture;

/// How long a script and a new player may take before we give up.
pub const READY_TIMEOUT_MS: i32 = 15_000;
const POLL_MS: i32 = 50;

pub fn window() -> Result<web_sys::Window, String> {
    web_sys::window().ok_or_else(|| "no window".to_string())
}

/// `obj[key]`, `undefined` when missing.
pub fn get(obj: &JsValue, key: &str) -> JsValue {
    Reflect::get(obj, &JsValue::from_str(key)).unwrap_or(JsValue::UNDEFINED)
}

pub async fn sleep(ms: i32) {
    let p = Promise::new(&mut |resolve, _| {
        if let Some(w) = web_sys::window() {
            let _ = w.set_timeout_with_callback_and_timeout_and_arguments_0(&resolve, ms);
        }
    });
    let _ = JsFuture::from(p).await;
}

/// Polls `done` every 50 ms until it yields a value, for at most [`READY_TIMEOUT_MS`].
pub async fn wait_until<T>(mut done: impl FnMut() -> Option<T>) -> Option<T> {
    let mut waited = 0;
    loop {
        if let Some(v) = done() {
            return Some(v);
        }
        if waited >= READY_TIMEOUT_MS {
            return None;
        }
        sleep(POLL_MS).await;
        waited += POLL_MS;
    }
}

/// Adds `<script id=ID src=URL async>` to the body unless a tag with that id is there.
pub fn load_once(id: &str, url: &str) -> Result<(), String> {
    let document = window()?.document().ok_or("no document")?;
    if document.get_element_by_id(id).is_none() {
        let script = document.create_element("script").map_err(|_| "cannot create a script tag")?;
        script.set_id(id);
        let _ = script.set_attribute("src", url);
        let _ = script.set_attribute("async", "");
        document.body().ok_or("no body")?.append_child(&script).map_err(|_| "cannot add the script")?;
    }
    Ok(())
}
