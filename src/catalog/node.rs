//! One catalog process: its settings, its routes and its reads. The primary's side of
//! replication is in `primary.rs`, the replica's in `replica.rs`, the etcd side of
//! failover (performing the role core's effects) in `elect.rs`, `/health`, `/ready` and
//! `/metrics` in `status.rs`.
//!
//! With static roles the role and the peers are fixed at start. With etcd they change at
//! run time: every background thread of both roles runs, and each checks the role now
//! (`current`) before it acts; the role core (`failover/`) decides the changes.
//!
//! Locks: `writer` serialises everything that changes the catalog on this node (a whole
//! primary write from decision to acknowledgement, or a replica's apply) and owns the
//! files; `state` is held only to read the in-memory catalog or to apply decided writes to
//! it, never across I/O. Order: `writer` before `state`.

use super::config::{CatalogConfig, Role};
use super::core::{
    self,
    primary::Asked,
    read::{ReadRole, Reader},
};
use super::lease::{Grant, ReplicaLease, FAREWELL_LEASES};
use super::refusal::{NoLead, NotHere, Unreadable};
use super::state::{Catalog, Write};
use super::store::{Ledger, Recent, Store};
use crate::cache::Cache;
use crate::client::{CatalogClient, Http, PeerError};
use crate::error::{Error, Result};
use crate::http::{self, check_token, json_body, parse_id, Request, Response};
use crate::metrics::Metrics;
use crate::page::{self, PageRequest};
use crate::shutdown::Shutdown;
use crate::wire::{
    Book, BookPage, BookUpdate, Farewell, FarewellAnswer, NearAnswer, NearWatch, NewBook, PurchaseBatch,
    PurchaseBatchAnswer, PurchasePage, PurchaseRequest, Replicate, ResyncAnswer, Taken,
};
use crate::wire::{Identity, PageShape};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{mpsc, Arc, Mutex, RwLock};
use std::time::{Duration, Instant};
use ureq::http::Method;

/// Longest wait for a replica to take a push before it is out of sync.
pub const PUSH_TIMEOUT: Duration = Duration::from_secs(1);
/// Longest wait for the primary when a replica forwards a write to it.
pub const FORWARD_TIMEOUT: Duration = Duration::from_secs(10);
/// Most writes committed together (one fsync, one push per replica).
pub const MAX_BATCH: usize = 256;
/// Most writes waiting for the writer thread; more wait to be queued.
const QUEUE: usize = 4096;
/// Most purchases in one answer of `GET /internal/purchases`.
pub const PURCHASES_PAGE: usize = 500;
/// Most books in one page of a replica's full copy (`GET /internal/books`).
pub const COPY_PAGE: usize = 10_000;
/// Most writes in one answer of `GET /internal/log`.
pub const LOG_PAGE: usize = 10_000;
/// Pause between attempts to bring a replica up to date (primary) or to catch up (replica).
pub const RETRY_INTERVAL: Duration = Duration::from_millis(300);

/// The primary's view of one replica.
pub(super) struct ReplicaLink {
    pub(super) url: String,
    /// With etcd: the replica left the members; its background thread ends.
    pub(super) gone: AtomicBool,
    /// In sync or not, its identity, its lease. Held briefly; never across a call.
    pub(super) grant: Mutex<Grant>,
    /// A replica the primary does not know asked for a lease: this one may have restarted
    /// (a new identity) while no write was pushed to it, so it is brought in sync again.
    pub(super) recheck: AtomicBool,
    /// Why it was last refused a copy of this catalog (it holds more): said once.
    pub(super) refused: Mutex<String>,
    /// The thread that sends it the writer's pushes.
    pub(super) mailbox: super::mailbox::Mailbox,
}

impl ReplicaLink {
    pub(super) fn new(url: &str) -> ReplicaLink {
        ReplicaLink {
            url: url.to_string(),
            gone: AtomicBool::new(false),
            grant: Mutex::default(),
            recheck: AtomicBool::new(false),
            refused: Mutex::default(),
            mailbox: Default::default(),
        }
    }

