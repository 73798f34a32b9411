//! A deterministic simulator of the catalog's data path with static roles: one primary, two
//! replicas, up to two front ends with near caches, in half the seeds a memcached, and
//! clients, on virtual time, under faults drawn from a seed; every run's history judged by
//! the linearizability checker.
//!
//! # What is real and what is modelled
//! The decisions are the store's own code: the primary decides each batch with
//! `core::primary::decide`, runs it through `core::batch::Batch` (append, fence and push,
//! wait out a lost lease, confirm the near caches, show, notice, answer) and judges each
//! replica's answer with `core::primary::took`; it grants read leases with
//! `catalog::lease::Grant` and near-cache leases with `catalog::near::Table`. A replica logs
//! what `core::replica::take` says, answers reads when `core::read::may_read` allows it,
//! asks the primary about a dirty book and shows what `core::replica::version_answer`
//! says, and holds its lease as `catalog::lease::ReplicaLease`. A front end serves from
//! `frontend::near::NearCache`, then from memcached, whose lookups `cache::judge` judges and
//! whose fills `cache::fill_by` says how to store (an `add`, a `cas` or none). The simulator
//! plays the shells around them, as `primary.rs`, `replica.rs`, `node.rs`, the front end's
//! `cached_read` and `watch.rs` and `cache::Cache` do: messages, timers, the disk (an append
//! is durable at once, or refused whole while the process's disk fails), restarts, and
//! memcached itself (items with CAS tokens; `add` stores only where a key is absent, `cas`
//! only over the item it names; all lost when it restarts).
//!
//! Simplified against the shells: a replica a few writes behind is treated as having
//! missed the batch (the real primary sends it the tail first); a primary brings an
//! out-of-sync replica back by pushing its whole log (the real one sends what the replica
//! lacks); the front ends cache the books' info only (the search and list keys are
//! marked, never read).
//!
//! memcached, when a seed has it: the primary sets a batch's markers (`M<seq>` on each key
//! it fences, the undelivered ones first) while it pushes, and reports the push only once
//! they are answered or memcached's timeout passed (then they are kept and sent again);
//! between batches, every quarter second while it may write and read (the real thread
//! waits `cache::BACKOFF` after a failure, which only delays fills), it sends what is
//! undelivered and sets the generation key where it is missing (`ensure_generation`). A
//! front end whose near cache misses looks the key and the generation key up together,
//! serves data it finds (and fills its near cache), and otherwise reads a catalog and
//! fills over the connection of its lookup: a fill reaches the memcached process that
//! answered the lookup or none (`cache::Slot`). A lookup not answered in time turns its
//! front end's cache off for `cache::BACKOFF`. Half the seeds with memcached run the front
//! ends without near caches, so that more reads reach it.
//!
//! A primary that starts settles first, as `settle_with_replicas` does: it asks each
//! replica what it holds, lets `core::settle::decide` judge the answers, takes the log of
//! the replica it names (then asks again) or waits a round, and until it serves it answers
//! no read, grants no lease, answers no near-cache watch (`near_watch` refuses it), decides
//! no write and brings no replica in sync; writes open a lease after it settled
//! (`open_writes`).
//!
//! # The world
//! - **Time**: one true clock in microseconds; each process has its own clock
//!   (`local(t) = offset + t * rate`, rates within ±3 % when the seed draws drift), and its
//!   `now` is a base `Instant` plus its local time.
//! - **Network**: every message is delayed (0.1-2 ms, and with spikes up to 1.5 s), may be
//!   lost or (half the seeds, 0.5-5 % of messages) delivered twice, the copy within 20 ms
//!   and possibly first (any message but a write: HTTP carries a request once, and the
//!   store's own messages must bear being sent again), and is dropped while its path is
//!   cut (one way or both). A process that restarts
//!   gets nothing sent to it before (its connections died), nor an answer to a request of
//!   its earlier run.
//! - **Faults** in the first 8 s (swarm: each seed turns each kind on or off, then draws a
//!   few): pauses (events wait, clocks run), crashes and restarts of any process (a replica
//!   and the primary keep their logs), cuts between the primary and a replica or a front
//!   end, loss, spikes, drift; and, drawn apart (so the rest of a seed's faults stay as
//!   they were), spells in which a catalog's disk refuses every append: the primary
//!   answers the batch it cannot log with the cause (the checker holds each such write to
//!   have changed nothing: it leaves the history), a replica does not take the push it
//!   cannot log (a miss, as the primary counts one); and crashes of the primary whose disk
//!   comes back empty or holding a prefix of its log (an old snapshot), its record of
//!   near-cache leases gone with it, the replicas' disks kept; and crashes of memcached (it
//!   comes back empty, without the generation key) and pauses of it (which hold the
//!   primary's markers past its timeout, harmlessly: a paused memcached answers no front
//!   end either, and takes messages in the order they came). Between the primary and
//!   memcached no message is lost, delayed by a spike or delivered twice: a memcached
//!   alive but not answering the primary in time while it answers the front ends is the
//!   case the README leaves outside the guarantee (seed 8,505 of the
//!   first draft, which let a marker of write 27 be delivered again after write 28's, is
//!   that case: a front end then stored data at 27 by `cas` over the older marker, and
//!   served it after 28 was acknowledged). Then everything heals, clients stop at 10 s,
//!   and the run ends at 14 s.
//! - **Clients** (6, two of which only read): one operation at a time on 3 books: reads
//!   through any catalog or front end, price, stock and stock-delta updates and purchases
//!   (with an order id) through any catalog (a replica forwards them). An answer not back in
//!   2 s is unknown; a purchase is asked again, with the same order, up to twice (the
//!   catalog takes one copy per order), and stays one operation of the history: an answer
//!   that it was made is its outcome, a refusal leaves it unknown (an earlier try may still
//!   be on its way).
//!
//! # Checks (every run)
//! - The clients' history is linearizable (`linearizable::checker`), book by book.
//! - Every acknowledged purchase's order is in the primary's purchase journal, and no
//!   order took two copies (purchases are asked again after timeouts).
//! - After the heal every replica is in sync and holds the primary's log, write for write.
//!
//! # Seed, trace, replay
//! `BAZAR_SIM_SEED=N` runs seed `N` and prints its trace (`BAZAR_SIM_PLANTED=` one of
//! `AckBeforeLogged`, `ReadWithoutLease`, `FenceAfterCommit`, `AckUnlogged`,
//! `ServeUnsettled`, `FillBehindMarker`, `FillUnlicensed` replays a planted bug's run);
//! `BAZAR_SIM_SEEDS=N` runs `N` seeds (default 200) from `BAZAR_SIM_FIRST` (default 0).
//! `cargo test --lib catalog::sim -- --nocapture` prints the runs per second.

use super::{across_cores, fail_on, fnv, planted_from_env, show_replay, Clock, Rng, Scheduler, Seeds};
use crate::cache::{fill_by, judge, FillBy, Found};
use crate::catalog::core::batch::{Batch, Do, Done};
use crate::catalog::core::opening::{self, Opening};
use crate::catalog::core::planted::{plant, Planted};
use crate::catalog::core::primary::{chains_diverged, decide, took, Asked, Decided, Took};
use crate::catalog::core::read::{commit_point, may_read, ReadRole, Reader};
use crate::catalog::core::replica::{take, version_answer, Position};
use crate::catalog::core::settle::{self, Settle};
use crate::catalog::lease::{Grant, ReplicaLease};
use crate::catalog::near::{Reply, Table};
use crate::catalog::node::RETRY_INTERVAL;
use crate::catalog::primary::SILENT_REPLICA_WAIT;
use crate::catalog::recent::{History, Journal, Recent};
use crate::catalog::state::{Catalog, Refusal, Write};
use crate::catalog::store::chain_start;
use crate::frontend::near::NearCache;
use crate::linearizable::checker::{self, Call, Initial, Op, Ret, State, Verdict};
use crate::money::Money;
use crate::wire::{Book, BookUpdate, Committed, Identity, Replicate};
use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// The read lease and the near caches' lease.
const L: Duration = Duration::from_secs(1);
const L_US: u64 = 1_000_000;
/// `node.rs`' push timeout; the clients' patience; the primary's keeper period.
const PUSH_TIMEOUT_US: u64 = 1_000_000;
const CALL_TIMEOUT_US: u64 = 2_000_000;
const KEEPER_US: u64 = 100_000;
/// A front end gives a watch up when it is not answered within this (`watch.rs`: the
/// primary's hold, a quarter lease, and `WATCH_SLACK`, a second).
const WATCH_TIMEOUT_US: u64 = L_US / 4 + 1_000_000;
/// The phases of a run.
const FAULTS_US: u64 = 8_000_000;
const CLIENTS_STOP_US: u64 = 10_000_000;
const END_US: u64 = 14_000_000;
/// memcached's timeout (`cache::OP_TIMEOUT`), a front end's time off after a failed lookup
/// (`cache::BACKOFF`), and how often the primary checks the generation key.
const MC_TIMEOUT_US: u64 = 250_000;
const MC_BACKOFF_US: u64 = 3_000_000;
const GENERATION_US: u64 = 250_000;
/// Most writes the primary decides in one batch.
const BATCH_MOST: usize = 64;
const BOOKS: [u32; 3] = [1, 2, 3];
const CLIENTS: usize = 6;
/// Of them, the ones that only read.
const READERS: usize = 2;
const PRIMARY: usize = 0;
const REPLICAS: [usize; 2] = [1, 2];

/// Who a message goes to, or an answer comes back to.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Who {
    /// A process, and its incarnation: a sender's when it sent (an answer reaches only that
    /// run of it), or [`ANY`] for a request.
    Node(usize, u32),
    Client(usize),
}

/// A request goes to whichever run of a process is up.
const ANY: u32 = u32::MAX;

fn node(n: usize) -> Who {
    Who::Node(n, ANY)
}

/// What a catalog answers a read or a write.
#[derive(Clone, Debug)]
enum Res {
    /// The book as the read or write left it, and the catalog's write number then.
    Book(Book, u64),
    /// The write was refused by the catalog's rules and changed nothing.
    Refused,
    /// The write was not made, whatever the rules say (its batch could not be logged): it
    /// changed nothing.
    Failed,
    /// The read was not answered (no lease, catching up...).
    Unavailable,
}

#[derive(Clone, Debug)]
enum Msg {
    Read {
        tag: u64,
        id: u32,
    },
    Write {
        tag: u64,
        asked: Asked,
    },
    Answer {
        tag: u64,
        res: Res,
    },
    Push {
        round: u64,
        writes: Vec<Replicate>,
        committed: Option<u64>,
    },
    Ack {
        round: u64,
        seq: u64,
        id: String,
    },
    LeaseAsk {
        id: String,
        sent: Instant,
    },
    LeaseAnswer {
        sent: Instant,
        granted: bool,
        run: String,
    },
    Version {
        q: u64,
    },
    VersionAnswer {
        q: u64,
        committed: u64,
    },
    /// A front end's watch: `sent` is when (its clock), `number` which of its watches.
    Watch {
        session: String,
        seen: u64,
        sent: Instant,
        number: u64,
    },
    WatchAnswer {
        sent: Instant,
        number: u64,
        reply: Reply,
    },
    /// A starting primary asks a replica what it holds (`GET /internal/identity`), and
    /// takes the catalog of one that holds more (`copy_catalog`): in settling round `round`.
    WhatDoYouHold {
        round: u64,
    },
    Holds {
        round: u64,
        seq: u64,
    },
    Copy {
        round: u64,
    },
    Copied {
        round: u64,
        log: Vec<Replicate>,
    },
    /// A front end's lookup in memcached (`Cache::lookup`: the key and, in the same write,
    /// the generation key), and its answer: whether the generation key is there, and the
    /// key's value with its CAS token.
    McGet {
        tag: u64,
        key: String,
    },
    McGot {
        tag: u64,
        generation: bool,
        item: Option<(Value, u64)>,
    },
    /// A front end's fill (`Cache::fill`), sent to the memcached process its lookup reached
    /// (a connection dies with its process): no answer awaited.
    McFill {
        key: String,
        value: Value,
        by: FillBy,
    },
    /// The primary's markers (`Cache::invalidate`, the pending ones first); with
    /// `generation`, between batches, then the generation key where it is missing
    /// (`retry_pending`, `ensure_generation`). Answered when done.
    McMark {
        id: u64,
        marks: Vec<(String, u64)>,
        generation: bool,
    },
    McMarked {
        id: u64,
    },
}

/// A memcached value (`D<seq>\n<book>` or `M<seq>`), shown as text in a trace.
#[derive(Clone, PartialEq, Eq)]
struct Value(Vec<u8>);

impl std::fmt::Debug for Value {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{:?}", String::from_utf8_lossy(&self.0))
    }
}

