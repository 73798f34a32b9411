#!/usr/bin/env bash
# The whole store as containers on private networks this script creates, checked through
# the front end's published port: search, info, purchase; a stopped replica; a replica
# cut off by `docker network disconnect` (read leases) and reconnected; a stopped primary
# and its restart; then a second store whose catalogs elect their primary through etcd:
# the primary cut off by a partition is replaced, acknowledges nothing meanwhile, and
# rejoins as a replica. Removes only what it created, by name, even when it fails.
set -euo pipefail
cd "$(dirname "$0")/.."
work=$(mktemp -d)                 # mode 0700: holds the store's token

P=bazar-e2e                       # every container and network name starts with this
NET=$P-net                        # the store's network
PROBE=$P-probe                    # a second network through which the test reads the replica
LEASE_MS=1000
FAILOVER="ffrontend forder-1 forder-2 fcatalog-1 fcatalog-2"   # the etcd store's containers
started=$(date +%s)

cleanup() {
    local rc=$?
    if [ "$rc" != 0 ]; then
        echo "== FAILED; last log lines:"
        for c in catalog-instance1 catalog-instance2 order-instance1 order-instance2 frontend $FAILOVER; do
            echo "-- $P-$c"; docker logs --tail 15 "$P-$c" 2>&1 || true
        done
    fi
    for c in frontend order-instance1 order-instance2 catalog-instance1 catalog-instance2 memcached $FAILOVER etcd; do
        docker rm -f "$P-$c" >/dev/null 2>&1 || true
    done
    docker network rm "$NET" "$PROBE" >/dev/null 2>&1 || true
    rm -rf "$work"
    echo "== removed the containers and networks named $P-* and the token"
    exit "$rc"
}
trap cleanup EXIT

# fail, ok, status, wait_for
source containers/lib.sh
body() { curl -s -m 5 "$1"; }
ip_on() { docker inspect -f "{{(index .NetworkSettings.Networks \"$2\").IPAddress}}" "$P-$1"; }
healthy() { [ "$(docker inspect -f '{{.State.Health.Status}}' "$P-$1" 2>/dev/null)" = healthy ]; }
serves() { [ "$(status "$1")" = 200 ]; }
quantity() { body "$1" | python3 -c 'import json,sys; print(json.load(sys.stdin)["quantity"])'; }

echo "== images"
bash containers/build-images.sh

echo "== the token, networks and containers"
# Every service reads the store's token from a file mounted where a Docker secret would
# be (plain `docker run` has no secrets; containers/compose.yaml and stack.yaml use real
# ones). The services run as uid 10001 and read it through the bind mount, so the file is
# 0644; the directory around it (mktemp -d, 0700) keeps the host's other users out.
new_token "$work/bazar_token"
chmod 0644 "$work/bazar_token"
TOKEN=$(cat "$work/bazar_token")
AUTH="Authorization: Bearer $TOKEN"
secret=(-v "$work/bazar_token:/run/secrets/bazar_token:ro" -e BAZAR_TOKEN_FILE=/run/secrets/bazar_token)
docker network create "$NET" >/dev/null
docker network create "$PROBE" >/dev/null
port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
FE=http://127.0.0.1:$port
common=(-e BAZAR_LEASE_MS=$LEASE_MS -e BAZAR_LOG=info "${secret[@]}")
docker run -d --name "$P-memcached" --network "$NET" bazar-memcached:local >/dev/null
docker run -d --name "$P-catalog-instance1" --network "$NET" "${common[@]}" -e BAZAR_ROLE=primary \
    -e BAZAR_REPLICAS=http://$P-catalog-instance2:9000 -e BAZAR_MEMCACHED=$P-memcached:11211 bazar-catalog:local >/dev/null
docker run -d --name "$P-catalog-instance2" --network "$NET" "${common[@]}" -e BAZAR_ROLE=replica \
    -e BAZAR_PRIMARY=http://$P-catalog-instance1:9000 bazar-catalog:local >/dev/null
docker network connect "$PROBE" "$P-catalog-instance2"
CATALOGS=http://$P-catalog-instance1:9000,http://$P-catalog-instance2:9000
docker run -d --name "$P-order-instance1" --network "$NET" "${common[@]}" -e BAZAR_CATALOG=$CATALOGS \
    -e BAZAR_PEERS=http://$P-order-instance2:9002 bazar-order:local >/dev/null
docker run -d --name "$P-order-instance2" --network "$NET" "${common[@]}" -e BAZAR_CATALOG=$CATALOGS \
    -e BAZAR_PEERS=http://$P-order-instance1:9002 bazar-order:local >/dev/null
