//! The JavaScript face of [`Client`] and [`PlayerSync`] (feature `js`): `UnisonoClient` with
//! camelCase methods, promise-returning requests that reject with an `Error` carrying the
//! server's `code`, and `on…` callback properties; `PlayerSync` with one factory per adapter.

use crate::prelude::*;

use crate::cell::RefCell;
use alloc::rc::Rc;

use unisono_core::{drift::PlayerCapabilities, protocol::REQUEST_EVENTS};
use wasm_bindgen::prelude::*;

use crate::{
    client::{Change, Client, ClientError, ClientEvent, Done, REQUEST_TIMEOUT_MS, RoomView},
    player::{self, JsAdapter, PlayerSync},
    sys::{self, Function, Promise, array, call_function, object, to_js},
};

/// Reply timeout of requests outside the room protocol (a device command may take a while).
const OTHER_REQUEST_TIMEOUT_MS: f64 = 30_000.0;

/// A promise completed by the client's callback (`start` runs at once and hands it on): it
/// resolves with the reply's data and rejects with an `Error` carrying the server's code. No
/// Rust future is involved, so the package carries no executor for its requests.
fn promise(start: &mut dyn FnMut(Done)) -> Promise {
    Promise::new(&mut |resolve: Function, reject: Function| {
        start(Box::new(move |r| {
            let _ = match r {
                Ok(v) => call_function(&resolve, &JsValue::UNDEFINED, &[v]),
                Err(e) => call_function(&reject, &JsValue::UNDEFINED, &[js_error(&e)]),
            };
        }));
    })
}

