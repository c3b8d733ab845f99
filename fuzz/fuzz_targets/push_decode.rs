//! A server push as the client library decodes it (`Push::decode`, `DevicePush::decode`).
//! Input: `EVENT\nDATA`. Beyond not panicking: a decoded push, written back as the server
//! writes it (`Push::to_json`), decodes to the same push.
#![no_main]

use libfuzzer_sys::fuzz_target;
use serde_json::Value;
use unisono_core::protocol::{DevicePush, Push};

fuzz_target!(|data: &[u8]| {
    let Some((event, payload)) = unisono_fuzz::event_and_data(data) else { return };
    if let Some(Ok(push)) = Push::decode(event, payload) {
        let text = push.to_json().expect("a decoded push serializes");
        let frame: Value = serde_json::from_str(&text).expect("a push is JSON");
        let again = Push::decode(frame["event"].as_str().unwrap_or_default(), &frame["data"].to_string());
        assert_eq!(again.map(|r| r.ok()), Some(Some(push)), "frame {text}");
    }
    if let Some(value) = unisono_fuzz::json(payload) {
        let _ = DevicePush::decode(event, value);
    }
});
