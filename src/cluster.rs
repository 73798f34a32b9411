//! `bazar-cluster`: the whole store on one machine, for trying it out and for the lab.
//!
//! It starts memcached (when it is installed), a one-member etcd on loopback (when it is
//! installed: the catalogs then elect their primary and fail over by themselves; else
//! static roles, catalog-1 primary), the two catalogs, two order servers and the front end
//! on the local ports of API.md, with their data under one directory (`BAZAR_DATA_DIR`, default `./run`). Each child's log lines are printed with
//! its name in front. On Ctrl-C (SIGINT) or SIGTERM it stops every child (SIGTERM, then
//! SIGKILL after [`STOP_TIMEOUT`]), the catalogs before etcd (waiting for them to exit:
//! they give up their etcd leases as they stop), and exits 0.
//!
//! It also runs the store's lab ([`crate::lab`]): the lab API on `BAZAR_LAB_LISTEN`
//! (loopback), which its front end relays (`BAZAR_LAB`), and the probe's live verdict.
//!
//! [`Layout`] and [`Running`] are also how `bazar-bench lab` starts its own stores.
//!
//! # The token
//! Every service of the store runs with one token ([`give_token`]): the operator's
//! (`BAZAR_TOKEN` or `BAZAR_TOKEN_FILE`, inherited), or else one this launcher generates on
//! first start (32 random bytes from the kernel, hex) into `token` in the data directory,
//! mode 0600, and reuses on every later start. The services get it as
//! `BAZAR_TOKEN_FILE=<that path>`, not as `BAZAR_TOKEN=<value>`: a process's environment is
//! readable in `/proc/<pid>/environ` and shown by `ps e`, and the value would also live in
//! the launcher's memory and in every restart's command; a path reveals nothing, and the
//! file's mode keeps other users out. The launcher prints the path, never the value, and
//! logs neither.

use crate::client::Http;
use crate::config::{self, Env, Source};
use crate::service;
use crate::shutdown::Shutdown;
use std::io::{BufRead, BufReader, Read};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitCode, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

/// How long a child may take to stop after SIGTERM.
pub const STOP_TIMEOUT: Duration = Duration::from_secs(10);
/// How long the store may take to answer its first request.
pub const START_TIMEOUT: Duration = Duration::from_secs(20);

const HELP: &str = "\
bazar-cluster: starts the whole store on this machine and stops it on Ctrl-C.

  front end        http://127.0.0.1:4200 (in a browser: / the storefront, /dashboard)
  catalogs         http://127.0.0.1:9000, http://127.0.0.1:9001 (with etcd they elect their
                   primary and fail over; without, 9000 is the primary, 9001 a replica)
  order servers    http://127.0.0.1:9002, http://127.0.0.1:9003
  memcached        127.0.0.1:11211 (when memcached is installed; else no cache)
  etcd             http://127.0.0.1:2479 (when etcd is installed; peers on 2480)

Environment:
  BAZAR_DATA_DIR  where the services keep their CSV files (default ./run)
  BAZAR_MEMCACHED set and empty: run without memcached even where it is installed
  BAZAR_ETCD      etcd client URLs to use instead of starting one; set and empty: static
                  roles even where etcd is installed
  BAZAR_LOG, BAZAR_THREADS, BAZAR_LEASE_MS are passed to every service
                  (BAZAR_LEASE_MS=0, leases off, only with static roles)
  BAZAR_TOKEN, BAZAR_TOKEN_FILE  the services' token; unset: one is generated on first
                  start into <BAZAR_DATA_DIR>/token (mode 0600), reused later, and given to
                  every service as BAZAR_TOKEN_FILE; admin routes then need
                  -H \"Authorization: Bearer $(cat run/token)\"
  BAZAR_INSECURE_OPEN=1  no token at all (admin and internal routes open to loopback)
  BAZAR_LAB_LISTEN where the lab API listens (default 127.0.0.1:4299; loopback only): the
                  services' states, stop/kill/freeze/thaw/start of each, a switchover, the
                  probe's live verdict; the front end relays it to its dashboard (BAZAR_LAB)

Usage: (no argument) run the store; `token` prints the path of the token file (making it
when missing) and exits. Every service's own variables:
";

/// The name of the generated token's file in the store's data directory.
pub const TOKEN_FILE: &str = "token";

