#!/bin/bash
# Two tallyd builds alternated through the same tally-bench (issue 4, 2026-12-07, the
# twenty-first machine): ROUNDS rounds at half of peak (RATE/s open loop, 30 s after 10 s),
# then PEAKS rounds at peak (closed loop 128 x 32, 20 s after 5 s); redeem-uniform, 1 shard,
# 1 M members, bench/peak.toml. A `sync` before each run.
#
#   RATE=60000 alternate.sh OUT NAME_A TALLYD_A NAME_B TALLYD_B
#
# Reports go to OUT/{half,peak}-NAME-ROUND/ (2026-12-07d/alternate.sh with the rate and the
# round counts as settings).
set -euo pipefail
out=$1; a=$2; tallyd_a=$3; b=$4; tallyd_b=$5
rate=${RATE:-55000}; rounds=${ROUNDS:-4}; peaks=${PEAKS:-2}
cd "$(git -C "$(dirname "$0")" rev-parse --show-toplevel)"
bench=target/release/tally-bench
run() { # kind round name tallyd -- load arguments
  local kind=$1 round=$2 name=$3 tallyd=$4; shift 5
  sync
  "$bench" --local --local-config bench/peak.toml --tallyd "$tallyd" --workloads redeem-uniform \
    "$@" --out "$out/$kind-$name-$round" --no-progress --no-charts 2>&1 |
    grep -E "ok/s|latency|FAIL|unknown [1-9]" | sed "s/^/$kind $name $round /"
}
half=(--concurrency 1024 --rate "$rate" --batch 32 --duration-s 30 --warmup-s 10)
peak=(--concurrency 128 --batch 32 --duration-s 20 --warmup-s 5)
for round in $(seq 1 "$rounds"); do
  run half "$round" "$a" "$tallyd_a" -- "${half[@]}"
  run half "$round" "$b" "$tallyd_b" -- "${half[@]}"
done
for round in $(seq 1 "$peaks"); do
  run peak "$round" "$a" "$tallyd_a" -- "${peak[@]}"
  run peak "$round" "$b" "$tallyd_b" -- "${peak[@]}"
done
