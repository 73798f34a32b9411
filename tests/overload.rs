//! Overload is shed, never paid for by the store's own traffic (issue 28): the control and
//! peer budgets stay open while the public one is full, public overload gets a prompt 503
//! with `Retry-After`, a replica under a surge of public reads keeps its lease, and idle
//! connections from one address do not lock out another. No timing is asserted: the
//! machine is shared; the figures are `bazar-bench overload`'s.

mod common;

use bazar::http::{self, Request, Response, ServerConfig, Trust, PEER_HEADER, PER_ADDRESS};
use bazar::metrics::Metrics;
use bazar::shutdown::Shutdown;
use common::raw::{connect_from, exchange, get_req, read_answer};
use common::*;
use std::io::Write;
use std::net::{Ipv4Addr, SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::time::Duration;

/// A gate the slow handler waits at until the test opens it.
#[derive(Default)]
struct Gate {
    open: Mutex<bool>,
    opened: Condvar,
}

impl Gate {
    fn wait(&self) {
        let mut open = self.open.lock().unwrap();
        while !*open {
            open = self.opened.wait(open).unwrap();
        }
    }

    fn open(&self) {
        *self.open.lock().unwrap() = true;
        self.opened.notify_all();
    }
}

/// The HTTP layer itself, on a real socket, with two public slots held by handlers that
/// wait: the control and peer budgets are still served, and public requests beyond the
/// slots and the queue get 503 with `Retry-After` at once, while the held ones finish.
#[test]
fn internal_traffic_is_served_while_the_public_slots_are_full() {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    let shutdown = Shutdown::new();
    let gate = Arc::new(Gate::default());
    let inside = Arc::new(AtomicU64::new(0));
    let (g, n) = (Arc::clone(&gate), Arc::clone(&inside));
    let config = ServerConfig { threads: 2, name: "overload test", trust: Trust::LoopbackOnly };
    let stop = shutdown.clone();
    let server = std::thread::spawn(move || {
        http::serve(listener, config, Arc::new(Metrics::new()), stop, move |r: &Request| {
            if r.path == "/slow" {
                n.fetch_add(1, Ordering::SeqCst);
                g.wait();
            }
            Response::raw_json(200, b"{}".to_vec())
        })
    });
    // Two slow public requests hold both public slots.
    let held: Vec<TcpStream> = (0..2)
        .map(|_| {
            let s = TcpStream::connect(addr).unwrap();
            (&s).write_all(get_req("/slow", "").as_bytes()).unwrap();
            s
        })
        .collect();
    eventually(Duration::from_secs(30), "both public slots taken", || inside.load(Ordering::SeqCst) == 2);
    let fresh = || {
        let s = TcpStream::connect(addr).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
        s
    };
    // The store's own protocol and a peer's call have their own slots.
    let (head, _) = exchange(&fresh(), &get_req("/internal/lease", ""));
    assert_eq!(head.status, 200, "a control request while the public slots are full");
    let (head, _) = exchange(&fresh(), &get_req("/books/1", &format!("{PEER_HEADER}: 1\r\n")));
    assert_eq!(head.status, 200, "a peer's call while the public slots are full");
    // A public request finds no slot: it waits a moment at most, then is refused with
    // when to come back (an answer, not a timeout).
    let (head, body) = exchange(&fresh(), &get_req("/info/1", ""));
    assert_eq!((head.status, head.header("retry-after")), (503, Some(http::RETRY_AFTER)), "{body}");
    assert!(body.contains("overloaded"), "{body}");
    // The held requests are answered, not dropped, once their handlers may go on.
    gate.open();
    for s in &held {
        s.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
        assert_eq!(read_answer(s).0.status, 200);
    }
    let (head, _) = exchange(&fresh(), &get_req("/info/1", ""));
    assert_eq!(head.status, 200, "served normally once the load is gone");
    shutdown.trigger();
    server.join().unwrap().unwrap();
}

/// A front end: more idle connections from one address than its cap do not lock out
/// another address; the ones over the cap are refused at once with 503 and `Retry-After`.
#[test]
fn idle_connections_from_one_address_do_not_lock_out_another() {
    let s = Store::start(Opts::default()).expect("a store");
    let fe: SocketAddr = s.fe().trim_start_matches("http://").parse().unwrap();
    let hog = Ipv4Addr::new(127, 0, 3, 7);
    let mut idle = Vec::new();
    let mut refused = 0;
    for _ in 0..PER_ADDRESS + 40 {
        let Ok(c) = connect_from(hog, fe) else {
            refused += 1;
            continue;
        };
        idle.push(c);
    }
    // Every connection over the cap is answered (without a request) and closed at once.
    let mut answered = 0;
    for c in &idle[PER_ADDRESS..] {
        c.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
        let (head, body) = read_answer(c);
        assert_eq!((head.status, head.header("retry-after")), (503, Some("1")), "{body}");
        answered += 1;
    }
    assert_eq!(answered + refused, 40, "the connections over the cap of {PER_ADDRESS}");
    // Another address is served as usual, and so is a new one from the hog once it let go.
    let other = connect_from(Ipv4Addr::new(127, 0, 3, 8), fe).unwrap();
    assert_eq!(exchange(&other, &get_req("/info/1", "")).0.status, 200);
    drop(idle);
    eventually(Duration::from_secs(30), "the hog's address served again after it closed", || {
        connect_from(hog, fe).is_ok_and(|c| exchange(&c, &get_req("/info/1", "")).0.status == 200)
    });
}

/// Purchases give back their public slot while they wait for their batch, so the front end
/// bounds what waits itself: with both order servers frozen (SIGSTOP), a batch in flight to
/// each and two full rounds of batches waiting (2 x `OrderBatch::MOST` per order server),
/// every purchase beyond is answered 503 with `Retry-After` at once instead of joining a
/// queue it cannot leave in time; once the order servers run again, every purchase that
/// waited is made.
#[test]
fn purchases_beyond_two_rounds_of_batches_are_shed_at_once() {
    let s = Store::start(Opts::default()).expect("a store");
    s.set_stock(1, 100_000);
    let fe: SocketAddr = s.fe().trim_start_matches("http://").parse().unwrap();
    let waiting = 2 * bazar::wire::OrderBatch::MOST * 2;
    let (flights, extra) = (2, 40);
    s.orders.iter().for_each(|o| o.signal(libc::SIGSTOP));
    let post = "POST /purchase/1 HTTP/1.1\r\nHost: t\r\nContent-Length: 0\r\n\r\n";
    let buyers: Vec<TcpStream> = (0..flights + waiting + extra)
        .map(|i| {
            // 32 buyers per address, under the per-address cap; one at a time, so that the
            // first lead the frozen flights and the next fill the queue.
            let c = connect_from(Ipv4Addr::new(127, 0, 4, 1 + (i / 32) as u8), fe).unwrap();
            (&c).write_all(post.as_bytes()).unwrap();
            std::thread::sleep(Duration::from_millis(2));
            c
        })
        .collect();
    std::thread::sleep(Duration::from_secs(1));
    // The answers that came at once: the shed purchases.
    let shed: Vec<bool> = buyers
        .iter()
        .map(|c| {
            c.set_nonblocking(true).unwrap();
            let answered = c.peek(&mut [0u8; 1]).is_ok_and(|n| n == 1);
            c.set_nonblocking(false).unwrap();
            if answered {
                let (head, body) = read_answer(c);
                assert_eq!((head.status, head.header("retry-after")), (503, Some("1")), "{body}");
                assert!(body.contains("too many purchases"), "{body}");
            }
            answered
        })
        .collect();
    let count = shed.iter().filter(|s| **s).count();
    assert_eq!(count, extra, "shed at once while {flights} flights and {waiting} purchases waited");
    s.orders.iter().for_each(|o| o.signal(libc::SIGCONT));
    for (c, _) in buyers.iter().zip(&shed).filter(|(_, shed)| !**shed) {
        c.set_read_timeout(Some(Duration::from_secs(60))).unwrap();
        let (head, body) = read_answer(c);
        assert_eq!(head.status, 200, "every purchase that waited is made: {body}");
    }
}

/// A replica under a surge of public reads from many addresses (modest: the machine is
/// shared) keeps its read lease: the primary refuses no renewal, no write waits for a lost
/// lease, and every sample of the lease shows time left.
#[test]
fn a_replica_under_a_public_read_surge_keeps_its_lease() {
    let s = Store::start(Opts { lease_ms: Some(1000), ..Opts::default() }).expect("a store");
    let (p, r) = (s.primary(), s.replica());
    wait_ready(&r);
    // The monitor is a peer (loopback, no token in this store), as an operator's scraper
    // with the token would be: its samples are not shed.
    let monitor = bazar::client::Http::new(Duration::from_secs(5), 4, None).peer();
    let read = |base: &str, name: &str| -> f64 {
        let a = monitor.call(ureq::http::Method::GET, base, "/metrics", None).expect("metrics");
        let text = String::from_utf8_lossy(&a.body).into_owned();
        text.lines().find_map(|l| l.strip_prefix(&format!("{name} "))?.parse().ok()).unwrap_or(0.0)
    };
    let before = (read(&r, "bazar_lease_renewal_failures_total"), read(&p, "bazar_lease_waits_total"));
    let target: SocketAddr = r.trim_start_matches("http://").parse().unwrap();
    let stop = AtomicBool::new(false);
    let (ok, shed) = (AtomicU64::new(0), AtomicU64::new(0));
    let mut lapses = 0;
    std::thread::scope(|scope| {
        for u in 0..64u8 {
            let (stop, ok, shed) = (&stop, &ok, &shed);
            scope.spawn(move || {
                let src = Ipv4Addr::new(127, 0, 4, 1 + u / 16);
                let Ok(c) = connect_from(src, target) else { return };
                while !stop.load(Ordering::Relaxed) {
                    let (head, _) = exchange(&c, &get_req(&format!("/books/{}", 1 + u % 7), ""));
                    match head.status {
                        200 => ok.fetch_add(1, Ordering::Relaxed),
                        503 => shed.fetch_add(1, Ordering::Relaxed),
                        other => panic!("status {other}"),
                    };
                    if head.header("connection") == Some("close") {
                        return;
                    }
                }
            });
        }
        // Writes go on meanwhile: each one pushed to the replica under the surge.
        for i in 0..30 {
            let a = call("PATCH", &p, "/books/7", Some(&format!("{{\"quantity\": {}}}", 100 + i)));
            assert_eq!(a.status, 200);
            if read(&r, "bazar_lease_seconds_left") <= 0.0 {
                lapses += 1;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        stop.store(true, Ordering::Relaxed);
    });
    let after = (read(&r, "bazar_lease_renewal_failures_total"), read(&p, "bazar_lease_waits_total"));
    eprintln!(
        "surge on the replica: {} reads answered, {} shed; lease lapses {lapses}",
        ok.load(Ordering::Relaxed),
        shed.load(Ordering::Relaxed)
    );
    assert!(ok.load(Ordering::Relaxed) > 0, "the surge was served");
    assert_eq!(lapses, 0, "the replica's lease never ran out");
    assert_eq!(after, before, "no renewal refused, no write waited for a lost lease");
    assert_eq!(json(&get(&r, "/books/7"))["quantity"], 129, "the replica has every write");
}
