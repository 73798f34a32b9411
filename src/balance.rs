//! Round robin over a pool of replicas, with a passive health check.
//!
//! One counter per pool: consecutive requests start at consecutive replicas, so two
//! replicas get half the requests each. A replica that failed to answer is skipped for
//! [`DOWN_FOR`]; when every replica is marked down they are all tried anyway, so a pool
//! never refuses by itself. Retries walk the pool from the chosen start without moving
//! the counter. No I/O here: the caller reports failures.
//!
//! [`Pool::try_each`] is the one "try each back end in turn" loop of the store. Whether a
//! failure may move on to the next back end is a pure decision ([`Failure::verdict`]): a
//! [`Call::Read`] may always move on; a [`Call::Write`] only when the request surely never
//! left ([`Failure::NotSent`]), so a purchase that may have been received is never made a
//! second time elsewhere. A back end that gave no answer, or (for a read) answered that it
//! cannot serve now, is skipped for [`DOWN_FOR`]; one that answered is marked up.

use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

/// How long a replica that failed is skipped before it is tried again.
pub const DOWN_FOR: Duration = Duration::from_secs(2);

/// What a request does to a back end, which decides whether it may go to the next.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Call {
    /// It changes nothing: it may be sent to every back end in turn.
    Read,
    /// It changes something (a purchase): it goes to another back end only when it surely
    /// never reached the one that failed.
    Write,
}

/// How an attempt on one back end failed (the caller classifies its error, see
/// [`crate::error::PeerError::failure`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Failure {
    /// No answer, and the request surely never left (connection refused or never made).
    NotSent,
    /// No answer, and the request may have reached the back end (a timeout, a cut
    /// connection).
    MaybeSent,
    /// The back end answered that it cannot serve now (503: catching up, not ready, its
    /// primary unreachable).
    Unavailable,
    /// The back end answered, refusing the request or with an answer that makes no sense:
    /// its answer is the request's.
    Answered,
}

/// What [`Pool::try_each`] does after a failure.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Verdict {
    /// Skip the back end for [`DOWN_FOR`]; else it answered and is marked up.
    pub down: bool,
    /// Send the request to the next back end; else stop with this failure.
    pub next: bool,
}

impl Failure {
    /// What a failure of a `call` means for the back end and for the request.
    pub fn verdict(self, call: Call) -> Verdict {
        let down = match self {
            Failure::NotSent | Failure::MaybeSent => true,
            // A read goes where it can be served; a write's 503 is the write's answer.
            Failure::Unavailable => call == Call::Read,
            Failure::Answered => false,
        };
        let next = call == Call::Read || self == Failure::NotSent;
        Verdict { down, next }
    }
}

