//! Purchases batched end to end (issue 25), with real processes: an order server gathers the
//! purchases that meet into one request to the catalog (`POST /internal/purchases`) and one
//! push to its peer. Batching must lose nothing and double nothing: exactly the stock is
//! sold, every acknowledged order is on both order servers and in the catalog's purchase
//! journal once, each purchase of a batch gets its own answer, and an order server killed
//! in the middle of batches loses no acknowledged order.

mod common;

use common::*;
use std::collections::{BTreeMap, BTreeSet};
use std::sync::Mutex;
use std::time::Duration;

const SETTLE: Duration = Duration::from_secs(30);

fn store() -> Store {
    Store::start(Opts::default()).expect("no memcached needed")
}

fn ids_on(s: &Store, base: &str) -> BTreeSet<String> {
    s.orders_on(base).iter().map(|o| o["order_id"].as_str().unwrap().to_string()).collect()
}

/// The catalog's purchase journal (`GET /internal/purchases`, every page): order id -> how
/// many times it is journaled, with the book.
fn journal(base: &str) -> BTreeMap<String, (usize, u64)> {
    let (mut seen, mut after) = (BTreeMap::new(), 0);
    loop {
        let page = json(&get(base, &format!("/internal/purchases?after={after}&here=1")));
        for p in page["purchases"].as_array().unwrap() {
            let entry = seen.entry(p["order"]["order_id"].as_str().unwrap().to_string()).or_insert((0, 0));
            entry.0 += 1;
            entry.1 = p["order"]["id"].as_u64().unwrap();
            after = p["seq"].as_u64().unwrap();
        }
        if page["more"] != true {
            return seen;
        }
    }
}

/// `clients` threads buy copies of `book` through `bases` (in turn) `each` times: the
/// acknowledged order ids and a count of every other status.
fn buy_together(bases: &[String], book: u32, clients: usize, each: usize) -> (Vec<String>, BTreeMap<u16, usize>) {
    let (acked, others) = (Mutex::new(Vec::new()), Mutex::new(BTreeMap::new()));
    std::thread::scope(|s| {
        for c in 0..clients {
            let (acked, others) = (&acked, &others);
            s.spawn(move || {
                for k in 0..each {
                    let base = &bases[(c + k) % bases.len()];
                    let path = format!("/purchase/{book}");
                    // A transport error (a server killed) counts as status 0.
                    match client().call(ureq::http::Method::POST, base, &path, None) {
                        Ok(a) if a.status == 200 => {
                            acked.lock().unwrap().push(json(&a)["order_id"].as_str().unwrap().to_string())
                        }
                        Ok(a) => *others.lock().unwrap().entry(a.status).or_insert(0) += 1,
                        Err(_) => *others.lock().unwrap().entry(0).or_insert(0) += 1,
                    }
                }
            });
        }
    });
    (acked.into_inner().unwrap(), others.into_inner().unwrap())
}

/// Many concurrent purchases of a book with limited stock, through the front end: exactly
/// the stock is acknowledged, the rest are 409, and every acknowledged order is on both
/// order servers at once (the push is answered after the peer's fsync) and in the journal
/// exactly once, with as many copies journaled as orders acknowledged.
#[test]
fn concurrent_purchases_sell_exactly_the_stock_and_every_order_is_everywhere_once() {
    let s = store();
    s.set_stock(3, 60);
    let (acked, others) = buy_together(&[s.fe()], 3, 24, 6);
    assert_eq!(acked.len(), 60, "exactly the stock is sold; other answers: {others:?}");
    assert_eq!(others, BTreeMap::from([(409, 24 * 6 - 60)]), "every other purchase is out of stock");
    let unique: BTreeSet<String> = acked.iter().cloned().collect();
    assert_eq!(unique.len(), acked.len(), "no order id acknowledged twice");
    for i in 0..2 {
        let held = ids_on(&s, &s.order(i));
        let missing: Vec<_> = unique.difference(&held).collect();
        assert!(missing.is_empty(), "order server {i} lacks acknowledged orders {missing:?}");
        assert_eq!(held.len(), 60, "order server {i} holds exactly the orders sold");
    }
    let journal = journal(&s.primary());
    let of_book: BTreeMap<_, _> = journal.iter().filter(|(_, (_, book))| *book == 3).collect();
    assert_eq!(of_book.len(), 60, "as many copies journaled as orders acknowledged");
    for id in &unique {
        assert_eq!(journal.get(id).map(|j| j.0), Some(1), "order {id} is journaled exactly once");
    }
    assert_eq!(s.books(&s.primary())[2]["quantity"], 0);
}

/// More concurrent purchases than the front end has public slots (the store runs with 16,
/// and 16 may wait) are all served, none shed: a purchase waiting for its batch gives its
/// slot to the next (`http::step_aside`), so the slots cap the work the front end does,
/// not the purchases a batch gathers.
#[test]
fn purchases_waiting_for_their_batch_are_not_shed() {
    let s = store();
    s.set_stock(5, 100_000);
    let (acked, others) = buy_together(&[s.fe()], 5, 128, 4);
    assert_eq!(others, BTreeMap::new(), "every purchase is served; {} acknowledged", acked.len());
    assert_eq!(acked.len(), 128 * 4);
}

