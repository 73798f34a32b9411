//! The whole store on one machine: see `bazar::cluster`.

use std::process::ExitCode;

fn main() -> ExitCode {
    bazar::cluster::main()
}
