#!/usr/bin/env bash
# A PostgreSQL server for tally-bench's side-by-side runs: Debian's package, its own data
# folder, listening on loopback only, durable settings (fsync=on, synchronous_commit=on,
# full_page_writes=on). Not needed by CI.
#
#   bench/postgres.sh start    # install if missing, init if new, start; prints the URL
#   bench/postgres.sh stop     # stop the server started here
#   bench/postgres.sh status
#
# Settings (environment): TALLY_PG_DIR (default /tmp/tally-bench-pg), TALLY_PG_PORT (5433).
# The server runs as the `postgres` system user (PostgreSQL refuses to run as root).
set -euo pipefail

dir="${TALLY_PG_DIR:-/tmp/tally-bench-pg}"
port="${TALLY_PG_PORT:-5433}"
url="host=127.0.0.1 port=$port user=postgres dbname=tally"

# The server binaries; installs Debian's package first if $1 is "install" and none is found.
# Note: installing the package also creates (and may start) Debian's own cluster on port
# 5432; this script neither uses nor stops it (`pg_lsclusters`, `pg_ctlcluster` manage it).
bin_dir() {
  local d
  d=$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -1 || true)
  if [[ -z "$d" || ! -x "$d/initdb" ]]; then
    if [[ "${1:-}" != "install" ]]; then
      echo "PostgreSQL is not installed; run '$0 start' first" >&2
      exit 2
    fi
    echo "installing PostgreSQL (Debian package) ..." >&2
    DEBIAN_FRONTEND=noninteractive apt-get install -y postgresql >/dev/null
    d=$(ls -d /usr/lib/postgresql/*/bin | sort -V | tail -1)
  fi
  echo "$d"
}

as_postgres() {
  if [[ $(id -u) -eq 0 ]]; then runuser -u postgres -- "$@"; else "$@"; fi
}

case "${1:-}" in
  start)
    bin=$(bin_dir install)
    if [[ ! -f "$dir/PG_VERSION" ]]; then
      mkdir -p "$dir"
      [[ $(id -u) -eq 0 ]] && chown postgres:postgres "$dir"
      as_postgres "$bin/initdb" -D "$dir" --auth=trust --username=postgres >/dev/null
    fi
    as_postgres "$bin/pg_ctl" -D "$dir" -l "$dir/server.log" -w -o "\
      -c listen_addresses=127.0.0.1 -p $port -c unix_socket_directories=$dir \
      -c fsync=on -c synchronous_commit=on -c full_page_writes=on \
      -c shared_buffers=2GB -c max_connections=300 -c max_wal_size=8GB \
      -c checkpoint_timeout=15min" start >/dev/null
    as_postgres "$bin/psql" -h 127.0.0.1 -p "$port" -U postgres -d postgres -tAc \
      "SELECT 1 FROM pg_database WHERE datname = 'tally'" | grep -q 1 ||
      as_postgres "$bin/createdb" -h 127.0.0.1 -p "$port" -U postgres tally
    echo "postgres ready: $url"
    ;;
  stop)
    bin=$(bin_dir)
    as_postgres "$bin/pg_ctl" -D "$dir" -w stop -m fast
    ;;
  status)
    bin=$(bin_dir)
    as_postgres "$bin/pg_ctl" -D "$dir" status
    ;;
  *)
    echo "usage: $0 start|stop|status" >&2
    exit 2
    ;;
esac
