//! `bazar-bench overload`: public load far beyond what the store can answer, and what it
//! costs the store (issue 28, part 2).
//!
//! It starts a whole store as `bazar-cluster` does (etcd and memcached when installed, a
//! token), then:
//! 1. finds the *peak*: closed loops of 8 to 128 users, each on its own keep-alive
//!    connection, half reading `GET /info/{id}` from the front end and half `GET
//!    /books/{id}` straight from the catalog replica; goodput is 200 answers per second,
//!    the peak the most any level reached, and *1x* the fewest users that reach 95% of it
//!    (more only queue);
//! 2. runs 1x, 5x and 20x that many users (20x for `--duration`, a minute by default, with
//!    the lab's probe checking every acknowledged write and order meanwhile), and reports
//!    goodput against the peak, the latency of the answers, the 503s, the replica's lease
//!    (sampled every 100 ms: a lapse is a sample at 0 after one above it), the catalogs'
//!    failovers, and how long after the load stops a new client is answered 200 by both.
//!
//! A user behaves as a well-behaved client: a 503 with `Retry-After` makes it wait that long
//! and send the same request again (a refused request is not lost, it is late; its wait
//! shows in "p99 with retries"). Users come from many loopback addresses (32 each, 127.1.x.y),
//! as many clients would, so the per-address cap does not refuse them. The users are driven
//! by one thread per core over epoll, as wrk drives its connections: a thread per user made
//! the generator's own cost grow with the users (2,000 threads on the store's two cores),
//! so that what fell under overload was partly the generator, not the store. The monitor reads
//! `/metrics` with the store's token as a peer (an operator's scraper), so its samples are not
//! shed. Figures are measured, never asserted.

use crate::client::Http;
use crate::cluster::{find_program, free_port, EtcdPlan, Layout, Running};
use crate::http::poll::Epoll;
use std::fmt::Write as _;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{Ipv4Addr, SocketAddr, TcpStream};
use std::os::fd::{AsRawFd, FromRawFd};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// Users of the last run, whatever the peak: thousands of connections.
const THOUSANDS: usize = 2000;
/// Users per source address.
const USERS_PER_ADDRESS: usize = 32;
/// Levels of users tried to find the peak.
const PEAK_LEVELS: [usize; 5] = [8, 16, 32, 64, 128];
/// How long one user waits for an answer.
const ANSWER_TIMEOUT: Duration = Duration::from_secs(10);

/// What to run.
#[derive(Clone, Debug)]
pub struct OverloadConfig {
    /// Length of the 20x run.
    pub duration: Duration,
    /// Length of each level of the peak search and of the 1x and 5x runs.
    pub step: Duration,
    /// Cores kept for the generator alone (0: the generator and the store share them all).
    pub apart: usize,
}

/// What one run measured.
#[derive(Clone, Debug, Default)]
struct Run {
    seconds: f64,
    ok: u64,
    shed: u64,
    errors: u64,
    /// Latencies of 200 answers (one attempt), µs, sorted.
    answer: Vec<u32>,
    /// From a request's first attempt to its 200, retries after 503 included, µs, sorted.
    total: Vec<u32>,
    /// Lapses of the replica's lease seen by the monitor, and its samples.
    lapses: u64,
    samples: u64,
    /// Counters' growth over the run: failovers on both catalogs, renewals refused or
    /// failed on the replica, writes that waited for a lost lease on the primary.
    failovers: f64,
    renewal_failures: f64,
    lease_waits: f64,
    /// Time after the load stopped until both targets answered a new client 200.
    recovery: Option<Duration>,
}

impl Run {
    fn goodput(&self) -> f64 {
        self.ok as f64 / self.seconds.max(1e-9)
    }
}

fn pct(sorted: &[u32], q: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let i = ((q * sorted.len() as f64).ceil() as usize).clamp(1, sorted.len()) - 1;
    f64::from(sorted[i]) / 1e3
}

/// Where the users send their requests.
struct Targets {
    frontend: SocketAddr,
    replica: SocketAddr,
}

