#!/usr/bin/env bash
# Best effort: make the local PostgreSQL of the tests (FERRY_TEST_POSTGRES_URL, default
# postgresql://postgres@127.0.0.1:5432/test) answer. Never fails: without PostgreSQL the
# tests marked `postgres` are skipped.
set -uo pipefail

URL=${FERRY_TEST_POSTGRES_URL:-postgresql://postgres@127.0.0.1:5432/test}
WAIT=${POSTGRES_WAIT:-30}

log() { echo "ensure-postgres: $*" >&2; }

rest=${URL#*://}
db=${rest#*/}
[[ $db == "$rest" ]] && db=""
db=${db%%\?*}
rest=${rest%%/*}
user=""
[[ $rest == *@* ]] && { user=${rest%@*}; user=${user%%:*}; }
rest=${rest##*@}
HOST=${rest%%:*}
PORT=${rest#"$HOST"}
PORT=${PORT#:}
HOST=${HOST:-127.0.0.1}
PORT=${PORT:-5432}

case "$HOST" in
  127.0.0.1 | localhost | ::1) ;;
  *)
    log "FERRY_TEST_POSTGRES_URL points at $HOST; not managing a local PostgreSQL"
    exit 0
    ;;
esac

tcp_open() { timeout 3 bash -c "exec 3<>/dev/tcp/127.0.0.1/$PORT" 2>/dev/null; }

if ! tcp_open; then
  if ! command -v pg_ctlcluster >/dev/null 2>&1 || [[ ! -d /etc/postgresql ]]; then
    log "PostgreSQL is not installed; the PostgreSQL tests will be skipped"
    exit 0
  fi
  SUDO=()
  [[ $(id -u) -ne 0 ]] && command -v sudo >/dev/null 2>&1 && SUDO=(sudo -n)
  for version in $(ls /etc/postgresql); do
    [[ -d /etc/postgresql/$version/main ]] || continue
    log "starting PostgreSQL $version/main"
    "${SUDO[@]}" pg_ctlcluster --skip-systemctl-redirect "$version" main start ||
      log "pg_ctlcluster $version main start failed"
  done
  deadline=$((SECONDS + WAIT))
  until tcp_open; do
    if ((SECONDS >= deadline)); then
      log "PostgreSQL does not answer on 127.0.0.1:$PORT; the PostgreSQL tests will be skipped"
      exit 0
    fi
    sleep 1
  done
fi
log "PostgreSQL is up on 127.0.0.1:$PORT"

# A fresh cluster has no test database yet: create it when we can (never fatal).
if [[ -n $db ]] && command -v psql >/dev/null 2>&1; then
  export PGCONNECT_TIMEOUT=5
  args=(-h 127.0.0.1 -p "$PORT" ${user:+-U "$user"})
  exists=$(psql "${args[@]}" -d postgres -Atqc "SELECT 1 FROM pg_database WHERE datname = '$db'" \
    </dev/null 2>/dev/null)
  if [[ $? -eq 0 && -z $exists ]]; then
    if createdb "${args[@]}" "$db" </dev/null 2>/dev/null; then
      log "created database $db"
    else
      log "could not create database $db"
    fi
  fi
fi
exit 0
