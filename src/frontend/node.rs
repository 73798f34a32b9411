//! One front-end process: routes, load balancing and caching.

use super::cluster::{Board, Local};
use super::pages;
use super::watch::{Near, DEFAULT_NEAR_MB};
use crate::balance::{Call, Failed, Pool};
use crate::batch::Group;
use crate::cache::{self, Cache, Lookup};
use crate::client::{Answer, Http, PeerError};
use crate::config::{self, Common, ConfigError, Source};
use crate::error::{Error, Result};
use crate::http::{self, parse_id, Request, Response};
use crate::metrics::Metrics;
use crate::page::{self, PageRequest};
use crate::shutdown::Shutdown;
use crate::wire::{Book, Order, OrderBatch, OrderBatchAnswer, PurchaseReceipt, SearchHit, TopicCount};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;
use ureq::http::Method;

/// Longest wait for a back end (a purchase persists on two servers first).
pub const BACKEND_TIMEOUT: Duration = Duration::from_secs(10);
/// Longest wait for a back end's `/ready`.
pub const PROBE_TIMEOUT: Duration = Duration::from_millis(500);
/// Longest wait for the lab API (stopping a service waits for it to exit).
pub const LAB_TIMEOUT: Duration = Duration::from_secs(20);
/// How often the back ends' readiness is probed.
pub const PROBE_INTERVAL: Duration = Duration::from_millis(500);
/// Purchases that may wait for an order server, in full rounds of batches (a batch per
/// order server, each of `OrderBatch::MOST`): beyond, a purchase is shed at once (503 with
/// `Retry-After`) rather than wait for rounds it cannot get in time.
pub const PURCHASE_ROUNDS: usize = 2;

/// Settings of the front end.
#[derive(Clone, Debug)]
pub struct FrontendConfig {
    /// Listen address, workers, token (sent to the back ends).
    pub common: Common,
    /// Catalog servers (reads, round robin).
    pub catalogs: Vec<String>,
    /// Order servers (purchases, round robin).
    pub orders: Vec<String>,
    /// memcached servers; empty: no cache.
    pub memcached: Vec<String>,
    /// Size of the near cache in bytes (`BAZAR_NEAR_CACHE_MB`); 0: none.
    pub near_bytes: usize,
    /// The lab API of the `bazar-cluster` that started this front end (`BAZAR_LAB`); None
    /// everywhere else: no lab routes, no lab buttons.
    pub lab: Option<String>,
}

impl FrontendConfig {
    /// Reads the settings.
    pub fn from_source(src: &dyn Source) -> std::result::Result<FrontendConfig, ConfigError> {
        Ok(FrontendConfig {
            common: Common::from_source(src, Self::DEFAULT_LISTEN)?,
            catalogs: config::urls(src, "BAZAR_CATALOG", true)?,
            orders: config::urls(src, "BAZAR_ORDER", true)?,
            memcached: config::memcached(src)?,
            near_bytes: near_bytes(src)?,
            lab: config::urls(src, "BAZAR_LAB", false)?.into_iter().next(),
        })
    }

    /// Where it listens unless `BAZAR_LISTEN` says otherwise.
    pub const DEFAULT_LISTEN: &'static str = "0.0.0.0:4200";

