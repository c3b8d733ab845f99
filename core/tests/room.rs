//! Scenario tests for the room state machine, `Room::apply(command, now)`.
//!
//! Every scenario passes explicit server times. Covered: creation and the first host; the
//! `Persist`-first rule (and its absence for read-only commands); host-only control and
//! `anyoneCanControl`; non-members; the late joiner's snapshot; the queue (item ids,
//! permissions, moves, play-next, auto-advance, end of queue); host hand-over on leave, on
//! disconnect after the grace period, and by transfer; the ready barrier (release, timeout,
//! late joiners, disconnects); the empty-room TTL; `record()` / `restore()`; rejected commands
//! leaving the room untouched; and `next_deadline()`.
//!
//! Every successful command goes through [`ok`], which also checks that whenever the durable
//! record changed, `RoomEffect::Persist` is the first effect (and never appears anywhere else).

#[cfg(target_arch = "wasm32")]
use wasm_bindgen_test::wasm_bindgen_test as test;

use serde_json::json;
use unisono_core::{
    Millis,
    protocol::{BARRIER_START_LEAD_MS, RoomSettings, RoomSettingsPatch},
    protocol::{HostChanged, PlaybackState, Push, RoomClosed, RoomJoined},
    room::{Room, RoomCommand, RoomEffect, RoomError, RoomLimits, RoomRecord},
    song::{Provider, Song},
};

// ---------------------------------------------------------------------------------------------
// Helpers
// ---------------------------------------------------------------------------------------------

const CODE: &str = "ROOM23";

fn song(id: &str, duration_ms: Millis) -> Song {
    Song {
        id: id.into(),
        title: format!("Song {id}"),
        provider: Provider::Url,
        url: format!("https://example.invalid/{id}.mp3"),
        duration_ms,
    }
}

fn limits() -> RoomLimits {
    RoomLimits::default()
}

fn barrier_settings() -> RoomSettings {
    RoomSettings { ready_barrier: true, ..RoomSettings::default() }
}

/// A fresh room created at time 0 with `members` joined at times 1, 2, 3, … in order.
fn room_with(members: &[&str], settings: RoomSettings) -> Room {
    let mut room = Room::new(CODE.into(), "Test room", settings, limits(), 0.0);
    for (i, m) in members.iter().enumerate() {
        ok(&mut room, join(m), (i + 1) as Millis);
    }
    room
}

/// Applies a command that must succeed, checking the `Persist`-first rule on the way.
fn ok(room: &mut Room, cmd: RoomCommand, now: Millis) -> Vec<RoomEffect> {
    let before = room.record();
    let effects = room.apply(cmd.clone(), now).unwrap_or_else(|e| panic!("{cmd:?} at {now} failed: {e}"));
    let persists: Vec<usize> =
        effects.iter().enumerate().filter(|(_, e)| **e == RoomEffect::Persist).map(|(i, _)| i).collect();
    assert!(persists.is_empty() || persists == [0], "{cmd:?}: Persist only ever comes first: {effects:?}");
    if room.record() != before {
        assert_eq!(
            effects.first(),
            Some(&RoomEffect::Persist),
            "{cmd:?} changed durable state, so Persist must come first: {effects:?}"
        );
    }
    effects
}

/// Applies a command that must be refused, and checks that it changed nothing at all.
fn rejected(room: &mut Room, cmd: RoomCommand, now: Millis) -> RoomError {
    let before = room.clone();
    let record = room.record();
    let err = match room.apply(cmd.clone(), now) {
        Ok(effects) => panic!("{cmd:?} at {now} should be refused, got {effects:?}"),
        Err(e) => e,
    };
    assert_eq!(room.record(), record, "{cmd:?} was refused ({err}) but changed the record");
    assert_eq!(*room, before, "{cmd:?} was refused ({err}) but changed the room");
    err
}

fn event_name(push: &Push) -> String {
    serde_json::to_value(push).unwrap()["event"].as_str().unwrap().to_owned()
}

/// A compact, readable form of an effect list:
/// `persist`, `broadcast:<event>`, `broadcast:<event>!<except>`, `send:<to>:<event>`, `reply`,
/// `closed`.
fn describe(effects: &[RoomEffect]) -> Vec<String> {
    effects
        .iter()
        .map(|e| match e {
            RoomEffect::Persist => "persist".to_owned(),
            RoomEffect::Broadcast { push, except: None } => format!("broadcast:{}", event_name(push)),
            RoomEffect::Broadcast { push, except: Some(x) } => format!("broadcast:{}!{x}", event_name(push)),
            RoomEffect::Send { to, push } => format!("send:{to}:{}", event_name(push)),
            RoomEffect::Reply(_) => "reply".to_owned(),
            RoomEffect::Closed => "closed".to_owned(),
        })
        .collect()
}

fn broadcast_pushes(effects: &[RoomEffect]) -> Vec<&Push> {
    effects
        .iter()
        .filter_map(|e| match e {
            RoomEffect::Broadcast { push, .. } => Some(push),
            _ => None,
        })
        .collect()
}

/// The playback state of the only broadcast playback push in `effects`.
fn playback_push(effects: &[RoomEffect]) -> &PlaybackState {
    let states: Vec<&PlaybackState> = broadcast_pushes(effects).into_iter().filter_map(Push::playback).collect();
    assert_eq!(states.len(), 1, "expected exactly one playback push in {:?}", describe(effects));
    states[0]
}

fn sent_snapshot<'a>(effects: &'a [RoomEffect], to: &str) -> &'a RoomJoined {
    effects
        .iter()
        .find_map(|e| match e {
            RoomEffect::Send { to: t, push: Push::RoomJoined(j) } if t == to => Some(&**j),
            _ => None,
        })
        .unwrap_or_else(|| panic!("no room-joined sent to {to} in {:?}", describe(effects)))
}

fn host_changed(effects: &[RoomEffect]) -> Option<&HostChanged> {
    broadcast_pushes(effects).into_iter().find_map(|p| match p {
        Push::HostChanged(h) => Some(h),
        _ => None,
    })
}

/// The reply's data as a client gets it.
fn reply(effects: &[RoomEffect]) -> serde_json::Value {
    let r = effects
        .iter()
        .find_map(|e| match e {
            RoomEffect::Reply(r) => Some(r),
            _ => None,
        })
        .unwrap_or_else(|| panic!("no reply in {:?}", describe(effects)));
    serde_json::to_value(r).expect("a reply serializes")
}

fn member_ready(room: &Room, session: &str) -> bool {
    room.members().into_iter().find(|m| m.session_id == session).expect("member").ready
}

// RoomCommand constructors, so scenarios read like the protocol.
fn join(s: &str) -> RoomCommand {
    RoomCommand::Join { session: s.into(), name: format!("{s} name") }
}
fn leave(s: &str) -> RoomCommand {
    RoomCommand::Leave { session: s.into() }
}
fn disconnect(s: &str) -> RoomCommand {
    RoomCommand::Disconnect { session: s.into() }
}
fn reconnect(s: &str) -> RoomCommand {
    RoomCommand::Reconnect { session: s.into() }
}
fn load(s: &str, song: Song, autoplay: bool) -> RoomCommand {
    RoomCommand::Load { session: s.into(), song, autoplay }
}
fn pause(s: &str) -> RoomCommand {
    RoomCommand::Pause { session: s.into() }
}
fn resume(s: &str) -> RoomCommand {
    RoomCommand::Resume { session: s.into() }
}
fn seek(s: &str, position_ms: Millis) -> RoomCommand {
    RoomCommand::Seek { session: s.into(), position_ms }
}
fn set_rate(s: &str, rate: f64) -> RoomCommand {
    RoomCommand::SetRate { session: s.into(), rate }
}
fn update(s: &str, song_id: Option<&str>, position_ms: Millis, is_playing: bool) -> RoomCommand {
    RoomCommand::Update { session: s.into(), song_id: song_id.map(Into::into), position_ms, is_playing }
}
fn get_playback(s: &str) -> RoomCommand {
    RoomCommand::GetPlayback { session: s.into() }
}
fn queue_add(s: &str, song: Song) -> RoomCommand {
    RoomCommand::QueueAdd { session: s.into(), song }
}
fn queue_remove(s: &str, item: &str) -> RoomCommand {
    RoomCommand::QueueRemove { session: s.into(), item_id: item.into() }
}
fn queue_move(s: &str, item: &str, to_index: usize) -> RoomCommand {
    RoomCommand::QueueMove { session: s.into(), item_id: item.into(), to_index }
}
fn play_next(s: &str) -> RoomCommand {
    RoomCommand::PlayNext { session: s.into() }
}
fn transfer(s: &str, to: &str) -> RoomCommand {
    RoomCommand::TransferHost { session: s.into(), to: to.into() }
}
fn set_ready(s: &str, ready: bool) -> RoomCommand {
    RoomCommand::SetReady { session: s.into(), ready }
}
fn settings(s: &str, patch: RoomSettingsPatch) -> RoomCommand {
    RoomCommand::UpdateSettings { session: s.into(), patch }
}
fn report_drift(s: &str, drift_ms: f64) -> RoomCommand {
    RoomCommand::ReportDrift { session: s.into(), drift_ms }
}

