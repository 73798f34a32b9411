//! The memcached cache of front-end reads, and the push invalidation the catalog sends.
//!
//! # The protocol (why no read after an acknowledged write is stale)
//! Every value carries the catalog sequence number it was read at. Catalog answers carry
//! `X-Seq`, the number of the last write applied on that node when it read.
//! - An entry is `D<seq>\n<json>`: the answer as it was at write `<seq>` or later.
//! - The primary invalidates by *setting* a marker `M<seq>` (the write's number), never by
//!   deleting, before it acknowledges the write.
//! - A reader gets the key with its CAS token (`mg <key> v c`). A data entry is a hit. On a miss it
//!   reads a back end (getting data at `D`), then fills: `add` when the key was absent
//!   (fails if a marker appeared meanwhile), or `cas` over the marker `M<m>` it saw, and only
//!   when `D >= m` (fails if the marker changed meanwhile).
//!
//! So after write `S` is acknowledged, the key holds the marker `M<S>` or something stored
//! over it by a `cas` from a reader who saw that marker (or a later one) and had data at
//! `S` or newer; a reader that fetched old data before the write can no longer store it.
//! The argument needs the marker to live longer than a reader's fill window: markers live
//! [`MARKER_TTL`] and a fill is dropped when the read took longer than [`FILL_WINDOW`].
//! Invalidations ignore the readers' back-off: a write always tries memcached (paying at
//! most [`OP_TIMEOUT`] while it is down), because skipping one while memcached is back
//! would leave a stale entry. If an invalidation cannot be delivered, the write still goes
//! on, the failure is logged and counted, the marker is kept and retried by
//! [`Cache::retry_pending`] until delivered, and [`ENTRY_TTL`] bounds the staleness.
//!
//! # Failure
//! Every memcached call has a short timeout ([`OP_TIMEOUT`]). After a failure the cache is
//! off for [`BACKOFF`] (requests go to the back ends, `X-Cache: off`, no timeouts paid),
//! then the next request probes with a fresh connection pool: broken pooled connections
//! are never reused, and caching resumes by itself when memcached is back.
//!
//! Each worker thread uses its own pooled connection (the pool keeps as many idle ones as
//! there are workers), so there is no single shared connection to queue behind.
//!
//! # The client
//! The memcache crate's meta-protocol client ([`memcache::exp::MetaClient`]): it encodes a
//! command whole and sends it in one write, so a lookup is one packet each way. The
//! crate's classic client writes every field of a command separately: 20 `sendto`/`recvfrom`
//! per binary `gets` and 3 packets per ASCII one, and under load that cost the front end
//! more than half its throughput (docs/performance.md). The meta client also reports an
//! `add` that lost and a `cas` that missed as results, not errors.

use crate::http::percent_encode;
use crate::metrics::push_metric;
use crate::wire::Book;
use memcache::exp::{Error as McError, Meta, MetaClient, MutationStatus, Ttl};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// Backstop expiry of a data entry (seconds).
pub const ENTRY_TTL: u32 = 600;
/// Life of an invalidation marker (seconds): far longer than any fill window.
pub const MARKER_TTL: u32 = 120;
/// A fill whose back-end read started longer ago than this is dropped.
pub const FILL_WINDOW: Duration = Duration::from_secs(30);
/// Timeout of one memcached call (connect, read or write).
pub const OP_TIMEOUT: Duration = Duration::from_millis(250);
/// How long the cache stays off for readers after a failure before it is probed again.
pub const BACKOFF: Duration = Duration::from_secs(3);
/// Most undelivered invalidations kept for retry (beyond that, the expiry bounds staleness).
pub const MAX_PENDING: usize = 100_000;

/// The cache key of `GET /info/{id}`.
pub fn info_key(id: u32) -> String {
    format!("bazar:info:{id}")
}

