//! Storage faults of an order server, with real processes and real files: a bit flipped in
//! its `orders.csv`, its data directory lost, its disk filled (a real tmpfs), and a second
//! process on its directory. An acknowledged order is never lost, and none is bought twice.

mod common;

use common::*;
use std::collections::{BTreeSet, HashSet};
use std::path::{Path, PathBuf};
use std::time::Duration;

const SETTLE: Duration = Duration::from_secs(30);

fn store() -> Store {
    Store::start(Opts::default()).expect("no memcached needed")
}

/// Buys one copy of `book` through order server `base`: the answer's status and body.
fn buy(base: &str, book: u32) -> (u16, serde_json::Value) {
    let a = call("POST", base, &format!("/purchase/{book}"), None);
    (a.status, serde_json::from_slice(&a.body).unwrap_or_default())
}

/// Buys and expects it acknowledged: the order id.
fn bought(base: &str, book: u32) -> String {
    let (status, body) = buy(base, book);
    assert_eq!(status, 200, "{body}");
    body["order_id"].as_str().unwrap().to_string()
}

fn ids_on(s: &Store, base: &str) -> BTreeSet<String> {
    s.orders_on(base).iter().map(|o| o["order_id"].as_str().unwrap().to_string()).collect()
}

/// The files set aside in a data directory as corrupt.
fn set_aside(dir: &Path) -> Vec<PathBuf> {
    std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.file_name().unwrap().to_string_lossy().starts_with("orders.csv.corrupt-"))
        .collect()
}

/// Checks that every row of an `orders.csv` is whole and matches its checksum, and that the
/// file ends with a whole row: returns the order ids.
fn whole_rows(path: &Path) -> Vec<String> {
    let bytes = std::fs::read(path).unwrap();
    assert!(bytes.ends_with(b"\n"), "{} ends in a partial row", path.display());
    let mut reader = csv::ReaderBuilder::new().has_headers(true).from_reader(bytes.as_slice());
    assert_eq!(
        reader.byte_headers().unwrap().iter().collect::<Vec<_>>(),
        [&b"order_id"[..], b"id", b"title", b"price", b"at", b"crc"]
    );
    reader
        .byte_records()
        .map(|r| {
            let r = r.unwrap_or_else(|e| panic!("{}: {e}", path.display()));
            assert_eq!(r.len(), 6);
            let crc = bazar::storage::checksum_text(bazar::storage::checksum(r.iter().take(5)));
            assert_eq!(&r[5], crc.as_bytes(), "a row of {} does not match its checksum", path.display());
            String::from_utf8(r[0].to_vec()).unwrap()
        })
        .collect()
}

/// A bit flipped in the middle of a stopped order server's `orders.csv` (the book id of a
/// row in the middle): detected at start, the file kept aside, the order taken again from
/// the peer, the same orders on both servers afterwards, with the flipped one as it was.
#[test]
fn a_bit_flipped_in_orders_csv_is_detected_and_recovered_from_the_peer() {
    let mut s = store();
    s.set_stock(1, 1000);
    let acked: BTreeSet<String> = (0..20).map(|i| bought(&s.order(i % 2), 1)).collect();
    for i in 0..2 {
        eventually(SETTLE, "both servers hold every order", || ids_on(&s, &s.order(i)) == acked);
    }
    let before = s.orders_on(&s.order(0));
    s.orders[0].kill9();
    let dir = s.dir.0.join("order-1");
    let csv = dir.join("orders.csv");
    let mut bytes = std::fs::read(&csv).unwrap();
    let lines: Vec<usize> = bytes.iter().enumerate().filter(|(_, b)| **b == b'\n').map(|(i, _)| i + 1).collect();
    // Row 10: its second field (the book id, "1") gets one bit flipped: "3".
    let row = lines[9];
    let id_at = row + bytes[row..].iter().position(|b| *b == b',').unwrap() + 1;
    assert_eq!(bytes[id_at], b'1');
    bytes[id_at] ^= 0x02;
    std::fs::write(&csv, &bytes).unwrap();

    s.orders[0].restart();
    wait_ready(&s.order(0));
    let kept = set_aside(&dir);
    assert_eq!(kept.len(), 1, "the corrupt file is kept aside");
    assert_eq!(std::fs::read(&kept[0]).unwrap(), bytes);
    let log = std::fs::read_to_string(&s.orders[0].spec.log).unwrap();
    assert!(log.contains("WARN") && log.contains("is corrupt"), "said at WARN");
    eventually(SETTLE, "the order of the flipped row is back", || s.orders_on(&s.order(0)) == before);
    assert_eq!(s.orders_on(&s.order(1)), before);
    assert!(s.orders_on(&s.order(0)).iter().all(|o| o["id"] == 1), "no order shows the flipped book id");
    assert_eq!(whole_rows(&csv).len(), 20);
}