    /// `--help` text.
    pub const HELP: &'static str = "\
bazar-frontend: the public API (search, info, purchase) with load balancing and a cache.

Environment:
  BAZAR_CATALOG   comma-separated base URLs of catalog servers (required)
  BAZAR_ORDER     comma-separated base URLs of order servers (required)
  BAZAR_MEMCACHED memcached host:port list; unset or empty: no cache
  BAZAR_NEAR_CACHE_MB  size of the near cache in this process's memory, in MiB
                  (default 64; 0 turns it off); its leases come from the catalog primary
  BAZAR_LAB       the lab API's base URL; set by bazar-cluster for its own front end only
                  (the dashboard then shows the lab's buttons); unset: no lab routes
";
}

/// The front end.
pub struct Frontend {
    config: FrontendConfig,
    catalogs: Pool,
    orders: Pool,
    http: Http,
    /// Readiness probes of the back ends (short timeout).
    probe: Http,
    /// Per catalog, per order server: ready at the last probe.
    catalog_ready: Vec<AtomicBool>,
    order_ready: Vec<AtomicBool>,
    cache: Option<Cache>,
    /// The near cache in this process (`near.rs`, `watch.rs`); None when sized 0.
    near: Option<Near>,
    metrics: Arc<Metrics>,
    /// `GET /cluster`: the dashboard's data (its own client, without the token).
    board: Board,
    /// Calls to the lab API (a stop may take its whole wait), with the token.
    lab: Http,
    /// Purchases waiting for an order server: whoever finds a flight free sends every
    /// purchase waiting in one request ([`Frontend::purchase_batch`]); one flight per order
    /// server; at most [`PURCHASE_ROUNDS`] full rounds of batches waiting, more are shed.
    purchases: Group<(u32, Option<crate::trace::Context>), Response>,
    /// Gathering a trace's spans from the back ends (`traces.rs`), with the token.
    traces: Http,
}

/// How a catalog's answer is turned into the front end's JSON and its `Link`, if any.
type Shape<'a> = &'a dyn Fn(&Answer) -> Result<(Vec<u8>, Option<String>)>;

/// Whether an answer may be cached under its key (given its `Link`).
type Cacheable<'a> = &'a dyn Fn(Option<&str>) -> bool;

impl Frontend {
    /// A front end over the configured pools.
    pub fn new(config: FrontendConfig, metrics: Arc<Metrics>) -> Frontend {
        let pool = config.common.threads;
        let cache = (!config.memcached.is_empty()).then(|| Cache::new(&config.memcached, pool));
        Frontend {
            catalogs: Pool::new(config.catalogs.clone()),
            orders: Pool::new(config.orders.clone()),
            http: Http::new(BACKEND_TIMEOUT, pool, config.common.token.clone()).peer(),
            // With the token, so that the back ends serve the probes from their peer budget.
            probe: Http::new(PROBE_TIMEOUT, pool, config.common.token.clone()).peer(),
            catalog_ready: config.catalogs.iter().map(|_| AtomicBool::new(false)).collect(),
            order_ready: config.orders.iter().map(|_| AtomicBool::new(false)).collect(),
            cache,
            near: (config.near_bytes > 0).then(|| Near::new(config.near_bytes)),
            metrics,
            board: Board::new(),
            lab: Http::new(LAB_TIMEOUT, 4, config.common.token.clone()),
            purchases: Group::new(OrderBatch::MOST, config.orders.len())
                .with_queue(PURCHASE_ROUNDS * OrderBatch::MOST * config.orders.len()),
            traces: Http::new(super::traces::GATHER_TIMEOUT, 4, config.common.token.clone()).peer(),
            config,
        }
    }

    /// Answers one request.
    pub fn handle(&self, request: &Request) -> Response {
        let method = request.method.as_str();
        http::route(request, |segs, get| match segs {
            ["health"] if get => {
                let body = serde_json::json!({
                    "status": "ok", "role": "frontend",
                    "cache": match &self.cache { None => "off", Some(c) if c.is_on() => "on", Some(_) => "down" },
                    "near": self.near_state(),
                    "catalogs": self.config.catalogs, "orders": self.config.orders,
                });
                http::respond(Ok(Response::json(&body)), "/health")
            }
            ["metrics"] if get => {
                let text = self.metrics.render(&self.cache_metrics());
                http::respond(Ok(Response::metrics(text)), "/metrics")
            }
            ["search", topic] if get => self.search(request, topic).at("/search/{topic}"),
            ["ready"] if get => http::respond(self.ready(), "/ready"),
            ["info", id] if get => match parse_id(id) {
                Ok(id) => {
                    let info = |a: &Answer| Ok((a.body.clone(), None));
                    self.cached_read(Some(cache::info_key(id)), &format!("/books/{id}"), &info, &|_| true)
                        .at("/info/{id}")
                }
                Err(e) => self.with_cache_header(Response::error(&e), "off").at("/info/{id}"),
            },
            ["purchase", id] if method == "POST" => {
                let purchase =
                    super::origin::check(request).and_then(|_| parse_id(id)).and_then(|id| self.purchase(id));
                http::respond(purchase, "/purchase/{id}")
            }
            ["books"] if get => self.books(request).at("/books"),
            ["topics"] if get => self.topics(request).at("/topics"),
            ["orders", id] if get => http::respond(self.order(id), "/orders/{order_id}"),
            ["traces"] if get => http::respond(super::traces::recent(request), "/traces"),
            ["traces", id] if get => {
                let back_ends = [&self.config.catalogs[..], &self.config.orders[..]].concat();
                http::respond(super::traces::gather(&self.traces, &back_ends, id), "/traces/{trace_id}")
            }
            ["traces"] | ["traces", _] => http::respond(Err(Error::MethodNotAllowed("GET, HEAD")), "invalid"),
            ["health"]
            | ["ready"]
            | ["metrics"]
            | ["search", _]
            | ["info", _]
            | ["books"]
            | ["topics"]
            | ["orders", _] => http::respond(Err(Error::MethodNotAllowed("GET, HEAD")), "invalid"),
            ["purchase", _] => http::respond(Err(Error::MethodNotAllowed("POST")), "invalid"),
            ["cluster"] if get => self.cluster().at("/cluster"),
            [] | ["dashboard"] | ["assets", _] if get => match pages::answer(segs) {
                Some(page) => page,
                None => http::respond(Err(Error::NotFound(format!("no file {}", request.path))), "unknown"),
            },
            [] | ["dashboard"] | ["cluster"] => http::respond(Err(Error::MethodNotAllowed("GET, HEAD")), "invalid"),
            ["lab", ..] if self.config.lab.is_some() => self.lab(request),
            _ => http::respond(Err(Error::NotFound(format!("no route {}", request.path))), "unknown"),
        })
    }

