//! Read leases: a replica cut off from the primary never serves stale reads.

mod common;

use common::*;
use std::time::{Duration, Instant};

const LEASE_MS: u64 = 600;

/// Pauses the replica, writes through the primary, resumes the replica and reads from it
/// at once; returns (stale reads, 503s, fresh reads, slowest write).
fn pause_rounds(s: &Store, rounds: u64) -> (u64, u64, u64, Duration) {
    let (p, r) = (s.primary(), s.replica());
    let (mut stale, mut unavailable, mut fresh, mut slowest) = (0, 0, 0, Duration::ZERO);
    for round in 1..=rounds {
        // Each round starts with the replica in sync again (the last round's write gave it
        // up), so that this round's write is pushed to it and lost.
        eventually(Duration::from_secs(10), "the replica in sync again", || {
            json(&get(&p, "/health"))["replicas_out_of_sync"] == serde_json::json!([])
        });
        s.catalogs[1].signal(libc::SIGSTOP);
        let started = Instant::now();
        let a = call("PATCH", &p, "/books/7", Some(&format!("{{\"quantity\": {round}}}")));
        slowest = slowest.max(started.elapsed());
        assert_eq!(a.status, 200);
        s.catalogs[1].signal(libc::SIGCONT);
        let read = get(&r, "/books/7");
        match read.status {
            503 => unavailable += 1,
            200 if json(&read)["quantity"] == round => fresh += 1,
            200 => stale += 1,
            other => panic!("round {round}: {other}"),
        }
        eventually(Duration::from_secs(10), "the replica serves the new value", || {
            let a = get(&r, "/books/7");
            a.status == 200 && json(&a)["quantity"] == round
        });
    }
    (stale, unavailable, fresh, slowest)
}

#[test]
fn a_paused_replica_never_serves_a_stale_read() {
    let s = Store::start(Opts { lease_ms: Some(LEASE_MS), ..Opts::default() }).unwrap();
    let rounds = 30;
    let (stale, unavailable, fresh, slowest) = pause_rounds(&s, rounds);
    eprintln!("lease {LEASE_MS} ms, {rounds} pause rounds: {stale} stale, {unavailable} answered 503, {fresh} fresh; slowest write {slowest:?}");
    assert_eq!(stale, 0);
    assert!(
        slowest < Duration::from_millis(LEASE_MS) * 4,
        "a write waits about one lease (and one push timeout) at most: {slowest:?}"
    );
    // Each round's write lost the replica (it then waited out the lease, if any was left),
    // unless the replica took it after all and answered it fresh: CI saw one such round in
    // 30 once (29 lost, 1 fresh, under the parallel tests' load; not seen in runs alone),
    // which loses nothing and waits for nothing. Most rounds must lose it.
    let failures = metric(&s.primary(), "bazar_replication_push_failures_total");
    assert!(failures + fresh as f64 >= rounds as f64, "{failures} pushes failed, {fresh} fresh, in {rounds} rounds");
    assert!(failures >= (rounds * 2 / 3) as f64, "the rounds lost the replica: {failures} of {rounds}");
}

/// The control: without leases the same rounds do see stale reads, so the test above
/// would catch a replica that serves without a lease.
#[test]
fn without_leases_a_paused_replica_serves_stale_reads() {
    let s = Store::start(Opts { lease_ms: Some(0), ..Opts::default() }).unwrap();
    eventually(Duration::from_secs(10), "the replica in sync", || {
        json(&get(&s.primary(), "/health"))["replicas_out_of_sync"] == serde_json::json!([])
    });
    // The resumed replica sometimes installs the primary's queued snapshot before the read.
    let (stale, _, _, _) = pause_rounds(&s, 12);
    eprintln!("without leases, 12 pause rounds: {stale} stale reads");
    assert!(stale >= 1, "a paused replica without a lease answers from its old state");
}

#[test]
fn with_healthy_replicas_writes_wait_for_no_lease() {
    let s = Store::start(Opts { lease_ms: Some(LEASE_MS), ..Opts::default() }).unwrap();
    for i in 0..50 {
        let base = if i % 2 == 0 { s.primary() } else { s.replica() };
        assert_eq!(call("PATCH", &base, "/books/3", Some(&format!("{{\"quantity\": {i}}}"))).status, 200);
    }
    assert_eq!(metric(&s.primary(), "bazar_lease_waits_total"), 0.0);
    assert!(metric(&s.primary(), "bazar_lease_grants_total") >= 1.0);
    assert!(metric(&s.replica(), "bazar_lease_seconds_left") > 0.0);
    assert_eq!(json(&get(&s.replica(), "/books/3"))["quantity"], 49);
}

/// A restarted primary acknowledges nothing during its first lease, so a replica still
/// serving on a lease extended while the primary was down cannot miss a write.
#[test]
fn a_restarted_primary_waits_out_the_leases_before_writing() {
    let mut s = Store::start(Opts { lease_ms: Some(LEASE_MS), ..Opts::default() }).unwrap();
    let (p, r) = (s.primary(), s.replica());
    for round in 1..=3u64 {
        s.catalogs[0].kill9();
        std::thread::sleep(Duration::from_millis(LEASE_MS / 2));
        // The replica serves on the lease the killed primary granted, and no longer (a
        // refused renewal extends nothing since issue 28): 200 while it lasts, then 503.
        let read = get(&r, "/books/5");
        assert!(read.status == 200 || read.status == 503, "round {round}: {}", read.status);
        s.catalogs[0].restart();
        eventually(Duration::from_secs(10), "primary up", || {
            client().call(ureq::http::Method::GET, &p, "/health", None).is_ok()
        });
        let started = Instant::now();
        assert_eq!(call("PATCH", &p, "/books/5", Some(&format!("{{\"quantity\": {}}}", 100 + round))).status, 200);
        let took = started.elapsed();
        let read = get(&r, "/books/5");
        assert!(
            read.status == 503 || json(&read)["quantity"] == 100 + round,
            "round {round}: stale read after a restart ({took:?})"
        );
        wait_healthy(&r);
    }
}

