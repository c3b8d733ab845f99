//! The core compiled to WebAssembly, run in Node by wasm-bindgen-test: the committed test
//! vectors must come out bit for bit as natively, and the bindings must work.
#![cfg(target_arch = "wasm32")]

use unisono::{Estimator, encode_request};
use unisono_core::vectors;
use wasm_bindgen_test::wasm_bindgen_test;

const VECTORS: &str = include_str!("../../core/tests/vectors/core-v1.jsonl");

#[wasm_bindgen_test]
fn vectors_recompute_bit_for_bit_in_wasm() {
    let failures: Vec<String> = VECTORS
        .lines()
        .enumerate()
        .filter_map(|(i, line)| match serde_json::from_str::<vectors::Case>(line) {
            Ok(case) => vectors::check(&case).err().map(|e| format!("case {i}: {e}")),
            Err(e) => Some(format!("case {i}: unreadable: {e}")),
        })
        .collect();
    assert_eq!(VECTORS.lines().count(), 1200);
    assert!(failures.is_empty(), "{} vectors differ in wasm, first: {}", failures.len(), failures[0]);
}

#[wasm_bindgen_test]
fn estimator_binding_matches_the_ntp_formula() {
    let mut e = Estimator::new(None).expect("estimator");
    // Offset +1000 ms, 10 ms each way, 1 ms processing.
    assert!(e.add_sample(0.0, 1010.0, 1011.0, 21.0));
    assert_eq!(e.offset(), Some(1000.0));
    assert_eq!(e.error_bound(), Some(10.0));
}

#[wasm_bindgen_test]
fn encode_request_validates_like_the_server() {
    let ok = encode_request("pause-playback", wasm_bindgen::JsValue::UNDEFINED, Some(7)).expect("valid");
    assert_eq!(ok, r#"{"event":"pause-playback","id":7}"#);
    assert!(encode_request("no-such-event", wasm_bindgen::JsValue::UNDEFINED, None).is_err());
}
