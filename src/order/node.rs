//! One order process: routes, purchases through the catalog, and order sync with peers.
//!
//! Sync is pull-based anti-entropy: every [`SYNC_INTERVAL`] each server asks each peer for
//! the orders appended to the peer's log since the position it last read (from 0 after a
//! start, or when the peer's log is of another generation: restarted, re-opened, rebuilt),
//! and appends those it lacks. A purchase is also pushed at once to the peers that answered
//! since their last failed push (a peer cut off costs no wait per purchase, see
//! `OrderNode::share`), so that when it is acknowledged every responsive peer already has
//! it. A peer that was down, cut off or restarted converges at its next pull, whoever
//! crashed in between.
//!
//! **An acknowledged order survives the loss of any one disk.** It is acknowledged once it
//! is durable on two disks: this server's (fsync) or, when this server's disk does not take
//! it (full, failed), a peer's (the push is answered after the peer's fsync); and always the
//! catalog's, whose purchase journal (in `catalog.log`, replicated) keeps every purchase
//! until every order server holds its order: each server tells every catalog, each
//! [`RECONCILE_INTERVAL`], the catalog write up to which it *and every peer it knows* hold
//! every journaled order (`OrderNode::report_held`; peers say how far they hold in each
//! pull answer), and the journal forgets only below that. A server whose disk was lost
//! takes everything again from its peers (a full pull) and the journal (reconciliation).
//!
//! **A disk that takes no writes** (full, EIO) stops nothing else: reads go on, the
//! purchase is acknowledged if a peer took the order (the catalog's journal keeps it until
//! this server holds it too), else answered 503 saying that the copy was taken and under
//! which order id (do not buy again: the order is adopted from the journal once a disk takes
//! it). A failed log (a failed fsync) is re-opened from disk every [`REOPEN_INTERVAL`], so
//! writes resume by themselves.

use super::log::{Cursor, OrderLog};
use crate::balance::{Call, Failed, Failure, Pool};
use crate::batch::Group;
use crate::client::{CatalogClient, Http, OrderClient, PeerError};
use crate::config::{self, Common, ConfigError, Source};
use crate::error::{Error, Result};
use crate::http::{self, check_token, json_body, parse_id, Request, Response};
use crate::metrics::{push_metric, Metrics};
use crate::page::{self, PageRequest};
use crate::shutdown::Shutdown;
use crate::wire::{
    BatchPurchase, Book, Order, OrderBatch, OrderBatchAnswer, OrderPage, PageShape, Placed, PurchaseBatch,
};
use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// Longest wait for the catalog to take a copy (it persists and replicates first).
pub const CATALOG_TIMEOUT: Duration = Duration::from_secs(10);
/// Longest wait for a peer to take or hand over orders.
pub const PEER_TIMEOUT: Duration = Duration::from_secs(2);
/// How often each peer is asked for the orders it appended.
pub const SYNC_INTERVAL: Duration = Duration::from_millis(500);
/// Most orders in one page of a pull.
pub const PAGE: usize = 200;
/// Most order ids in one page of a pull of ids (about 20 bytes each; the page is made under the
/// log's lock, about 70 µs for 1,000).
pub const ID_PAGE: usize = 1000;
/// Longest wait for a catalog's answer to a readiness probe (`GET /ready`).
pub const READY_TIMEOUT: Duration = Duration::from_millis(500);
/// How often the catalogs' readiness is probed (as the front end does its back ends').
pub const PROBE_INTERVAL: Duration = Duration::from_millis(500);
/// How often the catalog's purchase journal is checked for copies without an order.
pub const RECONCILE_INTERVAL: Duration = Duration::from_secs(1);
/// How long a journaled purchase may stay without its order before it is adopted: far
/// longer than the moment between the catalog's answer and the order's append.
pub const GRACE: Duration = Duration::from_secs(3);
/// How often a failed order log is re-opened from disk (see [`OrderLog::reopen`]).
pub const REOPEN_INTERVAL: Duration = Duration::from_secs(1);
/// Most orders in one push to a peer: a title is at most 300 characters (under 2 KB as
/// JSON, escapes and all), so a push stays below the peer's 64 KiB body limit.
pub const PUSH_MOST: usize = 32;
/// Pushes to the peers in flight at once (each carries every order that waited for it).
pub const PUSH_FLIGHTS: usize = 1;
/// Batches of purchases on their way to the catalog at once: two, so that one is gathered
/// and queued at the primary while the one before it commits.
pub const TAKE_FLIGHTS: usize = 2;

/// Work done beside the caller's, in the caller's trace: on a thread of the scope, or, when
/// the system gives no thread, at once on the caller's (so a refused thread costs time,
/// never the work).
fn beside<'scope, T: Send + 'scope>(
    s: &'scope std::thread::Scope<'scope, '_>,
    work: impl FnOnce() -> T + Send + 'scope,
) -> Beside<'scope, T> {
    let work = crate::trace::carried(work);
    let slot = std::sync::Arc::new(Mutex::new(Some(work)));
    let theirs = std::sync::Arc::clone(&slot);
    let spawned = std::thread::Builder::new().spawn_scoped(s, move || {
        let work = theirs.lock().unwrap_or_else(|e| e.into_inner()).take();
        work.map(|w| w())
    });
    match spawned {
        Ok(handle) => Beside::Thread(handle),
        Err(e) => {
            log::warn!("cannot start a thread ({e}): doing its work in line");
            let work = slot.lock().unwrap_or_else(|e| e.into_inner()).take();
            Beside::Done(work.map(|w| w()))
        }
    }
}

/// Work started by [`beside`].
enum Beside<'scope, T> {
    Thread(std::thread::ScopedJoinHandle<'scope, Option<T>>),
    Done(Option<T>),
}

impl<T> Beside<'_, T> {
    /// Its result; `None` if it panicked.
    fn join(self) -> Option<T> {
        match self {
            Beside::Thread(handle) => handle.join().ok().flatten(),
            Beside::Done(result) => result,
        }
    }
}

/// Settings of an order process.
#[derive(Clone, Debug)]
pub struct OrderConfig {
    /// Listen address, workers, token.
    pub common: Common,
    /// Where `orders.csv` lives.
    pub data_dir: PathBuf,
    /// Catalog servers to take copies through (round robin).
    pub catalogs: Vec<String>,
    /// The other order servers.
    pub peers: Vec<String>,
    /// Testing aid (`BAZAR_FAULT=crash-after-take`): abort right after the catalog took a
    /// copy, before the order is logged, to exercise reconciliation.
    pub crash_after_take: bool,
}

