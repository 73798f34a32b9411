//! The front end: see `bazar::frontend`.

use bazar::frontend::{Frontend, FrontendConfig};
use std::process::ExitCode;

fn main() -> ExitCode {
    bazar::service::run(
        "bazar-frontend",
        FrontendConfig::HELP,
        |env| FrontendConfig::from_source(env),
        |c| &c.common,
        |cfg, metrics, _| {
            let frontend = Frontend::new(cfg, metrics);
            Ok(move |r: &bazar::http::Request| frontend.handle(r))
        },
    )
}
