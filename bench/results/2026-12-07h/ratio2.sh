#!/bin/bash
# Issue 5's ratio with a 2-shard cluster beside the 4-shard one: cross-shard swaps on 2 and
# on 4 shards, single-shard swaps on 4 shards and on a 1-shard cluster; alternated, every
# run verified (SERIES=1); SERIES=2 adds single-shard swaps on the 2-shard cluster;
# SERIES=3 cross-shard swaps on 3 shards; SERIES=4 earns with --no-spread; SERIES=5
# each kind of swap at larger requests. B: a folder holding the release tallyd and
# tally-bench; R: where reports go. A run's workload is WORKLOAD (swap) and its request
# BATCH (128) unless the series sets them.
set -u
B=${B:-target/release}; R=${R:-/tmp/ratio2}; A=bench/results/2026-12-07a; H=bench/results/2026-12-07h
mkdir -p $R
run() { # name config conc extra...
  local name=$1 cfg=$2 conc=$3; shift 3
  $B/tally-bench --local --local-config $cfg --tallyd $B/tallyd --workloads ${WORKLOAD:-swap} "$@" \
    --members 10000 --concurrency $conc --batch ${BATCH:-128} --duration-s 10 --warmup-s 3 \
    --out $R/$name --no-progress --no-charts > $R/$name.log 2>&1
  echo "$name rc $? $(python3 -c "import json;d=json.load(open('$R/$name/report.json'));r=d['runs'][0];print(round(r['ok_per_s']), r['latency_ms']['p99'], d['runs'][0]['verified'], r['unknown'])" 2>&1)"
}
case ${SERIES:-1} in
1) # cross-shard swaps on 4 and on 2 shards; single-shard on 4 shards and on 1 shard
  for i in 1 2 3; do
    run cross4-$i $A/swaps-4-shards.toml 128 --swap-shards cross
    run cross2-$i $H/swaps-2-shards.toml 128 --swap-shards cross
    [ $i -le 2 ] && run same4-$i $A/swaps-4-shards.toml 64 --swap-shards same
    [ $i -le 2 ] && run 1shard-$i $A/swaps-1-shard.toml 64
  done ;;
2) # cross-shard and single-shard swaps on the same 2-shard cluster; a 1-shard cluster
  for i in 4 5 6; do
    run cross2-$i $H/swaps-2-shards.toml 128 --swap-shards cross
    run same2-$i $H/swaps-2-shards.toml 64 --swap-shards same
    run 1shard-$i $A/swaps-1-shard.toml 64
  done ;;
3) # cross-shard swaps on 3 shards (each node the preferred leader of one), beside 2 and 1
  for i in 7 8 9; do
    run cross3-$i $H/swaps-3-shards.toml 128 --swap-shards cross
    [ $i -le 8 ] && run cross2-$i $H/swaps-2-shards.toml 128 --swap-shards cross
    [ $i -le 8 ] && run 1shard-$i $A/swaps-1-shard.toml 64
  done ;;
4) # earns (one transfer each) with the issuance account ordinary (--no-spread): on 2 or 4
   # shards most earns are cross-shard transactions; a 1-shard cluster beside them
  for i in 1 2; do
    WORKLOAD=earn run earn4-$i $A/swaps-4-shards.toml 64 --no-spread
    WORKLOAD=earn run earn2-$i $H/swaps-2-shards.toml 64 --no-spread
    WORKLOAD=earn run earn1-$i $A/swaps-1-shard.toml 64
  done ;;
5) # larger requests, each kind at its own peak shape (concurrency x batch in the names)
  for i in 1 2 3; do
    BATCH=512 run cross4-64x512-$i $A/swaps-4-shards.toml 64 --swap-shards cross
    BATCH=512 run cross2-64x512-$i $H/swaps-2-shards.toml 64 --swap-shards cross
    BATCH=512 run 1shard-16x512-$i $A/swaps-1-shard.toml 16
    BATCH=256 run 1shard-32x256-$i $A/swaps-1-shard.toml 32
  done ;;
esac
