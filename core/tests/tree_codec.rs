//! The tree codec (`unisono_core::tree`, what the wasm client reads and writes with) against
//! serde's derive (what the server reads and writes with), over random values of every type
//! the client handles:
//!
//! - writing: `to_tree` builds the very value `serde_json::to_value` builds;
//! - reading: `from_tree` reads serde's output back to the same value;
//! - rejecting: for every field at every depth, removed or replaced by `null`, a string, a
//!   boolean, a fraction, a negative, an integer or an empty object, both accept or both
//!   refuse, and accept the same value. (An empty *array* in place of an object is left out:
//!   serde's derive reads structs from arrays, which no client sends and the tree codec does
//!   not do.)

use std::fmt::Debug;

use proptest::{collection::vec, option, prelude::*};
use serde::{Serialize, de::DeserializeOwned};
use serde_json::{Value, json};
use unisono_core::{
    PlaybackClock,
    drift::{Correction, DriftConfig, Mode, PlayerCapabilities},
    estimator::EstimatorConfig,
    protocol::*,
    song::{Provider, Song},
    tree::{FromTree, ToTree, Tree, TreeError},
};

// ---- strategies ---------------------------------------------------------------------------

fn num() -> impl Strategy<Value = f64> {
    prop_oneof![
        any::<f64>().prop_filter("finite", |v| v.is_finite()),
        (-1e7..1e13f64),
        (0u32..100_000).prop_map(f64::from),
    ]
}

fn text() -> impl Strategy<Value = String> {
    prop_oneof!["[a-zA-Z0-9 _-]{0,8}", any::<String>().prop_map(|s| s.chars().take(6).collect())]
}

fn int() -> impl Strategy<Value = u64> {
    prop_oneof![0u64..1000, 0u64..(1u64 << 53)]
}

fn song() -> impl Strategy<Value = Song> {
    (text(), text(), prop_oneof![Just(Provider::Youtube), Just(Provider::Spotify), Just(Provider::Url)], text(), num())
        .prop_map(|(id, title, provider, url, duration_ms)| Song { id, title, provider, url, duration_ms })
}

fn settings() -> impl Strategy<Value = RoomSettings> {
    (any::<bool>(), any::<bool>(), num(), num()).prop_map(|(a, b, t, d)| RoomSettings {
        anyone_can_control: a,
        ready_barrier: b,
        ready_timeout_ms: t,
        start_delay_ms: d,
    })
}

fn patch() -> impl Strategy<Value = RoomSettingsPatch> {
    (option::of(any::<bool>()), option::of(any::<bool>()), option::of(num()), option::of(num())).prop_map(
        |(anyone_can_control, ready_barrier, ready_timeout_ms, start_delay_ms)| RoomSettingsPatch {
            anyone_can_control,
            ready_barrier,
            ready_timeout_ms,
            start_delay_ms,
        },
    )
}

fn playback() -> impl Strategy<Value = PlaybackState> {
    (option::of(song()), num(), num(), any::<bool>(), num(), int(), option::of(num()), option::of(num()), any::<bool>())
        .prop_map(|(song, position_ms, server_time, is_playing, rate, rev, started_at, paused_at, awaiting_ready)| {
            PlaybackState {
                clock: PlaybackClock { song, position_ms, server_time, is_playing, rate, rev },
                started_at,
                paused_at,
                awaiting_ready,
            }
        })
}

fn member() -> impl Strategy<Value = MemberInfo> {
    (text(), text(), num(), any::<bool>(), any::<bool>(), any::<bool>(), option::of(num())).prop_map(
        |(session_id, name, joined_at, is_host, ready, connected, drift_ms)| MemberInfo {
            session_id,
            name,
            joined_at,
            is_host,
            ready,
            connected,
            drift_ms,
        },
    )
}

fn queue_item() -> impl Strategy<Value = QueueItem> {
    (text(), song(), option::of(text()), num()).prop_map(|(item_id, song, added_by, added_at)| QueueItem {
        item_id,
        song,
        added_by,
        added_at,
    })
}

fn room_info() -> impl Strategy<Value = RoomInfo> {
    (text(), text(), num(), settings()).prop_map(|(code, name, created_at, settings)| RoomInfo {
        code,
        name,
        created_at,
        settings,
    })
}

fn room_joined() -> impl Strategy<Value = RoomJoined> {
    (
        room_info(),
        text(),
        vec(member(), 0..3),
        (0usize..50_000),
        option::of(text()),
        vec(queue_item(), 0..3),
        playback(),
        num(),
        num(),
    )
        .prop_map(|(room, you, members, member_count, host, queue, playback, server_time, should_start_at)| {
            RoomJoined { room, you, members, member_count, host, queue, playback, server_time, should_start_at }
        })
}

