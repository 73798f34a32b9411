//! The memcached cache and push invalidation, against a real memcached.
//! Skipped (with a note) where memcached is not installed, unless BAZAR_REQUIRE_MEMCACHED=1.

mod common;

use common::*;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

fn cached_store() -> Option<Store> {
    Store::start(Opts { memcached: true, ..Opts::default() })
}

fn info(fe: &str, id: u32) -> (String, serde_json::Value) {
    let a = get(fe, &format!("/info/{id}"));
    assert_eq!(a.status, 200, "{}", String::from_utf8_lossy(&a.body));
    (a.cache.clone().expect("X-Cache"), json(&a))
}

#[test]
fn hits_and_misses() {
    let Some(s) = cached_store() else { return };
    let fe = s.fe();
    let (state, first) = info(&fe, 1);
    assert_eq!(state, "miss");
    let a = get(&fe, "/info/1");
    assert_eq!(a.cache.as_deref(), Some("hit"));
    assert_eq!(json(&a), first);
    assert!(a.backend.is_none(), "a hit was produced by no back end");
    for topic in ["distributed%20systems", "Distributed%20Systems"] {
        let a = get(&fe, &format!("/search/{topic}"));
        assert_eq!(a.status, 200);
        assert_eq!(json(&a).as_array().unwrap().len(), 2);
    }
    assert_eq!(get(&fe, "/search/distributed%20systems").cache.as_deref(), Some("hit"));
    // Errors are not cached.
    for _ in 0..2 {
        let a = get(&fe, "/info/77");
        assert_eq!((a.status, a.cache.as_deref()), (404, Some("miss")));
    }
    let text = String::from_utf8(get(&fe, "/metrics").body).unwrap();
    for line in ["bazar_cache_hits_total 3", "bazar_cache_misses_total 4", "bazar_cache_up 1"] {
        assert!(text.contains(line), "{line} in {text}");
    }
    assert_eq!(json(&get(&fe, "/health"))["cache"], "on");
}

#[test]
fn writes_invalidate_via_primary_replica_and_purchase() {
    let Some(s) = cached_store() else { return };
    let fe = s.fe();
    let warm = |id: u32| {
        info(&fe, id);
        assert_eq!(info(&fe, id).0, "hit");
        get(&fe, "/search/undergraduate%20school");
        assert_eq!(get(&fe, "/search/undergraduate%20school").cache.as_deref(), Some("hit"));
    };
    let cases = [
        (s.primary(), "{\"price\": 41.5}", "price", serde_json::json!(41.5)),
        (s.replica(), "{\"quantity\": 9}", "quantity", serde_json::json!(9)),
        (s.replica(), "{\"quantity_delta\": -2}", "quantity", serde_json::json!(7)),
    ];
    for (base, body, field, want) in cases {
        warm(5);
        let a = call("PATCH", &base, "/books/5", Some(body));
        assert_eq!(a.status, 200);
        let (state, book) = info(&fe, 5);
        assert_eq!((state.as_str(), &book[field]), ("miss", &want), "after PATCH {body} via {base}");
        assert_eq!(
            get(&fe, "/search/undergraduate%20school").cache.as_deref(),
            Some("miss"),
            "the topic's search was invalidated"
        );
        assert_eq!(info(&fe, 5).0, "hit");
    }
    warm(5);
    assert_eq!(call("POST", &fe, "/purchase/5", None).status, 200);
    let (state, book) = info(&fe, 5);
    assert_eq!((state.as_str(), book["quantity"].as_u64()), ("miss", Some(6)));
    let text = String::from_utf8(get(&s.primary(), "/metrics").body).unwrap();
    // Four writes, each fencing three keys: the book's info, its topic's search and the
    // first page of every book (`bazar:books`); none added a book, so none fenced the topics.
    assert!(text.contains("bazar_cache_invalidations_total 12"), "{text}");
}

/// Six readers of `/info/7` while 150 writes to book 7 are acknowledged one after another,
/// alternately through the primary and the replica: no read that starts after a write was
/// acknowledged shows older data.
#[test]
fn no_stale_read_after_an_acknowledged_write() {
    let Some(s) = cached_store() else { return };
    race(&s, &[s.fe()]);
}

/// The same race with the readers spread over three front ends sharing one memcached: the
/// invalidation protocol holds across front ends (fills from one, markers for all).
#[test]
fn no_stale_read_with_several_front_ends() {
    let Some(s) = cached_store() else { return };
    let (two, three) = (s.another_frontend("frontend-2"), s.another_frontend("frontend-3"));
    race(&s, &[s.fe(), url(&two), url(&three)]);
}

