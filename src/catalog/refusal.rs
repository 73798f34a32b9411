//! Why a catalog says no, for what is not the books' own rules ([`super::state::Refusal`]):
//! a write it may not decide ([`NoLead`]), a read it may not answer ([`Unreadable`]), a
//! push of a deposed primary ([`Stale`]) and a request for another role or setting
//! ([`NotHere`]).
//! Each is a type, so a caller matches a variant (a write refused with
//! [`NoLead::NotPrimary`] goes on to the new primary) and never compares messages;
//! [`crate::error::Error::status`] maps them to HTTP: 503 for the first two (the client may
//! try again, here or at another catalog), 409 for the others.

use std::time::Duration;

/// Why this catalog may not decide or acknowledge a write now. Each is answered 503 (the
/// client may try again); only [`NoLead::NotPrimary`] says that nothing was decided here
/// because another catalog leads, so that a write may go on to it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum NoLead {
    /// Not (or no longer) the primary: nothing was decided.
    NotPrimary,
    /// The primary's etcd lease may have run out: another may be elected.
    Lapsed,
    /// A switchover is under way.
    Paused,
    /// A new primary waits this long for the old primary's read leases to end.
    WaitingOutLeases(Duration),
    /// The node has not yet taken the role of the core's epoch (a write decided now would
    /// carry the old one).
    OtherEpoch(u64),
    /// A new primary has not yet flushed memcached.
    CacheNotFlushed,
    /// A replica that missed a batch could not be taken out of the in-sync record (etcd
    /// said this).
    SyncNotRecorded(String),
}

impl std::fmt::Display for NoLead {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            NoLead::NotPrimary => f.write_str("this catalog is not the primary (nothing was decided)"),
            NoLead::Lapsed => f.write_str("the primary's leadership in etcd may have lapsed"),
            NoLead::Paused => f.write_str("a switchover is under way"),
            NoLead::WaitingOutLeases(left) => {
                write!(f, "a new primary waits {left:?} for the old one's read leases to end")
            }
            NoLead::OtherEpoch(epoch) => {
                write!(f, "this catalog takes the role of epoch {epoch} (nothing was decided)")
            }
            NoLead::CacheNotFlushed => f.write_str("a new primary flushes memcached before its first write"),
            NoLead::SyncNotRecorded(why) => write!(f, "the in-sync record could not be changed: {why}"),
        }
    }
}

/// Why this catalog may not answer a read now: what it would show may be older than a
/// write already acknowledged (or, on a starting primary, than a replica's catalog).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Unreadable {
    /// A replica catching up with its primary (from its log or a whole copy).
    CatchingUp,
    /// A static primary that starts compares its catalog with its replicas' first.
    Settling,
    /// With etcd: the primary's leadership may have lapsed, or is too new to read.
    Lapsed,
    /// A static primary that starts: a replica may still serve on an earlier run's lease.
    ReadsNotOpen,
    /// A replica that holds no read lease: it may have missed writes.
    NoLease,
    /// A version answer from a primary of another epoch than the one whose lease this
    /// replica holds: its log need not be a prefix of that primary's.
    OtherEpoch {
        /// The answering primary's epoch.
        primary: u64,
        /// The epoch of this replica's lease.
        leased: u64,
    },
    /// A version answer that names a write this replica has not logged yet.
    Behind {
        /// The write the primary shows.
        primary: u64,
        /// The last write logged here.
        logged: u64,
    },
}

impl std::fmt::Display for Unreadable {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Unreadable::CatchingUp => "replica is catching up with the primary",
            Unreadable::Settling => {
                "a primary that starts compares its catalog with its replicas' first (it takes a newer one)"
            }
            Unreadable::Lapsed => "the primary's leadership in etcd may have lapsed, or is new",
            Unreadable::ReadsNotOpen => "a primary that starts reads once no replica's old lease lives",
            Unreadable::NoLease => "replica holds no read lease from the primary; it may have missed writes",
            Unreadable::OtherEpoch { primary, leased } => {
                return write!(f, "the primary is of epoch {primary}, this replica's lease of epoch {leased}");
            }
            Unreadable::Behind { primary, logged } => {
                return write!(f, "the primary shows write {primary} and this replica has only {logged}");
            }
        })
    }
}

/// Why a replica refuses what a primary pushed: it comes from, or carries a write of, an
/// older epoch than this catalog knows (a deposed primary). Answered 409 and counted.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Stale {
    /// A push of an epoch older than the newest this catalog knows.
    Push {
        /// The push's epoch.
        epoch: u64,
        /// The newest epoch known here.
        newest: u64,
    },
    /// A write to log of an epoch older than the last write logged here: it would take the
    /// number that the newer primary's write needs.
    Write {
        /// The write's number.
        seq: u64,
        /// Its epoch.
        epoch: u64,
        /// The epoch of the last write logged here.
        last: u64,
    },
}

impl std::fmt::Display for Stale {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Stale::Push { epoch, newest } => write!(f, "a push of epoch {epoch}, older than epoch {newest}"),
            Stale::Write { seq, epoch, last } => {
                write!(f, "write {seq} of epoch {epoch}, older than the last logged (epoch {last})")
            }
        }
    }
}

/// Why a catalog refuses a request that another catalog (or another setting) would take:
/// asked of the wrong role, or of a store set up without what it needs. Answered 409.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum NotHere {
    /// A push, farewell or resync sent to the primary: only a replica takes them.
    IsPrimary,
    /// A read lease asked of a replica: only the primary grants them.
    NoLeasesFromReplica,
    /// A near-cache watch sent to a replica: only the primary grants cache leases.
    NoNearFromReplica,
    /// A near-cache watch while read leases are off (`BAZAR_LEASE_MS=0`).
    LeasesOff,
    /// A lease asked by a replica the primary does not count in sync.
    NoGrant(NoGrant),
    /// Something only failover through etcd does (a switchover, a handover), asked of a
    /// store with static roles.
    StaticRoles(&'static str),
}

/// Why the primary grants a replica no read lease now.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum NoGrant {
    /// Not yet brought in sync since it or the primary started (its id is not known).
    Unknown,
    /// It missed writes and is catching up.
    NotInSync,
}

impl std::fmt::Display for NotHere {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            NotHere::IsPrimary => f.write_str("this catalog is the primary; it takes no pushes"),
            NotHere::NoLeasesFromReplica => f.write_str("only the primary grants leases"),
            NotHere::NoNearFromReplica => {
                f.write_str("this catalog is not the primary; near-cache leases come from it")
            }
            NotHere::LeasesOff => f.write_str("read leases are off (BAZAR_LEASE_MS=0): no near-cache lease"),
            NotHere::NoGrant(NoGrant::Unknown) => {
                f.write_str("unknown replica: not yet brought in sync since it or the primary started")
            }
            NotHere::NoGrant(NoGrant::NotInSync) => {
                f.write_str("replica is not in sync: it missed writes and is catching up")
            }
            NotHere::StaticRoles(what) => write!(f, "static roles: {what}"),
        }
    }
}
