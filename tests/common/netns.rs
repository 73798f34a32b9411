//! Network namespaces for partition tests: one namespace per service, each joined by a
//! veth pair to a bridge in a hub namespace of the test's own, and `iptables` rules in a
//! service's namespace to cut what it sends to another (DROP or REJECT, one way or both).
//!
//! Nothing of the host's own network is touched: every link, address and rule lives in a
//! namespace the test created (the veth pairs are made inside the hub, their other end
//! put straight into the service's namespace), and every namespace is deleted on drop,
//! after a panic too. Names carry the test process's id and a counter, so tests run in
//! parallel; addresses (`10.77.0.x`) may repeat between tests, as each test's hub is its
//! own network. Services listen on their namespace's address (fixed ports: each has the
//! namespace to itself) and are started with `ip netns exec`, which execs the program (the
//! pid is the service's). The test talks to them from a namespace of its own, `client`,
//! through [`Net::run`].
//!
//! Services answer admin and internal routes to non-loopback peers only with a token: every
//! process gets [`TOKEN`], and the test's client sends it.

use super::{eventually, Proc, Spec, START_DEADLINE};
use std::io::Write;
use std::path::PathBuf;
use std::process::Command;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

/// The token of every process in a namespace test (`BAZAR_TOKEN`, at least 16 bytes).
pub const TOKEN: &str = "partition-test-token-0123456789";

/// What a cut does to the packets it matches.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Cut {
    /// Silently dropped: the sender waits for its timeout.
    Drop,
    /// Answered at once with a TCP reset: the sender sees "connection refused", as if no
    /// process listened there.
    Reject,
}

/// Whether this test may create namespaces and rules (root, `ip` and `iptables`
/// installed); prints a SKIPPED note otherwise, or fails where `BAZAR_REQUIRE_ROOT=1` (as
/// in CI).
pub fn can_partition(test: &str) -> bool {
    // SAFETY: geteuid has no preconditions.
    let root = unsafe { libc::geteuid() } == 0;
    let missing: Vec<&str> =
        ["ip", "iptables"].into_iter().filter(|p| bazar::cluster::find_program(p).is_none()).collect();
    let why = match (root, missing.is_empty()) {
        (true, true) => return true,
        (false, _) => "it needs root (network namespaces, iptables)".to_string(),
        (true, false) => format!("{} not installed (apt-get install iproute2 iptables)", missing.join(" and ")),
    };
    if std::env::var("BAZAR_REQUIRE_ROOT").as_deref() == Ok("1") {
        panic!("{test}: BAZAR_REQUIRE_ROOT=1 but {why}");
    }
    let _ = std::io::stderr().write_all(format!("SKIPPED {test}: {why}\n").as_bytes());
    false
}

fn run(program: &str, args: &[&str]) {
    let out = Command::new(program).args(args).output().unwrap_or_else(|e| panic!("run {program}: {e}"));
    assert!(out.status.success(), "{program} {}: {}", args.join(" "), String::from_utf8_lossy(&out.stderr));
}

/// A test's network: a hub namespace with a bridge, and one namespace per node.
pub struct Net {
    hub: String,
    /// Node names, in order; node `i` is `10.77.0.(i + 2)`.
    nodes: Vec<String>,
    prefix: String,
}

impl Net {
    /// Namespaces for `nodes` (plus `client`, the test's own), joined by a bridge.
    pub fn new(nodes: &[&str]) -> Net {
        static N: AtomicU32 = AtomicU32::new(0);
        let prefix = format!("bzp{}-{}", std::process::id(), N.fetch_add(1, Ordering::SeqCst));
        let mut names: Vec<String> = vec!["client".into()];
        names.extend(nodes.iter().map(|n| n.to_string()));
        let net = Net { hub: format!("{prefix}-hub"), nodes: names, prefix };
        run("ip", &["netns", "add", &net.hub]);
        run("ip", &["-n", &net.hub, "link", "add", "br0", "type", "bridge"]);
        run("ip", &["-n", &net.hub, "link", "set", "br0", "up"]);
        for (i, node) in net.nodes.iter().enumerate() {
            let (ns, hub_if) = (net.ns(node), format!("v{i}"));
            run("ip", &["netns", "add", &ns]);
            run("ip", &["-n", &net.hub, "link", "add", &hub_if, "type", "veth", "peer", "name", "eth0", "netns", &ns]);
            run("ip", &["-n", &net.hub, "link", "set", &hub_if, "master", "br0"]);
            run("ip", &["-n", &net.hub, "link", "set", &hub_if, "up"]);
            run("ip", &["-n", &ns, "addr", "add", &format!("{}/24", net.addr(node)), "dev", "eth0"]);
            run("ip", &["-n", &ns, "link", "set", "eth0", "up"]);
            run("ip", &["-n", &ns, "link", "set", "lo", "up"]);
        }
        net
    }