fn queue_ids(room: &Room) -> Vec<&str> {
    room.queue().iter().map(|q| q.item_id.as_str()).collect()
}

// ---------------------------------------------------------------------------------------------
// Creation and joining
// ---------------------------------------------------------------------------------------------

#[test]
fn the_first_joiner_of_a_new_room_becomes_host() {
    let mut room = Room::new(CODE.into(), "  Friday\u{7} night  ", RoomSettings::default(), limits(), 0.0);
    assert_eq!(room.host(), None);
    assert_eq!(room.member_count(), 0);
    assert_eq!(room.info().name, "Friday night", "names are trimmed and stripped of control characters");

    let fx = ok(&mut room, join("alice"), 10.0);
    assert_eq!(
        describe(&fx),
        ["persist", "broadcast:member-joined!alice", "broadcast:host-changed", "reply", "send:alice:room-joined"]
    );
    assert_eq!(host_changed(&fx), Some(&HostChanged { host: Some("alice".into()), previous: None }));
    assert_eq!(room.host(), Some("alice"));
    assert_eq!(reply(&fx)["code"], json!(CODE));

    let snap = sent_snapshot(&fx, "alice");
    assert_eq!(snap.you, "alice");
    assert_eq!(snap.host.as_deref(), Some("alice"));
    assert_eq!(snap.room.code, CODE);
    assert_eq!(snap.server_time, 10.0);
    assert_eq!(snap.members.len(), 1);
    assert!(snap.members[0].is_host && snap.members[0].connected);
    assert_eq!(snap.members[0].name, "alice name");
    assert_eq!(snap.members[0].joined_at, 10.0);
}

#[test]
fn a_second_joiner_is_announced_without_persisting() {
    let mut room = room_with(&["alice"], RoomSettings::default());
    let fx = ok(&mut room, join("bob"), 20.0);
    assert_eq!(describe(&fx), ["broadcast:member-joined!bob", "reply", "send:bob:room-joined"]);
    assert_eq!(room.host(), Some("alice"));
    let snap = sent_snapshot(&fx, "bob");
    assert_eq!(snap.you, "bob");
    assert_eq!(snap.host.as_deref(), Some("alice"));
    assert_eq!(room.member_ids().collect::<Vec<_>>(), ["alice", "bob"]);
}

#[test]
fn joining_again_is_a_resync_not_a_new_member() {
    let mut room = room_with(&["alice", "bob"], RoomSettings::default());
    let fx = ok(&mut room, RoomCommand::Join { session: "bob".into(), name: "Robert".into() }, 30.0);
    assert_eq!(describe(&fx), ["reply", "send:bob:room-joined"]);
    assert_eq!(room.member_count(), 2);
    let bob = room.members().into_iter().find(|m| m.session_id == "bob").unwrap();
    assert_eq!(bob.name, "Robert");
    assert_eq!(bob.joined_at, 2.0, "a re-sync keeps the original join time");
}

#[test]
fn a_full_room_refuses_new_members() {
    let mut room = Room::new(CODE.into(), "r", RoomSettings::default(), RoomLimits { max_members: 2, ..limits() }, 0.0);
    ok(&mut room, join("alice"), 1.0);
    ok(&mut room, join("bob"), 2.0);
    assert_eq!(rejected(&mut room, join("carol"), 3.0), RoomError::RoomFull(2));
    // A member already inside may still re-sync.
    ok(&mut room, join("bob"), 4.0);
}

#[test]
fn unnamed_members_get_a_guest_name() {
    let mut room = room_with(&["alice"], RoomSettings::default());
    ok(&mut room, RoomCommand::Join { session: "bob".into(), name: "   ".into() }, 5.0);
    let bob = room.members().into_iter().find(|m| m.session_id == "bob").unwrap();
    assert_eq!(bob.name, "Guest 2");
}

#[test]
fn a_late_joiner_snapshot_starts_at_the_current_position() {
    let mut room = room_with(&["alice"], RoomSettings::default());
    ok(&mut room, load("alice", song("a", 180_000.0), true), 1000.0);
    ok(&mut room, seek("alice", 30_000.0), 5000.0);
    ok(&mut room, set_rate("alice", 2.0), 6000.0);

    let fx = ok(&mut room, join("bob"), 9000.0);
    let snap = sent_snapshot(&fx, "bob");
    // 30 s at 5000, +1 s at rate 1 until 6000, +3 s of wall time at rate 2 until 9000.
    assert_eq!(snap.should_start_at, 37_000.0);
    assert_eq!(snap.should_start_at, room.clock().position_at(9000.0));
    assert_eq!(snap.server_time, 9000.0);
    assert_eq!(snap.playback, room.playback());
    assert_eq!(snap.playback.clock.position_at(9000.0), 37_000.0, "the client computes the same position");
}

#[test]
fn a_joiner_during_a_scheduled_start_waits_for_the_common_start() {
    let settings = RoomSettings { start_delay_ms: 2000.0, ..RoomSettings::default() };
    let mut room = room_with(&["alice"], settings);
    ok(&mut room, load("alice", song("a", 180_000.0), true), 1000.0);
    assert!(room.clock().is_scheduled(1000.0), "autoplay starts start_delay_ms later");

    let fx = ok(&mut room, join("bob"), 2000.0);
    let snap = sent_snapshot(&fx, "bob");
    assert_eq!(snap.should_start_at, 0.0);
    assert_eq!(snap.playback.clock.server_time, 3000.0, "everyone starts at the same instant");
    assert!(snap.playback.clock.is_playing);
}

// ---------------------------------------------------------------------------------------------
// Persist and read-only commands
// ---------------------------------------------------------------------------------------------

#[test]
fn persist_comes_first_for_every_durable_change() {
    let mut room = room_with(&["alice", "bob"], RoomSettings::default());
    let durable = [
        (load("alice", song("a", 100_000.0), false), 100.0),
        (resume("alice"), 200.0),
        (seek("alice", 5000.0), 300.0),
        (set_rate("alice", 1.5), 400.0),
        (pause("alice"), 500.0),
        (update("alice", None, 7000.0, true), 600.0),
        (queue_add("bob", song("b", 50_000.0)), 700.0),
        (queue_add("bob", song("c", 50_000.0)), 710.0),
        (queue_move("alice", "q2", 0), 800.0),
        (queue_remove("bob", "q1"), 900.0),
        (play_next("alice"), 1000.0),
        (settings("alice", RoomSettingsPatch { start_delay_ms: Some(100.0), ..Default::default() }), 1100.0),
        (transfer("alice", "bob"), 1200.0),
    ];
    for (cmd, now) in durable {
        let before = room.record();
        let fx = ok(&mut room, cmd.clone(), now);
        assert_ne!(room.record(), before, "{cmd:?} is a durable change");
        assert_eq!(fx.first(), Some(&RoomEffect::Persist), "{cmd:?}: {:?}", describe(&fx));
    }
}

#[test]
fn read_only_commands_do_not_persist() {
    let mut room = room_with(&["alice", "bob"], RoomSettings::default());
    ok(&mut room, load("alice", song("a", 100_000.0), true), 1000.0);

    for (cmd, now) in [(get_playback("bob"), 3000.0), (report_drift("bob", 12.5), 3100.0)] {
        assert!(cmd.is_read_only(), "{cmd:?}");
        let record = room.record();
        let fx = ok(&mut room, cmd.clone(), now);
        assert!(!fx.contains(&RoomEffect::Persist), "{cmd:?}: {:?}", describe(&fx));
        assert_eq!(describe(&fx), ["reply"], "{cmd:?}");
        assert_eq!(room.record(), record);
    }

    let fx = ok(&mut room, get_playback("bob"), 4000.0);
    assert_eq!(reply(&fx)["positionMs"], json!(3000.0));
    assert_eq!(reply(&fx)["serverTime"], json!(4000.0));
    let bob = room.members().into_iter().find(|m| m.session_id == "bob").unwrap();
    assert_eq!(bob.drift_ms, Some(12.5), "reported drift is shown to the others");
    assert!(!load("alice", song("x", 1.0), false).is_read_only());
}

