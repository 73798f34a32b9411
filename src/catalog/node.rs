//! One catalog process: routes, remote writes, replication and catch-up.
//!
//! Locks: `writer` serialises everything that changes the catalog on this node (a whole
//! primary write from decision to acknowledgement, or a replica's apply) and owns the
//! files; `state` is held only to read or swap the in-memory catalog, never across I/O.
//! Order: `writer` before `state`.

use super::lease::{Grant, ReplicaLease, FAREWELL_LEASES};
use super::state::{Applied, Catalog, Write};
use super::store::Store;
use crate::cache::{self, Cache};
use crate::client::{CatalogClient, Http};
use crate::config::{self, Common, ConfigError, Source};
use crate::error::{Error, Result};
use crate::http::{self, check_token, json_body, parse_id, Request, Response};
use crate::metrics::{push_metric, Metrics};
use crate::shutdown::Shutdown;
use crate::wire::{
    Book, BookUpdate, LeaseRequest, Order, PurchasePage, PurchaseRequest, ReplicaAck, Replicate, Snapshot,
};
use std::path::PathBuf;
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
/// Default length of a replica's read lease.
pub const DEFAULT_LEASE: Duration = Duration::from_secs(2);
/// Shortest lease accepted: renewals go every quarter of it.
pub const MIN_LEASE: Duration = Duration::from_millis(200);
/// Most purchases in one answer of `GET /internal/purchases`.
pub const PURCHASES_PAGE: usize = 500;
/// Pause between attempts to bring a replica up to date (primary) or to catch up (replica).
pub const RETRY_INTERVAL: Duration = Duration::from_millis(300);

/// A catalog's role.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Role {
    /// Decides every write.
    Primary,
    /// Serves reads, forwards writes to the primary.
    Replica,
}

/// Settings of a catalog process.
#[derive(Clone, Debug)]
pub struct CatalogConfig {
    /// Listen address, workers, token.
    pub common: Common,
    /// Where `books.csv` lives.
    pub data_dir: PathBuf,
    /// Primary or replica.
    pub role: Role,
    /// The primary's base URL (replicas only).
    pub primary: Option<String>,
    /// The replicas' base URLs (primary only).
    pub replicas: Vec<String>,
    /// memcached servers whose entries the primary invalidates.
    pub memcached: Vec<String>,
    /// Length of a replica's read lease; zero turns read leases off.
    pub lease: Duration,
}

impl CatalogConfig {
    /// Reads the settings.
    pub fn from_source(src: &dyn Source) -> std::result::Result<CatalogConfig, ConfigError> {
        let common = Common::from_source(src, Self::DEFAULT_LISTEN)?;
        let role = match config::opt(src, "BAZAR_ROLE").as_deref() {
            Some("primary") => Role::Primary,
            Some("replica") => Role::Replica,
            other => {
                return Err(ConfigError { var: "BAZAR_ROLE", problem: format!("{other:?} must be primary or replica") })
            }
        };
        let primary = match role {
            Role::Replica => Some(config::urls(src, "BAZAR_PRIMARY", true)?.swap_remove(0)),
            Role::Primary => None,
        };
        let replicas = if role == Role::Primary { config::urls(src, "BAZAR_REPLICAS", false)? } else { Vec::new() };
        let lease = config::millis(src, "BAZAR_LEASE_MS", DEFAULT_LEASE, 0..=60_000)?;
        if !lease.is_zero() && lease < MIN_LEASE {
            let problem = format!("must be 0 (off) or at least {} ms", MIN_LEASE.as_millis());
            return Err(ConfigError { var: "BAZAR_LEASE_MS", problem });
        }
        Ok(CatalogConfig {
            common,
            data_dir: config::data_dir(src, "./data-catalog"),
            role,
            primary,
            replicas,
            memcached: config::memcached(src)?,
            lease,
        })
    }

    /// Where it listens unless `BAZAR_LISTEN` says otherwise.
    pub const DEFAULT_LISTEN: &'static str = "0.0.0.0:9000";

    /// `--help` text.
    pub const HELP: &'static str = "\
bazar-catalog: the catalog server (books, prices, stock), primary or replica.

Environment:
  BAZAR_ROLE      primary or replica (required)
  BAZAR_PRIMARY   replica: base URL of the primary, e.g. http://127.0.0.1:9000
  BAZAR_REPLICAS  primary: comma-separated base URLs of the replicas
  BAZAR_DATA_DIR  directory of books.csv (default ./data-catalog; seeded on first start)
  BAZAR_MEMCACHED primary: memcached host:port list whose entries writes invalidate
  BAZAR_LEASE_MS  length of a replica's read lease (default 2000; 0 turns leases off)
";
}

