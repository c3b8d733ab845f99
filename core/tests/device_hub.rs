//! Scenario tests for one tenant's device hub, `DeviceHub::apply(input, now)`.
//!
//! Every scenario passes explicit server times and plays the driver's part by hand: it answers
//! each `Persist` with `Committed` when it chooses, and sends `Tick` at the times it wants.
//! Covered: registration (commit before ack and presence, a failed commit, a second connection
//! replacing the first, the subject rule, the device limit); states (visible only once stored,
//! acked with their rev, stored without nulls); coalesced patches to admins (every device by
//! default, a full state first where an admin has no base; rate, latest wins, base revs that
//! chain; narrowing, opting out); commands (delivery, answer, retry with the same id,
//! timeout after the retries, offline, queued with a TTL, delivery when the device returns,
//! late and foreign answers, the pending limit); disconnects and shutdown; `next_deadline()`.

#[cfg(target_arch = "wasm32")]
use wasm_bindgen_test::wasm_bindgen_test as test;

use serde_json::{Value, json};
use unisono_core::{
    device::{CLOSE_REPLACED, ConnId, DeviceEffect, DeviceHub, DeviceInput, DeviceReply, DeviceWrite, HubConfig},
    protocol::{CommandRequest, CommandResponse, DevicePush, ErrorCode, Register},
};

const DEV: ConnId = 1;
const ADMIN: ConnId = 100;

fn hub() -> DeviceHub {
    DeviceHub::restore(HubConfig { admin_updates_per_sec: 2.0, ..HubConfig::default() }, [])
}

fn register(conn: ConnId, id: &str, req: u64) -> DeviceInput {
    DeviceInput::Register {
        conn,
        sub: id.into(),
        register: Register { name: Some(format!("{id} kiosk")), ..Register::default() },
        req,
    }
}

fn command(id: &str, device: &str, queue: bool, req: u64) -> DeviceInput {
    DeviceInput::Command {
        admin: Some(ADMIN),
        command_id: id.into(),
        request: CommandRequest {
            device_id: device.into(),
            command: "vlc:pause".into(),
            params: Value::Null,
            timeout_ms: Some(1_000),
            retries: Some(1),
            queue,
            ttl_ms: Some(10_000),
        },
        req,
    }
}

fn response(conn: ConnId, id: &str) -> DeviceInput {
    DeviceInput::CommandResponse {
        conn,
        response: CommandResponse { command_id: id.into(), status: "success".into(), result: None, error: None },
        req: Some(900),
    }
}

/// The write ids of the `Persist`s in `fx`.
fn writes(fx: &[DeviceEffect]) -> Vec<u64> {
    fx.iter()
        .filter_map(|e| match e {
            DeviceEffect::Persist { write, .. } => Some(*write),
            _ => None,
        })
        .collect()
}

/// Commits every write in `fx` and returns what followed.
fn commit_all(hub: &mut DeviceHub, fx: &[DeviceEffect], now: f64) -> Vec<DeviceEffect> {
    writes(fx).into_iter().flat_map(|write| hub.apply(DeviceInput::Committed { write, ok: true }, now)).collect()
}

fn reply(fx: &[DeviceEffect], req: u64) -> Option<&Result<DeviceReply, unisono_core::protocol::ErrorBody>> {
    fx.iter().find_map(|e| match e {
        DeviceEffect::Reply { req: r, result } if *r == req => Some(result),
        _ => None,
    })
}

fn error_code(fx: &[DeviceEffect], req: u64) -> Option<ErrorCode> {
    match reply(fx, req) {
        Some(Err(e)) => Some(e.code),
        _ => None,
    }
}

/// Pushes sent to admin connection `admin`.
fn admin_pushes(fx: &[DeviceEffect], admin: ConnId) -> Vec<&DevicePush> {
    fx.iter()
        .filter_map(|e| match e {
            DeviceEffect::ToAdmins { admins, push } if admins.contains(&admin) => Some(push),
            _ => None,
        })
        .collect()
}

