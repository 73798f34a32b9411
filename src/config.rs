//! Reading settings from the environment: one place, one clear error per bad variable.
//!
//! A bad or missing required setting stops the process at start with one line naming the
//! variable and exit code 2 (see [`ConfigError`]).

use std::fmt;
use std::net::{SocketAddr, ToSocketAddrs};
use std::path::PathBuf;
use std::time::Duration;

/// A bad setting: names the variable and says what is wrong.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigError {
    /// The environment variable.
    pub var: &'static str,
    /// What is wrong with it.
    pub problem: String,
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.var, self.problem)
    }
}

impl std::error::Error for ConfigError {}

/// Where settings come from: the process environment, or a map in tests.
pub trait Source {
    /// The raw value of `var`, `None` when unset.
    fn get(&self, var: &str) -> Option<String>;
}

/// The process environment.
pub struct Env;

impl Source for Env {
    fn get(&self, var: &str) -> Option<String> {
        std::env::var(var).ok()
    }
}

/// Fixed settings, for tests and for the launcher: `Vars(&[("BAZAR_ROLE", "primary")])`.
pub struct Vars<'a>(pub &'a [(&'a str, &'a str)]);

impl Source for Vars<'_> {
    fn get(&self, var: &str) -> Option<String> {
        self.0.iter().find(|(k, _)| *k == var).map(|(_, v)| v.to_string())
    }
}

fn bad(var: &'static str, problem: impl Into<String>) -> ConfigError {
    ConfigError { var, problem: problem.into() }
}

/// A non-empty value, trimmed.
pub fn opt(src: &dyn Source, var: &str) -> Option<String> {
    src.get(var).map(|v| v.trim().to_string()).filter(|v| !v.is_empty())
}

/// `host:port` to listen on (default `default`).
pub fn listen(src: &dyn Source, default: &str) -> Result<SocketAddr, ConfigError> {
    let value = opt(src, "BAZAR_LISTEN").unwrap_or_else(|| default.to_string());
    value
        .to_socket_addrs()
        .ok()
        .and_then(|mut a| a.next())
        .ok_or_else(|| bad("BAZAR_LISTEN", format!("{value:?} is not a host:port to listen on")))
}

/// Most requests handled at once (default: 32 per core, at least 64). Handlers mostly wait
/// on a peer (memcached, a back end, an fsync), and each connection has its own thread
/// already, so a slot costs no memory; too few slots make waiting handlers queue (measured:
/// 16 slots gave 12,500 cached reads/s under wrk, 64 gave 15,400).
pub fn threads(src: &dyn Source) -> Result<usize, ConfigError> {
    Ok(match number(src, "BAZAR_THREADS", 1..=1024, "threads")? {
        Some(n) => n as usize,
        None => std::thread::available_parallelism().map_or(2, |n| n.get()).saturating_mul(32).max(64),
    })
}

/// A whole number of `unit`s within `range` (None when unset): anything else is an error
/// that names the variable, the value and the range.
pub fn number(
    src: &dyn Source,
    var: &'static str,
    range: std::ops::RangeInclusive<u64>,
    unit: &str,
) -> Result<Option<u64>, ConfigError> {
    match opt(src, var) {
        None => Ok(None),
        Some(v) => match v.parse::<u64>() {
            Ok(n) if range.contains(&n) => Ok(Some(n)),
            _ => Err(bad(var, format!("{v:?} is not a number of {unit} from {} to {}", range.start(), range.end()))),
        },
    }
}

