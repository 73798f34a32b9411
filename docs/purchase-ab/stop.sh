#!/bin/bash
# stop the processes this store started (by pid)
D=$1
while read name pid; do kill $pid 2>/dev/null; done < $D/pids
sleep 1
while read name pid; do kill -9 $pid 2>/dev/null; done < $D/pids
rm -f $D/pids
