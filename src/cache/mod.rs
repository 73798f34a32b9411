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
//! The primary sets the markers *before* the write becomes readable anywhere (it is
//! committed, not yet shown), so no reader can fetch the new data and find an older entry
//! still served, and none can store data older than a write that someone has seen.
//!
//! A memcached that restarts comes back empty, without the markers of writes fenced on the
//! old process and not yet readable, so an `add` there of data read before such a write
//! would stand. Two rules close it. A fill goes over the connection its lookup used, which
//! dies with the process it reached: a lookup in the old process fills nothing in the new.
//! And a lookup also asks for [`GEN_KEY`] (in the same write), which the primary sets on a
//! server only between batches, under its writer lock: a lookup that finds it began after
//! every batch fenced on the old process was readable; one that does not may store nothing.
//! A flush (an import, an election) removes it too; the primary sets it again once it may
//! write and read, between batches.
//!
//! # Failure
//! Every memcached call has a short timeout ([`OP_TIMEOUT`]). After a failure the cache is
//! off for [`BACKOFF`] (requests go to the back ends, `X-Cache: off`, no timeouts paid),
//! then the next request probes with a fresh connection pool: broken pooled connections
//! are never reused, and caching resumes by itself when memcached is back.
//!
//! Each worker takes a connection from its server's idle stack and puts it back (the stack
//! keeps as many as there are workers), so there is no single shared connection to queue
//! behind and, after warm-up, no dial.
//!
//! # The client
//! The wire layer, one connection and the exchange of one command over it, is in `conn`
//! (with why its socket calls are ours and not the memcache crate's); this file is the
//! protocol above it.

mod conn;

use crate::http::{is_timeout, percent_encode};
use crate::metrics::push_metric;
use crate::wire::Book;
use conn::{parse_u64, Conn, Reply, MAX_VALUE};
use memcache::exp::{Error as McError, MetaCommand, MetaOp, Rendezvous, ReturnCode, Router};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// The key under which memcached records the catalog history its answers belong to.
pub const HISTORY_KEY: &str = "bazar:history";
/// The key the primary sets on every server between batches: a lookup that finds it began
/// after every batch whose markers went to an earlier process on that port was readable.
pub const GEN_KEY: &str = "bazar:generation";
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
/// Room left in an item for memcached's own header, so that no fill exceeds its 1 MiB.
const ITEM_OVERHEAD: usize = 4096;

/// The cache key of `GET /info/{id}`.
pub fn info_key(id: u32) -> String {
    format!("bazar:info:{id}")
}

/// The cache key of `GET /search/{topic}`, if the topic fits in a memcached key.
pub fn search_key(topic: &str) -> Option<String> {
    let key = format!("bazar:search:{}", percent_encode(&topic.trim().to_lowercase()));
    (key.len() <= 250).then_some(key)
}

/// The cache key of the front end's `GET /books` (its first page of the default size): every
/// write changes it (a price, a stock or a new book), so every write invalidates it.
pub const BOOKS_KEY: &str = "bazar:books";
/// The cache key of the front end's `GET /topics` (its first page of the default size):
/// a write that adds a book or moves one to another topic changes a count or the list.
pub const TOPICS_KEY: &str = "bazar:topics";

/// Every key a change of `old` (None: a new book) into `new` makes wrong: the book's info,
/// its topic's search (old and new topic), the first page of books, and the topics when the
/// write changes what they count.
pub fn keys_for(old: Option<&Book>, new: &Book) -> Vec<String> {
    let mut keys = vec![info_key(new.id), BOOKS_KEY.to_string()];
    let before = old.unwrap_or(new);
    keys.extend(search_key(&before.topic));
    // Compared as search compares topics (trimmed, case-insensitive), as `search_key` does;
    // the same text is the same topic (most writes: a purchase, a price), with no copy made.
    let moved = before.topic != new.topic && before.topic.trim().to_lowercase() != new.topic.trim().to_lowercase();
    if moved {
        keys.extend(search_key(&new.topic));
    }
    if old.is_none() || moved {
        keys.push(TOPICS_KEY.to_string());
    }
    keys
}

/// What a lookup found.
#[derive(Debug)]
pub enum Lookup {
    /// No cache (not configured, or backing off after a failure).
    Off,
    /// The stored answer, to be sent as it is, and the write it was read at.
    Hit(Vec<u8>, u64),
    /// Not cached; fill with [`Cache::fill`] after reading a back end.
    Miss(Slot),
}