/// The cache key of `GET /search/{topic}`, if the topic fits in a memcached key.
pub fn search_key(topic: &str) -> Option<String> {
    let key = format!("bazar:search:{}", percent_encode(&topic.trim().to_lowercase()));
    (key.len() <= 250).then_some(key)
}

/// Every key a change of `old` into `new` makes wrong.
pub fn keys_for(old: &Book, new: &Book) -> Vec<String> {
    let mut keys = vec![info_key(new.id)];
    keys.extend(search_key(&old.topic));
    if !old.topic.eq_ignore_ascii_case(&new.topic) {
        keys.extend(search_key(&new.topic));
    }
    keys
}

/// What a lookup found.
#[derive(Debug)]
pub enum Lookup {
    /// No cache (not configured, or backing off after a failure).
    Off,
    /// The stored answer, to be sent as it is.
    Hit(Vec<u8>),
    /// Not cached; fill with [`Cache::fill`] after reading a back end.
    Miss(Slot),
}

/// What stood in the key at lookup time; decides how a fill may store.
#[derive(Debug)]
pub struct Slot {
    key: String,
    /// `None`: absent. `Some((m, cas))`: a marker (or unreadable value) with its CAS token.
    marker: Option<(u64, u64)>,
    at: Instant,
}

#[derive(Default)]
struct Counters {
    hits: AtomicU64,
    misses: AtomicU64,
    fills: AtomicU64,
    invalidations: AtomicU64,
    errors: AtomicU64,
}

/// A memcached cache shared by the worker threads of one process.
pub struct Cache {
    servers: Vec<String>,
    pool_size: usize,
    /// The client, or why not: `Err(until)` while backing off. Held only to clone or swap.
    client: Mutex<Result<Arc<MetaClient>, Instant>>,
    /// Invalidations not delivered yet: key -> write number. Held only to copy or update.
    pending: Mutex<std::collections::HashMap<String, u64>>,
    counters: Counters,
}

impl Cache {
    /// A cache over `servers` (`host:port`); connects lazily, never fails here.
    pub fn new(servers: &[String], workers: usize) -> Cache {
        Cache {
            servers: servers.to_vec(),
            pool_size: workers.clamp(1, 256),
            client: Mutex::new(Err(Instant::now())),
            pending: Mutex::default(),
            counters: Counters::default(),
        }
    }

    /// A fresh client: addresses resolved now, connections dialed on first use.
    fn connect(&self) -> Result<MetaClient, McError> {
        MetaClient::builder()
            .max_idle(self.pool_size)
            .connect_timeout(Some(OP_TIMEOUT))
            .io_timeout(Some(OP_TIMEOUT))
            .connect_multiple(&self.servers)
    }

    /// The client, unless backing off (for readers); builds a fresh one when the back-off
    /// is over, or at once when `even_if_backing_off` (for invalidations).
    fn client(&self, even_if_backing_off: bool) -> Option<Arc<MetaClient>> {
        let mut slot = self.client.lock().unwrap_or_else(|e| e.into_inner());
        match &*slot {
            Ok(c) => Some(Arc::clone(c)),
            Err(until) if Instant::now() < *until && !even_if_backing_off => None,
            Err(_) => match self.connect() {
                Ok(c) => {
                    let c = Arc::new(c);
                    *slot = Ok(Arc::clone(&c));
                    Some(c)
                }
                Err(e) => {
                    log::warn!("memcached {:?}: {e}", self.servers);
                    *slot = Err(Instant::now() + BACKOFF);
                    None
                }
            },
        }
    }

    /// Records a failure: counted, logged once per outage, cache off for [`BACKOFF`].
    fn failed(&self, what: &str, e: &McError) {
        self.counters.errors.fetch_add(1, Ordering::Relaxed);
        let mut slot = self.client.lock().unwrap_or_else(|e| e.into_inner());
        if slot.is_ok() {
            log::warn!("memcached {:?} failed ({what}: {e}); caching off for {BACKOFF:?}", self.servers);
        }
        *slot = Err(Instant::now() + BACKOFF);
    }