    /// `GET /cluster`: every back end's state, gathered now (see [`super::cluster`]).
    fn cluster(&self) -> Response {
        let own = self.metrics.render(&self.cache_metrics());
        self.board.answer(&Local {
            catalogs: &self.config.catalogs,
            orders: &self.config.orders,
            memcached: &self.config.memcached,
            metrics: own,
            ready: self.ready().is_ok_and(|r| r.status == 200),
            cache: self.cache_state(),
            near: self.near_state(),
        })
    }

    /// `/lab/...` of a front end that `bazar-cluster` started: relayed to its lab API (with
    /// the token), answer as it is. A write from another site is refused (403), as a
    /// purchase is: a page elsewhere must not kill the store through a visitor's browser.
    fn lab(&self, request: &Request) -> Response {
        let base = self.config.lab.as_deref().expect("checked by the route");
        if request.method == "POST" && cross_site(request) {
            let body = serde_json::json!({"error": "a lab action from another site is refused"});
            return Response::raw_json(403, serde_json::to_vec(&body).expect("serializes")).at("/lab");
        }
        let Ok(method) = Method::from_bytes(request.method.as_bytes()) else {
            return http::respond(Err(Error::BadRequest("bad method".into())), "/lab");
        };
        let target = match &request.query {
            Some(q) => format!("{}?{q}", request.path),
            None => request.path.clone(),
        };
        let body = (!request.body.is_empty()).then(|| request.body.clone());
        match self.lab.call(method, base, &target, body) {
            Ok(a) => Response::raw_json(a.status, a.body).at("/lab"),
            Err(e) => http::respond(Err(Error::Unavailable(format!("the lab does not answer: {e}"))), "/lab"),
        }
    }

    /// The caches' figures for `/metrics`: memcached's and the near cache's.
    fn cache_metrics(&self) -> String {
        let mut text = self.cache.as_ref().map(Cache::metrics_text).unwrap_or_default();
        text.push_str(&self.near.as_ref().map(Near::metrics_text).unwrap_or_default());
        text
    }

    /// The near cache as `/health` and `/cluster` say it: `off` (sized 0), `on` (a lease
    /// held) or `no-lease`.
    fn near_state(&self) -> &'static str {
        match &self.near {
            None => "off",
            Some(n) if n.leased() => "on",
            Some(_) => "no-lease",
        }
    }

