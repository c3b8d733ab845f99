//! Test vectors: inputs and the outputs this core computes for them, so that every build of the
//! core (native, wasm in Node, wasm in a browser, the npm package) can prove it computes the
//! *same bits*.
//!
//! [`generate`] builds the cases deterministically from a seed; `core/tests/vectors/` holds the
//! committed file, and [`check`] recomputes one case and compares exactly (`f64` bit equality).
//! The file is JSON: serde_json writes the shortest representation that parses back to the
//! same `f64`, in Rust and in JavaScript alike.

use crate::prelude::*;

use serde::{Deserialize, Serialize};

use crate::{
    Millis,
    clock::PlaybackClock,
    drift::{Correction, DriftConfig, DriftController, PlayerCapabilities},
    estimator::{ClockOffsetEstimator, EstimatorConfig},
    song::{Provider, Song},
};

/// One operation on a playback clock.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "camelCase", rename_all_fields = "camelCase")]
pub enum ClockOp {
    Load { now: Millis, duration_ms: Millis, start_at: Option<Millis> },
    Pause { now: Millis },
    Play { now: Millis, start_at: Millis },
    Seek { now: Millis, position_ms: Millis },
    SetRate { now: Millis, rate: f64 },
    Set { now: Millis, position_ms: Millis, is_playing: bool },
}

/// The clock after an operation, and its position at a few probe times.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ClockObs {
    pub position_ms: Millis,
    pub server_time: Millis,
    pub is_playing: bool,
    pub rate: f64,
    pub rev: u64,
    /// `[t, position_at(t)]` pairs.
    pub probes: Vec<[f64; 2]>,
}

/// Estimator output after all samples.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct EstimatorObs {
    pub accepted: Vec<bool>,
    pub offset: Option<f64>,
    pub error_bound: Option<f64>,
    pub stable: bool,
}

/// One test vector.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "camelCase", rename_all_fields = "camelCase")]
pub enum Case {
    /// Operations applied in order, observed after each one.
    Clock { ops: Vec<ClockOp>, probes: Vec<Millis>, expect: Vec<ClockObs> },
    /// `[t0, t1, t2, t3]` samples fed to a default estimator.
    Estimator { samples: Vec<[f64; 4]>, expect: EstimatorObs },
    /// `[now, local, expected, baseRate]` updates fed to a default-config controller.
    Drift { caps: PlayerCapabilities, updates: Vec<[f64; 4]>, expect: Vec<Correction> },
}

/// Small deterministic PRNG (xorshift64*), so the vectors need no dependency.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }
    /// Uniform in `[lo, hi)`, quantised to 1/1024 ms half the time (exact binary fractions) and
    /// arbitrary otherwise (exercises rounding).
    fn range(&mut self, lo: f64, hi: f64) -> f64 {
        let unit = (self.next() >> 11) as f64 / (1u64 << 53) as f64;
        let v = lo + (hi - lo) * unit;
        if self.next() & 1 == 0 { libm::floor(v * 1024.0) / 1024.0 } else { v }
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n.max(1)
    }
}

fn song(duration_ms: Millis) -> Song {
    Song { id: "v".into(), title: String::new(), provider: Provider::Url, url: String::new(), duration_ms }
}

fn apply(clock: &mut PlaybackClock, op: &ClockOp) {
    match *op {
        ClockOp::Load { now, duration_ms, start_at } => clock.load(song(duration_ms), now, start_at),
        ClockOp::Pause { now } => {
            clock.pause(now);
        }
        ClockOp::Play { now, start_at } => {
            clock.play(now, start_at);
        }
        ClockOp::Seek { now, position_ms } => clock.seek(position_ms, now),
        ClockOp::SetRate { now, rate } => clock.set_rate(rate, now),
        ClockOp::Set { now, position_ms, is_playing } => clock.set(position_ms, is_playing, now),
    }
}

fn observe(clock: &PlaybackClock, probes: &[Millis], now: Millis) -> ClockObs {
    ClockObs {
        position_ms: clock.position_ms,
        server_time: clock.server_time,
        is_playing: clock.is_playing,
        rate: clock.rate,
        rev: clock.rev,
        probes: probes.iter().map(|p| [now + p, clock.position_at(now + p)]).collect(),
    }
}

fn op_now(op: &ClockOp) -> Millis {
    match *op {
        ClockOp::Load { now, .. }
        | ClockOp::Pause { now }
        | ClockOp::Play { now, .. }
        | ClockOp::Seek { now, .. }
        | ClockOp::SetRate { now, .. }
        | ClockOp::Set { now, .. } => now,
    }
}

/// Computes what a case's inputs give on this build.
pub fn evaluate(case: &Case) -> Case {
    match case {
        Case::Clock { ops, probes, .. } => {
            let mut clock = PlaybackClock::default();
            let expect = ops
                .iter()
                .map(|op| {
                    apply(&mut clock, op);
                    observe(&clock, probes, op_now(op))
                })
                .collect();
            Case::Clock { ops: ops.clone(), probes: probes.clone(), expect }
        }
        Case::Estimator { samples, .. } => {
            let mut est = ClockOffsetEstimator::new(EstimatorConfig::default());
            let accepted = samples.iter().map(|[t0, t1, t2, t3]| est.add_sample(*t0, *t1, *t2, *t3).is_ok()).collect();
            let expect = EstimatorObs {
                accepted,
                offset: est.offset(),
                error_bound: est.error_bound(),
                stable: est.is_stable(),
            };
            Case::Estimator { samples: samples.clone(), expect }
        }
        Case::Drift { caps, updates, .. } => {
            let mut ctl = DriftController::new(DriftConfig::default(), caps.clone());
            let expect =
                updates.iter().map(|[now, local, expected, rate]| ctl.update(*now, *local, *expected, *rate)).collect();
            Case::Drift { caps: caps.clone(), updates: updates.clone(), expect }
        }
    }
}