/// How a store that this launcher starts gets its token (see [`give_token`]).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum StoreToken {
    /// The operator set `BAZAR_TOKEN` or `BAZAR_TOKEN_FILE` (named here): every service
    /// inherits it.
    Operator(&'static str),
    /// The operator set `BAZAR_INSECURE_OPEN=1` and no token: none is made.
    Open,
    /// The token in this file (in the data directory), given to every service as
    /// `BAZAR_TOKEN_FILE`; `created` when this start made it.
    File {
        /// The file's absolute path.
        path: PathBuf,
        /// Whether this call made it (else it was kept from an earlier start).
        created: bool,
    },
}

impl StoreToken {
    /// The token itself, for the launcher's own requests and the lab (None: no token).
    pub fn value(&self, src: &dyn Source) -> Result<Option<String>, String> {
        match self {
            StoreToken::Operator(_) => config::token(src).map_err(|e| format!("bad setting {e}")),
            StoreToken::Open => Ok(None),
            StoreToken::File { path, .. } => std::fs::read_to_string(path)
                .map(|t| Some(t.trim().to_string()))
                .map_err(|e| format!("cannot read the token file {}: {e}", path.display())),
        }
    }

    /// The line the launcher prints about it: a path or a variable's name, never a value.
    pub fn note(&self) -> String {
        match self {
            StoreToken::Operator(var) => format!("the services use the token of {var}"),
            StoreToken::Open => {
                "no token (BAZAR_INSECURE_OPEN=1): admin and internal routes are open to loopback clients".into()
            }
            StoreToken::File { path, created } => format!(
                "the services' token is in {} ({}); admin routes need it, e.g. \
                 curl -H \"Authorization: Bearer $(cat {})\" -X PATCH -d '{{\"quantity\": 20}}' http://127.0.0.1:9000/books/1",
                path.display(),
                if *created { "made now, mode 0600" } else { "kept from an earlier start" },
                path.display()
            ),
        }
    }
}

/// Gives the store `layout` describes its token: the operator's when `src` sets one (a bad
/// one is an error), none with `BAZAR_INSECURE_OPEN=1`, else the one in
/// `<layout.dir>/token` ([`token_file`]), passed to every service as `BAZAR_TOKEN_FILE`.
pub fn give_token(layout: &mut Layout, src: &dyn Source) -> Result<StoreToken, String> {
    let set = |var| config::opt(src, var).is_some();
    if set("BAZAR_TOKEN") || set("BAZAR_TOKEN_FILE") {
        config::token(src).map_err(|e| format!("bad setting {e}"))?;
        return Ok(StoreToken::Operator(if set("BAZAR_TOKEN") { "BAZAR_TOKEN" } else { "BAZAR_TOKEN_FILE" }));
    }
    if config::insecure_open(src).map_err(|e| format!("bad setting {e}"))? {
        return Ok(StoreToken::Open);
    }
    let (path, created) = token_file(&layout.dir)?;
    layout.env.retain(|(k, _)| k != "BAZAR_TOKEN_FILE" && k != "BAZAR_TOKEN");
    layout.env.push(("BAZAR_TOKEN_FILE".into(), path.display().to_string()));
    Ok(StoreToken::File { path, created })
}

