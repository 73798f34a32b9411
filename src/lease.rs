//! The one lease of the store: the arithmetic shared by every lease it grants.
//!
//! Three leases keep the store's reads correct, and they are one idea:
//! - a catalog replica's **read lease**, granted by its primary (`catalog::lease`): the
//!   replica answers reads only within it;
//! - a front end's **near-cache lease**, granted by the primary (`catalog::near`,
//!   `frontend::near`): the front end serves its own memory only within it;
//! - the primary's **leadership** in etcd (`catalog::failover`), granted by etcd's lease
//!   keepalives: it acknowledges writes only within it.
//!
//! Each has a *holder* that acts on the lease and a *grantor* that must not act against it
//! (the primary acknowledges no write the holder could miss, etcd lets no one else lead)
//! until its own view of the lease has ended. The rule that makes the holder's view end
//! first, whatever the network's delay and within a bounded drift of clock rates:
//! - the **holder** ([`Held`]) counts from the moment it *sent* its request, which is
//!   before the grantor saw it, and counts on only [`SHARE`] of the length;
//! - the **grantor** ([`Granted`]) counts from the moment it *granted*, after the request
//!   was sent, and counts the whole length.
//!
//! So `sent + SHARE * L < granted + L` always, and the 10% margin covers a holder's clock
//! that runs up to 10% slower than the grantor's. Both sides only ever extend (a late
//! answer to an earlier request never shortens a lease), except by an explicit end.
//!
//! Pure values with explicit clocks: no I/O, no clock reads.

use std::time::{Duration, Instant};

/// The part of a lease's length a holder counts on: the margin covers clock-rate
/// differences between holder and grantor.
pub const SHARE: f64 = 0.9;

/// The holder's side of a lease: until when it may act on it.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Held {
    until: Option<Instant>,
}

impl Held {
    /// The request sent at `sent` was granted a lease of `length`: it holds until
    /// `sent + SHARE * length`, or longer if an earlier grant said so.
    pub fn granted(&mut self, sent: Instant, length: Duration) {
        let end = sent + length.mul_f64(SHARE);
        self.until = Some(self.until.map_or(end, |u| u.max(end)));
    }

    /// Whether the holder may act on the lease at `now`.
    pub fn valid(&self, now: Instant) -> bool {
        self.until.is_some_and(|u| now < u)
    }

    /// When the lease ends (None: never held, or ended).
    pub fn until(&self) -> Option<Instant> {
        self.until
    }

    /// Time left at `now`.
    pub fn remaining(&self, now: Instant) -> Duration {
        self.until.map_or(Duration::ZERO, |u| u.saturating_duration_since(now))
    }

    /// Ends the lease at once (its grantor is gone or replaced: a new one grants anew).
    pub fn end(&mut self) {
        self.until = None;
    }
}

/// The grantor's side of one holder's lease: until when it must not act against it.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Granted {
    until: Option<Instant>,
}

impl Granted {
    /// A lease of `length` granted at `now`: the holder may act on it until `now + length`
    /// at the latest, or longer if an earlier grant said so.
    pub fn grant(&mut self, now: Instant, length: Duration) {
        let end = now + length;
        self.until = Some(self.until.map_or(end, |u| u.max(end)));
    }

    /// When the last lease granted ends (None: none granted, or forgotten).
    pub fn until(&self) -> Option<Instant> {
        self.until
    }

    /// Whether the holder may still act on a lease granted here at `now`.
    pub fn live(&self, now: Instant) -> bool {
        self.until.is_some_and(|u| now < u)
    }

    /// Cuts the lease short at `now`: the holder was told so in the same answer (a revoke
    /// it applies before it acts again), so nothing granted here outlives `now`.
    pub fn cut(&mut self, now: Instant) {
        self.until = self.until.map(|u| u.min(now));
    }

    /// Forgets the lease (the holder is known to hold none: it was told to start over).
    pub fn forget(&mut self) {
        self.until = None;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const L: Duration = Duration::from_millis(1000);

    fn at(t0: Instant, ms: u64) -> Instant {
        t0 + Duration::from_millis(ms)
    }

    /// Whatever the network's delays, the holder's view ends before the grantor's: the
    /// request sent at `sent`, granted `to_grantor` later, its answer back `back` later.
    #[test]
    fn the_holders_view_ends_before_the_grantors() {
        let t0 = Instant::now();
        for (sent, to_grantor, back) in [(0, 0, 0), (0, 30, 30), (100, 899, 1), (500, 2000, 5000)] {
            let (mut held, mut granted) = (Held::default(), Granted::default());
            granted.grant(at(t0, sent + to_grantor), L);
            held.granted(at(t0, sent), L);
            let (h, g) = (held.until().unwrap(), granted.until().unwrap());
            assert!(h < g, "sent {sent}, delays {to_grantor} and {back}");
            assert_eq!(h, at(t0, sent + 900));
            assert!(held.valid(at(t0, sent + 899)) && !held.valid(at(t0, sent + 900)));
            assert!(granted.live(at(t0, sent + to_grantor + 999)) && !granted.live(g));
        }
    }

    /// A late answer to an earlier request never shortens a lease; only an end does.
    #[test]
    fn leases_only_grow_until_ended() {
        let t0 = Instant::now();
        let mut held = Held::default();
        assert!(!held.valid(t0) && held.remaining(t0) == Duration::ZERO);
        held.granted(at(t0, 500), L);
        held.granted(at(t0, 100), L);
        assert_eq!(held.until(), Some(at(t0, 1400)));
        assert_eq!(held.remaining(at(t0, 1000)), Duration::from_millis(400));
        held.granted(at(t0, 600), L * 15);
        assert_eq!(held.until(), Some(at(t0, 600 + 13_500)), "a longer grant extends");
        held.end();
        assert!(!held.valid(at(t0, 601)));

        let mut granted = Granted::default();
        granted.grant(at(t0, 500), L);
        granted.grant(at(t0, 100), L);
        assert_eq!(granted.until(), Some(at(t0, 1500)));
        granted.cut(at(t0, 700));
        assert_eq!(granted.until(), Some(at(t0, 700)), "cut short");
        granted.cut(at(t0, 900));
        assert_eq!(granted.until(), Some(at(t0, 700)), "a cut never extends");
        granted.forget();
        assert_eq!(granted.until(), None);
    }
}
