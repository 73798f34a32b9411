//! The order server: see `bazar::order`.

use bazar::order::{OrderConfig, OrderNode};
use std::process::ExitCode;

fn main() -> ExitCode {
    bazar::service::run(
        "bazar-order",
        OrderConfig::HELP,
        OrderConfig::DEFAULT_LISTEN,
        |env| OrderConfig::from_source(env),
        |c| &c.common,
        |cfg, metrics, shutdown| {
            let node = OrderNode::open(cfg, metrics)?;
            node.start_background(shutdown);
            Ok(node)
        },
    )
}