/// The token file of a store whose data is under `dir`: `<dir>/token`, made with a new
/// random token (mode 0600, written whole to a temporary file first and linked into place,
/// so a crash or a second launcher never leaves half a token) when it is missing, else
/// kept: checked like any token, and its mode narrowed to 0600 if it was wider. Returns
/// its absolute path and whether this call made it. Errors never hold the token.
pub fn token_file(dir: &Path) -> Result<(PathBuf, bool), String> {
    use std::io::Write;
    use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
    std::fs::create_dir_all(dir).map_err(|e| format!("cannot create the data directory {}: {e}", dir.display()))?;
    let dir = std::path::absolute(dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    let path = dir.join(TOKEN_FILE);
    let mut created = false;
    if !path.exists() {
        let mut bytes = [0u8; 32];
        std::fs::File::open("/dev/urandom")
            .and_then(|mut f| f.read_exact(&mut bytes))
            .map_err(|e| format!("cannot read random bytes from /dev/urandom: {e}"))?;
        let token: String = bytes.iter().map(|b| format!("{b:02x}")).collect();
        let tmp = dir.join(format!("{TOKEN_FILE}.{}.tmp", std::process::id()));
        let written = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&tmp)
            .and_then(|mut f| f.write_all(format!("{token}\n").as_bytes()).and_then(|_| f.sync_all()));
        let linked = written.and_then(|_| std::fs::hard_link(&tmp, &path));
        let _ = std::fs::remove_file(&tmp);
        match linked {
            Ok(()) => created = true,
            // Another launcher made it first: use theirs.
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {}
            Err(e) => return Err(format!("cannot write the token file {}: {e}", path.display())),
        }
        if created {
            crate::storage::sync_dir(&dir).map_err(|e| format!("cannot make {} durable: {e}", path.display()))?;
        }
    }
    let meta = std::fs::metadata(&path).map_err(|e| format!("cannot read the token file {}: {e}", path.display()))?;
    if meta.permissions().mode() & 0o077 != 0 {
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).map_err(|e| {
            format!("the token file {} is readable by others and cannot be made 0600: {e}", path.display())
        })?;
        eprintln!("bazar-cluster: the token file {} was readable by others; its mode is now 0600", path.display());
    }
    let text =
        std::fs::read_to_string(&path).map_err(|e| format!("cannot read the token file {}: {e}", path.display()))?;
    config::check_token_value("BAZAR_TOKEN_FILE", text.trim())
        .map_err(|e| format!("the token file {}: {}; delete it to have a new one made", path.display(), e.problem))?;
    Ok((path, created))
}

/// A free loopback port for a service this process is about to start (the lab's stores,
/// the tests' stores), or an error when none is left.
///
/// A port from `bind(0)` is one of the kernel's ephemeral ports (32768 and up by default):
/// between the check and the service's own bind, any outgoing connection on the machine
/// may take it, and a test once talked to another test's store that way. These come from
/// 20000-31999, below that range, where no client connection is ever placed; each process
/// starts at its own offset and never hands out the same port twice.
pub fn free_port() -> std::io::Result<u16> {
    static NEXT: AtomicU32 = AtomicU32::new(0);
    const FIRST: u32 = 20_000;
    const COUNT: u32 = 12_000;
    let offset = std::process::id().wrapping_mul(7_919) % COUNT;
    for _ in 0..COUNT {
        let port = (FIRST + (offset + NEXT.fetch_add(1, Ordering::Relaxed)) % COUNT) as u16;
        if std::net::TcpListener::bind(("127.0.0.1", port)).is_ok() {
            return Ok(port);
        }
    }
    Err(std::io::Error::new(std::io::ErrorKind::AddrNotAvailable, "no free port in 20000-31999"))
}

/// Finds an executable on `PATH` (and in /usr/sbin, /usr/bin, where Debian puts daemons).
pub fn find_program(name: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .chain([PathBuf::from("/usr/sbin"), PathBuf::from("/usr/bin"), PathBuf::from("/usr/local/bin")])
        .map(|dir| dir.join(name))
        .find(|p| p.is_file())
}

/// The arguments that run memcached on loopback `port`, in the foreground.
pub fn memcached_args(port: u16) -> Vec<String> {
    let mut args = vec!["-l", "127.0.0.1", "-p", &port.to_string(), "-U", "0", "-m", "64", "-t", "2"]
        .into_iter()
        .map(String::from)
        .collect::<Vec<_>>();
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } == 0 {
        // memcached refuses to run as root unless told which user to become.
        args.extend(["-u".into(), "nobody".into()]);
    }
    args
}

/// The arguments that run a one-member etcd on `host` (loopback here; a test's own network
/// elsewhere): clients on `port`, its peer port on `peer_port`, its data in `data`, in the
/// foreground.
pub fn etcd_args(host: &str, port: u16, peer_port: u16, data: &Path) -> Vec<String> {
    let (client, peer) = (format!("http://{host}:{port}"), format!("http://{host}:{peer_port}"));
    [
        ("--name", "bazar".to_string()),
        ("--data-dir", data.display().to_string()),
        ("--listen-client-urls", client.clone()),
        ("--advertise-client-urls", client),
        ("--listen-peer-urls", peer.clone()),
        ("--initial-advertise-peer-urls", peer.clone()),
        ("--initial-cluster", format!("bazar={peer}")),
        // etcd 3.4's default logger ignores the level and prints every raft step.
        ("--logger", "zap".to_string()),
        ("--log-level", "warn".to_string()),
    ]
    .into_iter()
    .flat_map(|(flag, value)| [flag.to_string(), value])
    .collect()
}

