//! Socket.IO compatibility, devices and tenants, driven by real npm clients (`socket.io-client`,
//! `ws`) from the scripts in `tests/node/` against the real binary.

use unisono_e2e::{Server, run_node};

const SECRET: &str = "e2e-test-secret";

fn server(extra: &[&str]) -> Server {
    let mut args = vec!["--jwt-secret", SECRET];
    args.extend_from_slice(extra);
    Server::start(&args).expect("start server")
}

#[test]
fn rooms_over_socketio_and_native_in_one_room() {
    let s = server(&[]);
    run_node("sio_rooms.mjs", &s, &[("UNISONO_JWT_SECRET", SECRET)]).expect("sio_rooms.mjs");
}

#[test]
fn devices_register_report_state_and_take_commands() {
    let s = server(&["--ping-secs", "1", "--max-pending-commands", "3"]);
    run_node("sio_devices.mjs", &s, &[("UNISONO_JWT_SECRET", SECRET), ("PING_SECS", "1")]).expect("sio_devices.mjs");
}

#[test]
fn tenants_auth_rest_publish_and_forced_disconnect() {
    let s = server(&["--api-key", "acme=acme-key-0123456789abcdef", "--api-key", "globex=globex-key-0123456789abcdef"]);
    run_node("sio_tenants.mjs", &s, &[("UNISONO_JWT_SECRET", SECRET)]).expect("sio_tenants.mjs");
}

#[test]
fn engine_io_ping_timeout_connect_timeout_and_no_disconnect_echo() {
    let s = server(&["--ping-secs", "1", "--ping-timeout-secs", "3", "--connect-timeout-secs", "1"]);
    run_node("sio_protocol.mjs", &s, &[("UNISONO_JWT_SECRET", SECRET)]).expect("sio_protocol.mjs");
}

#[test]
fn a_thousand_malformed_packets_cost_the_other_clients_nothing() {
    let s = server(&[]);
    run_node("sio_malformed.mjs", &s, &[("UNISONO_JWT_SECRET", SECRET)]).expect("sio_malformed.mjs");
}

#[test]
fn a_client_that_stops_reading_is_disconnected_and_costs_bounded_memory() {
    // No rate limit in the way: the slow client's requests must all be answered (or back up).
    let s = server(&["--frames-per-sec", "100000"]);
    let pid = s.pid().to_string();
    run_node("sio_slow_reader.mjs", &s, &[("UNISONO_JWT_SECRET", SECRET), ("UNISONO_PID", &pid)])
        .expect("sio_slow_reader.mjs");
}