#[derive(Clone, Debug)]
enum Timer {
    Keeper,
    Renew,
    RoundTimeout(u64),
    WaitedOut,
    ConfirmCheck,
    WatchDue(u64),
    HeldWatch(u64),
    /// A settling round's answers are due (the rest count as silent).
    SettleDue(u64),
    /// A settling round's copy is due (else it failed, and a round later it asks again).
    CopyDue(u64),
    /// The next settling round.
    SettleAgain,
    /// The primary's exchange with memcached `id` (markers, or the generation check) is
    /// over if not answered by now (`cache::OP_TIMEOUT`).
    McDue(u64),
    /// The primary's generation check is due (every [`GENERATION_US`]).
    Generation,
    /// A front end's lookup `tag` is over if not answered by now: the cache is off a while.
    LookupDue(u64),
}

#[derive(Clone, Debug)]
enum Fault {
    Pause(usize, u64),
    Crash(usize),
    Restart(usize),
    Cut {
        from: usize,
        to: usize,
        on: bool,
    },
    Spikes(bool),
    /// Process `n`'s disk takes no append (full, failing) while on.
    Disk(usize, bool),
    /// Process `n`'s disk, while it is down, comes back holding only the first `keep`
    /// thousandths of its log (0: empty), its record of near-cache leases lost with it.
    Volume {
        n: usize,
        keep: u64,
    },
    Heal,
}

#[derive(Clone, Debug)]
enum Ev {
    /// A message from `from` to `to`, sent at true time `sent`.
    Deliver {
        from: Who,
        to: Who,
        sent: u64,
        msg: Msg,
    },
    Timer {
        node: usize,
        inc: u32,
        timer: Timer,
    },
    Fault(Fault),
    ClientNext(usize),
    ClientTimeout {
        client: usize,
        op: usize,
    },
}

/// The primary's state in memory (lost on a crash) over its log (kept).
struct Primary {
    catalog: Catalog,
    recent: Recent,
    links: Vec<Grant>,
    queue: Vec<(Who, u64, Asked)>,
    busy: Busy,
    /// The last batch sent no commit notice (a batch waited): the next push carries it, or
    /// the writer sends it as a batch of its own (`Batch::notice_only`).
    owed: bool,
    near: Table,
    /// Held watches: id -> (front end, session, seen, sent, its number).
    held: BTreeMap<u64, (Who, String, u64, Instant, u64)>,
    /// When it started, on its own clock.
    started: u64,
    /// Its disk said at start that an earlier run granted near-cache leases (`near.rs`'
    /// record): reads open one lease after the start, whatever the replicas.
    near_before: bool,
    /// A replica being brought back in sync: its link and the push round asking it.
    syncing: Option<(usize, u64)>,
    /// Its comparison with its replicas at start (`settle_with_replicas`), or when it ended.
    start: Start,
    /// The link the keeper looks at first next time (each in turn).
    next_link: usize,
    next_id: u64,
    /// Markers not delivered (memcached did not answer), sent again before the next ones.
    pending: BTreeMap<String, u64>,
    /// The batch's markers out now: the exchange and what it carries.
    marking: Option<(u64, Vec<(String, u64)>)>,
    /// A batch's push round that ended while its markers were out (the latest lost lease
    /// end): the batch goes on once they are delivered or given up (`primary.rs` joins the
    /// marker thread before it reports the push).
    pushed: Option<Option<Instant>>,
    /// The generation check came while a batch was under way: it runs between batches.
    generation_due: bool,
    /// Replicas found holding more than this primary's log, by link: never brought in sync.
    refused: Vec<bool>,
}

/// A primary's start: settling, it answers no read, grants no lease, answers no watch,
/// decides no write and brings no replica in sync.
enum Start {
    Settling(Settling),
    /// Settled: writes open as the writer's opening says (`core::opening`, stepped on the
    /// primary's own clock: a lease later, then once every replica is in sync or the
    /// farewell grace has passed; the model has no memcached history to check).
    Settled(Opening),
}

impl Primary {
    /// Its comparison with its replicas, while it has not settled.
    fn settling(&mut self) -> Option<&mut Settling> {
        match &mut self.start {
            Start::Settling(s) => Some(s),
            Start::Settled(_) => None,
        }
    }
}

/// A starting primary's comparison with its replicas (`primary.rs`' `settle_with_replicas`).
struct Settling {
    /// The round of questions now: answers to an earlier one are ignored.
    round: u64,
    /// What each replica answered this round (by link; `None`: not yet).
    answers: Vec<Option<u64>>,
    step: Step,
}

/// Where a settling round is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Step {
    /// Waiting for the replicas' answers.
    Asking,
    /// Taking this replica's catalog.
    Copying(usize),
    /// Told to wait: the next round begins after [`RETRY_INTERVAL`].
    Waiting,
}

enum Busy {
    Idle,
    Batch(Box<InBatch>),
    /// The generation check (`cache.retry_pending`, `ensure_generation`), which holds the
    /// writer lock: exchange `id` and the pending markers it carries.
    Generation(u64, Vec<(String, u64)>),
}

struct InBatch {
    batch: Batch,
    step: Do,
    writes: Vec<Replicate>,
    keys: Vec<String>,
    answers: Vec<(Who, u64, Result<Book, Refusal>)>,
    round: Option<Round>,
    /// The batch before left it its commit notice, not yet sent (its push sends it).
    owed: bool,
}

struct Round {
    id: u64,
    last: u64,
    waiting: BTreeSet<usize>,
    lost_until: Option<Instant>,
}

struct Replica {
    catalog: Catalog,
    lease: ReplicaLease,
    id: String,
    /// Forwarded writes and version queries waiting: tag -> (who asked, their tag, book).
    forwarded: BTreeMap<u64, (Who, u64)>,
    asked: BTreeMap<u64, (Who, u64, u32)>,
    next_id: u64,
}

struct Front {
    near: NearCache,
    session: String,
    seen: u64,
    /// The watch out now (its number).
    watch: u64,
    /// Reads under way (in memcached or a catalog): tag -> (client, its tag, book).
    reads: BTreeMap<u64, (Who, u64, u32)>,
    /// Of them, the ones whose memcached lookup is out.
    looking: BTreeSet<u64>,
    /// Of them, the ones that missed in memcached: the process answered (its
    /// incarnation, which the fill goes to) and what the key held (`cache::Slot`).
    slots: BTreeMap<u64, (u32, Option<(u64, u64)>)>,
    /// memcached is not asked before this (its own clock): a lookup failed.
    mc_off_until: u64,
    next_id: u64,
    next_catalog: usize,
}

/// memcached: items by key, each with its CAS token, all lost when it restarts.
#[derive(Default)]
struct Memcached {
    items: BTreeMap<String, (Value, u64)>,
    next_cas: u64,
}

impl Memcached {
    fn set(&mut self, key: &str, value: Vec<u8>) {
        self.next_cas += 1;
        self.items.insert(key.to_string(), (Value(value), self.next_cas));
    }
}

enum Proc {
    Primary(Box<Primary>),
    Replica(Box<Replica>),
    Front(Box<Front>),
    Memcached(Box<Memcached>),
}

struct Node {
    clock: Clock,
    up: bool,
    inc: u32,
    /// True time of the last start.
    started: u64,
    paused_until: u64,
    /// A replica's and the primary's log, kept across crashes.
    log: Log,
    /// Its disk takes no append now (a [`Fault::Disk`]).
    disk_fails: bool,
    /// The primary's record that a run of it granted near-cache leases, kept across crashes.
    near_record: bool,
    /// The primary's last write acknowledged (the simulator's bookkeeping, no state of the
    /// store's): a disk that comes back holding less than it while no replica holds it
    /// either is the gap the README documents, not a fault this run may draw.
    acked_upto: u64,
    proc: Proc,
}

impl Node {
    /// A process up in its first run, with an empty disk.
    fn new(clock: Clock, proc: Proc) -> Node {
        Node {
            clock,
            up: true,
            inc: 0,
            started: 0,
            paused_until: 0,
            log: Log::default(),
            disk_fails: false,
            near_record: false,
            acked_upto: 0,
            proc,
        }
    }
}

struct Client {
    op: Option<usize>,
    /// The number of its request now: only its answer counts.
    tag: u64,
    orders: u64,
    /// A purchase under way, kept to ask again with the same order id after a timeout (as an
    /// order server does: the catalog takes one copy per order), and the tries left.
    purchase: Option<(Asked, u32)>,
}

/// How often a client asks again for a purchase whose answer did not come.
const PURCHASE_RETRIES: u32 = 2;

/// The swarm drawn for a seed: which kinds of fault it runs.
#[derive(Debug)]
struct Swarm {
    fronts: usize,
    pauses: bool,
    crashes: bool,
    cuts: bool,
    spikes: bool,
    drift: bool,
    loss: f64,
    /// How often a message is delivered twice.
    dup: f64,
    /// Whether catalogs' disks refuse appends for a while.
    disks: bool,
    /// Whether the primary's disk comes back empty or older after a crash.
    volumes: bool,
    /// Whether the store has a memcached, between the front ends' near caches and the
    /// catalogs, and whether the front ends have near caches.
    memcached: bool,
    near: bool,
}

/// What a run did.
pub(crate) struct Outcome {
    pub hash: u64,
    pub failure: Option<String>,
    pub events: u64,
    pub ops: usize,
    pub acked: usize,
    /// How much of the data path it exercised: batches that waited out a lost replica's
    /// lease, reads that asked the primary about a dirty book, near-cache hits.
    pub tally: Tally,
    pub trace: Option<Vec<String>>,
}

#[derive(Clone, Copy, Debug, Default)]
pub(crate) struct Tally {
    pub waits: u64,
    pub versions: u64,
    pub near_hits: u64,
    /// Batches the primary's disk refused, and pushes a replica's disk refused.
    pub refused_batches: u64,
    pub refused_pushes: u64,
    /// Batches whose commit notice the next batch's push carried.
    pub carried: u64,
    /// Primaries whose disk came back empty or older, and that took a replica's log.
    pub copies: u64,
    /// Replicas left out of sync at the end, holding more than a primary whose disk came
    /// back empty or older.
    pub refused: u64,
    /// memcached hits, and fills it stored.
    pub mc_hits: u64,
    pub mc_fills: u64,
}

struct World {
    t: u64,
    base: Instant,
    rng: Rng,
    /// The events to come; boxed, as the scheduler's map moves its values within its
    /// nodes.
    queue: Scheduler<Box<Ev>>,
    nodes: Vec<Node>,
    clients: Vec<Client>,
    ops: Vec<Op>,
    /// Reads whose answer constrains nothing (not answered): left out of the history.
    dropped: BTreeSet<usize>,
    /// Order ids of acknowledged purchases.
    bought: Vec<String>,
    cut: BTreeSet<(usize, usize)>,
    spikes: bool,
    loss: f64,
    /// How often a message is delivered twice, and the generator that draws the second
    /// deliveries: apart from `rng`, so that a seed that draws no duplicates runs as it did
    /// before duplicates were simulated.
    dup: f64,
    dups: Rng,
    healed: bool,
    failure: Option<String>,
    hash: u64,
    trace: Option<Vec<String>>,
    events: u64,
    tally: Tally,
    /// memcached's process, when the store has one (after every other).
    mc: Option<usize>,
    /// Whether the front ends have near caches (half the seeds with memcached run
    /// without, so that more reads reach memcached).
    near: bool,
    /// A volume fault cut the primary's log: only then may a replica hold writes it lacks.
    volume_lost: bool,
}

fn initial_books() -> Vec<Book> {
    BOOKS
        .iter()
        .map(|&id| Book {
            id,
            title: format!("Book {id}"),
            topic: "sim".into(),
            price: Money::from_cents(500),
            quantity: 5,
        })
        .collect()
}

/// The catalog a process rebuilds from its log at start: every logged write shown.
fn catalog_of(log: &[Replicate]) -> Catalog {
    let mut catalog = Catalog::new(initial_books(), 0).expect("the books are valid");
    for w in log {
        catalog.commit(w.book.clone(), w.seq);
    }
    catalog
}

/// A process's log, with its chain after each write kept in step (`History::chain`), so
/// that comparing two logs' chains at a write, as every push's answer is judged, costs
/// nothing per answer (folding the whole log for each made runs ten times slower).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
struct Log {
    writes: Vec<Replicate>,
    chains: Vec<u32>,
}

impl Log {
    fn of(writes: Vec<Replicate>) -> Log {
        let mut log = Log::default();
        log.extend(writes);
        log
    }

    fn extend(&mut self, writes: impl IntoIterator<Item = Replicate>) {
        for w in writes {
            let before = self.chain_at(self.writes.len() as u64).expect("the chain after the last write");
            self.chains.push(w.chain(before));
            self.writes.push(w);
        }
    }

    fn truncate(&mut self, len: usize) {
        self.writes.truncate(len);
        self.chains.truncate(len);
    }

    /// The chain after write `seq` (`History::chain_at`), when the log holds that write.
    fn chain_at(&self, seq: u64) -> Option<u32> {
        match seq {
            0 => Some(chain_start("sim", 0)),
            _ => self.chains.get(usize::try_from(seq - 1).ok()?).copied(),
        }
    }
}

