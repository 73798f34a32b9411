//! One catalog process: its settings, its routes and its reads. The primary's side of
//! replication is in `primary.rs`, the replica's in `replica.rs`.
//!
//! Locks: `writer` serialises everything that changes the catalog on this node (a whole
//! primary write from decision to acknowledgement, or a replica's apply) and owns the
//! files; `state` is held only to read the in-memory catalog or to apply decided writes to
//! it, never across I/O. Order: `writer` before `state`.

use super::config::{CatalogConfig, Role};
use super::lease::{Grant, ReplicaLease, FAREWELL_LEASES};
use super::state::{Catalog, Write};
use super::store::Store;
use crate::cache::Cache;
use crate::client::{CatalogClient, Http, PeerError};
use crate::error::{Error, Result};
use crate::http::{self, check_token, json_body, parse_id, Request, Response};
use crate::metrics::{push_metric, Metrics};
use crate::page::{self, PageRequest};
use crate::shutdown::Shutdown;
use crate::wire::{Book, BookPage, BookUpdate, NewBook, PurchasePage, PurchaseRequest, Replicate};
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
    /// In sync or not, its identity, its lease. Held briefly; never across a call.
    pub(super) grant: Mutex<Grant>,
    /// A replica the primary does not know asked for a lease: this one may have restarted
    /// (a new identity) while no write was pushed to it, so it is brought in sync again.
    pub(super) recheck: AtomicBool,
}

impl ReplicaLink {
    pub(super) fn grant(&self) -> std::sync::MutexGuard<'_, Grant> {
        self.grant.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// A write waiting for the writer thread, and where its answer goes.
pub(super) struct Pending {
    pub(super) id: u32,
    pub(super) write: Write,
    pub(super) order: Option<(String, String)>,
    pub(super) reply: mpsc::SyncSender<Result<Book>>,
}

/// Counters shown in `/metrics`.
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
}

/// One catalog process.
pub struct CatalogNode {
    pub(super) config: CatalogConfig,
    /// Serialises changes on this node and owns the files.
    pub(super) writer: Mutex<Store>,
    /// The books as reads see them.
    pub(super) state: RwLock<Catalog>,
    /// Replica: caught up with the primary since it started (or since its last full copy).
    pub(super) serving: AtomicBool,
    /// Replica: a catch-up is wanted (at start, or the primary asked for one).
    pub(super) catch_up_wanted: AtomicBool,
    /// Replica: its identity for this run.
    pub(super) replica_id: String,
    /// Replica: its read lease. Held briefly.
    pub(super) lease: Mutex<ReplicaLease>,
    /// Primary: no write is acknowledged before this (the farewell grace after start)
    /// unless every replica has been brought in sync first.
    pub(super) writes_from: Instant,
    /// Primary: writes are open (the grace passed or every replica was in sync, and the
    /// cache holds no answer of another history).
    pub(super) writes_open: AtomicBool,
    /// Primary: the queue of the writer thread (group commit).
    pub(super) writes: mpsc::SyncSender<Pending>,
    /// Primary: the writer thread's end of it, taken when the thread starts.
    pub(super) queue: Mutex<Option<mpsc::Receiver<Pending>>>,
    /// Replica: when it last heard from the primary.
    pub(super) last_push: Mutex<Option<Instant>>,
    pub(super) links: Vec<ReplicaLink>,
    /// Pushes and lease requests (short timeout).
    pub(super) push: CatalogClient,
    /// Remote writes and catch-up (longer timeout).
    pub(super) forward: Http,
    pub(super) cache: Option<Cache>,
    pub(super) counters: Counters,
    pub(super) metrics: Arc<Metrics>,
}

