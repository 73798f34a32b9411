//! `GET /cluster`: the store at a glance, the data behind the dashboard.
//!
//! The front end asks every back end it knows (`BAZAR_CATALOG`, `BAZAR_ORDER`) for its
//! `/health`, `/ready` and `/metrics`, and every memcached server for its `stats`, all at
//! once (one plain scoped thread per call), each call bounded by [`GATHER_TIMEOUT`]: a
//! back end that hangs costs the answer that timeout, never more, and is shown as down.
//!
//! Invariants:
//! - read-only and token-free: the calls go through an [`Http`] built without the token,
//!   to routes that need none, and the answer holds URLs, states and counters only (no
//!   setting, no secret);
//! - one gathering at a time: answers within [`FRESH`] of the last one reuse it, so any
//!   number of open dashboards cost the back ends about one round of probes a second;
//! - the parsing ([`Figures::parse`], [`memcached_stats`]) is pure and unit-tested.
//!
//! Rates and percentiles are the page's business: an answer carries counters and the
//! latency histogram's cumulative buckets, and the page differences two answers.

use crate::client::{Answer, Http};
use crate::http::Response;
use serde_json::{json, Value};
use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::net::{TcpStream, ToSocketAddrs};
use std::sync::Mutex;
use std::thread::ScopedJoinHandle;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};
use ureq::http::Method;

/// Longest wait for one back end's answer (or one memcached's `stats`).
pub const GATHER_TIMEOUT: Duration = Duration::from_millis(400);
/// An answer younger than this is served again instead of asking every back end anew.
pub const FRESH: Duration = Duration::from_millis(250);
/// Routes left out of a service's request rate and latency: the probes and scrapes that
/// the dashboard, the front end's prober and Prometheus make, which are not the store's work.
const PROBE_ROUTES: [&str; 4] = ["/health", "/ready", "/metrics", "/cluster"];
/// Most bytes read from a memcached `stats` answer (about 1.5 KiB in practice).
const MAX_STATS: usize = 16 * 1024;

/// What the front end knows of itself when it answers `GET /cluster`.
pub struct Local<'a> {
    /// The catalog servers' base URLs.
    pub catalogs: &'a [String],
    /// The order servers' base URLs.
    pub orders: &'a [String],
    /// memcached servers (`host:port`).
    pub memcached: &'a [String],
    /// The front end's own `/metrics` text (requests, and the cache's counters).
    pub metrics: String,
    /// Whether the front end is ready (a catalog and an order server were, at its last probe).
    pub ready: bool,
    /// The cache: `on`, `down` (backing off after a failure) or `off` (not configured).
    pub cache: &'static str,
    /// The near cache: `on` (a lease held), `no-lease` or `off` (sized 0).
    pub near: &'static str,
}

/// Gathers and keeps the last answer of `GET /cluster`.
pub struct Board {
    /// Calls to the back ends: short timeout, and no token.
    http: Http,
    /// The last answer and when it was gathered; held while gathering, so concurrent
    /// callers wait for that round (at most about [`GATHER_TIMEOUT`]) instead of starting one.
    last: Mutex<Option<(Instant, Vec<u8>)>>,
}

impl Default for Board {
    fn default() -> Self {
        Board::new()
    }
}

impl Board {
    /// A board with its own client (no token).
    pub fn new() -> Board {
        Board { http: Http::new(GATHER_TIMEOUT, 4, None), last: Mutex::new(None) }
    }

    /// The answer to `GET /cluster`.
    pub fn answer(&self, local: &Local) -> Response {
        let mut last = self.last.lock().unwrap_or_else(|e| e.into_inner());
        if let Some((at, body)) = last.as_ref() {
            if at.elapsed() < FRESH {
                return Response::raw_json(200, body.clone()).with_header("Cache-Control", "no-store");
            }
        }
        let body = serde_json::to_vec(&self.gather(local)).expect("JSON values serialize");
        *last = Some((Instant::now(), body.clone()));
        Response::raw_json(200, body).with_header("Cache-Control", "no-store")
    }

