#!/bin/bash
# Alternated: batch.in_flight_entries_max 8 (default) vs 2, build beb73a3 (+ later doc commits)
cd /work/main
B=target/release/tally-bench
for round in 1 2 3; do
  for n in 8 2; do
    $B --local --local-config bench/results/2026-12-07d/in-flight/if$n.toml --workloads redeem-uniform --concurrency 1024 --rate 55000 --batch 32 --duration-s 30 --warmup-s 10 --out /tmp/r/inf/half-if$n-$round --no-progress --no-charts 2>&1 | grep -E "latency|FAIL|unknown [1-9]" | sed "s/^/half if$n $round /"
  done
done
for round in 1; do
  for n in 8 2; do
    $B --local --local-config bench/results/2026-12-07d/in-flight/if$n.toml --workloads redeem-uniform --concurrency 128 --batch 32 --duration-s 20 --warmup-s 5 --out /tmp/r/inf/peak-if$n-$round --no-progress --no-charts 2>&1 | grep -E "ok/s|latency|FAIL|unknown [1-9]" | sed "s/^/peak if$n $round /"
  done
done
