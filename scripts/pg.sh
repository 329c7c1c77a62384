#!/usr/bin/env bash
# A throwaway PostgreSQL cluster for the test suite (sourced by scripts/test.sh; run directly
# as `scripts/pg.sh up|env` to use one by hand, `scripts/pg.sh down <dir>` to stop it).
#
# pg_up runs initdb and pg_ctl from Debian's postgresql package in a new temp dir, as an
# unprivileged user (initdb refuses root: `nobody` when run as root), listening on 127.0.0.1
# at a random free port and on a Unix socket in that dir only. Password auth over TCP
# (scram-sha-256) with a random password, so the tests can check that no error shows it.
# fsync is off: the cluster dies with the run. pg_up exports VAULTD_PG_DSN (the superuser's,
# which storage/postgres's tests use to create and drop one database per test); pg_down
# stops the cluster and removes the dir. Nothing outside the temp dir is touched.

PG_DIR=""
PG_RUN_AS=""

pg_log() { echo "scripts/pg.sh: $*" >&2; }

pg_bindir() {
  local d
  d=$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -n 1)
  [ -n "$d" ] && [ -x "$d/initdb" ] || { pg_log "initdb not found (install Debian's postgresql)"; return 1; }
  echo "$d"
}

# pg_as runs a command as the cluster's owner.
pg_as() {
  if [ -n "$PG_RUN_AS" ]; then
    runuser -u "$PG_RUN_AS" -- "$@"
  else
    "$@"
  fi
}

pg_up() {
  local bin port pw tries
  bin=$(pg_bindir) || return 1
  PG_DIR=$(mktemp -d /tmp/vaultd-pg.XXXXXX) || return 1
  if [ "$(id -u)" -eq 0 ]; then
    PG_RUN_AS=nobody
    chown nobody "$PG_DIR"
  fi
  chmod 0700 "$PG_DIR"
  pw=$(head -c 18 /dev/urandom | base64 | tr -d '/+=')
  (umask 077; printf '%s\n' "$pw" >"$PG_DIR/pwfile")
  [ -z "$PG_RUN_AS" ] || chown "$PG_RUN_AS" "$PG_DIR/pwfile"
  if ! pg_as "$bin/initdb" -D "$PG_DIR/data" -U vaultd --pwfile="$PG_DIR/pwfile" \
      --auth-local=trust --auth-host=scram-sha-256 -E UTF8 --locale=C.UTF-8 >"$PG_DIR/initdb.log" 2>&1; then
    pg_log "initdb failed:"; cat "$PG_DIR/initdb.log" >&2; return 1
  fi
  rm -f "$PG_DIR/pwfile"
  for tries in 1 2 3 4 5 6 7 8; do
    port=$((20000 + RANDOM % 40000))
    if pg_as "$bin/pg_ctl" -D "$PG_DIR/data" -l "$PG_DIR/server.log" -w -t 30 \
        -o "-p $port -k $PG_DIR -c listen_addresses=127.0.0.1 -c fsync=off -c full_page_writes=off -c synchronous_commit=off -c max_connections=300" \
        start >/dev/null 2>&1; then
      export VAULTD_PG_DSN="postgres://vaultd:$pw@127.0.0.1:$port/postgres?sslmode=disable"
      export VAULTD_PG_DIR="$PG_DIR"
      return 0
    fi
    pg_log "start on port $port failed (try $tries):"; tail -n 3 "$PG_DIR/server.log" >&2 || true
  done
  pg_log "no port worked"
  return 1
}

# pg_down stops the cluster pg_up started (or the one in dir $1) and removes its dir.
pg_down() {
  local dir=${1:-$PG_DIR} bin
  [ -n "$dir" ] && [ -d "$dir" ] || return 0
  bin=$(pg_bindir) || return 0
  if [ -f "$dir/data/postmaster.pid" ]; then
    if [ "$(id -u)" -eq 0 ]; then
      runuser -u "$(stat -c %U "$dir/data")" -- "$bin/pg_ctl" -D "$dir/data" -m immediate -w stop >/dev/null 2>&1 || true
    else
      "$bin/pg_ctl" -D "$dir/data" -m immediate -w stop >/dev/null 2>&1 || true
    fi
  fi
  rm -rf "$dir"
  [ "$dir" != "$PG_DIR" ] || { PG_DIR=""; unset VAULTD_PG_DSN VAULTD_PG_DIR; }
}

if [ "${BASH_SOURCE[0]}" = "$0" ]; then
  set -euo pipefail
  case "${1:-}" in
    up|env) pg_up; echo "export VAULTD_PG_DSN='$VAULTD_PG_DSN' VAULTD_PG_DIR='$VAULTD_PG_DIR'" ;;
    down) pg_down "${2:?usage: scripts/pg.sh down <dir>}" ;;
    *) echo "usage: scripts/pg.sh up|env|down <dir>" >&2; exit 2 ;;
  esac
fi