/// What stood in the key at lookup time; decides how a fill may store.
pub struct Slot {
    key: String,
    /// `None`: absent. `Some((m, cas))`: a marker (or unreadable value) with its CAS token.
    marker: Option<(u64, u64)>,
    at: Instant,
    /// The server and the connection the lookup used; the fill uses them too.
    conn: Option<(usize, Conn)>,
    pool: std::sync::Arc<Pool>,
}

impl Drop for Slot {
    /// A slot not filled (an error, an answer not cached) gives its connection back.
    fn drop(&mut self) {
        if let Some((server, conn)) = self.conn.take() {
            self.pool.give_back(server, conn);
        }
    }
}

/// Each server's idle connections (same order as the servers). Held only to push or pop
/// one.
struct Pool {
    idle: Vec<Mutex<Vec<Conn>>>,
    /// Most idle connections kept per server: one per worker.
    size: usize,
    /// Bumped by every failure: connections dialed before it are closed, not pooled.
    epoch: AtomicU64,
}

impl Pool {
    /// Puts a connection that answered back in its server's idle stack.
    fn give_back(&self, server: usize, conn: Conn) {
        if conn.epoch == self.epoch.load(Ordering::Acquire) {
            let mut idle = self.idle[server].lock().unwrap_or_else(|e| e.into_inner());
            if idle.len() < self.size {
                idle.push(conn);
            }
        }
    }
}

impl std::fmt::Debug for Slot {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Slot").field("key", &self.key).field("marker", &self.marker).finish()
    }
}

#[derive(Default)]
struct Counters {
    hits: AtomicU64,
    misses: AtomicU64,
    fills: AtomicU64,
    too_large: AtomicU64,
    invalidations: AtomicU64,
    errors: AtomicU64,
}

/// A memcached cache shared by the worker threads of one process.
pub struct Cache {
    /// The servers as configured (`host:port`), also what the router hashes.
    servers: Vec<String>,
    /// Each server's idle connections, shared with the slots that hold one.
    pool: std::sync::Arc<Pool>,
    router: Rendezvous,
    /// While backing off: milliseconds since `born` until which readers skip the cache; 0 when on.
    off_until: AtomicU64,
    born: Instant,
    /// Invalidations not delivered yet: key -> write number. Held only to copy or update.
    pending: Mutex<std::collections::HashMap<String, u64>>,
    counters: Counters,
}

impl Cache {
    /// A cache over `servers` (`host:port`); connects lazily, never fails here.
    pub fn new(servers: &[String], workers: usize) -> Cache {
        Cache {
            servers: servers.to_vec(),
            pool: std::sync::Arc::new(Pool {
                idle: servers.iter().map(|_| Mutex::default()).collect(),
                size: workers.clamp(1, 256),
                epoch: AtomicU64::new(0),
            }),
            router: Rendezvous::new(),
            off_until: AtomicU64::new(0),
            born: Instant::now(),
            pending: Mutex::default(),
            counters: Counters::default(),
        }
    }

    /// Sends `command` on a pooled connection (or a new one) to the server of `key`.
    ///
    /// A pooled connection may have died while idle (memcached restarted), so a failure on
    /// one, other than a timeout, is retried once on a fresh connection. Every command this
    /// cache sends may run twice: a lookup reads again, a repeated `add` or `cas` fails
    /// harmlessly (the key is no longer as it saw it), a repeated marker is the same marker.
    fn exchange(&self, key: &str, command: &MetaCommand) -> Result<Reply, McError> {
        let (server, conn, reply) = self.exchange_keeping(key, command)?;
        self.give_back(server, conn);
        Ok(reply)
    }

    /// As [`Cache::exchange`], but the connection is the caller's until it gives it back.
    fn exchange_keeping(&self, key: &str, command: &MetaCommand) -> Result<(usize, Conn, Reply), McError> {
        self.on_server(self.server_of(key), |conn| conn.exchange(command))
    }

    /// The index of the server that holds `key`.
    fn server_of(&self, key: &str) -> usize {
        match self.servers.len() {
            1 => 0,
            _ => self.router.route(key.as_bytes(), &self.servers),
        }
    }