/// An order server's data directory is lost (deleted while it is stopped) after a burst of
/// acknowledged purchases: the other lists every one meanwhile, and the server lists every
/// one again once restarted on an empty directory. Then the other way round with the peer
/// down during the purchases (only the catalog's journal holds the second copy): the orders
/// come back from the journal.
#[test]
fn a_lost_data_directory_loses_no_acknowledged_order() {
    let mut s = store();
    s.set_stock(2, 1000);
    let acked: BTreeSet<String> = (0..30).map(|i| bought(&s.order(i % 2), 2)).collect();
    // Each server says in its pull answers how far it holds the catalog's journal (what
    // lets the journal forget only what both hold), and which generation its log is.
    let last_seq = json(&get(&s.primary(), "/internal/purchases?after=0"))["purchases"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["seq"].as_u64().unwrap())
        .max()
        .unwrap();
    for i in 0..2 {
        eventually(SETTLE, "each server holds the journal up to its last purchase", || {
            let page = json(&get(&s.order(i), "/internal/orders?from=0"));
            page["log"].is_string() && page["held"].as_u64() == Some(last_seq)
        });
    }
    // A page of the journal's ids (what an order server reads first) names the purchases of
    // the page of whole ones, in the same order, from any write.
    for after in [0, last_seq - 5] {
        let whole = json(&get(&s.primary(), &format!("/internal/purchases?after={after}")));
        let ids = json(&get(&s.replica(), &format!("/internal/purchases?after={after}&shape=ids")));
        let of_whole: Vec<(u64, &str)> = whole["purchases"]
            .as_array()
            .unwrap()
            .iter()
            .map(|p| (p["seq"].as_u64().unwrap(), p["order"]["order_id"].as_str().unwrap()))
            .collect();
        let listed: Vec<(u64, &str)> = ids["ids"]
            .as_array()
            .unwrap()
            .iter()
            .map(|p| (p["seq"].as_u64().unwrap(), p["order_id"].as_str().unwrap()))
            .collect();
        assert_eq!((listed, &ids["more"]), (of_whole, &whole["more"]), "the replica forwards it to the primary");
    }
    // A page of ids (what a peer pulls first, from memory) names the orders of the page of
    // whole orders, in the same order, from any position.
    for from in [0, 7] {
        let whole = json(&get(&s.order(0), &format!("/internal/orders?from={from}")));
        let ids = json(&get(&s.order(0), &format!("/internal/orders?from={from}&shape=ids")));
        let of_whole: Vec<&str> =
            whole["orders"].as_array().unwrap().iter().map(|o| o["order_id"].as_str().unwrap()).collect();
        let listed: Vec<&str> = ids["ids"].as_array().unwrap().iter().map(|i| i.as_str().unwrap()).collect();
        assert_eq!((listed, &ids["next"], &ids["log"]), (of_whole, &whole["next"], &whole["log"]));
        assert_eq!(ids["orders"].as_array().map(Vec::len), Some(0), "ids, not orders");
    }
    s.orders[0].kill9();
    std::fs::remove_dir_all(s.dir.0.join("order-1")).unwrap();
    assert!(ids_on(&s, &s.order(1)).is_superset(&acked), "the other lists every acknowledged order");
    s.orders[0].restart();
    wait_ready(&s.order(0));
    eventually(SETTLE, "the restarted server lists every order again", || ids_on(&s, &s.order(0)).is_superset(&acked));

    // Its peer down: order-1 acknowledges on its own disk and the catalog's journal.
    s.orders[1].kill9();
    let alone: BTreeSet<String> = (0..10).map(|_| bought(&s.order(0), 2)).collect();
    s.orders[0].kill9();
    std::fs::remove_dir_all(s.dir.0.join("order-1")).unwrap();
    s.orders[1].restart();
    wait_ready(&s.order(1));
    let all: BTreeSet<String> = acked.union(&alone).cloned().collect();
    eventually(SETTLE, "order-2 adopts from the journal the orders only order-1's lost disk held", || {
        ids_on(&s, &s.order(1)).is_superset(&all)
    });
    s.orders[0].restart();
    wait_ready(&s.order(0));
    eventually(SETTLE, "both list every order", || ids_on(&s, &s.order(0)) == ids_on(&s, &s.order(1)));
    assert!(ids_on(&s, &s.order(0)).is_superset(&all));
}

