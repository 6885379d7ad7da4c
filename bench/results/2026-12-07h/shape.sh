#!/bin/bash
# Issue 5's ratio with each kind of swap at larger requests (2026-12-07, twenty-second
# machine): cross-shard swaps on 4 and on 2 shards and swaps on a 1-shard cluster, rounds
# alternated; the shape is concurrency x batch. B: release folder; R: reports.
set -u
B=${B:-target/release}; R=${R:-/tmp/shape}; A=bench/results/2026-12-07a; H=bench/results/2026-12-07h
mkdir -p $R
run() { # name config conc batch extra...
  local name=$1 cfg=$2 conc=$3 batch=$4; shift 4
  $B/tally-bench --local --local-config $cfg --tallyd $B/tallyd --workloads swap "$@" \
    --members 10000 --concurrency $conc --batch $batch --duration-s 10 --warmup-s 3 \
    --out $R/$name --no-progress --no-charts > $R/$name.log 2>&1
  echo "$name rc $? $(python3 -c "import json;d=json.load(open('$R/$name/report.json'));r=d['runs'][0];print(round(r['ok_per_s']), r['latency_ms']['p99'], r['verified'], r['unknown'])" 2>&1)"
}
for i in 1 2 3; do
  run cross4-64x512-$i $A/swaps-4-shards.toml 64 512 --swap-shards cross
  run cross2-64x512-$i $H/swaps-2-shards.toml 64 512 --swap-shards cross
  run 1shard-16x512-$i $A/swaps-1-shard.toml 16 512
  run 1shard-32x256-$i $A/swaps-1-shard.toml 32 256
done
