//! What every service binary does around its service: `--help`, logging, config errors
//! (one line, exit 2), binding, signals, serving until stopped.

use crate::config::{self, ConfigError, Env};
use crate::http::{self, Request, Response, ServerConfig};
use crate::metrics::Metrics;
use crate::shutdown::Shutdown;
use std::process::ExitCode;
use std::sync::Arc;

/// A service as a process runs it: answers requests, and does its last work once the
/// server has stopped and drained.
pub trait Service: Send + Sync + 'static {
    /// Answers one request.
    fn handle(&self, request: &Request) -> Response;

    /// Called once after the server has stopped and the requests in flight are done.
    fn stopped(&self) {}
}

/// Exit code for a bad setting.
pub const EXIT_CONFIG: u8 = 2;

/// Handles `--help` (prints `help` and the common variables), `health` and `ready` (asks
/// the service on `BAZAR_LISTEN`, else `default_listen`, for its liveness or readiness:
/// exit 0 when it says ok, for container health checks with no shell), and rejects other
/// arguments.
/// Returns `Some(code)` when the process should exit now.
pub fn handle_args(name: &str, help: &str, default_listen: Option<&str>) -> Option<ExitCode> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    match args.first().map(String::as_str) {
        None => None,
        Some("-h" | "--help") => {
            let health = if default_listen.is_some() {
                "\nUsage: (no argument) serve; `health` checks that a running one is alive, `ready` that it\ncan do its job (exit 0 when so: for container health checks).\n"
            } else {
                ""
            };
            println!("{help}{}{health}", config::COMMON_HELP);
            Some(ExitCode::SUCCESS)
        }
        Some(check @ ("health" | "ready")) if default_listen.is_some() => {
            Some(probe(name, check, default_listen.unwrap_or_default()))
        }
        Some(other) => {
            eprintln!("{name}: unknown argument {other:?}; try --help");
            Some(ExitCode::from(EXIT_CONFIG))
        }
    }
}

/// `<binary> health` or `<binary> ready`: GET /health or /ready on the local listener;
/// exit 0 when it answers 200 (liveness: a catalog replica that is catching up is alive)
/// or, for `ready`, when it says it is ready.
fn probe(name: &str, check: &str, default_listen: &str) -> ExitCode {
    let listen = match config::listen(&Env, default_listen) {
        Ok(a) => a,
        Err(e) => return config_error(name, &e),
    };
    let port = listen.port();
    let host = if listen.ip().is_unspecified() { "127.0.0.1".to_string() } else { listen.ip().to_string() };
    let base = if host.contains(':') { format!("http://[{host}]:{port}") } else { format!("http://{host}:{port}") };
    let http = crate::client::Http::new(std::time::Duration::from_secs(2), 1, None);
    match http.get::<serde_json::Value>(&base, &format!("/{check}")) {
        Ok(v) if check == "health" || v["status"] == "ready" => ExitCode::SUCCESS,
        Ok(v) => {
            eprintln!("{name}: {base} is up but says {}", v["status"]);
            ExitCode::FAILURE
        }
        Err(e) => {
            eprintln!("{name}: {base}: {e}");
            ExitCode::FAILURE
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
/// `load` reads the config; `start` builds the service (and its background threads).
pub fn run<C, S>(
    name: &'static str,
    help: &str,
    default_listen: &str,
    load: impl FnOnce(&Env) -> Result<C, ConfigError>,
    common: impl Fn(&C) -> &config::Common,
    start: impl FnOnce(C, Arc<Metrics>, &Shutdown) -> crate::Result<Arc<S>>,
) -> ExitCode
where
    S: Service,
{
    if let Some(code) = handle_args(name, help, Some(default_listen)) {
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
    let trust = http::Trust::from(common(&cfg).admission());
    // Once, at start: who may call the admin and internal routes (with no token, how to
    // set one). The token itself is never logged.
    match common(&cfg).admission() {
        config::Admission::Token(_) => log::info!("{}", common(&cfg).admission_note()),
        _ => log::warn!("{}", common(&cfg).admission_note()),
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
    let tracing = &common(&cfg).trace;
    crate::trace::install(name, &listen.to_string(), tracing);
    let service = match start(cfg, Arc::clone(&metrics), &shutdown) {
        Ok(s) => s,
        Err(e) => return fail(e.to_string()),
    };
    let handler = Arc::clone(&service);
    let served =
        http::serve(listener, ServerConfig { threads, name, trust }, metrics, shutdown, move |r| handler.handle(r));
    service.stopped();
    // The last spans to the collector, if one is set (bounded: it may be gone).
    crate::trace::flush(crate::trace::otlp::FLUSH);
    match served {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => fail(e.to_string()),
    }
}
