#!/bin/bash
# start a static store from binaries in $1 on port base $2, data in $3; prints pids to $3/pids
BIN=$1; B=$2; D=$3
rm -rf $D; mkdir -p $D
export BAZAR_TOKEN=bench-token-25-0123456789abcdef BAZAR_LOG=warn BAZAR_THREADS=${BAZAR_THREADS:-64}
MC=$((B+9)); FE=$B; C1=$((B+1)); C2=$((B+2)); O1=$((B+3)); O2=$((B+4))
memcached -u root -l 127.0.0.1 -p $MC -U 0 -m 64 -t 2 >$D/mc.log 2>&1 & echo "memcached $!" >> $D/pids
BAZAR_LISTEN=127.0.0.1:$C1 BAZAR_ROLE=primary BAZAR_REPLICAS=http://127.0.0.1:$C2 BAZAR_MEMCACHED=127.0.0.1:$MC BAZAR_DATA_DIR=$D/c1 $BIN/bazar-catalog >$D/c1.log 2>&1 & echo "catalog-1 $!" >> $D/pids
BAZAR_LISTEN=127.0.0.1:$C2 BAZAR_ROLE=replica BAZAR_PRIMARY=http://127.0.0.1:$C1 BAZAR_MEMCACHED=127.0.0.1:$MC BAZAR_DATA_DIR=$D/c2 $BIN/bazar-catalog >$D/c2.log 2>&1 & echo "catalog-2 $!" >> $D/pids
BAZAR_LISTEN=127.0.0.1:$O1 BAZAR_CATALOG=http://127.0.0.1:$C1,http://127.0.0.1:$C2 BAZAR_PEERS=http://127.0.0.1:$O2 BAZAR_DATA_DIR=$D/o1 $BIN/bazar-order >$D/o1.log 2>&1 & echo "order-1 $!" >> $D/pids
BAZAR_LISTEN=127.0.0.1:$O2 BAZAR_CATALOG=http://127.0.0.1:$C2,http://127.0.0.1:$C1 BAZAR_PEERS=http://127.0.0.1:$O1 BAZAR_DATA_DIR=$D/o2 $BIN/bazar-order >$D/o2.log 2>&1 & echo "order-2 $!" >> $D/pids
BAZAR_LISTEN=127.0.0.1:$FE BAZAR_CATALOG=http://127.0.0.1:$C1,http://127.0.0.1:$C2 BAZAR_ORDER=http://127.0.0.1:$O1,http://127.0.0.1:$O2 BAZAR_MEMCACHED=127.0.0.1:$MC $BIN/bazar-frontend >$D/fe.log 2>&1 & echo "frontend $!" >> $D/pids
for i in $(seq 100); do curl -sf http://127.0.0.1:$FE/ready >/dev/null && break; sleep 0.2; done
for id in 1 2 3 4 5 6 7; do curl -sf -X PATCH -H "Authorization: Bearer $BAZAR_TOKEN" -d '{"quantity": 4000000000}' http://127.0.0.1:$C1/books/$id >/dev/null || echo "restock $id failed"; done
curl -s http://127.0.0.1:$FE/ready; echo
