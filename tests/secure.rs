//! Secure by default, with real processes: who a service with no token admits (loopback
//! only: a peer in a network namespace of the test's own gets a 403), the token settings
//! that stop a service at start (exit 2), `BAZAR_TOKEN_FILE`, the token `bazar-cluster`
//! makes and gives its services, and the front end's refusal of cross-site purchases.

mod common;

use common::*;
use std::io::{Read, Write};
use std::net::TcpStream;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};
use ureq::http::Method;

const CATALOG: &str = env!("CARGO_BIN_EXE_bazar-catalog");
const TOKEN: &str = "0123456789abcdef-secure-test";

/// One raw request; the status and the body.
fn raw(addr: &str, request: &str) -> (u16, String) {
    let mut s = TcpStream::connect(addr).unwrap_or_else(|e| panic!("connect {addr}: {e}"));
    s.set_read_timeout(Some(Duration::from_secs(15))).unwrap();
    s.write_all(request.as_bytes()).unwrap();
    let mut answer = String::new();
    let _ = s.read_to_string(&mut answer);
    let status =
        answer.split(' ').nth(1).and_then(|c| c.parse().ok()).unwrap_or_else(|| panic!("no answer: {answer:?}"));
    let body = answer.split_once("\r\n\r\n").map(|(_, b)| b.to_string()).unwrap_or_default();
    (status, body)
}

/// `PATCH /books/1` (quantity 5) to `addr`, with `Authorization: Bearer <token>` when given.
fn patch(addr: &str, token: Option<&str>) -> (u16, String) {
    let auth = token.map(|t| format!("Authorization: Bearer {t}\r\n")).unwrap_or_default();
    let body = "{\"quantity\": 5}";
    raw(
        addr,
        &format!(
            "PATCH /books/1 HTTP/1.1\r\nHost: {addr}\r\n{auth}Content-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
            body.len()
        ),
    )
}

/// Whether this test may create network namespaces (root and `ip` installed); prints a
/// SKIPPED note otherwise, or fails where `BAZAR_REQUIRE_ROOT=1` (as in CI).
fn can_make_namespaces(test: &str) -> bool {
    // SAFETY: geteuid has no preconditions.
    let root = unsafe { libc::geteuid() } == 0;
    let ip = bazar::cluster::find_program("ip").is_some();
    if root && ip {
        return true;
    }
    let why = if root { "`ip` (iproute2) is not installed" } else { "it needs root (network namespaces)" };
    if std::env::var("BAZAR_REQUIRE_ROOT").as_deref() == Ok("1") {
        panic!("{test}: BAZAR_REQUIRE_ROOT=1 but {why}");
    }
    let _ = std::io::stderr().write_all(format!("SKIPPED {test}: {why}\n").as_bytes());
    false
}

/// A network namespace of this test joined to the host by a veth pair, with the addresses
/// of a private /30 on each end; both removed on drop.
struct Netns {
    name: String,
    host_if: String,
    /// The host side's address (the source of the host's requests into the namespace).
    host_ip: String,
    /// The namespace side's address.
    ns_ip: String,
}

fn ip(args: &[&str]) {
    let out = Command::new("ip").args(args).output().expect("run ip");
    assert!(out.status.success(), "ip {}: {}", args.join(" "), String::from_utf8_lossy(&out.stderr));
}

impl Netns {
    fn new() -> Netns {
        static N: AtomicU32 = AtomicU32::new(0);
        let n = N.fetch_add(1, Ordering::SeqCst);
        let id = (std::process::id() % 10_000) * 10 + n % 10;
        // 10.213.0.0/16, one /30 per namespace: .1 the host's end, .2 the namespace's.
        let block = (id % 16_384) * 4;
        let (a, b) = (block / 256, block % 256);
        let netns = Netns {
            name: format!("bazar-sec-{id}"),
            host_if: format!("bzs{id}h"),
            host_ip: format!("10.213.{a}.{}", b + 1),
            ns_ip: format!("10.213.{a}.{}", b + 2),
        };
        let ns_if = format!("bzs{id}n");
        ip(&["netns", "add", &netns.name]);
        ip(&["link", "add", &netns.host_if, "type", "veth", "peer", "name", &ns_if]);
        ip(&["link", "set", &ns_if, "netns", &netns.name]);
        ip(&["addr", "add", &format!("{}/30", netns.host_ip), "dev", &netns.host_if]);
        ip(&["link", "set", &netns.host_if, "up"]);
        ip(&["-n", &netns.name, "addr", "add", &format!("{}/30", netns.ns_ip), "dev", &ns_if]);
        ip(&["-n", &netns.name, "link", "set", &ns_if, "up"]);
        ip(&["-n", &netns.name, "link", "set", "lo", "up"]);
        netns
    }