/// A replica restarted while no write flows gets a new identity; the primary, asked for a
/// lease by a replica it does not know, brings its replicas in sync again, so the new one
/// is granted leases and serves.
#[test]
fn a_replica_restarted_with_no_writes_serves_again() {
    let mut s = Store::start(Opts { lease_ms: Some(600), ..Opts::default() }).unwrap();
    let r = s.replica();
    s.catalogs[1].terminate(Duration::from_secs(5));
    s.catalogs[1].restart();
    wait_ready(&r);
    assert_eq!(get(&r, "/books/1").status, 200);
}

/// A write in flight is not readable on the primary before every replica in sync has it:
/// with the replica frozen, the primary shows the old price until it has given the replica
/// up (it logs "missed write") and waited out its lease; then it shows the new one.
#[test]
fn the_primary_shows_no_write_a_replica_in_sync_lacks() {
    let s = Store::start(Opts { lease_ms: Some(LEASE_MS), ..Opts::default() }).unwrap();
    let p = s.primary();
    let price = |a: &bazar::client::Answer| json(a)["price"].as_f64().unwrap();
    let before = price(&get(&p, "/books/2"));
    let log = s.catalogs[0].spec.log.clone();
    let given_up = || std::fs::read_to_string(&log).unwrap().contains("missed write");
    s.catalogs[1].signal(libc::SIGSTOP);
    let (early_reads, acked) = std::thread::scope(|sc| {
        let write = sc.spawn(|| call("PATCH", &p, "/books/2", Some("{\"price\": 77.5}")));
        let mut early_reads = 0;
        while !write.is_finished() {
            let read = get(&p, "/books/2");
            assert_eq!(read.status, 200);
            // Checked after the read: when the replica was not yet given up, the write
            // could not be readable when this read was answered.
            if !given_up() {
                assert_eq!(price(&read), before, "a write the replica lacks was readable on the primary");
                early_reads += 1;
            }
        }
        (early_reads, write.join().unwrap())
    });
    s.catalogs[1].signal(libc::SIGCONT);
    assert_eq!(acked.status, 200, "{}", String::from_utf8_lossy(&acked.body));
    assert!(early_reads > 0, "no read happened while the push was in flight");
    assert_eq!(price(&get(&p, "/books/2")), 77.5);
}

/// Writes acknowledged while every replica is out of sync are on the primary's disk alone:
/// it counts them (`bazar_catalog_writes_on_one_disk_total`) and says so once as that
/// starts and once as it ends, and counts nothing while a replica takes the pushes.
#[test]
fn writes_acknowledged_with_every_replica_out_of_sync_are_counted_and_said() {
    let s = Store::start(Opts { lease_ms: Some(LEASE_MS), ..Opts::default() }).unwrap();
    let p = s.primary();
    let on_one_disk = || metric(&p, "bazar_catalog_writes_on_one_disk_total");
    let in_sync = || json(&get(&p, "/health"))["replicas_out_of_sync"] == serde_json::json!([]);
    eventually(Duration::from_secs(10), "the replica in sync", in_sync);
    let patch = |q: u32| call("PATCH", &p, "/books/4", Some(&format!("{{\"quantity\": {q}}}"))).status;
    assert_eq!(patch(1), 200);
    assert_eq!(on_one_disk(), 0.0, "a write the replica took is on two disks");
    s.catalogs[1].signal(libc::SIGSTOP);
    // The first loses the replica (acknowledged once its lease ran out), the next two find
    // it out of sync: all three on the primary's disk alone.
    for q in 2..=4 {
        assert_eq!(patch(q), 200);
    }
    s.catalogs[1].signal(libc::SIGCONT);
    assert_eq!(on_one_disk(), 3.0);
    eventually(Duration::from_secs(10), "the replica in sync again", in_sync);
    assert_eq!(patch(5), 200);
    assert_eq!(on_one_disk(), 3.0, "a write the replica took again is on two disks");
    let log = std::fs::read_to_string(&s.catalogs[0].spec.log).unwrap();
    assert_eq!(log.matches("acknowledged with every replica out of sync").count(), 1, "said once as it starts");
    assert_eq!(log.matches("a replica takes the writes again").count(), 1, "said once as it ends");
}

/// A primary stopped gracefully says farewell, named by its run, to its replicas: they go
/// on serving reads past their lease, for the grace, while no primary runs (a `kill -9`
/// leaves them one lease; a refused renewal extends nothing). Its restart ends the grace.
#[test]
fn a_replica_serves_on_the_farewell_of_a_primary_stopped_gracefully() {
    let mut s = Store::start(Opts { lease_ms: Some(LEASE_MS), ..Opts::default() }).unwrap();
    let r = s.replica();
    wait_healthy(&r);
    s.catalogs[0].terminate(Duration::from_secs(10));
    // Three leases later the lease the primary granted has long run out: only the
    // farewell's grace (15 leases) lets the replica answer.
    std::thread::sleep(Duration::from_millis(LEASE_MS * 3));
    let read = get(&r, "/books/4");
    assert_eq!(read.status, 200, "served on the farewell: {}", String::from_utf8_lossy(&read.body));
    assert_eq!(json(&get(&r, "/health"))["primary_down"], true);
    s.catalogs[0].restart();
    wait_healthy(&s.primary());
    eventually(Duration::from_secs(10), "the grace ends: leases granted anew", || {
        json(&get(&r, "/health"))["primary_down"] == false && get(&r, "/books/4").status == 200
    });
}