/// The primary's view of one replica.
struct ReplicaLink {
    url: String,
    /// In sync or not, its identity, its lease. Held briefly; never across a call.
    grant: Mutex<Grant>,
}

impl ReplicaLink {
    fn grant(&self) -> std::sync::MutexGuard<'_, Grant> {
        self.grant.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// A write waiting for the writer thread, and where its answer goes.
struct Pending {
    id: u32,
    write: Write,
    order: Option<(String, String)>,
    reply: mpsc::SyncSender<Result<Book>>,
}

/// Counters shown in `/metrics`.
#[derive(Default)]
struct Counters {
    writes: AtomicU64,
    batches: AtomicU64,
    pushes_failed: AtomicU64,
    snapshots_sent: AtomicU64,
    catch_ups: AtomicU64,
    forwarded: AtomicU64,
    lease_grants: AtomicU64,
    lease_refusals: AtomicU64,
    lease_waits: AtomicU64,
    lease_wait_micros: AtomicU64,
    lease_renewals: AtomicU64,
    lease_renewal_failures: AtomicU64,
}

/// One catalog process.
pub struct CatalogNode {
    config: CatalogConfig,
    /// Serialises changes on this node and owns the files.
    writer: Mutex<Store>,
    /// The books as reads see them.
    state: RwLock<Catalog>,
    /// Replica: caught up with the primary since it started.
    serving: AtomicBool,
    /// Replica: its identity for this run.
    replica_id: String,
    /// Replica: its read lease. Held briefly.
    lease: Mutex<ReplicaLease>,
    /// Primary: no write is acknowledged before this (the farewell grace after start)
    /// unless every replica has been brought in sync first.
    writes_from: Instant,
    /// Primary: writes are open (the grace passed or every replica was in sync).
    writes_open: AtomicBool,
    /// Primary: the queue of the writer thread (group commit).
    writes: mpsc::SyncSender<Pending>,
    /// Primary: the writer thread's end of it, taken when the thread starts.
    queue: Mutex<Option<mpsc::Receiver<Pending>>>,
    /// Replica: when it last heard from the primary.
    last_push: Mutex<Option<Instant>>,
    links: Vec<ReplicaLink>,
    /// Pushes, snapshots and lease requests (short timeout).
    push: CatalogClient,
    /// Remote writes and catch-up (longer timeout).
    forward: Http,
    cache: Option<Cache>,
    counters: Counters,
    metrics: Arc<Metrics>,
}

impl CatalogNode {
    /// Opens the data directory; a replica is not serving until it caught up.
    pub fn open(config: CatalogConfig, metrics: Arc<Metrics>) -> Result<Arc<CatalogNode>> {
        let (store, catalog) = Store::open(&config.data_dir)?;
        let token = config.common.token.clone();
        let pool = config.common.threads;
        let links =
            config.replicas.iter().map(|url| ReplicaLink { url: url.clone(), grant: Mutex::default() }).collect();
        let cache = (!config.memcached.is_empty()).then(|| Cache::new(&config.memcached, pool));
        let (writes, queue) = mpsc::sync_channel(QUEUE);
        Ok(Arc::new(CatalogNode {
            writes,
            queue: Mutex::new(Some(queue)),
            serving: AtomicBool::new(config.role == Role::Primary),
            replica_id: crate::ids::random_hex()?,
            lease: Mutex::new(ReplicaLease::new(config.lease)),
            writes_from: Instant::now() + config.lease * FAREWELL_LEASES,
            writes_open: AtomicBool::new(config.lease.is_zero() || config.replicas.is_empty()),
            writer: Mutex::new(store),
            state: RwLock::new(catalog),
            last_push: Mutex::new(None),
            links,
            push: CatalogClient { http: Http::new(PUSH_TIMEOUT, pool, token.clone()) },
            forward: Http::new(FORWARD_TIMEOUT, pool, token),
            cache,
            counters: Counters::default(),
            metrics,
            config,
        }))
    }

    fn leases(&self) -> bool {
        !self.config.lease.is_zero()
    }

