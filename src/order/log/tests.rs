//! The order log's tests: each works on a real `orders.csv` in a temporary directory.

use super::*;
use crate::ids::{timestamp, timestamp_now};
use std::collections::{HashMap, HashSet};

/// A fresh data directory, removed on drop.
struct Dir(std::path::PathBuf);

impl Dir {
    fn new(tag: &str) -> Dir {
        let dir = std::env::temp_dir().join(format!("bazar-orderlog-{tag}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        Dir(dir)
    }

    fn csv(&self) -> std::path::PathBuf {
        self.0.join("orders.csv")
    }

    fn append(&self, bytes: &[u8]) {
        std::fs::OpenOptions::new().append(true).open(self.csv()).unwrap().write_all(bytes).unwrap();
    }
}

impl Drop for Dir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn order(id: &str, at: &str) -> Order {
    Order {
        order_id: id.into(),
        id: 1,
        title: "A, \"quoted\" title".into(),
        price: Money::from_cents(1999),
        at: at.into(),
    }
}

/// One order as a checked row, as the log writes it.
fn row(o: &Order) -> Vec<u8> {
    let mut w = csv::WriterBuilder::new().has_headers(false).from_writer(Vec::new());
    encode(&mut w, o).unwrap();
    w.into_inner().unwrap()
}

/// The files set aside in a data directory (`orders.csv.corrupt-*`).
fn aside(dir: &Dir) -> Vec<std::path::PathBuf> {
    let Ok(entries) = std::fs::read_dir(&dir.0) else { return Vec::new() };
    let mut found: Vec<_> = entries
        .map(|e| e.unwrap().path())
        .filter(|p| p.file_name().unwrap().to_string_lossy().starts_with("orders.csv.corrupt-"))
        .collect();
    found.sort();
    found
}

/// Replaces the first `from` in the file by `to` (same length): a bit flipped on disk.
fn flip(path: &std::path::Path, from: &str, to: &str) {
    assert_eq!(from.len(), to.len());
    let mut bytes = std::fs::read(path).unwrap();
    let at = bytes
        .windows(from.len())
        .position(|w| w == from.as_bytes())
        .unwrap_or_else(|| panic!("{from:?} not in the file"));
    bytes[at..at + to.len()].copy_from_slice(to.as_bytes());
    std::fs::write(path, bytes).unwrap();
}

fn at(ms: u64) -> String {
    timestamp(1_795_874_106_000 + ms)
}

/// Every order, page by page, with `limit` a page.
fn all(log: &OrderLog, limit: usize) -> Vec<Order> {
    let (mut out, mut after) = (Vec::new(), None);
    loop {
        let page = log.page(after.as_ref(), limit).unwrap();
        assert!(page.orders.len() <= limit);
        out.extend(page.orders);
        match page.next {
            None => return out,
            next => after = next,
        }
    }
}

fn key(o: &Order) -> (u64, (&str, Option<u64>)) {
    (ids::parse_timestamp(&o.at).unwrap(), ids::split_order_id(&o.order_id))
}

#[test]
fn orders_are_checked() {
    assert!(order("0a1b2c3d4e5f-1", &timestamp_now()).check().is_ok());
    assert!(order("ab12-1", &timestamp_now()).check().is_err(), "a new order has a server's id");
    assert!(order("ab12-1", &timestamp_now()).check_stored().is_ok(), "an old one is still read");
    assert!(order("x y", &timestamp_now()).check_stored().is_err());
    assert!(order("0a1b2c3d4e5f-1", "2026-13-45T99:99:99.999Z").check().is_err());
    let dir = Dir::new("checked");
    let log = OrderLog::open(&dir.0).unwrap();
    let bad = [order("a-1", &at(0)), order("b-1", "2026-02-30T00:00:00.000Z")];
    assert_eq!(log.add(&bad).map_err(|e| e.status()), Err(400));
    assert!(log.is_empty(), "nothing of a refused batch is logged");
}

/// Ids of every shape are found, read back field for field (titles with quotes, commas
/// and newlines), listed in key order, and all of it again after a restart.
#[test]
fn finds_lists_and_reloads() {
    let dir = Dir::new("index");
    let log = OrderLog::open(&dir.0).unwrap();
    let mut orders = vec![
        order("0a1b2c3d4e5f-10", &at(5)),
        order("0a1b2c3d4e5f-9", &at(5)),
        order("ffffffffffff-1", &at(1)),
        order("x", &at(5)),
        order("ab-07", &at(5)),
        order("0A1B2C3D4E5F-1", &at(5)),
        order("a-b-3", &at(0)),
    ];
    orders[1].title = "Line one\nline \"two\", and three\r\n".into();
    orders[3].title = String::new();
    orders[4].id = 7;
    orders[4].price = Money::from_cents(5);
    // Enough to grow the id table and the vectors a few times.
    let many: Vec<Order> = (1..=3000).map(|i| order(&format!("00000000000{}-{i}", i % 3), &at(i % 17))).collect();
    assert_eq!(log.add(&orders).unwrap(), orders.len());
    assert_eq!(log.add(&many).unwrap(), many.len());
    let everything: Vec<Order> = orders.iter().chain(&many).cloned().collect();
    let check = |log: &OrderLog| {
        assert_eq!(log.len(), everything.len());
        for o in &everything {
            assert_eq!(log.get(&o.order_id).unwrap().as_ref(), Some(o));
            assert!(log.contains(&o.order_id));
        }
        for missing in ["0a1b2c3d4e5f-11", "0a1b2c3d4e5f-010", "ab-7", "y", "a-b"] {
            assert_eq!(log.get(missing).unwrap(), None, "{missing}");
            assert!(!log.contains(missing));
        }
        let (head, next) = log.since(0, 7).unwrap();
        assert_eq!((head.as_slice(), next), (&everything[..7], 7));
        let (tail, next) = log.since(3000, 100).unwrap();
        assert_eq!((tail.as_slice(), next), (&everything[3000..], everything.len()));
        assert_eq!(log.since(10_000, 5).unwrap(), (vec![], everything.len()));
    };
    check(&log);
    let listed = all(&log, 1000);
    let mut sorted = everything.clone();
    sorted.sort_by(|a, b| key(a).cmp(&key(b)));
    assert_eq!(listed, sorted);
    // In one millisecond: prefix as text (a server's own or any other), then counter.
    let same_ms: Vec<&str> = listed.iter().take_while(|o| o.at <= at(5)).map(|o| o.order_id.as_str()).collect();
    let hand: Vec<&str> = same_ms.into_iter().filter(|id| orders.iter().any(|o| o.order_id == *id)).collect();
    assert_eq!(hand, ["a-b-3", "ffffffffffff-1", "0A1B2C3D4E5F-1", "0a1b2c3d4e5f-9", "0a1b2c3d4e5f-10", "ab-07", "x"]);
    drop(log);
    let log = OrderLog::open(&dir.0).unwrap();
    check(&log);
    assert_eq!(all(&log, 7), listed);
}

/// A batch of a peer's orders, older than many already held (a server catching up), is
/// merged into the time order in one pass.
#[test]
fn a_late_batch_is_merged_in_time_order() {
    let dir = Dir::new("late");
    let log = OrderLog::open(&dir.0).unwrap();
    let ours: Vec<Order> = (1..=1000).map(|i| order(&format!("aaaaaaaaaaaa-{i}"), &at(i * 2))).collect();
    log.add(&ours).unwrap();
    let late: Vec<Order> = (1..=500).rev().map(|i| order(&format!("bbbbbbbbbbbb-{i}"), &at(i * 5 % 2100))).collect();
    log.add(&late).unwrap();
    let mut want: Vec<Order> = ours.iter().chain(&late).cloned().collect();
    want.sort_by(|a, b| key(a).cmp(&key(b)));
    assert_eq!(all(&log, 333), want);
    assert_eq!(log.since(1000, 10).unwrap().0, late[..10]);
}

/// Concurrent appends share fsyncs, and every order is durable and visible when its
/// add returns.
#[test]
fn concurrent_appends_are_durable_when_they_return() {
    let dir = Dir::new("group");
    let log = OrderLog::open(&dir.0).unwrap();
    std::thread::scope(|s| {
        for t in 0..8 {
            let log = &log;
            s.spawn(move || {
                for i in 0..50 {
                    let o = order(&format!("t{t}-{i}"), &timestamp_now());
                    assert_eq!(log.add(std::slice::from_ref(&o)).unwrap(), 1);
                    assert_eq!(log.get(&o.order_id).unwrap(), Some(o));
                }
            });
        }
    });
    assert_eq!(log.len(), 400);
    assert_eq!(log.since(0, 1000).unwrap().0.len(), 400);
    drop(log);
    assert_eq!(OrderLog::open(&dir.0).unwrap().len(), 400);
}

#[test]
fn dedups_sorts_and_cuts_a_torn_tail() {
    let dir = Dir::new("torn");
    let log = OrderLog::open(&dir.0).unwrap();
    let (a, b) = (order("a-1", "2026-01-01T00:00:00.002Z"), order("b-1", "2026-01-01T00:00:00.001Z"));
    assert_eq!(log.add(&[a.clone(), b.clone(), a.clone()]).unwrap(), 2);
    assert_eq!(log.add(std::slice::from_ref(&a)).unwrap(), 0);
    assert_eq!(all(&log, 10), [b.clone(), a.clone()]);
    assert_eq!(log.since(0, 1).unwrap(), (vec![a.clone()], 1));
    assert_eq!(log.since(1, 10).unwrap(), (vec![b.clone()], 2));
    drop(log);
    let whole = std::fs::read(dir.csv()).unwrap();
    // A row cut without its newline.
    dir.append(b"c-1,1,torn");
    let log = OrderLog::open(&dir.0).unwrap();
    assert_eq!(all(&log, 10), [b.clone(), a.clone()]);
    drop(log);
    assert_eq!(std::fs::read(dir.csv()).unwrap(), whole);
    // A row cut inside a quoted title, right after one of its newlines.
    dir.append(b"c-1,1,\"two\nlines");
    let log = OrderLog::open(&dir.0).unwrap();
    assert_eq!(std::fs::read(dir.csv()).unwrap(), whole);
    let c = Order { title: "two\nlines, \"quoted\"".into(), ..order("c-1", "2026-01-01T00:00:00.000Z") };
    assert_eq!(log.add(std::slice::from_ref(&c)).unwrap(), 1);
    assert_eq!(all(&log, 1), [c.clone(), b.clone(), a.clone()]);
    drop(log);
    // A duplicate row (two servers adopting the same order) is skipped; its neighbours
    // read back whole.
    dir.append(&row(&Order { title: "dup".into(), ..a.clone() }));
    let log = OrderLog::open(&dir.0).unwrap();
    assert_eq!(log.len(), 3);
    let d = order("d-2", "2026-01-01T00:00:00.003Z");
    log.add(std::slice::from_ref(&d)).unwrap();
    assert_eq!(all(&log, 2), [c.clone(), b.clone(), a.clone(), d.clone()]);
    assert_eq!(log.get("c-1").unwrap(), Some(c));
    drop(log);
    assert_eq!(OrderLog::open(&dir.0).unwrap().len(), 4);
    assert!(aside(&dir).is_empty(), "a torn tail and a duplicate are not corruption");
}

#[test]
fn a_file_without_the_header_is_refused() {
    let dir = Dir::new("header");
    std::fs::create_dir_all(&dir.0).unwrap();
    std::fs::write(dir.csv(), "id,order_id\n").unwrap();
    assert!(OrderLog::open(&dir.0).is_err());
}

/// Paging while orders are added (newer ones, and a peer's late ones older than the
/// pages already read) visits every order that existed before it started exactly once,
/// in key order.
#[test]
fn paging_sees_each_order_once_while_orders_arrive() {
    let dir = Dir::new("paging");
    let log = OrderLog::open(&dir.0).unwrap();
    let before: Vec<Order> = (0..600).map(|i| order(&format!("0a0a0a0a0a0a-{i}"), &at(i / 3 * 2))).collect();
    log.add(&before).unwrap();
    let done = std::sync::atomic::AtomicBool::new(false);
    let added = std::sync::atomic::AtomicUsize::new(0);
    let (seen, pages) = std::thread::scope(|s| {
        for t in 0..3u64 {
            let (log, done, added) = (&log, &done, &added);
            s.spawn(move || {
                let mut i = 0;
                while !done.load(std::sync::atomic::Ordering::SeqCst) {
                    // Thread 0 adds new orders; the others late ones, older than most,
                    // some in the very millisecond of an existing order.
                    let ms = if t == 0 { 10_000 + i } else { (i * 7 + t) % 400 };
                    let o = order(&format!("{t:012}-{i}"), &at(ms));
                    log.add(std::slice::from_ref(&o)).unwrap();
                    added.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                    i += 1;
                }
            });
        }
        let (mut seen, mut pages, mut after) = (Vec::new(), 0, None);
        loop {
            let page = log.page(after.as_ref(), 7).unwrap();
            seen.extend(page.orders);
            pages += 1;
            // At least one order arrives between two pages, however busy the machine.
            let target = added.load(std::sync::atomic::Ordering::SeqCst) + 1;
            while added.load(std::sync::atomic::Ordering::SeqCst) < target {
                std::thread::yield_now();
            }
            match page.next {
                None => break,
                next => after = next,
            }
        }
        done.store(true, std::sync::atomic::Ordering::SeqCst);
        (seen, pages)
    });
    assert!(log.len() >= before.len() + pages, "orders were added while paging: {}", log.len());
    let mut count: HashMap<&str, usize> = HashMap::new();
    for o in &seen {
        *count.entry(o.order_id.as_str()).or_default() += 1;
    }
    assert!(count.values().all(|&n| n == 1), "an order was seen twice");
    for o in &before {
        assert_eq!(count.get(o.order_id.as_str()), Some(&1), "{} missed", o.order_id);
    }
    assert!(seen.windows(2).all(|w| key(&w[0]) < key(&w[1])), "pages are in key order");
    let ids: HashSet<&str> = seen.iter().map(|o| o.order_id.as_str()).collect();
    assert_eq!(ids.len(), seen.len());
}

/// Every row carries the checksum of its fields, whatever CSV quoting they needed; the
/// header names the column.
#[test]
fn rows_carry_their_checksum() {
    let dir = Dir::new("crc");
    let log = OrderLog::open(&dir.0).unwrap();
    let tricky = Order { title: "two\nlines, \"quoted\"".into(), ..order("0a0a0a0a0a0a-1", &at(1)) };
    log.add(&[tricky.clone(), order("0a0a0a0a0a0a-2", &at(2))]).unwrap();
    let text = std::fs::read(dir.csv()).unwrap();
    assert!(text.starts_with(HEADER));
    let mut reader = csv::ReaderBuilder::new().has_headers(true).from_reader(text.as_slice());
    let rows: Vec<csv::ByteRecord> = reader.byte_records().map(Result::unwrap).collect();
    assert_eq!(rows.len(), 2);
    for r in &rows {
        assert_eq!(r.len(), 6);
        assert!(check(r).is_ok());
        assert_eq!(r[5], *storage::checksum_text(storage::checksum(r.iter().take(5))).as_bytes());
    }
    assert_eq!(order_of(&rows[0], Form::Checked).unwrap(), tricky);
    let mut changed = rows[1].clone().into_iter().map(<[u8]>::to_vec).collect::<Vec<_>>();
    changed[3] = b"19.98".to_vec();
    assert!(check(&csv::ByteRecord::from(changed)).is_err(), "a changed price no longer matches");
}

/// A file of the older form (no checksum) still loads, its rows skipped as before (a
/// duplicate, a row that cannot be indexed), a torn last row cut; it is rewritten once in
/// the checked form, with nothing set aside.
#[test]
fn an_older_file_loads_and_is_rewritten_with_checksums() {
    let dir = Dir::new("v1");
    std::fs::create_dir_all(&dir.0).unwrap();
    let old = "order_id,id,title,price,at\n\
        a-1,1,\"two\nlines, \"\"quoted\"\"\",19.99,2026-01-01T00:00:00.002Z\n\
        b-1,2,plain,5.00,2026-01-01T00:00:00.001Z\n\
        a-1,1,dup,1.00,2026-01-01T00:00:00.002Z\n\
        d-1,1,x,1.00,2026-02-30T00:00:00.000Z\n\
        c-1,3,\"torn\n";
    std::fs::write(dir.csv(), old).unwrap();
    let log = OrderLog::open(&dir.0).unwrap();
    let a = Order {
        order_id: "a-1".into(),
        id: 1,
        title: "two\nlines, \"quoted\"".into(),
        price: Money::from_cents(1999),
        at: "2026-01-01T00:00:00.002Z".into(),
    };
    let b = Order {
        order_id: "b-1".into(),
        id: 2,
        title: "plain".into(),
        price: Money::from_cents(500),
        at: "2026-01-01T00:00:00.001Z".into(),
    };
    assert_eq!(all(&log, 10), [b.clone(), a.clone()]);
    let c = order("c-2", "2026-01-01T00:00:00.003Z");
    log.add(std::slice::from_ref(&c)).unwrap();
    drop(log);
    let text = std::fs::read(dir.csv()).unwrap();
    assert!(text.starts_with(HEADER), "rewritten in the checked form");
    assert_eq!(text, [HEADER.to_vec(), row(&a), row(&b), row(&c)].concat());
    assert!(aside(&dir).is_empty());
    assert_eq!(all(&OrderLog::open(&dir.0).unwrap(), 10), [b, a, c]);
}

/// A bad row before the last is corruption: the file is kept aside as it was, rewritten
/// with its good rows, and says so; a bad LAST row is a torn tail and only cut. A flipped
/// quote that makes the last "row" swallow whole rows is corruption too.
#[test]
fn corruption_in_the_middle_is_set_aside_and_a_torn_tail_is_cut() {
    let dir = Dir::new("corrupt");
    let orders: Vec<Order> = (1..=5)
        .map(|i: u64| Order {
            price: Money::from_cents(1000 + i as i64),
            title: if i < 3 { "A, \"quoted\" title".into() } else { "plain".into() },
            ..order(&format!("0b0b0b0b0b0b-{i}"), &at(i))
        })
        .collect();
    OrderLog::open(&dir.0).unwrap().add(&orders).unwrap();
    let whole = std::fs::read(dir.csv()).unwrap();

    // The last row's price flipped: torn, cut, nothing set aside.
    flip(&dir.csv(), "10.05", "10.15");
    assert_eq!(all(&OrderLog::open(&dir.0).unwrap(), 10), orders[..4]);
    assert!(aside(&dir).is_empty());
    std::fs::write(dir.csv(), &whole).unwrap();

    // The second row's price flipped: corruption.
    flip(&dir.csv(), "10.02", "10.12");
    let flipped = std::fs::read(dir.csv()).unwrap();
    let log = OrderLog::open(&dir.0).unwrap();
    let good: Vec<Order> = orders.iter().filter(|o| o.order_id != "0b0b0b0b0b0b-2").cloned().collect();
    assert_eq!(all(&log, 10), good);
    let kept = aside(&dir);
    assert_eq!(kept.len(), 1, "the corrupt file is kept aside");
    assert_eq!(std::fs::read(&kept[0]).unwrap(), flipped);
    assert_eq!(std::fs::read(dir.csv()).unwrap(), [HEADER.to_vec(), good.iter().flat_map(row).collect()].concat());
    drop(log);
    std::fs::remove_file(&kept[0]).unwrap();

    // A quote flipped into the third row's price: with no quote after it, the CSV reader
    // swallows the rows after it into one last "row", which must not be taken for a torn
    // tail.
    std::fs::write(dir.csv(), &whole).unwrap();
    flip(&dir.csv(), "10.03", "\"0.03");
    let log = OrderLog::open(&dir.0).unwrap();
    assert_eq!(all(&log, 10), orders[..2]);
    assert_eq!(aside(&dir).len(), 1, "set aside, not cut as torn");
}

/// A positioned read whose row no longer matches its checksum answers an error, never the
/// changed data, and fails the log; re-opening it sets the corrupt file aside and serves
/// the good rows.
#[test]
fn reads_check_rows_and_a_bad_one_gets_the_file_recovered() {
    let dir = Dir::new("readcheck");
    let log = OrderLog::open(&dir.0).unwrap();
    let orders: Vec<Order> = (1..=3)
        .map(|i: u64| Order {
            price: Money::from_cents(2000 + i as i64),
            ..order(&format!("0c0c0c0c0c0c-{i}"), &at(i))
        })
        .collect();
    log.add(&orders).unwrap();
    flip(&dir.csv(), "20.02", "20.92");
    let e = log.get("0c0c0c0c0c0c-2").unwrap_err();
    assert!(matches!(e, Error::Storage(StorageError::Corrupt { .. })), "{e}");
    assert!(log.page(None, 10).is_err(), "a page holding it is refused too");
    assert!(log.since(0, 10).is_err());
    assert_eq!(log.get("0c0c0c0c0c0c-1").unwrap().as_ref(), Some(&orders[0]), "other rows still read");
    assert!(log.failed().is_some());
    assert_eq!(log.reopen().unwrap(), Some(true), "re-opened, the file was corrupt");
    assert_eq!(log.failed(), None);
    assert_eq!(all(&log, 10), [orders[0].clone(), orders[2].clone()]);
    assert_eq!(aside(&dir).len(), 1);
    assert_eq!(log.add(std::slice::from_ref(&orders[1])).unwrap(), 1, "taken again (from a peer)");
    assert_eq!(all(&log, 10), orders);
}

/// The failed-log state machine: a failed fsync fails the log (never retried: the orders
/// of that fsync are not acknowledged, and no later append is taken, 503), reads go on;
/// `reopen` cuts what was not known durable, re-reads the file and takes appends again
/// under a new generation; a log that has not failed is not re-opened.
#[test]
fn a_failed_fsync_fails_the_log_until_it_is_reopened() {
    let dir = Dir::new("fsyncgate");
    let log = OrderLog::open(&dir.0).unwrap();
    assert_eq!(log.reopen().unwrap(), None, "not failed, not re-opened");
    let (a, b, c) = (order("0d0d0d0d0d0d-1", &at(1)), order("0d0d0d0d0d0d-2", &at(2)), order("0d0d0d0d0d0d-3", &at(3)));
    log.add(std::slice::from_ref(&a)).unwrap();
    let durable = std::fs::read(dir.csv()).unwrap();
    let first = log.pull(0, 10).unwrap().generation;

    log.fail_next_sync.store(true, std::sync::atomic::Ordering::SeqCst);
    let e = log.add(std::slice::from_ref(&b)).unwrap_err();
    assert!(matches!(e, Error::Storage(StorageError::Unwritable { .. })), "{e}");
    assert_eq!(e.status(), 503);
    assert!(e.to_string().contains("fsync failed"), "{e}");
    assert!(!log.contains(&b.order_id), "not acknowledged, not visible");
    assert!(log.failed().unwrap().contains("fsync"));

    // No append is taken, not even one whose fsync would now succeed.
    let len = std::fs::metadata(dir.csv()).unwrap().len();
    let e = log.add(std::slice::from_ref(&c)).unwrap_err();
    assert_eq!(e.status(), 503);
    assert!(e.to_string().contains("re-opened"), "{e}");
    assert_eq!(std::fs::metadata(dir.csv()).unwrap().len(), len, "nothing written");
    assert_eq!(log.add(std::slice::from_ref(&a)).unwrap(), 0, "an order already held needs no write");
    assert_eq!(log.get(&a.order_id).unwrap(), Some(a.clone()), "reads go on");

    assert_eq!(log.reopen().unwrap(), Some(false));
    assert_eq!(std::fs::read(dir.csv()).unwrap(), durable, "the row of the failed fsync was cut");
    assert_ne!(log.pull(0, 10).unwrap().generation, first, "a new generation: peers pull again from 0");
    assert_eq!(log.add(&[b.clone(), c.clone()]).unwrap(), 2);
    assert_eq!(all(&log, 10), [a.clone(), b.clone(), c.clone()]);
    drop(log);
    assert_eq!(all(&OrderLog::open(&dir.0).unwrap(), 10), [a, b, c]);
}
