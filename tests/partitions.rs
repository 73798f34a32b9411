//! Every shape of partition (issue 28, part 3), with real processes in network namespaces
//! of the test's own (`common::netns`): one service per namespace, `iptables` DROP and
//! REJECT per direction. Jepsen's nemeses are the model: one node cut off, one way only
//! (asymmetric partitions break failure detectors), a node cut off from its coordinator
//! (etcd) only, and a bridge (one node sees both sides).
//!
//! Each test records the clients' history (reads, writes, purchases) and checks it with
//! the linearizability checker (`bazar::linearizable`); the order tests reconcile the
//! orders too (copies taken == orders logged, every acknowledged order on both order
//! servers after healing). No timing threshold is asserted: the checks are eventual, with
//! generous deadlines, for a loaded machine.
//!
//! They need root, `ip` and `iptables` (skipped with a note otherwise; required with
//! `BAZAR_REQUIRE_ROOT=1`), and etcd or memcached where named (`BAZAR_REQUIRE_ETCD=1`,
//! `BAZAR_REQUIRE_MEMCACHED=1`).

mod common;

use bazar::client::Http;
use bazar::linearizable::checker::{self, Call, History, Initial, Op, Ret, State, Verdict};
use bazar::linearizable::explain;
use common::netns::{can_partition, Cut, Net, TOKEN};
use common::*;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};
use ureq::http::Method;

const CATALOG: &str = env!("CARGO_BIN_EXE_bazar-catalog");
const ORDER: &str = env!("CARGO_BIN_EXE_bazar-order");
const FRONTEND: &str = env!("CARGO_BIN_EXE_bazar-frontend");
/// Each service has its namespace to itself: fixed ports.
const PORT: u16 = 8000;
const MEMCACHED_PORT: u16 = 11211;
const ETCD_PORT: u16 = 2379;
/// The book the clients work on.
const BOOK: u32 = 1;
/// A writer's `via` that writes to whichever catalog of its list leads.
const LEADER: &str = "leader";
/// The static stores' read lease (short, so that a test sees several).
const LEASE_MS: u64 = 1000;

/// The processes of one test, killed before its namespaces are deleted (fields drop in
/// order), and its directory.
struct Cluster {
    procs: Vec<Proc>,
    net: Net,
    dir: TempDir,
}

impl Cluster {
    /// Namespaces for `nodes`; None (a note printed) where the test cannot make them.
    fn new(test: &str, nodes: &[&str]) -> Option<Cluster> {
        if !can_partition(test) {
            return None;
        }
        Some(Cluster { procs: Vec::new(), net: Net::new(nodes), dir: TempDir::new(test) })
    }

    fn url(&self, node: &str) -> String {
        self.net.url(node, PORT)
    }

    /// Starts a Bazar service on `node`, listening on its address.
    fn service(&mut self, node: &str, program: &str, env: Vec<(&str, String)>) {
        let mut vars = vec![
            ("BAZAR_THREADS".to_string(), "16".to_string()),
            ("BAZAR_LISTEN".into(), format!("{}:{PORT}", self.net.addr(node))),
            ("BAZAR_DATA_DIR".into(), self.dir.0.join(node).display().to_string()),
        ];
        vars.extend(env.into_iter().map(|(k, v)| (k.to_string(), v)));
        let spec = Spec {
            name: node.into(),
            program: PathBuf::from(program),
            args: vec![],
            env: vars,
            log: self.dir.0.join(format!("{node}.log")),
        };
        self.procs.push(self.net.start(node, spec));
    }