impl std::ops::Deref for Log {
    type Target = [Replicate];

    fn deref(&self) -> &[Replicate] {
        &self.writes
    }
}

/// The purchase journal and history a process rebuilds from its log at start.
fn recent_of(log: &[Replicate]) -> Recent {
    let mut recent = Recent { journal: Journal::default(), history: History::new(0, 0, Some(chain_start("sim", 0))) };
    let rows: Vec<Arc<Replicate>> = log.iter().cloned().map(Arc::new).collect();
    recent.record(&rows);
    recent
}

/// The opening's setting of the simulated primary, whose farewell grace ends at
/// `grace_until` (no memcached history to check: the model has none).
fn opening_setting(grace_until: Instant) -> opening::Setting {
    opening::Setting {
        lease: Duration::from_micros(L_US),
        grace_until,
        cache: false,
        fill_window: crate::cache::FILL_WINDOW,
        backoff: crate::cache::BACKOFF,
    }
}

fn new_primary(log: &[Replicate], started: u64, near_before: bool) -> Primary {
    Primary {
        catalog: catalog_of(log),
        recent: recent_of(log),
        links: vec![Grant::default(); REPLICAS.len()],
        queue: Vec::new(),
        busy: Busy::Idle,
        owed: false,
        near: Table::new(L),
        held: BTreeMap::new(),
        started,
        near_before,
        syncing: None,
        start: Start::Settling(Settling { round: 0, answers: vec![None; REPLICAS.len()], step: Step::Waiting }),
        next_link: 0,
        next_id: 0,
        pending: BTreeMap::new(),
        marking: None,
        pushed: None,
        generation_due: false,
        refused: vec![false; REPLICAS.len()],
    }
}

fn new_replica(n: usize, inc: u32, log: &[Replicate]) -> Replica {
    Replica {
        catalog: catalog_of(log),
        lease: ReplicaLease::new(L),
        id: format!("r{n}.{inc}"),
        forwarded: BTreeMap::new(),
        asked: BTreeMap::new(),
        next_id: 0,
    }
}

fn new_front(n: usize, inc: u32) -> Front {
    Front {
        near: NearCache::new(1 << 20),
        session: format!("f{n}.{inc}"),
        seen: 0,
        watch: 0,
        reads: BTreeMap::new(),
        looking: BTreeSet::new(),
        slots: BTreeMap::new(),
        mc_off_until: 0,
        next_id: 0,
        next_catalog: 0,
    }
}

/// What a near cache stores for a book: its price and stock.
fn encode(book: &Book) -> Vec<u8> {
    format!("{},{}", book.price.cents(), book.quantity).into_bytes()
}

fn decode(id: u32, bytes: &[u8]) -> Book {
    let text = std::str::from_utf8(bytes).expect("stored by encode");
    let (price, quantity) = text.split_once(',').expect("stored by encode");
    Book {
        id,
        title: format!("Book {id}"),
        topic: "sim".into(),
        price: Money::from_cents(price.parse().expect("cents")),
        quantity: quantity.parse().expect("stock"),
    }
}

/// Runs one seed with `planted` planted; keeps the trace when `trace`.
pub(crate) fn run(seed: u64, planted: Planted, trace: bool) -> Outcome {
    run_with(seed, planted, trace, None)
}

/// [`run`], with the faults `script` (true time, fault) instead of drawn ones when given.
fn run_with(seed: u64, planted: Planted, trace: bool, script: Option<Vec<(u64, Fault)>>) -> Outcome {
    let _planting = plant(planted);
    let mut rng = Rng(seed ^ 0x00da_7a5e_ed00);
    let fronts = rng.range(0, 2) as usize;
    let swarm = Swarm {
        // A scripted schedule runs with both front ends.
        fronts: if script.is_some() { 2 } else { fronts },
        pauses: rng.chance(0.5),
        crashes: rng.chance(0.5),
        cuts: rng.chance(0.6),
        spikes: rng.chance(0.5),
        drift: rng.chance(0.5),
        loss: if rng.chance(0.5) { rng.range(1, 30) as f64 / 1000.0 } else { 0.0 },
        dup: 0.0,
        disks: false,
        volumes: false,
        memcached: false,
        near: true,
    };
    let mut dups = Rng(seed ^ 0x0d0b_1e5e_ed00);
    let swarm = Swarm { dup: if dups.chance(0.5) { dups.range(5, 50) as f64 / 1000.0 } else { 0.0 }, ..swarm };
    // Drawn apart, as the duplicates are, so that the other faults of a seed stay as they were.
    let mut disks = Rng(seed ^ 0xd15c_fa11_ed00);
    let swarm = Swarm { disks: disks.chance(0.4), ..swarm };
    let mut volumes = Rng(seed ^ 0x7010_3e55_ed00);
    let swarm = Swarm { volumes: volumes.chance(0.3), ..swarm };
    // Drawn apart too: a seed without memcached runs as it did before memcached was
    // simulated.
    let mut mcs = Rng(seed ^ 0x3e3c_ac4e_ed00);
    let memcached = mcs.chance(0.5);
    let swarm = Swarm { memcached, near: !(memcached && mcs.chance(0.5)), ..swarm };
    let mut nodes = Vec::new();
    for n in 0..1 + REPLICAS.len() + swarm.fronts {
        let rate = if swarm.drift { rng.range(970_000, 1_030_000) } else { 1_000_000 };
        let clock = Clock { offset: rng.range(0, 1_000_000), rate };
        let proc = match n {
            PRIMARY => Proc::Primary(Box::new(new_primary(&[], clock.local(0), false))),
            n if REPLICAS.contains(&n) => Proc::Replica(Box::new(new_replica(n, 0, &[]))),
            n => Proc::Front(Box::new(new_front(n, 0))),
        };
        nodes.push(Node::new(clock, proc));
    }
    let mc = swarm.memcached.then_some(nodes.len());
    if swarm.memcached {
        let clock = Clock { offset: mcs.range(0, 1_000_000), rate: 1_000_000 };
        nodes.push(Node::new(clock, Proc::Memcached(Box::default())));
    }
    let mut w = World {
        t: 0,
        base: Instant::now(),
        rng,
        queue: Scheduler::new(),
        nodes,
        clients: (0..CLIENTS).map(|_| Client { op: None, tag: 0, orders: 0, purchase: None }).collect(),
        ops: Vec::new(),
        dropped: BTreeSet::new(),
        bought: Vec::new(),
        cut: BTreeSet::new(),
        spikes: false,
        loss: swarm.loss,
        dup: swarm.dup,
        dups,
        healed: false,
        failure: None,
        hash: 0xcbf2_9ce4_8422_2325,
        trace: trace.then(Vec::new),
        events: 0,
        tally: Tally::default(),
        mc,
        near: swarm.near,
        volume_lost: false,
    };
    w.line(None, || format!("seed {seed}, planted {planted:?}, {swarm:?}"));
    match script {
        None => {
            w.draw_faults(&swarm);
            if swarm.disks {
                w.draw_disk_faults(&mut disks);
            }
            if swarm.volumes {
                w.draw_volume_faults(&mut volumes);
            }
            if swarm.memcached {
                w.draw_memcached_faults(&mut mcs);
            }
        }
        Some(faults) => {
            w.loss = 0.0;
            w.dup = 0.0;
            for (at, fault) in faults {
                w.schedule(at, Ev::Fault(fault));
            }
        }
    }
    w.schedule(FAULTS_US, Ev::Fault(Fault::Heal));
    for n in 0..w.nodes.len() {
        w.start(n);
    }
    for c in 0..CLIENTS {
        let at = w.rng.range(0, 20_000);
        w.schedule(at, Ev::ClientNext(c));
    }
    while let Some((t, ev)) = w.queue.next_until(END_US) {
        if w.failure.is_some() {
            break;
        }
        w.t = t;
        w.events += 1;
        w.event(*ev);
    }
    w.t = END_US;
    if w.failure.is_none() {
        w.finish();
    }
    let acked = w.ops.iter().filter(|o| o.resp.is_some() && o.call != Call::Read).count();
    Outcome {
        hash: w.hash,
        failure: w.failure,
        events: w.events,
        ops: w.ops.len(),
        acked,
        tally: w.tally,
        trace: w.trace,
    }
}

impl World {
    /// A line of the trace, made only when the trace is kept.
    fn line(&mut self, node: Option<usize>, text: impl FnOnce() -> String) {
        if let Some(trace) = &mut self.trace {
            let who = node.map_or("  ".to_string(), |n| format!("n{n}"));
            trace.push(format!("{:>10.3}ms {who} {}", self.t as f64 / 1000.0, text()));
        }
    }

    fn fail(&mut self, why: String) {
        self.line(None, || format!("FAILED: {why}"));
        self.failure.get_or_insert(why);
    }

    fn schedule(&mut self, t: u64, ev: Ev) {
        self.queue.at(t, Box::new(ev));
    }

    fn local(&self, n: usize) -> u64 {
        self.nodes[n].clock.local(self.t)
    }

    fn now(&self, n: usize) -> Instant {
        self.base + Duration::from_micros(self.local(n))
    }

    /// The true time at which process `n`'s clock shows `at`.
    fn true_at(&self, n: usize, at: Instant) -> u64 {
        let local = at.saturating_duration_since(self.base).as_micros() as u64;
        self.nodes[n].clock.true_of(local).max(self.t)
    }

    /// Sets a timer of process `n` for `after` of its own clock.
    fn timer(&mut self, n: usize, after: u64, timer: Timer) {
        let at = self.nodes[n].clock.true_of(self.local(n) + after).max(self.t + 1);
        let inc = self.nodes[n].inc;
        self.schedule(at, Ev::Timer { node: n, inc, timer });
    }

    fn timer_at(&mut self, n: usize, at: Instant, timer: Timer) {
        let t = self.true_at(n, at).max(self.t + 1);
        let inc = self.nodes[n].inc;
        self.schedule(t, Ev::Timer { node: n, inc, timer });
    }

    /// Sends `msg` from `from` (stamped with its incarnation now) to `to`.
    fn send(&mut self, from: Who, to: Who, msg: Msg) {
        let from = match from {
            Who::Node(n, _) => Who::Node(n, self.nodes[n].inc),
            client => client,
        };
        let path = match (from, to) {
            (Who::Node(a, _), Who::Node(b, _)) => Some((a, b)),
            _ => None,
        };
        // Between the primary and memcached nothing is lost, held up past memcached's
        // timeout or delivered twice: a memcached that is alive but does not answer the
        // primary in time while it answers the front ends is the one case the README leaves
        // outside the store's guarantee (ARCHITECTURE.md, "The cache"), and the primary sends
        // one batch's markers after the last's were answered (or given up, when one may
        // still land late: the same case). memcached may crash, restart or pause.
        let steady =
            path.is_some_and(|(a, b)| self.mc.is_some_and(|mc| (a, b) == (PRIMARY, mc) || (a, b) == (mc, PRIMARY)));
        if path.is_some_and(|p| self.cut.contains(&p)) || (!steady && self.rng.chance(self.loss)) {
            return;
        }
        let mut delay = self.rng.range(100, 2_000);
        if !steady && self.spikes && self.rng.chance(0.03) {
            delay += self.rng.range(100_000, 1_500_000);
        }
        let sent = self.t;
        // Any message may come twice (a push, a lease request, a version query or a watch
        // sent again, an answer replayed) but a write: one travels once per HTTP request
        // (TCP does not repeat one), and one sent again by its client is a new request.
        // Even a purchase, which its order makes safe to ask again while its answer is
        // awaited, is not safe to replay after a refusal: the copy it then takes is one no
        // order was logged for.
        let may_repeat = !matches!(msg, Msg::Write { .. }) && !steady;
        if may_repeat && self.dup > 0.0 && self.dups.chance(self.dup) {
            // The second copy may come first.
            let again = self.dups.range(100, 20_000);
            self.schedule(self.t + again, Ev::Deliver { from, to, sent, msg: msg.clone() });
        }
        self.schedule(self.t + delay, Ev::Deliver { from, to, sent, msg });
    }

