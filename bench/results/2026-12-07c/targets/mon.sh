#!/bin/bash
# per-second: disk writes completed, ms writing (vda), CPU busy %
prev=""; for i in $(seq 1 60); do
  d=$(awk '$3=="vda"{print $8, $11}' /proc/diskstats); c=$(awk '/^cpu /{print $2+$3+$4+$7+$8, $5+$6}' /proc/stat)
  echo "$(date +%H:%M:%S) $d $c"; sleep 1; done