    /// Runs `talk` on a pooled connection to `server` (or a new one; a pooled one that
    /// fails other than by a timeout is replaced and `talk` run again), and keeps it.
    fn on_server<R>(
        &self,
        server: usize,
        mut talk: impl FnMut(&mut Conn) -> Result<R, McError>,
    ) -> Result<(usize, Conn, R), McError> {
        let epoch = self.pool.epoch.load(Ordering::Acquire);
        let pooled = self.pool.idle[server].lock().unwrap_or_else(|e| e.into_inner()).pop();
        let tried = pooled.map(|mut conn| {
            let reply = talk(&mut conn);
            (conn, reply)
        });
        let (conn, reply) = match tried {
            Some((conn, Ok(reply))) => (conn, reply),
            // memcached did not answer in time: trying again would double the wait.
            Some((_, Err(McError::Io(e)))) if is_timeout(&e) => return Err(McError::Io(e)),
            _ => {
                let mut conn = Conn::dial(&self.servers[server], epoch)?;
                let reply = talk(&mut conn)?;
                (conn, reply)
            }
        };
        if self.off_until.load(Ordering::Relaxed) != 0 && self.off_until.swap(0, Ordering::Relaxed) != 0 {
            log::info!("memcached {:?} answers again; caching on", self.servers);
        }
        Ok((server, conn, reply))
    }

    /// With the primary's writer lock held (between batches), while `leads` says it surely
    /// leads (asked before each change): sets [`GEN_KEY`] on every server that lacks it (one
    /// that restarted, or was flushed). A fill is stored only where its lookup found it (see
    /// the module's notes on restarts). A server that fails does not stop the others.
    pub fn ensure_generation(&self, leads: impl Fn() -> bool) -> Result<(), String> {
        let mut failed = Vec::new();
        for server in 0..self.servers.len() {
            let held = self.on_server(server, |c| c.exchange(&MetaCommand::new(MetaOp::Get, GEN_KEY)));
            let (server, mut conn, held) = match held {
                Ok(h) => h,
                Err(e) => {
                    failed.push(format!("{}: {e}", self.servers[server]));
                    continue;
                }
            };
            if held.code != ReturnCode::Hd && leads() {
                let set = MetaCommand::new(MetaOp::Set, GEN_KEY).value(b"1".to_vec()).flag("T0");
                if let Err(e) = conn.exchange(&set) {
                    failed.push(format!("{}: {e}", self.servers[server]));
                    continue;
                }
                log::info!("memcached {} had no generation key (new, restarted or flushed): set", self.servers[server]);
            }
            self.give_back(server, conn);
        }
        if failed.is_empty() {
            Ok(())
        } else {
            Err(failed.join("; "))
        }
    }

    fn give_back(&self, server: usize, conn: Conn) {
        self.pool.give_back(server, conn);
    }

    /// Whether readers skip the cache now (backing off after a failure).
    fn backing_off(&self) -> bool {
        let until = self.off_until.load(Ordering::Relaxed);
        until != 0 && (self.born.elapsed().as_millis() as u64) < until
    }

    /// Records a failure: counted, logged once per outage, cache off for [`BACKOFF`].
    fn failed(&self, what: &str, e: &McError) {
        self.counters.errors.fetch_add(1, Ordering::Relaxed);
        self.pool.epoch.fetch_add(1, Ordering::AcqRel);
        for idle in &self.pool.idle {
            idle.lock().unwrap_or_else(|e| e.into_inner()).clear();
        }
        let until = (self.born.elapsed() + BACKOFF).as_millis() as u64;
        if self.off_until.swap(until, Ordering::Relaxed) == 0 {
            log::warn!("memcached {:?} failed ({what}: {e}); caching off for {BACKOFF:?}", self.servers);
        }
    }

    /// Whether a cache is in use right now (not backing off).
    pub fn is_on(&self) -> bool {
        !self.backing_off()
    }

