//! The store end to end: real binaries, real sockets, temp data dirs.

mod common;

use common::*;
use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

fn store() -> Store {
    Store::start(Opts::default()).expect("no memcached needed")
}

/// `check(method, base, path, body, status)` as a table.
fn check(cases: &[(&str, &str, &str, Option<&str>, u16)]) {
    for &(method, base, path, body, want) in cases {
        let a = call(method, base, path, body);
        assert_eq!(a.status, want, "{method} {base}{path} {body:?}: {}", String::from_utf8_lossy(&a.body));
        if want >= 400 {
            let v = json(&a);
            assert!(v["error"].as_str().is_some_and(|m| !m.is_empty()), "{method} {path}: error body {v}");
        }
    }
}

#[test]
fn public_api_answers_and_errors() {
    let s = store();
    let fe = s.fe();

    // Search: percent-decoded, case-insensitive; unknown topic is empty.
    let a = get(&fe, "/search/distributed%20systems");
    assert_eq!(a.status, 200);
    assert_eq!(
        json(&a),
        serde_json::json!([{"id": 1, "title": "How to get a good grade in DOS in 40 minutes a day"}, {"id": 2, "title": "RPCs for Noobs"}])
    );
    assert_eq!(a.cache.as_deref(), Some("off"));
    assert!(a.backend.is_some());
    assert_eq!(json(&get(&fe, "/search/UNDERGRADUATE%20School")).as_array().unwrap().len(), 5);
    assert_eq!(json(&get(&fe, "/search/cooking")), serde_json::json!([]));

    // Info.
    let a = get(&fe, "/info/2");
    assert_eq!(a.status, 200);
    let book = json(&a);
    assert_eq!(book["title"], "RPCs for Noobs");
    assert_eq!(book["topic"], "distributed systems");
    assert_eq!(book["price"], serde_json::json!(19.5));
    assert_eq!(a.cache.as_deref(), Some("off"));

    // Purchase.
    let a = call("POST", &fe, "/purchase/2", None);
    assert_eq!(a.status, 200, "{}", String::from_utf8_lossy(&a.body));
    let receipt = json(&a);
    assert_eq!(receipt["message"], "bought book RPCs for Noobs");
    assert_eq!(receipt["id"], 2);
    assert!(receipt["order_id"].as_str().is_some_and(|s| !s.is_empty()));
    assert!(a.backend.is_some());
    assert_eq!(json(&get(&fe, "/info/2"))["quantity"], book["quantity"].as_u64().unwrap() - 1);
    s.set_stock(4, 0);

    let (p, o) = (s.primary(), s.order(0));
    check(&[
        ("GET", &fe, "/info/99", None, 404),
        ("GET", &fe, "/info/0", None, 400),
        ("GET", &fe, "/info/-1", None, 400),
        ("GET", &fe, "/info/1.5", None, 400),
        ("GET", &fe, "/info/abc", None, 400),
        ("GET", &fe, "/info/99999999999999999999", None, 400),
        ("GET", &fe, "/search/%zz", None, 400),
        ("GET", &fe, "/search/%ff", None, 400),
        ("POST", &fe, "/purchase/99", None, 404),
        ("POST", &fe, "/purchase/4", None, 409),
        ("POST", &fe, "/purchase/zero", None, 400),
        ("POST", &fe, "/info/1", None, 405),
        ("GET", &fe, "/purchase/1", None, 405),
        ("GET", &fe, "/nope", None, 404),
        ("GET", &p, "/books/99", None, 404),
        ("PATCH", &p, "/books/1", Some("{\"price\": "), 400),
        ("PATCH", &p, "/books/1", Some("{\"price\": \"cheap\"}"), 400),
        ("PATCH", &p, "/books/1", Some("{\"price\": 1.234}"), 400),
        ("PATCH", &p, "/books/1", Some("{\"price\": -3}"), 400),
        ("PATCH", &p, "/books/1", Some("{\"quantity\": -3}"), 400),
        ("PATCH", &p, "/books/1", Some("{\"quantity_delta\": -100000}"), 400),
        ("PATCH", &p, "/books/1", Some("{\"colour\": 1}"), 400),
        ("PATCH", &p, "/books/1", Some("{}"), 400),
        ("PATCH", &p, "/books/99", Some("{\"quantity\": 1}"), 404),
        ("DELETE", &p, "/books/1", None, 405),
        ("POST", &p, "/books/4/purchase", None, 409),
        ("GET", &o, "/orders/nope", None, 404),
        ("PUT", &o, "/orders", None, 405),
    ]);
    let a = call("PATCH", &p, "/books/1", Some(&format!("{{\"title\": \"{}\"}}", "x".repeat(1 << 20))));
    assert_eq!(a.status, 413);
    let a = call("DELETE", &fe, "/info/1", None);
    assert_eq!(a.status, 405);

    // The receipt's order is on the order servers.
    let order_id = receipt["order_id"].as_str().unwrap();
    for i in 0..2 {
        eventually(Duration::from_secs(5), "order on both order servers", || {
            get(&s.order(i), &format!("/orders/{order_id}")).status == 200
        });
    }

    // Health and metrics on every service.
    for p in s.all() {
        let base = url(p);
        let h = json(&get(&base, "/health"));
        assert_eq!(h["status"], "ok", "{base}");
        assert!(h["role"].is_string());
        let m = get(&base, "/metrics");
        assert_eq!(m.status, 200);
        let text = String::from_utf8(m.body).unwrap();
        assert!(text.contains("bazar_requests_total{route="), "{base}: {text}");
    }
    let text = String::from_utf8(get(&fe, "/metrics").body).unwrap();
    assert!(text.contains("route=\"/info/{id}\",status=\"404\"}"), "{text}");
    let text = String::from_utf8(get(&s.order(0), "/metrics").body).unwrap();
    assert!(text.contains("bazar_orders_taken_total"), "{text}");
}