/// An `Error` whose `code` property is the stable error code.
fn js_error(e: &ClientError) -> JsValue {
    let err: JsValue = sys::Error::new(&sys::text(&[&e.code, ": ", &e.message])).into();
    sys::set_field(&err, "code", &e.code.as_str().into());
    err
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
                    let (m, h) = m.unwrap_or((array(&[]), JsValue::NULL));
                    (&cbs.members, vec![m, h])
                }
                ClientEvent::Changed(Change::Queue) => {
                    let q = reader.with_room(|r| r.map(|r| to_js(&r.queue)));
                    (&cbs.queue, vec![q.unwrap_or_else(|| array(&[]))])
                }
                ClientEvent::Changed(Change::Room) => {
                    let r = reader.with_room(|r| r.map(to_js));
                    (&cbs.room, vec![r.unwrap_or(JsValue::NULL)])
                }
                ClientEvent::Changed(Change::Sync) => (&cbs.sync, vec![]),
                ClientEvent::Changed(Change::Error(err)) => (&cbs.error, vec![js_error(err)]),
                ClientEvent::Push(p) => (&cbs.push, vec![p.event.as_str().into(), p.data.clone()]),
            };
            if let Some(f) = f {
                call_function(f, &JsValue::NULL, &args);
            }
        });
        UnisonoClient { inner, callbacks }
    }

    /// Connects to the server's `/ws` URL; resolves once the session is established.
    #[wasm_bindgen(unchecked_return_type = "Promise<void>")]
    pub fn connect(&self, url: &str) -> Promise {
        promise(&mut |done| self.inner.connect_then(url, done))
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
    pub fn to_local_time(&self, #[wasm_bindgen(js_name = serverTime)] server_time: f64) -> f64 {
        self.inner.to_local(server_time)
    }

    /// `{room, you, members, memberCount, host, queue, playback}`, or `null` outside a room.
    #[wasm_bindgen(getter, unchecked_return_type = "Room | null")]
    pub fn room(&self) -> JsValue {
        self.inner.with_room(|r| r.map(to_js)).unwrap_or(JsValue::NULL)
    }

    #[wasm_bindgen(getter, unchecked_return_type = "Playback | null")]
    pub fn playback(&self) -> JsValue {
        self.inner.with_room(|r| r.map(|r| to_js(&r.playback))).unwrap_or(JsValue::NULL)
    }

    #[wasm_bindgen(getter, unchecked_return_type = "Member[]")]
    pub fn members(&self) -> JsValue {
        self.inner.with_room(|r| r.map(|r| to_js(&r.members))).unwrap_or_else(|| array(&[]))
    }

    #[wasm_bindgen(getter, unchecked_return_type = "QueueItem[]")]
    pub fn queue(&self) -> JsValue {
        self.inner.with_room(|r| r.map(|r| to_js(&r.queue))).unwrap_or_else(|| array(&[]))
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
    #[wasm_bindgen(getter, js_name = connectionState, unchecked_return_type = "ConnectionState")]
    pub fn connection_state(&self) -> String {
        self.inner.connection().as_str().to_owned()
    }

    /// `{offset, errorBound, rtt, minRtt, samples, stable}` of the clock-offset estimate.
    #[wasm_bindgen(js_name = syncStats, unchecked_return_type = "SyncStats")]
    pub fn sync_stats(&self) -> JsValue {
        to_js(&self.inner.sync_stats())
    }

    // ---- callbacks ------------------------------------------------------------------------

    /// `(playback, reason)` on every new timing vector.
    #[wasm_bindgen(setter, js_name = onPlayback)]
    pub fn set_on_playback(
        &self,
        #[wasm_bindgen(unchecked_param_type = "((playback: Playback | null, reason: string) => void) | undefined")]
        f: Option<Function>,
    ) {
        self.callbacks.borrow_mut().playback = f;
    }
    /// `(members, host)`.
    #[wasm_bindgen(setter, js_name = onMembers)]
    pub fn set_on_members(
        &self,
        #[wasm_bindgen(unchecked_param_type = "((members: Member[], host: string | null) => void) | undefined")]
        f: Option<Function>,
    ) {
        self.callbacks.borrow_mut().members = f;
    }
    /// `(queue)`.
    #[wasm_bindgen(setter, js_name = onQueue)]
    pub fn set_on_queue(
        &self,
        #[wasm_bindgen(unchecked_param_type = "((queue: QueueItem[]) => void) | undefined")] f: Option<Function>,
    ) {
        self.callbacks.borrow_mut().queue = f;
    }
    /// `(room | null)`: joined, left, settings or host changed.
    #[wasm_bindgen(setter, js_name = onRoom)]
    pub fn set_on_room(
        &self,
        #[wasm_bindgen(unchecked_param_type = "((room: Room | null) => void) | undefined")] f: Option<Function>,
    ) {
        self.callbacks.borrow_mut().room = f;
    }
    /// `(error)` with `error.code`: error pushes and connection problems.
    #[wasm_bindgen(setter, js_name = onError)]
    pub fn set_on_error(
        &self,
        #[wasm_bindgen(unchecked_param_type = "((error: UnisonoError) => void) | undefined")] f: Option<Function>,
    ) {
        self.callbacks.borrow_mut().error = f;
    }
    /// `(state)`: `connecting`, `open`, `reconnecting`, `closed`.
    #[wasm_bindgen(setter, js_name = onConnection)]
    pub fn set_on_connection(
        &self,
        #[wasm_bindgen(unchecked_param_type = "((state: ConnectionState) => void) | undefined")] f: Option<Function>,
    ) {
        self.callbacks.borrow_mut().connection = f;
    }
    /// `()` when the clock-offset estimate changed.
    #[wasm_bindgen(setter, js_name = onSync)]
    pub fn set_on_sync(&self, #[wasm_bindgen(unchecked_param_type = "(() => void) | undefined")] f: Option<Function>) {
        self.callbacks.borrow_mut().sync = f;
    }

    /// `(event, data)` for pushes outside the room protocol: the device admin protocol's
    /// `device:online`, `state:updated`, `command:response` … on a connection opened with an
    /// admin token (docs/socketio.md §3), and events sent by `POST /api/publish`.
    #[wasm_bindgen(setter, js_name = onPush)]
    pub fn set_on_push(
        &self,
        #[wasm_bindgen(unchecked_param_type = "((event: string, data: any) => void) | undefined")] f: Option<Function>,
    ) {
        self.callbacks.borrow_mut().push = f;
    }

    // ---- requests -------------------------------------------------------------------------

    /// Any request by event name (`"seek-playback"`, `{positionMs}`); resolves with the reply
    /// data or rejects with the server's code (`INVALID_PAYLOAD` for a bad payload: the server
    /// validates, so the package carries no second copy of the request decoders). Events outside
    /// the room protocol (e.g. the admin protocol's `devices:list`, `command`) work the same,
    /// with a 30 s timeout instead of 10 s.
    #[wasm_bindgen(unchecked_return_type = "Promise<any>")]
    pub fn request(&self, event: &str, data: JsValue) -> Promise {
        let timeout = if REQUEST_EVENTS.contains(&event) { REQUEST_TIMEOUT_MS } else { OTHER_REQUEST_TIMEOUT_MS };
        let mut data = Some(data);
        promise(&mut |done| {
            self.inner.request_event_then(event, data.take().unwrap_or(JsValue::UNDEFINED), timeout, done)
        })
    }

    /// `{name?, memberName?, settings?}` → `{code, room}`.
    #[wasm_bindgen(js_name = createRoom)]
    pub fn create_room(
        &self,
        #[wasm_bindgen(unchecked_optional_param_type = "CreateRoomOptions")] options: Option<JsValue>,
    ) -> Promise {
        let options = options.unwrap_or(JsValue::UNDEFINED);
        self.request("create-room", options)
    }
    #[wasm_bindgen(js_name = joinRoom)]
    pub fn join_room(&self, code: &str, name: Option<String>) -> Promise {
        self.request(
            "join-room",
            object(&[("code", code.into()), ("name", name.map_or(JsValue::UNDEFINED, Into::into))]),
        )
    }
    #[wasm_bindgen(js_name = leaveRoom)]
    pub fn leave_room(&self) -> Promise {
        promise(&mut |done| self.inner.leave_room_then(done))
    }
    /// `song`: `{id, title?, provider?: "url"|"youtube"|"spotify", url?, durationMs?}`.
    #[wasm_bindgen(js_name = loadSong)]
    pub fn load_song(
        &self,
        #[wasm_bindgen(unchecked_param_type = "SongInput")] song: JsValue,
        autoplay: Option<bool>,
    ) -> Promise {
        self.request("load-song", object(&[("song", song), ("autoplay", autoplay.unwrap_or(false).into())]))
    }
    pub fn pause(&self) -> Promise {
        self.request("pause-playback", JsValue::UNDEFINED)
    }
    pub fn resume(&self) -> Promise {
        self.request("resume-playback", JsValue::UNDEFINED)
    }
    pub fn seek(&self, #[wasm_bindgen(js_name = positionMs)] position_ms: f64) -> Promise {
        self.request("seek-playback", object(&[("positionMs", position_ms.into())]))
    }
    #[wasm_bindgen(js_name = setRate)]
    pub fn set_rate(&self, rate: f64) -> Promise {
        self.request("set-rate", object(&[("rate", rate.into())]))
    }
    /// `{songId?, positionMs, isPlaying}`.
    #[wasm_bindgen(js_name = updatePlayback)]
    pub fn update_playback(
        &self,
        #[wasm_bindgen(unchecked_param_type = "{ songId?: string; positionMs: number; isPlaying: boolean }")]
        data: JsValue,
    ) -> Promise {
        self.request("update-playback", data)
    }
    #[wasm_bindgen(js_name = getPlaybackState)]
    pub fn get_playback_state(&self) -> Promise {
        self.request("get-playback-state", JsValue::UNDEFINED)
    }
    #[wasm_bindgen(js_name = queueAdd)]
    pub fn queue_add(&self, #[wasm_bindgen(unchecked_param_type = "SongInput")] song: JsValue) -> Promise {
        self.request("queue-add", object(&[("song", song)]))
    }
    #[wasm_bindgen(js_name = queueRemove)]
    pub fn queue_remove(&self, #[wasm_bindgen(js_name = itemId)] item_id: &str) -> Promise {
        self.request("queue-remove", object(&[("itemId", item_id.into())]))
    }
    #[wasm_bindgen(js_name = queueMove)]
    pub fn queue_move(
        &self,
        #[wasm_bindgen(js_name = itemId)] item_id: &str,
        #[wasm_bindgen(js_name = toIndex)] to_index: u32,
    ) -> Promise {
        self.request("queue-move", object(&[("itemId", item_id.into()), ("toIndex", to_index.into())]))
    }
    #[wasm_bindgen(js_name = playNext)]
    pub fn play_next(&self) -> Promise {
        self.request("play-next", JsValue::UNDEFINED)
    }
    #[wasm_bindgen(js_name = setReady)]
    pub fn set_ready(&self, ready: bool) -> Promise {
        self.request("set-ready", object(&[("ready", ready.into())]))
    }
    #[wasm_bindgen(js_name = transferHost)]
    pub fn transfer_host(&self, #[wasm_bindgen(js_name = sessionId)] session_id: &str) -> Promise {
        self.request("transfer-host", object(&[("sessionId", session_id.into())]))
    }
    /// A settings patch: `{anyoneCanControl?, readyBarrier?, readyTimeoutMs?, startDelayMs?}`.
    #[wasm_bindgen(js_name = updateSettings)]
    pub fn update_settings(
        &self,
        #[wasm_bindgen(unchecked_param_type = "Partial<RoomSettings>")] settings: JsValue,
    ) -> Promise {
        self.request("update-settings", object(&[("settings", settings)]))
    }
    #[wasm_bindgen(js_name = reportDrift)]
    pub fn report_drift(&self, #[wasm_bindgen(js_name = driftMs)] drift_ms: f64) -> Promise {
        self.request("report-drift", object(&[("driftMs", drift_ms.into())]))
    }
    #[wasm_bindgen(js_name = getMembers)]
    pub fn get_members(&self, offset: Option<u32>, limit: Option<u32>) -> Promise {
        let limit = limit.map_or(JsValue::UNDEFINED, Into::into);
        self.request("get-members", object(&[("offset", offset.unwrap_or(0).into()), ("limit", limit)]))
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
    pub fn for_media_element(client: &UnisonoClient, element: JsValue) -> Result<JsPlayerSync, JsValue> {
        Ok(JsPlayerSync(PlayerSync::new(&client.inner, player::html_media(&element)?)))
    }

    /// A `YT.Player`; plays `youtube` songs (`song.id` is the video id). Quantised rates.
    #[wasm_bindgen(js_name = forYouTube)]
    pub fn for_youtube(client: &UnisonoClient, player: JsValue) -> JsPlayerSync {
        JsPlayerSync(PlayerSync::new(&client.inner, player::youtube(&player)))
    }

    /// A `Spotify.Player` (Web Playback SDK); plays `spotify` songs (`song.id` is the track
    /// id). Seeks only. With `{deviceId, token}` (the SDK's `ready` event gives the device id;
    /// the token is the user's OAuth token) each song is started on that device through the Web
    /// API; without, starting the track is the page's job.
    #[wasm_bindgen(js_name = forSpotify)]
    pub fn for_spotify(
        client: &UnisonoClient,
        player: JsValue,
        #[wasm_bindgen(unchecked_optional_param_type = "{ deviceId: string; token: string }")] web_api: Option<JsValue>,
    ) -> JsPlayerSync {
        let web_api = web_api.unwrap_or(JsValue::UNDEFINED);
        JsPlayerSync(PlayerSync::new(&client.inner, player::spotify(&player, &web_api)))
    }

    /// Any object with `load(song)`, `positionMs()`, `isPlaying()`, `play()`, `pause()`,
    /// `seek(ms)`, `setRate(rate)`, and its `capabilities`
    /// (`{canSetRate, rateStep, seekLatencyMs, positionGranularityMs}`).
    pub fn custom(
        client: &UnisonoClient,
        #[wasm_bindgen(unchecked_param_type = "CustomPlayer")] adapter: JsValue,
        #[wasm_bindgen(unchecked_param_type = "PlayerCapabilities")] capabilities: JsValue,
    ) -> Result<JsPlayerSync, JsError> {
        let caps: PlayerCapabilities = crate::sys::from_js(&capabilities)
            .map_err(|e| JsError::new(&e.message()))?
            .ok_or_else(|| JsError::new("capabilities are required"))?;
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
    #[wasm_bindgen(unchecked_return_type = "PlayerSyncStats")]
    pub fn stats(&self) -> JsValue {
        self.0.with_info(to_js)
    }
}
