//! A room code as a user types it (`code::normalize`, every join). Beyond not panicking: a
//! normalized code is a code (its length, its alphabet) and normalizes to itself.
#![no_main]

use libfuzzer_sys::fuzz_target;
use unisono_core::code::{ALPHABET, CODE_LEN, normalize};

fuzz_target!(|data: &[u8]| {
    let Some(text) = unisono_fuzz::text(data) else { return };
    if let Some(code) = normalize(text) {
        assert_eq!(code.len(), CODE_LEN);
        assert!(code.bytes().all(|b| ALPHABET.contains(&b)), "{code:?}");
        assert_eq!(normalize(&code).as_deref(), Some(code.as_str()));
    }
});
