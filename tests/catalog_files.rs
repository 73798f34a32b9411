//! The catalog's files under storage faults, with real processes and real files: a disk
//! that fills up (a small tmpfs the test mounts, as root), and a bit flipped in a stopped
//! replica's `catalog.log` or `books.csv`.

mod common;

use common::files::{self, Tmpfs};
use common::*;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// A static primary catalog with no replica, its data in `data`.
fn primary(dir: &Path, data: &Path) -> Proc {
    Proc::start(Spec {
        name: "catalog".into(),
        program: PathBuf::from(env!("CARGO_BIN_EXE_bazar-catalog")),
        args: vec![],
        env: vec![
            ("BAZAR_LISTEN".into(), format!("127.0.0.1:{}", free_port())),
            ("BAZAR_ROLE".into(), "primary".into()),
            ("BAZAR_DATA_DIR".into(), data.display().to_string()),
            ("BAZAR_LEASE_MS".into(), "300".into()),
        ],
        log: dir.join("catalog.log"),
    })
}

/// A static catalog `name` listening on `port`, of `role`, with `extra` settings.
fn catalog(dir: &Path, name: &str, port: u16, data: &Path, extra: &[(&str, String)]) -> Proc {
    let mut env = vec![
        ("BAZAR_LISTEN".to_string(), format!("127.0.0.1:{port}")),
        ("BAZAR_DATA_DIR".to_string(), data.display().to_string()),
        ("BAZAR_LEASE_MS".to_string(), "300".to_string()),
    ];
    env.extend(extra.iter().map(|(k, v)| (k.to_string(), v.clone())));
    Proc::start(Spec {
        name: name.into(),
        program: PathBuf::from(env!("CARGO_BIN_EXE_bazar-catalog")),
        args: vec![],
        env,
        log: dir.join(format!("{name}.log")),
    })
}

/// Every book's stock on a catalog, by id.
fn stocks(base: &str) -> BTreeMap<u64, u64> {
    let a = get(base, "/books");
    assert_eq!(a.status, 200, "{}", String::from_utf8_lossy(&a.body));
    let books = json(&a);
    books.as_array().unwrap().iter().map(|b| (b["id"].as_u64().unwrap(), b["quantity"].as_u64().unwrap())).collect()
}

fn seq(base: &str) -> u64 {
    json(&get(base, "/health"))["seq"].as_u64().unwrap()
}

fn text(a: &bazar::client::Answer) -> String {
    String::from_utf8_lossy(&a.body).into_owned()
}

/// Sets stocks until the disk refuses a write (writes acknowledged go into `acked`);
/// returns the refusal and the write refused (path, body).
fn fill(base: &str, n: &mut u64, acked: &mut BTreeMap<u64, u64>) -> (bazar::client::Answer, String, String) {
    loop {
        *n += 1;
        let (id, quantity) = (*n % 7 + 1, 1000 + *n);
        let (path, body) = (format!("/books/{id}"), format!("{{\"quantity\": {quantity}}}"));
        let a = call("PATCH", base, &path, Some(&body));
        assert_ne!(a.status, 500, "never 500: {}", text(&a));
        if a.status != 200 {
            return (a, path, body);
        }
        acked.insert(id, quantity);
        assert!(*n < 200_000, "the disk never filled");
    }
}

/// A refusal of a full disk: 503, naming the file and the cause.
fn full(a: &bazar::client::Answer) {
    assert_eq!(a.status, 503, "{}", text(a));
    let message = json(a)["error"].as_str().unwrap_or_default().to_string();
    assert!(message.contains("catalog.log") && message.contains("No space left on device"), "{message}");
}

