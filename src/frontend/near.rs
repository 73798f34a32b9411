//! The near cache: answers kept in the front end's memory, so that a hit costs no network
//! hop, exactly as consistent as memcached. No I/O: `watch.rs` brings the primary's
//! invalidations and leases, `node.rs` looks up and fills.
//!
//! # Why no read after an acknowledged write is stale
//! - Keys are memcached's (`cache::info_key`, `cache::search_key` and its page keys);
//!   an entry is `(D, answer)`, the answer as it was at write `D` (the catalog's `X-Seq`,
//!   or the `D` of the memcached entry it came from).
//! - Hits are served only while the front end holds a cache lease from the primary, and
//!   only after the keys of the answer that granted it are applied (`apply` does both
//!   under one lock). The primary acknowledges a write only once every front end with a
//!   lease has confirmed its invalidation, or that lease has passed (`catalog/near.rs`).
//! - The fill race (a read at `D` before write `S`, stored after `S`'s invalidation): an
//!   invalidation of a key leaves a *marker*, its number; a fill at `D` is stored only if
//!   `D` is at least the key's marker and the *floor*. Markers are bounded; evicting one
//!   raises the floor to its number. A `reset` (a new session, a new primary, a front end
//!   that fell behind) clears everything and sets the floor to the primary's `through`,
//!   above every write acknowledged before.
//!
//! Memory: entries are bounded by bytes (key, answer and a fixed overhead), least recently
//! used out first; markers by count.

use crate::lease::Held;
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Bytes counted for an entry beyond its key and answer (maps, ordering, bookkeeping).
pub const ENTRY_OVERHEAD: usize = 96;
/// Most markers kept; beyond that the oldest go and raise the floor.
pub const MAX_MARKERS: usize = 65_536;

/// One stored answer.
#[derive(Debug)]
struct Entry {
    /// The write it was read at (or after).
    seq: u64,
    /// What memcached would hold: the JSON, after a first line `L<link>` when it has one
    /// (shared: a hit copies it out of the lock).
    value: Arc<[u8]>,
    /// Its place in the LRU order.
    tick: u64,
}

/// Counters shown in `/metrics`.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Tally {
    pub hits: u64,
    pub misses: u64,
    pub fills: u64,
    /// Fills refused by a marker or the floor (the race the markers close).
    pub refused: u64,
    pub evictions: u64,
    /// Keys invalidated by the primary.
    pub invalidations: u64,
    pub resets: u64,
}

/// The near cache of one front end.
#[derive(Debug)]
pub struct NearCache {
    capacity: usize,
    used: usize,
    entries: HashMap<String, Entry>,
    /// LRU order: tick -> key, oldest first.
    order: BTreeMap<u64, String>,
    tick: u64,
    /// Key -> number of its last invalidation.
    markers: HashMap<String, u64>,
    /// The same markers by number, oldest first (to evict).
    by_number: BTreeSet<(u64, String)>,
    /// No fill read before this is stored.
    floor: u64,
    /// The primary's cache lease: hits are served only within it.
    lease: Held,
    tally: Tally,
}

impl NearCache {
    /// An empty cache of at most `capacity` bytes, with no lease.
    pub fn new(capacity: usize) -> NearCache {
        NearCache {
            capacity,
            used: 0,
            entries: HashMap::new(),
            order: BTreeMap::new(),
            tick: 0,
            markers: HashMap::new(),
            by_number: BTreeSet::new(),
            floor: 0,
            lease: Held::default(),
            tally: Tally::default(),
        }
    }

    fn size(key: &str, value: &[u8]) -> usize {
        key.len() + value.len() + ENTRY_OVERHEAD
    }

    /// Whether hits may be served at `now`.
    pub fn leased(&self, now: Instant) -> bool {
        self.lease.valid(now)
    }