    pub(super) fn grant(&self) -> std::sync::MutexGuard<'_, Grant> {
        self.grant.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// Logs `why` as an error unless `last` said it already: a refusal retried every few
/// hundred milliseconds is said once, and again when it changes.
pub(super) fn say_once(last: &Mutex<String>, why: &str) {
    let mut last = last.lock().unwrap_or_else(|e| e.into_inner());
    if *last != why {
        log::error!("{why}");
        *last = why.to_string();
    }
}

/// What the writer thread is sent: a write, or word that the start moved on (it settled,
/// or a replica came in sync while writes wait for the replicas): the writer holds the
/// writes that come before they are open, opens them itself (`core::opening`), and
/// answers them then.
// The queue's slots are as large as a write whether or not the word is a variant beside
// it, and boxing would cost an allocation per write.
#[allow(clippy::large_enum_variant)]
pub(super) enum Queued {
    Write(Pending),
    Wake,
}

/// A write waiting for the writer thread, and where its answer goes: the request's one
/// channel (a request's writes share it, each answer tagged with the write's place in the
/// request, since a request's writes may be answered by more than one batch).
pub(super) struct Pending {
    pub(super) asked: Asked,
    pub(super) reply: Reply,
    /// The trace of the request that made the write (its `catalog.write` span), if traced.
    pub(super) trace: Option<crate::trace::Context>,
    /// When its request queued it (one instant for all of a request's writes): a write
    /// kept before writes may be decided waits from then.
    pub(super) came: Instant,
}

/// Where a write's answer goes: its request's channel and its place in the request.
pub(super) struct Reply {
    pub(super) to: mpsc::SyncSender<(usize, Result<Book>)>,
    pub(super) place: usize,
}

impl Reply {
    /// Answers the write (a request that stopped waiting is no harm).
    pub(super) fn send(self, answer: Result<Book>) {
        let _ = self.to.send((self.place, answer));
    }
}

/// The log as `/health` and `/metrics` show it, published by the writer lock's guard each
/// time it is released ([`Writer`]) and by a batch as it answers (before its commit
/// notice, still under the lock), so that they never wait for (or `try_lock`) the writer
/// lock, which a batch holds across its pushes, and never show a client that was answered
/// the log as it was before its write.
#[derive(Default)]
pub(super) struct Logged {
    /// The last write logged here, pending ones included.
    pub(super) seq: AtomicU64,
    /// The log takes no write now (an append or its fsync failed; it re-opens by itself).
    pub(super) failed: AtomicBool,
    /// Appends that failed since the process started.
    pub(super) write_errors: AtomicU64,
}

impl Logged {
    pub(super) fn publish(&self, ledger: &Ledger) {
        self.seq.store(ledger.recent.history.last().0, Ordering::Relaxed);
        self.failed.store(ledger.files.failed(), Ordering::Relaxed);
        self.write_errors.store(ledger.files.write_errors(), Ordering::Relaxed);
    }
}

/// The writer lock held: the ledger, and on release what `/health` shows of it published.
pub(super) struct Writer<'a> {
    store: std::sync::MutexGuard<'a, Ledger>,
    shown: &'a Logged,
}

impl std::ops::Deref for Writer<'_> {
    type Target = Ledger;
    fn deref(&self) -> &Ledger {
        &self.store
    }
}

impl std::ops::DerefMut for Writer<'_> {
    fn deref_mut(&mut self) -> &mut Ledger {
        &mut self.store
    }
}

impl Drop for Writer<'_> {
    fn drop(&mut self) {
        self.shown.publish(&self.store);
    }
}

/// Counters shown in `/metrics` (and the flag behind one of them).
#[derive(Default)]
pub(super) struct Counters {
    pub(super) writes: AtomicU64,
    pub(super) batches: AtomicU64,
    pub(super) pushes_failed: AtomicU64,
    pub(super) tail_writes_sent: AtomicU64,
    pub(super) copies_asked: AtomicU64,
    pub(super) copies: AtomicU64,
    pub(super) forwarded: AtomicU64,
    pub(super) lease_grants: AtomicU64,
    pub(super) lease_refusals: AtomicU64,
    pub(super) lease_waits: AtomicU64,
    pub(super) lease_wait_micros: AtomicU64,
    pub(super) lease_renewals: AtomicU64,
    pub(super) lease_renewal_failures: AtomicU64,
    pub(super) stale_refused: AtomicU64,
    pub(super) version_queries: AtomicU64,
    pub(super) near_answers: AtomicU64,
    /// Writes acknowledged while no replica took their push (every replica out of sync):
    /// on this primary's disk alone until one is back in sync.
    pub(super) writes_on_one_disk: AtomicU64,
    /// Whether the last batch acknowledged was one of them: its epoch + 1, or 0 when a
    /// replica took it (the WARN is said as that starts, in each epoch, the INFO as it ends).
    pub(super) on_one_disk: AtomicU64,
}

/// The role now, and the primary writes go to.
#[derive(Clone, Debug)]
pub(super) struct Current {
    pub(super) role: Role,
    /// A replica's primary (None: none known now, an election is under way).
    pub(super) primary: Option<String>,
    /// A primary's epoch: its writes, pushes and answers carry it (0 with static roles).
    pub(super) term: u64,
}