/// The race ([`common::race`]) on `fes`, counting memcached hits.
fn race(s: &Store, fes: &[String]) {
    let (reads, hits, stale) = common::race(s, fes, "hit");
    eprintln!("race test over {} front ends: {reads} reads ({hits} hits) during 150 writes, {stale} stale", fes.len());
    assert_eq!(stale, 0);
    assert!(hits > 0, "the cache was used");
    for fe in fes {
        assert_eq!(info(fe, 7).1["quantity"], 150);
    }
}

#[test]
fn memcached_killed_and_restarted() {
    let Some(mut s) = cached_store() else { return };
    let fe = s.fe();
    info(&fe, 2);
    assert_eq!(info(&fe, 2).0, "hit");
    s.memcached.as_mut().unwrap().kill9();
    // Everything goes on from the back ends; a request pays at most one short timeout.
    let started = Instant::now();
    for i in 0..30 {
        let a = get(&fe, &format!("/info/{}", 1 + i % 7));
        assert_eq!(a.status, 200);
        assert_ne!(a.cache.as_deref(), Some("hit"));
        assert_eq!(get(&fe, "/search/distributed%20systems").status, 200);
    }
    assert!(started.elapsed() < Duration::from_secs(10), "no hang while memcached is down: {:?}", started.elapsed());
    assert_eq!(info(&fe, 3).0, "off", "backing off");
    // A write whose invalidation cannot be delivered still succeeds, and is counted.
    let a = call("PATCH", &s.primary(), "/books/2", Some("{\"quantity\": 42}"));
    assert_eq!(a.status, 200);
    let text = String::from_utf8(get(&s.primary(), "/metrics").body).unwrap();
    assert!(!text.contains("bazar_cache_errors_total 0"), "{text}");
    assert_eq!(info(&fe, 2).1["quantity"], 42);
    // memcached back (empty): caching resumes by itself.
    s.memcached.as_mut().unwrap().restart();
    eventually(Duration::from_secs(15), "caching resumes", || info(&fe, 2).0 == "hit");
    assert_eq!(info(&fe, 2).1["quantity"], 42);
    assert_eq!(call("PATCH", &s.replica(), "/books/2", Some("{\"quantity\": 43}")).status, 200);
    assert_eq!(info(&fe, 2).1["quantity"], 43);
}

#[test]
fn several_front_end_workers_share_the_cache() {
    let Some(s) = cached_store() else { return };
    let fe = s.fe();
    info(&fe, 4);
    let hits = AtomicUsize::new(0);
    std::thread::scope(|scope| {
        for _ in 0..16 {
            scope.spawn(|| {
                for _ in 0..25 {
                    if info(&fe, 4).0 == "hit" {
                        hits.fetch_add(1, Ordering::Relaxed);
                    }
                }
            });
        }
    });
    assert_eq!(hits.into_inner(), 400);
}

/// memcached restarted while the store is idle: the pooled connections died with it. The
/// next read finds that out, redials at once and is a miss (memcached came back empty),
/// not a back-off; the next write's invalidation redials the same way.
#[test]
fn memcached_restarted_between_requests_costs_no_back_off() {
    let Some(mut s) = cached_store() else { return };
    let fe = s.fe();
    info(&fe, 6);
    assert_eq!(info(&fe, 6).0, "hit");
    let mc = s.memcached.as_mut().unwrap();
    mc.restart();
    let addr = memcached_addr(mc);
    eventually(Duration::from_secs(10), "memcached listens", || std::net::TcpStream::connect(&addr).is_ok());
    assert_eq!(info(&fe, 6).0, "miss");
    // Nothing is stored until the primary has set the new memcached's generation key.
    eventually(Duration::from_secs(5), "the generation key set again", || has_key(&addr, bazar::cache::GEN_KEY));
    assert_eq!(info(&fe, 6).0, "miss");
    assert_eq!(info(&fe, 6).0, "hit");
    assert_eq!(call("PATCH", &s.primary(), "/books/6", Some("{\"quantity\": 5}")).status, 200);
    let (state, book) = info(&fe, 6);
    assert_eq!((state.as_str(), &book["quantity"]), ("miss", &serde_json::json!(5)));
    assert_eq!(info(&fe, 6), ("hit".to_string(), book));
    let text = String::from_utf8(get(&fe, "/metrics").body).unwrap();
    assert!(text.contains("bazar_cache_errors_total 0"), "{text}");
}