    fn draw_faults(&mut self, swarm: &Swarm) {
        self.spikes = false;
        let count = self.rng.range(1, 6);
        // memcached's faults are drawn apart (`draw_memcached_faults`).
        let procs = self.mc.unwrap_or(self.nodes.len());
        for _ in 0..count {
            let at = self.rng.range(200_000, FAULTS_US - 500_000);
            let kind = self.rng.range(0, 3);
            let n = self.rng.range(0, procs as u64 - 1) as usize;
            match kind {
                0 if swarm.pauses => {
                    let long = self.rng.range(100_000, 2_000_000);
                    self.schedule(at, Ev::Fault(Fault::Pause(n, long)));
                }
                1 if swarm.crashes => {
                    self.schedule(at, Ev::Fault(Fault::Crash(n)));
                    let back = at + self.rng.range(100_000, 2_000_000);
                    self.schedule(back, Ev::Fault(Fault::Restart(n)));
                }
                2 if swarm.cuts && n != PRIMARY => {
                    let (from, to) = if self.rng.chance(0.5) { (PRIMARY, n) } else { (n, PRIMARY) };
                    let both = self.rng.chance(0.3);
                    let end = at + self.rng.range(300_000, 3_000_000);
                    for (a, b) in std::iter::once((from, to)).chain(both.then_some((to, from))) {
                        self.schedule(at, Ev::Fault(Fault::Cut { from: a, to: b, on: true }));
                        self.schedule(end, Ev::Fault(Fault::Cut { from: a, to: b, on: false }));
                    }
                }
                3 if swarm.spikes => {
                    self.schedule(at, Ev::Fault(Fault::Spikes(true)));
                    let end = at + self.rng.range(500_000, 3_000_000);
                    self.schedule(end, Ev::Fault(Fault::Spikes(false)));
                }
                _ => {}
            }
        }
    }

    /// A few spells in which a catalog's disk takes no append (full or failing), from
    /// `rng` (apart from the world's draws): the primary refuses the batches it cannot log,
    /// a replica the pushes it cannot.
    fn draw_disk_faults(&mut self, rng: &mut Rng) {
        for _ in 0..rng.range(1, 3) {
            let n = if rng.chance(0.5) { PRIMARY } else { REPLICAS[rng.range(0, REPLICAS.len() as u64 - 1) as usize] };
            let at = rng.range(200_000, FAULTS_US - 2_000_000);
            let end = at + rng.range(50_000, 1_500_000);
            self.schedule(at, Ev::Fault(Fault::Disk(n, true)));
            self.schedule(end, Ev::Fault(Fault::Disk(n, false)));
        }
    }

    /// One or two crashes of the primary whose disk comes back empty or older (an old
    /// snapshot, a volume mounted from elsewhere), from `rng` (apart from the world's
    /// draws). One disk at a time: the replicas keep theirs.
    fn draw_volume_faults(&mut self, rng: &mut Rng) {
        for _ in 0..rng.range(1, 2) {
            let at = rng.range(500_000, FAULTS_US - 2_500_000);
            let keep = if rng.chance(0.4) { 0 } else { rng.range(0, 999) };
            self.schedule(at, Ev::Fault(Fault::Crash(PRIMARY)));
            self.schedule(at, Ev::Fault(Fault::Volume { n: PRIMARY, keep }));
            let back = at + rng.range(100_000, 2_000_000);
            self.schedule(back, Ev::Fault(Fault::Restart(PRIMARY)));
        }
    }

    /// A few crashes of memcached (it comes back empty, without the generation key) and
    /// pauses, from `rng` (apart from the world's draws).
    fn draw_memcached_faults(&mut self, rng: &mut Rng) {
        let Some(mc) = self.mc else { return };
        for _ in 0..rng.range(1, 3) {
            let at = rng.range(200_000, FAULTS_US - 500_000);
            if rng.chance(0.7) {
                self.schedule(at, Ev::Fault(Fault::Crash(mc)));
                let back = at + rng.range(20_000, 1_500_000);
                self.schedule(back, Ev::Fault(Fault::Restart(mc)));
            } else {
                let long = rng.range(20_000, 1_000_000);
                self.schedule(at, Ev::Fault(Fault::Pause(mc, long)));
            }
        }
    }

    /// Starts (or restarts) process `n` over what its disk holds.
    fn start(&mut self, n: usize) {
        let node = &mut self.nodes[n];
        node.up = true;
        node.started = self.t;
        match &mut node.proc {
            Proc::Primary(p) => **p = new_primary(&node.log, node.clock.local(self.t), node.near_record),
            Proc::Replica(r) => **r = new_replica(n, node.inc, &node.log),
            Proc::Front(f) => **f = new_front(n, node.inc),
            Proc::Memcached(m) => **m = Memcached::default(),
        }
        match &self.nodes[n].proc {
            Proc::Primary(_) => {
                self.timer(n, KEEPER_US, Timer::Keeper);
                if self.mc.is_some() {
                    self.timer(n, GENERATION_US, Timer::Generation);
                }
                self.ask_replicas();
            }
            Proc::Replica(_) => self.timer(n, 1, Timer::Renew),
            // A front end without a near cache watches nothing (`BAZAR_NEAR_CACHE_MB=0`).
            Proc::Front(_) if self.near => self.watch(n),
            Proc::Front(_) => {}
            Proc::Memcached(_) => {}
        }
    }

    fn event(&mut self, ev: Ev) {
        let hashed = match &ev {
            Ev::Deliver { to: Who::Node(n, _), .. } | Ev::Timer { node: n, .. } => *n as u8,
            _ => 255,
        };
        self.hash = fnv(fnv(self.hash, &self.t.to_le_bytes()), &[hashed]);
        match ev {
            Ev::Fault(f) => self.fault(f),
            Ev::ClientNext(c) => self.client_next(c),
            Ev::ClientTimeout { client, op } => {
                if self.clients[client].op != Some(op) {
                    return;
                }
                if let Some((asked, tries)) = self.clients[client].purchase.take().filter(|(_, t)| *t > 0) {
                    // The same purchase again, the same order, through any catalog: it is one
                    // operation of the history, answered by whichever answer comes first.
                    self.line(None, || format!("client {client}: op {op} timed out, asked again"));
                    self.clients[client].purchase = Some((asked.clone(), tries - 1));
                    let to = self.rng.range(0, REPLICAS.len() as u64) as usize;
                    // A new request: the answer to the one that timed out is never seen (its
                    // connection is closed).
                    self.clients[client].tag += 1;
                    let tag = self.clients[client].tag;
                    self.send(Who::Client(client), node(to), Msg::Write { tag, asked });
                    return self.schedule(self.t + CALL_TIMEOUT_US, Ev::ClientTimeout { client, op });
                }
                self.line(None, || format!("client {client}: op {op} timed out"));
                if self.ops[op].call == Call::Read {
                    self.dropped.insert(op);
                }
                self.clients[client].op = None;
                self.schedule(self.t + 1, Ev::ClientNext(client));
            }
            Ev::Deliver { from, to: Who::Client(c), msg, .. } => self.client_answer(c, from, msg),
            Ev::Deliver { from, to: Who::Node(n, inc), sent, msg } => {
                let node = &self.nodes[n];
                if !node.up || sent < node.started || (inc != ANY && inc != node.inc) {
                    return;
                }
                if node.paused_until > self.t {
                    let at = node.paused_until;
                    return self.schedule(at, Ev::Deliver { from, to: Who::Node(n, inc), sent, msg });
                }
                self.line(Some(n), || format!("<- {from:?} {msg:?}"));
                self.deliver(n, from, msg);
            }
            Ev::Timer { node: n, inc, timer } => {
                let node = &self.nodes[n];
                if !node.up || node.inc != inc {
                    return;
                }
                if node.paused_until > self.t {
                    let at = node.paused_until;
                    return self.schedule(at, Ev::Timer { node: n, inc, timer });
                }
                self.on_timer(n, timer);
            }
        }
    }

    fn fault(&mut self, fault: Fault) {
        if self.healed && !matches!(fault, Fault::Restart(_)) {
            return;
        }
        self.line(None, || format!("fault {fault:?}"));
        match fault {
            Fault::Pause(n, long) => self.nodes[n].paused_until = self.nodes[n].paused_until.max(self.t + long),
            Fault::Crash(n) => {
                self.nodes[n].up = false;
                self.nodes[n].inc += 1;
            }
            Fault::Restart(n) if !self.nodes[n].up => self.start(n),
            Fault::Restart(_) => {}
            Fault::Cut { from, to, on: true } => {
                self.cut.insert((from, to));
            }
            Fault::Cut { from, to, on: false } => {
                self.cut.remove(&(from, to));
            }
            Fault::Spikes(on) => self.spikes = on,
            Fault::Disk(n, on) => self.nodes[n].disk_fails = on,
            Fault::Volume { n, keep } if !self.nodes[n].up => {
                // One disk at a time: a write acknowledged while every replica was out of
                // sync is on this disk alone, and losing it then is two faults at once
                // (README, "A disk that comes back empty or older"): not drawn.
                let replicas = REPLICAS.iter().map(|&r| self.nodes[r].log.len() as u64).max().unwrap_or(0);
                if replicas < self.nodes[n].acked_upto {
                    let upto = self.nodes[n].acked_upto;
                    return self
                        .line(None, || format!("volume fault left out: writes {replicas}..{upto} on n{n} alone"));
                }
                let node = &mut self.nodes[n];
                let kept = node.log.len() * keep as usize / 1000;
                self.volume_lost |= kept < node.log.len();
                node.log.truncate(kept);
                node.near_record = false;
            }
            Fault::Volume { .. } => {}
            Fault::Heal => {
                self.healed = true;
                self.cut.clear();
                self.spikes = false;
                self.loss = 0.0;
                self.dup = 0.0;
                for n in 0..self.nodes.len() {
                    if !self.nodes[n].up {
                        self.nodes[n].inc += 1;
                        self.start(n);
                    }
                }
            }
        }
    }

    // ---- clients ----

    fn client_next(&mut self, c: usize) {
        if self.t >= CLIENTS_STOP_US || self.clients[c].op.is_some() {
            return;
        }
        let book = BOOKS[self.rng.range(0, BOOKS.len() as u64 - 1) as usize];
        // The first clients only read (they go on while writes wait for a primary).
        let reader = c < READERS;
        let call = match self.rng.range(0, 9) {
            _ if reader => Call::Read,
            0..=2 => Call::Read,
            5 => Call::SetPrice(self.rng.range(100, 999) as i64),
            6 => Call::SetQuantity(self.rng.range(0, 5) as i64),
            7 => Call::Delta(if self.rng.chance(0.5) { -1 } else { 2 }),
            _ => Call::Purchase,
        };
        let catalogs = 1 + REPLICAS.len();
        let to = match call {
            Call::Read => self.rng.range(0, self.mc.unwrap_or(self.nodes.len()) as u64 - 1) as usize,
            _ => self.rng.range(0, catalogs as u64 - 1) as usize,
        };
        let op = self.ops.len();
        self.clients[c].tag += 1;
        self.ops.push(Op { client: c, book, via: format!("n{to}"), call, ret: Ret::Unknown, inv: self.t, resp: None });
        self.clients[c].op = Some(op);
        let msg = match call {
            Call::Read => Msg::Read { tag: self.clients[c].tag, id: book },
            _ => {
                let update = |price: Option<i64>, quantity: Option<i64>, delta: Option<i64>| {
                    Write::Update(BookUpdate {
                        price: price.map(Money::from_cents),
                        quantity: quantity.map(|q| q as u32),
                        quantity_delta: delta,
                    })
                };
                let (write, order) = match call {
                    Call::SetPrice(p) => (update(Some(p), None, None), None),
                    Call::SetQuantity(q) => (update(None, Some(q), None), None),
                    Call::Delta(d) => (update(None, None, Some(d)), None),
                    _ => {
                        self.clients[c].orders += 1;
                        let order = format!("c{c}-{}", self.clients[c].orders);
                        (Write::Purchase, Some((order, "2026-12-04T00:00:00Z".to_string())))
                    }
                };
                let asked = Asked { id: book, write, order };
                if call == Call::Purchase {
                    self.clients[c].purchase = Some((asked.clone(), PURCHASE_RETRIES));
                }
                Msg::Write { tag: self.clients[c].tag, asked }
            }
        };
        self.send(Who::Client(c), node(to), msg);
        self.schedule(self.t + CALL_TIMEOUT_US, Ev::ClientTimeout { client: c, op });
    }

    fn client_answer(&mut self, c: usize, from: Who, msg: Msg) {
        let Msg::Answer { tag, res } = msg else { return };
        let Some(op) = self.clients[c].op.filter(|_| self.clients[c].tag == tag) else { return };
        let call = self.ops[op].call;
        self.line(None, || format!("client {c} <- {from:?}: op {op} {call:?} -> {res:?}"));
        let read = self.ops[op].call == Call::Read;
        match res {
            // A purchase asked again is answered with the book as it is when the copy was
            // taken already (by an earlier try): it says the purchase was made, not the state
            // right after it.
            Res::Book(_, _) if self.clients[c].purchase.as_ref().is_some_and(|(_, t)| *t < PURCHASE_RETRIES) => {
                self.ops[op].ret = Ret::Seen { price: None, quantity: None };
                self.ops[op].resp = Some(self.t);
            }
            Res::Book(book, _) => {
                self.ops[op].ret =
                    Ret::Seen { price: Some(book.price.cents()), quantity: Some(i64::from(book.quantity)) };
                self.ops[op].resp = Some(self.t);
            }
            // A refusal of a purchase asked again says nothing of an earlier try still on
            // its way (held in a paused replica's forward, say), which may take the copy
            // later: the outcome stays unknown.
            Res::Refused if self.clients[c].purchase.as_ref().is_some_and(|(_, t)| *t < PURCHASE_RETRIES) => {}
            Res::Refused => {
                self.ops[op].ret = Ret::Refused;
                self.ops[op].resp = Some(self.t);
            }
            Res::Unavailable if read => {
                self.dropped.insert(op);
            }
            // As a refusal: an earlier try of the purchase may still take the copy.
            Res::Failed if self.clients[c].purchase.as_ref().is_some_and(|(_, t)| *t < PURCHASE_RETRIES) => {}
            // Not made: out of the history, so that an effect of it would be one of no
            // operation, which the checker finds.
            Res::Failed => {
                self.dropped.insert(op);
            }
            // A write not answered: its outcome stays unknown.
            Res::Unavailable => {}
        }
        if self.ops[op].call == Call::Purchase && matches!(self.ops[op].ret, Ret::Seen { .. }) {
            let order = format!("c{c}-{}", self.clients[c].orders);
            self.bought.push(order);
        }
        self.clients[c].op = None;
        self.clients[c].purchase = None;
        let think = self.rng.range(0, 30_000);
        self.schedule(self.t + think, Ev::ClientNext(c));
    }