#[test]
fn writes_through_the_replica_reach_both_catalogs() {
    let s = store();
    let (p, r) = (s.primary(), s.replica());
    // A write sent to the replica is on both catalogs when acknowledged.
    let a = call("PATCH", &r, "/books/3", Some("{\"price\": 12.34, \"quantity\": 7}"));
    assert_eq!(a.status, 200, "{}", String::from_utf8_lossy(&a.body));
    for base in [&p, &r] {
        let b = json(&get(base, "/books/3"));
        assert_eq!((b["price"].as_f64(), b["quantity"].as_u64()), (Some(12.34), Some(7)), "{base}");
    }
    // A mixed workload from several threads, through both catalogs.
    std::thread::scope(|scope| {
        for t in 0..6 {
            let (p, r) = (p.clone(), r.clone());
            scope.spawn(move || {
                for i in 0..20 {
                    let base = if (t + i) % 2 == 0 { &p } else { &r };
                    let id = 1 + (t + i) % 7;
                    let (method, path, body) = match i % 4 {
                        0 => (
                            "PATCH",
                            format!("/books/{id}"),
                            Some(format!("{{\"price\": {}.{:02}}}", 10 + i, t * 7 % 100)),
                        ),
                        1 => ("PATCH", format!("/books/{id}"), Some("{\"quantity_delta\": 3}".to_string())),
                        _ => ("POST", format!("/books/{id}/purchase"), None),
                    };
                    let a = call(method, base, &path, body.as_deref());
                    assert!(a.status == 200 || a.status == 409, "{method} {path}: {}", a.status);
                }
            });
        }
    });
    assert_eq!(s.books(&p), s.books(&r));
    let seq = |base: &str| json(&get(base, "/health"))["seq"].as_u64().unwrap();
    assert_eq!(seq(&p), seq(&r));
    assert!(seq(&p) >= 121, "every write numbered: {}", seq(&p));
}

