//! The lab's three experiments (`bazar-bench lab`): response times with the near cache,
//! through memcached only and without cache against the machine's limit, the cost of cache
//! consistency (writes with a front end's near cache attached and with none), and a
//! replica failing and coming back under an open loop. Each starts its own store (or uses `--url`).

use super::{chart, ms, rss_mb, run, start_limit_server, summarize, Kind, Load, Sample, Summary, TempDir};
use crate::client::Http;
use crate::cluster::{self, Layout, Running};
use crate::shutdown::Shutdown;
use std::fmt::Write as _;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};
use ureq::http::Method;

/// Settings of a lab run.
#[derive(Clone, Debug)]
pub struct LabConfig {
    /// A running store's front end instead of starting stores.
    pub url: Option<String>,
    /// Its catalog primary (for writes), with `url`.
    pub primary: Option<String>,
    /// Closed-loop clients.
    pub clients: usize,
    /// Length of each measured run.
    pub duration: Duration,
    /// Worker threads of each service (and of the limit server).
    pub threads: usize,
    /// Where to write the raw figures, if anywhere.
    pub csv: Option<std::path::PathBuf>,
    /// Where to write the chart of query latencies (SVG), if anywhere.
    pub svg: Option<std::path::PathBuf>,
    /// Which experiments to run (1, 2, 3).
    pub experiments: Vec<u8>,
}

/// One line of the report, and its raw samples.
struct Row {
    experiment: &'static str,
    scenario: String,
    kind: &'static str,
    summary: Summary,
    samples: Vec<Sample>,
}

fn row(experiment: &'static str, scenario: &str, kind: Kind, (samples, elapsed): (Vec<Sample>, Duration)) -> Row {
    let summary = summarize(&samples, elapsed);
    Row { experiment, scenario: scenario.to_string(), kind: kind.name(), summary, samples }
}

