#!/usr/bin/env bash
# The store as a Docker Swarm stack (containers/stack.yaml), checked end to end through the
# load balancer's port (BAZAR_PORT, default 4200): search, info, purchase; the front end
# scaled to 3 and back; a rolling update (`docker service update --force`) of every
# service in turn while purchases go on (no acknowledged order lost, copies taken equal
# orders logged); the primary catalog's task killed (Swarm restarts it, the other catalog
# takes over, the restarted one rejoins in sync); the primary's volume removed while both
# catalogs are down (the empty one is not elected, nothing is lost). Makes this engine a one-node swarm only if
# it is none, and leaves the swarm again only if it made it. Removes the stack, its
# network, volumes and token secret, by name, even when it fails.
set -euo pipefail
cd "$(dirname "$0")/.."

STACK=${BAZAR_SWARM_STACK:-bazar-swarm-e2e}   # every service, network and volume starts with this
PORT=${BAZAR_PORT:-4200}
FE=http://127.0.0.1:$PORT
SERVICES="etcd memcached catalog1 catalog2 order1 order2 frontend lb"
VOLUMES="etcd catalog1 catalog2 order1 order2"
work=$(mktemp -d)
made_swarm=no made_gwbridge=no
started=$(date +%s)

# fail, ok, status, wait_for (polling every WAIT_STEP seconds)
source containers/lib.sh
WAIT_STEP=0.3
ms() { echo $(( ($(date +%s%N) - $1) / 1000000 )); }
buy() { curl -s -o /dev/null -m 10 -w '%{http_code}' -X POST "$FE/purchase/$1" || true; }
# The running containers of a service of the stack.
containers() { docker ps -q --filter "label=com.docker.swarm.service.name=${STACK}_$1" --filter status=running; }
healthy_count() {
    local n=0 c
    for c in $(containers "$1"); do
        [ "$(docker inspect -f '{{if .State.Health}}{{.State.Health.Status}}{{else}}healthy{{end}}' "$c" 2>/dev/null)" = healthy ] && n=$((n + 1))
    done
    echo "$n"
}
# Every service runs its replicas, each healthy where it has a health check.
converged() {
    local s want
    for s in $SERVICES; do
        want=1; [ "$s" = frontend ] && want=${FRONTENDS:-2}
        [ "$(healthy_count "$s")" = "$want" ] || return 1
    done
}
cluster() { curl -s -m 5 "$FE/cluster"; }
# The catalogs as the front end sees them: "url role ready in_sync" lines.
catalogs() {
    cluster | python3 -c 'import json,sys
for c in json.load(sys.stdin)["catalogs"]: print(c["url"], c.get("role"), c["ready"], c.get("in_sync"))' 2>/dev/null || true
}
healed() { # one primary, one replica, both ready and in sync
    local lines; lines=$(catalogs)
    [ "$(grep -c ' True True$' <<<"$lines")" = 2 ] && grep -q ' primary ' <<<"$lines" && grep -q ' replica ' <<<"$lines"
}
sells() { [ "$(buy 1)" = 200 ]; }
lb_answers() { [ "$(status "$FE/search/distributed%20systems")" = 200 ]; }
# The front-end tasks (HAProxy's server slots, X-Frontend-Task) that served n reads.
tasks_serving() {
    for i in $(seq 1 "$1"); do
        curl -s -o /dev/null -D - -m 5 "$FE/info/$(( i % 7 + 1 ))" | tr -d '\r' | awk -F': ' 'tolower($1)=="x-frontend-task"{print $2}'
    done | sort -u | wc -l
}
serving() { [ "$(tasks_serving 12)" = "$1" ]; }

