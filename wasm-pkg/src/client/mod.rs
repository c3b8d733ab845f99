//! The browser client: one WebSocket to `/ws`, time sync, room state, requests completed by
//! callbacks ([`Done`]; futures for Rust callers, promises for JavaScript), reconnect with the
//! resume token. Shared by the npm package (wrapped for JavaScript in
//! `js_client.rs`) and the Yew app (used directly from Rust), so both run one implementation.
//!
//! - [`state`]: the sans-IO half (session, clock estimate, room view; how frames change them).
//! - [`Client`]: the driver: socket, timers, pending requests, listeners.
//!
//! Besides the room protocol it carries any request/push protocol the server speaks on `/ws`
//! (the device admin protocol, docs/socketio.md §3): [`Client::request_event`] sends an event by
//! name and awaits its reply, and pushes the core does not model reach listeners as
//! [`ClientEvent::Push`].
//!
//! Local time is `performance.now()` only. Positions are computed from the timing vector when
//! asked, never advanced by timers, so a throttled background tab is right as soon as it looks.

use crate::prelude::*;

pub mod state;

use alloc::rc::{Rc, Weak};
use core::cell::Cell;

use crate::cell::RefCell;

use futures_channel::oneshot;
use unisono_core::{
    protocol::{CreateRoom, JoinRoom, Push, Request, TimeSync},
    song::Song,
    tree::{Tree, frame},
};
use wasm_bindgen::prelude::*;

pub use state::{Change, ClientError, RoomView, SyncStats};

use crate::sys::{self, Js};

/// A push outside the room protocol, its `data` as `JSON.parse` gave it.
pub type RawPush = state::RawPush<JsValue>;

/// Samples sent back to back after every (re)connect.
const BURST: u32 = 8;
/// Pause between periodic samples once the burst is done.
const SYNC_EVERY_MS: f64 = 2000.0;
/// A request without a reply after this long fails with `TIMEOUT`.
pub const REQUEST_TIMEOUT_MS: f64 = 10_000.0;
/// Reconnect delays: the first retry is quick (a resume should be back within a second).
const BACKOFF_MS: &[f64] = &[100.0, 300.0, 700.0, 1500.0, 3000.0, 5000.0];
/// Close code the server uses when another connection resumed this session.
const CLOSE_TAKEN_OVER: u16 = 4001;

/// Where the connection stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ConnectionState {
    /// Not connected and not trying (never connected, or `close()`d, or taken over).
    Closed,
    Connecting,
    /// The `connected` push arrived.
    Open,
    /// Dropped; a reconnect with the resume token is scheduled.
    Reconnecting,
}

impl ConnectionState {
    pub fn as_str(self) -> &'static str {
        match self {
            ConnectionState::Closed => "closed",
            ConnectionState::Connecting => "connecting",
            ConnectionState::Open => "open",
            ConnectionState::Reconnecting => "reconnecting",
        }
    }
}

/// What listeners hear.
#[derive(Debug, Clone, PartialEq)]
pub enum ClientEvent {
    Connection(ConnectionState),
    Changed(Change),
    /// A push outside the room protocol (e.g. `device:online`, `state:updated` on an admin
    /// connection), as it came; the client keeps no state for it.
    Push(RawPush),
}

type Listener = Rc<dyn Fn(&ClientEvent)>;
/// Completes a request (or a connect): called once, with the reply's data as `JSON.parse` gave
/// it, or the error. JavaScript's promises and Rust's futures are both made from one of these
/// ([`Client::request_then`], [`Client::request`]), so the npm wasm carries no future
/// machinery for its requests.
pub type Done = Box<dyn FnOnce(Result<JsValue, ClientError>)>;
type Waiter = Done;

enum Pending {
    TimeSync { t0: f64 },
    Request(Waiter),
}

/// A socket event handler. One closure type for all four: wasm-bindgen's glue is per type.
type Handler = Closure<dyn FnMut(JsValue)>;

/// The socket and its handlers; dropping it detaches the handlers.
struct Socket {
    ws: sys::WebSocket,
    _onopen: Handler,
    _onmessage: Handler,
    _onclose: Handler,
    /// A close always follows an error; the handler exists so Node's `ws` does not throw.
    _onerror: Handler,
}