    // ---- processes ----

    fn deliver(&mut self, n: usize, from: Who, msg: Msg) {
        match &self.nodes[n].proc {
            Proc::Primary(_) => self.primary_gets(from, msg),
            Proc::Replica(_) => self.replica_gets(n, from, msg),
            Proc::Front(_) => self.front_gets(n, from, msg),
            Proc::Memcached(_) => self.memcached_gets(n, from, msg),
        }
    }

    fn on_timer(&mut self, n: usize, timer: Timer) {
        match timer {
            Timer::Keeper => {
                self.keep_in_sync();
                self.try_batch();
                self.timer(n, KEEPER_US, Timer::Keeper);
            }
            Timer::Renew => {
                let (id, sent) = (self.replica(n).id.clone(), self.now(n));
                self.send(node(n), node(PRIMARY), Msg::LeaseAsk { id, sent });
                self.timer(n, L_US / 4, Timer::Renew);
            }
            Timer::RoundTimeout(id) => self.round_over(Some(id)),
            Timer::WaitedOut => {
                if matches!(&self.primary().busy, Busy::Batch(b) if matches!(b.step, Do::WaitOut(_))) {
                    self.batch_done(Done::WaitedOut);
                }
            }
            Timer::ConfirmCheck => self.check_confirmed(),
            Timer::WatchDue(number) => {
                if self.front(n).watch == number {
                    // `watch.rs`: a failed watch (no answer in time) drops the lease and
                    // finds the primary again, with a new session (answered with a reset).
                    let inc = self.nodes[n].inc;
                    let f = self.front(n);
                    f.near.drop_lease();
                    f.session = format!("f{n}.{inc}.{number}");
                    self.watch(n);
                }
            }
            Timer::SettleDue(round) => {
                if self.primary().settling().is_some_and(|s| s.round == round && s.step == Step::Asking) {
                    self.settle();
                }
            }
            Timer::CopyDue(round) => {
                let copying = |s: &mut Settling| s.round == round && matches!(s.step, Step::Copying(_));
                if self.primary().settling().is_some_and(copying) {
                    self.settle_step(Step::Waiting);
                }
            }
            Timer::SettleAgain => {
                if self.primary().settling().is_some_and(|s| s.step == Step::Waiting) {
                    self.ask_replicas();
                }
            }
            Timer::McDue(id) => self.mc_over(id, false),
            Timer::Generation => {
                // `primary.rs`' generation thread: under the writer lock, between batches.
                self.primary().generation_due = true;
                self.try_batch();
                self.timer(n, GENERATION_US, Timer::Generation);
            }
            Timer::LookupDue(tag) => {
                if self.front(n).looking.remove(&tag) {
                    // `Cache::failed`: off a while; the read goes to a catalog.
                    let off = self.local(n) + MC_BACKOFF_US;
                    self.front(n).mc_off_until = off;
                    if let Some(&(_, _, id)) = self.front(n).reads.get(&tag) {
                        self.read_catalog(n, tag, id);
                    }
                }
            }
            Timer::HeldWatch(id) => {
                if let Some((f, _, seen, sent, number)) = self.primary().held.remove(&id) {
                    let reply = self.primary().near.idle(seen);
                    self.send(node(PRIMARY), f, Msg::WatchAnswer { sent, number, reply });
                }
            }
        }
    }

    fn primary(&mut self) -> &mut Primary {
        match &mut self.nodes[PRIMARY].proc {
            Proc::Primary(p) => p,
            _ => unreachable!("process 0 is the primary"),
        }
    }

    fn replica(&mut self, n: usize) -> &mut Replica {
        match &mut self.nodes[n].proc {
            Proc::Replica(r) => r,
            _ => unreachable!("process {n} is a replica"),
        }
    }

    fn front(&mut self, n: usize) -> &mut Front {
        match &mut self.nodes[n].proc {
            Proc::Front(f) => f,
            _ => unreachable!("process {n} is a front end"),
        }
    }

    /// The answer to a request from `to`, which it sent in its current run.
    fn answer(&mut self, n: usize, to: Who, tag: u64, res: Res) {
        self.send(node(n), to, Msg::Answer { tag, res });
    }

    // ---- the primary (`primary.rs`, `node.rs`) ----

    /// With static roles, whether a primary that started may answer reads: one lease after
    /// it started, on its own clock, or before once every replica is in sync, unless an
    /// earlier run granted near-cache leases (`reads_open`).
    fn reads_open(&mut self) -> bool {
        let local = self.local(PRIMARY);
        let p = self.primary();
        local >= p.started + L_US || (!p.near_before && p.links.iter().all(|l| l.in_sync))
    }

    /// When the primary's farewell grace ends, on its own clock: the lease of a replica
    /// that went on serving while no primary ran ends by then (`CatalogNode::writes_from`).
    fn grace_until(&mut self) -> Instant {
        let grace = crate::catalog::lease::FAREWELL_LEASES as u64 * L_US;
        self.base + Duration::from_micros(self.primary().started + grace)
    }

    /// Whether writes are open (`open_writes`, `core::opening`): one lease after the
    /// primary settled, then once every replica is in sync or the farewell grace (from the
    /// start) has passed; once open, they stay open.
    fn writes_open(&mut self) -> bool {
        let (now, setting) = (self.now(PRIMARY), opening_setting(self.grace_until()));
        let p = self.primary();
        let in_sync = p.links.iter().all(|l| l.in_sync);
        match &mut p.start {
            Start::Settled(opening) => {
                opening.next(now, in_sync, &setting);
                opening.writes_open()
            }
            Start::Settling(_) => false,
        }
    }

    fn primary_gets(&mut self, from: Who, msg: Msg) {
        let now = self.now(PRIMARY);
        match msg {
            Msg::Read { tag, id } => {
                let res = match may_read(self.primary_reader()) {
                    Ok(()) => {
                        let c = &self.primary().catalog;
                        c.book(id).map_or(Res::Unavailable, |b| Res::Book(b.clone(), c.seq()))
                    }
                    Err(_) => Res::Unavailable,
                };
                self.answer(PRIMARY, from, tag, res);
            }
            Msg::Write { tag, asked } => {
                self.primary().queue.push((from, tag, asked));
                self.try_batch();
            }
            Msg::LeaseAsk { id, sent } => {
                // `grant_lease`: a static primary grants none before its reads open.
                let open = may_read(self.primary_reader()).is_ok();
                let granted = open
                    && self
                        .primary()
                        .links
                        .iter_mut()
                        .any(|l| l.replica_id.as_deref() == Some(id.as_str()) && l.request(&id, now, L).is_ok());
                let run = format!("p{}", self.nodes[PRIMARY].inc);
                self.reply(from, Msg::LeaseAnswer { sent, granted, run });
            }
            Msg::Version { q } => {
                // `committed_answer`: only while this primary may answer reads.
                if may_read(self.primary_reader()).is_ok() {
                    let committed = self.primary().catalog.seq();
                    self.reply(from, Msg::VersionAnswer { q, committed });
                }
            }
            Msg::Ack { round, seq, id } => self.acked(from, round, seq, id),
            Msg::Holds { round, seq } => {
                let Who::Node(r, _) = from else { return };
                let Some(s) = self.primary().settling().filter(|s| s.round == round && s.step == Step::Asking) else {
                    return;
                };
                s.answers[r - REPLICAS[0]] = Some(seq);
                if s.answers.iter().all(Option::is_some) {
                    self.settle();
                }
            }
            Msg::Copied { round, log } => self.copied(from, round, log),
            Msg::McMarked { id } => self.mc_over(id, true),
            // `near_watch` refuses a watch before the primary settled (503): the front end's
            // watch fails, as one not answered does here.
            Msg::Watch { .. } if self.primary().settling().is_some() => {}
            Msg::Watch { session, seen, sent, number } => {
                // The record is on disk before the first lease of a run is granted.
                self.nodes[PRIMARY].near_record = true;
                let p = self.primary();
                let current = p.catalog.seq();
                match p.near.watch(&session, seen, current, now) {
                    Ok(Some(reply)) => self.reply(from, Msg::WatchAnswer { sent, number, reply }),
                    Ok(None) => {
                        p.next_id += 1;
                        let id = p.next_id;
                        p.held.insert(id, (from, session, seen, sent, number));
                        self.timer(PRIMARY, L_US / 4, Timer::HeldWatch(id));
                    }
                    Err(_) => {}
                }
                self.check_confirmed();
            }
            other => panic!("the primary got {other:?}"),
        }
    }

    /// A settling round: asks every replica what it holds; what has not come in
    /// [`PUSH_TIMEOUT_US`] counts as silent.
    fn ask_replicas(&mut self) {
        let p = self.primary();
        if p.settling().is_none() {
            return;
        }
        p.next_id += 1;
        let round = p.next_id;
        p.start = Start::Settling(Settling { round, answers: vec![None; REPLICAS.len()], step: Step::Asking });
        for r in REPLICAS {
            self.send(node(PRIMARY), node(r), Msg::WhatDoYouHold { round });
        }
        self.timer(PRIMARY, PUSH_TIMEOUT_US, Timer::SettleDue(round));
    }

    /// `settle_with_replicas`: what `core::settle` decides from the answers of this round.
    fn settle(&mut self) {
        let identity = |seq: u64| Identity { history: "sim".into(), seq, epoch: 0 };
        let me = identity(self.nodes[PRIMARY].log.len() as u64);
        let waited = self.local(PRIMARY).saturating_sub(self.primary().started);
        let diverged: Vec<bool> = REPLICAS
            .iter()
            .map(|&r| {
                // The primary's question with its chain (`GET /internal/log`), modelled as
                // answered at once from the replica's log as it stands.
                let chain = |n: usize| self.nodes[n].log.chain_at(me.seq);
                chains_diverged(chain(PRIMARY), chain(r)) == Some(true)
            })
            .collect();
        let Some(s) = self.primary().settling() else { return };
        let asked = REPLICAS
            .iter()
            .zip(&s.answers)
            .zip(&diverged)
            .map(|((r, answer), &diverged)| settle::Asked {
                url: format!("n{r}"),
                answer: answer.map(identity).ok_or_else(|| "no answer".to_string()),
                diverged,
            })
            .collect();
        let round = s.round;
        let decided = settle::decide(&me, false, asked, Duration::from_micros(waited), SILENT_REPLICA_WAIT);
        self.line(Some(PRIMARY), || format!("settling (holds {}): {decided:?}", me.seq));
        match decided {
            Settle::Copy { url, .. } => {
                let r: usize = url[1..].parse().expect("named n<number>");
                // `record_lost`, before the copy is tried: whatever becomes of it, reads
                // open a lease after the start.
                self.primary().near_before = true;
                self.settle_step(Step::Copying(r));
                self.send(node(PRIMARY), node(r), Msg::Copy { round });
                self.timer(PRIMARY, PUSH_TIMEOUT_US, Timer::CopyDue(round));
            }
            Settle::Wait(_) => self.settle_step(Step::Waiting),
            Settle::Serve => {
                let (now, grace_until) = (self.now(PRIMARY), self.grace_until());
                self.primary().start = Start::Settled(Opening::begin(now, &opening_setting(grace_until)));
            }
        }
    }

    /// The settling round goes on to `step` (waiting: the next round after
    /// [`RETRY_INTERVAL`]).
    fn settle_step(&mut self, step: Step) {
        if let Some(s) = self.primary().settling() {
            s.step = step;
        }
        if step == Step::Waiting {
            self.timer(PRIMARY, RETRY_INTERVAL.as_micros() as u64, Timer::SettleAgain);
        }
    }