    /// A one-member etcd on node `etcd`, or None where etcd is not installed.
    fn etcd(&mut self) -> Option<String> {
        let program = installed("etcd", "etcd-server", "BAZAR_REQUIRE_ETCD")?;
        let addr = self.net.addr("etcd");
        let client = format!("http://{addr}:{ETCD_PORT}");
        let data = self.dir.0.join("etcd-data");
        let args = bazar::cluster::etcd_args(&addr.to_string(), ETCD_PORT, ETCD_PORT + 1, &data);
        let log = self.dir.0.join("etcd.log");
        self.procs.push(self.net.start("etcd", Spec { name: "etcd".into(), program, args, env: vec![], log }));
        self.net.run(|| {
            let http = Http::new(Duration::from_secs(1), 1, None);
            eventually(START_DEADLINE, "etcd up", || {
                http.call(Method::GET, &client, "/health", None).is_ok_and(|a| a.status == 200)
            })
        });
        Some(client)
    }

    /// memcached on node `memcached`, or None where it is not installed.
    fn memcached(&mut self) -> Option<String> {
        let program = installed("memcached", "memcached", "BAZAR_REQUIRE_MEMCACHED")?;
        let addr = format!("{}:{MEMCACHED_PORT}", self.net.addr("memcached"));
        let mut args = bazar::cluster::memcached_args(MEMCACHED_PORT);
        args[1] = self.net.addr("memcached");
        let log = self.dir.0.join("memcached.log");
        self.procs
            .push(self.net.start("memcached", Spec { name: "memcached".into(), program, args, env: vec![], log }));
        self.net.run(|| {
            eventually(START_DEADLINE, "memcached up", || {
                std::net::TcpStream::connect_timeout(&addr.parse().unwrap(), Duration::from_millis(200)).is_ok()
            })
        });
        Some(addr)
    }

    /// A static primary on `cat1` and its replica on `cat2` (with `extra` settings each).
    fn static_catalogs(&mut self, extra: Vec<(&str, String)>) {
        let (p, r) = (self.url("cat1"), self.url("cat2"));
        let lease = ("BAZAR_LEASE_MS", LEASE_MS.to_string());
        let primary = [vec![("BAZAR_ROLE", "primary".into()), ("BAZAR_REPLICAS", r), lease.clone()], extra.clone()];
        self.service("cat1", CATALOG, primary.concat());
        self.service(
            "cat2",
            CATALOG,
            [vec![("BAZAR_ROLE", "replica".into()), ("BAZAR_PRIMARY", p), lease], extra].concat(),
        );
        self.net.wait_ready(&self.url("cat1"));
        self.net.wait_ready(&self.url("cat2"));
    }

    /// Catalogs on `nodes` electing their primary through `etcd`.
    fn etcd_catalogs(&mut self, nodes: &[&str], etcd: &str) {
        for node in nodes {
            self.service(node, CATALOG, vec![("BAZAR_ETCD", etcd.to_string())]);
        }
        for node in nodes {
            self.net.wait_ready(&self.url(node));
        }
    }

    /// Two order servers (`ord1`, `ord2`) and a front end (`fe`) over catalogs `cat1`,
    /// `cat2`; `memcached` for the front end where given.
    fn orders_and_frontend(&mut self, memcached: Option<&str>) {
        let catalogs = format!("{},{}", self.url("cat1"), self.url("cat2"));
        let (o1, o2) = (self.url("ord1"), self.url("ord2"));
        self.service("ord1", ORDER, vec![("BAZAR_CATALOG", catalogs.clone()), ("BAZAR_PEERS", o2.clone())]);
        self.service("ord2", ORDER, vec![("BAZAR_CATALOG", catalogs.clone()), ("BAZAR_PEERS", o1.clone())]);
        let mut env = vec![("BAZAR_CATALOG", catalogs), ("BAZAR_ORDER", format!("{o1},{o2}"))];
        if let Some(mc) = memcached {
            env.push(("BAZAR_MEMCACHED", mc.to_string()));
        }
        self.service("fe", FRONTEND, env);
        for node in ["ord1", "ord2", "fe"] {
            self.net.wait_ready(&self.url(node));
        }
        let fe = self.url("fe");
        self.net.run(|| {
            eventually(START_DEADLINE, "the front end to see every back end ready", || {
                http().call(Method::GET, &fe, "/ready", None).is_ok_and(|a| {
                    let v = json(&a);
                    v["catalogs_ready"] == 2 && v["orders_ready"] == 2
                })
            })
        });
    }