impl OrderConfig {
    /// Reads the settings.
    pub fn from_source(src: &dyn Source) -> std::result::Result<OrderConfig, ConfigError> {
        Ok(OrderConfig {
            common: Common::from_source(src, Self::DEFAULT_LISTEN)?,
            data_dir: config::data_dir(src, "./data-order"),
            catalogs: config::urls(src, "BAZAR_CATALOG", true)?,
            peers: config::urls(src, "BAZAR_PEERS", false)?,
            crash_after_take: match config::opt(src, "BAZAR_FAULT").as_deref() {
                None => false,
                Some("crash-after-take") => true,
                Some(other) => {
                    return Err(ConfigError {
                        var: "BAZAR_FAULT",
                        problem: format!("{other:?} is not a known fault (crash-after-take)"),
                    })
                }
            },
        })
    }

    /// Where it listens unless `BAZAR_LISTEN` says otherwise.
    pub const DEFAULT_LISTEN: &'static str = "0.0.0.0:9002";

    /// `--help` text.
    pub const HELP: &'static str = "\
bazar-order: the order server (takes purchases, keeps the shared order log).

Environment:
  BAZAR_CATALOG   comma-separated base URLs of catalog servers (required)
  BAZAR_PEERS     comma-separated base URLs of the other order servers
  BAZAR_DATA_DIR  directory of orders.csv (default ./data-order)
  BAZAR_FAULT     testing only: crash-after-take aborts after the catalog took a copy
";
}

#[derive(Default)]
struct Counters {
    taken: AtomicU64,
    refused: AtomicU64,
    pulled: AtomicU64,
    push_failures: AtomicU64,
    reconciled: AtomicU64,
    /// Purchases acknowledged though this server's disk did not take them (a peer did).
    held_by_peer: AtomicU64,
    /// Purchases answered 503 after the catalog took their copy (the journal keeps them).
    not_logged: AtomicU64,
}

/// Where the pull from one peer is.
#[derive(Debug, Default, PartialEq, Eq)]
struct PeerCursor {
    /// The generation of the peer's log that `next` counts in (None: not asked yet).
    generation: Option<String>,
    /// The position in that log read so far.
    next: usize,
    /// How often a recovery of this server's file sent the cursor back to 0: a page read
    /// before a reset never moves the cursor after it (a pull that began at 0 too).
    resets: u64,
}

impl PeerCursor {
    /// Whether a page read from position `from` of generation `known` (what the cursor said
    /// when the pull began), answered in generation `now`, may be taken. Not when the
    /// peer's log is of another generation and `from` counted in the old one (the peer was
    /// restarted on a new disk, or its file re-opened or rebuilt, so its positions are
    /// numbered anew and reading on from `from` would skip orders): the cursor then goes
    /// back to 0 in the new generation.
    fn check(&mut self, from: usize, known: Option<&str>, now: Option<&str>) -> bool {
        match (known, now) {
            (Some(known), Some(now)) if known != now && from > 0 => {
                if self.next == from {
                    (self.generation, self.next) = (Some(now.to_string()), 0);
                }
                false
            }
            _ => true,
        }
    }

    /// Moves past a page read from `from` (in generation `log`) to `next`, unless the
    /// cursor was moved meanwhile or reset since the page was asked for (`resets` then: a
    /// recovery of this server's file sent it back to 0, which must not be undone).
    fn advance(&mut self, from: usize, resets: u64, log: Option<String>, next: usize) {
        if self.next == from && self.resets == resets {
            self.next = next;
            if log.is_some() {
                self.generation = log;
            }
        }
    }
}

/// What a page of a pull held, as far as what comes next depends on it.
#[derive(Clone, Copy, Debug)]
enum Got {
    /// `len` ids (a page of ids), the first `held` of which this server holds durably.
    Ids { len: usize, held: usize },
    /// `len` whole orders, `added` of which this server lacked and logged.
    Orders { len: usize, added: usize },
}

/// What a pull does after a page read from `from`: move its cursor to `to`, then stop
/// (`done`) or ask for the next page, of the shape `next`.
#[derive(Debug, PartialEq, Eq)]
struct PullStep {
    to: usize,
    next: PageShape,
    done: bool,
}

impl Got {
    /// The step after this page, read from `from`, whose next position is `next`.
    /// - Ids all held: past them, ids again (done at a short page).
    /// - Ids not all held: past those held, then whole orders from the first one not.
    /// - Whole orders: past them; whole again while a page brings new ones (a server
    ///   catching up after an outage), else ids (done at a short page).
    fn step(self, from: usize, next: usize) -> PullStep {
        let last = |len: usize, most: usize| len < most || next <= from;
        let (whole, ids) = (PageShape::Whole, PageShape::Ids);
        match self {
            Got::Ids { len, held } if held < len => PullStep { to: from + held, next: whole, done: false },
            Got::Ids { len, .. } => PullStep { to: next, next: ids, done: last(len, ID_PAGE) },
            Got::Orders { len, added } => {
                PullStep { to: next, next: if added > 0 { whole } else { ids }, done: last(len, PAGE) }
            }
        }
    }
}

/// The reconciliation mark after a page of the journal's ids read after write `after`, the
/// first `held` of whose orders are here: the write of the last of those.
fn past_held(after: u64, ids: &[crate::wire::JournalId], held: usize) -> u64 {
    held.checked_sub(1).map_or(after, |last| ids[last].seq)
}

/// One order process.
pub struct OrderNode {
    config: OrderConfig,
    /// The orders and their file (group-committed appends).
    log: OrderLog,
    /// The lock of the data directory (`order.lock`), held while the process runs: no two
    /// order servers ever write one `orders.csv`.
    _lock: std::fs::File,
    /// This incarnation's order-id prefix (random per start, so ids never repeat).
    prefix: String,
    counter: AtomicU64,
    catalogs: Pool,
    catalog: CatalogClient,
    /// The catalog client of readiness probes (short timeout).
    probe: CatalogClient,
    peers: OrderClient,
    /// Per peer: the position in its log read so far, and its log's generation.
    cursors: Vec<Mutex<PeerCursor>>,
    /// Per peer: the catalog write up to which it said it holds every journaled order (0:
    /// not heard since this server started).
    peer_held: Vec<AtomicU64>,
    /// Per peer: when a pull from it last succeeded (shown by `/health`, for the dashboard).
    pulled_at: Vec<Mutex<Option<Instant>>>,
    /// Per peer: whether purchases push to it (see [`OrderNode::share`]). Cleared by a push
    /// that failed, set again by a pull that succeeded.
    responsive: Vec<AtomicBool>,
    /// The catalog write up to which every journaled purchase has its order here.
    reconciled: AtomicU64,
    /// How often a recovery sent `reconciled` back to 0: a reconciliation that began before
    /// one puts it back to 0 after its own store, rather than undo it.
    reconcile_resets: AtomicU64,
    /// The catalog the readiness probe last found to be the primary (its index in
    /// `catalogs` plus one; 0: none known): batches of purchases go to it first.
    primary: AtomicUsize,
    /// Purchases waiting to take their copies: whoever finds a flight free sends every
    /// purchase waiting in one request ([`OrderNode::take_batch`]).
    takes: Group<(BatchPurchase, Option<crate::trace::Context>), Result<Book>>,
    /// Orders waiting to be pushed to the peers: whoever finds the push free sends every
    /// order waiting in one push ([`OrderNode::push_to_peers`]).
    shares: Group<(Order, Option<crate::trace::Context>), usize>,
    counters: Counters,
    metrics: Arc<Metrics>,
}

