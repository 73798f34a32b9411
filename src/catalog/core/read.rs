//! Whether a catalog may answer a read now: the check every read (books, topics, search,
//! a version answer, `/ready`) makes before it looks at the books.
//!
//! # Rules
//! - **A replica answers only while it holds a read lease** (with leases on): without one
//!   it may have missed writes already acknowledged (`catalog::lease`).
//! - **A replica catching up answers nothing** until it has the primary's writes.
//! - **A primary with etcd answers only while its leadership allows it** (it may write: no
//!   old lease lives, not paused, its etcd lease not lapsed, `failover::Core::may_read`).
//! - **A static primary that starts** answers once it compared its catalog with its
//!   replicas' (it takes a newer one) and once no replica can still serve on a lease of
//!   its previous run (every replica in sync, or one lease has passed).
//! - **A replica shows nothing its primary would not show**: a primary sends a commit
//!   point only while it may answer reads itself ([`commit_point`]).

use super::super::refusal::Unreadable;

/// What a catalog knows of itself when a read comes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Reader {
    /// Caught up (false: a replica catching up, or a copy under way).
    pub serving: bool,
    /// A static primary that starts has compared its catalog with its replicas'.
    pub settled: bool,
    /// What its role adds.
    pub role: ReadRole,
}

/// What a role adds to the check.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ReadRole {
    /// The primary with etcd: whether its leadership lets it read now.
    Elected {
        /// `failover::Core::may_read` now.
        may_read: bool,
    },
    /// The primary with static roles: whether no replica can serve on an older lease.
    Static {
        /// Every replica in sync, or one lease has passed since it started (or leases off).
        reads_open: bool,
    },
    /// A replica: its read lease now (None: leases are off).
    Replica {
        /// Whether it holds a valid read lease.
        leased: Option<bool>,
    },
}

/// May a catalog that knows `reader` answer a read now?
pub fn may_read(reader: Reader) -> Result<(), Unreadable> {
    #[cfg(test)]
    let reader = match reader.role {
        ReadRole::Replica { .. } if super::planted::on(super::planted::Planted::ReadWithoutLease) => {
            Reader { role: ReadRole::Replica { leased: None }, ..reader }
        }
        _ => reader,
    };
    if !reader.serving {
        return Err(Unreadable::CatchingUp);
    }
    if !reader.settled {
        return Err(Unreadable::Settling);
    }
    match reader.role {
        ReadRole::Elected { may_read: false } => Err(Unreadable::Lapsed),
        ReadRole::Static { reads_open: false } => Err(Unreadable::ReadsNotOpen),
        ReadRole::Replica { leased: Some(false) } => Err(Unreadable::NoLease),
        _ => Ok(()),
    }
}

/// The commit point a primary that knows `primary` sends with a push, up to which the
/// replica shows its logged writes: `committed`, or none while the primary may not answer
/// reads itself. A replica shows nothing its primary would not show: a primary that
/// restarted, or was just elected, may end its log in writes that were never
/// acknowledged, which a replica still reading on a lease of the previous run (or epoch)
/// lacks; until that lease is over (the primary's own reads wait for it), a replica that
/// showed them would answer newer than that one, and a later read there older.
pub fn commit_point(primary: Reader, committed: u64) -> Option<u64> {
    may_read(primary).is_ok().then_some(committed)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_read_is_answered_only_by_a_catalog_that_cannot_miss_an_acknowledged_write() {
        let reader = |serving, settled, role| Reader { serving, settled, role };
        let replica = |leased| ReadRole::Replica { leased };
        let cases = [
            (reader(true, true, replica(Some(true))), Ok(())),
            (reader(true, true, replica(None)), Ok(())), // leases off: the operator's choice
            (reader(true, true, replica(Some(false))), Err(Unreadable::NoLease)),
            (reader(false, true, replica(Some(true))), Err(Unreadable::CatchingUp)),
            (reader(true, true, ReadRole::Elected { may_read: true }), Ok(())),
            (reader(true, true, ReadRole::Elected { may_read: false }), Err(Unreadable::Lapsed)),
            (reader(true, true, ReadRole::Static { reads_open: true }), Ok(())),
            (reader(true, true, ReadRole::Static { reads_open: false }), Err(Unreadable::ReadsNotOpen)),
            (reader(true, false, ReadRole::Static { reads_open: true }), Err(Unreadable::Settling)),
            // The first reason that holds is the one given.
            (reader(false, false, ReadRole::Static { reads_open: false }), Err(Unreadable::CatchingUp)),
        ];
        for (reader, want) in cases {
            assert_eq!(may_read(reader), want, "{reader:?}");
            assert_eq!(commit_point(reader, 7), want.ok().map(|()| 7), "{reader:?}");
        }
    }
}
