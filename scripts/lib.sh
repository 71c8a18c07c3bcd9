# Shared helpers for payflow's scripts. Source it; do not run it.
# shellcheck shell=bash

set -euo pipefail

REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
STATE="${PAYFLOW_STATE_DIR:-$REPO/.run}"
mkdir -p "$STATE"

export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/payflow/target}"
export PATH="$HOME/.cargo/bin:$HOME/.local/bin:$HOME/.local/share/payflow/venv/bin:$PATH"

# Where everything listens (override with the same variables the binaries read). The defaults
# are read from common/src/config.rs (`defaults`), the one list the binaries, the tests and
# these scripts share.
default_address() {
  local value
  value="$(sed -n "s/^ *pub const $1: &str = \"\(.*\)\";/\1/p" "$REPO/common/src/config.rs")"
  [ -n "$value" ] || { printf 'error: no default %s in common/src/config.rs\n' "$1" >&2; exit 1; }
  printf '%s' "$value"
}
export TEMPORAL_ADDRESS="${TEMPORAL_ADDRESS:-$(default_address TEMPORAL_ADDRESS)}"
export TEMPORAL_UI_PORT="${TEMPORAL_UI_PORT:-8233}"
export DATABASE_URL="${DATABASE_URL:-$(default_address DATABASE_URL)}"
export REDIS_URL="${REDIS_URL:-$(default_address REDIS_URL)}"
export KAFKA_BOOTSTRAP_SERVERS="${KAFKA_BOOTSTRAP_SERVERS:-$(default_address KAFKA_BOOTSTRAP_SERVERS)}"
sandbox_url="$(default_address SANDBOX_URL)"
export SANDBOX_LISTEN="${SANDBOX_LISTEN:-${sandbox_url#http://}}"
export PG_BASE_URL="${PG_BASE_URL:-http://$SANDBOX_LISTEN}"
export PUSH_BASE_URL="${PUSH_BASE_URL:-http://$SANDBOX_LISTEN}"
# The sandbox's test key, only when the PG is the project's sandbox: a real PG's key comes
# from the environment, and the worker refuses to start without one.
if [ "$PG_BASE_URL" = "http://$SANDBOX_LISTEN" ]; then
  export PG_SECRET_KEY="${PG_SECRET_KEY:-test_sk_payflow}"
fi
registry_url="$(default_address SCHEMA_REGISTRY_URL)"
export SCHEMA_REGISTRY_LISTEN="${SCHEMA_REGISTRY_LISTEN:-${registry_url#http://}}"
export SCHEMA_REGISTRY_URL="${SCHEMA_REGISTRY_URL:-http://$SCHEMA_REGISTRY_LISTEN}"
export PAYFLOW_UI_URL="${PAYFLOW_UI_URL:-http://localhost:$TEMPORAL_UI_PORT}"
# The worker's /healthz and /readyz (what it waits for, what is degraded).
WORKER_HEALTH_LISTEN="${WORKER_HEALTH_LISTEN:-127.0.0.1:9465}"

# The dev stack's secrets: an API key, and a payload encryption key made once per checkout.
export PAYFLOW_API_KEYS="${PAYFLOW_API_KEYS:-payflow-demo-key}"
if [ -z "${PAYFLOW_CODEC_KEYS:-}" ]; then
  if [ ! -s "$STATE/codec-keys" ]; then
    (umask 077; printf 'dev1:%s\n' "$(head -c 32 /dev/urandom | base64 | tr -d '\n')" >"$STATE/codec-keys")
  fi
  PAYFLOW_CODEC_KEYS="$(cat "$STATE/codec-keys")"
  export PAYFLOW_CODEC_KEYS
fi
# The Web UI decodes payloads through the API's codec server: a capability URL holding a
# decode-only codec token (made once per checkout), never an API key.
if [ -z "${PAYFLOW_CODEC_TOKENS:-}" ]; then
  if [ ! -s "$STATE/codec-token" ]; then
    (umask 077; head -c 24 /dev/urandom | base64 | tr '+/' '-_' | tr -d '=\n' >"$STATE/codec-token")
  fi
  PAYFLOW_CODEC_TOKENS="$(cat "$STATE/codec-token")"
  export PAYFLOW_CODEC_TOKENS
fi
export PAYFLOW_CODEC_ENDPOINT="${PAYFLOW_CODEC_ENDPOINT:-http://127.0.0.1:8080/codec/${PAYFLOW_CODEC_TOKENS%%,*}}"

BIN="$CARGO_TARGET_DIR/debug"

say() { printf '\033[1m==> %s\033[0m\n' "$*" >&2; }
die() { printf 'error: %s\n' "$*" >&2; exit 1; }

# as_root CMD...: run as root (directly, or with sudo).
as_root() {
  if [ "$(id -u)" -eq 0 ]; then "$@"; else sudo "$@"; fi
}

# port_open HOST:PORT
port_open() {
  local host="${1%:*}" port="${1##*:}"
  (exec 3<>"/dev/tcp/$host/$port") 2>/dev/null
}

# wait_for NAME HOST:PORT [SECONDS]
wait_for() {
  local name="$1" addr="$2" secs="${3:-60}" i
  for ((i = 0; i < secs * 10; i++)); do
    port_open "$addr" && return 0
    sleep 0.1
  done
  die "$name did not come up on $addr within ${secs}s (logs in $STATE)"
}

# wait_ready NAME URL [SECONDS] [LOG]: wait until URL answers 2xx (a health endpoint); when the
# wait runs out, show the end of LOG and fail, naming what did not come up.
wait_ready() {
  local name="$1" url="$2" secs="${3:-60}" log="${4:-}" i
  for ((i = 0; i < secs * 5; i++)); do
    curl -fsS -o /dev/null --max-time 1 "$url" 2>/dev/null && return 0
    sleep 0.2
  done
  if [ -n "$log" ] && [ -f "$log" ]; then tail -n 20 "$log" >&2; fi
  die "$name was not ready at $url within ${secs}s${log:+ (log: $log)}"
}

# build_payflow [--release]: build payflow's binaries, saying so (a first build takes minutes).
build_payflow() {
  local profile=debug
  [ "${1:-}" = --release ] && profile=release
  if [ -x "$CARGO_TARGET_DIR/$profile/payflow" ]; then
    say "building payflow ($profile)"
  else
    say "building payflow ($profile) for the first time: about 10 minutes on 2 cores, then seconds"
  fi
  (cd "$REPO" && cargo build --quiet --bins "$@")
}

# register_search_attributes BINDIR: payflow's search attributes on the Temporal namespace, from
# the one list in workflows/src/search.rs (idempotent).
register_search_attributes() {
  "$1/payflow" admin search-attributes >/dev/null
}

# start_bg NAME CMD...: start a background process, remember its pid, log to $STATE/NAME.log.
start_bg() {
  local name="$1"; shift
  (
    cd "$STATE" || exit 1
    # Only the process itself goes to the background, with no descriptor of ours left open.
    nohup "$@" >"$STATE/$name.log" 2>&1 </dev/null &
    echo $! >"$STATE/$name.pid"
  )
}

# stop_bg NAME: stop a process started by start_bg.
stop_bg() {
  local name="$1" pidfile="$STATE/$1.pid" pid i
  [ -f "$pidfile" ] || return 0
  pid="$(cat "$pidfile")"
  if kill -0 "$pid" 2>/dev/null; then
    kill "$pid" 2>/dev/null || true
    for ((i = 0; i < 100; i++)); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
    kill -9 "$pid" 2>/dev/null || true
    say "stopped $name"
  fi
  rm -f "$pidfile"
}
