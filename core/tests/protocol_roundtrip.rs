//! Wire-format tests for the native WebSocket protocol (`unisono_core::protocol`).
//!
//! Covers:
//! - every request event in [`REQUEST_EVENTS`] survives `to_frame` → JSON text →
//!   `Request::parse_frame` unchanged, with its `id`;
//! - every [`Push`] variant is `{"event": "<kebab-name>", "data": ...}` with the exact event
//!   names existing clients use, and deserializes back equal;
//! - the `ok` / `error` shapes of a [`Reply`];
//! - how malformed frames are classified (`BAD_FRAME`, `UNKNOWN_EVENT`, `INVALID_PAYLOAD`) and
//!   which `id` is reported back;
//! - camelCase wire field names, and `ErrorCode::as_str` agreeing with its serde form.

#[cfg(target_arch = "wasm32")]
use wasm_bindgen_test::wasm_bindgen_test as test;

use serde_json::{Value, json};
use unisono_core::{
    clock::PlaybackClock,
    protocol::{
        ClientFrame, Connected, CreateRoom, ErrorBody, ErrorCode, GetMembers, HostChanged, JoinRoom, LoadSong,
        MemberInfo, MemberJoined, MemberLeft, MemberUpdated, PlaybackState, Push, QueueAdd, QueueItem, QueueMove,
        QueueRemove, QueueUpdated, REQUEST_EVENTS, ReplyFrame, ReportDrift, Request, RoomClosed, RoomInfo, RoomJoined,
        RoomSettings, RoomSettingsPatch, SeekPlayback, SetRate, SetReady, SettingsUpdated, TimeSync, TransferHost,
        UpdatePlayback, UpdateSettings,
    },
    song::{Provider, Song},
};

// ---------------------------------------------------------------------------------------------
// Fixtures
// ---------------------------------------------------------------------------------------------

fn song() -> Song {
    Song {
        id: "dQw4w9WgXcQ".into(),
        title: "Never Gonna Give You Up".into(),
        provider: Provider::Youtube,
        url: "https://www.youtube.com/watch?v=dQw4w9WgXcQ".into(),
        duration_ms: 213_000.0,
    }
}

fn patch() -> RoomSettingsPatch {
    RoomSettingsPatch {
        anyone_can_control: Some(true),
        ready_barrier: Some(false),
        ready_timeout_ms: Some(3000.0),
        start_delay_ms: Some(500.0),
    }
}

/// A representative request for every event name, with every optional field filled in.
fn sample_request(event: &str) -> Request {
    match event {
        "time-sync" => Request::TimeSync(TimeSync { t0: 1_700_000_000_123.5 }),
        "create-room" => Request::CreateRoom(CreateRoom {
            name: Some("Friday night".into()),
            settings: Some(patch()),
            member_name: Some("Alice".into()),
        }),
        "join-room" => Request::JoinRoom(JoinRoom { code: "ABC234".into(), name: Some("Bob".into()) }),
        "leave-room" => Request::LeaveRoom,
        "load-song" => Request::LoadSong(LoadSong { song: song(), autoplay: true }),
        "pause-playback" => Request::PausePlayback,
        "resume-playback" => Request::ResumePlayback,
        "seek-playback" => Request::SeekPlayback(SeekPlayback { position_ms: 42_500.25 }),
        "set-rate" => Request::SetRate(SetRate { rate: 1.25 }),
        "update-playback" => Request::UpdatePlayback(UpdatePlayback {
            song_id: Some("dQw4w9WgXcQ".into()),
            position_ms: 1500.0,
            is_playing: true,
        }),
        "get-playback-state" => Request::GetPlaybackState,
        "queue-add" => Request::QueueAdd(QueueAdd { song: song() }),
        "queue-remove" => Request::QueueRemove(QueueRemove { item_id: "q7".into() }),
        "queue-move" => Request::QueueMove(QueueMove { item_id: "q7".into(), to_index: 2 }),
        "play-next" => Request::PlayNext,
        "transfer-host" => Request::TransferHost(TransferHost { session_id: "s-bob".into() }),
        "set-ready" => Request::SetReady(SetReady { ready: true }),
        "update-settings" => Request::UpdateSettings(UpdateSettings { settings: patch() }),
        "report-drift" => Request::ReportDrift(ReportDrift { drift_ms: -12.5 }),
        "get-members" => Request::GetMembers(GetMembers { offset: 200, limit: Some(100) }),
        other => panic!("no sample for request event {other:?}: add one to this test"),
    }
}