/// `player:command` deliveries: (connection, command id).
fn deliveries(fx: &[DeviceEffect]) -> Vec<(ConnId, String)> {
    fx.iter()
        .filter_map(|e| match e {
            DeviceEffect::Deliver { to, push: DevicePush::Command(c) } => Some((*to, c.command_id.clone())),
            _ => None,
        })
        .collect()
}

fn done(fx: &[DeviceEffect]) -> Option<&unisono_core::protocol::CommandOutcome> {
    fx.iter().find_map(|e| match e {
        DeviceEffect::CommandDone { outcome, .. } => Some(outcome),
        _ => None,
    })
}

/// A hub with device `kiosk` registered on `DEV` and an admin subscribed to everything.
fn registered() -> DeviceHub {
    let mut h = hub();
    h.apply(DeviceInput::AdminAttach { conn: ADMIN }, 0.0);
    let fx = h.apply(register(DEV, "kiosk", 1), 10.0);
    commit_all(&mut h, &fx, 11.0);
    let fx = h.apply(DeviceInput::Subscribe { conn: ADMIN, device_ids: None, req: 2 }, 12.0);
    assert!(matches!(reply(&fx, 2), Some(Ok(DeviceReply::Devices(_)))));
    h
}

#[test]
fn registration_is_acknowledged_and_announced_only_once_stored() {
    let mut h = hub();
    h.apply(DeviceInput::AdminAttach { conn: ADMIN }, 0.0);
    let fx = h.apply(register(DEV, "kiosk", 1), 10.0);
    assert_eq!(writes(&fx).len(), 1, "{fx:?}");
    assert!(matches!(&fx[0], DeviceEffect::Persist { what: DeviceWrite::Info(r), .. } if r.device_id == "kiosk"));
    assert!(reply(&fx, 1).is_none(), "no ack before the commit");
    assert!(admin_pushes(&fx, ADMIN).is_empty(), "no presence before the commit");
    let after = commit_all(&mut h, &fx, 11.0);
    assert!(matches!(reply(&after, 1), Some(Ok(DeviceReply::Registered(r))) if r.device_id == "kiosk"));
    assert!(after.iter().any(|e| matches!(e, DeviceEffect::Deliver { to: DEV, push: DevicePush::Registered(_) })));
    assert!(matches!(admin_pushes(&after, ADMIN)[..], [DevicePush::Online(p)] if p.device_id == "kiosk"));
    assert_eq!((h.online(), h.get("kiosk").map(|d| d.online)), (1, Some(true)));
}

#[test]
fn a_failed_registration_write_registers_nothing() {
    let mut h = hub();
    h.apply(DeviceInput::AdminAttach { conn: ADMIN }, 0.0);
    let fx = h.apply(register(DEV, "kiosk", 1), 10.0);
    let after = h.apply(DeviceInput::Committed { write: writes(&fx)[0], ok: false }, 11.0);
    assert_eq!(error_code(&after, 1), Some(ErrorCode::StorageUnavailable));
    assert!(admin_pushes(&after, ADMIN).is_empty());
    assert_eq!(h.online(), 0);
    let fx = h.apply(DeviceInput::State { conn: DEV, state: json!({}), req: 2 }, 12.0);
    assert_eq!(error_code(&fx, 2), Some(ErrorCode::NotRegistered));
}

#[test]
fn a_token_registers_only_its_own_device_and_the_tenant_limit_holds() {
    let mut h = DeviceHub::restore(HubConfig { max_devices: 1, ..HubConfig::default() }, []);
    let fx = h.apply(
        DeviceInput::Register {
            conn: DEV,
            sub: "kiosk".into(),
            register: Register { device_id: Some("other".into()), ..Register::default() },
            req: 1,
        },
        0.0,
    );
    assert_eq!(error_code(&fx, 1), Some(ErrorCode::Forbidden));
    let fx =
        h.apply(DeviceInput::Register { conn: DEV, sub: String::new(), register: Register::default(), req: 2 }, 0.0);
    assert_eq!(error_code(&fx, 2), Some(ErrorCode::InvalidPayload));
    let fx = h.apply(register(DEV, "kiosk", 3), 0.0);
    commit_all(&mut h, &fx, 1.0);
    let fx = h.apply(register(2, "second", 4), 2.0);
    assert_eq!(error_code(&fx, 4), Some(ErrorCode::Forbidden), "over the device limit");
}

