//! bazar-bench's command line: help anywhere, and no flag silently ignored (a misspelt
//! flag would otherwise run a five-minute lab with the defaults).

use std::process::Command;

fn bench(args: &[&str]) -> (i32, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_bazar-bench")).args(args).output().expect("runs");
    let text = |b: &[u8]| String::from_utf8_lossy(b).into_owned();
    (out.status.code().unwrap_or(-1), text(&out.stdout), text(&out.stderr))
}

#[test]
fn help_is_printed_wherever_it_is_asked_for() {
    for args in [&[][..], &["--help"], &["lab", "--help"], &["load", "-h"], &["limit", "--clients", "4", "--help"]] {
        let (code, out, _) = bench(args);
        assert_eq!(code, 0, "{args:?}");
        assert!(out.contains("bazar-bench lab"), "{args:?}: {out}");
    }
}

#[test]
fn unknown_or_incomplete_flags_are_refused_before_anything_runs() {
    for (args, says) in [
        (&["lab", "--durration", "5"][..], "does not take \"--durration\""),
        (&["lab", "--csv"], "--csv needs a value"),
        (&["load", "--url", "http://127.0.0.1:9", "--listen", "x"], "does not take \"--listen\""),
        (&["limit", "--clients", "x"], "\"x\" is not a number"),
        (&["scale", "--stores", "7"], "is not BOOKSxORDERS"),
        (&["scale", "--stores", "3x0"], "at least 7"),
        (&["bogus"], "unknown command"),
    ] {
        let (code, _, err) = bench(args);
        assert_eq!(code, 2, "{args:?}");
        assert!(err.contains(says), "{args:?}: {err}");
    }
}

/// A small scale run: real stores built from an imported catalog and a written order log,
/// every figure of the table measured.
#[test]
fn scale_measures_every_figure_of_small_stores() {
    let svg = std::env::temp_dir().join(format!("bazar-scale-test-{}.svg", std::process::id()));
    let (code, out, err) =
        bench(&["scale", "--stores", "7x0,50x20", "--samples", "5", "--svg", &svg.display().to_string()]);
    assert_eq!(code, 0, "{err}");
    for row in [
        "| import | – (built in) |",
        "new replica to /ready",
        "| PATCH |",
        "search, first page (no cache)",
        "GET /orders, first page",
        "catalog-1 resident memory",
        "| orders.csv |",
    ] {
        assert!(out.contains(row), "{row}: {out}");
    }
    assert!(out.contains("50 books, 20 orders"), "{out}");
    assert!(!out.contains("errors)"), "every request answered 2xx: {out}");
    assert!(std::fs::read_to_string(&svg).unwrap().starts_with("<svg"));
    std::fs::remove_file(&svg).unwrap();
}
