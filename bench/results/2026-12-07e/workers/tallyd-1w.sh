#!/bin/sh
# tallyd with one tokio worker thread (tokio reads TOKIO_WORKER_THREADS).
TOKIO_WORKER_THREADS=1 exec /tmp/w/tallyd "$@"
