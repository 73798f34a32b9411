//! The etcd client against a real etcd (Debian's etcd-server) on free loopback ports: the
//! operations failover stands on (a leader key bound to a lease, compare-and-swap of a
//! record, leases that expire). Skipped (with a note) where etcd is not installed, unless
//! BAZAR_REQUIRE_ETCD=1.

mod common;

use bazar::client::Http;
use bazar::etcd::{Compare, Etcd, EtcdError, Op};
use common::*;
use std::time::Duration;

fn etcd_client(urls: &[String], prefix: &str) -> Etcd {
    Etcd::new(Http::new(Duration::from_secs(2), 4, None), urls.to_vec(), prefix)
}

#[test]
fn one_leader_at_a_time_and_the_next_once_its_lease_is_gone() {
    let dir = TempDir::new("etcd-leader");
    let Some(server) = etcd(&dir.0) else { return };
    let etcd = etcd_client(&[etcd_url(&server)], "/bazar-test");
    let (a, b) = (etcd.grant(Duration::from_secs(30)).unwrap(), etcd.grant(Duration::from_secs(30)).unwrap());
    assert_ne!(a, b);
    assert_eq!(etcd.create("leader", b"http://a:9000", Some(a)).unwrap(), None, "the first one wins");
    let holder = etcd.create("leader", b"http://b:9000", Some(b)).unwrap().expect("taken");
    assert_eq!((holder.value.as_slice(), holder.lease, holder.key.as_str()), (&b"http://a:9000"[..], a, "leader"));
    // Its lease ends (revoked, as a primary stepping down does): the key goes with it.
    etcd.revoke(a).unwrap();
    assert_eq!(etcd.get("leader").unwrap(), None);
    assert_eq!(etcd.keep_alive(a).unwrap(), None, "a revoked lease cannot be renewed");
    etcd.revoke(a).unwrap();
    assert_eq!(etcd.create("leader", b"http://b:9000", Some(b)).unwrap(), None);
    assert_eq!(etcd.get("leader").unwrap().unwrap().value, b"http://b:9000");
}

#[test]
fn a_lease_that_is_not_renewed_expires_and_takes_its_keys() {
    let dir = TempDir::new("etcd-lease");
    let Some(server) = etcd(&dir.0) else { return };
    let etcd = etcd_client(&[etcd_url(&server)], "/bazar-test");
    let (kept, left) = (etcd.grant(Duration::from_secs(2)).unwrap(), etcd.grant(Duration::from_secs(2)).unwrap());
    etcd.put("kept", b"1", Some(kept)).unwrap();
    etcd.put("left", b"1", Some(left)).unwrap();
    eventually(Duration::from_secs(20), "the unrenewed lease to expire", || {
        assert!(etcd.keep_alive(kept).unwrap().is_some_and(|ttl| ttl >= Duration::from_secs(1)));
        std::thread::sleep(Duration::from_millis(300));
        etcd.get("left").unwrap().is_none()
    });
    assert!(etcd.get("kept").unwrap().is_some(), "renewed, its key stays");
    assert_eq!(etcd.keep_alive(left).unwrap(), None);
}

#[test]
fn compare_and_swap_refuses_a_stale_revision() {
    let dir = TempDir::new("etcd-cas");
    let Some(server) = etcd(&dir.0) else { return };
    let etcd = etcd_client(&[etcd_url(&server)], "/bazar-test");
    etcd.put("sync", b"a,b", None).unwrap();
    let read = etcd.get("sync").unwrap().unwrap();
    let swap = |from: i64, to: &[u8]| {
        etcd.txn(
            &[Compare::ModRevision("sync".into(), from)],
            &[Op::Put { key: "sync".into(), value: to.to_vec(), lease: None }],
            &[Op::Get("sync".into())],
        )
        .unwrap()
    };
    let first = swap(read.mod_revision, b"a");
    assert!(first.succeeded && first.kvs.is_empty());
    // A second writer that read the same revision loses, and learns what is there now.
    let second = swap(read.mod_revision, b"b");
    assert!(!second.succeeded);
    assert_eq!(second.kvs[0].value, b"a");
    assert_eq!(second.kvs[0].mod_revision, first.revision);
    // Comparing values, and an absent key.
    let by_value =
        etcd.txn(&[Compare::Value("sync".into(), b"a".to_vec()), Compare::Absent("epoch".into())], &[], &[]).unwrap();
    assert!(by_value.succeeded);
    etcd.delete("sync").unwrap();
    assert_eq!(etcd.get("sync").unwrap(), None);
    assert!(swap(0, b"c").succeeded, "mod revision 0: the key does not exist");
}