impl OrderNode {
    /// Locks the data directory (or says which process holds it) and opens the order log.
    pub fn open(config: OrderConfig, metrics: Arc<Metrics>) -> Result<Arc<OrderNode>> {
        crate::storage::ensure_dir(&config.data_dir)
            .map_err(|source| crate::storage::StorageError::Io { path: config.data_dir.clone(), source })?;
        let lock = crate::storage::lock_dir(&config.data_dir, "order.lock", "order server")?;
        let log = OrderLog::open(&config.data_dir)?;
        let pool = config.common.threads;
        let token = config.common.token.clone();
        Ok(Arc::new(OrderNode {
            log,
            _lock: lock,
            prefix: crate::ids::random_hex()?,
            counter: AtomicU64::new(0),
            catalogs: Pool::new(config.catalogs.clone()),
            catalog: CatalogClient { http: Http::new(CATALOG_TIMEOUT, pool, token.clone()).peer() },
            probe: CatalogClient { http: Http::new(READY_TIMEOUT, pool, token.clone()).peer() },
            peers: OrderClient { http: Http::new(PEER_TIMEOUT, pool, token).peer() },
            cursors: config.peers.iter().map(|_| Mutex::new(PeerCursor::default())).collect(),
            peer_held: config.peers.iter().map(|_| AtomicU64::new(0)).collect(),
            pulled_at: config.peers.iter().map(|_| Mutex::new(None)).collect(),
            responsive: config.peers.iter().map(|_| AtomicBool::new(true)).collect(),
            reconciled: AtomicU64::new(0),
            reconcile_resets: AtomicU64::new(0),
            primary: AtomicUsize::new(0),
            takes: Group::new(PurchaseBatch::MOST, TAKE_FLIGHTS),
            shares: Group::new(PUSH_MOST, PUSH_FLIGHTS),
            counters: Counters::default(),
            metrics,
            config,
        }))
    }

    /// Starts one sync thread per peer, the reconciler, and the catalogs' readiness
    /// prober: every [`PROBE_INTERVAL`] each catalog's `/ready` is asked (at most
    /// [`READY_TIMEOUT`] each), and one that is not ready (catching up, without a lease,
    /// frozen) is skipped by the round robin until it is again. A purchase sent to a
    /// catalog cannot be retried elsewhere once it may have arrived, so not sending it to
    /// one that would hang it matters.
    pub fn start_background(self: &Arc<Self>, shutdown: &Shutdown) {
        let (node, stop) = (Arc::clone(self), shutdown.clone());
        std::thread::spawn(move || loop {
            let primary = AtomicUsize::new(0);
            node.catalogs.probe(|url| match node.probe.readiness(url) {
                Ok(role) => {
                    if role.as_deref() == Some("primary") {
                        let i = node.catalogs.urls().iter().position(|u| u == url).map_or(0, |i| i + 1);
                        primary.store(i, Ordering::Relaxed);
                    }
                    true
                }
                Err(_) => false,
            });
            node.primary.store(primary.into_inner(), Ordering::Relaxed);
            if stop.sleep(PROBE_INTERVAL) {
                return;
            }
        });
        let (node, stop) = (Arc::clone(self), shutdown.clone());
        std::thread::spawn(move || {
            let mut missing = HashMap::new();
            while !stop.sleep(RECONCILE_INTERVAL) {
                if let Err(e) = node.reconcile(&mut missing) {
                    log::debug!("reconciliation: {e}");
                }
                node.report_held();
            }
        });
        let (node, stop) = (Arc::clone(self), shutdown.clone());
        std::thread::spawn(move || {
            let mut told = false;
            while !stop.sleep(REOPEN_INTERVAL) {
                match node.log.reopen() {
                    Ok(None) => told = false,
                    Ok(Some(corrupt)) => {
                        told = false;
                        if corrupt {
                            node.take_everything_again();
                        }
                    }
                    Err(e) if !told => {
                        told = true;
                        log::warn!("the order log could not be re-opened yet ({e}); trying again every second");
                    }
                    Err(e) => log::debug!("the order log could not be re-opened yet ({e})"),
                }
            }
        });
        for i in 0..self.config.peers.len() {
            let (node, stop) = (Arc::clone(self), shutdown.clone());
            std::thread::spawn(move || {
                while !stop.is_set() {
                    if let Err(e) = node.pull(i) {
                        log::debug!("order sync with {}: {e}", node.config.peers[i]);
                    }
                    stop.sleep(SYNC_INTERVAL);
                }
            });
        }
    }

    /// After this server's file was found corrupt and rebuilt while running: pull every
    /// peer again from position 0 and read the catalog's journal again from its start, so
    /// that the orders of the rows set aside come back.
    fn take_everything_again(&self) {
        log::warn!("pulling every peer's orders again from the start and reading the catalog's purchase journal again");
        for c in &self.cursors {
            let mut c = c.lock().unwrap_or_else(|e| e.into_inner());
            c.next = 0;
            c.resets += 1;
        }
        self.reconcile_resets.fetch_add(1, Ordering::SeqCst);
        self.reconciled.store(0, Ordering::SeqCst);
    }

    /// Tells every catalog how far every order server this one knows holds the purchase
    /// journal: the least of its own mark and each peer's last reported one (0, so nothing,
    /// while a peer has not answered since this server started). A catalog forgets journaled
    /// purchases only below the marks reported to it (see `catalog::recent::Journal`), so
    /// an order held by one order server only (its peer down or behind) stays in the
    /// journal. Every catalog is told (replicas too), so that a promoted replica keeps what
    /// the primary kept.
    fn report_held(&self) {
        let own = self.reconciled.load(Ordering::SeqCst);
        let held = self.peer_held.iter().map(|h| h.load(Ordering::SeqCst)).fold(own, u64::min);
        if held == 0 {
            return;
        }
        for url in self.catalogs.urls() {
            if let Err(e) = self.probe.report_held(url, held) {
                log::debug!("could not tell {url} that the order servers hold the journal up to {held}: {e}");
            }
        }
    }

