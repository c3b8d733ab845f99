//! The Socket.IO event payloads of the three namespaces: `/` (room requests), `/admin` and
//! `/players` (`Request::parse`, `AdminRequest::parse`, `DeviceRequest::parse`, what `sio/`
//! calls with socketioxide's decoded JSON). Input: `EVENT\nJSON`. Beyond not panicking: the
//! Socket.IO edge and the `/ws` edge read the same event and payload to the same request (or
//! both refuse it), one engine behind several edges.
#![no_main]

use libfuzzer_sys::fuzz_target;
use serde_json::json;
use unisono_core::protocol::{AdminRequest, DeviceRequest, Request};

fuzz_target!(|data: &[u8]| {
    let Some((event, payload)) = unisono_fuzz::event_and_data(data) else { return };
    let Some(value) = unisono_fuzz::json(payload) else { return };
    let sio = Request::parse(event, value.clone());
    let frame = if value.is_null() { json!({ "event": event }) } else { json!({ "event": event, "data": value }) };
    let ws = Request::parse_frame(&frame.to_string()).map(|(_, r)| r).map_err(|(_, e)| e);
    match (&sio, &ws) {
        (Ok(a), Ok(b)) => assert_eq!(a, b),
        (Err(_), Err(_)) => {}
        _ => panic!("Socket.IO read {sio:?}, /ws read {ws:?} for {frame}"),
    }
    let _ = AdminRequest::parse(event, &value);
    let _ = DeviceRequest::parse(event, value);
});
