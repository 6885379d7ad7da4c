#!/bin/bash
# Issue 5's ratio on today's build: cross-shard swaps (4 shards) vs single-shard swaps on the
# same cluster and on a 1-shard cluster; alternated, every run verified.
set -u
# B: a folder holding the release tallyd and tally-bench; R: where reports go.
B=${B:-target/release}; R=${R:-/tmp/ratio}; C=bench/results/2026-12-07a
run() { # name config conc extra...
  local name=$1 cfg=$2 conc=$3; shift 3
  $B/tally-bench --local --local-config $C/$cfg --tallyd $B/tallyd --workloads swap "$@" \
    --members 10000 --concurrency $conc --batch 128 --duration-s 10 --warmup-s 3 --out $R/$name \
    > $R/$name.log 2>&1
  echo "$name rc $? $(python3 -c "import json;d=json.load(open('$R/$name/report.json'));r=d['runs'][0];print(round(r['ok_per_s']), r['latency_ms']['p99'], d['runs'][0]['verified'], r['unknown'])" 2>&1)"
}
for i in 1 2 3; do
  run cross-$i swaps-4-shards.toml 128 --swap-shards cross
  [ $i -le 2 ] && run same-$i swaps-4-shards.toml 64 --swap-shards same
  [ $i -le 2 ] && run 1shard-$i swaps-1-shard.toml 64
done
