//! The primary's side of the front ends' near caches: who holds a cache lease, which
//! invalidations each has taken, and the wait of a write for them.
//!
//! # The protocol
//! - A front end watches the primary with `POST /internal/near` `{"session", "seen"}`:
//!   `session` is drawn at random when it starts (or turns to another primary), `seen` the
//!   number up to which it has applied every invalidation. The answer
//!   `{"epoch", "lease_ms", "through", "keys", "reset"}` carries the keys invalidated after
//!   `seen` up to `through` (or `reset`: forget everything, fill nothing read before
//!   `through`), and is a lease grant.
//! - The primary answers at once when it has invalidations after `seen` for the session, or
//!   when it does not know the session (`reset`); otherwise it holds the request up to
//!   `L/4` and answers when a write's invalidation arrives or at the timeout.
//! - Leases are the store's one lease ([`crate::lease`]), as the replicas' read leases: the
//!   primary records a lease as ending at `r + L`, `r` the moment it *received* the request,
//!   and grants only while it may grant replica leases; the front end counts from the moment
//!   it *sent* it, `s + 0.9 L`, and serves near hits only within it and only after applying
//!   the answer's keys. As `s <= r`, its lease always ends before the primary's view of it.
//! - An invalidation's number is the write seq of its batch's last write. The primary keeps
//!   the last [`RING`] batches (number, keys); a session whose `seen` fell off them is
//!   answered `reset`.
//! - A batch is readable (and acknowledged) only after [`Near::publish`] (while it is
//!   pushed: the held watches are woken) and [`Near::confirmed`]: every session whose lease
//!   is valid (primary's view) has confirmed `seen >= number` (its next watch) or its lease
//!   has passed; a session that lapses so is dropped, and its next watch gets `reset`.
//! - A switchover revokes the leases ([`Near::revoke`]): held watches are answered with
//!   none, and a watch that skipped the leadership check while revoking never carries one.
//!
//! So after write `S` is acknowledged, every front end either has applied its keys (before
//! its next watch) or holds no lease; the fill race (a read before the write stored after
//! the invalidation) is closed on the front end by per-key markers (`frontend/near.rs`).
//!
//! [`Table`] is the decisions with explicit clocks and no I/O; [`Near`] adds the lock and
//! the condition variable. Lock: `table` is held to decide, never across I/O; writers and
//! watchers wait on `changed` with it released.
//!
//! - **A static primary that restarts cannot know its earlier run's leases**, and a front
//!   end cut off from it keeps serving on one (its watch has not failed yet) while the new
//!   run would show a batch the earlier one logged and never acknowledged. So a static
//!   primary keeps a [`Record`] in its data directory, made durable before the first lease
//!   of each run is granted; one that finds it at start opens reads one lease after its
//!   start, not as soon as its replicas are in sync (`CatalogNode::reads_open`): every
//!   lease of an earlier run was granted before that run died, so it has ended by then.
//!   The data simulator's scripted schedule found the stale read this closes. A store whose
//!   primary never had a front end pays nothing; the record is never removed (a run that
//!   stops gracefully may still end in a batch it gave up on).
//!
//! The route itself (`POST /internal/near`, with the leadership check) is
//! `CatalogNode::near_watch` in `node.rs`: this file knows no node.

use crate::lease::Granted;
use std::collections::{BTreeMap, VecDeque};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Condvar, Mutex};
use std::time::{Duration, Instant};

/// The file of a static primary's [`Record`], in its data directory.
pub const RECORD_FILE: &str = "near-leases";

/// A static primary's record that a run of it granted near-cache leases (see the module
/// doc): a file whose presence is the whole record.
#[derive(Debug)]
pub struct Record {
    path: PathBuf,
    /// Found at start (or not to be known: [`Near::record_lost`]): a run before this one
    /// may have granted leases still held.
    found: AtomicBool,
    /// Made durable by this run.
    written: AtomicBool,
}

impl Record {
    /// The record at `path`, as this start finds it.
    pub fn open(path: PathBuf) -> Record {
        let found = path.exists();
        Record { path, found: AtomicBool::new(found), written: AtomicBool::new(found) }
    }

