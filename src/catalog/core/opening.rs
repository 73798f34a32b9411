//! How a primary opens writes once its start compared its catalog with its replicas'
//! ([`super::settle`]): the stages that the writer thread steps through between batches,
//! on its own clock, with no I/O. With etcd every catalog goes through the first two at
//! start (the elected one flushes memcached after its election instead).
//!
//! 1. **Old leases.** A front end's near-cache lease granted by an earlier run of this
//!    catalog ends within one lease of this start, and this run does not know those front
//!    ends: nothing is written for a lease after the catalog settled.
//! 2. **Replicas.** A replica may have kept serving while no primary ran (on a lease that
//!    its refused connections extended, see `lease.rs`): writes wait until every replica
//!    is in sync (which ends such a lease) or the farewell grace from the start has passed.
//! 3. **memcached.** After an import memcached may hold answers of the old catalog, which
//!    no marker of the new one would replace: its history is checked (and it is flushed
//!    when it is another) before the first write. Writes open after the first attempt,
//!    whatever it gives (a memcached that does not answer is asked again later, and does
//!    not hold writes back). One flushed is flushed once more when every read that began
//!    before the replicas held the new catalog has passed its fill window (such a read
//!    may still store an old answer in between).

use std::time::{Duration, Instant};

/// Where a primary's opening stands.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Opening {
    /// Until `until`, one lease after it settled.
    OldLeases { until: Instant },
    /// Until every replica is in sync, or the farewell grace has passed.
    Replicas,
    /// memcached's history to check at `next`; `tried`: an attempt failed already, so
    /// writes are open.
    Cache { tried: bool, next: Instant },
    /// memcached was flushed at `at`: flushed once more when its fill window has passed,
    /// and not before `next` (a second flush that failed is tried again then).
    Flushed { at: Instant, next: Instant },
    /// Writes open, and memcached holds no answer of another history (or there is none).
    Done,
}

/// What the opening does not change: this catalog's settings and its start.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Setting {
    /// The read lease's length (zero: leases off, nothing to wait out).
    pub lease: Duration,
    /// The end of the farewell grace, from the start: writes stop waiting for replicas then.
    pub grace_until: Instant,
    /// It checks memcached's history (static roles with memcached).
    pub cache: bool,
    /// A read's fill window (`cache::FILL_WINDOW`).
    pub fill_window: Duration,
    /// How long a failed attempt at memcached waits before the next (`cache::BACKOFF`).
    pub backoff: Duration,
}

/// What the writer does for the opening now.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Step {
    /// Nothing until `until` (none: nothing more, ever), or until a replica comes in sync
    /// (the writer is woken then).
    Wait(Option<Instant>),
    /// Check memcached's catalog history (`force`: flush it whatever it holds), and report
    /// with [`Opening::adopted`].
    Adopt { force: bool },
}

impl Opening {
    /// The opening of a catalog that settled at `now`.
    pub fn begin(now: Instant, setting: &Setting) -> Opening {
        match setting.lease.is_zero() {
            true => Opening::Replicas,
            false => Opening::OldLeases { until: now + setting.lease },
        }
    }

    /// What to do at `now`, with every replica in sync or not (`in_sync`; true when there
    /// is none).
    pub fn next(&mut self, now: Instant, in_sync: bool, setting: &Setting) -> Step {
        loop {
            *self = match *self {
                Opening::OldLeases { until } if now < until => return Step::Wait(Some(until)),
                Opening::OldLeases { .. } => Opening::Replicas,
                Opening::Replicas => {
                    if !setting.lease.is_zero() && !in_sync && now < setting.grace_until {
                        return Step::Wait(Some(setting.grace_until));
                    }
                    match setting.cache {
                        true => Opening::Cache { tried: false, next: now },
                        false => Opening::Done,
                    }
                }
                Opening::Cache { next, .. } if now < next => return Step::Wait(Some(next)),
                Opening::Cache { .. } => return Step::Adopt { force: false },
                Opening::Flushed { at, next } => {
                    let due = next.max(at + setting.fill_window);
                    return match now < due {
                        true => Step::Wait(Some(due)),
                        false => Step::Adopt { force: true },
                    };
                }
                Opening::Done => return Step::Wait(None),
            }
        }
    }

    /// What the check of memcached's history gave at `now`: whether it flushed memcached
    /// (it held another history, or was told to), or that it failed.
    pub fn adopted(&mut self, now: Instant, flushed: Result<bool, ()>, setting: &Setting) {
        *self = match (*self, flushed) {
            (Opening::Cache { .. }, Ok(false)) => Opening::Done,
            (Opening::Cache { .. }, Ok(true)) => Opening::Flushed { at: now, next: now },
            (Opening::Cache { .. }, Err(())) => Opening::Cache { tried: true, next: now + setting.backoff },
            (Opening::Flushed { .. }, Ok(_)) => Opening::Done,
            (Opening::Flushed { at, .. }, Err(())) => Opening::Flushed { at, next: now + setting.backoff },
            (other, _) => other,
        }
    }

