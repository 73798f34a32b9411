//! Read leases: a replica answers reads only while the primary vouches that it has every
//! acknowledged write. Pure logic with explicit clocks; the node does the I/O. The
//! arithmetic is the store's one lease ([`crate::lease`]: the replica holds, the primary
//! grants); this module adds what belongs to read leases only: who may be granted one
//! (a replica in sync) and a stopping primary's farewell.
//!
//! # The protocol
//! - The replica asks for a lease every `L/4` (`POST /internal/lease`). It notes the moment
//!   it *asked*, `a`, on its monotonic clock; on a grant its lease ends at `a + 0.9 L`.
//! - The primary grants only to a replica that is *in sync* (has taken every write pushed so
//!   far), and records the lease as ending at `g + L`, `g` the moment it granted. As
//!   `a <= g` and the 10% margin covers clock-rate drift, the replica's lease always ends
//!   before the primary's view of it.
//! - When a push to a replica fails, the primary marks it out of sync under the same lock
//!   that grants, so no grant follows, and waits until its view of that lease has passed
//!   before it acknowledges the write. Later writes skip the replica (no wait) until the
//!   catch-up has brought it back in sync under the writer lock; then it may be granted again.
//! - Renewals are not carried by pushes: a replica cannot know when a push was sent, so it
//!   has no safe moment to measure from.
//!
//! # A primary that does not answer
//! A renewal that fails extends nothing, whatever the failure: a timeout, an unreachable
//! network, and a *refused connection* too. A refused connection does not prove that no
//! primary runs: a partition that REJECTs the replica's packets one way (an iptables
//! REJECT, a firewall sending TCP resets) refuses the connection to a primary that is alive
//! and still acknowledging writes to its clients, with its pushes to this replica DROPped
//! the other way. Were a refusal taken as the primary's death, the replica would serve the
//! old stock for as long as the partition lasts after a write was acknowledged (issue 28;
//! Jepsen's finding that asymmetric partitions break failure detectors). So a replica
//! serves only on a lease the primary granted, and a primary killed (`kill -9`) leaves its
//! replicas serving until their leases run out, no longer.
//!
//! Architecture invariant: a replica's lease is extended only by its primary's grant, or by
//! that same primary's farewell (below), named by the primary's run id.
//!
//! # A primary that stops
//! A primary stopped gracefully (SIGTERM) takes its writer lock for good, so it acknowledges
//! nothing more, and sends a *farewell*, naming its run id, to each replica in sync. A
//! replica whose lease is valid and was granted by that run (each grant names the run that
//! gave it) then serves for a grace `D` ([`FAREWELL_LEASES`] leases) counted from its last
//! renewal that the old primary answered, a moment before the old primary exited and so
//! before any new one started. A primary that starts acknowledges no write until every
//! replica has caught up from it (its log or a copy of its catalog, which ends any
//! extension) or `D` has passed. A farewell is a message the primary sends, never an
//! inference from a failed request: a farewell of another run (an older process of the same
//! address) extends nothing.
//! This keeps reads going when the primary's name stops resolving (a stopped container),
//! which a replica cannot tell from a partition.

/// The grace after a farewell, in lease lengths.
pub const FAREWELL_LEASES: u32 = 15;

use super::refusal::NoGrant;
use crate::lease::{Granted, Held};
use std::time::{Duration, Instant};

/// The replica's side: until when it may answer reads (a [`Held`] lease of length `L`,
/// with what a farewell needs).
#[derive(Debug, Clone)]
pub struct ReplicaLease {
    length: Duration,
    held: Held,
    /// The last extension came from the primary's farewell (it stopped gracefully).
    primary_down: bool,
    /// When the replica sent its last renewal that the primary answered (grant or not).
    last_answered: Option<Instant>,
    /// The epoch of the primary that granted the last renewal.
    epoch: u64,
    /// The run id of the primary process that granted the last renewal: only its farewell
    /// counts.
    run: Option<String>,
}

impl ReplicaLease {
    /// No lease yet; leases of `length`.
    pub fn new(length: Duration) -> ReplicaLease {
        ReplicaLease { length, held: Held::default(), primary_down: false, last_answered: None, epoch: 0, run: None }
    }

    /// The primary of `epoch`, running as `run`, granted the renewal asked for at `asked`.
    pub fn granted(&mut self, asked: Instant, epoch: u64, run: Option<String>) {
        self.epoch = epoch;
        self.run = run;
        self.primary_down = false;
        self.last_answered = Some(asked);
        self.held.granted(asked, self.length);
    }

    /// The epoch of the primary that granted the last renewal: the one whose log this
    /// replica's is a prefix of (it grants only to a replica in sync).
    pub fn epoch(&self) -> u64 {
        self.epoch
    }

    /// The primary answered the renewal asked for at `asked`, without a grant.
    pub fn answered(&mut self, asked: Instant) {
        self.primary_down = false;
        self.last_answered = Some(asked);
    }

    /// The primary running as `run` said farewell (it acknowledges nothing more); `now` is
    /// when it came. Returns whether the lease was extended by the grace: only a valid lease
    /// granted by that same run is.
    pub fn farewell(&mut self, now: Instant, run: &str) -> bool {
        match self.last_answered {
            Some(asked) if self.valid(now) && self.run.as_deref() == Some(run) => {
                self.primary_down = true;
                self.held.granted(asked, self.length * FAREWELL_LEASES);
                true
            }
            _ => false,
        }
    }