/// A store the lab started (or the one it was pointed at).
struct Store {
    running: Option<Running>,
    frontend: String,
    primary: String,
    /// Every service's base URL by name, when the lab started it.
    services: Vec<(&'static str, String)>,
    _dir: Option<TempDir>,
}

/// The closed loops purchases are measured at, beside the limit (issue 25).
const PURCHASE_LOADS: [usize; 3] = [16, 64, 256];

/// Where a purchase's time goes: each hop's mean latency, from the services' own metrics
/// (`bazar_request_seconds` sums and counts of the routes a purchase crosses).
fn purchase_hops(store: &Store) -> String {
    let http = Http::new(Duration::from_secs(5), 1, None);
    let hops = [
        ("frontend", "/purchase/{id}", "front end: the whole purchase"),
        ("order-1", "/purchase/{id}", "order server: take the copy, log, share"),
        ("order-1", "/internal/purchase-batch", "order server: a front end's batch (take, log, share)"),
        ("catalog-2", "/books/{id}/purchase", "catalog replica: forward to the primary"),
        ("catalog-2", "/internal/purchases", "catalog replica: forward a batch of takes to the primary"),
        ("catalog-1", "/books/{id}/purchase", "catalog primary: group commit (fsync, push, invalidate)"),
        ("catalog-1", "/internal/purchases", "catalog primary: a batch of takes (group commit)"),
        ("catalog-2", "/internal/replicate", "replica: apply a pushed batch (fsync)"),
        ("order-2", "/internal/orders", "peer order server: take a push of orders (fsync)"),
    ];
    let mut out = String::from("| hop | mean (ms) | requests |\n|---|---|---|\n");
    for (service, route, what) in hops {
        let Some((_, base)) = store.services.iter().find(|(n, _)| *n == service) else { continue };
        let text = http
            .call(Method::GET, base, "/metrics", None)
            .map(|a| String::from_utf8_lossy(&a.body).into_owned())
            .unwrap_or_default();
        let series = |name: &str| -> f64 {
            let prefix = format!("{name}{{route=\"{route}\",status=\"200\"}} ");
            text.lines().find_map(|l| l.strip_prefix(&prefix)).and_then(|v| v.parse().ok()).unwrap_or(0.0)
        };
        let (sum, count) = (series("bazar_request_seconds_sum"), series("bazar_request_seconds_count"));
        if count > 0.0 {
            let _ = writeln!(out, "| {what} | {:.2} | {count} |", 1e3 * sum / count);
        }
    }
    out
}

/// Starts a store: with memcached or not, with the front end's near cache or not (its
/// watch of the primary is then the only front end attached to it), read leases of
/// `lease_ms` (default unless given).
fn start_store(cache: bool, near: bool, lease_ms: Option<u64>, threads: usize) -> std::io::Result<Store> {
    static N: AtomicUsize = AtomicUsize::new(0);
    let dir =
        std::env::temp_dir().join(format!("bazar-bench-{}-{}", std::process::id(), N.fetch_add(1, Ordering::SeqCst)));
    let _ = std::fs::remove_dir_all(&dir);
    let mut env =
        vec![("BAZAR_THREADS".to_string(), threads.to_string()), ("BAZAR_LOG".to_string(), "warn".to_string())];
    if let Some(l) = lease_ms {
        env.push(("BAZAR_LEASE_MS".into(), l.to_string()));
    }
    if !near {
        env.push(("BAZAR_NEAR_CACHE_MB".into(), "0".into()));
    }
    let layout = Layout {
        dir: dir.clone(),
        bin_dir: cluster::bin_dir(),
        frontend: cluster::free_port()?,
        catalogs: [cluster::free_port()?, cluster::free_port()?],
        orders: [cluster::free_port()?, cluster::free_port()?],
        memcached: if cache && cluster::find_program("memcached").is_some() {
            Some(cluster::free_port()?)
        } else {
            None
        },
        env,
        etcd: None,
        quiet: true,
        lab: None,
    };
    let running = Running::start(&layout)?;
    let frontend = layout.frontend_url();
    let primary = layout.catalog_urls()[0].clone();
    let [p, r] = layout.catalog_urls();
    let services = vec![
        ("frontend", frontend.clone()),
        ("catalog-1", p),
        ("catalog-2", r),
        ("order-1", format!("http://127.0.0.1:{}", layout.orders[0])),
        ("order-2", format!("http://127.0.0.1:{}", layout.orders[1])),
    ];
    if !cluster::wait_ready(&frontend, cluster::START_TIMEOUT, &Shutdown::new()) {
        return Err(std::io::Error::other("the store did not start"));
    }
    // The replica must hold its lease and both caches be cold: a short settling pause.
    std::thread::sleep(Duration::from_millis(500));
    Ok(Store { running: Some(running), frontend, primary, services, _dir: Some(TempDir(dir)) })
}

/// Raises every book's stock so that purchases never run out during a run.
fn restock(primary: &str) {
    let http = Http::new(Duration::from_secs(10), 1, super::admin_token());
    for id in 1..=7 {
        let _ =
            http.call(Method::PATCH, primary, &format!("/books/{id}"), Some(b"{\"quantity\": 4000000000}".to_vec()));
    }
}

/// Runs the three experiments and returns the Markdown report.
pub fn lab(cfg: &LabConfig) -> std::io::Result<String> {
    let d = cfg.duration;
    let mut rows: Vec<Row> = Vec::new();
    let mut notes = String::new();

    // The machine's limit, measured in the same run.
    let stop_limit = Shutdown::new();
    let limit_url = start_limit_server(cfg.threads, &stop_limit)?;
    rows.push(row(
        "limit",
        "bare server, info JSON from memory",
        Kind::Info,
        run(&limit_url, Kind::Info, Load::Closed(cfg.clients), d, "limit"),
    ));
    stop_limit.trigger();
    let limit_rps = rows[0].summary.rps;

    // 1. Response times with the near cache, through memcached only, and without cache.
    let mut memory = Vec::new();
    let scenarios = [
        (true, true, "with near cache"),
        (true, false, "with cache (memcached only, near off)"),
        (false, false, "without cache"),
    ];
    for (cache, near, scenario) in scenarios.into_iter().filter(|_| cfg.experiments.contains(&1)) {
        let mut store = match &cfg.url {
            Some(url) if cache && near => Store {
                running: None,
                frontend: url.clone(),
                primary: cfg.primary.clone().unwrap_or_default(),
                services: Vec::new(),
                _dir: None,
            },
            Some(_) => continue,
            None => start_store(cache, near, None, cfg.threads)?,
        };
        if !store.primary.is_empty() {
            restock(&store.primary);
        }
        for kind in [Kind::Info, Kind::Search, Kind::Purchase] {
            if kind == Kind::Purchase && store.primary.is_empty() {
                continue;
            }
            let label = format!("1. {} {scenario}", kind.name());
            rows.push(row(
                "1. response time",
                scenario,
                kind,
                run(&store.frontend, kind, Load::Closed(cfg.clients), d, &label),
            ));
        }
        // Purchases as the load grows (issue 25): batched end to end, they should grow with
        // it until the CPU is the limit, rather than stop at one rate and only wait longer.
        if near && !store.primary.is_empty() {
            for clients in PURCHASE_LOADS {
                rows.push(row(
                    "1. purchases by load",
                    &format!("{scenario}, {clients} clients"),
                    Kind::Purchase,
                    run(&store.frontend, Kind::Purchase, Load::Closed(clients), d, &format!("1. purchases {clients}")),
                ));
            }
        }
        if cache && !near && !store.services.is_empty() {
            let _ = writeln!(notes, "Where a purchase's time goes (experiment 1, with cache; mean per hop, from the services' metrics; hops nest):\n\n{}", purchase_hops(&store));
        }
        if let Some(running) = store.running.as_mut() {
            for name in ["frontend", "catalog-1", "catalog-2", "order-1", "order-2"] {
                if let Some(mb) = running.pid(name).and_then(rss_mb) {
                    memory.push(format!("{name} {scenario}: {mb:.1} MB"));
                }
            }
        }
    }
    if !memory.is_empty() {
        let _ = writeln!(notes, "Resident memory after the runs of experiment 1: {}.", memory.join(", "));
    }

    // 2. The cost of cache consistency: writes with invalidation, and the read after one.
    if cfg.url.is_none() && cfg.experiments.contains(&2) {
        for (cache, near, lease, scenario) in [
            (true, true, None, "with cache and near cache (a front end attached)"),
            (true, false, None, "with cache, near cache off (no front end attached)"),
            (false, false, None, "without cache"),
            (false, false, Some(0), "without cache, read leases off"),
        ] {
            let store = start_store(cache, near, lease, cfg.threads)?;
            // Writes open (a primary waits a lease after it starts) before they are timed.
            restock(&store.primary);
            rows.push(row(
                "2. consistency",
                scenario,
                Kind::Write,
                run(&store.primary, Kind::Write, Load::Closed(1), d / 2, &format!("2. writes {scenario}")),
            ));
            if cache && !near {
                let (miss, hit) = first_read_after_invalidation(&store, d / 2);
                rows.push(Row {
                    experiment: "2. consistency",
                    scenario: "first read after an invalidation (miss)".into(),
                    kind: "info",
                    summary: summarize(&miss, d / 2),
                    samples: miss,
                });
                rows.push(Row {
                    experiment: "2. consistency",
                    scenario: "the read after it (hit)".into(),
                    kind: "info",
                    summary: summarize(&hit, d / 2),
                    samples: hit,
                });
            }
        }
    }

    // 3. A replica fails and comes back, under an open loop.
    let mut timeline = String::new();
    if cfg.url.is_none() && cfg.experiments.contains(&3) {
        let mut store = start_store(true, true, None, cfg.threads)?;
        restock(&store.primary);
        let total = Duration::from_secs(15).max(d * 3);
        let (fe, running) = (store.frontend.clone(), store.running.as_mut().expect("started"));
        let (reads, buys) = std::thread::scope(|s| {
            let reads = s.spawn(|| run(&fe, Kind::Info, Load::Open(400.0), total, "3. replica failure"));
            let buys = s.spawn(|| run(&fe, Kind::Purchase, Load::Open(40.0), total, "3. replica failure"));
            std::thread::sleep(total / 3);
            running.kill("catalog-2");
            std::thread::sleep(total / 3);
            let _ = running.restart("catalog-2");
            (reads.join().expect("reads"), buys.join().expect("purchases"))
        });
        let _ = writeln!(timeline, "| second | info p50 (ms) | info p99 (ms) | info errors | purchase p99 (ms) | purchase errors |\n|---|---|---|---|---|---|");
        for sec in 0..total.as_secs() {
            let window = |samples: &[Sample]| -> Vec<Sample> {
                samples.iter().filter(|x| x.at.as_secs() == sec).copied().collect()
            };
            let (r, b) = (
                summarize(&window(&reads.0), Duration::from_secs(1)),
                summarize(&window(&buys.0), Duration::from_secs(1)),
            );
            let mark = if sec == total.as_secs() / 3 {
                " (replica killed)"
            } else if sec == 2 * total.as_secs() / 3 {
                " (replica restarted)"
            } else {
                ""
            };
            let _ = writeln!(
                timeline,
                "| {sec}{mark} | {:.2} | {:.2} | {} | {:.2} | {} |",
                ms(r.p50),
                ms(r.p99),
                r.errors,
                ms(b.p99),
                b.errors
            );
        }
        rows.push(row("3. replica failure", "open loop, 400 info/s", Kind::Info, reads));
        rows.push(row("3. replica failure", "open loop, 40 purchases/s", Kind::Purchase, buys));
    }

    if let Some(path) = &cfg.csv {
        let mut out = String::from("experiment,scenario,kind,at_ms,latency_us,status\n");
        for r in &rows {
            for s in &r.samples {
                let _ = writeln!(
                    out,
                    "{},{},{},{:.3},{},{}",
                    r.experiment,
                    r.scenario,
                    r.kind,
                    s.at.as_secs_f64() * 1e3,
                    s.latency.as_micros(),
                    s.status
                );
            }
        }
        std::fs::write(path, out)?;
    }
    if let Some(path) = &cfg.svg {
        let bars: Vec<(String, [f64; 3])> = rows
            .iter()
            .filter(|r| r.experiment == "limit" || (r.experiment.starts_with("1.") && r.kind != "purchase"))
            .map(|r| {
                let m = r.summary.millis();
                let label =
                    if r.experiment == "limit" { "limit server".into() } else { format!("{} {}", r.kind, r.scenario) };
                (label, [m[1], m[2], m[3]])
            })
            .collect();
        std::fs::write(
            path,
            chart("Query latency: p50, p90, p99 (ms), with and without the cache", ["p50", "p90", "p99"], &bars),
        )?;
    }
    Ok(report(&rows, limit_rps, cfg, &notes, &timeline))
}

/// Experiment 2's reads: write, read (a miss, refilled), read again (a hit), repeated.
fn first_read_after_invalidation(store: &Store, duration: Duration) -> (Vec<Sample>, Vec<Sample>) {
    let http = Http::new(Duration::from_secs(10), 1, None);
    let (mut miss, mut hit) = (Vec::new(), Vec::new());
    let start = Instant::now();
    let mut i = 0;
    while start.elapsed() < duration {
        let (method, path, body) = Kind::Write.request(i);
        let _ = http.call(method, &store.primary, &path, body);
        let id = 1 + i % 7;
        for (list, want) in [(&mut miss, "miss"), (&mut hit, "hit")] {
            let at = start.elapsed();
            let t = Instant::now();
            let a = http.call(Method::GET, &store.frontend, &format!("/info/{id}"), None);
            // An answer not from where expected (a hit where a miss was due) counts as an error.
            let status = match &a {
                Ok(a) if a.cache.as_deref() == Some(want) => a.status,
                _ => 0,
            };
            list.push(Sample { at, latency: t.elapsed(), status });
        }
        i += 1;
    }
    (miss, hit)
}

fn report(rows: &[Row], limit_rps: f64, cfg: &LabConfig, notes: &str, timeline: &str) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "Closed loops of {} clients, {} s each; services and limit server with {} workers.\n",
        cfg.clients,
        cfg.duration.as_secs(),
        cfg.threads
    );
    let _ = writeln!(out, "| experiment | scenario | kind | req/s | × limit | mean (ms) | p50 (ms) | p90 (ms) | p99 (ms) | max (ms) | non-2xx |");
    let _ = writeln!(out, "|---|---|---|---|---|---|---|---|---|---|---|");
    for r in rows {
        let s = &r.summary;
        let m = s.millis();
        let ratio = if r.experiment.starts_with("1.") || r.experiment == "limit" {
            format!("{:.2}", s.rps / limit_rps)
        } else {
            "".into()
        };
        let _ = writeln!(
            out,
            "| {} | {} | {} | {:.0} | {} | {:.2} | {:.2} | {:.2} | {:.2} | {:.2} | {} |",
            r.experiment, r.scenario, r.kind, s.rps, ratio, m[0], m[1], m[2], m[3], m[4], s.errors
        );
    }
    if !timeline.is_empty() {
        let _ = writeln!(out, "\nExperiment 3, second by second:\n\n{timeline}");
    }
    if !notes.is_empty() {
        let _ = writeln!(out, "\n{notes}");
    }
    out
}
