//! The catalog past every old limit: a catalog loaded by `bazar-catalog import`, a replica
//! that joins it and one that catches up, paging while writes go on, books added through
//! a replica. Small enough to be fast, large enough that nothing fits in one body.

mod common;

use common::*;
use std::collections::BTreeSet;
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

const BOOKS: u32 = 20_000;
const CATALOG: &str = env!("CARGO_BIN_EXE_bazar-catalog");

/// A catalog file of `n` books in 50 topics.
fn catalog_file(dir: &Path, n: u32) -> std::path::PathBuf {
    let mut text = String::from("id,title,topic,price,quantity\n");
    for id in 1..=n {
        text.push_str(&format!(
            "{id},\"Book {id}, a title of some length\",topic-{},{}.{:02},100\n",
            id % 50,
            id % 90,
            id % 100
        ));
    }
    let path = dir.join("catalog.csv");
    std::fs::write(&path, text).unwrap();
    path
}

fn import(data: &Path, file: &Path) -> std::process::Output {
    Command::new(CATALOG).arg("import").arg(file).env("BAZAR_DATA_DIR", data).output().unwrap()
}

/// A catalog process (`primary` with `replicas`, or a replica of `primary`).
fn catalog(dir: &Path, name: &str, port: u16, role: (&str, &str, String)) -> Proc {
    let (role, var, peers) = role;
    Proc::start(Spec {
        name: name.into(),
        program: CATALOG.into(),
        args: vec![],
        env: vec![
            ("BAZAR_LISTEN".into(), format!("127.0.0.1:{port}")),
            ("BAZAR_DATA_DIR".into(), dir.join(name).display().to_string()),
            ("BAZAR_ROLE".into(), role.into()),
            (var.into(), peers),
            ("BAZAR_LEASE_MS".into(), "1000".into()),
        ],
        log: dir.join(format!("{name}.log")),
    })
}

fn time_to_ready(base: &str, within: Duration) -> Duration {
    let started = Instant::now();
    eventually(within, &format!("{base} ready"), || {
        client().call(ureq::http::Method::GET, base, "/ready", None).is_ok_and(|a| a.status == 200)
    });
    started.elapsed()
}

/// Every page of `/books[?topic=]` with `limit`, following `Link`; the ids in order.
fn page_through(base: &str, first: &str) -> Vec<u32> {
    let (mut ids, mut target) = (Vec::new(), Some(first.to_string()));
    while let Some(t) = target {
        let a = get(base, &t);
        assert_eq!(a.status, 200, "{t}: {}", String::from_utf8_lossy(&a.body));
        ids.extend(json(&a).as_array().unwrap().iter().map(|b| b["id"].as_u64().unwrap() as u32));
        target = a.link.as_deref().and_then(bazar::page::next_target).map(str::to_string);
    }
    ids
}