    /// Runs `f` on a thread that has joined the namespace (its sockets are the namespace's).
    fn run<T: Send>(&self, f: impl FnOnce() -> T + Send) -> T {
        common::netns::in_namespace(&self.name, f)
    }

    /// A catalog primary inside the namespace, listening on `port` on every address there
    /// (loopback and the namespace's end of the veth, nothing else), with `env`.
    fn catalog(&self, dir: &Path, tag: &str, port: u16, env: &[(&str, &str)]) -> Proc {
        let mut vars = vec![
            ("BAZAR_ROLE".to_string(), "primary".to_string()),
            ("BAZAR_LISTEN".into(), format!("0.0.0.0:{port}")),
            ("BAZAR_DATA_DIR".into(), dir.join(tag).display().to_string()),
            ("BAZAR_THREADS".into(), "8".into()),
        ];
        vars.extend(env.iter().map(|(k, v)| (k.to_string(), v.to_string())));
        let p = Proc::start(Spec {
            name: tag.into(),
            program: PathBuf::from("ip"),
            args: vec!["netns".into(), "exec".into(), self.name.clone(), CATALOG.into()],
            env: vars,
            log: dir.join(format!("{tag}.log")),
        });
        let addr = format!("{}:{port}", self.ns_ip);
        eventually(START_DEADLINE, "the catalog in the namespace to answer", || {
            TcpStream::connect_timeout(&addr.parse().unwrap(), Duration::from_millis(200)).is_ok()
        });
        p
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        let _ = Command::new("ip").args(["netns", "del", &self.name]).output();
        let _ = Command::new("ip").args(["link", "del", &self.host_if]).output();
    }
}

/// A service with no token admits admin and internal requests from loopback only: from the
/// host's end of a veth pair (a non-loopback source) it answers 403 with how to set a token;
/// from loopback in the same namespace, 200. `BAZAR_INSECURE_OPEN=1` opens them; with a
/// token, the token admits a remote peer and its absence is a 401.
#[test]
fn no_token_admits_loopback_only() {
    if !can_make_namespaces("no_token_admits_loopback_only") {
        return;
    }
    let dir = TempDir::new("secure-netns");
    let netns = Netns::new();
    let port = free_port();
    let (remote, local) = (format!("{}:{port}", netns.ns_ip), format!("127.0.0.1:{port}"));

    let mut closed = netns.catalog(&dir.0, "closed", port, &[]);
    let (status, body) = patch(&remote, None);
    assert_eq!(status, 403, "a PATCH from {} (not loopback): {body}", netns.host_ip);
    let error: serde_json::Value = serde_json::from_str(&body).unwrap_or_else(|e| panic!("{e}: {body}"));
    let error = error["error"].as_str().unwrap();
    assert!(error.contains(&netns.host_ip) && error.contains("BAZAR_TOKEN") && error.contains("Bearer"), "{error}");
    let internal = raw(&remote, "GET /internal/books HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n");
    assert_eq!(internal.0, 403, "an internal route from outside: {}", internal.1);
    // Public routes are open to everyone.
    assert_eq!(raw(&remote, "GET /books/1 HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n").0, 200);
    // The same requests from loopback go through.
    let (status, body) = netns.run(|| patch(&local, None));
    assert_eq!(status, 200, "a PATCH from loopback: {body}");
    let internal = netns.run(|| raw(&local, "GET /internal/books HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"));
    assert_eq!(internal.0, 200, "an internal route from loopback: {}", internal.1);
    // It said once, at start, how to set a token.
    let log = std::fs::read_to_string(&closed.spec.log).unwrap();
    assert_eq!(log.matches("BAZAR_TOKEN is not set").count(), 1, "{log}");
    assert!(log.contains("BAZAR_TOKEN_FILE"), "{log}");
    assert_eq!(closed.terminate(Duration::from_secs(15)), Some(0));

    // The explicit opt-out opens them.
    let mut open = netns.catalog(&dir.0, "open", port, &[("BAZAR_INSECURE_OPEN", "1")]);
    let (status, body) = patch(&remote, None);
    assert_eq!(status, 200, "BAZAR_INSECURE_OPEN=1, a PATCH from outside: {body}");
    assert!(std::fs::read_to_string(&open.spec.log).unwrap().contains("BAZAR_INSECURE_OPEN=1"));
    assert_eq!(open.terminate(Duration::from_secs(15)), Some(0));

    // With a token: the token admits a remote peer; without it, 401 even from loopback.
    let _guarded = netns.catalog(&dir.0, "guarded", port, &[("BAZAR_TOKEN", TOKEN)]);
    assert_eq!(patch(&remote, None).0, 401);
    assert_eq!(patch(&remote, Some(TOKEN)).0, 200);
    assert_eq!(netns.run(|| patch(&local, None)).0, 401);
}