    /// A new primary brought this replica in sync: any extension ends; it grants anew.
    pub fn reset_if_extended(&mut self) {
        if self.primary_down {
            self.primary_down = false;
            self.held.end();
        }
    }

    /// Whether reads may be answered at `now`.
    pub fn valid(&self, now: Instant) -> bool {
        self.held.valid(now)
    }

    /// Whether the lease is being extended by the farewell of a primary that stopped.
    pub fn primary_down(&self) -> bool {
        self.primary_down
    }

    /// Time left at `now`.
    pub fn remaining(&self, now: Instant) -> Duration {
        self.held.remaining(now)
    }
}

/// The primary's view of one replica.
#[derive(Debug, Clone, Default)]
pub struct Grant {
    /// Has taken every write pushed so far (or the write being pushed now).
    pub in_sync: bool,
    /// The replica's identity, learnt from its answers (it changes when it restarts).
    pub replica_id: Option<String>,
    /// The read lease the replica may hold, as granted here.
    pub lease: Granted,
}

impl Grant {
    /// A renewal request from `replica_id` at `now`; granted only to the in-sync replica.
    pub fn request(&mut self, replica_id: &str, now: Instant, length: Duration) -> Result<(), NoGrant> {
        if self.replica_id.as_deref() != Some(replica_id) {
            return Err(NoGrant::Unknown);
        }
        if !self.in_sync {
            return Err(NoGrant::NotInSync);
        }
        self.lease.grant(now, length);
        Ok(())
    }

    /// A push failed: no more grants. Returns until when the write must wait.
    pub fn lost(&mut self) -> Option<Instant> {
        self.in_sync = false;
        self.lease.until()
    }

    /// The replica `replica_id` has every write (checked under the writer lock).
    pub fn synced(&mut self, replica_id: String) {
        self.in_sync = true;
        self.replica_id = Some(replica_id);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const L: Duration = Duration::from_millis(1000);

    #[test]
    fn the_replicas_lease_ends_before_the_primarys_view() {
        let t0 = Instant::now();
        let mut primary = Grant::default();
        let mut replica = ReplicaLease::new(L);
        assert!(!replica.valid(t0));
        assert!(primary.request("r1", t0, L).is_err(), "unknown before it is in sync");
        primary.synced("r1".into());
        // Asked at t0, granted 30 ms later (network), answer back at 60 ms.
        let granted = t0 + Duration::from_millis(30);
        primary.request("r1", granted, L).unwrap();
        replica.granted(t0, 0, None);
        assert!(replica.valid(t0 + Duration::from_millis(899)));
        assert!(!replica.valid(t0 + Duration::from_millis(900)));
        // A failed push: the write waits until the primary's view ends, after the replica's.
        let wait_until = primary.lost().unwrap();
        assert_eq!(wait_until, granted + L);
        assert!(!replica.valid(wait_until));
        assert!(primary.request("r1", t0 + L, L).is_err(), "no grant while out of sync");
        assert!(primary.request("r2", t0 + L, L).is_err());
    }

    /// Only the primary's grant extends a lease: a renewal that failed (refused, timed
    /// out) is no event of the lease at all, so the lease simply runs out.
    #[test]
    fn only_a_grant_extends_a_lease() {
        let t0 = Instant::now();
        let ms = |n| t0 + Duration::from_millis(n);
        let mut r = ReplicaLease::new(L);
        r.granted(t0, 0, Some("run-a".into()));
        // Renewals at 250, 500, 750 ms fail (refused): nothing is recorded, so at 900 ms the
        // lease has run out however many refusals came.
        assert!(r.valid(ms(899)) && !r.valid(ms(900)));
        assert!(!r.primary_down());
        r.answered(ms(1000));
        assert!(!r.valid(ms(1000)), "an answer without a grant extends nothing");
        r.granted(ms(1000), 0, Some("run-a".into()));
        assert!(r.valid(ms(1899)) && !r.valid(ms(1900)));
    }

    #[test]
    fn a_farewell_extends_from_the_last_answered_renewal() {
        let t0 = Instant::now();
        let ms = |n| t0 + Duration::from_millis(n);
        let mut r = ReplicaLease::new(L);
        assert!(!r.farewell(t0, "run-a"), "no lease, no grace");
        r.granted(t0, 0, Some("run-a".into()));
        r.answered(ms(250));
        assert!(!r.farewell(ms(300), "run-b"), "a farewell of another run extends nothing");
        assert!(!r.primary_down());
        assert!(r.farewell(ms(300), "run-a"));
        assert!(r.valid(ms(250 + 13_499)) && !r.valid(ms(250 + 13_500)), "0.9 x 15 leases from the last answer");
        r.reset_if_extended();
        assert!(!r.valid(ms(301)), "a new primary grants anew");
        let mut expired = ReplicaLease::new(L);
        expired.granted(t0, 0, Some("run-a".into()));
        assert!(!expired.farewell(ms(2000), "run-a"), "an expired lease gets no grace");
        let mut unnamed = ReplicaLease::new(L);
        unnamed.granted(t0, 0, None);
        assert!(!unnamed.farewell(ms(300), ""), "a grant that named no run takes no farewell");
    }
}