// ---------------------------------------------------------------------------------------------
// Permissions
// ---------------------------------------------------------------------------------------------

#[test]
fn only_the_host_controls_playback() {
    let mut room = room_with(&["alice", "bob"], RoomSettings::default());
    ok(&mut room, load("alice", song("a", 100_000.0), true), 1000.0);
    ok(&mut room, queue_add("alice", song("b", 100_000.0)), 1100.0);

    for cmd in [
        pause("bob"),
        resume("bob"),
        seek("bob", 10.0),
        load("bob", song("z", 1000.0), true),
        set_rate("bob", 2.0),
        update("bob", None, 0.0, false),
        play_next("bob"),
        queue_move("bob", "q1", 0),
        queue_remove("bob", "q1"),
        transfer("bob", "bob"),
        settings("bob", RoomSettingsPatch { anyone_can_control: Some(true), ..Default::default() }),
    ] {
        assert_eq!(rejected(&mut room, cmd.clone(), 2000.0), RoomError::NotHost, "{cmd:?}");
    }
    assert_eq!(RoomError::NotHost.code().as_str(), "NOT_HOST");

    // The host itself may.
    ok(&mut room, pause("alice"), 2000.0);
}

#[test]
fn anyone_can_control_lets_members_control_playback_but_not_the_room() {
    let mut room = room_with(&["alice", "bob"], RoomSettings::default());
    let fx = ok(
        &mut room,
        settings("alice", RoomSettingsPatch { anyone_can_control: Some(true), ..Default::default() }),
        10.0,
    );
    assert_eq!(describe(&fx), ["persist", "broadcast:settings-updated", "reply"]);
    assert!(room.settings().anyone_can_control);

    ok(&mut room, load("bob", song("a", 100_000.0), true), 1000.0);
    ok(&mut room, pause("bob"), 2000.0);
    ok(&mut room, seek("bob", 500.0), 2100.0);
    ok(&mut room, resume("bob"), 2200.0);
    ok(&mut room, queue_add("alice", song("b", 1.0)), 2300.0);
    ok(&mut room, queue_remove("bob", "q1"), 2400.0);
    assert_eq!(room.host(), Some("alice"), "control does not make bob host");

    assert_eq!(rejected(&mut room, transfer("bob", "bob"), 3000.0), RoomError::NotHost);
    assert_eq!(
        rejected(&mut room, settings("bob", RoomSettingsPatch::default()), 3000.0),
        RoomError::NotHost,
        "settings stay host-only"
    );
}

#[test]
fn non_members_are_not_in_the_room() {
    let mut room = room_with(&["alice"], RoomSettings::default());
    ok(&mut room, load("alice", song("a", 100_000.0), false), 10.0);
    ok(&mut room, queue_add("alice", song("b", 1.0)), 20.0);

    let m = "mallory";
    for cmd in [
        leave(m),
        reconnect(m),
        load(m, song("z", 1.0), true),
        pause(m),
        resume(m),
        seek(m, 0.0),
        set_rate(m, 1.0),
        update(m, None, 0.0, true),
        get_playback(m),
        queue_add(m, song("z", 1.0)),
        queue_remove(m, "q1"),
        queue_move(m, "q1", 0),
        play_next(m),
        transfer(m, "alice"),
        set_ready(m, true),
        settings(m, RoomSettingsPatch::default()),
        report_drift(m, 1.0),
    ] {
        assert_eq!(rejected(&mut room, cmd.clone(), 100.0), RoomError::NotInRoom, "{cmd:?}");
    }
    // A stray disconnect of an unknown session is ignored.
    assert_eq!(room.apply(disconnect(m), 100.0), Ok(Vec::new()));
}

// ---------------------------------------------------------------------------------------------
// Playback
// ---------------------------------------------------------------------------------------------

#[test]
fn load_pause_resume_seek_and_rate_broadcast_the_new_state() {
    let mut room = room_with(&["alice", "bob"], RoomSettings::default());
    assert_eq!(rejected(&mut room, pause("alice"), 500.0), RoomError::NoSong);
    assert_eq!(rejected(&mut room, seek("alice", 0.0), 500.0), RoomError::NoSong);
    assert_eq!(rejected(&mut room, resume("alice"), 500.0), RoomError::NoSong);

    let fx = ok(&mut room, load("alice", song("a", 100_000.0), true), 1000.0);
    assert_eq!(describe(&fx), ["persist", "broadcast:song-changed", "reply"]);
    let state = playback_push(&fx);
    assert!(state.clock.is_playing);
    assert_eq!(state.clock.song.as_ref().unwrap().id, "a");
    assert_eq!(reply(&fx)["positionMs"], json!(0.0));

    let fx = ok(&mut room, pause("alice"), 4000.0);
    assert_eq!(describe(&fx), ["persist", "broadcast:playback-paused", "reply"]);
    assert_eq!(playback_push(&fx).clock.position_ms, 3000.0);
    assert_eq!(playback_push(&fx).paused_at, Some(4000.0));

    // Pausing again changes nothing and announces nothing.
    let fx = ok(&mut room, pause("alice"), 4500.0);
    assert_eq!(describe(&fx), ["reply"]);

    let fx = ok(&mut room, resume("alice"), 6000.0);
    assert_eq!(describe(&fx), ["persist", "broadcast:playback-resumed", "reply"]);
    assert_eq!(room.clock().position_at(6000.0), 3000.0, "resume continues where pause left off");
    assert_eq!(playback_push(&fx).started_at, Some(3000.0));

    let fx = ok(&mut room, seek("alice", 50_000.0), 7000.0);
    assert_eq!(describe(&fx), ["persist", "broadcast:playback-seeked", "reply"]);
    assert_eq!(room.clock().position_at(7000.0), 50_000.0);

    let fx = ok(&mut room, set_rate("alice", 0.5), 8000.0);
    assert_eq!(describe(&fx), ["persist", "broadcast:playback-state-update", "reply"]);
    assert_eq!(room.clock().position_at(10_000.0), 52_000.0);

    // Seeking past the end clamps to the duration.
    ok(&mut room, seek("alice", 500_000.0), 11_000.0);
    assert_eq!(room.clock().position_at(11_000.0), 100_000.0);
}

#[test]
fn update_playback_sets_song_position_and_state_at_once() {
    let mut room = room_with(&["alice"], RoomSettings::default());
    ok(&mut room, queue_add("alice", song("b", 60_000.0)), 10.0);

    // Switching to a queued song takes it out of the queue.
    let fx = ok(&mut room, update("alice", Some("b"), 12_000.0, true), 1000.0);
    assert_eq!(describe(&fx), ["persist", "broadcast:song-changed", "broadcast:queue-updated", "reply"]);
    assert_eq!(room.clock().song.as_ref().unwrap(), &song("b", 60_000.0));
    assert!(room.queue().is_empty());
    assert_eq!(room.clock().position_at(2000.0), 13_000.0);

    // Same song: only position and state change.
    let fx = ok(&mut room, update("alice", Some("b"), 1000.0, false), 3000.0);
    assert_eq!(describe(&fx), ["persist", "broadcast:playback-state-update", "reply"]);
    assert!(!room.clock().is_playing);

    // An unknown song id becomes a bare song of unknown duration.
    ok(&mut room, update("alice", Some("zzz"), 0.0, true), 4000.0);
    assert_eq!(room.clock().song.as_ref().unwrap().id, "zzz");
    assert_eq!(room.clock().duration(), None);
}

// ---------------------------------------------------------------------------------------------
// Queue
// ---------------------------------------------------------------------------------------------

