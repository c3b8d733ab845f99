//! A `/ws` text frame: the envelope `{event, data?, id?}` and the room and admin requests in it
//! (`ClientRequest::parse_frame`, what `ws/mod.rs` calls on every frame). Beyond not panicking:
//! a frame that parses as a room request reads back the same from the frame the client
//! library writes for it (`Request::to_json`), with the same id.
#![no_main]

use libfuzzer_sys::fuzz_target;
use unisono_core::protocol::{ClientRequest, Request};

fuzz_target!(|data: &[u8]| {
    let Some(text) = unisono_fuzz::text(data) else { return };
    match ClientRequest::parse_frame(text) {
        Ok((id, ClientRequest::Room(req))) => {
            let again = req.to_json(id).expect("a parsed request serializes");
            assert_eq!(Request::parse_frame(&again), Ok((id, req)), "frame {again}");
        }
        Ok((_, ClientRequest::Admin(_))) => {}
        Err((_, e)) => assert!(!e.message.is_empty(), "an error says why"),
    }
});