fn error_body() -> impl Strategy<Value = ErrorBody> {
    (proptest::sample::select(ErrorCode::ALL), text()).prop_map(|(code, message)| ErrorBody { code, message })
}

fn capabilities() -> impl Strategy<Value = PlayerCapabilities> {
    (any::<bool>(), option::of(num()), num(), num()).prop_map(|(can_set_rate, rate_step, s, p)| PlayerCapabilities {
        can_set_rate,
        rate_step,
        seek_latency_ms: s,
        position_granularity_ms: p,
    })
}

fn drift_config() -> impl Strategy<Value = DriftConfig> {
    (vec(num(), 14), 0u32..10).prop_map(|(n, max_seeks)| DriftConfig {
        dead_band_ms: n[0],
        exit_band_ms: n[1],
        near_max_rate_delta: n[2],
        far_max_rate_delta: n[3],
        near_threshold_ms: n[4],
        seek_threshold_ms: n[5],
        seek_only_threshold_ms: n[6],
        correction_horizon_ms: n[7],
        max_seeks,
        seek_window_ms: n[8],
        seek_backoff_ms: n[9],
        seek_settle_ms: n[10],
        rate_resolution: n[11],
        smoothing: n[12],
        nudge_rest_ms: n[13],
    })
}

fn estimator_config() -> impl Strategy<Value = EstimatorConfig> {
    (1usize..64, 1usize..64, num(), num(), 0usize..64, num()).prop_map(|(window, best_of, f, s, m, e)| {
        EstimatorConfig {
            window,
            best_of,
            outlier_factor: f,
            outlier_slack_ms: s,
            stable_min_samples: m,
            stable_max_error_ms: e,
        }
    })
}

fn request() -> impl Strategy<Value = Request> {
    prop_oneof![
        num().prop_map(|t0| Request::TimeSync(TimeSync { t0 })),
        (option::of(text()), option::of(patch()), option::of(text())).prop_map(|(name, settings, member_name)| {
            Request::CreateRoom(CreateRoom { name, settings, member_name })
        }),
        (text(), option::of(text())).prop_map(|(code, name)| Request::JoinRoom(JoinRoom { code, name })),
        Just(Request::LeaveRoom),
        (song(), any::<bool>()).prop_map(|(song, autoplay)| Request::LoadSong(LoadSong { song, autoplay })),
        Just(Request::PausePlayback),
        Just(Request::ResumePlayback),
        num().prop_map(|position_ms| Request::SeekPlayback(SeekPlayback { position_ms })),
        num().prop_map(|rate| Request::SetRate(SetRate { rate })),
        (option::of(text()), num(), any::<bool>()).prop_map(|(song_id, position_ms, is_playing)| {
            Request::UpdatePlayback(UpdatePlayback { song_id, position_ms, is_playing })
        }),
        Just(Request::GetPlaybackState),
        song().prop_map(|song| Request::QueueAdd(QueueAdd { song })),
        text().prop_map(|item_id| Request::QueueRemove(QueueRemove { item_id })),
        (text(), 0usize..100).prop_map(|(item_id, to_index)| Request::QueueMove(QueueMove { item_id, to_index })),
        Just(Request::PlayNext),
        text().prop_map(|session_id| Request::TransferHost(TransferHost { session_id })),
        any::<bool>().prop_map(|ready| Request::SetReady(SetReady { ready })),
        patch().prop_map(|settings| Request::UpdateSettings(UpdateSettings { settings })),
        num().prop_map(|drift_ms| Request::ReportDrift(ReportDrift { drift_ms })),
        (0usize..100, option::of(0usize..100))
            .prop_map(|(offset, limit)| Request::GetMembers(GetMembers { offset, limit })),
    ]
}

// ---- checks -------------------------------------------------------------------------------

/// Every single-field mutation of `v` (at any depth), each passed to `f`.
fn mutations(v: &Value, f: &mut dyn FnMut(Value)) {
    fn walk(root: &Value, path: &mut Vec<PathStep>, at: &Value, f: &mut dyn FnMut(Value)) {
        match at {
            Value::Object(map) => {
                for (k, child) in map {
                    path.push(PathStep::Key(k.clone()));
                    let mut replacements =
                        vec![Value::Null, json!("x"), json!(true), json!(1.5), json!(-1), json!(2), json!({})];
                    if !child.is_object() {
                        replacements.push(json!([]));
                    }
                    for r in replacements {
                        f(replace(root, path, Some(r)));
                    }
                    f(replace(root, path, None));
                    walk(root, path, child, f);
                    path.pop();
                }
            }
            Value::Array(items) => {
                for (i, child) in items.iter().enumerate() {
                    path.push(PathStep::Index(i));
                    walk(root, path, child, f);
                    path.pop();
                }
            }
            _ => {}
        }
    }
    walk(v, &mut Vec::new(), v, f);
}

