//! Identical math, proven: the committed test vectors (`tests/vectors/core-v1.jsonl`, made by
//! `unisono_core::vectors::generate`) are recomputed by this build and must match bit for bit.
//! The wasm builds (Node, Chromium) and the npm package check the same file.
//!
//! After an intended change to the math, regenerate with
//! `UNISONO_BLESS=1 cargo test -p unisono-core --test vectors` and commit the file.

#[cfg(target_arch = "wasm32")]
use wasm_bindgen_test::wasm_bindgen_test as test;

use unisono_core::vectors::{Case, check, generate};

#[cfg(not(target_arch = "wasm32"))]
const FILE: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/vectors/core-v1.jsonl");
/// The committed file, embedded: the wasm builds of this test have no filesystem.
const COMMITTED: &str = include_str!("vectors/core-v1.jsonl");
const SEED: u64 = 0x5EED_2026_1123;
const PER_KIND: usize = 400;

fn generated_text() -> String {
    generate(SEED, PER_KIND).iter().map(|c| serde_json::to_string(c).expect("serializable") + "\n").collect()
}

#[test]
fn generator_reproduces_the_committed_file() {
    let text = generated_text();
    #[cfg(not(target_arch = "wasm32"))]
    if std::env::var("UNISONO_BLESS").is_ok_and(|v| v == "1") {
        std::fs::write(FILE, &text).expect("write vectors");
        return;
    }
    assert!(COMMITTED == text, "the core's math changed: review, then regenerate (see the file header)");
}

#[test]
fn every_committed_vector_recomputes_bit_for_bit() {
    let cases: Vec<Case> = COMMITTED.lines().map(|l| serde_json::from_str(l).expect("a case per line")).collect();
    assert_eq!(cases.len(), 3 * PER_KIND);
    let probes: usize = cases
        .iter()
        .map(|c| match c {
            Case::Clock { expect, .. } => expect.iter().map(|o| o.probes.len()).sum(),
            _ => 0,
        })
        .sum();
    assert!(probes > 5_000, "only {probes} time → position probes");
    let failures: Vec<String> =
        cases.iter().enumerate().filter_map(|(i, c)| check(c).err().map(|e| format!("case {i}: {e}"))).collect();
    assert!(
        failures.is_empty(),
        "{} of {} vectors differ:\n{}",
        failures.len(),
        cases.len(),
        failures[..failures.len().min(3)].join("\n")
    );
}

proptest::proptest! {
    /// Every finite `f64` a server sends (positions, server times, rates) parses back to the
    /// same bits. serde_json's default parser can be off by one ULP; the workspace enables its
    /// `float_roundtrip` feature, and this guards it.
    #[test]
    fn playback_floats_survive_json_exactly(pos in 0.0f64..1e9, at in 1.0e12f64..2.0e12, rate in 0.25f64..4.0) {
        let clock = unisono_core::PlaybackClock { position_ms: pos, server_time: at, rate, is_playing: true, ..Default::default() };
        let state = unisono_core::protocol::PlaybackState::from_clock(&clock, false);
        let text = serde_json::to_string(&state).expect("serialize");
        let back: unisono_core::protocol::PlaybackState = serde_json::from_str(&text).expect("parse");
        proptest::prop_assert_eq!(back.clock.position_ms.to_bits(), pos.to_bits());
        proptest::prop_assert_eq!(back.clock.server_time.to_bits(), at.to_bits());
        proptest::prop_assert_eq!(back.clock.rate.to_bits(), rate.to_bits());
    }
}
