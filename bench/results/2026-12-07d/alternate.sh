#!/bin/bash
# Two tallyd builds alternated through the same tally-bench (issue 4, 2026-12-07): 4 rounds
# at half of peak (55,000/s open loop, 30 s after 10 s), then 2 rounds at peak (closed loop
# 128 x 32, 20 s after 5 s); redeem-uniform, 1 shard, 1 M members, bench/peak.toml.
#
#   alternate.sh OUT NAME_A TALLYD_A NAME_B TALLYD_B
#
# Reports go to OUT/{half,peak}-NAME-ROUND/. This session's series (the binaries were
# copies of target/release/tallyd built at each commit, or with the change tried):
#   alternate.sh ab        base <c795b88> new <e4a76a7>
#   alternate.sh lz4       new <e4a76a7>  lz4 <beb73a3>
#   alternate.sh ratelimit lz4 <beb73a3>  rl  <beb73a3 + a 32 MiB/s rate limiter>
set -euo pipefail
out=$1; a=$2; tallyd_a=$3; b=$4; tallyd_b=$5
cd "$(git -C "$(dirname "$0")" rev-parse --show-toplevel)"
bench=target/release/tally-bench
run() { # kind round name tallyd -- load arguments
  local kind=$1 round=$2 name=$3 tallyd=$4; shift 5
  "$bench" --local --local-config bench/peak.toml --tallyd "$tallyd" --workloads redeem-uniform \
    "$@" --out "$out/$kind-$name-$round" --no-progress --no-charts 2>&1 |
    grep -E "ok/s|latency|FAIL|unknown [1-9]" | sed "s/^/$kind $name $round /"
}
half=(--concurrency 1024 --rate 55000 --batch 32 --duration-s 30 --warmup-s 10)
peak=(--concurrency 128 --batch 32 --duration-s 20 --warmup-s 5)
for round in 1 2 3 4; do
  run half "$round" "$a" "$tallyd_a" -- "${half[@]}"
  run half "$round" "$b" "$tallyd_b" -- "${half[@]}"
done
for round in 1 2; do
  run peak "$round" "$a" "$tallyd_a" -- "${peak[@]}"
  run peak "$round" "$b" "$tallyd_b" -- "${peak[@]}"
done