/// Runs the experiment and returns its Markdown report.
pub fn overload(cfg: &OverloadConfig) -> Result<String, String> {
    let dir = std::env::temp_dir().join(format!("bazar-overload-{}", std::process::id()));
    let _cleanup = super::TempDir(dir.clone());
    let port = || free_port().map_err(|e| format!("no free port: {e}"));
    let hex = || crate::ids::random_hex().map_err(|e| e.to_string());
    let token = format!("{}{}", hex()?, hex()?);
    let layout = Layout {
        dir: dir.clone(),
        bin_dir: crate::cluster::bin_dir(),
        frontend: port()?,
        catalogs: [port()?, port()?],
        orders: [port()?, port()?],
        memcached: find_program("memcached").map(|_| port()).transpose()?,
        etcd: match find_program("etcd") {
            Some(_) => Some(EtcdPlan::Start(port()?, port()?)),
            None => None,
        },
        env: vec![("BAZAR_LOG".into(), "warn".into()), ("BAZAR_TOKEN".into(), token.clone())],
        quiet: true,
        lab: None,
    };
    let split = Split::of(cfg.apart)?;
    if let Some(split) = &split {
        // The store's processes inherit the mask of the thread that starts them.
        pin(&split.store).map_err(|e| format!("cannot keep the store to cores {:?}: {e}", split.store))?;
    }
    let started = Running::start(&layout).map_err(|e| format!("cannot start the store: {e}"));
    if let Some(split) = &split {
        // Every thread of the generator (drivers, monitor, probe) is spawned from this one.
        pin(&split.generator).map_err(|e| format!("cannot keep the generator to cores {:?}: {e}", split.generator))?;
    }
    let mut running = started?;
    let result = measure(cfg, &layout, &token, split.as_ref());
    running.stop();
    result
}

/// The cores of the generator and of the store, when they run apart: in the world the load
/// comes from other machines, so a generator whose own cost grows with its connections
/// should not take it from the store it measures.
struct Split {
    store: Vec<usize>,
    generator: Vec<usize>,
}

impl Split {
    /// `apart` cores (the last of those this process may use) for the generator, the rest
    /// for the store; `None` for 0.
    fn of(apart: usize) -> Result<Option<Split>, String> {
        if apart == 0 {
            return Ok(None);
        }
        let cpus = allowed_cpus().map_err(|e| format!("cannot read this process's cores: {e}"))?;
        if cpus.len() <= apart {
            return Err(format!(
                "--apart {apart}: this process may use {} cores, the store needs one of its own",
                cpus.len()
            ));
        }
        let (store, generator) = cpus.split_at(cpus.len() - apart);
        Ok(Some(Split { store: store.to_vec(), generator: generator.to_vec() }))
    }
}

/// The cores the calling thread may run on.
fn allowed_cpus() -> std::io::Result<Vec<usize>> {
    // SAFETY: a zeroed cpu_set_t is a valid empty set, and the kernel writes at most its size.
    let mut set: libc::cpu_set_t = unsafe { std::mem::zeroed() };
    if unsafe { libc::sched_getaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &mut set) } != 0 {
        return Err(std::io::Error::last_os_error());
    }
    // SAFETY: CPU_ISSET reads the set within its size (CPU_SETSIZE).
    Ok((0..libc::CPU_SETSIZE as usize).filter(|&c| unsafe { libc::CPU_ISSET(c, &set) }).collect())
}

/// Keeps the calling thread (and what it spawns or starts from now on) to `cpus`.
fn pin(cpus: &[usize]) -> std::io::Result<()> {
    // SAFETY: as above; CPU_SET writes within the set for cores below CPU_SETSIZE, which
    // `allowed_cpus` only returns.
    let mut set: libc::cpu_set_t = unsafe { std::mem::zeroed() };
    for &c in cpus {
        unsafe { libc::CPU_SET(c, &mut set) };
    }
    if unsafe { libc::sched_setaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &set) } != 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(())
}

