//! The room actor: one task owns one [`Room`] state machine, under a [`Lease`].
//!
//! Commands arrive over a bounded channel; the actor applies each at the current server time,
//! writes the record when the core asks for it (**before** any reply or broadcast), then carries
//! out the effects: broadcasts are serialized once and published on the room's topic, messages
//! to one member on that member's session topic, replies go back to the caller. Deadlines (host
//! grace, ready barrier, end of song, empty TTL) are slept on here.
//!
//! A write refused because the lease moved on ([`StoreError::Fenced`]: another node owns the
//! room now) ends the actor at once, without a reply or push of the refused change: the room is
//! the new owner's.

use std::{
    sync::Arc,
    time::{Duration, Instant},
};

use tokio::sync::{mpsc, oneshot};
use unisono_core::{
    Room, RoomCommand, RoomEffect,
    protocol::{ErrorBody, ErrorCode, Push, RoomReply},
};

use super::{Engine, member_nodes::MemberNodes};
use crate::{
    bus::{Outgoing, room_topic, session_topic},
    metrics::METRICS,
    store::{Lease, StoreError},
    time::{instant_at, now_ms},
};

/// Commands waiting per room before callers are slowed down.
const MAILBOX: usize = 1024;

/// What a room command answers.
pub type RoomResult = Result<RoomReply, ErrorBody>;

struct Msg {
    cmd: RoomCommand,
    /// The node the command came from, when another node forwarded it.
    from: Option<Arc<str>>,
    reply: Option<oneshot::Sender<RoomResult>>,
}

/// Address of a running room actor; cheap to clone (one reference count: the directory hands
/// out a clone for every request).
#[derive(Clone)]
pub struct RoomHandle(Arc<HandleInner>);

/// What a [`RoomHandle`] holds.
pub struct HandleInner {
    tx: mpsc::Sender<Msg>,
    pub code: Arc<str>,
    /// The owning tenant: a room is invisible to every other tenant.
    pub tenant: Arc<str>,
    /// Cancelled when this node must stop applying the room's commands (its lease went to
    /// another node).
    abandoned: tokio_util::sync::CancellationToken,
    /// The nodes of the members that are on other nodes.
    pub member_nodes: Arc<MemberNodes>,
}

impl std::ops::Deref for RoomHandle {
    type Target = HandleInner;
    fn deref(&self) -> &HandleInner {
        &self.0
    }
}

fn closed() -> ErrorBody {
    ErrorBody::new(ErrorCode::RoomClosed, "the room is closed")
}

impl RoomHandle {
    /// Starts the actor for `room`, owned under `lease`.
    pub fn spawn(room: Room, lease: Lease, engine: Engine) -> RoomHandle {
        let (tx, rx) = mpsc::channel(MAILBOX);
        let abandoned = tokio_util::sync::CancellationToken::new();
        let member_nodes = Arc::new(MemberNodes::default());
        let handle = RoomHandle(Arc::new(HandleInner {
            tx,
            code: room.code().into(),
            tenant: room.tenant().into(),
            abandoned: abandoned.clone(),
            member_nodes: member_nodes.clone(),
        }));
        engine.tasks().spawn(run(room, lease, rx, Shared { abandoned, member_nodes }, engine.clone()));
        handle
    }

    /// Gives the room up at once, as when a write is fenced: nothing more is applied here.
    pub fn abandon(&self) {
        self.abandoned.cancel();
    }

    /// Applies a command and waits for its reply.
    pub async fn call(&self, cmd: RoomCommand) -> RoomResult {
        self.call_from(cmd, None).await
    }

    /// Applies a command that node `from` forwarded (`None`: from this node).
    pub async fn call_from(&self, cmd: RoomCommand, from: Option<Arc<str>>) -> RoomResult {
        let (tx, rx) = oneshot::channel();
        self.tx.send(Msg { cmd, from, reply: Some(tx) }).await.map_err(|_| closed())?;
        rx.await.map_err(|_| closed())?
    }

    /// Sends a command without waiting (disconnects, expiries).
    pub async fn tell(&self, cmd: RoomCommand) {
        let _ = self.tx.send(Msg { cmd, from: None, reply: None }).await;
    }
}

/// A push serialized once; one that does not serialize is a bug, logged and counted, never
/// sent as an empty frame.
fn serialized(push: &Push) -> Option<Outgoing> {
    Outgoing::push(push)
        .inspect_err(|e| {
            tracing::error!(error = %e, "a push did not serialize");
            METRICS.errors.with_label_values(&[ErrorCode::Internal.as_str()]).inc();
        })
        .ok()
}

/// Publishes a push on `topic`.
pub(crate) fn publish(engine: &Engine, topic: &str, push: &Push, except: Option<&str>) {
    if let Some(msg) = serialized(push) {
        engine.bus().publish(topic, &msg, except);
    }
}

/// Sends a push to one session of `tenant`: straight to its connection when it is on this
/// node, else on its session topic, for the node it is on.
pub(crate) fn send(engine: &Engine, tenant: &str, session: &str, push: &Push) {
    let Some(msg) = serialized(push) else { return };
    match engine.sessions().outbox_in(tenant, session) {
        Some(outbox) => {
            outbox.push(msg);
        }
        None => engine.bus().publish(&session_topic(tenant, session), &msg, None),
    }
}

/// What the actor shares with its handles.
struct Shared {
    abandoned: tokio_util::sync::CancellationToken,
    member_nodes: Arc<MemberNodes>,
}