#[test]
fn no_oversell_under_concurrent_purchases() {
    let s = store();
    s.set_stock(1, 50);
    let fe = s.fe();
    let (ok, conflict, other) = (AtomicUsize::new(0), AtomicUsize::new(0), AtomicUsize::new(0));
    let started = Instant::now();
    std::thread::scope(|scope| {
        for _ in 0..20 {
            scope.spawn(|| {
                for _ in 0..10 {
                    match call("POST", &fe, "/purchase/1", None).status {
                        200 => ok.fetch_add(1, Ordering::SeqCst),
                        409 => conflict.fetch_add(1, Ordering::SeqCst),
                        _ => other.fetch_add(1, Ordering::SeqCst),
                    };
                }
            });
        }
    });
    let took = started.elapsed();
    eprintln!(
        "200 concurrent purchases of 50 copies: {} ok, {} out of stock, {} other, in {took:?}",
        ok.load(Ordering::SeqCst),
        conflict.load(Ordering::SeqCst),
        other.load(Ordering::SeqCst)
    );
    assert_eq!((ok.into_inner(), conflict.into_inner(), other.into_inner()), (50, 150, 0));
    for base in [s.primary(), s.replica()] {
        assert_eq!(json(&get(&base, "/books/1"))["quantity"], 0, "{base}");
    }
    for i in 0..2 {
        let orders = s.orders_on(&s.order(i));
        assert_eq!(orders.iter().filter(|o| o["id"] == 1).count(), 50, "order server {i}");
        let ids: HashSet<&str> = orders.iter().map(|o| o["order_id"].as_str().unwrap()).collect();
        assert_eq!(ids.len(), orders.len(), "order ids are unique");
    }
    assert_eq!(s.orders_on(&s.order(0)), s.orders_on(&s.order(1)));
}

fn backends(fe: &str, n: usize, purchase: bool) -> HashMap<String, usize> {
    let mut seen = HashMap::new();
    for _ in 0..n {
        let a = if purchase { call("POST", fe, "/purchase/5", None) } else { get(fe, "/info/5") };
        assert_eq!(a.status, 200, "{}", String::from_utf8_lossy(&a.body));
        *seen.entry(a.backend.expect("X-Backend")).or_default() += 1;
    }
    seen
}

#[test]
fn round_robin_is_even_and_survives_a_dead_replica() {
    let mut s = store();
    let fe = s.fe();
    let reads = backends(&fe, 40, false);
    assert_eq!(reads.get(&s.primary()), Some(&20), "{reads:?}");
    assert_eq!(reads.get(&s.replica()), Some(&20), "{reads:?}");
    let buys = backends(&fe, 20, true);
    assert_eq!(buys.get(&s.order(0)), Some(&10), "{buys:?}");
    assert_eq!(buys.get(&s.order(1)), Some(&10), "{buys:?}");

    // One catalog replica and one order server killed: everything still succeeds.
    s.catalogs[1].kill9();
    s.orders[0].kill9();
    let reads = backends(&fe, 20, false);
    assert_eq!(reads.get(&s.primary()), Some(&20), "{reads:?}");
    let buys = backends(&fe, 10, true);
    assert_eq!(buys.get(&s.order(1)), Some(&10), "{buys:?}");
    for topic in ["distributed%20systems", "undergraduate%20school"] {
        assert_eq!(get(&fe, &format!("/search/{topic}")).status, 200);
    }

    // They come back without restarting the front end, and get their share again.
    s.catalogs[1].restart();
    s.orders[0].restart();
    wait_healthy(&s.replica());
    wait_healthy(&s.order(0));
    std::thread::sleep(bazar::balance::DOWN_FOR);
    let reads = backends(&fe, 20, false);
    assert_eq!(reads.len(), 2, "{reads:?}");
    let buys = backends(&fe, 10, true);
    assert_eq!(buys.len(), 2, "{buys:?}");
}

/// Two front ends over the same back ends, their reads interleaved: each keeps its own
/// round robin, so each spreads its uncached reads evenly over both catalogs (and its
/// purchases over both order servers) whatever the other one does.
#[test]
fn round_robin_stays_even_per_front_end() {
    let s = store();
    let two = s.another_frontend("frontend-2");
    let fes = [s.fe(), url(&two)];
    let mut reads = [HashMap::new(), HashMap::new()];
    let mut buys = [HashMap::new(), HashMap::new()];
    // Uneven interleaving: the first front end gets two requests for each of the second's.
    for i in 0..60 {
        let which = usize::from(i % 3 == 2);
        for (seen, purchase) in [(&mut reads[which], false), (&mut buys[which], true)] {
            for (backend, n) in backends(&fes[which], 1, purchase) {
                *seen.entry(backend).or_insert(0) += n;
            }
        }
    }
    for which in 0..2 {
        let (r, b) = (&reads[which], &buys[which]);
        let share = if which == 0 { 20 } else { 10 };
        assert_eq!(r.get(&s.primary()), Some(&share), "front end {which}: {r:?}");
        assert_eq!(r.get(&s.replica()), Some(&share), "front end {which}: {r:?}");
        assert_eq!(b.get(&s.order(0)), Some(&share), "front end {which}: {b:?}");
        assert_eq!(b.get(&s.order(1)), Some(&share), "front end {which}: {b:?}");
    }
}