/// The etcd a store's catalogs elect their primary through.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum EtcdPlan {
    /// Start a one-member etcd on loopback: its client and peer ports.
    Start(u16, u16),
    /// Use these client URLs (comma-separated).
    Use(String),
}

impl EtcdPlan {
    /// The catalogs' `BAZAR_ETCD`.
    pub fn endpoints(&self) -> String {
        match self {
            EtcdPlan::Start(port, _) => url(*port),
            EtcdPlan::Use(urls) => urls.clone(),
        }
    }
}

/// Where a store runs: ports, data, and what is passed to every service.
#[derive(Clone, Debug)]
pub struct Layout {
    /// Directory of the services' data directories.
    pub dir: PathBuf,
    /// Directory of the `bazar-*` binaries.
    pub bin_dir: PathBuf,
    /// Front end port.
    pub frontend: u16,
    /// Catalog primary and replica ports.
    pub catalogs: [u16; 2],
    /// Order server ports.
    pub orders: [u16; 2],
    /// memcached port, or None for a store without cache.
    pub memcached: Option<u16>,
    /// How the catalogs find their primary: through etcd, or static roles (None).
    pub etcd: Option<EtcdPlan>,
    /// Settings given to every service (BAZAR_LEASE_MS, BAZAR_THREADS, ...).
    pub env: Vec<(String, String)>,
    /// Children's output discarded (the bench) instead of printed with their names.
    pub quiet: bool,
    /// The lab API's base URL, given to the front end as `BAZAR_LAB` (`bazar-cluster`
    /// only: its front end then relays the lab routes and shows the lab's buttons).
    pub lab: Option<String>,
}

impl Layout {
    /// The local ports of API.md, data under `dir`, memcached if installed (unless
    /// `BAZAR_MEMCACHED` is set and empty: a store without cache, for comparisons).
    pub fn standard(dir: PathBuf, bin_dir: PathBuf) -> Layout {
        let no_cache = std::env::var("BAZAR_MEMCACHED").is_ok_and(|v| v.trim().is_empty());
        let memcached = find_program("memcached").filter(|_| !no_cache).map(|_| 11211);
        let etcd = match std::env::var("BAZAR_ETCD").ok().map(|v| v.trim().to_string()) {
            Some(urls) if urls.is_empty() => None,
            Some(urls) => Some(EtcdPlan::Use(urls)),
            None => find_program("etcd").map(|_| EtcdPlan::Start(2479, 2480)),
        };
        Layout {
            etcd,
            dir,
            bin_dir,
            frontend: 4200,
            catalogs: [9000, 9001],
            orders: [9002, 9003],
            memcached,
            env: Vec::new(),
            quiet: false,
            lab: None,
        }
    }

    /// The front end's base URL.
    pub fn frontend_url(&self) -> String {
        url(self.frontend)
    }

    /// The catalogs' base URLs (primary first).
    pub fn catalog_urls(&self) -> [String; 2] {
        self.catalogs.map(url)
    }

    /// The store as its lab names and reaches its services ([`crate::lab::start`]).
    pub fn lab_store(&self) -> crate::lab::Store {
        let catalogs = self.catalog_urls().to_vec();
        let orders: Vec<String> = self.orders.iter().map(|p| url(*p)).collect();
        let mut urls = vec![
            ("catalog-1", catalogs[0].clone()),
            ("catalog-2", catalogs[1].clone()),
            ("order-1", orders[0].clone()),
            ("order-2", orders[1].clone()),
            ("frontend", self.frontend_url()),
        ];
        if let Some(port) = self.memcached {
            urls.push(("memcached", format!("127.0.0.1:{port}")));
        }
        if let Some(plan) = &self.etcd {
            urls.push(("etcd", plan.endpoints()));
        }
        crate::lab::Store { frontend: self.frontend_url(), catalogs, orders, urls }
    }
}

fn url(port: u16) -> String {
    format!("http://127.0.0.1:{port}")
}

/// How to start one child again.
#[derive(Clone, Debug)]
struct Spec {
    name: &'static str,
    program: PathBuf,
    args: Vec<String>,
    env: Vec<(String, String)>,
}

/// A running child, and how to start it again.
struct Named {
    spec: Spec,
    child: Option<Child>,
}

/// A running store: its children, stopped on [`Running::stop`] (or on drop).
pub struct Running {
    children: Vec<Named>,
    quiet: bool,
}

