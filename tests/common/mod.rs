//! The end-to-end harness: the real binaries on free loopback ports, in a temp dir.
//!
//! Every process is killed when its handle drops, so tests run in parallel and clean up
//! after a failure; a failing test prints the tail of each process's log.
#![allow(dead_code)]

pub mod files;
pub mod netns;
pub mod raw;

use bazar::client::{Answer, Http};
use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};
use ureq::http::Method;

/// How long a process may take to become healthy.
pub const START_DEADLINE: Duration = Duration::from_secs(20);

/// A free loopback port for a service (see `bazar::cluster::free_port`).
pub fn free_port() -> u16 {
    bazar::cluster::free_port().expect("a free port")
}

/// A fresh directory under the system temp dir, removed on drop.
pub struct TempDir(pub PathBuf);

impl TempDir {
    pub fn new(tag: &str) -> TempDir {
        static N: AtomicUsize = AtomicUsize::new(0);
        let dir = std::env::temp_dir().join(format!(
            "bazar-{tag}-{}-{}",
            std::process::id(),
            N.fetch_add(1, Ordering::SeqCst)
        ));
        let _ = fs::remove_dir_all(&dir);
        fs::create_dir_all(&dir).unwrap();
        TempDir(dir)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        if !std::thread::panicking() {
            let _ = fs::remove_dir_all(&self.0);
        }
    }
}

/// How to (re)start one process.
#[derive(Clone, Debug)]
pub struct Spec {
    pub name: String,
    pub program: PathBuf,
    pub args: Vec<String>,
    pub env: Vec<(String, String)>,
    pub log: PathBuf,
}

/// A running process, killed on drop.
pub struct Proc {
    pub spec: Spec,
    pub child: Option<Child>,
}

/// Starts a process from its spec, its output appended to its log file.
fn spawn(spec: &Spec) -> Child {
    let log = fs::OpenOptions::new().create(true).append(true).open(&spec.log).unwrap();
    let mut cmd = Command::new(&spec.program);
    cmd.args(&spec.args).stdin(Stdio::null()).stdout(log.try_clone().unwrap()).stderr(log);
    for var in [
        "BAZAR_LISTEN",
        "BAZAR_DATA_DIR",
        "BAZAR_ROLE",
        "BAZAR_PRIMARY",
        "BAZAR_REPLICAS",
        "BAZAR_MEMCACHED",
        "BAZAR_CATALOG",
        "BAZAR_ORDER",
        "BAZAR_PEERS",
        "BAZAR_TOKEN",
        "BAZAR_TOKEN_FILE",
        "BAZAR_INSECURE_OPEN",
        "BAZAR_THREADS",
        "BAZAR_LEASE_MS",
        "BAZAR_CHECKPOINT_ROWS",
        "BAZAR_NEAR_CACHE_MB",
        "BAZAR_TRACE_SAMPLE",
        "BAZAR_TRACE_SPANS",
        "BAZAR_OTLP_ENDPOINT",
    ] {
        cmd.env_remove(var);
    }
    cmd.env("BAZAR_LOG", "debug");
    for (k, v) in &spec.env {
        cmd.env(k, v);
    }
    cmd.spawn().unwrap_or_else(|e| panic!("cannot start {}: {e}", spec.name))
}

impl Proc {
    pub fn start(spec: Spec) -> Proc {
        let child = spawn(&spec);
        Proc { spec, child: Some(child) }
    }

    pub fn pid(&self) -> i32 {
        self.child.as_ref().expect("running").id() as i32
    }

