#!/bin/bash
# Run from the repository after `cargo build --release`; needs wrk and memcached. Ports 38100-38108.
# Tracing on vs off, one run: one store (primary, replica, two order servers, memcached),
# three front ends over it: 38105 with BAZAR_TRACE_SAMPLE=1 (the default), 38106 with 0,
# 38108 with 0.01. A purchase through a front end with tracing off carries no context, and
# the back ends start no trace for a service's call, so 38106's purchases are untraced
# end to end. GET /info/1 (cached: near-cache hits) and POST /purchase/1 with wrk, each
# front end in turn, the order rotated every round, 4 s each. Summary: the medians.
set -u
B=${B:-$(pwd)/target/release}
OUT=${OUT:-/tmp/bazar-trace-cost}; D=$OUT/data; rm -rf $D; mkdir -p $D
PIDS=()
start() { local name=$1; shift; env "$@" $B/$name > $D/$name-$RANDOM.log 2>&1 & PIDS+=($!); }
memcached -u nobody -p 38107 -l 127.0.0.1 -U 0 -m 64 > $D/memcached.log 2>&1 & PIDS+=($!)
C="BAZAR_CATALOG=http://127.0.0.1:38100,http://127.0.0.1:38101"
start bazar-catalog BAZAR_LISTEN=127.0.0.1:38100 BAZAR_ROLE=primary BAZAR_REPLICAS=http://127.0.0.1:38101 BAZAR_DATA_DIR=$D/c1 BAZAR_MEMCACHED=127.0.0.1:38107
start bazar-catalog BAZAR_LISTEN=127.0.0.1:38101 BAZAR_ROLE=replica BAZAR_PRIMARY=http://127.0.0.1:38100 BAZAR_DATA_DIR=$D/c2 BAZAR_MEMCACHED=127.0.0.1:38107
start bazar-order BAZAR_LISTEN=127.0.0.1:38102 $C BAZAR_PEERS=http://127.0.0.1:38103 BAZAR_DATA_DIR=$D/o1
start bazar-order BAZAR_LISTEN=127.0.0.1:38103 $C BAZAR_PEERS=http://127.0.0.1:38102 BAZAR_DATA_DIR=$D/o2
FE="$C BAZAR_ORDER=http://127.0.0.1:38102,http://127.0.0.1:38103 BAZAR_MEMCACHED=127.0.0.1:38107"
start bazar-frontend BAZAR_LISTEN=127.0.0.1:38105 BAZAR_TRACE_SAMPLE=1 $FE
start bazar-frontend BAZAR_LISTEN=127.0.0.1:38106 BAZAR_TRACE_SAMPLE=0 $FE
start bazar-frontend BAZAR_LISTEN=127.0.0.1:38108 BAZAR_TRACE_SAMPLE=0.01 $FE
echo "pids: ${PIDS[*]}" > $OUT/pids
for p in 38100 38101 38102 38103 38108 38105 38106; do
  for i in $(seq 100); do curl -sf http://127.0.0.1:$p/ready > /dev/null && break; sleep 0.2; done
done
sleep 2
curl -s -X PATCH -d '{"quantity": 1000000}' http://127.0.0.1:38100/books/1 > /dev/null
cat > $OUT/post.lua <<'LUA'
wrk.method = "POST"
LUA
for p in 38108 38105 38106; do curl -s http://127.0.0.1:$p/info/1 > /dev/null; curl -s -X POST http://127.0.0.1:$p/purchase/1 >/dev/null; done
# A few purchases at rest, each with its own traceparent, their traces kept.
for i in 1 2 3 4 5 6; do
  t=$(head -c 16 /dev/urandom | od -An -tx1 | tr -d ' \n')
  curl -s -o /dev/null -X POST -H "traceparent: 00-$t-00f067aa0ba902b7-01" http://127.0.0.1:38105/purchase/1
  sleep 0.3
  curl -s http://127.0.0.1:38105/traces/$t > $OUT/purchase-$i.json
done
curl -s -D- -o /dev/null http://127.0.0.1:38105/info/1 | grep -i -E "x-cache|traceresponse"
curl -s -D- -o /dev/null http://127.0.0.1:38106/info/1 | grep -i -E "x-cache|traceresponse"
sleep 1; for p in 38108 38105 38106; do curl -s -D- -o /dev/null http://127.0.0.1:$p/info/1 | grep -i -E "x-cache"; done
# Interleaved, the order swapped each round so that a drift of the machine's load
# favours neither.
for round in 1 2 3 4 5 6 7 8 9; do
  case $((round % 3)) in 1) order="38105 38106 38108";; 2) order="38106 38108 38105";; 0) order="38108 38105 38106";; esac
  for p in $order; do
    echo "== round $round info port $p"; wrk -t2 -c32 -d4s --latency http://127.0.0.1:$p/info/1 | grep -E "Requests/sec|  50%|  99%"
  done
done
for round in 1 2 3 4 5 6; do
  case $((round % 3)) in 1) order="38105 38106 38108";; 2) order="38106 38108 38105";; 0) order="38108 38105 38106";; esac
  for p in $order; do
    echo "== round $round purchase port $p"; wrk -t2 -c8 -d4s --latency -s $OUT/post.lua http://127.0.0.1:$p/purchase/1 | grep -E "Requests/sec|  50%|  99%|Non-2xx"
  done
done
for p in 38108 38105 38106 38100 38102; do echo "== $p"; curl -s http://127.0.0.1:$p/metrics | grep -E "^bazar_spans"; done
curl -s "http://127.0.0.1:38105/traces?limit=200" > $OUT/traces.json
for pid in "${PIDS[@]}"; do kill $pid; done
wait