impl Running {
    /// Starts a store as `layout` says; stops what it started if a child cannot start.
    pub fn start(layout: &Layout) -> std::io::Result<Running> {
        let mut running = Running { children: Vec::new(), quiet: layout.quiet };
        for spec in specs(layout) {
            running.spawn(spec)?;
        }
        Ok(running)
    }

    fn spawn(&mut self, spec: Spec) -> std::io::Result<()> {
        let child = spawn(&spec, self.quiet)?;
        self.children.push(Named { spec, child: Some(child) });
        Ok(())
    }

    fn find(&mut self, name: &str) -> Option<&mut Named> {
        self.children.iter_mut().find(|c| c.spec.name == name)
    }

    /// The pid of a child (`catalog-1`, `catalog-2`, `order-1`, `order-2`, `frontend`, `memcached`).
    pub fn pid(&mut self, name: &str) -> Option<u32> {
        self.find(name)?.child.as_ref().map(Child::id)
    }

    /// `kill -9` of one child.
    pub fn kill(&mut self, name: &str) {
        if let Some(c) = self.find(name).and_then(|n| n.child.as_mut()) {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// Starts a child again with the same settings.
    pub fn restart(&mut self, name: &str) -> std::io::Result<()> {
        self.kill(name);
        let quiet = self.quiet;
        if let Some(n) = self.find(name) {
            n.child = Some(spawn(&n.spec, quiet)?);
        }
        Ok(())
    }

    /// Children that exited, with their status (each reported once).
    pub fn exited(&mut self) -> Vec<(&'static str, std::process::ExitStatus)> {
        let mut out = Vec::new();
        for n in &mut self.children {
            if let Some(c) = n.child.as_mut() {
                if let Ok(Some(status)) = c.try_wait() {
                    out.push((n.spec.name, status));
                    n.child = None;
                }
            }
        }
        out
    }

    /// Stops every child: SIGTERM in reverse order of start, SIGKILL after [`STOP_TIMEOUT`];
    /// etcd last, so that a stopping primary can still give up its role there.
    pub fn stop(&mut self) {
        self.stop_where(|name| name != "etcd");
        self.stop_where(|_| true);
    }

    fn stop_where(&mut self, which: impl Fn(&str) -> bool) {
        for n in self.children.iter().rev().filter(|n| which(n.spec.name)) {
            if let Some(c) = &n.child {
                terminate(c);
            }
        }
        let deadline = Instant::now() + STOP_TIMEOUT;
        for n in self.children.iter_mut().rev().filter(|n| which(n.spec.name)) {
            let Some(mut c) = n.child.take() else { continue };
            while matches!(c.try_wait(), Ok(None)) && Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(20));
            }
            if matches!(c.try_wait(), Ok(None)) {
                eprintln!("bazar-cluster: {} did not stop in time; killing it", n.spec.name);
                let _ = c.kill();
            }
            let _ = c.wait();
        }
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        self.stop();
    }
}

/// What the lab does to `bazar-cluster`'s children ([`crate::lab`]).
impl crate::lab::console::Processes for Running {
    fn names(&self) -> Vec<&'static str> {
        self.children.iter().map(|n| n.spec.name).collect()
    }

    fn pid(&mut self, name: &str) -> Option<u32> {
        Running::pid(self, name)
    }

    fn signal(&mut self, name: &str, sig: i32) -> bool {
        match self.find(name).and_then(|n| n.child.as_ref()) {
            Some(c) => {
                // SAFETY: kill(2) on the pid of a child we spawned and have not reaped.
                unsafe { libc::kill(c.id() as libc::pid_t, sig) };
                true
            }
            None => false,
        }
    }

    fn wait_exit(&mut self, name: &str, within: Duration) -> bool {
        let deadline = Instant::now() + within;
        let Some(n) = self.find(name) else { return true };
        loop {
            match n.child.as_mut().map(Child::try_wait) {
                None => return true,
                Some(Ok(Some(_))) | Some(Err(_)) => {
                    n.child = None;
                    return true;
                }
                Some(Ok(None)) if Instant::now() >= deadline => return false,
                Some(Ok(None)) => std::thread::sleep(Duration::from_millis(20)),
            }
        }
    }

    fn start_again(&mut self, name: &str) -> std::io::Result<bool> {
        let quiet = self.quiet;
        match self.find(name) {
            Some(n) if n.child.is_none() => {
                n.child = Some(spawn(&n.spec, quiet)?);
                Ok(true)
            }
            _ => Ok(false),
        }
    }

    fn exited(&mut self) -> Vec<(&'static str, std::process::ExitStatus)> {
        Running::exited(self)
    }

    fn stop(&mut self) {
        Running::stop(self)
    }
}