    /// Reads peer `i`'s new orders, page by page: their ids first (the peer answers them
    /// from memory), then whole orders only from the first one this server does not hold.
    /// Most orders reached this server already, by a push (its own it pushed there, and the
    /// peer's it was pushed), so most pages need no whole order at all; when every page was
    /// of whole orders each order crossed twice more than it had to, read back from the
    /// peer's file, encoded and decoded whole. A peer that answers no ids (older) answers
    /// whole orders, taken as they come.
    fn pull(&self, i: usize) -> Result<()> {
        let url = &self.config.peers[i];
        let mut shape = PageShape::Ids;
        loop {
            let (from, known, resets) = {
                let c = self.cursors[i].lock().unwrap_or_else(|e| e.into_inner());
                (c.next, c.generation.clone(), c.resets)
            };
            let page: OrderPage = self.peers.pull(url, from, shape)?;
            if let Some(held) = page.held {
                self.peer_held[i].store(held, Ordering::SeqCst);
            }
            if !self.cursors[i].lock().unwrap_or_else(|e| e.into_inner()).check(
                from,
                known.as_deref(),
                page.log.as_deref(),
            ) {
                log::warn!("{url}'s order log is of another generation now (restarted, re-opened or rebuilt); pulling it again from the start");
                shape = PageShape::Ids;
                continue;
            }
            let got = match &page.ids {
                Some(ids) => Got::Ids { len: ids.len(), held: self.log.holds_prefix(ids.iter().map(String::as_str)) },
                None => Got::Orders { len: page.orders.len(), added: self.take_pulled(url, &page.orders)? },
            };
            let step = got.step(from, page.next);
            self.cursors[i].lock().unwrap_or_else(|e| e.into_inner()).advance(from, resets, page.log.clone(), step.to);
            shape = step.next;
            if step.done {
                *self.pulled_at[i].lock().unwrap_or_else(|e| e.into_inner()) = Some(Instant::now());
                if !self.responsive[i].swap(true, Ordering::SeqCst) {
                    log::info!("peer {url} answers again: purchases push to it again");
                }
                return Ok(());
            }
        }
    }

    /// Logs the orders a pull from `url` brought that this server lacks, passing over (and
    /// reporting) any no order server could have made; returns how many it logged.
    fn take_pulled(&self, url: &str, orders: &[Order]) -> Result<usize> {
        let (valid, refused): (Vec<Order>, Vec<Order>) = orders.iter().cloned().partition(|o| o.check().is_ok());
        if let Some(o) = refused.first() {
            let why = o.check().err().unwrap_or_default();
            log::warn!(
                "{url} handed {} orders no order server could have made ({why}); not taking them",
                refused.len()
            );
        }
        let added = self.log.add(&valid)?;
        if added > 0 {
            self.counters.pulled.fetch_add(added as u64, Ordering::Relaxed);
            log::info!("took {added} orders from {url}");
        }
        Ok(added)
    }

    /// Adopts the orders of copies the catalog journaled but no order server logged (its
    /// server died in between), once they have been missing for [`GRACE`]. Every server
    /// does this; an adopted order is the same wherever it is adopted, so copies merge.
    /// A journaled order that fails [`Order::check`] (one a catalog took before it held
    /// orders to the servers' shape) is never adopted: it is reported once and passed over,
    /// so it holds up no later one. `missing` remembers since when each order has been
    /// missing (or that it was reported).
    ///
    /// The journal is read by order ids first: the purchases whose orders are here (nearly
    /// all: each server logs its own and is pushed its peers') are passed over without
    /// their whole records, which are asked for only from the first order not here.
    fn reconcile(&self, missing: &mut HashMap<String, Instant>) -> Result<()> {
        let resets = self.reconcile_resets.load(Ordering::SeqCst);
        loop {
            let after = self.reconciled.load(Ordering::SeqCst);
            let page = self.journal_after(after, PageShape::Ids)?;
            let (page, from) = match &page.ids {
                Some(ids) => {
                    let held = self.log.holds_prefix(ids.iter().map(|p| p.order_id.as_str()));
                    if !missing.is_empty() {
                        ids[..held].iter().for_each(|p| _ = missing.remove(&p.order_id));
                    }
                    let cursor = past_held(after, ids, held);
                    if !self.move_reconciled(after, cursor, resets) {
                        return Ok(());
                    }
                    if held == ids.len() {
                        if !page.more {
                            return Ok(());
                        }
                        continue;
                    }
                    (self.journal_after(cursor, PageShape::Whole)?, cursor)
                }
                None => (page, after),
            };
            let (cursor, waiting) = self.reconcile_page(&page, from, missing)?;
            if !self.move_reconciled(from, cursor, resets) || waiting || !page.more {
                return Ok(());
            }
        }
    }

    /// Moves the reconciliation mark from `from` to `to`, unless a recovery reset it since
    /// the reconciliation began (`resets` then): false, and the mark is (back) at 0.
    fn move_reconciled(&self, from: u64, to: u64, resets: u64) -> bool {
        let moved = self.reconciled.compare_exchange(from, to, Ordering::SeqCst, Ordering::SeqCst).is_ok();
        if self.reconcile_resets.load(Ordering::SeqCst) != resets {
            self.reconciled.store(0, Ordering::SeqCst);
            return false;
        }
        moved
    }

    /// Goes through a page of whole journaled purchases read after write `from`: adopts the
    /// orders missing for [`GRACE`], and returns how far every order is here (or adopted,
    /// or passed over) and whether one is still awaited.
    fn reconcile_page(
        &self,
        page: &crate::wire::PurchasePage,
        from: u64,
        missing: &mut HashMap<String, Instant>,
    ) -> Result<(u64, bool)> {
        let (mut cursor, mut waiting) = (from, false);
        for p in &page.purchases {
            let known = self.log.contains(&p.order.order_id);
            if !known {
                if let Err(why) = p.order.check() {
                    if missing.insert(p.order.order_id.clone(), Instant::now()).is_none() {
                        log::warn!(
                            "the catalog's journal holds a copy of book {} taken for an order no order server could have made ({why}); not adopting it",
                            p.order.id
                        );
                    }
                    if !waiting {
                        cursor = p.seq;
                    }
                    continue;
                }
                let since = *missing.entry(p.order.order_id.clone()).or_insert_with(Instant::now);
                if since.elapsed() < GRACE {
                    waiting = true;
                    continue;
                }
                log::warn!(
                    "order {} took a copy of book {} but was never logged; adopting it",
                    p.order.order_id,
                    p.order.id
                );
                self.log.add(std::slice::from_ref(&p.order))?;
                self.counters.reconciled.fetch_add(1, Ordering::Relaxed);
                self.share(&p.order);
            }
            missing.remove(&p.order.order_id);
            if !waiting {
                cursor = p.seq;
            }
        }
        Ok((cursor, waiting))
    }