    /// Asks everyone at once and assembles the answer.
    fn gather(&self, local: &Local) -> Value {
        let started = Instant::now();
        let (catalogs, orders, memcached) = std::thread::scope(|s| {
            let ask = |base: &str| {
                let base = base.to_string();
                let calls: Vec<_> = ["/health", "/ready", "/metrics"]
                    .into_iter()
                    .map(|path| {
                        let base = base.clone();
                        s.spawn(move || self.http.call(Method::GET, &base, path, None).map_err(|e| reason(&e)))
                    })
                    .collect();
                (base, calls)
            };
            let catalogs: Vec<_> = local.catalogs.iter().map(|u| ask(u)).collect();
            let orders: Vec<_> = local.orders.iter().map(|u| ask(u)).collect();
            let memcached: Vec<_> =
                local.memcached.iter().map(|a| (a.clone(), s.spawn(move || memcached_stats(a)))).collect();
            let memcached: Vec<(String, Result<Stats, String>)> = memcached
                .into_iter()
                .map(|(a, h)| (a, h.join().unwrap_or_else(|_| Err("the probe panicked".into()))))
                .collect();
            (join_probes(catalogs), join_probes(orders), memcached)
        });
        let out_of_sync: Option<Vec<String>> = catalogs
            .iter()
            .filter_map(|p| p.health_json())
            .find(|h| h["role"] == "primary")
            .map(|h| string_list(&h["replicas_out_of_sync"]));
        let own = Figures::parse(&local.metrics);
        json!({
            "at_ms": SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_millis() as u64),
            "gathered_ms": started.elapsed().as_millis() as u64,
            "frontend": {
                "kind": "frontend", "up": true, "ready": local.ready,
                "requests": own.requests, "buckets": own.buckets_json(),
                "cache": local.cache,
                "cache_hits": own.value("bazar_cache_hits_total"),
                "cache_misses": own.value("bazar_cache_misses_total"),
                "near": local.near,
                "near_hits": own.value("bazar_near_hits_total"),
                "near_misses": own.value("bazar_near_misses_total"),
                "near_evictions": own.value("bazar_near_evictions_total"),
                "near_invalidations": own.value("bazar_near_invalidations_total"),
                "near_resets": own.value("bazar_near_resets_total"),
                "near_bytes": own.value("bazar_near_bytes"),
                "near_entries": own.value("bazar_near_entries"),
            },
            "memcached": memcached.iter().map(|(address, stats)| match stats {
                Ok(s) => json!({"kind": "memcached", "address": address, "up": true, "ready": true,
                    "hits": s.get_hits, "misses": s.get_misses, "items": s.curr_items, "uptime_s": s.uptime}),
                Err(e) => json!({"kind": "memcached", "address": address, "up": false, "ready": false, "error": e}),
            }).collect::<Vec<_>>(),
            "catalogs": catalogs.iter().map(|p| p.catalog(out_of_sync.as_deref())).collect::<Vec<_>>(),
            "orders": orders.iter().map(Probe::order).collect::<Vec<_>>(),
        })
    }
}

/// One call to a back end under way: its answer, or why there is none.
type Call<'scope> = ScopedJoinHandle<'scope, Result<Answer, String>>;

