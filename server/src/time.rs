//! The server clock: milliseconds since the Unix epoch, read from a monotonic source.
//!
//! The wall clock is read once at start; after that time only moves forward with
//! `Instant`, so an NTP step on the host never makes a room's position jump backwards.

use std::{
    sync::LazyLock,
    time::{Instant, SystemTime, UNIX_EPOCH},
};

use unisono_core::Millis;

static BASE: LazyLock<(Instant, Millis)> = LazyLock::new(|| {
    let wall = SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_micros() as f64 / 1000.0).unwrap_or(0.0);
    (Instant::now(), wall)
});

/// Current server time in milliseconds (microsecond resolution).
pub fn now_ms() -> Millis {
    let (start, wall) = *BASE;
    wall + start.elapsed().as_micros() as f64 / 1000.0
}

/// The `Instant` at which server time `t` is reached (for timers).
pub fn instant_at(t: Millis) -> Instant {
    let now = now_ms();
    let delta = if t > now { t - now } else { 0.0 };
    Instant::now() + std::time::Duration::from_micros((delta * 1000.0).min(1e12) as u64)
}