#[test]
fn a_restarted_replica_catches_up() {
    let mut s = store();
    let (p, r) = (s.primary(), s.replica());
    s.catalogs[1].kill9();
    for (i, id) in [1, 2, 3, 1, 2].iter().enumerate() {
        let a = call(
            "PATCH",
            &p,
            &format!("/books/{id}"),
            Some(&format!("{{\"price\": {}.25, \"quantity_delta\": 1}}", 20 + i)),
        );
        assert_eq!(a.status, 200);
    }
    assert_eq!(call("POST", &p, "/books/7/purchase", None).status, 200);
    s.catalogs[1].restart();
    wait_healthy(&r);
    assert_eq!(s.books(&p), s.books(&r));
    // It also takes pushes again.
    assert_eq!(call("PATCH", &p, "/books/7", Some("{\"quantity\": 3}")).status, 200);
    assert_eq!(json(&get(&r, "/books/7"))["quantity"], 3);
}

#[test]
fn a_replica_missing_pushes_is_brought_up_to_date() {
    let s = store();
    let (p, r) = (s.primary(), s.replica());
    // Freeze the replica: pushes time out, the primary marks it behind and goes on.
    s.catalogs[1].signal(libc::SIGSTOP);
    let started = Instant::now();
    assert_eq!(call("PATCH", &p, "/books/6", Some("{\"quantity\": 11}")).status, 200);
    assert!(started.elapsed() < Duration::from_secs(5), "a frozen replica delays a write by one push timeout at most");
    s.catalogs[1].signal(libc::SIGCONT);
    eventually(Duration::from_secs(10), "replica up to date", || json(&get(&r, "/books/6"))["quantity"] == 11);
    assert_eq!(s.books(&p), s.books(&r));
}

#[test]
fn restarted_order_server_has_every_acknowledged_order() {
    let mut s = store();
    let fe = s.fe();
    let mut acked = HashSet::new();
    let buy = |n: usize, acked: &mut HashSet<String>| {
        for _ in 0..n {
            let a = call("POST", &fe, "/purchase/3", None);
            assert_eq!(a.status, 200, "{}", String::from_utf8_lossy(&a.body));
            acked.insert(json(&a)["order_id"].as_str().unwrap().to_string());
        }
    };
    buy(10, &mut acked);
    s.orders[0].kill9();
    buy(6, &mut acked);
    s.orders[0].restart();
    wait_healthy(&s.order(0));
    buy(4, &mut acked);
    for i in 0..2 {
        let base = s.order(i);
        eventually(Duration::from_secs(10), "all acknowledged orders on both servers", || {
            let have: HashSet<String> =
                s.orders_on(&base).iter().map(|o| o["order_id"].as_str().unwrap().to_string()).collect();
            acked.is_subset(&have)
        });
    }
    assert_eq!(s.orders_on(&s.order(0)), s.orders_on(&s.order(1)));
}

#[test]
fn kill_everything_and_restart_loses_no_acknowledged_write() {
    let mut s = store();
    let fe = s.fe();
    let shared = Arc::new(std::sync::Mutex::new((Vec::new(), HashSet::new())));
    std::thread::scope(|scope| {
        for t in 0..4 {
            let (fe, p, shared) = (fe.clone(), s.primary(), Arc::clone(&shared));
            scope.spawn(move || {
                for i in 0..10 {
                    let a = call("POST", &fe, &format!("/purchase/{}", 1 + (t + i) % 7), None);
                    assert_eq!(a.status, 200);
                    shared.lock().unwrap().1.insert(json(&a)["order_id"].as_str().unwrap().to_string());
                    if i % 3 == 0 {
                        let a =
                            call("PATCH", &p, &format!("/books/{}", 1 + t), Some(&format!("{{\"price\": {t}.{i}5}}")));
                        assert_eq!(a.status, 200);
                        shared.lock().unwrap().0.push(json(&a));
                    }
                }
            });
        }
    });
    let books = s.books(&s.primary());
    let (_, acked) = Arc::try_unwrap(shared).unwrap().into_inner().unwrap();
    // kill -9 of every process, then the same store again.
    s.frontend.kill9();
    for p in s.orders.iter_mut().chain(s.catalogs.iter_mut()) {
        p.kill9();
    }
    for p in s.catalogs.iter_mut().chain(s.orders.iter_mut()) {
        p.restart();
    }
    s.frontend.restart();
    for p in s.all() {
        wait_healthy(&url(p));
    }
    assert_eq!(s.books(&s.primary()), books);
    assert_eq!(s.books(&s.replica()), books);
    for i in 0..2 {
        let have: HashSet<String> =
            s.orders_on(&s.order(i)).iter().map(|o| o["order_id"].as_str().unwrap().to_string()).collect();
        assert!(acked.is_subset(&have), "order server {i} lost orders");
    }
    assert_eq!(get(&fe, "/info/1").status, 200);
}

