//! Linearizability (issue 18): the library's checker (`bazar::linearizable`, which holds
//! its tests on hand-made and generated histories) applied to the regression test over the histories kept in
//! `tests/histories/`, and live runs that record concurrent histories against a real store
//! under a fault schedule and check them.
//!
//! The live runs run one at a time (each under half a minute); memcached and etcd are
//! needed as elsewhere (`BAZAR_REQUIRE_MEMCACHED=1`, `BAZAR_REQUIRE_ETCD=1` make their
//! absence a failure). Before issue 18 was fixed they found new-old inversions in every
//! schedule; the `found-*` histories kept in `tests/histories/` are such witnesses.

mod common;
#[path = "linearizable/live.rs"]
mod live;
#[path = "linearizable/recorder.rs"]
mod recorder;

// The checker is the library's (`bazar::linearizable`), with its own unit tests; these
// names let `live.rs` and `recorder.rs` say `crate::checker` and `crate::explain`.
use bazar::linearizable::{checker, explain};
use checker::{Expect, History, Verdict};
use common::*;
use std::sync::Mutex;
use std::time::Duration;

/// The live runs take turns: each has the machine's cores to itself.
static LIVE: Mutex<()> = Mutex::new(());

/// The verdict of a whole history, with the explanation of each failing book.
fn verdict_of(h: &History) -> (Option<Expect>, String) {
    let verdicts = checker::check(h);
    assert_eq!(checker::check(h), verdicts, "{}: the verdict is deterministic", h.name);
    let mut text = String::new();
    let mut got = Some(Expect::Linearizable);
    for (book, verdict) in &verdicts {
        match verdict {
            Verdict::Linearizable => {}
            Verdict::Unknown(why) => {
                text += &format!("book {book}: no verdict: {why}\n");
                got = got.filter(|g| *g == Expect::NotLinearizable).or(None);
            }
            Verdict::NotLinearizable(stuck) => {
                let init = h.initial.iter().find(|i| i.book == *book).expect("initial state").state;
                text += &explain::explain(*book, init, &checker::book_ops(h, *book), stuck).text;
                got = Some(Expect::NotLinearizable);
            }
        }
    }
    (got, text)
}

/// Re-checks every history kept in `tests/histories/` against its `expect`; with
/// `BAZAR_HISTORY=<file>`, checks that one history instead (a live run's, from
/// `target/histories/`), prints why it fails, and fails unless it gets its `expect`
/// (linearizable when it has none).
#[test]
fn every_kept_history_gets_its_expected_verdict() {
    let files: Vec<std::path::PathBuf> = match std::env::var("BAZAR_HISTORY") {
        Ok(one) => vec![one.into()],
        Err(_) => {
            let dir = live::kept_dir();
            let mut files: Vec<_> = std::fs::read_dir(&dir)
                .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
                .map(|e| e.unwrap().path())
                .filter(|p| p.extension().is_some_and(|x| x == "json"))
                .collect();
            files.sort();
            assert!(!files.is_empty(), "no histories in {}", dir.display());
            files
        }
    };
    for path in files {
        let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        let h: History = serde_json::from_str(&text).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        let expect = h.expect.unwrap_or(Expect::Linearizable);
        let (got, why) = verdict_of(&h);
        eprintln!("{}: {} operations, {got:?}\n{why}", path.display(), h.ops.len());
        assert_eq!(got, Some(expect), "{}:\n{why}", path.display());
    }
}

/// A static store (primary, replica, two order servers, two front ends sharing memcached).
fn static_run(name: &str, faults: impl FnOnce(&mut Store, &dyn Fn() -> Duration)) {
    let _turn = LIVE.lock().unwrap_or_else(|e| e.into_inner());
    // The near cache on in both front ends, in front of memcached.
    let opts = Opts { memcached: true, near_mb: Some(64), ..Opts::default() };
    let Some(mut store) = Store::start(opts) else { return };
    let second = store.another_frontend("frontend-2");
    let targets = live::targets(&[&store.frontend, &second], &store.catalogs);
    let primary = store.primary();
    live::run(name, &targets, &primary, |elapsed| faults(&mut store, elapsed));
}

/// The control: with every read and write on the primary alone (purchases through the
/// front end reach it too: the replica forwards them), a single copy under one lock, the
/// history must be linearizable today. Its failure would mean the recorder or the model
/// is wrong, not the replication; so it runs always.
#[test]
fn live_control_on_the_primary_alone_is_linearizable() {
    let _turn = LIVE.lock().unwrap_or_else(|e| e.into_inner());
    let Some(store) = Store::start(Opts::default()) else { return };
    let mut targets = live::targets(&[&store.frontend], &store.catalogs[..1]);
    targets.frontend_reads = false;
    live::run("control-primary", &targets, &store.primary(), |_| {});
}

#[test]
fn live_without_faults() {
    static_run("no-faults", |_, _| {});
}

#[test]
fn live_with_the_replica_paused() {
    static_run("replica-pause", |store, elapsed| {
        live::until(elapsed, Duration::from_secs(2));
        store.catalogs[1].signal(libc::SIGSTOP);
        live::until(elapsed, Duration::from_millis(3500));
        store.catalogs[1].signal(libc::SIGCONT);
    });
}

#[test]
fn live_with_the_replica_killed_and_restarted() {
    static_run("replica-kill", |store, elapsed| {
        live::until(elapsed, Duration::from_secs(2));
        store.catalogs[1].kill9();
        live::until(elapsed, Duration::from_secs(3));
        store.catalogs[1].restart();
    });
}

#[test]
fn live_with_memcached_restarted() {
    static_run("memcached-restart", |store, elapsed| {
        live::until(elapsed, Duration::from_millis(2500));
        if let Some(mc) = store.memcached.as_mut() {
            mc.restart();
        }
    });
}

#[test]
fn live_with_the_primary_killed_and_replaced() {
    let _turn = LIVE.lock().unwrap_or_else(|e| e.into_inner());
    let Some(mut store) = EtcdStore::start("linearizable-etcd", true) else { return };
    let first = store.wait_primary();
    let targets = live::targets(&[&store.frontend], &store.catalogs);
    let primary = url(&store.catalogs[first]);
    live::run("primary-failover", &targets, &primary, |elapsed| {
        live::until(elapsed, Duration::from_secs(2));
        store.catalogs[first].kill9();
        live::until(elapsed, Duration::from_secs(5));
        store.catalogs[first].restart();
    });
}

#[test]
fn live_with_a_front_end_frozen() {
    static_run("frontend-pause", |store, elapsed| {
        live::until(elapsed, Duration::from_secs(2));
        store.frontend.signal(libc::SIGSTOP);
        live::until(elapsed, Duration::from_secs(4));
        store.frontend.signal(libc::SIGCONT);
    });
}

#[test]
fn live_with_the_primary_frozen_and_replaced() {
    let _turn = LIVE.lock().unwrap_or_else(|e| e.into_inner());
    let Some(store) = EtcdStore::start("linearizable-etcd", true) else { return };
    let first = store.wait_primary();
    let targets = live::targets(&[&store.frontend], &store.catalogs);
    let primary = url(&store.catalogs[first]);
    live::run("primary-freeze", &targets, &primary, |elapsed| {
        live::until(elapsed, Duration::from_secs(2));
        store.catalogs[first].signal(libc::SIGSTOP);
        live::until(elapsed, Duration::from_secs(6));
        store.catalogs[first].signal(libc::SIGCONT);
    });
}
