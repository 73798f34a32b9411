//! What every service binary does around its service: `--help`, logging, config errors
//! (one line, exit 2), binding, signals, serving until stopped.

use crate::config::{self, ConfigError, Env};
use crate::http::{self, Request, Response, ServerConfig};
use crate::metrics::Metrics;
use crate::shutdown::Shutdown;
use std::process::ExitCode;
use std::sync::Arc;

/// Exit code for a bad setting.
pub const EXIT_CONFIG: u8 = 2;

/// Handles `--help` (prints `help` and the common variables) and rejects other arguments.
/// Returns `Some(code)` when the process should exit now.
pub fn handle_args(name: &str, help: &str) -> Option<ExitCode> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    match args.first().map(String::as_str) {
        None => None,
        Some("-h" | "--help") => {
            println!("{help}{}", config::COMMON_HELP);
            Some(ExitCode::SUCCESS)
        }
        Some(other) => {
            eprintln!("{name}: unknown argument {other:?}; try --help");
            Some(ExitCode::from(EXIT_CONFIG))
        }
    }
}

/// Starts logging at `BAZAR_LOG` (stderr).
pub fn init_logging(name: &str) -> Result<(), ExitCode> {
    let level = config::log_level(&Env).map_err(|e| config_error(name, &e))?;
    // Our own crates only: the libraries' debug output would drown the store's.
    let cfg = simplelog::ConfigBuilder::new()
        .set_target_level(log::LevelFilter::Off)
        .set_thread_level(log::LevelFilter::Off)
        .add_filter_allow_str("bazar")
        .build();
    let _ = simplelog::WriteLogger::init(level, cfg, std::io::stderr());
    Ok(())
}

/// Prints one line naming the bad variable; the exit code for it.
pub fn config_error(name: &str, e: &ConfigError) -> ExitCode {
    eprintln!("{name}: bad setting {e}");
    ExitCode::from(EXIT_CONFIG)
}

/// Runs a service: logging, config, bind, signals, serve until SIGTERM/SIGINT.
///
/// `load` reads the config; `start` builds the service (and its background threads)
/// and returns the request handler.
pub fn run<C, H>(
    name: &'static str,
    help: &str,
    load: impl FnOnce(&Env) -> Result<C, ConfigError>,
    common: impl Fn(&C) -> &config::Common,
    start: impl FnOnce(C, Arc<Metrics>, &Shutdown) -> crate::Result<H>,
) -> ExitCode
where
    H: Fn(&Request) -> Response + Send + Sync + 'static,
{
    if let Some(code) = handle_args(name, help) {
        return code;
    }
    if let Err(code) = init_logging(name) {
        return code;
    }
    let cfg = match load(&Env) {
        Ok(c) => c,
        Err(e) => return config_error(name, &e),
    };
    let (listen, threads) = (common(&cfg).listen, common(&cfg).threads);
    if common(&cfg).token.is_none() {
        log::warn!("BAZAR_TOKEN is not set: admin and internal routes are open to anyone who can reach {listen}");
    }
    let fail = |what: String| {
        log::error!("{what}");
        eprintln!("{name}: {what}");
        ExitCode::FAILURE
    };
    let shutdown = match Shutdown::on_signals() {
        Ok(s) => s,
        Err(e) => return fail(format!("cannot install signal handlers: {e}")),
    };
    let listener = match http::bind(listen) {
        Ok(l) => l,
        Err(e) => return fail(e.to_string()),
    };
    let metrics = Arc::new(Metrics::new());
    let handler = match start(cfg, Arc::clone(&metrics), &shutdown) {
        Ok(h) => h,
        Err(e) => return fail(e.to_string()),
    };
    match http::serve(listener, ServerConfig { threads, name }, metrics, shutdown, handler) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => fail(e.to_string()),
    }
}