    /// Makes the record durable, once per run, before a lease is granted; an error refuses
    /// the lease (a lease the next run could not know of would be worse than none).
    fn make_durable(&self) -> std::io::Result<()> {
        if self.written.load(Ordering::SeqCst) {
            return Ok(());
        }
        let text = b"a run of this catalog granted front ends near-cache leases: \
            after a restart, its reads open one lease after it starts\n";
        crate::storage::replace_file(&self.path, text)?;
        self.written.store(true, Ordering::SeqCst);
        Ok(())
    }
}

/// Batches of invalidations kept for watchers that are behind.
pub const RING: usize = 4096;
/// Most keys kept in the ring over all its batches.
const RING_KEYS: usize = 200_000;
/// Most sessions known at once (front ends, each start a new one); more are refused.
pub const MAX_SESSIONS: usize = 4096;
/// A session whose lease ended this many leases ago is forgotten.
const FORGET_AFTER_LEASES: u32 = 10;

/// One front end's session, as the primary sees it.
#[derive(Debug, Clone)]
struct Session {
    /// Every invalidation up to here is applied (confirmed by its last watch).
    seen: u64,
    /// The highest `through` answered to it: a `seen` above is not ours.
    given: u64,
    /// The cache lease it may hold, as granted here.
    lease: Granted,
    /// Told that its lease is revoked (a switchover pauses this primary).
    revoked: bool,
}

/// An answer to a watch.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reply {
    /// The invalidations up to here are in `keys` (or, with `reset`, nothing older counts).
    pub through: u64,
    /// The keys invalidated after the `seen` asked for, up to `through`.
    pub keys: Vec<String>,
    /// Forget every entry and marker; store nothing read before `through`.
    pub reset: bool,
    /// No lease: the one held ends now (a switchover pauses this primary).
    pub revoke: bool,
}

/// The session table and the ring: the decisions, no I/O, explicit clocks.
#[derive(Debug)]
pub struct Table {
    lease: Duration,
    ring: VecDeque<(u64, Vec<String>)>,
    ring_keys: usize,
    /// The highest number that left the ring: a `seen` below it cannot be brought up to date.
    dropped: u64,
    /// The highest number published.
    newest: u64,
    sessions: BTreeMap<String, Session>,
    /// A switchover pauses this primary: leases are revoked, none granted.
    revoking: bool,
}

impl Table {
    /// No session, an empty ring; leases of `lease`.
    pub fn new(lease: Duration) -> Table {
        Table {
            lease,
            ring: VecDeque::new(),
            ring_keys: 0,
            dropped: 0,
            newest: 0,
            sessions: BTreeMap::new(),
            revoking: false,
        }
    }

    /// A watch received at `now` from `session`, which applied everything up to `seen`;
    /// `current` is the catalog's seq now. Renews the lease and records the confirmation.
    /// `Some`: answer now; `None`: hold it ([`Table::pending`], [`Table::idle`]).
    pub fn watch(&mut self, session: &str, seen: u64, current: u64, now: Instant) -> Result<Option<Reply>, String> {
        let forget = self.lease * FORGET_AFTER_LEASES;
        self.sessions.retain(|_, s| s.lease.until().is_some_and(|u| u + forget > now));
        let known = self.sessions.get(session).is_some_and(|s| seen >= self.dropped && seen <= s.given);
        if !known {
            if !self.sessions.contains_key(session) && self.sessions.len() >= MAX_SESSIONS {
                return Err(format!("{MAX_SESSIONS} front-end sessions are open; no more"));
            }
            // Every write acknowledged so far is at or below `through`.
            let through = self.newest.max(current);
            // While revoking, it is told at once that it holds no lease.
            let revoked = self.revoking;
            let mut lease = Granted::default();
            lease.grant(now, if revoked { Duration::ZERO } else { self.lease });
            self.sessions.insert(session.to_string(), Session { seen: through, given: through, lease, revoked });
            return Ok(Some(Reply { through, keys: Vec::new(), reset: true, revoke: revoked }));
        }
        let revoking = self.revoking;
        let s = self.sessions.get_mut(session).expect("known");
        s.seen = s.seen.max(seen);
        if !revoking {
            s.lease.grant(now, self.lease);
        } else if s.revoked {
            // Told before it sent this: it holds no lease now.
            s.lease.cut(now);
        } else {
            s.revoked = true;
            return Ok(Some(Reply { through: seen, keys: Vec::new(), reset: false, revoke: true }));
        }
        Ok(self.pending(session, seen))
    }