#[test]
fn a_replica_joins_a_large_catalog_and_catches_up_after_missing_writes() {
    let dir = TempDir::new("scale");
    let out = import(&dir.0.join("primary"), &catalog_file(&dir.0, BOOKS));
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(String::from_utf8_lossy(&out.stdout).contains(&format!("imported {BOOKS} books")));
    let (pp, rp) = (free_port(), free_port());
    let (p, r) = (format!("http://127.0.0.1:{pp}"), format!("http://127.0.0.1:{rp}"));
    // A replica that cannot reach its primary yet is not ready, and serves no read.
    let mut replica = catalog(&dir.0, "replica", rp, ("replica", "BAZAR_PRIMARY", p.clone()));
    eventually(START_DEADLINE, "replica listening", || {
        client().call(ureq::http::Method::GET, &r, "/health", None).is_ok()
    });
    assert_eq!(json(&get(&r, "/ready"))["status"], "catching-up");
    assert_eq!(get(&r, "/ready").status, 503);
    assert_eq!(get(&r, "/books/1").status, 503);
    let _primary = catalog(&dir.0, "primary", pp, ("primary", "BAZAR_REPLICAS", r.clone()));
    time_to_ready(&p, START_DEADLINE);
    let joined = time_to_ready(&r, START_DEADLINE);
    eprintln!("a replica joined a catalog of {BOOKS} books in {joined:?}");
    let log = std::fs::read_to_string(dir.0.join("replica.log")).unwrap();
    assert!(log.contains(&format!("copied {BOOKS} books")), "{log}");
    assert_eq!(json(&get(&r, &format!("/books/{BOOKS}")))["id"], BOOKS);

    // Missing a few writes, it gets those writes, not a whole copy.
    replica.terminate(Duration::from_secs(5));
    for id in 1..=20 {
        assert_eq!(call("PATCH", &p, &format!("/books/{id}"), Some("{\"quantity\": 7}")).status, 200);
    }
    replica.restart();
    time_to_ready(&r, START_DEADLINE);
    let log = std::fs::read_to_string(dir.0.join("replica.log")).unwrap();
    assert_eq!(log.matches("copied").count(), 1, "{log}");
    for id in [1, 20] {
        assert_eq!(json(&get(&r, &format!("/books/{id}")))["quantity"], 7);
    }

    // Added through the replica: 201, the next id, Location, on both.
    let a =
        call("POST", &r, "/books", Some(r#"{"title": "New <b>", "topic": "topic-3", "price": 3.5, "quantity": 2}"#));
    assert_eq!(a.status, 201, "{}", String::from_utf8_lossy(&a.body));
    let id = BOOKS + 1;
    assert_eq!(json(&a)["id"], id);
    for base in [&p, &r] {
        assert_eq!(json(&get(base, &format!("/books/{id}")))["title"], "New <b>");
    }
    assert_eq!(page_through(&r, "/books?topic=TOPIC-3&limit=1000").last(), Some(&id));
}

#[test]
fn paging_visits_every_book_once_while_writes_go_on() {
    let dir = TempDir::new("paging");
    let out = import(&dir.0.join("primary"), &catalog_file(&dir.0, 3000));
    assert!(out.status.success());
    let pp = free_port();
    let p = format!("http://127.0.0.1:{pp}");
    let _primary = catalog(&dir.0, "primary", pp, ("primary", "BAZAR_REPLICAS", String::new()));
    time_to_ready(&p, START_DEADLINE);
    let stop = std::sync::atomic::AtomicBool::new(false);
    let (all, topic) = std::thread::scope(|s| {
        let writer = s.spawn(|| {
            let mut added = 0;
            while !stop.load(std::sync::atomic::Ordering::SeqCst) {
                let body = format!(r#"{{"title": "Added {added}", "topic": "topic-0", "price": 1, "quantity": 1}}"#);
                assert_eq!(call("POST", &p, "/books", Some(&body)).status, 201);
                assert_eq!(
                    call("PATCH", &p, &format!("/books/{}", 1 + added % 3000), Some("{\"price\": 2}")).status,
                    200
                );
                added += 1;
            }
            added
        });
        let all = page_through(&p, "/books?limit=97");
        let topic = page_through(&p, "/books?topic=topic-0&limit=7");
        stop.store(true, std::sync::atomic::Ordering::SeqCst);
        assert!(writer.join().unwrap() > 0);
        (all, topic)
    });
    for (ids, what) in [(&all, "all"), (&topic, "topic-0")] {
        let unique: BTreeSet<u32> = ids.iter().copied().collect();
        assert_eq!(unique.len(), ids.len(), "{what}: every book once");
        assert!(ids.windows(2).all(|w| w[0] < w[1]), "{what}: by id");
    }
    // Every book that existed throughout was seen.
    assert!((1..=3000).all(|id| all.binary_search(&id).is_ok()));
    assert!((1..=3000).filter(|id| id % 50 == 0).all(|id| topic.binary_search(&id).is_ok()));
    // Bad pages are a 400.
    for bad in ["/books?limit=0", "/books?limit=1001", "/books?after=-1", "/books?after=x"] {
        assert_eq!(get(&p, bad).status, 400, "{bad}");
    }
}

#[test]
fn an_import_with_a_bad_row_names_its_line_and_changes_nothing() {
    let dir = TempDir::new("import");
    let data = dir.0.join("data");
    let file = dir.0.join("bad.csv");
    std::fs::write(&file, "id,title,topic,price,quantity\n1,A,t,1.00,1\n2,B,t,1.00\n").unwrap();
    let out = import(&data, &file);
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("line 3") && err.contains("nothing was changed"), "{err}");
    assert!(!data.exists(), "the data directory was not even created");
    // A running catalog's directory is refused.
    let port = free_port();
    let _c = catalog(&dir.0, "data", port, ("primary", "BAZAR_REPLICAS", String::new()));
    time_to_ready(&format!("http://127.0.0.1:{port}"), START_DEADLINE);
    let out = import(&data, &catalog_file(&dir.0, 3));
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("in use by a running catalog"));
}

#[test]
fn the_front_end_skips_a_catalog_that_is_not_ready() {
    let s = Store::start(Opts::default()).unwrap();
    let dir = TempDir::new("not-ready");
    // A replica of a primary that does not exist: alive, never ready.
    let lonely_port = free_port();
    let lonely = format!("http://127.0.0.1:{lonely_port}");
    let nowhere = format!("http://127.0.0.1:{}", free_port());
    let _lonely = catalog(&dir.0, "lonely", lonely_port, ("replica", "BAZAR_PRIMARY", nowhere));
    eventually(START_DEADLINE, "lonely replica listening", || {
        client().call(ureq::http::Method::GET, &lonely, "/health", None).is_ok()
    });
    let fe_port = free_port();
    let fe = format!("http://127.0.0.1:{fe_port}");
    let _frontend = Proc::start(Spec {
        name: "frontend".into(),
        program: env!("CARGO_BIN_EXE_bazar-frontend").into(),
        args: vec![],
        env: vec![
            ("BAZAR_LISTEN".into(), format!("127.0.0.1:{fe_port}")),
            ("BAZAR_CATALOG".into(), format!("{lonely},{}", s.primary())),
            ("BAZAR_ORDER".into(), s.order(0)),
            // Every read goes to a catalog: the round robin is what is looked at.
            ("BAZAR_NEAR_CACHE_MB".into(), "0".into()),
        ],
        log: dir.0.join("frontend.log"),
    });
    wait_ready(&fe);
    for id in 1..=20 {
        let a = get(&fe, &format!("/info/{}", 1 + id % 7));
        assert_eq!(a.status, 200);
        assert_eq!(a.backend.as_deref(), Some(s.primary().as_str()));
    }
    let metrics = String::from_utf8(get(&lonely, "/metrics").body).unwrap();
    assert!(!metrics.contains("route=\"/books/{id}\""), "the not-ready replica was asked: {metrics}");
    // With no ready order server, the front end is not ready, and says why.
    let _fe2 = Proc::start(Spec {
        name: "frontend-2".into(),
        program: env!("CARGO_BIN_EXE_bazar-frontend").into(),
        args: vec![],
        env: vec![
            ("BAZAR_LISTEN".into(), format!("127.0.0.1:{}", free_port())),
            ("BAZAR_CATALOG".into(), s.primary()),
            ("BAZAR_ORDER".into(), format!("http://127.0.0.1:{}", free_port())),
        ],
        log: dir.0.join("frontend-2.log"),
    });
    let fe2 = format!("http://{}", _fe2.spec.env[0].1);
    // Before its first probe it knows of no ready back end at all ("no-catalog"); once it
    // has probed, it names what it lacks.
    eventually(START_DEADLINE, "front end 2 probed", || {
        let a = client().call(ureq::http::Method::GET, &fe2, "/ready", None);
        a.is_ok_and(|a| a.status == 503 && json(&a)["status"] == "no-order-server")
    });
    assert_eq!(get(&fe2, "/ready").status, 503);
}