#[test]
fn queue_items_get_fresh_ids_and_the_adder_may_remove_its_own() {
    let mut room = room_with(&["alice", "bob"], RoomSettings::default());

    let fx = ok(&mut room, queue_add("alice", song("a", 1000.0)), 10.0);
    assert_eq!(describe(&fx), ["persist", "broadcast:queue-updated", "reply"]);
    assert_eq!(reply(&fx)["itemId"], json!("q1"));
    let fx = ok(&mut room, queue_add("bob", song("b", 1000.0)), 20.0);
    assert_eq!(reply(&fx)["itemId"], json!("q2"));
    assert_eq!(room.queue()[1].added_by.as_deref(), Some("bob"));
    assert_eq!(room.queue()[1].added_at, 20.0);

    // Any member may add; the adder may remove its own item.
    ok(&mut room, queue_remove("bob", "q2"), 30.0);
    assert_eq!(queue_ids(&room), ["q1"]);
    // Ids are never reused.
    let fx = ok(&mut room, queue_add("bob", song("c", 1000.0)), 40.0);
    assert_eq!(reply(&fx)["itemId"], json!("q3"));

    // But not someone else's, and not reorder.
    assert_eq!(rejected(&mut room, queue_remove("bob", "q1"), 50.0), RoomError::NotHost);
    assert_eq!(rejected(&mut room, queue_move("bob", "q3", 0), 50.0), RoomError::NotHost);

    // The host may do both.
    ok(&mut room, queue_add("bob", song("d", 1000.0)), 60.0);
    ok(&mut room, queue_move("alice", "q3", 0), 70.0);
    assert_eq!(queue_ids(&room), ["q3", "q1", "q4"]);
    ok(&mut room, queue_move("alice", "q3", 99), 80.0);
    assert_eq!(queue_ids(&room), ["q1", "q4", "q3"], "a move past the end goes to the end");
    ok(&mut room, queue_remove("alice", "q4"), 90.0);
    assert_eq!(queue_ids(&room), ["q1", "q3"]);

    assert_eq!(rejected(&mut room, queue_remove("alice", "q99"), 100.0), RoomError::ItemNotFound);
    assert_eq!(rejected(&mut room, queue_move("alice", "q99", 0), 100.0), RoomError::ItemNotFound);
    assert_eq!(rejected(&mut room, queue_remove("bob", "q99"), 100.0), RoomError::ItemNotFound);
}

#[test]
fn a_full_queue_refuses_more_items() {
    let mut room = Room::new(CODE.into(), "r", RoomSettings::default(), RoomLimits { max_queue: 2, ..limits() }, 0.0);
    ok(&mut room, join("alice"), 1.0);
    ok(&mut room, queue_add("alice", song("a", 1.0)), 2.0);
    ok(&mut room, queue_add("alice", song("b", 1.0)), 3.0);
    assert_eq!(rejected(&mut room, queue_add("alice", song("c", 1.0)), 4.0), RoomError::QueueFull(2));
    assert_eq!(RoomError::QueueFull(2).code().as_str(), "QUEUE_FULL");
    // Playing one frees a slot.
    ok(&mut room, play_next("alice"), 5.0);
    ok(&mut room, queue_add("alice", song("c", 1.0)), 6.0);
}

#[test]
fn play_next_plays_the_head_of_the_queue_then_stops() {
    let mut room = room_with(&["alice"], RoomSettings::default());
    ok(&mut room, load("alice", song("a", 100_000.0), false), 10.0);
    ok(&mut room, queue_add("alice", song("b", 100_000.0)), 20.0);
    ok(&mut room, queue_add("alice", song("c", 100_000.0)), 30.0);

    let fx = ok(&mut room, play_next("alice"), 1000.0);
    assert_eq!(describe(&fx), ["persist", "broadcast:song-changed", "broadcast:queue-updated", "reply"]);
    assert_eq!(playback_push(&fx).clock.song.as_ref().unwrap().id, "b");
    assert!(room.clock().is_playing, "play-next plays");
    assert_eq!(room.clock().position_at(1000.0), 0.0);
    assert_eq!(queue_ids(&room), ["q2"]);

    ok(&mut room, play_next("alice"), 2000.0);
    assert_eq!(room.clock().song.as_ref().unwrap().id, "c");
    assert!(room.queue().is_empty());

    // Past the end of the queue the song is unloaded.
    let fx = ok(&mut room, play_next("alice"), 3000.0);
    assert_eq!(describe(&fx), ["persist", "broadcast:song-changed", "reply"]);
    assert_eq!(room.clock().song, None);
    assert!(!room.clock().is_playing);

    // Nothing loaded, nothing queued: a no-op.
    let fx = ok(&mut room, play_next("alice"), 4000.0);
    assert_eq!(describe(&fx), ["reply"]);
}

#[test]
fn resume_with_nothing_loaded_starts_the_queue() {
    let mut room = room_with(&["alice"], RoomSettings::default());
    ok(&mut room, queue_add("alice", song("a", 100_000.0)), 10.0);
    let fx = ok(&mut room, resume("alice"), 1000.0);
    assert_eq!(describe(&fx), ["persist", "broadcast:song-changed", "broadcast:queue-updated", "reply"]);
    assert_eq!(room.clock().song.as_ref().unwrap().id, "a");
    assert!(room.clock().is_playing);
}

#[test]
fn at_the_end_of_a_song_the_next_queued_item_plays() {
    let mut room = room_with(&["alice"], RoomSettings::default());
    ok(&mut room, load("alice", song("a", 10_000.0), true), 1000.0);
    ok(&mut room, queue_add("alice", song("b", 20_000.0)), 1100.0);
    assert_eq!(room.next_deadline(), Some(11_000.0), "the song ends 10 s after it started");

    let fx = ok(&mut room, RoomCommand::Tick, 10_999.0);
    assert!(fx.is_empty(), "nothing is due yet: {:?}", describe(&fx));
    assert_eq!(room.clock().song.as_ref().unwrap().id, "a");

    let fx = ok(&mut room, RoomCommand::Tick, 11_000.0);
    assert_eq!(describe(&fx), ["persist", "broadcast:song-changed", "broadcast:queue-updated"]);
    let state = playback_push(&fx);
    assert_eq!(state.clock.song.as_ref().unwrap().id, "b");
    assert!(state.clock.is_playing);
    assert_eq!(state.clock.position_ms, 0.0);
    assert_eq!(state.clock.server_time, 11_000.0);
    assert!(room.queue().is_empty());
    assert_eq!(room.next_deadline(), Some(31_000.0));
}

#[test]
fn at_the_end_of_the_last_song_playback_pauses_at_its_duration() {
    let mut room = room_with(&["alice"], RoomSettings::default());
    ok(&mut room, load("alice", song("a", 10_000.0), true), 1000.0);
    ok(&mut room, set_rate("alice", 2.0), 3000.0);
    // 2 s at rate 1, the remaining 8 s at rate 2: the end is at 7000.
    assert_eq!(room.next_deadline(), Some(7000.0));

    let fx = ok(&mut room, RoomCommand::Tick, 7500.0);
    assert_eq!(describe(&fx), ["persist", "broadcast:playback-paused"]);
    let clock = room.clock();
    assert!(!clock.is_playing);
    assert_eq!(clock.position_ms, 10_000.0);
    assert_eq!(clock.position_at(100_000.0), 10_000.0);
    assert_eq!(clock.song.as_ref().unwrap().id, "a", "the song stays loaded");
    assert_eq!(room.next_deadline(), None);
}

#[test]
fn a_song_of_unknown_duration_never_ends() {
    let mut room = room_with(&["alice"], RoomSettings::default());
    ok(&mut room, load("alice", song("live", 0.0), true), 1000.0);
    ok(&mut room, queue_add("alice", song("b", 1.0)), 1100.0);
    assert_eq!(room.next_deadline(), None);
    assert!(ok(&mut room, RoomCommand::Tick, 1e9).is_empty());
    assert_eq!(room.clock().position_at(1e9), 1e9 - 1000.0, "no clamp without a duration");
}

// ---------------------------------------------------------------------------------------------
// Host hand-over
// ---------------------------------------------------------------------------------------------

#[test]
fn a_host_who_leaves_hands_over_to_the_longest_present_member() {
    let mut room = room_with(&["alice", "bob", "carol"], RoomSettings::default());
    let fx = ok(&mut room, leave("alice"), 100.0);
    assert_eq!(describe(&fx), ["persist", "broadcast:member-left", "broadcast:host-changed", "reply"]);
    assert_eq!(host_changed(&fx), Some(&HostChanged { host: Some("bob".into()), previous: Some("alice".into()) }));
    assert_eq!(room.host(), Some("bob"));
}

#[test]
fn a_host_who_leaves_skips_disconnected_members() {
    let mut room = room_with(&["alice", "bob", "carol"], RoomSettings::default());
    ok(&mut room, disconnect("bob"), 50.0);
    let fx = ok(&mut room, leave("alice"), 100.0);
    assert_eq!(host_changed(&fx), Some(&HostChanged { host: Some("carol".into()), previous: Some("alice".into()) }));
    assert_eq!(room.host(), Some("carol"));
}

#[test]
fn a_non_host_who_leaves_changes_no_host() {
    let mut room = room_with(&["alice", "bob"], RoomSettings::default());
    let fx = ok(&mut room, leave("bob"), 100.0);
    assert_eq!(describe(&fx), ["broadcast:member-left", "reply"]);
    assert_eq!(room.host(), Some("alice"));
    assert!(!room.is_member("bob"));
}

