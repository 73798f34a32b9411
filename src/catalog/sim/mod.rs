//! Deterministic simulation of the catalog (test builds only): its decisions run under a
//! seeded scheduler on virtual time, with simulated networks, clocks, crashes and pauses,
//! every run checked and every failure replayable from its seed.
//!
//! - [`data`]: the data path with static roles: a primary's group commit (the real
//!   `core::primary` and `core::batch`), replicas' pushes, read leases and version queries
//!   (`core::replica`, `core::read`, `catalog::lease`), front ends' near caches (the real
//!   `catalog::near::Table` and `frontend::near::NearCache`), and clients whose history the
//!   linearizability checker judges.
//! - `catalog::failover::sim`: the election with etcd (the real `failover::Core` against a
//!   model of etcd).
//!
//! Here: what both share (the seeded generator, the event scheduler, the clocks, the
//! trace hash).

mod data;

use std::collections::BTreeMap;

/// The events to come in a simulated world, by true time (µs): the earliest first, and
/// those at one instant in the order they were scheduled, so that a seed gives one run.
pub(crate) struct Scheduler<E> {
    queue: BTreeMap<(u64, u64), E>,
    /// How many events were scheduled: each one's place among those at its instant.
    scheduled: u64,
}

impl<E> Scheduler<E> {
    pub(crate) fn new() -> Scheduler<E> {
        Scheduler { queue: BTreeMap::new(), scheduled: 0 }
    }

    /// Schedules `event` at true time `t`.
    pub(crate) fn at(&mut self, t: u64, event: E) {
        self.scheduled += 1;
        self.queue.insert((t, self.scheduled), event);
    }

    /// The next event and its time, if one is due at or before `end` (it is taken either
    /// way: a world stops at the first event past its end).
    pub(crate) fn next_until(&mut self, end: u64) -> Option<(u64, E)> {
        self.queue.pop_first().filter(|((t, _), _)| *t <= end).map(|((t, _), event)| (t, event))
    }
}

/// SplitMix64: small, seedable, good enough to draw schedules.
pub(crate) struct Rng(pub(crate) u64);

impl Rng {
    pub(crate) fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// Uniform in `lo..=hi`.
    pub(crate) fn range(&mut self, lo: u64, hi: u64) -> u64 {
        lo + self.next() % (hi - lo + 1)
    }

    pub(crate) fn chance(&mut self, p: f64) -> bool {
        ((self.next() >> 11) as f64 / (1u64 << 53) as f64) < p
    }
}

/// FNV-1a 64 over the trace.
pub(crate) fn fnv(hash: u64, bytes: &[u8]) -> u64 {
    bytes.iter().fold(hash, |h, b| (h ^ u64::from(*b)).wrapping_mul(0x0100_0000_01b3))
}

/// A catalog's clock: `local(t) = offset + t * rate`, both in microseconds.
#[derive(Clone, Copy)]
pub(crate) struct Clock {
    pub(crate) offset: u64,
    /// Parts per million of true time.
    pub(crate) rate: u64,
}

impl Clock {
    pub(crate) fn local(&self, t: u64) -> u64 {
        self.offset + (u128::from(t) * u128::from(self.rate) / 1_000_000) as u64
    }

    /// The first true time at which the local clock shows `l` or more.
    pub(crate) fn true_of(&self, l: u64) -> u64 {
        let d = u128::from(l.saturating_sub(self.offset)) * 1_000_000;
        d.div_ceil(u128::from(self.rate)) as u64
    }
}

pub(crate) fn env(name: &str) -> Option<String> {
    std::env::var(name).ok().filter(|v| !v.is_empty())
}

/// Runs `run` for each seed of `first..first + count` on every core (a seed's run is on one
/// thread, so a bug planted there stays in it); returns the results in seed order.
pub(crate) fn across_cores<R: Send>(first: u64, count: u64, run: impl Fn(u64) -> R + Sync) -> Vec<R> {
    let next = std::sync::atomic::AtomicU64::new(first);
    let threads = std::thread::available_parallelism().map_or(1, |n| n.get());
    let mut done: Vec<(u64, R)> = std::thread::scope(|s| {
        let workers: Vec<_> = (0..threads)
            .map(|_| {
                s.spawn(|| {
                    let mut mine = Vec::new();
                    loop {
                        let seed = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                        if seed >= first + count {
                            return mine;
                        }
                        mine.push((seed, run(seed)));
                    }
                })
            })
            .collect();
        workers.into_iter().flat_map(|w| w.join().expect("a simulation thread panicked")).collect()
    });
    done.sort_by_key(|(seed, _)| *seed);
    done.into_iter().map(|(_, r)| r).collect()
}

/// The seeds a simulator's test runs, from the environment: `BAZAR_SIM_SEED=N` one seed
/// (its trace printed), else `BAZAR_SIM_SEEDS` seeds (`default` when unset) from
/// `BAZAR_SIM_FIRST` (0 when unset).
pub(crate) enum Seeds {
    One(u64),
    Range { first: u64, count: u64 },
}

impl Seeds {
    pub(crate) fn from_env(default: u64) -> Seeds {
        let number = |name: &str| env(name).map(|v| v.parse().unwrap_or_else(|_| panic!("{name} is a number")));
        match number("BAZAR_SIM_SEED") {
            Some(seed) => Seeds::One(seed),
            None => Seeds::Range {
                first: number("BAZAR_SIM_FIRST").unwrap_or(0),
                count: number("BAZAR_SIM_SEEDS").unwrap_or(default),
            },
        }
    }
}

/// The bug `BAZAR_SIM_PLANTED` names among `known` (by its name), or none.
pub(crate) fn planted_from_env(
    known: &[crate::catalog::core::planted::Planted],
) -> crate::catalog::core::planted::Planted {
    let name = env("BAZAR_SIM_PLANTED");
    known.iter().copied().find(|bug| name.as_deref() == Some(format!("{bug:?}").as_str())).unwrap_or_default()
}

/// A replayed seed (`BAZAR_SIM_SEED`): prints its trace, its hash and its length, and
/// panics with its failure.
pub(crate) fn show_replay(seed: u64, trace: &[String], hash: u64, events: u64, failure: Option<String>) {
    for line in trace {
        println!("{line}");
    }
    println!("seed {seed}: trace hash {hash:016x}, {events} events");
    if let Some(why) = failure {
        panic!("seed {seed}: {why}");
    }
}

/// Panics when any of `seeds` seeds failed, naming them and the command that replays the
/// first (`test`, the test's path for `cargo test --lib`).
pub(crate) fn fail_on(failed: &[u64], seeds: u64, test: &str) {
    if let Some(seed) = failed.first() {
        panic!(
            "{} of {seeds} seeds failed: {failed:?}\nreplay: BAZAR_SIM_SEED={seed} cargo test --lib {test} -- --nocapture",
            failed.len()
        );
    }
}

#[cfg(test)]
mod tests {
    use super::Scheduler;

    /// Events come by time, those at one instant in the order they were scheduled; the
    /// first past the end stops the world.
    #[test]
    fn events_come_by_time_then_in_the_order_scheduled() {
        let mut s = Scheduler::new();
        for (t, e) in [(30, "c"), (10, "a"), (30, "d"), (10, "b"), (50, "late")] {
            s.at(t, e);
        }
        let mut seen = Vec::new();
        while let Some(next) = s.next_until(40) {
            seen.push(next);
        }
        assert_eq!(seen, [(10, "a"), (10, "b"), (30, "c"), (30, "d")]);
        assert_eq!(s.next_until(100), None, "the event past the end was taken");
    }
}