    /// The catalog's purchase journal after write `after`, whole or by ids (`shape`), from
    /// the first catalog that answers.
    fn journal_after(&self, after: u64, shape: PageShape) -> Result<crate::wire::PurchasePage> {
        let journal = |url: &str| self.catalog.purchases(url, after, shape);
        match self.catalogs.try_each(Call::Read, journal, PeerError::failure) {
            Ok((page, _)) => Ok(page),
            Err(Failed::Exhausted { error, .. } | Failed::Stopped { error, .. }) => Err(error.into()),
        }
    }

    /// Hands an order to every responsive peer now; a peer that misses it pulls it later.
    /// Returns how many took it: a peer answers once the order is durable on its disk.
    ///
    /// Architecture invariant (the order sharing rule): a purchase pushes only to peers
    /// that answered since their last failed push. A peer cut off (a partition that DROPs,
    /// where each push would wait [`PEER_TIMEOUT`]) costs one failed push, not one wait per
    /// purchase; the sync thread's next successful pull marks it responsive again, and the
    /// orders it missed meanwhile reach it by that pull (the existing anti-entropy), so the
    /// two logs converge once the partition heals.
    ///
    /// Orders are pushed in batches: a purchase that arrives while a push is in flight
    /// waits for it and joins the next push, with every order that waited meanwhile (at
    /// most [`PUSH_MOST`]); one that finds no push in flight pushes at once, alone. Each
    /// order's answer is its batch's: the peer logs a push whole (one fsync) or not at all.
    fn share(&self, order: &Order) -> usize {
        let item = (order.clone(), crate::trace::current());
        let took = self.shares.run(item, |items| {
            let (orders, contexts): (Vec<Order>, Vec<_>) = items.into_iter().unzip();
            let pushed = || vec![self.push_to_peers(&orders); orders.len()];
            crate::trace::batch(&contexts, "order.push", "order.pushed", pushed, |&took| took == 0)
        });
        took.unwrap_or(0)
    }

    /// Pushes `orders` to every responsive peer at once; how many peers took them all.
    fn push_to_peers(&self, orders: &[Order]) -> usize {
        std::thread::scope(|s| {
            let pushes: Vec<_> = self
                .config
                .peers
                .iter()
                .zip(&self.responsive)
                .filter(|(_, responsive)| responsive.load(Ordering::SeqCst))
                .map(|(url, responsive)| {
                    s.spawn(crate::trace::carried(move || match self.peers.push(url, orders) {
                        Ok(_) => true,
                        Err(e) => {
                            self.counters.push_failures.fetch_add(1, Ordering::Relaxed);
                            if responsive.swap(false, Ordering::SeqCst) {
                                log::warn!(
                                    "peer {url} did not take {} orders now ({e}); purchases stop pushing to it \
                                     until it answers a pull, and it will pull what it missed",
                                    orders.len()
                                );
                            }
                            false
                        }
                    }))
                })
                .collect();
            pushes.into_iter().filter_map(|p| p.join().ok()).filter(|&took| took).count()
        })
    }

    /// A new order id: this incarnation's prefix and the next count.
    fn next_order_id(&self) -> String {
        format!("{}-{}", self.prefix, self.counter.fetch_add(1, Ordering::Relaxed) + 1)
    }

    /// A front end's batch (`POST /internal/purchase-batch`): one copy of each book, each its own
    /// purchase with its own order, all taken with one request to the catalog, logged with
    /// one append (and fsync) and pushed to the peers in pushes of [`PUSH_MOST`]. Each
    /// purchase is answered as [`OrderNode::purchase`] would answer it alone.
    pub fn purchase_many(&self, books: &[u32]) -> Vec<Result<Order>> {
        let drawn: Vec<BatchPurchase> = books
            .iter()
            .map(|&id| BatchPurchase { id, order_id: self.next_order_id(), at: crate::ids::timestamp_now() })
            .collect();
        let taken = self.take_batch(drawn.clone());
        if self.config.crash_after_take && taken.iter().any(Result::is_ok) {
            log::error!("BAZAR_FAULT=crash-after-take: aborting before logging a batch of orders");
            std::process::abort();
        }
        let orders: Vec<Result<Order>> = drawn
            .into_iter()
            .zip(taken)
            .map(|(p, book)| {
                let book = book.inspect_err(|_| {
                    self.counters.refused.fetch_add(1, Ordering::Relaxed);
                })?;
                Ok(Order { order_id: p.order_id, id: p.id, title: book.title, price: book.price, at: p.at })
            })
            .collect();
        let fresh: Vec<Order> = orders.iter().filter_map(|o| o.as_ref().ok().cloned()).collect();
        if fresh.is_empty() {
            return orders;
        }
        // Logged here and pushed to the peers at once: an order is acknowledged only when
        // both are done (`settle`), and neither needs the other first (a crash between them
        // leaves the order on one disk, unacknowledged, and the logs converge by the pulls
        // either way). Done one after the other, the batch waited for an fsync and then for
        // a push and the peer's fsync.
        // Each count stays with its own chunk's orders whatever happens to a push: a
        // push that panicked counts as taken by no peer.
        let (logged, shared) = std::thread::scope(|s| {
            let pushes: Vec<_> =
                fresh.chunks(PUSH_MOST).map(|chunk| (chunk, beside(s, move || self.push_to_peers(chunk)))).collect();
            let logged = self.log.add(&fresh);
            let shared: Vec<usize> =
                pushes.into_iter().flat_map(|(chunk, push)| vec![push.join().unwrap_or(0); chunk.len()]).collect();
            (logged, shared)
        });
        let mut shared = shared.into_iter();
        orders
            .into_iter()
            .map(|o| {
                let order = o?;
                self.settle(order, logged.as_ref().map(|_| ()), shared.next().unwrap_or(0))
            })
            .collect()
    }