#[test]
fn a_second_connection_of_the_same_device_replaces_the_first() {
    let mut h = registered();
    let fx = h.apply(register(2, "kiosk", 5), 20.0);
    assert!(fx.iter().any(|e| matches!(e, DeviceEffect::Close { conn: DEV, code: CLOSE_REPLACED, .. })));
    let after = commit_all(&mut h, &fx, 21.0);
    assert!(admin_pushes(&after, ADMIN).is_empty(), "still online: no second device:online");
    // The old connection's close changes nothing; the new one's does.
    let fx = h.apply(DeviceInput::Disconnect { conn: DEV }, 22.0);
    assert!(fx.is_empty(), "{fx:?}");
    assert_eq!(h.online(), 1);
    let fx = h.apply(DeviceInput::Disconnect { conn: 2 }, 23.0);
    let after = commit_all(&mut h, &fx, 24.0);
    assert!(matches!(admin_pushes(&after, ADMIN)[..], [DevicePush::Offline(p)] if p.last_seen == 23.0));
    assert_eq!(h.online(), 0);
}

#[test]
fn a_state_is_visible_and_acked_only_once_stored_and_without_nulls() {
    let mut h = registered();
    let fx = h.apply(
        DeviceInput::State { conn: DEV, state: json!({ "vlc": { "state": "playing", "x": null } }), req: 7 },
        20.0,
    );
    assert!(
        matches!(&fx[..], [DeviceEffect::Persist { what: DeviceWrite::State(r), .. }] if r.rev == 1 && r.state == json!({ "vlc": { "state": "playing" } }))
    );
    assert_eq!(h.get("kiosk").map(|d| d.rev), Some(0), "not visible before the commit");
    let after = commit_all(&mut h, &fx, 21.0);
    assert!(matches!(reply(&after, 7), Some(Ok(DeviceReply::State(a))) if a.rev == 1));
    assert_eq!(h.get("kiosk").map(|d| (d.rev, d.state)), Some((1, json!({ "vlc": { "state": "playing" } }))));
    match admin_pushes(&after, ADMIN)[..] {
        [DevicePush::StateUpdated(u)] => {
            assert_eq!((u.rev, u.base_rev), (1, 0));
            assert_eq!(u.patch, json!({ "vlc": { "state": "playing" } }));
        }
        ref other => panic!("{other:?}"),
    }
    // A failed write acknowledges nothing and shows nothing.
    let fx = h.apply(DeviceInput::State { conn: DEV, state: json!({ "vlc": { "state": "paused" } }), req: 8 }, 30.0);
    let after = h.apply(DeviceInput::Committed { write: writes(&fx)[0], ok: false }, 31.0);
    assert_eq!(error_code(&after, 8), Some(ErrorCode::StorageUnavailable));
    assert!(admin_pushes(&after, ADMIN).is_empty());
    assert_eq!(h.get("kiosk").map(|d| d.rev), Some(1));
    let fx = h.apply(DeviceInput::State { conn: DEV, state: json!([1]), req: 9 }, 32.0);
    assert_eq!(error_code(&fx, 9), Some(ErrorCode::InvalidPayload));
}