    /// Whether a cache is in use right now (not backing off).
    pub fn is_on(&self) -> bool {
        !matches!(&*self.client.lock().unwrap_or_else(|e| e.into_inner()), Err(until) if Instant::now() < *until)
    }

    /// Looks `key` up.
    pub fn lookup(&self, key: &str) -> Lookup {
        let Some(client) = self.client(false) else { return Lookup::Off };
        let found = match client.get(key).meta(Meta::NONE.cas()).send() {
            Ok(found) => found,
            Err(e) => {
                self.failed("get", &e);
                return Lookup::Off;
            }
        };
        let at = Instant::now();
        let key = key.to_string();
        match found.value {
            None => {
                self.counters.misses.fetch_add(1, Ordering::Relaxed);
                Lookup::Miss(Slot { key, marker: None, at })
            }
            Some(value) => match decode(&value) {
                Value::Data(json) => {
                    self.counters.hits.fetch_add(1, Ordering::Relaxed);
                    Lookup::Hit(json.to_vec())
                }
                Value::Marker(m) => {
                    self.counters.misses.fetch_add(1, Ordering::Relaxed);
                    // Without a CAS token nothing may be stored over it: use an impossible marker.
                    let marker = found.item.cas.map_or((u64::MAX, 0), |c| (m, c));
                    Lookup::Miss(Slot { key, marker: Some(marker), at })
                }
            },
        }
    }

    /// Stores an answer read from a back end at sequence number `seq`, if still allowed.
    pub fn fill(&self, slot: Slot, seq: u64, json: &[u8]) {
        if slot.at.elapsed() > FILL_WINDOW {
            return;
        }
        let Some(client) = self.client(false) else { return };
        let mut value = format!("D{seq}\n").into_bytes();
        value.extend_from_slice(json);
        let fill = client.set(&slot.key, &value).ttl(Ttl::secs(ENTRY_TTL));
        let stored = match slot.marker {
            None => fill.add().send(),
            Some((m, cas)) if seq >= m => fill.compare_cas(cas).send(),
            Some(_) => return,
        };
        match stored {
            Ok(r) if r.status == MutationStatus::Applied => {
                self.counters.fills.fetch_add(1, Ordering::Relaxed);
            }
            // Lost to a marker or another fill: not stored, as the protocol wants.
            Ok(_) => {}
            Err(e) => self.failed("fill", &e),
        }
    }

    /// Writes invalidation markers for write `seq` on `keys` (the push approach), after any
    /// still pending; what cannot be delivered is kept for [`Cache::retry_pending`].
    pub fn invalidate(&self, keys: &[String], seq: u64) {
        let mut todo: Vec<(String, u64)> = {
            let mut pending = self.pending.lock().unwrap_or_else(|e| e.into_inner());
            pending.drain().collect()
        };
        todo.extend(keys.iter().map(|k| (k.clone(), seq)));
        let failed = self.deliver(&todo);
        if !failed.is_empty() {
            self.counters.errors.fetch_add(1, Ordering::Relaxed);
            log::warn!("{} invalidation(s) not delivered (write {seq}); retried until memcached answers", failed.len());
            let mut pending = self.pending.lock().unwrap_or_else(|e| e.into_inner());
            for (key, s) in failed {
                if pending.len() < MAX_PENDING || pending.contains_key(&key) {
                    let at = pending.entry(key).or_insert(s);
                    *at = (*at).max(s);
                }
            }
        }
    }

    /// Delivers undelivered invalidations (called periodically by the catalog primary).
    pub fn retry_pending(&self) {
        if !self.pending.lock().unwrap_or_else(|e| e.into_inner()).is_empty() {
            self.invalidate(&[], 0);
        }
    }

    /// How many invalidations wait for delivery.
    pub fn pending(&self) -> usize {
        self.pending.lock().unwrap_or_else(|e| e.into_inner()).len()
    }