    /// The answer to a purchase whose copy was taken, once its log append (`logged`) and
    /// its push (`shared`: how many peers took it) are done: acknowledged when the order is
    /// durable on two disks (see the module doc), else 503 saying what happened.
    fn settle(&self, order: Order, logged: std::result::Result<(), &Error>, shared: usize) -> Result<Order> {
        match logged {
            Ok(()) => {}
            // Durable on a peer's disk and in the catalog's journal (kept until every order
            // server holds it): two disks, as when logged here. This server takes it from
            // the peer once its disk takes writes again.
            Err(e) if shared > 0 => {
                self.counters.held_by_peer.fetch_add(1, Ordering::Relaxed);
                log::warn!(
                    "order {} is acknowledged on its peer's disk; this server could not log it: {e}",
                    order.order_id
                );
            }
            Err(e) => {
                self.counters.not_logged.fetch_add(1, Ordering::Relaxed);
                return Err(Error::Unavailable(not_logged(&order, e)));
            }
        }
        self.counters.taken.fetch_add(1, Ordering::Relaxed);
        Ok(order)
    }

    /// Buys one copy of book `id`: take it from the catalog, log the order, share it.
    pub fn purchase(&self, id: u32) -> Result<Order> {
        let order_id = self.next_order_id();
        let at = crate::ids::timestamp_now();
        let mut span = crate::trace::span("order.purchase");
        span.attr("book", id).attr("order", order_id.as_str());
        let take = crate::trace::span("order.take");
        let purchase = BatchPurchase { id, order_id: order_id.clone(), at: at.clone() };
        let item = (purchase, crate::trace::current());
        let take_batch = |items: Vec<(BatchPurchase, Option<crate::trace::Context>)>| {
            let (batch, contexts): (Vec<BatchPurchase>, Vec<_>) = items.into_iter().unzip();
            crate::trace::batch(
                &contexts,
                "order.take.batch",
                "order.take.batched",
                || self.take_batch(batch),
                Result::is_err,
            )
        };
        let taken = self.takes.run(item, take_batch).unwrap_or_else(|| {
            Err(Error::Unavailable(format!(
                "the batch that carried order {order_id} failed; whether the catalog took its copy is unknown \
                 (GET /orders/{order_id} shows it once the journal is reconciled)"
            )))
        });
        drop(take);
        let book = match taken {
            Ok(b) => b,
            Err(e) => {
                self.counters.refused.fetch_add(1, Ordering::Relaxed);
                return Err(e);
            }
        };
        if self.config.crash_after_take {
            log::error!("BAZAR_FAULT=crash-after-take: aborting before logging order {order_id}");
            std::process::abort();
        }
        let order = Order { order_id, id, title: book.title, price: book.price, at };
        // Logged and shared at once, as a batch is (`purchase_many`).
        let (logged, shared) = std::thread::scope(|s| {
            let sharing = beside(s, || {
                let _span = crate::trace::span("order.share");
                self.share(&order)
            });
            let log = crate::trace::span("order.log");
            let logged = self.log.add(std::slice::from_ref(&order));
            drop(log);
            (logged, sharing.join().unwrap_or(0))
        });
        self.settle(order, logged.as_ref().map(|_| ()), shared)
    }

    /// Takes the copies of a batch of purchases with one request (`POST
    /// /internal/purchases`), sent first to the catalog last found to be the primary, the
    /// round robin (a replica forwards the batch) its fallback; tries the next catalog
    /// only when the request surely never reached the one that failed. One answer per
    /// purchase: its copy, or its own refusal (no such book, out of stock, ...). A failure
    /// of the whole request is every purchase's; a catalog without the route (405, 404:
    /// one of an older version) takes them one by one instead.
    fn take_batch(&self, batch: Vec<BatchPurchase>) -> Vec<Result<Book>> {
        let n = batch.len();
        let body = PurchaseBatch { purchases: batch };
        let first = self.primary.load(Ordering::Relaxed).checked_sub(1);
        let take = |url: &str| self.catalog.purchase_batch(url, &body);
        let failed = match self.catalogs.try_first(first, Call::Write, take, PeerError::failure) {
            Ok((answer, _)) if answer.taken.len() == n => {
                return answer.taken.into_iter().map(|t| t.into_answer().map_err(Error::from)).collect()
            }
            Ok((answer, url)) => {
                Error::Internal(format!("catalog {url} answered {} purchases of a batch of {n}", answer.taken.len()))
            }
            Err(Failed::Stopped { error: PeerError::Answered { status: 404 | 405, .. }, .. }) => {
                return body.purchases.iter().map(|p| self.take_copy(p.id, &p.order_id, &p.at)).collect()
            }
            Err(Failed::Stopped { error, failure: Failure::MaybeSent, .. }) => Error::Unavailable(error.to_string()),
            Err(Failed::Stopped { error, .. }) => error.into(),
            Err(Failed::Exhausted { error, .. }) => Error::Unavailable(format!("no catalog server reachable: {error}")),
        };
        // Every purchase of the batch meets the same failure (an error is not `Clone`).
        let (status, why) = (failed.status(), failed.to_string());
        (0..n)
            .map(|_| match status {
                503 => Err(Error::Unavailable(why.clone())),
                _ => Err(Error::Peer(PeerError::Answered { status, message: why.clone() })),
            })
            .collect()
    }

    /// Takes one copy through the catalog pool; tries the next catalog only when the
    /// request surely never reached the one that failed. A catalog's refusal (no such book,
    /// out of stock, its own 503) is the purchase's answer.
    fn take_copy(&self, id: u32, order_id: &str, at: &str) -> Result<crate::wire::Book> {
        let take = |url: &str| self.catalog.purchase(url, id, Some((order_id, at)));
        match self.catalogs.try_each(Call::Write, take, PeerError::failure) {
            Ok((book, _)) => Ok(book),
            Err(Failed::Stopped { error, failure: Failure::MaybeSent, .. }) => {
                Err(Error::Unavailable(error.to_string()))
            }
            Err(Failed::Stopped { error, .. }) => Err(error.into()),
            Err(Failed::Exhausted { error, .. }) => {
                Err(Error::Unavailable(format!("no catalog server reachable: {error}")))
            }
        }
    }

