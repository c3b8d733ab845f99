//! The tree codec (`unisono_core::tree`, how the wasm client reads pushes without serde)
//! against serde's derive (how the server and the native client read them). Input:
//! `EVENT\nJSON`. Whatever the tree codec accepts, serde accepts as the same push: the client
//! never reads a push differently from the server that wrote it. (serde accepts a little more:
//! structs written as arrays, which no server sends; `tests/tree_codec.rs` checks the rest.)
//! Numbers are compared as JavaScript holds them: `200.0` and `200` are one number there, so the
//! tree codec reads either as an integer, and serde is given the integer (found by this target:
//! `"rev": 200.0`, `fuzz/regressions/tree_codec/`).
#![no_main]

use libfuzzer_sys::fuzz_target;
use unisono_core::{
    drift::DriftConfig,
    estimator::EstimatorConfig,
    protocol::{PlaybackState, Push, RoomSettings},
    tree::FromTree,
};

/// `v` with every whole float that fits an integer written as that integer: what a JavaScript
/// value read back as JSON would be.
fn as_javascript(v: &serde_json::Value) -> serde_json::Value {
    use serde_json::Value;
    match v {
        Value::Number(n) => match n.as_f64() {
            Some(f) if n.is_f64() && f.trunc() == f && f.abs() < 9_007_199_254_740_992.0 => Value::from(f as i64),
            _ => v.clone(),
        },
        Value::Array(a) => Value::Array(a.iter().map(as_javascript).collect()),
        Value::Object(o) => Value::Object(o.iter().map(|(k, v)| (k.clone(), as_javascript(v))).collect()),
        other => other.clone(),
    }
}

fn agrees<T>(value: &serde_json::Value)
where
    T: FromTree + serde::de::DeserializeOwned + PartialEq + std::fmt::Debug,
{
    if let Ok(tree) = T::from_tree(value) {
        let serde: Result<T, _> = serde_json::from_value(as_javascript(value));
        assert_eq!(serde.ok().as_ref(), Some(&tree), "{value}");
    }
}

fuzz_target!(|data: &[u8]| {
    let Some((event, payload)) = unisono_fuzz::event_and_data(data) else { return };
    let Some(value) = unisono_fuzz::json(payload) else { return };
    if let Some(Ok(tree)) = Push::from_tree(event, &value) {
        let serde = Push::decode(event, &as_javascript(&value).to_string()).and_then(Result::ok);
        assert_eq!(serde.as_ref(), Some(&tree), "{event} {value}");
    }
    agrees::<PlaybackState>(&value);
    agrees::<RoomSettings>(&value);
    agrees::<DriftConfig>(&value);
    agrees::<EstimatorConfig>(&value);
});
