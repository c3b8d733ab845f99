//! The tree codec (`unisono_core::tree`, how the wasm client reads pushes without serde)
//! against serde's derive (how the server and the native client read them). Input:
//! `EVENT\nJSON`. Whatever the tree codec accepts, serde accepts as the same push: the client
//! never reads a push differently from the server that wrote it. (serde accepts a little more:
//! structs written as arrays, which no server sends; `tests/tree_codec.rs` checks the rest.)
#![no_main]

use libfuzzer_sys::fuzz_target;
use unisono_core::{
    drift::DriftConfig,
    estimator::EstimatorConfig,
    protocol::{PlaybackState, Push, RoomSettings},
    tree::FromTree,
};

fn agrees<T>(value: &serde_json::Value)
where
    T: FromTree + serde::de::DeserializeOwned + PartialEq + std::fmt::Debug,
{
    if let Ok(tree) = T::from_tree(value) {
        let serde: Result<T, _> = serde_json::from_value(value.clone());
        assert_eq!(serde.ok().as_ref(), Some(&tree), "{value}");
    }
}

fuzz_target!(|data: &[u8]| {
    let Some((event, payload)) = unisono_fuzz::event_and_data(data) else { return };
    let Some(value) = unisono_fuzz::json(payload) else { return };
    if let Some(Ok(tree)) = Push::from_tree(event, &value) {
        let serde = Push::decode(event, &value.to_string()).and_then(Result::ok);
        assert_eq!(serde.as_ref(), Some(&tree), "{event} {value}");
    }
    agrees::<PlaybackState>(&value);
    agrees::<RoomSettings>(&value);
    agrees::<DriftConfig>(&value);
    agrees::<EstimatorConfig>(&value);
});
