//! The JavaScript face of [`Client`] and [`PlayerSync`] (feature `js`): `UnisonoClient` with
//! camelCase methods, promise-returning requests that reject with an `Error` carrying the
//! server's `code`, and `on…` callback properties; `PlayerSync` with one factory per adapter.

use std::{cell::RefCell, rc::Rc};

use js_sys::{Function, Promise, Reflect};
use serde::Serialize;
use serde_json::{Value, json};
use unisono_core::{drift::PlayerCapabilities, protocol::REQUEST_EVENTS};
use wasm_bindgen::{JsCast, prelude::*};
use wasm_bindgen_futures::future_to_promise;

use crate::{
    client::{Change, Client, ClientError, ClientEvent, RoomView},
    player::{HtmlMediaAdapter, JsAdapter, PlayerSync, SpotifyAdapter, YouTubeAdapter},
};

/// Reply timeout of requests outside the room protocol (a device command may take a while).
const OTHER_REQUEST_TIMEOUT_MS: f64 = 30_000.0;

fn to_js<T: Serialize + ?Sized>(v: &T) -> JsValue {
    v.serialize(&serde_wasm_bindgen::Serializer::json_compatible()).unwrap_or(JsValue::NULL)
}

fn from_js(v: JsValue) -> Result<Value, JsValue> {
    if v.is_undefined() || v.is_null() {
        return Ok(Value::Null);
    }
    serde_wasm_bindgen::from_value(v).map_err(|e| js_error(&ClientError::new("INVALID_PAYLOAD", e.to_string())))
}

/// An `Error` whose `code` property is the stable error code.
fn js_error(e: &ClientError) -> JsValue {
    let err = js_sys::Error::new(&format!("{}: {}", e.code, e.message));
    let _ = Reflect::set(&err, &"code".into(), &e.code.as_str().into());
    err.into()
}

fn room_json(r: &RoomView) -> Value {
    json!({
        "room": r.info, "you": r.you, "members": r.members, "memberCount": r.member_count,
        "host": r.host, "queue": r.queue, "playback": r.playback,
    })
}

#[derive(Default)]
struct Callbacks {
    playback: Option<Function>,
    members: Option<Function>,
    queue: Option<Function>,
    room: Option<Function>,
    error: Option<Function>,
    connection: Option<Function>,
    sync: Option<Function>,
    push: Option<Function>,
}

/// A reconnecting `/ws` client with time sync and room state.
///
/// ```js
/// const c = new UnisonoClient();
/// c.onPlayback = (playback, reason) => render(c.positionNow());
/// await c.connect("ws://127.0.0.1:8080/ws");
/// const { code } = await c.createRoom({ name: "Friday", memberName: "Alice" });
/// ```
#[wasm_bindgen]
pub struct UnisonoClient {
    inner: Client,
    callbacks: Rc<RefCell<Callbacks>>,
}

impl Default for UnisonoClient {
    fn default() -> Self {
        Self::new()
    }
}

#[wasm_bindgen]
impl UnisonoClient {
    #[wasm_bindgen(constructor)]
    pub fn new() -> UnisonoClient {
        let inner = Client::new();
        let callbacks = Rc::new(RefCell::new(Callbacks::default()));
        let cbs = Rc::downgrade(&callbacks);
        // Both held weakly: the client owns this listener, so a strong handle would be a cycle.
        let weak = inner.downgrade();
        inner.subscribe(move |e| {
            let (Some(cbs), Some(reader)) = (cbs.upgrade(), weak.upgrade()) else { return };
            let cbs = cbs.borrow();
            let (f, args): (&Option<Function>, Vec<JsValue>) = match e {
                ClientEvent::Connection(s) => (&cbs.connection, vec![s.as_str().into()]),
                ClientEvent::Changed(Change::Playback(why)) => {
                    let pb = reader.with_room(|r| r.map(|r| to_js(&r.playback)));
                    (&cbs.playback, vec![pb.unwrap_or(JsValue::NULL), (*why).into()])
                }
                ClientEvent::Changed(Change::Members) => {
                    let m = reader.with_room(|r| r.map(|r| (to_js(&r.members), to_js(&r.host))));
                    let (m, h) = m.unwrap_or((js_sys::Array::new().into(), JsValue::NULL));
                    (&cbs.members, vec![m, h])
                }
                ClientEvent::Changed(Change::Queue) => {
                    let q = reader.with_room(|r| r.map(|r| to_js(&r.queue)));
                    (&cbs.queue, vec![q.unwrap_or_else(|| js_sys::Array::new().into())])
                }
                ClientEvent::Changed(Change::Room) => {
                    let r = reader.with_room(|r| r.map(|r| to_js(&room_json(r))));
                    (&cbs.room, vec![r.unwrap_or(JsValue::NULL)])
                }
                ClientEvent::Changed(Change::Sync) => (&cbs.sync, vec![]),
                ClientEvent::Changed(Change::Error(err)) => (&cbs.error, vec![js_error(err)]),
                ClientEvent::Push(p) => (&cbs.push, vec![p.event.as_str().into(), to_js(&p.data)]),
            };
            if let Some(f) = f {
                let arr: js_sys::Array = args.iter().collect();
                let _ = f.apply(&JsValue::NULL, &arr);
            }
        });
        UnisonoClient { inner, callbacks }
    }

