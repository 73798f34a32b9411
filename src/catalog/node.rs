//! One catalog process: routes, remote writes, replication and catch-up.
//!
//! Locks: `writer` serialises everything that changes the catalog on this node (a whole
//! primary write from decision to acknowledgement, or a replica's apply) and owns the
//! files; `state` is held only to read or swap the in-memory catalog, never across I/O.
//! Order: `writer` before `state`.

use super::state::{Applied, Catalog, Write};
use super::store::Store;
use crate::cache::{self, Cache};
use crate::client::{CatalogClient, Http};
use crate::config::{self, Common, ConfigError, Source};
use crate::error::{Error, Result};
use crate::http::{self, check_token, json_body, parse_id, Request, Response};
use crate::metrics::{push_metric, Metrics};
use crate::shutdown::Shutdown;
use crate::wire::{Book, BookUpdate, Order, PurchasePage, PurchaseRequest, ReplicaAck, Replicate, Snapshot};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};
use ureq::http::Method;

/// Longest wait for a replica to take a push before it is treated as behind.
pub const PUSH_TIMEOUT: Duration = Duration::from_secs(1);
/// Longest wait for the primary when a replica forwards a write to it.
pub const FORWARD_TIMEOUT: Duration = Duration::from_secs(10);
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
}

impl CatalogConfig {
    /// Reads the settings.
    pub fn from_source(src: &dyn Source) -> std::result::Result<CatalogConfig, ConfigError> {
        let common = Common::from_source(src, "0.0.0.0:9000")?;
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
        Ok(CatalogConfig {
            common,
            data_dir: config::data_dir(src, "./data-catalog"),
            role,
            primary,
            replicas,
            memcached: config::memcached(src)?,
        })
    }

    /// `--help` text.
    pub const HELP: &'static str = "\
bazar-catalog: the catalog server (books, prices, stock), primary or replica.

Environment:
  BAZAR_ROLE      primary or replica (required)
  BAZAR_PRIMARY   replica: base URL of the primary, e.g. http://127.0.0.1:9000
  BAZAR_REPLICAS  primary: comma-separated base URLs of the replicas
  BAZAR_DATA_DIR  directory of books.csv (default ./data-catalog; seeded on first start)
  BAZAR_MEMCACHED primary: memcached host:port list whose entries writes invalidate
";
}

/// The primary's view of one replica.
struct ReplicaLink {
    url: String,
    /// The lowest sequence number the replica must reach before it is up to date again;
    /// 0 when it took every push.
    behind: AtomicU64,
}