    /// Answers one request.
    pub fn handle(&self, request: &Request) -> Response {
        let admission = self.config.common.admission();
        let method = request.method.as_str();
        http::route(request, |segs, get| match segs {
            ["health"] if get => {
                let body = serde_json::json!({"status": "ok", "role": "order", "orders": self.log.len(), "prefix": self.prefix,
                    "peers": self.peer_health(), "log_failed": self.log.failed()});
                http::respond(Ok(Response::json(&body)), "/health")
            }
            ["metrics"] if get => {
                let text = self.metrics.render(&self.metrics_text());
                http::respond(Ok(Response::metrics(text)), "/metrics")
            }
            ["purchase", id] if method == "POST" => {
                http::respond(parse_id(id).and_then(|id| Ok(Response::json(&self.purchase(id)?))), "/purchase/{id}")
            }
            ["ready"] if get => self.ready().at("/ready"),
            ["traces", id] if get => http::respond(
                check_token(request, admission).and_then(|_| crate::trace::own_answer(id)),
                "/traces/{trace_id}",
            ),
            ["orders"] if get => http::respond(self.orders(request), "/orders"),
            ["orders", id] if get => http::respond(
                self.log.get(id).and_then(|o| {
                    o.map(|o| Response::json(&o)).ok_or_else(|| Error::NotFound(format!("no order {id:?}")))
                }),
                "/orders/{order_id}",
            ),
            ["internal", "orders"] if get => http::respond(
                check_token(request, admission).and_then(|_| {
                    let from = match request.query_param("from")? {
                        None => 0,
                        Some(f) => f.parse().map_err(|_| Error::BadRequest(format!("from={f:?} is not a position")))?,
                    };
                    let held = Some(self.reconciled.load(Ordering::SeqCst));
                    let shape =
                        PageShape::from_query(request.query_param("shape")?.as_deref()).map_err(Error::BadRequest)?;
                    let page = match shape {
                        PageShape::Whole => {
                            let pulled = self.log.pull(from, PAGE)?;
                            let log = Some(pulled.generation);
                            OrderPage { orders: pulled.orders, next: pulled.next, log, held, ids: None }
                        }
                        PageShape::Ids => {
                            let (ids, next, generation) = self.log.pull_ids(from, ID_PAGE);
                            OrderPage { orders: Vec::new(), next, log: Some(generation), held, ids: Some(ids) }
                        }
                    };
                    Ok(Response::json(&page))
                }),
                "/internal/orders",
            ),
            ["internal", "purchase-batch"] if method == "POST" => http::respond(
                check_token(request, admission).and_then(|_| {
                    let batch: OrderBatch = json_body(request)?;
                    if batch.books.is_empty() || batch.books.len() > OrderBatch::MOST || batch.books.contains(&0) {
                        return Err(Error::BadRequest(format!(
                            "a batch holds 1 to {} purchases of books with positive ids",
                            OrderBatch::MOST
                        )));
                    }
                    let placed = self
                        .purchase_many(&batch.books)
                        .into_iter()
                        .map(|a| Placed::from_answer(a.map_err(Into::into)))
                        .collect();
                    Ok(Response::json(&OrderBatchAnswer { placed }))
                }),
                "/internal/purchase-batch",
            ),
            ["internal", "orders"] if method == "POST" => http::respond(
                check_token(request, admission).and_then(|_| {
                    let orders: Vec<Order> = json_body(request)?;
                    orders.iter().try_for_each(Order::check).map_err(Error::BadRequest)?;
                    let added = self.log.add(&orders)?;
                    Ok(Response::json(&serde_json::json!({ "added": added })))
                }),
                "/internal/orders",
            ),
            ["health"] | ["ready"] | ["metrics"] | ["orders"] | ["orders", _] => {
                http::respond(Err(Error::MethodNotAllowed("GET, HEAD")), "invalid")
            }
            ["purchase", _] | ["internal", "purchase-batch"] => {
                http::respond(Err(Error::MethodNotAllowed("POST")), "invalid")
            }
            ["internal", "orders"] => http::respond(Err(Error::MethodNotAllowed("GET, HEAD, POST")), "invalid"),
            _ => http::respond(Err(Error::NotFound(format!("no route {}", request.path))), "unknown"),
        })
    }

    /// `GET /orders`: one page, oldest first, with a `Link` to the next when more follow.
    fn orders(&self, request: &Request) -> Result<Response> {
        let wanted = PageRequest::from_query(request, page::MAX_LIMIT, |a| a.parse::<Cursor>())?;
        let page = self.log.page(wanted.after.as_ref(), wanted.limit)?;
        let mut response = Response::json(&page.orders);
        if let Some(next) = page.next {
            response = response.with_header("Link", page::next_link("/orders", &[], wanted.limit, &next.to_string()));
        }
        Ok(response)
    }

    /// Per peer for `/health`: its URL and the milliseconds since a pull from it last
    /// succeeded (null: none yet since this server started).
    fn peer_health(&self) -> Vec<serde_json::Value> {
        let peers = self.config.peers.iter().zip(&self.pulled_at);
        peers
            .map(|(url, at)| {
                let ago = at.lock().unwrap_or_else(|e| e.into_inner()).map(|t| t.elapsed().as_millis() as u64);
                serde_json::json!({"url": url, "last_pull_ms_ago": ago})
            })
            .collect()
    }

    /// `GET /ready`: 200 when at least one catalog is ready (probed in parallel, each for at
    /// most [`READY_TIMEOUT`]), else 503 `no-catalog`: without a catalog no purchase can go
    /// through.
    fn ready(&self) -> Response {
        if let Some(why) = self.log.failed() {
            let body =
                serde_json::json!({"status": "log-failed", "error": format!("the order log takes no writes: {why}")});
            return Response::raw_json(503, serde_json::to_vec(&body).expect("JSON values serialize"));
        }
        let urls = self.catalogs.urls();
        let probes: Vec<Result<()>> = std::thread::scope(|s| {
            let running: Vec<_> = urls.iter().map(|url| s.spawn(move || self.probe.ready(url))).collect();
            let panicked = |_| Error::Internal("the probe panicked".into());
            running.into_iter().map(|p| p.join().map_err(panicked)?.map_err(Error::from)).collect()
        });
        if let Some(i) = probes.iter().position(Result::is_ok) {
            let body =
                serde_json::json!({"status": "ready", "role": "order", "catalog": urls[i], "orders": self.log.len()});
            return Response::json(&body);
        }
        let why: Vec<String> =
            urls.iter().zip(probes).filter_map(|(url, p)| p.err().map(|e| format!("{url}: {e}"))).collect();
        let body =
            serde_json::json!({"status": "no-catalog", "error": format!("no catalog is ready ({})", why.join("; "))});
        Response::raw_json(503, serde_json::to_vec(&body).expect("JSON values serialize"))
    }

