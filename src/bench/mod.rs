//! `bazar-bench`: the load generator that reproduces the lab's experiments.
//!
//! - A **closed loop** runs N clients, each sending its next request when the previous one
//!   is answered. An **open loop** sends at a fixed rate whatever the answers do, and times
//!   each request from the moment it was *due*, so a stall shows as latency instead of
//!   hiding as fewer requests (coordinated omission).
//! - [`lab()`] starts its own stores (with and without memcached, `--url` for a running one)
//!   and answers the lab's three questions: response times with and without the cache, the
//!   cost of cache consistency, and behaviour while a replica fails and comes back.
//! - [`overload()`] starts a store and loads it 1x, 5x and 20x beyond its peak: goodput,
//!   latency, 503s, the replica's lease, failovers and recovery (issue 28).
//! - [`serve_limit`] serves the same info JSON from memory, on the same HTTP layer with the same
//!   worker count: the machine's limit, against which front-end figures are stated.
//!
//! Figures are measured, never asserted: the machine is shared and noisy.

use crate::client::Http;
use crate::http::{self, Response, ServerConfig};
use crate::metrics::Metrics;
use crate::shutdown::Shutdown;
use std::fmt::Write as _;
use std::io::Write as _;
use std::net::TcpListener;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use ureq::http::Method;

mod lab;
mod overload;
pub mod scale;

pub use lab::{lab, LabConfig};
pub use overload::{connect_from, overload, OverloadConfig};

/// A kind of request the bench sends.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    /// `GET /info/{id}`, ids 1 to 7 in turn.
    Info,
    /// `GET /search/{topic}`, both topics in turn.
    Search,
    /// `POST /purchase/{id}` (book 1..7 in turn; stock is raised first).
    Purchase,
    /// `PATCH /books/{id}` of a price, on the catalog primary.
    Write,
}

impl Kind {
    fn name(self) -> &'static str {
        match self {
            Kind::Info => "info",
            Kind::Search => "search",
            Kind::Purchase => "purchase",
            Kind::Write => "write",
        }
    }

    /// The i-th request of this kind: method, path, body.
    fn request(self, i: usize) -> (Method, String, Option<Vec<u8>>) {
        let id = 1 + i % 7;
        match self {
            Kind::Info => (Method::GET, format!("/info/{id}"), None),
            Kind::Search => {
                let topic = if i % 2 == 0 { "distributed%20systems" } else { "undergraduate%20school" };
                (Method::GET, format!("/search/{topic}"), None)
            }
            Kind::Purchase => (Method::POST, format!("/purchase/{id}"), None),
            Kind::Write => {
                let body = format!("{{\"price\": {}.{:02}}}", 10 + i % 50, i % 100);
                (Method::PATCH, format!("/books/{id}"), Some(body.into_bytes()))
            }
        }
    }
}

/// The token for the bench's admin requests (raising stock, the write load): the one the
/// services read, from `BAZAR_TOKEN` or the file `BAZAR_TOKEN_FILE` names (the binary
/// refuses a bad one at start), e.g. `BAZAR_TOKEN_FILE=run/token` for a `bazar-cluster`
/// store. None: the store has no token and admits the bench's loopback requests without one.
pub fn admin_token() -> Option<String> {
    crate::config::token(&crate::config::Env).ok().flatten()
}

/// How requests are sent.
#[derive(Clone, Copy, Debug)]
pub enum Load {
    /// N clients, each waits for its answer before the next request.
    Closed(usize),
    /// A fixed rate (requests per second), timed from when each was due.
    Open(f64),
}

/// One answered (or failed) request.
#[derive(Clone, Copy, Debug)]
pub struct Sample {
    /// When it was sent (or due), from the start of the run.
    pub at: Duration,
    /// How long until the answer (from when it was due, in an open loop).
    pub latency: Duration,
    /// HTTP status; 0 when no answer came.
    pub status: u16,
}

/// Throughput and latency of a set of samples.
#[derive(Clone, Debug, Default)]
pub struct Summary {
    /// Requests sent.
    pub count: usize,
    /// Answers other than 2xx (or none).
    pub errors: usize,
    /// Requests per second over the run.
    pub rps: f64,
    /// Mean latency.
    pub mean: Duration,
    /// Percentiles and maximum.
    pub p50: Duration,
    /// 90th percentile.
    pub p90: Duration,
    /// 99th percentile.
    pub p99: Duration,
    /// Slowest.
    pub max: Duration,
}

impl Summary {
    /// Mean, p50, p90, p99 and max, in milliseconds.
    pub fn millis(&self) -> [f64; 5] {
        [self.mean, self.p50, self.p90, self.p99, self.max].map(ms)
    }
}

