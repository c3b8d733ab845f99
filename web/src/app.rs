//! The app's one stateful component. It owns the shared [`Client`] (connect, reconnect, room
//! state), a [`PlayerSync`] bound to the page's `<audio>` element (or to a YouTube player for
//! YouTube songs, `youtube.rs`), the route (`/` or
//! `/r/CODE`, kept in the address bar) and the form inputs; it re-renders on every client event
//! and five times a second for the live figures. Rendering is in `views.rs`.

use std::{cell::RefCell, future::Future, rc::Rc};

use unisono::{
    client::{Client, ClientError, ConnectionState},
    player::{self, MediaAdapter, PlayerSync},
};
use unisono_core::song::Provider;
use wasm_bindgen::{JsCast, JsValue, closure::Closure};
use wasm_bindgen_futures::spawn_local;
use web_sys::HtmlMediaElement;
use yew::prelude::*;

use crate::{spotify, views, youtube};

fn notify_handle(notice: &UseStateHandle<Option<String>>) -> Callback<String> {
    let notice = notice.clone();
    Callback::from(move |m: String| notice.set(Some(m)))
}

/// Where the app is.
#[derive(Debug, Clone, PartialEq)]
pub enum Route {
    Home,
    Room(String),
}

impl Route {
    fn from_path(path: &str) -> Route {
        match path.strip_prefix("/r/").map(|c| c.trim_matches('/').trim()) {
            Some(code) if !code.is_empty() => Route::Room(code.to_uppercase()),
            _ => Route::Home,
        }
    }

    fn path(&self) -> String {
        match self {
            Route::Home => "/".into(),
            Route::Room(code) => format!("/r/{code}"),
        }
    }
}

fn location() -> Option<web_sys::Location> {
    web_sys::window().map(|w| w.location())
}

/// `ws(s)://<this host>/ws`: the server that served the page (also the admin dashboard's).
pub(crate) fn ws_url() -> String {
    let loc = location();
    let host = loc.as_ref().and_then(|l| l.host().ok()).unwrap_or_else(|| "127.0.0.1:8080".into());
    let secure = loc.and_then(|l| l.protocol().ok()).is_some_and(|p| p == "https:");
    format!("{}://{host}/ws", if secure { "wss" } else { "ws" })
}

/// Which player the room's song plays on in this page.
#[derive(Clone, PartialEq)]
enum Player {
    /// The page's `<audio>` element (URL songs, and Spotify songs without a token: shown only).
    Audio,
    YouTube,
    /// This page as a Spotify Connect device, with the saved OAuth token.
    Spotify(String),
}

/// Everything the views read and the callbacks they may fire.
#[derive(Clone)]
pub struct Ctx {
    pub client: Client,
    pub sync: Option<PlayerSync>,
    pub route: Route,
    pub notice: Option<String>,
    /// Seek bar value while the host drags it.
    pub drag: UseStateHandle<Option<f64>>,
    pub name: UseStateHandle<String>,
    /// The saved Spotify OAuth token (`spotify.rs`), set and forgotten from the room view.
    pub spotify_token: UseStateHandle<Option<String>>,
    pub code: UseStateHandle<String>,
    pub link: UseStateHandle<String>,
    pub go: Callback<Route>,
    pub notify: Callback<String>,
}

impl Ctx {
    /// Runs a request; its error (with the server's code) is shown as a notice.
    pub fn run<T>(&self, fut: impl Future<Output = Result<T, ClientError>> + 'static) {
        let notify = self.notify.clone();
        spawn_local(async move {
            if let Err(e) = fut.await {
                notify.emit(e.to_string());
            }
        });
    }
}

