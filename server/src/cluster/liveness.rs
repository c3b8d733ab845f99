//! Which nodes are dead, as this node has seen the registry.
//!
//! A node's registry entry expires three heartbeats after its last renewal, so a node that was
//! listed and no longer is has been silent that long: it is dead. Two cases need care:
//! - **Redis trouble.** Only listings that worked count. While Redis is unreachable nobody is
//!   dead (this node knows nothing), and for [`SETTLE`] after it is back nobody is either: every
//!   entry expired during the outage, and a live node renews its own within a heartbeat.
//! - **A node never listed here** (one that died before this node started, or one that has just
//!   started and not yet been listed): dead once it has been asked about for [`SETTLE`] of good
//!   listings without ever appearing.

use std::{
    collections::{HashMap, HashSet},
    sync::Mutex,
    time::{Duration, Instant},
};

/// How long listings must have worked before an absence means death (two heartbeats).
pub const SETTLE: Duration = Duration::from_secs(2);

#[derive(Default)]
struct State {
    /// Since when every listing worked (`None`: the last one failed).
    good_since: Option<Instant>,
    /// The nodes of the last good listing.
    live: HashSet<String>,
    /// Every node ever listed.
    seen: HashSet<String>,
    /// Nodes asked about but never listed, and since when.
    unknown_since: HashMap<String, Instant>,
}

/// The registry as this node has seen it.
#[derive(Default)]
pub struct Liveness {
    state: Mutex<State>,
}

impl Liveness {
    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// A listing of the registry that worked, made at `now`.
    pub fn listed<'a>(&self, nodes: impl IntoIterator<Item = &'a str>, now: Instant) {
        let mut st = self.lock();
        st.good_since.get_or_insert(now);
        st.live = nodes.into_iter().map(str::to_owned).collect();
        let State { live, seen, unknown_since, .. } = &mut *st;
        for n in live.iter() {
            unknown_since.remove(n);
            if !seen.contains(n) {
                seen.insert(n.clone());
            }
        }
    }

    /// A listing that failed: nobody is dead until listings have worked for [`SETTLE`] again.
    pub fn failed(&self) {
        self.lock().good_since = None;
    }

    /// Whether `node` is dead at `now` (see the module doc).
    pub fn is_dead(&self, node: &str, now: Instant) -> bool {
        let mut st = self.lock();
        let Some(good_since) = st.good_since else { return false };
        if st.live.contains(node) || now.saturating_duration_since(good_since) < SETTLE {
            return false;
        }
        if st.seen.contains(node) {
            return true;
        }
        let since = *st.unknown_since.entry(node.to_owned()).or_insert(now);
        now.saturating_duration_since(since) >= SETTLE
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_listed_node_that_drops_out_of_the_registry_is_dead() {
        let l = Liveness::default();
        let t0 = Instant::now();
        let s = |secs: u64| t0 + Duration::from_secs(secs);
        l.listed(["a", "b"], t0);
        l.listed(["a", "b"], s(2));
        assert!(!l.is_dead("b", s(2)));
        // Its entry expired: it renewed nothing for three heartbeats.
        l.listed(["a"], s(3));
        assert!(l.is_dead("b", s(3)));
        assert!(!l.is_dead("a", s(3)));
        // Back (restarted with the same id): alive again.
        l.listed(["a", "b"], s(4));
        assert!(!l.is_dead("b", s(4)));
    }

    #[test]
    fn a_node_never_listed_is_dead_only_after_a_while() {
        let l = Liveness::default();
        let t0 = Instant::now();
        let s = |secs: u64| t0 + Duration::from_secs(secs);
        l.listed(["a"], t0);
        l.listed(["a"], s(2));
        // Just started somewhere, not listed here yet: not dead at the first question.
        assert!(!l.is_dead("new", s(2)));
        l.listed(["a", "new"], s(3));
        assert!(!l.is_dead("new", s(5)));
        // Died before this node ever listed it: dead after the settling time.
        assert!(!l.is_dead("gone", s(5)));
        assert!(!l.is_dead("gone", s(6)));
        assert!(l.is_dead("gone", s(7)));
    }

    #[test]
    fn nobody_is_dead_while_the_registry_cannot_be_read_nor_just_after() {
        let l = Liveness::default();
        let t0 = Instant::now();
        let s = |secs: u64| t0 + Duration::from_secs(secs);
        assert!(!l.is_dead("a", s(100)), "no listing yet");
        l.listed(["a", "b"], t0);
        l.failed();
        assert!(!l.is_dead("b", s(20)), "an outage kills nobody");
        // Redis is back; b has not renewed its expired entry yet.
        l.listed(["a"], s(20));
        assert!(!l.is_dead("b", s(21)), "nobody is dead just after the outage");
        l.listed(["a", "b"], s(21));
        l.listed(["a"], s(23));
        assert!(l.is_dead("b", s(23)), "gone again once listings have settled");
    }
}