    /// The cache as `/health` and `/cluster` say it: `off`, `on` or `down`.
    fn cache_state(&self) -> &'static str {
        match &self.cache {
            None => "off",
            Some(c) if c.is_on() => "on",
            Some(_) => "down",
        }
    }

    fn with_cache_header(&self, r: Response, state: &str) -> Response {
        r.with_header("X-Cache", state)
    }

    /// `GET /search/{topic}[?limit=&after=]`: a page of hits, through the cache.
    ///
    /// Cached pages: the first page of the default size (its key is invalidated by every
    /// write to the topic), and any page that is full (it has a next page). A full page
    /// never changes: books are added with ids above every other and titles never change,
    /// so a page can only grow at the end of a topic. A last page of another size or cursor
    /// is read from the catalog every time.
    fn search(&self, request: &Request, topic: &str) -> Response {
        let page = match PageRequest::from_query(request, page::MAX_LIMIT, page::parse_book_cursor) {
            Ok(p) => p,
            Err(e) => return Response::error(&e).with_header("X-Cache", "off"),
        };
        if !crate::catalog::state::can_be_topic(topic) {
            // No book can have it: an unknown topic, answered here. Sent on, its encoding
            // could outgrow a request head and fail as if the catalogs were down.
            return Response::raw_json(200, b"[]".to_vec()).with_header("X-Cache", "off");
        }
        let mut path = format!("/books?topic={}&limit={}", http::percent_encode(topic), page.limit);
        if let Some(after) = page.after {
            path.push_str(&format!("&after={after}"));
        }
        let first = request.query.is_none();
        let key = cache::search_key(topic).map(|k| match first {
            true => k,
            false => format!("{k}:{}:{}", page.limit, page.after.unwrap_or(0)),
        });
        let shape = |a: &Answer| {
            let next = a.link.as_deref().and_then(page::next_target).and_then(|t| page::target_param(t, "after"));
            let here = || format!("/search/{}", http::percent_encode(topic));
            Ok((search_hits(&a.body)?, next.map(|after| page::next_link(&here(), &[], page.limit, &after))))
        };
        self.cached_read(key, &path, &shape, &|link| first || link.is_some())
    }

    /// `GET /books[?limit=&after=]`: a page of every book, by id, through the cache.
    ///
    /// Only the first page of the default size is cached ([`cache::BOOKS_KEY`]): every write
    /// changes a book (its stock, its price) or adds one, and the primary invalidates that
    /// one key on every write. Any other page holds books whose writes invalidate no key of
    /// it (the primary cannot know which pages a book falls in at every size and cursor),
    /// so it is read from a catalog each time (`X-Cache: off`).
    fn books(&self, request: &Request) -> Response {
        let page = match PageRequest::from_query(request, page::MAX_LIMIT, page::parse_book_cursor) {
            Ok(p) => p,
            Err(e) => return Response::error(&e).with_header("X-Cache", "off"),
        };
        let mut path = format!("/books?limit={}", page.limit);
        if let Some(after) = page.after {
            path.push_str(&format!("&after={after}"));
        }
        let first = page.after.is_none() && page.limit == page::DEFAULT_LIMIT;
        let key = first.then(|| cache::BOOKS_KEY.to_string());
        let shape = |a: &Answer| {
            let next = a.link.as_deref().and_then(page::next_target).and_then(|t| page::target_param(t, "after"));
            let books: Vec<Book> =
                serde_json::from_slice(&a.body).map_err(|e| Error::Internal(format!("catalog sent bad JSON: {e}")))?;
            let body = serde_json::to_vec(&books).expect("serializes");
            Ok((body, next.map(|after| page::next_link("/books", &[], page.limit, &after))))
        };
        self.cached_read(key, &path, &shape, &|_| true)
    }

    /// `GET /topics[?limit=&after=]`: a page of topics with their number of books, by
    /// topic, through the cache.
    ///
    /// Only the first page of the default size is cached ([`cache::TOPICS_KEY`]), which
    /// the primary invalidates on every write that adds a book or moves one to another
    /// topic, the only writes that change a count or the list; any other page is read from
    /// a catalog each time (`X-Cache: off`), for the same reason as [`Self::books`].
    fn topics(&self, request: &Request) -> Response {
        let page = match PageRequest::from_query(request, page::MAX_LIMIT, crate::catalog::state::parse_topic_cursor) {
            Ok(p) => p,
            Err(e) => return Response::error(&e).with_header("X-Cache", "off"),
        };
        let mut path = format!("/topics?limit={}", page.limit);
        // The cursor's key (a blank cursor's is empty: every topic follows it).
        if let Some(after) = page.after.as_deref().filter(|a| !a.is_empty()) {
            path.push_str(&format!("&after={}", http::percent_encode(after)));
        }
        let first = page.after.is_none() && page.limit == page::DEFAULT_LIMIT;
        let key = first.then(|| cache::TOPICS_KEY.to_string());
        let shape = |a: &Answer| {
            let next = a.link.as_deref().and_then(page::next_target).and_then(|t| page::target_param(t, "after"));
            let topics: Vec<TopicCount> =
                serde_json::from_slice(&a.body).map_err(|e| Error::Internal(format!("catalog sent bad JSON: {e}")))?;
            let body = serde_json::to_vec(&topics).expect("serializes");
            Ok((body, next.map(|after| page::next_link("/topics", &[], page.limit, &after))))
        };
        self.cached_read(key, &path, &shape, &|_| true)
    }

    /// `GET /orders/{order_id}`: the order from the order servers, the next in turn first.
    /// Every order server ends up with every order, but one that was down or cut off when
    /// an order was taken elsewhere lacks it until it catches up; so a 404 is asked of the
    /// next server too, and the answer is 404 only when every order server said so. When
    /// one could not be asked and none of the others has it, the order may be on that one
    /// alone: 503, naming it, rather than a 404 that may be wrong.
    fn order(&self, id: &str) -> Result<Response> {
        let path = format!("/orders/{}", http::percent_encode(id));
        let mut unreachable = None;
        for i in self.orders.plan() {
            let url = &self.orders.urls()[i];
            match self.http.call(Method::GET, url, &path, None) {
                Ok(a) if a.status == 200 => {
                    self.orders.mark_up(i);
                    let order = a.json::<Order>().map_err(Error::from)?;
                    return Ok(Response::json(&order).with_header("X-Backend", url.clone()));
                }
                Ok(a) if a.status == 404 => self.orders.mark_up(i),
                Ok(a) if a.status == 503 => unreachable = Some(format!("{url}: {}", a.error())),
                Ok(a) => return Err(a.error().into()),
                Err(e) => {
                    self.orders.mark_down(i);
                    unreachable = Some(e.to_string());
                }
            }
        }
        match unreachable {
            None => Err(Error::NotFound(format!("no order {id:?}"))),
            Some(why) => Err(Error::Unavailable(format!(
                "no order server that answered has order {id:?}, and one could not be asked: {why}"
            ))),
        }
    }

    /// Starts the readiness prober: every [`PROBE_INTERVAL`] each back end's `/ready` is
    /// asked (in parallel, [`PROBE_TIMEOUT`] each); one that is not ready is skipped by the
    /// round robin until it is again.
    pub fn start_background(self: &Arc<Self>, shutdown: &Shutdown) {
        if self.near.is_some() {
            let (fe, stop) = (Arc::clone(self), shutdown.clone());
            std::thread::Builder::new()
                .name("near-watch".into())
                .spawn(move || {
                    let near = fe.near.as_ref().expect("checked");
                    near.watch(&fe.config.catalogs, fe.config.common.token.clone(), &stop);
                })
                .expect("a thread can start");
        }
        let (fe, stop) = (Arc::clone(self), shutdown.clone());
        std::thread::spawn(move || loop {
            fe.probe_back_ends();
            if stop.sleep(PROBE_INTERVAL) {
                return;
            }
        });
    }

    fn probe_back_ends(&self) {
        let ready = |url: &str| self.probe.call(Method::GET, url, "/ready", None).is_ok_and(|a| a.status == 200);
        std::thread::scope(|s| {
            for (pool, flags) in [(&self.catalogs, &self.catalog_ready), (&self.orders, &self.order_ready)] {
                s.spawn(move || {
                    for (flag, up) in flags.iter().zip(pool.probe(ready)) {
                        flag.store(up, Ordering::Relaxed);
                    }
                });
            }
        });
    }

    /// `GET /ready`: a catalog and an order server were ready at the last probe; the body
    /// also counts the back ends of each kind that were.
    fn ready(&self) -> Result<Response> {
        let count = |flags: &[AtomicBool]| flags.iter().filter(|f| f.load(Ordering::Relaxed)).count();
        let (catalogs, orders) = (count(&self.catalog_ready), count(&self.order_ready));
        let (catalog, order) = (catalogs > 0, orders > 0);
        let body = |status: &str| {
            serde_json::json!({"status": status, "role": "frontend", "catalog": catalog, "order": order,
                               "catalogs_ready": catalogs, "orders_ready": orders})
        };
        if catalog && order {
            Ok(Response::json(&body("ready")))
        } else {
            let why = if catalog { "no-order-server" } else { "no-catalog" };
            let mut b = body(why);
            b["error"] = format!("no ready {}", if catalog { "order server" } else { "catalog" }).into();
            Ok(Response::raw_json(503, serde_json::to_vec(&b).expect("serializes")))
        }
    }

    /// A cacheable read: the near cache first (while it holds a lease), then memcached,
    /// else a catalog replica (then stored in both when `cacheable` says so). A cached
    /// search page keeps its `Link` as a first line `L<link>`.
    ///
    /// `X-Cache`: `near` for a near hit; otherwise memcached's state as before (`hit`,
    /// `miss`, `off`); without memcached, `miss` when the near cache was asked, else `off`.
    fn cached_read(&self, key: Option<String>, path: &str, shape: Shape, cacheable: Cacheable) -> Response {
        let near = self.near.as_ref().filter(|_| key.is_some());
        let mut asked = false;
        if let (Some(near), Some(k)) = (near, &key) {
            let mut span = crate::trace::span("near.lookup");
            let (leased, found) = near.lookup(k);
            span.attr("found", found.is_some()).attr("leased", leased);
            drop(span);
            if let Some(value) = found {
                return cached_answer(value).with_header("X-Cache", "near");
            }
            asked = leased;
        }
        let mut span = crate::trace::span("cache.lookup");
        let lookup = match (&self.cache, &key) {
            (Some(c), Some(k)) => c.lookup(k),
            _ => Lookup::Off,
        };
        span.attr(
            "answer",
            match lookup {
                Lookup::Hit(..) => "hit",
                Lookup::Miss(_) => "miss",
                Lookup::Off => "off",
            },
        );
        drop(span);
        let slot = match lookup {
            Lookup::Hit(body, seq) => {
                if let (Some(near), Some(k)) = (near, &key) {
                    near.fill(k, seq, &body);
                }
                return cached_answer(body).with_header("X-Cache", "hit");
            }
            Lookup::Miss(slot) => Some(slot),
            Lookup::Off => None,
        };
        let state = match (&slot, &self.cache) {
            (Some(_), _) => "miss",
            (None, None) if asked => "miss",
            _ => "off",
        };
        let (answer, backend) = match self.read(path) {
            Ok(found) => found,
            Err(e) => return Response::error(&e).with_header("X-Cache", state),
        };
        let response = if answer.status == 200 {
            match shape(&answer) {
                Ok((body, link)) => {
                    if let (Some(k), Some(seq), true) = (&key, answer.seq, cacheable(link.as_deref())) {
                        let value = match &link {
                            Some(l) => [format!("L{l}\n").as_bytes(), &body].concat(),
                            None => body.clone(),
                        };
                        let mut span = crate::trace::span("cache.fill");
                        span.attr("seq", seq).attr("bytes", value.len());
                        if let Some(near) = near {
                            near.fill(k, seq, &value);
                        }
                        if let (Some(cache), Some(slot)) = (&self.cache, slot) {
                            cache.fill(slot, seq, &value);
                        }
                        drop(span);
                    }
                    let r = Response::raw_json(200, body);
                    match link {
                        Some(l) => r.with_header("Link", l),
                        None => r,
                    }
                }
                Err(e) => Response::error(&e),
            }
        } else {
            Response::error(&answer.error().into())
        };
        response.with_header("X-Cache", state).with_header("X-Backend", backend)
    }

    /// GET from the catalog pool: the next replica in turn, then the others. A replica
    /// that answers 503 (catching up) counts as one that failed: the next may answer.
    fn read(&self, path: &str) -> Result<(Answer, String)> {
        let _span = crate::trace::span("catalog.read");
        let get = |url: &str| match self.http.call(Method::GET, url, path, None)? {
            a if a.status == 503 => Err(a.error()),
            a => Ok(a),
        };
        match self.catalogs.try_each(Call::Read, get, PeerError::failure) {
            Ok((answer, url)) => Ok((answer, url.to_string())),
            Err(Failed::Exhausted { error, .. } | Failed::Stopped { error, .. }) => {
                Err(Error::Unavailable(format!("no catalog server could answer: {error}")))
            }
        }
    }

    /// A purchase, gathered with those that meet it (issue 25): a purchase that finds an
    /// order server's flight free goes at once; those that arrive meanwhile go together in
    /// one `POST /internal/purchase-batch` to one order server, each answered on its own, as
    /// [`Frontend::purchase_one`] would answer it.
    fn purchase(&self, id: u32) -> Result<Response> {
        let item = (id, crate::trace::current());
        let batch = |items: Vec<_>| self.purchase_traced(&items);
        // No thread waits for the purchase: its batch sends its answer when it ends, and
        // the worker that read it goes on to the next request. Unless its connection
        // cannot be left (`http::later`): then it waits for its batch as below.
        if let Some(reply) = http::later() {
            let then = Box::new(move |answer: Option<Response>| {
                reply.send(http::respond(batch_answer(answer), "/purchase/{id}"))
            });
            if let Err((_, then)) = self.purchases.try_later(item, then, batch) {
                then(Some(shed_purchase()));
            }
            return Ok(Response::later());
        }
        // From here the purchase only waits (for its batch, and the batch for an order
        // server): its public slot goes to a request that needs the CPU. Otherwise the
        // slots would cap the purchases a batch can gather, and shed the rest (503) while
        // the CPU is idle.
        crate::http::step_aside();
        match self.purchases.try_run(item, batch) {
            Ok(answer) => batch_answer(answer),
            Err(_) => Ok(shed_purchase()),
        }
    }

    /// [`Frontend::purchase_batch`] in the trace of the batch's first traced purchase, the
    /// others linked to it (`trace::batch`: a purchase's trace says where its time went
    /// whichever thread carried it).
    fn purchase_traced(&self, items: &[(u32, Option<crate::trace::Context>)]) -> Vec<Response> {
        // The thread that leads a batch waits for an order server: not in a public slot.
        crate::http::step_aside();
        let ids: Vec<u32> = items.iter().map(|(id, _)| *id).collect();
        let contexts: Vec<_> = items.iter().map(|(_, ctx)| ctx.clone()).collect();
        crate::trace::batch(&contexts, "order.call", "order.batched", || self.purchase_batch(&ids), |a| a.status >= 500)
    }

    /// Sends a batch of purchases to the order pool (one alone as `POST /purchase/{id}`,
    /// as before); retried elsewhere only if surely not received. One answer per purchase;
    /// an order server without the route (405, 404: an older one) gets them one by one.
    fn purchase_batch(&self, ids: &[u32]) -> Vec<Response> {
        let answer = |r: Result<Response>| r.unwrap_or_else(|e| Response::error(&e));
        if let [id] = ids {
            return vec![answer(self.purchase_one(*id))];
        }
        let body = serde_json::to_vec(&OrderBatch { books: ids.to_vec() }).expect("wire types serialize");
        let post = |url: &str| self.http.call(Method::POST, url, "/internal/purchase-batch", Some(body.clone()));
        let (batch, url) = match self.orders.try_each(Call::Write, post, PeerError::failure) {
            Ok((batch, _)) if batch.status == 404 || batch.status == 405 => {
                return std::thread::scope(|s| {
                    let each: Vec<_> = ids.iter().map(|&id| s.spawn(move || answer(self.purchase_one(id)))).collect();
                    each.into_iter().map(|e| answer(e.join().map_err(|_| Error::Internal("panicked".into())))).collect()
                })
            }
            Ok((batch, url)) => (batch, url),
            Err(failed) => {
                let why = unavailable(failed).to_string();
                return ids.iter().map(|_| Response::error(&Error::Unavailable(why.clone()))).collect();
            }
        };
        let backend = |r: Response| r.with_header("X-Backend", url.to_string());
        let placed = match batch.json::<OrderBatchAnswer>() {
            Ok(placed) if placed.placed.len() == ids.len() => placed.placed,
            Ok(placed) => {
                let e = Error::Internal(format!("{url} answered {} purchases of {}", placed.placed.len(), ids.len()));
                return ids.iter().map(|_| backend(Response::error(&e))).collect();
            }
            Err(e) => {
                let e: Error = e.into();
                return ids.iter().map(|_| backend(Response::error(&e))).collect();
            }
        };
        placed
            .into_iter()
            .map(|p| {
                backend(match p.into_answer() {
                    Ok(order) => Response::json(&PurchaseReceipt::from(order)),
                    Err(e) => Response::error(&e.into()),
                })
            })
            .collect()
    }

    /// POST one purchase to the order pool; retried elsewhere only if surely not received.
    fn purchase_one(&self, id: u32) -> Result<Response> {
        let mut span = crate::trace::span("order.call");
        span.attr("book", id);
        let post = |url: &str| self.http.call(Method::POST, url, &format!("/purchase/{id}"), None);
        match self.orders.try_each(Call::Write, post, PeerError::failure) {
            Ok((answer, url)) => {
                let response = match answer.json::<Order>() {
                    Ok(order) => Response::json(&PurchaseReceipt::from(order)),
                    Err(e) => Response::error(&e.into()),
                };
                Ok(response.with_header("X-Backend", url.to_string()))
            }
            Err(failed) => Err(unavailable(failed)),
        }
    }
}

