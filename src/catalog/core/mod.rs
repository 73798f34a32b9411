//! The catalog's decisions with no I/O: the core that `docs/design/catalog-core.md` plans,
//! as far as it has grown.
//!
//! Every decision here takes what the catalog knows (read under the node's locks today, to
//! be owned by one thread later) and returns what to do; it reads no clock, takes no lock,
//! touches no file or socket, so each rule is tested as a table without a process. The
//! node performs what is decided and feeds the outcome back.
//!
//! - [`batch`]: a group commit's stages after its first decision, in their order (append,
//!   fence and push, wait out lost leases, make safe or give up, confirm, show, check,
//!   answer, notice), told what happened and saying what to do next.
//! - [`opening`]: how a primary opens writes once it settled (old leases waited out, the
//!   replicas in sync or the grace over, memcached's history checked), as stages.
//! - [`primary`]: a group commit's first decision: which waiting writes are made, with
//!   which numbers, what each is answered, which cache keys they change.
//! - [`read`]: whether a catalog may answer a read now.
//! - [`replica`]: what a replica logs of a push, what it refuses as stale, up to where it
//!   shows its writes, and whether a version answer counts.
//! - [`settle`]: whether a static primary may serve the catalog on its disk at start, or
//!   must take a replica's first (an empty, older or damaged disk).
//!
//! The other pure pieces of the catalog that the core grows from: `state.rs` (the books and
//! the deciding of writes), `failover/` (the role under etcd, `Core::step`), `near.rs`'s
//! `Table` (the front ends' sessions), `recent.rs` (history and purchase journal) and the
//! store's one lease arithmetic (`crate::lease`).

pub mod batch;
pub mod opening;
pub mod primary;
pub mod read;
pub mod replica;
pub mod settle;

/// Known bugs the simulators plant in the catalog's decisions, one at a time, to show that
/// their checks find them (`catalog::sim`, `catalog::failover::sim`). Test builds only:
/// none can reach a release binary. Each changes one line of a decision, marked where it
/// is read with `planted::on(..)`.
#[cfg(test)]
pub(crate) mod planted {
    use std::cell::Cell;

    /// The bug planted on this thread (a simulator runs each seed on one thread).
    #[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
    pub(crate) enum Planted {
        /// None: the decisions as they are.
        #[default]
        None,
        /// The election restriction ignored: a catalog not in `sync`, or behind its floor,
        /// campaigns (`failover::Core::eligible`).
        ElectBehind,
        /// The leadership counted from when the keepalive was answered, not when it was sent.
        NoMargin,
        /// The leadership counted on for more than etcd's TTL (a share of 1.25, not 0.9).
        ValidTooLong,
        /// A new primary writes at once, without waiting out the read leases the old
        /// primary granted (`failover::Core`, on winning a campaign).
        NoWaitForOldLeases,
        /// A batch counts a push as taken when it was sent, not when the replica's answer
        /// said it logged it: a replica that missed it keeps its lease through the
        /// acknowledgement (`batch::Batch::next`).
        AckBeforeLogged,
        /// A replica answers reads without a valid read lease (`read::may_read`).
        ReadWithoutLease,
        /// The near caches' fence is not awaited before the batch is shown and answered: it
        /// takes effect after the commit instead of before it (`batch::Batch::next`).
        FenceAfterCommit,
        /// A batch whose append failed goes on as if it had been logged: pushed, shown and
        /// acknowledged, on no disk of the primary's (`batch::Batch::next`).
        AckUnlogged,
        /// A primary whose disk came back empty or older serves what it holds at once,
        /// without comparing itself with its replicas (`settle::decide`).
        ServeUnsettled,
        /// A front end's fill over a marker stores data older than the marker's write
        /// (`cache::fill_by`): the stale fill that the markers exist to stop.
        FillBehindMarker,
        /// A lookup that did not find memcached's generation key may still fill
        /// (`cache::judge`): a memcached that restarted takes data read before a write whose
        /// marker went to its earlier process.
        FillUnlicensed,
    }

    thread_local! {
        static PLANTED: Cell<Planted> = const { Cell::new(Planted::None) };
    }

    /// Whether `bug` is planted on this thread.
    pub(crate) fn on(bug: Planted) -> bool {
        PLANTED.with(Cell::get) == bug
    }

    /// Plants `bug` on this thread until the guard is dropped.
    pub(crate) fn plant(bug: Planted) -> Planting {
        PLANTED.with(|p| p.set(bug));
        Planting
    }

    /// While it lives, a bug is planted; dropped, none is.
    pub(crate) struct Planting;

    impl Drop for Planting {
        fn drop(&mut self) {
            PLANTED.with(|p| p.set(Planted::None));
        }
    }
}