docker run -d --name "$P-frontend" --network "$NET" --publish "127.0.0.1:$port:4200" "${common[@]}" -e BAZAR_CATALOG=$CATALOGS \
    -e BAZAR_ORDER=http://$P-order-instance1:9002,http://$P-order-instance2:9002 -e BAZAR_MEMCACHED=$P-memcached:11211 \
    bazar-frontend:local >/dev/null
for c in catalog-instance1 catalog-instance2 order-instance1 order-instance2 frontend; do
    wait_for 60 "$c healthy (HEALTHCHECK)" healthy "$c"
done
ok "every container healthy by its own HEALTHCHECK"
PRIMARY=http://$(ip_on catalog-instance1 "$NET"):9000
REPLICA=http://$(ip_on catalog-instance2 "$PROBE"):9000

echo "== search, info, purchase through the published port"
[ "$(status "$FE/search/distributed%20systems")" = 200 ] || fail search
body "$FE/search/distributed%20systems" | grep -q "RPCs for Noobs" || fail "search body"
cache=$(curl -s -o /dev/null -D - "$FE/info/3" | tr -d '\r' | awk -F': ' 'tolower($1)=="x-cache"{print $2}')
cache2=$(curl -s -o /dev/null -D - "$FE/info/3" | tr -d '\r' | awk -F': ' 'tolower($1)=="x-cache"{print $2}')
# The second read comes from the front end's near cache (or memcached, before its lease).
case "$cache/$cache2" in miss/near | miss/hit) ;; *) fail "X-Cache $cache/$cache2, want miss then near (or hit)" ;; esac
[ "$(curl -s -o /dev/null -w '%{http_code}' -X POST "$FE/purchase/3")" = 200 ] || fail purchase
[ "$(quantity "$FE/info/3")" = 99 ] || fail "stock after purchase"
ok "search, info (miss then $cache2), purchase"

echo "== a stopped replica: reads and purchases go on"
docker stop -t 10 "$P-catalog-instance2" >/dev/null
for i in 1 2 3 4 5 6 7 8; do serves "$FE/info/$(( i % 7 + 1 ))" || fail "read $i with the replica stopped"; done
for i in 1 2 3 4; do [ "$(curl -s -o /dev/null -w '%{http_code}' -X POST "$FE/purchase/4")" = 200 ] || fail "purchase $i with the replica stopped"; done
docker start "$P-catalog-instance2" >/dev/null
REPLICA=http://$(ip_on catalog-instance2 "$PROBE"):9000
wait_for 30 "replica back and caught up" serves "$REPLICA/books/4"
[ "$(quantity "$REPLICA/books/4")" = 96 ] || fail "replica caught up"
ok "reads and purchases went on; the restarted replica caught up"

echo "== a replica cut off by a network partition"
docker network disconnect "$NET" "$P-catalog-instance2"
t0=$(date +%s%N)
[ "$(curl -s -o /dev/null -w '%{http_code}' -X PATCH -H "$AUTH" -H 'Content-Type: application/json' -d '{"quantity": 77}' "$PRIMARY/books/7")" = 200 ] || fail "write during the partition"
t1=$(date +%s%N)
echo "write acknowledged during the partition in $(( (t1 - t0) / 1000000 )) ms (lease $LEASE_MS ms)"
code=$(status "$REPLICA/books/7")
if [ "$code" = 200 ]; then [ "$(quantity "$REPLICA/books/7")" = 77 ] || fail "the cut-off replica served a stale read"; fi
[ "$code" = 503 ] || [ "$code" = 200 ] || fail "replica answered $code"
ok "the cut-off replica answered $code (503 or the new value, never the old one)"
for i in 1 2 3 4; do serves "$FE/info/7" || fail "read through the front end during the partition"; done
docker network connect "$NET" "$P-catalog-instance2"
wait_for 30 "replica reconnected and caught up" sh -c "[ \"\$(curl -s -m 3 $REPLICA/books/7 | python3 -c 'import json,sys; print(json.load(sys.stdin)[\"quantity\"])' 2>/dev/null)\" = 77 ]"
ok "reconnected, it caught up"