    fn index(&self, node: &str) -> usize {
        self.nodes.iter().position(|n| n == node).unwrap_or_else(|| panic!("no node {node}"))
    }

    /// The namespace of `node`.
    pub fn ns(&self, node: &str) -> String {
        format!("{}-{node}", self.prefix)
    }

    /// The address of `node`.
    pub fn addr(&self, node: &str) -> String {
        format!("10.77.0.{}", self.index(node) + 2)
    }

    /// `http://` + the address of `node` + `:port`.
    pub fn url(&self, node: &str, port: u16) -> String {
        format!("http://{}:{port}", self.addr(node))
    }

    /// Starts `spec` inside `node`'s namespace, with the test token.
    pub fn start(&self, node: &str, mut spec: Spec) -> Proc {
        let mut args = vec!["netns".to_string(), "exec".into(), self.ns(node), spec.program.display().to_string()];
        args.append(&mut spec.args);
        spec.args = args;
        spec.program = bazar::cluster::find_program("ip").unwrap_or_else(|| PathBuf::from("ip"));
        spec.env.push(("BAZAR_TOKEN".into(), TOKEN.into()));
        Proc::start(spec)
    }

    /// Runs `f` on a thread inside the `client` namespace: its sockets are that
    /// namespace's (the services' addresses are reachable from it, the host's are not).
    pub fn run<T: Send>(&self, f: impl FnOnce() -> T + Send) -> T {
        in_namespace(&self.ns("client"), f)
    }

    fn iptables(&self, node: &str, args: &[&str]) {
        let ns = self.ns(node);
        let mut all = vec!["netns", "exec", &ns, "iptables", "-w"];
        all.extend(args);
        run("ip", &all);
    }

    /// Cuts what `from` sends to `to` (one way): `to` still reaches `from`, but for TCP
    /// no connection either way completes the handshake's `from` half.
    pub fn cut(&self, from: &str, to: &str, how: Cut) {
        let dest = self.addr(to);
        match how {
            Cut::Drop => self.iptables(from, &["-A", "OUTPUT", "-d", &dest, "-j", "DROP"]),
            Cut::Reject => self.iptables(
                from,
                &["-A", "OUTPUT", "-d", &dest, "-p", "tcp", "-j", "REJECT", "--reject-with", "tcp-reset"],
            ),
        }
        eprintln!("partition: {from} -> {to} {how:?}");
    }

    /// Cuts both ways between `a` and `b`.
    pub fn cut_both(&self, a: &str, b: &str, how: Cut) {
        self.cut(a, b, how);
        self.cut(b, a, how);
    }

    /// Removes every cut.
    pub fn heal(&self) {
        for node in &self.nodes {
            self.iptables(node, &["-F", "OUTPUT"]);
        }
        eprintln!("partition: healed");
    }

    /// Waits until `url` answers `/ready` 200, from the client namespace.
    pub fn wait_ready(&self, url: &str) {
        self.run(|| {
            let http = bazar::client::Http::new(Duration::from_secs(1), 1, Some(TOKEN.into()));
            eventually(START_DEADLINE, &format!("{url} ready"), || {
                http.call(ureq::http::Method::GET, url, "/ready", None).is_ok_and(|a| a.status == 200)
            })
        })
    }
}

impl Drop for Net {
    fn drop(&mut self) {
        for node in &self.nodes {
            let _ = Command::new("ip").args(["netns", "del", &self.ns(node)]).output();
        }
        let _ = Command::new("ip").args(["netns", "del", &self.hub]).output();
    }
}

/// Runs `f` on a thread that has joined the network namespace `name` (`ip netns add`): its
/// sockets, and those of the threads it starts, are that namespace's.
pub fn in_namespace<T: Send>(name: &str, f: impl FnOnce() -> T + Send) -> T {
    let path = format!("/run/netns/{name}");
    std::thread::scope(|s| {
        s.spawn(|| {
            let file = std::fs::File::open(&path).unwrap_or_else(|e| panic!("{path}: {e}"));
            // SAFETY: setns(2) on a namespace file held open; it moves only this thread.
            let rc = unsafe { libc::setns(std::os::fd::AsRawFd::as_raw_fd(&file), libc::CLONE_NEWNET) };
            assert_eq!(rc, 0, "setns: {}", std::io::Error::last_os_error());
            f()
        })
        .join()
        .unwrap_or_else(|e| std::panic::resume_unwind(e))
    })
}
