//! One line of seed 001's server-to-server protocol (`peer::wire::decode_line`, every line a
//! peer link reads). Beyond not panicking: a decoded message, encoded again
//! (`encode_line`), decodes to the same origin and message.
#![no_main]

use libfuzzer_sys::fuzz_target;
use unisono_core::peer::wire::{decode_line, encode_line};

const MAX: usize = 1 << 20;

fuzz_target!(|data: &[u8]| {
    let Some(line) = unisono_fuzz::text(data) else { return };
    if let Ok((origin, msg)) = decode_line(line, MAX) {
        let again = encode_line(&origin, &msg);
        assert_eq!(decode_line(&again, usize::MAX).ok(), Some((origin, msg)), "line {again}");
    }
});
