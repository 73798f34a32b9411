#!/usr/bin/env bash
# Side by side, one run, interleaved rounds: write latency (PATCH on the primary, 1 and 8
# clients) and purchases through the front end (16 clients), static roles, memcached on.
# usage: docs/ab-writes.sh ROUNDS SECS BEFORE_BIN_DIR AFTER_BIN_DIR (each a release build's
# target/release; uses the fixed ports of bazar-cluster, so nothing else may run on them)
set -u
rounds=${1:-3}; secs=${2:-6}; before=${3:?before bin dir}; after=${4:?after bin dir}
token=ab24-token-0123456789abcdef
for r in $(seq 1 "$rounds"); do
  for side in before after; do
    bin=$before; [ "$side" = after ] && bin=$after
    data=$(mktemp -d /tmp/ab24.XXXX)
    BAZAR_DATA_DIR=$data BAZAR_ETCD= BAZAR_TOKEN=$token BAZAR_LOG=warn "$bin/bazar-cluster" >"$data/cluster.log" 2>&1 &
    pid=$!
    for _ in $(seq 1 150); do
      curl -fsS http://127.0.0.1:4200/ready >/dev/null 2>&1 && curl -fsS http://127.0.0.1:9001/ready >/dev/null 2>&1 && break
      sleep 0.2
    done
    for id in 1 2 3 4 5 6 7; do
      curl -fsS -X PATCH -H "Authorization: Bearer $token" -H 'Content-Type: application/json' \
        -d '{"quantity": 1000000}' "http://127.0.0.1:9000/books/$id" >/dev/null || echo "raise $id failed"
    done
    w1=$(BAZAR_TOKEN=$token "$bin/bazar-bench" load --url http://127.0.0.1:9000 --kind write --clients 1 --duration "$secs")
    w8=$(BAZAR_TOKEN=$token "$bin/bazar-bench" load --url http://127.0.0.1:9000 --kind write --clients 8 --duration "$secs")
    p16=$(BAZAR_TOKEN=$token "$bin/bazar-bench" load --url http://127.0.0.1:4200 --kind purchase --clients 16 --duration "$secs")
    echo "round $r $side | write 1 client: $w1"
    echo "round $r $side | write 8 clients: $w8"
    echo "round $r $side | purchase 16 clients: $p16"
    kill -INT "$pid"; wait "$pid"
    rm -rf "$data"
  done
done