    /// The catalog among `nodes` that says it is the primary, waiting for one.
    fn primary_of(&self, nodes: &[&str]) -> String {
        self.net.run(|| {
            let mut found = None;
            eventually(Duration::from_secs(60), "a primary", || {
                found = nodes.iter().find(|n| role(&self.url(n)).as_deref() == Some("primary")).map(|n| n.to_string());
                found.is_some()
            });
            found.unwrap()
        })
    }
}

/// The test's HTTP client (with the token; a write may wait out a lost replica's lease).
fn http() -> Http {
    Http::new(Duration::from_secs(10), 16, Some(TOKEN.into()))
}

/// The role a catalog's `/health` names, if it answers.
/// A catalog's `/health`, when it answers 200 within a second.
fn health(base: &str) -> Option<serde_json::Value> {
    let a = Http::new(Duration::from_secs(1), 1, Some(TOKEN.into())).call(Method::GET, base, "/health", None).ok()?;
    (a.status == 200).then(|| json(&a))
}

fn role(base: &str) -> Option<String> {
    health(base)?["role"].as_str().map(str::to_string)
}

/// The catalog of `bases` (a comma-separated list) that says it is the primary of the
/// newest epoch: a primary cut off from etcd may go on naming itself primary of its old
/// epoch after another was elected, and a client that follows epochs writes to the new one.
fn newest_primary(bases: &str) -> Option<String> {
    bases
        .split(',')
        .filter_map(|u| health(u).filter(|h| h["role"] == "primary").map(|h| (h["epoch"].as_u64().unwrap_or(0), u)))
        .max_by_key(|(epoch, _)| *epoch)
        .map(|(_, u)| u.to_string())
}

fn cents(v: &serde_json::Value) -> Option<i64> {
    v["price"].as_f64().map(|p| (p * 100.0).round() as i64)
}

/// The clients' history, recorded as they go.
struct Recorder {
    start: Instant,
    ops: Mutex<Vec<Op>>,
    /// The ids of the orders acknowledged to the clients.
    orders: Mutex<Vec<String>>,
    http: Http,
}

impl Recorder {
    fn new() -> Recorder {
        Recorder { start: Instant::now(), ops: Mutex::new(Vec::new()), orders: Mutex::new(Vec::new()), http: http() }
    }

    fn micros(&self) -> u64 {
        self.start.elapsed().as_micros() as u64
    }

    /// Runs one operation on `base` (`via` names it; a front end reads `/info`) and
    /// records it. A read that fails is not recorded (it changed nothing); a write whose
    /// answer is not a 200 or a refusal is recorded with an unknown outcome.
    fn op(&self, client: usize, via: &str, base: &str, call: Call) -> Ret {
        let frontend = via.starts_with("fe");
        let (method, path, body) = match call {
            Call::Read if frontend => (Method::GET, format!("/info/{BOOK}"), None),
            Call::Read => (Method::GET, format!("/books/{BOOK}"), None),
            Call::SetQuantity(q) => (Method::PATCH, format!("/books/{BOOK}"), Some(format!("{{\"quantity\": {q}}}"))),
            Call::Purchase => (Method::POST, format!("/purchase/{BOOK}"), None),
            other => panic!("not used here: {other:?}"),
        };
        let inv = self.micros();
        let answer = self.http.call(method, base, &path, body.map(String::into_bytes));
        let resp = self.micros();
        let ret = match (&answer, call) {
            (Ok(a), Call::Purchase) if a.status == 200 => {
                let id = json(a)["order_id"].as_str().map(str::to_string);
                self.orders.lock().unwrap().push(id.unwrap_or_else(|| panic!("no order_id: {}", json(a))));
                Ret::Seen { price: None, quantity: None }
            }
            (Ok(a), _) if a.status == 200 => {
                let v = json(a);
                Ret::Seen { price: cents(&v), quantity: v["quantity"].as_i64() }
            }
            (Ok(a), Call::Purchase) if a.status == 409 => Ret::Refused,
            (_, Call::Read) => return Ret::Unknown,
            _ => Ret::Unknown,
        };
        let resp = (ret != Ret::Unknown).then_some(resp);
        let op = Op { client, book: BOOK, via: via.into(), call, ret, inv, resp };
        self.ops.lock().unwrap().push(op);
        ret
    }

