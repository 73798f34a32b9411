//! The lab end to end: its API on a store started as `bazar-cluster` starts one (faults
//! on real processes, through the front end's relay), the routes absent from a front end
//! started otherwise, the probe's verdict, and `bazar-bench check` against a store.

mod common;

use common::*;
use std::time::{Duration, Instant};

const TOKEN: &str = "lab-test-token-0123456789";

#[test]
fn lab_routes_are_absent_from_a_front_end_bazar_cluster_did_not_start() {
    let s = Store::start(Opts::default()).expect("a store");
    let fe = s.fe();
    for (method, path) in [
        ("GET", "/lab"),
        ("GET", "/lab/verdict"),
        ("POST", "/lab/catalog-1/kill"),
        ("POST", "/lab/probe"),
        ("POST", "/lab/store/switchover"),
    ] {
        let a = call(method, &fe, path, None);
        assert_eq!(a.status, 404, "{method} {path}: {}", String::from_utf8_lossy(&a.body));
    }
    // The catalog really is still there.
    assert_eq!(get(&s.primary(), "/ready").status, 200);
}

fn post(base: &str, path: &str, body: Option<&str>, headers: &[(&str, &str)]) -> (u16, serde_json::Value) {
    let mut req = ureq::post(format!("{base}{path}")).config().http_status_as_error(false).build();
    for (k, v) in headers {
        req = req.header(*k, *v);
    }
    let mut answer = match body {
        Some(b) => req.header("Content-Type", "application/json").send(b).expect("an answer"),
        None => req.send_empty().expect("an answer"),
    };
    let status = answer.status().as_u16();
    let text = answer.body_mut().read_to_string().unwrap_or_default();
    (status, serde_json::from_str(&text).unwrap_or(serde_json::Value::Null))
}

