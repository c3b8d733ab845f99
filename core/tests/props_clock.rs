//! Property tests for the playback clock (`PlaybackClock`) and the room-level playback `rev`.
//!
//! Random sequences of clock operations (load / unload / pause / play / seek / set_rate / set)
//! are applied at non-decreasing server times. After every operation:
//! - (a) pause then resume never moves the position: right after the resume, at the resume
//!   time (and until a scheduled start), the position equals the position at the pause; more
//!   generally pause, play and set_rate keep the position at `now` continuous;
//! - (b) while playing with rate > 0 the position is monotone non-decreasing in time (between
//!   operations), and constant while paused;
//! - (c) a seek lands exactly: `position_at(now) == clamp(target)` right after it; a seek during
//!   a scheduled start keeps the common start instant;
//! - (d) `rev` strictly increases on every change, and an operation that reports "no change"
//!   leaves the clock untouched;
//! - (e) the position is always within `[0, duration]` when a duration is set.
//!
//! (f) The same is driven through `Room::apply` with random commands from several members: every
//! playback push broadcast in an `Ok` effect list carries a `rev` strictly greater than the
//! previous playback push's, the room's clock stays within bounds, rejected commands change
//! nothing, and `Persist` leads every effect list that changed the durable record.

#[cfg(target_arch = "wasm32")]
use wasm_bindgen_test::wasm_bindgen_test as test;

use proptest::prelude::*;
use unisono_core::{
    Millis,
    clock::{MAX_RATE, MIN_RATE, PlaybackClock},
    protocol::{RoomSettings, RoomSettingsPatch},
    room::{Room, RoomCommand, RoomEffect, RoomLimits},
    song::{Provider, Song},
};

fn song(id: &str, duration_ms: Millis) -> Song {
    Song { id: id.into(), title: String::new(), provider: Provider::Url, url: String::new(), duration_ms }
}

/// The clamp the clock applies, computed independently: `[0, duration]`, or `[0, ∞)` when the
/// duration is unknown.
fn clamp(clock: &PlaybackClock, pos: Millis) -> Millis {
    let pos = pos.max(0.0);
    match clock.duration() {
        Some(d) => pos.min(d),
        None => pos,
    }
}

// ---------------------------------------------------------------------------------------------
// Clock operations
// ---------------------------------------------------------------------------------------------

#[derive(Debug, Clone)]
enum ClockOp {
    /// Load a song (duration 0 = unknown), paused or starting `start_in` ms from now.
    Load {
        duration_ms: Millis,
        start_in: Option<Millis>,
    },
    Unload,
    Pause,
    /// Play from the held position, starting `start_in` ms from now.
    Play {
        start_in: Millis,
    },
    /// Pause now, then resume `gap` ms later with a start `start_in` ms after that.
    PauseThenResume {
        gap: Millis,
        start_in: Millis,
    },
    Seek {
        position_ms: Millis,
    },
    SetRate {
        rate: f64,
    },
    Set {
        position_ms: Millis,
        is_playing: bool,
    },
}

fn duration() -> impl Strategy<Value = Millis> {
    prop_oneof![1 => Just(0.0), 4 => 1.0..600_000.0f64]
}

fn lead() -> impl Strategy<Value = Millis> {
    prop_oneof![Just(0.0), 0.0..5000.0f64]
}

fn position() -> impl Strategy<Value = Millis> {
    prop_oneof![Just(0.0), 0.0..800_000.0f64]
}

fn rate() -> impl Strategy<Value = f64> {
    prop_oneof![Just(1.0), Just(MIN_RATE), Just(MAX_RATE), MIN_RATE..=MAX_RATE]
}

fn clock_op() -> impl Strategy<Value = ClockOp> {
    prop_oneof![
        3 => (duration(), proptest::option::of(lead()))
            .prop_map(|(duration_ms, start_in)| ClockOp::Load { duration_ms, start_in }),
        1 => Just(ClockOp::Unload),
        3 => Just(ClockOp::Pause),
        3 => lead().prop_map(|start_in| ClockOp::Play { start_in }),
        3 => (0.0..20_000.0f64, lead()).prop_map(|(gap, start_in)| ClockOp::PauseThenResume { gap, start_in }),
        3 => position().prop_map(|position_ms| ClockOp::Seek { position_ms }),
        2 => rate().prop_map(|rate| ClockOp::SetRate { rate }),
        2 => (position(), any::<bool>()).prop_map(|(position_ms, is_playing)| ClockOp::Set { position_ms, is_playing }),
    ]
}