    /// Connects to the server's `/ws` URL; resolves once the session is established.
    pub fn connect(&self, url: &str) -> Promise {
        let f = self.inner.connect(url);
        future_to_promise(async move { f.await.map(|_| JsValue::UNDEFINED).map_err(|e| js_error(&e)) })
    }

    /// Closes for good: no reconnect.
    pub fn close(&self) {
        self.inner.close();
    }

    /// Server time now (ms), from `performance.now()` and the estimated offset.
    #[wasm_bindgen(js_name = serverNow)]
    pub fn server_now(&self) -> f64 {
        self.inner.server_now()
    }

    /// The room's playback position now (ms), or `undefined` outside a room.
    #[wasm_bindgen(js_name = positionNow)]
    pub fn position_now(&self) -> Option<f64> {
        self.inner.position_now()
    }

    /// Local `performance.now()` time of a server time (e.g. a scheduled start).
    #[wasm_bindgen(js_name = toLocalTime)]
    pub fn to_local_time(&self, server_time: f64) -> f64 {
        self.inner.to_local(server_time)
    }

    /// `{room, you, members, memberCount, host, queue, playback}`, or `null` outside a room.
    #[wasm_bindgen(getter)]
    pub fn room(&self) -> JsValue {
        self.inner.with_room(|r| r.map(|r| to_js(&room_json(r)))).unwrap_or(JsValue::NULL)
    }

    #[wasm_bindgen(getter)]
    pub fn playback(&self) -> JsValue {
        self.inner.with_room(|r| r.map(|r| to_js(&r.playback))).unwrap_or(JsValue::NULL)
    }

    #[wasm_bindgen(getter)]
    pub fn members(&self) -> JsValue {
        self.inner.with_room(|r| r.map(|r| to_js(&r.members))).unwrap_or_else(|| js_sys::Array::new().into())
    }

    #[wasm_bindgen(getter)]
    pub fn queue(&self) -> JsValue {
        self.inner.with_room(|r| r.map(|r| to_js(&r.queue))).unwrap_or_else(|| js_sys::Array::new().into())
    }

    #[wasm_bindgen(getter, js_name = sessionId)]
    pub fn session_id(&self) -> Option<String> {
        self.inner.session_id()
    }

    #[wasm_bindgen(getter, js_name = isHost)]
    pub fn is_host(&self) -> bool {
        self.inner.with_room(|r| r.is_some_and(RoomView::is_host))
    }

    /// `closed`, `connecting`, `open` or `reconnecting`.
    #[wasm_bindgen(getter, js_name = connectionState)]
    pub fn connection_state(&self) -> String {
        self.inner.connection().as_str().to_owned()
    }

    /// `{offset, errorBound, rtt, minRtt, samples, stable}` of the clock-offset estimate.
    #[wasm_bindgen(js_name = syncStats)]
    pub fn sync_stats(&self) -> JsValue {
        let s = self.inner.sync_stats();
        to_js(&json!({"offset": s.offset, "errorBound": s.error_bound, "rtt": s.rtt, "minRtt": s.min_rtt,
            "samples": s.samples, "stable": s.stable}))
    }

    // ---- callbacks ------------------------------------------------------------------------

    /// `(playback, reason)` on every new timing vector.
    #[wasm_bindgen(setter, js_name = onPlayback)]
    pub fn set_on_playback(&self, f: Option<Function>) {
        self.callbacks.borrow_mut().playback = f;
    }
    /// `(members, host)`.
    #[wasm_bindgen(setter, js_name = onMembers)]
    pub fn set_on_members(&self, f: Option<Function>) {
        self.callbacks.borrow_mut().members = f;
    }
    /// `(queue)`.
    #[wasm_bindgen(setter, js_name = onQueue)]
    pub fn set_on_queue(&self, f: Option<Function>) {
        self.callbacks.borrow_mut().queue = f;
    }
    /// `(room | null)`: joined, left, settings or host changed.
    #[wasm_bindgen(setter, js_name = onRoom)]
    pub fn set_on_room(&self, f: Option<Function>) {
        self.callbacks.borrow_mut().room = f;
    }
    /// `(error)` with `error.code`: error pushes and connection problems.
    #[wasm_bindgen(setter, js_name = onError)]
    pub fn set_on_error(&self, f: Option<Function>) {
        self.callbacks.borrow_mut().error = f;
    }
    /// `(state)`: `connecting`, `open`, `reconnecting`, `closed`.
    #[wasm_bindgen(setter, js_name = onConnection)]
    pub fn set_on_connection(&self, f: Option<Function>) {
        self.callbacks.borrow_mut().connection = f;
    }
    /// `()` when the clock-offset estimate changed.
    #[wasm_bindgen(setter, js_name = onSync)]
    pub fn set_on_sync(&self, f: Option<Function>) {
        self.callbacks.borrow_mut().sync = f;
    }

