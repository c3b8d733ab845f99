//! The room actor: one task owns one [`Room`] state machine.
//!
//! Commands arrive over a bounded channel; the actor applies each at the current server time,
//! writes the record when the core asks for it (**before** any reply or broadcast), then carries
//! out the effects: broadcasts are serialized once and handed to the bus, replies go back to the
//! caller. Deadlines (host grace, ready barrier, end of song, empty TTL) are slept on here.

use std::time::{Duration, Instant};

use serde_json::{Value, json};
use tokio::sync::{mpsc, oneshot};
use unisono_core::{
    Command, Effect, Room,
    protocol::{ErrorBody, ErrorCode},
};

use super::Engine;
use crate::{
    bus::{Frame, room_topic},
    metrics::METRICS,
    time::{instant_at, now_ms},
};

/// Commands waiting per room before callers are slowed down.
const MAILBOX: usize = 1024;

pub type Reply = Result<Value, ErrorBody>;

struct Msg {
    cmd: Command,
    reply: Option<oneshot::Sender<Reply>>,
}

/// Address of a running room actor; cheap to clone.
#[derive(Clone)]
pub struct RoomHandle {
    tx: mpsc::Sender<Msg>,
    /// The owning tenant: a room is invisible to every other tenant.
    pub tenant: std::sync::Arc<str>,
}

impl RoomHandle {
    /// Starts the actor for `room`.
    pub fn spawn(room: Room, engine: Engine) -> RoomHandle {
        let (tx, rx) = mpsc::channel(MAILBOX);
        let tenant = room.tenant().into();
        tokio::spawn(run(room, rx, engine));
        RoomHandle { tx, tenant }
    }

    /// Applies a command and waits for its reply.
    pub async fn call(&self, cmd: Command) -> Reply {
        let (tx, rx) = oneshot::channel();
        let closed = || ErrorBody::new(ErrorCode::RoomClosed, "the room is closed");
        self.tx.send(Msg { cmd, reply: Some(tx) }).await.map_err(|_| closed())?;
        rx.await.map_err(|_| closed())?
    }

    /// Sends a command without waiting (disconnects, expiries).
    pub async fn tell(&self, cmd: Command) {
        let _ = self.tx.send(Msg { cmd, reply: None }).await;
    }
}

async fn run(mut room: Room, mut rx: mpsc::Receiver<Msg>, engine: Engine) {
    let topic = room_topic(room.code());
    let mut backoff_until: Option<Instant> = None;
    loop {
        let deadline = room.next_deadline().map(instant_at).map(|d| match backoff_until {
            Some(b) if b > d => b,
            _ => d,
        });
        let msg = tokio::select! {
            m = rx.recv() => match m {
                Some(m) => m,
                None => break,
            },
            _ = sleep_until(deadline), if deadline.is_some() => Msg { cmd: Command::Tick, reply: None },
        };
        let started = Instant::now();
        let now = now_ms();
        let is_tick = matches!(msg.cmd, Command::Tick);
        let before = (!msg.cmd.is_read_only()).then(|| room.record());
        let effects = match room.apply(msg.cmd, now) {
            Ok(effects) => effects,
            Err(e) => {
                if let Some(r) = msg.reply {
                    let _ = r.send(Err(ErrorBody::new(e.code(), e.to_string())));
                }
                continue;
            }
        };
        if matches!(effects.first(), Some(Effect::Persist))
            && let Err(e) = engine.store().save(room.record(), now).await
        {
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
        backoff_until = None;
        let mut reply = msg.reply;
        let mut closed = false;
        for effect in effects {
            match effect {
                Effect::Persist => {}
                Effect::Broadcast { push, except } => {
                    let frame = Frame::text(push.to_json());
                    engine.bus().publish(&topic, &frame, except.as_deref());
                    METRICS.fanout_seconds.observe(started.elapsed().as_secs_f64());
                }
                Effect::Send { to, push } => {
                    engine.sessions().send(&to, Frame::text(push.to_json()));
                }
                Effect::Reply(v) => {
                    if let Some(r) = reply.take() {
                        let _ = r.send(Ok(v));
                    }
                }
                Effect::Closed => closed = true,
            }
        }
        if let Some(r) = reply {
            let _ = r.send(Ok(json!({})));
        }
        if closed {
            break;
        }
    }
    // Closed (or every handle dropped): forget the room and its subscribers.
    for member in room.member_ids() {
        engine.sessions().clear_room_if(member, room.code());
    }
    engine.forget_room(room.code());
    engine.bus().remove_topic(&topic);
}

async fn sleep_until(deadline: Option<Instant>) {
    match deadline {
        Some(d) => tokio::time::sleep_until(d.into()).await,
        None => std::future::pending().await,
    }
}
