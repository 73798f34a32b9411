//! Hostile input to every service over raw TCP: a clear 4xx, never a crash, a hang or a
//! 500; afterwards every service is healthy and its CSV files are intact.

mod common;

use common::*;
use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

/// Sends raw bytes, returns the status and the head of the answer.
fn raw(base: &str, bytes: &[u8]) -> (u16, String) {
    let addr = base.trim_start_matches("http://");
    let mut s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    // The server may answer and close before taking everything; that is fine.
    let _ = s.write_all(bytes);
    let mut answer = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        match s.read(&mut buf) {
            Ok(0) | Err(_) => break,
            Ok(n) => {
                answer.extend_from_slice(&buf[..n]);
                if answer.windows(4).any(|w| w == b"\r\n\r\n") {
                    break;
                }
            }
        }
    }
    let text = String::from_utf8_lossy(&answer).into_owned();
    let status = text.split(' ').nth(1).and_then(|c| c.parse().ok()).unwrap_or_else(|| {
        panic!("no answer to {:?}: {text:?}", String::from_utf8_lossy(&bytes[..bytes.len().min(80)]))
    });
    (status, text)
}

fn head(method: &str, path: &str, extra: &str) -> Vec<u8> {
    format!("{method} {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n{extra}\r\n").into_bytes()
}

fn with_body(method: &str, path: &str, body: &[u8]) -> Vec<u8> {
    let mut b = head(method, path, &format!("Content-Type: application/json\r\nContent-Length: {}\r\n", body.len()));
    b.extend_from_slice(body);
    b
}