#[test]
fn a_disconnected_host_hands_over_after_the_grace_period() {
    let grace = limits().host_grace_ms;
    let mut room = room_with(&["alice", "bob"], RoomSettings::default());
    let fx = ok(&mut room, disconnect("alice"), 1000.0);
    assert_eq!(describe(&fx), ["broadcast:member-updated!alice"]);
    assert_eq!(room.host(), Some("alice"), "the host keeps the role during its grace period");
    assert_eq!(room.next_deadline(), Some(1000.0 + grace));

    assert!(ok(&mut room, RoomCommand::Tick, 1000.0 + grace - 1.0).is_empty());
    assert_eq!(room.host(), Some("alice"));

    let fx = ok(&mut room, RoomCommand::Tick, 1000.0 + grace);
    assert_eq!(describe(&fx), ["persist", "broadcast:host-changed"]);
    assert_eq!(host_changed(&fx), Some(&HostChanged { host: Some("bob".into()), previous: Some("alice".into()) }));
    assert_eq!(room.next_deadline(), None);

    // Coming back later does not take the role back.
    let fx = ok(&mut room, reconnect("alice"), 20_000.0);
    assert_eq!(describe(&fx), ["send:alice:room-joined", "broadcast:member-updated!alice"]);
    assert_eq!(room.host(), Some("bob"));
}

#[test]
fn a_host_who_reconnects_within_grace_stays_host() {
    let grace = limits().host_grace_ms;
    let mut room = room_with(&["alice", "bob"], RoomSettings::default());
    ok(&mut room, disconnect("alice"), 1000.0);
    let fx = ok(&mut room, reconnect("alice"), 1000.0 + grace / 2.0);
    assert_eq!(host_changed(&fx), None);
    assert_eq!(sent_snapshot(&fx, "alice").host.as_deref(), Some("alice"));
    assert_eq!(room.next_deadline(), None, "the grace timer is cancelled");

    let fx = ok(&mut room, RoomCommand::Tick, 1000.0 + 2.0 * grace);
    assert!(fx.is_empty(), "{:?}", describe(&fx));
    assert_eq!(room.host(), Some("alice"));
}

#[test]
fn a_disconnected_host_with_nobody_to_take_over_keeps_the_role_until_someone_comes() {
    let grace = limits().host_grace_ms;
    let mut room = room_with(&["alice", "bob"], RoomSettings::default());
    ok(&mut room, disconnect("bob"), 500.0);
    ok(&mut room, disconnect("alice"), 1000.0);
    let fx = ok(&mut room, RoomCommand::Tick, 1000.0 + grace);
    assert_eq!(host_changed(&fx), None);
    assert_eq!(room.host(), Some("alice"));
    assert_eq!(room.next_deadline(), None);

    // The first member to show up again takes the vacant role.
    let fx = ok(&mut room, reconnect("bob"), 30_000.0);
    assert_eq!(host_changed(&fx), Some(&HostChanged { host: Some("bob".into()), previous: Some("alice".into()) }));
    assert_eq!(fx.first(), Some(&RoomEffect::Persist));
}

#[test]
fn the_host_can_transfer_the_role() {
    let mut room = room_with(&["alice", "bob"], RoomSettings::default());
    ok(&mut room, load("alice", song("a", 100_000.0), true), 10.0);
    assert_eq!(rejected(&mut room, transfer("alice", "nobody"), 20.0), RoomError::MemberNotFound);

    let fx = ok(&mut room, transfer("alice", "bob"), 30.0);
    assert_eq!(describe(&fx), ["persist", "broadcast:host-changed", "reply"]);
    assert_eq!(reply(&fx), json!({ "host": "bob" }));
    assert_eq!(room.host(), Some("bob"));
    assert!(room.members().iter().any(|m| m.session_id == "bob" && m.is_host));

    assert_eq!(rejected(&mut room, pause("alice"), 40.0), RoomError::NotHost);
    ok(&mut room, pause("bob"), 40.0);
}

// ---------------------------------------------------------------------------------------------
// Ready barrier
// ---------------------------------------------------------------------------------------------

#[test]
fn the_ready_barrier_holds_an_autoplay_load_until_everyone_is_ready() {
    let mut room = room_with(&["alice", "bob"], barrier_settings());
    let fx = ok(&mut room, load("alice", song("a", 100_000.0), true), 1000.0);
    assert_eq!(describe(&fx), ["persist", "broadcast:song-changed", "reply"]);
    let state = playback_push(&fx);
    assert!(state.awaiting_ready);
    assert!(!state.clock.is_playing);
    assert!(!member_ready(&room, "alice") && !member_ready(&room, "bob"), "a load invalidates every buffer");

    let fx = ok(&mut room, set_ready("alice", true), 1100.0);
    assert_eq!(describe(&fx), ["broadcast:member-updated", "reply"]);
    assert!(room.playback().awaiting_ready);
    assert!(!room.clock().is_playing);

    let fx = ok(&mut room, set_ready("bob", true), 1200.0);
    assert_eq!(describe(&fx), ["persist", "broadcast:member-updated", "broadcast:playback-resumed", "reply"]);
    let state = playback_push(&fx);
    assert!(!state.awaiting_ready);
    assert!(state.clock.is_playing);
    assert_eq!(state.clock.server_time, 1200.0 + BARRIER_START_LEAD_MS, "a scheduled start, so the push arrives first");
    let clock = room.clock();
    assert!(clock.is_scheduled(1200.0));
    assert_eq!(clock.position_at(1200.0 + BARRIER_START_LEAD_MS), 0.0);
    assert_eq!(clock.position_at(1200.0 + BARRIER_START_LEAD_MS + 100.0), 100.0);
}

#[test]
fn the_barrier_start_uses_the_longer_of_start_delay_and_barrier_lead() {
    let settings = RoomSettings { ready_barrier: true, start_delay_ms: 1000.0, ..RoomSettings::default() };
    let mut room = room_with(&["alice"], settings);
    ok(&mut room, load("alice", song("a", 100_000.0), true), 1000.0);
    ok(&mut room, set_ready("alice", true), 1500.0);
    assert_eq!(room.clock().server_time, 2500.0);
}

#[test]
fn without_the_barrier_autoplay_starts_after_the_start_delay() {
    let settings = RoomSettings { start_delay_ms: 400.0, ..RoomSettings::default() };
    let mut room = room_with(&["alice", "bob"], settings);
    let fx = ok(&mut room, load("alice", song("a", 100_000.0), true), 1000.0);
    assert!(!playback_push(&fx).awaiting_ready);
    assert_eq!(room.clock().server_time, 1400.0);
    assert!(room.clock().is_scheduled(1000.0));
}

#[test]
fn a_silent_member_cannot_deadlock_the_barrier() {
    let mut room = room_with(&["alice", "bob"], barrier_settings());
    let timeout = room.settings().ready_timeout_ms;
    ok(&mut room, load("alice", song("a", 100_000.0), true), 1000.0);
    ok(&mut room, set_ready("alice", true), 1100.0);
    assert_eq!(room.next_deadline(), Some(1000.0 + timeout));

    assert!(ok(&mut room, RoomCommand::Tick, 1000.0 + timeout - 1.0).is_empty());
    assert!(room.playback().awaiting_ready);

    let fx = ok(&mut room, RoomCommand::Tick, 1000.0 + timeout);
    assert_eq!(describe(&fx), ["persist", "broadcast:playback-resumed"]);
    assert!(room.clock().is_playing);
    assert_eq!(room.clock().server_time, 1000.0 + timeout + BARRIER_START_LEAD_MS);
    assert!(!room.playback().awaiting_ready);
}

#[test]
fn a_late_joiner_during_a_barrier_is_not_waited_for() {
    let mut room = room_with(&["alice"], barrier_settings());
    ok(&mut room, load("alice", song("a", 100_000.0), true), 1000.0);
    ok(&mut room, join("carol"), 1100.0);
    assert!(!member_ready(&room, "carol"), "the late joiner still has to buffer");

    let fx = ok(&mut room, set_ready("alice", true), 1200.0);
    assert!(describe(&fx).contains(&"broadcast:playback-resumed".to_owned()), "{:?}", describe(&fx));
    assert!(room.clock().is_playing);
    assert_eq!(room.clock().server_time, 1200.0 + BARRIER_START_LEAD_MS);
}

#[test]
fn a_member_who_disconnects_is_no_longer_waited_for() {
    let mut room = room_with(&["alice", "bob"], barrier_settings());
    ok(&mut room, load("alice", song("a", 100_000.0), true), 1000.0);
    ok(&mut room, set_ready("alice", true), 1100.0);
    let fx = ok(&mut room, disconnect("bob"), 1200.0);
    assert_eq!(describe(&fx), ["persist", "broadcast:playback-resumed", "broadcast:member-updated!bob"]);
    assert!(room.clock().is_playing);
}

