//! `bazar-bench scale`: how each cost grows with the size of the data.
//!
//! For each store size (books × orders) it builds a store in a temporary directory: a
//! catalog file of that many books loaded with `bazar-catalog import`, an order log of that
//! many orders on each order server, then the whole store (memcached if installed). It
//! measures the import, each service's start-up, a new replica joining (its data directory
//! emptied: a whole copy), and with one client, one request at a time: PATCH on the
//! primary, purchases, a topic's first page and one book through the front end with the
//! caches (hits: the near cache's) and through a second front end without either, and the
//! first page of `GET /orders`; then every process's resident memory and the files' sizes.
//!
//! Figures are measured, never asserted.

use super::{chart, ms, rss_mb, summarize, Sample, Summary, TempDir};
use crate::client::Http;
use crate::cluster::{self, Layout, Running};
use crate::shutdown::Shutdown;
use std::fmt::Write as _;
use std::io::{BufWriter, Write as _};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};
use ureq::http::Method;

/// Topics of a generated catalog (fewer when it has fewer books).
const TOPICS: u32 = 1000;
/// The stores measured unless `--stores` says otherwise: books × orders.
pub const DEFAULT_STORES: &str = "7x0,10000x0,100000x0,1000000x0,7x100000,7x1000000";
/// Longest wait for a service to start or a replica to join.
const START_LIMIT: Duration = Duration::from_secs(120);

/// Settings of a scale run.
#[derive(Clone, Debug)]
pub struct ScaleConfig {
    /// Stores to build: (books, orders). 7 books is the built-in catalog (no import).
    pub stores: Vec<(u32, u64)>,
    /// Requests per latency figure.
    pub samples: usize,
    /// Where to write the chart, if anywhere.
    pub svg: Option<PathBuf>,
}

/// Parses `7x0,1000000x0,...`.
pub fn parse_stores(text: &str) -> Result<Vec<(u32, u64)>, String> {
    text.split(',')
        .map(|s| {
            let (b, o) = s.trim().split_once('x').ok_or_else(|| format!("{s:?} is not BOOKSxORDERS"))?;
            match (b.parse::<u32>(), o.parse::<u64>()) {
                (Ok(b), Ok(o)) if b >= 7 => Ok((b, o)),
                _ => Err(format!("{s:?}: books (at least 7) and orders are whole numbers")),
            }
        })
        .collect()
}