/// Several memcached servers: keys spread over them, and the writer (the catalog's cache)
/// invalidates each key on the server the reader (the front end's) looks it up on.
#[test]
fn keys_spread_over_several_servers_and_invalidations_follow_them() {
    use bazar::cache::{Cache, Lookup};
    let dir = TempDir::new("two-memcached");
    let Some(a) = memcached(&dir.0) else { return };
    let Some(b) = memcached(&dir.0) else { return };
    let servers = [memcached_addr(&a), memcached_addr(&b)];
    let (reader, writer) = (Cache::new(&servers, 4), Cache::new(&servers, 4));
    writer.ensure_generation(|| true).unwrap();
    let keys: Vec<String> = (1..=40).map(bazar::cache::info_key).collect();
    for key in &keys {
        let Lookup::Miss(slot) = reader.lookup(key) else { panic!("{key}: a miss first") };
        reader.fill(slot, 1, b"{}");
        assert!(matches!(reader.lookup(key), Lookup::Hit(..)), "{key}: a hit once filled");
    }
    for server in &servers {
        let items = memcached_stat(server, "curr_items");
        assert!((5..=35).contains(&items), "{server} holds {items} of 40 keys");
    }
    writer.invalidate(&keys, 2);
    for key in &keys {
        assert!(matches!(reader.lookup(key), Lookup::Miss(_)), "{key}: invalidated where it is read");
    }
}

/// memcached restarted between a reader's lookup and its fill: a write made while it was
/// down could not leave its marker, so an `add` into the empty new memcached would store
/// the reader's older answer for good. The fill goes over the lookup's own connection,
/// which died with the old memcached: nothing is stored.
#[test]
fn a_fill_never_lands_in_a_memcached_restarted_after_its_lookup() {
    use bazar::cache::{Cache, Lookup};
    let dir = TempDir::new("restart-fill");
    let Some(mut mc) = memcached(&dir.0) else { return };
    let servers = [memcached_addr(&mc)];
    let reader = Cache::new(&servers, 4);
    let primary = Cache::new(&servers, 1);
    primary.ensure_generation(|| true).unwrap();
    let key = bazar::cache::info_key(1);
    let Lookup::Miss(slot) = reader.lookup(&key) else { panic!("a miss first") };
    mc.restart();
    eventually(Duration::from_secs(10), "memcached listens", || std::net::TcpStream::connect(&servers[0]).is_ok());
    // The primary has set the new memcached's generation key (between its batches).
    primary.ensure_generation(|| true).unwrap();
    reader.fill(slot, 1, b"{\"old\": true}");
    let fresh = Cache::new(&servers, 4);
    assert!(matches!(fresh.lookup(&key), Lookup::Miss(_)), "the old answer landed in the new memcached");
    // A lookup on the new memcached fills as usual (the reader itself backs off a moment
    // after the failed fill).
    let Lookup::Miss(slot) = fresh.lookup(&key) else { panic!("a miss") };
    fresh.fill(slot, 2, b"{}");
    assert!(matches!(fresh.lookup(&key), Lookup::Hit(..)));
}

/// memcached restarted while the primary was between fencing a write and making it
/// readable: the new memcached lacks that write's marker, so a reader that looks up there
/// and reads a catalog before the write is readable could store the old book for good.
/// The lookup also asks for the generation key, which the primary sets only between
/// batches: until then nothing is stored.
#[test]
fn a_restarted_memcached_takes_no_fill_before_the_primary_sets_its_generation() {
    use bazar::cache::{Cache, Lookup};
    let dir = TempDir::new("restart-generation");
    let Some(mut mc) = memcached(&dir.0) else { return };
    let servers = [memcached_addr(&mc)];
    let (reader, primary) = (Cache::new(&servers, 4), Cache::new(&servers, 1));
    primary.ensure_generation(|| true).unwrap();
    let key = bazar::cache::info_key(1);
    primary.invalidate(std::slice::from_ref(&key), 10); // write 10 fenced, not yet readable
    mc.restart();
    eventually(Duration::from_secs(10), "memcached listens", || std::net::TcpStream::connect(&servers[0]).is_ok());
    // A reader on the new memcached finds the key absent and reads data at 9.
    let Lookup::Miss(slot) = reader.lookup(&key) else { panic!("a miss") };
    reader.fill(slot, 9, b"{\"old\": true}");
    assert!(matches!(reader.lookup(&key), Lookup::Miss(_)), "the old answer was stored");
    // Write 10 readable, the primary between batches sets the generation: fills resume.
    primary.ensure_generation(|| true).unwrap();
    let Lookup::Miss(slot) = reader.lookup(&key) else { panic!("a miss") };
    reader.fill(slot, 10, b"{}");
    assert!(matches!(reader.lookup(&key), Lookup::Hit(..)));
}