    /// A replica's catalog, taken whole (`copy_catalog`): it replaces this disk's, and the
    /// catalog and the purchase journal are rebuilt from it (reads open one lease after the
    /// start: `settle` counted the record of near-cache leases lost with what the disk
    /// lost). The near caches' sessions and the writes waiting stay. Then it asks again.
    fn copied(&mut self, from: Who, round: u64, log: Vec<Replicate>) {
        let Who::Node(r, _) = from else { return };
        let asked = self.primary().settling().is_some_and(|s| s.round == round && s.step == Step::Copying(r));
        if !asked {
            return;
        }
        if self.nodes[PRIMARY].disk_fails {
            // The copy cannot be written: "cannot take the catalog of replica ..." and a
            // round later, again.
            return self.settle_step(Step::Waiting);
        }
        self.line(Some(PRIMARY), || format!("copied n{r}: {} writes", log.len()));
        self.tally.copies += 1;
        let p = self.primary();
        (p.catalog, p.recent) = (catalog_of(&log), recent_of(&log));
        self.nodes[PRIMARY].log = Log::of(log);
        self.ask_replicas();
    }

    /// What the primary knows of itself for the read check (`node.rs`' `reader`).
    fn primary_reader(&mut self) -> Reader {
        let reads_open = self.reads_open();
        let settled = self.primary().settling().is_none();
        Reader { serving: true, settled, role: ReadRole::Static { reads_open } }
    }

    fn reply(&mut self, to: Who, msg: Msg) {
        self.send(node(PRIMARY), to, msg);
    }

    /// The keepers (`keep_replica_in_sync`, `bring_in_sync`): a replica out of sync is sent
    /// what it lacks (here: the whole log) while batches go on, and counts as in sync only
    /// when its answer says it holds the whole log and no batch is under way (the real one
    /// closes under the writer lock, between batches). One replica at a time, each in turn.
    fn keep_in_sync(&mut self) {
        let p = self.primary();
        if p.syncing.is_some() || p.settling().is_some() {
            return;
        }
        let links = p.links.len();
        let Some(link) = (0..links).map(|i| (p.next_link + i) % links).find(|&l| !p.links[l].in_sync) else {
            return;
        };
        p.next_link = link + 1;
        p.next_id += 1;
        let round = p.next_id;
        p.syncing = Some((link, round));
        let seq = p.catalog.seq();
        let writes = self.nodes[PRIMARY].log.to_vec();
        let committed = commit_point(self.primary_reader(), seq);
        self.send(node(PRIMARY), node(REPLICAS[link]), Msg::Push { round, writes, committed });
        self.timer(PRIMARY, PUSH_TIMEOUT_US, Timer::RoundTimeout(round));
    }

    /// The writer (`writer`, `commit`): the next batch, when idle and writes are open.
    fn try_batch(&mut self) {
        if !matches!(self.primary().busy, Busy::Idle) {
            return;
        }
        if std::mem::take(&mut self.primary().generation_due) && self.fences_memcached() {
            return self.check_generation();
        }
        // The opening steps whether or not a write waits, as the real writer's turn does.
        let open = self.writes_open();
        if self.primary().queue.is_empty() || !open {
            return;
        }
        let p = self.primary();
        let owed = std::mem::take(&mut p.owed);
        let most = p.queue.len().min(BATCH_MOST);
        let taken: Vec<(Who, u64, Asked)> = p.queue.drain(..most).collect();
        let (whos, asked): (Vec<(Who, u64)>, Vec<Asked>) = taken.into_iter().map(|(w, t, a)| ((w, t), a)).unzip();
        let Decided { writes, keys, answers } = decide(&p.catalog, &p.recent.journal, 0, asked);
        let answers: Vec<(Who, u64, Result<Book, Refusal>)> =
            whos.into_iter().zip(answers).map(|((w, t), a)| (w, t, a)).collect();
        if writes.is_empty() {
            for (who, tag, a) in answers {
                let res = a.map_or(Res::Refused, |b| Res::Book(b, 0));
                self.answer(PRIMARY, who, tag, res);
            }
            if owed {
                self.notice_owed();
            }
            return;
        }
        let (batch, step) = Batch::start(true);
        let b = InBatch { batch, step: step.clone(), writes, keys, answers, round: None, owed };
        self.primary().busy = Busy::Batch(Box::new(b));
        self.perform(step);
    }

    /// Whether the primary may set memcached's generation key (`fences_memcached`):
    /// settled, writes and reads open.
    fn fences_memcached(&mut self) -> bool {
        self.primary().settling().is_none() && self.writes_open() && self.reads_open()
    }

    /// The generation check, between batches: the pending markers, then the generation
    /// key where memcached lacks it (`retry_pending`, `ensure_generation`).
    fn check_generation(&mut self) {
        if let Some((id, marks)) = self.send_marks(&[], 0, true) {
            self.primary().busy = Busy::Generation(id, marks);
        }
    }

    /// A batch's markers at its last write, after the pending ones, sent while it pushes
    /// (`Cache::invalidate`, on a thread of its own in `commit`).
    fn mark(&mut self, keys: &[String], last: u64) {
        if let Some(sent) = self.send_marks(keys, last, false) {
            self.primary().marking = Some(sent);
        }
    }

    /// Sends memcached the pending markers, then those of `keys` at write `last` (and with
    /// `generation` the generation key where missing), in an exchange of its own that
    /// [`MC_TIMEOUT_US`] ends: the exchange and what it carries, None without memcached.
    fn send_marks(&mut self, keys: &[String], last: u64, generation: bool) -> Option<(u64, Vec<(String, u64)>)> {
        let mc = self.mc?;
        let p = self.primary();
        let mut marks: Vec<(String, u64)> = std::mem::take(&mut p.pending).into_iter().collect();
        marks.extend(keys.iter().map(|k| (k.clone(), last)));
        p.next_id += 1;
        let id = p.next_id;
        self.send(node(PRIMARY), node(mc), Msg::McMark { id, marks: marks.clone(), generation });
        self.timer(PRIMARY, MC_TIMEOUT_US, Timer::McDue(id));
        Some((id, marks))
    }

    /// The primary's exchange `id` with memcached is over: answered (`done`), or not in
    /// time, when what it carried is kept to be sent again. A batch whose push round
    /// ended meanwhile goes on.
    fn mc_over(&mut self, id: u64, done: bool) {
        let p = self.primary();
        let marks = if p.marking.as_ref().is_some_and(|(m, _)| *m == id) {
            p.marking.take().map(|(_, marks)| marks)
        } else if matches!(&p.busy, Busy::Generation(g, _) if *g == id) {
            match std::mem::replace(&mut p.busy, Busy::Idle) {
                Busy::Generation(_, marks) => Some(marks),
                _ => unreachable!("checked"),
            }
        } else {
            return;
        };
        if !done {
            for (key, seq) in marks.unwrap_or_default() {
                let at = p.pending.entry(key).or_insert(seq);
                *at = (*at).max(seq);
            }
        }
        if let Some(lost_until) = p.pushed.take() {
            let now = self.now(PRIMARY);
            return self.batch_done(Done::Pushed { lost_until, now });
        }
        self.try_batch();
    }

    /// The commit notice the batch before left to one that pushed nothing, as a batch of
    /// its own (`primary.rs`' `notice_owed`).
    fn notice_owed(&mut self) {
        let (batch, step) = Batch::notice_only(true);
        let b = InBatch {
            batch,
            step: step.clone(),
            writes: Vec::new(),
            keys: Vec::new(),
            answers: Vec::new(),
            round: None,
            owed: false,
        };
        self.primary().busy = Busy::Batch(Box::new(b));
        self.perform(step);
    }

    fn in_batch(&mut self) -> &mut InBatch {
        match &mut self.primary().busy {
            Busy::Batch(b) => b,
            _ => unreachable!("a batch is under way"),
        }
    }

    /// The batch, over: taken out of the primary, which is idle again.
    fn end_batch(&mut self) -> Box<InBatch> {
        let Busy::Batch(batch) = std::mem::replace(&mut self.primary().busy, Busy::Idle) else {
            unreachable!("a batch is under way")
        };
        batch
    }

    fn batch_done(&mut self, done: Done) {
        self.line(Some(PRIMARY), || format!("batch: {done:?}"));
        let step = self.in_batch().batch.next(done);
        self.in_batch().step = step.clone();
        self.perform(step);
    }

    /// Does what the batch asks (the loop of `primary.rs`' `commit`).
    fn perform(&mut self, step: Do) {
        self.line(Some(PRIMARY), || format!("batch does {step:?}"));
        match step {
            Do::Append if self.nodes[PRIMARY].disk_fails => {
                // The store cuts what it wrote: nothing of the batch is kept.
                self.tally.refused_batches += 1;
                self.batch_done(Done::Appended(false));
            }
            Do::Append => {
                let writes = self.in_batch().writes.clone();
                self.nodes[PRIMARY].log.extend(writes.iter().cloned());
                let rows: Vec<Arc<Replicate>> = writes.iter().cloned().map(Arc::new).collect();
                self.primary().recent.record(&rows);
                self.batch_done(Done::Appended(true));
            }
            Do::FenceAndPush => {
                let (keys, writes) = (self.in_batch().keys.clone(), self.in_batch().writes.clone());
                let last = writes.last().map_or(0, |w| w.seq);
                self.primary().near.publish(last, &keys);
                self.answer_held_watches();
                self.mark(&keys, last);
                let committed = self.primary().catalog.seq();
                // The push carries the commit point the batch before left to it.
                self.in_batch().owed = false;
                self.push_round(writes, committed, last);
            }
            Do::WaitOut(wait) => {
                self.tally.waits += 1;
                self.timer(PRIMARY, wait.as_micros() as u64, Timer::WaitedOut)
            }
            Do::MakeSafe => self.batch_done(Done::Safe(Ok(()))),
            Do::GiveUp(why) => panic!("a static primary gave up a batch: {why}"),
            Do::Confirm => self.check_confirmed(),
            Do::Show => {
                let writes = self.in_batch().writes.clone();
                for w in writes {
                    self.primary().catalog.commit(w.book, w.seq);
                }
                // A batch waits: its push carries the commit point (or, if it pushes
                // nothing, the notice follows it as a batch of its own).
                let next_waits = !self.primary().queue.is_empty();
                self.primary().owed = next_waits;
                self.tally.carried += u64::from(next_waits);
                self.batch_done(Done::Shown { next_waits });
            }
            Do::Notice => {
                // What is shown here: the batch's last write (or, for a notice owed, the
                // last batch's).
                let committed = self.primary().catalog.seq();
                self.push_round(Vec::new(), committed, 0);
            }
            Do::Answer { unknown } => {
                assert!(unknown.is_none(), "a static primary's batch has a known outcome");
                let answers = std::mem::take(&mut self.in_batch().answers);
                let seq = self.primary().catalog.seq();
                self.nodes[PRIMARY].acked_upto = self.nodes[PRIMARY].acked_upto.max(seq);
                for (who, tag, a) in answers {
                    let res = a.map_or(Res::Refused, |b| Res::Book(b, seq));
                    self.answer(PRIMARY, who, tag, res);
                }
                self.batch_done(Done::Answered);
            }
            Do::Refuse => {
                // Every write of the batch is answered with the cause (503): none was made,
                // refusals too (decided over writes that were not). The checker holds the
                // store to it: each is a write that changed nothing.
                for (who, tag, _) in std::mem::take(&mut self.in_batch().answers) {
                    self.answer(PRIMARY, who, tag, Res::Failed);
                }
                self.batch_done(Done::Answered);
            }
            Do::End => match self.end_batch().owed {
                // It pushed nothing (its append failed): the notice it was left follows.
                true => self.notice_owed(),
                false => self.try_batch(),
            },
        }
    }

    /// A push round to every replica in sync (`replicate`).
    fn push_round(&mut self, writes: Vec<Replicate>, committed: u64, last: u64) {
        let committed = commit_point(self.primary_reader(), committed);
        let p = self.primary();
        p.next_id += 1;
        let id = p.next_id;
        let waiting: BTreeSet<usize> = (0..REPLICAS.len()).filter(|&l| p.links[l].in_sync).collect();
        self.in_batch().round = Some(Round { id, last, waiting: waiting.clone(), lost_until: None });
        if waiting.is_empty() {
            return self.round_over(Some(id));
        }
        for l in waiting {
            let msg = Msg::Push { round: id, writes: writes.clone(), committed };
            self.send(node(PRIMARY), node(REPLICAS[l]), msg);
        }
        self.timer(PRIMARY, PUSH_TIMEOUT_US, Timer::RoundTimeout(id));
    }