/// A second order server on the same data directory exits at once with a line that says
/// why.
#[test]
fn a_second_order_server_on_the_same_directory_exits() {
    let s = store();
    let mut spec = s.orders[0].spec.clone();
    spec.name = "order-1-again".into();
    spec.log = s.dir.0.join("order-1-again.log");
    spec.env.iter_mut().find(|(k, _)| k == "BAZAR_LISTEN").unwrap().1 = format!("127.0.0.1:{}", free_port());
    let mut again = Proc::start(spec);
    let mut code = None;
    eventually(Duration::from_secs(10), "the second process exits", || {
        code = again.child.as_mut().unwrap().try_wait().unwrap();
        code.is_some()
    });
    assert!(!code.unwrap().success());
    let log = std::fs::read_to_string(&again.spec.log).unwrap();
    assert!(log.contains("in use by a running order server"), "{log}");
    assert_eq!(get(&s.order(0), "/health").status, 200, "the first one runs on");
}

/// A disk filled for real (a 512 KiB tmpfs as order-1's data directory): a purchase its disk
/// does not take is acknowledged on the peer's; with the peer down it is answered 503
/// naming the cause, the copy taken and the order id (never 500), with no partial row left;
/// once space is freed purchases resume by themselves, the 503's order is adopted from the
/// catalog's journal, and a restart loads every acknowledged order.
#[test]
fn a_full_disk_answers_503_and_writes_resume_once_space_is_back() {
    let mnt = TempDir::new("order-tmpfs");
    let mut s = store();
    s.set_stock(3, 100_000);
    s.orders[0].kill9();
    let Some(tmpfs) = common::files::Tmpfs::mount(&mnt.0, "512k") else { return };
    let data = mnt.0.join("data");
    s.orders[0].spec.env.push(("BAZAR_DATA_DIR".into(), data.display().to_string()));
    s.orders[0].restart();
    wait_ready(&s.order(0));
    let (o1, o2) = (s.order(0), s.order(1));
    let mut acked: HashSet<String> = (0..5).map(|_| bought(&o1, 3)).collect();

    let filler = tmpfs.fill("filler");
    // The last page of orders.csv may still take a few rows: buy until one is not logged
    // locally (acknowledged all the same, on the peer's disk).
    for _ in 0..400 {
        acked.insert(bought(&o1, 3));
        if metric(&o1, "bazar_orders_held_by_peer_total") >= 1.0 {
            break;
        }
    }
    assert!(metric(&o1, "bazar_orders_held_by_peer_total") >= 1.0, "the disk filled up");
    let csv = data.join("orders.csv");
    let rows = whole_rows(&csv);

    // The peer down: nothing takes the order.
    s.orders[1].kill9();
    let (status, body) = buy(&o1, 3);
    assert_eq!(status, 503, "{body}");
    let message = body["error"].as_str().unwrap();
    assert!(message.contains("No space left on device"), "{message}");
    assert!(message.contains("do not buy again"), "{message}");
    let pending = message.split("for order ").nth(1).unwrap().split(',').next().unwrap().to_string();
    assert_eq!(whole_rows(&csv), rows, "no partial row is left");
    assert_eq!(get(&o1, "/orders?limit=1").status, 200, "reads go on");

    std::fs::remove_file(&filler).unwrap();
    let mut resumed = Vec::new();
    eventually(SETTLE, "purchases resume by themselves", || {
        let (status, body) = buy(&o1, 3);
        if status == 200 {
            resumed.push(body["order_id"].as_str().unwrap().to_string());
        }
        status == 200
    });
    // The peer is down: these are on order-1's disk.
    resumed.extend((0..5).map(|_| bought(&o1, 3)));
    acked.extend(resumed.iter().cloned());
    eventually(SETTLE, "the 503's order is adopted from the catalog's journal", || {
        get(&o1, &format!("/orders/{pending}")).status == 200
    });
    s.orders[0].restart();
    wait_ready(&s.order(0));
    let on1 = ids_on(&s, &o1);
    assert!(resumed.iter().all(|id| on1.contains(id)), "a restart loads what was logged once space was back");
    assert!(rows.iter().all(|id| on1.contains(id)), "and what was logged before the disk filled");
    s.orders[1].restart();
    wait_ready(&s.order(1));
    eventually(SETTLE, "order-1 holds every acknowledged order (its own from its disk, the peer's by pull)", || {
        acked.iter().all(|id| ids_on(&s, &o1).contains(id))
    });
    eventually(SETTLE, "both list the same orders", || ids_on(&s, &o1) == ids_on(&s, &o2));
    assert!(ids_on(&s, &o2).contains(&pending));
    let local: HashSet<String> = whole_rows(&csv).into_iter().collect();
    assert!(rows.iter().all(|id| local.contains(id)), "every row logged before the fault is still there");
    drop(s);
    drop(tmpfs);
}
