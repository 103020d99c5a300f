#!/usr/bin/env bash
# A local PostgreSQL server for optiloss's tests and multi-worker searches.
#   scripts/postgres.sh start   install PostgreSQL from Debian's packages if missing, create the cluster
#                               under storage/postgres (once) and start it on 127.0.0.1:$OPTILOSS_PG_PORT;
#                               when the server's user cannot reach that folder (a clone inside a folder
#                               only its owner may enter), the cluster goes to $TMPDIR/optiloss-postgres-<id>
#                               instead, one per clone, and the script says where
#   scripts/postgres.sh stop    stop it
#   scripts/postgres.sh url     print the URL of its optiloss database
# Idempotent. Role and database: optiloss / optiloss (password optiloss), local use only.
set -euo pipefail
cd "$(dirname "$0")/.."
PORT=${OPTILOSS_PG_PORT:-55432}
DATA=${OPTILOSS_PG_DATA:-$PWD/storage/postgres}
# where the cluster goes when the default folder is closed to the server's user (one per clone)
FALLBACK=${TMPDIR:-/tmp}/optiloss-postgres-$(printf %s "$PWD" | sha1sum | cut -c1-12)
if [ -z "${OPTILOSS_PG_DATA:-}" ] && [ ! -f "$DATA/PG_VERSION" ] && [ -f "$FALLBACK/PG_VERSION" ]; then
  DATA=$FALLBACK
fi
SOCKET_DIR=/tmp
URL="postgresql://optiloss:optiloss@127.0.0.1:$PORT/optiloss"

find_bin() { ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -n 1; }
as_owner() {
  if [ "$(id -u)" = 0 ]; then runuser -u postgres -- "$@"; else "$@"; fi
}

case "${1:-start}" in
  url) echo "$URL"; exit 0 ;;
  stop)
    BIN=$(find_bin)
    if [ -n "$BIN" ] && [ -f "$DATA/postmaster.pid" ]; then as_owner "$BIN/pg_ctl" -D "$DATA" -m fast -w stop
    elif [ -n "$BIN" ] && "$BIN/pg_isready" -q -h 127.0.0.1 -p "$PORT"; then
      # a server this folder did not start holds the port: stopping nothing would pass for stopping it
      echo "postgres: the server on 127.0.0.1:$PORT belongs to another folder; run scripts/postgres.sh stop there" >&2
      exit 1
    fi
    exit 0 ;;
  start) ;;
  *) echo "usage: $0 start|stop|url" >&2; exit 2 ;;
esac

BIN=$(find_bin)
if [ -z "$BIN" ]; then
  echo "postgres: installing PostgreSQL from Debian's packages"
  if [ "$(id -u)" != 0 ]; then echo "postgres: PostgreSQL is missing; install the 'postgresql' package (needs root)" >&2; exit 1; fi
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq >/dev/null
  apt-get install -y -qq postgresql >/dev/null
  BIN=$(find_bin)
fi

if [ ! -f "$DATA/PG_VERSION" ]; then
  mkdir -p "$DATA"
  if [ "$(id -u)" = 0 ]; then
    chown postgres: "$DATA"
    if ! runuser -u postgres -- test -w "$DATA"; then
      if [ -n "${OPTILOSS_PG_DATA:-}" ]; then
        echo "postgres: user postgres cannot write $DATA (a parent folder is closed); choose another OPTILOSS_PG_DATA" >&2
        exit 1
      fi
      rmdir "$DATA" 2>/dev/null || true
      echo "postgres: user postgres cannot reach $DATA (a parent folder is closed); the cluster goes to $FALLBACK"
      DATA=$FALLBACK
      mkdir -p "$DATA"
      chown postgres: "$DATA"
    fi
  fi
  chmod 700 "$DATA"
  as_owner "$BIN/initdb" -D "$DATA" -U postgres -E UTF8 --auth-local=trust --auth-host=scram-sha-256 >/dev/null
fi

if ! as_owner "$BIN/pg_ctl" -D "$DATA" status >/dev/null 2>&1; then
  if "$BIN/pg_isready" -q -h 127.0.0.1 -p "$PORT"; then
    echo "postgres: a server already listens on 127.0.0.1:$PORT; using it (set OPTILOSS_PG_PORT for another)"
  else
  as_owner "$BIN/pg_ctl" -D "$DATA" -l "$DATA/server.log" -w -t 60 \
    -o "-c listen_addresses=127.0.0.1 -p $PORT -k $SOCKET_DIR -c max_connections=200" start >/dev/null
  fi
fi

psql_admin() { as_owner "$BIN/psql" -h "$SOCKET_DIR" -p "$PORT" -U postgres -d postgres -qtAX "$@"; }
if [ "$(psql_admin -c "SELECT 1 FROM pg_roles WHERE rolname = 'optiloss'")" != 1 ]; then
  psql_admin -c "CREATE ROLE optiloss LOGIN CREATEDB PASSWORD 'optiloss'"
fi
if [ "$(psql_admin -c "SELECT 1 FROM pg_database WHERE datname = 'optiloss'")" != 1 ]; then
  psql_admin -c "CREATE DATABASE optiloss OWNER optiloss"
fi
echo "postgres: running on 127.0.0.1:$PORT ($URL)"
