//! Namespace `/players`: devices (seed 003's `SocketClient`), authenticated with a `player`
//! token whose subject is the device id.
//!
//! Events: `player:register` {deviceId?, name?, …info} → `player:registered` (event and ack);
//! `player:state` {timestamp, system, storage, vlc, app, activePlaylist, defaultPlaylist,
//! snapshot} → ack `{rev}` once stored; `player:command:response` {commandId, status, result |
//! error}. The server emits `player:command` {command, params, commandId}; a device may answer
//! through that event's ack callback instead (`{status, result?, error?}`): acks both ways.

use std::sync::Arc;

use socketioxide::{SocketIo, extract::SocketRef, handler::ConnectHandler};
use unisono_core::protocol::DeviceRequest;

use super::{AckHook, ConnectAuth, ConnectRefused, Route, SioConfig};
use crate::{
    auth::Role,
    engine::{EdgeRequest, Engine, connections::Kind},
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
    let wiring = super::wire(&s, cfg.queue, cfg.max_device_event_bytes);
    let att = super::attach(&engine, &s, Kind::Device, principal, &wiring, None).await;
    // A device may answer `player:command` through the event's ack callback instead of a
    // `player:command:response` event.
    let ack = att.command_ack();
    s.extensions.insert(AckHook {
        event: "player:command",
        on_ack: Arc::new(move |sent, reply| {
            if let Some(resp) = super::command_ack(sent, reply) {
                ack(resp);
            }
        }),
    });
    tokio::spawn(super::serve_jobs(wiring, att, cfg.events_per_sec, |_, event, data| {
        match DeviceRequest::parse(event, data) {
            Ok(req) => Route::Engine(EdgeRequest::Device(req)),
            Err(e) => Route::Answer(Err(e)),
        }
    }));
    Ok(())
}