    /// Starts the background work: a primary keeps replicas in sync, a replica catches up
    /// and renews its lease.
    pub fn start_background(self: &Arc<Self>, shutdown: &Shutdown) {
        let spawn = |work: fn(&CatalogNode, &Shutdown)| {
            let (node, stop) = (Arc::clone(self), shutdown.clone());
            std::thread::spawn(move || work(&node, &stop));
        };
        match self.config.role {
            Role::Primary => {
                if let Some(queue) = self.queue.lock().unwrap_or_else(|e| e.into_inner()).take() {
                    let (node, stop) = (Arc::clone(self), shutdown.clone());
                    std::thread::Builder::new()
                        .name("writer".into())
                        .spawn(move || node.writer(queue, &stop))
                        .expect("a thread can start");
                }
                if self.cache.is_some() {
                    spawn(|node, stop| {
                        while !stop.sleep(cache::BACKOFF) {
                            // Under the writer lock: markers are set in write order.
                            let _writer = node.lock_writer();
                            node.cache.as_ref().expect("checked").retry_pending();
                        }
                    });
                }
                for i in 0..self.links.len() {
                    let (node, stop) = (Arc::clone(self), shutdown.clone());
                    std::thread::spawn(move || node.keep_replica_in_sync(i, &stop));
                }
            }
            Role::Replica => {
                spawn(CatalogNode::catch_up);
                if self.leases() {
                    spawn(CatalogNode::renew_lease);
                }
            }
        }
    }

    fn state(&self) -> std::sync::RwLockReadGuard<'_, Catalog> {
        self.state.read().unwrap_or_else(|e| e.into_inner())
    }

    fn set_state(&self, catalog: Catalog) {
        *self.state.write().unwrap_or_else(|e| e.into_inner()) = catalog;
    }

    fn lock_writer(&self) -> std::sync::MutexGuard<'_, Store> {
        self.writer.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn lease(&self) -> std::sync::MutexGuard<'_, ReplicaLease> {
        self.lease.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Reads answer only from a node that is up to date: the primary, or a replica that has
    /// caught up and holds a read lease.
    fn readable(&self) -> Result<()> {
        if !self.serving.load(Ordering::SeqCst) {
            return Err(Error::Unavailable("replica is catching up with the primary".into()));
        }
        if self.config.role == Role::Replica && self.leases() && !self.lease().valid(Instant::now()) {
            return Err(Error::Unavailable(
                "replica holds no read lease from the primary; it may have missed writes".into(),
            ));
        }
        Ok(())
    }

    /// The primary's write: queued for the writer thread, which decides, persists, pushes
    /// and invalidates, then acknowledges (see `CatalogNode::commit`).
    ///
    /// `order` (id, time) names the order a purchase takes its copy for: it is journaled
    /// with the write, and a purchase for an order already journaled takes no second copy.
    pub fn write(&self, id: u32, write: Write, order: Option<(String, String)>) -> Result<Book> {
        self.wait_until_writable();
        let (reply, answer) = mpsc::sync_channel(1);
        self.writes
            .send(Pending { id, write, order, reply })
            .map_err(|_| Error::Unavailable("the catalog is stopping".into()))?;
        answer.recv().map_err(|_| Error::Unavailable("the catalog is stopping".into()))?
    }

    /// Primary, the writer thread: takes every write waiting (up to [`MAX_BATCH`]) and
    /// commits them together.
    fn writer(&self, queue: mpsc::Receiver<Pending>, shutdown: &Shutdown) {
        while !shutdown.is_set() {
            let first = match queue.recv_timeout(Duration::from_millis(100)) {
                Ok(p) => p,
                Err(mpsc::RecvTimeoutError::Timeout) => continue,
                Err(mpsc::RecvTimeoutError::Disconnected) => return,
            };
            let mut batch = vec![first];
            while batch.len() < MAX_BATCH {
                match queue.try_recv() {
                    Ok(p) => batch.push(p),
                    Err(_) => break,
                }
            }
            self.commit(batch);
        }
    }