    /// `kill -9` and reap.
    pub fn kill9(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// Sends a signal.
    pub fn signal(&self, sig: i32) {
        unsafe {
            libc::kill(self.pid(), sig);
        }
    }

    /// SIGTERM, then the exit code (within `within`).
    pub fn terminate(&mut self, within: Duration) -> Option<i32> {
        self.signal(libc::SIGTERM);
        let mut c = self.child.take()?;
        let deadline = Instant::now() + within;
        while Instant::now() < deadline {
            if let Ok(Some(status)) = c.try_wait() {
                return status.code();
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = c.kill();
        let _ = c.wait();
        None
    }

    /// Starts it again with the same settings (after `kill9` or `terminate`).
    pub fn restart(&mut self) {
        self.kill9();
        self.child = Some(spawn(&self.spec));
    }

    pub fn running(&mut self) -> bool {
        matches!(self.child.as_mut().map(|c| c.try_wait()), Some(Ok(None)))
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        self.kill9();
        if std::thread::panicking() {
            let text = fs::read_to_string(&self.spec.log).unwrap_or_default();
            let tail: Vec<&str> = text.lines().rev().take(40).collect();
            eprintln!("---- last lines of {} ----", self.spec.name);
            for line in tail.iter().rev() {
                eprintln!("{line}");
            }
        }
    }
}

/// A memcached on a free port, or None (with a note) when it is not installed.
/// Fails instead when `BAZAR_REQUIRE_MEMCACHED=1`.
pub fn memcached(dir: &Path) -> Option<Proc> {
    let program = installed("memcached", "memcached", "BAZAR_REQUIRE_MEMCACHED")?;
    let port = free_port();
    let spec = Spec {
        name: "memcached".into(),
        program,
        args: bazar::cluster::memcached_args(port),
        env: vec![],
        log: dir.join("memcached.log"),
    };
    let p = Proc::start(spec);
    let deadline = Instant::now() + START_DEADLINE;
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(Instant::now() < deadline, "memcached did not start");
        std::thread::sleep(Duration::from_millis(20));
    }
    Some(p)
}

/// Whether `program` is installed; prints a skip note (or panics where the variable
/// `require` is 1, as in CI) when it is not.
pub fn installed(program: &str, package: &str, require: &str) -> Option<PathBuf> {
    let found = bazar::cluster::find_program(program);
    if found.is_none() {
        if std::env::var(require).as_deref() == Ok("1") {
            panic!("{program} is required ({require}=1) but not installed");
        }
        // Straight to stderr, past the test harness's capture, so the skip is seen.
        let note = format!(
            "SKIPPED {}: {program} is not installed (apt-get install {package})\n",
            std::thread::current().name().unwrap_or("test")
        );
        let _ = std::io::Write::write_all(&mut std::io::stderr(), note.as_bytes());
    }
    found
}

/// A one-member etcd on free loopback ports with its data under `dir`, or None (with a
/// note) when it is not installed. Fails instead when `BAZAR_REQUIRE_ETCD=1`.
pub fn etcd(dir: &Path) -> Option<Proc> {
    let program = installed("etcd", "etcd-server", "BAZAR_REQUIRE_ETCD")?;
    let (port, peer_port) = (free_port(), free_port());
    let data = dir.join(format!("etcd-{port}"));
    let spec = Spec {
        name: "etcd".into(),
        program,
        args: bazar::cluster::etcd_args("127.0.0.1", port, peer_port, &data),
        env: vec![],
        log: dir.join(format!("etcd-{port}.log")),
    };
    let p = Proc::start(spec);
    let url = etcd_url(&p);
    let deadline = Instant::now() + START_DEADLINE;
    while !client().call(Method::GET, &url, "/health", None).is_ok_and(|a| a.status == 200) {
        assert!(Instant::now() < deadline, "etcd did not start");
        std::thread::sleep(Duration::from_millis(50));
    }
    Some(p)
}

/// `n` catalogs on free ports with data under `dir` (`catalog-0`, ...), electing their
/// primary through the etcd at `endpoint`, with `extra` settings for each.
pub fn etcd_catalogs(dir: &Path, n: usize, endpoint: &str, extra: &[(&str, String)]) -> Vec<Proc> {
    (0..n)
        .map(|i| {
            let name = format!("catalog-{i}");
            let mut env = vec![
                ("BAZAR_THREADS".to_string(), "16".to_string()),
                ("BAZAR_LISTEN".into(), format!("127.0.0.1:{}", free_port())),
                ("BAZAR_DATA_DIR".into(), dir.join(&name).display().to_string()),
                ("BAZAR_ETCD".into(), endpoint.to_string()),
            ];
            env.extend(extra.iter().map(|(k, v)| (k.to_string(), v.clone())));
            Proc::start(Spec {
                program: PathBuf::from(env!("CARGO_BIN_EXE_bazar-catalog")),
                args: vec![],
                env,
                log: dir.join(format!("{name}.log")),
                name,
            })
        })
        .collect()
}

/// The client URL of an etcd started by [`etcd`].
/// A store whose two catalogs elect their primary through etcd, with two order servers and
/// a front end (and memcached for catalogs and front end when `cached`). None (with a note)
/// when etcd, or memcached where asked for, is missing.
pub struct EtcdStore {
    pub frontend: Proc,
    pub orders: Vec<Proc>,
    pub catalogs: Vec<Proc>,
    pub memcached: Option<Proc>,
    pub etcd: Proc,
    pub dir: TempDir,
}

impl EtcdStore {
    pub fn start(tag: &str, cached: bool) -> Option<EtcdStore> {
        let dir = TempDir::new(tag);
        let etcd = etcd(&dir.0)?;
        let memcached = if cached { Some(memcached(&dir.0)?) } else { None };
        let cache: Vec<(&str, String)> = memcached.iter().map(|m| ("BAZAR_MEMCACHED", memcached_addr(m))).collect();
        let catalogs = etcd_catalogs(&dir.0, 2, &etcd_url(&etcd), &cache);
        let all = catalogs.iter().map(url).collect::<Vec<_>>().join(",");
        let ports = [free_port(), free_port(), free_port()];
        let u = |i: usize| format!("http://127.0.0.1:{}", ports[i]);
        let start = |name: &str, program: &str, i: usize, extra: Vec<(&str, String)>| {
            let mut env: Vec<(String, String)> = vec![
                ("BAZAR_THREADS".into(), "16".into()),
                ("BAZAR_LISTEN".into(), format!("127.0.0.1:{}", ports[i])),
                ("BAZAR_DATA_DIR".into(), dir.0.join(name).display().to_string()),
                ("BAZAR_CATALOG".into(), all.clone()),
            ];
            env.extend(extra.into_iter().map(|(k, v)| (k.to_string(), v)));
            let log = dir.0.join(format!("{name}.log"));
            Proc::start(Spec { name: name.into(), program: PathBuf::from(program), args: vec![], env, log })
        };
        let order = env!("CARGO_BIN_EXE_bazar-order");
        let orders = vec![
            start("order-1", order, 0, vec![("BAZAR_PEERS", u(1))]),
            start("order-2", order, 1, vec![("BAZAR_PEERS", u(0))]),
        ];
        let frontend = start(
            "frontend",
            env!("CARGO_BIN_EXE_bazar-frontend"),
            2,
            [vec![("BAZAR_ORDER", format!("{},{}", u(0), u(1)))], cache.clone()].concat(),
        );
        let store = EtcdStore { frontend, orders, catalogs, memcached, etcd, dir };
        for p in store.catalogs.iter().chain(&store.orders).chain([&store.frontend]) {
            wait_ready(&url(p));
        }
        let fe = store.fe();
        eventually(START_DEADLINE, "the front end to see every back end ready", || {
            let a = json(&get(&fe, "/ready"));
            a["catalogs_ready"] == 2 && a["orders_ready"] == 2
        });
        Some(store)
    }

    pub fn catalog(&self, i: usize) -> String {
        url(&self.catalogs[i])
    }

    pub fn fe(&self) -> String {
        url(&self.frontend)
    }

    /// The index of the catalog that says it is the primary now, if one.
    pub fn primary(&self) -> Option<usize> {
        (0..self.catalogs.len()).find(|&i| {
            client()
                .call(Method::GET, &self.catalog(i), "/health", None)
                .is_ok_and(|a| a.status == 200 && json(&a)["role"] == "primary")
        })
    }

    /// The index of the primary, waiting up to 30 s for one.
    pub fn wait_primary(&self) -> usize {
        let mut found = None;
        eventually(Duration::from_secs(30), "a primary", || {
            found = self.primary();
            found.is_some()
        });
        found.unwrap()
    }
}

pub fn etcd_url(p: &Proc) -> String {
    let i = p.spec.args.iter().position(|a| a == "--listen-client-urls").expect("etcd args");
    p.spec.args[i + 1].clone()
}

/// The memcached `host:port` a Proc started by [`memcached`] listens on.
pub fn memcached_addr(p: &Proc) -> String {
    format!("127.0.0.1:{}", p.spec.args[3])
}

/// The value of metric `name` (a line `name value`) in `base`'s `/metrics`.
pub fn metric(base: &str, name: &str) -> f64 {
    let text = String::from_utf8(get(base, "/metrics").body).unwrap();
    text.lines()
        .find_map(|l| l.strip_prefix(&format!("{name} ")))
        .unwrap_or_else(|| panic!("{name} in {text}"))
        .parse()
        .unwrap()
}

/// A client for tests: short timeouts, a pool per host.
pub fn client() -> Http {
    Http::new(Duration::from_secs(15), 64, None)
}

pub fn client_with_token(token: &str) -> Http {
    Http::new(Duration::from_secs(15), 64, Some(token.to_string()))
}

/// GET `base` + `path`, panicking on a transport error.
pub fn get(base: &str, path: &str) -> Answer {
    client().call(Method::GET, base, path, None).unwrap_or_else(|e| panic!("GET {base}{path}: {e}"))
}

pub fn call(method: &str, base: &str, path: &str, body: Option<&str>) -> Answer {
    let m = Method::from_bytes(method.as_bytes()).unwrap();
    client()
        .call(m, base, path, body.map(|b| b.as_bytes().to_vec()))
        .unwrap_or_else(|e| panic!("{method} {base}{path}: {e}"))
}

pub fn json(a: &Answer) -> serde_json::Value {
    serde_json::from_slice(&a.body).unwrap_or_else(|e| panic!("not JSON ({e}): {}", String::from_utf8_lossy(&a.body)))
}

/// Waits until `/health` answers 200 with `"status": "ok"`.
pub fn wait_healthy(base: &str) {
    let http = Http::new(Duration::from_secs(1), 1, None);
    let deadline = Instant::now() + START_DEADLINE;
    loop {
        if let Ok(a) = http.call(Method::GET, base, "/health", None) {
            if a.status == 200
                && serde_json::from_slice::<serde_json::Value>(&a.body).is_ok_and(|v| v["status"] == "ok")
            {
                return;
            }
        }
        assert!(Instant::now() < deadline, "{base} did not become healthy in {START_DEADLINE:?}");
        std::thread::sleep(Duration::from_millis(25));
    }
}

/// Waits until `/ready` answers 200: the service can do its job.
pub fn wait_ready(base: &str) {
    let http = Http::new(Duration::from_secs(1), 1, None);
    let deadline = Instant::now() + START_DEADLINE;
    while !http.call(Method::GET, base, "/ready", None).is_ok_and(|a| a.status == 200) {
        assert!(Instant::now() < deadline, "{base} did not become ready in {START_DEADLINE:?}");
        std::thread::sleep(Duration::from_millis(25));
    }
}

/// Polls `check` until it returns true or `within` passes.
pub fn eventually(within: Duration, what: &str, mut check: impl FnMut() -> bool) {
    let deadline = Instant::now() + within;
    while !check() {
        assert!(Instant::now() < deadline, "timed out waiting for: {what}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Options of a test store.
#[derive(Clone, Debug, Default)]
pub struct Opts {
    pub memcached: bool,
    pub token: Option<String>,
    pub lease_ms: Option<u64>,
    /// The front ends' near cache in MiB; None: off (the tests of memcached see its states).
    pub near_mb: Option<u64>,
    /// The catalogs' `BAZAR_CHECKPOINT_ROWS` (None: the default).
    pub checkpoint_rows: Option<usize>,
    /// More settings for every service (`BAZAR_OTLP_ENDPOINT`, say).
    pub env: Vec<(String, String)>,
}

/// A whole store: catalogs[0] primary, catalogs[1] replica, two order servers, a front end.
pub struct Store {
    pub frontend: Proc,
    pub orders: Vec<Proc>,
    pub catalogs: Vec<Proc>,
    pub memcached: Option<Proc>,
    pub dir: TempDir,
}

pub fn url(p: &Proc) -> String {
    let listen = &p.spec.env.iter().find(|(k, _)| k == "BAZAR_LISTEN").expect("has BAZAR_LISTEN").1;
    format!("http://{listen}")
}

impl Store {
    /// Starts a store; None when it needs memcached and memcached is not installed.
    pub fn start(opts: Opts) -> Option<Store> {
        let dir = TempDir::new("store");
        let memcached = if opts.memcached { Some(memcached(&dir.0)?) } else { None };
        let mc = memcached.as_ref().map(memcached_addr).unwrap_or_default();
        let ports: Vec<u16> = (0..5).map(|_| free_port()).collect();
        let u = |i: usize| format!("http://127.0.0.1:{}", ports[i]);
        let bin = |name: &str| {
            PathBuf::from(match name {
                "catalog" => env!("CARGO_BIN_EXE_bazar-catalog"),
                "order" => env!("CARGO_BIN_EXE_bazar-order"),
                _ => env!("CARGO_BIN_EXE_bazar-frontend"),
            })
        };
        let mut common: Vec<(String, String)> = vec![("BAZAR_THREADS".into(), "16".into())];
        if let Some(t) = &opts.token {
            common.push(("BAZAR_TOKEN".into(), t.clone()));
        }
        if let Some(l) = opts.lease_ms {
            common.push(("BAZAR_LEASE_MS".into(), l.to_string()));
        }
        if let Some(rows) = opts.checkpoint_rows {
            common.push(("BAZAR_CHECKPOINT_ROWS".into(), rows.to_string()));
        }
        common.extend(opts.env.iter().cloned());
        let spec = |name: &str, program: &str, i: usize, extra: Vec<(&str, String)>| {
            let mut env = common.clone();
            env.push(("BAZAR_LISTEN".into(), format!("127.0.0.1:{}", ports[i])));
            env.extend(extra.into_iter().map(|(k, v)| (k.to_string(), v)));
            Spec { name: name.into(), program: bin(program), args: vec![], env, log: dir.0.join(format!("{name}.log")) }
        };
        let data = |name: &str| dir.0.join(name).display().to_string();
        let primary = Proc::start(spec(
            "catalog-1",
            "catalog",
            0,
            vec![
                ("BAZAR_ROLE", "primary".into()),
                ("BAZAR_REPLICAS", u(1)),
                ("BAZAR_DATA_DIR", data("catalog-1")),
                ("BAZAR_MEMCACHED", mc.clone()),
            ],
        ));
        let replica = Proc::start(spec(
            "catalog-2",
            "catalog",
            1,
            vec![
                ("BAZAR_ROLE", "replica".into()),
                ("BAZAR_PRIMARY", u(0)),
                ("BAZAR_DATA_DIR", data("catalog-2")),
                ("BAZAR_MEMCACHED", mc.clone()),
            ],
        ));
        let catalogs = format!("{},{}", u(0), u(1));
        let order = |name: &str, i: usize, peer: usize| {
            Proc::start(spec(
                name,
                "order",
                i,
                vec![("BAZAR_CATALOG", catalogs.clone()), ("BAZAR_PEERS", u(peer)), ("BAZAR_DATA_DIR", data(name))],
            ))
        };
        let orders = vec![order("order-1", 2, 3), order("order-2", 3, 2)];
        let frontend = Proc::start(spec(
            "frontend",
            "frontend",
            4,
            vec![
                ("BAZAR_CATALOG", catalogs.clone()),
                ("BAZAR_ORDER", format!("{},{}", u(2), u(3))),
                ("BAZAR_MEMCACHED", mc),
                ("BAZAR_NEAR_CACHE_MB", opts.near_mb.unwrap_or(0).to_string()),
            ],
        ));
        let mut store = Store { frontend, orders, catalogs: vec![primary, replica], memcached, dir };
        for p in store.all() {
            wait_ready(&url(p));
        }
        // The front end probes its back ends twice a second: wait until it has seen them all
        // ready, so that the first requests are spread over all of them.
        let fe = store.fe();
        eventually(START_DEADLINE, "the front end to see every back end ready", || {
            let a = json(&get(&fe, "/ready"));
            a["catalogs_ready"] == 2 && a["orders_ready"] == 2
        });
        // memcached takes fills once the primary has set its generation key (within a
        // quarter second of the primary's first chance to write).
        if let Some(mc) = &store.memcached {
            let addr = memcached_addr(mc);
            eventually(START_DEADLINE, "the generation key in memcached", || has_key(&addr, bazar::cache::GEN_KEY));
        }
        // A service that could not bind its port exits; the answer was then another's.
        for p in store.catalogs.iter_mut().chain(store.orders.iter_mut()).chain([&mut store.frontend]) {
            assert!(p.running(), "{} exited at start (its log: {})", p.spec.name, p.spec.log.display());
        }
        Some(store)
    }

    pub fn all(&self) -> Vec<&Proc> {
        let mut v: Vec<&Proc> = self.catalogs.iter().collect();
        v.extend(self.orders.iter());
        v.push(&self.frontend);
        v
    }

    pub fn fe(&self) -> String {
        url(&self.frontend)
    }

    /// Another front end over the same back ends and memcached, started and ready (as users
    /// run several behind one address).
    pub fn another_frontend(&self, name: &str) -> Proc {
        let mut spec = self.frontend.spec.clone();
        spec.name = name.to_string();
        spec.log = self.dir.0.join(format!("{name}.log"));
        let listen = spec.env.iter_mut().find(|(k, _)| k == "BAZAR_LISTEN").expect("has BAZAR_LISTEN");
        listen.1 = format!("127.0.0.1:{}", free_port());
        let p = Proc::start(spec);
        let fe = url(&p);
        wait_ready(&fe);
        eventually(START_DEADLINE, "the new front end to see every back end ready", || {
            let a = json(&get(&fe, "/ready"));
            a["catalogs_ready"] == 2 && a["orders_ready"] == 2
        });
        p
    }

    pub fn primary(&self) -> String {
        url(&self.catalogs[0])
    }

    pub fn replica(&self) -> String {
        url(&self.catalogs[1])
    }

    pub fn order(&self, i: usize) -> String {
        url(&self.orders[i])
    }

    /// Sets a book's stock through the primary.
    pub fn set_stock(&self, id: u32, quantity: u32) {
        let a = call("PATCH", &self.primary(), &format!("/books/{id}"), Some(&format!("{{\"quantity\": {quantity}}}")));
        assert_eq!(a.status, 200, "{}", String::from_utf8_lossy(&a.body));
    }

    /// All books on one catalog.
    pub fn books(&self, base: &str) -> serde_json::Value {
        let a = get(base, "/books");
        assert_eq!(a.status, 200, "{base}: {}", String::from_utf8_lossy(&a.body));
        json(&a)
    }

    /// All orders on one order server: every page of `GET /orders`, following the `Link`s.
    pub fn orders_on(&self, base: &str) -> Vec<serde_json::Value> {
        let (mut orders, mut target) = (Vec::new(), "/orders?limit=1000".to_string());
        loop {
            let a = get(base, &target);
            assert_eq!(a.status, 200, "{base}{target}: {}", String::from_utf8_lossy(&a.body));
            orders.extend(json(&a).as_array().unwrap().iter().cloned());
            match a.link.as_deref().and_then(bazar::page::next_target) {
                Some(next) => target = next.to_string(),
                None => return orders,
            }
        }
    }
}

/// The cache issue's race: six readers of `/info/7` (spread over `fes`) while 150 writes are
/// acknowledged one after another, alternately through the primary and the replica.
/// Returns how many reads there were, how many had `X-Cache: <counted>`, and how many were
/// stale (showed a quantity older than a write acknowledged before they started).
pub fn race(s: &Store, fes: &[String], counted: &str) -> (usize, usize, usize) {
    use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
    s.set_stock(7, 0);
    let acked = AtomicU64::new(0);
    let done = AtomicBool::new(false);
    let (reads, hits, stale) = (AtomicUsize::new(0), AtomicUsize::new(0), AtomicUsize::new(0));
    std::thread::scope(|scope| {
        for reader in 0..6 {
            let (acked, done, reads, hits, stale) = (&acked, &done, &reads, &hits, &stale);
            let fe = &fes[reader % fes.len()];
            scope.spawn(move || {
                while !done.load(Ordering::SeqCst) {
                    let floor = acked.load(Ordering::SeqCst);
                    let a = get(fe, "/info/7");
                    assert_eq!(a.status, 200, "{}", String::from_utf8_lossy(&a.body));
                    let q = json(&a)["quantity"].as_u64().unwrap();
                    let state = a.cache.clone().unwrap_or_default();
                    reads.fetch_add(1, Ordering::Relaxed);
                    if state == counted {
                        hits.fetch_add(1, Ordering::Relaxed);
                    }
                    if q < floor {
                        stale.fetch_add(1, Ordering::SeqCst);
                        eprintln!("stale read on {fe}: quantity {q} after write {floor} was acknowledged ({state})");
                    }
                }
            });
        }
        for i in 1..=150u64 {
            let base = if i % 2 == 0 { s.primary() } else { s.replica() };
            let a = call("PATCH", &base, "/books/7", Some(&format!("{{\"quantity\": {i}}}")));
            assert_eq!(a.status, 200);
            acked.store(i, Ordering::SeqCst);
        }
        done.store(true, Ordering::SeqCst);
    });
    (reads.into_inner(), hits.into_inner(), stale.into_inner())
}

/// Whether memcached at `server` holds `key`.
pub fn has_key(server: &str, key: &str) -> bool {
    use std::io::{BufRead, BufReader, Write};
    let Ok(mut conn) = std::net::TcpStream::connect(server) else { return false };
    if conn.write_all(format!("mg {key}\r\n").as_bytes()).is_err() {
        return false;
    }
    let mut line = String::new();
    BufReader::new(conn).read_line(&mut line).is_ok() && line.starts_with("HD")
}

/// A store started the way `bazar-cluster` starts it (its launcher's code: `Running`, the
/// lab of `bazar::lab::start`), on free ports, with its lab API on a free loopback port and
/// its front end told where (`BAZAR_LAB`). memcached where installed; etcd when asked and
/// installed. Everything stops when it drops.
pub struct LabStore {
    pub lab: std::sync::Arc<bazar::lab::console::Lab>,
    pub layout: bazar::cluster::Layout,
    pub lab_url: String,
    pub shutdown: bazar::shutdown::Shutdown,
    pub dir: TempDir,
}

impl LabStore {
    pub fn start(token: Option<&str>, etcd: bool) -> LabStore {
        use bazar::cluster::{find_program, EtcdPlan, Layout, Running};
        let dir = TempDir::new("lab");
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("a port for the lab");
        let lab_url = format!("http://{}", listener.local_addr().unwrap());
        let bin_dir = Path::new(env!("CARGO_BIN_EXE_bazar-catalog")).parent().unwrap().to_path_buf();
        let mut env = vec![("BAZAR_THREADS".to_string(), "16".to_string()), ("BAZAR_LOG".into(), "warn".into())];
        if let Some(t) = token {
            env.push(("BAZAR_TOKEN".into(), t.to_string()));
        }
        let layout = Layout {
            dir: dir.0.clone(),
            bin_dir,
            frontend: free_port(),
            catalogs: [free_port(), free_port()],
            orders: [free_port(), free_port()],
            memcached: find_program("memcached").map(|_| free_port()),
            etcd: (etcd && find_program("etcd").is_some()).then(|| EtcdPlan::Start(free_port(), free_port())),
            env,
            quiet: true,
            lab: Some(lab_url.clone()),
        };
        let running = Running::start(&layout).expect("the store starts");
        let shutdown = bazar::shutdown::Shutdown::new();
        let lab =
            bazar::lab::start(Box::new(running), layout.lab_store(), listener, token.map(str::to_string), &shutdown);
        let fe = layout.frontend_url();
        wait_ready(&fe);
        eventually(START_DEADLINE, "the front end to see every back end ready", || {
            let a = json(&get(&fe, "/ready"));
            a["catalogs_ready"] == 2 && a["orders_ready"] == 2
        });
        LabStore { lab, layout, lab_url, shutdown, dir }
    }

    pub fn fe(&self) -> String {
        self.layout.frontend_url()
    }

    /// The verdict now, through the front end.
    pub fn verdict(&self) -> serde_json::Value {
        let a = get(&self.fe(), "/lab/verdict");
        assert_eq!(a.status, 200, "{}", String::from_utf8_lossy(&a.body));
        json(&a)
    }
}

impl Drop for LabStore {
    fn drop(&mut self) {
        self.shutdown.trigger();
        self.lab.stop_all();
    }
}