#[test]
fn bad_settings_exit_2_with_one_line_and_sigterm_exits_0() {
    type Case<'a> = (&'a str, &'a [(&'a str, &'a str)], &'a str);
    let cases: &[Case] = &[
        (env!("CARGO_BIN_EXE_bazar-catalog"), &[], "BAZAR_ROLE"),
        (env!("CARGO_BIN_EXE_bazar-catalog"), &[("BAZAR_ROLE", "replica")], "BAZAR_PRIMARY"),
        (
            env!("CARGO_BIN_EXE_bazar-catalog"),
            &[("BAZAR_ROLE", "primary"), ("BAZAR_LISTEN", "nowhere")],
            "BAZAR_LISTEN",
        ),
        (env!("CARGO_BIN_EXE_bazar-order"), &[], "BAZAR_CATALOG"),
        (
            env!("CARGO_BIN_EXE_bazar-order"),
            &[("BAZAR_CATALOG", "http://a:1"), ("BAZAR_THREADS", "many")],
            "BAZAR_THREADS",
        ),
        (env!("CARGO_BIN_EXE_bazar-frontend"), &[("BAZAR_CATALOG", "http://a:1")], "BAZAR_ORDER"),
        (
            env!("CARGO_BIN_EXE_bazar-frontend"),
            &[("BAZAR_CATALOG", "http://a:1"), ("BAZAR_ORDER", "http://b:2"), ("BAZAR_MEMCACHED", "x")],
            "BAZAR_MEMCACHED",
        ),
        (
            env!("CARGO_BIN_EXE_bazar-frontend"),
            &[("BAZAR_CATALOG", "http://a:1"), ("BAZAR_ORDER", "http://b:2"), ("BAZAR_NEAR_CACHE_MB", "lots")],
            "BAZAR_NEAR_CACHE_MB",
        ),
        (env!("CARGO_BIN_EXE_bazar-frontend"), &[("BAZAR_LOG", "chatty")], "BAZAR_LOG"),
    ];
    for (program, env, var) in cases {
        let mut cmd = std::process::Command::new(program);
        for v in [
            "BAZAR_ROLE",
            "BAZAR_PRIMARY",
            "BAZAR_CATALOG",
            "BAZAR_ORDER",
            "BAZAR_LISTEN",
            "BAZAR_THREADS",
            "BAZAR_MEMCACHED",
            "BAZAR_NEAR_CACHE_MB",
            "BAZAR_LOG",
        ] {
            cmd.env_remove(v);
        }
        let out = cmd.envs(env.iter().copied()).output().unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{program} {env:?}: {err}");
        assert_eq!(err.lines().count(), 1, "{err}");
        assert!(err.contains(var), "{err} should name {var}");
    }
    for program in [
        env!("CARGO_BIN_EXE_bazar-catalog"),
        env!("CARGO_BIN_EXE_bazar-order"),
        env!("CARGO_BIN_EXE_bazar-frontend"),
        env!("CARGO_BIN_EXE_bazar-cluster"),
    ] {
        let out = std::process::Command::new(program).arg("--help").output().unwrap();
        assert!(out.status.success());
        assert!(String::from_utf8_lossy(&out.stdout).contains("BAZAR_"), "{program} --help");
    }
    // SIGTERM: stop, finish, exit 0.
    let mut s = store();
    for p in s.orders.iter_mut().chain(s.catalogs.iter_mut()) {
        assert_eq!(p.terminate(Duration::from_secs(15)), Some(0), "{}", p.spec.name);
    }
    assert_eq!(s.frontend.terminate(Duration::from_secs(15)), Some(0));
}
