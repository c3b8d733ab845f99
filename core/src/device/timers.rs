//! Deadlines by key, ordered: the hub's retries, timeouts, queue TTLs and coalesced flushes.
//!
//! `next()` is O(log n) however many devices and commands wait, so a driver can ask after every
//! input without scanning a tenant's fleet.

use alloc::collections::{BTreeMap, BTreeSet};
use core::cmp::Ordering;

use crate::Millis;

/// A deadline ordered by `f64::total_cmp` (deadlines are finite server times).
#[derive(Debug, Clone, Copy, PartialEq)]
struct At(Millis);

impl Eq for At {}

impl PartialOrd for At {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

impl Ord for At {
    fn cmp(&self, other: &Self) -> Ordering {
        self.0.total_cmp(&other.0)
    }
}

/// At most one deadline per key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Timers<K: Ord + Clone> {
    by_time: BTreeSet<(At, K)>,
    by_key: BTreeMap<K, At>,
}

impl<K: Ord + Clone> Default for Timers<K> {
    fn default() -> Self {
        Timers { by_time: BTreeSet::new(), by_key: BTreeMap::new() }
    }
}

impl<K: Ord + Clone> Timers<K> {
    /// Sets (or moves) the deadline of `key`.
    pub(crate) fn set(&mut self, key: K, at: Millis) {
        self.cancel(&key);
        self.by_time.insert((At(at), key.clone()));
        self.by_key.insert(key, At(at));
    }

    pub(crate) fn cancel(&mut self, key: &K) {
        if let Some(at) = self.by_key.remove(key) {
            self.by_time.remove(&(at, key.clone()));
        }
    }

    pub(crate) fn contains(&self, key: &K) -> bool {
        self.by_key.contains_key(key)
    }

    /// The earliest deadline.
    pub(crate) fn next(&self) -> Option<Millis> {
        self.by_time.first().map(|(at, _)| at.0)
    }

    /// Removes and returns every key due at `now`, earliest first.
    pub(crate) fn take_due(&mut self, now: Millis) -> alloc::vec::Vec<K> {
        let mut due = alloc::vec::Vec::new();
        while let Some((at, _)) = self.by_time.first() {
            if at.0 > now {
                break;
            }
            if let Some((_, key)) = self.by_time.pop_first() {
                self.by_key.remove(&key);
                due.push(key);
            }
        }
        due
    }

    #[cfg(test)]
    pub(crate) fn len(&self) -> usize {
        self.by_key.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_come_due_in_time_order_and_moves_replace() {
        let mut t = Timers::default();
        t.set("b", 20.0);
        t.set("a", 10.0);
        t.set("c", 30.0);
        t.set("a", 25.0);
        assert_eq!(t.next(), Some(20.0));
        assert_eq!(t.take_due(24.0), alloc::vec!["b"]);
        t.cancel(&"c");
        assert_eq!(t.take_due(100.0), alloc::vec!["a"]);
        assert_eq!((t.next(), t.len()), (None, 0));
    }
}