    /// The keys invalidated after `seen`, if any, for a held watch of `session`.
    pub fn pending(&mut self, session: &str, seen: u64) -> Option<Reply> {
        if self.newest <= seen {
            return None;
        }
        let mut keys: Vec<String> =
            self.ring.iter().filter(|(n, _)| *n > seen).flat_map(|(_, k)| k.iter().cloned()).collect();
        keys.sort_unstable();
        keys.dedup();
        let through = self.newest;
        if let Some(s) = self.sessions.get_mut(session) {
            s.given = s.given.max(through);
        }
        Some(Reply { through, keys, reset: false, revoke: false })
    }

    /// The answer to a held watch that saw no invalidation in time.
    pub fn idle(&self, seen: u64) -> Reply {
        Reply { through: seen, keys: Vec::new(), reset: false, revoke: self.revoking }
    }

    /// A held watch while leases are being revoked: told at once (then its next watch
    /// confirms it holds no lease).
    pub fn revoked(&mut self, session: &str, seen: u64) -> Option<Reply> {
        let s = self.sessions.get_mut(session).filter(|s| self.revoking && !s.revoked)?;
        s.revoked = true;
        Some(Reply { through: seen, keys: Vec::new(), reset: false, revoke: true })
    }

    /// Starts (or ends) revoking every lease: a switchover pauses this primary, and the
    /// target must not wait out leases that the front ends can give up at once.
    pub fn set_revoking(&mut self, on: bool) {
        self.revoking = on;
        for s in self.sessions.values_mut() {
            s.revoked = false;
        }
    }

    /// While revoking: `None` once every session has confirmed it holds no lease or its
    /// lease has passed; else the first moment one of them ends.
    pub fn unrevoked(&self, now: Instant) -> Option<Instant> {
        self.sessions.values().filter(|s| s.lease.live(now)).filter_map(|s| s.lease.until()).min()
    }

    /// A batch of writes whose last is `number` invalidates `keys`.
    pub fn publish(&mut self, number: u64, keys: &[String]) {
        self.newest = self.newest.max(number);
        self.ring.push_back((number, keys.to_vec()));
        self.ring_keys += keys.len();
        while self.ring.len() > RING || (self.ring_keys > RING_KEYS && self.ring.len() > 1) {
            let (n, k) = self.ring.pop_front().expect("not empty");
            self.ring_keys -= k.len();
            self.dropped = self.dropped.max(n);
        }
    }

    /// The write `number` may be acknowledged at `now` when this is `None`: every session
    /// with a valid lease has confirmed it. Sessions whose lease passed without confirming
    /// are dropped. `Some(t)`: wait until `t` at most (the first of their leases to end).
    pub fn outstanding(&mut self, number: u64, now: Instant) -> Option<Instant> {
        self.sessions.retain(|_, s| s.seen >= number || s.lease.live(now));
        self.sessions.values().filter(|s| s.seen < number).filter_map(|s| s.lease.until()).min()
    }

    /// When the last lease granted to a front end ends (primary's view), if one is held.
    pub fn latest_lease_end(&self) -> Option<Instant> {
        self.sessions.values().filter_map(|s| s.lease.until()).max()
    }

    /// Sessions known, and of them holding a lease at `now`.
    pub fn counts(&self, now: Instant) -> (usize, usize) {
        (self.sessions.len(), self.sessions.values().filter(|s| s.lease.live(now)).count())
    }
}

/// The table behind its lock, with the waits: one per catalog, used while it is primary.
pub struct Near {
    table: Mutex<Table>,
    /// Signalled by every publish and every watch (a confirmation).
    changed: Condvar,
    lease: Duration,
    /// A static primary's record of its runs' leases.
    record: Option<Record>,
}

impl Near {
    /// No session yet; leases of `lease` (zero: front ends get no lease).
    pub fn new(lease: Duration) -> Near {
        Near { table: Mutex::new(Table::new(lease)), changed: Condvar::new(), lease, record: None }
    }

    /// As [`Near::new`], for a static primary that keeps `record`.
    pub fn recording(lease: Duration, record: Record) -> Near {
        Near { record: Some(record), ..Near::new(lease) }
    }

    /// Before a watch is answered with a lease: the record is durable.
    pub fn record_grant(&self) -> std::io::Result<()> {
        self.record.as_ref().map_or(Ok(()), Record::make_durable)
    }

