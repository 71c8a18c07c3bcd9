#!/usr/bin/env bash
# The main job: bring everything up, run the worker and the sandbox, and pay the seed's
# scenarios (CARD 50,000 and KAKAO_PAY 30,000, plus one declined card).
source "$(dirname "$0")/lib.sh"

"$REPO/scripts/up.sh"

build_payflow
register_search_attributes "$BIN"

if ! port_open "$SANDBOX_LISTEN"; then
  say "starting the PG/push sandbox on $SANDBOX_LISTEN (books kept in $STATE/sandbox-books.jsonl)"
  start_bg sandbox "$BIN/payflow-sandbox" --books "$STATE/sandbox-books.jsonl"
  wait_for sandbox "$SANDBOX_LISTEN" 30
fi

if ! port_open "${SCHEMA_REGISTRY_LISTEN}"; then
  say "starting the dev schema registry on $SCHEMA_REGISTRY_LISTEN (stand-in for Confluent's)"
  start_bg registry "$BIN/payflow-registry" --listen "$SCHEMA_REGISTRY_LISTEN" --state "$STATE/registry.json"
  wait_for registry "$SCHEMA_REGISTRY_LISTEN" 30
fi

# Always the freshly built worker.
stop_bg worker
say "starting the worker (all services)"
PAYFLOW_HEALTH_LISTEN="$WORKER_HEALTH_LISTEN" start_bg worker "$BIN/payflow-worker"
wait_ready worker "http://$WORKER_HEALTH_LISTEN/readyz" 60 "$STATE/worker.log"

export PAYFLOW_API_KEYS="${PAYFLOW_API_KEYS:-payflow-demo-key}"
stop_bg api
say "starting the API on ${PAYFLOW_API_LISTEN:-127.0.0.1:8080}"
start_bg api "$BIN/payflow" serve
wait_for API "${PAYFLOW_API_LISTEN:-127.0.0.1:8080}" 30

say "running the scenarios"
"$BIN/payflow" demo
say "the events as the platform reads them (Confluent's AvroDeserializer through the registry)"
"$HOME/.local/share/payflow/venv/bin/python3" "$REPO/tests/py/show_events.py" \
  "$KAFKA_BOOTSTRAP_SERVERS" "$SCHEMA_REGISTRY_URL"
say "the stack keeps running: Web UI $PAYFLOW_UI_URL, API http://${PAYFLOW_API_LISTEN:-127.0.0.1:8080} (Authorization: Bearer $PAYFLOW_API_KEYS); 'make down' stops it"