/// The children of a store, in the order they start.
fn specs(layout: &Layout) -> Vec<Spec> {
    let data = |name: &str| layout.dir.join(name).display().to_string();
    let bin = |name: &str| layout.bin_dir.join(name);
    let mut specs = Vec::new();
    let memcached = match (layout.memcached, find_program("memcached")) {
        (Some(port), Some(program)) => {
            specs.push(Spec { name: "memcached", program, args: memcached_args(port), env: Vec::new() });
            format!("127.0.0.1:{port}")
        }
        _ => String::new(),
    };
    if let (Some(EtcdPlan::Start(port, peer)), Some(program)) = (&layout.etcd, find_program("etcd")) {
        specs.push(Spec {
            name: "etcd",
            program,
            args: etcd_args("127.0.0.1", *port, *peer, &layout.dir.join("etcd")),
            env: Vec::new(),
        });
    }
    let catalogs = layout.catalog_urls().join(",");
    let service = |name: &'static str, program: &str, port: u16, own: Vec<(&str, String)>| {
        let mut env = layout.env.clone();
        env.push(("BAZAR_LISTEN".into(), format!("127.0.0.1:{port}")));
        env.extend(own.into_iter().map(|(k, v)| (k.to_string(), v)));
        Spec { name, program: bin(program), args: Vec::new(), env }
    };
    let [p, r] = layout.catalogs;
    let roles = |role: &str, peer: (&'static str, String)| -> Vec<(&'static str, String)> {
        match &layout.etcd {
            Some(plan) => vec![("BAZAR_ETCD", plan.endpoints())],
            None => vec![("BAZAR_ROLE", role.to_string()), peer],
        }
    };
    for (name, port, mut own) in [
        ("catalog-1", p, roles("primary", ("BAZAR_REPLICAS", url(r)))),
        ("catalog-2", r, roles("replica", ("BAZAR_PRIMARY", url(p)))),
    ] {
        own.extend([("BAZAR_DATA_DIR", data(name)), ("BAZAR_MEMCACHED", memcached.clone())]);
        specs.push(service(name, "bazar-catalog", port, own));
    }
    let [o1, o2] = layout.orders;
    for (name, port, peer) in [("order-1", o1, o2), ("order-2", o2, o1)] {
        specs.push(service(
            name,
            "bazar-order",
            port,
            vec![("BAZAR_CATALOG", catalogs.clone()), ("BAZAR_PEERS", url(peer)), ("BAZAR_DATA_DIR", data(name))],
        ));
    }
    let mut frontend = vec![
        ("BAZAR_CATALOG", catalogs.clone()),
        ("BAZAR_ORDER", format!("{},{}", url(o1), url(o2))),
        ("BAZAR_MEMCACHED", memcached),
    ];
    if let Some(lab) = &layout.lab {
        frontend.push(("BAZAR_LAB", lab.clone()));
    }
    specs.push(service("frontend", "bazar-frontend", layout.frontend, frontend));
    specs
}

fn spawn(spec: &Spec, quiet: bool) -> std::io::Result<Child> {
    let mut cmd = Command::new(&spec.program);
    let output = || if quiet { Stdio::null() } else { Stdio::piped() };
    cmd.args(&spec.args).stdin(Stdio::null()).stdout(output()).stderr(output());
    for (k, v) in &spec.env {
        cmd.env(k, v);
    }
    if spec.name == "etcd" {
        keep_from_terminal_signals(&mut cmd);
    }
    let mut child = cmd
        .spawn()
        .map_err(|e| std::io::Error::new(e.kind(), format!("cannot start {}: {e}", spec.program.display())))?;
    prefix_lines(spec.name, child.stdout.take());
    prefix_lines(spec.name, child.stderr.take());
    Ok(child)
}