cleanup() {
    local rc=$?
    set +e
    [ -f "$work/stop" ] || touch "$work/stop"
    if [ "$rc" != 0 ]; then
        echo "== FAILED; tasks and last log lines:"
        docker stack ps --no-trunc "$STACK" 2>&1 | head -40
        for s in $SERVICES; do echo "-- $s"; docker service logs --tail 10 "${STACK}_$s" 2>&1 | tail -10; done
    fi
    if docker stack ls --format '{{.Name}}' 2>/dev/null | grep -qx "$STACK"; then
        docker stack rm "$STACK" >/dev/null
    fi
    # Volumes can go once the stack's containers are gone; the network goes with the stack.
    local until=$(( $(date +%s) + 60 ))
    while [ -n "$(docker ps -aq --filter "label=com.docker.stack.namespace=$STACK")" ] && [ "$(date +%s)" -lt "$until" ]; do sleep 0.5; done
    for v in $VOLUMES; do docker volume rm "${STACK}_$v" >/dev/null 2>&1; done
    docker secret rm "${STACK}_bazar_token" >/dev/null 2>&1   # gone with the stack, normally
    until [ -z "$(docker network ls -q --filter "name=${STACK}_store")" ] || [ "$(date +%s)" -ge "$until" ]; do
        docker network rm "${STACK}_store" >/dev/null 2>&1 || sleep 0.5
    done
    if [ "$made_swarm" = yes ]; then
        sleep 2   # the tasks' network endpoints are released a moment after their containers
        docker swarm leave --force >/dev/null && echo "== left the swarm this test made"
        if [ "$made_gwbridge" = yes ]; then docker network rm docker_gwbridge >/dev/null 2>&1; fi
    fi
    rm -rf "$work"
    echo "== removed the stack $STACK, its network, volumes and secret"
    exit "$rc"
}
trap cleanup EXIT

echo "== images"
bash containers/build-images.sh
docker image inspect bazar-haproxy:local >/dev/null 2>&1 || fail "no bazar-haproxy:local image: apt-get install haproxy"

echo "== a swarm"
if ! python3 -c "import socket,sys; s=socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1); s.bind(('0.0.0.0', $PORT))" 2>/dev/null; then
    fail "port $PORT is taken; set BAZAR_PORT to a free one"
fi
state=$(docker info --format '{{.Swarm.LocalNodeState}}')
case "$state" in
active)
    [ "$(docker info --format '{{.Swarm.ControlAvailable}}')" = true ] || fail "this engine is a swarm worker; run the test on a manager"
    echo "this engine is a swarm manager already: it stays one" ;;
inactive)
    docker network inspect docker_gwbridge >/dev/null 2>&1 || made_gwbridge=yes
    docker swarm init --advertise-addr 127.0.0.1 >/dev/null
    made_swarm=yes
    echo "made this engine a one-node swarm (it leaves it at the end)" ;;
*) fail "this engine's swarm state is $state" ;;
esac
if docker stack ls --format '{{.Name}}' | grep -qx "$STACK"; then fail "a stack named $STACK runs already"; fi

echo "== deploy"
t0=$(date +%s%N)
# The store's token, a new one for this run: the stack makes it the Docker secret its
# services read (BAZAR_TOKEN_FILE=/run/secrets/bazar_token).
new_token "$work/bazar_token"
BAZAR_PORT=$PORT BAZAR_TOKEN_SECRET="$work/bazar_token" \
    docker stack deploy --resolve-image never -c containers/stack.yaml "$STACK" >/dev/null
wait_for 180 "every service running and healthy" converged
wait_for 60 "the store to sell through port $PORT" sells
converge_ms=$(ms "$t0")
ok "the stack converged and sells through port $PORT in $converge_ms ms"

echo "== search, info, purchase through the load balancer"
curl -s -m 5 "$FE/search/distributed%20systems" | grep -q "RPCs for Noobs" || fail search
[ "$(status "$FE/info/3")" = 200 ] || fail info
[ "$(buy 3)" = 200 ] || fail purchase
wait_for 30 "one primary and one replica in sync" healed
ok "search, info, purchase; one primary, one replica in sync"

echo "== the front end scaled to 3 and back to 2"
docker service scale -d "${STACK}_frontend=3" >/dev/null
FRONTENDS=3 wait_for 60 "3 front-end tasks healthy" converged
# HAProxy follows the tasks: each of the three serves reads (round robin over them).
wait_for 30 "the load balancer to use all 3 front ends" serving 3
docker service scale -d "${STACK}_frontend=2" >/dev/null
wait_for 60 "back to 2 front-end tasks" converged
wait_for 30 "the load balancer to drop the third" serving 2
for i in $(seq 1 30); do [ "$(status "$FE/info/$(( i % 7 + 1 ))")" = 200 ] || fail "read $i back at 2 front ends"; done
ok "3 front ends each served reads, then 2; every read through the load balancer answered"