/// Time steps between operations: often 0 (several changes in one millisecond), else up to 60 s.
fn dt() -> impl Strategy<Value = Millis> {
    prop_oneof![1 => Just(0.0), 4 => 0.0..60_000.0f64]
}

fn clock_script() -> impl Strategy<Value = (Millis, Vec<(Millis, ClockOp)>)> {
    (0.0..1e12f64, proptest::collection::vec((dt(), clock_op()), 1..40))
}

/// Checks (b) and (e) over `[from, to]`, plus a time far in the future.
fn check_between(clock: &PlaybackClock, from: Millis, to: Millis) -> Result<(), TestCaseError> {
    let mut times: Vec<Millis> = [0.0, 0.1, 0.25, 0.5, 0.75, 0.9, 1.0].iter().map(|f| from + (to - from) * f).collect();
    times.push(to + 1e7);
    let mut prev: Option<Millis> = None;
    for &t in &times {
        let p = clock.position_at(t);
        prop_assert!(!p.is_nan(), "position at {t} is NaN: {clock:?}");
        // (e) Within [0, duration].
        prop_assert!(p >= 0.0, "position {p} at {t} is negative: {clock:?}");
        if let Some(d) = clock.duration() {
            prop_assert!(p <= d, "position {p} at {t} is past the duration {d}: {clock:?}");
        }
        // (b) Monotone while playing; constant while paused.
        if let Some(q) = prev {
            if clock.is_playing && clock.rate > 0.0 {
                prop_assert!(p >= q, "position went back from {q} to {p} at {t}: {clock:?}");
            } else {
                prop_assert_eq!(p, q, "a paused position moved at {}: {:?}", t, clock);
            }
        }
        prev = Some(p);
    }
    Ok(())
}

fn run_clock_script(start: Millis, script: &[(Millis, ClockOp)]) -> Result<(), TestCaseError> {
    let mut clock = PlaybackClock { server_time: start, ..PlaybackClock::default() };
    let mut now = start;
    for (i, (step, op)) in script.iter().enumerate() {
        now += step;
        let before = clock.clone();
        let at_now = before.position_at(now);
        match op {
            ClockOp::Load { duration_ms, start_in } => {
                clock.load(song("s", *duration_ms), now, start_in.map(|l| now + l));
                prop_assert_eq!(clock.position_at(now), 0.0, "a load starts at position 0");
                prop_assert_eq!(clock.is_playing, start_in.is_some());
                prop_assert!(clock.rev > before.rev, "(d) load bumps rev");
            }
            ClockOp::Unload => {
                clock.unload(now);
                prop_assert!(clock.song.is_none() && !clock.is_playing);
                prop_assert!(clock.rev > before.rev, "(d) unload bumps rev");
            }
            ClockOp::Pause => {
                let changed = clock.pause(now);
                prop_assert_eq!(changed, before.is_playing);
                if changed {
                    prop_assert!(clock.rev > before.rev, "(d) pause bumps rev");
                    prop_assert!(!clock.is_playing);
                } else {
                    prop_assert_eq!(&clock, &before, "(d) a no-op pause changes nothing");
                }
                prop_assert_eq!(clock.position_at(now), at_now, "pause freezes the position where it is");
            }
            ClockOp::Play { start_in } => {
                let changed = clock.play(now, now + start_in);
                prop_assert_eq!(changed, !before.is_playing);
                if changed {
                    prop_assert!(clock.rev > before.rev, "(d) play bumps rev");
                    prop_assert!(clock.is_playing);
                    // (a) Resuming never moves the position: it holds until the start, then runs.
                    prop_assert_eq!(clock.position_at(now), at_now, "(a) resume moved the position");
                    prop_assert_eq!(clock.position_at(now + start_in), at_now, "(a) scheduled start moved");
                } else {
                    prop_assert_eq!(&clock, &before, "(d) a no-op play changes nothing");
                }
            }
            ClockOp::PauseThenResume { gap, start_in } => {
                clock.pause(now);
                let paused_at = clock.position_at(now);
                prop_assert_eq!(paused_at, at_now, "pause freezes the position where it is");
                let rev_paused = clock.rev;
                now += gap;
                prop_assert_eq!(clock.position_at(now), paused_at, "a paused clock holds");
                prop_assert!(clock.play(now, now + start_in), "play after pause changes the clock");
                prop_assert!(clock.rev > rev_paused, "(d) play bumps rev");
                prop_assert_eq!(clock.position_at(now), paused_at, "(a) resume moved the position");
                prop_assert_eq!(clock.position_at(now + start_in), paused_at, "(a) scheduled start moved");
            }
            ClockOp::Seek { position_ms } => {
                let scheduled = before.is_scheduled(now);
                clock.seek(*position_ms, now);
                prop_assert!(clock.rev > before.rev, "(d) seek bumps rev");
                let expected = clamp(&clock, *position_ms);
                // (c) A seek lands exactly.
                prop_assert_eq!(clock.position_at(now), expected, "(c) seek to {} missed", position_ms);
                if scheduled {
                    prop_assert_eq!(clock.server_time, before.server_time, "(c) the scheduled start is kept");
                } else {
                    prop_assert_eq!(clock.server_time, now);
                }
                prop_assert_eq!(clock.is_playing, before.is_playing, "seek keeps the play state");
            }
            ClockOp::SetRate { rate } => {
                clock.set_rate(*rate, now);
                prop_assert!(clock.rev > before.rev, "(d) set_rate bumps rev");
                prop_assert_eq!(clock.rate, *rate);
                prop_assert_eq!(clock.position_at(now), at_now, "a rate change keeps the position continuous");
            }
            ClockOp::Set { position_ms, is_playing } => {
                clock.set(*position_ms, *is_playing, now);
                prop_assert!(clock.rev > before.rev, "(d) set bumps rev");
                prop_assert_eq!(clock.position_at(now), clamp(&clock, *position_ms));
                prop_assert_eq!(clock.is_playing, *is_playing);
            }
        }
        // (d) Whatever happened, rev never goes back, and every change is visible in rev.
        prop_assert!(clock.rev >= before.rev);
        if clock != before {
            prop_assert!(clock.rev > before.rev, "(d) the clock changed without a new rev: {:?}", op);
        }
        let next = script.get(i + 1).map_or(now + 10_000.0, |(step, _)| now + step);
        check_between(&clock, now, next)?;
        // The derived end time agrees with position_at.
        if let Some(end) = clock.end_time() {
            let d = clock.duration().unwrap();
            prop_assert_eq!(clock.position_at(end.max(now) + 1.0), d);
            prop_assert!(clock.has_ended(end.max(now)));
        }
    }
    Ok(())
}