/// Tracing settings: `BAZAR_TRACE_SAMPLE` (a fraction from 0 to 1, default 1),
/// `BAZAR_TRACE_SPANS` (spans kept in memory, default [`crate::trace::DEFAULT_SPANS`]) and
/// `BAZAR_OTLP_ENDPOINT` (an `http://` base URL; the store's client speaks no TLS).
pub fn trace(src: &dyn Source) -> Result<crate::trace::Settings, ConfigError> {
    let sample = match opt(src, "BAZAR_TRACE_SAMPLE") {
        None => 1.0,
        Some(v) => match v.parse::<f64>() {
            Ok(f) if (0.0..=1.0).contains(&f) => f,
            _ => return Err(bad("BAZAR_TRACE_SAMPLE", format!("{v:?} is not a fraction from 0 to 1"))),
        },
    };
    let spans =
        number(src, "BAZAR_TRACE_SPANS", 16..=1_000_000, "spans")?.map_or(crate::trace::DEFAULT_SPANS, |n| n as usize);
    let otlp = match opt(src, "BAZAR_OTLP_ENDPOINT") {
        None => None,
        Some(url) if url.starts_with("http://") && url.len() > "http://".len() && !url.contains(char::is_whitespace) => {
            Some(url.trim_end_matches('/').to_string())
        }
        Some(url) => {
            return Err(bad(
                "BAZAR_OTLP_ENDPOINT",
                format!("{url:?} is not an http:// base URL such as http://127.0.0.1:4318 (no TLS here: use a collector nearby)"),
            ))
        }
    };
    Ok(crate::trace::Settings { sample, spans, otlp })
}

/// The data directory (default `default`).
pub fn data_dir(src: &dyn Source, default: &str) -> PathBuf {
    PathBuf::from(opt(src, "BAZAR_DATA_DIR").unwrap_or_else(|| default.to_string()))
}

/// The shortest token accepted, in bytes: 16 random bytes are beyond guessing, and a
/// shorter secret is a password someone typed.
pub const MIN_TOKEN_BYTES: usize = 16;

/// Token values the repository has shipped as examples (`systemd/env/*.env` once said
/// `BAZAR_TOKEN=change-me-to-a-long-random-secret`): a store that runs with one is as open
/// as one with none, so they stop the process like a short token. Any value that starts
/// with `change-me` is refused too, and so is a `<...>` left as written in the README.
pub const PLACEHOLDER_TOKENS: &[&str] =
    &["change-me-to-a-long-random-secret", "your-token-here", "replace-with-a-long-random-secret"];

/// The shared secret: `BAZAR_TOKEN`, or the contents of the file `BAZAR_TOKEN_FILE` names
/// (a Docker or systemd secret; surrounding white space, such as the trailing newline,
/// trimmed); `None` when neither is set (or both are empty). Setting both, an unreadable
/// or empty file, and a value that [`check_token_value`] refuses are errors.
pub fn token(src: &dyn Source) -> Result<Option<String>, ConfigError> {
    match (opt(src, "BAZAR_TOKEN"), opt(src, "BAZAR_TOKEN_FILE")) {
        (None, None) => Ok(None),
        (Some(_), Some(_)) => Err(bad(
            "BAZAR_TOKEN_FILE",
            "is set together with BAZAR_TOKEN: set one of BAZAR_TOKEN and BAZAR_TOKEN_FILE, not both",
        )),
        (Some(value), None) => check_token_value("BAZAR_TOKEN", &value).map(Some),
        (None, Some(path)) => {
            let bytes =
                std::fs::read(&path).map_err(|e| bad("BAZAR_TOKEN_FILE", format!("cannot read {path}: {e}")))?;
            let text = String::from_utf8(bytes)
                .map_err(|_| bad("BAZAR_TOKEN_FILE", format!("{path} does not hold text (UTF-8)")))?;
            let value = text.trim();
            if value.is_empty() {
                return Err(bad("BAZAR_TOKEN_FILE", format!("{path} is empty")));
            }
            check_token_value("BAZAR_TOKEN_FILE", value)
                .map(|t| Some(t.to_string()))
                .map_err(|e| ConfigError { problem: format!("{path}: {}", e.problem), ..e })
        }
    }
}

/// Whether `value` may be the token (read from `var`): at least [`MIN_TOKEN_BYTES`] bytes,
/// visible ASCII only (it travels in an HTTP header: no space, no control byte), and not a
/// placeholder ([`PLACEHOLDER_TOKENS`], `change-me...`, `<...>`). The error never repeats
/// the value: it is a secret, and the line goes to logs.
pub fn check_token_value(var: &'static str, value: &str) -> Result<String, ConfigError> {
    const HOW: &str = "make one with: head -c 32 /dev/urandom | base64";
    let lower = value.to_ascii_lowercase();
    if lower.starts_with("change-me")
        || PLACEHOLDER_TOKENS.contains(&lower.as_str())
        || (value.starts_with('<') && value.ends_with('>'))
    {
        return Err(bad(var, format!("is the documented placeholder, not a secret; {HOW}")));
    }
    if value.len() < MIN_TOKEN_BYTES {
        return Err(bad(
            var,
            format!("the token is {} bytes long, shorter than {MIN_TOKEN_BYTES}; {HOW}", value.len()),
        ));
    }
    if !value.bytes().all(|b| b.is_ascii_graphic()) {
        return Err(bad(var, format!("the token may hold only visible ASCII characters (no space); {HOW}")));
    }
    Ok(value.to_string())
}