    /// Looks `key` up.
    pub fn lookup(&self, key: &str) -> Lookup {
        if self.backing_off() {
            return Lookup::Off;
        }
        // The key with the server's generation key, in one write: the fill's licence.
        let generation = MetaCommand::new(MetaOp::Get, GEN_KEY);
        let get = MetaCommand::new(MetaOp::Get, key).flag("v").flag("c");
        let (server, conn, (generation, found)) =
            match self.on_server(self.server_of(key), |c| c.exchange_two(&generation, &get)) {
                Ok(found) => found,
                Err(e) => {
                    self.failed("get", &e);
                    return Lookup::Off;
                }
            };
        // No generation key (a memcached that restarted, before the primary set it again):
        // nothing may be stored, as over a marker without a CAS token.
        let licensed = generation.code == ReturnCode::Hd;
        let marker = match judge(licensed, found.value.as_deref(), found.cas) {
            Found::Hit(seq, json) => {
                let header = found.value.as_ref().map_or(0, |v| v.len()) - json.len();
                let mut value = found.value.expect("a hit has a value");
                self.give_back(server, conn);
                self.counters.hits.fetch_add(1, Ordering::Relaxed);
                value.drain(..header);
                return Lookup::Hit(value, seq);
            }
            Found::Miss(marker) => marker,
        };
        self.counters.misses.fetch_add(1, Ordering::Relaxed);
        Lookup::Miss(Slot {
            key: key.to_string(),
            marker,
            at: Instant::now(),
            conn: Some((server, conn)),
            pool: std::sync::Arc::clone(&self.pool),
        })
    }

