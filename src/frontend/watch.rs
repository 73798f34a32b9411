//! The near cache's I/O: one watch thread per front end that finds the primary, long-polls
//! it (`POST /internal/near`) and applies its answers; and the cache behind its lock, as
//! the request workers use it. The decisions are in `near.rs` (front end) and
//! `catalog/near.rs` (primary).
//!
//! The primary is found by asking the configured catalogs (`GET /health`): one whose role
//! is `primary` is it (at the URL asked; the highest epoch wins), else the primary a
//! replica names. It is found again when a watch fails or the epoch changes; a front end
//! that turns to another primary draws a new session (which that primary answers with a
//! `reset`) and drops its lease at once.
//!
//! Lock: `cache` is held for one lookup, fill or answer, never across I/O.

use super::near::{NearCache, Tally};
use crate::client::Http;
use crate::metrics::push_metric;
use crate::shutdown::Shutdown;
use crate::wire::{NearAnswer, NearWatch};
use std::sync::Mutex;
use std::time::{Duration, Instant};
use ureq::http::Method;

/// Default size of the near cache (`BAZAR_NEAR_CACHE_MB`).
pub const DEFAULT_NEAR_MB: u64 = 64;
/// Pause after a failed watch or discovery before the next try.
const RETRY: Duration = Duration::from_millis(200);
/// Longest wait for a catalog's `/health` while looking for the primary.
const DISCOVER_TIMEOUT: Duration = Duration::from_millis(500);
/// Added to the longest hold (`L/4`) for a watch's timeout.
const WATCH_SLACK: Duration = Duration::from_secs(1);

/// The near cache of a front end, shared by its workers and its watch thread.
pub struct Near {
    cache: Mutex<NearCache>,
}

