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

# Both simulators (the election's, the data path's) over many seeds each, from a random
# first one (a failure prints its seed and how to replay it): `just sim 10000`.
sim seeds="10000":
    BAZAR_SIM_SEEDS={{seeds}} BAZAR_SIM_FIRST=$(( $(od -An -N4 -tu4 /dev/urandom) )) cargo test --lib failover::sim::every_run -- --nocapture
    BAZAR_SIM_SEEDS={{seeds}} BAZAR_SIM_FIRST=$(( $(od -An -N4 -tu4 /dev/urandom) )) cargo test --lib catalog::sim::data::every_run -- --nocapture

# Build the release binaries.
build:
    cargo build --release

# Build the container images (static binaries FROM scratch, memcached and etcd).
images:
    bash containers/build-images.sh

# The whole store as containers on private networks, checked end to end; cleans up after itself.
docker-e2e:
    bash containers/e2e.sh

# Check the systemd units: verify without warnings, exposure 2.0 or lower.
check-systemd:
    bash systemd/check.sh

# Install the binaries, units and example environment files on this VM (as root).
install-systemd:
    bash systemd/install.sh

# The units under a real systemd in a container (debootstrap + docker import), checked end to end.
systemd-e2e:
    bash systemd/container-test.sh

# schemathesis against a live store, one service at a time (needs `pip install schemathesis==4.32.5`).
contract:
    bash docs/contract.sh

# The store as a Docker Swarm stack (containers/stack.yaml), checked end to end through port
# 4200 (BAZAR_PORT): scaling, rolling updates under load, a killed catalog; cleans up after
# itself and leaves the swarm only if it made it.
swarm-e2e:
    bash containers/swarm-e2e.sh