echo "== a stopped primary: writes answer 503 quickly, reads go on"
docker stop -t 10 "$P-catalog-instance1" >/dev/null
t0=$(date +%s%N)
code=$(curl -s -o /dev/null -w '%{http_code}' -m 10 -X POST "$FE/purchase/5")
t1=$(date +%s%N)
[ "$code" = 503 ] || fail "a purchase without a primary answered $code"
[ $(( (t1 - t0) / 1000000 )) -lt 2000 ] || fail "the 503 took $(( (t1 - t0) / 1000000 )) ms"
ok "purchase answered 503 in $(( (t1 - t0) / 1000000 )) ms"
sleep $(( LEASE_MS * 2 / 1000 ))
for i in 1 2 3 4 5 6; do serves "$FE/info/$i" || fail "read $i with the primary stopped"; done
ok "reads went on (the replica serves on the primary's farewell)"
docker start "$P-catalog-instance1" >/dev/null
wait_for 30 "primary back" healthy catalog-instance1
[ "$(quantity "$FE/info/7")" = 77 ] || fail "acknowledged write lost"
[ "$(quantity "$FE/info/4")" = 96 ] || fail "acknowledged purchases lost"
wait_for 30 "writes work again" sh -c "[ \"\$(curl -s -o /dev/null -w '%{http_code}' -X POST $FE/purchase/5)\" = 200 ]"
ok "after its restart nothing acknowledged was lost and writes work"

echo "== failover through etcd: a store whose primary is cut off by a partition"
docker run -d --name "$P-etcd" --network "$NET" bazar-etcd:local >/dev/null
for i in 1 2; do
    docker run -d --name "$P-fcatalog-$i" --network "$NET" -e BAZAR_LOG=info "${secret[@]}" -e BAZAR_ETCD=http://$P-etcd:2379 \
        -e BAZAR_ADVERTISE=http://$P-fcatalog-$i:9000 bazar-catalog:local >/dev/null
    docker network connect "$PROBE" "$P-fcatalog-$i"
done
FCATALOGS=http://$P-fcatalog-1:9000,http://$P-fcatalog-2:9000
for i in 1 2; do
    docker run -d --name "$P-forder-$i" --network "$NET" "${secret[@]}" -e BAZAR_CATALOG=$FCATALOGS \
        -e BAZAR_PEERS=http://$P-forder-$(( 3 - i )):9002 bazar-order:local >/dev/null
done
fport=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
FFE=http://127.0.0.1:$fport
docker run -d --name "$P-ffrontend" --network "$NET" --publish "127.0.0.1:$fport:4200" "${secret[@]}" -e BAZAR_CATALOG=$FCATALOGS \
    -e BAZAR_ORDER=http://$P-forder-1:9002,http://$P-forder-2:9002 bazar-frontend:local >/dev/null
for c in $FAILOVER; do wait_for 60 "$c healthy (HEALTHCHECK)" healthy "$c"; done
# "role primary" of a catalog's /health, empty when it does not answer
role() { curl -s -m 3 "$1/health" | python3 -c 'import json,sys; h=json.load(sys.stdin); print(h["role"], h["primary"])' 2>/dev/null || true; }
C1=http://$(ip_on fcatalog-1 "$PROBE"):9000
C2=http://$(ip_on fcatalog-2 "$PROBE"):9000
elected() { role "$C1" | grep -q '^primary' || role "$C2" | grep -q '^primary'; }
sells() { [ "$(curl -s -o /dev/null -m 10 -w '%{http_code}' -X POST "$FFE/purchase/1")" = 200 ]; }
rejoined() { role "$OLD" | grep -q "^replica http://$P-fcatalog"; }
agree() { [ "$(curl -s -m 3 "$OLD/books")" = "$(curl -s -m 3 "$NEW/books")" ]; }
wait_for 30 "a primary elected" elected
if role "$C1" | grep -q '^primary'; then old=fcatalog-1 OLD=$C1 NEW=$C2; else old=fcatalog-2 OLD=$C2 NEW=$C1; fi
wait_for 30 "the etcd store sells" sells
ok "the etcd store elected $P-$old and sells"
docker network disconnect "$NET" "$P-$old"
t0=$(date +%s%N)
wait_for 30 "purchases to succeed again" sells
t1=$(date +%s%N)
echo "partition of the primary: purchases back after $(( (t1 - t0) / 1000000 )) ms"
code=$(curl -s -o /dev/null -m 10 -w '%{http_code}' -X PATCH -H "$AUTH" -H 'Content-Type: application/json' -d '{"quantity": 5}' "$OLD/books/2")
[ "$code" = 503 ] || fail "the cut-off old primary answered a write with $code"
ok "the cut-off old primary acknowledges nothing (503)"
docker network connect "$NET" "$P-$old"
wait_for 30 "the old primary to rejoin as a replica" rejoined
wait_for 30 "both catalogs to agree" agree
ok "reconnected, it follows the new primary and holds the same books"

echo "== e2e passed in $(( $(date +%s) - started )) s"
