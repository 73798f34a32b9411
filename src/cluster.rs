//! `bazar-cluster`: the whole store on one machine, for trying it out and for the lab.
//!
//! It starts memcached (when it is installed), the catalog primary and replica, two order
//! servers and the front end on the local ports of API.md, with their data under one
//! directory (`BAZAR_DATA_DIR`, default `./run`). Each child's log lines are printed with
//! its name in front. On Ctrl-C (SIGINT) or SIGTERM it stops every child (SIGTERM, then
//! SIGKILL after [`STOP_TIMEOUT`]) and exits 0.

use crate::client::Http;
use crate::config::{self, Env};
use crate::service;
use crate::shutdown::Shutdown;
use std::io::{BufRead, BufReader, Read};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitCode, Stdio};
use std::time::{Duration, Instant};

/// How long a child may take to stop after SIGTERM.
pub const STOP_TIMEOUT: Duration = Duration::from_secs(10);
/// How long the store may take to answer its first health check.
pub const START_TIMEOUT: Duration = Duration::from_secs(20);

const HELP: &str = "\
bazar-cluster: starts the whole store on this machine and stops it on Ctrl-C.

  front end        http://127.0.0.1:4200
  catalog primary  http://127.0.0.1:9000    catalog replica  http://127.0.0.1:9001
  order servers    http://127.0.0.1:9002, http://127.0.0.1:9003
  memcached        127.0.0.1:11211 (when memcached is installed; else no cache)

Environment:
  BAZAR_DATA_DIR  where the services keep their CSV files (default ./run)
  BAZAR_LOG, BAZAR_TOKEN, BAZAR_THREADS, BAZAR_LEASE_MS are passed to every service
";

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
    let mut args = vec![
        "-l".into(),
        "127.0.0.1".into(),
        "-p".into(),
        port.to_string(),
        "-U".into(),
        "0".into(),
        "-m".into(),
        "64".into(),
    ];
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } == 0 {
        // memcached refuses to run as root unless told which user to become.
        args.extend(["-u".into(), "nobody".into()]);
    }
    args
}

/// A child process whose output is prefixed with its name.
struct Named {
    name: &'static str,
    child: Child,
}

fn spawn(name: &'static str, program: &Path, args: &[String], env: &[(&str, String)]) -> std::io::Result<Named> {
    let mut cmd = Command::new(program);
    cmd.args(args).stdin(Stdio::null()).stdout(Stdio::piped()).stderr(Stdio::piped());
    for (k, v) in env {
        cmd.env(k, v);
    }
    let mut child =
        cmd.spawn().map_err(|e| std::io::Error::new(e.kind(), format!("cannot start {}: {e}", program.display())))?;
    prefix_lines(name, child.stdout.take());
    prefix_lines(name, child.stderr.take());
    Ok(Named { name, child })
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

/// Stops children in order: SIGTERM, then SIGKILL after [`STOP_TIMEOUT`].
fn stop_all(children: &mut [Named]) {
    for c in children.iter().rev() {
        terminate(&c.child);
    }
    let deadline = Instant::now() + STOP_TIMEOUT;
    for c in children.iter_mut().rev() {
        while matches!(c.child.try_wait(), Ok(None)) && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(20));
        }
        if matches!(c.child.try_wait(), Ok(None)) {
            eprintln!("bazar-cluster: {} did not stop in time; killing it", c.name);
            let _ = c.child.kill();
        }
        let _ = c.child.wait();
    }
}

