//! A replica's read of a book with a write pending there asks the primary what is
//! committed (CRAQ's version query) and never shows the write before the primary does.
//!
//! A real primary commits a batch a moment after its push, so a pending write cannot be
//! held still long enough to read it; here a stand-in primary (the project's own HTTP
//! server, answering the three calls a static replica makes) pushes a write to a real
//! replica and says, call by call, up to where writes are committed.

mod common;

use bazar::http::{serve, Request, Response, ServerConfig};
use bazar::metrics::Metrics;
use bazar::shutdown::Shutdown;
use common::*;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

/// A stand-in primary: answers catch-up (nothing to send), and `GET /internal/committed`
/// with the number it is told to.
struct StandIn {
    url: String,
    committed: Arc<AtomicU64>,
    asked: Arc<AtomicU64>,
    stop: Shutdown,
}

impl StandIn {
    fn start() -> StandIn {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        let (committed, asked) = (Arc::new(AtomicU64::new(0)), Arc::new(AtomicU64::new(0)));
        let stop = Shutdown::new();
        let (c, a, s) = (Arc::clone(&committed), Arc::clone(&asked), stop.clone());
        let config = ServerConfig { threads: 4, name: "stand-in primary", trust: bazar::http::Trust::LoopbackOnly };
        std::thread::spawn(move || {
            serve(listener, config, Arc::new(Metrics::new()), s, move |r: &Request| answer(r, &c, &a)).unwrap()
        });
        StandIn { url, committed, asked, stop }
    }
}

impl Drop for StandIn {
    fn drop(&mut self) {
        self.stop.trigger();
    }
}

fn answer(request: &Request, committed: &AtomicU64, asked: &AtomicU64) -> Response {
    match request.path.as_str() {
        "/internal/log" => {
            // Caught up: the replica's own history, nothing after its last write.
            let after: u64 = request.query_param("after").unwrap().unwrap().parse().unwrap();
            let history = request.query_param("history").unwrap().unwrap();
            Response::json(&serde_json::json!({ "history": history, "seq": after, "writes": [], "epoch": 0 }))
        }
        "/internal/committed" => {
            asked.fetch_add(1, Ordering::SeqCst);
            Response::json(&serde_json::json!({ "seq": committed.load(Ordering::SeqCst), "epoch": 0 }))
        }
        _ => Response::json(&serde_json::json!({})),
    }
}

fn price(base: &str) -> (f64, u64) {
    let a = get(base, "/books/1");
    assert_eq!(a.status, 200, "{}", String::from_utf8_lossy(&a.body));
    (json(&a)["price"].as_f64().unwrap(), a.seq.expect("X-Seq"))
}

#[test]
fn a_read_of_a_pending_write_asks_the_primary_and_shows_only_what_is_committed() {
    let dir = TempDir::new("craq");
    let primary = StandIn::start();
    let port = free_port();
    let _replica = Proc::start(Spec {
        name: "replica".into(),
        program: env!("CARGO_BIN_EXE_bazar-catalog").into(),
        args: vec![],
        env: vec![
            ("BAZAR_LISTEN".into(), format!("127.0.0.1:{port}")),
            ("BAZAR_DATA_DIR".into(), dir.0.join("replica").display().to_string()),
            ("BAZAR_ROLE".into(), "replica".into()),
            ("BAZAR_PRIMARY".into(), primary.url.clone()),
            // No lease: the stand-in grants none, and the case here is the pending write.
            ("BAZAR_LEASE_MS".into(), "0".into()),
        ],
        log: dir.0.join("replica.log"),
    });
    let base = format!("http://127.0.0.1:{port}");
    wait_ready(&base);
    let (before, seq) = price(&base);
    assert_eq!(seq, 0);
    assert_eq!(primary.asked.load(Ordering::SeqCst), 0, "a book with nothing pending is read locally");

    // Write 1 (a new price for book 1) is pushed with the commit point 0: pending.
    let book = json(&get(&base, "/books/1"));
    let mut changed = book.clone();
    changed["price"] = serde_json::json!(before + 1.0);
    let push = serde_json::json!([{ "seq": 1, "book": changed, "epoch": 0 }]).to_string();
    let ack = call("POST", &base, "/internal/replicate?epoch=0&committed=0", Some(&push));
    assert_eq!(ack.status, 200, "{}", String::from_utf8_lossy(&ack.body));
    assert_eq!(json(&ack)["seq"], 1, "logged");

    // Not committed at the primary: the read asks, and shows the old price.
    assert_eq!(price(&base), (before, 0));
    assert_eq!(primary.asked.load(Ordering::SeqCst), 1);
    // Another book has nothing pending: read here, without asking.
    assert_eq!(get(&base, "/books/2").status, 200);
    assert_eq!(primary.asked.load(Ordering::SeqCst), 1);
    // The topic of book 1 has a pending write: a list of it asks too.
    let topic = book["topic"].as_str().unwrap().replace(' ', "%20");
    assert_eq!(get(&base, &format!("/books?topic={topic}")).status, 200);
    assert_eq!(primary.asked.load(Ordering::SeqCst), 2);

    // Committed at the primary: the read shows it, and the book is clean from then on.
    primary.committed.store(1, Ordering::SeqCst);
    assert_eq!(price(&base), (before + 1.0, 1));
    assert_eq!(price(&base), (before + 1.0, 1));
    assert_eq!(primary.asked.load(Ordering::SeqCst), 3, "clean after the answer: the second read is local");
    assert_eq!(metric(&base, "bazar_catalog_version_queries_total"), 3.0);

    // A primary that shows a write this replica lacks: the replica is behind; it refuses.
    changed["price"] = serde_json::json!(before + 2.0);
    let push = serde_json::json!([{ "seq": 2, "book": changed, "epoch": 0 }]).to_string();
    assert_eq!(call("POST", &base, "/internal/replicate?epoch=0&committed=1", Some(&push)).status, 200);
    primary.committed.store(3, Ordering::SeqCst);
    assert_eq!(get(&base, "/books/1").status, 503, "the primary has a write this replica never got");

    // A primary that does not answer: the read of the pending write is refused, not guessed.
    drop(primary);
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(get(&base, "/books/1").status, 503);
    assert_eq!(get(&base, "/books/3").status, 200, "books with nothing pending are still read here");
}