/// The disk of a primary fills up: writes are refused with 503 naming the cause (never
/// 500), take no write number and no book id, the catalog restarts on the full disk with
/// every acknowledged write; when space comes back (a file removed, then the tmpfs grown)
/// writes resume by themselves, and a restart loads every acknowledged write.
#[test]
fn a_full_disk_refuses_writes_with_503_and_they_resume_by_themselves() {
    let dir = TempDir::new("full-disk");
    let Some(disk) = Tmpfs::mount(&dir.0.join("disk"), "600k") else { return };
    let data = disk.dir.join("catalog");
    let mut p = primary(&dir.0, &data);
    let base = url(&p);
    wait_ready(&base);
    let mut acked: BTreeMap<u64, u64> = stocks(&base);
    let mut n = 0;
    for round in 0..2 {
        // Most of the disk taken by a file of the test's own, so that a few hundred writes
        // fill the rest.
        let filler = disk.dir.join(format!("filler-{round}"));
        std::fs::write(&filler, vec![7u8; disk.free().saturating_sub(24 * 1024) as usize]).unwrap();
        let (refused, path, body) = fill(&base, &mut n, &mut acked);
        full(&refused);
        eprintln!("round {round}: {n} writes made in all, then {}: {}", refused.status, text(&refused));
        let at = seq(&base);
        // The same write again, and a new book (a longer row: a shorter one may still fit
        // in the file's last page): refused the same way, nothing taken.
        for _ in 0..5 {
            full(&call("PATCH", &base, &path, Some(&body)));
        }
        let book = format!(r#"{{"title": "{}", "topic": "storage", "price": 10, "quantity": 1}}"#, "Disks ".repeat(45));
        let book = book.as_str();
        full(&call("POST", &base, "/books", Some(book)));
        assert_eq!(seq(&base), at, "no write number taken");
        assert_eq!(json(&get(&base, "/health"))["log_failed"], true);
        assert!(metric(&base, "bazar_catalog_log_write_errors_total") >= 1.0);
        // A restart on the full disk loads every acknowledged write.
        p.restart();
        wait_ready(&base);
        assert_eq!(stocks(&base), acked, "round {round}: after a restart on the full disk");
        full(&call("PATCH", &base, &path, Some(&body)));
        assert_eq!(json(&get(&base, "/health"))["log_failed"], true);
        // Space comes back: writes resume by themselves.
        if round == 0 {
            // The primary re-opens its log by itself, with no write asking.
            std::fs::remove_file(&filler).unwrap();
            eventually(Duration::from_secs(10), "the log re-opened by itself", || {
                json(&get(&base, "/health"))["log_failed"] == false
            });
        } else {
            disk.resize("4m");
        }
        let mut resumed = None;
        eventually(Duration::from_secs(20), "writes resume", || {
            let a = call("PATCH", &base, "/books/2", Some("{\"quantity\": 5}"));
            assert!(a.status == 200 || a.status == 503, "{}: {}", a.status, text(&a));
            resumed = Some(a).filter(|a| a.status == 200);
            resumed.is_some()
        });
        acked.insert(2, 5);
        assert_eq!(seq(&base), at + 1, "the next write takes the next number");
        assert_eq!(json(&get(&base, "/health"))["log_failed"], false);
        let added = call("POST", &base, "/books", Some(book));
        assert_eq!(added.status, 201, "{}", text(&added));
        let id = json(&added)["id"].as_u64().unwrap();
        assert_eq!(id, 8 + round, "no book id was taken by the refused add");
        acked.insert(id, 1);
        p.restart();
        wait_ready(&base);
        assert_eq!(stocks(&base), acked, "round {round}: after a restart with space");
    }
    drop(p);
    drop(disk);
}

/// A bit flipped in the middle of a stopped replica's `catalog.log`, and separately of its
/// `books.csv` (read at start once the log was checkpointed): the replica finds it at
/// start, sets the files aside, copies the primary, and both hold the same books. Then the
/// primary's log: it sets its files aside and takes the replica's catalog before it serves.
#[test]
fn a_flipped_bit_in_a_replicas_files_is_found_and_recovered_from_the_primary() {
    // Checkpoints every 200 rows (BAZAR_CHECKPOINT_ROWS) rather than 20,000, so that a few
    // hundred writes make the replica checkpoint: its log then starts with a checkpoint row
    // and its view is read at start.
    let mut s = Store::start(Opts { checkpoint_rows: Some(200), ..Opts::default() }).unwrap();
    let (p, r) = (s.primary(), s.replica());
    let writes = 240;
    std::thread::scope(|scope| {
        for t in 0..4u32 {
            let p = &p;
            scope.spawn(move || {
                for i in 0..writes / 4 {
                    let body = format!("{{\"quantity\": {}}}", 100 + i);
                    let a = call("PATCH", p, &format!("/books/{}", t % 7 + 1), Some(&body));
                    assert_eq!(a.status, 200, "{}", text(&a));
                }
            });
        }
    });
    let replica_dir = s.dir.0.join("catalog-2");
    eventually(Duration::from_secs(30), "the replica checkpointed", || {
        std::fs::read_to_string(replica_dir.join("catalog.log"))
            .unwrap()
            .lines()
            .nth(1)
            .is_some_and(|l| l.split(',').nth(2) == Some("checkpoint"))
    });
    // The view first (read while the log starts with a checkpoint row); then the log, which
    // after the copy starts with a reset row (the view is not read then).
    for file in ["books.csv", "catalog.log"] {
        s.set_stock(3, 77);
        eventually(Duration::from_secs(10), "the replica has the write", || {
            get(&r, "/books").status == 200 && s.books(&r) == s.books(&p)
        });
        s.catalogs[1].terminate(Duration::from_secs(10));
        let line = files::flip_middle_bit(&replica_dir.join(file));
        s.catalogs[1].restart();
        wait_ready(&r);
        assert_eq!(s.books(&r), s.books(&p), "{file}: the same books on both");
        let log = std::fs::read_to_string(&s.catalogs[1].spec.log).unwrap();
        assert!(
            log.contains(&format!("{file}: line {line}: its checksum does not match")) && log.contains("set aside"),
            "{file}: the replica says what it found and did"
        );
        let aside = std::fs::read_dir(&replica_dir)
            .unwrap()
            .filter(|e| e.as_ref().unwrap().file_name().to_string_lossy().starts_with(&format!("{file}.corrupt-")))
            .count();
        assert!(aside >= 1, "{file}: the damaged file is kept");
        assert!(metric(&r, "bazar_replication_copies_total") >= 1.0);
    }
    // The primary's own log damaged: it does not serve it; it sets its files aside and
    // takes the catalog of its replica (which holds every acknowledged write) before it
    // serves anything.
    let want = s.books(&p);
    for c in s.catalogs.iter_mut() {
        c.terminate(Duration::from_secs(10));
    }
    files::flip_middle_bit(&s.dir.0.join("catalog-1").join("catalog.log"));
    s.catalogs[0].restart();
    // Alone, it serves nothing: no replica with a catalog has answered yet.
    eventually(Duration::from_secs(10), "the damaged primary answers", || {
        client().call(ureq::http::Method::GET, &p, "/health", None).is_ok()
    });
    assert_eq!(get(&p, "/books").status, 503, "a damaged primary serves nothing before it took a replica's catalog");
    s.catalogs[1].restart();
    eventually(Duration::from_secs(30), "the primary to serve the replica's catalog", || {
        get(&p, "/books").status == 200 && s.books(&p) == want
    });
    let log = std::fs::read_to_string(&s.catalogs[0].spec.log).unwrap();
    assert!(log.contains("its checksum does not match") && log.contains("set aside"), "{log}");
    assert!(log.contains("taking its catalog before serving"), "{log}");
    eventually(Duration::from_secs(30), "the replica to follow", || {
        get(&r, "/books").status == 200 && s.books(&r) == want
    });
}

/// A replica whose disk fills up: it answers the pushes it cannot log with an error, and
/// the primary counts it out of sync (never an acknowledgement of a write it did not log),
/// so the primary's writes go on (acknowledged once the replica's lease ran out) and the
/// replica serves no read; when space comes back it is brought in sync by itself, and it
/// holds the same books as the primary, after a restart too.
#[test]
fn a_replica_whose_disk_fills_up_is_out_of_sync_until_it_can_write_again() {
    let dir = TempDir::new("full-replica");
    let Some(disk) = Tmpfs::mount(&dir.0.join("disk"), "600k") else { return };
    let (pp, rp) = (free_port(), free_port());
    let (p_url, r_url) = (format!("http://127.0.0.1:{pp}"), format!("http://127.0.0.1:{rp}"));
    let mut replica = catalog(
        &dir.0,
        "replica",
        rp,
        &disk.dir.join("catalog"),
        &[("BAZAR_ROLE", "replica".into()), ("BAZAR_PRIMARY", p_url.clone())],
    );
    let _primary = catalog(
        &dir.0,
        "primary",
        pp,
        &dir.0.join("primary"),
        &[("BAZAR_ROLE", "primary".into()), ("BAZAR_REPLICAS", r_url.clone())],
    );
    wait_ready(&p_url);
    wait_ready(&r_url);
    std::fs::write(disk.dir.join("filler"), vec![7u8; disk.free().saturating_sub(24 * 1024) as usize]).unwrap();
    // Writes on the primary: every one acknowledged, although the replica's disk fills up.
    let mut acked = BTreeMap::new();
    let mut n = 0;
    eventually(Duration::from_secs(120), "the replica cannot log a push", || {
        for _ in 0..50 {
            n += 1;
            let (id, quantity) = (n % 7 + 1, 1000 + n);
            let a = call("PATCH", &p_url, &format!("/books/{id}"), Some(&format!("{{\"quantity\": {quantity}}}")));
            assert_eq!(a.status, 200, "{}", text(&a));
            acked.insert(id, quantity);
        }
        std::fs::read_to_string(dir.0.join("replica.log")).unwrap().contains("No space left on device")
    });
    let primary_log = std::fs::read_to_string(dir.0.join("primary.log")).unwrap();
    assert!(primary_log.contains("out of sync until it catches up"), "the primary counts it out of sync");
    eventually(Duration::from_secs(10), "the replica serves no read", || get(&r_url, "/books").status == 503);
    assert_eq!(stocks(&p_url), acked);
    // Space back: the replica is brought in sync by itself.
    std::fs::remove_file(disk.dir.join("filler")).unwrap();
    eventually(Duration::from_secs(30), "the replica in sync again", || {
        get(&r_url, "/books").status == 200 && stocks(&r_url) == acked
    });
    replica.restart();
    wait_ready(&r_url);
    assert_eq!(stocks(&r_url), acked, "after a restart");
    drop(replica);
    drop(_primary);
    drop(disk);
}