/// Recomputes `case` and reports the first difference, comparing floats bit for bit.
pub fn check(case: &Case) -> Result<(), String> {
    let got = evaluate(case);
    // serde_json's float output is the shortest exact representation: equal text ⇔ equal bits.
    let want = serde_json::to_string(case).map_err(|e| e.to_string())?;
    let have = serde_json::to_string(&got).map_err(|e| e.to_string())?;
    if want == have { Ok(()) } else { Err(format!("expected {want}\n     got {have}")) }
}

fn clock_case(rng: &mut Rng) -> Case {
    let mut now = rng.range(1.6e12, 1.8e12);
    let n = 2 + rng.below(7) as usize;
    let mut ops = Vec::with_capacity(n);
    for i in 0..n {
        now += rng.range(0.0, 120_000.0);
        let op = if i == 0 {
            let start_at = (rng.below(2) == 0).then(|| now + rng.range(0.0, 2000.0));
            ClockOp::Load { now, duration_ms: [0.0, rng.range(1000.0, 600_000.0)][rng.below(2) as usize], start_at }
        } else {
            match rng.below(6) {
                0 => ClockOp::Pause { now },
                1 => ClockOp::Play { now, start_at: now + rng.range(0.0, 1000.0) },
                2 => ClockOp::Seek { now, position_ms: rng.range(0.0, 700_000.0) },
                3 => ClockOp::SetRate { now, rate: rng.range(0.25, 4.0) },
                4 => ClockOp::Set { now, position_ms: rng.range(0.0, 700_000.0), is_playing: rng.below(2) == 0 },
                _ => ClockOp::Load {
                    now,
                    duration_ms: rng.range(1000.0, 600_000.0),
                    start_at: Some(now + rng.range(0.0, 500.0)),
                },
            }
        };
        ops.push(op);
    }
    let probes = vec![-1.0, 0.0, rng.range(0.0, 10.0), rng.range(10.0, 5000.0), rng.range(5000.0, 1e6)];
    evaluate(&Case::Clock { ops, probes, expect: Vec::new() })
}

fn estimator_case(rng: &mut Rng) -> Case {
    let offset = rng.range(-5e6, 5e6);
    let mut t = rng.range(1e5, 1e9);
    let n = 1 + rng.below(16) as usize;
    let samples = (0..n)
        .map(|_| {
            t += rng.range(10.0, 2000.0);
            let up = rng.range(0.0, 150.0);
            let down = rng.range(0.0, 150.0);
            let work = rng.range(0.0, 3.0);
            let t0 = t;
            let t1 = t0 + up + offset;
            let t2 = t1 + work;
            let t3 = t2 - offset + down;
            [t0, t1, t2, t3]
        })
        .collect();
    evaluate(&Case::Estimator {
        samples,
        expect: EstimatorObs { accepted: Vec::new(), offset: None, error_bound: None, stable: false },
    })
}

fn drift_case(rng: &mut Rng) -> Case {
    let caps = match rng.below(3) {
        0 => PlayerCapabilities {
            can_set_rate: true,
            rate_step: None,
            seek_latency_ms: rng.range(0.0, 200.0),
            position_granularity_ms: 0.0,
        },
        1 => PlayerCapabilities {
            can_set_rate: true,
            rate_step: Some(0.05),
            seek_latency_ms: rng.range(100.0, 600.0),
            position_granularity_ms: rng.range(0.0, 250.0),
        },
        _ => PlayerCapabilities {
            can_set_rate: false,
            rate_step: None,
            seek_latency_ms: rng.range(200.0, 800.0),
            position_granularity_ms: rng.range(0.0, 50.0),
        },
    };
    let mut now = rng.range(1e6, 1e9);
    let mut error = rng.range(-3000.0, 3000.0);
    let expected0 = rng.range(0.0, 100_000.0);
    let rate = [1.0, 0.5, 1.25, 2.0][rng.below(4) as usize];
    let n = 5 + rng.below(20) as usize;
    let updates = (0..n)
        .map(|i| {
            now += rng.range(50.0, 1000.0);
            error = error * 0.8 + rng.range(-5.0, 5.0);
            let expected = expected0 + i as f64 * 250.0;
            [now, expected + error, expected, rate]
        })
        .collect();
    evaluate(&Case::Drift { caps, updates, expect: Vec::new() })
}

/// `n` cases of each kind from `seed`: the same seed gives the same cases on every platform.
pub fn generate(seed: u64, n: usize) -> Vec<Case> {
    let mut rng = Rng(seed.max(1));
    let mut cases = Vec::with_capacity(3 * n);
    for _ in 0..n {
        cases.push(clock_case(&mut rng));
        cases.push(estimator_case(&mut rng));
        cases.push(drift_case(&mut rng));
    }
    cases
}