/// `BAZAR_INSECURE_OPEN`: `1` (or `true`) opens the admin and internal routes of a service
/// without a token to every peer; unset, empty, `0` or `false`: loopback only.
pub fn insecure_open(src: &dyn Source) -> Result<bool, ConfigError> {
    match opt(src, "BAZAR_INSECURE_OPEN").as_deref() {
        None | Some("0" | "false") => Ok(false),
        Some("1" | "true") => Ok(true),
        Some(v) => Err(bad("BAZAR_INSECURE_OPEN", format!("{v:?} is not 1 or 0"))),
    }
}

/// The log level (default info).
pub fn log_level(src: &dyn Source) -> Result<log::LevelFilter, ConfigError> {
    let v = opt(src, "BAZAR_LOG").unwrap_or_else(|| "info".into());
    v.parse().map_err(|_| bad("BAZAR_LOG", format!("{v:?} is not one of error, warn, info, debug, trace")))
}

/// A comma-separated list of base URLs (`http://host:port`), trailing slashes removed.
pub fn urls(src: &dyn Source, var: &'static str, required: bool) -> Result<Vec<String>, ConfigError> {
    let Some(value) = opt(src, var) else {
        return if required {
            Err(bad(var, "is required (comma-separated base URLs like http://host:9000)"))
        } else {
            Ok(Vec::new())
        };
    };
    value.split(',').map(str::trim).filter(|s| !s.is_empty()).map(|u| base_url(var, u)).collect()
}

/// One base URL: `http://host:port` with nothing after it.
pub fn base_url(var: &'static str, value: &str) -> Result<String, ConfigError> {
    let url = value.trim_end_matches('/');
    let rest = url.strip_prefix("http://").ok_or_else(|| bad(var, format!("{value:?} must start with http://")))?;
    let (host, port) = rest.rsplit_once(':').ok_or_else(|| bad(var, format!("{value:?} needs a port")))?;
    if host.is_empty() || host.contains('/') || port.parse::<u16>().map_or(true, |p| p == 0) {
        return Err(bad(var, format!("{value:?} is not http://host:port")));
    }
    Ok(url.to_string())
}

/// A duration in milliseconds (default `default`), within `range_ms`.
pub fn millis(
    src: &dyn Source,
    var: &'static str,
    default: Duration,
    range_ms: std::ops::RangeInclusive<u64>,
) -> Result<Duration, ConfigError> {
    Ok(number(src, var, range_ms, "milliseconds")?.map_or(default, Duration::from_millis))
}

/// memcached servers (`host:port`, comma-separated); empty when unset.
pub fn memcached(src: &dyn Source) -> Result<Vec<String>, ConfigError> {
    let Some(value) = opt(src, "BAZAR_MEMCACHED") else { return Ok(Vec::new()) };
    value
        .split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(|s| match s.rsplit_once(':') {
            Some((h, p)) if !h.is_empty() && p.parse::<u16>().is_ok() => Ok(s.to_string()),
            _ => Err(bad("BAZAR_MEMCACHED", format!("{s:?} is not host:port"))),
        })
        .collect()
}

/// Who may call a service's admin and internal routes (see [`Common::admission`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Admission<'a> {
    /// Whoever sends `Authorization: Bearer <this token>`, from any address.
    Token(&'a str),
    /// No token set: peers on loopback (127.0.0.0/8, ::1, ::ffff:127.0.0.0/104) only; any
    /// other peer gets a 403 that says how to set a token (Redis' protected mode).
    LoopbackOnly,
    /// No token set and `BAZAR_INSECURE_OPEN=1`: anyone who reaches the port.
    Anyone,
}