    /// Group commit: decides each write in order, makes them all durable with one fsync,
    /// pushes them to each replica as one batch, invalidates their cache entries, and only
    /// then answers each. A write that is refused (out of stock, bad update) is answered
    /// with its error and takes no sequence number.
    fn commit(&self, batch: Vec<Pending>) {
        let mut store = self.lock_writer();
        let mut next = self.state().clone();
        let mut answers: Vec<(mpsc::SyncSender<Result<Book>>, Result<Book>)> = Vec::with_capacity(batch.len());
        let mut writes: Vec<(Replicate, Option<Order>)> = Vec::new();
        let mut keys = Vec::new();
        let mut orders = std::collections::HashSet::new();
        for p in batch {
            let repeated =
                p.order.as_ref().is_some_and(|(o, _)| store.journal.contains(o) || !orders.insert(o.clone()));
            let decided = if repeated {
                // The copy was taken for this order already: answer as then, take none.
                next.book(p.id).cloned()
            } else {
                next.book(p.id).cloned().and_then(|old| {
                    let book = next.decide(p.id, &p.write)?;
                    let seq = next.commit(book.clone());
                    keys.extend(cache::keys_for(&old, &book));
                    let order = p.order.map(|(order_id, at)| Order {
                        order_id,
                        id: p.id,
                        title: book.title.clone(),
                        price: book.price,
                        at,
                    });
                    writes.push((Replicate { seq, book: book.clone() }, order));
                    Ok(book)
                })
            };
            answers.push((p.reply, decided));
        }
        if !writes.is_empty() {
            let rows: Vec<(u64, &Book, Option<&Order>)> =
                writes.iter().map(|(r, o)| (r.seq, &r.book, o.as_ref())).collect();
            if let Err(e) = store.append(&rows).and_then(|_| store.after_write(&next)) {
                log::error!("cannot persist {} writes: {e}", writes.len());
                for (reply, _) in answers {
                    let _ = reply.send(Err(Error::Internal(format!("cannot persist the write: {e}"))));
                }
                return;
            }
            let last = next.seq();
            self.set_state(next);
            self.counters.writes.fetch_add(writes.len() as u64, Ordering::Relaxed);
            self.counters.batches.fetch_add(1, Ordering::Relaxed);
            let pushes: Vec<Replicate> = writes.into_iter().map(|(r, _)| r).collect();
            self.replicate(&pushes);
            if let Some(cache) = &self.cache {
                keys.sort_unstable();
                keys.dedup();
                // One marker per key, at the batch's last write: no older entry survives it.
                cache.invalidate(&keys, last);
            }
        }
        drop(store);
        for (reply, answer) in answers {
            let _ = reply.send(answer);
        }
    }

