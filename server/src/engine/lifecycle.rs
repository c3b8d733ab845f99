//! One connection lifecycle for every edge: [`Engine::attach`] does everything a new connection
//! needs (its session, its entries in the connection registry, its device or admin attachment,
//! the connection gauge) and returns the [`Attachment`] the edge hands each request to;
//! [`Attachment::detach`] (or dropping it) undoes all of it, once.
//!
//! What a connection is decides what it gets:
//! - a browser (`/ws`, Socket.IO `/`) gets a session (new, or resumed by its token) and a
//!   `connected` push; with an admin token it also speaks the device admin protocol;
//! - an admin (Socket.IO `/admin`) is attached to its tenant's device hub;
//! - a device (Socket.IO `/players`) gets a device connection, registered by `player:register`.

use std::{net::IpAddr, sync::Arc};

use futures_util::FutureExt;
use unisono_core::{
    Millis, RoomCommand,
    device::{ConnId, DeviceReply},
    protocol::{
        AdminRequest, CommandResponse, Connected, DeviceList, DeviceRequest, ErrorBody, ErrorCode, Push, Request,
    },
};

use super::{Answer, Engine, ReplyData, reply_data};
use crate::{
    auth::{Principal, Role},
    bus::{Outbox, session_topic},
    engine::connections::Kind,
    metrics::METRICS,
    time::now_ms,
};

/// A connection arriving at the engine.
pub struct Attach<'a> {
    pub kind: Kind,
    pub principal: Principal,
    /// Where the engine's messages to this connection go.
    pub outbox: Outbox,
    pub peer: Option<IpAddr>,
    /// A resume token from an earlier `connected` (browsers).
    pub resume: Option<&'a str>,
    /// The edge's own id of the connection (a Socket.IO socket id), by which operators and
    /// publishers may also reach it.
    pub socket_id: Option<String>,
}

/// A request, as an edge parsed it.
#[derive(Debug)]
pub enum EdgeRequest {
    Room(Request),
    Admin(AdminRequest),
    Device(DeviceRequest),
}

/// A session's live connection: the session id and which of its connections this is.
#[derive(Debug, Clone)]
pub struct SessionConn {
    pub session: String,
    pub conn: u64,
}

/// An attached connection. Detaches when [`Attachment::detach`]ed or dropped.
pub struct Attachment {
    engine: Engine,
    pub kind: Kind,
    pub principal: Arc<Principal>,
    session: Option<SessionConn>,
    /// The connection's id at its tenant's device hub (devices and admins).
    hub_conn: Option<ConnId>,
    admin: bool,
    /// The token of its entry in the connection registry under its session id.
    session_entry: Option<u64>,
    /// The edge's own id (Socket.IO socket id) and the token of its entry under that id.
    socket: Option<(String, u64)>,
    outbox: Outbox,
    detached: bool,
}

impl Engine {
    /// Attaches a connection (see the module doc). Pushes `connected` first to a browser.
    pub async fn attach(&self, a: Attach<'_>) -> Attachment {
        METRICS.connections.inc();
        let admin = a.principal.role == Role::Admin && matches!(a.kind, Kind::Browser | Kind::Admin);
        let principal = Arc::new(a.principal);
        let tenant = &principal.tenant;
        let mut att = Attachment {
            engine: self.clone(),
            kind: a.kind,
            principal: principal.clone(),
            session: None,
            hub_conn: None,
            admin,
            session_entry: None,
            socket: None,
            outbox: a.outbox.clone(),
            detached: false,
        };
        if a.kind == Kind::Browser {
            let s = self.inner.sessions.attach(a.resume, a.outbox.clone(), a.peer, principal.clone());
            if let Some(old) = s.replaced {
                old.close(4001, "session resumed on another connection");
            }
            // Reachable from other nodes before anything is sent to it.
            self.bus().subscribe_session(&session_topic(tenant, &s.id), &s.id, a.outbox.clone()).await;
            let hello = Push::Connected(Connected {
                session_id: s.id.clone(),
                resume_token: s.resume_token,
                server_time: now_ms(),
                resumed: s.resumed,
            });
            super::rooms::send(self, tenant, &s.id, &hello);
            att.session_entry = Some(self.connections().add(&s.id, tenant, a.kind, a.outbox.clone(), None));
            att.session = Some(SessionConn { session: s.id.clone(), conn: s.conn });
            if let Some(w) = self.watcher() {
                let seen = super::peers::SeenSession {
                    session: s.id.clone(),
                    sub: principal.sub.clone(),
                    ip: a.peer,
                    room: s.room.clone(),
                };
                w.connected(tenant, &seen);
            }
            if let Some(code) = s.room {
                Box::pin(self.rejoin(&s.id, code)).await;
            }
        }
        if let Some(sid) = a.socket_id {
            let token = self.connections().add(&sid, tenant, a.kind, a.outbox.clone(), None);
            att.socket = Some((sid, token));
        }
        if admin || a.kind == Kind::Device {
            let conn = self.devices().next_conn();
            self.devices().attach(tenant, conn, a.outbox, admin).await;
            att.hub_conn = Some(conn);
        }
        att
    }