impl Drop for Socket {
    fn drop(&mut self) {
        self.ws.set_onopen(&JsValue::NULL);
        self.ws.set_onmessage(&JsValue::NULL);
        self.ws.set_onclose(&JsValue::NULL);
        self.ws.set_onerror(&JsValue::NULL);
        let _ = self.ws.close();
    }
}

struct Inner {
    state: state::State,
    url: String,
    socket: Option<Socket>,
    conn: ConnectionState,
    /// Bumped by every new socket; timers and handlers of an older one do nothing.
    generation: u32,
    /// Requests awaiting their reply, by id (a few at a time: a list is enough).
    pending: Vec<(u64, Pending)>,
    /// Frames written before the socket opened (the server buffers frames until `connected`),
    /// as JavaScript strings.
    outbox: Vec<(u64, JsValue)>,
    attempt: usize,
    burst_left: u32,
    connect_waiters: Vec<Waiter>,
    /// Room to re-join if a reconnect yields a new session (server restart, expired token).
    rejoin: Option<(String, Option<String>)>,
}

struct Shared {
    inner: RefCell<Inner>,
    listeners: RefCell<Vec<(u32, Listener)>>,
    next_listener: Cell<u32>,
}

/// A cheap, cloneable handle to one client connection. See the [module docs](self).
#[derive(Clone)]
pub struct Client(Rc<Shared>);

/// A weak handle, for listeners that must not keep their client alive.
#[derive(Clone)]
pub struct WeakClient(Weak<Shared>);

impl WeakClient {
    pub fn upgrade(&self) -> Option<Client> {
        upgrade(&self.0)
    }
}

/// Handle returned by [`Client::subscribe`]; pass it to [`Client::unsubscribe`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ListenerId(u32);

impl Default for Client {
    fn default() -> Self {
        Self::new()
    }
}

impl Client {
    pub fn new() -> Self {
        Client(Rc::new(Shared {
            inner: RefCell::new(Inner {
                state: state::State::default(),
                url: String::new(),
                socket: None,
                conn: ConnectionState::Closed,
                generation: 0,
                pending: Vec::new(),
                outbox: Vec::new(),
                attempt: 0,
                burst_left: 0,
                connect_waiters: Vec::new(),
                rejoin: None,
            }),
            listeners: RefCell::new(Vec::new()),
            next_listener: Cell::new(0),
        }))
    }

    pub fn downgrade(&self) -> WeakClient {
        WeakClient(Rc::downgrade(&self.0))
    }

    /// Calls `f` on every connection change and state change, after the state is updated.
    pub fn subscribe(&self, f: impl Fn(&ClientEvent) + 'static) -> ListenerId {
        let id = self.0.next_listener.get();
        self.0.next_listener.set(id + 1);
        self.0.listeners.borrow_mut().push((id, Rc::new(f)));
        ListenerId(id)
    }

    pub fn unsubscribe(&self, id: ListenerId) {
        self.0.listeners.borrow_mut().retain(|(i, _)| *i != id.0);
    }

    fn emit(&self, events: Vec<ClientEvent>) {
        if events.is_empty() {
            return;
        }
        // Clone the list first: a listener may subscribe, unsubscribe or call back into us.
        let listeners: Vec<Listener> = self.0.listeners.borrow().iter().map(|(_, l)| l.clone()).collect();
        for e in &events {
            for l in &listeners {
                l(e);
            }
        }
    }