/// A bad token setting stops a service at start: exit 2 and one line that names the
/// variable and never shows the value.
#[test]
fn bad_token_settings_stop_the_process() {
    let dir = TempDir::new("secure-settings");
    let file = |name: &str, text: &str| {
        let p = dir.0.join(name);
        std::fs::write(&p, text).unwrap();
        p.display().to_string()
    };
    let (short, placeholder, good) =
        (file("short", "s3cret\n"), file("placeholder", "change-me-to-a-long-random-secret\n"), file("good", TOKEN));
    let missing = dir.0.join("missing").display().to_string();
    type Case<'a> = (Vec<(&'a str, &'a str)>, &'a str, &'a str);
    let cases: Vec<Case> = vec![
        (vec![("BAZAR_TOKEN", "s3cret")], "BAZAR_TOKEN", "shorter than 16"),
        (vec![("BAZAR_TOKEN", "change-me-to-a-long-random-secret")], "BAZAR_TOKEN", "placeholder"),
        (vec![("BAZAR_TOKEN_FILE", &short)], "BAZAR_TOKEN_FILE", "shorter than 16"),
        (vec![("BAZAR_TOKEN_FILE", &placeholder)], "BAZAR_TOKEN_FILE", "placeholder"),
        (vec![("BAZAR_TOKEN_FILE", &missing)], "BAZAR_TOKEN_FILE", "cannot read"),
        (vec![("BAZAR_TOKEN", TOKEN), ("BAZAR_TOKEN_FILE", &good)], "BAZAR_TOKEN_FILE", "BAZAR_TOKEN"),
        (vec![("BAZAR_TOKEN", TOKEN), ("BAZAR_INSECURE_OPEN", "1")], "BAZAR_INSECURE_OPEN", "token"),
    ];
    for program in [CATALOG, env!("CARGO_BIN_EXE_bazar-order"), env!("CARGO_BIN_EXE_bazar-frontend")] {
        for (env, var, says) in &cases {
            let mut cmd = Command::new(program);
            for v in ["BAZAR_TOKEN", "BAZAR_TOKEN_FILE", "BAZAR_INSECURE_OPEN", "BAZAR_LOG"] {
                cmd.env_remove(v);
            }
            // Settings that are fine otherwise, so that the token is what stops it.
            cmd.envs([
                ("BAZAR_ROLE", "primary"),
                ("BAZAR_LISTEN", "127.0.0.1:1"),
                ("BAZAR_DATA_DIR", &dir.0.join("data").display().to_string()),
                ("BAZAR_CATALOG", "http://127.0.0.1:1"),
                ("BAZAR_ORDER", "http://127.0.0.1:1"),
            ]);
            let out = cmd.envs(env.iter().copied()).output().unwrap();
            let err = String::from_utf8_lossy(&out.stderr);
            assert_eq!(out.status.code(), Some(2), "{program} {env:?}: {err}");
            assert_eq!(err.lines().count(), 1, "{program} {env:?}: {err}");
            assert!(err.contains(var) && err.contains(says), "{program} {env:?}: {err}");
            assert!(!err.contains("s3cret") && !err.contains(TOKEN) && !err.contains("change-me-to"), "{err}");
        }
    }
}

