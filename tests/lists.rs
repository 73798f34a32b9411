//! The front end's lists and order lookups end to end: `GET /books`, `GET /topics` (paged,
//! through the caches, never stale after an acknowledged write) and `GET /orders/{id}`
//! (from any order server). Real binaries, real sockets, temp data dirs.

mod common;

use common::*;
use std::collections::HashSet;
use std::time::Duration;

/// Every item of a paged list on `base`, following the `Link`s from `first`; the targets
/// of the pages read, too.
fn walk(base: &str, first: &str) -> (Vec<serde_json::Value>, Vec<String>) {
    let (mut items, mut targets, mut target) = (Vec::new(), Vec::new(), first.to_string());
    loop {
        let a = get(base, &target);
        assert_eq!(a.status, 200, "{base}{target}: {}", String::from_utf8_lossy(&a.body));
        assert!(a.cache.is_some(), "{target}: every answer says X-Cache");
        items.extend(json(&a).as_array().unwrap().iter().cloned());
        targets.push(target.clone());
        match a.link.as_deref().and_then(bazar::page::next_target) {
            Some(next) => target = next.to_string(),
            None => return (items, targets),
        }
    }
}

fn add_book(base: &str, title: &str, topic: &str) -> u64 {
    let body = serde_json::json!({"title": title, "topic": topic, "price": 5, "quantity": 3}).to_string();
    let a = call("POST", base, "/books", Some(&body));
    assert_eq!(a.status, 201, "{}", String::from_utf8_lossy(&a.body));
    json(&a)["id"].as_u64().unwrap()
}

fn topic_counts(fe: &str) -> Vec<(String, u64)> {
    let a = get(fe, "/topics");
    assert_eq!(a.status, 200, "{}", String::from_utf8_lossy(&a.body));
    json(&a)
        .as_array()
        .unwrap()
        .iter()
        .map(|t| (t["topic"].as_str().unwrap().to_string(), t["books"].as_u64().unwrap()))
        .collect()
}

#[test]
fn books_and_topics_are_paged_lists_of_the_whole_catalog() {
    let s = Store::start(Opts::default()).expect("no memcached needed");
    let fe = s.fe();

    // Every book, by id, in whole-book form; pages of 3 visit each once.
    let a = get(&fe, "/books");
    assert_eq!(a.status, 200);
    assert!(a.link.is_none(), "7 books fit on the first page");
    assert_eq!(a.cache.as_deref(), Some("off"));
    assert!(a.backend.is_some());
    let all = json(&a);
    assert_eq!(all.as_array().unwrap().len(), 7);
    assert_eq!(
        all[1],
        serde_json::json!({"id": 2, "title": "RPCs for Noobs", "topic": "distributed systems", "price": 19.5, "quantity": all[1]["quantity"]})
    );
    let (paged, targets) = walk(&fe, "/books?limit=3");
    assert_eq!(serde_json::Value::from(paged), all);
    assert_eq!(targets, ["/books?limit=3", "/books?limit=3&after=3", "/books?limit=3&after=6"]);

    // Every topic with its number of books, by topic; the cursor is the last topic.
    assert_eq!(topic_counts(&fe), [("distributed systems".into(), 2), ("undergraduate school".into(), 5)]);
    let (paged, targets) = walk(&fe, "/topics?limit=1");
    assert_eq!(paged.len(), 2);
    assert_eq!(targets, ["/topics?limit=1", "/topics?limit=1&after=distributed%20systems"]);

    // A new book through the replica (a remote write): a new topic, a count, a page.
    let id = add_book(&s.replica(), "Sourdough & Patience", "Cooking, Slowly");
    add_book(&s.primary(), "The Second Loaf", "cooking, slowly");
    assert_eq!(
        topic_counts(&fe),
        [("Cooking, Slowly".into(), 2), ("distributed systems".into(), 2), ("undergraduate school".into(), 5)]
    );
    let (paged, _) = walk(&fe, "/topics?limit=1");
    assert_eq!(paged.len(), 3, "every topic once: {paged:?}");
    let (paged, _) = walk(&fe, "/topics?limit=1&after=Cooking%2C%20Slowly");
    assert_eq!(paged.len(), 2);
    let (books, _) = walk(&fe, "/books?limit=4");
    assert_eq!(books.len(), 9);
    assert_eq!(books[7]["id"], id);
    let ids: HashSet<u64> = books.iter().map(|b| b["id"].as_u64().unwrap()).collect();
    assert_eq!(ids.len(), 9);
    // Each catalog answers its own list (the replica reads under CRAQ's rules).
    for base in [s.primary(), s.replica()] {
        let a = get(&base, "/topics?limit=2");
        assert_eq!(a.status, 200);
        assert_eq!(json(&a).as_array().unwrap().len(), 2);
        assert_eq!(a.link.as_deref(), Some("</topics?limit=2&after=distributed%20systems>; rel=\"next\""));
        assert!(a.seq.is_some(), "X-Seq");
    }

    // Bad input is a 400 with a message; other methods a 405.
    for (method, path, want) in [
        ("GET", "/books?limit=0", 400),
        ("GET", "/books?limit=1001", 400),
        ("GET", "/books?after=x", 400),
        ("GET", "/books?after=-1", 400),
        ("GET", "/topics?limit=0", 400),
        ("GET", "/topics?after=", 400),
        ("GET", "/topics?after=%zz", 400),
        ("POST", "/books", 405),
        ("POST", "/topics", 405),
        ("DELETE", "/orders/x", 405),
    ] {
        let a = call(method, &fe, path, None);
        assert_eq!(a.status, want, "{method} {path}: {}", String::from_utf8_lossy(&a.body));
        assert!(json(&a)["error"].as_str().is_some_and(|m| !m.is_empty()));
    }
    // Any text is a cursor: the topics that sort after it (case-insensitively).
    let (after_long, _) = walk(&fe, &format!("/topics?after={}", "D".repeat(3000)));
    assert_eq!(after_long.len(), 2, "{after_long:?}");
    assert_eq!(walk(&fe, "/topics?after=%20%20").0.len(), 3);
    assert_eq!(get(&s.primary(), "/topics?after=").status, 400);
}