fn playback_state() -> PlaybackState {
    let mut clock = PlaybackClock::default();
    clock.load(song(), 10_000.0, Some(10_250.0));
    clock.seek(3000.0, 12_000.0);
    PlaybackState::from_clock(&clock, false)
}

fn paused_state() -> PlaybackState {
    let mut clock = PlaybackClock::default();
    clock.load(song(), 10_000.0, None);
    PlaybackState::from_clock(&clock, true)
}

fn member(id: &str, host: bool) -> MemberInfo {
    MemberInfo {
        session_id: id.into(),
        name: format!("Member {id}"),
        joined_at: 1000.0,
        is_host: host,
        ready: true,
        connected: true,
        drift_ms: if host { None } else { Some(3.5) },
    }
}

fn queue() -> Vec<QueueItem> {
    vec![QueueItem { item_id: "q1".into(), song: song(), added_by: Some("s-alice".into()), added_at: 5000.0 }]
}

fn settings() -> RoomSettings {
    RoomSettings { anyone_can_control: true, ready_barrier: true, ready_timeout_ms: 4000.0, start_delay_ms: 300.0 }
}

/// One push of every variant, with the event name the spec fixes for it.
fn sample_pushes() -> Vec<(&'static str, Push)> {
    vec![
        (
            "connected",
            Push::Connected(Connected {
                session_id: "s-alice".into(),
                resume_token: "tok".into(),
                server_time: 1234.0,
                resumed: false,
            }),
        ),
        (
            "room-joined",
            Push::RoomJoined(Box::new(RoomJoined {
                room: RoomInfo { code: "ABC234".into(), name: "Room".into(), created_at: 10.0, settings: settings() },
                you: "s-bob".into(),
                members: vec![member("s-alice", true), member("s-bob", false)],
                member_count: 2,
                host: Some("s-alice".into()),
                queue: queue(),
                playback: playback_state(),
                server_time: 13_000.0,
                should_start_at: 4000.0,
            })),
        ),
        ("member-joined", Push::MemberJoined(MemberJoined { member: member("s-bob", false) })),
        ("member-left", Push::MemberLeft(MemberLeft { session_id: "s-bob".into() })),
        ("member-updated", Push::MemberUpdated(MemberUpdated { member: member("s-bob", false) })),
        (
            "host-changed",
            Push::HostChanged(HostChanged { host: Some("s-bob".into()), previous: Some("s-alice".into()) }),
        ),
        ("playback-state-update", Push::PlaybackStateUpdate(playback_state())),
        ("playback-paused", Push::PlaybackPaused(paused_state())),
        ("playback-resumed", Push::PlaybackResumed(playback_state())),
        ("playback-seeked", Push::PlaybackSeeked(playback_state())),
        ("song-changed", Push::SongChanged(paused_state())),
        ("queue-updated", Push::QueueUpdated(QueueUpdated { queue: queue() })),
        ("settings-updated", Push::SettingsUpdated(SettingsUpdated { settings: settings() })),
        ("room-closed", Push::RoomClosed(RoomClosed { code: "ABC234".into(), reason: "empty".into() })),
        ("error", Push::Error(ErrorBody::new(ErrorCode::RateLimited, "slow down"))),
    ]
}