#[test]
fn patches_are_coalesced_to_the_rate_latest_wins_and_their_revs_chain() {
    let mut h = registered();
    let send = |h: &mut DeviceHub, v: i64, now: f64| {
        let fx = h.apply(DeviceInput::State { conn: DEV, state: json!({ "v": v }), req: 10 + v as u64 }, now);
        commit_all(h, &fx, now)
    };
    // The first goes out at once.
    let fx = send(&mut h, 1, 1_000.0);
    assert_eq!(admin_pushes(&fx, ADMIN).len(), 1);
    // Two more within the 500 ms interval: none now, one flush scheduled for 1,500.
    assert!(admin_pushes(&send(&mut h, 2, 1_100.0), ADMIN).is_empty());
    assert!(admin_pushes(&send(&mut h, 3, 1_200.0), ADMIN).is_empty());
    assert_eq!(h.next_deadline(), Some(1_500.0));
    assert!(h.apply(DeviceInput::Tick, 1_499.0).is_empty(), "not due yet");
    let fx = h.apply(DeviceInput::Tick, 1_500.0);
    match admin_pushes(&fx, ADMIN)[..] {
        [DevicePush::StateUpdated(u)] => {
            assert_eq!((u.rev, u.base_rev), (3, 1), "one patch from the last sent state to the latest");
            assert_eq!(u.patch, json!({ "v": 3 }));
        }
        ref other => panic!("{other:?}"),
    }
    assert_eq!(h.next_deadline(), None);
    // After the interval, the next goes out at once again, based on rev 3.
    let fx = send(&mut h, 4, 2_100.0);
    assert!(matches!(admin_pushes(&fx, ADMIN)[..], [DevicePush::StateUpdated(u)] if u.base_rev == 3 && u.rev == 4));
}

/// The state updates `admin` got, as (baseRev, rev, patch).
fn updates(fx: &[DeviceEffect], admin: ConnId) -> Vec<(u64, u64, Value)> {
    admin_pushes(fx, admin)
        .into_iter()
        .filter_map(|p| match p {
            DevicePush::StateUpdated(u) => Some((u.base_rev, u.rev, u.patch.clone())),
            _ => None,
        })
        .collect()
}

#[test]
fn an_attached_admin_gets_every_device_full_state_first_then_patches() {
    let mut h = registered();
    let fx = h.apply(DeviceInput::State { conn: DEV, state: json!({ "a": 1, "b": 1 }), req: 3 }, 1_000.0);
    commit_all(&mut h, &fx, 1_000.0);
    // Seed 003's admin never subscribes: attached, it gets its tenant's devices by default.
    let other: ConnId = 101;
    h.apply(DeviceInput::AdminAttach { conn: other }, 1_100.0);
    let fx = h.apply(DeviceInput::State { conn: DEV, state: json!({ "a": 2, "b": 1 }), req: 4 }, 2_000.0);
    let after = commit_all(&mut h, &fx, 2_000.0);
    // The subscribed admin: the patch. The new one, with no base: the full state from nothing.
    assert_eq!(updates(&after, ADMIN), [(1, 2, json!({ "a": 2 }))]);
    assert_eq!(updates(&after, other), [(0, 2, json!({ "a": 2, "b": 1 }))]);
    // From then on both get the same patches.
    let fx = h.apply(DeviceInput::State { conn: DEV, state: json!({ "a": 3, "b": 1 }), req: 5 }, 3_000.0);
    let after = commit_all(&mut h, &fx, 3_000.0);
    assert_eq!(updates(&after, other), [(2, 3, json!({ "a": 3 }))]);
    assert_eq!(updates(&after, ADMIN), updates(&after, other));
}

