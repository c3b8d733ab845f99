//! Property tests of the synchronisation building blocks: the clock-offset estimator's error
//! bound under arbitrary network asymmetry, and the drift controller closing the loop on a
//! simulated player (convergence, bounded seeking, no oscillation).

#[cfg(target_arch = "wasm32")]
use wasm_bindgen_test::wasm_bindgen_test as test;

use proptest::prelude::*;
use unisono_core::drift::{Correction, DriftConfig, DriftController, PlayerCapabilities};
use unisono_core::estimator::{ClockOffsetEstimator, EstimatorConfig, SampleRejected};

/// SplitMix64: a tiny deterministic generator for simulation noise, seeded by proptest so that
/// failures shrink and replay.
struct Rng(u64);

impl Rng {
    fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform in `[lo, hi)`.
    fn range(&mut self, lo: f64, hi: f64) -> f64 {
        let unit = (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64;
        lo + (hi - lo) * unit
    }
}

// ---------------------------------------------------------------------------------------------
// Estimator
// ---------------------------------------------------------------------------------------------

/// Timestamps are multiples of 1/1024 ms (under a microsecond) below 2^43 ticks, so every sum,
/// difference and halving in the estimator is exact and the bound can be checked to 1e-9.
const GRID: f64 = 1.0 / 1024.0;

/// One exchange: (up delay, down delay, server processing, pause before the next ping), in
/// grid ticks: up to 200 ms each way, 5 ms of processing, 3 s between pings.
fn exchange_ticks() -> impl Strategy<Value = (u32, u32, u32, u32)> {
    (0u32..=200 * 1024, 0u32..=200 * 1024, 0u32..=5 * 1024, 0u32..=3000 * 1024)
}

/// Feeds exchanges with true offset `offset` starting at client time `t0`; returns the lowest
/// network round trip (`up + down`) among them.
fn feed(
    est: &mut ClockOffsetEstimator,
    offset: f64,
    mut t0: f64,
    exchanges: impl IntoIterator<Item = (f64, f64, f64, f64)>,
) -> Result<f64, TestCaseError> {
    let mut min_rtt = f64::INFINITY;
    for (up, down, processing, pause) in exchanges {
        let t1 = t0 + up + offset;
        let t2 = t1 + processing;
        let t3 = t2 - offset + down;
        min_rtt = min_rtt.min(up + down);
        // A real exchange may be an outlier, never invalid.
        prop_assert_ne!(est.add_sample(t0, t1, t2, t3), Err(SampleRejected::Invalid));
        t0 = t3 + pause;
    }
    Ok(min_rtt)
}

proptest! {
    /// The estimate is within half the best round trip of the truth, and the reported error
    /// bound covers the actual error, however asymmetric the network.
    #[test]
    fn offset_error_within_half_min_rtt(
        offset_ticks in -(1i64 << 40)..(1i64 << 40),
        start_ticks in 0i64..(1i64 << 40),
        // At most one window's worth, so the best sample seen is still in the window.
        exchanges in prop::collection::vec(exchange_ticks(), 8..=16),
    ) {
        let offset = offset_ticks as f64 * GRID;
        let mut est = ClockOffsetEstimator::new(EstimatorConfig::default());
        let exchanges = exchanges.into_iter().map(|(up, down, processing, pause)| {
            (up as f64 * GRID, down as f64 * GRID, processing as f64 * GRID, pause as f64 * GRID)
        });
        let min_rtt = feed(&mut est, offset, start_ticks as f64 * GRID, exchanges)?;

        let (Some(estimate), Some(bound)) = (est.offset(), est.error_bound()) else {
            return Err(TestCaseError::fail("no estimate after 8 samples"));
        };
        let error = (estimate - offset).abs();
        prop_assert!(error <= min_rtt / 2.0 + 1e-9, "error {error}, min rtt {min_rtt}");
        prop_assert!(bound >= error, "bound {bound} < error {error}");
        prop_assert!(bound <= min_rtt / 2.0 + 1e-9, "bound {bound}, min rtt {min_rtt}");
    }

    /// The same with epoch-sized timestamps and arbitrary fractions, where the only slack is
    /// f64 rounding: an ulp at 2e12 ms is 2.4e-4 ms, and a handful of operations are involved.
    #[test]
    fn offset_error_at_epoch_magnitudes(
        offset in -1e6f64..1e6,
        start in 1.6e12f64..1.9e12,
        exchanges in prop::collection::vec((0f64..200.0, 0f64..200.0, 0f64..5.0, 0f64..3000.0), 8..=16),
    ) {
        let mut est = ClockOffsetEstimator::new(EstimatorConfig::default());
        let min_rtt = feed(&mut est, offset, start, exchanges)?;
        let (Some(estimate), Some(bound)) = (est.offset(), est.error_bound()) else {
            return Err(TestCaseError::fail("no estimate after 8 samples"));
        };
        let error = (estimate - offset).abs();
        prop_assert!(error <= min_rtt / 2.0 + 2e-3, "error {error}, min rtt {min_rtt}");
        prop_assert!(bound + 2e-3 >= error, "bound {bound} < error {error}");
    }
}

// ---------------------------------------------------------------------------------------------
// Drift controller
// ---------------------------------------------------------------------------------------------

/// Update period of the simulated client.
const TICK_MS: f64 = 50.0;
const SIMULATED_MS: f64 = 60_000.0;
/// How far the player's own clock may run off. Sound-card and system clocks are typically
/// within ±50 ppm of each other.
const MAX_SKEW_PPM: f64 = 50.0;

#[derive(Debug)]
struct Run {
    /// True (noise-free) `local - expected` at the end.
    final_error: f64,
    seeks: Vec<f64>,
    rate_changes: Vec<f64>,
}

/// A simulated player. Its position advances at the rate it was told times its own clock skew;
/// a seek lands `seek_latency_ms` after it is asked for (the player keeps playing from the old
/// position meanwhile); readings carry uniform noise of up to ± `position_granularity_ms`.
fn simulate(caps: &PlayerCapabilities, initial_error: f64, base_rate: f64, skew: f64, seed: u64) -> Run {
    let mut rng = Rng(seed);
    let mut controller = DriftController::new(DriftConfig::default(), caps.clone());
    let expected = |t: f64| 30_000.0 + t * base_rate;
    let noise = caps.position_granularity_ms;

    let mut position = expected(0.0) + initial_error;
    let mut rate = base_rate;
    let mut landing: Option<(f64, f64)> = None;
    let mut run = Run { final_error: initial_error, seeks: Vec::new(), rate_changes: Vec::new() };
    let mut now = 0.0;
    while now < SIMULATED_MS {
        now += TICK_MS;
        position += rate * (1.0 + skew) * TICK_MS;
        if let Some((at, to_ms)) = landing
            && now >= at
        {
            position = to_ms + (now - at) * rate * (1.0 + skew);
            landing = None;
        }
        let reading = position + rng.range(-noise, noise);
        match controller.update(now, reading, expected(now), base_rate) {
            Correction::None => {}
            Correction::Rate { rate: r } => {
                rate = r;
                run.rate_changes.push(now);
            }
            Correction::Seek { to_ms } => {
                run.seeks.push(now);
                landing = Some((now + caps.seek_latency_ms, to_ms));
            }
        }
    }
    run.final_error = position - expected(now);
    run
}

fn player(can_set_rate: bool, stepped: bool, seek_latency_ms: f64, noise: f64) -> PlayerCapabilities {
    PlayerCapabilities {
        can_set_rate,
        rate_step: stepped.then_some(0.05),
        seek_latency_ms,
        position_granularity_ms: noise,
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(128))]

