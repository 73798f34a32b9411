//! The counting semaphore that bounds how many handlers run at once (the worker pool,
//! `threads` in `ServerConfig`), apart from the connection threads that wait for it.
//!
//! Invariant: at most `n` permits are out at any time, and a released permit wakes a waiter
//! whenever one waits (no lost wakeup). The lock guards only two counters and is never held
//! while a handler runs; a poisoned lock is taken over, since the counters stay consistent.

use std::sync::{Condvar, Mutex};
use std::time::{Duration, Instant};

/// A counting semaphore: the worker pool's bound.
pub(super) struct Semaphore {
    state: Mutex<Slots>,
    freed: Condvar,
}

/// Free slots, and handlers waiting for one (a release wakes one only when one waits:
/// a futex wake is a system call, and most releases have nobody to wake).
struct Slots {
    free: usize,
    waiting: usize,
}

/// One slot, given back when dropped.
pub(super) struct Permit<'a>(&'a Semaphore);

impl Semaphore {
    pub(super) fn new(n: usize) -> Semaphore {
        Semaphore { state: Mutex::new(Slots { free: n, waiting: 0 }), freed: Condvar::new() }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Slots> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub(super) fn acquire(&self) -> Permit<'_> {
        let mut slots = self.lock();
        while slots.free == 0 {
            slots.waiting += 1;
            slots = self.freed.wait(slots).unwrap_or_else(|e| e.into_inner());
            slots.waiting -= 1;
        }
        slots.free -= 1;
        Permit(self)
    }

    /// A slot if one frees up within `wait`, else `None` (the caller sheds the request);
    /// `None` at once when no slot is free and `queue` callers already wait.
    pub(super) fn acquire_within(&self, wait: Duration, queue: usize) -> Option<Permit<'_>> {
        let deadline = Instant::now() + wait;
        let mut slots = self.lock();
        if slots.free == 0 && slots.waiting >= queue {
            return None;
        }
        while slots.free == 0 {
            let left = deadline.checked_duration_since(Instant::now()).filter(|d| !d.is_zero())?;
            slots.waiting += 1;
            slots = self.freed.wait_timeout(slots, left).unwrap_or_else(|e| e.into_inner()).0;
            slots.waiting -= 1;
        }
        slots.free -= 1;
        Some(Permit(self))
    }
}

impl Drop for Permit<'_> {
    fn drop(&mut self) {
        let mut slots = self.0.lock();
        slots.free += 1;
        let wake = slots.waiting > 0;
        drop(slots);
        if wake {
            self.0.freed.notify_one();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn semaphore_admits_at_most_its_slots_and_wakes_every_waiter() {
        use std::sync::atomic::{AtomicUsize, Ordering};
        let sem = Semaphore::new(2);
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
        let slots = sem.lock();
        assert_eq!((slots.free, slots.waiting), (2, 0));
    }

    #[test]
    fn a_bounded_wait_gives_up_when_no_slot_frees_and_takes_one_that_does() {
        let sem = Semaphore::new(1);
        let held = sem.acquire();
        assert!(sem.acquire_within(Duration::from_millis(20), 1).is_none());
        assert!(sem.acquire_within(Duration::ZERO, 1).is_none());
        std::thread::scope(|s| {
            s.spawn(|| {
                // A second caller finds the queue full (one waits) and is refused at once.
                while sem.lock().waiting == 0 {
                    std::thread::yield_now();
                }
                let refused = Instant::now();
                assert!(sem.acquire_within(Duration::from_secs(30), 1).is_none());
                assert!(refused.elapsed() < Duration::from_secs(30));
                drop(held);
            });
            assert!(sem.acquire_within(Duration::from_secs(30), 1).is_some());
        });
        let slots = sem.lock();
        assert_eq!((slots.free, slots.waiting), (1, 0));
    }
}