/// A purchase's answer from its batch (`None`: the batch failed as a whole).
fn batch_answer(answer: Option<Response>) -> Result<Response> {
    answer.ok_or_else(|| {
        Error::Unavailable("the batch that carried this purchase failed (it may or may not have happened)".into())
    })
}

/// A purchase shed because more wait than the order servers carry in time (nothing was
/// sent, nothing happened), as the server sheds what finds no slot.
fn shed_purchase() -> Response {
    Response::error(&Error::Unavailable(format!(
        "overloaded: too many purchases at once, retry after {} second",
        http::RETRY_AFTER
    )))
    .with_header("Retry-After", http::RETRY_AFTER)
    .at("shed")
}

/// Why a purchase sent to the order pool has no answer: none reachable (it never left), or
/// one failed once it may have received it (its outcome is unknown).
fn unavailable(failed: Failed<PeerError>) -> Error {
    match failed {
        Failed::Exhausted { url, error } => {
            let reason = match &error {
                PeerError::Unreachable { source, .. } => source.to_string(),
                other => other.to_string(),
            };
            Error::Unavailable(format!("no order server reachable: {url}: {reason}"))
        }
        Failed::Stopped { url, error, .. } => Error::Unavailable(format!(
            "order server {url} failed during the purchase (it may or may not have happened): {error}"
        )),
    }
}