/// One figure of memcached's `stats`.
fn memcached_stat(server: &str, name: &str) -> u64 {
    use std::io::{BufRead, BufReader, Write};
    let mut conn = std::net::TcpStream::connect(server).unwrap();
    conn.write_all(b"stats\r\n").unwrap();
    let prefix = format!("STAT {name} ");
    for line in BufReader::new(conn).lines() {
        let line = line.unwrap();
        if let Some(v) = line.strip_prefix(&prefix) {
            return v.trim().parse().unwrap();
        }
        assert_ne!(line, "END", "no {name} in stats");
    }
    panic!("stats cut short")
}

/// An import replaces the catalog while the store's memcached holds answers of the old one:
/// once the primary acknowledges a write again, no read shows the old catalog.
#[test]
fn after_an_import_the_cache_shows_the_new_catalog() {
    let Some(mut s) = cached_store() else { return };
    let fe = s.fe();
    for _ in 0..2 {
        info(&fe, 1);
        get(&fe, "/search/distributed%20systems");
    }
    assert_eq!(info(&fe, 1).0, "hit");
    let data = s.catalogs[0].spec.env.iter().find(|(k, _)| k == "BAZAR_DATA_DIR").unwrap().1.clone();
    let file = s.dir.0.join("new.csv");
    std::fs::write(
        &file,
        "id,title,topic,price,quantity\n1,The New First Book,distributed systems,9.99,3\n2,Another,cooking,1.00,1\n",
    )
    .unwrap();
    s.catalogs[0].terminate(Duration::from_secs(5));
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_bazar-catalog"))
        .arg("import")
        .arg(&file)
        .env("BAZAR_DATA_DIR", &data)
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    s.catalogs[0].restart();
    wait_healthy(&s.primary());
    // The first write after the import is acknowledged only once the cache is clean.
    let a = call("PATCH", &s.primary(), "/books/2", Some("{\"quantity\": 5}"));
    assert_eq!(a.status, 200, "{}", String::from_utf8_lossy(&a.body));
    for _ in 0..3 {
        let (_, book) = info(&fe, 1);
        assert_eq!(book["title"], "The New First Book");
        let hits = json(&get(&fe, "/search/distributed%20systems"));
        assert_eq!(hits.as_array().unwrap().len(), 1, "{hits}");
        assert_eq!(get(&fe, "/info/7").status, 404, "book 7 is gone");
    }
    let log = std::fs::read_to_string(&s.catalogs[0].spec.log).unwrap();
    assert!(log.contains("another catalog history: flushed"), "{log}");
}

/// Paging through the front end's search, served from the cache where it can be: every
/// book of the topic once, in id order, while books are added to it; a second pass (full
/// pages now cached) sees every book the first saw and every book added meanwhile.
#[test]
fn cached_search_pages_see_every_book_once_while_books_are_added() {
    let Some(s) = cached_store() else { return };
    let (fe, p) = (s.fe(), s.primary());
    let topic = "undergraduate%20school";
    let add = |n: u32| {
        let body = format!(r#"{{"title": "Added {n}", "topic": "Undergraduate School", "price": 1, "quantity": 1}}"#);
        let a = call("POST", &p, "/books", Some(&body));
        assert_eq!(a.status, 201, "{}", String::from_utf8_lossy(&a.body));
        json(&a)["id"].as_u64().unwrap() as u32
    };
    let pass = |added: &mut Vec<u32>, n0: u32| {
        let (mut ids, mut hits, mut target) = (Vec::new(), 0, Some(format!("/search/{topic}?limit=2")));
        while let Some(t) = target {
            let a = get(&fe, &t);
            assert_eq!(a.status, 200, "{t}: {}", String::from_utf8_lossy(&a.body));
            hits += usize::from(a.cache.as_deref() == Some("hit"));
            ids.extend(json(&a).as_array().unwrap().iter().map(|b| b["id"].as_u64().unwrap() as u32));
            target = a.link.as_deref().and_then(bazar::page::next_target).map(str::to_string);
            added.push(add(n0 + added.len() as u32));
        }
        (ids, hits)
    };
    let mut added = Vec::new();
    let (first, _) = pass(&mut added, 0);
    let seen_before = added.len();
    let (second, hits) = pass(&mut added, 100);
    for ids in [&first, &second] {
        assert!(ids.windows(2).all(|w| w[0] < w[1]), "once each, by id: {ids:?}");
        assert!((3..=7).all(|id| ids.contains(&id)), "the seeded books: {ids:?}");
    }
    // The second pass began after the first pass's additions were acknowledged.
    assert!(added[..seen_before].iter().all(|id| second.contains(id)), "{second:?} lacks one of {added:?}");
    assert!(hits > 0, "full pages came from the cache");
}