#[derive(Clone)]
enum PathStep {
    Key(String),
    Index(usize),
}

/// `root` with the value at `path` replaced (`Some`) or its key removed (`None`).
fn replace(root: &Value, path: &[PathStep], with: Option<Value>) -> Value {
    let mut out = root.clone();
    let mut at = &mut out;
    for step in &path[..path.len() - 1] {
        at = match step {
            PathStep::Key(k) => &mut at[k.as_str()],
            PathStep::Index(i) => &mut at[*i],
        };
    }
    if let (PathStep::Key(k), Value::Object(map)) = (&path[path.len() - 1], at) {
        match with {
            Some(w) => {
                map.insert(k.clone(), w);
            }
            None => {
                map.remove(k);
            }
        }
    }
    out
}

/// Both decoders agree on `v`: both fail, or both succeed with the same value.
fn agree<V: DeserializeOwned + FromTree + PartialEq + Debug>(v: &Value) -> Result<(), TestCaseError> {
    let by_serde = serde_json::from_value::<V>(v.clone()).ok();
    let by_tree = V::from_tree(v).ok();
    prop_assert_eq!(by_serde, by_tree, "decoders disagree on {}", v);
    Ok(())
}

/// The full check for a type both written and read by the client.
fn same<V>(v: &V) -> Result<(), TestCaseError>
where
    V: Serialize + DeserializeOwned + FromTree + ToTree + PartialEq + Debug + Clone,
{
    let wire = serde_json::to_value(v).expect("serializable");
    let tree: Value = v.to_tree();
    prop_assert_eq!(&tree, &wire, "writers disagree");
    prop_assert_eq!(V::from_tree(&wire), Ok(v.clone()));
    let mut failed = None;
    mutations(&wire, &mut |m| {
        if failed.is_none()
            && let Err(e) = agree::<V>(&m)
        {
            failed = Some(e);
        }
    });
    failed.map_or(Ok(()), Err)
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(200))]

    #[test]
    fn songs_queue_and_settings(s in song(), q in queue_item(), st in settings(), p in patch()) {
        same(&s)?;
        same(&q)?;
        same(&st)?;
        same(&p)?;
    }

    #[test]
    fn playback_state(p in playback()) {
        same(&p)?;
    }

    #[test]
    fn members_and_room(m in member(), r in room_info()) {
        same(&m)?;
        same(&r)?;
    }

    #[test]
    fn room_joined_snapshot(j in room_joined()) {
        same(&j)?;
    }

    #[test]
    fn small_pushes(
        id in text(), token in text(), t in num(), resumed in any::<bool>(),
        m in member(), host in option::of(text()), previous in option::of(text()),
        q in vec(queue_item(), 0..3), st in settings(), e in error_body(),
    ) {
        same(&Connected { session_id: id.clone(), resume_token: token.clone(), server_time: t, resumed })?;
        same(&MemberJoined { member: m.clone() })?;
        same(&MemberUpdated { member: m })?;
        same(&MemberLeft { session_id: id.clone() })?;
        same(&HostChanged { host, previous })?;
        same(&QueueUpdated { queue: q })?;
        same(&SettingsUpdated { settings: st })?;
        same(&RoomClosed { code: id, reason: token })?;
        same(&e)?;
        same(&TimeSyncReply { t0: t, t1: t + 1.0, t2: t - 2.0 })?;
    }

    #[test]
    fn every_push_decodes_alike_by_event_name(j in room_joined(), p in playback(), m in member()) {
        let pushes = [
            ("room-joined", serde_json::to_value(&j).expect("json")),
            ("playback-paused", serde_json::to_value(&p).expect("json")),
            ("song-changed", serde_json::to_value(&p).expect("json")),
            ("member-joined", json!({ "member": m })),
            ("member-left", json!({ "sessionId": m.session_id })),
            ("device:online", json!({ "deviceId": "k" })),
        ];
        for (event, data) in pushes {
            let by_serde = Push::decode(event, &data.to_string()).map(Result::ok);
            let by_tree = Push::from_tree(event, &data).map(Result::ok);
            prop_assert_eq!(&by_serde, &by_tree);
            prop_assert_eq!(by_tree.is_some(), event != "device:online");
        }
    }

    #[test]
    fn room_replies(
        code in text(), r in room_info(), p in playback(), t in num(), item in option::of(text()),
        q in vec(queue_item(), 0..3), host in option::of(text()), ready in any::<bool>(), st in settings(),
        ms in vec(member(), 0..3), n in int(),
    ) {
        let n = n as usize;
        let replies = [
            RoomReply::Done,
            RoomReply::Joined(JoinedReply { code, room: r.clone(), member: ms.first().cloned().unwrap_or_else(|| MemberInfo {
                session_id: "s".into(), name: "n".into(), joined_at: 1.0, is_host: false, ready: true, connected: true, drift_ms: None,
            }) }),
            RoomReply::Playback(PlaybackReply { playback: p.clone(), server_time: t, position_ms: t / 2.0 }),
            RoomReply::Queue(QueueReply { item_id: item, queue: q }),
            RoomReply::Host(HostReply { host: host.clone() }),
            RoomReply::Ready(ReadyReply { ready, playback: p.clone() }),
            RoomReply::Settings(SettingsReply { settings: st }),
            RoomReply::Members(MembersPage { members: ms, total: n, offset: n / 2 }),
            RoomReply::Description(Box::new(RoomDescription {
                room: r, host, member_count: n, playback: p, queue_length: n / 3,
            })),
        ];
        for reply in &replies {
            // The enum is written as its variant, by both codecs.
            let wire = serde_json::to_value(reply).expect("serializable");
            prop_assert_eq!(reply.to_tree::<Value>(), wire);
            match reply {
                RoomReply::Done => {}
                RoomReply::Joined(v) => same(v)?,
                RoomReply::Playback(v) => same(v)?,
                RoomReply::Queue(v) => same(v)?,
                RoomReply::Host(v) => same(v)?,
                RoomReply::Ready(v) => same(v)?,
                RoomReply::Settings(v) => same(v)?,
                RoomReply::Members(v) => same(v)?,
                RoomReply::Description(v) => same(v.as_ref())?,
            }
        }
        prop_assert_eq!(serde_json::to_value(&RoomReply::Done).expect("json"), json!({}));
    }

    #[test]
    fn player_and_config_types(c in capabilities(), d in drift_config(), e in estimator_config()) {
        same(&c)?;
        same(&d)?;
        same(&e)?;
    }

    #[test]
    fn requests_are_written_as_serde_writes_them(r in request(), id in option::of(int())) {
        let by_serde: Value = serde_json::from_str(&r.to_json(id).expect("json")).expect("json");
        let by_tree: Value = r.to_tree(id);
        prop_assert_eq!(by_tree, by_serde);
    }
}