/// etcd runs in a process group of its own: a Ctrl-C in the terminal reaches the whole
/// foreground group at once, and etcd must outlive the catalogs, which give up their
/// leases there as they stop ([`Running::stop`] stops it last, once they have exited). On
/// Linux it still never outlives the launcher (SIGTERM when the launcher dies).
fn keep_from_terminal_signals(cmd: &mut Command) {
    use std::os::unix::process::CommandExt;
    cmd.process_group(0);
    #[cfg(target_os = "linux")]
    // SAFETY: prctl(2) is async-signal-safe; it only sets this child's parent-death signal.
    unsafe {
        cmd.pre_exec(|| {
            libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGTERM);
            Ok(())
        });
    }
}

fn prefix_lines(name: &'static str, stream: Option<impl Read + Send + 'static>) {
    if let Some(s) = stream {
        std::thread::spawn(move || {
            for line in BufReader::new(s).lines().map_while(Result::ok) {
                eprintln!("[{name:<10}] {line}");
            }
        });
    }
}

/// Sends SIGTERM to a child.
pub fn terminate(child: &Child) {
    // SAFETY: kill(2) on the pid of a child we spawned and have not reaped.
    unsafe {
        libc::kill(child.id() as libc::pid_t, libc::SIGTERM);
    }
}

/// Waits until the front end is ready (`GET /ready`: a catalog and an order server are),
/// or `within` passes.
pub fn wait_ready(frontend: &str, within: Duration, shutdown: &Shutdown) -> bool {
    let http = Http::new(Duration::from_secs(1), 1, None);
    let deadline = Instant::now() + within;
    while Instant::now() < deadline && !shutdown.is_set() {
        if http.call(ureq::http::Method::GET, frontend, "/ready", None).is_ok_and(|a| a.status == 200) {
            return true;
        }
        shutdown.sleep(Duration::from_millis(100));
    }
    false
}

/// The directory of the running executable (where the other `bazar-*` binaries are).
pub fn bin_dir() -> PathBuf {
    std::env::current_exe().ok().and_then(|p| p.parent().map(Path::to_path_buf)).unwrap_or_default()
}

/// `cargo run --bin bazar-cluster` builds only the launcher. When a program `layout` starts
/// is missing and cargo ran the launcher (cargo sets `CARGO` and `CARGO_MANIFEST_DIR`), this
/// builds every binary first, with the launcher's own profile; otherwise it names what to build.
fn build_missing_programs(layout: &Layout) -> Result<(), String> {
    let mut missing: Vec<String> =
        specs(layout).into_iter().filter(|s| !s.program.is_file()).map(|s| s.program.display().to_string()).collect();
    missing.sort();
    missing.dedup(); // one line per program, not per instance
    if missing.is_empty() {
        return Ok(());
    }
    let (Some(cargo), Some(manifest)) = (std::env::var_os("CARGO"), std::env::var_os("CARGO_MANIFEST_DIR")) else {
        return Err(format!("{} not found: build them first (cargo build --release)", missing.join(", ")));
    };
    let profile = layout.bin_dir.file_name().and_then(|p| p.to_str()).unwrap_or("debug");
    let mut build = std::process::Command::new(cargo);
    build.current_dir(manifest).args(["build", "--bins"]);
    if profile != "debug" {
        build.args(["--profile", profile]);
    }
    eprintln!("bazar-cluster: building the services first (cargo build --bins, profile {profile})");
    match build.status() {
        Ok(status) if status.success() => Ok(()),
        Ok(status) => Err(format!("cargo build of the services failed ({status})")),
        Err(e) => Err(format!("cannot run cargo to build the services: {e}")),
    }
}