/// A lone purchase still works at every hop, straight at an order server and through the
/// front end, and lands on both servers and in the journal.
#[test]
fn a_lone_purchase_is_taken_logged_and_shared() {
    let s = store();
    s.set_stock(1, 5);
    for base in [s.order(0), s.fe()] {
        let a = call("POST", &base, "/purchase/1", None);
        assert_eq!(a.status, 200, "{}", String::from_utf8_lossy(&a.body));
        let order = json(&a);
        let id = order["order_id"].as_str().unwrap().to_string();
        assert_eq!(order["id"], 1);
        for i in 0..2 {
            assert!(ids_on(&s, &s.order(i)).contains(&id), "order server {i} holds {id}");
        }
        assert_eq!(journal(&s.primary()).get(&id).map(|j| j.0), Some(1));
    }
    assert_eq!(call("POST", &s.order(1), "/purchase/99", None).status, 404);
    s.set_stock(1, 0);
    assert_eq!(call("POST", &s.order(1), "/purchase/1", None).status, 409);
}

/// The catalog's batch route answers each purchase on its own (taken, out of stock, no such
/// book, a malformed order), on the primary and through the replica alike, and a purchase
/// sent again for the same order takes no second copy.
#[test]
fn a_batch_is_answered_purchase_by_purchase() {
    let s = store();
    s.set_stock(1, 10);
    s.set_stock(5, 0);
    let at = bazar::ids::timestamp_now();
    let purchase = |id: u32, order: &str| serde_json::json!({"id": id, "order_id": order, "at": at});
    // (catalog, purchases, expected statuses, stock of book 1 after)
    let cases = [
        (
            s.primary(),
            vec![
                purchase(1, "0123456789ab-1"),
                purchase(5, "0123456789ab-2"),
                purchase(99, "0123456789ab-3"),
                purchase(1, "not an order id"),
                purchase(1, "0123456789ab-4"),
            ],
            vec![200, 409, 404, 400, 200],
            8,
        ),
        // Sent again through the replica (forwarded): the orders already journaled take
        // no second copy and are answered as then; a new one takes one.
        (
            s.replica(),
            vec![purchase(1, "0123456789ab-1"), purchase(1, "0123456789ab-4"), purchase(1, "0123456789ab-5")],
            vec![200, 200, 200],
            7,
        ),
        // The same order twice in one batch: one copy.
        (s.primary(), vec![purchase(1, "0123456789ab-6"), purchase(1, "0123456789ab-6")], vec![200, 200], 6),
    ];
    for (catalog, purchases, statuses, stock) in cases {
        let body = serde_json::json!({ "purchases": purchases }).to_string();
        let a = call("POST", &catalog, "/internal/purchases", Some(&body));
        assert_eq!(a.status, 200, "{}", String::from_utf8_lossy(&a.body));
        let taken = json(&a)["taken"].as_array().unwrap().clone();
        let got: Vec<u64> = taken.iter().map(|t| t["status"].as_u64().unwrap()).collect();
        assert_eq!(got, statuses, "{catalog}: {taken:?}");
        for t in taken.iter().filter(|t| t["status"] == 200) {
            assert_eq!(t["book"]["id"], 1);
        }
        assert_eq!(s.books(&s.primary())[0]["quantity"], stock, "{catalog}: {taken:?}");
    }
    let journal = journal(&s.primary());
    for n in [1, 4, 5, 6] {
        assert_eq!(journal.get(&format!("0123456789ab-{n}")).map(|j| j.0), Some(1), "order {n} journaled once");
    }
    for n in [2, 3] {
        assert!(!journal.contains_key(&format!("0123456789ab-{n}")), "a refused purchase journals nothing");
    }
    // Too many purchases in one request is the request's error.
    let many: Vec<_> = (1..=257).map(|n| purchase(1, &format!("0123456789ab-{}", 100 + n))).collect();
    let a =
        call("POST", &s.primary(), "/internal/purchases", Some(&serde_json::json!({ "purchases": many }).to_string()));
    assert_eq!(a.status, 400);
}