    /// Connects to `url` (e.g. `wss://host/ws`); resolves when the server's `connected` push
    /// arrives. Drops are then handled by reconnecting with the resume token.
    pub fn connect(&self, url: &str) -> impl Future<Output = Result<(), ClientError>> + 'static {
        let (done, f) = future();
        self.connect_then(url, done);
        async move { f.await.map(|_| ()) }
    }

    /// [`Client::connect`] with a callback: `done(Ok(undefined))` once connected.
    pub fn connect_then(&self, url: &str, done: Done) {
        let already = {
            let mut inner = self.0.inner.borrow_mut();
            inner.url = url.to_owned();
            inner.attempt = 0;
            if inner.conn == ConnectionState::Open {
                Some(done)
            } else {
                inner.connect_waiters.push(done);
                None
            }
        };
        match already {
            Some(done) => done(Ok(JsValue::UNDEFINED)),
            None => self.open_socket(ConnectionState::Connecting),
        }
    }

    /// Closes the connection for good (no reconnect); pending requests fail with `CLOSED`.
    pub fn close(&self) {
        let waiters = {
            let mut inner = self.0.inner.borrow_mut();
            inner.generation += 1;
            inner.socket = None;
            inner.conn = ConnectionState::Closed;
            inner.outbox.clear();
            take_waiters(&mut inner)
        };
        fail_all(waiters, ClientError::new("CLOSED", "client closed"));
        self.emit(vec![ClientEvent::Connection(ConnectionState::Closed)]);
    }

    fn open_socket(&self, conn: ConnectionState) {
        let (url, generation) = {
            let mut inner = self.0.inner.borrow_mut();
            inner.generation += 1;
            inner.socket = None;
            inner.conn = conn;
            let url = match &inner.state.resume_token {
                Some(t) => sys::text(&[&inner.url, if inner.url.contains('?') { "&" } else { "?" }, "resume=", t]),
                None => inner.url.clone(),
            };
            (url, inner.generation)
        };
        self.emit(vec![ClientEvent::Connection(conn)]);
        let ws = match sys::WebSocket::new(&url) {
            Ok(ws) => ws,
            Err(e) => {
                let msg = e.as_string().unwrap_or_else(|| "could not open the socket".to_owned());
                let waiters = core::mem::take(&mut self.0.inner.borrow_mut().connect_waiters);
                for w in waiters {
                    w(Err(ClientError::new("CONNECT_FAILED", msg.clone())));
                }
                self.on_close(generation, 1006);
                return;
            }
        };
        let weak = Rc::downgrade(&self.0);
        let onopen = {
            let weak = weak.clone();
            Handler::new(move |_| {
                if let Some(c) = upgrade(&weak) {
                    c.on_open(generation);
                }
            })
        };
        let onmessage = {
            let weak = weak.clone();
            Handler::new(move |e: JsValue| {
                let t3 = sys::now();
                if let Some(c) = upgrade(&weak) {
                    c.on_text(generation, &sys::field(&e, "data"), t3);
                }
            })
        };
        let onclose = Handler::new(move |e: JsValue| {
            if let Some(c) = upgrade(&weak) {
                c.on_close(generation, sys::field(&e, "code").as_f64().map_or(1006, |c| c as u16));
            }
        });
        ws.set_onopen(onopen.as_ref());
        ws.set_onmessage(onmessage.as_ref());
        ws.set_onclose(onclose.as_ref());
        let onerror = Handler::new(|_| {});
        ws.set_onerror(onerror.as_ref());
        self.0.inner.borrow_mut().socket =
            Some(Socket { ws, _onopen: onopen, _onmessage: onmessage, _onclose: onclose, _onerror: onerror });
    }

    fn on_open(&self, generation: u32) {
        let mut inner = self.0.inner.borrow_mut();
        if inner.generation != generation {
            return;
        }
        let frames = core::mem::take(&mut inner.outbox);
        if let Some(s) = &inner.socket {
            for (_, f) in frames {
                sys::send(&s.ws, &f);
            }
        }
    }

    fn on_close(&self, generation: u32, code: u16) {
        let (waiters, next) = {
            let mut inner = self.0.inner.borrow_mut();
            if inner.generation != generation {
                return;
            }
            inner.socket = None;
            // Requests in flight are lost with the connection (replies go to the old socket).
            let waiters = take_waiters(&mut inner);
            let next = if code == CLOSE_TAKEN_OVER || inner.url.is_empty() {
                ConnectionState::Closed
            } else {
                ConnectionState::Reconnecting
            };
            inner.conn = next;
            (waiters, next)
        };
        let msg = sys::text(&["connection closed (", &sys::decimal(code.into()), ")"]);
        fail_all(waiters, ClientError::new("DISCONNECTED", msg));
        let mut events = vec![ClientEvent::Connection(next)];
        if code == CLOSE_TAKEN_OVER {
            events.push(ClientEvent::Changed(Change::Error(ClientError::new(
                "SESSION_TAKEN_OVER",
                "session resumed on another connection",
            ))));
        }
        self.emit(events);
        if next == ConnectionState::Reconnecting {
            let delay = {
                let mut inner = self.0.inner.borrow_mut();
                let d = BACKOFF_MS[inner.attempt.min(BACKOFF_MS.len() - 1)];
                inner.attempt += 1;
                d * (0.75 + 0.5 * sys::random())
            };
            let weak = Rc::downgrade(&self.0);
            sys::set_timeout(delay, move || {
                if let Some(c) = upgrade(&weak) {
                    let current = {
                        let inner = c.0.inner.borrow();
                        inner.generation == generation && inner.conn == ConnectionState::Reconnecting
                    };
                    if current {
                        c.open_socket(ConnectionState::Reconnecting);
                    }
                }
            });
        }
    }

    /// A text frame (a JavaScript string, parsed by `JSON.parse`; a binary frame is an error).
    fn on_text(&self, generation: u32, text: &JsValue, t3: f64) {
        if self.0.inner.borrow().generation != generation {
            return;
        }
        let parsed = if text.is_string() { sys::parse(text) } else { None };
        let decoded = match parsed {
            Some(v) => state::decode(&Js(v)),
            None => Err("invalid frame from server: not JSON text".to_owned()),
        };
        match decoded {
            Ok(state::Incoming::Reply(r)) => self.on_reply(generation, r, t3),
            Ok(state::Incoming::Push(p)) => self.on_push(generation, *p, t3),
            Ok(state::Incoming::Other(p)) => {
                self.emit(vec![ClientEvent::Push(RawPush { event: p.event, data: p.data.0 })]);
            }
            Err(e) => self.emit(vec![ClientEvent::Changed(Change::Error(ClientError::new("BAD_FRAME", e)))]),
        }
    }

    fn on_reply(&self, generation: u32, r: state::IncomingReply<Js>, t3: f64) {
        let pending = take(&mut self.0.inner.borrow_mut().pending, r.id);
        match pending {
            Some(Pending::TimeSync { t0 }) => {
                let accepted = match &r.data {
                    Some(d) if r.ok => self.0.inner.borrow_mut().state.on_time_sync(t0, d, t3),
                    _ => false,
                };
                if accepted {
                    self.emit(vec![ClientEvent::Changed(Change::Sync)]);
                }
                self.after_sample(generation);
            }
            Some(Pending::Request(tx)) => {
                let result = if r.ok {
                    let data = r.data.unwrap_or_else(Js::null);
                    let changes = self.0.inner.borrow_mut().state.on_reply_data(&data);
                    self.emit(changes.into_iter().map(ClientEvent::Changed).collect());
                    Ok(data.0)
                } else {
                    Err(r.error.unwrap_or_else(|| ClientError::new("BAD_REPLY", "no error body")))
                };
                tx(result);
            }
            None => {}
        }
    }

    fn on_push(&self, generation: u32, push: Push, t3: f64) {
        let connected = match &push {
            Push::Connected(c) => Some(c.resumed),
            _ => None,
        };
        let changes = self.0.inner.borrow_mut().state.on_push(push, t3);
        let mut events: Vec<ClientEvent> = Vec::new();
        if let Some(resumed) = connected {
            let (waiters, rejoin) = {
                let mut inner = self.0.inner.borrow_mut();
                inner.conn = ConnectionState::Open;
                inner.attempt = 0;
                inner.burst_left = BURST;
                let rejoin = if resumed { None } else { inner.rejoin.clone() };
                (core::mem::take(&mut inner.connect_waiters), rejoin)
            };
            for w in waiters {
                w(Ok(JsValue::UNDEFINED));
            }
            events.push(ClientEvent::Connection(ConnectionState::Open));
            self.send_time_sync(generation);
            let in_room = self.0.inner.borrow().rejoin.clone();
            if let Some((code, name)) = rejoin {
                // A new session (server restart or expired token): back into the room by code.
                self.send(join_request(&code, name.as_deref()));
            } else if let (true, Some((code, name))) = (resumed, in_room) {
                // Resumed, but no `room-joined` follows if we are no longer a member (§1.3): ask.
                let weak = self.downgrade();
                self.request_then(
                    Request::GetPlaybackState,
                    Box::new(move |r| {
                        if let (Err(e), Some(me)) = (r, weak.upgrade())
                            && e.code == "NOT_IN_ROOM"
                        {
                            me.send(join_request(&code, name.as_deref()));
                        }
                    }),
                );
            }
        }
        // Remember the room for a re-join; forget it when we leave for real.
        {
            let mut inner = self.0.inner.borrow_mut();
            if let Some(room) = &inner.state.room {
                let name = room.members.iter().find(|m| m.session_id == room.you).map(|m| m.name.clone());
                inner.rejoin = Some((room.info.code.clone(), name));
            } else if connected.is_none() {
                inner.rejoin = None;
            }
        }
        events.extend(changes.into_iter().map(ClientEvent::Changed));
        self.emit(events);
    }

    /// After a time-sync reply: the next burst sample at once, else one every `SYNC_EVERY_MS`.
    fn after_sample(&self, generation: u32) {
        let burst = {
            let mut inner = self.0.inner.borrow_mut();
            if inner.burst_left > 0 {
                inner.burst_left -= 1;
            }
            inner.burst_left > 0
        };
        if burst {
            self.send_time_sync(generation);
            return;
        }
        let weak = Rc::downgrade(&self.0);
        sys::set_timeout(SYNC_EVERY_MS, move || {
            if let Some(c) = upgrade(&weak) {
                c.send_time_sync(generation);
            }
        });
    }

    fn send_time_sync(&self, generation: u32) {
        let mut inner = self.0.inner.borrow_mut();
        if inner.generation != generation || inner.conn != ConnectionState::Open {
            return;
        }
        let id = inner.state.next_id();
        let t0 = sys::now();
        let text = sys::stringify(&Request::TimeSync(TimeSync { t0 }).to_tree::<Js>(Some(id)).0);
        inner.pending.push((id, Pending::TimeSync { t0 }));
        if let (Some(s), Some(text)) = (&inner.socket, text) {
            sys::send(&s.ws, &text);
        }
        // A lost reply must not stop the sync loop.
        let weak = Rc::downgrade(&self.0);
        sys::set_timeout(REQUEST_TIMEOUT_MS, move || {
            if let Some(c) = upgrade(&weak) {
                let lost = take(&mut c.0.inner.borrow_mut().pending, id).is_some();
                if lost {
                    c.after_sample(generation);
                }
            }
        });
    }

    /// Sends a request; resolves with the reply's `data`, or fails with the server's error code.
    pub fn request(&self, req: Request) -> impl Future<Output = Result<JsValue, ClientError>> + 'static {
        let (done, f) = future();
        self.request_then(req, done);
        f
    }

    /// [`Client::request`] with a callback.
    pub fn request_then(&self, req: Request, done: Done) {
        let id = self.0.inner.borrow_mut().state.next_id();
        self.send_request(id, req.to_tree::<Js>(Some(id)).0, REQUEST_TIMEOUT_MS, done);
    }

    /// Sends a request whose reply nobody waits for (a failure is the server's to report).
    pub fn send(&self, req: Request) {
        self.request_then(req, Box::new(|_| {}));
    }

    /// Sends any event by name (no client-side validation: for protocols the core does not
    /// model, such as the device admin protocol's `devices:subscribe` or `command`) with `data`
    /// (any JSON-representable value; `undefined` or `null` for none) and awaits its reply's
    /// `data`, or fails with the server's code, `INVALID_PAYLOAD` if `data` is not
    /// representable as JSON, or `TIMEOUT` after `timeout_ms`.
    pub fn request_event(
        &self,
        event: &str,
        data: JsValue,
        timeout_ms: f64,
    ) -> impl Future<Output = Result<JsValue, ClientError>> + 'static {
        let (done, f) = future();
        self.request_event_then(event, data, timeout_ms, done);
        f
    }

    /// [`Client::request_event`] with a callback.
    pub fn request_event_then(&self, event: &str, data: JsValue, timeout_ms: f64, done: Done) {
        let id = self.0.inner.borrow_mut().state.next_id();
        let data = if data.is_undefined() || data.is_null() { None } else { Some(Js(data)) };
        self.send_request(id, frame(event, data, Some(id)).0, timeout_ms, done);
    }

    /// Sends a frame (request `id`), or queues it until the socket opens; `done` gets its reply.
    fn send_request(&self, id: u64, frame: JsValue, timeout_ms: f64, done: Done) {
        let Some(text) = sys::stringify(&frame) else {
            done(Err(ClientError::new("INVALID_PAYLOAD", "not representable as JSON")));
            return;
        };
        let refused = {
            let mut inner = self.0.inner.borrow_mut();
            let open = inner.conn == ConnectionState::Open
                || inner.socket.as_ref().is_some_and(|s| s.ws.ready_state() == sys::OPEN);
            match (&inner.socket, open) {
                (Some(s), true) => {
                    sys::send(&s.ws, &text);
                    inner.pending.push((id, Pending::Request(done)));
                    None
                }
                _ if inner.conn == ConnectionState::Closed => Some(done),
                _ => {
                    inner.outbox.push((id, text));
                    inner.pending.push((id, Pending::Request(done)));
                    None
                }
            }
        };
        if let Some(done) = refused {
            done(Err(ClientError::new("NOT_CONNECTED", "call connect() first")));
            return;
        }
        let weak = Rc::downgrade(&self.0);
        sys::set_timeout(timeout_ms, move || {
            let Some(c) = upgrade(&weak) else { return };
            let expired = {
                let mut inner = c.0.inner.borrow_mut();
                inner.outbox.retain(|(i, _)| *i != id);
                take(&mut inner.pending, id)
            };
            if let Some(Pending::Request(done)) = expired {
                let secs = sys::decimal(libm::round(timeout_ms / 1000.0) as u64);
                done(Err(ClientError::new("TIMEOUT", sys::text(&["no reply within ", &secs, " s"]))));
            }
        });
    }

    // ---- typed requests (the ones the app uses) ------------------------------------------

    pub fn create_room(
        &self,
        name: Option<&str>,
        member_name: Option<&str>,
    ) -> impl Future<Output = Result<JsValue, ClientError>> + 'static {
        self.request(Request::CreateRoom(CreateRoom {
            name: name.map(str::to_owned),
            settings: None,
            member_name: member_name.map(str::to_owned),
        }))
    }

    pub fn join_room(
        &self,
        code: &str,
        name: Option<&str>,
    ) -> impl Future<Output = Result<JsValue, ClientError>> + 'static {
        self.request(join_request(code, name))
    }

    pub fn leave_room(&self) -> impl Future<Output = Result<JsValue, ClientError>> + 'static {
        let (done, f) = future();
        self.leave_room_then(done);
        f
    }

    /// [`Client::leave_room`] with a callback.
    pub fn leave_room_then(&self, done: Done) {
        self.0.inner.borrow_mut().rejoin = None;
        self.request_then(Request::LeaveRoom, done);
    }

    pub fn load_song(
        &self,
        song: Song,
        autoplay: bool,
    ) -> impl Future<Output = Result<JsValue, ClientError>> + 'static {
        self.request(Request::LoadSong(unisono_core::protocol::LoadSong { song, autoplay }))
    }

    pub fn pause(&self) -> impl Future<Output = Result<JsValue, ClientError>> + 'static {
        self.request(Request::PausePlayback)
    }

    pub fn resume(&self) -> impl Future<Output = Result<JsValue, ClientError>> + 'static {
        self.request(Request::ResumePlayback)
    }

    pub fn seek(&self, position_ms: f64) -> impl Future<Output = Result<JsValue, ClientError>> + 'static {
        self.request(Request::SeekPlayback(unisono_core::protocol::SeekPlayback { position_ms }))
    }

    pub fn set_rate(&self, rate: f64) -> impl Future<Output = Result<JsValue, ClientError>> + 'static {
        self.request(Request::SetRate(unisono_core::protocol::SetRate { rate }))
    }

    pub fn queue_add(&self, song: Song) -> impl Future<Output = Result<JsValue, ClientError>> + 'static {
        self.request(Request::QueueAdd(unisono_core::protocol::QueueAdd { song }))
    }

    pub fn queue_remove(&self, item_id: &str) -> impl Future<Output = Result<JsValue, ClientError>> + 'static {
        self.request(Request::QueueRemove(unisono_core::protocol::QueueRemove { item_id: item_id.to_owned() }))
    }

    pub fn queue_move(
        &self,
        item_id: &str,
        to_index: usize,
    ) -> impl Future<Output = Result<JsValue, ClientError>> + 'static {
        self.request(Request::QueueMove(unisono_core::protocol::QueueMove { item_id: item_id.to_owned(), to_index }))
    }

    pub fn play_next(&self) -> impl Future<Output = Result<JsValue, ClientError>> + 'static {
        self.request(Request::PlayNext)
    }

    pub fn transfer_host(&self, session_id: &str) -> impl Future<Output = Result<JsValue, ClientError>> + 'static {
        self.request(Request::TransferHost(unisono_core::protocol::TransferHost { session_id: session_id.to_owned() }))
    }

    // ---- state ----------------------------------------------------------------------------

    /// Server time now (ms): `performance.now()` plus the estimated offset.
    pub fn server_now(&self) -> f64 {
        self.0.inner.borrow().state.server_time(sys::now())
    }

    /// Local `performance.now()` time of server time `server`.
    pub fn to_local(&self, server: f64) -> f64 {
        self.0.inner.borrow().state.local_time(server)
    }

    /// The room's position now (ms), if in a room.
    pub fn position_now(&self) -> Option<f64> {
        self.0.inner.borrow().state.position_at_local(sys::now())
    }

    /// A copy of the room view, if in a room.
    pub fn room(&self) -> Option<RoomView> {
        self.0.inner.borrow().state.room.clone()
    }

    /// Reads the room view without copying it.
    pub fn with_room<R>(&self, f: impl FnOnce(Option<&RoomView>) -> R) -> R {
        f(self.0.inner.borrow().state.room.as_ref())
    }

    pub fn session_id(&self) -> Option<String> {
        self.0.inner.borrow().state.session_id.clone()
    }

    pub fn connection(&self) -> ConnectionState {
        self.0.inner.borrow().conn
    }

    pub fn sync_stats(&self) -> SyncStats {
        self.0.inner.borrow().state.sync_stats()
    }
}