/// Every error code: `ErrorCode::ALL`, checked complete. The `match` fails to compile when a
/// variant is added, and the count then fails the test until `ALL` lists it.
fn all_error_codes() -> Vec<ErrorCode> {
    fn position(code: ErrorCode) -> usize {
        match code {
            ErrorCode::BadFrame => 0,
            ErrorCode::UnknownEvent => 1,
            ErrorCode::InvalidPayload => 2,
            ErrorCode::NotHost => 3,
            ErrorCode::RoomNotFound => 4,
            ErrorCode::NotInRoom => 5,
            ErrorCode::NoSong => 6,
            ErrorCode::ItemNotFound => 7,
            ErrorCode::MemberNotFound => 8,
            ErrorCode::RoomFull => 9,
            ErrorCode::QueueFull => 10,
            ErrorCode::TooManyRooms => 11,
            ErrorCode::RateLimited => 12,
            ErrorCode::RoomClosed => 13,
            ErrorCode::StorageUnavailable => 14,
            ErrorCode::DeviceNotFound => 15,
            ErrorCode::DeviceOffline => 16,
            ErrorCode::InvalidCommand => 17,
            ErrorCode::CommandTimeout => 18,
            ErrorCode::NotRegistered => 19,
            ErrorCode::Forbidden => 20,
            ErrorCode::ClusterUnavailable => 21,
            ErrorCode::Internal => 22,
        }
    }
    let all = ErrorCode::ALL.to_vec();
    assert_eq!(all.len(), 23, "ErrorCode::ALL lists every variant");
    for (i, code) in all.iter().enumerate() {
        assert_eq!(position(*code), i, "{code:?} in ALL at its declaration position");
        assert_eq!(ErrorCode::from_wire(code.as_str()), Some(*code));
    }
    all
}

fn parse_err(text: &str) -> (Option<u64>, ErrorBody) {
    match Request::parse_frame(text) {
        Ok(ok) => panic!("{text} should be rejected, parsed as {ok:?}"),
        Err(e) => e,
    }
}

// ---------------------------------------------------------------------------------------------
// Requests
// ---------------------------------------------------------------------------------------------

#[test]
fn every_request_event_round_trips_through_a_text_frame() {
    assert_eq!(REQUEST_EVENTS.len(), 20, "the protocol defines 20 request events");
    for (i, event) in REQUEST_EVENTS.iter().enumerate() {
        let request = sample_request(event);
        assert_eq!(request.event(), *event, "Request::event names the request it was built for");
        let id = 1000 + i as u64;
        let frame = request.to_frame(Some(id)).expect("frame");
        assert_eq!(frame.event, *event);
        assert_eq!(frame.id, Some(id));
        let text = serde_json::to_string(&frame).expect("a client frame serializes");
        let (parsed_id, parsed) =
            Request::parse_frame(&text).unwrap_or_else(|e| panic!("{event}: {text} failed to parse: {e:?}"));
        assert_eq!(parsed_id, Some(id), "{event}: the id comes back");
        assert_eq!(parsed, request, "{event}: the request comes back unchanged");
    }
}

#[test]
fn a_frame_without_id_parses_with_id_none() {
    for event in REQUEST_EVENTS {
        let text = serde_json::to_string(&sample_request(event).to_frame(None).unwrap()).unwrap();
        let json: Value = serde_json::from_str(&text).unwrap();
        assert!(json.get("id").is_none(), "{event}: no id key when there is no id: {text}");
        let (id, request) = Request::parse_frame(&text).unwrap();
        assert_eq!(id, None);
        assert_eq!(request, sample_request(event));
    }
}

#[test]
fn requests_without_payload_omit_data() {
    for event in ["leave-room", "pause-playback", "resume-playback", "get-playback-state", "play-next"] {
        let json = serde_json::to_value(sample_request(event).to_frame(Some(1)).unwrap()).unwrap();
        assert_eq!(json, json!({ "event": event, "id": 1 }), "{event}");
    }
}

#[test]
fn request_event_names_are_unique() {
    let mut names: Vec<&str> = REQUEST_EVENTS.to_vec();
    names.sort_unstable();
    names.dedup();
    assert_eq!(names.len(), REQUEST_EVENTS.len());
}

#[test]
fn request_payload_fields_are_camel_case_on_the_wire() {
    let data = |event: &str| sample_request(event).data().expect("serializes");
    assert_eq!(data("seek-playback"), json!({ "positionMs": 42_500.25 }));
    assert_eq!(data("update-playback"), json!({ "songId": "dQw4w9WgXcQ", "positionMs": 1500.0, "isPlaying": true }));
    assert_eq!(data("transfer-host"), json!({ "sessionId": "s-bob" }));
    assert_eq!(data("queue-move"), json!({ "itemId": "q7", "toIndex": 2 }));
    assert_eq!(data("report-drift"), json!({ "driftMs": -12.5 }));
    assert_eq!(data("create-room")["memberName"], json!("Alice"));
    assert_eq!(
        data("update-settings"),
        json!({ "settings": {
            "anyoneCanControl": true,
            "readyBarrier": false,
            "readyTimeoutMs": 3000.0,
            "startDelayMs": 500.0,
        }})
    );
    let load = data("load-song");
    assert_eq!(load["song"]["durationMs"], json!(213_000.0));
    assert_eq!(load["song"]["provider"], json!("youtube"));
    assert_eq!(load["autoplay"], json!(true));
}