    /// The connection closed: its session waits `resume_grace` for a resume, then leaves its room.
    async fn detach_session(&self, tenant: &str, c: &SessionConn) {
        let Some(room_code) = self.inner.sessions.detach(&c.session, c.conn) else { return };
        if let (Some(w), Some(p)) = (self.watcher(), self.inner.sessions.principal(&c.session)) {
            w.disconnected(tenant, &c.session, &p.sub);
        }
        self.bus().unsubscribe_session(&session_topic(tenant, &c.session), &c.session);
        if let Some(code) = &room_code {
            self.bus().unsubscribe(&crate::bus::room_topic(tenant, code), &c.session);
            if let Ok(Some(room)) = self.room(tenant, code).await {
                self.tell(&room, RoomCommand::Disconnect { session: c.session.clone() }).await;
            }
        }
        let tenant = tenant.to_owned();
        let engine = self.clone();
        let c = c.clone();
        let stopping = self.inner.stopping.clone();
        self.inner.tasks.spawn(async move {
            tokio::select! {
                _ = tokio::time::sleep(engine.inner.config.resume_grace) => {}
                _ = stopping.cancelled() => return,
            }
            if let Some(Some(code)) = engine.inner.sessions.expire(&c.session, c.conn)
                && let Ok(Some(room)) = engine.room(&tenant, &code).await
            {
                engine.tell(&room, RoomCommand::Leave { session: c.session.clone() }).await;
            }
        });
    }
}

fn forbidden(msg: &str) -> ErrorBody {
    ErrorBody::new(ErrorCode::Forbidden, msg)
}

impl Attachment {
    /// The session id (browsers).
    pub fn session_id(&self) -> Option<&str> {
        self.session.as_ref().map(|s| s.session.as_str())
    }

    /// Handles one request. `received_at` is the server time it arrived (time sync's `t1`).
    pub async fn handle(&self, req: EdgeRequest, received_at: Millis) -> Answer {
        match req {
            EdgeRequest::Room(r) => match &self.session {
                Some(s) => Answer::Now(Box::pin(self.engine.handle_room(&s.session, r, received_at)).await),
                None => Answer::Now(Err(forbidden("room requests need a browser connection"))),
            },
            EdgeRequest::Admin(r) => match self.hub_conn.filter(|_| self.admin) {
                Some(conn) => self.admin_request(conn, r).await,
                None => Answer::Now(Err(forbidden("device admin events need an admin token"))),
            },
            EdgeRequest::Device(r) => match self.hub_conn.filter(|_| self.kind == Kind::Device) {
                Some(conn) => self.device_request(conn, r).await,
                None => Answer::Now(Err(forbidden("device events need a player connection"))),
            },
        }
    }

    async fn admin_request(&self, conn: ConnId, req: AdminRequest) -> Answer {
        let devices = self.engine.devices();
        let tenant = &self.principal.tenant;
        let not_found = || ErrorBody::new(ErrorCode::DeviceNotFound, "no such device");
        Answer::Now(match req {
            AdminRequest::List => reply_data(&DeviceList { devices: devices.list(tenant).await }),
            AdminRequest::Subscribe(s) => {
                devices.subscribe(tenant, conn, s.device_ids).await.and_then(|r| device_reply(&r))
            }
            AdminRequest::Unsubscribe => {
                devices.unsubscribe(tenant, conn).await;
                reply_data(&serde_json::json!({}))
            }
            AdminRequest::Resync(d) => {
                devices.resync(tenant, &d.device_id).await.ok_or_else(not_found).and_then(|v| reply_data(&v))
            }
            AdminRequest::Stats => reply_data(&devices.stats(tenant).await),
            // Queued in order now, answered when done while later requests go on.
            AdminRequest::Command(c) => match devices.submit_command(tenant, c, Some(conn)).await {
                Ok(done) => return Answer::Later(async move { done.await.and_then(|o| reply_data(&o)) }.boxed()),
                Err(e) => Err(e),
            },
        })
    }

