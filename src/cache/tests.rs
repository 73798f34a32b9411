//! The cache protocol's values and its failure handling, against fake servers.
use super::*;
use crate::money::Money;
use std::io::{Read, Write};

#[test]
fn decodes_values() {
    assert!(matches!(decode(b"D7\n{\"a\":1}"), Value::Data(7, b"{\"a\":1}")));
    assert!(matches!(decode(b"M42"), Value::Marker(42)));
    assert!(matches!(decode(b"Mx"), Value::Marker(u64::MAX)));
    assert!(matches!(decode(b"Dx\n{}"), Value::Marker(0)));
    assert!(matches!(decode(b""), Value::Marker(0)));
}

#[test]
fn a_lookup_is_judged_by_what_it_found_and_its_licence() {
    let entry = entry(7, b"{}");
    assert_eq!(entry, b"D7\n{}");
    // Data is a hit, with or without the generation key.
    assert_eq!(judge(true, Some(&entry), Some(3)), Found::Hit(7, b"{}"));
    assert_eq!(judge(false, Some(&entry), Some(3)), Found::Hit(7, b"{}"));
    // A marker with its CAS token; an absent key.
    assert_eq!(judge(true, Some(&marker(9)), Some(3)), Found::Miss(Some((9, 3))));
    assert_eq!(judge(true, None, None), Found::Miss(None));
    // No licence (a memcached that restarted), or a marker without a CAS token: nothing
    // may be stored.
    assert_eq!(judge(false, None, None), Found::Miss(Some((u64::MAX, 0))));
    assert_eq!(judge(false, Some(&marker(9)), Some(3)), Found::Miss(Some((u64::MAX, 0))));
    assert_eq!(judge(true, Some(&marker(9)), None), Found::Miss(Some((u64::MAX, 0))));
    assert_eq!(fill_by(Some((u64::MAX, 0)), u64::MAX - 1), None);
}

#[test]
fn a_fill_adds_where_nothing_was_and_replaces_only_an_older_marker() {
    assert_eq!(fill_by(None, 5), Some(FillBy::Add));
    assert_eq!(fill_by(Some((5, 11)), 5), Some(FillBy::Cas(11)));
    assert_eq!(fill_by(Some((5, 11)), 6), Some(FillBy::Cas(11)));
    // Data older than the marker's write: the stale fill the markers exist to stop.
    assert_eq!(fill_by(Some((5, 11)), 4), None);
}

#[test]
fn keys() {
    assert_eq!(info_key(7), "bazar:info:7");
    assert_eq!(search_key(" Distributed Systems").unwrap(), "bazar:search:distributed%20systems");
    assert!(search_key(&"x".repeat(300)).is_none());
    let book = Book { id: 1, title: "t".into(), topic: "a".into(), price: Money::from_cents(1), quantity: 1 };
    let moved = Book { topic: "b".into(), ..book.clone() };
    let sorted = |mut k: Vec<String>| {
        k.sort();
        k
    };
    // A purchase or a price: its info, its topic, the books' first page; the topics are
    // counted as they were.
    assert_eq!(sorted(keys_for(Some(&book), &book)), ["bazar:books", "bazar:info:1", "bazar:search:a"]);
    // A new book changes the topics' counts too.
    assert_eq!(sorted(keys_for(None, &book)), ["bazar:books", "bazar:info:1", "bazar:search:a", "bazar:topics"]);
    // A book moved to another topic (not a write the catalog decides today, but a pushed
    // book may say so): both topics and the counts.
    assert_eq!(
        sorted(keys_for(Some(&book), &moved)),
        ["bazar:books", "bazar:info:1", "bazar:search:a", "bazar:search:b", "bazar:topics"]
    );
    let recased = Book { topic: " A ".into(), ..book.clone() };
    assert!(!keys_for(Some(&book), &recased).contains(&TOPICS_KEY.to_string()));
}

/// A server that answers every command with `answer`: the cases a real memcached
/// never shows.
fn fake_memcached(answer: &'static [u8]) -> String {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap().to_string();
    std::thread::spawn(move || {
        for conn in listener.incoming() {
            let Ok(mut conn) = conn else { return };
            let mut command = [0u8; 512];
            while matches!(conn.read(&mut command), Ok(n) if n > 0) {
                if conn.write_all(answer).is_err() {
                    break;
                }
            }
        }
    });
    addr
}

#[test]
fn a_malformed_answer_turns_the_cache_off_not_the_request() {
    for answer in
        [&b"garbage\r\n"[..], b"VA 536870912 c1\r\nshort", b"VA 2 c1\r\nabcd", b"SERVER_ERROR out of memory\r\n"]
    {
        let cache = Cache::new(&[fake_memcached(answer)], 2);
        assert!(matches!(cache.lookup("bazar:info:1"), Lookup::Off), "{}", String::from_utf8_lossy(answer));
        assert!(!cache.is_on());
        assert_eq!(cache.counters.errors.load(Ordering::Relaxed), 1);
        // Invalidations still try, and keep what they could not deliver.
        cache.invalidate(&["bazar:info:1".to_string()], 3);
        assert_eq!(cache.pending(), 1);
    }
}

#[test]
fn a_dead_server_costs_one_failed_call_then_nothing_until_the_back_off_ends() {
    let addr = {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        listener.local_addr().unwrap().to_string()
    };
    let cache = Cache::new(&[addr], 2);
    assert!(matches!(cache.lookup("k"), Lookup::Off));
    assert!(matches!(cache.lookup("k"), Lookup::Off));
    assert_eq!(cache.counters.errors.load(Ordering::Relaxed), 1, "the second lookup did not call");
}

#[test]
fn a_pooled_connection_that_times_out_is_not_retried() {
    // Answers the first command, then hangs: a memcached stopped (SIGSTOP) or cut off.
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap().to_string();
    let accepted = std::sync::Arc::new(AtomicU64::new(0));
    let count = std::sync::Arc::clone(&accepted);
    std::thread::spawn(move || {
        let mut held = Vec::new();
        for conn in listener.incoming() {
            let Ok(mut conn) = conn else { return };
            if count.fetch_add(1, Ordering::SeqCst) == 0 {
                // One lookup: the generation key and the key, both absent.
                let _ = conn.read(&mut [0u8; 512]);
                let _ = conn.write_all(b"EN\r\nEN\r\n");
            }
            held.push(conn);
        }
    });
    let cache = Cache::new(&[addr], 2);
    assert!(matches!(cache.lookup("k"), Lookup::Miss(_)));
    assert!(matches!(cache.lookup("k"), Lookup::Off));
    assert_eq!(accepted.load(Ordering::SeqCst), 1, "one timeout paid, no second connection");
}