/// `BAZAR_TOKEN_FILE`: the token read from a file (trailing newline and all) guards the
/// admin routes like `BAZAR_TOKEN`, and never appears in the process's environment.
#[test]
fn the_token_can_come_from_a_file() {
    let dir = TempDir::new("secure-file");
    let path = dir.0.join("secret");
    std::fs::write(&path, format!("{TOKEN}\n")).unwrap();
    let port = free_port();
    let p = Proc::start(Spec {
        name: "catalog".into(),
        program: CATALOG.into(),
        args: vec![],
        env: [
            ("BAZAR_ROLE", "primary".to_string()),
            ("BAZAR_LISTEN", format!("127.0.0.1:{port}")),
            ("BAZAR_DATA_DIR", dir.0.join("catalog").display().to_string()),
            ("BAZAR_TOKEN_FILE", path.display().to_string()),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v))
        .collect(),
        log: dir.0.join("catalog.log"),
    });
    let base = url(&p);
    wait_ready(&base);
    let addr = base.trim_start_matches("http://");
    assert_eq!(patch(addr, None).0, 401, "no token from loopback, with a token set");
    assert_eq!(patch(addr, Some(&TOKEN[1..])).0, 401);
    assert_eq!(patch(addr, Some(TOKEN)).0, 200);
    let environ = std::fs::read(format!("/proc/{}/environ", p.pid())).unwrap();
    assert!(!String::from_utf8_lossy(&environ).contains(TOKEN), "the token is not in the environment");
    let log = std::fs::read_to_string(&p.spec.log).unwrap();
    assert!(!log.contains(TOKEN) && !log.contains("BAZAR_TOKEN is not set"), "{log}");
}

/// `bazar-cluster token`: the launcher's token file is made once (mode 0600, 32 random
/// bytes), printed as a path (never the value) and kept on later starts.
#[test]
fn the_cluster_token_file_is_private_and_kept() {
    let dir = TempDir::new("secure-cluster-file");
    let data = dir.0.join("run");
    let token_path = || {
        let out = Command::new(env!("CARGO_BIN_EXE_bazar-cluster"))
            .arg("token")
            .env("BAZAR_DATA_DIR", &data)
            .env_remove("BAZAR_TOKEN")
            .env_remove("BAZAR_TOKEN_FILE")
            .output()
            .unwrap();
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        (String::from_utf8(out.stdout).unwrap(), String::from_utf8(out.stderr).unwrap())
    };
    let (first, err) = token_path();
    let path = PathBuf::from(first.trim());
    assert_eq!(path, std::path::absolute(data.join("token")).unwrap());
    let meta = std::fs::metadata(&path).unwrap();
    assert_eq!(meta.permissions().mode() & 0o777, 0o600, "mode of {}", path.display());
    let token = std::fs::read_to_string(&path).unwrap();
    let token = token.trim_end();
    assert_eq!(token.len(), 64, "32 random bytes in hex");
    assert!(token.bytes().all(|b| b.is_ascii_hexdigit()));
    assert!(!first.contains(token) && !err.contains(token), "the value is never printed");
    // Kept on the next start, and a mode widened by hand is narrowed again.
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).unwrap();
    let (second, err) = token_path();
    assert_eq!(second, first);
    assert_eq!(std::fs::read_to_string(&path).unwrap().trim_end(), token);
    assert_eq!(std::fs::metadata(&path).unwrap().permissions().mode() & 0o777, 0o600, "{err}");
    assert!(!err.contains(token));
}

