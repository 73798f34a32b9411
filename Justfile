# Bazar: common tasks. `just --list` shows them.

# Start the whole store on this machine (Ctrl-C stops it).
run-cluster:
    cargo run --release --bin bazar-cluster

# Run every test (the memcached tests are skipped where memcached is missing).
test:
    cargo test

# Formatting, lints and tests, as CI runs them.
check:
    cargo fmt --check
    cargo clippy --all-targets -- -D warnings
    cargo test

# Build the release binaries.
build:
    cargo build --release