fn measure(cfg: &OverloadConfig, layout: &Layout, token: &str, split: Option<&Split>) -> Result<String, String> {
    let fe = layout.frontend_url();
    let monitor = Http::new(Duration::from_secs(2), 4, Some(token.to_string())).peer();
    let shutdown = crate::shutdown::Shutdown::new();
    if !crate::cluster::wait_ready(&fe, Duration::from_secs(60), &shutdown) {
        return Err("the store did not get ready within 60 s".into());
    }
    // Both catalogs ready, and which one is the replica (with etcd either may lead).
    let deadline = Instant::now() + Duration::from_secs(60);
    let catalogs = layout.catalog_urls();
    let replica = loop {
        let roles: Vec<String> = catalogs
            .iter()
            .map(|c| {
                monitor.get::<serde_json::Value>(c, "/ready").ok().and_then(|v| v["role"].as_str().map(String::from))
            })
            .map(Option::unwrap_or_default)
            .collect();
        let ready = monitor.get::<serde_json::Value>(&fe, "/ready").ok();
        let all = ready.is_some_and(|r| r["catalogs_ready"] == 2 && r["orders_ready"] == 2);
        if let (true, Some(i)) = (all, roles.iter().position(|r| r == "replica")) {
            break catalogs[i].clone();
        }
        if Instant::now() > deadline {
            return Err(format!("no catalog replica got ready within 60 s (roles {roles:?})"));
        }
        std::thread::sleep(Duration::from_millis(200));
    };
    let primary = catalogs.iter().find(|c| **c != replica).cloned().unwrap_or_default();
    let addr = |url: &str| -> Result<SocketAddr, String> {
        url.trim_start_matches("http://").parse().map_err(|e| format!("{url}: {e}"))
    };
    let targets = Targets { frontend: addr(&fe)?, replica: addr(&replica)? };
    let mut out = String::new();
    let _ = writeln!(
        out,
        "## Overload (issue 28)\n\nA store as `bazar-cluster` starts it ({}, {}), half the users on the front end's \
         `GET /info/{{id}}`, half on the replica's `GET /books/{{id}}`, each on a keep-alive connection; a 503 makes a \
         user wait its `Retry-After` and send again. {}\n",
        if layout.etcd.is_some() { "etcd" } else { "static roles" },
        if layout.memcached.is_some() { "memcached" } else { "no memcached" },
        match split {
            None => "The generator shares every core with the store.".to_string(),
            Some(s) => format!("The store runs on cores {:?}, the generator on {:?}.", s.store, s.generator),
        },
    );
    let _ =
        writeln!(out, "### Peak\n\n| users | goodput (200/s) | p50 ms | p99 ms | 503s |\n|---:|---:|---:|---:|---:|");
    let mut levels = Vec::new();
    for users in PEAK_LEVELS {
        let run = load(&targets, users, cfg.step, &monitor, &replica, &primary, None);
        let _ = writeln!(
            out,
            "| {users} | {:.0} | {:.2} | {:.2} | {} |",
            run.goodput(),
            pct(&run.answer, 0.5),
            pct(&run.answer, 0.99),
            run.shed
        );
        levels.push((users, run.goodput()));
        std::thread::sleep(Duration::from_secs(1));
    }
    let peak = levels.iter().map(|l| l.1).fold(0.0, f64::max);
    let base = levels.iter().find(|l| l.1 >= 0.95 * peak).map_or(PEAK_LEVELS[0], |l| l.0);
    let _ = writeln!(out, "\nPeak {peak:.0} answers/s; 1x = {base} users (the fewest within 5% of the peak).\n");
    let _ = writeln!(
        out,
        "### Overload\n\n| load | users | seconds | goodput (200/s) | of peak | p50 ms | p99 ms | p99 with retries ms \
         | 503s | other errors | lease lapses (samples) | renewals failed | writes waiting for a lease | failovers | \
         answered again after |\n|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"
    );
    let mut verdict = None;
    // 1x, 5x and 20x the users of the peak; then thousands of connections whatever the peak.
    let loads = [
        ("1x".to_string(), base, cfg.step * 3, false),
        ("5x".to_string(), base * 5, cfg.step * 3, false),
        ("20x".to_string(), base * 20, cfg.duration, true),
        (format!("{:.0}x", THOUSANDS as f64 / base as f64), THOUSANDS, cfg.duration, false),
    ];
    for (label, users, seconds, probed) in loads {
        let probe = probed.then_some((&fe, token));
        let run = load(&targets, users, seconds, &monitor, &replica, &primary, probe.map(|p| (p, &mut verdict)));
        let _ = writeln!(
            out,
            "| {label} | {users} | {:.0} | {:.0} | {:.0}% | {:.2} | {:.2} | {:.2} | {} | {} | {} ({}) | {} | {} | {} | {} |",
            run.seconds,
            run.goodput(),
            100.0 * run.goodput() / peak.max(1e-9),
            pct(&run.answer, 0.5),
            pct(&run.answer, 0.99),
            pct(&run.total, 0.99),
            run.shed,
            run.errors,
            run.lapses,
            run.samples,
            run.renewal_failures,
            run.lease_waits,
            run.failovers,
            run.recovery.map_or("not within 10 s".to_string(), |d| format!("{:.0} ms", d.as_secs_f64() * 1e3)),
        );
        std::thread::sleep(Duration::from_secs(2));
    }
    match verdict {
        Some(Ok(v)) => {
            let v: crate::lab::probe::Verdict = v;
            let s = &v.since_start;
            let _ = writeln!(
                out,
                "\nThe probe during 20x (the lab's: reads and writes of its books through the front end and at each \
                 catalog, purchases): {} operations checked, linearizable: {}, acknowledged writes lost: {}, orders \
                 missing: {}, copies taken {} / orders logged {}.",
                s.ops, s.linearizable, s.acked_writes_lost, v.orders_missing, v.copies_taken, v.orders_logged
            );
        }
        Some(Err(e)) => {
            let _ = writeln!(out, "\nThe probe during 20x could not run: {e}");
        }
        None => {}
    }
    Ok(out)
}