    fn acked(&mut self, from: Who, round: u64, seq: u64, id: String) {
        let Who::Node(r, _) = from else { return };
        let link = r - REPLICAS[0];
        let log_len = self.nodes[PRIMARY].log.len() as u64;
        // `same_log`, for a batch's push: its log is this one's up to its last write (their
        // chains there; none past this primary's last), as the real ack's chain tells.
        let (theirs, ours) = (&self.nodes[r].log, &self.nodes[PRIMARY].log);
        let same_log = seq <= log_len && chains_diverged(ours.chain_at(seq), theirs.chain_at(seq)) != Some(true);
        let p = self.primary();
        if p.syncing == Some((link, round)) {
            p.syncing = None;
            // `bring_in_sync`: a replica that holds more than this primary (whose disk came
            // back empty or older, and which served without hearing from it), or whose log
            // differs from this primary's up to its last write (`diverged_from`: their
            // chains there, the replica's sent in its ack), is not brought in sync over its
            // writes: data never flows backwards.
            let identity = |seq: u64| Identity { history: "sim".into(), seq, epoch: 0 };
            let (theirs, ours) = (&self.nodes[r].log, &self.nodes[PRIMARY].log);
            let diverged = chains_diverged(ours.chain_at(seq), theirs.chain_at(seq)) == Some(true);
            let p = self.primary();
            if !identity(seq).may_be_replaced_by(&identity(log_len), true) || diverged {
                p.refused[link] = true;
            } else if seq == log_len && matches!(p.busy, Busy::Idle) {
                p.links[link].synced(id);
                // The keeper wakes the writer: writes may wait for this replica to open.
                self.try_batch();
            }
            return;
        }
        let Busy::Batch(b) = &mut p.busy else { return };
        let Some(current) = b.round.as_mut().filter(|c| c.id == round && c.waiting.contains(&link)) else {
            return;
        };
        current.waiting.remove(&link);
        match took(current.last, seq, same_log) {
            Took::Yes => p.links[link].synced(id),
            // A replica behind is treated as having missed the batch (see the module doc).
            Took::Tail { .. } | Took::No => {
                let until = p.links[link].lost();
                current.lost_until = current.lost_until.max(until);
            }
        }
        if current.waiting.is_empty() {
            self.round_over(None);
        }
    }

    /// A push round is over: every replica answered, or the timeout (`id`) came.
    fn round_over(&mut self, timeout: Option<u64>) {
        let now = self.now(PRIMARY);
        let p = self.primary();
        if timeout.is_some() && p.syncing.is_some_and(|(_, round)| timeout == Some(round)) {
            p.syncing = None;
            return;
        }
        let Busy::Batch(b) = &mut p.busy else { return };
        let Some(round) = b.round.take_if(|r| timeout.is_none_or(|id| id == r.id)) else { return };
        let mut lost_until = round.lost_until;
        for l in round.waiting {
            lost_until = lost_until.max(p.links[l].lost());
        }
        if p.marking.is_some() {
            // The batch's markers are still out: it goes on once they are done.
            p.pushed = Some(lost_until);
            return;
        }
        self.batch_done(Done::Pushed { lost_until, now });
    }

    fn answer_held_watches(&mut self) {
        let held: Vec<u64> = self.primary().held.keys().copied().collect();
        for id in held {
            let p = self.primary();
            let (f, session, seen, sent, number) = p.held[&id].clone();
            if let Some(reply) = p.near.pending(&session, seen) {
                p.held.remove(&id);
                self.send(node(PRIMARY), f, Msg::WatchAnswer { sent, number, reply });
            }
        }
    }

    /// The batch's wait for the front ends (`Near::confirmed`).
    fn check_confirmed(&mut self) {
        let now = self.now(PRIMARY);
        let p = self.primary();
        let Busy::Batch(b) = &p.busy else { return };
        if b.step != Do::Confirm {
            return;
        }
        let last = b.writes.last().map_or(0, |w| w.seq);
        match p.near.outstanding(last, now) {
            None => self.batch_done(Done::Confirmed),
            Some(until) => self.timer_at(PRIMARY, until, Timer::ConfirmCheck),
        }
    }

    // ---- a replica (`replica.rs`) ----

    fn position(&mut self, n: usize) -> Position {
        let logged = self.nodes[n].log.len() as u64;
        let readable = self.replica(n).catalog.seq();
        Position { logged, last_epoch: 0, readable, newest_epoch: 0 }
    }

    fn show_upto(&mut self, n: usize, upto: u64) {
        // The log holds writes 1, 2, ... in order: write `s` is at `s - 1`.
        let readable = self.replica(n).catalog.seq();
        let log = &self.nodes[n].log;
        let shown = log[(readable as usize).min(log.len())..(upto as usize).min(log.len())].to_vec();
        for w in shown {
            self.replica(n).catalog.commit(w.book, w.seq);
        }
    }

    fn replica_gets(&mut self, n: usize, from: Who, msg: Msg) {
        let now = self.now(n);
        match msg {
            Msg::Push { round, writes, committed } => {
                let at = self.position(n);
                let Ok(took) = take(at, 0, committed, writes) else { return };
                if self.nodes[n].disk_fails && !took.log.is_empty() {
                    // Its disk takes nothing. The store's replica answers with the cause (a
                    // 503); here it answers nothing: a miss to the primary all the same, at
                    // its round's timeout.
                    self.tally.refused_pushes += 1;
                    return;
                }
                let logged = took.log;
                let show = took.show_upto;
                for w in &logged {
                    self.replica(n).catalog.mark_dirty(&w.book, w.seq);
                }
                self.nodes[n].log.extend(logged);
                self.show_upto(n, show);
                let (seq, id) = (self.nodes[n].log.len() as u64, self.replica(n).id.clone());
                self.send(node(n), from, Msg::Ack { round, seq, id });
            }
            Msg::LeaseAnswer { sent, granted, run } => match granted {
                true => self.replica(n).lease.granted(sent, 0, Some(run)),
                false => self.replica(n).lease.answered(sent),
            },
            Msg::Read { tag, id } => {
                let leased = self.replica(n).lease.valid(now);
                let reader = Reader { serving: true, settled: true, role: ReadRole::Replica { leased: Some(leased) } };
                if may_read(reader).is_err() {
                    return self.answer(n, from, tag, Res::Unavailable);
                }
                let r = self.replica(n);
                if r.catalog.is_dirty(id) {
                    // CRAQ: a dirty book asks the primary what is committed.
                    r.next_id += 1;
                    let q = r.next_id;
                    r.asked.insert(q, (from, tag, id));
                    self.tally.versions += 1;
                    return self.send(node(n), node(PRIMARY), Msg::Version { q });
                }
                let res = r.catalog.book(id).map_or(Res::Unavailable, |b| Res::Book(b.clone(), r.catalog.seq()));
                self.answer(n, from, tag, res);
            }
            Msg::VersionAnswer { q, committed } => {
                let Some((who, tag, id)) = self.replica(n).asked.remove(&q) else { return };
                let at = self.position(n);
                let leased = self.replica(n).lease.epoch();
                let res = match version_answer(at, &Committed { seq: committed, epoch: 0 }, Some(leased)) {
                    Ok(upto) => {
                        self.show_upto(n, upto);
                        let c = &self.replica(n).catalog;
                        c.book(id).map_or(Res::Unavailable, |b| Res::Book(b.clone(), c.seq()))
                    }
                    Err(_) => Res::Unavailable,
                };
                self.answer(n, who, tag, res);
            }
            Msg::Write { tag, asked } => {
                let r = self.replica(n);
                r.next_id += 1;
                let id = r.next_id;
                r.forwarded.insert(id, (from, tag));
                self.send(node(n), node(PRIMARY), Msg::Write { tag: id, asked });
            }
            Msg::Answer { tag, res } => {
                if let Some((who, their)) = self.replica(n).forwarded.remove(&tag) {
                    self.answer(n, who, their, res);
                }
            }
            Msg::WhatDoYouHold { round } => {
                let seq = self.nodes[n].log.len() as u64;
                self.send(node(n), from, Msg::Holds { round, seq });
            }
            Msg::Copy { round } => {
                let log = self.nodes[n].log.to_vec();
                self.send(node(n), from, Msg::Copied { round, log });
            }
            other => panic!("a replica got {other:?}"),
        }
    }

    // ---- a front end (`frontend/near.rs`, `watch.rs`) ----

    fn watch(&mut self, n: usize) {
        let sent = self.now(n);
        let f = self.front(n);
        f.watch += 1;
        let (number, session, seen) = (f.watch, f.session.clone(), f.seen);
        self.send(node(n), node(PRIMARY), Msg::Watch { session, seen, sent, number });
        self.timer(n, WATCH_TIMEOUT_US, Timer::WatchDue(number));
    }

    fn front_gets(&mut self, n: usize, from: Who, msg: Msg) {
        let now = self.now(n);
        match msg {
            // Only the answer to its watch now counts (`watch.rs` waits for one answer at a
            // time; one given up on is never read).
            Msg::WatchAnswer { number, .. } if number != self.front(n).watch => {}
            Msg::WatchAnswer { sent, reply, .. } => {
                let f = self.front(n);
                if reply.revoke {
                    f.near.drop_lease();
                } else {
                    f.near.apply(reply.reset, reply.through, &reply.keys, sent, L);
                    f.seen = reply.through;
                }
                self.watch(n);
            }
            // `cached_read`: the near cache, then memcached (unless off), then a catalog.
            Msg::Read { tag, id } => {
                let key = crate::cache::info_key(id);
                if let Some(hit) = self.near.then(|| self.front(n).near.get(&key, now)).flatten() {
                    self.tally.near_hits += 1;
                    return self.answer(n, from, tag, Res::Book(decode(id, &hit), 0));
                }
                let (local, mc) = (self.local(n), self.mc);
                let f = self.front(n);
                f.next_id += 1;
                let mine = f.next_id;
                f.reads.insert(mine, (from, tag, id));
                match mc {
                    Some(mc) if local >= f.mc_off_until => {
                        f.looking.insert(mine);
                        self.send(node(n), node(mc), Msg::McGet { tag: mine, key });
                        self.timer(n, MC_TIMEOUT_US, Timer::LookupDue(mine));
                    }
                    _ => self.read_catalog(n, mine, id),
                }
            }
            Msg::McGot { tag, generation, item } => {
                let Who::Node(_, inc) = from else { return };
                if !self.front(n).looking.remove(&tag) {
                    return;
                }
                let Some(&(who, their, id)) = self.front(n).reads.get(&tag) else { return };
                let (value, cas) = item.map_or((None, None), |(v, c)| (Some(v.0), Some(c)));
                match judge(generation, value.as_deref(), cas) {
                    Found::Hit(seq, json) => {
                        let book = decode(id, json);
                        let near = self.near;
                        let f = self.front(n);
                        if near {
                            f.near.fill(&crate::cache::info_key(id), seq, json);
                        }
                        f.reads.remove(&tag);
                        self.tally.mc_hits += 1;
                        self.answer(n, who, their, Res::Book(book, seq));
                    }
                    Found::Miss(marker) => {
                        self.front(n).slots.insert(tag, (inc, marker));
                        self.read_catalog(n, tag, id);
                    }
                }
            }
            Msg::Answer { tag, res } => {
                let Some((who, their, id)) = self.front(n).reads.remove(&tag) else { return };
                let slot = self.front(n).slots.remove(&tag);
                if let Res::Book(book, seq) = &res {
                    let (key, value) = (crate::cache::info_key(id), encode(book));
                    if self.near {
                        self.front(n).near.fill(&key, *seq, &value);
                    }
                    // The fill goes over the lookup's connection: to that run of memcached.
                    if let (Some(mc), Some((inc, marker))) = (self.mc, slot) {
                        if let Some(by) = fill_by(marker, *seq) {
                            let value = Value(crate::cache::entry(*seq, &value));
                            self.send(node(n), Who::Node(mc, inc), Msg::McFill { key, value, by });
                        }
                    }
                }
                self.answer(n, who, their, res);
            }
            other => panic!("a front end got {other:?}"),
        }
    }

    /// A front end's read of a catalog, each in turn.
    fn read_catalog(&mut self, n: usize, tag: u64, id: u32) {
        let f = self.front(n);
        let to = f.next_catalog % (1 + REPLICAS.len());
        f.next_catalog += 1;
        self.send(node(n), node(to), Msg::Read { tag, id });
    }

    // ---- memcached ----

    fn memcached_gets(&mut self, n: usize, from: Who, msg: Msg) {
        let Proc::Memcached(m) = &mut self.nodes[n].proc else { unreachable!("process {n} is memcached") };
        match msg {
            Msg::McGet { tag, key } => {
                let generation = m.items.contains_key(crate::cache::GEN_KEY);
                let item = m.items.get(&key).cloned();
                self.send(node(n), from, Msg::McGot { tag, generation, item });
            }
            Msg::McFill { key, value, by } => {
                let stored = match by {
                    FillBy::Add => !m.items.contains_key(&key),
                    FillBy::Cas(cas) => m.items.get(&key).is_some_and(|(_, c)| *c == cas),
                };
                if stored {
                    m.set(&key, value.0);
                    self.tally.mc_fills += 1;
                }
            }
            Msg::McMark { id, marks, generation } => {
                for (key, seq) in marks {
                    m.set(&key, crate::cache::marker(seq));
                }
                if generation && !m.items.contains_key(crate::cache::GEN_KEY) {
                    m.set(crate::cache::GEN_KEY, b"1".to_vec());
                }
                self.send(node(n), from, Msg::McMarked { id });
            }
            other => panic!("memcached got {other:?}"),
        }
    }

    // ---- the checks ----