/// What a switchover whose handover got no answer stands on: rewriting a record with the
/// same value still moves its revision, so a handover that compared the old revision and
/// reaches etcd only after that rewrite fails.
#[test]
fn rewriting_the_same_value_fences_a_late_compare_and_swap() {
    let dir = TempDir::new("etcd-fence");
    let Some(server) = etcd(&dir.0) else { return };
    let etcd = etcd_client(&[etcd_url(&server)], "/bazar-test");
    etcd.put("leader", b"me", None).unwrap();
    etcd.put("sync", b"me,b", None).unwrap();
    let read = etcd.get("sync").unwrap().unwrap().mod_revision;
    let when = |revision: i64| {
        [Compare::Value("leader".into(), b"me".to_vec()), Compare::ModRevision("sync".into(), revision)]
    };
    let put = |key: &str, value: &[u8]| Op::Put { key: key.into(), value: value.to_vec(), lease: None };
    let fence = etcd.txn(&when(read), &[put("sync", b"me,b")], &[Op::Get("leader".into())]).unwrap();
    assert!(fence.succeeded && fence.revision > read);
    assert_eq!(etcd.get("sync").unwrap().unwrap().value, b"me,b", "the same record");
    let late = etcd.txn(&when(read), &[put("leader", b"b"), put("sync", b"b")], &[]).unwrap();
    assert!(!late.succeeded, "the handover that arrives after the fence fails");
    assert_eq!(etcd.get("leader").unwrap().unwrap().value, b"me");
    // Once the handover applied, the fence fails and reads who leads.
    assert!(etcd.txn(&when(fence.revision), &[put("leader", b"b"), put("sync", b"b")], &[]).unwrap().succeeded);
    let after = etcd.txn(&when(fence.revision), &[put("sync", b"me,b")], &[Op::Get("leader".into())]).unwrap();
    assert!(!after.succeeded);
    assert_eq!((after.kvs[0].key.as_str(), after.kvs[0].value.as_slice()), ("leader", &b"b"[..]));
}

#[test]
fn prefixes_keep_stores_apart_and_a_dead_endpoint_is_passed_over() {
    let dir = TempDir::new("etcd-endpoints");
    let Some(server) = etcd(&dir.0) else { return };
    let live = etcd_url(&server);
    let dead = format!("http://127.0.0.1:{}", free_port());
    let one = etcd_client(&[dead.clone(), live.clone()], "/store-one");
    let two = etcd_client(&[live], "/store-two");
    one.put("leader", b"one", None).unwrap();
    assert_eq!(two.get("leader").unwrap(), None);
    two.put("leader", b"two", None).unwrap();
    assert_eq!(one.get("leader").unwrap().unwrap().value, b"one");
    // No endpoint at all: unreachable, not a refusal.
    let nowhere = etcd_client(&[dead], "/store-one");
    assert!(matches!(nowhere.get("leader"), Err(EtcdError::Unreachable(_))));
}

#[test]
fn etcd_killed_is_unreachable_and_restarted_keeps_its_keys() {
    let dir = TempDir::new("etcd-restart");
    let Some(mut server) = etcd(&dir.0) else { return };
    let url = etcd_url(&server);
    let etcd = etcd_client(std::slice::from_ref(&url), "/bazar-test");
    etcd.put("epoch", b"3", None).unwrap();
    server.kill9();
    assert!(matches!(etcd.get("epoch"), Err(EtcdError::Unreachable(_))));
    server.restart();
    eventually(START_DEADLINE, "etcd back", || etcd.get("epoch").is_ok());
    assert_eq!(etcd.get("epoch").unwrap().unwrap().value, b"3");
}

#[test]
fn a_prefix_lists_its_keys_only() {
    let dir = TempDir::new("etcd-list");
    let Some(server) = etcd(&dir.0) else { return };
    let etcd = etcd_client(&[etcd_url(&server)], "/bazar-list");
    for key in ["members/b", "members/a", "membersx", "leader"] {
        etcd.put(key, key.as_bytes(), None).unwrap();
    }
    let keys: Vec<String> = etcd.list("members/").unwrap().into_iter().map(|kv| kv.key).collect();
    assert_eq!(keys, ["members/a", "members/b"]);
    assert!(etcd.list("nothing/").unwrap().is_empty());
}