proptest! {
    #[test]
    fn clock_properties_hold_over_random_operation_sequences((start, script) in clock_script()) {
        run_clock_script(start, &script)?;
    }

    /// (a) in isolation: pause at any time and resume any time later, with any rate and start.
    #[test]
    fn pause_then_resume_never_moves_the_position(
        duration_ms in duration(),
        start in 0.0..1e12f64,
        start_in in lead(),
        rate in rate(),
        play_for in 0.0..1e6f64,
        gap in 0.0..1e6f64,
        resume_in in lead(),
    ) {
        let mut clock = PlaybackClock::default();
        clock.load(song("s", duration_ms), start, Some(start + start_in));
        clock.set_rate(rate, start);
        let t_pause = start + play_for;
        let expected = clock.position_at(t_pause);
        prop_assert!(clock.pause(t_pause));
        prop_assert_eq!(clock.position_at(t_pause), expected);
        let t_resume = t_pause + gap;
        prop_assert!(clock.play(t_resume, t_resume + resume_in));
        prop_assert_eq!(clock.position_at(t_resume), expected);
        prop_assert_eq!(clock.position_at(t_resume + resume_in), expected);
    }

    /// (c) in isolation: a seek lands exactly, whatever the state before.
    #[test]
    fn seek_lands_exactly(
        duration_ms in duration(),
        playing in any::<bool>(),
        rate in rate(),
        elapsed in 0.0..1e6f64,
        target in position(),
    ) {
        let mut clock = PlaybackClock::default();
        clock.load(song("s", duration_ms), 1000.0, playing.then_some(1000.0));
        clock.set_rate(rate, 1000.0);
        let now = 1000.0 + elapsed;
        clock.seek(target, now);
        prop_assert_eq!(clock.position_at(now), clamp(&clock, target));
    }
}

// ---------------------------------------------------------------------------------------------
// (f) The same through Room::apply
// ---------------------------------------------------------------------------------------------

const SESSIONS: [&str; 3] = ["alice", "bob", "carol"];