/// A store as `bazar-cluster` starts it (the same `give_token` and `Running`, on free
/// ports): every service runs with the generated token, given as a file path; the admin
/// routes need it, and the services pass it to each other (a purchase through the front
/// end takes a copy for an order, an internal act).
#[test]
fn the_cluster_runs_every_service_with_its_token() {
    let dir = TempDir::new("secure-cluster");
    let bin_dir = Path::new(CATALOG).parent().unwrap().to_path_buf();
    let mut layout = bazar::cluster::Layout {
        dir: dir.0.join("run"),
        bin_dir,
        frontend: free_port(),
        catalogs: [free_port(), free_port()],
        orders: [free_port(), free_port()],
        memcached: None,
        etcd: None,
        env: vec![("BAZAR_THREADS".into(), "16".into())],
        quiet: true,
        lab: None,
    };
    let given = bazar::cluster::give_token(&mut layout, &bazar::config::Vars(&[])).unwrap();
    let path = match &given {
        bazar::cluster::StoreToken::File { path, created: true } => path.clone(),
        other => panic!("a new token file, not {other:?}"),
    };
    let token = std::fs::read_to_string(&path).unwrap().trim_end().to_string();
    assert!(!given.note().contains(&token) && given.note().contains(&path.display().to_string()));
    assert_eq!(given.value(&bazar::config::Vars(&[])).unwrap().as_deref(), Some(token.as_str()), "the lab's token");
    let mut running = bazar::cluster::Running::start(&layout).unwrap();
    let fe = layout.frontend_url();
    let [primary, replica] = layout.catalog_urls();
    for base in [&primary, &replica, &fe] {
        wait_ready(base);
    }
    eventually(START_DEADLINE, "the front end to see every back end ready", || {
        let a = json(&get(&fe, "/ready"));
        a["catalogs_ready"] == 2 && a["orders_ready"] == 2
    });
    let body = || Some(b"{\"quantity\": 9}".to_vec());
    assert_eq!(client().call(Method::PATCH, &primary, "/books/2", body()).unwrap().status, 401);
    assert_eq!(client_with_token(&token).call(Method::PATCH, &replica, "/books/2", body()).unwrap().status, 200);
    let deadline = Instant::now() + Duration::from_secs(20);
    let bought = loop {
        let a = call("POST", &fe, "/purchase/2", None);
        if a.status == 200 || Instant::now() > deadline {
            break a;
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    assert_eq!(bought.status, 200, "{}", String::from_utf8_lossy(&bought.body));
    assert_eq!(json(&get(&primary, "/books/2"))["quantity"], 8);
    for name in ["catalog-1", "catalog-2", "order-1", "order-2", "frontend"] {
        let pid = running.pid(name).unwrap();
        let environ = String::from_utf8_lossy(&std::fs::read(format!("/proc/{pid}/environ")).unwrap()).into_owned();
        assert!(environ.contains(&format!("BAZAR_TOKEN_FILE={}", path.display())), "{name}");
        assert!(!environ.contains(&token), "{name}: the token's value is not in its environment");
    }
    // A second start keeps the token.
    let mut again = layout.clone();
    again.env.clear();
    let kept = bazar::cluster::give_token(&mut again, &bazar::config::Vars(&[])).unwrap();
    assert_eq!(kept, bazar::cluster::StoreToken::File { path: path.clone(), created: false });
    assert_eq!(std::fs::read_to_string(&path).unwrap().trim_end(), token);
    running.stop();
}

/// `POST /purchase` from another web site is a 403 with a JSON error, and takes nothing;
/// the storefront's own request (same Origin as the Host, `Sec-Fetch-Site: same-origin`)
/// and a request without those headers (curl, the bench) buy.
#[test]
fn cross_site_purchases_are_refused() {
    let s = Store::start(Opts::default()).unwrap();
    s.set_stock(3, 10);
    let fe = s.fe();
    let addr = fe.trim_start_matches("http://").to_string();
    let buy = |headers: &str| {
        raw(
            &addr,
            &format!(
                "POST /purchase/3 HTTP/1.1\r\nHost: {addr}\r\n{headers}Content-Length: 0\r\nConnection: close\r\n\r\n"
            ),
        )
    };
    for headers in [
        "Origin: http://evil.example\r\n".to_string(),
        "Origin: http://evil.example\r\nSec-Fetch-Site: cross-site\r\n".to_string(),
        "Sec-Fetch-Site: cross-site\r\n".to_string(),
        "Origin: null\r\n".to_string(),
        format!("Origin: http://127.0.0.1:{}\r\n", free_port()),
    ] {
        let (status, body) = buy(&headers);
        assert_eq!(status, 403, "{headers:?}: {body}");
        let error: serde_json::Value = serde_json::from_str(&body).unwrap();
        assert!(error["error"].as_str().unwrap().contains("cross-site purchase refused"), "{body}");
    }
    assert_eq!(json(&get(&s.primary(), "/books/3"))["quantity"], 10, "a refused purchase takes nothing");
    for headers in [
        format!("Origin: http://{addr}\r\nSec-Fetch-Site: same-origin\r\n"),
        "Sec-Fetch-Site: none\r\n".into(),
        String::new(),
    ] {
        let (status, body) = buy(&headers);
        assert_eq!(status, 200, "{headers:?}: {body}");
    }
    assert_eq!(json(&get(&s.primary(), "/books/3"))["quantity"], 7);
}