/// The three answers of each back end, once its calls are done.
fn join_probes(probes: Vec<(String, Vec<Call<'_>>)>) -> Vec<Probe> {
    probes
        .into_iter()
        .map(|(base, calls)| {
            let mut answers =
                calls.into_iter().map(|c| c.join().unwrap_or_else(|_| Err("the probe panicked".to_string())));
            let mut next = || answers.next().unwrap_or_else(|| Err("not asked".to_string()));
            let (health, ready, metrics) = (next(), next(), next());
            Probe {
                base,
                health_error: health.as_ref().err().cloned(),
                health: health.ok(),
                ready: ready.ok(),
                metrics: metrics.ok(),
            }
        })
        .collect()
}

/// One back end's three answers (None: no answer within the timeout).
struct Probe {
    base: String,
    /// Why `/health` got no answer, if it did not.
    health_error: Option<String>,
    health: Option<Answer>,
    ready: Option<Answer>,
    metrics: Option<Answer>,
}

impl Probe {
    fn health_json(&self) -> Option<Value> {
        self.health.as_ref().filter(|a| a.status == 200).and_then(|a| serde_json::from_slice(&a.body).ok())
    }

    /// What every back end shows: up, ready (and why not), its request figures.
    fn common(&self, kind: &str) -> Value {
        let ready_body: Option<Value> = self.ready.as_ref().and_then(|a| serde_json::from_slice(&a.body).ok());
        let figures = self
            .metrics
            .as_ref()
            .filter(|a| a.status == 200)
            .map(|a| Figures::parse(&String::from_utf8_lossy(&a.body)))
            .unwrap_or_default();
        let up = self.health.as_ref().is_some_and(|a| a.status == 200);
        json!({
            "kind": kind,
            "url": self.base,
            "up": up,
            "ready": self.ready.as_ref().is_some_and(|a| a.status == 200),
            "ready_status": ready_body.as_ref().and_then(|b| b["status"].as_str().map(str::to_string)),
            "error": match (&self.health, &self.health_error) {
                (_, Some(e)) => e.clone().into(),
                (Some(a), None) if a.status != 200 => format!("/health answered {}", a.status).into(),
                _ => Value::Null,
            },
            "requests": figures.requests,
            "buckets": figures.buckets_json(),
        })
    }

    /// A catalog: its role, last write, lease, and whether the primary counts it in sync.
    fn catalog(&self, out_of_sync: Option<&[String]>) -> Value {
        let mut v = self.common("catalog");
        if let Some(h) = self.health_json() {
            for key in ["role", "primary", "epoch", "seq", "books", "lease_ms_left", "primary_down"] {
                v[key] = h[key].clone();
            }
            v["in_sync"] = match (h["role"].as_str(), out_of_sync) {
                (Some("primary"), _) => true.into(),
                (_, Some(list)) => (!list.iter().any(|u| same_url(u, &self.base))).into(),
                (_, None) => Value::Null,
            };
        }
        v
    }

    /// An order server: orders held and its last pull from each peer.
    fn order(&self) -> Value {
        let mut v = self.common("order");
        if let Some(h) = self.health_json() {
            v["orders"] = h["orders"].clone();
            v["peers"] = h["peers"].clone();
        }
        let taken = self.metrics.as_ref().map(|a| Figures::parse(&String::from_utf8_lossy(&a.body)));
        v["taken"] = taken.and_then(|f| f.value("bazar_orders_taken_total")).into();
        v
    }
}

/// Why a call failed, in few words (the transport's reason, without the URL).
fn reason(e: &crate::error::PeerError) -> String {
    match e {
        crate::error::PeerError::Unreachable { source, .. } => {
            source.to_string().trim_start_matches("io: ").to_string()
        }
        other => other.to_string(),
    }
}

fn string_list(v: &Value) -> Vec<String> {
    v.as_array().map(|a| a.iter().filter_map(|s| s.as_str().map(str::to_string)).collect()).unwrap_or_default()
}

/// The same base URL, but for a trailing slash.
fn same_url(a: &str, b: &str) -> bool {
    a.trim_end_matches('/') == b.trim_end_matches('/')
}

/// The figures the dashboard needs from one Prometheus text.
#[derive(Debug, Default, PartialEq)]
pub struct Figures {
    /// Requests answered on routes other than the probes and scrapes (`/health`, `/ready`,
    /// `/metrics`, `/cluster`).
    pub requests: u64,
    /// Their latency histogram: cumulative count at each upper bound (`None`: `+Inf`).
    pub buckets: Vec<(Option<f64>, u64)>,
    /// Every sample without labels (gauges and counters of the service's own).
    pub plain: BTreeMap<String, f64>,
}

impl Figures {
    /// Reads the few lines needed; anything else (comments, unknown series, bad lines) is
    /// skipped, so a newer or older service never breaks the dashboard.
    pub fn parse(text: &str) -> Figures {
        let mut f = Figures::default();
        let mut buckets: BTreeMap<String, u64> = BTreeMap::new();
        for line in text.lines().filter(|l| !l.starts_with('#')) {
            let Some((series, value)) = line.rsplit_once(' ') else { continue };
            let Ok(value) = value.parse::<f64>() else { continue };
            let (name, labels) = match series.split_once('{') {
                Some((n, rest)) => (n, rest.trim_end_matches('}')),
                None => (series, ""),
            };
            if labels.is_empty() {
                f.plain.insert(name.to_string(), value);
                continue;
            }
            if PROBE_ROUTES.iter().any(|r| label(labels, "route") == Some(r)) {
                continue;
            }
            match name {
                "bazar_requests_total" => f.requests += value as u64,
                "bazar_request_seconds_bucket" => {
                    if let Some(le) = label(labels, "le") {
                        *buckets.entry(le.to_string()).or_default() += value as u64;
                    }
                }
                _ => {}
            }
        }
        let mut sorted: Vec<(Option<f64>, u64)> =
            buckets.into_iter().map(|(le, n)| (le.parse::<f64>().ok().filter(|b| b.is_finite()), n)).collect();
        sorted.sort_by(|a, b| match (a.0, b.0) {
            (None, None) => std::cmp::Ordering::Equal,
            (None, _) => std::cmp::Ordering::Greater,
            (_, None) => std::cmp::Ordering::Less,
            (Some(x), Some(y)) => x.total_cmp(&y),
        });
        f.buckets = sorted;
        f
    }

    /// A sample without labels, if the text had it.
    pub fn value(&self, name: &str) -> Option<f64> {
        self.plain.get(name).copied()
    }

    fn buckets_json(&self) -> Value {
        self.buckets.iter().map(|(le, n)| json!([le, n])).collect()
    }
}

/// The value of label `name` in `a="x",b="y"` (our own services never escape quotes).
fn label<'a>(labels: &'a str, name: &str) -> Option<&'a str> {
    labels.split("\",").find_map(|pair| {
        let (k, v) = pair.split_once("=\"")?;
        (k.trim_start_matches(',') == name).then(|| v.trim_end_matches('"'))
    })
}