#[derive(Debug, Clone)]
enum RoomOp {
    Join(usize),
    Leave(usize),
    Disconnect(usize),
    Reconnect(usize),
    Load(usize, Millis, bool),
    Pause(usize),
    Resume(usize),
    Seek(usize, Millis),
    SetRate(usize, f64),
    Update(usize, bool, Millis, bool),
    QueueAdd(usize, Millis),
    QueueRemove(usize, u64),
    QueueMove(usize, u64, usize),
    PlayNext(usize),
    Transfer(usize, usize),
    SetReady(usize, bool),
    Settings(usize, Option<bool>, Option<bool>, Option<Millis>),
    ReportDrift(usize, f64),
    GetPlayback(usize),
    Tick,
    /// Advance to the room's next deadline (if any) and tick there.
    TickAtDeadline,
}

fn who() -> impl Strategy<Value = usize> {
    0..SESSIONS.len()
}

fn room_op() -> impl Strategy<Value = RoomOp> {
    prop_oneof![
        3 => who().prop_map(RoomOp::Join),
        1 => who().prop_map(RoomOp::Leave),
        1 => who().prop_map(RoomOp::Disconnect),
        1 => who().prop_map(RoomOp::Reconnect),
        3 => (who(), duration(), any::<bool>()).prop_map(|(s, d, a)| RoomOp::Load(s, d, a)),
        3 => who().prop_map(RoomOp::Pause),
        3 => who().prop_map(RoomOp::Resume),
        3 => (who(), position()).prop_map(|(s, p)| RoomOp::Seek(s, p)),
        2 => (who(), prop_oneof![rate(), Just(0.0), Just(10.0)]).prop_map(|(s, r)| RoomOp::SetRate(s, r)),
        1 => (who(), any::<bool>(), position(), any::<bool>()).prop_map(|(s, q, p, pl)| RoomOp::Update(s, q, p, pl)),
        2 => (who(), duration()).prop_map(|(s, d)| RoomOp::QueueAdd(s, d)),
        1 => (who(), 1..8u64).prop_map(|(s, i)| RoomOp::QueueRemove(s, i)),
        1 => (who(), 1..8u64, 0..4usize).prop_map(|(s, i, to)| RoomOp::QueueMove(s, i, to)),
        2 => who().prop_map(RoomOp::PlayNext),
        1 => (who(), who()).prop_map(|(s, t)| RoomOp::Transfer(s, t)),
        4 => (who(), any::<bool>()).prop_map(|(s, r)| RoomOp::SetReady(s, r)),
        2 => (
            who(),
            proptest::option::of(any::<bool>()),
            proptest::option::of(any::<bool>()),
            proptest::option::of(prop_oneof![Just(0.0), 0.0..2000.0f64]),
        )
            .prop_map(|(s, a, b, d)| RoomOp::Settings(s, a, b, d)),
        1 => (who(), -500.0..500.0f64).prop_map(|(s, d)| RoomOp::ReportDrift(s, d)),
        1 => who().prop_map(RoomOp::GetPlayback),
        3 => Just(RoomOp::Tick),
        3 => Just(RoomOp::TickAtDeadline),
    ]
}