/// The launcher's `main`.
pub fn main() -> ExitCode {
    if std::env::args().nth(1).as_deref() == Some("token") && std::env::args().nth(2).is_none() {
        // The path only, for `curl -H "Authorization: Bearer $(cat "$(bazar-cluster token)")"`.
        return match token_file(&config::data_dir(&Env, "./run")) {
            Ok((path, _)) => {
                println!("{}", path.display());
                ExitCode::SUCCESS
            }
            Err(e) => {
                eprintln!("bazar-cluster: {e}");
                ExitCode::from(service::EXIT_CONFIG)
            }
        };
    }
    if let Some(code) = service::handle_args("bazar-cluster", HELP, None) {
        return code;
    }
    if let Err(code) = service::init_logging("bazar-cluster") {
        return code;
    }
    let shutdown = match Shutdown::on_signals() {
        Ok(s) => s,
        Err(e) => {
            eprintln!("bazar-cluster: cannot install signal handlers: {e}");
            return ExitCode::FAILURE;
        }
    };
    let mut layout = Layout::standard(config::data_dir(&Env, "./run"), bin_dir());
    // The lab API (see `crate::lab`): bound before anything starts, so a port in use or a
    // setting that is not loopback stops the launcher at once.
    let lab_listener = match crate::lab::listen(&Env).map_err(|e| e.to_string()).and_then(|addr| {
        crate::http::bind(addr).map_err(|e| format!("{e} (set BAZAR_LAB_LISTEN to another loopback port)"))
    }) {
        Ok(l) => l,
        Err(e) => {
            eprintln!("bazar-cluster: lab: {e}");
            return ExitCode::from(2);
        }
    };
    let lab_url = match lab_listener.local_addr() {
        Ok(a) => format!("http://{a}"),
        Err(e) => {
            eprintln!("bazar-cluster: lab: {e}");
            return ExitCode::FAILURE;
        }
    };
    layout.lab = Some(lab_url.clone());
    let leases_off = std::env::var("BAZAR_LEASE_MS").is_ok_and(|v| v.trim().parse() == Ok(0u64));
    if leases_off && layout.etcd.is_some() {
        // The catalogs would refuse it one by one: say so once, with the way out.
        eprintln!("bazar-cluster: bad setting BAZAR_LEASE_MS: 0 (read leases off) needs static roles; set BAZAR_ETCD= (empty) too");
        return ExitCode::from(2);
    }
    let token = match give_token(&mut layout, &Env).and_then(|t| Ok((t.value(&Env)?, t))) {
        Ok((value, token)) => {
            eprintln!("bazar-cluster: {}", token.note());
            value
        }
        Err(e) => {
            eprintln!("bazar-cluster: {e}");
            return ExitCode::from(service::EXIT_CONFIG);
        }
    };
    if let Err(e) = build_missing_programs(&layout) {
        eprintln!("bazar-cluster: {e}");
        return ExitCode::FAILURE;
    }
    match layout.memcached {
        Some(port) => eprintln!("bazar-cluster: memcached on 127.0.0.1:{port}"),
        None => eprintln!("bazar-cluster: no memcached (not installed, or BAZAR_MEMCACHED empty): the store runs without a cache (X-Cache: off)"),
    }
    match &layout.etcd {
        Some(plan) => eprintln!(
            "bazar-cluster: the catalogs elect their primary through etcd at {} and fail over by themselves",
            plan.endpoints()
        ),
        None => eprintln!("bazar-cluster: static roles, catalog-1 primary and catalog-2 replica (etcd not installed, or BAZAR_ETCD empty): a dead primary stops writes until restarted"),
    }
    let store = match Running::start(&layout) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("bazar-cluster: {e}");
            return ExitCode::FAILURE;
        }
    };
    let fe = layout.frontend_url();
    let lab = crate::lab::start(Box::new(store), layout.lab_store(), lab_listener, token, &shutdown);
    if wait_ready(&fe, START_TIMEOUT, &shutdown) {
        eprintln!(
            "bazar-cluster: the store is ready at {fe} (try: curl {fe}/search/distributed%20systems); \
             in a browser: the storefront at {fe}/, the dashboard (with the lab's buttons) at {fe}/dashboard; \
             the lab API at {lab_url}/lab; Ctrl-C stops it"
        );
    } else if !shutdown.is_set() {
        eprintln!("bazar-cluster: the store did not answer within {START_TIMEOUT:?}; see the logs above");
    }
    // The probe's load starts once the store answers (`POST /lab/probe {"on": false}` stops it).
    lab.probe.set_on(!shutdown.is_set());
    while !shutdown.sleep(Duration::from_millis(200)) {
        lab.reap();
    }
    eprintln!("bazar-cluster: stopping");
    lab.stop_all();
    eprintln!("bazar-cluster: stopped");
    ExitCode::SUCCESS
}

#[cfg(test)]
mod tests {
    #[test]
    fn free_ports_are_distinct_bindable_and_below_the_ephemeral_range() {
        let ports: Vec<u16> = (0..50).map(|_| super::free_port().unwrap()).collect();
        let distinct: std::collections::HashSet<u16> = ports.iter().copied().collect();
        assert_eq!(distinct.len(), ports.len());
        for port in ports {
            assert!((20_000..32_000).contains(&port), "{port}");
            std::net::TcpListener::bind(("127.0.0.1", port)).unwrap();
        }
    }
}