/// What one store showed.
struct Measured {
    books: u32,
    orders: u64,
    import: Option<Duration>,
    catalog_start: Duration,
    order_start: Duration,
    replica_join: Duration,
    /// (name, summary): PATCH, purchase, searches, infos, orders page.
    latencies: Vec<(&'static str, Summary)>,
    rss: Vec<(&'static str, Option<f64>)>,
    files: Vec<(&'static str, u64)>,
}

/// Runs every store of `cfg` and returns the Markdown report.
pub fn scale(cfg: &ScaleConfig) -> std::io::Result<String> {
    let mut runs = Vec::new();
    for &(books, orders) in &cfg.stores {
        eprintln!("scale: {books} books, {orders} orders");
        runs.push(measure(books, orders, cfg.samples)?);
    }
    if let Some(path) = &cfg.svg {
        let groups: Vec<(String, [f64; 3])> = runs
            .iter()
            .map(|m| {
                let p50 = |name: &str| m.latencies.iter().find(|(n, _)| *n == name).map_or(0.0, |(_, s)| ms(s.p50));
                (label(m), [p50("PATCH"), p50("purchase"), p50("search, first page (no cache)")])
            })
            .collect();
        let names = ["PATCH", "purchase", "search page"];
        std::fs::write(path, chart("p50 latency (ms) by store size", names, &groups))?;
    }
    Ok(report(&runs, cfg.samples))
}

fn label(m: &Measured) -> String {
    format!("{} books, {} orders", m.books, m.orders)
}

/// A front end without cache beside the store's own, stopped on drop.
struct Uncached(Child);

impl Drop for Uncached {
    fn drop(&mut self) {
        cluster::terminate(&self.0);
        let _ = self.0.wait();
    }
}

fn measure(books: u32, orders: u64, samples: usize) -> std::io::Result<Measured> {
    let dir = TempDir(std::env::temp_dir().join(format!("bazar-scale-{}-{books}-{orders}", std::process::id())));
    let _ = std::fs::remove_dir_all(&dir.0);
    std::fs::create_dir_all(&dir.0)?;
    let bin = cluster::bin_dir();
    let import = if books > 7 {
        let file = dir.0.join("catalog.csv");
        write_catalog(&file, books)?;
        let started = Instant::now();
        let out = Command::new(bin.join("bazar-catalog"))
            .arg("import")
            .arg(&file)
            .env("BAZAR_DATA_DIR", dir.0.join("catalog-1"))
            .output()?;
        if !out.status.success() {
            return Err(std::io::Error::other(format!("import: {}", String::from_utf8_lossy(&out.stderr))));
        }
        std::fs::remove_file(&file)?;
        Some(started.elapsed())
    } else {
        None
    };
    if orders > 0 {
        for server in ["order-1", "order-2"] {
            write_orders(&dir.0.join(server), orders)?;
        }
    }
    let layout = Layout {
        dir: dir.0.clone(),
        bin_dir: bin.clone(),
        frontend: cluster::free_port()?,
        catalogs: [cluster::free_port()?, cluster::free_port()?],
        orders: [cluster::free_port()?, cluster::free_port()?],
        memcached: cluster::find_program("memcached").map(|_| cluster::free_port()).transpose()?,
        env: vec![("BAZAR_LOG".into(), "warn".into())],
        etcd: None,
        quiet: true,
        lab: None,
    };
    let [primary, replica] = layout.catalog_urls();
    let order = format!("http://127.0.0.1:{}", layout.orders[0]);
    let frontend = layout.frontend_url();
    let started = Instant::now();
    let mut running = Running::start(&layout)?;
    let catalog_start = until(&primary, "/ready", started)?;
    let order_start = until(&order, "/health", started)?;
    until(&frontend, "/ready", started)?;

    // A new replica: its directory emptied, it copies the whole catalog.
    running.kill("catalog-2");
    let _ = std::fs::remove_dir_all(dir.0.join("catalog-2"));
    let joining = Instant::now();
    running.restart("catalog-2")?;
    let replica_join = until(&replica, "/ready", joining)?;

    let uncached_port = cluster::free_port()?;
    let uncached_url = format!("http://127.0.0.1:{uncached_port}");
    let _uncached = Uncached(
        Command::new(bin.join("bazar-frontend"))
            .env("BAZAR_LISTEN", format!("127.0.0.1:{uncached_port}"))
            .env("BAZAR_CATALOG", format!("{primary},{replica}"))
            .env("BAZAR_ORDER", &order)
            // No near cache either: its reads all go to a catalog.
            .env("BAZAR_NEAR_CACHE_MB", "0")
            .env("BAZAR_LOG", "warn")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()?,
    );
    until(&uncached_url, "/ready", Instant::now())?;
    if books == 7 {
        restock(&primary)?;
    }

    let http = Http::new(Duration::from_secs(30), 1, None);
    let mut rng = Lcg(u64::from(books) ^ orders);
    let topic = if books == 7 { "distributed%20systems".to_string() } else { "topic-7".to_string() };
    let mut time = |base: &str, method: Method, path: &dyn Fn(u32) -> String, body: Option<&str>| {
        let list: Vec<Sample> = (0..samples)
            .map(|_| {
                let id = 1 + rng.below(books);
                let t = Instant::now();
                let status = http
                    .call(method.clone(), base, &path(id), body.map(|b| b.as_bytes().to_vec()))
                    .map_or(0, |a| a.status);
                Sample { at: Duration::ZERO, latency: t.elapsed(), status }
            })
            .collect();
        summarize(&list, Duration::from_secs(1))
    };
    let book = |id: u32| format!("/books/{id}");
    let buy = |id: u32| format!("/purchase/{id}");
    let search = |_: u32| format!("/search/{topic}");
    let info_one = |_: u32| "/info/1".to_string();
    let info = |id: u32| format!("/info/{id}");
    let orders_page = |_: u32| "/orders?limit=100".to_string();
    let latencies = vec![
        ("PATCH", time(&primary, Method::PATCH, &book, Some("{\"price\": 12.5}"))),
        ("purchase", time(&frontend, Method::POST, &buy, None)),
        ("search, first page (cached)", time(&frontend, Method::GET, &search, None)),
        ("search, first page (no cache)", time(&uncached_url, Method::GET, &search, None)),
        ("info (cached, one book)", time(&frontend, Method::GET, &info_one, None)),
        ("info (no cache, any book)", time(&uncached_url, Method::GET, &info, None)),
        ("GET /orders, first page", time(&order, Method::GET, &orders_page, None)),
    ];
    let mut rss = Vec::new();
    for name in ["catalog-1", "catalog-2", "order-1", "frontend", "memcached"] {
        rss.push((name, running.pid(name).and_then(rss_mb)));
    }
    let size = |p: &str| std::fs::metadata(dir.0.join(p)).map_or(0, |m| m.len());
    let files = vec![
        ("catalog.log", size("catalog-1/catalog.log")),
        ("books.csv", size("catalog-1/books.csv")),
        ("orders.csv", size("order-1/orders.csv")),
    ];
    running.stop();
    Ok(Measured { books, orders, import, catalog_start, order_start, replica_join, latencies, rss, files })
}

/// Waits until `base` + `path` answers 200; how long since `from`.
fn until(base: &str, path: &str, from: Instant) -> std::io::Result<Duration> {
    let http = Http::new(Duration::from_secs(1), 1, None);
    let stop = Shutdown::new();
    while from.elapsed() < START_LIMIT {
        if http.call(Method::GET, base, path, None).is_ok_and(|a| a.status == 200) {
            return Ok(from.elapsed());
        }
        stop.sleep(Duration::from_millis(10));
    }
    Err(std::io::Error::other(format!("{base}{path} not 200 after {START_LIMIT:?}")))
}

/// Raises the built-in books' stock so that purchases never run out.
fn restock(primary: &str) -> std::io::Result<()> {
    let http = Http::new(Duration::from_secs(10), 1, super::admin_token());
    for id in 1..=7 {
        let body = b"{\"quantity\": 4000000000}".to_vec();
        http.call(Method::PATCH, primary, &format!("/books/{id}"), Some(body)).map_err(std::io::Error::other)?;
    }
    Ok(())
}

/// A catalog file of `books` books in up to [`TOPICS`] topics, plenty of stock.
fn write_catalog(path: &Path, books: u32) -> std::io::Result<()> {
    let mut w = BufWriter::new(std::fs::File::create(path)?);
    writeln!(w, "id,title,topic,price,quantity")?;
    let topics = TOPICS.min(books);
    for id in 1..=books {
        writeln!(
            w,
            "{id},Book {id}: a title of about forty chars,topic-{},{}.{:02},4000000000",
            id % topics,
            5 + id % 90,
            id % 100
        )?;
    }
    w.flush()
}

/// An order log of `orders` orders, oldest first, as an order server writes it.
fn write_orders(dir: &Path, orders: u64) -> std::io::Result<()> {
    std::fs::create_dir_all(dir)?;
    let mut w = BufWriter::new(std::fs::File::create(dir.join("orders.csv"))?);
    writeln!(w, "order_id,id,title,price,at,crc")?;
    let start_ms = 1_795_000_000_000;
    for i in 0..orders {
        let at = crate::ids::timestamp(start_ms + i);
        let fields =
            [format!("0a1b2c3d4e5f-{}", i + 1), (1 + i % 7).to_string(), format!("Book {}: a title", 1 + i % 7)];
        let crc = crate::storage::checksum([
            fields[0].as_bytes(),
            fields[1].as_bytes(),
            fields[2].as_bytes(),
            b"12.50",
            at.as_bytes(),
        ]);
        let [order_id, id, title] = fields;
        writeln!(w, "{order_id},{id},{title},12.50,{at},{}", crate::storage::checksum_text(crc))?;
    }
    // On disk before anything is measured, so that the kernel writing back 70 MB of it does
    // not share the disk with the fsyncs being measured.
    w.into_inner().map_err(|e| e.into_error())?.sync_all()
}

/// A small deterministic generator (the same ids in every run of a size).
struct Lcg(u64);

impl Lcg {
    fn below(&mut self, n: u32) -> u32 {
        self.0 = self.0.wrapping_mul(6_364_136_223_846_793_005).wrapping_add(1_442_695_040_888_963_407);
        ((self.0 >> 33) % u64::from(n)) as u32
    }
}

fn report(runs: &[Measured], samples: usize) -> String {
    let mut out = String::new();
    let _ =
        writeln!(out, "One client, one request at a time, {samples} requests per latency figure (ms: p50 / p99).\n");
    let _ = write!(out, "| figure |");
    for m in runs {
        let _ = write!(out, " {} |", label(m));
    }
    let _ = write!(out, "\n|---|");
    for _ in runs {
        let _ = write!(out, "---|");
    }
    out.push('\n');
    let secs = |d: Duration| format!("{:.2} s", d.as_secs_f64());
    let mut line = |name: &str, cell: &dyn Fn(&Measured) -> String| {
        let _ = write!(out, "| {name} |");
        for m in runs {
            let _ = write!(out, " {} |", cell(m));
        }
        out.push('\n');
    };
    line("import", &|m| m.import.map_or("– (built in)".into(), secs));
    line("catalog start-up to /ready", &|m| secs(m.catalog_start));
    line("order server start-up", &|m| secs(m.order_start));
    line("new replica to /ready (whole copy)", &|m| secs(m.replica_join));
    for (i, (name, _)) in runs.first().map_or(&[][..], |m| &m.latencies[..]).iter().enumerate() {
        line(name, &|m| {
            let s = &m.latencies[i].1;
            let errors = if s.errors > 0 { format!(" ({} errors)", s.errors) } else { String::new() };
            format!("{:.2} / {:.2}{errors}", ms(s.p50), ms(s.p99))
        });
    }
    for (i, (name, _)) in runs.first().map_or(&[][..], |m| &m.rss[..]).iter().enumerate() {
        line(&format!("{name} resident memory"), &|m| m.rss[i].1.map_or("–".into(), |v| format!("{v:.1} MB")));
    }
    for (i, (name, _)) in runs.first().map_or(&[][..], |m| &m.files[..]).iter().enumerate() {
        line(name, &|m| format!("{:.1} MB", m.files[i].1 as f64 / 1e6));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The bench's order log is what an order server writes: it loads as it is (not
    /// rewritten, which would add to the start-up time measured).
    #[test]
    fn the_order_log_is_as_an_order_server_writes_it() {
        let dir = std::env::temp_dir().join(format!("bazar-bench-orders-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        write_orders(&dir, 50).unwrap();
        let before = std::fs::read(dir.join("orders.csv")).unwrap();
        let log = crate::order::log::OrderLog::open(&dir).unwrap();
        assert_eq!(log.len(), 50);
        assert_eq!(log.get("0a1b2c3d4e5f-50").unwrap().unwrap().title, "Book 1: a title");
        assert_eq!(std::fs::read(dir.join("orders.csv")).unwrap(), before);
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn stores_parse() {
        assert_eq!(parse_stores("7x0, 1000000x100").unwrap(), [(7, 0), (1_000_000, 100)]);
        for bad in ["7", "6x0", "ax1", "7x-1", ""] {
            assert!(parse_stores(bad).is_err(), "{bad}");
        }
        assert_eq!(parse_stores(DEFAULT_STORES).unwrap().len(), 6);
    }
}
