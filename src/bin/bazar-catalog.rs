//! The catalog server: see `bazar::catalog`.

use bazar::catalog::{CatalogConfig, CatalogNode};
use std::process::ExitCode;

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    match args.first().map(String::as_str) {
        Some("import") => return bazar::catalog::import::command(&args[1..]),
        Some("start-over") => return bazar::catalog::import::start_over_command(&args[1..]),
        _ => {}
    }
    bazar::service::run(
        "bazar-catalog",
        CatalogConfig::HELP,
        CatalogConfig::DEFAULT_LISTEN,
        |env| CatalogConfig::from_source(env),
        |c| &c.common,
        |cfg, metrics, shutdown| {
            let node = CatalogNode::open(cfg, metrics)?;
            node.start_background(shutdown);
            Ok(node)
        },
    )
}