/// The order server's batch route (a front end's batch) answers each purchase on its own,
/// as `POST /purchase/{id}` would, and each order it acknowledges is on both servers and
/// journaled once.
#[test]
fn an_order_servers_batch_is_answered_purchase_by_purchase() {
    let s = store();
    s.set_stock(1, 2);
    s.set_stock(5, 0);
    let batch =
        |books: &str| call("POST", &s.order(0), "/internal/purchase-batch", Some(&format!("{{\"books\": {books}}}")));
    let a = batch("[1, 5, 99, 1, 1]");
    assert_eq!(a.status, 200, "{}", String::from_utf8_lossy(&a.body));
    let placed = json(&a)["placed"].as_array().unwrap().clone();
    let statuses: Vec<u64> = placed.iter().map(|p| p["status"].as_u64().unwrap()).collect();
    assert_eq!(statuses, [200, 409, 404, 200, 409], "{placed:?}");
    let acked: BTreeSet<String> =
        placed.iter().filter_map(|p| p["order"]["order_id"].as_str().map(str::to_string)).collect();
    assert_eq!(acked.len(), 2);
    for i in 0..2 {
        assert_eq!(ids_on(&s, &s.order(i)), acked, "order server {i} holds exactly the orders placed");
    }
    let journal = journal(&s.primary());
    assert!(acked.iter().all(|id| journal.get(id).map(|j| j.0) == Some(1)));
    for bad in ["[]", "[0]", "[1, 2", "{}"] {
        assert_eq!(batch(bad).status, 400, "{bad}");
    }
    assert_eq!(s.books(&s.primary())[0]["quantity"], 0);
}

/// An order server killed while batches of purchases are in flight loses no acknowledged
/// order: each is already on its peer's disk and in the journal; once it is back, both
/// servers hold every order whose copy was taken (its orphaned takes are adopted from the
/// journal), each once.
#[test]
fn an_order_server_killed_mid_batch_loses_no_acknowledged_order() {
    killed_mid_batch(false);
}

/// The same with the purchases sent through the front end, which gathers them into batches
/// for both order servers: a batch that may have reached the killed one is a 503 for each of
/// its purchases, never a purchase sent twice.
#[test]
fn an_order_server_killed_mid_batch_from_the_front_end_loses_no_acknowledged_order() {
    killed_mid_batch(true);
}

fn killed_mid_batch(through_front_end: bool) {
    let mut s = store();
    s.set_stock(2, 1_000_000);
    let (one, two) = (s.order(0), s.order(1));
    let target = if through_front_end { s.fe() } else { one.clone() };
    let (acked, others) = std::thread::scope(|scope| {
        let buyers = scope.spawn(|| buy_together(std::slice::from_ref(&target), 2, 16, 40));
        // Kill it once it has acknowledged some (its log grows as batches land).
        eventually(SETTLE, "order server 1 to acknowledge purchases", || s.orders_on(&two).len() >= 50);
        s.orders[0].kill9();
        buyers.join().unwrap()
    });
    assert!(!acked.is_empty(), "some purchases were acknowledged before the kill");
    assert!(others.keys().all(|&status| status == 503 || status == 0), "only the kill's failures: {others:?}");
    let acked: BTreeSet<String> = acked.into_iter().collect();
    let on_peer = ids_on(&s, &two);
    let lost: Vec<_> = acked.difference(&on_peer).collect();
    assert!(lost.is_empty(), "acknowledged orders not on the peer after the kill: {lost:?}");
    let journaled = journal(&s.primary());
    assert!(
        acked.iter().all(|id| journaled.get(id).map(|j| j.0) == Some(1)),
        "every acknowledged order journaled once"
    );
    s.orders[0].restart();
    wait_ready(&s.order(0));
    eventually(SETTLE, "both servers to hold exactly the orders whose copies were taken", || {
        let journal = journal(&s.primary());
        let taken: BTreeSet<String> =
            journal.iter().filter(|(_, (_, book))| *book == 2).map(|(id, _)| id.clone()).collect();
        let sold = 1_000_000 - s.books(&s.primary())[1]["quantity"].as_u64().unwrap();
        sold as usize == taken.len()
            && journal.values().all(|(times, _)| *times == 1)
            && ids_on(&s, &s.order(0)) == taken
            && ids_on(&s, &s.order(1)) == taken
    });
}

/// The batch routes are internal: with a token set, a request without it is refused (401)
/// and takes nothing, on the catalogs and on the order servers.
#[test]
fn the_batch_routes_need_the_token() {
    let token = "batching-test-token-0123456789";
    let s = Store::start(Opts { token: Some(token.into()), ..Opts::default() }).expect("no memcached needed");
    let at = bazar::ids::timestamp_now();
    let take = format!("{{\"purchases\": [{{\"id\": 1, \"order_id\": \"0123456789ab-1\", \"at\": \"{at}\"}}]}}");
    let before = json(&get(&s.primary(), "/books/1"))["quantity"].clone();
    let books = "{\"books\": [1]}".to_string();
    for (base, path, body) in [
        (s.primary(), "/internal/purchases", &take),
        (s.replica(), "/internal/purchases", &take),
        (s.order(0), "/internal/purchase-batch", &books),
    ] {
        let a = call("POST", &base, path, Some(body));
        assert_eq!(a.status, 401, "{base}: {}", String::from_utf8_lossy(&a.body));
    }
    assert_eq!(json(&get(&s.primary(), "/books/1"))["quantity"], before, "nothing was taken");
    let with = client_with_token(token);
    let a = with.call(
        ureq::http::Method::POST,
        &s.order(0),
        "/internal/purchase-batch",
        Some(b"{\"books\": [1]}".to_vec()),
    );
    assert_eq!(a.unwrap().status, 200);
}