    /// Acknowledged writes (or reads) that began and were answered within `window` (µs).
    fn acknowledged_in(&self, window: (u64, u64), write: bool) -> usize {
        let ops = self.ops.lock().unwrap();
        let within = |o: &&Op| o.inv >= window.0 && o.resp.is_some_and(|r| r <= window.1);
        ops.iter().filter(within).filter(|o| (o.call != Call::Read) == write).count()
    }
}

/// The book's state now, read on `base`.
fn state(base: &str) -> State {
    let a = http().call(Method::GET, base, &format!("/books/{BOOK}"), None).unwrap();
    assert_eq!(a.status, 200, "{}", String::from_utf8_lossy(&a.body));
    let v = json(&a);
    State { price: cents(&v).unwrap(), quantity: v["quantity"].as_i64().unwrap() }
}

/// Asserts that the history is linearizable, printing why not (the checker's witness).
fn assert_linearizable(name: &str, initial: State, rec: Recorder) {
    let ops = rec.ops.into_inner().unwrap();
    let reads = ops.iter().filter(|o| o.call == Call::Read).count();
    let history = History {
        name: name.into(),
        note: String::new(),
        expect: None,
        initial: vec![Initial { book: BOOK, state: initial }],
        ops,
    };
    let mut failures = String::new();
    for (book, verdict) in checker::check(&history) {
        match verdict {
            Verdict::Linearizable => {}
            Verdict::Unknown(why) => failures += &format!("book {book}: no verdict: {why}\n"),
            Verdict::NotLinearizable(stuck) => {
                failures += &explain::explain(book, initial, &checker::book_ops(&history, book), &stuck).text
            }
        }
    }
    if !failures.is_empty() {
        let path = std::env::temp_dir().join(format!("bazar-history-{name}-{}.json", std::process::id()));
        let _ = std::fs::write(&path, serde_json::to_string_pretty(&history).unwrap());
        panic!("{name}: not linearizable ({} ops, history in {}):\n{failures}", history.ops.len(), path.display());
    }
    eprintln!("{name}: {} operations ({reads} reads), linearizable", history.ops.len());
}

/// Runs `writers` (base, via) and `readers` (base, via) as clients until `stop`; the
/// writers set increasing quantities (or purchase, with `purchase`); each client pauses
/// `pause` between its operations.
fn clients(
    rec: &Recorder,
    stop: &AtomicBool,
    writers: &[(String, String)],
    readers: &[(String, String)],
    purchase: bool,
    pause: Duration,
) {
    std::thread::scope(|s| {
        for (i, (base, via)) in writers.iter().enumerate() {
            s.spawn(move || {
                let mut q = 100 * (i as i64 + 1);
                // `via` "leader": `base` lists the catalogs, and the writer writes to the one
                // that says it is the primary of the newest epoch, looking again after a
                // failed write (so few writes have an unknown outcome, each of which widens
                // the checker's search).
                let mut target = (via != LEADER).then(|| base.clone());
                while !stop.load(Ordering::SeqCst) {
                    let Some(to) = target.clone().or_else(|| newest_primary(base)) else {
                        std::thread::sleep(Duration::from_millis(200));
                        continue;
                    };
                    q += 1;
                    let ret = rec.op(i, via, &to, if purchase { Call::Purchase } else { Call::SetQuantity(q) });
                    target = match ret {
                        Ret::Unknown if via == LEADER => {
                            std::thread::sleep(Duration::from_millis(300));
                            None
                        }
                        _ => Some(to),
                    };
                    std::thread::sleep(pause);
                }
            });
        }
        for (i, (base, via)) in readers.iter().enumerate() {
            s.spawn(move || {
                while !stop.load(Ordering::SeqCst) {
                    rec.op(writers.len() + i, via, base, Call::Read);
                    std::thread::sleep(pause);
                }
            });
        }
    });
}