impl Near {
    /// An empty near cache of `bytes`.
    pub fn new(bytes: usize) -> Near {
        Near { cache: Mutex::new(NearCache::new(bytes)) }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, NearCache> {
        self.cache.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Whether a lease is held now, and the answer under `key` if so and if stored.
    pub fn lookup(&self, key: &str) -> (bool, Option<Vec<u8>>) {
        let now = Instant::now();
        let (leased, found) = {
            let mut cache = self.lock();
            (cache.leased(now), cache.get(key, now))
        };
        (leased, found.map(|v| v.to_vec()))
    }

    /// Whether hits are served now (a lease is held).
    pub fn leased(&self) -> bool {
        self.lock().leased(Instant::now())
    }

    /// Stores an answer read at write `seq`, if no invalidation since forbids it.
    pub fn fill(&self, key: &str, seq: u64, value: &[u8]) {
        self.lock().fill(key, seq, value);
    }

    /// The near cache's figures in Prometheus text.
    pub fn metrics_text(&self) -> String {
        let (t, (bytes, entries), leased) = {
            let c = self.lock();
            (c.tally(), c.usage(), c.leased(Instant::now()))
        };
        let Tally { hits, misses, fills, refused, evictions, invalidations, resets } = t;
        let mut out = String::new();
        for (name, kind, help, value) in [
            ("bazar_near_hits_total", "counter", "Reads answered from the near cache.", hits),
            ("bazar_near_misses_total", "counter", "Reads the near cache (with a lease) did not answer.", misses),
            ("bazar_near_fills_total", "counter", "Answers stored in the near cache.", fills),
            ("bazar_near_fills_refused_total", "counter", "Fills refused: read before an invalidation.", refused),
            ("bazar_near_evictions_total", "counter", "Entries evicted (least recently used).", evictions),
            ("bazar_near_invalidations_total", "counter", "Keys invalidated by the primary.", invalidations),
            ("bazar_near_resets_total", "counter", "Times the near cache was cleared (reset).", resets),
            ("bazar_near_bytes", "gauge", "Bytes the near cache counts.", bytes as u64),
            ("bazar_near_entries", "gauge", "Entries in the near cache.", entries as u64),
            ("bazar_near_lease", "gauge", "1 while the front end holds a cache lease.", u64::from(leased)),
        ] {
            push_metric(&mut out, name, kind, help, value);
        }
        out
    }

    /// The watch thread's loop, until `shutdown`: find the primary, watch it, apply.
    pub fn watch(&self, catalogs: &[String], token: Option<String>, shutdown: &Shutdown) {
        let discover = Http::new(DISCOVER_TIMEOUT, 1, token.clone()).peer();
        let mut http = Http::new(Duration::from_secs(3), 1, token.clone()).peer();
        let mut hold = Duration::ZERO;
        let mut target: Option<(String, u64)> = None;
        let mut session = new_session();
        let mut seen = 0;
        while !shutdown.is_set() {
            let Some((url, epoch)) = target.clone().or_else(|| find_primary(&discover, catalogs)) else {
                if shutdown.sleep(RETRY) {
                    return;
                }
                continue;
            };
            if target.as_ref().is_none_or(|(u, _)| *u != url) {
                // Another primary (or the first): a new session, answered with a reset.
                session = new_session();
                self.lock().drop_lease();
            }
            let body = serde_json::to_vec(&NearWatch { session: session.clone(), seen }).expect("serializes");
            let sent = Instant::now();
            let answer = http.call(Method::POST, &url, "/internal/near", Some(body));
            let answer = match answer.map_err(|e| e.to_string()).and_then(|a| match a.status {
                200 => a.json::<NearAnswer>().map_err(|e| e.to_string()),
                _ => Err(a.error().to_string()),
            }) {
                Ok(a) => a,
                Err(e) => {
                    log::debug!("near-cache watch of {url} failed: {e}; finding the primary again");
                    target = None;
                    if shutdown.sleep(RETRY) {
                        return;
                    }
                    continue;
                }
            };
            if answer.epoch != epoch && !answer.reset {
                log::info!("the primary's epoch moved from {epoch} to {}: finding it again", answer.epoch);
                target = None;
                self.lock().drop_lease();
                continue;
            }
            target = Some((url, answer.epoch));
            let lease = Duration::from_millis(answer.lease_ms);
            {
                let mut near = self.lock();
                near.apply(answer.reset, answer.through, &answer.keys, sent, lease);
                if lease.is_zero() {
                    // Revoked (a switchover pauses the primary): no near hit from now on,
                    // before the next watch tells the primary so.
                    near.drop_lease();
                }
            }
            if answer.reset {
                log::info!("near cache reset by the primary (through write {})", answer.through);
            }
            seen = answer.through;
            if !lease.is_zero() && lease / 4 != hold {
                hold = lease / 4;
                http = Http::new(hold + WATCH_SLACK, 1, token.clone()).peer();
            }
        }
    }
}

/// A session id for a watch: random, drawn anew for each primary.
fn new_session() -> String {
    crate::ids::random_hex().unwrap_or_else(|_| format!("{:x}", crate::ids::now_ms()))
}

/// The primary and its epoch, as the catalogs say: one that leads (the highest epoch),
/// else the primary a replica names.
fn find_primary(http: &Http, catalogs: &[String]) -> Option<(String, u64)> {
    let mut named = None;
    let mut leading: Option<(String, u64)> = None;
    for url in catalogs {
        let Ok(health) = http.get::<serde_json::Value>(url, "/health") else { continue };
        let epoch = health["epoch"].as_u64().unwrap_or(0);
        match (health["role"].as_str(), health["primary"].as_str()) {
            (Some("primary"), _) if leading.as_ref().is_none_or(|(_, e)| epoch > *e) => {
                leading = Some((url.clone(), epoch));
            }
            (Some("replica"), Some(primary)) if named.is_none() => named = Some((primary.to_string(), epoch)),
            _ => {}
        }
    }
    leading.or(named)
}
