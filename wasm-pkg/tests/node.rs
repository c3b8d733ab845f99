//! The core compiled to WebAssembly, run in Node and headless Chromium by wasm-bindgen-test: the
//! committed test vectors must come out bit for bit as natively, the bindings must work, and
//! the client's JavaScript tree (`Js`: frames as `JSON.parse` gives them) must read and write
//! the protocol's shapes as serde does.
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

// ---- the JavaScript tree: frames as `JSON.parse` gives them ---------------------------------

mod js_tree {
    use serde_json::{Value, json};
    use unisono::{Js, client::state};
    use unisono_core::{
        PlaybackClock,
        protocol::{
            ErrorBody, ErrorCode, HostChanged, MemberInfo, MemberJoined, PlaybackState, Push, QueueItem, RoomInfo,
            RoomJoined, RoomSettings,
        },
        song::{Provider, Song},
        tree::{FromTree, ToTree},
    };
    use wasm_bindgen::JsValue;
    use wasm_bindgen_test::wasm_bindgen_test;

    fn parse(text: &str) -> JsValue {
        js_sys::JSON::parse(text).expect("JSON")
    }

    fn stringify(v: &JsValue) -> Value {
        let text: String = js_sys::JSON::stringify(v).expect("stringify").into();
        serde_json::from_str(&text).expect("JSON")
    }

    /// Every number as the `f64` it denotes: JavaScript writes `5000` where serde writes
    /// `5000.0`, the same number on the wire.
    fn numbers_as_f64(v: Value) -> Value {
        match v {
            Value::Number(n) => n.as_f64().and_then(serde_json::Number::from_f64).map_or(Value::Null, Value::Number),
            Value::Array(a) => Value::Array(a.into_iter().map(numbers_as_f64).collect()),
            Value::Object(o) => Value::Object(o.into_iter().map(|(k, v)| (k, numbers_as_f64(v))).collect()),
            other => other,
        }
    }

    /// `v` written for JavaScript and stringified, against serde's writing of it.
    fn written_as_serde_writes<V: ToTree + serde::Serialize>(v: &V) {
        let by_js = numbers_as_f64(stringify(&v.to_tree::<Js>().0));
        let by_serde = numbers_as_f64(serde_json::to_value(v).expect("json"));
        assert_eq!(by_js, by_serde);
    }

    fn song(id: &str) -> Song {
        Song {
            id: id.into(),
            title: "Tïtle \"q\"".into(),
            provider: Provider::Spotify,
            url: "u".into(),
            duration_ms: 0.1 + 0.2,
        }
    }

    fn playback() -> PlaybackState {
        let clock = PlaybackClock {
            song: Some(song("s")),
            position_ms: 1_234.567_890_123,
            server_time: 1_795_000_000_000.125,
            is_playing: true,
            rate: 1.05,
            rev: 9_007_199_254_740_991,
        };
        PlaybackState { clock, started_at: Some(-0.5), paused_at: None, awaiting_ready: true }
    }

    fn member(id: &str, drift: Option<f64>) -> MemberInfo {
        MemberInfo {
            session_id: id.into(),
            name: "Zoë".into(),
            joined_at: 5e-324,
            is_host: id == "A",
            ready: false,
            connected: true,
            drift_ms: drift,
        }
    }

    /// Room-protocol pushes as the server writes them (serde).
    fn pushes() -> Vec<Push> {
        let joined = RoomJoined {
            room: RoomInfo {
                code: "K7QX4M".into(),
                name: "F".into(),
                created_at: 1.0,
                settings: RoomSettings::default(),
            },
            you: "B".into(),
            members: vec![member("A", None), member("B", Some(-3.25))],
            member_count: 12_000,
            host: Some("A".into()),
            queue: vec![QueueItem { item_id: "q1".into(), song: song("t"), added_by: None, added_at: 7.0 }],
            playback: playback(),
            server_time: 1_795_000_000_500.5,
            should_start_at: 1234.5,
        };
        vec![
            Push::RoomJoined(Box::new(joined)),
            Push::PlaybackSeeked(playback()),
            Push::MemberJoined(MemberJoined { member: member("C", Some(1.5)) }),
            Push::HostChanged(HostChanged { host: None, previous: Some("A".into()) }),
            Push::Error(ErrorBody::new(ErrorCode::NotHost, "only the host")),
        ]
    }

    #[wasm_bindgen_test]
    fn pushes_read_from_json_parse_equal_serdes_reading() {
        for push in pushes() {
            let text = serde_json::to_string(&push).expect("json");
            let by_js = match state::decode(&Js(parse(&text))) {
                Ok(state::Incoming::Push(p)) => *p,
                other => panic!("not a push: {other:?} from {text}"),
            };
            assert_eq!(by_js, push, "{text}");
        }
    }

    #[wasm_bindgen_test]
    fn values_written_for_javascript_stringify_as_serde_writes_them() {
        written_as_serde_writes(&playback());
        written_as_serde_writes(&member("A", None));
        written_as_serde_writes(&member("B", Some(2.5)));
        written_as_serde_writes(&RoomSettings { anyone_can_control: true, ..RoomSettings::default() });
        for push in pushes() {
            if let Push::RoomJoined(j) = push {
                written_as_serde_writes(&*j);
            }
        }
    }

    #[wasm_bindgen_test]
    fn javascript_specifics_undefined_arrays_and_non_finite_numbers() {
        // `undefined` is a missing key (JSON.stringify drops it too): a defaulted field is fine.
        let o = js_sys::Object::new();
        let _ = js_sys::Reflect::set(&o, &"id".into(), &"a".into());
        let _ = js_sys::Reflect::set(&o, &"title".into(), &JsValue::UNDEFINED);
        let s = Song::from_tree(&Js(o.into())).expect("song");
        assert_eq!(s.title, "");
        // An array is not an object; NaN and Infinity are not numbers.
        assert!(Song::from_tree(&Js(parse(r#"["a"]"#))).is_err());
        let nan = parse(r#"{"id":"a"}"#);
        let _ = js_sys::Reflect::set(&nan, &"durationMs".into(), &JsValue::from_f64(f64::NAN));
        assert!(Song::from_tree(&Js(nan)).is_err());
        // A frame that is not an object, and a reply without an id, are errors.
        assert!(state::decode(&Js(parse("[1,2]"))).is_err());
        assert!(state::decode(&Js(parse(r#"{"ok":true}"#))).is_err());
        // Unmodelled pushes come through as they are.
        match state::decode(&Js(parse(r#"{"event":"device:online","data":{"deviceId":"k"}}"#))) {
            Ok(state::Incoming::Other(p)) => assert_eq!(stringify(&p.data.0), json!({"deviceId": "k"})),
            other => panic!("expected a raw push: {other:?}"),
        }
    }
}