/// The settings every service has.
#[derive(Clone, Debug)]
pub struct Common {
    /// Address to listen on.
    pub listen: SocketAddr,
    /// Most requests handled at once.
    pub threads: usize,
    /// Shared secret for admin and internal routes, if set (`BAZAR_TOKEN` or the file
    /// `BAZAR_TOKEN_FILE` names); the services also send it to each other.
    pub token: Option<String>,
    /// `BAZAR_INSECURE_OPEN=1`: without a token, admin and internal routes are open to
    /// every peer instead of loopback only. Never together with a token.
    pub insecure_open: bool,
    /// Tracing: `BAZAR_TRACE_SAMPLE`, `BAZAR_TRACE_SPANS`, `BAZAR_OTLP_ENDPOINT`.
    pub trace: crate::trace::Settings,
}

impl Common {
    /// Reads the common settings with the service's default listen address.
    pub fn from_source(src: &dyn Source, default_listen: &str) -> Result<Common, ConfigError> {
        let (token, insecure_open) = (token(src)?, insecure_open(src)?);
        if token.is_some() && insecure_open {
            return Err(bad(
                "BAZAR_INSECURE_OPEN",
                "is set together with a token (BAZAR_TOKEN or BAZAR_TOKEN_FILE): the token already admits the store's services; unset BAZAR_INSECURE_OPEN",
            ));
        }
        Ok(Common {
            listen: listen(src, default_listen)?,
            threads: threads(src)?,
            token,
            insecure_open,
            trace: trace(src)?,
        })
    }

    /// Who may call the admin and internal routes.
    pub fn admission(&self) -> Admission<'_> {
        match (&self.token, self.insecure_open) {
            (Some(t), _) => Admission::Token(t),
            (None, false) => Admission::LoopbackOnly,
            (None, true) => Admission::Anyone,
        }
    }

    /// The line a service logs once at start about its admin and internal routes: with
    /// no token, how to set one. Never holds the token itself.
    pub fn admission_note(&self) -> String {
        let listen = self.listen;
        match self.admission() {
            Admission::Token(_) => format!(
                "admin and internal routes on {listen} need `Authorization: Bearer <token>` (BAZAR_TOKEN or BAZAR_TOKEN_FILE)"
            ),
            Admission::LoopbackOnly => format!(
                "BAZAR_TOKEN is not set: admin and internal routes on {listen} answer loopback clients only (403 to any other); \
                 to run the store across machines give every service the same token of at least {MIN_TOKEN_BYTES} bytes, \
                 e.g. `head -c 32 /dev/urandom | base64 > /etc/bazar/token` and BAZAR_TOKEN_FILE=/etc/bazar/token \
                 (or BAZAR_TOKEN=<it>)"
            ),
            Admission::Anyone => format!(
                "BAZAR_TOKEN is not set and BAZAR_INSECURE_OPEN=1: admin and internal routes on {listen} are open to anyone who can reach it"
            ),
        }
    }
}