echo "== a rolling update of every service in turn while purchases go on"
# Purchases over books 1-7 in turn, a few a second (the stock, 700 copies, lasts the run).
# Acknowledged order ids go to acked; every other answer is counted by its status.
cat > "$work/load.py" <<'PY'
import collections, json, os, sys, time, urllib.error, urllib.request
fe, work = sys.argv[1], sys.argv[2]
acked, other, i, placed = open(f"{work}/acked", "w"), collections.Counter(), 0, 0
while not os.path.exists(f"{work}/stop"):
    i += 1
    try:
        with urllib.request.urlopen(urllib.request.Request(f"{fe}/purchase/{i % 7 + 1}", method="POST"), timeout=10) as r:
            acked.write(json.load(r)["order_id"] + "\n"); acked.flush()
            placed += 1
    except urllib.error.HTTPError as e:
        other[str(e.code)] += 1
    except Exception as e:
        other[type(e).__name__] += 1
    with open(f"{work}/counts.new", "w") as f:
        f.write(f"{placed} {sum(other.values())}\n")
    os.replace(f"{work}/counts.new", f"{work}/counts")
    time.sleep(0.2)
json.dump(other, open(f"{work}/other", "w"))
PY
rm -f "$work/stop"
python3 "$work/load.py" "$FE" "$work" &
load=$!
t0=$(date +%s%N)
counts() { cat "$work/counts" 2>/dev/null || echo "0 0"; }
for s in $SERVICES; do
    t1=$(date +%s%N)
    read -r placed0 failed0 <<<"$(counts)"
    docker service update --force --quiet "${STACK}_$s" >/dev/null 2>"$work/update.err" || { cat "$work/update.err"; fail "update of $s"; }
    wait_for 120 "every service running and healthy after the update of $s" converged
    # A catalog has no health check (stack.yaml says why): the next update waits until the
    # store is whole again, one primary and one replica in sync, as an operator would.
    wait_for 60 "the store whole again after the update of $s" healed
    read -r placed1 failed1 <<<"$(counts)"
    echo "updated $s in $(ms "$t1") ms: $(( placed1 - placed0 )) orders placed, $(( failed1 - failed0 )) failed meanwhile"
done
update_ms=$(ms "$t0")
wait_for 30 "the store to sell again" sells
touch "$work/stop"
wait "$load"
placed=$(wc -l <"$work/acked")
failed=$(python3 -c 'import json,sys; print(sum(json.load(open(sys.argv[1])).values()))' "$work/other")
echo "rolling update of ${SERVICES// /, } in $update_ms ms: $placed orders placed, $failed failed ($(cat "$work/other"))"
[ "$placed" -gt 0 ] || fail "no order was placed during the rolling update"