    fn finish(&mut self) {
        let primary_log = self.nodes[PRIMARY].log.clone();
        for &r in &REPLICAS {
            let link = r - REPLICAS[0];
            if self.volume_lost && self.primary().refused[link] && !primary_log.starts_with(&self.nodes[r].log) {
                // The README's "A disk that comes back empty or older": a replica that holds
                // writes a primary whose disk came back empty or older lacks (it was silent
                // while the primary settled) stays out of sync, its writes kept. Writes the
                // primary had acknowledged would be missing from the history, which the
                // checker judges below.
                self.tally.refused += 1;
                continue;
            }
            if !self.primary().links[link].in_sync {
                return self.fail(format!("after the heal, replica n{r} is not in sync"));
            }
            if self.nodes[r].log != primary_log {
                let log = &self.nodes[r].log;
                let first = log
                    .iter()
                    .zip(primary_log.iter())
                    .position(|(a, b)| a != b)
                    .unwrap_or(log.len().min(primary_log.len()));
                return self.fail(format!(
                    "after the heal, replica n{r} logged {} writes, the primary {}; they differ from write {}: {:?} \
                     against {:?}",
                    log.len(),
                    primary_log.len(),
                    first + 1,
                    log.get(first),
                    primary_log.get(first)
                ));
            }
        }
        let bought = std::mem::take(&mut self.bought);
        let journal = &self.primary().recent.journal;
        if let Some(order) = bought.iter().find(|o| !journal.contains(o)) {
            let why = format!("the acknowledged purchase of order {order} is not in the journal");
            return self.fail(why);
        }
        let taken = primary_log.iter().filter_map(|w| w.order.as_ref()).count();
        let distinct: BTreeSet<&str> =
            primary_log.iter().filter_map(|w| w.order.as_ref()).map(|o| o.order_id.as_str()).collect();
        if taken != distinct.len() {
            return self.fail(format!("{taken} copies taken for {} orders", distinct.len()));
        }
        let ops: Vec<Op> =
            self.ops.iter().enumerate().filter(|(i, _)| !self.dropped.contains(i)).map(|(_, o)| o.clone()).collect();
        let initial = State { price: 500, quantity: 5 };
        let history = checker::History {
            name: "sim".into(),
            note: String::new(),
            expect: None,
            initial: BOOKS.iter().map(|&book| Initial { book, state: initial }).collect(),
            ops,
        };
        for (book, verdict) in checker::check(&history) {
            if let Verdict::NotLinearizable(stuck) = verdict {
                let book_ops = checker::book_ops(&history, book);
                let blocked = checker::describe(&book_ops[stuck.blocked]);
                return self.fail(format!("book {book} is not linearizable: {blocked} cannot be placed"));
            }
        }
        self.line(None, || "all checks passed".into());
    }
}

/// Seeds run by default (`cargo test`).
const DEFAULT_SEEDS: u64 = 200;
/// The bugs this simulator plants.
const PLANTS: [Planted; 7] = [
    Planted::AckBeforeLogged,
    Planted::ReadWithoutLease,
    Planted::FenceAfterCommit,
    Planted::AckUnlogged,
    Planted::ServeUnsettled,
    Planted::FillBehindMarker,
    Planted::FillUnlicensed,
];

/// Every seed of `BAZAR_SIM_FIRST..BAZAR_SIM_FIRST + BAZAR_SIM_SEEDS` (0 and 200 by
/// default; CI runs 10,000 from a random first) passes every check; or, with
/// `BAZAR_SIM_SEED=N`, that one seed, its trace printed.
#[test]
fn every_run_passes_its_checks() {
    let planted = planted_from_env(&PLANTS);
    let (first, seeds) = match Seeds::from_env(DEFAULT_SEEDS) {
        Seeds::Range { first, count } => (first, count),
        Seeds::One(seed) => {
            let outcome = run(seed, planted, true);
            let trace = outcome.trace.unwrap_or_default();
            return show_replay(seed, &trace, outcome.hash, outcome.events, outcome.failure);
        }
    };
    let started = Instant::now();
    let outcomes = across_cores(first, seeds, |seed| run(seed, planted, false));
    let (mut events, mut ops, mut acked, mut failed) = (0, 0, 0, Vec::new());
    let mut tally = Tally::default();
    for (seed, outcome) in (first..).zip(outcomes) {
        (events, ops, acked) = (events + outcome.events, ops + outcome.ops, acked + outcome.acked);
        tally.waits += outcome.tally.waits;
        tally.versions += outcome.tally.versions;
        tally.near_hits += outcome.tally.near_hits;
        tally.refused_batches += outcome.tally.refused_batches;
        tally.refused_pushes += outcome.tally.refused_pushes;
        tally.carried += outcome.tally.carried;
        tally.copies += outcome.tally.copies;
        tally.mc_hits += outcome.tally.mc_hits;
        tally.refused += outcome.tally.refused;
        tally.mc_fills += outcome.tally.mc_fills;
        if let Some(why) = outcome.failure {
            println!("seed {seed}: {why}");
            failed.push(seed);
        }
    }
    let took = started.elapsed().as_secs_f64();
    println!(
        "{seeds} runs (seeds {first}..{}) in {took:.2}s on {} threads: {:.0} runs/s, {:.0} events/s; {:.0} operations \
         and {:.0} acknowledged writes a run; in all {} lease waits, {} version queries, {} near-cache hits, \
         {} batches and {} pushes a full disk refused, {} commit notices carried by the next push, {} replicas' \
         logs taken by a primary whose disk came back empty or older ({} replicas holding writes it lacked left out of sync), \
         {} memcached hits and {} fills",
        first + seeds,
        std::thread::available_parallelism().map_or(1, |n| n.get()),
        seeds as f64 / took,
        events as f64 / took,
        ops as f64 / seeds as f64,
        acked as f64 / seeds as f64,
        tally.waits,
        tally.versions,
        tally.near_hits,
        tally.refused_batches,
        tally.refused_pushes,
        tally.carried,
        tally.copies,
        tally.refused,
        tally.mc_hits,
        tally.mc_fills
    );
    fail_on(&failed, seeds, "catalog::sim::data::every_run");
}

/// The same seed gives the same run: the first 20 seeds, twice each.
#[test]
fn the_same_seed_gives_the_same_run() {
    for seed in 0..20 {
        let (a, b) = (run(seed, Planted::None, false), run(seed, Planted::None, false));
        assert_eq!(a.hash, b.hash, "seed {seed}");
        assert!(a.ops > 100, "seed {seed} ran {} operations", a.ops);
    }
}

/// Each planted bug of the data path is found within 1,000 seeds.
#[test]
fn planted_bugs_are_found() {
    for planted in PLANTS {
        let found = (0..1000).find_map(|seed| run(seed, planted, false).failure.map(|why| (seed, why)));
        let Some((seed, why)) = found else { panic!("{planted:?} not found in 1000 seeds") };
        println!("{planted:?} found by seed {seed} ({} seeds run): {why}", seed + 1);
    }
}

/// Seeds that found a bug of the catalog, run on every test run since it was fixed. (Since
/// the simulated primary settles with its replicas at every start, December 5, these seeds
/// draw other schedules than the ones that found the bug; `core::primary`'s table test
/// holds the bug itself.)
/// - Seeds 4, 13, 21: a purchase refused (out of stock) and asked again for the same order
///   in the same batch (a client that timed out and asked another catalog, as an order
///   server does) was answered as made, the book as it was, with no copy taken and nothing
///   journaled (`core::primary::decide` counted the order as served when it was refused).
///   Fixed: only a purchase made counts for its order.
/// - The first bug it found (a restarted primary's commit point, then its lease grants,
///   showing a batch never acknowledged) was seed 9288 of an earlier mix of clients; the
///   scripted schedule above holds both since.
/// - Seed 2589 (once the simulated primary stepped the writer's `core::opening`): the
///   primary crashed with a push out and came back with an older disk, settled on replica
///   n1's catalog, and n1 then read the earlier run's push and logged its write 42 under
///   the number of the new run's write 42; the primary counted n1's answer as taken on the
///   number alone (`took` ignored the log without etcd), and n1 would have shown a write
///   this run never made. Fixed: an answer counts only from the same log, its chain
///   compared (`same_log`).
#[test]
fn seeds_that_found_bugs() {
    for seed in [4, 13, 21, 2589] {
        if let Some(why) = run(seed, Planted::None, false).failure {
            panic!("seed {seed}: {why}");
        }
    }
}

/// A scripted schedule (the drawn ones rarely line it up): the primary cut off one way from
/// replica n2 (its pushes and lease answers lost) while n2 holds a lease, so a batch
/// reaches n1 only; the primary crashing while it waits for n2's answer, and restarting
/// within n2's lease (the cut healed for the moment it settles with its replicas, since it
/// would wait out a silent one, then on again). The batch was never acknowledged; n2 still
/// answers on a lease of the primary's earlier run, without it. Three doors let n1 show it
/// meanwhile, each closed now:
/// - n1 alive: the restarted primary brought it in sync with the commit point of all it
///   logged, and n1 showed the batch on the earlier run's lease. A primary now sends a
///   commit point only while it may answer reads (`core::read::commit_point`).
/// - n1 crashing and restarting too: it comes back showing all it logged, and the
///   restarted primary granted it a lease at once. A static primary now grants no lease
///   before its own reads open.
/// - front end n3 cut off instead of n2: n3 kept serving its near cache, without the
///   batch, on a lease of the earlier run (its watch had not failed yet), while the
///   restarted primary opened reads as soon as its replicas were in sync. A static
///   primary now records (on its disk, before the first near-cache lease of a run) that
///   it grants them, and one that finds the record opens reads one lease after its start.
///
/// Each time a read saw the batch and a later one did not. Since the primary settles at
/// start, with the first door open seed 5 of these fails, with the second seed 3, with the
/// third seed 89 (before, when the cut held until n2's lease ended: 3, 4 and 4; the settle
/// then waited n2 out, and the test lost its teeth until the cut was healed for it). Run
/// over 300 seeds each (the clients' operations and the cut's moment differ).
#[test]
fn a_primary_restarted_within_an_old_lease_shows_nothing_it_did_not_acknowledge() {
    // Who is cut off from the primary (n2, a replica, or n3, a front end), and whether
    // replica n1 crashes and restarts too.
    let script = |cut: u64, off: usize, replica_restarts: bool| {
        let mut faults = vec![
            (cut, Fault::Cut { from: PRIMARY, to: off, on: true }),
            (cut + 350_000, Fault::Crash(PRIMARY)),
            // Healed for the moment the restarted primary settles (it asks every replica
            // what it holds, and would wait out a silent one longer than any lease), then
            // cut again until n2's lease of the earlier run has ended.
            (cut + 400_000, Fault::Cut { from: PRIMARY, to: off, on: false }),
            (cut + 400_000, Fault::Restart(PRIMARY)),
            (cut + 420_000, Fault::Cut { from: PRIMARY, to: off, on: true }),
            (cut + 1_000_000, Fault::Cut { from: PRIMARY, to: off, on: false }),
        ];
        if replica_restarts {
            faults.extend([(cut + 360_000, Fault::Crash(1)), (cut + 380_000, Fault::Restart(1))]);
        }
        faults
    };
    for (off, replica_restarts) in [(2, false), (2, true), (3, false)] {
        for seed in 0..300 {
            let faults = script(3_000_000 + seed * 10_000, off, replica_restarts);
            if let Some(why) = run_with(seed, Planted::None, false, Some(faults)).failure {
                panic!("seed {seed} (n{off} cut off, n1 restarts: {replica_restarts}): {why}");
            }
        }
    }
}

/// A scripted schedule: the primary crashes at 3 s and its disk comes back empty, or with
/// half its log (an old snapshot), 300 ms later. It must take the newest replica's log
/// before it serves (a copy in every run), and nothing acknowledged may be lost; with
/// `ServeUnsettled` planted (it serves its own disk at once) the same schedules lose
/// acknowledged writes.
#[test]
fn a_primary_whose_disk_came_back_empty_or_older_takes_the_newest_replica() {
    let script = |keep: u64| {
        vec![
            (3_000_000, Fault::Crash(PRIMARY)),
            (3_000_000, Fault::Volume { n: PRIMARY, keep }),
            (3_300_000, Fault::Restart(PRIMARY)),
        ]
    };
    for keep in [0, 500] {
        for seed in 0..100 {
            let outcome = run_with(seed, Planted::None, false, Some(script(keep)));
            if let Some(why) = outcome.failure {
                panic!("seed {seed} (kept {keep}/1000 of the log): {why}");
            }
            assert!(outcome.tally.copies >= 1, "seed {seed} (kept {keep}/1000): no replica's log was taken");
        }
        let found =
            (0..100).find(|&seed| run_with(seed, Planted::ServeUnsettled, false, Some(script(keep))).failure.is_some());
        assert!(found.is_some(), "ServeUnsettled (kept {keep}/1000) not found in 100 scripted seeds");
    }
}
