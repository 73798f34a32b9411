//! Epochs with static roles: every write, push, lease grant and log answer carries the
//! epoch of its primary (0 without etcd); a catalog refuses pushes of an older epoch than
//! the newest it knows, and a log whose tail another epoch wrote is dropped by a whole copy.

mod common;

use common::*;
use std::io::Write;
use std::time::Duration;

#[test]
fn pushes_and_log_reads_of_another_epoch_are_refused() {
    let s = Store::start(Opts::default()).unwrap();
    let (p, r) = (s.primary(), s.replica());
    s.set_stock(1, 40);
    // A push of a newer epoch is taken (and the epoch adopted); an older one is refused.
    assert_eq!(call("POST", &r, "/internal/replicate?epoch=5", Some("[]")).status, 200);
    // From now on the primary's own lease grants (epoch 0) are refused and counted too, at
    // any moment: the stale push is counted on top of what was counted before it.
    let before = metric(&r, "bazar_catalog_stale_epoch_refused_total");
    let stale = call("POST", &r, "/internal/replicate?epoch=3", Some("[]"));
    assert_eq!(stale.status, 409, "{}", String::from_utf8_lossy(&stale.body));
    assert_eq!(call("POST", &r, "/internal/replicate?epoch=x", Some("[]")).status, 400);
    assert!(metric(&r, "bazar_catalog_stale_epoch_refused_total") >= before + 1.0);
    assert_eq!(metric(&r, "bazar_catalog_epoch"), 5.0);
    // The primary (epoch 0) is now older than the replica: its pushes are refused too.
    s.set_stock(1, 41);
    assert!(metric(&r, "bazar_catalog_stale_epoch_refused_total") >= 2.0);
    // The log answers after (seq, epoch) only where the asker's write has the same epoch.
    let page = json(&get(&p, "/internal/books?limit=1"));
    let (history, seq) = (page["history"].as_str().unwrap().to_string(), page["seq"].as_u64().unwrap());
    assert_eq!(page["epoch"], 0);
    let log = |epoch: u64| get(&p, &format!("/internal/log?after={}&history={history}&epoch={epoch}", seq - 1));
    assert_eq!(log(0).status, 200);
    assert_eq!(json(&log(0))["epoch"], 0);
    assert_eq!(log(7).status, 410, "write {} here is of epoch 0", seq - 1);
    assert_eq!(get(&p, &format!("/internal/log?after=1&history={history}&epoch=-1")).status, 400);
}

/// A catalog whose log holds a write the primary never made (a tail of another epoch, as
/// an old primary's unacknowledged write) drops it: it copies the whole catalog.
#[test]
fn a_tail_of_another_epoch_is_dropped_by_a_whole_copy() {
    let mut s = Store::start(Opts::default()).unwrap();
    let (p, r) = (s.primary(), s.replica());
    s.set_stock(2, 10);
    eventually(Duration::from_secs(10), "the replica has the write", || {
        let a = get(&r, "/books/2");
        a.status == 200 && json(&a)["quantity"] == 10
    });
    s.catalogs[1].kill9();
    let log_path = s.dir.0.join("catalog-2").join("catalog.log");
    let text = std::fs::read_to_string(&log_path).unwrap();
    let last: u64 = text.lines().last().unwrap().split(',').next().unwrap().parse().unwrap();
    s.set_stock(2, 11);
    s.set_stock(3, 12);
    let mut f = std::fs::OpenOptions::new().append(true).open(&log_path).unwrap();
    let seq = (last + 1).to_string();
    write!(f, "{}", files::log_row(&[&seq, "2", "never acknowledged", "x", "1.00", "99", "", "", "9"])).unwrap();
    drop(f);
    s.catalogs[1].restart();
    wait_ready(&r);
    eventually(Duration::from_secs(20), "the replica equals the primary", || {
        get(&r, "/books").status == 200 && s.books(&r) == s.books(&p)
    });
    assert!(metric(&r, "bazar_replication_copies_total") >= 1.0);
    assert_ne!(json(&get(&r, "/books/2"))["title"], "never acknowledged");
}

/// Under its writer lock a replica refuses a write of an epoch older than the last one it
/// logged: a deposed primary's late push would take the number the newer primary's write
/// needs (and that one would be dropped as already taken).
#[test]
fn a_write_older_than_the_last_one_logged_is_refused() {
    let s = Store::start(Opts::default()).unwrap();
    let r = s.replica();
    s.set_stock(1, 40);
    eventually(Duration::from_secs(10), "the replica has the write", || {
        let a = get(&r, "/books/1");
        a.status == 200 && json(&a)["quantity"] == 40
    });
    let book = json(&get(&r, "/books/1"));
    let at = json(&call("POST", &r, "/internal/replicate?epoch=5", Some("[]")))["seq"].as_u64().unwrap();
    let push = |seq: u64, epoch: u64| {
        let body = serde_json::json!([{ "seq": seq, "book": book, "epoch": epoch }]).to_string();
        call("POST", &r, "/internal/replicate?epoch=5", Some(&body))
    };
    let newer = push(at + 1, 5);
    assert_eq!(newer.status, 200, "{}", String::from_utf8_lossy(&newer.body));
    assert_eq!(json(&newer)["seq"], at + 1);
    assert_eq!(json(&newer)["epoch"], 5);
    let older = push(at + 2, 4);
    assert_eq!(older.status, 409, "{}", String::from_utf8_lossy(&older.body));
    assert!(String::from_utf8_lossy(&older.body).contains("older than the last logged"));
    assert_eq!(json(&call("POST", &r, "/internal/replicate?epoch=5", Some("[]")))["seq"], at + 1);
}