/// One closed loop of `users` for `seconds`, watched; with `probe`, the lab's probe runs
/// alongside and leaves its verdict there.
#[allow(clippy::type_complexity)]
fn load(
    targets: &Targets,
    users: usize,
    seconds: Duration,
    monitor: &Http,
    replica: &str,
    primary: &str,
    probe: Option<((&String, &str), &mut Option<Result<crate::lab::probe::Verdict, String>>)>,
) -> Run {
    let stop = AtomicBool::new(false);
    let totals = Mutex::new(Run::default());
    let (lapses, samples) = (AtomicU64::new(0), AtomicU64::new(0));
    let before = counters(monitor, replica, primary);
    let start = Instant::now();
    std::thread::scope(|s| {
        // The users, driven by one thread per core: each thread holds its share of the
        // connections in an epoll set (see `drive`), so the generator's cost grows with
        // the requests it sends, not with the users it stands for.
        let drivers = std::thread::available_parallelism().map_or(2, |n| n.get());
        for d in 0..drivers {
            let mine: Vec<User> = (d..users).step_by(drivers).map(|u| User::new(u, targets)).collect();
            let (stop, totals) = (&stop, &totals);
            s.spawn(move || {
                let mine = drive(mine, stop);
                let mut t = totals.lock().unwrap_or_else(|e| e.into_inner());
                t.ok += mine.ok;
                t.shed += mine.shed;
                t.errors += mine.errors;
                t.answer.extend(mine.answer);
                t.total.extend(mine.total);
            });
        }
        s.spawn(|| {
            let mut had = false;
            while !stop.load(Ordering::Relaxed) {
                let left = monitor
                    .call(ureq::http::Method::GET, replica, "/metrics", None)
                    .ok()
                    .filter(|a| a.status == 200)
                    .and_then(|a| metric(&String::from_utf8_lossy(&a.body), "bazar_lease_seconds_left"));
                if let Some(left) = left {
                    samples.fetch_add(1, Ordering::Relaxed);
                    if left <= 0.0 && had {
                        lapses.fetch_add(1, Ordering::Relaxed);
                    }
                    had = left > 0.0;
                }
                std::thread::sleep(Duration::from_millis(100));
            }
        });
        let probe = probe.map(|((fe, token), slot)| {
            let secs = seconds.as_secs().saturating_sub(5).max(5);
            let handle =
                s.spawn(move || crate::lab::probe::check(fe, Vec::new(), Vec::new(), Some(token.to_string()), secs));
            (handle, slot)
        });
        while start.elapsed() < seconds {
            std::thread::sleep(Duration::from_millis(100));
        }
        stop.store(true, Ordering::Relaxed);
        if let Some((h, slot)) = probe {
            *slot = Some(h.join().unwrap_or_else(|_| Err("the probe panicked".into())));
        }
    });
    let elapsed = start.elapsed();
    let stopped = Instant::now();
    let mut run = totals.into_inner().unwrap_or_else(|e| e.into_inner());
    run.recovery = recovered(targets, stopped);
    run.seconds = elapsed.as_secs_f64();
    run.answer.sort_unstable();
    run.total.sort_unstable();
    run.lapses = lapses.into_inner();
    run.samples = samples.into_inner();
    let after = counters(monitor, replica, primary);
    run.failovers = after[0] - before[0];
    run.renewal_failures = after[1] - before[1];
    run.lease_waits = after[2] - before[2];
    run
}