/// How a command changes who is in the room.
enum Membership {
    /// The session is in the room (joined, reconnected, re-announced).
    Present(String),
    Gone(String),
}

impl Membership {
    fn of(cmd: &RoomCommand) -> Option<Membership> {
        match cmd {
            RoomCommand::Join { session, .. } | RoomCommand::Reconnect { session } => {
                Some(Membership::Present(session.clone()))
            }
            RoomCommand::Restore { member } => Some(Membership::Present(member.session_id.clone())),
            RoomCommand::Leave { session } => Some(Membership::Gone(session.clone())),
            _ => None,
        }
    }
}

async fn run(mut room: Room, lease: Lease, mut rx: mpsc::Receiver<Msg>, shared: Shared, engine: Engine) {
    let Shared { abandoned, member_nodes } = shared;
    let topic = room_topic(room.tenant(), room.code());
    let mut backoff_until: Option<Instant> = None;
    let mut fenced = false;
    loop {
        let deadline = room.next_deadline().map(instant_at).map(|d| match backoff_until {
            Some(b) if b > d => b,
            _ => d,
        });
        let msg = tokio::select! {
            biased;
            _ = abandoned.cancelled() => {
                fenced = true;
                break;
            }
            m = rx.recv() => match m {
                Some(m) => m,
                None => break,
            },
            _ = sleep_until(deadline), if deadline.is_some() => Msg { cmd: RoomCommand::Tick, from: None, reply: None },
        };
        let started = Instant::now();
        let now = now_ms();
        let is_tick = matches!(msg.cmd, RoomCommand::Tick);
        let before = (!msg.cmd.is_read_only()).then(|| room.record());
        let membership = Membership::of(&msg.cmd);
        let restored = match &msg.cmd {
            RoomCommand::Restore { member } => Some(member.clone()),
            _ => None,
        };
        let effects = match room.apply(msg.cmd, now) {
            Ok(effects) => effects,
            Err(e) => {
                if let Some(r) = msg.reply {
                    let _ = r.send(Err(ErrorBody::new(e.code(), e.to_string())));
                }
                continue;
            }
        };
        if matches!(effects.first(), Some(RoomEffect::Persist)) {
            match engine.store().save(room.record(), &lease, now).await {
                Ok(()) => {}
                Err(e @ StoreError::Fenced { .. }) => {
                    tracing::warn!(room = room.code(), error = %e, "room lost to a newer owner; giving it up");
                    if let Some(r) = msg.reply {
                        let moved =
                            ErrorBody::new(ErrorCode::ClusterUnavailable, "the room moved to another node; retry");
                        let _ = r.send(Err(moved));
                    }
                    fenced = true;
                    break;
                }
                Err(e) => {
                    tracing::error!(room = room.code(), error = %e, "could not store room change; rolled back");
                    if let Some(before) = before {
                        room.rollback(before);
                    }
                    if is_tick {
                        backoff_until = Some(Instant::now() + Duration::from_secs(1));
                    }
                    if let Some(r) = msg.reply {
                        let _ = r.send(Err(ErrorBody::new(
                            ErrorCode::StorageUnavailable,
                            "the change could not be stored; nothing changed",
                        )));
                    }
                    continue;
                }
            }
        }
        backoff_until = None;
        // Where the member is, here and in the cluster's shared state (for a node that takes
        // the room over).
        match &membership {
            Some(Membership::Present(session)) => {
                member_nodes.present(session, msg.from.as_ref());
                let joined = effects.iter().find_map(|e| match e {
                    RoomEffect::Reply(RoomReply::Joined(j)) => Some(&j.member),
                    _ => None,
                });
                if let Some(member) = joined.or(restored.as_ref()) {
                    let node = msg.from.as_deref().unwrap_or(engine.node_id());
                    engine.directory().member_here(room.code(), node, member);
                }
            }
            Some(Membership::Gone(session)) => {
                member_nodes.gone(session);
                engine.directory().member_gone(room.code(), session);
            }
            None => {}
        }
        let mut reply = msg.reply;
        let mut closing = false;
        for effect in effects {
            match effect {
                RoomEffect::Persist => {}
                RoomEffect::Broadcast { push, except } => {
                    publish(&engine, &topic, &push, except.as_deref());
                    METRICS.fanout_seconds.observe(started.elapsed().as_secs_f64());
                }
                RoomEffect::Send { to, push } => send(&engine, room.tenant(), &to, &push),
                RoomEffect::Reply(v) => {
                    if let Some(r) = reply.take() {
                        let _ = r.send(Ok(v));
                    }
                }
                RoomEffect::Closed => closing = true,
            }
        }
        if let Some(r) = reply {
            let _ = r.send(Ok(RoomReply::Done));
        }
        if closing {
            break;
        }
    }
    // Closed, fenced, abandoned, or every handle dropped: this node no longer has the room. A
    // room given up keeps its members' subscriptions: its new owner's pushes still reach them.
    engine.directory().remove(room.code());
    if !fenced {
        for member in room.member_ids() {
            engine.sessions().clear_room_if(member, room.code());
        }
        engine.bus().remove_topic(&topic);
        if room.is_closed() {
            engine.directory().forget_members(room.code());
        }
    }
}

async fn sleep_until(deadline: Option<Instant>) {
    match deadline {
        Some(d) => tokio::time::sleep_until(d.into()).await,
        None => std::future::pending().await,
    }
}