    /// Sets the markers; returns those not set (all from the first failure on).
    fn deliver(&self, todo: &[(String, u64)]) -> Vec<(String, u64)> {
        let Some(client) = self.client(true) else { return todo.to_vec() };
        for (i, (key, seq)) in todo.iter().enumerate() {
            if let Err(e) = client.set(key, format!("M{seq}")).ttl(Ttl::secs(MARKER_TTL)).send() {
                self.failed("invalidate", &e);
                return todo[i..].to_vec();
            }
            self.counters.invalidations.fetch_add(1, Ordering::Relaxed);
        }
        Vec::new()
    }

    /// The cache's counters in Prometheus text.
    pub fn metrics_text(&self) -> String {
        let c = &self.counters;
        let mut out = String::new();
        push_metric(
            &mut out,
            "bazar_cache_hits_total",
            "counter",
            "Reads answered from memcached.",
            c.hits.load(Ordering::Relaxed),
        );
        push_metric(
            &mut out,
            "bazar_cache_misses_total",
            "counter",
            "Reads memcached did not answer.",
            c.misses.load(Ordering::Relaxed),
        );
        push_metric(
            &mut out,
            "bazar_cache_fills_total",
            "counter",
            "Answers stored in memcached.",
            c.fills.load(Ordering::Relaxed),
        );
        push_metric(
            &mut out,
            "bazar_cache_invalidations_total",
            "counter",
            "Invalidation markers written.",
            c.invalidations.load(Ordering::Relaxed),
        );
        push_metric(
            &mut out,
            "bazar_cache_errors_total",
            "counter",
            "memcached calls that failed (or were skipped while it was off).",
            c.errors.load(Ordering::Relaxed),
        );
        push_metric(
            &mut out,
            "bazar_cache_up",
            "gauge",
            "1 while memcached is in use, 0 while backing off.",
            u8::from(self.is_on()),
        );
        out
    }
}

enum Value<'a> {
    Data(&'a [u8]),
    Marker(u64),
}

/// Reads a stored value; anything unreadable counts as a marker that blocks every fill
/// except one with a CAS token and data at least that new, i.e. it gets overwritten.
fn decode(value: &[u8]) -> Value<'_> {
    let parse = |digits: &[u8]| std::str::from_utf8(digits).ok().and_then(|s| s.parse::<u64>().ok());
    match value.split_first() {
        Some((b'D', rest)) => match rest.iter().position(|&b| b == b'\n') {
            Some(i) if parse(&rest[..i]).is_some() => Value::Data(&rest[i + 1..]),
            _ => Value::Marker(0),
        },
        Some((b'M', rest)) => Value::Marker(parse(rest).unwrap_or(u64::MAX)),
        _ => Value::Marker(0),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::money::Money;

    #[test]
    fn decodes_values() {
        assert!(matches!(decode(b"D7\n{\"a\":1}"), Value::Data(b"{\"a\":1}")));
        assert!(matches!(decode(b"M42"), Value::Marker(42)));
        assert!(matches!(decode(b"Mx"), Value::Marker(u64::MAX)));
        assert!(matches!(decode(b"Dx\n{}"), Value::Marker(0)));
        assert!(matches!(decode(b""), Value::Marker(0)));
    }

    #[test]
    fn keys() {
        assert_eq!(info_key(7), "bazar:info:7");
        assert_eq!(search_key(" Distributed Systems").unwrap(), "bazar:search:distributed%20systems");
        assert!(search_key(&"x".repeat(300)).is_none());
        let book = Book { id: 1, title: "t".into(), topic: "a".into(), price: Money::from_cents(1), quantity: 1 };
        let moved = Book { topic: "b".into(), ..book.clone() };
        assert_eq!(keys_for(&book, &book).len(), 2);
        assert_eq!(keys_for(&book, &moved).len(), 3);
    }
}
