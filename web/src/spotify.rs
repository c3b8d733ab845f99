//! Spotify songs in the room page: loads Spotify's Web Playback SDK once and creates a
//! `Spotify.Player` (this page becomes a Spotify Connect device) with the user's OAuth token,
//! for the npm package's Spotify adapter (`wasm-pkg/js/adapters.js`), which starts each song on that device through the
//! Web API and keeps it on the room's clock (seek-only tier). The token (a Premium account's,
//! scope `streaming`) is pasted by the user and kept in localStorage; nothing else in the app is
//! Spotify-specific: `app.rs` picks this player when the song is a Spotify one and a token is
//! there.

use std::{cell::RefCell, rc::Rc};

use js_sys::{Array, Function, Reflect};
use wasm_bindgen::{JsCast, JsValue, closure::Closure};

use unisono::js_object;

use crate::script::{get, load_once, wait_until, window};

/// Spotify's SDK script; it defines `window.Spotify.Player` and then calls
/// `window.onSpotifyWebPlaybackSDKReady`.
pub const SDK_URL: &str = "https://sdk.scdn.co/spotify-player.js";
/// localStorage key of the pasted token.
const TOKEN_KEY: &str = "unisono.spotifyToken";

fn storage() -> Option<web_sys::Storage> {
    web_sys::window()?.local_storage().ok()?
}

/// The saved token, if any.
pub fn saved_token() -> Option<String> {
    storage()?.get_item(TOKEN_KEY).ok()?.filter(|t| !t.trim().is_empty())
}

/// Saves (`Some`) or forgets (`None`) the token.
pub fn save_token(token: Option<&str>) {
    if let Some(s) = storage() {
        let _ = match token {
            Some(t) => s.set_item(TOKEN_KEY, t.trim()),
            None => s.remove_item(TOKEN_KEY),
        };
    }
}

/// `Spotify.Player`, once the SDK has loaded (adds the script tag the first time).
async fn player_constructor() -> Result<Function, String> {
    let window = window()?;
    // The SDK calls this when it is ready and throws if it is missing.
    if !get(&window, "onSpotifyWebPlaybackSDKReady").is_function() {
        let noop = Function::new_no_args("");
        let _ = Reflect::set(&window, &"onSpotifyWebPlaybackSDKReady".into(), &noop);
    }
    load_once("spotify-sdk", SDK_URL)?;
    wait_until(|| get(&get(&window, "Spotify"), "Player").dyn_into::<Function>().ok())
        .await
        .ok_or_else(|| "the Spotify Web Playback SDK did not load".to_string())
}

/// A connected `Spotify.Player` and its device id (from its `ready` event).
pub async fn create(token: &str) -> Result<(JsValue, String), String> {
    let ctor = player_constructor().await?;
    let token = token.to_owned();
    let get_token = Closure::<dyn FnMut(Function)>::new(move |cb: Function| {
        let _ = cb.call1(&JsValue::NULL, &JsValue::from_str(&token));
    });
    let opts =
        js_object(&[("name", "Unisono".into()), ("volume", 0.8.into()), ("getOAuthToken", get_token.as_ref().clone())]);
    // The SDK keeps calling getOAuthToken for the player's life.
    get_token.forget();
    let player =
        Reflect::construct(&ctor, &Array::of1(&opts)).map_err(|_| "Spotify.Player could not be created".to_string())?;

    // `Ok(device id)` on `ready`, `Err(message)` on any of the SDK's error events.
    let outcome: Rc<RefCell<Option<Result<String, String>>>> = Rc::default();
    let add_listener = get(&player, "addListener").dyn_into::<Function>().map_err(|_| "not a Spotify.Player")?;
    let listen = |event: &str, ok: bool| {
        let outcome = outcome.clone();
        let what = event.to_owned();
        let cb = Closure::<dyn FnMut(JsValue)>::new(move |e: JsValue| {
            let r = if ok {
                get(&e, "device_id").as_string().ok_or_else(|| "ready without a device id".to_string())
            } else {
                Err(format!("{what}: {}", get(&e, "message").as_string().unwrap_or_default()))
            };
            outcome.borrow_mut().get_or_insert(r);
        });
        let _ = add_listener.call2(&player, &event.into(), cb.as_ref());
        cb.forget();
    };
    listen("ready", true);
    for e in ["initialization_error", "authentication_error", "account_error"] {
        listen(e, false);
    }
    if let Ok(connect) = get(&player, "connect").dyn_into::<Function>() {
        let _ = connect.call0(&player);
    }
    let result = wait_until(|| outcome.borrow_mut().take())
        .await
        .unwrap_or_else(|| Err("the Spotify player did not get ready".to_string()));
    match result {
        Ok(device) => Ok((player, device)),
        Err(e) => {
            disconnect(&player);
            Err(e)
        }
    }
}

/// Disconnects a player made by [`create`] (when the room moves on to another provider).
pub fn disconnect(player: &JsValue) {
    if let Ok(f) = get(player, "disconnect").dyn_into::<Function>() {
        let _ = f.call0(player);
    }
}
