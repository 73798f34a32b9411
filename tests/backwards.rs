//! Data never flows backwards (the storage-faults issue): a catalog whose disk comes back
//! empty or older never replaces a catalog that holds newer acknowledged writes, with
//! static roles and with etcd. Real processes, real data directories replaced between runs.

mod common;

use common::*;
use std::fs;
use std::path::{Path, PathBuf};
use std::time::Duration;

const NEW_BOOKS: [&str; 3] = ["Paxos Made Live", "Chain Replication", "CRAQ"];

/// Adds the three books through `base` (a catalog: a replica forwards) and sets book 2's
/// stock to 42; returns what every catalog must show afterwards.
fn write_books(base: &str) -> serde_json::Value {
    for title in NEW_BOOKS {
        let body = format!(r#"{{"title": "{title}", "topic": "replication", "price": 12.5, "quantity": 3}}"#);
        let a = call("POST", base, "/books", Some(&body));
        assert_eq!(a.status, 201, "{}", String::from_utf8_lossy(&a.body));
    }
    let a = call("PATCH", base, "/books/2", Some(r#"{"quantity": 42}"#));
    assert_eq!(a.status, 200, "{}", String::from_utf8_lossy(&a.body));
    books_of(base)
}

/// Every book of one catalog (None while it does not answer reads).
fn try_books(base: &str) -> Option<serde_json::Value> {
    let a = client().call(ureq::http::Method::GET, base, "/books", None).ok()?;
    (a.status == 200).then(|| json(&a))
}

fn books_of(base: &str) -> serde_json::Value {
    try_books(base).expect("the catalog answers reads")
}

/// Waits until `base` shows exactly `want`.
fn shows(base: &str, want: &serde_json::Value, what: &str) {
    eventually(Duration::from_secs(30), what, || try_books(base).as_ref() == Some(want));
}

/// Replaces a data directory with an empty one (a new disk, a container without its volume).
fn wipe(dir: &Path) {
    fs::remove_dir_all(dir).unwrap();
    fs::create_dir_all(dir).unwrap();
}

fn data_dir(p: &Proc) -> PathBuf {
    PathBuf::from(&p.spec.env.iter().find(|(k, _)| k == "BAZAR_DATA_DIR").expect("a data dir").1)
}

fn log_of(p: &Proc) -> String {
    fs::read_to_string(&p.spec.log).unwrap_or_default()
}

fn store() -> Store {
    Store::start(Opts::default()).expect("no memcached needed")
}

/// Static roles: both catalogs stop, the primary's data directory comes back empty, both
/// start: the primary takes its replica's catalog before it serves, and nothing is lost.
/// (Before: it seeded the 7 built-in books under a new history and the replica copied it.)
#[test]
fn an_empty_primary_takes_its_replicas_catalog() {
    let mut s = store();
    let want = write_books(&s.primary());
    assert_eq!(want.as_array().unwrap().len(), 10);
    shows(&s.replica(), &want, "the replica to show the writes");
    for c in s.catalogs.iter_mut() {
        assert_eq!(c.terminate(Duration::from_secs(10)), Some(0));
    }
    wipe(&data_dir(&s.catalogs[0]));
    s.catalogs[0].restart();
    s.catalogs[1].restart();
    shows(&s.primary(), &want, "the primary to serve the replica's catalog");
    shows(&s.replica(), &want, "the replica to keep it");
    assert!(log_of(&s.catalogs[0]).contains("taking its catalog before serving"), "the primary says what it did");
    // And it goes on as the primary of that catalog: a write reaches both.
    let a = call("PATCH", &s.primary(), "/books/2", Some(r#"{"quantity": 41}"#));
    assert_eq!(a.status, 200, "{}", String::from_utf8_lossy(&a.body));
    let want = books_of(&s.primary());
    shows(&s.replica(), &want, "the replica to follow again");
}

/// An empty primary whose replica does not answer serves nothing (it cannot know whether
/// the replica holds the store's books) and says why; once the replica is back it takes
/// the replica's catalog.
#[test]
fn an_empty_primary_waits_for_a_replica_that_does_not_answer() {
    let mut s = store();
    let want = write_books(&s.primary());
    shows(&s.replica(), &want, "the replica to show the writes");
    for c in s.catalogs.iter_mut() {
        assert_eq!(c.terminate(Duration::from_secs(10)), Some(0));
    }
    wipe(&data_dir(&s.catalogs[0]));
    s.catalogs[0].restart();
    eventually(Duration::from_secs(10), "the primary to answer", || {
        client().call(ureq::http::Method::GET, &s.primary(), "/health", None).is_ok()
    });
    std::thread::sleep(Duration::from_secs(2));
    let ready = get(&s.primary(), "/ready");
    assert_eq!(ready.status, 503, "an empty primary with a silent replica is not ready");
    let why = json(&ready)["error"].as_str().unwrap_or_default().to_string();
    assert!(why.contains("compares its catalog"), "{why}");
    let write = call("PATCH", &s.primary(), "/books/1", Some(r#"{"quantity": 5}"#));
    assert_eq!(write.status, 503, "no write is decided: {}", String::from_utf8_lossy(&write.body));
    assert!(log_of(&s.catalogs[0]).contains("do not answer"), "it says why it waits");
    // Nor a near-cache lease: a reset from a catalog that may hold less than was
    // acknowledged would set a front end's floor below acknowledged writes.
    let watch = call("POST", &s.primary(), "/internal/near", Some(r#"{"session": "s1", "seen": 0}"#));
    assert_eq!(watch.status, 503, "no near-cache lease before it settles: {}", String::from_utf8_lossy(&watch.body));
    s.catalogs[1].restart();
    shows(&s.primary(), &want, "the primary to take the replica's catalog");
    shows(&s.replica(), &want, "the replica to keep it");
}

/// A primary whose disk comes back older (a restored backup, the same history): it takes
/// the newer catalog of its replica; the replica is never asked to copy the older one.
#[test]
fn a_primary_behind_its_replica_takes_the_newer_catalog() {
    let mut s = store();
    let older = back_up_primary(&mut s);
    let want = write_books(&s.primary());
    shows(&s.replica(), &want, "the replica to show the writes");
    restore_primary(&mut s, &older);
    s.catalogs[1].restart();
    shows(&s.primary(), &want, "the primary to take the newer catalog");
    shows(&s.replica(), &want, "the replica to keep it");
}

/// A primary whose disk comes back older while its replica is down serves once it has
/// waited for the replica (5 s), and decides other writes under the numbers the replica
/// holds: their logs diverge (with static roles every write is of epoch 0, so epochs do
/// not tell). When the replica is back it is not brought in sync over its writes: it stays
/// out of sync, serves no read, and the primary says why. (Before: it was counted in sync
/// once the primary's log was as long, its own write kept under the primary's number, and
/// served that write, which the primary did not hold; a review of the data simulator found
/// it.)
#[test]
fn a_replica_whose_log_diverged_from_an_older_primary_is_not_merged() {
    diverged_replica(0, false);
}

/// The same, the primary's log past the replica's when it comes back: the replica asks for
/// the writes after its last (`GET /internal/log`, with that write's fingerprint) and is
/// refused (409), rather than appending the primary's after its own (a review found that
/// path merged it).
#[test]
fn a_replica_whose_log_diverged_does_not_take_the_writes_after_it() {
    diverged_replica(2, false);
}

/// The same, the logs diverged before the replica's last write, which both hold alike
/// (book 5 at 55, write 3): comparing that write alone, the replica was merged (its write 2,
/// book 1 at 11, served; the primary's, book 2 at 22, missing). The logs' chains tell,
/// both ways: the primary judging the replica's ack, the replica's catch-up (409).
#[test]
fn a_replica_whose_log_diverged_before_its_last_write_is_not_merged() {
    diverged_replica(0, true);
    diverged_replica(2, true);
}

/// A replica refused as diverged keeps its writes for good: once the primary no longer
/// keeps the writes that told their logs apart (it checkpointed past them and restarted),
/// its catch-up is answered 410 and the primary asks it to copy the catalog whole, which
/// it refuses, as its disk says (`catalog.diverged`). (Before: it copied the primary and
/// its write 2, book 1 at 11, was gone from its `catalog.log`.)
#[test]
fn a_diverged_replica_keeps_its_writes_once_the_primary_no_longer_holds_them() {
    let mut s = diverged_replica(0, false);
    keeps_its_writes_once_the_primary_forgets_them(&mut s, false);
}

/// The same, the replica never restarted: frozen while the older primary started (so it
/// served alone), it runs on, and only the primary's keeper finds the divergence. It asks
/// the replica to copy, which compares its log first (409), refuses, and marks its disk;
/// so it too keeps its writes once the primary forgets them. (Before: only a replica's own
/// catch-up, at its start, marked it, and this one copied the primary later.)
#[test]
fn a_replica_refused_while_it_runs_keeps_its_writes_too() {
    let mut s = an_older_primary_beside_a_frozen_replica();
    s.catalogs[1].signal(libc::SIGCONT);
    let mark = data_dir(&s.catalogs[1]).join("catalog.diverged");
    eventually(Duration::from_secs(20), "the replica to mark its divergence", || mark.exists());
    keeps_its_writes_once_the_primary_forgets_them(&mut s, false);
}

/// The same, the replica's disk not taking the mark when it is made (as on a full disk):
/// the mark holds in memory while the replica runs, so it refuses the copy all the same,
/// and is written once the disk takes it. (Before: an unwritten mark was no mark, and the
/// replica copied the primary.)
#[test]
fn a_mark_the_disk_does_not_take_holds_until_it_does() {
    let mut s = an_older_primary_beside_a_frozen_replica();
    // A directory where the mark goes: the rename that writes it fails (the replica, long
    // running, read its data directory unmarked at its start).
    let mark = data_dir(&s.catalogs[1]).join("catalog.diverged");
    fs::create_dir(&mark).unwrap();
    s.catalogs[1].signal(libc::SIGCONT);
    eventually(Duration::from_secs(20), "the replica to fail to mark its divergence", || {
        log_of(&s.catalogs[1]).contains("could not be marked on disk")
    });
    keeps_its_writes_once_the_primary_forgets_them(&mut s, false);
    fs::remove_dir(&mark).unwrap();
    eventually(Duration::from_secs(20), "the mark to be written", || mark.is_file());
    assert!(log_of(&s.catalogs[1]).contains("the divergence mark is on disk now"));
}

/// A damaged mark (a flipped bit in its history id) cannot say which history it marks: it
/// refuses every copy. The replica, down while the primary checkpoints past the writes that
/// told their logs apart and restarts, comes back with its mark damaged and keeps its
/// writes. (Before: a mark whose first line was not the history id was no mark, and the
/// replica copied the primary.)
#[test]
fn a_damaged_mark_still_keeps_the_replicas_writes() {
    let mut s = diverged_replica(0, false);
    assert_eq!(s.catalogs[1].terminate(Duration::from_secs(10)), Some(0));
    let mark = data_dir(&s.catalogs[1]).join("catalog.diverged");
    let mut text = fs::read(&mark).unwrap();
    text[0] ^= 0x01;
    fs::write(&mark, text).unwrap();
    let said = keeps_its_writes_once_the_primary_forgets_them(&mut s, true);
    assert!(said.contains("is damaged"), "the replica says why: {said}");
}

/// Write 2 (book 1 at 11) on both disks; then the replica frozen (SIGSTOP) while the
/// primary restarts on its disk of before write 2 and, serving alone, takes a write of its
/// own under that number. Returns the store, the replica still frozen.
fn an_older_primary_beside_a_frozen_replica() -> Store {
    let opts = Opts { lease_ms: Some(200), checkpoint_rows: Some(100), ..Opts::default() };
    let mut s = Store::start(opts).expect("no memcached needed");
    let older = back_up_primary(&mut s);
    assert_eq!(call("PATCH", &s.primary(), "/books/1", Some(r#"{"quantity": 11}"#)).status, 200);
    shows(&s.replica(), &books_of(&s.primary()), "the replica to take write 2");
    assert_eq!(s.catalogs[0].terminate(Duration::from_secs(10)), Some(0));
    s.catalogs[1].signal(libc::SIGSTOP);
    let dir = data_dir(&s.catalogs[0]);
    fs::remove_dir_all(&dir).unwrap();
    copy_dir(&older, &dir);
    s.catalogs[0].restart();
    older_primary_takes_a_write(&s);
    s
}

/// The operator keeps the replica's writes: the primary's data directory is moved aside, it
/// starts empty and takes the replica's catalog. The replica's mark then goes by itself:
/// refused a push while marked, it catches up, sees the primary's log agree with its own
/// (the same chain at its last write), removes the mark, and takes the primary's writes.
#[test]
fn a_divergence_mark_goes_once_the_primary_holds_the_replicas_log() {
    let mut s = diverged_replica(0, false);
    assert_eq!(s.catalogs[0].terminate(Duration::from_secs(10)), Some(0));
    wipe(&data_dir(&s.catalogs[0]));
    s.catalogs[0].restart();
    wait_ready(&s.primary());
    assert_eq!(json(&get(&s.primary(), "/books/1"))["quantity"], 11, "the primary took the replica's catalog");
    assert_eq!(call("PATCH", &s.primary(), "/books/6", Some(r#"{"quantity": 66}"#)).status, 200);
    let mark = data_dir(&s.catalogs[1]).join("catalog.diverged");
    shows(&s.replica(), &books_of(&s.primary()), "the replica to take the primary's writes again");
    assert!(!mark.exists(), "the mark is gone");
}

/// With the replica refused (its write 2, book 1 at 11): the primary checkpoints past it
/// and restarts, so that it no longer keeps the writes that told their logs apart; the
/// replica keeps its write, serves none of it, and says why (returned: what it said since).
/// With `down`, the replica was stopped by the caller and starts once the primary is back.
fn keeps_its_writes_once_the_primary_forgets_them(s: &mut Store, down: bool) -> String {
    for i in 0..120 {
        let body = format!(r#"{{"quantity": {i}}}"#);
        assert_eq!(call("PATCH", &s.primary(), "/books/6", Some(&body)).status, 200);
    }
    let said_before = log_of(&s.catalogs[1]).len();
    let said_since = |s: &Store| log_of(&s.catalogs[1]).get(said_before..).unwrap_or_default().to_string();
    assert_eq!(s.catalogs[0].terminate(Duration::from_secs(10)), Some(0));
    s.catalogs[0].restart();
    wait_ready(&s.primary());
    if down {
        s.catalogs[1].restart();
    }
    // Its catch-up is answered 410 (or the primary asks it to copy): it copies, or says no.
    eventually(Duration::from_secs(20), "the replica to copy the primary or refuse to", || {
        let said = said_since(s);
        said.contains("not copying") || said.contains("copied ")
    });
    let log = fs::read_to_string(data_dir(&s.catalogs[1]).join("catalog.log")).unwrap();
    let kept = log.lines().any(|row| row.starts_with("2,1,") && row.split(',').nth(5) == Some("11"));
    assert!(kept, "the replica keeps its write 2 (book 1 at 11):\n{log}");
    let read = get(&s.replica(), "/books/1");
    assert_ne!(read.status, 200, "and serves none of it: {}", String::from_utf8_lossy(&read.body));
    let said = said_since(s);
    assert!(said.contains("not copying"), "the replica says why");
    said
}

/// The diverged replica's scenario, with `more` writes of the older primary past the
/// replica's log; with `same_last`, each side's last write before it is the same (book 5
/// at 55). Returns the store, the replica refused.
fn diverged_replica(more: usize, same_last: bool) -> Store {
    let opts = Opts { lease_ms: Some(200), checkpoint_rows: Some(100), ..Opts::default() };
    let mut s = Store::start(opts).expect("no memcached needed");
    let older = back_up_primary(&mut s);
    // Write 2, on both disks: the replica's. The primary's disk then comes back without it.
    let a = call("PATCH", &s.primary(), "/books/1", Some(r#"{"quantity": 11}"#));
    assert_eq!(a.status, 200);
    let theirs = json(&a);
    let last_alike = r#"{"quantity": 55}"#;
    if same_last {
        assert_eq!(call("PATCH", &s.primary(), "/books/5", Some(last_alike)).status, 200);
    }
    shows(&s.replica(), &books_of(&s.primary()), "the replica to take write 2");
    restore_primary(&mut s, &older);
    // Alone, it serves after the wait for the silent replica; its write 2 is another one.
    older_primary_takes_a_write(&s);
    if same_last {
        assert_eq!(call("PATCH", &s.primary(), "/books/5", Some(last_alike)).status, 200);
    }
    for _ in 0..more {
        let a = call("PATCH", &s.primary(), "/books/4", Some(r#"{"quantity": 44}"#));
        assert_eq!(a.status, 200);
    }
    s.catalogs[1].restart();
    // The primary judges the replica (or, before, brought it in sync and it served).
    let serves =
        || client().call(ureq::http::Method::GET, &s.replica(), "/books/1", None).is_ok_and(|a| a.status == 200);
    eventually(Duration::from_secs(20), "the primary to judge the replica", || {
        log_of(&s.catalogs[0]).contains("diverged") || serves()
    });
    std::thread::sleep(Duration::from_secs(1));
    // It keeps its write 2 (book 1 at 11) and serves no read: no state the primary lacks.
    assert_eq!(theirs["quantity"], 11);
    let read = get(&s.replica(), "/books/1");
    assert_ne!(read.status, 200, "a diverged replica serves no read: {}", String::from_utf8_lossy(&read.body));
    let health = json(&get(&s.primary(), "/health"));
    assert!(
        health["replicas_out_of_sync"].as_array().is_some_and(|r| r.len() == 1),
        "the replica is out of sync: {health}"
    );
    assert!(log_of(&s.catalogs[0]).contains("diverged"), "the primary says why");
    let book1 = json(&get(&s.primary(), "/books/1"));
    assert_eq!(book1["quantity"], 100, "the older primary never held write 2: {book1}");
    // The replica's own catch-up is refused too (409, its chain or its last write against
    // the primary's), and it marks its disk.
    let mark = data_dir(&s.catalogs[1]).join("catalog.diverged");
    eventually(Duration::from_secs(20), "the replica to mark its divergence", || mark.exists());
    s
}

/// The two-fault case, one step further: the older primary served alone (its write 2, book
/// 2 at 22, is on its disk only) and restarts while the diverged replica, whose log runs
/// further (write 2, book 1 at 11; write 3), answers. Its settle asks the replica with its
/// chain and does not take that catalog whole: it serves its own, the replica stays out of
/// sync, and each keeps its writes. (Before: the replica holding more by numbers, the
/// primary copied it and dropped its acknowledged write 2.)
#[test]
fn a_restarted_primary_does_not_copy_a_longer_diverged_replica() {
    let opts = Opts { lease_ms: Some(200), ..Opts::default() };
    let mut s = Store::start(opts).expect("no memcached needed");
    let older = back_up_primary(&mut s);
    for (path, body) in [("/books/1", r#"{"quantity": 11}"#), ("/books/4", r#"{"quantity": 44}"#)] {
        assert_eq!(call("PATCH", &s.primary(), path, Some(body)).status, 200);
    }
    shows(&s.replica(), &books_of(&s.primary()), "the replica to take writes 2 and 3");
    restore_primary(&mut s, &older);
    older_primary_takes_a_write(&s);
    let acknowledged = books_of(&s.primary());
    assert_eq!(s.catalogs[0].terminate(Duration::from_secs(10)), Some(0));
    s.catalogs[1].restart();
    eventually(Duration::from_secs(20), "the replica to answer", || {
        client().call(ureq::http::Method::GET, &s.replica(), "/health", None).is_ok_and(|a| a.status == 200)
    });
    s.catalogs[0].restart();
    eventually(Duration::from_secs(30), "the primary to settle", || try_books(&s.primary()).is_some());
    assert_eq!(books_of(&s.primary()), acknowledged, "the primary keeps what it acknowledged");
    assert!(log_of(&s.catalogs[0]).contains("diverged"), "the primary says why");
    eventually(Duration::from_secs(20), "the primary to judge the replica", || {
        json(&get(&s.primary(), "/health"))["replicas_out_of_sync"].as_array().is_some_and(|r| r.len() == 1)
    });
    let read = get(&s.replica(), "/books/1");
    assert_ne!(read.status, 200, "the replica serves none of its writes: {}", String::from_utf8_lossy(&read.body));
}

/// Waits until the older primary, alone (it serves once it has waited for its silent
/// replica), takes a write of its own: book 2 at 22, under a number its replica may hold.
fn older_primary_takes_a_write(s: &Store) {
    eventually(Duration::from_secs(30), "the older primary to take a write", || {
        client()
            .call(ureq::http::Method::PATCH, &s.primary(), "/books/2", Some(r#"{"quantity": 22}"#.into()))
            .is_ok_and(|a| a.status == 200)
    });
}

/// Makes write 1 (book 3's stock), then stops the primary, copies its data directory aside
/// (a backup) and starts it again: returns the copy's path.
fn back_up_primary(s: &mut Store) -> PathBuf {
    let a = call("PATCH", &s.primary(), "/books/3", Some(r#"{"quantity": 7}"#));
    assert_eq!(a.status, 200);
    let older = s.dir.0.join("backup");
    assert_eq!(s.catalogs[0].terminate(Duration::from_secs(10)), Some(0));
    copy_dir(&data_dir(&s.catalogs[0]), &older);
    s.catalogs[0].restart();
    wait_ready(&s.primary());
    older
}

/// Stops both catalogs and starts the primary alone on the backup `older` (a disk come back
/// older); the replica stays stopped.
fn restore_primary(s: &mut Store, older: &Path) {
    for c in s.catalogs.iter_mut() {
        assert_eq!(c.terminate(Duration::from_secs(10)), Some(0));
    }
    let dir = data_dir(&s.catalogs[0]);
    fs::remove_dir_all(&dir).unwrap();
    copy_dir(older, &dir);
    s.catalogs[0].restart();
}

fn copy_dir(from: &Path, to: &Path) {
    fs::create_dir_all(to).unwrap();
    for entry in fs::read_dir(from).unwrap() {
        let entry = entry.unwrap();
        if entry.file_name() != "catalog.lock" {
            fs::copy(entry.path(), to.join(entry.file_name())).unwrap();
        }
    }
}

/// With etcd: the whole store restarts with the primary's data directory empty. The empty
/// catalog is not eligible (its history is not the store's), the other is elected, and
/// the empty one copies from it: nothing is lost. (Before: the empty catalog was eligible
/// by its URL alone.)
#[test]
fn with_etcd_a_catalog_that_comes_back_empty_is_never_elected() {
    let Some(mut s) = EtcdStore::start("backwards-etcd", false) else { return };
    let p = s.wait_primary();
    let want = write_books(&s.catalog(p));
    let other = 1 - p;
    shows(&s.catalog(other), &want, "the replica to show the writes");
    for c in s.catalogs.iter_mut() {
        assert_eq!(c.terminate(Duration::from_secs(10)), Some(0));
    }
    wipe(&data_dir(&s.catalogs[p]));
    s.catalogs[p].restart();
    // The empty one alone: it never campaigns.
    std::thread::sleep(Duration::from_secs(5));
    assert_eq!(s.primary(), None, "a catalog that came back empty was elected");
    assert!(log_of(&s.catalogs[p]).contains("not eligible for primary"), "it says why it does not run");
    s.catalogs[other].restart();
    assert_eq!(s.wait_primary(), other, "the catalog with the data is elected");
    shows(&s.catalog(other), &want, "the new primary to serve the catalog");
    shows(&s.catalog(p), &want, "the emptied catalog to copy it");
}

/// Starting over is an explicit act: `bazar-catalog start-over` on the stopped primary's
/// directory gives it the built-in catalog as a new write, and the replica, which holds
/// more books, copies it.
#[test]
fn starting_over_is_an_explicit_act() {
    let mut s = store();
    let want = write_books(&s.primary());
    shows(&s.replica(), &want, "the replica to show the writes");
    assert_eq!(s.catalogs[0].terminate(Duration::from_secs(10)), Some(0));
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_bazar-catalog"))
        .arg("start-over")
        .env("BAZAR_DATA_DIR", data_dir(&s.catalogs[0]))
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(String::from_utf8_lossy(&out.stdout).contains("starts over with the 7 built-in books"));
    s.catalogs[0].restart();
    let seed = eventually_books(&s.primary(), 7);
    shows(&s.replica(), &seed, "the replica to copy the store started over");
}

/// Waits until `base` serves `n` books; returns them.
fn eventually_books(base: &str, n: usize) -> serde_json::Value {
    let mut found = None;
    eventually(Duration::from_secs(30), "the books", || {
        found = try_books(base).filter(|b| b.as_array().is_some_and(|a| a.len() == n));
        found.is_some()
    });
    found.unwrap()
}
