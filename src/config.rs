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
    match opt(src, "BAZAR_THREADS") {
        None => Ok(std::thread::available_parallelism().map_or(2, |n| n.get()).saturating_mul(32).max(64)),
        Some(v) => match v.parse::<usize>() {
            Ok(n) if (1..=1024).contains(&n) => Ok(n),
            _ => Err(bad("BAZAR_THREADS", format!("{v:?} is not a number of threads from 1 to 1024"))),
        },
    }
}

/// The data directory (default `default`).
pub fn data_dir(src: &dyn Source, default: &str) -> PathBuf {
    PathBuf::from(opt(src, "BAZAR_DATA_DIR").unwrap_or_else(|| default.to_string()))
}

/// The shared secret, if any.
pub fn token(src: &dyn Source) -> Option<String> {
    opt(src, "BAZAR_TOKEN")
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
    match opt(src, var) {
        None => Ok(default),
        Some(v) => match v.parse::<u64>() {
            Ok(n) if range_ms.contains(&n) => Ok(Duration::from_millis(n)),
            _ => Err(bad(
                var,
                format!("{v:?} is not a number of milliseconds from {} to {}", range_ms.start(), range_ms.end()),
            )),
        },
    }
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

/// The settings every service has.
#[derive(Clone, Debug)]
pub struct Common {
    /// Address to listen on.
    pub listen: SocketAddr,
    /// Most requests handled at once.
    pub threads: usize,
    /// Shared secret for admin and internal routes, if set.
    pub token: Option<String>,
}

impl Common {
    /// Reads the common settings with the service's default listen address.
    pub fn from_source(src: &dyn Source, default_listen: &str) -> Result<Common, ConfigError> {
        Ok(Common { listen: listen(src, default_listen)?, threads: threads(src)?, token: token(src) })
    }
}

/// The `--help` lines every service shares.
pub const COMMON_HELP: &str = "\
  BAZAR_LISTEN    host:port to listen on
  BAZAR_THREADS   most requests handled at once (default: 32 per core, at least 64)
  BAZAR_LOG       error, warn, info, debug or trace (default info)
  BAZAR_TOKEN     shared secret; admin and internal routes then need `Authorization: Bearer <token>`";

#[cfg(test)]
mod tests {
    use super::*;

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
}
