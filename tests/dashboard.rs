//! `GET /cluster`, the dashboard's data, against a live store: what it shows of each
//! service, that it needs no token and shows none, and that a hung back end (SIGSTOP) is
//! shown down instead of holding the answer.

mod common;

use common::*;
use std::io::Write;
use std::time::Duration;

const TOKEN: &str = "s3cret-t0ken-never-shown";

fn cluster(fe: &str) -> serde_json::Value {
    let a = get(fe, "/cluster");
    assert_eq!(a.status, 200, "{}", String::from_utf8_lossy(&a.body));
    assert!(!String::from_utf8_lossy(&a.body).contains(TOKEN), "the token is never shown");
    json(&a)
}

/// The entry of `kind` ("catalogs", "orders") whose url is `url`.
fn entry(c: &serde_json::Value, kind: &str, url: &str) -> serde_json::Value {
    c[kind].as_array().unwrap().iter().find(|e| e["url"] == url).cloned().unwrap_or_else(|| panic!("{url} in {c}"))
}

#[test]
fn cluster_shows_every_service_and_a_hung_one_as_down() {
    let with_cache = bazar::cluster::find_program("memcached").is_some();
    let s = Store::start(Opts { memcached: with_cache, token: Some(TOKEN.into()), ..Opts::default() }).unwrap();
    let fe = s.fe();
    assert_eq!(call("POST", &fe, "/purchase/1", None).status, 200);
    get(&fe, "/info/1");
    get(&fe, "/info/1");

    eventually(Duration::from_secs(10), "every order server has pulled from its peer", || {
        let c = cluster(&fe);
        (0..2).all(|i| entry(&c, "orders", &s.order(i))["peers"][0]["last_pull_ms_ago"].is_u64())
    });
    let c = cluster(&fe);
    let primary = entry(&c, "catalogs", &s.primary());
    let replica = entry(&c, "catalogs", &s.replica());
    assert_eq!(
        (primary["role"].as_str(), primary["up"].as_bool(), primary["ready"].as_bool()),
        (Some("primary"), Some(true), Some(true))
    );
    assert_eq!((replica["role"].as_str(), replica["ready"].as_bool()), (Some("replica"), Some(true)));
    assert_eq!(replica["in_sync"], true);
    assert_eq!(primary["seq"], 1, "the purchase was write 1");
    assert!(replica["lease_ms_left"].as_u64().is_some());
    assert!(primary["requests"].as_u64().unwrap() >= 1, "the purchase counts: {primary}");
    let order = entry(&c, "orders", &s.order(0));
    assert_eq!(order["orders"], 1);
    assert_eq!(order["peers"][0]["url"], s.order(1));
    let front = &c["frontend"];
    assert_eq!(front["ready"], true);
    assert!(front["buckets"].as_array().unwrap().last().unwrap()[0].is_null(), "+Inf last: {front}");
    if with_cache {
        assert_eq!(front["cache"], "on");
        assert_eq!(c["memcached"][0]["up"], true);
        assert!(front["cache_hits"].as_f64().unwrap() >= 1.0, "{front}");
    } else {
        assert_eq!(front["cache"], "off");
    }

    // A hung replica and a hung order server: shown down, and the answer still comes.
    s.catalogs[1].signal(libc::SIGSTOP);
    s.orders[1].signal(libc::SIGSTOP);
    // Past the reuse window of the last answer (250 ms), so this one is gathered anew.
    std::thread::sleep(Duration::from_millis(300));
    let c = cluster(&fe);
    s.catalogs[1].signal(libc::SIGCONT);
    s.orders[1].signal(libc::SIGCONT);
    let hung = entry(&c, "catalogs", &s.replica());
    assert_eq!((hung["up"].as_bool(), hung["ready"].as_bool()), (Some(false), Some(false)), "{hung}");
    assert!(hung["error"].is_string(), "{hung}");
    assert_eq!(entry(&c, "orders", &s.order(1))["up"], false);
    assert_eq!(entry(&c, "catalogs", &s.primary())["up"], true);
    let note = format!("GET /cluster with a hung replica and order server took {} ms to gather\n", c["gathered_ms"]);
    let _ = std::io::stderr().write_all(note.as_bytes());
    eventually(Duration::from_secs(15), "the replica shown back", || {
        entry(&cluster(&fe), "catalogs", &s.replica())["ready"] == true
    });
}
