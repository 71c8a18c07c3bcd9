#!/usr/bin/env bash
# Stops what `make demo` / `make test` started: payflow's processes, Tansu and the Temporal dev
# server. PostgreSQL and Redis keep running (other software on the machine may use them).
source "$(dirname "$0")/lib.sh"
for name in api worker noop-worker sandbox registry broker-guard tansu temporal; do stop_bg "$name"; done