    async fn device_request(&self, conn: ConnId, req: DeviceRequest) -> Answer {
        let devices = self.engine.devices().clone();
        let tenant = self.principal.tenant.clone();
        match req {
            DeviceRequest::Register(r) => {
                let result = devices.register(&tenant, &self.principal.sub, conn, r).await;
                if let (Ok(DeviceReply::Registered(reg)), Some((sid, _))) = (&result, &self.socket) {
                    self.engine.connections().set_device(sid, &reg.device_id);
                }
                Answer::Now(result.and_then(|r| device_reply(&r)))
            }
            // Queued in order now; acknowledged once stored, without holding up this device's next
            // events (a command answer must not wait behind a commit).
            DeviceRequest::State(state) => match devices.state(&tenant, conn, state).await {
                Ok(stored) => Answer::Later(async move { stored.await.and_then(|r| device_reply(&r)) }.boxed()),
                Err(e) => Answer::Now(Err(e)),
            },
            DeviceRequest::CommandResponse(resp) => {
                Answer::Now(devices.command_response(&tenant, conn, resp).await.and_then(|r| device_reply(&r)))
            }
        }
    }

    /// A device's answer to `player:command` through the event's ack callback.
    pub fn command_ack(&self) -> impl Fn(CommandResponse) + Send + Sync + 'static {
        let (devices, tenant, conn) = (self.engine.devices().clone(), self.principal.tenant.clone(), self.hub_conn);
        move |resp| {
            let (devices, tenant) = (devices.clone(), tenant.clone());
            if let Some(conn) = conn {
                tokio::spawn(async move { devices.command_ack(&tenant, conn, resp).await });
            }
        }
    }

    /// Detaches the connection: out of the registry, its session into its grace period, its
    /// device offline, its admin subscriptions gone.
    pub async fn detach(mut self) {
        if let Some(d) = self.take_detach() {
            d.run().await;
        }
    }

    /// What detaching this connection takes, once: the first call closes the outbox and takes
    /// its entries out of the attachment; later calls (the drop after `detach`) get `None`.
    fn take_detach(&mut self) -> Option<Detach> {
        if std::mem::replace(&mut self.detached, true) {
            return None;
        }
        self.outbox.close(1000, "bye");
        Some(Detach {
            engine: self.engine.clone(),
            tenant: self.principal.tenant.clone(),
            session: self.session.take(),
            session_entry: self.session_entry.take(),
            socket: self.socket.take(),
            hub_conn: self.hub_conn,
        })
    }
}

/// A connection's detach, taken out of its attachment.
struct Detach {
    engine: Engine,
    tenant: String,
    session: Option<SessionConn>,
    session_entry: Option<u64>,
    socket: Option<(String, u64)>,
    hub_conn: Option<ConnId>,
}

impl Detach {
    async fn run(self) {
        let Detach { engine, tenant, session, session_entry, socket, hub_conn } = self;
        if let (Some(s), Some(token)) = (&session, session_entry) {
            engine.connections().remove(&s.session, token);
        }
        if let Some((id, token)) = &socket {
            engine.connections().remove(id, *token);
        }
        if let Some(conn) = hub_conn {
            engine.devices().detach(&tenant, conn).await;
        }
        if let Some(s) = &session {
            Box::pin(engine.detach_session(&tenant, s)).await;
        }
        METRICS.connections.dec();
    }
}

impl Drop for Attachment {
    fn drop(&mut self) {
        // Dropped without `detach` (the edge's task ended early): detach all the same.
        if let (Some(d), Ok(rt)) = (self.take_detach(), tokio::runtime::Handle::try_current()) {
            rt.spawn(d.run());
        }
    }
}