    /// `(event, data)` for pushes outside the room protocol: the device admin protocol's
    /// `device:online`, `state:updated`, `command:response` … on a connection opened with an
    /// admin token (docs/socketio.md §3), and events sent by `POST /api/publish`.
    #[wasm_bindgen(setter, js_name = onPush)]
    pub fn set_on_push(&self, f: Option<Function>) {
        self.callbacks.borrow_mut().push = f;
    }

    // ---- requests -------------------------------------------------------------------------

    /// Any request by event name (`"seek-playback"`, `{positionMs}`); resolves with the reply
    /// data. Room requests are checked here first (a bad payload rejects without a round trip);
    /// other events (e.g. the admin protocol's `devices:list`, `command`) go as they are.
    pub fn request(&self, event: &str, data: JsValue) -> Promise {
        match from_js(data) {
            Ok(d) if REQUEST_EVENTS.contains(&event) => self.send(event, d),
            Ok(d) => {
                let f = self.inner.request_event(event, d, OTHER_REQUEST_TIMEOUT_MS);
                future_to_promise(async move { f.await.map(|v| to_js(&v)).map_err(|e| js_error(&e)) })
            }
            Err(e) => Promise::reject(&e),
        }
    }

    fn send(&self, event: &str, data: Value) -> Promise {
        let f = self.inner.request_json(event, data);
        future_to_promise(async move { f.await.map(|v| to_js(&v)).map_err(|e| js_error(&e)) })
    }

    /// `{name?, memberName?, settings?}` → `{code, room}`.
    #[wasm_bindgen(js_name = createRoom)]
    pub fn create_room(&self, options: JsValue) -> Promise {
        self.request("create-room", options)
    }
    #[wasm_bindgen(js_name = joinRoom)]
    pub fn join_room(&self, code: &str, name: Option<String>) -> Promise {
        self.send("join-room", json!({"code": code, "name": name}))
    }
    #[wasm_bindgen(js_name = leaveRoom)]
    pub fn leave_room(&self) -> Promise {
        let f = self.inner.leave_room();
        future_to_promise(async move { f.await.map(|v| to_js(&v)).map_err(|e| js_error(&e)) })
    }
    /// `song`: `{id, title?, provider?: "url"|"youtube"|"spotify", url?, durationMs?}`.
    #[wasm_bindgen(js_name = loadSong)]
    pub fn load_song(&self, song: JsValue, autoplay: Option<bool>) -> Promise {
        match from_js(song) {
            Ok(s) => self.send("load-song", json!({"song": s, "autoplay": autoplay.unwrap_or(false)})),
            Err(e) => Promise::reject(&e),
        }
    }
    pub fn pause(&self) -> Promise {
        self.send("pause-playback", Value::Null)
    }
    pub fn resume(&self) -> Promise {
        self.send("resume-playback", Value::Null)
    }
    pub fn seek(&self, position_ms: f64) -> Promise {
        self.send("seek-playback", json!({"positionMs": position_ms}))
    }
    #[wasm_bindgen(js_name = setRate)]
    pub fn set_rate(&self, rate: f64) -> Promise {
        self.send("set-rate", json!({"rate": rate}))
    }
    /// `{songId?, positionMs, isPlaying}`.
    #[wasm_bindgen(js_name = updatePlayback)]
    pub fn update_playback(&self, data: JsValue) -> Promise {
        self.request("update-playback", data)
    }
    #[wasm_bindgen(js_name = getPlaybackState)]
    pub fn get_playback_state(&self) -> Promise {
        self.send("get-playback-state", Value::Null)
    }
    #[wasm_bindgen(js_name = queueAdd)]
    pub fn queue_add(&self, song: JsValue) -> Promise {
        match from_js(song) {
            Ok(s) => self.send("queue-add", json!({"song": s})),
            Err(e) => Promise::reject(&e),
        }
    }
    #[wasm_bindgen(js_name = queueRemove)]
    pub fn queue_remove(&self, item_id: &str) -> Promise {
        self.send("queue-remove", json!({"itemId": item_id}))
    }
    #[wasm_bindgen(js_name = queueMove)]
    pub fn queue_move(&self, item_id: &str, to_index: u32) -> Promise {
        self.send("queue-move", json!({"itemId": item_id, "toIndex": to_index}))
    }
    #[wasm_bindgen(js_name = playNext)]
    pub fn play_next(&self) -> Promise {
        self.send("play-next", Value::Null)
    }
    #[wasm_bindgen(js_name = setReady)]
    pub fn set_ready(&self, ready: bool) -> Promise {
        self.send("set-ready", json!({"ready": ready}))
    }
    #[wasm_bindgen(js_name = transferHost)]
    pub fn transfer_host(&self, session_id: &str) -> Promise {
        self.send("transfer-host", json!({"sessionId": session_id}))
    }
    /// A settings patch: `{anyoneCanControl?, readyBarrier?, readyTimeoutMs?, startDelayMs?}`.
    #[wasm_bindgen(js_name = updateSettings)]
    pub fn update_settings(&self, settings: JsValue) -> Promise {
        match from_js(settings) {
            Ok(s) => self.send("update-settings", json!({"settings": s})),
            Err(e) => Promise::reject(&e),
        }
    }
    #[wasm_bindgen(js_name = reportDrift)]
    pub fn report_drift(&self, drift_ms: f64) -> Promise {
        self.send("report-drift", json!({"driftMs": drift_ms}))
    }
    #[wasm_bindgen(js_name = getMembers)]
    pub fn get_members(&self, offset: Option<u32>, limit: Option<u32>) -> Promise {
        self.send("get-members", json!({"offset": offset.unwrap_or(0), "limit": limit}))
    }
}