#[test]
fn subscriptions_narrow_and_unsubscribed_admins_get_presence_but_no_states() {
    let mut h = registered();
    let other: ConnId = 101;
    h.apply(DeviceInput::AdminAttach { conn: other }, 13.0);
    // Narrowed to a device that is not this one: none of its states.
    let fx = h.apply(DeviceInput::Subscribe { conn: other, device_ids: Some(vec!["nope".into()]), req: 4 }, 14.0);
    assert!(matches!(reply(&fx, 4), Some(Ok(DeviceReply::Devices(l))) if l.devices.is_empty()));
    let fx = h.apply(DeviceInput::State { conn: DEV, state: json!({ "a": 1 }), req: 3 }, 20.0);
    let after = commit_all(&mut h, &fx, 20.0);
    assert!(admin_pushes(&after, other).is_empty(), "narrowed to another device");
    assert_eq!(admin_pushes(&after, ADMIN).len(), 1);
    let fx = h.apply(DeviceInput::Disconnect { conn: DEV }, 22.0);
    let after = commit_all(&mut h, &fx, 22.0);
    assert_eq!(admin_pushes(&after, other).len(), 1, "presence reaches every admin");
    h.apply(DeviceInput::Unsubscribe { conn: ADMIN }, 23.0);
    let fx = h.apply(register(DEV, "kiosk", 5), 24.0);
    let after = commit_all(&mut h, &fx, 24.0);
    let fx = h.apply(DeviceInput::State { conn: DEV, state: json!({ "a": 2 }), req: 6 }, 2_025.0);
    let states = commit_all(&mut h, &fx, 2_025.0);
    assert_eq!(admin_pushes(&after, ADMIN).len(), 1, "online still reaches it");
    assert!(admin_pushes(&states, ADMIN).is_empty(), "no states after unsubscribing");
    // Subscribing again: the full state in the reply is its base; patches follow from it.
    let fx = h.apply(DeviceInput::Subscribe { conn: ADMIN, device_ids: None, req: 7 }, 2_100.0);
    let Some(Ok(DeviceReply::Devices(l))) = reply(&fx, 7) else { panic!("subscribed") };
    assert_eq!((l.devices[0].rev, &l.devices[0].state), (2, &json!({ "a": 2 })));
    let fx = h.apply(DeviceInput::State { conn: DEV, state: json!({ "a": 3 }), req: 8 }, 4_000.0);
    assert_eq!(updates(&commit_all(&mut h, &fx, 4_000.0), ADMIN), [(2, 3, json!({ "a": 3 }))]);
}

#[test]
fn a_command_is_delivered_answered_and_done_once() {
    let mut h = registered();
    let fx = h.apply(command("c1", "kiosk", false, 20), 1_000.0);
    assert_eq!(deliveries(&fx), [(DEV, "c1".to_owned())]);
    assert_eq!(h.next_deadline(), Some(2_000.0));
    let fx = h.apply(response(DEV, "c1"), 1_200.0);
    let o = done(&fx).expect("done");
    assert_eq!((o.status.as_str(), o.attempts, o.command_id.as_str()), ("success", 1, "c1"));
    assert!(matches!(
        fx.iter().find(|e| matches!(e, DeviceEffect::CommandDone { .. })),
        Some(DeviceEffect::CommandDone { req: 20, admin: Some(ADMIN), .. })
    ));
    assert!(matches!(reply(&fx, 900), Some(Ok(DeviceReply::Done))));
    assert_eq!((h.pending(), h.next_deadline()), (0, None));
    // A second answer finds nothing waiting.
    let fx = h.apply(response(DEV, "c1"), 1_300.0);
    assert_eq!(error_code(&fx, 900), Some(ErrorCode::InvalidPayload));
    assert_eq!((h.stats().commands, h.stats().commands_failed), (1, 0));
}

#[test]
fn a_timed_out_command_is_retried_with_the_same_id_then_fails() {
    let mut h = registered();
    h.apply(command("c1", "kiosk", false, 20), 1_000.0);
    // Timeout 1 s, one retry: delivered again at 2,000 with the same id.
    assert!(h.apply(DeviceInput::Tick, 1_999.0).is_empty());
    let fx = h.apply(DeviceInput::Tick, 2_000.0);
    assert_eq!(deliveries(&fx), [(DEV, "c1".to_owned())]);
    assert!(done(&fx).is_none());
    let fx = h.apply(DeviceInput::Tick, 3_000.0);
    let o = done(&fx).expect("gave up");
    assert_eq!(o.attempts, 2);
    assert_eq!(o.failure().map(|e| e.code), Some(ErrorCode::CommandTimeout));
    assert_eq!(h.stats().commands_failed, 1);
    // The answer that arrives afterwards is late.
    let fx = h.apply(response(DEV, "c1"), 3_100.0);
    assert_eq!(error_code(&fx, 900), Some(ErrorCode::InvalidPayload));
}

