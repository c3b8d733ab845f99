//! REST request bodies (`api::parse_publish`, `api::parse_command`: what `POST /api/publish`
//! and `POST /api/devices/{id}/commands` decode). Input: a body. Beyond not panicking: an
//! accepted publish names an event a client could not take for the engine's own, and an
//! accepted command is for the device of its path.
#![no_main]

use libfuzzer_sys::fuzz_target;
use unisono_server::api::{parse_command, parse_publish, reserved};

fuzz_target!(|data: &[u8]| {
    match parse_publish(data) {
        Ok(p) => {
            assert!(!p.event.is_empty() && p.event.len() <= 64 && !reserved(&p.event), "{:?}", p.event);
            assert!(p.event.bytes().all(|b| b.is_ascii_alphanumeric() || b"-_:.".contains(&b)));
        }
        Err(e) => assert!(e.status.is_client_error() && !e.message.is_empty(), "{e:?}"),
    }
    match parse_command("kiosk-1", data) {
        Ok(cmd) => assert_eq!(cmd.device_id, "kiosk-1"),
        Err(e) => assert!(e.status.is_client_error() && !e.message.is_empty(), "{e:?}"),
    }
});