/// The `--help` lines every service shares.
pub const COMMON_HELP: &str = "  BAZAR_LISTEN    host:port to listen on
  BAZAR_THREADS   most requests handled at once (default: 32 per core, at least 64)
  BAZAR_LOG       error, warn, info, debug or trace (default info)
  BAZAR_TOKEN     shared secret (at least 16 bytes); admin and internal routes then need
                  `Authorization: Bearer <token>`, and the services send it to each other.
                  Unset: admin and internal routes answer loopback clients only (403 to others)
  BAZAR_TOKEN_FILE  read the token from this file instead (a Docker or systemd secret)
  BAZAR_INSECURE_OPEN  1: with no token, open admin and internal routes to anyone who
                  reaches the port (for a private network you trust; never with a token)
  BAZAR_TRACE_SAMPLE  fraction of requests that start a trace, 0 to 1 (default 1; 0: off);
                  a request with a sampled traceparent is always traced
  BAZAR_TRACE_SPANS  spans kept in memory for GET /traces/{id} (default 4096)
  BAZAR_OTLP_ENDPOINT  OTLP/HTTP collector (http://host:4318): spans sent to /v1/traces";

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tracing_settings() {
        let trace = |vars: &[(&str, &str)]| super::trace(&Vars(vars)).map_err(|e| e.var);
        assert_eq!(trace(&[]), Ok(crate::trace::Settings::default()));
        let read = trace(&[
            ("BAZAR_TRACE_SAMPLE", "0.25"),
            ("BAZAR_TRACE_SPANS", "100"),
            ("BAZAR_OTLP_ENDPOINT", "http://127.0.0.1:4318/"),
        ])
        .unwrap();
        assert_eq!((read.sample, read.spans, read.otlp.as_deref()), (0.25, 100, Some("http://127.0.0.1:4318")));
        assert_eq!(trace(&[("BAZAR_TRACE_SAMPLE", "0")]).unwrap().sample, 0.0);
        for (var, value) in [
            ("BAZAR_TRACE_SAMPLE", "1.5"),
            ("BAZAR_TRACE_SAMPLE", "-0.1"),
            ("BAZAR_TRACE_SAMPLE", "NaN"),
            ("BAZAR_TRACE_SAMPLE", "half"),
            ("BAZAR_TRACE_SPANS", "0"),
            ("BAZAR_TRACE_SPANS", "many"),
            ("BAZAR_OTLP_ENDPOINT", "https://collector:4318"),
            ("BAZAR_OTLP_ENDPOINT", "collector:4318"),
            ("BAZAR_OTLP_ENDPOINT", "http://"),
        ] {
            assert_eq!(trace(&[(var, value)]), Err(var), "{var}={value}");
        }
    }

    #[test]
    fn checks_each_variable() {
        let env = &Vars(&[
            ("BAZAR_LISTEN", "nope"),
            ("BAZAR_THREADS", "0"),
            ("BAZAR_CATALOG", "http://a:1,ftp://b:2"),
            ("BAZAR_LOG", "loud"),
        ]);
        assert_eq!(listen(env, "0.0.0.0:1").unwrap_err().var, "BAZAR_LISTEN");
        assert_eq!(threads(env).unwrap_err().var, "BAZAR_THREADS");
        assert_eq!(urls(env, "BAZAR_CATALOG", true).unwrap_err().var, "BAZAR_CATALOG");
        assert_eq!(urls(env, "BAZAR_ORDER", true).unwrap_err().var, "BAZAR_ORDER");
        assert_eq!(log_level(env).unwrap_err().var, "BAZAR_LOG");
        let good = &Vars(&[("BAZAR_CATALOG", " http://a:1/ , http://b:2"), ("BAZAR_MEMCACHED", "127.0.0.1:11211")]);
        assert_eq!(urls(good, "BAZAR_CATALOG", true).unwrap(), ["http://a:1", "http://b:2"]);
        assert_eq!(memcached(good).unwrap(), ["127.0.0.1:11211"]);
        assert_eq!(listen(good, "127.0.0.1:4200").unwrap().port(), 4200);
        for bad_url in ["http://a", "http://:1", "http://a:0", "http://a:1/x", "a:1"] {
            assert!(base_url("X", bad_url).is_err(), "{bad_url}");
        }
    }

    /// Every placeholder the repository ships in an example file is refused.
    #[test]
    fn shipped_placeholders_are_refused() {
        let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
        for dir in ["systemd/env", "containers", "docs"] {
            let Ok(entries) = std::fs::read_dir(root.join(dir)) else { continue };
            for entry in entries.flatten() {
                let text = std::fs::read_to_string(entry.path()).unwrap_or_default();
                for line in text.lines().filter(|l| !l.trim_start().starts_with('#')) {
                    if let Some((_, value)) = line.split_once("BAZAR_TOKEN=") {
                        let value = value.trim().trim_matches('"');
                        if value.is_empty() || value.starts_with('$') {
                            continue; // generated at run time by the script
                        }
                        assert!(check_token_value("BAZAR_TOKEN", value).is_err(), "{value} in {:?}", entry.path());
                    }
                }
            }
        }
        for placeholder in PLACEHOLDER_TOKENS.iter().chain(&["Change-Me-Please-0123456789", "<a-long-random-secret>"]) {
            let e = check_token_value("BAZAR_TOKEN", placeholder).unwrap_err();
            assert!(e.problem.contains("placeholder") && !e.problem.contains(placeholder), "{e}");
        }
    }

    #[test]
    fn tokens_and_their_files() {
        let dir = std::env::temp_dir().join(format!("bazar-config-token-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let file = |name: &str, text: &str| {
            let p = dir.join(name);
            std::fs::write(&p, text).unwrap();
            p.display().to_string()
        };
        let good = "0123456789abcdef0123";
        let (nl, crlf, short, empty, spaced) = (
            file("nl", &format!("{good}\n")),
            file("crlf", &format!("  {good}\r\n")),
            file("short", "s3cret\n"),
            file("empty", "\n"),
            file("spaced", "0123456789 abcdef0123"),
        );
        let missing = dir.join("missing").display().to_string();
        let get = |vars: &[(&str, &str)]| token(&Vars(vars)).map_err(|e| (e.var, e.problem));
        assert_eq!(get(&[]), Ok(None));
        assert_eq!(get(&[("BAZAR_TOKEN", "")]), Ok(None));
        assert_eq!(get(&[("BAZAR_TOKEN", good)]), Ok(Some(good.to_string())));
        assert_eq!(get(&[("BAZAR_TOKEN_FILE", &nl)]), Ok(Some(good.to_string())));
        assert_eq!(get(&[("BAZAR_TOKEN_FILE", &crlf)]), Ok(Some(good.to_string())));
        type Case<'a> = (&'a [(&'a str, &'a str)], &'a str, &'a str);
        let refused: &[Case] = &[
            (&[("BAZAR_TOKEN", good), ("BAZAR_TOKEN_FILE", &nl)], "BAZAR_TOKEN_FILE", "BAZAR_TOKEN"),
            (&[("BAZAR_TOKEN", "s3cret")], "BAZAR_TOKEN", "shorter than 16"),
            (&[("BAZAR_TOKEN", "change-me-to-a-long-random-secret")], "BAZAR_TOKEN", "placeholder"),
            (&[("BAZAR_TOKEN_FILE", &short)], "BAZAR_TOKEN_FILE", "shorter than 16"),
            (&[("BAZAR_TOKEN_FILE", &empty)], "BAZAR_TOKEN_FILE", "is empty"),
            (&[("BAZAR_TOKEN_FILE", &spaced)], "BAZAR_TOKEN_FILE", "visible ASCII"),
            (&[("BAZAR_TOKEN_FILE", &missing)], "BAZAR_TOKEN_FILE", "cannot read"),
        ];
        for (vars, var, says) in refused {
            let (got_var, problem) = get(vars).unwrap_err();
            assert_eq!(got_var, *var, "{vars:?}");
            assert!(problem.contains(says), "{vars:?}: {problem}");
            assert!(
                !problem.contains("s3cret") && !problem.contains("abcdef"),
                "the value is never repeated: {problem}"
            );
        }
        // The opt-out: 1 or 0, and never together with a token.
        let common = |vars: &[(&str, &str)]| Common::from_source(&Vars(vars), "127.0.0.1:1");
        assert_eq!(common(&[]).unwrap().admission(), Admission::LoopbackOnly);
        assert_eq!(common(&[("BAZAR_INSECURE_OPEN", "1")]).unwrap().admission(), Admission::Anyone);
        assert_eq!(common(&[("BAZAR_INSECURE_OPEN", "0")]).unwrap().admission(), Admission::LoopbackOnly);
        assert_eq!(common(&[("BAZAR_TOKEN", good)]).unwrap().admission(), Admission::Token(good));
        assert_eq!(common(&[("BAZAR_INSECURE_OPEN", "yes")]).unwrap_err().var, "BAZAR_INSECURE_OPEN");
        assert_eq!(
            common(&[("BAZAR_INSECURE_OPEN", "1"), ("BAZAR_TOKEN", good)]).unwrap_err().var,
            "BAZAR_INSECURE_OPEN"
        );
        assert!(!common(&[("BAZAR_TOKEN", good)]).unwrap().admission_note().contains(good));
        let _ = std::fs::remove_dir_all(&dir);
    }
}
