//! Request metrics in the Prometheus text format.
//!
//! The HTTP layer records every answer by route label and status with its latency; the
//! span counters of [`crate::trace`] (recorded, exported, dropped) follow in every
//! service's answer; each service appends its own counters (cache, replication, orders)
//! when it renders `/metrics`.

use std::collections::BTreeMap;
use std::fmt::Write;
use std::sync::Mutex;
use std::time::Duration;

/// Upper bounds (seconds) of the latency histogram's buckets.
const BUCKETS: [f64; 12] = [0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5];

#[derive(Default, Clone)]
struct Series {
    count: u64,
    sum: f64,
    buckets: [u64; BUCKETS.len()],
}

/// Shards of the series: each thread records into one, so that thousands of connection
/// threads do not queue on one lock (nor on a thread preempted while holding it).
const SHARDS: usize = 16;

/// The series of one shard, per (route, status).
type Shard = BTreeMap<(&'static str, u16), Series>;

/// Counts and latencies of the requests a server answered.
#[derive(Default)]
pub struct Metrics {
    /// Per (route, status): the series, in shards added up when read. A shard's lock is
    /// held only to add one sample or to copy it out.
    shards: [Mutex<Shard>; SHARDS],
}

/// This thread's shard.
fn shard_index() -> usize {
    use std::sync::atomic::{AtomicUsize, Ordering};
    static NEXT: AtomicUsize = AtomicUsize::new(0);
    thread_local! {
        static INDEX: usize = NEXT.fetch_add(1, Ordering::Relaxed) % SHARDS;
    }
    INDEX.with(|i| *i)
}

impl Metrics {
    /// Empty metrics.
    pub fn new() -> Metrics {
        Metrics::default()
    }

    /// Every shard added up.
    fn series(&self) -> Shard {
        let mut all = Shard::new();
        for shard in &self.shards {
            for (key, s) in shard.lock().unwrap_or_else(|e| e.into_inner()).iter() {
                let sum = all.entry(*key).or_default();
                sum.count += s.count;
                sum.sum += s.sum;
                for (a, b) in sum.buckets.iter_mut().zip(s.buckets) {
                    *a += b;
                }
            }
        }
        all
    }

    /// Records one answered request.
    pub fn record(&self, route: &'static str, status: u16, latency: Duration) {
        let secs = latency.as_secs_f64();
        let mut series = self.shards[shard_index()].lock().unwrap_or_else(|e| e.into_inner());
        let s = series.entry((route, status)).or_default();
        s.count += 1;
        s.sum += secs;
        for (bucket, bound) in s.buckets.iter_mut().zip(BUCKETS) {
            if secs <= bound {
                *bucket += 1;
            }
        }
    }

    /// The number of requests answered on `route` with `status`.
    pub fn count(&self, route: &'static str, status: u16) -> u64 {
        self.shards
            .iter()
            .map(|shard| shard.lock().unwrap_or_else(|e| e.into_inner()).get(&(route, status)).map_or(0, |s| s.count))
            .sum()
    }

    /// The Prometheus text of the request metrics and the span counters, followed by
    /// `extra` (already formatted).
    pub fn render(&self, extra: &str) -> String {
        let series = self.series();
        let mut out = String::new();
        out.push_str("# HELP bazar_requests_total Requests answered, by route and status.\n# TYPE bazar_requests_total counter\n");
        for ((route, status), s) in &series {
            let _ = writeln!(out, "bazar_requests_total{{route=\"{route}\",status=\"{status}\"}} {}", s.count);
        }
        out.push_str("# HELP bazar_request_seconds Request latency, by route and status.\n# TYPE bazar_request_seconds histogram\n");
        for ((route, status), s) in &series {
            let labels = format!("route=\"{route}\",status=\"{status}\"");
            for (bound, n) in BUCKETS.iter().zip(s.buckets) {
                let _ = writeln!(out, "bazar_request_seconds_bucket{{{labels},le=\"{bound}\"}} {n}");
            }
            let _ = writeln!(out, "bazar_request_seconds_bucket{{{labels},le=\"+Inf\"}} {}", s.count);
            let _ = writeln!(out, "bazar_request_seconds_sum{{{labels}}} {}", s.sum);
            let _ = writeln!(out, "bazar_request_seconds_count{{{labels}}} {}", s.count);
        }
        let spans = crate::trace::counts();
        push_metric(&mut out, "bazar_spans_recorded_total", "counter", "Spans recorded.", spans.recorded);
        push_metric(
            &mut out,
            "bazar_spans_exported_total",
            "counter",
            "Spans the OTLP collector took.",
            spans.exported,
        );
        let dropped = "Spans not exported (queue full, collector slow, failing or gone).";
        push_metric(&mut out, "bazar_spans_dropped_total", "counter", dropped, spans.dropped);
        out.push_str(extra);
        out
    }
}

/// Appends one counter or gauge with its help line to `out`.
pub fn push_metric(out: &mut String, name: &str, kind: &str, help: &str, value: impl std::fmt::Display) {
    let _ = write!(out, "# HELP {name} {help}\n# TYPE {name} {kind}\n{name} {value}\n");
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_counts_and_buckets() {
        let m = Metrics::new();
        m.record("/info/{id}", 200, Duration::from_micros(300));
        m.record("/info/{id}", 200, Duration::from_millis(30));
        m.record("/info/{id}", 404, Duration::from_millis(1));
        let text = m.render("");
        assert!(text.contains("bazar_requests_total{route=\"/info/{id}\",status=\"200\"} 2"));
        assert!(text.contains("bazar_request_seconds_bucket{route=\"/info/{id}\",status=\"200\",le=\"0.0005\"} 1"));
        assert!(text.contains("bazar_request_seconds_bucket{route=\"/info/{id}\",status=\"200\",le=\"0.05\"} 2"));
        assert_eq!(m.count("/info/{id}", 404), 1);
        // Samples recorded on other threads (other shards) add up.
        std::thread::scope(|s| {
            for _ in 0..SHARDS + 3 {
                s.spawn(|| m.record("/info/{id}", 404, Duration::from_millis(1)));
            }
        });
        assert_eq!(m.count("/info/{id}", 404), SHARDS as u64 + 4);
        let text = m.render("");
        assert!(text.contains(&format!("bazar_requests_total{{route=\"/info/{{id}}\",status=\"404\"}} {}", SHARDS + 4)));
        assert!(text.contains("bazar_request_seconds_bucket{route=\"/info/{id}\",status=\"200\",le=\"0.05\"} 2"));
    }
}