/// Keeps a media player on the room's clock with the core's drift controller.
///
/// ```js
/// const sync = PlayerSync.forMediaElement(client, document.querySelector("audio"));
/// sync.start();
/// setInterval(() => console.log(sync.stats().driftMs), 1000);
/// ```
#[wasm_bindgen(js_name = PlayerSync)]
pub struct JsPlayerSync(PlayerSync);

#[wasm_bindgen(js_class = PlayerSync)]
impl JsPlayerSync {
    /// An `<audio>`/`<video>` element; plays `url` songs. Rate nudges (continuous rate).
    #[wasm_bindgen(js_name = forMediaElement)]
    pub fn for_media_element(client: &UnisonoClient, element: JsValue) -> Result<JsPlayerSync, JsError> {
        let el = element.dyn_into::<web_sys::HtmlMediaElement>().map_err(|_| JsError::new("not a media element"))?;
        Ok(JsPlayerSync(PlayerSync::new(&client.inner, Box::new(HtmlMediaAdapter::new(el)))))
    }

    /// A `YT.Player`; plays `youtube` songs (`song.id` is the video id). Quantised rates.
    #[wasm_bindgen(js_name = forYouTube)]
    pub fn for_youtube(client: &UnisonoClient, player: JsValue) -> JsPlayerSync {
        JsPlayerSync(PlayerSync::new(&client.inner, Box::new(YouTubeAdapter::new(player))))
    }

    /// A `Spotify.Player` (Web Playback SDK); plays `spotify` songs. Seeks only.
    #[wasm_bindgen(js_name = forSpotify)]
    pub fn for_spotify(client: &UnisonoClient, player: JsValue) -> JsPlayerSync {
        JsPlayerSync(PlayerSync::new(&client.inner, Box::new(SpotifyAdapter::new(player))))
    }

    /// Any object with `load(song)`, `positionMs()`, `isPlaying()`, `play()`, `pause()`,
    /// `seek(ms)`, `setRate(rate)`, and its `capabilities`
    /// (`{canSetRate, rateStep, seekLatencyMs, positionGranularityMs}`).
    pub fn custom(client: &UnisonoClient, adapter: JsValue, capabilities: JsValue) -> Result<JsPlayerSync, JsError> {
        let caps: PlayerCapabilities =
            serde_wasm_bindgen::from_value(capabilities).map_err(|e| JsError::new(&e.to_string()))?;
        Ok(JsPlayerSync(PlayerSync::new(&client.inner, Box::new(JsAdapter::new(adapter, caps)))))
    }

    pub fn start(&self) {
        self.0.start();
    }

    pub fn stop(&self) {
        self.0.stop();
    }

    /// Retries a start blocked by the autoplay policy; call it from a click handler.
    pub fn unblock(&self) {
        self.0.unblock();
    }

    /// `{driftMs, mode, rate, seeks, rateChanges, blocked, history: [[serverTime, driftMs]…]}`.
    pub fn stats(&self) -> JsValue {
        self.0.with_info(|i| {
            to_js(&json!({"driftMs": i.drift_ms, "mode": i.mode, "rate": i.rate, "seeks": i.seeks,
                "rateChanges": i.rate_changes, "blocked": i.blocked, "history": i.history}))
        })
    }
}