/// How a request that no back end served ended.
#[derive(Debug, PartialEq, Eq)]
pub enum Failed<E> {
    /// Every back end was tried: the last one and its error.
    Exhausted {
        /// The base URL of the last back end tried.
        url: String,
        /// Its error.
        error: E,
    },
    /// One back end's failure stopped the walk: it answered (its answer is the request's),
    /// or it may have received a write.
    Stopped {
        /// Its base URL.
        url: String,
        /// Its error.
        error: E,
        /// How it failed.
        failure: Failure,
    },
}

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

    /// Asks every replica `ready(url)` at once, each on a thread of its own (so one that
    /// hangs delays none of the others beyond the caller's timeout), and marks each up or
    /// down by its answer; returns the answers in the pool's order. The caller does the
    /// I/O in `ready`.
    pub fn probe(&self, ready: impl Fn(&str) -> bool + Sync) -> Vec<bool> {
        let answers: Vec<bool> = std::thread::scope(|s| {
            let asks: Vec<_> = self.urls.iter().map(|url| s.spawn(|| ready(url))).collect();
            asks.into_iter().map(|a| a.join().unwrap_or(false)).collect()
        });
        for (i, &up) in answers.iter().enumerate() {
            if up {
                self.mark_up(i);
            } else {
                self.mark_down(i);
            }
        }
        answers
    }

    /// Records that replica `i` answered.
    pub fn mark_up(&self, i: usize) {
        if self.down_until[i].load(Ordering::Relaxed) != 0 {
            self.down_until[i].store(0, Ordering::Relaxed);
        }
    }

    /// Sends one request to the back ends in [`Pool::plan`]'s order until one serves it:
    /// `attempt` sends it to one base URL, `failure` classifies its error, and
    /// [`Failure::verdict`] decides, for a `call`, whether to mark the back end down and
    /// whether to try the next. Returns what the serving back end gave and its URL.
    pub fn try_each<T, E>(
        &self,
        call: Call,
        attempt: impl FnMut(&str) -> Result<T, E>,
        failure: impl Fn(&E) -> Failure,
    ) -> Result<(T, &str), Failed<E>> {
        self.try_plan(self.plan(), call, attempt, failure)
    }

    /// As [`Pool::try_each`], but back end `first` (when given and not marked down) before
    /// the others: the order server sends its batches of purchases straight to the catalog
    /// it knows to be the primary, the round robin staying the fallback.
    pub fn try_first<T, E>(
        &self,
        first: Option<usize>,
        call: Call,
        attempt: impl FnMut(&str) -> Result<T, E>,
        failure: impl Fn(&E) -> Failure,
    ) -> Result<(T, &str), Failed<E>> {
        let mut plan = self.plan();
        if let Some(at) = first.and_then(|f| plan.iter().position(|&i| i == f)) {
            if self.down_until[plan[at]].load(Ordering::Relaxed) <= self.now_ms() {
                let f = plan.remove(at);
                plan.insert(0, f);
            }
        }
        self.try_plan(plan, call, attempt, failure)
    }

    fn try_plan<T, E>(
        &self,
        plan: Vec<usize>,
        call: Call,
        mut attempt: impl FnMut(&str) -> Result<T, E>,
        failure: impl Fn(&E) -> Failure,
    ) -> Result<(T, &str), Failed<E>> {
        let mut last = None;
        for i in plan {
            let url = self.urls[i].as_str();
            let error = match attempt(url) {
                Ok(served) => {
                    self.mark_up(i);
                    return Ok((served, url));
                }
                Err(e) => e,
            };
            let how = failure(&error);
            let verdict = how.verdict(call);
            if verdict.down {
                self.mark_down(i);
            } else {
                self.mark_up(i);
            }
            if !verdict.next {
                return Err(Failed::Stopped { url: url.to_string(), error, failure: how });
            }
            last = Some((url, error));
        }
        let (url, error) = last.expect("a pool has at least one replica");
        Err(Failed::Exhausted { url: url.to_string(), error })
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
    fn a_probe_marks_each_by_its_answer() {
        let p = pool(3);
        assert_eq!(p.probe(|url| !url.contains("r1:")), vec![true, false, true]);
        for _ in 0..6 {
            assert_eq!(p.plan().last(), Some(&1), "the one not ready goes last");
        }
        p.probe(|_| true);
        assert!((0..6).map(|_| p.plan()[0]).collect::<std::collections::HashSet<_>>().contains(&1));
    }

    #[test]
    fn a_preferred_back_end_goes_first_unless_down() {
        let p = pool(3);
        // The back ends tried, in order, when every attempt fails and 2 is preferred.
        let tried_preferring_2 = || {
            let mut tried = Vec::new();
            let _ = p.try_first(
                Some(2),
                Call::Read,
                |url| {
                    tried.push(url.to_string());
                    Err::<(), _>(())
                },
                |_| Failure::NotSent,
            );
            tried
        };
        for _ in 0..4 {
            let tried = tried_preferring_2();
            assert_eq!(tried.len(), 3);
            assert_eq!(tried[0], "http://r2:1", "{tried:?}");
            (0..3).for_each(|i| p.mark_up(i)); // each failed attempt marked its back end down
        }
        p.mark_down(2);
        let tried = tried_preferring_2();
        assert_eq!(tried.last().map(String::as_str), Some("http://r2:1"), "a preferred one that is down goes last");
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

    #[test]
    fn verdicts() {
        use Call::{Read, Write};
        use Failure::*;
        let v = |down, next| Verdict { down, next };
        // (failure, call, verdict)
        let cases = [
            (NotSent, Read, v(true, true)),
            (NotSent, Write, v(true, true)),
            (MaybeSent, Read, v(true, true)),
            (MaybeSent, Write, v(true, false)),
            (Unavailable, Read, v(true, true)),
            (Unavailable, Write, v(false, false)),
            (Answered, Read, v(false, true)),
            (Answered, Write, v(false, false)),
        ];
        for (failure, call, want) in cases {
            assert_eq!(failure.verdict(call), want, "{failure:?} {call:?}");
        }
    }

    /// Runs one request over a pool of three whose back ends fail as `script` says (None:
    /// it serves), starting at replica 0: what it ended with, which replicas were tried,
    /// which are marked down after.
    fn walk(call: Call, script: [Option<Failure>; 3]) -> (Result<usize, Failed<usize>>, Vec<usize>, Vec<bool>) {
        let p = pool(3);
        let index = |url: &str| p.urls().iter().position(|u| u == url).unwrap();
        let mut tried = Vec::new();
        let attempt = |url: &str| {
            let i = index(url);
            tried.push(i);
            script[i].map_or(Ok(i), |_| Err(i))
        };
        let got = p.try_each(call, attempt, |&i| script[i].unwrap()).map(|(served, _)| served);
        let marked = (0..3).map(|i| p.down_until[i].load(Ordering::Relaxed) > 0).collect();
        (got, tried, marked)
    }

    #[test]
    fn each_back_end_in_turn() {
        use Call::{Read, Write};
        use Failure::*;
        let url = |i: usize| format!("http://r{i}:1");
        // A read moves on past anything; the first that serves answers.
        let (got, tried, down) = walk(Read, [Some(MaybeSent), Some(Unavailable), None]);
        assert_eq!((got, tried, down), (Ok(2), vec![0, 1, 2], vec![true, true, false]));
        // A read that nobody serves ends with the last failure; one that answered is up.
        let (got, tried, down) = walk(Read, [Some(NotSent), Some(Answered), Some(NotSent)]);
        assert_eq!(got, Err(Failed::Exhausted { url: url(2), error: 2 }));
        assert_eq!((tried, down), (vec![0, 1, 2], vec![true, false, true]));
        // A write moves on only past a back end it never reached.
        let (got, tried, _) = walk(Write, [Some(NotSent), None, None]);
        assert_eq!((got, tried), (Ok(1), vec![0, 1]));
        // A write that may have been received is not sent again.
        let (got, tried, down) = walk(Write, [Some(NotSent), Some(MaybeSent), None]);
        assert_eq!(got, Err(Failed::Stopped { url: url(1), error: 1, failure: MaybeSent }));
        assert_eq!((tried, down), (vec![0, 1], vec![true, true, false]));
        // A write's refusal (a 409, a 503) is its answer; the back end is up.
        let (got, tried, down) = walk(Write, [Some(Unavailable), None, None]);
        assert_eq!(got, Err(Failed::Stopped { url: url(0), error: 0, failure: Unavailable }));
        assert_eq!((tried, down), (vec![0], vec![false, false, false]));
    }
}