/// Whether a request comes from another site: `Sec-Fetch-Site: cross-site`, or an `Origin`
/// whose host is not the one the request was sent to.
fn cross_site(request: &Request) -> bool {
    if request.header("sec-fetch-site").is_some_and(|v| v.eq_ignore_ascii_case("cross-site")) {
        return true;
    }
    match (request.header("origin"), request.header("host")) {
        (None, _) => false,
        (Some(origin), Some(host)) => {
            let origin_host = origin.split_once("://").map_or(origin, |(_, rest)| rest).trim_end_matches('/');
            !origin_host.eq_ignore_ascii_case(host)
        }
        (Some(_), None) => true,
    }
}

/// The catalog's books of a topic as search hits.
fn search_hits(body: &[u8]) -> Result<Vec<u8>> {
    let books: Vec<Book> =
        serde_json::from_slice(body).map_err(|e| Error::Internal(format!("catalog sent bad JSON: {e}")))?;
    let hits: Vec<SearchHit> = books.into_iter().map(|b| SearchHit { id: b.id, title: b.title }).collect();
    Ok(serde_json::to_vec(&hits).expect("serializes"))
}

/// A cached answer: JSON, after a first line `L<link>` when it has a next page.
fn cached_answer(mut body: Vec<u8>) -> Response {
    if body.first() == Some(&b'L') {
        if let Some(end) = body.iter().position(|&b| b == b'\n') {
            let link = String::from_utf8_lossy(&body[1..end]).into_owned();
            body.drain(..=end);
            return Response::raw_json(200, body).with_header("Link", link);
        }
    }
    Response::raw_json(200, body)
}

impl crate::service::Service for Frontend {
    fn handle(&self, request: &Request) -> Response {
        Frontend::handle(self, request)
    }
}

/// `BAZAR_NEAR_CACHE_MB` in bytes (default [`DEFAULT_NEAR_MB`]; 0: no near cache).
fn near_bytes(src: &dyn Source) -> std::result::Result<usize, ConfigError> {
    match config::opt(src, "BAZAR_NEAR_CACHE_MB") {
        None => Ok(DEFAULT_NEAR_MB as usize * 1024 * 1024),
        Some(v) => match v.parse::<u64>() {
            Ok(mb) if mb <= 65_536 => Ok(mb as usize * 1024 * 1024),
            _ => Err(ConfigError {
                var: "BAZAR_NEAR_CACHE_MB",
                problem: format!("{v:?} is not a size in MiB from 0 (off) to 65536"),
            }),
        },
    }
}