    /// Stores an answer read from a back end at sequence number `seq`, if still allowed.
    ///
    /// The fill goes over the connection its lookup used, never a new one: a connection
    /// does not outlive the memcached process it reached, so a fill cannot land in a
    /// memcached that restarted after the lookup (empty, without the markers of the writes
    /// made while it was down, which an `add` would then not meet).
    pub fn fill(&self, mut slot: Slot, seq: u64, json: &[u8]) {
        let Some((server, mut conn)) = slot.conn.take() else { return };
        if slot.at.elapsed() > FILL_WINDOW || self.backing_off() {
            return;
        }
        let value = entry(seq, json);
        if value.len() + slot.key.len() + ITEM_OVERHEAD > MAX_VALUE {
            // memcached would refuse it: not attempted.
            self.counters.too_large.fetch_add(1, Ordering::Relaxed);
            return self.give_back(server, conn);
        }
        let fill = MetaCommand::new(MetaOp::Set, slot.key.as_str()).value(value).flag(format!("T{ENTRY_TTL}"));
        let fill = match fill_by(slot.marker, seq) {
            Some(FillBy::Add) => fill.flag("ME"),
            Some(FillBy::Cas(cas)) => fill.flag(format!("C{cas}")),
            None => return self.give_back(server, conn),
        };
        match conn.exchange(&fill) {
            Ok(r) => {
                // Lost to a marker or another fill (NS, EX, NF): not stored, as the protocol wants.
                if r.code == ReturnCode::Hd {
                    self.counters.fills.fetch_add(1, Ordering::Relaxed);
                }
                self.give_back(server, conn);
            }
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

    /// Makes the cache belong to catalog history `history` (see
    /// [`crate::catalog::store`]): when memcached holds answers of another history (the
    /// catalog was imported, or this is a new store), every server is flushed and the
    /// history recorded under [`HISTORY_KEY`]; `force` flushes whatever it holds. Returns
    /// whether it flushed. Called under the primary's writer lock (between batches). A
    /// flush also removes the generation key: fills stop until the primary sets it again
    /// ([`Cache::ensure_generation`]) once it may write.
    pub fn adopt_history(&self, history: &str, force: bool) -> Result<bool, String> {
        let get = MetaCommand::new(MetaOp::Get, HISTORY_KEY).flag("v");
        let held = self.exchange(HISTORY_KEY, &get).map_err(|e| e.to_string())?.value;
        if held.as_deref() == Some(history.as_bytes()) && !force {
            return Ok(false);
        }
        for server in &self.servers {
            let mut conn = Conn::dial(server, 0).map_err(|e| format!("{server}: {e}"))?;
            let answer = conn.line(b"flush_all\r\n").map_err(|e| format!("{server}: {e}"))?;
            if answer != b"OK" {
                return Err(format!("{server} answered {:?} to flush_all", String::from_utf8_lossy(&answer)));
            }
        }
        let set = MetaCommand::new(MetaOp::Set, HISTORY_KEY).value(history.as_bytes().to_vec());
        match self.exchange(HISTORY_KEY, &set).map_err(|e| e.to_string())?.code {
            ReturnCode::Hd => Ok(true),
            other => Err(format!("memcached did not store the history ({other:?})")),
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
        for (i, (key, seq)) in todo.iter().enumerate() {
            let marker = MetaCommand::new(MetaOp::Set, key.as_str()).value(marker(*seq)).flag(format!("T{MARKER_TTL}"));
            let stored = self.exchange(key, &marker).and_then(|r| match r.code {
                ReturnCode::Hd => Ok(()),
                code => Err(McError::Protocol(format!("marker not stored ({code:?})"))),
            });
            if let Err(e) = stored {
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
            "bazar_cache_too_large_total",
            "counter",
            "Answers not stored: larger than a memcached item may be.",
            c.too_large.load(Ordering::Relaxed),
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

/// A cache entry: the answer `json` as read at write `seq` (`D<seq>\n<json>`).
pub(crate) fn entry(seq: u64, json: &[u8]) -> Vec<u8> {
    let mut value = format!("D{seq}\n").into_bytes();
    value.extend_from_slice(json);
    value
}

/// The invalidation marker of write `seq` (`M<seq>`).
pub(crate) fn marker(seq: u64) -> Vec<u8> {
    format!("M{seq}").into_bytes()
}

/// What a lookup found ([`judge`]).
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Found<'a> {
    /// Data read at write `seq`: the answer, after the entry's header.
    Hit(u64, &'a [u8]),
    /// No data: the marker (and its CAS token) a fill must meet, `None` when the key was
    /// absent ([`fill_by`]).
    Miss(Option<(u64, u64)>),
}

/// Judges a lookup: the key's `value` and CAS token, and whether the server held the
/// generation key (`licensed`). Data is a hit, licensed or not. A miss without the licence,
/// or over a value without a CAS token, carries an impossible marker: nothing may be
/// stored (see the module's notes on restarts).
pub(crate) fn judge(licensed: bool, value: Option<&[u8]>, cas: Option<u64>) -> Found<'_> {
    let marker = match value.map(decode) {
        None => None,
        Some(Value::Data(seq, json)) => return Found::Hit(seq, json),
        Some(Value::Marker(m)) => Some(cas.map_or((u64::MAX, 0), |c| (m, c))),
    };
    #[cfg(test)]
    if crate::catalog::core::planted::on(crate::catalog::core::planted::Planted::FillUnlicensed) {
        return Found::Miss(marker);
    }
    Found::Miss(if licensed { marker } else { Some((u64::MAX, 0)) })
}

/// How a fill stores its answer.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum FillBy {
    /// Only if the key is still absent (`ms` in mode `E`).
    Add,
    /// Only if the key still holds what had this CAS token.
    Cas(u64),
}

/// How a fill of data read at write `seq` may store it over what its lookup found
/// (`marker`, [`Found::Miss`]): an `add` where the key was absent, a `cas` over a marker
/// only when the data is at least as new, else not at all.
pub(crate) fn fill_by(marker: Option<(u64, u64)>, seq: u64) -> Option<FillBy> {
    #[cfg(test)]
    if crate::catalog::core::planted::on(crate::catalog::core::planted::Planted::FillBehindMarker) {
        return Some(marker.map_or(FillBy::Add, |(_, cas)| FillBy::Cas(cas)));
    }
    match marker {
        None => Some(FillBy::Add),
        Some((m, cas)) if seq >= m => Some(FillBy::Cas(cas)),
        Some(_) => None,
    }
}

enum Value<'a> {
    /// An answer read at the write it names.
    Data(u64, &'a [u8]),
    Marker(u64),
}

/// Reads a stored value; anything unreadable counts as a marker that blocks every fill
/// except one with a CAS token and data at least that new, i.e. it gets overwritten.
fn decode(value: &[u8]) -> Value<'_> {
    match value.split_first() {
        Some((b'D', rest)) => match rest.iter().position(|&b| b == b'\n') {
            Some(i) => match parse_u64(&rest[..i]) {
                Some(seq) => Value::Data(seq, &rest[i + 1..]),
                None => Value::Marker(0),
            },
            None => Value::Marker(0),
        },
        Some((b'M', rest)) => Value::Marker(parse_u64(rest).unwrap_or(u64::MAX)),
        _ => Value::Marker(0),
    }
}

#[cfg(test)]
mod tests;