/// Summarises samples taken over `elapsed`.
pub fn summarize(samples: &[Sample], elapsed: Duration) -> Summary {
    if samples.is_empty() {
        return Summary::default();
    }
    let mut lat: Vec<Duration> = samples.iter().map(|s| s.latency).collect();
    lat.sort_unstable();
    let pct = |q: f64| lat[((q * lat.len() as f64).ceil() as usize).clamp(1, lat.len()) - 1];
    Summary {
        count: samples.len(),
        errors: samples.iter().filter(|s| !(200..300).contains(&s.status)).count(),
        rps: samples.len() as f64 / elapsed.as_secs_f64().max(1e-9),
        mean: lat.iter().sum::<Duration>() / lat.len() as u32,
        p50: pct(0.50),
        p90: pct(0.90),
        p99: pct(0.99),
        max: *lat.last().expect("not empty"),
    }
}

/// Sends `kind` to `base` as `load` says for `duration`; `progress` names it on stderr.
pub fn run(base: &str, kind: Kind, load: Load, duration: Duration, progress: &str) -> (Vec<Sample>, Duration) {
    let workers = match load {
        Load::Closed(n) => n,
        Load::Open(rate) => ((rate / 50.0).ceil() as usize).clamp(8, 128),
    };
    // Only the write load calls an admin route; the public ones go without the token.
    let token = if kind == Kind::Write { admin_token() } else { None };
    let http = Http::new(Duration::from_secs(10), workers, token);
    let samples = Mutex::new(Vec::new());
    let next = AtomicUsize::new(0);
    let stop = AtomicBool::new(false);
    let start = Instant::now();
    std::thread::scope(|s| {
        for _ in 0..workers {
            s.spawn(|| {
                let mut mine = Vec::new();
                loop {
                    let i = next.fetch_add(1, Ordering::Relaxed);
                    let due = match load {
                        Load::Closed(_) => start.elapsed(),
                        Load::Open(rate) => Duration::from_secs_f64(i as f64 / rate),
                    };
                    if due >= duration || stop.load(Ordering::Relaxed) {
                        break;
                    }
                    if let Some(wait) = due.checked_sub(start.elapsed()) {
                        std::thread::sleep(wait);
                    }
                    let (method, path, body) = kind.request(i);
                    let status = http.call(method, base, &path, body).map_or(0, |a| a.status);
                    mine.push(Sample { at: due, latency: start.elapsed().saturating_sub(due), status });
                }
                samples.lock().unwrap_or_else(|e| e.into_inner()).extend(mine);
            });
        }
        while start.elapsed() < duration {
            let left = duration.saturating_sub(start.elapsed()).as_secs();
            eprint!("\r\x1b[K{progress}: {left} s left");
            let _ = std::io::stderr().flush();
            std::thread::sleep(Duration::from_millis(250).min(duration.saturating_sub(start.elapsed())));
        }
        stop.store(true, Ordering::Relaxed);
    });
    eprint!("\r\x1b[K");
    let mut samples = samples.into_inner().unwrap_or_else(|e| e.into_inner());
    samples.sort_by_key(|s| s.at);
    (samples, start.elapsed())
}

/// The bare limit server: answers every request with the info JSON of book 1 from memory,
/// on the same HTTP layer and worker count as the services. Returns its base URL.
pub fn start_limit_server(threads: usize, shutdown: &Shutdown) -> std::io::Result<String> {
    let listener = TcpListener::bind("127.0.0.1:0")?;
    let base = format!("http://{}", listener.local_addr()?);
    let stop = shutdown.clone();
    std::thread::spawn(move || serve_limit(listener, threads, stop));
    Ok(base)
}

/// Serves the limit server's answer on `listener` until `shutdown`.
pub fn serve_limit(listener: TcpListener, threads: usize, shutdown: Shutdown) -> std::io::Result<()> {
    let body = br#"{"id":1,"title":"How to get a good grade in DOS in 40 minutes a day","topic":"distributed systems","price":29.99,"quantity":100}"#.to_vec();
    let config = ServerConfig { threads, name: "bazar-bench limit", trust: http::Trust::LoopbackOnly };
    http::serve(listener, config, Arc::new(Metrics::new()), shutdown, move |_| {
        Response::raw_json(200, body.clone()).with_header("X-Cache", "hit")
    })
}

/// A directory removed on drop.
pub(crate) struct TempDir(pub(crate) std::path::PathBuf);

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// Resident memory of a process, in MB (Linux).
pub(crate) fn rss_mb(pid: u32) -> Option<f64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let kb: f64 = status.lines().find_map(|l| l.strip_prefix("VmRSS:"))?.split_whitespace().next()?.parse().ok()?;
    Some(kb / 1024.0)
}