    fn metrics_text(&self) -> String {
        let mut out = String::new();
        let c = &self.counters;
        push_metric(
            &mut out,
            "bazar_orders_taken_total",
            "counter",
            "Purchases this server completed.",
            c.taken.load(Ordering::Relaxed),
        );
        push_metric(
            &mut out,
            "bazar_orders_refused_total",
            "counter",
            "Purchases refused (out of stock, unknown book, catalog unreachable).",
            c.refused.load(Ordering::Relaxed),
        );
        push_metric(
            &mut out,
            "bazar_orders_known",
            "gauge",
            "Orders in this server's log (own and peers').",
            self.log.len(),
        );
        push_metric(
            &mut out,
            "bazar_orders_pulled_total",
            "counter",
            "Orders taken from peers by sync.",
            c.pulled.load(Ordering::Relaxed),
        );
        push_metric(
            &mut out,
            "bazar_orders_push_failures_total",
            "counter",
            "Orders a peer did not take at once.",
            c.push_failures.load(Ordering::Relaxed),
        );
        push_metric(
            &mut out,
            "bazar_orders_reconciled_total",
            "counter",
            "Orders adopted from the catalog's journal (their server died before logging them).",
            c.reconciled.load(Ordering::Relaxed),
        );
        push_metric(
            &mut out,
            "bazar_orders_held_by_peer_total",
            "counter",
            "Purchases acknowledged on a peer's disk because this server's did not take them.",
            c.held_by_peer.load(Ordering::Relaxed),
        );
        push_metric(
            &mut out,
            "bazar_orders_not_logged_total",
            "counter",
            "Purchases answered 503 after the catalog took their copy (kept in its journal).",
            c.not_logged.load(Ordering::Relaxed),
        );
        push_metric(
            &mut out,
            "bazar_orders_log_failed",
            "gauge",
            "1 while the order log takes no writes (a failed fsync), until it is re-opened.",
            usize::from(self.log.failed().is_some()),
        );
        out
    }
}

impl crate::service::Service for OrderNode {
    fn handle(&self, request: &Request) -> Response {
        OrderNode::handle(self, request)
    }
}

/// The answer to a purchase whose copy the catalog took but that no disk took (this
/// server's failed, no peer took it): what happened, under which order id, and that buying
/// again would buy twice.
fn not_logged(order: &Order, cause: &Error) -> String {
    format!(
        "the catalog took a copy of book {} for order {}, but no order server's disk took the order ({cause}); \
         it is kept in the catalog's purchase journal and is logged by itself once a disk takes writes again \
         (GET /orders/{}): do not buy again",
        order.id, order.order_id, order.order_id
    )
}

#[cfg(test)]
mod tests {
    use super::{Got, PageShape, PeerCursor, PullStep, ID_PAGE, PAGE};

    fn at(generation: Option<&str>, next: usize) -> PeerCursor {
        PeerCursor { generation: generation.map(str::to_string), next, resets: 0 }
    }

    /// The reconciliation mark passes the purchases whose orders are here, and no other.
    #[test]
    fn reconciliation_passes_only_what_is_held() {
        let ids: Vec<crate::wire::JournalId> =
            [12, 15, 19].iter().map(|&seq| crate::wire::JournalId { seq, order_id: format!("o-{seq}") }).collect();
        assert_eq!(super::past_held(10, &ids, 0), 10, "the first one missing: the mark stays");
        assert_eq!(super::past_held(10, &ids, 2), 15, "up to the last held, not past a gap");
        assert_eq!(super::past_held(10, &ids, 3), 19);
        assert_eq!(super::past_held(10, &[], 0), 10);
    }

    /// A pull's next step after each kind of page, as a table.
    #[test]
    fn a_pull_asks_for_whole_orders_only_from_the_first_it_lacks() {
        let step = |to, whole, done| PullStep { to, next: if whole { PageShape::Whole } else { PageShape::Ids }, done };
        let cases = [
            // Every id held: past them; a full page asks again, a short one ends the pull.
            (Got::Ids { len: ID_PAGE, held: ID_PAGE }, 100, 100 + ID_PAGE, step(100 + ID_PAGE, false, false)),
            (Got::Ids { len: 7, held: 7 }, 100, 107, step(107, false, true)),
            (Got::Ids { len: 0, held: 0 }, 100, 100, step(100, false, true)),
            // Some not held: past those held, then whole orders from the first not held.
            (Got::Ids { len: 7, held: 3 }, 100, 107, step(103, true, false)),
            (Got::Ids { len: ID_PAGE, held: 0 }, 0, ID_PAGE, step(0, true, false)),
            // Whole orders that brought new ones: whole again, unless the page was the last.
            (Got::Orders { len: PAGE, added: 5 }, 103, 103 + PAGE, step(103 + PAGE, true, false)),
            (Got::Orders { len: 4, added: 4 }, 103, 107, step(107, true, true)),
            // Whole orders all held by now (pushed meanwhile), or a peer that answers no ids:
            // back to ids.
            (Got::Orders { len: PAGE, added: 0 }, 103, 103 + PAGE, step(103 + PAGE, false, false)),
            (Got::Orders { len: 0, added: 0 }, 103, 103, step(103, false, true)),
        ];
        for (got, from, next, want) in cases {
            assert_eq!(got.step(from, next), want, "{got:?} from {from}, next {next}");
        }
    }

    /// A pull goes back to 0 when the peer's log is of another generation, and a cursor
    /// sent back to 0 by a recovery while a pull was in flight stays there.
    #[test]
    fn a_peer_cursor_starts_over_in_a_new_generation() {
        // (cursor, from, known, answered in) -> (taken?, cursor after check)
        let cases = [
            (at(None, 0), 0, None, Some("a"), true, at(None, 0)),
            (at(Some("a"), 20), 20, Some("a"), Some("a"), true, at(Some("a"), 20)),
            (at(Some("a"), 20), 20, Some("a"), Some("b"), false, at(Some("b"), 0)),
            // From 0 nothing can be skipped: the page is taken as it is.
            (at(Some("a"), 0), 0, Some("a"), Some("b"), true, at(Some("a"), 0)),
            // A peer of an older version names no generation.
            (at(Some("a"), 20), 20, Some("a"), None, true, at(Some("a"), 20)),
            // Reset by a recovery meanwhile: refused, and the reset stays.
            (at(Some("a"), 0), 20, Some("a"), Some("b"), false, at(Some("a"), 0)),
        ];
        for (mut cursor, from, known, now, taken, after) in cases {
            assert_eq!(cursor.check(from, known, now), taken, "{cursor:?} from {from} {known:?} -> {now:?}");
            assert_eq!(cursor, after);
        }
        let mut cursor = at(None, 0);
        cursor.advance(0, 0, Some("a".into()), 200);
        assert_eq!(cursor, at(Some("a"), 200));
        cursor.next = 0;
        cursor.advance(200, 0, Some("a".into()), 400);
        assert_eq!(cursor, at(Some("a"), 0), "a reset during the pull is not undone");
        // A reset while a pull that began at 0 was in flight: its page moves nothing.
        cursor.resets += 1;
        cursor.advance(0, 0, Some("a".into()), 200);
        assert_eq!((cursor.next, cursor.resets), (0, 1), "a page read before a reset is not taken as after it");
        cursor.advance(0, 1, Some("a".into()), 200);
        assert_eq!(cursor.next, 200);
    }
}
