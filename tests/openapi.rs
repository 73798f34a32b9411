//! `docs/openapi.yaml` is kept true: every (path, method, status) it documents is produced
//! by a real request to a live store, and every route and status tested here is documented.

mod common;

use common::*;
use std::collections::BTreeSet;
use ureq::http::Method;

type Triple = (String, String, u16);

/// The (path, method, status) triples of the document (its regular layout: paths at two
/// spaces, methods at four, statuses at eight).
fn documented() -> BTreeSet<Triple> {
    let text = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/docs/openapi.yaml")).unwrap();
    let (mut path, mut method, mut out) = (String::new(), String::new(), BTreeSet::new());
    let mut in_paths = false;
    for line in text.lines() {
        if !line.starts_with(' ') {
            in_paths = line == "paths:";
        } else if !in_paths {
            continue;
        } else if let Some(p) = line.strip_prefix("  /").and_then(|l| l.strip_suffix(':')) {
            path = format!("/{p}");
        } else if let Some(m) = line
            .strip_prefix("    ")
            .and_then(|l| l.strip_suffix(':'))
            .filter(|m| ["get", "put", "post", "patch", "delete"].contains(m))
        {
            method = m.to_uppercase();
        } else if let Some(code) = line.strip_prefix("        \"").and_then(|l| l.get(..3)).and_then(|c| c.parse().ok())
        {
            out.insert((path.clone(), method.clone(), code));
        }
    }
    out
}

/// One request: the documented route it exercises, where it goes, and the status it must get.
struct Case<'a> {
    route: &'a str,
    method: &'a str,
    base: String,
    path: String,
    token: bool,
    body: Option<String>,
    status: u16,
}

fn run(cases: &[Case], tested: &mut BTreeSet<Triple>) {
    for c in cases {
        let http = if c.token { client_with_token("t0ken-0123456789abcdef") } else { client() };
        let a = http
            .call(
                Method::from_bytes(c.method.as_bytes()).unwrap(),
                &c.base,
                &c.path,
                c.body.clone().map(String::into_bytes),
            )
            .unwrap();
        assert_eq!(a.status, c.status, "{} {}{}: {}", c.method, c.base, c.path, String::from_utf8_lossy(&a.body));
        tested.insert((c.route.to_string(), c.method.to_string(), c.status));
    }
}