/// One catalog process.
pub struct CatalogNode {
    pub(super) config: CatalogConfig,
    /// Serialises changes on this node and owns the files (taken through `lock_writer`).
    writer: Mutex<Ledger>,
    /// What `/health` and `/metrics` show of the log, published as the writer lock is released.
    pub(super) logged: Logged,
    /// The books as reads see them.
    pub(super) state: RwLock<Catalog>,
    /// Replica: caught up with the primary since it started (or since its last full copy).
    pub(super) serving: AtomicBool,
    /// False only on a static primary that starts, until it has compared its catalog with
    /// its replicas' (and taken the newest one's if it is behind: `primary.rs`, `settle`):
    /// it serves no read and decides no write before.
    pub(super) settled: AtomicBool,
    /// Its files were damaged and set aside at start: a static primary serves nothing
    /// until it has taken the catalog of a replica that holds one.
    pub(super) damaged: AtomicBool,
    /// Replica: a catch-up is wanted (at start, or the primary asked for one).
    pub(super) catch_up_wanted: AtomicBool,
    /// Replica: a whole copy is under way (the catalog in memory is partial).
    pub(super) copying: AtomicBool,
    /// Why the last whole copy was refused (its source held less than this catalog): said once.
    pub(super) copy_refused: Mutex<String>,
    /// This node, for the threads it starts from a borrowed `self`.
    pub(super) me: std::sync::Weak<CatalogNode>,
    /// This process's run id (random per start): a replica's identity for its primary, and
    /// a primary's name in its lease grants and its farewell (only the farewell of the run
    /// that granted a lease extends it).
    pub(super) replica_id: String,
    /// Replica: its read lease. Held briefly.
    pub(super) lease: Mutex<ReplicaLease>,
    /// Primary: no write is acknowledged before this (the farewell grace after start)
    /// unless every replica has been brought in sync first; no read before `reads_from`.
    pub(super) writes_from: Instant,
    pub(super) reads_from: Instant,
    /// Primary: writes are open (the grace passed or every replica was in sync, and the
    /// cache holds no answer of another history).
    pub(super) writes_open: AtomicBool,
    /// With etcd and a cache: the epoch whose election flushed memcached (this primary
    /// acknowledges no write before, see `CatalogNode::flush_after_election`).
    pub(super) cache_flushed: AtomicU64,
    /// Primary: the queue of the writer thread (group commit).
    pub(super) writes: mpsc::SyncSender<Queued>,
    /// Primary: the writer thread's end of it, taken when the thread starts.
    pub(super) queue: Mutex<Option<mpsc::Receiver<Queued>>>,
    /// Replica: when it last heard from the primary.
    pub(super) last_push: Mutex<Option<Instant>>,
    /// Primary: its replicas (fixed with static roles; with etcd, the members of the
    /// store and of the in-sync record). Held briefly.
    pub(super) links: RwLock<Vec<Arc<ReplicaLink>>>,
    /// The role now. Held briefly.
    pub(super) current: RwLock<Current>,
    /// With etcd: the role core and the etcd client.
    pub(super) failover: Option<super::etcd_side::Failover>,
    /// The newest epoch known: a primary's own, which its writes carry; always 0 with
    /// static roles. Pushes, lease grants and log answers of an older one are refused.
    pub(super) epoch: AtomicU64,
    /// Pushes and lease requests (short timeout).
    pub(super) push: CatalogClient,
    /// Remote writes and catch-up (longer timeout).
    pub(super) forward: Http,
    pub(super) cache: Option<Cache>,
    /// Primary: the front ends' near-cache sessions and leases (`near.rs`).
    pub(super) near: super::near::Near,
    pub(super) counters: Counters,
    pub(super) metrics: Arc<Metrics>,
}

impl CatalogNode {
    /// Opens the data directory; a replica is not serving until it caught up.
    pub fn open(config: CatalogConfig, metrics: Arc<Metrics>) -> Result<Arc<CatalogNode>> {
        let (mut store, catalog, recent, damaged) = Self::open_store(&config)?;
        store.set_checkpoint_rows(config.checkpoint_rows);
        let store = Ledger { files: store, recent };
        log::info!("loaded {} books at write {}", catalog.len(), catalog.seq());
        let token = config.common.token.clone();
        let pool = config.common.threads;
        let links = config.replicas.iter().map(|url| Arc::new(ReplicaLink::new(url))).collect();
        let current = Current { role: config.role, primary: config.primary.clone(), term: 0 };
        let failover = config.etcd.as_ref().map(|e| super::etcd_side::Failover::new(e, config.lease, pool));
        let cache = (!config.memcached.is_empty()).then(|| Cache::new(&config.memcached, pool));
        let (writes, queue) = mpsc::sync_channel(QUEUE);
        let replica_id = crate::ids::random_hex()?;
        Ok(Arc::new_cyclic(|me| CatalogNode {
            me: me.clone(),
            copying: AtomicBool::new(false),
            copy_refused: Mutex::default(),
            writes,
            queue: Mutex::new(Some(queue)),
            serving: AtomicBool::new(config.role == Role::Primary),
            // A primary with no replica has nothing to compare with (unless its files were
            // damaged: then it waits, and says why).
            settled: AtomicBool::new(
                config.etcd.is_some() || config.role == Role::Replica || (config.replicas.is_empty() && !damaged),
            ),
            damaged: AtomicBool::new(damaged),
            catch_up_wanted: AtomicBool::new(false),
            replica_id,
            lease: Mutex::new(ReplicaLease::new(config.lease)),
            writes_from: Instant::now() + config.lease * FAREWELL_LEASES,
            reads_from: Instant::now() + config.lease,
            writes_open: AtomicBool::new(false),
            cache_flushed: AtomicU64::new(0),
            logged: {
                let logged = Logged::default();
                logged.publish(&store);
                logged
            },
            writer: Mutex::new(store),
            state: RwLock::new(catalog),
            last_push: Mutex::new(None),
            links: RwLock::new(links),
            current: RwLock::new(current),
            failover,
            epoch: AtomicU64::new(0),
            push: CatalogClient { http: Http::new(PUSH_TIMEOUT, pool, token.clone()).peer() },
            forward: Http::new(FORWARD_TIMEOUT, pool, token).peer(),
            cache,
            near: if config.etcd.is_none() && config.role == Role::Primary && !config.lease.is_zero() {
                let record = super::near::Record::open(config.data_dir.join(super::near::RECORD_FILE));
                super::near::Near::recording(config.lease, record)
            } else {
                super::near::Near::new(config.lease)
            },
            counters: Counters::default(),
            metrics,
            config,
        }))
    }

