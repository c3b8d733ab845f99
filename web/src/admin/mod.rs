//! The admin dashboard at `/admin`: a tenant's devices live (online state, VLC state, playlist,
//! snapshot thumbnail, last seen), command buttons with live results, an alert feed and usage
//! charts. It speaks the device admin protocol (docs/socketio.md §3) over `/ws?token=ADMIN_JWT`
//! through the shared [`Client`], the same code as the npm package and the room pages.
//!
//! - `mod.rs`: the token (pasted, or `?token=`, remembered in localStorage) and [`Ctl`], which
//!   turns client events and replies into [`model::Model`] inputs and performs its effects.
//! - `model.rs`: the sans-IO state (merge patches, rev gaps, runs, alerts, rates).
//! - `view.rs`: rendering.
//! - `snapshot.rs`: thumbnails fetched over REST.

mod model;
mod snapshot;
mod view;

use std::{cell::RefCell, rc::Rc};

use serde_json::{Value, json};
use unisono::client::{Client, ClientError, ClientEvent, ConnectionState, WeakClient};
use wasm_bindgen::{JsCast, JsValue, closure::Closure};
use wasm_bindgen_futures::spawn_local;
use yew::prelude::*;

use model::{Effect, Model};

/// localStorage key of the admin token.
const TOKEN_KEY: &str = "unisono.adminToken";
/// `devices:stats` is polled this often (and the page redrawn every second).
const STATS_EVERY_TICKS: u32 = 2;
/// Admin requests other than commands.
const REQUEST_TIMEOUT_MS: f64 = 10_000.0;
/// A command's reply waits for every delivery and retry the server makes; its own timeout
/// (`COMMAND_TIMEOUT`) normally comes first.
const COMMAND_TIMEOUT_MS: f64 = 300_000.0;

fn storage() -> Option<web_sys::Storage> {
    web_sys::window().and_then(|w| w.local_storage().ok().flatten())
}

/// `?token=` (then remembered, and dropped from the address bar), else the remembered one.
fn initial_token() -> Option<String> {
    let window = web_sys::window()?;
    let search = window.location().search().ok().unwrap_or_default();
    let from_query = search.trim_start_matches('?').split('&').find_map(|kv| kv.strip_prefix("token="));
    if let Some(t) = from_query.and_then(|t| js_sys::decode_uri_component(t).ok()).map(String::from) {
        if let Some(s) = storage() {
            let _ = s.set_item(TOKEN_KEY, &t);
        }
        if let Ok(h) = window.history() {
            let _ = h.replace_state_with_url(&JsValue::NULL, "", Some("/admin"));
        }
        return Some(t);
    }
    storage().and_then(|s| s.get_item(TOKEN_KEY).ok().flatten()).filter(|t| !t.is_empty())
}

/// `ws(s)://<this host>/ws?token=…`.
fn ws_url(token: &str) -> String {
    format!("{}?token={}", crate::app::ws_url(), String::from(js_sys::encode_uri_component(token)))
}

/// A reply handler: runs on the controller once the reply is in (boxed, so each request site
/// does not instantiate its own copy of the request future).
type Done = Box<dyn FnOnce(&Ctl, Result<Value, ClientError>)>;

/// The dashboard's controller: the client (held weakly, so listeners do not keep it alive), the
/// model, and a redraw. Everything it starts ends in a model update and a redraw.
#[derive(Clone)]
pub struct Ctl {
    client: WeakClient,
    model: Rc<RefCell<Model>>,
    token: Rc<str>,
    redraw: UseForceUpdateHandle,
    error: UseStateHandle<Option<String>>,
}

impl Ctl {
    fn now(&self) -> f64 {
        self.client.upgrade().map(|c| c.server_now()).unwrap_or(0.0)
    }

    /// Sends an admin request; `done` gets the reply on this controller.
    fn request(&self, event: &str, data: Value, timeout_ms: f64, done: Done) {
        let Some(client) = self.client.upgrade() else { return };
        let fut = client.request_event(event, to_js(&data), timeout_ms);
        let me = self.clone();
        spawn_local(async move {
            let reply = fut.await.map(|j| from_js(&j));
            done(&me, reply);
            me.redraw.force_update();
        });
    }

    /// All devices, present and future: the full state that patches continue from.
    fn subscribe(&self) {
        let done: Done = Box::new(|me, r| match r {
            Ok(v) => {
                let fx = me.model.borrow_mut().load(&v);
                me.error.set(None);
                me.perform(fx);
            }
            Err(e) => me.error.set(Some(format!("devices:subscribe failed: {e}"))),
        });
        self.request("devices:subscribe", json!({}), REQUEST_TIMEOUT_MS, done);
        self.poll_stats();
    }

    fn poll_stats(&self) {
        let done: Done = Box::new(|me, r| {
            if let Ok(v) = r {
                let now = me.now();
                me.model.borrow_mut().on_stats(&v, now);
            }
        });
        self.request("devices:stats", Value::Null, REQUEST_TIMEOUT_MS, done);
    }

    /// Sends a built-in command to a device; its run shows pending until the reply.
    pub fn command(&self, device_id: &str, command: &str) {
        let run = self.model.borrow_mut().start(device_id, command, self.now());
        let data = json!({ "deviceId": device_id, "command": command });
        let done: Done = Box::new(move |me, r| {
            let now = me.now();
            let fx = me.model.borrow_mut().finish(run, r, now);
            me.perform(fx);
        });
        self.request("command", data, COMMAND_TIMEOUT_MS, done);
        self.redraw.force_update();
    }

