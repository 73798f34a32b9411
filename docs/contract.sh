#!/usr/bin/env bash
# The contract as an outside client sees it: schemathesis generates requests from
# docs/openapi.yaml and checks every answer of a live store against it, one service at a
# time (front end, catalog primary, order server), with every check, a fixed seed and a
# bounded number of examples per route, the stateful phase following the description's
# links. Exits non-zero on any failure.
#
#   bash docs/contract.sh            # needs `pip install schemathesis==4.32.5`
#
# It builds the debug binaries, starts a whole store (catalog primary and replica, two
# order servers, front end; no memcached) on free loopback ports with data in a temporary
# directory and a token set (so the admin and internal routes are exercised with it), and
# stops what it started by PID. Settings: CONTRACT_SEED (default 19), CONTRACT_EXAMPLES
# (default 100 per route and phase), CONTRACT_SERVICES (default "frontend catalog order").
set -euo pipefail
cd "$(dirname "$0")/.."

SEED=${CONTRACT_SEED:-19}
EXAMPLES=${CONTRACT_EXAMPLES:-100}
SERVICES=${CONTRACT_SERVICES:-frontend catalog order}
TOKEN=contract-$(head -c 16 /dev/urandom | od -An -tx1 | tr -d " \n")   # 16 random bytes: a token must be 16 bytes or more

if ! command -v st >/dev/null; then
    echo "contract: schemathesis is not installed (pip install schemathesis==4.32.5)" >&2
    exit 2
fi
cargo build --quiet --bins
bin=$PWD/target/debug

work=$(mktemp -d "${TMPDIR:-/tmp}/bazar-contract.XXXXXX")
pids=()
stop() {
    local pid
    for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done
    for pid in "${pids[@]}"; do wait "$pid" 2>/dev/null || true; done
    rm -rf "$work"
}
trap stop EXIT

# A free loopback port below the kernel's ephemeral range (see bazar::cluster::free_port).
free_port() {
    python3 - <<'EOF'
import random, socket
for _ in range(1000):
    port = random.randrange(20000, 32000)
    s = socket.socket()
    try:
        s.bind(("127.0.0.1", port))
        print(port)
        break
    except OSError:
        pass
    finally:
        s.close()
else:
    raise SystemExit("no free port")
EOF
}

primary=$(free_port) replica=$(free_port) order1=$(free_port) order2=$(free_port) frontend=$(free_port)
url() { echo "http://127.0.0.1:$1"; }

# start NAME PROGRAM VAR=VALUE...: one service, its output in $work/NAME.log.
start() {
    local name=$1 program=$2
    shift 2
    env BAZAR_TOKEN="$TOKEN" BAZAR_LOG=warn BAZAR_MEMCACHED= "$@" "$bin/$program" >"$work/$name.log" 2>&1 &
    pids+=("$!")
}
start catalog-1 bazar-catalog BAZAR_LISTEN=127.0.0.1:$primary BAZAR_ROLE=primary \
    BAZAR_REPLICAS="$(url "$replica")" BAZAR_DATA_DIR="$work/catalog-1"
start catalog-2 bazar-catalog BAZAR_LISTEN=127.0.0.1:$replica BAZAR_ROLE=replica \
    BAZAR_PRIMARY="$(url "$primary")" BAZAR_DATA_DIR="$work/catalog-2"
catalogs="$(url "$primary"),$(url "$replica")"
start order-1 bazar-order BAZAR_LISTEN=127.0.0.1:$order1 BAZAR_CATALOG="$catalogs" \
    BAZAR_PEERS="$(url "$order2")" BAZAR_DATA_DIR="$work/order-1"
start order-2 bazar-order BAZAR_LISTEN=127.0.0.1:$order2 BAZAR_CATALOG="$catalogs" \
    BAZAR_PEERS="$(url "$order1")" BAZAR_DATA_DIR="$work/order-2"
start frontend bazar-frontend BAZAR_LISTEN=127.0.0.1:$frontend BAZAR_CATALOG="$catalogs" \
    BAZAR_ORDER="$(url "$order1"),$(url "$order2")"

for port in "$primary" "$replica" "$order1" "$order2" "$frontend"; do
    ready=""
    for _ in $(seq 1 200); do
        if curl -fs -o /dev/null "$(url "$port")/ready"; then ready=yes; break; fi
        sleep 0.1
    done
    if [ -z "$ready" ]; then
        echo "contract: the service on port $port did not become ready" >&2
        tail -n 20 "$work"/*.log >&2
        exit 1
    fi
done

failed=()
for service in $SERVICES; do
    exclude=()
    case $service in
        # The front end and the catalog share the path /books: the front end lists books
        # (GET), the catalog also adds them (POST). One OpenAPI path cannot say that the
        # front end's 405 rightly allows GET and HEAD only, so its OPTIONS answers' Allow
        # is not compared with the path's documented methods (statuses and bodies still are).
        frontend) target=$(url "$frontend"); exclude=(--exclude-checks allow_header_conformance) ;;
        catalog) target=$(url "$primary") ;;
        order) target=$(url "$order1") ;;
        *) echo "contract: unknown service $service" >&2; exit 2 ;;
    esac
    echo "== schemathesis: $service at $target"
    if ! st --config-file docs/schemathesis.toml run docs/openapi.yaml --url "$target" --include-tag "$service" --checks all "${exclude[@]}" \
        --header "Authorization: Bearer $TOKEN" --seed "$SEED" --max-examples "$EXAMPLES" \
        --phases examples,coverage,fuzzing,stateful --workers 1 --no-color \
        --generation-database none --request-timeout 15; then
        failed+=("$service")
    fi
done

if [ "${#failed[@]}" -gt 0 ]; then
    echo "contract: schemathesis found failures on: ${failed[*]}" >&2
    echo "contract: the services' logs:" >&2
    tail -n 20 "$work"/*.log >&2
    exit 1
fi
echo "contract: every service holds to docs/openapi.yaml"