    /// Whether an earlier run may have granted leases that are still held.
    pub fn held_before_start(&self) -> bool {
        self.record.as_ref().is_some_and(|r| r.found.load(Ordering::SeqCst))
    }

    /// The record went with a disk that came back empty, older or damaged (the primary
    /// took a replica's catalog at start): an earlier run may have granted leases, and
    /// this run counts as if it had.
    pub fn record_lost(&self) {
        if let Some(record) = &self.record {
            record.found.store(true, Ordering::SeqCst);
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Table> {
        self.table.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Publishes the invalidation of `keys` by the batch whose last write is `last`: the
    /// front ends' held watches are answered with it at once. [`Near::confirmed`] waits.
    pub fn publish(&self, keys: &[String], last: u64) {
        if !keys.is_empty() {
            self.lock().publish(last, keys);
            self.changed.notify_all();
        }
    }

    /// Waits until every front end holding a lease has applied the invalidations up to
    /// `last`, or its lease has passed (it is then dropped, and reset when it comes back).
    pub fn confirmed(&self, last: u64) {
        let mut table = self.lock();
        while let Some(until) = table.outstanding(last, Instant::now()) {
            let wait = until.saturating_duration_since(Instant::now()).max(Duration::from_millis(1));
            table = self.changed.wait_timeout(table, wait).unwrap_or_else(|e| e.into_inner()).0;
        }
    }

    /// A watch received now: answered at once or after up to `L/4` (see the module's
    /// protocol). `current` is the catalog's seq now.
    pub fn watch(&self, session: &str, seen: u64, current: u64) -> Result<Reply, String> {
        let now = Instant::now();
        let deadline = now + self.lease / 4;
        let mut table = self.lock();
        let first = table.watch(session, seen, current, now);
        // A confirmation may end a write's wait.
        self.changed.notify_all();
        if let Some(reply) = first? {
            return Ok(reply);
        }
        loop {
            if let Some(reply) = table.revoked(session, seen).or_else(|| table.pending(session, seen)) {
                return Ok(reply);
            }
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Ok(table.idle(seen));
            }
            table = self.changed.wait_timeout(table, left).unwrap_or_else(|e| e.into_inner()).0;
        }
    }

    /// When the last lease granted to a front end ends (primary's view), if one is held.
    pub fn latest_lease_end(&self) -> Option<Instant> {
        self.lock().latest_lease_end()
    }

    /// A switchover pauses this primary: revokes every front end's lease (their watches
    /// are answered at once with no lease) and waits until each has confirmed with its next
    /// watch or its lease has passed; returns when the last lease still held ends.
    pub fn revoke(&self) -> Option<Instant> {
        let mut table = self.lock();
        table.set_revoking(true);
        self.changed.notify_all();
        while let Some(until) = table.unrevoked(Instant::now()) {
            let wait = until.saturating_duration_since(Instant::now()).max(Duration::from_millis(1));
            table = self.changed.wait_timeout(table, wait).unwrap_or_else(|e| e.into_inner()).0;
        }
        table.latest_lease_end()
    }

    /// The switchover ended (either way): leases are granted again where this is primary.
    pub fn resume(&self) {
        self.lock().set_revoking(false);
        self.changed.notify_all();
    }

    /// Whether leases are being revoked now.
    pub fn revoking(&self) -> bool {
        self.lock().revoking
    }

    /// Sessions known, and of them holding a lease now.
    pub fn counts(&self) -> (usize, usize) {
        self.lock().counts(Instant::now())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const L: Duration = Duration::from_millis(1000);

    fn ms(t0: Instant, n: u64) -> Instant {
        t0 + Duration::from_millis(n)
    }

    fn keys(k: &[&str]) -> Vec<String> {
        k.iter().map(|s| s.to_string()).collect()
    }

    /// The near-lease record: a write that fails refuses the grant (and is tried again at
    /// the next), the first that succeeds makes the file, later grants write nothing, and
    /// the next start finds it; a primary with no record grants with no file.
    #[test]
    fn a_lease_is_granted_only_once_its_record_is_durable() {
        let dir = std::env::temp_dir().join(format!("bazar-near-record-{}", crate::ids::random_hex().unwrap()));
        let path = dir.join(RECORD_FILE);
        // The directory is missing: the record cannot be written (as root, a directory
        // without write permission would not stop it).
        let near = Near::recording(L, Record::open(path.clone()));
        assert!(!near.held_before_start(), "nothing found at the first start");
        assert!(near.record_grant().is_err(), "a record that cannot be written refuses the lease");
        assert!(!path.exists());
        std::fs::create_dir_all(&dir).unwrap();
        near.record_grant().expect("written once the directory takes it");
        assert!(path.exists());
        std::fs::remove_file(&path).unwrap();
        near.record_grant().expect("written once per run: not again");
        assert!(!path.exists(), "a run writes its record once");
        near.record_grant().unwrap();
        std::fs::write(&path, b"x").unwrap();
        let restarted = Near::recording(L, Record::open(path.clone()));
        assert!(restarted.held_before_start(), "the next start finds the record");
        restarted.record_grant().unwrap();
        assert_eq!(std::fs::read(&path).unwrap(), b"x", "found at start: not written again");
        assert!(Near::new(L).record_grant().is_ok() && !Near::new(L).held_before_start());
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn an_unknown_session_is_reset_to_what_every_acknowledged_write_is_below() {
        let t0 = Instant::now();
        let mut t = Table::new(L);
        t.publish(5, &keys(&["a"]));
        let r = t.watch("s", 0, 3, t0).unwrap().unwrap();
        assert_eq!(r, Reply { through: 5, keys: vec![], reset: true, revoke: false });
        // The catalog's seq may be ahead of the last publish (applied, not yet invalidated).
        let r = t.watch("s2", 0, 9, t0).unwrap().unwrap();
        assert_eq!((r.through, r.reset), (9, true));
        // Up to date: held, then idle.
        assert_eq!(t.watch("s", 5, 9, ms(t0, 10)).unwrap(), None);
        assert_eq!(t.idle(5), Reply { through: 5, keys: vec![], reset: false, revoke: false });
    }

    #[test]
    fn a_session_gets_the_keys_after_its_seen_and_confirms_with_its_next_watch() {
        let t0 = Instant::now();
        let mut t = Table::new(L);
        t.watch("s", 0, 0, t0).unwrap();
        t.publish(3, &keys(&["b", "a"]));
        t.publish(4, &keys(&["a", "c"]));
        assert_eq!(t.outstanding(4, ms(t0, 1)), Some(ms(t0, 1000)), "the write waits for the session");
        let r = t.pending("s", 0).unwrap();
        assert_eq!(r, Reply { through: 4, keys: keys(&["a", "b", "c"]), reset: false, revoke: false });
        // Its next watch confirms.
        assert_eq!(t.watch("s", 4, 4, ms(t0, 2)).unwrap(), None);
        assert_eq!(t.outstanding(4, ms(t0, 2)), None);
        // A watch that confirms only part gets the rest at once.
        t.publish(7, &keys(&["d"]));
        assert_eq!(t.watch("s", 4, 7, ms(t0, 3)).unwrap().unwrap().keys, keys(&["d"]));
    }

    #[test]
    fn a_session_that_lapses_is_dropped_and_reset() {
        let t0 = Instant::now();
        let mut t = Table::new(L);
        t.watch("s", 0, 0, t0).unwrap();
        t.publish(1, &keys(&["a"]));
        assert_eq!(t.outstanding(1, ms(t0, 999)), Some(ms(t0, 1000)));
        assert_eq!(t.outstanding(1, ms(t0, 1000)), None, "its lease passed: the write goes on");
        assert_eq!(t.latest_lease_end(), None, "dropped");
        let r = t.watch("s", 0, 1, ms(t0, 1200)).unwrap().unwrap();
        assert_eq!((r.through, r.reset), (1, true), "its next watch is reset");
        // A session whose lease passed before the write is not waited for (and is dropped).
        let mut t = Table::new(L);
        t.watch("s", 0, 0, t0).unwrap();
        t.publish(2, &keys(&["a"]));
        assert!(t.pending("s", 0).is_some());
        t.watch("s", 2, 2, t0).unwrap();
        t.publish(3, &keys(&["a"]));
        assert_eq!(t.outstanding(3, ms(t0, 5000)), None);
        assert_eq!(t.counts(ms(t0, 5000)), (0, 0));
    }

    #[test]
    fn a_seen_off_the_ring_or_never_given_is_reset() {
        let t0 = Instant::now();
        let mut t = Table::new(L);
        t.watch("s", 0, 0, t0).unwrap();
        assert!(t.watch("s", 99, 0, t0).unwrap().unwrap().reset, "a seen never answered");
        for n in 1..=(RING as u64 + 1) {
            t.publish(n, &keys(&["k"]));
        }
        assert!(t.watch("s", 0, 0, t0).unwrap().unwrap().reset, "write 1 left the ring");
        let through = RING as u64 + 1;
        assert_eq!(t.watch("s", through, through, t0).unwrap(), None);
    }

    #[test]
    fn lease_ends_and_limits() {
        let t0 = Instant::now();
        let mut t = Table::new(L);
        assert_eq!(t.latest_lease_end(), None);
        t.watch("a", 0, 0, t0).unwrap();
        t.watch("b", 0, 0, ms(t0, 300)).unwrap();
        assert_eq!(t.latest_lease_end(), Some(ms(t0, 1300)));
        assert_eq!(t.counts(ms(t0, 1100)), (2, 1));
        // Long lapsed sessions are forgotten.
        t.watch("c", 0, 0, ms(t0, 20_000)).unwrap();
        assert_eq!(t.counts(ms(t0, 20_000)), (1, 1));
        for i in 1..MAX_SESSIONS {
            t.watch(&i.to_string(), 0, 0, ms(t0, 20_000)).unwrap();
        }
        assert!(t.watch("one too many", 0, 0, ms(t0, 20_000)).is_err());
    }

    #[test]
    fn a_write_waits_for_a_held_watch_to_confirm() {
        let near = std::sync::Arc::new(Near::new(Duration::from_secs(4)));
        let r = near.watch("s", 0, 0).unwrap();
        assert!(r.reset);
        let watcher = std::sync::Arc::clone(&near);
        let front_end = std::thread::spawn(move || {
            let r = watcher.watch("s", 0, 0).unwrap();
            // Applies, then confirms with its next watch (held, ends idle).
            let next = watcher.watch("s", r.through, r.through).unwrap();
            (r, next)
        });
        std::thread::sleep(Duration::from_millis(20));
        near.publish(&keys(&["x"]), 1);
        near.confirmed(1);
        let (r, _) = front_end.join().unwrap();
        assert_eq!(r, Reply { through: 1, keys: keys(&["x"]), reset: false, revoke: false });
        assert_eq!(near.counts().1, 1, "still leased: it confirmed, not lapsed");
    }

    #[test]
    fn a_switchover_revokes_every_lease_and_counts_only_those_not_confirmed() {
        let t0 = Instant::now();
        let mut t = Table::new(L);
        t.watch("a", 0, 0, t0).unwrap();
        t.watch("b", 0, 0, t0).unwrap();
        assert_eq!(t.watch("a", 0, 0, ms(t0, 100)).unwrap(), None, "held");
        t.set_revoking(true);
        // a's held watch is answered at once, with no lease; b (frozen) is not heard from.
        assert_eq!(t.revoked("a", 0).map(|r| r.revoke), Some(true));
        assert_eq!(t.revoked("a", 0), None, "told once");
        assert_eq!(t.unrevoked(ms(t0, 120)), Some(ms(t0, 1000)), "both leases live");
        // a's next watch confirms it dropped its lease; it gets none.
        assert_eq!(t.watch("a", 0, 0, ms(t0, 130)).unwrap(), None);
        assert!(t.idle(0).revoke);
        assert_eq!(t.unrevoked(ms(t0, 131)), Some(ms(t0, 1000)), "b's lease is waited out");
        assert_eq!(t.latest_lease_end(), Some(ms(t0, 1000)));
        assert_eq!(t.unrevoked(ms(t0, 1000)), None);
        // A front end new to it meanwhile gets a reset and no lease.
        let r = t.watch("c", 0, 0, ms(t0, 140)).unwrap().unwrap();
        assert!(r.reset && r.revoke);
        // The switchover failed: leases are granted again.
        t.set_revoking(false);
        t.watch("a", 0, 0, ms(t0, 200)).unwrap();
        assert_eq!(t.latest_lease_end(), Some(ms(t0, 1200)));
        assert!(!t.idle(0).revoke);
    }
}