#[test]
fn hostile_input_gets_a_clear_4xx_and_breaks_nothing() {
    let s = Store::start(Opts::default()).unwrap();
    let big_header = format!("X-Big: {}\r\n", "a".repeat(200 * 1024));
    let mib = vec![b'x'; 1 << 20];
    // (service, path of one book, a write route with a JSON body)
    let services = [
        (s.fe(), "/info/{}", "POST", "/purchase/1"),
        (s.primary(), "/books/{}", "PATCH", "/books/1"),
        (s.replica(), "/books/{}", "PATCH", "/books/1"),
        (s.order(0), "/orders/{}", "POST", "/internal/orders"),
        (s.order(1), "/orders/{}", "POST", "/internal/orders"),
    ];
    for (base, item, write_method, write_path) in &services {
        let mut cases: Vec<(String, Vec<u8>, u16)> = vec![
            ("garbage request line".into(), b"GARBAGE\r\n\r\n".to_vec(), 400),
            ("binary noise".into(), b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03\r\n\r\n".to_vec(), 400),
            ("200 KB header".into(), head("GET", "/health", &big_header), 431),
            ("control byte in a header value".into(), head("GET", "/health", "X-A: a\x01b\r\n"), 400),
            ("control byte in a header name".into(), head("GET", "/health", "X\x01A: b\r\n"), 400),
            ("invalid UTF-8 in the path".into(), b"GET /health/\xff\xfe HTTP/1.1\r\nHost: x\r\n\r\n".to_vec(), 400),
            ("percent escape of invalid UTF-8".into(), head("GET", "/search/%ff%fe", ""), 400),
            ("bad percent escape".into(), head("GET", "/x/%zz", ""), 400),
            ("unknown route".into(), head("GET", "/no/such/route", ""), 404),
            ("wrong method".into(), head("DELETE", "/health", ""), 405),
            ("1 MiB body".into(), with_body(write_method, write_path, &mib), 413),
            (
                "huge Content-Length, few bytes".into(),
                [head(write_method, write_path, "Content-Length: 100000000000000\r\n"), b"{}".to_vec()].concat(),
                413,
            ),
            ("unknown transfer coding".into(), head(write_method, write_path, "Transfer-Encoding: gzip\r\n"), 411),
            (
                "malformed JSON".into(),
                with_body(write_method, write_path, b"{\"quantity\": "),
                if base == &s.fe() { 200 } else { 400 },
            ),
            (
                "JSON of the wrong type".into(),
                with_body(write_method, write_path, b"[1, 2, 3]"),
                if base == &s.fe() { 200 } else { 400 },
            ),
        ];
        if base != &s.order(0) && base != &s.order(1) {
            for id in ["-1", "0", "1.5", "99999999999999999999", "%2B1"] {
                cases.push((format!("id {id}"), head("GET", &item.replace("{}", id), ""), 400));
            }
        }
        for (what, bytes, want) in cases {
            let (status, text) = raw(base, &bytes);
            // The front end's purchase ignores a body: it is not JSON input there.
            assert_eq!(status, want, "{base}: {what}: {text}");
            if status == 405 {
                assert!(text.contains("\r\nAllow: "), "{base}: 405 names what is allowed: {text}");
            }
        }
    }
    // Writes that would make stock negative or carry bad values: 400, nothing changed.
    for base in [s.primary(), s.replica()] {
        for body in [
            "{\"quantity_delta\": -1000}",
            "{\"quantity\": -1}",
            "{\"price\": 1.001}",
            "{\"price\": \"free\"}",
            "{\"quantity\": 1.5}",
        ] {
            let (status, text) = raw(&base, &with_body("PATCH", "/books/2", body.as_bytes()));
            assert_eq!(status, 400, "{base} {body}: {text}");
        }
    }
    for base in [s.order(0), s.order(1)] {
        let (status, _) = raw(
            &base,
            &with_body(
                "POST",
                "/internal/orders",
                b"[{\"order_id\": \"x y\", \"id\": 1, \"title\": \"t\", \"price\": 1, \"at\": \"now\"}]",
            ),
        );
        assert_eq!(status, 400);
    }

    // 64 clients that send half a request and wait do not stop others from being served.
    for p in s.all() {
        let base = url(p);
        let addr = base.trim_start_matches("http://").to_string();
        let hold: Vec<TcpStream> = (0..64)
            .map(|_| {
                let mut c = TcpStream::connect(&addr).unwrap();
                c.write_all(b"GET /health HTTP/1.1\r\nHost: x\r\nX-Half: ").unwrap();
                c
            })
            .collect();
        let started = Instant::now();
        let (status, _) = raw(&base, &head("GET", "/health", ""));
        let took = started.elapsed();
        assert_eq!(status, 200);
        assert!(took < Duration::from_secs(1), "{base} served a client in {took:?} while 64 slow clients waited");
        drop(hold);
    }

    // Afterwards: every service healthy, the store works, the files are intact.
    for p in s.all() {
        wait_healthy(&url(p));
    }
    assert_eq!(call("POST", &s.fe(), "/purchase/1", None).status, 200);
    assert_eq!(s.books(&s.primary()), s.books(&s.replica()));
    for name in ["catalog-1", "catalog-2"] {
        let text = std::fs::read(s.dir.0.join(name).join("books.csv")).unwrap();
        let books = bazar::catalog::store::parse(&text).unwrap();
        assert_eq!(books.len(), 7, "{name}");
    }
    // Three purchases went through the front end (the two with a body ignore it).
    for (i, name) in ["order-1", "order-2"].iter().enumerate() {
        eventually(Duration::from_secs(5), "the orders logged on both servers", || s.orders_on(&s.order(i)).len() == 3);
        let text = std::fs::read(s.dir.0.join(name).join("orders.csv")).unwrap();
        let rows: Vec<csv::StringRecord> =
            csv::Reader::from_reader(text.as_slice()).records().map(Result::unwrap).collect();
        assert_eq!(rows.len(), 3, "{name}");
        assert!(rows.iter().all(|r| r.len() == 6 && bazar::wire::Order::check_at(&r[4]).is_ok()), "{name}");
        let sums = |r: &csv::StringRecord| bazar::storage::checksum(r.iter().take(5).map(str::as_bytes));
        assert!(rows.iter().all(|r| r[5] == bazar::storage::checksum_text(sums(r))), "{name}: every row's checksum");
    }
}

/// A search topic longer than any topic can be (6,000 `!`, 18 KB once re-encoded for the
/// catalog) is an unknown topic: `[]`, and the catalogs stay in the round robin.
#[test]
fn an_impossibly_long_topic_is_unknown_and_marks_no_catalog_down() {
    let s = Store::start(Opts::default()).unwrap();
    let fe = s.fe();
    let a = get(&fe, &format!("/search/{}", "!".repeat(6000)));
    assert_eq!((a.status, a.body.as_slice()), (200, &b"[]"[..]), "{}", String::from_utf8_lossy(&a.body));
    let backends: std::collections::HashSet<String> =
        (0..4).map(|_| get(&fe, "/info/1").backend.expect("X-Backend")).collect();
    assert_eq!(backends.len(), 2, "both catalogs still answer reads: {backends:?}");
}