/// A device reply's data: `null` for a command response's ack (as before), the value otherwise.
fn device_reply(r: &DeviceReply) -> Result<ReplyData, ErrorBody> {
    match r {
        DeviceReply::Registered(v) => reply_data(v),
        DeviceReply::State(v) => reply_data(v),
        DeviceReply::Devices(v) => reply_data(v),
        DeviceReply::Done => reply_data(&()),
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use unisono_core::protocol::{AdminRequest, DeviceRequest, ErrorCode, Request};

    use super::*;
    use crate::{bus::Outbox, testing};

    fn principal(role: Role) -> Principal {
        Principal { sub: "kiosk-1".into(), tenant: "acme".into(), role }
    }

    fn attach(kind: Kind, role: Role, outbox: Outbox, socket_id: Option<&str>) -> Attach<'static> {
        Attach {
            kind,
            principal: principal(role),
            outbox,
            peer: None,
            resume: None,
            socket_id: socket_id.map(Into::into),
        }
    }

    fn error_of(a: Answer) -> Option<ErrorCode> {
        match a {
            Answer::Now(Err(e)) => Some(e.code),
            _ => None,
        }
    }

    #[tokio::test]
    async fn a_dropped_attachment_detaches_everything_once() {
        let (engine, _dir) = testing::engine("lifecycle-drop").await;
        let (outbox, mut inbox) = Outbox::new(16);
        let att = engine.attach(attach(Kind::Browser, Role::User, outbox, Some("sid-1"))).await;
        let session = att.session_id().expect("a browser has a session").to_owned();
        // `connected` first, through the session's own topic.
        let hello = inbox.rx.recv().await.expect("connected");
        assert_eq!(hello.as_event().map(|(e, _)| e), Some("connected"));
        // Registered by its session id and its socket id; its session has its outbox.
        assert_eq!(engine.connections().counts(), vec![("acme".to_owned(), Kind::Browser, 2)]);
        assert!(engine.sessions().outbox(&session).is_some());
        drop(att);
        testing::eventually("the registry forgets a dropped connection", Duration::from_secs(2), || {
            engine.connections().counts().is_empty() && engine.sessions().outbox(&session).is_none()
        })
        .await;
        // Its outbox was closed, and the session expires after the resume grace.
        assert_eq!(inbox.kill.killed().await.0, 1000);
        testing::eventually("the session expires after its grace", Duration::from_secs(2), || {
            engine.sessions().is_empty()
        })
        .await;
    }

    #[tokio::test]
    async fn requests_reach_only_the_connections_allowed_them() {
        let (engine, _dir) = testing::engine("lifecycle-kinds").await;
        let user = engine.attach(attach(Kind::Browser, Role::User, Outbox::new(16).0, None)).await;
        let admin_ws = engine.attach(attach(Kind::Browser, Role::Admin, Outbox::new(16).0, None)).await;
        let device = engine.attach(attach(Kind::Device, Role::Player, Outbox::new(16).0, Some("sid-d"))).await;
        // A user token on /ws has no device admin protocol; an admin token has.
        assert_eq!(
            error_of(user.handle(EdgeRequest::Admin(AdminRequest::List), 0.0).await),
            Some(ErrorCode::Forbidden)
        );
        assert!(matches!(admin_ws.handle(EdgeRequest::Admin(AdminRequest::List), 0.0).await, Answer::Now(Ok(_))));
        // A device has no room protocol, a browser no device protocol.
        let room = EdgeRequest::Room(Request::GetPlaybackState);
        assert_eq!(error_of(device.handle(room, 0.0).await), Some(ErrorCode::Forbidden));
        let state = EdgeRequest::Device(DeviceRequest::State(serde_json::json!({})));
        assert_eq!(error_of(user.handle(state, 0.0).await), Some(ErrorCode::Forbidden));
        // A device registers as its token's subject, and is found by its socket id afterwards.
        let reg = DeviceRequest::Register(Default::default());
        assert!(matches!(device.handle(EdgeRequest::Device(reg), 0.0).await, Answer::Now(Ok(_))));
        testing::eventually("the device is online", Duration::from_secs(2), || {
            engine.connections().counts().len() == 2
        })
        .await;
        assert_eq!(
            engine.devices().list("acme").await.iter().map(|d| (d.device_id.as_str(), d.online)).collect::<Vec<_>>(),
            [("kiosk-1", true)]
        );
        device.detach().await;
        let mut offline = false;
        for _ in 0..200 {
            if engine.devices().get("acme", "kiosk-1").await.is_some_and(|d| !d.online) {
                offline = true;
                break;
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        assert!(offline, "a detached device goes offline");
    }
}