#[test]
fn the_openapi_document_matches_the_store() {
    let mut s = Store::start(Opts { token: Some("t0ken-0123456789abcdef".into()), ..Opts::default() }).unwrap();
    let (fe, p, r, o) = (s.fe(), s.primary(), s.replica(), s.order(0));
    let case = |route, method, base: &str, path: &str, token, body: Option<&str>, status| Case {
        route,
        method,
        base: base.to_string(),
        path: path.to_string(),
        token,
        body: body.map(str::to_string),
        status,
    };
    let mut tested = BTreeSet::new();
    assert_eq!(
        client_with_token("t0ken-0123456789abcdef")
            .call(Method::PATCH, &p, "/books/4", Some(b"{\"quantity\": 0}".to_vec()))
            .unwrap()
            .status,
        200
    );
    let receipt = json(&call("POST", &fe, "/purchase/1", None));
    let order_path = format!("/orders/{}", receipt["order_id"].as_str().unwrap());
    eventually(std::time::Duration::from_secs(5), "order shared", || get(&o, &order_path).status == 200);
    let trace = json(&get(&fe, "/traces?limit=1"))[0]["trace_id"].as_str().unwrap().to_string();
    let (trace_path, unknown_trace) = (format!("/traces/{trace}"), format!("/traces/{}", "ab".repeat(16)));
    let history = json(
        &client_with_token("t0ken-0123456789abcdef").call(Method::GET, &p, "/internal/books?limit=1", None).unwrap(),
    )["history"]
        .as_str()
        .unwrap()
        .to_string();
    let log = format!("/internal/log?after=0&history={history}");
    // Write 1 (book 4's stock) with another write's fingerprint, or another chain up to
    // it: the logs diverged (409).
    let (diverged, bad_sum) = (
        format!("/internal/log?after=1&history={history}&sum=00000000"),
        format!("/internal/log?after=1&history={history}&sum=+1234567"),
    );
    let (diverged_chain, bad_chain) = (
        format!("/internal/log?after=1&history={history}&chain=00000000"),
        format!("/internal/log?after=1&history={history}&chain=0000000g"),
    );
    let (no_writes, too_many) =
        (format!("/internal/log?after=0&history={history}&limit=0"), format!("{log}&limit=10001"));
    // An order server's batch of takes: one purchase, for an order of the form servers issue.
    let take_batch = format!(
        r#"{{"purchases": [{{"id": 2, "order_id": "0123456789ab-1", "at": "{}"}}]}}"#,
        bazar::ids::timestamp_now()
    );
    // A front end's batch of purchases, on an order server.
    let batch = "/internal/purchase-batch";
    let new_book = r#"{"title": "New", "topic": "cooking", "price": 9.99, "quantity": 3}"#;
    let book1 = serde_json::to_string(&json(&get(&p, "/books/1"))).unwrap();
    let push = format!("[{{\"seq\": 0, \"book\": {book1}}}]");
    let too_large = "x".repeat(70_000);
    let book_zero = r#"[{"seq": 0, "book": {"id": 0, "title": "t", "topic": "t", "price": 1, "quantity": 1}}]"#;
    run(
        &[
            case("/", "GET", &fe, "/", false, None, 200),
            case("/dashboard", "GET", &fe, "/dashboard", false, None, 200),
            case("/assets/{file}", "GET", &fe, "/assets/store.js", false, None, 200),
            case("/assets/{file}", "GET", &fe, "/assets/nothing.js", false, None, 404),
            case("/cluster", "GET", &fe, "/cluster", false, None, 200),
            case("/search/{topic}", "GET", &fe, "/search/distributed%20systems", false, None, 200),
            case("/search/{topic}", "GET", &fe, "/search/%zz", false, None, 400),
            case("/search/{topic}", "GET", &fe, "/search/undergraduate%20school?limit=2&after=3", false, None, 200),
            case("/search/{topic}", "GET", &fe, "/search/undergraduate%20school?limit=0", false, None, 400),
            case("/info/{id}", "GET", &fe, "/info/1", false, None, 200),
            case("/info/{id}", "GET", &fe, "/info/0", false, None, 400),
            case("/info/{id}", "GET", &fe, "/info/99", false, None, 404),
            case("/purchase/{id}", "POST", &fe, "/purchase/2", false, None, 200),
            case("/purchase/{id}", "POST", &fe, "/purchase/x", false, None, 400),
            case("/purchase/{id}", "POST", &fe, "/purchase/99", false, None, 404),
            case("/purchase/{id}", "POST", &fe, "/purchase/4", false, None, 409),
            case("/purchase/{id}", "POST", &o, "/purchase/2", false, None, 200),
            case("/purchase/{id}", "POST", &o, "/purchase/4", false, None, 409),
            case("/health", "GET", &fe, "/health", false, None, 200),
            case("/health", "GET", &p, "/health", false, None, 200),
            case("/health", "GET", &o, "/health", false, None, 200),
            case("/metrics", "GET", &fe, "/metrics", false, None, 200),
            case("/metrics", "GET", &r, "/metrics", false, None, 200),
            case("/metrics", "GET", &o, "/metrics", false, None, 200),
            case("/books", "GET", &p, "/books", false, None, 200),
            case("/books", "GET", &r, "/books?topic=undergraduate+school", false, None, 200),
            case("/books", "GET", &p, "/books?topic=%zz", false, None, 400),
            case("/books/{id}", "GET", &r, "/books/1", false, None, 200),
            case("/books/{id}", "GET", &p, "/books/-1", false, None, 400),
            case("/books/{id}", "GET", &p, "/books/99", false, None, 404),
            case("/books/{id}", "PATCH", &r, "/books/3", true, Some("{\"price\": 30.5}"), 200),
            case("/books/{id}", "PATCH", &p, "/books/3", true, Some("{\"quantity\": -1}"), 400),
            case("/books/{id}", "PATCH", &p, "/books/3", false, Some("{\"quantity\": 1}"), 401),
            case("/books/{id}", "PATCH", &p, "/books/99", true, Some("{\"quantity\": 1}"), 404),
            case("/books/{id}/purchase", "POST", &r, "/books/2/purchase", false, None, 200),
            case(
                "/books/{id}/purchase",
                "POST",
                &p,
                "/books/2/purchase",
                true,
                Some("{\"order_id\": \"no spaces allowed\"}"),
                400,
            ),
            case(
                "/books/{id}/purchase",
                "POST",
                &p,
                "/books/2/purchase",
                false,
                Some("{\"order_id\": \"0a1b2c3d4e5f-1\"}"),
                401,
            ),
            case("/books/{id}/purchase", "POST", &p, "/books/2/purchase", true, Some(&too_large), 413),
            case("/books/{id}", "PATCH", &p, "/books/3", true, Some(&too_large), 413),
            case("/books", "POST", &p, "/books", true, Some(&too_large), 413),
            case("/internal/replicate", "POST", &r, "/internal/replicate", true, Some(&too_large), 413),
            case("/internal/orders", "POST", &o, "/internal/orders", true, Some(&too_large), 413),
            case("/books/{id}/purchase", "POST", &p, "/books/99/purchase", false, None, 404),
            case("/books/{id}/purchase", "POST", &p, "/books/4/purchase", false, None, 409),
            case("/books", "GET", &p, "/books?limit=2&after=3", false, None, 200),
            case("/books", "GET", &fe, "/books?limit=2&after=3", false, None, 200),
            case("/books", "GET", &fe, "/books?after=-3", false, None, 400),
            case("/topics", "GET", &fe, "/topics", false, None, 200),
            case("/topics", "GET", &r, "/topics?limit=1&after=cooking", false, None, 200),
            case("/topics", "GET", &p, "/topics?limit=0", false, None, 400),
            case("/topics", "GET", &fe, "/topics?after=", false, None, 400),
            case("/orders/{order_id}", "GET", &fe, &order_path, false, None, 200),
            case("/orders/{order_id}", "GET", &fe, "/orders/none-1", false, None, 404),
            case("/traces", "GET", &fe, "/traces?limit=2", false, None, 200),
            case("/traces", "GET", &fe, "/traces?after=x", false, None, 400),
            case("/traces/{trace_id}", "GET", &fe, &trace_path, false, None, 200),
            case("/traces/{trace_id}", "GET", &fe, &unknown_trace, false, None, 404),
            case("/traces/{trace_id}", "GET", &fe, "/traces/ABC", false, None, 400),
            case("/traces/{trace_id}", "GET", &p, &trace_path, true, None, 200),
            case("/traces/{trace_id}", "GET", &o, &unknown_trace, true, None, 404),
            case("/traces/{trace_id}", "GET", &p, &trace_path, false, None, 401),
            case("/books", "GET", &p, "/books?limit=1001", false, None, 400),
            case("/books", "GET", &p, "/books?after=x", false, None, 400),
            case("/books", "POST", &r, "/books", true, Some(new_book), 201),
            case(
                "/books",
                "POST",
                &p,
                "/books",
                true,
                Some(r#"{"title": "", "topic": "t", "price": 1, "quantity": 1}"#),
                400,
            ),
            case("/books", "POST", &p, "/books", false, Some(new_book), 401),
            case("/ready", "GET", &p, "/ready", false, None, 200),
            case("/ready", "GET", &r, "/ready", false, None, 200),
            case("/internal/books", "GET", &p, "/internal/books?after=0&limit=10000", true, None, 200),
            case("/internal/books", "GET", &p, "/internal/books?limit=10001", true, None, 400),
            case("/internal/books", "GET", &p, "/internal/books", false, None, 401),
            case("/internal/identity", "GET", &r, "/internal/identity", true, None, 200),
            case("/internal/identity", "GET", &p, "/internal/identity", false, None, 401),
            case("/internal/log", "GET", &p, &log, true, None, 200),
            case("/internal/log", "GET", &p, "/internal/log?after=x", true, None, 400),
            case("/internal/log", "GET", &p, "/internal/log?after=0", true, None, 400),
            case("/internal/log", "GET", &p, "/internal/log?after=0&history=other", true, None, 410),
            case("/internal/log", "GET", &p, "/internal/log?after=0&history=other&epoch=4.4e-44", true, None, 400),
            case("/internal/log", "GET", &p, &log, false, None, 401),
            case("/internal/log", "GET", &p, &diverged, true, None, 409),
            case("/internal/log", "GET", &p, &bad_sum, true, None, 400),
            case("/internal/log", "GET", &p, &diverged_chain, true, None, 409),
            case("/internal/log", "GET", &p, &bad_chain, true, None, 400),
            case("/internal/log", "GET", &p, &no_writes, true, None, 200),
            case("/internal/log", "GET", &p, &too_many, true, None, 400),
            case("/internal/committed", "GET", &p, "/internal/committed", true, None, 200),
            case("/internal/committed", "GET", &r, "/internal/committed", true, None, 503),
            case("/internal/committed", "GET", &p, "/internal/committed", false, None, 401),
            case("/internal/resync", "POST", &r, "/internal/resync", true, None, 200),
            case("/internal/resync", "POST", &r, "/internal/resync", false, None, 401),
            case("/internal/resync", "POST", &p, "/internal/resync", true, None, 409),
            case("/internal/near", "POST", &p, "/internal/near", true, Some(r#"{"session": "s1", "seen": 0}"#), 200),
            case("/internal/near", "POST", &p, "/internal/near", true, Some(r#"{"session": "", "seen": 0}"#), 400),
            case("/internal/near", "POST", &p, "/internal/near", true, Some(r#"{"seen": 0}"#), 400),
            case("/internal/near", "POST", &p, "/internal/near", false, Some(r#"{"session": "s1", "seen": 0}"#), 401),
            case("/internal/near", "POST", &r, "/internal/near", true, Some(r#"{"session": "s1", "seen": 0}"#), 409),
            case("/internal/replicate", "POST", &r, "/internal/replicate", true, Some(&push), 200),
            case("/internal/replicate", "POST", &r, "/internal/replicate", true, Some("{}"), 400),
            case("/internal/replicate", "POST", &r, "/internal/replicate", true, Some(book_zero), 400),
            case("/internal/replicate", "POST", &r, "/internal/replicate", false, Some(&push), 401),
            case("/internal/replicate", "POST", &p, "/internal/replicate", true, Some(&push), 409),
            case("/admin/switchover", "POST", &r, "/admin/switchover", true, Some(r#"{"to": 7}"#), 400),
            case("/admin/switchover", "POST", &r, "/admin/switchover", false, None, 401),
            case("/admin/switchover", "POST", &p, "/admin/switchover", true, None, 409),
            case("/internal/purchases", "GET", &r, "/internal/purchases?after=0", true, None, 200),
            case("/internal/purchases", "GET", &p, "/internal/purchases?after=x", true, None, 400),
            case("/internal/purchases", "GET", &p, "/internal/purchases?after=0&shape=ids", true, None, 200),
            case("/internal/purchases", "GET", &r, "/internal/purchases?after=0&shape=ids", true, None, 200),
            case("/internal/purchases", "GET", &p, "/internal/purchases?after=0&shape=some", true, None, 400),
            case("/internal/purchases", "GET", &p, "/internal/purchases", false, None, 401),
            case("/internal/purchases", "POST", &p, "/internal/purchases", true, Some(&take_batch), 200),
            case("/internal/purchases", "POST", &r, "/internal/purchases", true, Some(&take_batch), 200),
            case("/internal/purchases", "POST", &p, "/internal/purchases", true, Some(r#"{"books": [1]}"#), 400),
            case("/internal/purchases", "POST", &p, "/internal/purchases", false, Some(&take_batch), 401),
            case(batch, "POST", &o, batch, true, Some(r#"{"books": [1, 2]}"#), 200),
            case(batch, "POST", &o, batch, true, Some(r#"{"books": []}"#), 400),
            case(batch, "POST", &o, batch, true, Some(&take_batch), 400),
            case(batch, "POST", &o, batch, false, Some(r#"{"books": [1]}"#), 401),
            case("/orders", "GET", &o, "/orders", false, None, 200),
            case("/orders", "GET", &o, "/orders?limit=1&after=2026-11-24T13:55:06.123Z~a-1", false, None, 200),
            case("/orders", "GET", &o, "/orders?limit=1001", false, None, 400),
            case("/orders", "GET", &o, "/orders?after=a-1", false, None, 400),
            case("/ready", "GET", &o, "/ready", false, None, 200),
            case("/orders/{order_id}", "GET", &o, &order_path, false, None, 200),
            case("/orders/{order_id}", "GET", &o, "/orders/none-1", false, None, 404),
            case("/internal/orders", "GET", &o, "/internal/orders?from=0", true, None, 200),
            case("/internal/orders", "GET", &o, "/internal/orders?from=x", true, None, 400),
            case("/internal/orders", "GET", &o, "/internal/orders?from=0&shape=ids", true, None, 200),
            case("/internal/orders", "GET", &o, "/internal/orders?from=0&shape=true", true, None, 400),
            case("/internal/orders", "GET", &o, "/internal/orders", false, None, 401),
            case("/internal/orders", "POST", &o, "/internal/orders", true, Some("[]"), 200),
            case("/internal/orders", "POST", &o, "/internal/orders", true, Some("{}"), 400),
            case("/internal/orders", "POST", &o, "/internal/orders", false, Some("[]"), 401),
        ],
        &mut tested,
    );
    // A purchase from another web site (a browser's Origin): 403.
    let addr = fe.trim_start_matches("http://");
    let mut conn = std::net::TcpStream::connect(addr).unwrap();
    std::io::Write::write_all(
        &mut conn,
        format!("POST /purchase/3 HTTP/1.1\r\nHost: {addr}\r\nOrigin: http://evil.example\r\nContent-Length: 0\r\nConnection: close\r\n\r\n")
            .as_bytes(),
    )
    .unwrap();
    let mut answer = String::new();
    std::io::Read::read_to_string(&mut conn, &mut answer).unwrap();
    assert!(answer.starts_with("HTTP/1.1 403 ") && answer.contains("\"error\""), "{answer}");
    tested.insert(("/purchase/{id}".into(), "POST".into(), 403));
    // The primary down: writes through the replica and purchases answer 503.
    s.catalogs[0].kill9();
    run(
        &[
            case("/books/{id}", "PATCH", &r, "/books/3", true, Some("{\"quantity\": 1}"), 503),
            case("/books", "POST", &r, "/books", true, Some(new_book), 503),
            case("/books/{id}/purchase", "POST", &r, "/books/3/purchase", false, None, 503),
            case("/internal/purchases", "GET", &r, "/internal/purchases", true, None, 503),
            case("/internal/purchases", "POST", &r, "/internal/purchases", true, Some(&take_batch), 503),
            case("/purchase/{id}", "POST", &fe, "/purchase/3", false, None, 503),
        ],
        &mut tested,
    );
    // A replica that starts while the primary is down cannot catch up: reads answer 503.
    s.catalogs[1].restart();
    eventually(std::time::Duration::from_secs(10), "replica up", || {
        client().call(Method::GET, &r, "/health", None).is_ok()
    });
    run(
        &[
            case("/ready", "GET", &r, "/ready", false, None, 503),
            case("/books", "GET", &r, "/books", false, None, 503),
            case("/books/{id}", "GET", &r, "/books/1", false, None, 503),
            case("/topics", "GET", &r, "/topics", false, None, 503),
        ],
        &mut tested,
    );
    // No catalog at all: the front end's reads answer 503.
    s.catalogs[1].kill9();
    run(
        &[
            case("/search/{topic}", "GET", &fe, "/search/x", false, None, 503),
            case("/info/{id}", "GET", &fe, "/info/1", false, None, 503),
            case("/books", "GET", &fe, "/books", false, None, 503),
            case("/ready", "GET", &o, "/ready", false, None, 503),
        ],
        &mut tested,
    );

    // An order server down: the front end cannot say an order it does not find is unknown.
    s.orders[1].kill9();
    run(&[case("/orders/{order_id}", "GET", &fe, "/orders/none-1", false, None, 503)], &mut tested);

    // With etcd: a switchover, asked of a replica.
    match switchover_with_etcd(&s.dir.0) {
        Some(status) => {
            assert_eq!(status, 200);
            tested.insert(("/admin/switchover".into(), "POST".into(), 200));
        }
        None => eprintln!("etcd is not installed: POST /admin/switchover 200 is not checked here"),
    }
    let mut doc = documented();
    if !tested.contains(&("/admin/switchover".into(), "POST".into(), 200)) {
        doc.remove(&("/admin/switchover".to_string(), "POST".to_string(), 200));
    }
    assert!(doc.len() > 40, "the document parsed: {doc:?}");
    let untested: Vec<&Triple> = doc.difference(&tested).collect();
    let undocumented: Vec<&Triple> = tested.difference(&doc).collect();
    assert!(untested.is_empty(), "documented but not tested: {untested:?}");
    assert!(undocumented.is_empty(), "tested but not documented: {undocumented:?}");
}

/// Two catalogs electing their primary through a real etcd: the status of a switchover
/// asked of the replica, or None without etcd.
fn switchover_with_etcd(dir: &std::path::Path) -> Option<u16> {
    let server = etcd(dir)?;
    let ports = [free_port(), free_port()];
    let catalogs: Vec<Proc> = (0..2)
        .map(|i| {
            let env = [
                ("BAZAR_ETCD", etcd_url(&server)),
                ("BAZAR_LISTEN", format!("127.0.0.1:{}", ports[i])),
                ("BAZAR_DATA_DIR", dir.join(format!("etcd-catalog-{i}")).display().to_string()),
                ("BAZAR_TOKEN", "t0ken-0123456789abcdef".into()),
            ];
            Proc::start(Spec {
                name: format!("etcd-catalog-{i}"),
                program: env!("CARGO_BIN_EXE_bazar-catalog").into(),
                args: vec![],
                env: env.into_iter().map(|(k, v)| (k.to_string(), v)).collect(),
                log: dir.join(format!("etcd-catalog-{i}.log")),
            })
        })
        .collect();
    let urls: Vec<String> = catalogs.iter().map(url).collect();
    let role = |u: &str| client().call(Method::GET, u, "/health", None).ok().map(|a| json(&a)["role"].clone());
    let mut replica = None;
    eventually(std::time::Duration::from_secs(30), "a primary and a replica in sync", || {
        let primary = urls.iter().position(|u| role(u).is_some_and(|r| r == "primary"));
        replica = primary.map(|p| urls[1 - p].clone());
        primary.is_some_and(|p| {
            let h = json(&get(&urls[p], "/health"));
            h["replicas_out_of_sync"].as_array().is_some_and(|a| a.is_empty()) && !h["primary"].is_null()
        }) && replica.as_deref().is_some_and(|r| get(r, "/ready").status == 200)
    });
    let answer = client_with_token("t0ken-0123456789abcdef")
        .call(Method::POST, replica.as_deref().unwrap(), "/admin/switchover", Some(b"{}".to_vec()))
        .unwrap();
    drop(catalogs);
    Some(answer.status)
}