    fn perform(&self, effects: Vec<Effect>) {
        for fx in effects {
            match fx {
                Effect::Resync(id) => {
                    let data = json!({ "deviceId": id });
                    let done: Done = Box::new(move |me, r| {
                        let mut m = me.model.borrow_mut();
                        match r {
                            Ok(v) => m.resynced(&v),
                            Err(_) => m.resync_failed(&id),
                        }
                    });
                    self.request("devices:resync", data, REQUEST_TIMEOUT_MS, done);
                }
                Effect::FetchSnapshot(id) => {
                    let me = self.clone();
                    spawn_local(async move {
                        let Ok(Some(url)) = snapshot::fetch(&id, &me.token).await else { return };
                        let old = me.model.borrow_mut().device_mut(&id).and_then(|d| d.thumb.replace(url));
                        if let Some(old) = old {
                            snapshot::release(&old);
                        }
                        me.redraw.force_update();
                    });
                }
            }
        }
    }

    fn on_event(&self, e: &ClientEvent) {
        match e {
            ClientEvent::Connection(ConnectionState::Open) => self.subscribe(),
            ClientEvent::Push(p) => {
                let now = self.now();
                let data = from_js(&p.data);
                let fx = self.model.borrow_mut().on_push(&p.event, &data, now);
                self.perform(fx);
            }
            _ => {}
        }
        self.redraw.force_update();
    }

    /// Connects with the token and keeps the page live until the returned teardown runs.
    fn start(self, client: Client) -> impl FnOnce() {
        let listener = {
            let ctl = self.clone();
            client.subscribe(move |e| ctl.on_event(e))
        };
        let connect = client.connect(&ws_url(&self.token));
        {
            let (client, error) = (client.clone(), self.error.clone());
            spawn_local(async move {
                if let Err(e) = connect.await {
                    // Most likely a refused token: retrying would only count auth failures.
                    client.close();
                    error.set(Some(format!("could not connect ({}): check the token", e.code)));
                }
            });
        }
        let mut ticks = 0_u32;
        let tick = {
            let ctl = self.clone();
            Closure::<dyn FnMut()>::new(move || {
                ticks += 1;
                let open = ctl.client.upgrade().is_some_and(|c| c.connection() == ConnectionState::Open);
                if open && ticks.is_multiple_of(STATS_EVERY_TICKS) {
                    ctl.poll_stats();
                }
                ctl.redraw.force_update();
            })
        };
        let window = web_sys::window();
        let interval = window.as_ref().and_then(|w| {
            w.set_interval_with_callback_and_timeout_and_arguments_0(tick.as_ref().unchecked_ref(), 1000).ok()
        });
        move || {
            client.unsubscribe(listener);
            client.close();
            if let (Some(w), Some(id)) = (&window, interval) {
                w.clear_interval_with_handle(id);
            }
            drop(tick);
            for u in self.model.borrow_mut().take_thumbs() {
                snapshot::release(&u);
            }
        }
    }
}

/// The page: asks for a token until it has one, then shows the live dashboard. A new token
/// gets a new client and a fresh model.
#[function_component(Dashboard)]
pub fn dashboard() -> Html {
    let token = use_state(initial_token);
    let client = use_memo((*token).clone(), |_| Client::new());
    let model = use_memo((*token).clone(), |_| Rc::new(RefCell::new(Model::default())));
    let redraw = use_force_update();
    let error = use_state(|| None::<String>);
    let ctl = Ctl {
        client: client.downgrade(),
        model: (*model).clone(),
        token: Rc::from(token.as_deref().unwrap_or_default()),
        redraw,
        error: error.clone(),
    };
    {
        let (client, ctl) = ((*client).clone(), ctl.clone());
        use_effect_with((*token).clone(), move |t| {
            let stop = t.is_some().then(|| ctl.start(client));
            move || stop.into_iter().for_each(|f| f())
        });
    }
    let set = {
        let (token, error) = (token.clone(), error.clone());
        Callback::from(move |t: Option<String>| {
            if let Some(s) = storage() {
                let _ = match &t {
                    Some(t) => s.set_item(TOKEN_KEY, t),
                    None => s.remove_item(TOKEN_KEY),
                };
            }
            error.set(None);
            token.set(t);
        })
    };
    let conn = client.connection();
    let logout = {
        let set = set.clone();
        Callback::from(move |_| set.emit(None))
    };
    let m = model.borrow();
    html! {
        <main class="admin">
            <header class="top">
                <a href="/" class="brand">{ "Unisono" }</a>
                <span class="muted">{ "device dashboard" }</span>
                if token.is_some() {
                    <span class={classes!("conn", conn.as_str())} id="admin-conn">{ conn.as_str() }</span>
                    <button class="small" onclick={logout}>{ "Change token" }</button>
                }
            </header>
            if let Some(e) = &*error { <div class="notice">{ e }</div> }
            if token.is_some() { { view::page(&ctl, &m, ctl.now()) } } else { { view::token_form(set) } }
        </main>
    }
}

/// A `serde_json` value for the shared client (which speaks JavaScript values; the admin model
/// is written against `serde_json`): through JSON text, `undefined` for `null`.
fn to_js(v: &Value) -> JsValue {
    if v.is_null() {
        return JsValue::UNDEFINED;
    }
    js_sys::JSON::parse(&v.to_string()).unwrap_or(JsValue::UNDEFINED)
}

/// A JavaScript value from the shared client as `serde_json`'s.
fn from_js(v: &JsValue) -> Value {
    js_sys::JSON::stringify(v)
        .ok()
        .and_then(|s| s.as_string())
        .and_then(|s| serde_json::from_str(&s).ok())
        .unwrap_or(Value::Null)
}