# Every acknowledged order is in both order logs (they share their orders), and the copies
# taken from the catalog equal the orders logged.
wait_for 30 "a primary and a replica in sync" healed
logged_ids() { docker cp "$(containers "$1" | head -1)":/data/orders.csv - | tar -xO | python3 -c 'import csv,sys
for row in list(csv.reader(sys.stdin))[1:]: print(row[0])' | sort; }
agree_logs() { logged_ids order1 >"$work/log1" && logged_ids order2 >"$work/log2" && cmp -s "$work/log1" "$work/log2"; }
stock_sum() {
    local id q sum=0
    for id in 1 2 3 4 5 6 7; do
        q=$(curl -s -m 5 "$FE/info/$id" | python3 -c 'import json,sys; print(json.load(sys.stdin)["quantity"])') || return 1
        sum=$((sum + q))
    done
    echo "$sum"
}
# Both logs agree and hold one order for every copy taken (700 at the start). A purchase
# answered 503 while a catalog or an order server was replaced may have taken its copy (its
# outcome was unknown): the order servers adopt it from the catalog's journal a few seconds
# later (ARCHITECTURE.md, the purchase journal), so this is asked until it holds; one that
# never does is lost.
whole() {
    local s
    agree_logs && s=$(stock_sum) && [ $(( 700 - s )) = "$(wc -l <"$work/log1")" ]
}
wait_for 30 "both order logs to hold the same orders, one for every copy taken" whole
lost=$(sort "$work/acked" | comm -23 - "$work/log1" | wc -l)
[ "$lost" = 0 ] || fail "$lost acknowledged orders are in no order log"
logged=$(wc -l <"$work/log1")
ok "no acknowledged order lost; copies taken = orders logged = $logged"

echo "== the primary catalog's task killed"
primary=$(catalogs | awk '$2 == "primary" {print $1}' | sed -E 's|http://([^:]+):.*|\1|')
[ -n "$primary" ] || fail "no primary catalog"
old=$(containers "$primary")
docker kill "$old" >/dev/null
t0=$(date +%s%N)
wait_for 60 "purchases to succeed again (failover)" sells
failover_ms=$(ms "$t0")
restarted() { local c; c=$(containers "$primary"); [ -n "$c" ] && [ "$c" != "$old" ]; }
wait_for 90 "Swarm to restart $primary" restarted
restart_ms=$(ms "$t0")
wait_for 60 "the store healed: one primary, one replica, both in sync" healed
heal_ms=$(ms "$t0")
catalogs | sed 's/^/  /'
now=$(catalogs | awk '$2 == "primary" {print $1}' | sed -E 's|http://([^:]+):.*|\1|')
if [ "$now" = "$primary" ]; then
    took="the restarted $primary took its role back before the other catalog's election"
else
    took="$now took over as the primary; the restarted $primary follows it"
fi
echo "$took"
ok "killed $primary (the primary): purchases back in $failover_ms ms, Swarm restarted it in $restart_ms ms, healed in $heal_ms ms"

echo "== the primary catalog's volume removed and its task rescheduled, with both catalogs down"
# A whole store restarted with the primary's disk empty (a task rescheduled onto another
# node without its volume): the empty catalog must not be elected, and must not be copied
# over the other; the stock and the orders stay what they were.
primary=$(catalogs | awk '$2 == "primary" {print $1}' | sed -E 's|http://([^:]+):.*|\1|')
[ -n "$primary" ] || fail "no primary catalog"
other=catalog1; [ "$primary" = catalog1 ] && other=catalog2
before=$(stock_sum)
docker service scale -d "${STACK}_catalog1=0" "${STACK}_catalog2=0" >/dev/null
gone() { [ -z "$(containers catalog1)$(containers catalog2)" ]; }
wait_for 60 "both catalogs stopped" gone
# The stopped task's container still names the volume: remove both, as a rescheduling does.
docker ps -aq --filter "label=com.docker.swarm.service.name=${STACK}_$primary" | xargs -r docker rm -f >/dev/null
docker volume rm "${STACK}_$primary" >/dev/null || fail "cannot remove the volume of $primary"
t0=$(date +%s%N)
docker service scale -d "${STACK}_catalog1=1" "${STACK}_catalog2=1" >/dev/null
wait_for 120 "every service running and healthy with $primary's volume new and empty" converged
wait_for 90 "the store healed: one primary, one replica, both in sync" healed
wait_for 30 "the store to sell again" sells
empty_ms=$(ms "$t0")
now=$(catalogs | awk '$2 == "primary" {print $1}' | sed -E 's|http://([^:]+):.*|\1|')
[ "$now" = "$other" ] || fail "the catalog that came back empty ($primary) was elected primary"
wait_for 30 "both order logs to hold the same orders, one for every copy taken (stock was $before before)" whole
after=$(stock_sum)
logged=$(wc -l <"$work/log1")
ok "$primary came back empty: $other was elected, $primary copied it; copies taken = orders logged = $logged (stock $before before, $after after), store whole in $empty_ms ms"

echo "== figures"
echo "stack converged in $converge_ms ms"
echo "rolling update: $placed orders placed, $failed failed, none lost"
echo "killed catalog: restarted by Swarm in $restart_ms ms, purchases back in $failover_ms ms, healed in $heal_ms ms ($took)"
echo "primary's volume emptied with both catalogs down: store whole and selling in $empty_ms ms, nothing lost"
echo "== swarm e2e passed in $(( $(date +%s) - started )) s"