#[function_component(App)]
pub fn app() -> Html {
    let client = use_memo((), |_| Client::new());
    let force = use_force_update();
    let route = use_state(|| Route::from_path(&location().and_then(|l| l.pathname().ok()).unwrap_or_default()));
    let sync = use_state(|| None::<PlayerSync>);
    let audio = use_node_ref();
    let notice = use_state(|| None::<String>);
    let drag = use_state(|| None::<f64>);
    let name = use_state(String::new);
    let code = use_state(String::new);
    let link = use_state(String::new);
    let spotify_token = use_state(spotify::saved_token);
    let joining = use_mut_ref(|| None::<String>);

    // Connect once; re-render on client events and on a 200 ms ticker; follow back/forward.
    {
        let client = (*client).clone();
        let force = force.clone();
        let route = route.clone();
        use_effect_with((), move |_| {
            let f = force.clone();
            let listener = client.subscribe(move |_| f.force_update());
            let connect = client.connect(&ws_url());
            spawn_local(async move {
                let _ = connect.await;
            });
            let tick = Closure::<dyn FnMut()>::new(move || force.force_update());
            let window = web_sys::window();
            let interval = window.as_ref().and_then(|w| {
                w.set_interval_with_callback_and_timeout_and_arguments_0(tick.as_ref().unchecked_ref(), 200).ok()
            });
            let popstate = Closure::<dyn FnMut()>::new(move || {
                route.set(Route::from_path(&location().and_then(|l| l.pathname().ok()).unwrap_or_default()));
            });
            if let Some(w) = &window {
                w.set_onpopstate(Some(popstate.as_ref().unchecked_ref()));
            }
            move || {
                client.unsubscribe(listener);
                if let (Some(w), Some(id)) = (&window, interval) {
                    w.clear_interval_with_handle(id);
                    w.set_onpopstate(None);
                }
                drop((tick, popstate));
            }
        });
    }

    // Drive a player from the room's clock: the <audio> element, a YouTube player in the video
    // box while the song is a YouTube one, or this page as a Spotify device while the song is a
    // Spotify one and a token is saved. A new player gets a new PlayerSync (its drift controller
    // is tuned to the player's capabilities).
    let provider = client.with_room(|r| r.and_then(|r| r.playback.clock.song.as_ref().map(|s| s.provider)));
    let youtube = provider == Some(Provider::Youtube);
    let player = match provider {
        Some(Provider::Youtube) => Player::YouTube,
        Some(Provider::Spotify) => (*spotify_token).clone().map_or(Player::Audio, Player::Spotify),
        _ => Player::Audio,
    };
    {
        let client = (*client).clone();
        let audio = audio.clone();
        let sync = sync.clone();
        let notify = notify_handle(&notice);
        use_effect_with(player, move |player| {
            let current: Rc<RefCell<Option<PlayerSync>>> = Rc::default();
            let cancelled = Rc::new(std::cell::Cell::new(false));
            let bind = {
                let (current, sync, client) = (current.clone(), sync.clone(), client.clone());
                move |adapter: Box<dyn MediaAdapter>| {
                    let s = PlayerSync::new(&client, adapter);
                    s.start();
                    *current.borrow_mut() = Some(s.clone());
                    sync.set(Some(s));
                }
            };
            let spotify_player: Rc<RefCell<Option<JsValue>>> = Rc::default();
            if *player != Player::Audio
                && let Some(el) = audio.cast::<HtmlMediaElement>()
            {
                let _ = el.pause();
            }
            if *player != Player::YouTube {
                youtube::clear();
            }
            match player.clone() {
                Player::YouTube => {
                    let cancelled = cancelled.clone();
                    spawn_local(async move {
                        match youtube::create().await {
                            Ok(player) if !cancelled.get() => bind(player::youtube(&player)),
                            Ok(_) => {}
                            Err(e) => notify.emit(format!("YouTube: {e}")),
                        }
                    });
                }
                Player::Spotify(token) => {
                    let (cancelled, spotify_player) = (cancelled.clone(), spotify_player.clone());
                    spawn_local(async move {
                        match spotify::create(&token).await {
                            Ok((player, _)) if cancelled.get() => spotify::disconnect(&player),
                            Ok((player, device)) => {
                                *spotify_player.borrow_mut() = Some(player.clone());
                                let web_api =
                                    unisono::js_object(&[("deviceId", device.into()), ("token", token.into())]);
                                bind(player::spotify(&player, &web_api));
                            }
                            Err(e) => notify.emit(format!("Spotify: {e}")),
                        }
                    });
                }
                Player::Audio => {
                    if let Some(Ok(adapter)) = audio.cast::<HtmlMediaElement>().map(|el| player::html_media(&el)) {
                        bind(adapter);
                    }
                }
            }
            move || {
                cancelled.set(true);
                if let Some(s) = current.borrow_mut().take() {
                    s.stop();
                }
                if let Some(p) = spotify_player.borrow_mut().take() {
                    spotify::disconnect(&p);
                }
            }
        });
    }

    let go = {
        let route = route.clone();
        Callback::from(move |r: Route| {
            if let Some(h) = web_sys::window().and_then(|w| w.history().ok()) {
                let _ = h.push_state_with_url(&JsValue::NULL, "", Some(&r.path()));
            }
            route.set(r);
        })
    };
    let notify = notify_handle(&notice);

    // On `/r/CODE`, join that room once connected (deep links, reloads, new sessions).
    let open = client.connection() == ConnectionState::Open;
    let in_code = client.with_room(|r| r.map(|r| r.info.code.clone()));
    {
        let client = (*client).clone();
        let notify = notify.clone();
        let name = (*name).clone();
        let joining = joining.clone();
        use_effect_with(((*route).clone(), open, in_code), move |(route, open, in_code)| {
            if let (Route::Room(code), true) = (route, open)
                && in_code.as_deref() != Some(code.as_str())
                && joining.borrow().as_deref() != Some(code.as_str())
            {
                *joining.borrow_mut() = Some(code.clone());
                let fut = client.join_room(code, (!name.trim().is_empty()).then_some(name.trim()));
                let joining: Rc<RefCell<Option<String>>> = joining.clone();
                spawn_local(async move {
                    if let Err(e) = fut.await {
                        notify.emit(format!("could not join: {e}"));
                    }
                    *joining.borrow_mut() = None;
                });
            }
        });
    }

    let ctx = Ctx {
        client: (*client).clone(),
        sync: (*sync).clone(),
        route: (*route).clone(),
        notice: (*notice).clone(),
        drag,
        name,
        spotify_token,
        code,
        link,
        go,
        notify,
    };
    let dismiss = {
        let notice = notice.clone();
        Callback::from(move |_| notice.set(None))
    };
    html! {
        <main>
            <header class="top">
                <a href="/" class="brand" onclick={{ let go = ctx.go.clone(); move |e: MouseEvent| { e.prevent_default(); go.emit(Route::Home) } }}>{ "Unisono" }</a>
                <span class={classes!("conn", ctx.client.connection().as_str())}>{ ctx.client.connection().as_str() }</span>
            </header>
            if let Some(n) = &ctx.notice {
                <div class="notice" onclick={dismiss}>{ n }{ " ✕" }</div>
            }
            {
                match &ctx.route {
                    Route::Home => views::home(&ctx),
                    Route::Room(code) => views::room(&ctx, code),
                }
            }
            <audio ref={audio} preload="auto" />
            <div id={youtube::BOX_ID} class={classes!("video", (!youtube).then_some("hidden"))}></div>
        </main>
    }
}