/// Counters shown in `/metrics`.
#[derive(Default)]
struct Counters {
    writes: AtomicU64,
    pushes_failed: AtomicU64,
    snapshots_sent: AtomicU64,
    catch_ups: AtomicU64,
    forwarded: AtomicU64,
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
    /// Replica: when it last heard from the primary.
    last_push: Mutex<Option<Instant>>,
    links: Vec<ReplicaLink>,
    /// Pushes and snapshots (short timeout).
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
            config.replicas.iter().map(|url| ReplicaLink { url: url.clone(), behind: AtomicU64::new(0) }).collect();
        let cache = (!config.memcached.is_empty()).then(|| Cache::new(&config.memcached, pool));
        Ok(Arc::new(CatalogNode {
            serving: AtomicBool::new(config.role == Role::Primary),
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

    /// Starts the background work: a primary keeps replicas up to date, a replica catches up.
    pub fn start_background(self: &Arc<Self>, shutdown: &Shutdown) {
        match self.config.role {
            Role::Primary => {
                if self.cache.is_some() {
                    let (node, stop) = (Arc::clone(self), shutdown.clone());
                    std::thread::spawn(move || {
                        while !stop.sleep(cache::BACKOFF) {
                            // Under the writer lock: markers are set in write order.
                            let _writer = node.lock_writer();
                            node.cache.as_ref().expect("checked").retry_pending();
                        }
                    });
                }
                for i in 0..self.links.len() {
                    let (node, stop) = (Arc::clone(self), shutdown.clone());
                    std::thread::spawn(move || node.keep_replica_current(i, &stop));
                }
            }
            Role::Replica => {
                let (node, stop) = (Arc::clone(self), shutdown.clone());
                std::thread::spawn(move || node.catch_up(&stop));
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

    /// Reads answer only from a node that is up to date.
    fn readable(&self) -> Result<()> {
        if self.serving.load(Ordering::SeqCst) {
            Ok(())
        } else {
            Err(Error::Unavailable("replica is catching up with the primary".into()))
        }
    }

    /// The primary's write: decide, persist, push, invalidate, then acknowledge.
    ///
    /// `order` (id, time) names the order a purchase takes its copy for: it is journaled
    /// with the write, and a purchase for an order already journaled takes no second copy.
    pub fn write(&self, id: u32, write: &Write, order: Option<(String, String)>) -> Result<Book> {
        let mut store = self.lock_writer();
        if let Some((order_id, _)) = &order {
            if store.journal.contains(order_id) {
                return Ok(self.state().book(id)?.clone());
            }
        }
        let (mut next, old) = {
            let current = self.state();
            (current.clone(), current.book(id)?.clone())
        };
        let book = next.decide(id, write)?;
        let seq = next.commit(book.clone());
        let order =
            order.map(|(order_id, at)| Order { order_id, id, title: book.title.clone(), price: book.price, at });
        store.append(seq, &book, order.as_ref())?;
        store.after_write(&next)?;
        self.set_state(next);
        self.counters.writes.fetch_add(1, Ordering::Relaxed);
        self.replicate(&Replicate { seq, book: book.clone() });
        if let Some(cache) = &self.cache {
            cache.invalidate(&cache::keys_for(&old, &book), seq);
        }
        drop(store);
        Ok(book)
    }

    /// Pushes one write to every replica (in parallel); a replica that misses it is marked
    /// behind and brought up to date in the background.
    fn replicate(&self, push: &Replicate) {
        std::thread::scope(|s| {
            for link in &self.links {
                s.spawn(move || {
                    if let Err(e) = self.push_to(link, push) {
                        self.counters.pushes_failed.fetch_add(1, Ordering::Relaxed);
                        link.behind.fetch_max(push.seq, Ordering::SeqCst);
                        log::warn!("replica {} missed write {}: {e}", link.url, push.seq);
                    }
                });
            }
        });
    }

    fn push_to(&self, link: &ReplicaLink, push: &Replicate) -> Result<()> {
        let ack = self.push.replicate(&link.url, push)?;
        if ack.seq < push.seq {
            // The replica has a gap before this write: send it everything.
            self.send_snapshot(link, self.state().snapshot())?;
        }
        Ok(())
    }

    fn send_snapshot(&self, link: &ReplicaLink, snapshot: Snapshot) -> Result<()> {
        let seq = snapshot.seq;
        let ack = self.push.install(&link.url, &snapshot)?;
        self.counters.snapshots_sent.fetch_add(1, Ordering::Relaxed);
        if ack.seq < seq {
            return Err(Error::Internal(format!(
                "replica {} stayed at {} after a snapshot at {seq}",
                link.url, ack.seq
            )));
        }
        // Up to date with everything up to `seq`; a later miss keeps the link behind.
        let _ = link.behind.fetch_update(Ordering::SeqCst, Ordering::SeqCst, |need| (need <= seq).then_some(0));
        Ok(())
    }

    /// Primary, background: sends a snapshot to replica `i` whenever it is behind.
    fn keep_replica_current(&self, i: usize, shutdown: &Shutdown) {
        let link = &self.links[i];
        while !shutdown.sleep(RETRY_INTERVAL) {
            if link.behind.load(Ordering::SeqCst) == 0 {
                continue;
            }
            match self.send_snapshot(link, self.state().snapshot()) {
                Ok(()) => log::info!("replica {} is up to date again", link.url),
                Err(e) => log::debug!("replica {} still unreachable: {e}", link.url),
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

    /// Replica: applies one pushed write.
    pub fn apply(&self, push: &Replicate) -> Result<ReplicaAck> {
        let mut store = self.lock_writer();
        let mut next = self.state().clone();
        if next.apply(push) == Applied::Applied {
            store.append(push.seq, &push.book, None)?;
            store.after_write(&next)?;
            self.set_state(next);
        }
        self.heard_from_primary();
        Ok(ReplicaAck { seq: self.state().seq() })
    }

    /// Replica: installs a snapshot (unless older than what it has, when not forced).
    pub fn install(&self, snapshot: Snapshot, force: bool) -> Result<ReplicaAck> {
        let mut store = self.lock_writer();
        let mut next = self.state().clone();
        if next.install(snapshot, force)? {
            store.checkpoint(&next)?;
            self.set_state(next);
            self.counters.catch_ups.fetch_add(1, Ordering::Relaxed);
        }
        self.serving.store(true, Ordering::SeqCst);
        self.heard_from_primary();
        Ok(ReplicaAck { seq: self.state().seq() })
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
            None => Ok(Response::json(&self.write(id, &write, order)?)),
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
                let at = at.unwrap_or_else(crate::order::log::timestamp_now);
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
        let segments = match request.segments() {
            Ok(s) => s,
            Err(e) => return http::respond(Err(e), "invalid"),
        };
        let segs: Vec<&str> = segments.iter().map(String::as_str).collect();
        let method = request.method.as_str();
        let get = matches!(method, "GET" | "HEAD");
        match segs.as_slice() {
            ["health"] if get => http::respond(Ok(Response::json(&self.health())), "/health"),
            ["metrics"] if get => {
                let text = self.metrics.render(&self.metrics_text());
                http::respond(
                    Ok(Response {
                        content_type: "text/plain; version=0.0.4",
                        ..Response::raw_json(200, text.into_bytes())
                    }),
                    "/metrics",
                )
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
                    .and_then(|_| Ok(Response::json(&self.apply(&json_body(request)?)?))),
                "/internal/replicate",
            ),
            ["health"] | ["metrics"] | ["books"] => http::respond(Err(Error::MethodNotAllowed("GET, HEAD")), "invalid"),
            ["books", _] => http::respond(Err(Error::MethodNotAllowed("GET, HEAD, PATCH")), "invalid"),
            ["books", _, "purchase"] | ["internal", "replicate"] => {
                http::respond(Err(Error::MethodNotAllowed("POST")), "invalid")
            }
            ["internal", "snapshot"] => http::respond(Err(Error::MethodNotAllowed("GET, HEAD, PUT")), "invalid"),
            ["internal", "purchases"] => http::respond(Err(Error::MethodNotAllowed("GET, HEAD")), "invalid"),
            _ => http::respond(Err(Error::NotFound(format!("no route {}", request.path))), "unknown"),
        }
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
        let serving = self.serving.load(Ordering::SeqCst);
        let behind: Vec<&str> =
            self.links.iter().filter(|l| l.behind.load(Ordering::SeqCst) != 0).map(|l| l.url.as_str()).collect();
        serde_json::json!({
            "status": if serving { "ok" } else { "catching-up" },
            "role": match self.config.role { Role::Primary => "primary", Role::Replica => "replica" },
            "seq": self.state().seq(),
            "replicas_behind": behind,
        })
    }

    fn metrics_text(&self) -> String {
        let mut out = String::new();
        let c = &self.counters;
        push_metric(
            &mut out,
            "bazar_catalog_seq",
            "gauge",
            "Sequence number of the last write applied here.",
            self.state().seq(),
        );
        push_metric(
            &mut out,
            "bazar_catalog_writes_total",
            "counter",
            "Writes decided by this primary.",
            c.writes.load(Ordering::Relaxed),
        );
        push_metric(
            &mut out,
            "bazar_catalog_forwarded_total",
            "counter",
            "Writes this replica forwarded to the primary.",
            c.forwarded.load(Ordering::Relaxed),
        );
        push_metric(
            &mut out,
            "bazar_replication_push_failures_total",
            "counter",
            "Pushes a replica did not take.",
            c.pushes_failed.load(Ordering::Relaxed),
        );
        push_metric(
            &mut out,
            "bazar_replication_snapshots_sent_total",
            "counter",
            "Snapshots sent to replicas that fell behind.",
            c.snapshots_sent.load(Ordering::Relaxed),
        );
        push_metric(
            &mut out,
            "bazar_replication_catch_ups_total",
            "counter",
            "Snapshots this replica installed.",
            c.catch_ups.load(Ordering::Relaxed),
        );
        let behind = self.links.iter().filter(|l| l.behind.load(Ordering::SeqCst) != 0).count();
        push_metric(
            &mut out,
            "bazar_replication_replicas_behind",
            "gauge",
            "Replicas that missed a write and are not up to date yet.",
            behind,
        );
        let lag = self.last_push.lock().unwrap_or_else(|e| e.into_inner()).map_or(-1.0, |t| t.elapsed().as_secs_f64());
        push_metric(
            &mut out,
            "bazar_replication_seconds_since_primary",
            "gauge",
            "Replica: seconds since the primary last pushed (-1: never).",
            lag,
        );
        if let Some(cache) = &self.cache {
            out.push_str(&cache.metrics_text());
        }
        out
    }
}