/// Sets its flag when dropped: on return and on a panic alike.
struct StopOnDrop<'a>(&'a AtomicBool);

impl Drop for StopOnDrop<'_> {
    fn drop(&mut self) {
        self.0.store(true, Ordering::SeqCst);
    }
}

/// The phases of a run: `before` healthy, the partition made by `cut` for `during`, then
/// healed for `after`; `middle` runs (on the test's thread) while the partition lasts.
/// Returns the moments (µs of the recording) the partition began and was healed.
#[allow(clippy::too_many_arguments)]
fn run_phases(
    c: &Cluster,
    rec: &Recorder,
    writers: &[(String, String)],
    readers: &[(String, String)],
    purchase: bool,
    cut: impl FnOnce(&Net) + Send,
    during: Duration,
    middle: impl FnOnce() + Send,
) -> (u64, u64) {
    let stop = AtomicBool::new(false);
    let (mut cut_at, mut healed_at) = (0, 0);
    // The checker takes at most `checker::MAX_OPS` per book: the clients pace themselves
    // to stay well below it.
    let total = (Duration::from_secs(6) + during).as_millis() as u64;
    let pause = Duration::from_millis(100.max((writers.len() + readers.len()) as u64 * total / 700));
    c.net.run(|| {
        std::thread::scope(|s| {
            s.spawn(|| clients(rec, &stop, writers, readers, purchase, pause));
            // The clients stop when this returns or panics (else the scope would wait on them).
            let _stop = StopOnDrop(&stop);
            std::thread::sleep(Duration::from_secs(2));
            cut(&c.net);
            cut_at = rec.micros();
            let until = Instant::now() + during;
            middle();
            std::thread::sleep(until.saturating_duration_since(Instant::now()));
            c.net.heal();
            healed_at = rec.micros();
            std::thread::sleep(Duration::from_secs(4));
            stop.store(true, Ordering::SeqCst);
        })
    });
    (cut_at, healed_at)
}

/// The replica cut off one way from a live primary: its requests to the primary
/// REJECTed (connection refused, as if no primary ran) and the primary's pushes to it
/// DROPped; or only its requests DROPped. The primary gives the replica up, waits out its
/// lease and acknowledges writes; the replica must stop answering once its lease has run
/// out. On main a refused renewal extended the lease: the replica answered the old stock
/// for as long as the partition lasted (not linearizable).
fn replica_cut_one_way(test: &str, how: Cut, etcd: bool) {
    let nodes: &[&str] = if etcd { &["etcd", "cat1", "cat2"] } else { &["cat1", "cat2"] };
    let Some(mut c) = Cluster::new(test, nodes) else { return };
    let (primary, replica) = if etcd {
        let Some(endpoint) = c.etcd() else { return };
        c.etcd_catalogs(&["cat1", "cat2"], &endpoint);
        let p = c.primary_of(&["cat1", "cat2"]);
        let r = if p == "cat1" { "cat2" } else { "cat1" };
        (p, r.to_string())
    } else {
        c.static_catalogs(vec![]);
        ("cat1".to_string(), "cat2".to_string())
    };
    let (p, r) = (c.url(&primary), c.url(&replica));
    // The replica serves before the cut (it holds a lease).
    c.net.run(|| {
        eventually(Duration::from_secs(30), "the replica serving", || {
            http().call(Method::GET, &r, &format!("/books/{BOOK}"), None).is_ok_and(|a| a.status == 200)
        })
    });
    let initial = c.net.run(|| state(&p));
    let rec = Recorder::new();
    let writers = vec![(p.clone(), primary.clone())];
    let readers = vec![(r.clone(), replica.clone()), (r.clone(), replica.clone()), (p.clone(), primary.clone())];
    let (rp, pr) = (replica.clone(), primary.clone());
    let cut = move |net: &Net| match how {
        Cut::Reject => {
            net.cut(&rp, &pr, Cut::Reject);
            net.cut(&pr, &rp, Cut::Drop);
        }
        Cut::Drop => net.cut(&rp, &pr, Cut::Drop),
    };
    let window = run_phases(&c, &rec, &writers, &readers, false, cut, Duration::from_secs(10), || {});
    let acked = rec.acknowledged_in(window, true);
    assert!(acked > 0, "no write was acknowledged while the replica was cut off");
    eprintln!("{test}: {acked} writes acknowledged by the primary during the partition");
    assert_linearizable(test, initial, rec);
    // The replica serves again once healed.
    c.net.run(|| {
        eventually(Duration::from_secs(60), "the replica serving again after healing", || {
            http().call(Method::GET, &r, &format!("/books/{BOOK}"), None).is_ok_and(|a| a.status == 200)
        })
    });
}