#[test]
fn an_offline_device_fails_at_once_unless_queued() {
    let mut h = registered();
    let fx = h.apply(DeviceInput::Disconnect { conn: DEV }, 500.0);
    commit_all(&mut h, &fx, 500.0);
    let fx = h.apply(command("c1", "kiosk", false, 20), 1_000.0);
    assert_eq!(done(&fx).and_then(|o| o.failure()).map(|e| e.code), Some(ErrorCode::DeviceOffline));
    let fx = h.apply(command("c2", "nope", false, 21), 1_000.0);
    assert_eq!(error_code(&fx, 21), Some(ErrorCode::DeviceNotFound));
    assert!(done(&fx).is_none(), "an unknown device gets no command:response");
    let mut bad = command("c3", "kiosk", false, 22);
    if let DeviceInput::Command { request, .. } = &mut bad {
        request.command = "vlc:explode".into();
    }
    assert_eq!(error_code(&h.apply(bad, 1_000.0), 22), Some(ErrorCode::InvalidCommand));
}

#[test]
fn a_queued_command_waits_for_its_device_then_is_delivered_on_register() {
    let mut h = registered();
    let fx = h.apply(DeviceInput::Disconnect { conn: DEV }, 500.0);
    commit_all(&mut h, &fx, 500.0);
    let fx = h.apply(command("c1", "kiosk", true, 20), 1_000.0);
    assert!(deliveries(&fx).is_empty() && done(&fx).is_none());
    assert_eq!(h.next_deadline(), Some(11_000.0), "the TTL");
    // The device comes back on a new connection: delivered there at once, with its timeout.
    let fx = h.apply(register(7, "kiosk", 21), 4_000.0);
    assert_eq!(deliveries(&fx), [(7, "c1".to_owned())]);
    assert_eq!(h.next_deadline(), Some(5_000.0));
    let fx = h.apply(response(7, "c1"), 4_100.0);
    assert_eq!(done(&fx).map(|o| o.attempts), Some(1));
}

#[test]
fn a_queued_command_fails_when_its_ttl_ends() {
    let mut h = registered();
    let fx = h.apply(DeviceInput::Disconnect { conn: DEV }, 500.0);
    commit_all(&mut h, &fx, 500.0);
    h.apply(command("c1", "kiosk", true, 20), 1_000.0);
    assert!(h.apply(DeviceInput::Tick, 10_999.0).is_empty());
    let fx = h.apply(DeviceInput::Tick, 11_000.0);
    let e = done(&fx).and_then(|o| o.failure()).expect("failed");
    assert_eq!(e.code, ErrorCode::DeviceOffline);
    assert!(e.message.contains("TTL"), "{}", e.message);
}

#[test]
fn a_queued_command_whose_device_leaves_mid_retry_waits_again() {
    let mut h = registered();
    h.apply(command("c1", "kiosk", true, 20), 1_000.0);
    let fx = h.apply(DeviceInput::Disconnect { conn: DEV }, 1_500.0);
    commit_all(&mut h, &fx, 1_500.0);
    // Its timeout passes while the device is away: back to waiting, until the TTL.
    let fx = h.apply(DeviceInput::Tick, 2_000.0);
    assert!(deliveries(&fx).is_empty() && done(&fx).is_none(), "{fx:?}");
    assert_eq!(h.next_deadline(), Some(11_000.0));
    let fx = h.apply(register(8, "kiosk", 21), 3_000.0);
    assert_eq!(deliveries(&fx), [(8, "c1".to_owned())], "the same id again");
}

#[test]
fn answers_from_another_device_or_unregistered_connections_are_refused() {
    let mut h = registered();
    let fx = h.apply(register(2, "other", 30), 10.0);
    commit_all(&mut h, &fx, 10.0);
    h.apply(command("c1", "kiosk", false, 20), 1_000.0);
    assert_eq!(error_code(&h.apply(response(2, "c1"), 1_100.0), 900), Some(ErrorCode::InvalidPayload));
    assert_eq!(error_code(&h.apply(response(55, "c1"), 1_100.0), 900), Some(ErrorCode::NotRegistered));
    assert_eq!(h.pending(), 1, "still waiting for its own device");
}