    /// A primary that starts waits before its first write until every replica is in sync
    /// (which ends any lease a replica extended while no primary ran) or the farewell grace
    /// has passed.
    fn wait_until_writable(&self) {
        while !self.writes_open.load(Ordering::SeqCst) {
            if Instant::now() >= self.writes_from || self.links.iter().all(|l| l.grant().in_sync) {
                self.writes_open.store(true, Ordering::SeqCst);
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Primary, on a graceful stop: takes the writer lock for good (nothing more will be
    /// acknowledged) and says farewell to every replica in sync, so that they go on
    /// serving reads for the grace while no primary runs.
    fn farewell(&self) {
        let writer = self.lock_writer();
        std::thread::scope(|s| {
            for link in self.links.iter().filter(|l| l.grant().in_sync) {
                s.spawn(move || {
                    match self.push.http.call(Method::POST, &link.url, "/internal/farewell", Some(b"{}".to_vec())) {
                        Ok(a) if a.status == 200 => log::info!("said farewell to replica {}", link.url),
                        Ok(a) => log::warn!("replica {} did not take the farewell: {}", link.url, a.error()),
                        Err(e) => log::warn!("replica {} did not take the farewell: {e}", link.url),
                    }
                });
            }
        });
        std::mem::forget(writer);
    }

    /// Pushes one write to every replica in sync (in parallel). A replica that misses it
    /// is out of sync from then on (no lease renewals, no pushes) until the background
    /// brings it back; the write waits until that replica's lease has surely expired.
    fn replicate(&self, pushes: &[Replicate]) {
        let waits: Vec<Option<Instant>> = std::thread::scope(|s| {
            let pushes: Vec<_> = self
                .links
                .iter()
                .filter(|link| link.grant().in_sync)
                .map(|link| {
                    s.spawn(move || match self.push_to(link, pushes) {
                        Ok(replica_id) => {
                            link.grant().synced(replica_id);
                            None
                        }
                        Err(e) => {
                            self.counters.pushes_failed.fetch_add(1, Ordering::Relaxed);
                            let seq = pushes.last().map_or(0, |p| p.seq);
                            log::warn!("replica {} missed write {seq}: {e}; out of sync until it catches up", link.url);
                            link.grant().lost()
                        }
                    })
                })
                .collect();
            pushes.into_iter().map(|p| p.join().unwrap_or(None)).collect()
        });
        if let Some(until) = waits.into_iter().flatten().max().filter(|_| self.leases()) {
            let wait = until.saturating_duration_since(Instant::now());
            if !wait.is_zero() {
                self.counters.lease_waits.fetch_add(1, Ordering::Relaxed);
                self.counters.lease_wait_micros.fetch_add(wait.as_micros() as u64, Ordering::Relaxed);
                log::info!("{} writes wait {wait:?} for a lost replica's lease to expire", pushes.len());
                std::thread::sleep(wait);
            }
        }
    }

    /// Pushes a batch of writes; after a gap, the whole catalog. Returns the replica's identity.
    fn push_to(&self, link: &ReplicaLink, pushes: &[Replicate]) -> Result<String> {
        let ack = self.push.replicate(&link.url, pushes)?;
        if ack.seq >= pushes.last().map_or(0, |p| p.seq) {
            return Ok(ack.replica_id);
        }
        self.send_snapshot(link, &self.state().snapshot())
    }

    fn send_snapshot(&self, link: &ReplicaLink, snapshot: &Snapshot) -> Result<String> {
        let ack = self.push.install(&link.url, snapshot)?;
        self.counters.snapshots_sent.fetch_add(1, Ordering::Relaxed);
        if ack.seq < snapshot.seq {
            return Err(Error::Internal(format!(
                "replica {} stayed at {} after a snapshot at {}",
                link.url, ack.seq, snapshot.seq
            )));
        }
        Ok(ack.replica_id)
    }

    /// Primary, background: brings replica `i` back in sync whenever it is not. A first
    /// snapshot is sent without the writer lock (a dead replica delays no write); the final
    /// check, and a second snapshot if writes came in between, happen under it, so that no
    /// write can slip between the snapshot and the replica being in sync.
    fn keep_replica_in_sync(&self, i: usize, shutdown: &Shutdown) {
        let link = &self.links[i];
        loop {
            if !link.grant().in_sync {
                let probe = self.state().snapshot();
                if let Err(e) = self.send_snapshot(link, &probe) {
                    log::debug!("replica {} still unreachable: {e}", link.url);
                } else {
                    let _writer = self.lock_writer();
                    let current = self.state().snapshot();
                    let synced = if current.seq == probe.seq {
                        self.push.install(&link.url, &current).map(|a| a.replica_id)
                    } else {
                        self.send_snapshot(link, &current)
                    };
                    match synced {
                        Ok(id) => {
                            link.grant().synced(id);
                            log::info!("replica {} is in sync at write {}", link.url, current.seq);
                        }
                        Err(e) => log::debug!("replica {} not in sync yet: {e}", link.url),
                    }
                }
            }
            if shutdown.sleep(RETRY_INTERVAL) {
                return;
            }
        }
    }

    /// Replica, background: installs the primary's snapshot, then serves reads.
    fn catch_up(&self, shutdown: &Shutdown) {
        let primary = self.config.primary.clone().expect("a replica has a primary");
        let client = CatalogClient { http: self.forward.clone() };
        loop {
            if self.serving.load(Ordering::SeqCst) {
                return;
            }
            match client.snapshot(&primary) {
                Ok(snapshot) => match self.install(snapshot, true) {
                    Ok(_) => {
                        log::info!("caught up with the primary at write {}", self.state().seq());
                        return;
                    }
                    Err(e) => log::warn!("cannot install the primary's snapshot: {e}"),
                },
                Err(e) => log::warn!("waiting for the primary {primary}: {e}"),
            }
            if shutdown.sleep(RETRY_INTERVAL) {
                return;
            }
        }
    }

    /// Replica, background: asks for a read lease every quarter of its length.
    fn renew_lease(&self, shutdown: &Shutdown) {
        let primary = self.config.primary.clone().expect("a replica has a primary");
        let request = LeaseRequest { replica_id: self.replica_id.clone() };
        loop {
            let asked = Instant::now();
            let answer = self.push.lease(&primary, &request);
            let mut lease = self.lease();
            match answer {
                Ok(_) => {
                    lease.granted(asked);
                    self.counters.lease_renewals.fetch_add(1, Ordering::Relaxed);
                }
                Err(Error::Unreachable { refused: false, .. }) | Err(Error::Unavailable(_)) => {
                    self.counters.lease_renewal_failures.fetch_add(1, Ordering::Relaxed);
                }
                Err(Error::Unreachable { refused: true, .. }) => {
                    let was_down = lease.primary_down();
                    if lease.refused(asked, Instant::now()) && !was_down {
                        log::warn!("the primary {primary} is not running: serving reads on the lease it granted (no write can be acknowledged meanwhile)");
                    }
                    self.counters.lease_renewal_failures.fetch_add(1, Ordering::Relaxed);
                }
                Err(e) => {
                    // The primary answered, without a grant.
                    lease.answered(asked);
                    self.counters.lease_renewal_failures.fetch_add(1, Ordering::Relaxed);
                    log::debug!("lease not renewed: {e}");
                }
            }
            drop(lease);
            if shutdown.sleep(self.config.lease / 4) {
                return;
            }
        }
    }

    /// Primary: a replica's lease request.
    fn grant_lease(&self, request: &LeaseRequest) -> Result<Response> {
        if self.config.role != Role::Primary {
            return Err(Error::Conflict("only the primary grants leases".into()));
        }
        for link in &self.links {
            let mut grant = link.grant();
            if grant.replica_id.as_deref() == Some(request.replica_id.as_str()) {
                return match grant.request(&request.replica_id, Instant::now(), self.config.lease) {
                    Ok(()) => {
                        self.counters.lease_grants.fetch_add(1, Ordering::Relaxed);
                        Ok(Response::json(&serde_json::json!({ "lease_ms": self.config.lease.as_millis() as u64 })))
                    }
                    Err(why) => {
                        self.counters.lease_refusals.fetch_add(1, Ordering::Relaxed);
                        Err(Error::Conflict(why.into()))
                    }
                };
            }
        }
        self.counters.lease_refusals.fetch_add(1, Ordering::Relaxed);
        Err(Error::Conflict("unknown replica: not yet brought in sync since it or the primary started".into()))
    }

    /// Replica: applies a batch of pushed writes, in order, with one fsync.
    pub fn apply(&self, pushes: &[Replicate]) -> Result<ReplicaAck> {
        let mut store = self.lock_writer();
        let mut next = self.state().clone();
        let applied: Vec<&Replicate> = pushes.iter().filter(|p| next.apply(p) == Applied::Applied).collect();
        if !applied.is_empty() {
            let rows: Vec<(u64, &Book, Option<&Order>)> = applied.iter().map(|p| (p.seq, &p.book, None)).collect();
            store.append(&rows)?;
            store.after_write(&next)?;
            self.set_state(next);
        }
        self.heard_from_primary();
        Ok(ReplicaAck { seq: self.state().seq(), replica_id: self.replica_id.clone() })
    }

    /// Replica: installs a snapshot (unless older than what it has, when not forced).
    pub fn install(&self, snapshot: Snapshot, force: bool) -> Result<ReplicaAck> {
        let mut store = self.lock_writer();
        let mut next = self.state().clone();
        // A primary that installs a snapshot brings this replica in sync: any lease extended
        // while no primary ran ends, and leases come from grants again.
        self.lease().reset_if_extended();
        if next.install(snapshot, force)? {
            store.checkpoint(&next)?;
            self.set_state(next);
            self.counters.catch_ups.fetch_add(1, Ordering::Relaxed);
        }
        self.serving.store(true, Ordering::SeqCst);
        self.heard_from_primary();
        Ok(ReplicaAck { seq: self.state().seq(), replica_id: self.replica_id.clone() })
    }

    fn heard_from_primary(&self) {
        *self.last_push.lock().unwrap_or_else(|e| e.into_inner()) = Some(Instant::now());
    }

    /// A write from a client: decided here on the primary, forwarded by a replica.
    fn client_write(
        &self,
        request: &Request,
        id: u32,
        write: Write,
        order: Option<(String, String)>,
    ) -> Result<Response> {
        match &self.config.primary {
            None => Ok(Response::json(&self.write(id, write, order)?)),
            Some(primary) => {
                self.counters.forwarded.fetch_add(1, Ordering::Relaxed);
                self.forward_to(primary, request)
            }
        }
    }

    /// Replica: relays a request to the primary (remote write) and its answer back.
    fn forward_to(&self, primary: &str, request: &Request) -> Result<Response> {
        let body = (!request.body.is_empty()).then(|| request.body.clone());
        let method =
            Method::from_bytes(request.method.as_bytes()).map_err(|_| Error::BadRequest("bad method".into()))?;
        let target = match &request.query {
            Some(q) => format!("{}?{q}", request.path),
            None => request.path.clone(),
        };
        let answer = self.forward.call(method, primary, &target, body).map_err(|e| match e {
            Error::Unreachable { url, reason, .. } => {
                Error::Unavailable(format!("primary {url} unreachable: {reason}"))
            }
            other => other,
        })?;
        Ok(Response::raw_json(answer.status, answer.body))
    }

    /// `POST /books/{id}/purchase` with its optional order (id, time).
    fn purchase(&self, request: &Request, id: &str) -> Result<Response> {
        let id = parse_id(id)?;
        let body: PurchaseRequest =
            if request.body.is_empty() { PurchaseRequest::default() } else { json_body(request)? };
        let order = match (body.order_id, body.at) {
            (None, None) => None,
            (Some(order_id), at) => {
                Order::check_id(&order_id).map_err(Error::BadRequest)?;
                let at = at.unwrap_or_else(crate::ids::timestamp_now);
                Order::check_at(&at).map_err(Error::BadRequest)?;
                Some((order_id, at))
            }
            (None, Some(_)) => return Err(Error::BadRequest("`at` needs an `order_id`".into())),
        };
        self.client_write(request, id, Write::Purchase, order)
    }

    /// `GET /internal/purchases?after=N`: answered by the primary, forwarded by a replica.
    fn purchases(&self, request: &Request) -> Result<Response> {
        if let Some(primary) = &self.config.primary {
            return self.forward_to(primary, request);
        }
        let after = match request.query_param("after")? {
            None => 0,
            Some(a) => a.parse().map_err(|_| Error::BadRequest(format!("after={a:?} is not a write number")))?,
        };
        let purchases = self.lock_writer().journal.after(after, PURCHASES_PAGE);
        Ok(Response::json(&PurchasePage { purchases }))
    }

    /// Answers one request.
    pub fn handle(&self, request: &Request) -> Response {
        let token = self.config.common.token.as_deref();
        let method = request.method.as_str();
        http::route(request, |segs, get| match segs {
            ["health"] if get => http::respond(Ok(Response::json(&self.health())), "/health"),
            ["metrics"] if get => {
                let text = self.metrics.render(&self.metrics_text());
                http::respond(Ok(Response::metrics(text)), "/metrics")
            }
            ["books"] if get => http::respond(self.list(request), "/books"),
            ["books", id] if get => http::respond(self.read_one(id), "/books/{id}"),
            ["books", id] if method == "PATCH" => http::respond(
                check_token(request, token).and_then(|_| {
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
                check_token(request, token).and_then(|_| self.replica_only()).map(|_| {
                    let extended = self.lease().farewell(Instant::now());
                    log::warn!(
                        "the primary is stopping; {}",
                        if extended { "serving reads for the farewell grace" } else { "no valid lease to extend" }
                    );
                    Response::json(&serde_json::json!({ "extended": extended }))
                }),
                "/internal/farewell",
            ),
            ["internal", "lease"] if method == "POST" => http::respond(
                check_token(request, token).and_then(|_| self.grant_lease(&json_body(request)?)),
                "/internal/lease",
            ),
            ["internal", "purchases"] if get => {
                http::respond(check_token(request, token).and_then(|_| self.purchases(request)), "/internal/purchases")
            }
            ["internal", "snapshot"] if get => http::respond(
                check_token(request, token).map(|_| Response::json(&self.state().snapshot())),
                "/internal/snapshot",
            ),
            ["internal", "snapshot"] if method == "PUT" => http::respond(
                check_token(request, token)
                    .and_then(|_| self.replica_only())
                    .and_then(|_| Ok(Response::json(&self.install(json_body(request)?, false)?))),
                "/internal/snapshot",
            ),
            ["internal", "replicate"] if method == "POST" => http::respond(
                check_token(request, token)
                    .and_then(|_| self.replica_only())
                    .and_then(|_| Ok(Response::json(&self.apply(&json_body::<Vec<Replicate>>(request)?)?))),
                "/internal/replicate",
            ),
            ["health"] | ["metrics"] | ["books"] => http::respond(Err(Error::MethodNotAllowed("GET, HEAD")), "invalid"),
            ["books", _] => http::respond(Err(Error::MethodNotAllowed("GET, HEAD, PATCH")), "invalid"),
            ["books", _, "purchase"] | ["internal", "replicate"] => {
                http::respond(Err(Error::MethodNotAllowed("POST")), "invalid")
            }
            ["internal", "snapshot"] => http::respond(Err(Error::MethodNotAllowed("GET, HEAD, PUT")), "invalid"),
            ["internal", "purchases"] => http::respond(Err(Error::MethodNotAllowed("GET, HEAD")), "invalid"),
            ["internal", "lease"] | ["internal", "farewell"] => {
                http::respond(Err(Error::MethodNotAllowed("POST")), "invalid")
            }
            _ => http::respond(Err(Error::NotFound(format!("no route {}", request.path))), "unknown"),
        })
    }

    fn replica_only(&self) -> Result<()> {
        match self.config.role {
            Role::Replica => Ok(()),
            Role::Primary => Err(Error::Conflict("this catalog is the primary; it takes no pushes".into())),
        }
    }

    /// `GET /books[?topic=]`, with the sequence number it was read at.
    fn list(&self, request: &Request) -> Result<Response> {
        self.readable()?;
        let topic = request.query_param("topic")?;
        let state = self.state();
        Ok(Response::json(&state.books(topic.as_deref())).with_header("X-Seq", state.seq().to_string()))
    }

    /// `GET /books/{id}`, with the sequence number it was read at.
    fn read_one(&self, id: &str) -> Result<Response> {
        let id = parse_id(id)?;
        self.readable()?;
        let state = self.state();
        Ok(Response::json(state.book(id)?).with_header("X-Seq", state.seq().to_string()))
    }

    fn health(&self) -> serde_json::Value {
        let out_of_sync: Vec<&str> = self.links.iter().filter(|l| !l.grant().in_sync).map(|l| l.url.as_str()).collect();
        let readable = self.readable().is_ok();
        let lease = self.lease().clone();
        serde_json::json!({
            "status": if readable { "ok" } else { "catching-up" },
            "role": match self.config.role { Role::Primary => "primary", Role::Replica => "replica" },
            "seq": self.state().seq(),
            "replicas_out_of_sync": out_of_sync,
            "lease_ms_left": lease.remaining(Instant::now()).as_millis() as u64,
            "primary_down": lease.primary_down(),
        })
    }

    fn metrics_text(&self) -> String {
        let c = &self.counters;
        let get = |a: &AtomicU64| a.load(Ordering::Relaxed) as f64;
        let out_of_sync = self.links.iter().filter(|l| !l.grant().in_sync).count() as f64;
        let lag = self.last_push.lock().unwrap_or_else(|e| e.into_inner()).map_or(-1.0, |t| t.elapsed().as_secs_f64());
        let lease = self.lease().remaining(Instant::now()).as_secs_f64();
        let rows: [(&str, &str, &str, f64); 17] = [
            (
                "bazar_catalog_seq",
                "gauge",
                "Sequence number of the last write applied here.",
                self.state().seq() as f64,
            ),
            ("bazar_catalog_writes_total", "counter", "Writes decided by this primary.", get(&c.writes)),
            (
                "bazar_catalog_write_batches_total",
                "counter",
                "Group commits (one fsync and one push each).",
                get(&c.batches),
            ),
            (
                "bazar_catalog_forwarded_total",
                "counter",
                "Writes this replica forwarded to the primary.",
                get(&c.forwarded),
            ),
            (
                "bazar_replication_push_failures_total",
                "counter",
                "Pushes a replica did not take.",
                get(&c.pushes_failed),
            ),
            (
                "bazar_replication_snapshots_sent_total",
                "counter",
                "Snapshots sent to replicas.",
                get(&c.snapshots_sent),
            ),
            ("bazar_replication_catch_ups_total", "counter", "Snapshots this replica installed.", get(&c.catch_ups)),
            (
                "bazar_replication_replicas_out_of_sync",
                "gauge",
                "Replicas that missed a write and are not in sync yet.",
                out_of_sync,
            ),
            (
                "bazar_replication_seconds_since_primary",
                "gauge",
                "Replica: seconds since the primary last pushed (-1: never).",
                lag,
            ),
            ("bazar_lease_grants_total", "counter", "Primary: read leases granted or renewed.", get(&c.lease_grants)),
            (
                "bazar_lease_refusals_total",
                "counter",
                "Primary: lease requests refused (replica not in sync).",
                get(&c.lease_refusals),
            ),
            (
                "bazar_lease_waits_total",
                "counter",
                "Primary: writes that waited for a lost replica's lease to expire.",
                get(&c.lease_waits),
            ),
            (
                "bazar_lease_wait_seconds_total",
                "counter",
                "Primary: time writes spent waiting for leases to expire.",
                get(&c.lease_wait_micros) / 1e6,
            ),
            ("bazar_lease_renewals_total", "counter", "Replica: leases granted to it.", get(&c.lease_renewals)),
            (
                "bazar_lease_renewal_failures_total",
                "counter",
                "Replica: renewals not granted.",
                get(&c.lease_renewal_failures),
            ),
            ("bazar_lease_seconds_left", "gauge", "Replica: time left on its read lease.", lease),
            (
                "bazar_lease_primary_down",
                "gauge",
                "Replica: 1 while it serves on a lease extended because the primary is not running.",
                f64::from(u8::from(self.lease().primary_down())),
            ),
        ];
        let mut out = String::new();
        for (name, kind, help, value) in rows {
            push_metric(&mut out, name, kind, help, value);
        }
        if let Some(cache) = &self.cache {
            out.push_str(&cache.metrics_text());
        }
        out
    }
}

impl crate::service::Service for CatalogNode {
    fn handle(&self, request: &Request) -> Response {
        CatalogNode::handle(self, request)
    }

    fn stopped(&self) {
        if self.config.role == Role::Primary && self.leases() {
            self.farewell();
        }
    }
}