#[test]
fn a_replica_rejected_one_way_from_a_live_primary_serves_no_stale_read() {
    replica_cut_one_way("one-way-reject-static", Cut::Reject, false);
}

#[test]
fn a_replica_dropped_one_way_from_a_live_primary_serves_no_stale_read() {
    replica_cut_one_way("one-way-drop-static", Cut::Drop, false);
}

#[test]
fn with_etcd_a_replica_rejected_one_way_serves_no_stale_read() {
    replica_cut_one_way("one-way-reject-etcd", Cut::Reject, true);
}

#[test]
fn with_etcd_a_replica_dropped_one_way_serves_no_stale_read() {
    replica_cut_one_way("one-way-drop-etcd", Cut::Drop, true);
}

/// The primary cut off from etcd only (both ways, DROP): it steps down once its
/// leadership may have lapsed, and the replica, which still reaches etcd, takes over;
/// clients writing and reading on both catalogs see a linearizable history.
#[test]
fn a_primary_cut_off_from_etcd_steps_down_and_a_replica_takes_over() {
    let test = "primary-cut-from-etcd";
    let Some(mut c) = Cluster::new(test, &["etcd", "cat1", "cat2"]) else { return };
    let Some(endpoint) = c.etcd() else { return };
    c.etcd_catalogs(&["cat1", "cat2"], &endpoint);
    let old = c.primary_of(&["cat1", "cat2"]);
    let new = if old == "cat1" { "cat2" } else { "cat1" };
    let (p, r) = (c.url(&old), c.url(new));
    let initial = c.net.run(|| state(&p));
    let rec = Recorder::new();
    let (o, n) = (old.clone(), new.to_string());
    let both = vec![(p.clone(), old.clone()), (r.clone(), new.to_string())];
    let writers = vec![(format!("{p},{r}"), LEADER.to_string())];
    let window = run_phases(
        &c,
        &rec,
        &writers,
        &both,
        false,
        move |net| net.cut_both(&o, "etcd", Cut::Drop),
        Duration::from_secs(25),
        || {
            // The one cut off cannot hear from etcd that it was replaced: it may go on naming
            // itself primary in `/health`, but acknowledges and grants nothing once its
            // leadership may have lapsed (the history's check shows it).
            eventually(Duration::from_secs(90), "the other catalog to lead", || {
                role(&c.url(&n)).as_deref() == Some("primary")
            });
            let write = http().call(
                Method::PATCH,
                &c.url(&old),
                &format!("/books/{BOOK}"),
                Some(b"{\"quantity\": 1}".to_vec()),
            );
            let answer =
                write.map_or_else(|e| e.to_string(), |a| format!("{} {}", a.status, String::from_utf8_lossy(&a.body)));
            eprintln!("{test}: {n} leads; {old} says {:?}, a write sent to it: {answer}", role(&c.url(&old)));
        },
    );
    assert!(rec.acknowledged_in(window, true) > 0, "no write acknowledged during the partition");
    assert_linearizable(test, initial, rec);
}

