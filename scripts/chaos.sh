#!/usr/bin/env bash
# The fault suite at full size (`make chaos`): a few hundred payments through the real API while
# the worker, Temporal, the broker, the API and the sandbox are SIGKILLed and restarted, Redis is
# paused, PostgreSQL refuses connections, the PG fails and times out and the schema registry is
# away; then checks from the outside. Writes RELIABILITY.md; exits non-zero on any violation.
# Every part but PostgreSQL runs as a process of the run's own, on ports of its own.
source "$(dirname "$0")/lib.sh"

"$REPO/scripts/install.sh"
if ! port_open 127.0.0.1:5432 && [[ "$DATABASE_URL" == *127.0.0.1:5432* ]]; then
  "$REPO/scripts/up.sh"
fi
cd "$REPO"
build_payflow --workspace
say "running the fault suite (about 4 minutes)"
"$BIN/payflow-chaos" --report "$REPO/RELIABILITY.md" "$@"
