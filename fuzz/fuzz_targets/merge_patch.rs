//! JSON Merge Patch (`unisono_core::merge_patch`, device state updates to admins). Input: two
//! JSON documents, one per line. Beyond not panicking: the patch [`diff`] makes turns the first
//! document into the second (both without `null` members, as device states are stored), and
//! applying any patch twice is applying it once (RFC 7396 patches are idempotent).
#![no_main]

use libfuzzer_sys::fuzz_target;
use unisono_core::merge_patch::{apply, diff, strip_nulls};

fuzz_target!(|data: &[u8]| {
    let Some(text) = unisono_fuzz::text(data) else { return };
    let Some((a, b)) = text.split_once('\n') else { return };
    let (Some(a), Some(b)) = (unisono_fuzz::json(a), unisono_fuzz::json(b)) else { return };

    let (from, to) = (strip_nulls(&a), strip_nulls(&b));
    let mut patched = from.clone();
    if let Some(p) = diff(&from, &to) {
        apply(&mut patched, &p);
    }
    assert_eq!(patched, to, "diff({from}, {to})");

    let mut once = a.clone();
    apply(&mut once, &b);
    let mut twice = once.clone();
    apply(&mut twice, &b);
    assert_eq!(once, twice, "apply twice {b} to {a}");
});
