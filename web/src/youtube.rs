//! YouTube songs in the room page: loads YouTube's IFrame Player API once, creates a `YT.Player`
//! inside the page's video box and resolves when the player is ready, for the npm package's
//! YouTube adapter (`wasm-pkg/js/adapters.js`, the same one npm users get). Nothing YouTube-specific lives anywhere
//! else in the app: `app.rs` picks this player when the room's song is a YouTube one.

use std::{cell::Cell, rc::Rc};

use js_sys::{Array, Function, Reflect};
use wasm_bindgen::{JsCast, JsValue, closure::Closure};

use unisono::js_object;

use crate::script::{get, load_once, wait_until, window};

/// YouTube's loader script; it defines `window.YT` and then `YT.Player`.
pub const API_URL: &str = "https://www.youtube.com/iframe_api";
/// The page element the players go in (rendered by `app.rs`).
pub const BOX_ID: &str = "video";

/// `YT.Player`, once the API has loaded (adds the script tag the first time).
async fn player_constructor() -> Result<Function, String> {
    let window = window()?;
    load_once("yt-api", API_URL)?;
    wait_until(|| get(&get(&window, "YT"), "Player").dyn_into::<Function>().ok())
        .await
        .ok_or_else(|| "the YouTube player API did not load".to_string())
}

/// A ready `YT.Player` in a fresh element inside the video box (the box itself stays Yew's).
pub async fn create() -> Result<JsValue, String> {
    let ctor = player_constructor().await?;
    let document = window()?.document().ok_or("no document")?;
    let video_box = document.get_element_by_id(BOX_ID).ok_or("no video box on the page")?;
    let host = document.create_element("div").map_err(|_| "cannot create the player element")?;
    video_box.append_child(&host).map_err(|_| "cannot add the player element")?;

    let ready = Rc::new(Cell::new(false));
    let on_ready = {
        let ready = ready.clone();
        Closure::once_into_js(move |_event: JsValue| ready.set(true))
    };
    let vars =
        js_object(&[("playsinline", 1.into()), ("controls", 0.into()), ("disablekb", 1.into()), ("rel", 0.into())]);
    let opts = js_object(&[
        ("width", "100%".into()),
        ("height", "100%".into()),
        ("playerVars", vars),
        ("events", js_object(&[("onReady", on_ready)])),
    ]);
    let created = Reflect::construct(&ctor, &Array::of2(&host, &opts)).map_err(|_| "YT.Player could not be created");
    let result = match created {
        Ok(player) => {
            wait_until(|| ready.get().then_some(())).await.map(|_| player).ok_or("the YouTube player did not get ready")
        }
        Err(e) => Err(e),
    };
    if result.is_err() {
        host.remove();
    }
    result.map_err(str::to_string)
}

/// Removes every player from the video box (when the room moves on to a non-YouTube song).
pub fn clear() {
    if let Some(b) = web_sys::window().and_then(|w| w.document()).and_then(|d| d.get_element_by_id(BOX_ID)) {
        b.set_inner_html("");
    }
}
