#!/bin/bash
# Every second: time, total write_bytes and CPU ticks of the postgres processes.
while true; do
  w=0; c=0
  for p in $(pgrep -u postgres); do
    if [ -r /proc/$p/io ]; then
      w=$((w + $(awk '/^write_bytes/ {print $2}' /proc/$p/io 2>/dev/null || echo 0)))
      c=$((c + $(awk '{print $14+$15}' /proc/$p/stat 2>/dev/null || echo 0)))
    fi
  done
  echo "$(date +%s) $w $c"
  sleep 1
done