#[test]
fn turning_the_barrier_off_releases_a_pending_start() {
    let mut room = room_with(&["alice", "bob"], barrier_settings());
    ok(&mut room, load("alice", song("a", 100_000.0), true), 1000.0);
    let fx = ok(
        &mut room,
        settings("alice", RoomSettingsPatch { ready_barrier: Some(false), ..Default::default() }),
        1500.0,
    );
    assert_eq!(describe(&fx), ["persist", "broadcast:playback-resumed", "broadcast:settings-updated", "reply"]);
    assert!(room.clock().is_playing);
    assert!(!room.playback().awaiting_ready);
}

#[test]
fn pausing_during_the_barrier_cancels_the_pending_start() {
    let mut room = room_with(&["alice", "bob"], barrier_settings());
    ok(&mut room, load("alice", song("a", 100_000.0), true), 1000.0);
    let fx = ok(&mut room, pause("alice"), 1500.0);
    assert_eq!(describe(&fx), ["persist", "broadcast:playback-paused", "reply"]);
    assert!(!playback_push(&fx).awaiting_ready);
    assert_eq!(room.next_deadline(), None);
    ok(&mut room, set_ready("alice", true), 1600.0);
    ok(&mut room, set_ready("bob", true), 1700.0);
    assert!(!room.clock().is_playing, "nobody asked to play any more");
}

#[test]
fn resuming_with_the_barrier_waits_only_for_members_not_ready() {
    let mut room = room_with(&["alice", "bob"], barrier_settings());
    ok(&mut room, load("alice", song("a", 100_000.0), false), 1000.0);
    ok(&mut room, set_ready("alice", true), 1100.0);

    let fx = ok(&mut room, resume("alice"), 2000.0);
    assert!(playback_push(&fx).awaiting_ready);
    assert!(!room.clock().is_playing);
    ok(&mut room, set_ready("bob", true), 2100.0);
    assert!(room.clock().is_playing);
    assert_eq!(room.clock().server_time, 2100.0 + BARRIER_START_LEAD_MS);

    // Everyone is still ready: the next resume starts at once (with the barrier lead).
    ok(&mut room, pause("alice"), 5000.0);
    let fx = ok(&mut room, resume("alice"), 6000.0);
    assert!(!playback_push(&fx).awaiting_ready);
    assert_eq!(room.clock().server_time, 6000.0 + BARRIER_START_LEAD_MS);
    assert_eq!(room.clock().position_at(6000.0 + BARRIER_START_LEAD_MS), room.clock().position_ms);
}

#[test]
fn barrier_only_changes_still_carry_a_new_rev() {
    // Clients order playback states by rev. A resume held by the barrier and a pause that only
    // cancels a pending start change `awaitingReady` without moving the clock; each must still
    // arrive with a newer rev than the state before it.
    let mut room = room_with(&["alice", "bob"], barrier_settings());
    let fx = ok(&mut room, load("alice", song("a", 100_000.0), false), 1000.0);
    let loaded = playback_push(&fx).clock.rev;

    let fx = ok(&mut room, resume("alice"), 2000.0);
    let held = playback_push(&fx).clone();
    assert!(held.awaiting_ready && !held.clock.is_playing);
    assert!(held.clock.rev > loaded, "held resume rev {} after {loaded}", held.clock.rev);
    assert_eq!(held.clock.rev, room.playback().clock.rev);

    let fx = ok(&mut room, pause("alice"), 3000.0);
    let cancelled = playback_push(&fx);
    assert!(!cancelled.awaiting_ready);
    assert!(
        cancelled.clock.rev > held.clock.rev,
        "cancelling pause rev {} after {}",
        cancelled.clock.rev,
        held.clock.rev
    );
}

#[test]
fn seeking_while_playing_with_the_barrier_rebuffers_everyone() {
    let mut room = room_with(&["alice", "bob"], barrier_settings());
    ok(&mut room, load("alice", song("a", 100_000.0), true), 1000.0);
    ok(&mut room, set_ready("alice", true), 1100.0);
    ok(&mut room, set_ready("bob", true), 1200.0);
    assert!(room.clock().is_playing);

    let fx = ok(&mut room, seek("alice", 30_000.0), 5000.0);
    let state = playback_push(&fx);
    assert!(state.awaiting_ready);
    assert!(!state.clock.is_playing);
    assert_eq!(state.clock.position_ms, 30_000.0);

    ok(&mut room, set_ready("alice", true), 5100.0);
    ok(&mut room, set_ready("bob", true), 5200.0);
    assert_eq!(room.clock().server_time, 5200.0 + BARRIER_START_LEAD_MS);
    assert_eq!(room.clock().position_at(5300.0 + BARRIER_START_LEAD_MS), 30_100.0);
}

// ---------------------------------------------------------------------------------------------
// Closing
// ---------------------------------------------------------------------------------------------

#[test]
fn an_empty_room_closes_after_its_ttl() {
    let ttl = limits().empty_ttl_ms;
    let mut room = Room::new(CODE.into(), "r", RoomSettings::default(), limits(), 0.0);
    assert_eq!(room.next_deadline(), Some(ttl));
    assert!(ok(&mut room, RoomCommand::Tick, ttl - 1.0).is_empty());
    assert!(!room.is_closed());

    let fx = ok(&mut room, RoomCommand::Tick, ttl);
    assert_eq!(describe(&fx), ["persist", "broadcast:room-closed", "closed"]);
    assert_eq!(broadcast_pushes(&fx)[0], &Push::RoomClosed(RoomClosed { code: CODE.into(), reason: "empty".into() }));
    assert!(room.is_closed());
    assert!(room.record().closed);
    assert_eq!(rejected(&mut room, join("alice"), ttl + 1.0), RoomError::Closed);
    assert_eq!(rejected(&mut room, RoomCommand::Tick, ttl + 1.0), RoomError::Closed);
}

#[test]
fn the_empty_ttl_starts_when_the_last_member_leaves_and_stops_when_someone_joins() {
    let ttl = limits().empty_ttl_ms;
    let mut room = room_with(&["alice"], RoomSettings::default());
    assert_eq!(room.next_deadline(), None, "an occupied room has no TTL");

    let fx = ok(&mut room, leave("alice"), 1000.0);
    assert_eq!(host_changed(&fx), Some(&HostChanged { host: None, previous: Some("alice".into()) }));
    assert_eq!(room.next_deadline(), Some(1000.0 + ttl));

    ok(&mut room, join("bob"), 2000.0);
    assert_eq!(room.host(), Some("bob"));
    assert_eq!(room.next_deadline(), None);
    assert!(ok(&mut room, RoomCommand::Tick, 1000.0 + ttl).is_empty());
    assert!(!room.is_closed());
}

#[test]
fn a_room_with_only_disconnected_members_stays_open() {
    let ttl = limits().empty_ttl_ms;
    let mut room = room_with(&["alice"], RoomSettings::default());
    ok(&mut room, disconnect("alice"), 10.0);
    ok(&mut room, RoomCommand::Tick, 10.0 + 2.0 * ttl);
    assert!(!room.is_closed(), "the driver ends sessions with Leave; only then does the TTL start");
}

#[test]
fn close_command_closes_the_room() {
    let mut room = room_with(&["alice", "bob"], RoomSettings::default());
    let fx = ok(&mut room, RoomCommand::Close { reason: "shutdown".into() }, 10.0);
    assert_eq!(describe(&fx), ["persist", "broadcast:room-closed", "closed"]);
    assert!(room.is_closed());
    assert_eq!(rejected(&mut room, pause("alice"), 20.0), RoomError::Closed);
    assert_eq!(RoomError::Closed.code().as_str(), "ROOM_CLOSED");
}

// ---------------------------------------------------------------------------------------------
// Record and restore
// ---------------------------------------------------------------------------------------------

/// A room with a host, a member, custom settings, a queue and a song playing at rate 1.5.
fn busy_room() -> Room {
    let settings =
        RoomSettings { anyone_can_control: true, ready_barrier: false, ready_timeout_ms: 3000.0, start_delay_ms: 0.0 };
    let mut room = room_with(&["alice", "bob"], settings);
    ok(&mut room, load("alice", song("a", 600_000.0), true), 1000.0);
    ok(&mut room, set_rate("alice", 1.5), 3000.0);
    ok(&mut room, queue_add("bob", song("b", 100_000.0)), 3100.0);
    ok(&mut room, queue_add("alice", song("c", 100_000.0)), 3200.0);
    ok(&mut room, queue_remove("alice", "q1"), 3300.0);
    room
}