/// Failovers seen by both catalogs, the replica's failed renewals, the primary's writes
/// that waited for a lease.
fn counters(monitor: &Http, replica: &str, primary: &str) -> [f64; 3] {
    let read = |url: &str| {
        monitor
            .call(ureq::http::Method::GET, url, "/metrics", None)
            .map(|a| String::from_utf8_lossy(&a.body).into_owned())
            .unwrap_or_default()
    };
    let (r, p) = (read(replica), read(primary));
    let m = |text: &str, name: &str| metric(text, name).unwrap_or(0.0);
    [
        m(&r, "bazar_failover_failovers_total") + m(&p, "bazar_failover_failovers_total"),
        m(&r, "bazar_lease_renewal_failures_total"),
        m(&p, "bazar_lease_waits_total"),
    ]
}

/// The value of an unlabelled metric in Prometheus text.
fn metric(text: &str, name: &str) -> Option<f64> {
    text.lines().find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.trim().parse().ok())
}

/// Time from `since` until a new client gets 200 from both targets (within 10 s).
fn recovered(targets: &Targets, since: Instant) -> Option<Duration> {
    let src = Ipv4Addr::new(127, 2, 0, 1);
    let mut answered = [false, false];
    while since.elapsed() < Duration::from_secs(10) {
        for (i, (target, path)) in
            [(targets.frontend, "/info/1"), (targets.replica, "/books/1")].into_iter().enumerate()
        {
            if !answered[i] {
                answered[i] = connect(src, target)
                    .and_then(|mut c| ask(&mut c, &format!("GET {path} HTTP/1.1\r\nHost: bench\r\n\r\n")))
                    .is_ok_and(|a| a.status == 200);
            }
        }
        if answered == [true, true] {
            return Some(since.elapsed());
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    None
}

/// What one user did.
#[derive(Default)]
struct Mine {
    ok: u64,
    shed: u64,
    errors: u64,
    answer: Vec<u32>,
    total: Vec<u32>,
}

/// One user: requests one after another on a keep-alive connection from its own source
/// address; after a 503 it waits `Retry-After` and sends the same request again.
struct User {
    target: SocketAddr,
    src: Ipv4Addr,
    path: &'static str,
    /// Which book the next request asks for.
    i: usize,
    conn: Option<TcpStream>,
    /// In the driver's epoll set (added once per connection).
    watched: bool,
    /// What has come of the answer awaited.
    got: Vec<u8>,
    /// When the request awaited was sent, and when it was first sent (before any 503).
    sent: Option<Instant>,
    first: Option<Instant>,
    /// Asleep until then (after a 503, or a failed connect).
    until: Option<Instant>,
}

impl User {
    fn new(u: usize, targets: &Targets) -> User {
        let a = u / USERS_PER_ADDRESS;
        let (target, path) = if u % 2 == 0 { (targets.frontend, "/info/") } else { (targets.replica, "/books/") };
        User {
            target,
            src: Ipv4Addr::new(127, 1, (a / 250) as u8, (a % 250 + 1) as u8),
            path,
            i: u,
            conn: None,
            watched: false,
            got: Vec::new(),
            sent: None,
            first: None,
            until: None,
        }
    }

    /// Sends the next request (connecting first if need be) and arms the wait for its
    /// answer; a failure counts an error and sleeps 100 ms.
    fn send(&mut self, epoll: &Epoll, token: u64, mine: &mut Mine) {
        let now = Instant::now();
        if self.conn.is_none() {
            match connect_from(self.src, self.target) {
                Ok(c) => {
                    let _ = c.set_nodelay(true);
                    let _ = c.set_write_timeout(Some(ANSWER_TIMEOUT));
                    self.conn = Some(c);
                    self.watched = false;
                }
                Err(_) => return self.fail(mine, now),
            }
        }
        let c = self.conn.as_ref().expect("connected above");
        if !self.watched {
            // Watched while open (level-triggered): only an awaited answer makes it readable.
            if epoll.watch(c.as_raw_fd(), token).is_err() {
                return self.fail(mine, now);
            }
            self.watched = true;
        }
        let request = format!("GET {}{} HTTP/1.1\r\nHost: bench\r\n\r\n", self.path, 1 + self.i % 7);
        if (&*c).write_all(request.as_bytes()).is_err() {
            return self.fail(mine, now);
        }
        self.got.clear();
        self.sent = Some(now);
        self.first.get_or_insert(now);
    }

    fn fail(&mut self, mine: &mut Mine, now: Instant) {
        mine.errors += 1;
        self.conn = None;
        self.sent = None;
        self.first = None;
        self.until = Some(now + Duration::from_millis(100));
    }

    /// Reads what has come; with the whole answer, counts it and sends again (or sleeps
    /// out a 503's `Retry-After`).
    fn readable(&mut self, epoll: &Epoll, token: u64, mine: &mut Mine) {
        let (Some(c), Some(sent)) = (self.conn.as_ref(), self.sent) else { return };
        // One read per readiness: the set is level-triggered, so what is left (or comes
        // later) is reported again, and a whole answer costs no read that finds nothing.
        let mut buf = [0u8; 4096];
        // SAFETY: `buf` is valid for its length and the descriptor is open.
        let n = unsafe { libc::recv(c.as_raw_fd(), buf.as_mut_ptr().cast(), buf.len(), libc::MSG_DONTWAIT) };
        match n {
            0 => return self.fail(mine, Instant::now()),
            n if n > 0 => self.got.extend_from_slice(&buf[..n as usize]),
            _ if std::io::Error::last_os_error().kind() == std::io::ErrorKind::WouldBlock => return,
            _ => return self.fail(mine, Instant::now()),
        }
        let answer = match parse_answer(&self.got) {
            Ok(Some(a)) => a,
            // Not all of it yet: wait for more.
            Ok(None) => return,
            Err(()) => return self.fail(mine, Instant::now()),
        };
        let now = Instant::now();
        let micros = |d: Duration| u32::try_from(d.as_micros()).unwrap_or(u32::MAX);
        self.sent = None;
        if answer.close {
            self.conn = None;
        }
        if answer.status == 200 {
            mine.ok += 1;
            mine.answer.push(micros(now - sent));
            mine.total.push(micros(now - self.first.take().unwrap_or(sent)));
            self.i += 1;
            self.send(epoll, token, mine);
        } else if answer.status == 503 {
            mine.shed += 1;
            self.until = Some(now + Duration::from_secs(answer.retry_after.unwrap_or(1)));
        } else {
            self.fail(mine, now);
        }
    }
}

/// Drives `users` until `stop`: sends each one's first request, then answers readiness
/// (one epoll set for all of them) and wakes sleepers every few milliseconds; an answer
/// awaited longer than [`ANSWER_TIMEOUT`] is an error (the connection is dropped).
fn drive(mut users: Vec<User>, stop: &AtomicBool) -> Mine {
    let mut mine = Mine::default();
    let Ok(epoll) = Epoll::new() else {
        mine.errors += 1;
        return mine;
    };
    for (t, u) in users.iter_mut().enumerate() {
        u.send(&epoll, t as u64, &mut mine);
    }
    let mut ready = Vec::with_capacity(256);
    let mut checked = Instant::now();
    while !stop.load(Ordering::Relaxed) {
        epoll.wait_many(Duration::from_millis(5), &mut ready);
        for &t in &ready {
            if let Some(u) = users.get_mut(t as usize) {
                u.readable(&epoll, t, &mut mine);
            }
        }
        if checked.elapsed() >= Duration::from_millis(5) {
            let now = Instant::now();
            checked = now;
            for (t, u) in users.iter_mut().enumerate() {
                if u.until.is_some_and(|until| until <= now) {
                    u.until = None;
                    u.send(&epoll, t as u64, &mut mine);
                } else if u.sent.is_some_and(|sent| now - sent > ANSWER_TIMEOUT) {
                    u.fail(&mut mine, now);
                }
            }
        }
    }
    mine
}

/// The answer whole in `bytes` (head, then a `Content-Length` body), `None` while part of
/// it has yet to come; `Err` for what is no HTTP answer.
fn parse_answer(bytes: &[u8]) -> Result<Option<Answer>, ()> {
    let mut headers = [httparse::EMPTY_HEADER; 32];
    let mut head = httparse::Response::new(&mut headers);
    let len = match head.parse(bytes) {
        Ok(httparse::Status::Complete(len)) => len,
        Ok(httparse::Status::Partial) => return Ok(None),
        Err(_) => return Err(()),
    };
    let (mut length, mut retry_after, mut close) = (0usize, None, false);
    for h in head.headers.iter() {
        let value = std::str::from_utf8(h.value).map_err(|_| ())?.trim();
        if h.name.eq_ignore_ascii_case("content-length") {
            length = value.parse().map_err(|_| ())?;
        } else if h.name.eq_ignore_ascii_case("retry-after") {
            retry_after = value.parse().ok();
        } else if h.name.eq_ignore_ascii_case("connection") {
            close = value.eq_ignore_ascii_case("close");
        }
    }
    let status = head.code.ok_or(())?;
    Ok((bytes.len() >= len + length).then_some(Answer { status, retry_after, close }))
}

/// An answer as a user sees it.
struct Answer {
    status: u16,
    retry_after: Option<u64>,
    close: bool,
}

/// Sends `request` and reads the answer (head and `Content-Length` body).
fn ask(c: &mut BufReader<TcpStream>, request: &str) -> std::io::Result<Answer> {
    c.get_mut().write_all(request.as_bytes())?;
    let mut line = String::new();
    c.read_line(&mut line)?;
    let status = line.split_whitespace().nth(1).and_then(|s| s.parse().ok()).ok_or(std::io::ErrorKind::InvalidData)?;
    let (mut length, mut retry_after, mut close) = (0usize, None, false);
    loop {
        line.clear();
        if c.read_line(&mut line)? == 0 {
            return Err(std::io::ErrorKind::UnexpectedEof.into());
        }
        let l = line.trim_end();
        if l.is_empty() {
            break;
        }
        let (name, value) = l.split_once(':').unwrap_or((l, ""));
        let value = value.trim();
        match name.to_ascii_lowercase().as_str() {
            "content-length" => length = value.parse().map_err(|_| std::io::ErrorKind::InvalidData)?,
            "retry-after" => retry_after = value.parse().ok(),
            "connection" => close = value.eq_ignore_ascii_case("close"),
            _ => {}
        }
    }
    let mut body = vec![0; length];
    c.read_exact(&mut body)?;
    Ok(Answer { status, retry_after, close })
}

/// A connection to `to` from the local address `src` (any port), with the bench's answer
/// timeout, buffered.
fn connect(src: Ipv4Addr, to: SocketAddr) -> std::io::Result<BufReader<TcpStream>> {
    let stream = connect_from(src, to)?;
    stream.set_read_timeout(Some(ANSWER_TIMEOUT))?;
    stream.set_write_timeout(Some(ANSWER_TIMEOUT))?;
    let _ = stream.set_nodelay(true);
    Ok(BufReader::with_capacity(4096, stream))
}

/// A TCP connection to `to` (IPv4) from the local address `src` (any port): many loopback
/// addresses stand for many clients (each with its own per-address cap). std cannot bind
/// before it connects, hence the system calls.
pub fn connect_from(src: Ipv4Addr, to: SocketAddr) -> std::io::Result<TcpStream> {
    let SocketAddr::V4(to) = to else { return Err(std::io::ErrorKind::Unsupported.into()) };
    let sockaddr = |ip: Ipv4Addr, port: u16| libc::sockaddr_in {
        sin_family: libc::AF_INET as libc::sa_family_t,
        sin_port: port.to_be(),
        sin_addr: libc::in_addr { s_addr: u32::from(ip).to_be() },
        sin_zero: [0; 8],
    };
    let len = std::mem::size_of::<libc::sockaddr_in>() as libc::socklen_t;
    // SAFETY: a new socket whose descriptor is owned by the TcpStream made from it (closed
    // with it, or right here on failure); the addresses live across the calls.
    unsafe {
        let fd = libc::socket(libc::AF_INET, libc::SOCK_STREAM | libc::SOCK_CLOEXEC, 0);
        if fd < 0 {
            return Err(std::io::Error::last_os_error());
        }
        let stream = TcpStream::from_raw_fd(fd);
        let (from, dest) = (sockaddr(src, 0), sockaddr(*to.ip(), to.port()));
        if libc::bind(fd, std::ptr::from_ref(&from).cast(), len) != 0
            || libc::connect(fd, std::ptr::from_ref(&dest).cast(), len) != 0
        {
            return Err(std::io::Error::last_os_error());
        }
        Ok(stream)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `--apart N` splits the cores this process may use, the last N to the generator, and
    /// refuses a split that leaves the store none; pinning a thread to its share holds.
    #[test]
    fn the_cores_are_split_between_the_store_and_the_generator() {
        let cpus = allowed_cpus().unwrap();
        assert!(!cpus.is_empty());
        assert!(Split::of(0).unwrap().is_none(), "0: shared");
        assert!(Split::of(cpus.len()).is_err(), "the store needs a core of its own");
        if cpus.len() >= 2 {
            let split = Split::of(1).unwrap().unwrap();
            assert_eq!(split.generator, cpus[cpus.len() - 1..]);
            assert_eq!([split.store.clone(), split.generator.clone()].concat(), cpus);
            // In a thread of its own, so that the test's thread keeps every core.
            let pinned = std::thread::spawn(move || {
                pin(&split.generator).unwrap();
                allowed_cpus().unwrap() == split.generator
            });
            assert!(pinned.join().unwrap());
        }
    }

    #[test]
    fn metrics_are_read_by_exact_name() {
        let text = "# HELP x\nbazar_lease_seconds_left_x 9\nbazar_lease_seconds_left 1.25\n";
        assert_eq!(metric(text, "bazar_lease_seconds_left"), Some(1.25));
        assert_eq!(metric(text, "bazar_none"), None);
    }

    /// An answer is taken only once its head and its whole body have come, in any pieces.
    #[test]
    fn answers_are_whole_or_awaited() {
        let ok = b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nhello";
        for cut in 0..ok.len() {
            assert!(matches!(parse_answer(&ok[..cut]), Ok(None)), "cut at {cut}");
        }
        let a = parse_answer(ok).unwrap().unwrap();
        assert_eq!((a.status, a.retry_after, a.close), (200, None, false));
        let shed =
            b"HTTP/1.1 503 Service Unavailable\r\nRetry-After: 1\r\nConnection: close\r\nContent-Length: 0\r\n\r\n";
        let a = parse_answer(shed).unwrap().unwrap();
        assert_eq!((a.status, a.retry_after, a.close), (503, Some(1), true));
        assert!(parse_answer(b"garbage\r\n\r\n").is_err());
        assert!(parse_answer(b"HTTP/1.1 200 OK\r\nContent-Length: x\r\n\r\n").is_err());
    }

    #[test]
    fn percentiles_of_microseconds_in_milliseconds() {
        let v: Vec<u32> = (1..=100).map(|i| i * 1000).collect();
        assert_eq!((pct(&v, 0.5), pct(&v, 0.99)), (50.0, 99.0));
        assert!(pct(&[], 0.5).is_nan());
    }
}
