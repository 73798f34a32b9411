//! The live runs: a store, a fault schedule, a recorded history, its verdict.
//!
//! Every run saves its whole history to `target/histories/<name>.json`; a history that is
//! not linearizable also leaves the shrunk witness of its first failing book in
//! `tests/histories/live-<name>.json`, which the regression test re-checks from then on.

use crate::checker::{self, Expect, History, Verdict};
use crate::common::*;
use crate::explain::explain;
use crate::recorder::{self, Plan, Targets};
use std::path::{Path, PathBuf};
use std::time::Duration;

/// The hot books, the clients and their bounds (the search stays fast at these sizes).
pub const BOOKS: [u32; 4] = [1, 2, 3, 4];
pub const CLIENTS: usize = 8;
pub const PER_BOOK: usize = 400;
pub const DURATION: Duration = Duration::from_secs(10);

/// Where whole histories go: `target/histories/` (next to the build's `tmp`).
pub fn histories_dir() -> PathBuf {
    Path::new(env!("CARGO_TARGET_TMPDIR")).parent().expect("target dir").join("histories")
}

/// Where kept failing histories go, re-checked by the regression test.
pub fn kept_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests").join("histories")
}

/// The seed of a run: `BAZAR_SEED`, else the clock (printed, and saved in the history).
pub fn seed() -> u64 {
    match std::env::var("BAZAR_SEED") {
        Ok(s) => s.parse().expect("BAZAR_SEED is a number"),
        Err(_) => std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_nanos() as u64,
    }
}

/// Sleeps until `at` since the recording began.
pub fn until(elapsed: &dyn Fn() -> Duration, at: Duration) {
    let now = elapsed();
    if at > now {
        std::thread::sleep(at - now);
    }
}

/// The targets of a store's clients: its front ends and catalogs, by name.
pub fn targets(frontends: &[&Proc], catalogs: &[Proc]) -> Targets {
    Targets {
        frontends: frontends.iter().map(|p| (p.spec.name.clone(), url(p))).collect(),
        catalogs: catalogs.iter().map(|p| (p.spec.name.clone(), url(p))).collect(),
        frontend_reads: true,
    }
}

/// Records a history on `targets` while `faults` runs, saves it, checks it, and panics with
/// the explanation when it is not linearizable.
pub fn run(name: &str, targets: &Targets, primary: &str, faults: impl FnOnce(&dyn Fn() -> Duration)) {
    let seed = seed();
    let plan = Plan { books: BOOKS.to_vec(), clients: CLIENTS, per_book: PER_BOOK, duration: DURATION, seed };
    let initial = recorder::prepare(primary, &plan.books);
    let (ops, counts) = recorder::record(targets, &plan, faults);
    let note = format!(
        "{CLIENTS} clients, books {BOOKS:?}, at most {PER_BOOK} ops per book, {DURATION:?}, seed {seed}; catalogs {:?}",
        targets.catalogs
    );
    let history = History { name: name.into(), note, expect: None, initial, ops };
    let dir = histories_dir();
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join(format!("{name}.json"));
    std::fs::write(&path, serde_json::to_vec(&history).unwrap()).unwrap();
    let started = std::time::Instant::now();
    let verdicts = checker::check(&history);
    let took = started.elapsed();
    eprintln!(
        "{name}: seed {seed}, {} operations {:?}, {} failed reads dropped, {} writes not sent; checked in {took:?}; saved {}",
        history.ops.len(),
        counts.by_kind,
        counts.failed_reads,
        counts.not_sent,
        path.display()
    );
    if history.ops.len() < BOOKS.len() * PER_BOOK / 2 {
        eprintln!(
            "  NOTE: only {} of {} operations in {DURATION:?}: the machine is slow or overloaded, and a run this \
             thin finds violations less often",
            history.ops.len(),
            BOOKS.len() * PER_BOOK
        );
    }
    let mut failures = Vec::new();
    for (book, verdict) in &verdicts {
        let ops = checker::book_ops(&history, *book);
        match verdict {
            Verdict::Linearizable => eprintln!("  book {book}: {} operations, linearizable", ops.len()),
            Verdict::Unknown(why) => failures.push(format!("book {book}: no verdict: {why}")),
            Verdict::NotLinearizable(stuck) => {
                let init = history.initial.iter().find(|i| i.book == *book).unwrap().state;
                let witness = explain(*book, init, &ops, stuck);
                if failures.iter().all(|f: &String| !f.contains("not linearizable")) {
                    keep(name, &history, *book, witness.ops.clone(), seed);
                }
                failures.push(witness.text);
            }
        }
    }
    assert!(counts.unexpected.is_empty(), "{name}: answers the API does not allow: {:#?}", counts.unexpected);
    assert!(failures.is_empty(), "{name} (seed {seed}, history in {}):\n{}", path.display(), failures.join("\n"));
}

/// Writes a failing book's witness under `tests/histories/` for the regression test.
fn keep(name: &str, history: &History, book: u32, ops: Vec<checker::Op>, seed: u64) {
    let initial = history.initial.iter().filter(|i| i.book == book).cloned().collect();
    let kept = History {
        name: format!("live-{name}"),
        note: format!("the shrunk witness of book {book} from a live run ({}), seed {seed}", history.note),
        expect: Some(Expect::NotLinearizable),
        initial,
        ops,
    };
    let dir = kept_dir();
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join(format!("live-{name}.json"));
    std::fs::write(&path, serde_json::to_string_pretty(&kept).unwrap() + "\n").unwrap();
    eprintln!("  kept the witness of book {book} in {}", path.display());
}