/// The front end cut off from memcached only (both ways, DROP), memcached still reached
/// by the catalogs: reads through the front end go on from the catalogs, and none shows a
/// stock older than an acknowledged write.
#[test]
fn a_frontend_cut_off_from_memcached_serves_no_stale_read() {
    let test = "frontend-cut-from-memcached";
    let Some(mut c) = Cluster::new(test, &["memcached", "cat1", "cat2", "ord1", "ord2", "fe"]) else { return };
    let Some(mc) = c.memcached() else { return };
    c.static_catalogs(vec![("BAZAR_MEMCACHED", mc.clone())]);
    c.orders_and_frontend(Some(&mc));
    let (p, fe) = (c.url("cat1"), c.url("fe"));
    let initial = c.net.run(|| state(&p));
    let rec = Recorder::new();
    let writers = vec![(p.clone(), "cat1".to_string())];
    let readers = vec![(fe.clone(), "fe".to_string()), (fe.clone(), "fe".to_string()), (p.clone(), "cat1".to_string())];
    let cut = |net: &Net| net.cut_both("fe", "memcached", Cut::Drop);
    let window = run_phases(&c, &rec, &writers, &readers, false, cut, Duration::from_secs(10), || {});
    assert!(rec.acknowledged_in(window, true) > 0, "no write acknowledged during the partition");
    assert!(rec.acknowledged_in(window, false) > 0, "no read answered during the partition");
    assert_linearizable(test, initial, rec);
}

/// The two order servers cut off from each other (`how`, both ways): purchases go on,
/// each server pushing no more to the peer it cannot reach after the first failure (so
/// no purchase waits for the peer's timeout); once healed the logs converge: every
/// acknowledged order on both servers, and copies taken == orders logged.
fn orders_cut_from_each_other(test: &str, how: Cut) {
    let Some(mut c) = Cluster::new(test, &["cat1", "cat2", "ord1", "ord2", "fe"]) else { return };
    c.static_catalogs(vec![]);
    c.orders_and_frontend(None);
    let (p, fe, o1, o2) = (c.url("cat1"), c.url("fe"), c.url("ord1"), c.url("ord2"));
    let stock = 10_000;
    let initial = c.net.run(|| {
        let a = http().call(
            Method::PATCH,
            &p,
            &format!("/books/{BOOK}"),
            Some(format!("{{\"quantity\": {stock}}}").into_bytes()),
        );
        assert_eq!(a.unwrap().status, 200);
        state(&p)
    });
    let failures_before: f64 =
        c.net.run(|| [&o1, &o2].iter().map(|o| metric_of(o, "bazar_orders_push_failures_total")).sum());
    let rec = Recorder::new();
    // Purchases straight to each order server (the front end spreads them too).
    let writers =
        vec![(o1.clone(), "ord1".to_string()), (o2.clone(), "ord2".to_string()), (fe.clone(), "fe".to_string())];
    let readers = vec![(p.clone(), "cat1".to_string()), (fe.clone(), "fe".to_string())];
    let cut = move |net: &Net| net.cut_both("ord1", "ord2", how);
    let window = run_phases(&c, &rec, &writers, &readers, true, cut, Duration::from_secs(10), || {});
    let during = rec.acknowledged_in(window, true);
    assert!(during >= 10, "only {during} purchases acknowledged during the partition");
    let failures =
        c.net.run(|| [&o1, &o2].iter().map(|o| metric_of(o, "bazar_orders_push_failures_total")).sum::<f64>())
            - failures_before;
    eprintln!("{test}: {during} purchases during the partition, {failures} pushes to the cut-off peer failed");
    assert!(
        failures < during as f64 / 2.0,
        "{failures} failed pushes for {during} purchases: purchases kept pushing to (and waiting for) a cut-off peer"
    );
    let acked: Vec<String> = rec.orders.lock().unwrap().clone();
    c.net.run(|| {
        eventually(Duration::from_secs(60), "both order servers to hold the same orders, one per copy taken", || {
            let (a, b) = (order_ids(&o1), order_ids(&o2));
            let taken = stock - state(&p).quantity;
            a == b && a.len() as i64 == taken && acked.iter().all(|id| a.contains(id))
        })
    });
    eprintln!("{test}: healed, both order servers hold the same orders, one per copy taken");
    assert_linearizable(test, initial, rec);
}