#[test]
fn record_and_restore_keep_song_clock_queue_host_and_settings() {
    let room = busy_room();
    let rec = room.record();
    assert_eq!(rec.code, CODE);
    assert_eq!(rec.host.as_deref(), Some("alice"));
    assert_eq!(rec.next_item, 3);

    let text = serde_json::to_string(&rec).unwrap();
    let back: RoomRecord = serde_json::from_str(&text).unwrap();
    assert_eq!(back, rec, "the record survives the store's JSON");

    let restored = Room::restore(back, limits(), 50_000.0);
    assert_eq!(restored.record(), rec);
    assert_eq!(restored.host(), Some("alice"));
    assert_eq!(restored.clock(), room.clock());
    assert_eq!(restored.queue(), room.queue());
    assert_eq!(restored.settings(), room.settings());
    assert_eq!(restored.info(), room.info());
    assert_eq!(restored.member_count(), 0, "members are not durable");
    // The timing vector needs no catching up: the position keeps advancing across the restart.
    assert_eq!(restored.clock().position_at(50_000.0), room.clock().position_at(50_000.0));
    assert!(restored.clock().is_playing);
}

#[test]
fn a_restored_room_gives_its_old_host_a_grace_period() {
    let grace = limits().host_grace_ms;
    let rec = busy_room().record();

    // The old host comes back in time and keeps the role.
    let mut room = Room::restore(rec.clone(), limits(), 50_000.0);
    assert_eq!(room.next_deadline(), Some(50_000.0 + grace));
    let fx = ok(&mut room, join("bob"), 51_000.0);
    assert_eq!(host_changed(&fx), None, "bob does not take the role during alice's grace");
    assert_eq!(room.host(), Some("alice"));
    let fx = ok(&mut room, join("alice"), 52_000.0);
    assert_eq!(host_changed(&fx), None);
    assert_eq!(room.host(), Some("alice"));
    assert!(room.members().iter().any(|m| m.session_id == "alice" && m.is_host));
    assert!(room.next_deadline().unwrap() > 50_000.0 + grace, "the grace timer is cancelled");

    // The old host does not come back: the role passes when the grace period ends.
    let mut room = Room::restore(rec.clone(), limits(), 50_000.0);
    ok(&mut room, join("bob"), 51_000.0);
    let fx = ok(&mut room, RoomCommand::Tick, 50_000.0 + grace);
    assert_eq!(host_changed(&fx), Some(&HostChanged { host: Some("bob".into()), previous: Some("alice".into()) }));

    // Nobody comes back in time: the first to join after the grace period becomes host.
    let mut room = Room::restore(rec, limits(), 50_000.0);
    let fx = ok(&mut room, join("carol"), 50_000.0 + grace + 1.0);
    assert_eq!(host_changed(&fx), Some(&HostChanged { host: Some("carol".into()), previous: Some("alice".into()) }));
}

#[test]
fn a_restored_closed_room_stays_closed() {
    let mut room = room_with(&["alice"], RoomSettings::default());
    ok(&mut room, RoomCommand::Close { reason: "bye".into() }, 10.0);
    let mut restored = Room::restore(room.record(), limits(), 100.0);
    assert!(restored.is_closed());
    assert_eq!(rejected(&mut restored, join("alice"), 200.0), RoomError::Closed);
}

// ---------------------------------------------------------------------------------------------
// Rejections change nothing
// ---------------------------------------------------------------------------------------------

#[test]
fn every_rejected_command_leaves_the_room_unchanged() {
    let mut room = busy_room();
    ok(&mut room, disconnect("bob"), 4000.0);
    ok(&mut room, reconnect("bob"), 4100.0);
    let now = 5000.0;
    let too_long = "x".repeat(300);
    let cases: Vec<(RoomCommand, RoomError)> = vec![
        (seek("alice", -1.0), RoomError::Invalid(String::new())),
        (seek("alice", f64::NAN), RoomError::Invalid(String::new())),
        (seek("alice", f64::INFINITY), RoomError::Invalid(String::new())),
        (set_rate("alice", 0.0), RoomError::Invalid(String::new())),
        (set_rate("alice", 4.5), RoomError::Invalid(String::new())),
        (set_rate("alice", f64::NAN), RoomError::Invalid(String::new())),
        (update("alice", None, -5.0, true), RoomError::Invalid(String::new())),
        (update("alice", Some(""), 0.0, true), RoomError::Invalid(String::new())),
        (update("alice", Some(&too_long), 0.0, true), RoomError::Invalid(String::new())),
        (load("alice", song("", 1000.0), true), RoomError::Invalid(String::new())),
        (load("alice", song("a", -1.0), true), RoomError::Invalid(String::new())),
        (load("alice", song("a", f64::NAN), true), RoomError::Invalid(String::new())),
        (queue_add("bob", song(&too_long, 1.0)), RoomError::Invalid(String::new())),
        (
            settings(
                "alice",
                RoomSettingsPatch {
                    anyone_can_control: Some(false),
                    ready_timeout_ms: Some(-1.0),
                    ..Default::default()
                },
            ),
            RoomError::Invalid(String::new()),
        ),
        (
            settings(
                "alice",
                RoomSettingsPatch { ready_barrier: Some(true), start_delay_ms: Some(1e9), ..Default::default() },
            ),
            RoomError::Invalid(String::new()),
        ),
        (report_drift("bob", f64::NAN), RoomError::Invalid(String::new())),
        (queue_remove("alice", "q1"), RoomError::ItemNotFound),
        (queue_move("alice", "nope", 0), RoomError::ItemNotFound),
        (transfer("alice", "ghost"), RoomError::MemberNotFound),
        (transfer("bob", "bob"), RoomError::NotHost),
        (settings("bob", RoomSettingsPatch::default()), RoomError::NotHost),
        (pause("ghost"), RoomError::NotInRoom),
        (reconnect("ghost"), RoomError::NotInRoom),
        (leave("ghost"), RoomError::NotInRoom),
    ];
    for (cmd, expected) in cases {
        let err = rejected(&mut room, cmd.clone(), now);
        match expected {
            RoomError::Invalid(_) => {
                assert!(matches!(err, RoomError::Invalid(_)), "{cmd:?}: {err:?}");
                assert_eq!(err.code().as_str(), "INVALID_PAYLOAD");
            }
            other => assert_eq!(err, other, "{cmd:?}"),
        }
    }
}

#[test]
fn rejected_commands_during_a_barrier_change_nothing() {
    let mut room = room_with(&["alice", "bob"], barrier_settings());
    ok(&mut room, load("alice", song("a", 100_000.0), true), 1000.0);
    for cmd in [
        pause("bob"),
        seek("alice", f64::NAN),
        seek("bob", 10.0),
        set_rate("alice", 100.0),
        load("alice", song("", 1.0), true),
    ] {
        rejected(&mut room, cmd, 1500.0);
    }
    assert!(room.playback().awaiting_ready);
}

// ---------------------------------------------------------------------------------------------
// Deadlines
// ---------------------------------------------------------------------------------------------

#[test]
fn next_deadline_is_the_earliest_pending_timer() {
    let grace = limits().host_grace_ms;
    let ttl = limits().empty_ttl_ms;
    let mut room = room_with(&["alice", "bob"], barrier_settings());
    assert_eq!(room.next_deadline(), None, "nothing pending");

    // Barrier deadline.
    ok(&mut room, load("alice", song("a", 3000.0), true), 1000.0);
    assert_eq!(room.next_deadline(), Some(6000.0));

    // Host grace (12 000) is later than the barrier deadline.
    ok(&mut room, disconnect("alice"), 2000.0);
    assert_eq!(room.next_deadline(), Some(6000.0));

    // The barrier times out; now the song end (6250 + 3000) is earliest, then the grace.
    ok(&mut room, RoomCommand::Tick, 6000.0);
    assert!(room.clock().is_playing);
    assert_eq!(room.next_deadline(), Some(6000.0 + BARRIER_START_LEAD_MS + 3000.0));

    // A faster rate brings the end closer: at 7250, 1000 ms in, 2000 ms left at rate 2.
    ok(&mut room, set_rate("alice", 2.0), 7250.0);
    assert_eq!(room.next_deadline(), Some(8250.0));

    // After the end (empty queue: pause), only the host grace is left.
    ok(&mut room, RoomCommand::Tick, 8250.0);
    assert!(!room.clock().is_playing);
    assert_eq!(room.next_deadline(), Some(2000.0 + grace));

    // Everyone leaves: the grace is gone with the host, the empty TTL remains.
    ok(&mut room, leave("bob"), 9000.0);
    ok(&mut room, leave("alice"), 9500.0);
    assert_eq!(room.host(), None);
    assert_eq!(room.next_deadline(), Some(9500.0 + ttl));
}