    /// Whether writes are open: past the replicas, and memcached asked once.
    pub fn writes_open(&self) -> bool {
        match self {
            Opening::OldLeases { .. } | Opening::Replicas => false,
            Opening::Cache { tried, .. } => *tried,
            Opening::Flushed { .. } | Opening::Done => true,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const L: Duration = Duration::from_secs(2);

    fn setting(t0: Instant, lease: Duration, cache: bool) -> Setting {
        Setting {
            lease,
            grace_until: t0 + 3 * L,
            cache,
            fill_window: Duration::from_secs(30),
            backoff: Duration::from_secs(3),
        }
    }

    fn at(t0: Instant, ms: u64) -> Instant {
        t0 + Duration::from_millis(ms)
    }

    #[test]
    fn writes_wait_a_lease_after_the_settle_then_for_the_replicas_or_the_grace() {
        let t0 = Instant::now();
        let s = setting(t0, L, false);
        // Settled 1 s after the start.
        let mut o = Opening::begin(at(t0, 1000), &s);
        assert_eq!(o.next(at(t0, 1000), true, &s), Step::Wait(Some(at(t0, 3000))));
        assert!(!o.writes_open());
        // A lease after the settle, a replica out of sync: until it is, or the grace ends.
        assert_eq!(o.next(at(t0, 3000), false, &s), Step::Wait(Some(at(t0, 6000))));
        assert_eq!(o, Opening::Replicas);
        assert!(!o.writes_open());
        assert_eq!(o.next(at(t0, 3500), true, &s), Step::Wait(None));
        assert!(o.writes_open());
        // Never in sync: open at the grace's end.
        let mut o = Opening::begin(at(t0, 1000), &s);
        assert_eq!(o.next(at(t0, 5999), false, &s), Step::Wait(Some(at(t0, 6000))));
        assert_eq!(o.next(at(t0, 6000), false, &s), Step::Wait(None));
        assert!(o.writes_open());
    }

    #[test]
    fn without_leases_no_replica_is_waited_for_and_without_replicas_only_the_lease() {
        let t0 = Instant::now();
        // Leases off: a replica out of sync is not waited for either.
        let s = setting(t0, Duration::ZERO, false);
        let mut o = Opening::begin(t0, &s);
        assert_eq!(o.next(t0, false, &s), Step::Wait(None));
        assert!(o.writes_open());
        // Leases and no replica (all of none in sync): a lease after the settle, then open.
        let s = setting(t0, L, false);
        let mut o = Opening::begin(t0, &s);
        assert_eq!(o.next(at(t0, 1999), true, &s), Step::Wait(Some(at(t0, 2000))));
        assert_eq!(o.next(at(t0, 2000), true, &s), Step::Wait(None));
        assert!(o.writes_open());
    }

    #[test]
    fn memcached_is_asked_once_before_writes_open_and_flushed_again_after_the_fill_window() {
        let t0 = Instant::now();
        let s = setting(t0, L, true);
        let mut o = Opening::begin(t0, &s);
        assert_eq!(o.next(at(t0, 2000), true, &s), Step::Adopt { force: false });
        assert!(!o.writes_open(), "not before memcached was asked");
        // It held the same history: open, nothing more to do.
        let mut same = o;
        same.adopted(at(t0, 2001), Ok(false), &s);
        assert_eq!((same, same.writes_open()), (Opening::Done, true));
        assert_eq!(same.next(at(t0, 2002), true, &s), Step::Wait(None));
        // It did not answer: open all the same, asked again after the backoff.
        let mut failed = o;
        failed.adopted(at(t0, 2001), Err(()), &s);
        assert!(failed.writes_open());
        assert_eq!(failed.next(at(t0, 2002), true, &s), Step::Wait(Some(at(t0, 5001))));
        assert_eq!(failed.next(at(t0, 5001), true, &s), Step::Adopt { force: false });
        failed.adopted(at(t0, 5002), Ok(false), &s);
        assert_eq!(failed, Opening::Done);
        // It held another history and was flushed: open, flushed again 30 s later, and once
        // more after a backoff when that fails.
        o.adopted(at(t0, 2001), Ok(true), &s);
        assert!(o.writes_open());
        assert_eq!(o.next(at(t0, 2002), true, &s), Step::Wait(Some(at(t0, 32001))));
        assert_eq!(o.next(at(t0, 32001), true, &s), Step::Adopt { force: true });
        o.adopted(at(t0, 32002), Err(()), &s);
        assert_eq!(o.next(at(t0, 32003), true, &s), Step::Wait(Some(at(t0, 35002))));
        assert_eq!(o.next(at(t0, 35002), true, &s), Step::Adopt { force: true });
        o.adopted(at(t0, 35003), Ok(true), &s);
        assert_eq!((o, o.next(at(t0, 35004), true, &s)), (Opening::Done, Step::Wait(None)));
    }

    #[test]
    fn a_report_in_another_stage_changes_nothing() {
        let t0 = Instant::now();
        let s = setting(t0, L, true);
        for mut o in [Opening::OldLeases { until: t0 }, Opening::Replicas, Opening::Done] {
            let before = o;
            o.adopted(t0, Ok(true), &s);
            assert_eq!(o, before);
        }
    }
}
