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
        (&["bogus"], "unknown command"),
    ] {
        let (code, _, err) = bench(args);
        assert_eq!(code, 2, "{args:?}");
        assert!(err.contains(says), "{args:?}: {err}");
    }
}