fn room_command(op: &RoomOp, room: &Room, now: &mut Millis) -> RoomCommand {
    let s = |i: &usize| SESSIONS[*i].to_owned();
    match op {
        RoomOp::Join(i) => RoomCommand::Join { session: s(i), name: s(i) },
        RoomOp::Leave(i) => RoomCommand::Leave { session: s(i) },
        RoomOp::Disconnect(i) => RoomCommand::Disconnect { session: s(i) },
        RoomOp::Reconnect(i) => RoomCommand::Reconnect { session: s(i) },
        RoomOp::Load(i, d, autoplay) => {
            RoomCommand::Load { session: s(i), song: song("loaded", *d), autoplay: *autoplay }
        }
        RoomOp::Pause(i) => RoomCommand::Pause { session: s(i) },
        RoomOp::Resume(i) => RoomCommand::Resume { session: s(i) },
        RoomOp::Seek(i, p) => RoomCommand::Seek { session: s(i), position_ms: *p },
        RoomOp::SetRate(i, r) => RoomCommand::SetRate { session: s(i), rate: *r },
        RoomOp::Update(i, queued, p, playing) => RoomCommand::Update {
            session: s(i),
            song_id: queued.then(|| room.queue().first().map_or("other".to_owned(), |q| q.song.id.clone())),
            position_ms: *p,
            is_playing: *playing,
        },
        RoomOp::QueueAdd(i, d) => {
            RoomCommand::QueueAdd { session: s(i), song: song(&format!("song{}", *now as u64), *d) }
        }
        RoomOp::QueueRemove(i, n) => RoomCommand::QueueRemove { session: s(i), item_id: format!("q{n}") },
        RoomOp::QueueMove(i, n, to) => {
            RoomCommand::QueueMove { session: s(i), item_id: format!("q{n}"), to_index: *to }
        }
        RoomOp::PlayNext(i) => RoomCommand::PlayNext { session: s(i) },
        RoomOp::Transfer(i, t) => RoomCommand::TransferHost { session: s(i), to: s(t) },
        RoomOp::SetReady(i, r) => RoomCommand::SetReady { session: s(i), ready: *r },
        RoomOp::Settings(i, anyone, barrier, delay) => RoomCommand::UpdateSettings {
            session: s(i),
            patch: RoomSettingsPatch {
                anyone_can_control: *anyone,
                ready_barrier: *barrier,
                ready_timeout_ms: None,
                start_delay_ms: *delay,
            },
        },
        RoomOp::ReportDrift(i, d) => RoomCommand::ReportDrift { session: s(i), drift_ms: *d },
        RoomOp::GetPlayback(i) => RoomCommand::GetPlayback { session: s(i) },
        RoomOp::Tick => RoomCommand::Tick,
        RoomOp::TickAtDeadline => {
            if let Some(t) = room.next_deadline() {
                *now = now.max(t);
            }
            RoomCommand::Tick
        }
    }
}

fn room_script() -> impl Strategy<Value = (bool, Vec<(Millis, RoomOp)>)> {
    (any::<bool>(), proptest::collection::vec((dt(), room_op()), 1..80))
}

fn run_room_script(barrier: bool, script: &[(Millis, RoomOp)]) -> Result<(), TestCaseError> {
    let settings = RoomSettings { ready_barrier: barrier, ready_timeout_ms: 3000.0, ..RoomSettings::default() };
    let limits = RoomLimits { host_grace_ms: 5000.0, empty_ttl_ms: 120_000.0, max_queue: 5, ..RoomLimits::default() };
    let mut now = 1_700_000_000_000.0;
    let mut room = Room::new("PROP23".into(), "props", settings, limits, now);
    let mut last_push_rev = room.clock().rev;
    for (step, op) in script {
        now += step;
        let cmd = room_command(op, &room, &mut now);
        let before = room.clone();
        let record = room.record();
        match room.apply(cmd.clone(), now) {
            Err(e) => {
                prop_assert_eq!(&room, &before, "rejected {:?} ({}) changed the room", cmd, e);
            }
            Ok(effects) => {
                // Persist leads whenever the durable record changed, and appears nowhere else.
                if room.record() != record {
                    prop_assert_eq!(effects.first(), Some(&RoomEffect::Persist), "{:?}: {:?}", cmd, effects);
                }
                prop_assert!(
                    effects.iter().skip(1).all(|e| *e != RoomEffect::Persist),
                    "{:?}: Persist only first: {:?}",
                    cmd,
                    effects
                );
                // (f) Every broadcast playback push carries a newer rev than the previous one.
                for effect in &effects {
                    if let RoomEffect::Broadcast { push, .. } = effect
                        && let Some(state) = push.playback()
                    {
                        prop_assert!(
                            state.clock.rev > last_push_rev,
                            "(f) {:?} at {} pushed rev {} after rev {} ({:?})",
                            cmd,
                            now,
                            state.clock.rev,
                            last_push_rev,
                            push
                        );
                        last_push_rev = state.clock.rev;
                    }
                }
            }
        }
        // The room's clock obeys the clock properties too.
        let clock = room.clock();
        prop_assert!(clock.rev >= before.clock().rev, "rev went back after {:?}", cmd);
        if clock != before.clock() {
            prop_assert!(clock.rev > before.clock().rev, "clock changed without a new rev after {:?}", cmd);
        }
        prop_assert!(clock.rate >= MIN_RATE && clock.rate <= MAX_RATE, "rate {} out of range", clock.rate);
        check_between(clock, now, now + 10_000.0)?;
        if room.is_closed() {
            break;
        }
    }
    Ok(())
}

proptest! {
    #[test]
    fn room_playback_pushes_carry_strictly_increasing_revs((barrier, script) in room_script()) {
        run_room_script(barrier, &script)?;
    }
}
