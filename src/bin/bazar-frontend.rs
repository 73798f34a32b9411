//! The front end: see `bazar::frontend`.

use bazar::frontend::{Frontend, FrontendConfig};
use std::process::ExitCode;

fn main() -> ExitCode {
    bazar::service::run(
        "bazar-frontend",
        FrontendConfig::HELP,
        FrontendConfig::DEFAULT_LISTEN,
        |env| FrontendConfig::from_source(env),
        |c| &c.common,
        |cfg, metrics, shutdown| {
            let frontend = std::sync::Arc::new(Frontend::new(cfg, metrics));
            frontend.start_background(shutdown);
            Ok(frontend)
        },
    )
}