#[test]
fn the_pending_limit_refuses_more_commands() {
    let mut h = DeviceHub::restore(HubConfig { max_pending: 2, ..HubConfig::default() }, []);
    let fx = h.apply(register(DEV, "kiosk", 1), 0.0);
    commit_all(&mut h, &fx, 0.0);
    h.apply(command("c1", "kiosk", false, 20), 1.0);
    h.apply(command("c2", "kiosk", false, 21), 1.0);
    assert_eq!(error_code(&h.apply(command("c3", "kiosk", false, 22), 1.0), 22), Some(ErrorCode::RateLimited));
}

#[test]
fn shutdown_writes_every_connected_device_offline_and_tells_nobody() {
    let mut h = registered();
    let fx = h.apply(register(2, "other", 30), 10.0);
    commit_all(&mut h, &fx, 10.0);
    let fx = h.apply(DeviceInput::Shutdown, 50.0);
    assert_eq!(writes(&fx).len(), 2);
    assert!(
        fx.iter().all(|e| matches!(e, DeviceEffect::Persist { what: DeviceWrite::Info(r), .. } if r.last_seen == 50.0))
    );
    let after = commit_all(&mut h, &fx, 51.0);
    assert!(after.is_empty(), "{after:?}");
    assert_eq!(h.online(), 0);
}

#[test]
fn restored_devices_start_offline_with_their_state() {
    use unisono_core::device::DeviceRecord;
    let rec = DeviceRecord {
        device_id: "kiosk".into(),
        name: "K".into(),
        info: json!({}),
        state: json!({ "v": 9 }),
        rev: 9,
        last_seen: 5.0,
    };
    let mut h = DeviceHub::restore(HubConfig::default(), [rec]);
    let d = h.get("kiosk").expect("restored");
    assert_eq!((d.online, d.rev, d.state), (false, 9, json!({ "v": 9 })));
    h.apply(DeviceInput::AdminAttach { conn: ADMIN }, 0.0);
    let fx = h.apply(register(DEV, "kiosk", 1), 10.0);
    commit_all(&mut h, &fx, 10.0);
    let fx = h.apply(DeviceInput::Subscribe { conn: ADMIN, device_ids: None, req: 2 }, 11.0);
    assert!(matches!(reply(&fx, 2), Some(Ok(DeviceReply::Devices(l))) if l.devices[0].rev == 9));
    let fx = h.apply(DeviceInput::State { conn: DEV, state: json!({ "v": 10 }), req: 3 }, 12.0);
    assert!(matches!(&fx[0], DeviceEffect::Persist { what: DeviceWrite::State(r), .. } if r.rev == 10));
}

#[test]
fn states_committed_while_a_flush_waits_reach_admins_in_the_next_flush() {
    let mut h = registered();
    let mut pending = Vec::new();
    for v in 0..30u64 {
        let fx = h.apply(DeviceInput::State { conn: DEV, state: json!({ "v": v }), req: 100 + v }, 1_000.0);
        pending.push(writes(&fx)[0]);
    }
    let mut sent = Vec::new();
    let mut collect = |fx: &[DeviceEffect]| {
        for p in admin_pushes(fx, ADMIN) {
            if let DevicePush::StateUpdated(u) = p {
                sent.push(u.rev);
            }
        }
    };
    // The first eight commit, the first goes out at once, the rest wait for the interval.
    for w in pending.drain(..8) {
        collect(&h.apply(DeviceInput::Committed { write: w, ok: true }, 1_010.0));
    }
    collect(&h.apply(DeviceInput::Tick, 1_510.0));
    for w in pending.drain(..) {
        collect(&h.apply(DeviceInput::Committed { write: w, ok: true }, 1_600.0));
    }
    let next = h.next_deadline().expect("a flush is scheduled");
    collect(&h.apply(DeviceInput::Tick, next));
    assert_eq!(sent, [1, 8, 30]);
    assert_eq!(h.next_deadline(), None);
}
