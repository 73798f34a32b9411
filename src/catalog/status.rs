//! What a catalog shows of itself: `/health`, `/ready` and `/metrics` (role, primary,
//! epoch, replication and lease figures, and with etcd the elections and failovers).

use super::config::Role;
use super::node::CatalogNode;
use crate::http::Response;
use crate::metrics::push_metric;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Instant;

impl CatalogNode {
    pub(super) fn role_name(&self) -> &'static str {
        match self.role() {
            Role::Primary => "primary",
            Role::Replica => "replica",
        }
    }

    /// The primary as this catalog knows it (its own URL when it leads with etcd; null on
    /// a static primary, which does not know its own URL, and while none is known).
    fn primary_shown(&self) -> Option<String> {
        match &self.failover {
            Some(f) => f.core().primary().map(str::to_string),
            None => self.primary_url(),
        }
    }

    /// `GET /ready`: the primary always; a replica while it can serve reads.
    pub(super) fn ready(&self) -> Response {
        let seq = self.state().seq();
        let (role, primary, epoch) = (self.role_name(), self.primary_shown(), self.epoch());
        match self.readable() {
            Ok(()) => Response::json(
                &serde_json::json!({"status": "ready", "role": role, "primary": primary, "epoch": epoch, "seq": seq}),
            ),
            Err(e) => {
                let status = if self.serving.load(Ordering::SeqCst) { "no-lease" } else { "catching-up" };
                let body = serde_json::json!({"status": status, "role": role, "primary": primary, "epoch": epoch,
                    "seq": seq, "error": e.to_string()});
                Response::raw_json(503, serde_json::to_vec(&body).expect("serializes"))
            }
        }
    }

    pub(super) fn health(&self) -> serde_json::Value {
        let links = self.links();
        let out_of_sync: Vec<&str> = links.iter().filter(|l| !l.grant().in_sync).map(|l| l.url.as_str()).collect();
        let readable = self.readable().is_ok();
        let lease = self.lease().clone();
        let (role, primary, epoch) = (self.role_name(), self.primary_shown(), self.epoch());
        // The last write logged here: with etcd a replica's writes past `seq` are pending
        // (logged, not yet known committed, not readable); and whether the log takes no
        // write now (a write or fsync failed; it is re-opened by itself). Both as of the
        // last release of the writer lock: health never waits for a push.
        let logged = self.logged.seq.load(Ordering::Relaxed);
        let log_failed = self.logged.failed.load(Ordering::Relaxed);
        let in_sync_record = self.failover.as_ref().map(|f| f.core().sync().map(|s| s.members.clone()));
        let state = self.state();
        serde_json::json!({
            "logged": logged,
            "log_failed": log_failed,
            "in_sync_record": in_sync_record,
            "status": if readable { "ok" } else { "catching-up" },
            "role": role,
            "primary": primary,
            "epoch": epoch,
            "seq": state.seq(),
            "books": state.len(),
            "replicas_out_of_sync": out_of_sync,
            "lease_ms_left": lease.remaining(Instant::now()).as_millis() as u64,
            "primary_down": lease.primary_down(),
        })
    }

    pub(super) fn metrics_text(&self) -> String {
        let c = &self.counters;
        let get = |a: &AtomicU64| a.load(Ordering::Relaxed) as f64;
        let out_of_sync = self.links().iter().filter(|l| !l.grant().in_sync).count() as f64;
        let tally = self.failover.as_ref().map(|f| f.core().tally()).unwrap_or_default();
        let lag = self.last_push.lock().unwrap_or_else(|e| e.into_inner()).map_or(-1.0, |t| t.elapsed().as_secs_f64());
        let lease = self.lease().remaining(Instant::now()).as_secs_f64();
        let (seq, books) = {
            let state = self.state();
            (state.seq() as f64, state.len() as f64)
        };
        let write_errors = self.logged.write_errors.load(Ordering::Relaxed);
        let rows: [(&str, &str, &str, f64); 27] = [
            ("bazar_catalog_seq", "gauge", "Sequence number of the last write applied here.", seq),
            ("bazar_catalog_books", "gauge", "Books in the catalog.", books),
            (
                "bazar_catalog_log_write_errors_total",
                "counter",
                "Appends to catalog.log that failed (a full disk, an I/O error, a failed fsync): refused with 503.",
                write_errors as f64,
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
                "bazar_catalog_writes_on_one_disk_total",
                "counter",
                "Primary: writes acknowledged while every replica was out of sync (on its disk alone until one is back).",
                get(&c.writes_on_one_disk),
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
                "bazar_catalog_version_queries_total",
                "counter",
                "Replica: reads that met a pending write and asked the primary what is committed.",
                get(&c.version_queries),
            ),
            (
                "bazar_lease_renewal_failures_total",
                "counter",
                "Replica: renewals not granted.",
                get(&c.lease_renewal_failures),
            ),
            ("bazar_lease_seconds_left", "gauge", "Replica: time left on its read lease.", lease),
            ("bazar_catalog_epoch", "gauge", "The newest epoch known here (0 with static roles).", self.epoch() as f64),
            ("bazar_failover_elections_total", "counter", "Campaigns this catalog ran (etcd).", tally.elections as f64),
            (
                "bazar_failover_promotions_total",
                "counter",
                "Times this catalog became the primary (etcd).",
                tally.promotions as f64,
            ),
            (
                "bazar_failover_failovers_total",
                "counter",
                "Changes of primary seen by this catalog (etcd).",
                tally.failovers as f64,
            ),
            (
                "bazar_catalog_stale_epoch_refused_total",
                "counter",
                "Pushes, lease grants and log answers refused for an older epoch.",
                get(&c.stale_refused),
            ),
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
        let (sessions, leased) = self.near.counts();
        let near = [
            ("bazar_near_sessions", "gauge", "Primary: front-end near-cache sessions known.", sessions as f64),
            ("bazar_near_leases", "gauge", "Primary: of them, holding a cache lease now.", leased as f64),
            ("bazar_near_answers_total", "counter", "Primary: near-cache watches answered.", get(&c.near_answers)),
        ];
        for (name, kind, help, value) in near {
            push_metric(&mut out, name, kind, help, value);
        }
        if let Some(cache) = &self.cache {
            out.push_str(&cache.metrics_text());
        }
        out
    }
}
