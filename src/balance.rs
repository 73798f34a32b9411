//! Round robin over a pool of replicas, with a passive health check.
//!
//! One counter per pool: consecutive requests start at consecutive replicas, so two
//! replicas get half the requests each. A replica that failed to answer is skipped for
//! [`DOWN_FOR`]; when every replica is marked down they are all tried anyway, so a pool
//! never refuses by itself. Retries walk the pool from the chosen start without moving
//! the counter. No I/O here: the caller reports failures.

use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

/// How long a replica that failed is skipped before it is tried again.
pub const DOWN_FOR: Duration = Duration::from_secs(2);

/// A pool of replicas of one service.
#[derive(Debug)]
pub struct Pool {
    urls: Vec<String>,
    /// Per replica: until when (ms since `epoch`) it is skipped; 0 when healthy.
    down_until: Vec<AtomicU64>,
    next: AtomicUsize,
    epoch: Instant,
}

impl Pool {
    /// A pool over these base URLs (at least one).
    pub fn new(urls: Vec<String>) -> Pool {
        assert!(!urls.is_empty(), "a pool needs at least one replica");
        let down_until = urls.iter().map(|_| AtomicU64::new(0)).collect();
        Pool { urls, down_until, next: AtomicUsize::new(0), epoch: Instant::now() }
    }

    /// The base URLs.
    pub fn urls(&self) -> &[String] {
        &self.urls
    }

    fn now_ms(&self) -> u64 {
        self.epoch.elapsed().as_millis() as u64
    }

    /// The replicas to try for one request, in order: the next in turn first, healthy ones
    /// before those marked down.
    pub fn plan(&self) -> Vec<usize> {
        let n = self.urls.len();
        let start = self.next.fetch_add(1, Ordering::Relaxed) % n;
        let now = self.now_ms();
        let (mut up, down): (Vec<usize>, Vec<usize>) =
            (0..n).map(|k| (start + k) % n).partition(|&i| self.down_until[i].load(Ordering::Relaxed) <= now);
        up.extend(down);
        up
    }

    /// Records that replica `i` failed to answer.
    pub fn mark_down(&self, i: usize) {
        let until = self.now_ms() + DOWN_FOR.as_millis() as u64;
        self.down_until[i].store(until, Ordering::Relaxed);
    }

    /// Records that replica `i` answered.
    pub fn mark_up(&self, i: usize) {
        if self.down_until[i].load(Ordering::Relaxed) != 0 {
            self.down_until[i].store(0, Ordering::Relaxed);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pool(n: usize) -> Pool {
        Pool::new((0..n).map(|i| format!("http://r{i}:1")).collect())
    }

    #[test]
    fn round_robin_is_even() {
        let p = pool(2);
        let firsts: Vec<usize> = (0..6).map(|_| p.plan()[0]).collect();
        assert_eq!(firsts, [0, 1, 0, 1, 0, 1]);
        assert_eq!(p.plan(), [0, 1]);
    }

    #[test]
    fn down_replicas_go_last_then_come_back() {
        let p = pool(3);
        p.mark_down(1);
        for _ in 0..6 {
            let plan = p.plan();
            assert_eq!(plan.len(), 3);
            assert_eq!(*plan.last().unwrap(), 1, "{plan:?}");
        }
        p.mark_up(1);
        let firsts: Vec<usize> = (0..3).map(|_| p.plan()[0]).collect();
        assert!(firsts.contains(&1));
    }
}