/// The figures of memcached's `stats` that the dashboard shows.
#[derive(Debug, Default, PartialEq)]
pub struct Stats {
    /// Lookups that found an item.
    pub get_hits: u64,
    /// Lookups that found none.
    pub get_misses: u64,
    /// Items held now.
    pub curr_items: u64,
    /// Seconds since memcached started.
    pub uptime: u64,
}

impl Stats {
    /// Reads `STAT <name> <value>` lines up to `END`; None when the answer is not complete.
    pub fn parse(text: &str) -> Option<Stats> {
        let mut s = Stats::default();
        for line in text.lines() {
            let line = line.trim_end_matches('\r');
            if line == "END" {
                return Some(s);
            }
            let mut words = line.split(' ');
            let (Some("STAT"), Some(name), Some(value)) = (words.next(), words.next(), words.next()) else {
                continue;
            };
            let slot = match name {
                "get_hits" => &mut s.get_hits,
                "get_misses" => &mut s.get_misses,
                "curr_items" => &mut s.curr_items,
                "uptime" => &mut s.uptime,
                _ => continue,
            };
            *slot = value.parse().unwrap_or(0);
        }
        None
    }
}

/// Asks one memcached for `stats`, within [`GATHER_TIMEOUT`] in all.
pub fn memcached_stats(address: &str) -> Result<Stats, String> {
    let deadline = Instant::now() + GATHER_TIMEOUT;
    let addr = address.to_socket_addrs().map_err(|e| e.to_string())?.next().ok_or("no address")?;
    let mut stream = TcpStream::connect_timeout(&addr, GATHER_TIMEOUT).map_err(|e| e.to_string())?;
    stream.write_all(b"stats\r\n").map_err(|e| e.to_string())?;
    let mut text = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Err("timed out".into());
        }
        stream.set_read_timeout(Some(left)).map_err(|e| e.to_string())?;
        let n = stream.read(&mut buf).map_err(|e| e.to_string())?;
        if n == 0 {
            return Err("closed before END".into());
        }
        text.extend_from_slice(&buf[..n]);
        if text.ends_with(b"END\r\n") {
            return Stats::parse(&String::from_utf8_lossy(&text)).ok_or_else(|| "bad stats answer".into());
        }
        if text.len() > MAX_STATS {
            return Err("stats answer too long".into());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn figures_leave_probes_out_and_sum_buckets_across_routes() {
        let text = "\
# HELP bazar_requests_total Requests answered, by route and status.
bazar_requests_total{route=\"/health\",status=\"200\"} 50
bazar_requests_total{route=\"/info/{id}\",status=\"200\"} 7
bazar_requests_total{route=\"/search/{topic}\",status=\"404\"} 3
bazar_request_seconds_bucket{route=\"/info/{id}\",status=\"200\",le=\"0.001\"} 5
bazar_request_seconds_bucket{route=\"/info/{id}\",status=\"200\",le=\"+Inf\"} 7
bazar_request_seconds_bucket{route=\"/search/{topic}\",status=\"404\",le=\"0.001\"} 1
bazar_request_seconds_bucket{route=\"/search/{topic}\",status=\"404\",le=\"+Inf\"} 3
bazar_request_seconds_bucket{route=\"/ready\",status=\"200\",le=\"0.001\"} 9
bazar_request_seconds_sum{route=\"/info/{id}\",status=\"200\"} 0.02
bazar_cache_hits_total 12
bazar_lease_seconds_left 1.75
garbage line
bazar_orders_known not-a-number
";
        let f = Figures::parse(text);
        assert_eq!(f.requests, 10);
        assert_eq!(f.buckets, vec![(Some(0.001), 6), (None, 10)]);
        assert_eq!(f.value("bazar_cache_hits_total"), Some(12.0));
        assert_eq!(f.value("bazar_lease_seconds_left"), Some(1.75));
        assert_eq!(f.value("bazar_orders_known"), None);
        assert_eq!(Figures::parse(""), Figures::default());
    }

    #[test]
    fn labels() {
        let cases = [
            ("route=\"/a\",status=\"200\"", "route", Some("/a")),
            ("route=\"/a\",status=\"200\"", "status", Some("200")),
            ("route=\"/a\",status=\"200\",le=\"+Inf\"", "le", Some("+Inf")),
            ("route=\"/a\"", "le", None),
            ("", "route", None),
        ];
        for (labels, name, want) in cases {
            assert_eq!(label(labels, name), want, "{labels} {name}");
        }
    }

    #[test]
    fn memcached_stats_answers() {
        let full =
            "STAT pid 1\r\nSTAT uptime 42\r\nSTAT get_hits 9\r\nSTAT get_misses 3\r\nSTAT curr_items 5\r\nEND\r\n";
        assert_eq!(Stats::parse(full), Some(Stats { get_hits: 9, get_misses: 3, curr_items: 5, uptime: 42 }));
        assert_eq!(Stats::parse("STAT uptime 42\r\n"), None, "cut before END");
        assert_eq!(Stats::parse("END\r\n"), Some(Stats::default()));
    }

    #[test]
    fn urls_compare_without_a_trailing_slash() {
        assert!(same_url("http://a:1/", "http://a:1"));
        assert!(!same_url("http://a:1", "http://a:2"));
    }
}