impl CatalogNode {
    /// Opens the data directory; a replica is not serving until it caught up.
    pub fn open(config: CatalogConfig, metrics: Arc<Metrics>) -> Result<Arc<CatalogNode>> {
        let (store, catalog) = Store::open(&config.data_dir)?;
        log::info!("loaded {} books at write {}", catalog.len(), catalog.seq());
        let token = config.common.token.clone();
        let pool = config.common.threads;
        let links = config
            .replicas
            .iter()
            .map(|url| ReplicaLink { url: url.clone(), grant: Mutex::default(), recheck: AtomicBool::new(false) })
            .collect();
        let cache = (!config.memcached.is_empty()).then(|| Cache::new(&config.memcached, pool));
        let (writes, queue) = mpsc::sync_channel(QUEUE);
        Ok(Arc::new(CatalogNode {
            writes,
            queue: Mutex::new(Some(queue)),
            serving: AtomicBool::new(config.role == Role::Primary),
            catch_up_wanted: AtomicBool::new(false),
            replica_id: crate::ids::random_hex()?,
            lease: Mutex::new(ReplicaLease::new(config.lease)),
            writes_from: Instant::now() + config.lease * FAREWELL_LEASES,
            writes_open: AtomicBool::new(false),
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

    pub(super) fn leases(&self) -> bool {
        !self.config.lease.is_zero()
    }

    /// Starts the background work: a primary keeps replicas in sync, a replica catches up
    /// and renews its lease.
    pub fn start_background(self: &Arc<Self>, shutdown: &Shutdown) {
        match self.config.role {
            Role::Primary => self.start_primary(shutdown),
            Role::Replica => self.start_replica(shutdown),
        }
    }

    pub(super) fn state(&self) -> std::sync::RwLockReadGuard<'_, Catalog> {
        self.state.read().unwrap_or_else(|e| e.into_inner())
    }

    pub(super) fn state_mut(&self) -> std::sync::RwLockWriteGuard<'_, Catalog> {
        self.state.write().unwrap_or_else(|e| e.into_inner())
    }

    pub(super) fn lock_writer(&self) -> std::sync::MutexGuard<'_, Store> {
        self.writer.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub(super) fn lease(&self) -> std::sync::MutexGuard<'_, ReplicaLease> {
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
            PeerError::Unreachable { url, source, .. } => {
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
            check_token(request, self.config.common.token.as_deref())?;
        }
        let order = body.order(crate::ids::now_ms()).map_err(Error::BadRequest)?;
        self.client_write(request, id, Write::Purchase, order)
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

    /// `GET /internal/purchases?after=N`: answered by the primary, forwarded by a replica.
    fn purchases(&self, request: &Request) -> Result<Response> {
        if let Some(primary) = &self.config.primary {
            return self.forward_to(primary, request);
        }
        let after = match request.query_param("after")? {
            None => 0,
            Some(a) => a.parse().map_err(|_| Error::BadRequest(format!("after={a:?} is not a write number")))?,
        };
        let (purchases, more) = self.lock_writer().journal.after(after, PURCHASES_PAGE);
        Ok(Response::json(&PurchasePage { purchases, more }))
    }

    /// Answers one request.
    pub fn handle(&self, request: &Request) -> Response {
        let token = self.config.common.token.as_deref();
        let method = request.method.as_str();
        let admin = |f: &dyn Fn() -> Result<Response>| check_token(request, token).and_then(|_| f());
        http::route(request, |segs, get| match segs {
            ["health"] if get => http::respond(Ok(Response::json(&self.health())), "/health"),
            ["ready"] if get => http::respond(Ok(self.ready()), "/ready"),
            ["metrics"] if get => {
                let text = self.metrics.render(&self.metrics_text());
                http::respond(Ok(Response::metrics(text)), "/metrics")
            }
            ["books"] if get => http::respond(self.list(request), "/books"),
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
                    let extended = self.lease().farewell(Instant::now());
                    log::warn!(
                        "the primary is stopping; {}",
                        if extended { "serving reads for the farewell grace" } else { "no valid lease to extend" }
                    );
                    Ok(Response::json(&serde_json::json!({ "extended": extended })))
                }),
                "/internal/farewell",
            ),
            ["internal", "lease"] if method == "POST" => {
                http::respond(admin(&|| self.grant_lease(&json_body(request)?)), "/internal/lease")
            }
            ["internal", "purchases"] if get => {
                http::respond(admin(&|| self.purchases(request)), "/internal/purchases")
            }
            ["internal", "books"] if get => http::respond(admin(&|| self.copy_page(request)), "/internal/books"),
            ["internal", "log"] if get => http::respond(admin(&|| self.log_after(request)), "/internal/log"),
            ["internal", "resync"] if method == "POST" => http::respond(
                admin(&|| {
                    self.replica_only()?;
                    let started = !self.catch_up_wanted.swap(true, Ordering::SeqCst);
                    if started {
                        self.serving.store(false, Ordering::SeqCst);
                    }
                    Ok(Response::json(&serde_json::json!({ "started": started })))
                }),
                "/internal/resync",
            ),
            ["internal", "replicate"] if method == "POST" => http::respond(
                admin(&|| {
                    self.replica_only()?;
                    Ok(Response::json(&self.apply(&json_body::<Vec<Replicate>>(request)?)?))
                }),
                "/internal/replicate",
            ),
            ["health"] | ["ready"] | ["metrics"] => http::respond(Err(Error::MethodNotAllowed("GET, HEAD")), "invalid"),
            ["books"] => http::respond(Err(Error::MethodNotAllowed("GET, HEAD, POST")), "invalid"),
            ["books", _] => http::respond(Err(Error::MethodNotAllowed("GET, HEAD, PATCH")), "invalid"),
            ["books", _, "purchase"] | ["internal", "replicate" | "resync" | "lease" | "farewell"] => {
                http::respond(Err(Error::MethodNotAllowed("POST")), "invalid")
            }
            ["internal", "purchases" | "books" | "log"] => {
                http::respond(Err(Error::MethodNotAllowed("GET, HEAD")), "invalid")
            }
            _ => http::respond(Err(Error::NotFound(format!("no route {}", request.path))), "unknown"),
        })
    }

    pub(super) fn replica_only(&self) -> Result<()> {
        match self.config.role {
            Role::Replica => Ok(()),
            Role::Primary => Err(Error::Conflict("this catalog is the primary; it takes no pushes".into())),
        }
    }

    /// `GET /books[?topic=]`, a page by id, with the sequence number it was read at.
    fn list(&self, request: &Request) -> Result<Response> {
        self.readable()?;
        let topic = request.query_param("topic")?;
        let page = PageRequest::from_query(request, page::MAX_LIMIT, page::parse_book_cursor)?;
        let state = self.state();
        let (books, more) = state.page(topic.as_deref(), page.after.unwrap_or(0), page.limit);
        let mut response = Response::json(&books).with_header("X-Seq", state.seq().to_string());
        if let (true, Some(last)) = (more, books.last()) {
            let params: Vec<(&str, &str)> = topic.as_deref().map(|t| ("topic", t)).into_iter().collect();
            response =
                response.with_header("Link", page::next_link("/books", &params, page.limit, &last.id.to_string()));
        }
        Ok(response)
    }

    /// `GET /internal/books`: a page of a replica's full copy (any node that has the data).
    fn copy_page(&self, request: &Request) -> Result<Response> {
        let page = PageRequest::from_query(request, COPY_PAGE, page::parse_book_cursor)?;
        let history = self.lock_writer().history_id().to_string();
        let state = self.state();
        let (books, more) = state.page(None, page.after.unwrap_or(0), page.limit);
        let books = books.into_iter().cloned().collect();
        Ok(Response::json(&BookPage { history, seq: state.seq(), books, more }))
    }

    /// `GET /books/{id}`, with the sequence number it was read at.
    fn read_one(&self, id: &str) -> Result<Response> {
        let id = parse_id(id)?;
        self.readable()?;
        let state = self.state();
        Ok(Response::json(state.book(id)?).with_header("X-Seq", state.seq().to_string()))
    }

    fn role(&self) -> &'static str {
        match self.config.role {
            Role::Primary => "primary",
            Role::Replica => "replica",
        }
    }

    /// `GET /ready`: the primary always; a replica while it can serve reads.
    fn ready(&self) -> Response {
        let seq = self.state().seq();
        match self.readable() {
            Ok(()) => Response::json(&serde_json::json!({"status": "ready", "role": self.role(), "seq": seq})),
            Err(e) => {
                let status = if self.serving.load(Ordering::SeqCst) { "no-lease" } else { "catching-up" };
                let body =
                    serde_json::json!({"status": status, "role": self.role(), "seq": seq, "error": e.to_string()});
                Response::raw_json(503, serde_json::to_vec(&body).expect("serializes"))
            }
        }
    }

    fn health(&self) -> serde_json::Value {
        let out_of_sync: Vec<&str> = self.links.iter().filter(|l| !l.grant().in_sync).map(|l| l.url.as_str()).collect();
        let readable = self.readable().is_ok();
        let lease = self.lease().clone();
        let state = self.state();
        serde_json::json!({
            "status": if readable { "ok" } else { "catching-up" },
            "role": self.role(),
            "seq": state.seq(),
            "books": state.len(),
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
        let (seq, books) = {
            let state = self.state();
            (state.seq() as f64, state.len() as f64)
        };
        let rows: [(&str, &str, &str, f64); 19] = [
            ("bazar_catalog_seq", "gauge", "Sequence number of the last write applied here.", seq),
            ("bazar_catalog_books", "gauge", "Books in the catalog.", books),
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
                "bazar_replication_tail_writes_sent_total",
                "counter",
                "Writes sent again to replicas that missed them.",
                get(&c.tail_writes_sent),
            ),
            (
                "bazar_replication_copies_asked_total",
                "counter",
                "Primary: replicas asked to copy the whole catalog (too far behind).",
                get(&c.copies_asked),
            ),
            ("bazar_replication_copies_total", "counter", "Replica: whole-catalog copies installed.", get(&c.copies)),
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
