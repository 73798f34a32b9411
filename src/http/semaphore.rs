//! The counting semaphore that bounds how many handlers of one budget run at once (the
//! worker pool, `threads` in `ServerConfig`), apart from the connection threads that wait
//! for it.
//!
//! Invariant: at most `n` permits are out at any time, and a released permit wakes a waiter
//! whenever one waits (no lost wakeup). A slot is taken and given back with one atomic
//! operation when one is free and nobody waits (the common case: no lock, so a thread
//! preempted at the wrong moment holds up nobody); the lock guards only the sleep of a
//! waiter and is never held while a handler runs; a poisoned lock is taken over, since it
//! guards no data.
//!
//! Why no lost wakeup: a waiter counts itself in `waiting` (under the lock) before it
//! tries for a slot, and a release adds its slot before it reads `waiting` (both
//! sequentially consistent). So either the waiter's try sees the slot, or the release sees
//! the waiter and notifies under the lock, which it can take only once the waiter sleeps.

use std::sync::atomic::{AtomicUsize, Ordering::SeqCst};
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

/// A counting semaphore: one budget's bound.
pub(super) struct Semaphore {
    /// Free slots.
    free: AtomicUsize,
    /// Callers asleep (or about to sleep) waiting for a slot.
    waiting: AtomicUsize,
    /// Taken by a waiter around its sleep and by a release that must wake one.
    sleep: Mutex<()>,
    freed: Condvar,
}

/// One slot, given back when dropped. It owns a share of its semaphore, so a request can
/// keep it in a thread-local and give it back early (`server::step_aside`).
pub(super) struct Permit(Arc<Semaphore>);

impl Semaphore {
    pub(super) fn new(n: usize) -> Semaphore {
        Semaphore {
            free: AtomicUsize::new(n),
            waiting: AtomicUsize::new(0),
            sleep: Mutex::new(()),
            freed: Condvar::new(),
        }
    }

    /// Takes a free slot if there is one.
    fn try_take(&self) -> bool {
        self.free.fetch_update(SeqCst, SeqCst, |f| f.checked_sub(1)).is_ok()
    }

    pub(super) fn acquire(self: &Arc<Self>) -> Permit {
        self.acquire_until(None, usize::MAX).expect("no deadline")
    }

    /// A slot if one frees up within `wait`, else `None` (the caller sheds the request);
    /// `None` at once when no slot is free and `queue` callers already wait.
    pub(super) fn acquire_within(self: &Arc<Self>, wait: Duration, queue: usize) -> Option<Permit> {
        self.acquire_until(Some(Instant::now() + wait), queue)
    }

    fn acquire_until(self: &Arc<Self>, deadline: Option<Instant>, queue: usize) -> Option<Permit> {
        if self.try_take() {
            return Some(Permit(Arc::clone(self)));
        }
        if self.waiting.load(SeqCst) >= queue {
            return None;
        }
        let mut guard = self.sleep.lock().unwrap_or_else(|e| e.into_inner());
        self.waiting.fetch_add(1, SeqCst);
        let taken = loop {
            if self.try_take() {
                break true;
            }
            guard = match deadline {
                None => self.freed.wait(guard).unwrap_or_else(|e| e.into_inner()),
                Some(d) => match d.checked_duration_since(Instant::now()).filter(|left| !left.is_zero()) {
                    Some(left) => self.freed.wait_timeout(guard, left).unwrap_or_else(|e| e.into_inner()).0,
                    None => break false,
                },
            };
        };
        self.waiting.fetch_sub(1, SeqCst);
        drop(guard);
        // `then`, not `then_some`: a Permit made and dropped would give back a slot never taken.
        taken.then(|| Permit(Arc::clone(self)))
    }
}

impl Drop for Permit {
    fn drop(&mut self) {
        let sem = &self.0;
        sem.free.fetch_add(1, SeqCst);
        if sem.waiting.load(SeqCst) > 0 {
            // A futex wake is a system call: only when somebody waits.
            let _guard = sem.sleep.lock().unwrap_or_else(|e| e.into_inner());
            sem.freed.notify_one();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn semaphore_admits_at_most_its_slots_and_wakes_every_waiter() {
        use std::sync::atomic::{AtomicUsize, Ordering};
        let sem = Arc::new(Semaphore::new(2));
        let (inside, most) = (AtomicUsize::new(0), AtomicUsize::new(0));
        std::thread::scope(|s| {
            for _ in 0..8 {
                s.spawn(|| {
                    for _ in 0..500 {
                        let _permit = sem.acquire();
                        let now = inside.fetch_add(1, Ordering::SeqCst) + 1;
                        most.fetch_max(now, Ordering::SeqCst);
                        std::thread::yield_now();
                        inside.fetch_sub(1, Ordering::SeqCst);
                    }
                });
            }
        });
        // Every thread finished (no lost wakeup), never more than two inside at once.
        assert_eq!(most.load(Ordering::SeqCst), 2);
        assert_eq!((sem.free.load(SeqCst), sem.waiting.load(SeqCst)), (2, 0));
    }

    #[test]
    fn a_bounded_wait_gives_up_when_no_slot_frees_and_takes_one_that_does() {
        let sem = Arc::new(Semaphore::new(1));
        let held = sem.acquire();
        assert!(sem.acquire_within(Duration::from_millis(20), 1).is_none());
        assert!(sem.acquire_within(Duration::ZERO, 1).is_none());
        std::thread::scope(|s| {
            s.spawn(|| {
                // A second caller finds the queue full (one waits) and is refused at once.
                while sem.waiting.load(SeqCst) == 0 {
                    std::thread::yield_now();
                }
                let refused = Instant::now();
                assert!(sem.acquire_within(Duration::from_secs(30), 1).is_none());
                assert!(refused.elapsed() < Duration::from_secs(30));
                drop(held);
            });
            assert!(sem.acquire_within(Duration::from_secs(30), 1).is_some());
        });
        assert_eq!((sem.free.load(SeqCst), sem.waiting.load(SeqCst)), (1, 0));
    }
}
