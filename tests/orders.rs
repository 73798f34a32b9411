//! The order servers' list and readiness: `GET /orders` paged while purchases go on, and
//! `GET /ready` with and without a catalog.

mod common;

use bazar::ids::{cmp_order_ids, parse_timestamp};
use common::*;
use std::collections::{HashMap, HashSet};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Duration;

/// Every order that existed before paging started is seen exactly once, oldest first, while
/// purchases go on through both order servers (so each server also takes its peer's
/// orders, whose times may be older than its own latest).
#[test]
fn paging_sees_every_order_once_while_purchases_go_on() {
    let s = Store::start(Opts::default()).unwrap();
    s.set_stock(1, 10_000);
    let (o1, o2) = (s.order(0), s.order(1));
    let buy = |base: &str| {
        let a = call("POST", base, "/purchase/1", None);
        assert_eq!(a.status, 200, "{}", String::from_utf8_lossy(&a.body));
        json(&a)["order_id"].as_str().unwrap().to_string()
    };
    let before: Vec<String> = (0..40).map(|i| buy(if i % 2 == 0 { &o1 } else { &o2 })).collect();
    // Acknowledged orders are on every reachable peer.
    assert_eq!(s.orders_on(&o1).len(), before.len());

    for (target, status) in [
        ("/orders?limit=0", 400),
        ("/orders?limit=1001", 400),
        ("/orders?limit=x", 400),
        ("/orders?after=nonsense", 400),
        ("/orders?after=2026-13-45T99:99:99.999Z~a-1", 400),
        ("/orders?after=2026-11-24T13:55:06.123Z~a%20b", 400),
        ("/orders?limit=1000", 200),
    ] {
        assert_eq!(get(&o1, target).status, status, "{target}");
    }
    let last = get(&o1, "/orders?limit=40");
    assert_eq!((json(&last).as_array().unwrap().len(), last.link), (40, None), "no Link on the last page");

    let (stop, bought) = (AtomicBool::new(false), AtomicUsize::new(0));
    let seen = std::thread::scope(|scope| {
        for base in [&o1, &o2] {
            let (stop, bought) = (&stop, &bought);
            scope.spawn(move || {
                while !stop.load(Ordering::SeqCst) {
                    buy(base);
                    bought.fetch_add(1, Ordering::SeqCst);
                }
            });
        }
        let (mut seen, mut target, mut pages) = (Vec::new(), "/orders?limit=3".to_string(), 0);
        loop {
            let a = get(&o1, &target);
            assert_eq!(a.status, 200, "{target}: {}", String::from_utf8_lossy(&a.body));
            let page = json(&a).as_array().unwrap().clone();
            assert!(page.len() <= 3);
            seen.extend(page);
            pages += 1;
            // Let purchases land between pages, early on.
            if pages < 10 {
                std::thread::sleep(Duration::from_millis(30));
            }
            match a.link.as_deref().and_then(bazar::page::next_target) {
                Some(next) => target = next.to_string(),
                None => break,
            }
        }
        stop.store(true, Ordering::SeqCst);
        seen
    });
    assert!(bought.load(Ordering::SeqCst) > 0, "purchases went on while paging");
    let mut count: HashMap<String, usize> = HashMap::new();
    for o in &seen {
        *count.entry(o["order_id"].as_str().unwrap().to_string()).or_default() += 1;
    }
    assert!(count.values().all(|&n| n == 1), "an order was listed twice");
    for id in &before {
        assert_eq!(count.get(id), Some(&1), "order {id} was not listed");
    }
    let key = |o: &serde_json::Value| (parse_timestamp(o["at"].as_str().unwrap()).unwrap(), o["order_id"].clone());
    for w in seen.windows(2) {
        let ((a_at, a_id), (b_at, b_id)) = (key(&w[0]), key(&w[1]));
        let order = a_at.cmp(&b_at).then_with(|| cmp_order_ids(a_id.as_str().unwrap(), b_id.as_str().unwrap()));
        assert!(order.is_lt(), "oldest first, by time then id: {} before {}", w[0], w[1]);
    }
    // Both servers end up with the same set, listed the same way.
    eventually(Duration::from_secs(10), "both servers hold the same orders", || s.orders_on(&o1) == s.orders_on(&o2));
}

/// A lone process of `program` with `env` (and its address), killed on drop.
fn start(dir: &TempDir, name: &str, program: &str, env: &[(&str, String)]) -> (Proc, String) {
    let listen = format!("127.0.0.1:{}", free_port());
    let mut vars = vec![("BAZAR_LISTEN".to_string(), listen.clone())];
    vars.extend(env.iter().map(|(k, v)| (k.to_string(), v.clone())));
    vars.push(("BAZAR_DATA_DIR".into(), dir.0.join(name).display().to_string()));
    let spec = Spec {
        name: name.into(),
        program: PathBuf::from(program),
        args: vec![],
        env: vars,
        log: dir.0.join(format!("{name}.log")),
    };
    let p = Proc::start(spec);
    let base = format!("http://{listen}");
    wait_healthy(&base);
    (p, base)
}

#[test]
fn ready_when_a_catalog_is() {
    let dir = TempDir::new("ready");
    let (mut catalog, cat) =
        start(&dir, "catalog", env!("CARGO_BIN_EXE_bazar-catalog"), &[("BAZAR_ROLE", "primary".into())]);
    let nobody = format!("http://127.0.0.1:{}", free_port());
    let (_order, o) =
        start(&dir, "order", env!("CARGO_BIN_EXE_bazar-order"), &[("BAZAR_CATALOG", format!("{nobody},{cat}"))]);
    let a = get(&o, "/ready");
    assert_eq!(a.status, 200, "{}", String::from_utf8_lossy(&a.body));
    assert_eq!(json(&a)["status"], "ready");
    assert_eq!(json(&a)["catalog"], cat.as_str());
    let a = call("POST", &o, "/ready", None);
    assert_eq!((a.status, a.body.is_empty()), (405, false));

    catalog.kill9();
    let a = get(&o, "/ready");
    assert_eq!(a.status, 503, "{}", String::from_utf8_lossy(&a.body));
    assert_eq!(json(&a)["status"], "no-catalog");
    let why = json(&a)["error"].as_str().unwrap().to_string();
    assert!(why.contains(&cat) && why.contains(&nobody), "{why}");
    // Still alive, just not ready.
    assert_eq!(get(&o, "/health").status, 200);

    // No catalog reachable at all from the start, and the answer comes within the probe's
    // timeout even from an address that swallows packets.
    let (_lonely, lonely) = start(
        &dir,
        "lonely",
        env!("CARGO_BIN_EXE_bazar-order"),
        &[("BAZAR_CATALOG", format!("{nobody},http://10.255.255.1:9000"))],
    );
    let started = std::time::Instant::now();
    let a = get(&lonely, "/ready");
    assert_eq!((a.status, json(&a)["status"].as_str()), (503, Some("no-catalog")));
    assert!(started.elapsed() < Duration::from_secs(2), "probes in parallel, each short: {:?}", started.elapsed());
    let ids: HashSet<&str> = ["status", "error"].into();
    assert!(json(&a).as_object().unwrap().keys().all(|k| ids.contains(k.as_str())));
}
