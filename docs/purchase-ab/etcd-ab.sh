#!/bin/bash
# Purchases through bazar-cluster (etcd, memcached, a token), builds interleaved:
#   etcd-ab.sh ROUNDS label=BINDIR ...   (the limit server is the first build's bazar-bench)
ROUNDS=$1; shift
N=$(cd "$(dirname "$0")" && pwd); FIRST=${1#*=}
for r in $(seq $ROUNDS); do
  $FIRST/bazar-bench limit --listen 127.0.0.1:18990 >/dev/null 2>&1 & L=$!; sleep 1
  echo "round $r limit $(wrk -t2 -c32 -d6s http://127.0.0.1:18990/info/1 | grep Requests/sec)"; kill $L; wait $L 2>/dev/null
  for b in "$@"; do
    label=${b%%=*}; bin=${b#*=}; D=/tmp/etcd-ab-$label; rm -rf $D
    BAZAR_DATA_DIR=$D BAZAR_LOG=warn $bin/bazar-cluster > $D.log 2>&1 & C=$!
    for i in $(seq 150); do curl -sf http://127.0.0.1:4200/ready >/dev/null && break; sleep 0.2; done
    T=$(cat $D/token)
    for id in 1 2 3 4 5 6 7; do
      for port in 9000 9001; do curl -sf -X PATCH -H "Authorization: Bearer $T" -d '{"quantity": 4000000000}' http://127.0.0.1:$port/books/$id >/dev/null && break; done
    done
    sleep 1
    for c in 16 64 256; do
      out=$(wrk -t2 -c$c -d6s --latency -s $N/post.lua http://127.0.0.1:4200)
      echo "round $r $label c=$c $(echo "$out" | grep Requests/sec) p50 $(echo "$out" | grep ' 50%' | awk '{print $2}') p99 $(echo "$out" | grep ' 99%' | awk '{print $2}') non2xx $(echo "$out" | grep Non-2xx | awk '{print $NF}')"
    done
    kill -INT $C; wait $C 2>/dev/null
    sleep 2
  done
done
