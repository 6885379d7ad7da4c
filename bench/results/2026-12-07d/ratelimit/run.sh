#!/bin/bash
# Alternated A/B: lz4 (beb73a3) vs rl (beb73a3 + a RocksDB rate limiter at 32 MiB/s per node, not kept unless measured better)
cd /work/main
B=target/release/tally-bench
for round in 1 2 3 4; do
  for v in lz4 rl; do
    $B --local --local-config bench/peak.toml --tallyd /tmp/r/tallyd-$v --workloads redeem-uniform --concurrency 1024 --rate 55000 --batch 32 --duration-s 30 --warmup-s 10 --out /tmp/r/rl/half-$v-$round --no-progress --no-charts 2>&1 | grep -E "latency|sent late|FAIL|unknown [1-9]" | sed "s/^/half $v $round /"
  done
done
for round in 1 2; do
  for v in lz4 rl; do
    $B --local --local-config bench/peak.toml --tallyd /tmp/r/tallyd-$v --workloads redeem-uniform --concurrency 128 --batch 32 --duration-s 20 --warmup-s 5 --out /tmp/r/rl/peak-$v-$round --no-progress --no-charts 2>&1 | grep -E "ok/s|latency|FAIL|unknown [1-9]" | sed "s/^/peak $v $round /"
  done
done