    /// Opens the data directory. Files that do not check (a row whose checksum, fields or
    /// values are wrong anywhere but a torn last row of the log) are never served: they are
    /// set aside (kept for the operator) and the catalog starts empty. A replica (or with
    /// etcd any catalog: none is primary before an election) then copies the primary's; a
    /// static primary takes a replica's before it serves (`settle_with_replicas`, which
    /// waits for a replica with data). Returns whether the files were set aside.
    fn open_store(config: &CatalogConfig) -> Result<(Store, Catalog, Recent, bool)> {
        let (store, catalog, recent, corrupt) = Store::open_recovering(&config.data_dir)?;
        if let Some(why) = &corrupt {
            let from = match config.role == Role::Primary && config.etcd.is_none() {
                true => "takes the catalog of a replica that holds one before it serves",
                false => "copies the primary's",
            };
            log::warn!("{why}: the damaged catalog was set aside; this catalog starts empty and {from}");
        }
        Ok((store, catalog, recent, corrupt.is_some()))
    }

    pub(super) fn leases(&self) -> bool {
        !self.config.lease.is_zero()
    }

    /// Starts the background work: a primary keeps replicas in sync, a replica catches up
    /// and renews its lease; with etcd, both (each acts only in its role) and the election.
    pub fn start_background(self: &Arc<Self>, shutdown: &Shutdown) {
        if self.failover.is_some() {
            self.start_primary(shutdown);
            self.start_replica(shutdown);
            return self.start_election(shutdown);
        }
        match self.config.role {
            Role::Primary => self.start_primary(shutdown),
            Role::Replica => self.start_replica(shutdown),
        }
    }

    /// The role now.
    pub(super) fn role(&self) -> Role {
        self.current.read().unwrap_or_else(|e| e.into_inner()).role
    }

    /// The primary writes go to, for a replica (None: unknown now, or this is the primary).
    pub(super) fn primary_url(&self) -> Option<String> {
        let current = self.current.read().unwrap_or_else(|e| e.into_inner());
        current.primary.clone().filter(|_| current.role == Role::Replica)
    }

    /// A primary's epoch (its writes carry it).
    pub(super) fn term(&self) -> u64 {
        self.current.read().unwrap_or_else(|e| e.into_inner()).term
    }

    pub(super) fn set_current(&self, role: Role, primary: Option<String>, term: u64) {
        *self.current.write().unwrap_or_else(|e| e.into_inner()) = Current { role, primary, term };
    }

    /// The primary's replicas now.
    pub(super) fn links(&self) -> Vec<Arc<ReplicaLink>> {
        self.links.read().unwrap_or_else(|e| e.into_inner()).clone()
    }