#[test]
fn the_lab_api_breaks_and_restores_each_service() {
    let s = LabStore::start(Some(TOKEN), false);
    let fe = s.fe();

    // The lab itself needs the token; the front end relays with its own.
    let a = get(&s.lab_url, "/lab");
    assert_eq!(a.status, 401);
    let a = client_with_token(TOKEN).call(ureq::http::Method::GET, &s.lab_url, "/lab", None).unwrap();
    assert_eq!(a.status, 200);
    let a = get(&fe, "/lab");
    assert_eq!(a.status, 200, "{}", String::from_utf8_lossy(&a.body));
    let services = json(&a);
    let names: Vec<&str> = services.as_array().unwrap().iter().map(|e| e["name"].as_str().unwrap()).collect();
    for name in ["catalog-1", "catalog-2", "order-1", "order-2", "frontend"] {
        assert!(names.contains(&name), "{name} in {names:?}");
    }
    assert!(services.as_array().unwrap().iter().all(|e| e["state"] == "running" && e["pid"].is_u64()));

    // What does not apply, or names nothing, is refused with a reason.
    for (path, want) in [
        ("/lab/nothing/kill", 404),
        ("/lab/order-2/explode", 404),
        ("/lab/order-2/thaw", 409),
        ("/lab/order-2/start", 409),
    ] {
        let (status, body) = post(&fe, path, None, &[]);
        assert_eq!(status, want, "{path}: {body}");
        assert!(body["error"].as_str().is_some_and(|e| !e.is_empty()), "{path}: {body}");
    }
    // Another site cannot break the store through a visitor's browser.
    let (status, _) = post(&fe, "/lab/order-2/kill", None, &[("Origin", "http://elsewhere.example")]);
    assert_eq!(status, 403);
    let (status, _) = post(&fe, "/lab/order-2/kill", None, &[("Sec-Fetch-Site", "cross-site")]);
    assert_eq!(status, 403);

    // Each action on a real process, and its state after it.
    let order2 = format!("http://127.0.0.1:{}", s.layout.orders[1]);
    let steps = [
        ("kill", "stopped"),
        ("start", "running"),
        ("freeze", "frozen"),
        ("thaw", "running"),
        ("freeze", "frozen"),
        ("stop", "stopped"), // a frozen process is thawed to take its SIGTERM
        ("start", "running"),
    ];
    for (action, state) in steps {
        let (status, entry) = post(&fe, &format!("/lab/order-2/{action}"), None, &[("Origin", &fe)]);
        assert_eq!(status, 200, "{action}: {entry}");
        assert_eq!(entry["state"], state, "{action}: {entry}");
        assert_eq!(entry["pid"].is_null(), state == "stopped", "{action}: {entry}");
        match state {
            "stopped" => assert!(client().call(ureq::http::Method::GET, &order2, "/health", None).is_err()),
            "frozen" => {
                let quick = bazar::client::Http::new(Duration::from_millis(300), 1, None);
                assert!(
                    quick.call(ureq::http::Method::GET, &order2, "/health", None).is_err(),
                    "a frozen process answers nothing"
                );
            }
            _ => wait_healthy(&order2),
        }
    }
    let (status, _) = post(&fe, "/lab/order-2/kill", None, &[]);
    assert_eq!(status, 200);
    let (status, body) = post(&fe, "/lab/order-2/kill", None, &[]);
    assert_eq!(status, 409, "{body}");
    assert_eq!(post(&fe, "/lab/order-2/start", None, &[]).0, 200);

    // The timeline names each fault; the probe turns off and on.
    let v = s.verdict();
    let timeline = v["timeline"].to_string();
    for said in ["order-2 killed (SIGKILL)", "order-2 frozen (SIGSTOP)", "order-2 thawed (SIGCONT)", "order-2 started"]
    {
        assert!(timeline.contains(said), "{said} in {timeline}");
    }
    // A history with a stale read, fed to the probe's checker: the verdict turns red, with
    // the offending operations in words.
    use bazar::linearizable::checker::{Call, History, Initial, Op, Ret, State};
    let seen = |price| Ret::Seen { price: Some(price), quantity: Some(6) };
    let op =
        |client, call, ret, inv, resp| Op { client, book: 1, via: "test".into(), call, ret, inv, resp: Some(resp) };
    let stale = History {
        name: "stale read".into(),
        note: String::new(),
        expect: None,
        initial: vec![Initial { book: 1, state: State { price: 1000, quantity: 6 } }],
        ops: vec![op(0, Call::SetPrice(1200), seen(1200), 10, 20), op(1, Call::Read, seen(1000), 30, 40)],
    };
    s.lab.probe.add_window(bazar::lab::probe::judge(&stale, 0));
    let v = s.verdict();
    assert_eq!((v["linearizable"].as_bool(), v["held"].as_bool()), (Some(false), Some(false)), "{v:#}");
    assert!(v["violations"][0]["text"].as_str().unwrap().contains("read"), "{v:#}");
    let (status, v) = post(&fe, "/lab/probe", Some(r#"{"on": false}"#), &[]);
    assert_eq!((status, v["probe"].as_str()), (200, Some("off")));
    let (status, _) = post(&fe, "/lab/probe", Some(r#"{"on": "yes"}"#), &[]);
    assert_eq!(status, 400);
    assert_eq!(call("GET", &fe, "/lab/probe", None).status, 405);
}

#[test]
fn the_probe_keeps_a_green_verdict_through_a_killed_replica() {
    let s = LabStore::start(None, false);
    let fe = s.fe();
    s.lab.probe.set_on(true);
    let first = Instant::now();
    eventually(Duration::from_secs(60), "a first window checked", || {
        s.verdict()["since_start"]["windows"].as_u64() >= Some(1)
    });
    say(&format!("first window checked after {} ms", first.elapsed().as_millis()));
    // With static roles catalog-2 is the replica.
    let (status, body) = post(&fe, "/lab/catalog-2/kill", None, &[]);
    assert_eq!(status, 200, "{body}");
    let windows = s.verdict()["since_start"]["windows"].as_u64().unwrap();
    eventually(Duration::from_secs(60), "two windows checked with the replica down", || {
        s.verdict()["since_start"]["windows"].as_u64().unwrap() >= windows + 2
    });
    assert_eq!(post(&fe, "/lab/catalog-2/start", None, &[]).0, 200);
    let windows = s.verdict()["since_start"]["windows"].as_u64().unwrap();
    eventually(Duration::from_secs(60), "a window checked with the replica back", || {
        s.verdict()["since_start"]["windows"].as_u64().unwrap() > windows
    });
    let v = s.verdict();
    say(&format!("verdict: {}", v["since_start"]));
    assert_eq!(v["held"], true, "{v:#}");
    assert!(v["since_start"]["ops"].as_u64().unwrap() > 50, "{v}");
    assert_eq!(v["orders_missing"], 0);
    assert_eq!(v["copies_taken"], v["orders_logged"]);

    // A copy taken with no order (straight at the catalog, as no order server would) is
    // caught by the ledger: copies and orders differ, the verdict turns red.
    let primary = format!("http://127.0.0.1:{}", s.layout.catalogs[0]);
    let probe_books = json(&get(&primary, "/books?topic=lab%20probe"));
    let bought = probe_books.as_array().unwrap().iter().map(|b| b["id"].as_u64().unwrap()).max().unwrap();
    assert_eq!(call("POST", &primary, &format!("/books/{bought}/purchase"), None).status, 200);
    eventually(Duration::from_secs(60), "the ledger to see a copy without an order", || {
        let v = s.verdict();
        v["copies_match"] == false && v["held"] == false
    });
    let v = s.verdict();
    say(&format!(
        "after a copy without an order: copies taken {} / orders logged {}",
        v["copies_taken"], v["orders_logged"]
    ));
}

#[test]
fn bazar_bench_check_passes_on_a_healthy_store_and_names_what_it_needs() {
    let s = Store::start(Opts::default()).expect("a store");
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_bazar-bench"))
        .args(["check", "--url", &s.fe(), "--seconds", "4"])
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    say(&format!("bazar-bench check: {}", stdout.lines().last().unwrap_or("")));
    assert_eq!(out.status.code(), Some(0), "{stdout}\n{}", String::from_utf8_lossy(&out.stderr));
    assert!(stdout.contains("every guarantee held"), "{stdout}");
    for (args, says) in [
        (&["check", "--seconds", "3"][..], "check needs --url"),
        (&["check", "--url", "http://127.0.0.1:9", "--seconds", "1"], "does not answer"),
        (&["check", "--url", "x", "--bogus", "1"], "does not take \"--bogus\""),
    ] {
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_bazar-bench")).args(args).output().unwrap();
        assert_eq!(out.status.code(), Some(2), "{args:?}");
        assert!(
            String::from_utf8_lossy(&out.stderr).contains(says),
            "{args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
}

/// Prints past the test harness's capture.
fn say(text: &str) {
    let _ = std::io::Write::write_all(&mut std::io::stderr(), format!("{text}\n").as_bytes());
}

#[test]
fn a_switchover_from_the_lab_moves_the_primary_and_the_verdict_stays_green() {
    if bazar::cluster::find_program("etcd").is_none() {
        if std::env::var("BAZAR_REQUIRE_ETCD").as_deref() == Ok("1") {
            panic!("etcd is required (BAZAR_REQUIRE_ETCD=1) but not installed");
        }
        say("SKIPPED a_switchover_from_the_lab...: etcd is not installed (apt-get install etcd-server)");
        return;
    }
    let s = LabStore::start(None, true);
    let fe = s.fe();
    s.lab.probe.set_on(true);
    let catalogs: Vec<String> = s.layout.catalog_urls().to_vec();
    let primary = || {
        catalogs.iter().find(|c| {
            client().call(ureq::http::Method::GET, c, "/health", None).is_ok_and(|a| json(&a)["role"] == "primary")
        })
    };
    eventually(Duration::from_secs(30), "a primary and a replica in sync", || {
        primary()
            .is_some_and(|p| json(&get(p, "/health"))["replicas_out_of_sync"].as_array().is_some_and(|a| a.is_empty()))
            && catalogs.iter().all(|c| get(c, "/ready").status == 200)
    });
    let before = primary().unwrap().clone();
    eventually(Duration::from_secs(60), "a first window checked", || {
        s.verdict()["since_start"]["windows"].as_u64() >= Some(1)
    });
    let (status, body) = post(&fe, "/lab/store/switchover", Some("{}"), &[]);
    assert_eq!(status, 200, "{body}");
    eventually(Duration::from_secs(10), "the other catalog primary", || primary().is_some_and(|p| *p != before));
    let after = primary().unwrap().clone();
    eventually(Duration::from_secs(10), "the switchover on the timeline", || {
        let t = s.verdict()["timeline"].to_string();
        t.contains("switchover asked of") && t.contains(&format!("catalog {after} is primary"))
    });
    let windows = s.verdict()["since_start"]["windows"].as_u64().unwrap();
    eventually(Duration::from_secs(60), "two windows after the switchover", || {
        s.verdict()["since_start"]["windows"].as_u64().unwrap() >= windows + 2
    });
    let v = s.verdict();
    assert_eq!(v["held"], true, "{v:#}");
}

#[test]
fn bazar_cluster_refuses_a_lab_off_loopback_or_on_a_port_in_use_before_starting_anything() {
    let dir = TempDir::new("lab-settings");
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let in_use = taken.local_addr().unwrap().to_string();
    for (value, says) in [
        ("0.0.0.0:4299", "not a loopback address"),
        ("localhost:4299", "not host:port with an IP address"),
        (in_use.as_str(), "cannot listen on"),
    ] {
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_bazar-cluster"))
            .env("BAZAR_LAB_LISTEN", value)
            .env("BAZAR_DATA_DIR", dir.0.join("run"))
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{value}: {stderr}");
        assert!(stderr.contains("BAZAR_LAB_LISTEN") && stderr.contains(says), "{value}: {stderr}");
        assert!(!dir.0.join("run").join("catalog-1").exists(), "{value}: nothing was started");
    }
}
