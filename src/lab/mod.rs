//! The lab: break a running store on purpose and watch whether it keeps its promises.
//!
//! - [`console`]: the lab API of `bazar-cluster` (`BAZAR_LAB_LISTEN`, loopback only): its
//!   services and their states, stop / kill / freeze / thaw / start of each, a switchover,
//!   the probe's verdict and a timeline of faults and failovers.
//! - [`probe`]: a small load of its own (probe books read, written and bought through the
//!   front end and each catalog) whose history is checked continuously, in windows, with
//!   [`crate::linearizable`], and the ledger of acknowledged orders and copies taken.
//!   `bazar-bench check` runs the same probe against any store.
//!
//! Only `bazar-cluster` runs a lab: it owns its processes. It gives its front end
//! `BAZAR_LAB`, and that front end alone relays the lab routes to its dashboard.

pub mod console;
pub mod probe;

use crate::config::{self, ConfigError, Source};
use crate::shutdown::Shutdown;
use console::{Lab, Processes};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

/// Length of one window of the probe's load under `bazar-cluster`.
pub const WINDOW: Duration = Duration::from_secs(10);

/// The services of a store, as the lab names and reaches them.
#[derive(Clone, Debug)]
pub struct Store {
    /// The front end's base URL.
    pub frontend: String,
    /// The catalogs' base URLs.
    pub catalogs: Vec<String>,
    /// The order servers' base URLs.
    pub orders: Vec<String>,
    /// Every service's name and address, as `GET /lab` shows them.
    pub urls: Vec<(&'static str, String)>,
}

/// The lab of a store just started (`processes`, reached as `store` says): its API served
/// on `listener` (until `shutdown`), the probe (off: [`probe::Probe::set_on`] starts its
/// load once the store is ready) and the watch of the catalogs' roles. With `token`, every
/// lab route needs it and the probe sends it.
pub fn start(
    processes: Box<dyn Processes>,
    store: Store,
    listener: std::net::TcpListener,
    token: Option<String>,
    shutdown: &Shutdown,
) -> Arc<Lab> {
    let settings = probe::Settings {
        frontend: store.frontend.clone(),
        catalogs: store.catalogs.clone(),
        orders: store.orders.clone(),
        token: token.clone(),
        window: WINDOW,
    };
    let probe = probe::Probe::new(settings, false);
    let lab = Lab::new(processes, store.urls, store.catalogs, Arc::clone(&probe), token);
    let (server, stop) = (Arc::clone(&lab), shutdown.clone());
    let metrics = Arc::new(crate::metrics::Metrics::new());
    std::thread::spawn(move || {
        let config = crate::http::ServerConfig {
            threads: 16,
            name: "bazar-lab",
            // No internal routes: every request is in the public budget.
            trust: crate::http::Trust::LoopbackOnly,
        };
        if let Err(e) = crate::http::serve(listener, config, metrics, stop, move |r| server.handle(r)) {
            eprintln!("bazar-cluster: lab: the lab API stopped: {e}");
        }
    });
    let stop = shutdown.clone();
    std::thread::spawn(move || probe.run(&stop, None));
    lab.watch(shutdown);
    lab
}

/// Where the lab API listens: `BAZAR_LAB_LISTEN` (default [`console::DEFAULT_LISTEN`]),
/// which must be a loopback address (the lab can kill the store: it is never exposed).
pub fn listen(src: &dyn Source) -> Result<SocketAddr, ConfigError> {
    let value = config::opt(src, "BAZAR_LAB_LISTEN").unwrap_or_else(|| console::DEFAULT_LISTEN.to_string());
    let addr: SocketAddr = value.parse().map_err(|_| ConfigError {
        var: "BAZAR_LAB_LISTEN",
        problem: format!("{value:?} is not host:port with an IP address (e.g. 127.0.0.1:4299)"),
    })?;
    if !addr.ip().is_loopback() {
        return Err(ConfigError {
            var: "BAZAR_LAB_LISTEN",
            problem: format!(
                "{value:?} is not a loopback address: the lab can stop the store, it listens on loopback only"
            ),
        });
    }
    Ok(addr)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_lab_listens_on_loopback_only() {
        let with = |v: Option<&str>| {
            let vars: Vec<(&str, &str)> = v.map(|v| ("BAZAR_LAB_LISTEN", v)).into_iter().collect();
            listen(&config::Vars(&vars)).map(|a| a.to_string()).map_err(|e| e.var)
        };
        assert_eq!(with(None), Ok("127.0.0.1:4299".into()));
        assert_eq!(with(Some("127.0.0.1:5000")), Ok("127.0.0.1:5000".into()));
        assert_eq!(with(Some("[::1]:5000")), Ok("[::1]:5000".into()));
        assert_eq!(with(Some("0.0.0.0:4299")), Err("BAZAR_LAB_LISTEN"));
        assert_eq!(with(Some("localhost:4299")), Err("BAZAR_LAB_LISTEN"));
    }
}