/// A horizontal bar chart in SVG: one group per label, one bar per value, `names` in the
/// legend.
pub(crate) fn chart(title: &str, names: [&str; 3], groups: &[(String, [f64; 3])]) -> String {
    const COLOURS: [&str; 3] = ["#9ecae1", "#4292c6", "#08519c"];
    const LEFT: f64 = 330.0;
    const WIDTH: f64 = 420.0;
    const BAR: f64 = 14.0;
    const GAP: f64 = 18.0;
    const TOP: f64 = 60.0;
    let most = groups.iter().flat_map(|(_, v)| v.iter().copied()).fold(0.0_f64, f64::max).max(1e-3);
    let height = TOP + groups.len() as f64 * (3.0 * BAR + GAP) + 40.0;
    let esc = |t: &str| t.replace('&', "&amp;").replace('<', "&lt;").replace('>', "&gt;");
    let mut out = String::new();
    let _ = writeln!(
        out,
        r#"<svg xmlns="http://www.w3.org/2000/svg" width="{w}" height="{height}" font-family="sans-serif" font-size="12">"#,
        w = LEFT + WIDTH + 90.0
    );
    let _ = writeln!(out, r#"<rect width="100%" height="100%" fill="white"/>"#);
    let _ = writeln!(out, r#"<text x="10" y="22" font-size="15">{}</text>"#, esc(title));
    for (i, (name, colour)) in names.iter().zip(COLOURS).enumerate() {
        let x = 10.0 + i as f64 * 70.0;
        let _ = writeln!(out, r#"<rect x="{x}" y="34" width="12" height="12" fill="{colour}"/>"#);
        let _ = writeln!(out, r#"<text x="{}" y="45">{name}</text>"#, x + 16.0);
    }
    for (g, (label, values)) in groups.iter().enumerate() {
        let y0 = TOP + g as f64 * (3.0 * BAR + GAP);
        let _ =
            writeln!(out, r#"<text x="{}" y="{}" text-anchor="end">{}</text>"#, LEFT - 8.0, y0 + 1.8 * BAR, esc(label));
        for (i, (v, colour)) in values.iter().zip(COLOURS).enumerate() {
            let (y, w) = (y0 + i as f64 * BAR, (v / most * WIDTH).max(1.0));
            let _ =
                writeln!(out, r#"<rect x="{LEFT}" y="{y}" width="{w:.1}" height="{}" fill="{colour}"/>"#, BAR - 2.0);
            let _ = writeln!(out, r#"<text x="{:.1}" y="{}">{v:.2}</text>"#, LEFT + w + 4.0, y + BAR - 4.0);
        }
    }
    out.push_str("</svg>\n");
    out
}

pub(crate) fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chart_draws_a_bar_per_percentile_scaled_to_the_largest() {
        let svg = chart(
            "t <&>",
            ["p50", "p90", "p99"],
            &[("limit".into(), [1.0, 2.0, 4.0]), ("info with cache".into(), [0.5, 1.0, 2.0])],
        );
        assert!(svg.starts_with("<svg") && svg.trim_end().ends_with("</svg>"));
        assert!(svg.contains("t &lt;&amp;&gt;"));
        // 3 legend swatches, 6 bars, one background.
        assert_eq!(svg.matches("<rect").count(), 10);
        assert!(svg.contains(r#"width="420.0""#), "the largest value spans the width");
        assert!(svg.contains(r#"width="210.0""#));
    }

    #[test]
    fn percentiles() {
        let samples: Vec<Sample> = (1..=100)
            .map(|i| Sample {
                at: Duration::ZERO,
                latency: Duration::from_millis(i),
                status: if i % 10 == 0 { 409 } else { 200 },
            })
            .collect();
        let s = summarize(&samples, Duration::from_secs(2));
        assert_eq!((s.count, s.errors, s.rps), (100, 10, 50.0));
        assert_eq!(
            (s.p50, s.p90, s.p99, s.max),
            (
                Duration::from_millis(50),
                Duration::from_millis(90),
                Duration::from_millis(99),
                Duration::from_millis(100)
            )
        );
        assert_eq!(s.mean, Duration::from_micros(50_500));
        assert_eq!(summarize(&[], Duration::from_secs(1)).count, 0);
    }

    #[test]
    fn open_loop_times_from_when_due() {
        let stop = Shutdown::new();
        let base = start_limit_server(4, &stop).unwrap();
        let (samples, elapsed) = run(&base, Kind::Info, Load::Open(200.0), Duration::from_millis(500), "test");
        stop.trigger();
        assert!((90..=101).contains(&samples.len()), "{} samples at 200/s for 0.5 s", samples.len());
        assert!(samples.iter().all(|s| s.status == 200));
        assert!(samples.windows(2).all(|w| w[0].at <= w[1].at));
        assert!(elapsed >= Duration::from_millis(500));
    }
}