    /// A rate-capable player converges from up to 3 s off, seeking at most once, and then
    /// leaves the rate alone: in the last 30 s, at most two short nudges (a change and a restore
    /// each), which is what the worst skew (50 ppm at rate 1.5: 2.25 ms per 30 s, plus reading
    /// noise) can call for.
    #[test]
    fn converges_with_rate_nudges(
        initial_error in -3000f64..3000.0,
        stepped in any::<bool>(),
        noise in 0f64..5.0,
        seek_latency in 0f64..400.0,
        base_rate in 1f64..1.5,
        skew_ppm in -MAX_SKEW_PPM..MAX_SKEW_PPM,
        seed in any::<u64>(),
    ) {
        let caps = player(true, stepped, seek_latency, noise);
        let run = simulate(&caps, initial_error, base_rate, skew_ppm * 1e-6, seed);
        let config = DriftConfig::default();

        prop_assert!(
            run.final_error.abs() <= config.dead_band_ms + noise,
            "final error {} ({run:?})", run.final_error
        );
        prop_assert!(run.seeks.len() <= 1, "{run:?}");
        let late = run.rate_changes.iter().filter(|t| **t > SIMULATED_MS - 30_000.0).count();
        prop_assert!(late <= 4, "{late} rate changes in the last 30 s ({run:?})");
    }

    /// A player without rate control (Spotify-like) seeks once if it is far enough off, and
    /// otherwise is left alone.
    #[test]
    fn converges_by_seeking_only(
        initial_error in -3000f64..3000.0,
        noise in 0f64..5.0,
        seek_latency in 0f64..400.0,
        base_rate in 1f64..1.5,
        skew_ppm in -MAX_SKEW_PPM..MAX_SKEW_PPM,
        seed in any::<u64>(),
    ) {
        let caps = player(false, false, seek_latency, noise);
        let run = simulate(&caps, initial_error, base_rate, skew_ppm * 1e-6, seed);
        let threshold = DriftConfig::default().seek_only_threshold_ms;

        prop_assert!(run.final_error.abs() <= threshold, "final error {} ({run:?})", run.final_error);
        prop_assert!(run.rate_changes.is_empty());
        prop_assert!(run.seeks.len() <= 1, "{run:?}");
        if initial_error.abs() > threshold + noise {
            prop_assert_eq!(run.seeks.len(), 1);
            // After landing, only the player's own clock skew moves it away again.
            let skew_drift = skew_ppm.abs() * 1e-6 * SIMULATED_MS * base_rate;
            prop_assert!(run.final_error.abs() <= skew_drift + 1e-6, "{run:?}");
        }
    }

    /// A constant error inside the dead band never triggers anything.
    #[test]
    fn no_correction_inside_the_dead_band(
        // Strictly inside, so that rounding in `local - expected` cannot cross the edge.
        error_fraction in -0.999f64..0.999,
        can_set_rate in any::<bool>(),
        stepped in any::<bool>(),
        noise in 0f64..20.0,
        base_rate in 0.25f64..4.0,
        start in 0f64..1e12,
    ) {
        let caps = player(can_set_rate, stepped, 200.0, noise);
        let mut controller = DriftController::new(DriftConfig::default(), caps);
        let error = error_fraction * DriftConfig::default().dead_band_ms;
        for i in 0..1000 {
            let now = start + f64::from(i) * TICK_MS;
            let expected = f64::from(i) * TICK_MS * base_rate;
            prop_assert_eq!(controller.update(now, expected + error, expected, base_rate), Correction::None);
        }
    }
}