/// The launcher's `main`.
pub fn main() -> ExitCode {
    if let Some(code) = service::handle_args("bazar-cluster", HELP, None) {
        return code;
    }
    if let Err(code) = service::init_logging("bazar-cluster") {
        return code;
    }
    if let Err(e) = config::log_level(&Env) {
        return service::config_error("bazar-cluster", &e);
    }
    let shutdown = match Shutdown::on_signals() {
        Ok(s) => s,
        Err(e) => {
            eprintln!("bazar-cluster: cannot install signal handlers: {e}");
            return ExitCode::FAILURE;
        }
    };
    let dir = config::data_dir(&Env, "./run");
    let bin_dir = std::env::current_exe().ok().and_then(|p| p.parent().map(Path::to_path_buf)).unwrap_or_default();
    let mut children = Vec::new();
    match start(&dir, &bin_dir, &mut children) {
        Ok(()) => {}
        Err(e) => {
            eprintln!("bazar-cluster: {e}");
            stop_all(&mut children);
            return ExitCode::FAILURE;
        }
    }
    wait_ready(&shutdown);
    let mut reported = vec![false; children.len()];
    while !shutdown.sleep(Duration::from_millis(200)) {
        for (c, done) in children.iter_mut().zip(reported.iter_mut()) {
            if let (Ok(Some(status)), false) = (c.child.try_wait(), *done) {
                eprintln!("bazar-cluster: {} exited ({status}); the rest of the store goes on", c.name);
                *done = true;
            }
        }
    }
    eprintln!("bazar-cluster: stopping");
    stop_all(&mut children);
    eprintln!("bazar-cluster: stopped");
    ExitCode::SUCCESS
}

fn start(dir: &Path, bin_dir: &Path, children: &mut Vec<Named>) -> std::io::Result<()> {
    let url = |port: u16| format!("http://127.0.0.1:{port}");
    let data = |name: &str| dir.join(name).display().to_string();
    let bin = |name: &str| bin_dir.join(name);
    let memcached = match find_program("memcached") {
        Some(program) => {
            children.push(spawn("memcached", &program, &memcached_args(11211), &[])?);
            eprintln!("bazar-cluster: memcached on 127.0.0.1:11211");
            "127.0.0.1:11211".to_string()
        }
        None => {
            eprintln!("bazar-cluster: memcached is not installed; the store runs without a cache (X-Cache: off)");
            String::new()
        }
    };
    let listen = |port: u16| ("BAZAR_LISTEN", format!("127.0.0.1:{port}"));
    children.push(spawn(
        "catalog-1",
        &bin("bazar-catalog"),
        &[],
        &[
            listen(9000),
            ("BAZAR_ROLE", "primary".into()),
            ("BAZAR_REPLICAS", url(9001)),
            ("BAZAR_DATA_DIR", data("catalog-1")),
            ("BAZAR_MEMCACHED", memcached.clone()),
        ],
    )?);
    children.push(spawn(
        "catalog-2",
        &bin("bazar-catalog"),
        &[],
        &[
            listen(9001),
            ("BAZAR_ROLE", "replica".into()),
            ("BAZAR_PRIMARY", url(9000)),
            ("BAZAR_DATA_DIR", data("catalog-2")),
            ("BAZAR_MEMCACHED", memcached.clone()),
        ],
    )?);
    let catalogs = format!("{},{}", url(9000), url(9001));
    for (name, port, peer) in [("order-1", 9002, 9003), ("order-2", 9003, 9002)] {
        children.push(spawn(
            name,
            &bin("bazar-order"),
            &[],
            &[
                listen(port),
                ("BAZAR_CATALOG", catalogs.clone()),
                ("BAZAR_PEERS", url(peer)),
                ("BAZAR_DATA_DIR", data(name)),
            ],
        )?);
    }
    children.push(spawn(
        "frontend",
        &bin("bazar-frontend"),
        &[],
        &[
            listen(4200),
            ("BAZAR_CATALOG", catalogs),
            ("BAZAR_ORDER", format!("{},{}", url(9002), url(9003))),
            ("BAZAR_MEMCACHED", memcached),
        ],
    )?);
    Ok(())
}

fn wait_ready(shutdown: &Shutdown) {
    let http = Http::new(Duration::from_secs(1), 1, None);
    let deadline = Instant::now() + START_TIMEOUT;
    while Instant::now() < deadline && !shutdown.is_set() {
        if http.call(ureq::http::Method::GET, "http://127.0.0.1:4200", "/info/1", None).is_ok_and(|a| a.status == 200) {
            eprintln!("bazar-cluster: the store is ready at http://127.0.0.1:4200 (try: curl http://127.0.0.1:4200/search/distributed%20systems); Ctrl-C stops it");
            return;
        }
        shutdown.sleep(Duration::from_millis(100));
    }
    if !shutdown.is_set() {
        eprintln!("bazar-cluster: the store did not answer within {START_TIMEOUT:?}; see the logs above");
    }
}