/// `join-room` with this code and name.
fn join_request(code: &str, name: Option<&str>) -> Request {
    Request::JoinRoom(JoinRoom { code: code.to_owned(), name: name.map(str::to_owned) })
}

/// The Rust face of a callback-completed operation: the callback to hand it, and the future of
/// its result.
fn future() -> (Done, impl Future<Output = Result<JsValue, ClientError>> + 'static) {
    let (tx, rx) = oneshot::channel();
    let done: Done = Box::new(move |r| {
        let _ = tx.send(r);
    });
    (done, async move { rx.await.unwrap_or_else(|_| Err(ClientError::new("CLOSED", "client closed"))) })
}

/// Removes and returns the pending entry of request `id`.
fn take(pending: &mut Vec<(u64, Pending)>, id: u64) -> Option<Pending> {
    let i = pending.iter().position(|(p, _)| *p == id)?;
    Some(pending.swap_remove(i).1)
}

fn upgrade(weak: &Weak<Shared>) -> Option<Client> {
    weak.upgrade().map(Client)
}

/// Takes every pending request waiter (time-sync entries are dropped too).
fn take_waiters(inner: &mut Inner) -> Vec<Waiter> {
    inner.outbox.clear();
    // `mem::take` rather than `drain(..)`: the same here, without `Drain`'s code per type.
    core::mem::take(&mut inner.pending)
        .into_iter()
        .filter_map(|(_, p)| match p {
            Pending::Request(tx) => Some(tx),
            Pending::TimeSync { .. } => None,
        })
        .chain(core::mem::take(&mut inner.connect_waiters))
        .collect()
}

fn fail_all(waiters: Vec<Waiter>, e: ClientError) {
    for w in waiters {
        w(Err(e.clone()));
    }
}
