#!/usr/bin/env bash
# make bench: brings the stack up like `make demo` (release build), then runs the standard set
# and writes the results into BENCHMARKS.md (between the markers; the analysis stays).
#
#   sequential   concurrency 1, 200 payments
#   throughput   concurrency 32 and 128, 2,000 payments each
#   ceiling      the same three on no-op activities (payflow-worker --noop)
#   each real run with PG latency 0 ms and 200 ms
#
# The c32 run and its no-op ceiling alternate, BENCH_ROUNDS times (3 by default), each on a fresh
# dev server: the machine's speed drifts between runs by more than the gap being measured, and
# alternating spreads the drift over both sides of the comparison.
#
# BENCH_SCALE=0.1 runs a tenth of the payments (a quick look); BENCH_RUNS picks runs by name.
#
# The runs use a Temporal dev server of their own (port 17233, a fresh database each time) and
# their own worker, API and sandbox (ports 18080, 18090), so results do not depend on what a
# demo stack has accumulated, and a running demo stack is left alone. PostgreSQL, Redis and
# Kafka are shared with it.
REPO_DIR="$(cd "$(dirname "$0")/.." && pwd)"
export PAYFLOW_STATE_DIR="$REPO_DIR/.run/bench"
export TEMPORAL_ADDRESS=127.0.0.1:17233 TEMPORAL_UI_PORT=18233
export SANDBOX_LISTEN=127.0.0.1:18090 PAYFLOW_API_LISTEN=127.0.0.1:18080
export PAYFLOW_METRICS_LISTEN="" PAYFLOW_CODEC_ENDPOINT=""
# Its events go to topics of its own (bench.c4ang.*), not the demo stack's.
export KAFKA_TOPIC_PREFIX="${KAFKA_TOPIC_PREFIX:-bench.}"
source "$(dirname "$0")/lib.sh"

SERVICES=(api worker noop-worker sandbox temporal)
# A broker this script brings up (none was serving) is stopped at the end too, the guard before
# the broker it would otherwise restart; a demo stack's broker is left alone.
port_open "$KAFKA_BOOTSTRAP_SERVERS" || SERVICES+=(broker-guard tansu)
trap 'for name in "${SERVICES[@]}"; do stop_bg "$name"; done' EXIT
cd "$REPO"
build_payflow --release
REL="$CARGO_TARGET_DIR/release"

# The schema registry is shared like Kafka: the dev stack's if it runs, else one of the bench's.
if ! port_open "$SCHEMA_REGISTRY_LISTEN"; then
  SERVICES+=(registry)
  start_bg registry "$REL/payflow-registry" --listen "$SCHEMA_REGISTRY_LISTEN" --state "$STATE/registry.json"
  wait_for registry "$SCHEMA_REGISTRY_LISTEN" 30
fi

# Every run gets a dev server on a fresh database and freshly started payflow processes: a run
# must not pay for the history, visibility rows and queued tasks the previous run left behind
# (measured: the no-op ceiling at c32 fell from 35/s to 25-28/s after 1,000-3,000 earlier payments).
fresh_stack() {
  local name
  for name in "${SERVICES[@]}"; do
    case "$name" in registry | broker-guard | tansu) ;; *) stop_bg "$name" 2>/dev/null ;; esac
  done
  rm -f "$STATE"/temporal.db* "$STATE"/worker.log "$STATE"/noop-worker.log
  "$REPO/scripts/up.sh" 2>/dev/null
  register_search_attributes "$REL"
  start_bg sandbox "$REL/payflow-sandbox"
  wait_for sandbox "$SANDBOX_LISTEN" 30
  PAYFLOW_HEALTH_LISTEN=127.0.0.1:18465 start_bg worker "$REL/payflow-worker"
  PAYFLOW_HEALTH_LISTEN=127.0.0.1:18466 start_bg noop-worker "$REL/payflow-worker" --noop \
    --task-queue-prefix noop- --metrics-listen ""
  start_bg api "$REL/payflow" serve
  wait_ready API "http://$PAYFLOW_API_LISTEN/readyz" 60 "$STATE/api.log"
  wait_ready worker http://127.0.0.1:18465/readyz 60 "$STATE/worker.log"
  wait_ready "no-op worker" http://127.0.0.1:18466/readyz 60 "$STATE/noop-worker.log"
  "$REL/payflow" products seed >/dev/null
  # A short warm-up, so connection pools and caches are not part of the run.
  "$REL/payflow" bench --api-url "http://$PAYFLOW_API_LISTEN" --payments 20 --concurrency 4 --pg-latency-ms 0 >/dev/null
}

scale="${BENCH_SCALE:-1}"
n() { awk -v n="$1" -v s="$scale" 'BEGIN { v = int(n * s); print (v < 10 ? 10 : v) }'; }
out="$STATE/results"
rm -rf "$out"; mkdir -p "$out"

RUN_ORDER=()
# run NAME [ROUND] ARGS...: one run on a fresh stack; rounds after the first are labelled
# "NAME #ROUND".
run() {
  local name="$1" label="$1" file="$1"; shift
  if [[ "${1:-}" =~ ^[0-9]+$ ]]; then
    [ "$1" -gt 1 ] && label="$name #$1" file="$name.$1"
    shift
  fi
  RUN_ORDER+=("$file")
  if [ -n "${BENCH_RUNS:-}" ] && ! grep -qw "$name" <<<"$BENCH_RUNS"; then return 0; fi
  fresh_stack
  say "bench $label: $*"
  "$REL/payflow" bench --label "$label" --api-url "http://$PAYFLOW_API_LISTEN" "$@" \
    --cpu-state "$STATE" --json >"$out/$file.json"
  "$REL/payflow" bench-report "$out/$file.json" >&2
}

run seq-pg0      --payments "$(n 200)"  --concurrency 1   --pg-latency-ms 0
for round in $(seq 1 "${BENCH_ROUNDS:-3}"); do
  run c32-pg0  "$round" --payments "$(n 2000)" --concurrency 32 --pg-latency-ms 0
  run c32-noop "$round" --payments "$(n 2000)" --concurrency 32 --noop
done
run c128-pg0     --payments "$(n 2000)" --concurrency 128 --pg-latency-ms 0
run c128-noop    --payments "$(n 2000)" --concurrency 128 --noop
run seq-noop     --payments "$(n 200)"  --concurrency 1   --noop
run seq-pg200    --payments "$(n 200)"  --concurrency 1   --pg-latency-ms 200
run c32-pg200    --payments "$(n 2000)" --concurrency 32  --pg-latency-ms 200
run c128-pg200   --payments "$(n 2000)" --concurrency 128 --pg-latency-ms 200
curl -s -X POST "$PG_BASE_URL/sandbox/config" -H 'content-type: application/json' -d '{"latencyMs":0}' >/dev/null

say "writing BENCHMARKS.md"
files=()
for name in "${RUN_ORDER[@]}"; do [ -f "$out/$name.json" ] && files+=("$out/$name.json"); done
(cd "$REPO" && "$REL/payflow" bench-report --write "$REPO/BENCHMARKS.md" "${files[@]}")
say "done: BENCHMARKS.md (raw JSON in $out)"
