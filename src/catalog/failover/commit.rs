//! The commit point under failover (Kafka's high watermark, PacificA's commit), free of
//! I/O: which of the writes a catalog has logged are readable.
//!
//! A replica logs a pushed write durably at once but keeps it *pending* (not readable)
//! until its primary says it is committed: on every catalog recorded in sync (those that
//! missed it were removed from the record in etcd first, and their read leases waited
//! out). The primary says so once it has acknowledged the batch, with an empty push
//! carrying `committed = N` (the batch's last write; left to the next batch's push when
//! one waits); every push also carries the primary's commit point, and a log page its
//! readable number. Until then a read that meets the batch's books on a replica asks the
//! primary (CRAQ's version query).
//!
//! # Invariants
//! - **Nothing unacknowledged is ever visible** (issue 13): a catalog shows write `N` only
//!   once `N` is committed, and a committed write is on every member of `sync`, so any
//!   later primary (always a member of `sync`) has it: no failover erases a write that was
//!   seen.
//! - A commit point never moves a replica past what it has logged (`applied`), and never
//!   back: the readable number only grows until a whole copy replaces the catalog.
//! - A catalog elected primary makes all it has logged readable at once: its in-sync
//!   record is itself alone, so every write it holds is on every in-sync catalog.

/// Up to which write a replica that has logged writes up to `applied`, shows writes up to
/// `readable`, and hears of commit point `committed`, may show writes now.
pub fn readable_upto(readable: u64, applied: u64, committed: u64) -> u64 {
    readable.max(committed.min(applied))
}

/// Up to which write a catalog that becomes the primary, having logged writes up to
/// `applied`, may show writes: all of them (its in-sync record starts as itself).
pub fn readable_when_elected(applied: u64) -> u64 {
    applied
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_replica_shows_only_what_is_committed_and_logged_and_never_goes_back() {
        // (readable, applied, committed) -> readable after
        let cases = [
            ((4, 6, 4), 4),  // pushed 5 and 6, nothing committed yet: pending
            ((4, 6, 5), 5),  // 5 committed: readable; 6 still pending
            ((4, 6, 9), 6),  // a commit point past what it logged shows only what it has
            ((6, 6, 3), 6),  // an older commit point (a push of the previous batch) hides nothing
            ((0, 0, 0), 0),  // nothing at all
            ((4, 4, 10), 4), // catching up: the page's number is ahead of what it has
        ];
        for ((readable, applied, committed), want) in cases {
            assert_eq!(readable_upto(readable, applied, committed), want, "{readable} {applied} {committed}");
        }
    }

    #[test]
    fn an_elected_catalog_shows_every_write_it_logged() {
        assert_eq!(readable_when_elected(7), 7);
    }
}