#[test]
fn client_written_frames_parse_with_defaults() {
    let (id, r) =
        Request::parse_frame(r#"{"event":"load-song","data":{"song":{"id":"abc","durationMs":1000}},"id":9}"#).unwrap();
    assert_eq!(id, Some(9));
    assert_eq!(
        r,
        Request::LoadSong(LoadSong {
            song: Song {
                id: "abc".into(),
                title: String::new(),
                provider: Provider::Url,
                url: String::new(),
                duration_ms: 1000.0
            },
            autoplay: false,
        })
    );
    let (_, r) = Request::parse_frame(r#"{"event":"create-room"}"#).unwrap();
    assert_eq!(r, Request::CreateRoom(CreateRoom::default()));
    let (_, r) = Request::parse_frame(r#"{"event":"update-settings","data":{"settings":{}}}"#).unwrap();
    assert_eq!(r, Request::UpdateSettings(UpdateSettings { settings: RoomSettingsPatch::default() }));
}

// ---------------------------------------------------------------------------------------------
// Malformed frames
// ---------------------------------------------------------------------------------------------

#[test]
fn malformed_json_is_bad_frame_without_id() {
    for text in ["", "{", "not json", r#"{"event":"pause-playback","id":1"#] {
        let (id, err) = parse_err(text);
        assert_eq!(id, None, "{text:?}: an unreadable frame has no id");
        assert_eq!(err.code, ErrorCode::BadFrame, "{text:?}");
    }
}

#[test]
fn unknown_event_is_reported_with_the_frame_id() {
    let (id, err) = parse_err(r#"{"event":"nope","id":3}"#);
    assert_eq!(id, Some(3));
    assert_eq!(err.code, ErrorCode::UnknownEvent);
    assert!(err.message.contains("nope"), "the message names the event: {}", err.message);
}

#[test]
fn wrongly_typed_payload_is_invalid_payload_with_the_frame_id() {
    let (id, err) = parse_err(r#"{"event":"seek-playback","data":{"positionMs":"x"},"id":4}"#);
    assert_eq!(id, Some(4));
    assert_eq!(err.code, ErrorCode::InvalidPayload);
    assert!(err.message.starts_with("seek-playback"), "the message names the event: {}", err.message);
}

#[test]
fn missing_required_payload_is_invalid_payload() {
    for text in [
        r#"{"event":"seek-playback","id":5}"#,
        r#"{"event":"time-sync","data":{},"id":5}"#,
        r#"{"event":"join-room","data":{"name":"x"},"id":5}"#,
        r#"{"event":"set-ready","data":{"ready":"yes"},"id":5}"#,
        r#"{"event":"queue-move","data":{"itemId":"q1","toIndex":-1},"id":5}"#,
    ] {
        let (id, err) = parse_err(text);
        assert_eq!(id, Some(5), "{text}");
        assert_eq!(err.code, ErrorCode::InvalidPayload, "{text}");
    }
}

#[test]
fn payload_free_requests_need_no_data() {
    assert_eq!(Request::parse_frame(r#"{"event":"pause-playback"}"#).unwrap(), (None, Request::PausePlayback));
    assert_eq!(
        Request::parse_frame(r#"{"event":"pause-playback","id":6}"#).unwrap(),
        (Some(6), Request::PausePlayback)
    );
    assert_eq!(
        Request::parse_frame(r#"{"event":"pause-playback","data":null,"id":6}"#).unwrap(),
        (Some(6), Request::PausePlayback)
    );
}

#[test]
fn non_string_event_is_bad_frame() {
    let (id, err) = parse_err(r#"{"event": 5}"#);
    assert_eq!(id, None);
    assert_eq!(err.code, ErrorCode::BadFrame);

    // The id is still reported when it could be read, so the client gets a reply.
    let (id, err) = parse_err(r#"{"event": 5, "id": 7}"#);
    assert_eq!(id, Some(7));
    assert_eq!(err.code, ErrorCode::BadFrame);

    for text in ["[]", "5", r#""pause-playback""#, r#"{"data":{}}"#, "null"] {
        let (_, err) = parse_err(text);
        assert_eq!(err.code, ErrorCode::BadFrame, "{text}");
    }
}

// ---------------------------------------------------------------------------------------------
// Pushes
// ---------------------------------------------------------------------------------------------

#[test]
fn every_push_is_an_event_with_data_and_round_trips() {
    let pushes = sample_pushes();
    assert_eq!(pushes.len(), 15, "the protocol defines 15 push events");
    for (name, push) in pushes {
        let text = push.to_json().unwrap();
        let json: Value = serde_json::from_str(&text).unwrap();
        let obj = json.as_object().unwrap_or_else(|| panic!("{name}: a push is a JSON object"));
        assert_eq!(obj.len(), 2, "{name}: exactly `event` and `data`: {text}");
        assert_eq!(obj["event"], json!(name), "{name}: event name");
        assert!(obj["data"].is_object(), "{name}: data is an object: {text}");
        assert_eq!(serde_json::to_value(&push).unwrap(), json, "to_json is the serde form");
        let back: Push = serde_json::from_str(&text).unwrap_or_else(|e| panic!("{name}: {e}: {text}"));
        assert_eq!(back, push, "{name}: deserializes back equal");
    }
}

#[test]
fn playback_pushes_expose_their_state() {
    for (name, push) in sample_pushes() {
        let expect_playback = matches!(
            name,
            "room-joined"
                | "playback-state-update"
                | "playback-paused"
                | "playback-resumed"
                | "playback-seeked"
                | "song-changed"
        );
        assert_eq!(push.playback().is_some(), expect_playback, "{name}");
    }
}

#[test]
fn playback_state_fields_are_camel_case() {
    let json = serde_json::to_value(playback_state()).unwrap();
    let mut keys: Vec<&str> = json.as_object().unwrap().keys().map(String::as_str).collect();
    keys.sort_unstable();
    assert_eq!(
        keys,
        ["awaitingReady", "isPlaying", "pausedAt", "positionMs", "rate", "rev", "serverTime", "song", "startedAt"]
    );
    assert_eq!(json["song"]["durationMs"], json!(213_000.0));
    // Playing (seeked to 3000 at 12000): started_at is derived, paused_at is null.
    assert_eq!(json["serverTime"], json!(12_000.0));
    assert_eq!(json["startedAt"], json!(12_000.0 - 3000.0));
    assert_eq!(json["pausedAt"], Value::Null);
    assert_eq!(json["isPlaying"], json!(true));

    let paused = serde_json::to_value(paused_state()).unwrap();
    assert_eq!(paused["pausedAt"], json!(10_000.0));
    assert_eq!(paused["startedAt"], Value::Null);
    assert_eq!(paused["awaitingReady"], json!(true));
}

#[test]
fn snapshot_and_session_fields_are_camel_case() {
    let pushes = sample_pushes();
    let data = |name: &str| {
        let push = &pushes.iter().find(|(n, _)| *n == name).unwrap().1;
        serde_json::to_value(push).unwrap()["data"].clone()
    };
    let connected = data("connected");
    assert_eq!(connected["sessionId"], json!("s-alice"));
    assert_eq!(connected["resumeToken"], json!("tok"));
    assert_eq!(connected["serverTime"], json!(1234.0));

    let joined = data("room-joined");
    assert_eq!(joined["shouldStartAt"], json!(4000.0));
    assert_eq!(joined["serverTime"], json!(13_000.0));
    assert_eq!(joined["room"]["createdAt"], json!(10.0));
    assert_eq!(joined["room"]["settings"]["anyoneCanControl"], json!(true));
    assert_eq!(joined["room"]["settings"]["readyBarrier"], json!(true));
    assert_eq!(joined["room"]["settings"]["readyTimeoutMs"], json!(4000.0));
    assert_eq!(joined["room"]["settings"]["startDelayMs"], json!(300.0));
    assert_eq!(joined["members"][0]["sessionId"], json!("s-alice"));
    assert_eq!(joined["members"][0]["isHost"], json!(true));
    assert_eq!(joined["members"][0]["joinedAt"], json!(1000.0));
    assert!(joined["members"][0].get("driftMs").is_none(), "absent drift is omitted");
    assert_eq!(joined["members"][1]["driftMs"], json!(3.5));
    assert_eq!(joined["queue"][0]["itemId"], json!("q1"));
    assert_eq!(joined["queue"][0]["addedBy"], json!("s-alice"));
    assert_eq!(joined["queue"][0]["addedAt"], json!(5000.0));
    assert_eq!(joined["playback"]["positionMs"], json!(3000.0));

    assert_eq!(data("member-left"), json!({ "sessionId": "s-bob" }));
    assert_eq!(data("host-changed"), json!({ "host": "s-bob", "previous": "s-alice" }));
    assert_eq!(data("error"), json!({ "code": "RATE_LIMITED", "message": "slow down" }));
}

#[test]
fn playback_state_clock_round_trips() {
    let state = playback_state();
    assert_eq!(PlaybackState::from_clock(&state.clock, state.awaiting_ready), state);
}

// ---------------------------------------------------------------------------------------------
// Replies and error codes
// ---------------------------------------------------------------------------------------------

#[test]
fn ok_reply_shape() {
    let reply = ReplyFrame::ok(12, json!({ "ready": true }));
    let json = serde_json::to_value(&reply).unwrap();
    assert_eq!(json, json!({ "id": 12, "ok": true, "data": { "ready": true } }));
    assert_eq!(serde_json::from_value::<ReplyFrame>(json).unwrap(), reply);
}

#[test]
fn error_reply_shape() {
    let reply = ReplyFrame::err(13, ErrorBody::new(ErrorCode::NotHost, "only the host can do this"));
    let json = serde_json::to_value(&reply).unwrap();
    assert_eq!(
        json,
        json!({ "id": 13, "ok": false, "error": { "code": "NOT_HOST", "message": "only the host can do this" } })
    );
    assert_eq!(serde_json::from_value::<ReplyFrame>(json).unwrap(), reply);
}

#[test]
fn error_code_as_str_matches_its_serde_form() {
    for code in all_error_codes() {
        assert_eq!(serde_json::to_value(code).unwrap(), json!(code.as_str()), "{code:?}");
        let back: ErrorCode = serde_json::from_value(json!(code.as_str())).unwrap();
        assert_eq!(back, code);
        let s = code.as_str();
        assert!(s.bytes().all(|b| b.is_ascii_uppercase() || b == b'_'), "{s} is SCREAMING_SNAKE_CASE");
    }
}

#[test]
fn client_frame_serializes_minimally() {
    let frame = ClientFrame { event: "play-next".into(), data: Value::Null, id: None };
    assert_eq!(serde_json::to_value(&frame).unwrap(), json!({ "event": "play-next" }));
}

#[test]
fn push_decode_dispatches_on_the_event_name() {
    for (name, push) in sample_pushes() {
        let json: Value = serde_json::from_str(&push.to_json().unwrap()).unwrap();
        let data = json["data"].to_string();
        let back = Push::decode(name, &data).unwrap_or_else(|| panic!("{name}: a room push")).unwrap();
        assert_eq!(back, push, "{name}");
    }
    assert!(Push::decode("state:updated", "{}").is_none(), "a device admin push is not a room push");
    assert!(Push::decode("member-left", r#"{"who":"A"}"#).is_some_and(|r| r.is_err()), "malformed payload");
    assert!(serde_json::from_str::<Push>(r#"{"event":"nope","data":{}}"#).is_err());
}

#[test]
fn value_and_text_payloads_decode_alike() {
    for event in REQUEST_EVENTS {
        let request = sample_request(event);
        let data = request.data().expect("serializes");
        assert_eq!(Request::parse(event, data.clone()).as_ref(), Ok(&request), "{event} from a Value");
        let text = (!data.is_null()).then(|| data.to_string());
        assert_eq!(Request::parse_json(event, text.as_deref()), Ok(request), "{event} from text");
    }
    let bad = Request::parse("seek-playback", json!({"positionMs": "x"})).unwrap_err();
    assert_eq!(bad.code, ErrorCode::InvalidPayload);
    assert!(bad.message.starts_with("seek-playback: "), "{}", bad.message);
}