#[test]
fn an_order_is_found_through_the_front_end_on_any_order_server() {
    let mut s = Store::start(Opts::default()).expect("no memcached needed");
    let fe = s.fe();
    let mut ids = Vec::new();
    for _ in 0..4 {
        let a = call("POST", &fe, "/purchase/3", None);
        assert_eq!(a.status, 200, "{}", String::from_utf8_lossy(&a.body));
        ids.push(json(&a)["order_id"].as_str().unwrap().to_string());
    }
    // Round robin: the lookups are answered by both order servers.
    let mut served = HashSet::new();
    for id in ids.iter().chain(ids.iter()) {
        let a = get(&fe, &format!("/orders/{id}"));
        assert_eq!(a.status, 200, "{}", String::from_utf8_lossy(&a.body));
        let order = json(&a);
        assert_eq!((order["order_id"].as_str(), order["id"].as_u64()), (Some(id.as_str()), Some(3)));
        served.insert(a.backend.clone().expect("X-Backend"));
    }
    assert_eq!(served.len(), 2, "{served:?}");
    for (path, want) in [("/orders/0123456789ab-1", 404), ("/orders/no%20such", 404), ("/orders/%zz", 400)] {
        let a = get(&fe, path);
        assert_eq!(a.status, want, "{path}: {}", String::from_utf8_lossy(&a.body));
    }

    // An order server down: its peer answers for the orders it took; an id neither holds
    // is not called unknown while one order server could not be asked.
    s.orders[1].kill9();
    for id in &ids {
        assert_eq!(get(&fe, &format!("/orders/{id}")).status, 200);
    }
    let a = get(&fe, "/orders/0123456789ab-1");
    assert_eq!(a.status, 503, "{}", String::from_utf8_lossy(&a.body));
    assert!(json(&a)["error"].as_str().unwrap().contains("could not be asked"));

    // An order taken while its peer is down is on the peer once it is back.
    let a = call("POST", &fe, "/purchase/3", None);
    assert_eq!(a.status, 200);
    let late = json(&a)["order_id"].as_str().unwrap().to_string();
    s.orders[1].restart();
    wait_ready(&s.order(1));
    eventually(Duration::from_secs(20), "the restarted order server to catch up", || {
        get(&s.order(1), &format!("/orders/{late}")).status == 200
    });
    assert_eq!(get(&fe, "/orders/0123456789ab-1").status, 404);
}

#[test]
fn cached_lists_are_never_stale_after_an_acknowledged_write() {
    let Some(s) = Store::start(Opts { memcached: true, near_mb: Some(8), ..Opts::default() }) else { return };
    let fe = s.fe();
    let cached = |path: &str| {
        eventually(Duration::from_secs(20), &format!("{path} served from a cache"), || {
            matches!(get(&fe, path).cache.as_deref(), Some("near" | "hit"))
        })
    };
    cached("/books");
    cached("/topics");
    // Other pages are read from a catalog each time.
    assert_eq!(get(&fe, "/books?limit=3&after=3").cache.as_deref(), Some("off"));
    assert_eq!(get(&fe, "/topics?limit=1").cache.as_deref(), Some("off"));

    // Each acknowledged write (purchases through the front end, stock and new books through
    // either catalog) is seen by the very next list read, whichever cache answers it.
    for round in 0..12u32 {
        let base = if round % 2 == 0 { s.primary() } else { s.replica() };
        let stock = 40 + round;
        let a = call("PATCH", &base, "/books/5", Some(&format!("{{\"quantity\": {stock}}}")));
        assert_eq!(a.status, 200);
        let books = json(&get(&fe, "/books"));
        assert_eq!(books[4]["quantity"], stock, "round {round}: /books after a stock change");
        let a = call("POST", &fe, "/purchase/5", None);
        assert_eq!(a.status, 200);
        assert_eq!(json(&get(&fe, "/books"))[4]["quantity"], stock - 1, "round {round}: /books after a purchase");
        if round % 3 == 0 {
            let before = topic_counts(&fe);
            add_book(&base, &format!("Volume {round}"), "serials");
            let after = topic_counts(&fe);
            let serials = |c: &[(String, u64)]| c.iter().find(|(t, _)| t == "serials").map_or(0, |(_, n)| *n);
            assert_eq!(serials(&after), serials(&before) + 1, "round {round}: /topics after a new book");
        }
        // Between writes the lists are cached again.
        cached("/books");
        cached("/topics");
    }
    // A purchase leaves the topics' cached entry alone (it changes no count).
    cached("/topics");
    assert_eq!(call("POST", &fe, "/purchase/6", None).status, 200);
    assert!(matches!(get(&fe, "/topics").cache.as_deref(), Some("near" | "hit")));
}