#[test]
fn next_deadline_after_restore_is_the_earliest_of_grace_song_end_and_ttl() {
    let limits = RoomLimits { host_grace_ms: 5000.0, empty_ttl_ms: 8000.0, ..limits() };
    let mut room = room_with(&["alice"], RoomSettings::default());
    ok(&mut room, load("alice", song("a", 100_000.0), true), 1000.0);
    let rec = room.record();

    // Song end 101 000; grace 55 000; TTL 58 000.
    let restored = Room::restore(rec.clone(), limits.clone(), 50_000.0);
    assert_eq!(restored.next_deadline(), Some(55_000.0));

    // Restored close to the end of the song: the end comes first.
    let restored = Room::restore(rec, limits, 99_000.0);
    assert_eq!(restored.next_deadline(), Some(101_000.0));
}

#[test]
fn resuming_a_song_that_ended_plays_it_again_from_the_start() {
    let mut room = Room::new("ABCDEF".into(), "r", RoomSettings::default(), RoomLimits::default(), 0.0);
    room.apply(RoomCommand::Join { session: "h".into(), name: "h".into() }, 0.0).expect("join");
    let song = unisono_core::Song {
        id: "s".into(),
        title: String::new(),
        provider: Default::default(),
        url: String::new(),
        duration_ms: 1000.0,
    };
    room.apply(RoomCommand::Load { session: "h".into(), song, autoplay: true }, 0.0).expect("load");
    room.apply(RoomCommand::Tick, 1000.0).expect("tick at the end");
    assert!(!room.clock().is_playing);
    assert_eq!(room.clock().position_at(1000.0), 1000.0);
    room.apply(RoomCommand::Resume { session: "h".into() }, 2000.0).expect("resume");
    assert!(room.clock().is_playing);
    assert_eq!(room.clock().position_at(2500.0), 500.0);
}

#[test]
fn host_cannot_be_transferred_to_a_disconnected_member() {
    let mut room = Room::new("ABCDEF".into(), "r", RoomSettings::default(), RoomLimits::default(), 0.0);
    room.apply(RoomCommand::Join { session: "h".into(), name: "h".into() }, 0.0).expect("join");
    room.apply(RoomCommand::Join { session: "g".into(), name: "g".into() }, 0.0).expect("join");
    room.apply(RoomCommand::Disconnect { session: "g".into() }, 1.0).expect("disconnect");
    assert_eq!(
        room.apply(RoomCommand::TransferHost { session: "h".into(), to: "g".into() }, 2.0),
        Err(RoomError::MemberNotFound)
    );
    assert_eq!(room.host(), Some("h"));
}

/// A room whose limits make "large" small enough for a unit test.
fn large_room(members: usize) -> Room {
    let limits = RoomLimits { snapshot_members: 3, presence_broadcast_max: 4, ..RoomLimits::default() };
    let mut room = Room::new("LARGEE".into(), "big", RoomSettings::default(), limits, 0.0);
    for i in 0..members {
        room.apply(RoomCommand::Join { session: format!("m{i}"), name: String::new() }, i as f64).expect("join");
    }
    room
}

#[test]
fn snapshots_of_large_rooms_list_the_first_members_the_host_and_the_count() {
    let mut room = large_room(10);
    room.apply(RoomCommand::TransferHost { session: "m0".into(), to: "m7".into() }, 20.0).expect("transfer");
    let snap = room.joined_snapshot("m9", 21.0);
    assert_eq!(snap.member_count, 10);
    let ids: Vec<&str> = snap.members.iter().map(|m| m.session_id.as_str()).collect();
    assert_eq!(ids, ["m0", "m1", "m2", "m7"]);
    let page = room.apply(RoomCommand::GetMembers { session: "m9".into(), offset: 3, limit: 4 }, 22.0).expect("page");
    let v = reply(&page);
    let ids: Vec<&str> =
        v["members"].as_array().into_iter().flatten().filter_map(|m| m["sessionId"].as_str()).collect();
    assert_eq!(ids, ["m3", "m4", "m5", "m6"]);
    assert_eq!(v["total"], json!(10));
}

#[test]
fn presence_in_large_rooms_goes_to_the_host_only() {
    let mut small = large_room(3);
    let effects = small.apply(RoomCommand::Join { session: "x".into(), name: String::new() }, 50.0).expect("join");
    assert!(effects.iter().any(|e| matches!(e, RoomEffect::Broadcast { push: Push::MemberJoined(_), .. })));

    let mut big = large_room(6);
    let effects = big.apply(RoomCommand::Join { session: "x".into(), name: String::new() }, 50.0).expect("join");
    assert!(!effects.iter().any(|e| matches!(e, RoomEffect::Broadcast { push: Push::MemberJoined(_), .. })));
    assert!(effects.iter().any(|e| matches!(e, RoomEffect::Send { to, push: Push::MemberJoined(_) } if to == "m0")));
    let effects = big.apply(RoomCommand::Leave { session: "m3".into() }, 51.0).expect("leave");
    assert!(effects.iter().any(|e| matches!(e, RoomEffect::Send { to, push: Push::MemberLeft(_) } if to == "m0")));
    assert!(!effects.iter().any(|e| matches!(e, RoomEffect::Broadcast { push: Push::MemberLeft(_), .. })));
}

#[test]
fn a_restored_member_is_added_silently_and_a_restored_host_keeps_the_role() {
    use unisono_core::protocol::MemberInfo;
    // A room restored on a new owner: its stored host, no members.
    let first = room_with(&["alice"], RoomSettings::default());
    let rec = first.record();
    let mut room = Room::restore(rec, RoomLimits::default(), 50_000.0);
    let member = |id: &str, name: &str, connected: bool| MemberInfo {
        session_id: id.into(),
        name: name.into(),
        joined_at: 1_000.0,
        is_host: false,
        ready: true,
        connected,
        drift_ms: None,
    };
    let host = room.host().map(str::to_owned).expect("a stored host");
    let fx = room.apply(RoomCommand::Restore { member: member("bob", "Bob", true) }, 50_001.0).expect("restore");
    assert_eq!(fx, vec![RoomEffect::Reply(unisono_core::protocol::RoomReply::Done)], "no push, nothing to store");
    assert!(room.is_member("bob"));
    // Restoring again changes nothing; the host back before its grace keeps the role.
    room.apply(RoomCommand::Restore { member: member("bob", "Bob", true) }, 50_002.0).expect("again");
    assert_eq!(room.member_count(), 1);
    room.apply(RoomCommand::Restore { member: member(&host, "Host", true) }, 50_003.0).expect("host");
    let fx = room.apply(RoomCommand::Tick, 50_000.0 + RoomLimits::default().host_grace_ms + 1.0).expect("tick");
    assert!(host_changed(&fx).is_none(), "no hand-over: {fx:?}");
    assert_eq!(room.host(), Some(host.as_str()));
    // A restored member's request works (it is a member again).
    assert!(room.apply(RoomCommand::GetPlayback { session: "bob".into() }, 50_010.0).is_ok());
}

#[test]
fn commands_travel_between_nodes_as_json_and_back() {
    let cmds = [
        RoomCommand::Join { session: "s".into(), name: "n".into() },
        RoomCommand::Seek { session: "s".into(), position_ms: 12.5 },
        RoomCommand::Load { session: "s".into(), song: song("a", 1000.0), autoplay: true },
        RoomCommand::GetMembers { session: "s".into(), offset: 2, limit: 3 },
        RoomCommand::Tick,
        RoomCommand::Close { reason: "r".into() },
    ];
    for c in cmds {
        let text = serde_json::to_string(&c).expect("json");
        assert_eq!(serde_json::from_str::<RoomCommand>(&text).expect("back"), c, "{text}");
    }
    let mut room = room_with(&["alice"], RoomSettings::default());
    for r in [
        room.apply(RoomCommand::GetPlayback { session: "alice".into() }, 2_000.0).expect("ok"),
        room.apply(RoomCommand::Describe, 2_000.0).expect("ok"),
    ] {
        let RoomEffect::Reply(reply) = &r[0] else { panic!("{r:?}") };
        let data = serde_json::to_string(reply).expect("json");
        assert_eq!(&unisono_core::protocol::RoomReply::decode(reply.kind(), &data).expect("decode"), reply);
    }
}