#[test]
fn corrections_and_modes_are_written_as_serde_writes_them() {
    for c in [Correction::None, Correction::Rate { rate: 1.02 }, Correction::Seek { to_ms: 1234.5 }] {
        assert_eq!(c.to_tree::<Value>(), serde_json::to_value(c).expect("json"));
        assert_eq!(Correction::from_tree(&serde_json::to_value(c).expect("json")), Ok(c));
    }
    for m in [Mode::Idle, Mode::Nudging, Mode::Seeking, Mode::Backoff] {
        assert_eq!(m.to_tree::<Value>(), serde_json::to_value(m).expect("json"));
    }
}

#[test]
fn a_partial_drift_config_is_read_over_the_given_base() {
    let base = DriftConfig { dead_band_ms: 3.0, ..DriftConfig::default() };
    let c = DriftConfig::from_tree_over(base.clone(), &json!({ "maxSeeks": 1 })).expect("config");
    assert_eq!(c, DriftConfig { max_seeks: 1, ..base });
    assert_eq!(
        DriftConfig::from_tree_over(DriftConfig::default(), &json!({ "maxSeeks": -1 })),
        Err(TreeError(&"maxSeeks"))
    );
}

#[test]
fn errors_name_the_innermost_field() {
    let bad = json!({ "member": { "sessionId": "a", "name": 7 } });
    assert_eq!(MemberJoined::from_tree(&bad), Err(TreeError(&"name")));
    assert_eq!(TreeError(&"name").message(), "missing or invalid field `name`");
    assert_eq!(Song::from_tree(&json!("not an object")), Err(TreeError(&"")));
    // The one known difference: a JavaScript number cannot say it was written `2.0`.
    let rev_as_float = json!({"song": null, "positionMs": 0, "serverTime": 0, "isPlaying": false, "rate": 1, "rev": 2.0, "startedAt": null, "pausedAt": null});
    assert!(serde_json::from_value::<PlaybackState>(rev_as_float.clone()).is_err());
    assert_eq!(PlaybackState::from_tree(&rev_as_float).map(|p| p.clock.rev), Ok(2));
}

#[test]
fn integers_beyond_javascripts_exact_range_are_refused() {
    assert!(u64::from_tree(&json!(9_007_199_254_740_991u64)).is_ok());
    assert!(u64::from_tree(&json!(9_007_199_254_740_993u64)).is_err());
    assert!(u32::from_tree(&json!(4_294_967_296u64)).is_err());
    assert_eq!(<Option<f64>>::from_tree(&Value::Null), Ok(None));
    assert_eq!(Vec::<u32>::from_tree(&json!([1, 2])), Ok(vec![1, 2]));
    assert_eq!(<Value as Tree>::from_number(f64::NAN), Value::Null);
}
