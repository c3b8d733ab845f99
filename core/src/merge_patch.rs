//! JSON Merge Patch (RFC 7396): [`diff`] computes the patch that turns one document into
//! another, [`apply`] applies one. Device state updates reach admins as patches against the
//! previous state they were sent (seed 003's "actualizaciones diferenciales").
//!
//! RFC 7396 cannot express a `null` *value* inside an object (null means "remove") nor patch
//! arrays element-wise (an array is replaced whole). [`diff`] is exact for documents without
//! `null` members; a `null` member in the new document is dropped by the round trip, which
//! [`apply`]'s users see as the key being absent. Device states are therefore normalized with
//! [`strip_nulls`] when stored.

use serde_json::{Map, Value};

/// The merge patch that turns `from` into `to` (`None` when they are equal).
pub fn diff(from: &Value, to: &Value) -> Option<Value> {
    if from == to {
        return None;
    }
    match (from, to) {
        (Value::Object(a), Value::Object(b)) => {
            let mut patch = Map::new();
            for (k, old) in a {
                match b.get(k) {
                    None => {
                        patch.insert(k.clone(), Value::Null);
                    }
                    Some(new) => {
                        if let Some(p) = diff(old, new) {
                            patch.insert(k.clone(), p);
                        }
                    }
                }
            }
            for (k, new) in b {
                if !a.contains_key(k) {
                    patch.insert(k.clone(), strip_nulls(new));
                }
            }
            Some(Value::Object(patch))
        }
        // A non-object target replaces the whole value; an object target over a non-object
        // value must not be read as a patch of nothing, so it is given whole (nulls dropped).
        (_, Value::Object(_)) => Some(strip_nulls(to)),
        _ => Some(to.clone()),
    }
}

/// Applies `patch` to `target` in place (RFC 7396 §2).
pub fn apply(target: &mut Value, patch: &Value) {
    let Value::Object(p) = patch else {
        *target = patch.clone();
        return;
    };
    if !target.is_object() {
        *target = Value::Object(Map::new());
    }
    if let Value::Object(t) = target {
        for (k, v) in p {
            if v.is_null() {
                t.remove(k);
            } else {
                apply(t.entry(k.clone()).or_insert(Value::Null), v);
            }
        }
    }
}

/// `v` with every `null` object member removed (what a merge patch can carry). Device states
/// are stored this way, so full states and patched states always agree.
pub fn strip_nulls(v: &Value) -> Value {
    match v {
        Value::Object(m) => {
            Value::Object(m.iter().filter(|(_, v)| !v.is_null()).map(|(k, v)| (k.clone(), strip_nulls(v))).collect())
        }
        other => other.clone(),
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;
    #[cfg(target_arch = "wasm32")]
    use wasm_bindgen_test::wasm_bindgen_test as test;

    use super::*;

    #[test]
    fn rfc_7396_appendix_a_examples() {
        let cases = [
            (json!({"a":"b"}), json!({"a":"c"}), json!({"a":"c"})),
            (json!({"a":"b"}), json!({"b":"c"}), json!({"a":"b","b":"c"})),
            (json!({"a":"b"}), json!({"a":null}), json!({})),
            (json!({"a":"b","b":"c"}), json!({"a":null}), json!({"b":"c"})),
            (json!({"a":["b"]}), json!({"a":"c"}), json!({"a":"c"})),
            (json!({"a":"c"}), json!({"a":["b"]}), json!({"a":["b"]})),
            (json!({"a":{"b":"c"}}), json!({"a":{"b":"d","c":null}}), json!({"a":{"b":"d"}})),
            (json!({"a":[{"b":"c"}]}), json!({"a":[1]}), json!({"a":[1]})),
            (json!(["a", "b"]), json!(["c", "d"]), json!(["c", "d"])),
            (json!({"a":"b"}), json!(["c"]), json!(["c"])),
            (json!({"a":"foo"}), json!(null), json!(null)),
            (json!({"a":"foo"}), json!("bar"), json!("bar")),
            (json!({"e":null}), json!({"a":1}), json!({"e":null,"a":1})),
            (json!([1, 2]), json!({"a":"b","c":null}), json!({"a":"b"})),
            (json!({}), json!({"a":{"bb":{"ccc":null}}}), json!({"a":{"bb":{}}})),
        ];
        for (target, patch, expected) in cases {
            let mut t = target.clone();
            apply(&mut t, &patch);
            assert_eq!(t, expected, "apply {patch} to {target}");
        }
    }

    #[test]
    fn diff_then_apply_reproduces_the_target() {
        let a = json!({"vlc": {"state": "playing", "time": 10, "volume": 80}, "app": {"v": "1"}, "gone": 1});
        let b = json!({"vlc": {"state": "paused", "time": 12, "volume": 80}, "app": {"v": "1"}, "new": [1, 2]});
        let p = diff(&a, &b).expect("different");
        assert_eq!(p, json!({"vlc": {"state": "paused", "time": 12}, "gone": null, "new": [1, 2]}));
        let mut t = a.clone();
        apply(&mut t, &p);
        assert_eq!(t, b);
        assert_eq!(diff(&b, &b), None);
    }
}
