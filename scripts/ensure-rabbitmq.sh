#!/usr/bin/env bash
# Make sure a RabbitMQ answers AMQP on the local machine (the broker of `make up` and the tests).
#
# - Nothing to do when FERRY_AMQP_URL / AMQP_URL point at another host (docker compose, CI service).
# - Installs rabbitmq-server with apt-get when it is missing (sudo only when not root), starts it
#   with `rabbitmq-server -detached`, and waits (at most RABBITMQ_WAIT seconds, default 120)
#   until the broker completes the first step of an AMQP handshake.
# - Heals a wedged local node: a RabbitMQ 3.10 node has been seen to stop answering the AMQP
#   handshake (and `rabbitmqctl stop_app` to hang) after many quorum-queue creations. When
#   the port is open but the handshake does not complete within RABBITMQ_WEDGED_AFTER
#   seconds (default 30), the node is killed, its mnesia directory (queues and messages:
#   test data on a development or CI machine) is removed, and it is started again. Set
#   FERRY_RABBITMQ_HEAL=0 to fail instead.
set -euo pipefail

WAIT=${RABBITMQ_WAIT:-120}
DEFAULT_URL="amqp://guest:guest@127.0.0.1:5672/"

log() { echo "ensure-rabbitmq: $*" >&2; }

# host and port of an amqp(s):// URL, printed as "host port".
host_port() {
  local rest=${1#*://}
  rest=${rest%%/*}
  rest=${rest##*@}
  local host port
  if [[ $rest == \[* ]]; then # [ipv6]:port
    host=${rest%%]*}
    host=${host#[}
    port=${rest##*]}
    port=${port#:}
  else
    host=${rest%%:*}
    port=${rest#"$host"}
    port=${port#:}
  fi
  [[ $1 == amqps://* ]] && : "${port:=5671}"
  echo "${host:-127.0.0.1} ${port:-5672}"
}

is_local() {
  case "$1" in
    127.0.0.1 | localhost | ::1 | 0.0.0.0) return 0 ;;
    *) return 1 ;;
  esac
}

# The settings read FERRY_AMQP_URL first, the tests AMQP_URL: if any of the URLs that are set
# is local, a local broker is needed.
HOST=127.0.0.1
PORT=5672
urls=()
[[ -n ${FERRY_AMQP_URL:-} ]] && urls+=("$FERRY_AMQP_URL")
[[ -n ${AMQP_URL:-} ]] && urls+=("$AMQP_URL")
[[ ${#urls[@]} -eq 0 ]] && urls=("$DEFAULT_URL")
need_local=0
for url in "${urls[@]}"; do
  read -r h p < <(host_port "$url")
  if is_local "$h"; then
    need_local=1
    HOST=127.0.0.1
    PORT=$p
    break
  fi
done
if [[ $need_local -eq 0 ]]; then
  log "the AMQP URL points at another host; not managing a local RabbitMQ"
  exit 0
fi

tcp_open() {
  timeout 3 bash -c "exec 3<>/dev/tcp/$HOST/$PORT" 2>/dev/null
}

# The broker answers the AMQP 0-9-1 protocol header with a Connection.Start method frame.
amqp_answers() {
  if command -v python3 >/dev/null 2>&1; then
    python3 - "$HOST" "$PORT" <<'PY' 2>/dev/null
import socket
import sys

try:
    with socket.create_connection((sys.argv[1], int(sys.argv[2])), timeout=3) as s:
        s.settimeout(5)
        s.sendall(b"AMQP\x00\x00\x09\x01")
        sys.exit(0 if s.recv(1) == b"\x01" else 1)
except OSError:
    sys.exit(1)
PY
  else
    tcp_open
  fi
}

wait_ready() {
  local deadline=$((SECONDS + WAIT))
  until amqp_answers; do
    if ((SECONDS >= deadline)); then
      log "RabbitMQ did not answer on $HOST:$PORT within ${WAIT}s"
      for f in /var/log/rabbitmq/*.log; do
        [[ -r $f ]] && { log "last lines of $f:"; tail -n 20 "$f" >&2; }
      done
      return 1
    fi
    sleep 1
  done
  # A node we just started: the listener opens late in the boot; give it a moment, then ask
  # the node itself (the CLI needs the node's Erlang cookie, so a failure is not fatal).
  if [[ ${1:-} == started ]] && command -v rabbitmq-diagnostics >/dev/null 2>&1; then
    sleep 2
    as_root timeout 30 rabbitmq-diagnostics -q check_running >/dev/null 2>&1 ||
      log "rabbitmq-diagnostics check_running failed (cookie?); the AMQP port answers, going on"
  fi
  log "RabbitMQ is up on $HOST:$PORT"
}

SUDO=()
if [[ $(id -u) -ne 0 ]] && command -v sudo >/dev/null 2>&1; then
  SUDO=(sudo -n)
fi
as_root() { "${SUDO[@]}" "$@"; }

# Kill a wedged local node and start it afresh (see the header). Every step is bounded.
heal() {
  log "RabbitMQ accepts connections on $HOST:$PORT but does not complete the AMQP handshake:"
  log "the node is wedged; killing it, removing its mnesia directory, starting it again"
  as_root pkill -9 -f 'beam.smp.*rabbitmqctl' 2>/dev/null || true
  as_root pkill -9 -u rabbitmq beam.smp 2>/dev/null || true
  local deadline=$((SECONDS + 30))
  while tcp_open && ((SECONDS < deadline)); do sleep 1; done
  as_root rm -rf /var/lib/rabbitmq/mnesia/rabbit@* 2>/dev/null || true
  as_root rabbitmq-server -detached
}

if tcp_open; then
  if [[ ${FERRY_RABBITMQ_HEAL:-1} != 0 && $PORT == 5672 ]]; then
    WAIT=${RABBITMQ_WEDGED_AFTER:-30} wait_ready 2>/dev/null || {
      export PATH="$PATH:/usr/sbin:/sbin"
      heal
      wait_ready started
    }
    exit 0
  fi
  wait_ready
  exit 0
fi

if [[ $PORT != 5672 ]]; then
  log "nothing answers on $HOST:$PORT and a local rabbitmq-server listens on 5672; start your broker"
  exit 1
fi

if ! command -v rabbitmq-server >/dev/null 2>&1 && [[ ! -x /usr/sbin/rabbitmq-server ]]; then
  if ! command -v apt-get >/dev/null 2>&1; then
    log "rabbitmq-server is not installed and there is no apt-get; install RabbitMQ (3.10+) yourself"
    exit 1
  fi
  if [[ $(id -u) -ne 0 && ${#SUDO[@]} -eq 0 ]]; then
    log "rabbitmq-server is not installed and we are neither root nor have sudo"
    exit 1
  fi
  log "installing rabbitmq-server with apt-get"
  as_root env DEBIAN_FRONTEND=noninteractive apt-get update -q
  as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends \
    rabbitmq-server
fi
export PATH="$PATH:/usr/sbin:/sbin"

# The package's post-install may already have started it.
if ! tcp_open; then
  log "starting rabbitmq-server -detached"
  as_root rabbitmq-server -detached
fi
wait_ready started