    /// The answer stored under `key`, if any and if the lease holds at `now`. An entry
    /// among the most recently used quarter is not moved (the order is kept for the
    /// evictions at the other end, at a fraction of the cost per hit).
    pub fn get(&mut self, key: &str, now: Instant) -> Option<Arc<[u8]>> {
        if !self.leased(now) {
            return None;
        }
        let quarter = (self.entries.len() / 4) as u64;
        let Some(entry) = self.entries.get_mut(key) else {
            self.tally.misses += 1;
            return None;
        };
        self.tally.hits += 1;
        if self.tick - entry.tick > quarter {
            let at = self.order.remove(&entry.tick).unwrap_or_else(|| key.to_string());
            self.tick += 1;
            entry.tick = self.tick;
            self.order.insert(self.tick, at);
        }
        Some(Arc::clone(&entry.value))
    }

    /// Stores `value`, read at write `seq`, under `key` unless an invalidation since (a
    /// marker or the floor) says it may be older than an acknowledged write. Returns
    /// whether it was stored.
    pub fn fill(&mut self, key: &str, seq: u64, value: &[u8]) -> bool {
        if seq < self.floor || self.markers.get(key).is_some_and(|&m| seq < m) {
            self.tally.refused += 1;
            return false;
        }
        let size = Self::size(key, value);
        if size > self.capacity {
            return false;
        }
        if let Some(old) = self.entries.get(key) {
            if old.seq > seq {
                return false;
            }
            self.remove(key);
        }
        while self.used + size > self.capacity {
            let Some((_, oldest)) = self.order.pop_first() else { break };
            if let Some(e) = self.entries.remove(&oldest) {
                self.used -= Self::size(&oldest, &e.value);
                self.tally.evictions += 1;
            }
        }
        self.tick += 1;
        self.order.insert(self.tick, key.to_string());
        self.entries.insert(key.to_string(), Entry { seq, value: value.into(), tick: self.tick });
        self.used += size;
        self.tally.fills += 1;
        true
    }

    fn remove(&mut self, key: &str) {
        if let Some(e) = self.entries.remove(key) {
            self.order.remove(&e.tick);
            self.used -= Self::size(key, &e.value);
        }
    }

    /// The keys invalidated up to `number`: their entries go, their markers rise.
    pub fn invalidate(&mut self, keys: &[String], number: u64) {
        for key in keys {
            self.remove(key);
            self.tally.invalidations += 1;
            if number <= self.floor {
                continue;
            }
            let marker = self.markers.entry(key.clone()).or_insert(0);
            let old = std::mem::replace(marker, number.max(*marker));
            if old != *marker {
                self.by_number.remove(&(old, key.clone()));
                self.by_number.insert((*marker, key.clone()));
            }
        }
        while self.markers.len() > MAX_MARKERS {
            let Some((n, key)) = self.by_number.pop_first() else { break };
            self.markers.remove(&key);
            self.floor = self.floor.max(n);
        }
    }

    /// Forgets everything; nothing read before `through` is stored from now on.
    pub fn reset(&mut self, through: u64) {
        self.entries.clear();
        self.order.clear();
        self.markers.clear();
        self.by_number.clear();
        self.used = 0;
        self.floor = through;
        self.tally.resets += 1;
    }

    /// An answer of the primary: applies it (a reset, or the keys invalidated up to
    /// `through`), then takes the lease of `length` it grants to the watch sent at `sent`.
    pub fn apply(&mut self, reset: bool, through: u64, keys: &[String], sent: Instant, length: Duration) {
        if reset {
            self.reset(through);
        } else {
            self.invalidate(keys, through);
        }
        self.lease.granted(sent, length);
    }

    /// Drops the lease at once (the primary changed: a new one grants anew).
    pub fn drop_lease(&mut self) {
        self.lease.end();
    }

    /// The counters so far.
    pub fn tally(&self) -> Tally {
        self.tally
    }

    /// Bytes counted and entries held.
    pub fn usage(&self) -> (usize, usize) {
        (self.used, self.entries.len())
    }