    pub(super) fn state(&self) -> std::sync::RwLockReadGuard<'_, Catalog> {
        self.state.read().unwrap_or_else(|e| e.into_inner())
    }

    pub(super) fn state_mut(&self) -> std::sync::RwLockWriteGuard<'_, Catalog> {
        self.state.write().unwrap_or_else(|e| e.into_inner())
    }

    pub(super) fn lock_writer(&self) -> Writer<'_> {
        Writer { store: self.writer.lock().unwrap_or_else(|e| e.into_inner()), shown: &self.logged }
    }

    /// The writer lock if it is free now (never waits: a batch may hold it across pushes).
    pub(super) fn try_lock_writer(&self) -> Option<Writer<'_>> {
        let store = match self.writer.try_lock() {
            Ok(store) => store,
            Err(std::sync::TryLockError::Poisoned(e)) => e.into_inner(),
            Err(std::sync::TryLockError::WouldBlock) => return None,
        };
        Some(Writer { store, shown: &self.logged })
    }

    pub(super) fn lease(&self) -> std::sync::MutexGuard<'_, ReplicaLease> {
        self.lease.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// How far this catalog's data got (its log's last write; under the writer lock).
    pub(super) fn identity(&self) -> Identity {
        Self::identity_of(&self.lock_writer())
    }

    /// How far the data of `store` got.
    pub(super) fn identity_of(store: &Ledger) -> Identity {
        let (seq, epoch) = store.recent.history.last();
        Identity { history: store.history_id().to_string(), seq, epoch }
    }

    /// The newest epoch known here.
    pub(super) fn epoch(&self) -> u64 {
        self.epoch.load(Ordering::SeqCst)
    }

    /// A push, lease grant or log answer of a primary at `epoch`: refused (and counted)
    /// when older than the newest epoch known; a newer one is adopted.
    pub(super) fn check_epoch(&self, epoch: u64) -> Result<()> {
        if let Some(f) = &self.failover {
            // The core decides (a primary that hears of a newer epoch steps down).
            let answer = f.core().message(epoch);
            return match answer {
                Ok(effects) => {
                    self.epoch.fetch_max(epoch, Ordering::SeqCst);
                    self.perform(effects);
                    Ok(())
                }
                Err(why) => {
                    self.counters.stale_refused.fetch_add(1, Ordering::Relaxed);
                    Err(Error::Conflict(why))
                }
            };
        }
        let known = self.epoch.fetch_max(epoch, Ordering::SeqCst);
        if epoch < known {
            self.counters.stale_refused.fetch_add(1, Ordering::Relaxed);
            return Err(Error::Conflict(format!("a message of epoch {epoch}, older than epoch {known}")));
        }
        Ok(())
    }

    /// The `epoch` parameter of a request (0 when absent: a peer without epochs).
    pub(super) fn epoch_param(request: &Request) -> Result<u64> {
        match request.query_param("epoch")? {
            None => Ok(0),
            Some(e) => e.parse().map_err(|_| Error::BadRequest(format!("epoch={e:?} is not an epoch"))),
        }
    }

    /// Reads answer only from a node that is up to date: the primary, or a replica that has
    /// caught up and holds a read lease.
    pub(super) fn readable(&self) -> Result<()> {
        core::read::may_read(self.reader()).map_err(Error::Unreadable)
    }

    /// What this catalog knows of itself for the read check ([`core::read::may_read`]).
    pub(super) fn reader(&self) -> Reader {
        let role = match (self.role(), &self.failover) {
            (Role::Primary, Some(f)) => ReadRole::Elected { may_read: f.core().may_read(Instant::now()) },
            (Role::Primary, None) => ReadRole::Static { reads_open: self.reads_open() },
            (Role::Replica, _) => {
                ReadRole::Replica { leased: self.leases().then(|| self.lease().valid(Instant::now())) }
            }
        };
        Reader { serving: self.serving.load(Ordering::SeqCst), settled: self.settled.load(Ordering::SeqCst), role }
    }

    /// A write from a client: decided here on the primary, forwarded by a replica.
    fn client_write(
        &self,
        request: &Request,
        id: u32,
        write: Write,
        order: Option<(String, String)>,
    ) -> Result<Response> {
        if self.role() == Role::Primary {
            match self.write(id, write, order) {
                // With etcd: the role moved on (a switchover) before anything was decided:
                // the write goes on to the new primary.
                Err(Error::Lead(NoLead::NotPrimary)) if self.failover.is_some() => {}
                answer => return Ok(Response::json(&answer?)),
            }
        }
        self.counters.forwarded.fetch_add(1, Ordering::Relaxed);
        self.forward_to(request)
    }

    /// The primary to forward to, or 503 while none is known (with etcd: an election).
    fn forward_target(&self) -> Result<String> {
        self.primary_url().ok_or_else(|| {
            self.kick_election();
            Error::Unavailable("no primary is known now (an election is under way)".into())
        })
    }

    /// Replica: relays a request to the primary (remote write) and its answer back.
    pub(super) fn forward_to(&self, request: &Request) -> Result<Response> {
        self.forward_with(request, (!request.body.is_empty()).then(|| request.body.clone()))
    }

    /// Relays `request` to the primary with `body` in place of its own.
    fn forward_with(&self, request: &Request, body: Option<Vec<u8>>) -> Result<Response> {
        let primary = &self.forward_target()?;
        let mut span = crate::trace::span("catalog.forward");
        span.attr("primary", primary.as_str());
        let method =
            Method::from_bytes(request.method.as_bytes()).map_err(|_| Error::BadRequest("bad method".into()))?;
        let target = match &request.query {
            Some(q) => format!("{}?{q}", request.path),
            None => request.path.clone(),
        };
        let answer = match &self.failover {
            None => self.forward.call(method, primary, &target, body),
            Some(_) => self.forward_watched(method, primary, target, body)?,
        };
        let answer = answer.map_err(|e| match e {
            PeerError::Unreachable { url, source, .. } => {
                self.kick_election();
                Error::Unavailable(format!("primary {url} unreachable: {source}"))
            }
            other => other.into(),
        })?;
        Ok(Response::raw_json(answer.status, answer.body))
    }

    /// `POST /books/{id}/purchase` with its optional order (id, time). A copy taken for an
    /// order is an internal act: it needs the token when one is set, and the order must be
    /// one an order server could have made now ([`PurchaseRequest::order`]). A replica
    /// judges it before it forwards it.
    fn purchase(&self, request: &Request, id: &str) -> Result<Response> {
        let id = parse_id(id)?;
        let body: PurchaseRequest =
            if request.body.is_empty() { PurchaseRequest::default() } else { json_body(request)? };
        if body.for_order() {
            check_token(request, self.config.common.admission())?;
        }
        let order = body.order(crate::ids::now_ms()).map_err(Error::BadRequest)?;
        self.client_write(request, id, Write::Purchase, order)
    }

    /// `POST /internal/purchases` (internal: an order server's batch): each purchase is
    /// judged and decided as `POST /books/{id}/purchase` with an order decides it (a bad
    /// one answered 400 on its own), and the primary queues them all for its group commit
    /// at once, so one request feeds one batch. A replica forwards the batch to the primary
    /// (the fallback of an order server that does not know the primary yet); with etcd, the
    /// purchases that a primary that lost its role did not decide go on to the new one.
    fn purchase_batch(&self, request: &Request) -> Result<Response> {
        let batch: PurchaseBatch = json_body(request)?;
        if batch.purchases.len() > PurchaseBatch::MOST {
            return Err(Error::BadRequest(format!(
                "{} purchases in one batch; at most {}",
                batch.purchases.len(),
                PurchaseBatch::MOST
            )));
        }
        if self.role() != Role::Primary {
            self.counters.forwarded.fetch_add(1, Ordering::Relaxed);
            return self.forward_to(request);
        }
        let now = crate::ids::now_ms();
        let mut taken: Vec<Option<Taken>> = Vec::with_capacity(batch.purchases.len());
        let mut writes = Vec::new();
        for p in &batch.purchases {
            let judged = PurchaseRequest { order_id: Some(p.order_id.clone()), at: Some(p.at.clone()) }
                .order(now)
                .map_err(Error::BadRequest)
                .and_then(|order| if p.id == 0 { Err(Error::BadRequest("book id 0".into())) } else { Ok(order) });
            match judged {
                Ok(order) => {
                    writes.push(Asked { id: p.id, write: Write::Purchase, order });
                    taken.push(None);
                }
                Err(e) => taken.push(Some(Taken::from_answer(Err(e.into())))),
            }
        }
        let mut answers = self.write_many(writes).into_iter();
        let mut elsewhere = Vec::new();
        for (slot, p) in taken.iter_mut().zip(&batch.purchases) {
            if slot.is_none() {
                match answers.next().expect("one answer per write") {
                    // With etcd: the role moved on before this one was decided.
                    Err(Error::Lead(NoLead::NotPrimary)) if self.failover.is_some() => elsewhere.push(p.clone()),
                    answer => *slot = Some(Taken::from_answer(answer.map_err(Into::into))),
                }
            }
        }
        if !elsewhere.is_empty() {
            self.counters.forwarded.fetch_add(1, Ordering::Relaxed);
            let body = serde_json::to_vec(&PurchaseBatch { purchases: elsewhere }).expect("wire types serialize");
            let relayed = self.forward_with(request, Some(body))?;
            if relayed.status != 200 {
                return Ok(relayed);
            }
            let relayed: PurchaseBatchAnswer = serde_json::from_slice(&relayed.body)
                .map_err(|e| Error::Internal(format!("the primary's answer to a batch: {e}")))?;
            let mut relayed = relayed.taken.into_iter();
            for slot in taken.iter_mut().filter(|t| t.is_none()) {
                *slot = relayed.next();
            }
        }
        let taken = taken
            .into_iter()
            .map(|t| t.ok_or_else(|| Error::Internal("the primary answered fewer purchases than sent".into())))
            .collect::<Result<Vec<Taken>>>()?;
        Ok(Response::json(&PurchaseBatchAnswer { taken }))
    }

    /// `POST /books`: 201 with the new book and its `Location`.
    fn add_book(&self, request: &Request) -> Result<Response> {
        let new: NewBook = json_body(request)?;
        new.check().map_err(Error::BadRequest)?;
        let answer = self.client_write(request, 0, Write::Add(new), None)?;
        if answer.status != 200 && answer.status != 201 {
            return Ok(answer);
        }
        let book: Book = serde_json::from_slice(&answer.body)
            .map_err(|e| Error::Internal(format!("the primary sent a bad book: {e}")))?;
        Ok(Response { status: 201, ..answer }.with_header("Location", format!("/books/{}", book.id)))
    }

    /// `GET /internal/purchases?after=N[&held=M][&here=1]`: answered by the primary,
    /// forwarded by a replica; with `here=1` answered from this catalog's own journal
    /// whatever its role (a whole copy taken from it). `held` is an order server's report
    /// that every order server holds the orders of the purchases up to write M: each
    /// catalog that receives it lets its journal forget those (a replica too, if its writer
    /// is free now, so that a promoted one keeps no less).
    fn purchases(&self, request: &Request) -> Result<Response> {
        let number = |name: &str| -> Result<u64> {
            match request.query_param(name)? {
                None => Ok(0),
                Some(a) => a.parse().map_err(|_| Error::BadRequest(format!("{name}={a:?} is not a write number"))),
            }
        };
        let (after, held) = (number("after")?, number("held")?);
        let here = request.query_param("here")?.is_some_and(|h| h == "1");
        if self.role() == Role::Replica && !here {
            if let (true, Some(mut store)) = (held > 0, self.try_lock_writer()) {
                store.recent.journal.release(held);
            }
            return self.forward_to(request);
        }
        let shape = PageShape::from_query(request.query_param("shape")?.as_deref()).map_err(Error::BadRequest)?;
        let mut store = self.lock_writer();
        store.recent.journal.release(held);
        let page = match shape {
            PageShape::Whole => {
                let (purchases, more) = store.recent.journal.after(after, PURCHASES_PAGE);
                PurchasePage { purchases, more, ids: None }
            }
            PageShape::Ids => {
                let (ids, more) = store.recent.journal.ids_after(after, PURCHASES_PAGE);
                PurchasePage { purchases: Vec::new(), more, ids: Some(ids) }
            }
        };
        drop(store);
        Ok(Response::json(&page))
    }

    /// Answers one request.
    pub fn handle(&self, request: &Request) -> Response {
        let admission = self.config.common.admission();
        let method = request.method.as_str();
        let admin = |f: &dyn Fn() -> Result<Response>| check_token(request, admission).and_then(|_| f());
        http::route(request, |segs, get| match segs {
            ["health"] if get => http::respond(Ok(Response::json(&self.health())), "/health"),
            ["ready"] if get => http::respond(Ok(self.ready()), "/ready"),
            ["metrics"] if get => {
                let text = self.metrics.render(&self.metrics_text());
                http::respond(Ok(Response::metrics(text)), "/metrics")
            }
            ["traces", id] if get => http::respond(admin(&|| crate::trace::own_answer(id)), "/traces/{trace_id}"),
            ["books"] if get => http::respond(self.list(request), "/books"),
            ["topics"] if get => http::respond(self.topics(request), "/topics"),
            ["books"] if method == "POST" => http::respond(admin(&|| self.add_book(request)), "/books"),
            ["books", id] if get => http::respond(self.read_one(id), "/books/{id}"),
            ["books", id] if method == "PATCH" => http::respond(
                admin(&|| {
                    let id = parse_id(id)?;
                    let update: BookUpdate = json_body(request)?;
                    self.client_write(request, id, Write::Update(update), None)
                }),
                "/books/{id}",
            ),
            ["books", id, "purchase"] if method == "POST" => {
                http::respond(self.purchase(request, id), "/books/{id}/purchase")
            }
            ["internal", "farewell"] if method == "POST" => http::respond(
                admin(&|| {
                    self.replica_only()?;
                    // Named by the stopping primary's run id: only the run that granted this
                    // replica's lease extends it (a farewell is never inferred).
                    let farewell: Farewell = json_body(request)?;
                    // With etcd another primary may follow at once: no grace.
                    let extended = self.failover.is_none() && self.lease().farewell(Instant::now(), &farewell.run);
                    log::warn!(
                        "the primary is stopping; {}",
                        if extended { "serving reads for the farewell grace" } else { "no valid lease to extend" }
                    );
                    Ok(Response::json(&FarewellAnswer { extended }))
                }),
                "/internal/farewell",
            ),
            ["internal", "lease"] if method == "POST" => {
                http::respond(admin(&|| self.grant_lease(&json_body(request)?)), "/internal/lease")
            }
            ["internal", "near"] if method == "POST" => {
                http::respond(admin(&|| Ok(Response::json(&self.near_watch(&json_body(request)?)?))), "/internal/near")
            }
            ["internal", "purchases"] if get => {
                http::respond(admin(&|| self.purchases(request)), "/internal/purchases")
            }
            ["internal", "purchases"] if method == "POST" => {
                http::respond(admin(&|| self.purchase_batch(request)), "/internal/purchases")
            }
            ["internal", "books"] if get => http::respond(admin(&|| self.copy_page(request)), "/internal/books"),
            ["internal", "identity"] if get => {
                http::respond(admin(&|| Ok(Response::json(&self.identity()))), "/internal/identity")
            }
            ["internal", "log"] if get => http::respond(admin(&|| self.log_after(request)), "/internal/log"),
            ["internal", "committed"] if get => {
                http::respond(admin(&|| self.committed_answer()), "/internal/committed")
            }
            ["admin", "switchover"] if method == "POST" => {
                http::respond(admin(&|| self.switchover_route(request)), "/admin/switchover")
            }
            ["internal", "lead"] if method == "POST" => http::respond(
                admin(&|| Ok(Response::json(&self.expect_leadership(json_body(request)?)?))),
                "/internal/lead",
            ),
            ["internal", "resync"] if method == "POST" => http::respond(
                admin(&|| {
                    self.replica_only()?;
                    let started = !self.catch_up_wanted.swap(true, Ordering::SeqCst);
                    if started {
                        self.serving.store(false, Ordering::SeqCst);
                    }
                    Ok(Response::json(&ResyncAnswer { started }))
                }),
                "/internal/resync",
            ),
            ["internal", "replicate"] if method == "POST" => http::respond(
                admin(&|| {
                    let epoch = Self::epoch_param(request)?;
                    let committed = match request.query_param("committed")? {
                        None => None,
                        Some(c) => Some(
                            c.parse()
                                .map_err(|_| Error::BadRequest(format!("committed={c:?} is not a write number")))?,
                        ),
                    };
                    self.check_epoch(epoch)?;
                    self.replica_only()?;
                    Ok(Response::json(&self.apply(json_body::<Vec<Replicate>>(request)?, committed, epoch)?))
                }),
                "/internal/replicate",
            ),
            ["health"] | ["ready"] | ["metrics"] | ["topics"] => {
                http::respond(Err(Error::MethodNotAllowed("GET, HEAD")), "invalid")
            }
            ["books"] => http::respond(Err(Error::MethodNotAllowed("GET, HEAD, POST")), "invalid"),
            ["books", _] => http::respond(Err(Error::MethodNotAllowed("GET, HEAD, PATCH")), "invalid"),
            ["books", _, "purchase"]
            | ["admin", "switchover"]
            | ["internal", "replicate" | "resync" | "lease" | "near" | "farewell" | "lead"] => {
                http::respond(Err(Error::MethodNotAllowed("POST")), "invalid")
            }
            ["internal", "purchases"] => http::respond(Err(Error::MethodNotAllowed("GET, HEAD, POST")), "invalid"),
            ["internal", "books" | "log" | "committed" | "identity"] => {
                http::respond(Err(Error::MethodNotAllowed("GET, HEAD")), "invalid")
            }
            _ => http::respond(Err(Error::NotFound(format!("no route {}", request.path))), "unknown"),
        })
    }

    pub(super) fn replica_only(&self) -> Result<()> {
        match self.role() {
            Role::Replica => Ok(()),
            Role::Primary => Err(Error::NotHere(NotHere::IsPrimary)),
        }
    }

    /// `GET /books[?topic=]`, a page by id, with the sequence number it was read at.
    fn list(&self, request: &Request) -> Result<Response> {
        self.readable()?;
        let topic = request.query_param("topic")?;
        let page = PageRequest::from_query(request, page::MAX_LIMIT, page::parse_book_cursor)?;
        let state = self.clean(|state| state.list_dirty(topic.as_deref()))?;
        let (books, more) = state.page(topic.as_deref(), page.after.unwrap_or(0), page.limit);
        let mut response = Response::json(&books).with_header("X-Seq", state.seq().to_string());
        if let (true, Some(last)) = (more, books.last()) {
            let params: Vec<(&str, &str)> = topic.as_deref().map(|t| ("topic", t)).into_iter().collect();
            response =
                response.with_header("Link", page::next_link("/books", &params, page.limit, &last.id.to_string()));
        }
        Ok(response)
    }

    /// `GET /topics[?limit=&after=]`: a page of topics, each with its number of books, by
    /// topic (the cursor is the last topic of the previous page), with the sequence number
    /// it was read at. Read as the other lists are (CRAQ): a replica that holds a pending
    /// write that adds a book or moves one asks the primary what is committed first; a
    /// pending purchase or price change leaves every count as it is and costs nothing.
    fn topics(&self, request: &Request) -> Result<Response> {
        self.readable()?;
        let page = PageRequest::from_query(request, page::MAX_LIMIT, super::state::parse_topic_cursor)?;
        let state = self.clean(Catalog::topics_dirty)?;
        let (topics, more) = state.topics_page(page.after.as_deref(), page.limit);
        let mut response = Response::json(&topics).with_header("X-Seq", state.seq().to_string());
        if let (true, Some(last)) = (more, topics.last()) {
            response = response.with_header("Link", page::next_link("/topics", &[], page.limit, &last.topic));
        }
        Ok(response)
    }

    /// `GET /internal/books`: a page of a replica's full copy (any node that has the data).
    fn copy_page(&self, request: &Request) -> Result<Response> {
        let page = PageRequest::from_query(request, COPY_PAGE, page::parse_book_cursor)?;
        // Under the writer lock: the page, its sequence number and that write's epoch agree.
        let store = self.lock_writer();
        let (history, epoch) = (store.history_id().to_string(), store.last_epoch());
        let state = self.state();
        let chain = store.recent.history.chain_at(state.seq());
        let (books, more) = state.page(None, page.after.unwrap_or(0), page.limit);
        let books = books.into_iter().cloned().collect();
        Ok(Response::json(&BookPage { history, seq: state.seq(), epoch, books, more, chain }))
    }

    /// `GET /books/{id}`, with the sequence number it was read at.
    fn read_one(&self, id: &str) -> Result<Response> {
        let id = parse_id(id)?;
        self.readable()?;
        let state = self.clean(|state| state.is_dirty(id))?;
        Ok(Response::json(state.book(id)?).with_header("X-Seq", state.seq().to_string()))
    }

    /// `POST /internal/near`: a front end's watch (see the module's protocol). Only the
    /// primary answers, and only while it may grant read leases.
    pub(super) fn near_watch(&self, watch: &NearWatch) -> Result<NearAnswer> {
        if watch.session.is_empty() || watch.session.len() > 64 {
            return Err(Error::BadRequest("session must be 1 to 64 characters".into()));
        }
        if self.replica_only().is_ok() {
            return Err(Error::NotHere(NotHere::NoNearFromReplica));
        }
        if !self.leases() {
            return Err(Error::NotHere(NotHere::LeasesOff));
        }
        // A static primary that has not compared itself with its replicas may hold less than
        // it acknowledged before (its disk came back empty or older): a reset now would set
        // the front end's floor below acknowledged writes, and a read in flight from before
        // would be kept and served under the new lease.
        if !self.settled.load(Ordering::SeqCst) {
            return Err(Error::Unreadable(Unreadable::Settling));
        }
        // As for replicas' leases (`grant_lease`); while a switchover revokes them, a watch
        // is answered without one. A watch let through while revoking carries no lease
        // whatever happens meanwhile (the switchover may fail and resume, or succeed): its
        // next one is checked.
        let gated = !self.near.revoking();
        if let Some(f) = self.failover.as_ref().filter(|_| gated) {
            f.core().may_acknowledge(Instant::now())?;
        }
        if gated {
            self.near.record_grant().map_err(|e| {
                Error::Unavailable(format!("cannot record near-cache leases in the data directory: {e}"))
            })?;
        }
        let current = self.state().seq();
        let reply = self.near.watch(&watch.session, watch.seen, current).map_err(Error::Unavailable)?;
        self.counters.near_answers.fetch_add(1, Ordering::Relaxed);
        Ok(NearAnswer {
            epoch: self.term(),
            lease_ms: if reply.revoke || !gated { 0 } else { self.config.lease.as_millis() as u64 },
            through: reply.through,
            keys: reply.keys,
            reset: reply.reset,
        })
    }
}

impl crate::service::Service for CatalogNode {
    fn handle(&self, request: &Request) -> Response {
        CatalogNode::handle(self, request)
    }

    fn stopped(&self) {
        if self.failover.is_some() {
            self.resign();
        } else if self.config.role == Role::Primary && self.leases() {
            self.farewell();
        }
    }
}
