//! Property: for documents whose objects hold no `null` members (what device states are),
//! applying `diff(a, b)` to `a` gives exactly `b`, and equal documents give no patch.

#[cfg(target_arch = "wasm32")]
use wasm_bindgen_test::wasm_bindgen_test as test;

use proptest::prelude::*;
use serde_json::{Map, Value, json};
use unisono_core::merge_patch::{apply, diff};

fn leaf() -> impl Strategy<Value = Value> {
    prop_oneof![
        any::<bool>().prop_map(Value::Bool),
        (-1000i64..1000).prop_map(|n| json!(n)),
        "[a-z]{0,6}".prop_map(Value::String),
    ]
}

fn doc() -> impl Strategy<Value = Value> {
    leaf().prop_recursive(4, 48, 6, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..4).prop_map(Value::Array),
            prop::collection::btree_map("[a-e]", inner, 0..5).prop_map(|m| Value::Object(m.into_iter().collect::<Map<
                String,
                Value,
            >>(
            ))),
        ]
    })
}

proptest! {
    #[test]
    fn diff_then_apply_is_identity(a in doc(), b in doc()) {
        match diff(&a, &b) {
            None => prop_assert_eq!(&a, &b),
            Some(p) => {
                let mut t = a.clone();
                apply(&mut t, &p);
                prop_assert_eq!(t, b);
            }
        }
    }

    #[test]
    fn a_patch_is_never_larger_than_the_target_for_small_changes(a in doc()) {
        // Changing one member of an object yields a patch naming only that member.
        if let Value::Object(m) = &a
            && let Some(k) = m.keys().next().cloned()
        {
            let mut b = a.clone();
            b[&k] = json!("changed-value");
            if let Some(Value::Object(p)) = diff(&a, &b) {
                prop_assert!(p.len() <= 1);
            }
        }
    }
}
