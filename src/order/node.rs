//! One order process: routes, purchases through the catalog, and order sync with peers.
//!
//! Sync is pull-based anti-entropy: every [`SYNC_INTERVAL`] each server asks each peer for
//! the orders appended to the peer's log since the position it last read (from 0 after a
//! start), and appends those it lacks. A purchase is also pushed to the peers at once, so
//! that when it is acknowledged every reachable peer already has it. A peer that was down,
//! cut off or restarted converges at its next pull, whoever crashed in between.

use super::log::{Cursor, OrderLog};
use crate::balance::{Call, Failed, Failure, Pool};
use crate::client::{CatalogClient, Http, OrderClient, PeerError};
use crate::config::{self, Common, ConfigError, Source};
use crate::error::{Error, Result};
use crate::http::{self, check_token, json_body, parse_id, Request, Response};
use crate::metrics::{push_metric, Metrics};
use crate::page::{self, PageRequest};
use crate::shutdown::Shutdown;
use crate::wire::{Order, OrderPage};
use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
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
/// Longest wait for a catalog's answer to a readiness probe (`GET /ready`).
pub const READY_TIMEOUT: Duration = Duration::from_millis(500);
/// How often the catalogs' readiness is probed (as the front end does its back ends').
pub const PROBE_INTERVAL: Duration = Duration::from_millis(500);
/// How often the catalog's purchase journal is checked for copies without an order.
pub const RECONCILE_INTERVAL: Duration = Duration::from_secs(1);
/// How long a journaled purchase may stay without its order before it is adopted: far
/// longer than the moment between the catalog's answer and the order's append.
pub const GRACE: Duration = Duration::from_secs(3);

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
}

/// One order process.
pub struct OrderNode {
    config: OrderConfig,
    /// The orders and their file (group-committed appends).
    log: OrderLog,
    /// This incarnation's order-id prefix (random per start, so ids never repeat).
    prefix: String,
    counter: AtomicU64,
    catalogs: Pool,
    catalog: CatalogClient,
    /// The catalog client of readiness probes (short timeout).
    probe: CatalogClient,
    peers: OrderClient,
    /// Per peer: the position in its log read so far.
    cursors: Vec<AtomicUsize>,
    /// Per peer: when a pull from it last succeeded (shown by `/health`, for the dashboard).
    pulled_at: Vec<Mutex<Option<Instant>>>,
    /// The catalog write up to which every journaled purchase has its order.
    reconciled: AtomicU64,
    counters: Counters,
    metrics: Arc<Metrics>,
}

impl OrderNode {
    /// Opens the order log.
    pub fn open(config: OrderConfig, metrics: Arc<Metrics>) -> Result<Arc<OrderNode>> {
        let log = OrderLog::open(&config.data_dir)?;
        let pool = config.common.threads;
        let token = config.common.token.clone();
        Ok(Arc::new(OrderNode {
            log,
            prefix: crate::ids::random_hex()?,
            counter: AtomicU64::new(0),
            catalogs: Pool::new(config.catalogs.clone()),
            catalog: CatalogClient { http: Http::new(CATALOG_TIMEOUT, pool, token.clone()) },
            probe: CatalogClient { http: Http::new(READY_TIMEOUT, pool, token.clone()) },
            peers: OrderClient { http: Http::new(PEER_TIMEOUT, pool, token) },
            cursors: config.peers.iter().map(|_| AtomicUsize::new(0)).collect(),
            pulled_at: config.peers.iter().map(|_| Mutex::new(None)).collect(),
            reconciled: AtomicU64::new(0),
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
            node.catalogs.probe(|url| node.probe.ready(url).is_ok());
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

    /// Reads peer `i`'s new orders, page by page.
    fn pull(&self, i: usize) -> Result<()> {
        let url = &self.config.peers[i];
        loop {
            let from = self.cursors[i].load(Ordering::SeqCst);
            let page: OrderPage = self.peers.pull(url, from)?;
            let (valid, refused): (Vec<Order>, Vec<Order>) =
                page.orders.iter().cloned().partition(|o| o.check().is_ok());
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
            self.cursors[i].store(page.next, Ordering::SeqCst);
            if page.orders.len() < PAGE || page.next <= from {
                *self.pulled_at[i].lock().unwrap_or_else(|e| e.into_inner()) = Some(Instant::now());
                return Ok(());
            }
        }
    }

    /// Adopts the orders of copies the catalog journaled but no order server logged (its
    /// server died in between), once they have been missing for [`GRACE`]. Every server
    /// does this; an adopted order is the same wherever it is adopted, so copies merge.
    /// A journaled order that fails [`Order::check`] (one a catalog took before it held
    /// orders to the servers' shape) is never adopted: it is reported once and passed over,
    /// so it holds up no later one. `missing` remembers since when each order has been
    /// missing (or that it was reported).
    fn reconcile(&self, missing: &mut HashMap<String, Instant>) -> Result<()> {
        loop {
            let after = self.reconciled.load(Ordering::SeqCst);
            let page = self.journal_after(after)?;
            let (mut cursor, mut waiting) = (after, false);
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
            self.reconciled.store(cursor, Ordering::SeqCst);
            if waiting || !page.more {
                return Ok(());
            }
        }
    }

    /// The catalog's purchase journal after write `after`, from the first catalog that answers.
    fn journal_after(&self, after: u64) -> Result<crate::wire::PurchasePage> {
        let journal = |url: &str| self.catalog.purchases(url, after);
        match self.catalogs.try_each(Call::Read, journal, PeerError::failure) {
            Ok((page, _)) => Ok(page),
            Err(Failed::Exhausted { error, .. } | Failed::Stopped { error, .. }) => Err(error.into()),
        }
    }

    /// Hands an order to every peer now; a peer that misses it pulls it later.
    fn share(&self, order: &Order) {
        std::thread::scope(|s| {
            for url in &self.config.peers {
                s.spawn(move || {
                    if let Err(e) = self.peers.push(url, std::slice::from_ref(order)) {
                        self.counters.push_failures.fetch_add(1, Ordering::Relaxed);
                        log::warn!("peer {url} did not take order {} now ({e}); it will pull it", order.order_id);
                    }
                });
            }
        });
    }

    /// Buys one copy of book `id`: take it from the catalog, log the order, share it.
    pub fn purchase(&self, id: u32) -> Result<Order> {
        let order_id = format!("{}-{}", self.prefix, self.counter.fetch_add(1, Ordering::Relaxed) + 1);
        let at = crate::ids::timestamp_now();
        let book = match self.take_copy(id, &order_id, &at) {
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
        self.log.add(std::slice::from_ref(&order))?;
        self.counters.taken.fetch_add(1, Ordering::Relaxed);
        self.share(&order);
        Ok(order)
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
                    "peers": self.peer_health()});
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
                    let (orders, next) = self.log.since(from, PAGE)?;
                    Ok(Response::json(&OrderPage { orders, next }))
                }),
                "/internal/orders",
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
            ["purchase", _] => http::respond(Err(Error::MethodNotAllowed("POST")), "invalid"),
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
        out
    }
}

impl crate::service::Service for OrderNode {
    fn handle(&self, request: &Request) -> Response {
        OrderNode::handle(self, request)
    }
}
