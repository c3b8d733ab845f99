//! Latency statistics that can be merged across worker processes.
//!
//! [`Histogram`] is log-linear (exact below 256 µs, then 128 buckets per power of two, so every
//! figure is within 0.8 % of the true value) and is shipped between processes as a sparse list
//! of `(bucket, count)` pairs. [`Recorder`] is what the connections of one process write into:
//! the histogram of every delivery plus, for the fan-out scenario, the slowest arrival and the
//! number of arrivals of each push, keyed by the push's send time.

use std::collections::HashMap;

use serde::{Deserialize, Serialize};

/// Values below this are their own bucket.
const EXACT: u64 = 256;
/// Buckets per power of two above [`EXACT`].
const PER_OCTAVE: u64 = 128;
const BUCKETS: usize = (EXACT + PER_OCTAVE * 57) as usize;

fn bucket_of(v: u64) -> usize {
    if v < EXACT {
        return v as usize;
    }
    let msb = 63 - u64::from(v.leading_zeros()); // ≥ 8
    let shift = msb - 7; // v >> shift is in [128, 256)
    (EXACT + (shift - 1) * PER_OCTAVE + ((v >> shift) - PER_OCTAVE)) as usize
}

/// The middle of a bucket's value range.
fn value_of(bucket: usize) -> u64 {
    let b = bucket as u64;
    if b < EXACT {
        return b;
    }
    let shift = (b - EXACT) / PER_OCTAVE + 1;
    let mantissa = (b - EXACT) % PER_OCTAVE + PER_OCTAVE;
    (mantissa << shift) + (1 << (shift - 1))
}

/// A latency histogram in microseconds.
#[derive(Debug, Clone)]
pub struct Histogram {
    counts: Vec<u64>,
    n: u64,
    max: u64,
}

impl Default for Histogram {
    fn default() -> Self {
        Histogram { counts: vec![0; BUCKETS], n: 0, max: 0 }
    }
}

/// The wire form of a [`Histogram`]: non-empty buckets only.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct SparseHistogram {
    pub buckets: Vec<(u32, u64)>,
    pub max: u64,
}

impl Histogram {
    pub fn record(&mut self, us: u64) {
        self.counts[bucket_of(us).min(BUCKETS - 1)] += 1;
        self.n += 1;
        self.max = self.max.max(us);
    }

    pub fn count(&self) -> u64 {
        self.n
    }

    /// The `q` quantile (0..=1) in µs; `None` when empty. `q = 1` is the exact maximum.
    pub fn quantile(&self, q: f64) -> Option<u64> {
        if self.n == 0 {
            return None;
        }
        if q >= 1.0 {
            return Some(self.max);
        }
        let rank = ((q * self.n as f64).ceil() as u64).clamp(1, self.n);
        let mut seen = 0;
        for (i, c) in self.counts.iter().enumerate() {
            seen += c;
            if seen >= rank {
                return Some(value_of(i).min(self.max));
            }
        }
        Some(self.max)
    }

    pub fn to_sparse(&self) -> SparseHistogram {
        let buckets = self.counts.iter().enumerate().filter(|(_, c)| **c > 0).map(|(i, c)| (i as u32, *c)).collect();
        SparseHistogram { buckets, max: self.max }
    }

    pub fn merge_sparse(&mut self, s: &SparseHistogram) {
        for &(i, c) in &s.buckets {
            self.counts[(i as usize).min(BUCKETS - 1)] += c;
            self.n += c;
        }
        self.max = self.max.max(s.max);
    }

    /// p50 / p99 / max in milliseconds, for reports.
    pub fn summary_ms(&self) -> Summary {
        let ms = |q| self.quantile(q).map(|us| us as f64 / 1000.0);
        Summary { count: self.n, p50_ms: ms(0.50), p99_ms: ms(0.99), max_ms: ms(1.0) }
    }
}

/// Percentiles of a distribution, in milliseconds (`None` when there were no samples).
#[derive(Debug, Clone, Copy, Serialize)]
pub struct Summary {
    pub count: u64,
    pub p50_ms: Option<f64>,
    pub p99_ms: Option<f64>,
    pub max_ms: Option<f64>,
}

/// Formats an optional millisecond figure for a table.
pub fn fmt_ms(v: Option<f64>) -> String {
    match v {
        Some(ms) if ms < 10.0 => format!("{ms:.2} ms"),
        Some(ms) => format!("{ms:.1} ms"),
        None => "-".into(),
    }
}

/// Slowest arrival and number of arrivals of one push.
#[derive(Debug, Clone, Copy, Default, Serialize, Deserialize)]
pub struct PushArrivals {
    pub max_us: u64,
    pub count: u64,
}

/// What the connections of one process record.
#[derive(Debug, Default)]
pub struct Recorder {
    /// Every delivery's latency.
    pub all: Histogram,
    /// Per push (key: send time in µs since the run's epoch), when pushes are unique per run.
    pub per_push: Option<HashMap<u64, PushArrivals>>,
}

impl Recorder {
    pub fn new(track_pushes: bool) -> Recorder {
        Recorder { all: Histogram::default(), per_push: track_pushes.then(HashMap::new) }
    }

    /// Records the arrival of push `key` (sent at `key` µs) at `arrived` µs.
    pub fn record(&mut self, key: u64, arrived: u64) {
        let latency = arrived.saturating_sub(key);
        self.all.record(latency);
        if let Some(map) = &mut self.per_push {
            let e = map.entry(key).or_default();
            e.max_us = e.max_us.max(latency);
            e.count += 1;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn buckets_are_monotonic_and_tight() {
        let mut last = 0;
        for v in (0..2_000_000u64).step_by(7).chain([u64::MAX / 4, u64::MAX]) {
            let b = bucket_of(v);
            assert!(b >= last, "bucket of {v} went backwards");
            assert!(b < BUCKETS, "bucket of {v} out of range");
            last = b;
            let mid = value_of(b);
            let err = mid.abs_diff(v) as f64 / v.max(1) as f64;
            assert!(err <= 0.008, "value {v} → bucket {b} → {mid} ({err})");
        }
    }

    #[test]
    fn quantiles_and_merge() {
        let mut a = Histogram::default();
        for v in 1..=1000 {
            a.record(v * 100);
        }
        let mut b = Histogram::default();
        b.merge_sparse(&a.to_sparse());
        assert_eq!(b.count(), 1000);
        assert_eq!(b.quantile(1.0), Some(100_000));
        let p50 = b.quantile(0.5).unwrap_or(0);
        assert!(p50.abs_diff(50_000) < 500, "{p50}");
        let p99 = b.quantile(0.99).unwrap_or(0);
        assert!(p99.abs_diff(99_000) < 1000, "{p99}");
    }

    #[test]
    fn per_push_keeps_the_slowest() {
        let mut r = Recorder::new(true);
        r.record(1000, 1500);
        r.record(1000, 3000);
        r.record(2000, 2100);
        let map = r.per_push.unwrap_or_default();
        assert_eq!(map[&1000].max_us, 2000);
        assert_eq!(map[&1000].count, 2);
        assert_eq!(map[&2000].count, 1);
    }
}
