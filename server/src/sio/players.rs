//! Namespace `/players`: devices (seed 003's `SocketClient`), authenticated with a `player`
//! token whose subject is the device id.
//!
//! Events: `player:register` {deviceId?, name?, …info} → `player:registered` (event and ack);
//! `player:state` {timestamp, system, storage, vlc, app, activePlaylist, defaultPlaylist,
//! snapshot} → ack `{rev}` once stored; `player:command:response` {commandId, status, result |
//! error}. The server emits `player:command` {command, params, commandId}; a device may answer
//! through that event's ack callback instead (`{status, result?, error?}`): acks both ways.

use std::sync::{Arc, Mutex};

use futures_util::FutureExt;
use serde_json::Value;
use socketioxide::{SocketIo, extract::SocketRef, handler::ConnectHandler};
use unisono_core::protocol::{ErrorBody, ErrorCode, payload};

use super::{AckHook, Answer, ConnectAuth, ConnectRefused, SioConfig};
use crate::{
    auth::Role,
    bus::Frame,
    engine::{
        Engine,
        connections::Kind,
        devices::{CommandResponse, Register},
    },
    metrics::METRICS,
};

pub(super) fn register(io: &SocketIo, engine: Engine, cfg: Arc<SioConfig>) {
    let middleware = super::middleware(engine, cfg, setup);
    let on_connect = async |s: SocketRef| {
        let hook = s.extensions.get::<AckHook>();
        super::start_pump(s, hook);
    };
    io.ns("/players", on_connect.with(middleware));
}

async fn setup(s: SocketRef, auth: ConnectAuth, engine: Engine, cfg: Arc<SioConfig>) -> Result<(), ConnectRefused> {
    let principal = super::authenticate(&engine, &s, &auth, &[Role::Player], "socketio:/players")?;
    METRICS.connections.inc();
    let wiring = super::wire(&s, cfg.queue, cfg.max_device_event_bytes);
    let outbox = wiring.outbox.clone();
    let devices = engine.devices().clone();
    let conn = devices.next_conn();
    let sid = s.id.to_string();
    let token = engine.connections().add(&sid, &principal.tenant, Kind::Device, outbox.clone(), None);
    let tenant: Arc<str> = principal.tenant.into();
    let sub: Arc<str> = principal.sub.into();
    // The device id this connection registered, once it has.
    let registered: Arc<Mutex<Option<String>>> = Arc::default();
    {
        let (devices, tenant, registered, outbox) =
            (devices.clone(), tenant.clone(), registered.clone(), outbox.clone());
        let (engine, sid) = (engine.clone(), sid.clone());
        tokio::spawn(super::serve_jobs(wiring, cfg.events_per_sec, move |event, data, _| {
            let (devices, tenant, sub, registered, outbox) =
                (devices.clone(), tenant.clone(), sub.clone(), registered.clone(), outbox.clone());
            let (engine, sid) = (engine.clone(), sid.clone());
            async move {
                let device = registered.lock().ok().and_then(|g| g.clone());
                let not_registered = || ErrorBody::new(ErrorCode::NotRegistered, "send player:register first");
                Answer::Now(match event.as_str() {
                    "player:register" => match payload::<Register>(&event, data) {
                        Ok(reg) => {
                            let r = devices.register(&tenant, &sub, conn, outbox.clone(), reg).await;
                            if let Ok(v) = &r {
                                let id = v.get("deviceId").and_then(Value::as_str).map(str::to_owned);
                                if let Some(id) = &id {
                                    engine.connections().set_device(&sid, id);
                                }
                                if let Ok(mut g) = registered.lock() {
                                    *g = id;
                                }
                                let push = serde_json::json!({ "event": "player:registered", "data": v });
                                outbox.push(Frame::text(push.to_string()));
                            }
                            r
                        }
                        Err(e) => Err(e),
                    },
                    // Queued in order, acknowledged when committed, without holding up this
                    // device's next events (a command answer must not wait behind a commit).
                    "player:state" => match device {
                        Some(d) => match devices.state(&tenant, &d, conn, data).await {
                            Ok(committed) => return Answer::Later(committed.boxed()),
                            Err(e) => Err(e),
                        },
                        None => Err(not_registered()),
                    },
                    "player:command:response" => match (device, payload::<CommandResponse>(&event, data)) {
                        (Some(d), Ok(resp)) => devices.command_response(&tenant, &d, resp).await.map(|()| Value::Null),
                        (None, _) => Err(not_registered()),
                        (_, Err(e)) => Err(e),
                    },
                    other => Err(ErrorBody::new(
                        ErrorCode::UnknownEvent,
                        format!("unknown event {:?} on /players", other.chars().take(64).collect::<String>()),
                    )),
                })
            }
            .boxed()
        }));
    }
    // A device may answer `player:command` through the event's ack callback instead of a
    // `player:command:response` event: `{status, result?, error?}`.
    {
        let (devices, tenant, registered) = (devices.clone(), tenant.clone(), registered.clone());
        s.extensions.insert(AckHook {
            event: "player:command",
            on_ack: Arc::new(move |sent: Value, reply: Value| {
                let device = registered.lock().ok().and_then(|g| g.clone());
                let command_id = sent.get("commandId").and_then(Value::as_str).map(str::to_owned);
                let (Some(device), Some(command_id)) = (device, command_id) else { return };
                let reply = match reply {
                    // socket.io-client passes ack arguments as an array.
                    Value::Array(mut args) if !args.is_empty() => args.swap_remove(0),
                    other => other,
                };
                let resp = CommandResponse {
                    command_id,
                    status: reply.get("status").and_then(Value::as_str).unwrap_or("success").to_owned(),
                    result: reply.get("result").cloned(),
                    error: reply.get("error").cloned(),
                };
                let (devices, tenant) = (devices.clone(), tenant.clone());
                tokio::spawn(async move {
                    let _ = devices.command_response(&tenant, &device, resp).await;
                });
            }),
        });
    }
    s.on_disconnect(async move || {
        outbox.close(1000, "bye");
        engine.connections().remove(&sid, token);
        let device = registered.lock().ok().and_then(|g| g.clone());
        if let Some(d) = device {
            devices.device_disconnected(&tenant, &d, conn).await;
        }
        METRICS.connections.dec();
    });
    Ok(())
}
