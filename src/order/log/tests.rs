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
    // A duplicate row (two servers adopting the same order) and a row that cannot be
    // indexed are skipped; their neighbours read back whole.
    dir.append(b"a-1,1,dup,1.00,2026-01-01T00:00:00.002Z\nd-1,1,x,1.00,2026-02-30T00:00:00.000Z\n");
    let log = OrderLog::open(&dir.0).unwrap();
    assert_eq!(log.len(), 3);
    let d = order("d-2", "2026-01-01T00:00:00.003Z");
    log.add(std::slice::from_ref(&d)).unwrap();
    assert_eq!(all(&log, 2), [c.clone(), b.clone(), a.clone(), d.clone()]);
    assert_eq!(log.get("c-1").unwrap(), Some(c));
    assert_eq!(log.get("d-1").unwrap(), None);
    drop(log);
    assert_eq!(OrderLog::open(&dir.0).unwrap().len(), 4);
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