    /// No fill read before this is stored.
    pub fn floor(&self) -> u64 {
        self.floor
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn leased(capacity: usize) -> (NearCache, Instant) {
        let now = Instant::now();
        let mut c = NearCache::new(capacity);
        c.apply(true, 0, &[], now, Duration::from_secs(60));
        (c, now)
    }

    fn k(s: &str) -> Vec<String> {
        vec![s.to_string()]
    }

    #[test]
    fn hits_only_with_a_lease() {
        let now = Instant::now();
        let mut c = NearCache::new(10_000);
        assert!(c.fill("a", 1, b"x"));
        assert_eq!(c.get("a", now), None, "no lease yet");
        c.apply(false, 0, &[], now, Duration::from_millis(1000));
        assert_eq!(c.get("a", now), Some(Arc::from(&b"x"[..])));
        assert_eq!(c.get("a", now + Duration::from_millis(900)), None, "the lease ended");
        assert_eq!(c.get("b", now), None);
        assert_eq!((c.tally().hits, c.tally().misses), (1, 1));
        c.drop_lease();
        assert!(!c.leased(now));
    }

    /// The fill race, as a table: (fill seq, stored?) after key `a` was invalidated at 5.
    #[test]
    fn markers_refuse_fills_read_before_the_invalidation() {
        let (mut c, now) = leased(10_000);
        c.invalidate(&k("a"), 5);
        for (seq, stored) in [(4, false), (5, true), (3, false), (9, true)] {
            assert_eq!(c.fill("a", seq, b"v"), stored, "fill at {seq}");
        }
        assert_eq!(c.tally().refused, 2);
        // An older fill never replaces a newer entry.
        assert!(!c.fill("a", 6, b"old"));
        assert_eq!(c.get("a", now), Some(Arc::from(&b"v"[..])));
        // A marker only rises.
        c.invalidate(&k("a"), 12);
        c.invalidate(&k("a"), 7);
        assert!(!c.fill("a", 11, b"v"));
        assert!(c.fill("b", 0, b"v"), "another key is not held back");
    }

    #[test]
    fn a_reset_clears_everything_and_raises_the_floor() {
        let (mut c, now) = leased(10_000);
        c.fill("a", 3, b"v");
        c.invalidate(&k("b"), 8);
        c.apply(true, 20, &[], now, Duration::from_secs(1));
        assert_eq!(c.get("a", now), None);
        assert_eq!((c.usage(), c.floor(), c.tally().resets), ((0, 0), 20, 2));
        assert!(!c.fill("a", 19, b"v"));
        assert!(c.fill("b", 20, b"v"), "the marker of b went with the reset; the floor holds");
    }

    #[test]
    fn least_recently_used_out_first_within_the_bytes() {
        let each = NearCache::size("a", b"0123456789");
        let (mut c, now) = leased(3 * each);
        for key in ["a", "b", "c"] {
            assert!(c.fill(key, 1, b"0123456789"));
        }
        assert_eq!(c.usage(), (3 * each, 3));
        c.get("a", now);
        assert!(c.fill("d", 1, b"0123456789"));
        assert_eq!(c.get("b", now), None, "b was the least recently used");
        assert!(c.get("a", now).is_some() && c.get("c", now).is_some() && c.get("d", now).is_some());
        assert_eq!(c.tally().evictions, 1);
        assert!(!c.fill("e", 1, &[0; 1000]), "larger than the whole cache: not stored");
        assert_eq!(c.usage(), (3 * each, 3));
        // A replaced entry is counted once.
        assert!(c.fill("a", 2, b"0123456789"));
        assert_eq!(c.usage(), (3 * each, 3));
    }

    #[test]
    fn evicting_a_marker_raises_the_floor_to_its_number() {
        let (mut c, _) = leased(10_000);
        for i in 0..MAX_MARKERS as u64 {
            c.invalidate(&[format!("k{i}")], 10 + i);
        }
        assert_eq!(c.floor(), 0);
        c.invalidate(&k("last"), 10 + MAX_MARKERS as u64);
        assert_eq!(c.floor(), 10, "the oldest marker (k0 at 10) went");
        assert!(!c.fill("k0", 9, b"v"));
        assert!(c.fill("k0", 10, b"v"));
        assert!(!c.fill("k1", 10, b"v"), "k1's marker (11) is still there");
    }
}