#[test]
fn order_servers_dropped_from_each_other_take_purchases_and_converge() {
    orders_cut_from_each_other("orders-drop", Cut::Drop);
}

#[test]
fn order_servers_rejected_from_each_other_take_purchases_and_converge() {
    orders_cut_from_each_other("orders-reject", Cut::Reject);
}

/// Every order id on an order server (every page).
fn order_ids(base: &str) -> std::collections::BTreeSet<String> {
    let (mut ids, mut target) = (std::collections::BTreeSet::new(), "/orders?limit=1000".to_string());
    loop {
        let a = http().call(Method::GET, base, &target, None).unwrap();
        assert_eq!(a.status, 200, "{base}{target}: {}", String::from_utf8_lossy(&a.body));
        ids.extend(json(&a).as_array().unwrap().iter().map(|o| o["order_id"].as_str().unwrap().to_string()));
        match a.link.as_deref().and_then(bazar::page::next_target) {
            Some(next) => target = next.to_string(),
            None => return ids,
        }
    }
}

/// A metric of `base` (from the client namespace).
fn metric_of(base: &str, name: &str) -> f64 {
    let a = http().call(Method::GET, base, "/metrics", None).unwrap();
    let text = String::from_utf8(a.body).unwrap();
    text.lines().find_map(|l| l.strip_prefix(&format!("{name} "))).map_or(0.0, |v| v.parse().unwrap())
}

/// A bridge: three catalogs with etcd; the primary is cut off (both ways, DROP) from etcd
/// and from one replica, while the other replica (the bridge) still sees both sides. One
/// primary is left (the old one steps down; one of the others leads) and the history of
/// clients writing and reading on all three is linearizable.
#[test]
fn a_bridge_partition_keeps_one_primary() {
    let test = "bridge";
    let all = ["cat1", "cat2", "cat3"];
    let Some(mut c) = Cluster::new(test, &["etcd", "cat1", "cat2", "cat3"]) else { return };
    let Some(endpoint) = c.etcd() else { return };
    c.etcd_catalogs(&all, &endpoint);
    let old = c.primary_of(&all);
    let others: Vec<&str> = all.iter().copied().filter(|n| *n != old).collect();
    let (bridge, far) = (others[0].to_string(), others[1].to_string());
    let initial = c.net.run(|| state(&c.url(&old)));
    let rec = Recorder::new();
    let every: Vec<(String, String)> = all.iter().map(|n| (c.url(n), n.to_string())).collect();
    let (o, f) = (old.clone(), far.clone());
    let cut = move |net: &Net| {
        net.cut_both(&o, "etcd", Cut::Drop);
        net.cut_both(&o, &f, Cut::Drop);
    };
    let primaries = |c: &Cluster| all.iter().filter(|n| role(&c.url(n)).as_deref() == Some("primary")).count();
    let writers = vec![(every.iter().map(|(u, _)| u.clone()).collect::<Vec<_>>().join(","), LEADER.to_string())];
    let window = run_phases(&c, &rec, &writers, &every, false, cut, Duration::from_secs(25), || {
        eventually(Duration::from_secs(90), "the old primary to step down and another to lead", || {
            role(&c.url(&old)).as_deref() != Some("primary") && primaries(&c) == 1
        });
        // Steady: exactly one primary while the bridge lasts.
        for _ in 0..10 {
            let n = primaries(&c);
            assert!(n <= 1, "{n} catalogs say they are the primary (bridge {bridge})");
            std::thread::sleep(Duration::from_millis(200));
        }
    });
    assert!(rec.acknowledged_in(window, true) > 0, "no write acknowledged during the partition");
    c.net.run(|| {
        eventually(Duration::from_secs(30), "one primary after healing", || primaries(&c) == 1);
    });
    assert_linearizable(test, initial, rec);
}
