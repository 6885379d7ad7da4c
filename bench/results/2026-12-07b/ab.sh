#!/bin/bash
# Today's review mends (456d61f..9532aa6) against the build before them (7f987b2): the same
# tally-bench drives both tallyd builds, alternated; every run verified.
# OLD, NEW: folders holding a release tallyd; B: the tally-bench folder; R: reports.
set -u
B=${B:-target/release}; R=${R:-/tmp/ab}; C=bench/results/2026-12-07a
mkdir -p $R
summary() { python3 -c "import json;d=json.load(open('$1/report.json'));r=d['runs'][0];print(round(r['ok_per_s']), r['latency_ms']['p99'], r['verified'], r['unknown'])" 2>&1; }
peak() { # name tallyd-folder
  $B/tally-bench --local --local-config bench/peak.toml --tallyd $2/tallyd --workloads redeem-uniform \
    --concurrency 128 --batch 32 --duration-s 20 --warmup-s 5 --no-progress --out $R/$1 > $R/$1.log 2>&1
  echo "$1 rc $? $(summary $R/$1)"
}
cross() { # name tallyd-folder
  $B/tally-bench --local --local-config $C/swaps-4-shards.toml --tallyd $2/tallyd --workloads swap \
    --swap-shards cross --members 10000 --concurrency 128 --batch 128 --duration-s 10 --warmup-s 3 \
    --no-progress --out $R/$1 > $R/$1.log 2>&1
  echo "$1 rc $? $(summary $R/$1)"
}
if [ "${MORE:-0}" != 1 ]; then
  for i in 1 2; do
    peak peak-old-$i $OLD; peak peak-new-$i $NEW
    cross cross-old-$i $OLD; cross cross-new-$i $NEW
  done
fi
# Three more peak pairs, the new build first in each (order effects).
if [ "${MORE:-0}" = 1 ]; then
  for i in 3 4 5; do peak peak-new-$i $NEW; peak peak-old-$i $OLD; done
fi
