#!/usr/bin/env bash
# Brings up what payflow runs on, installing what is missing: PostgreSQL (database `payflow`),
# Redis, the Temporal dev server (SQLite file, Web UI) and Tansu (Kafka). payflow's search
# attributes are registered by `payflow admin search-attributes` (demo, test and bench run it
# once they have built payflow), from the one list in workflows/src/search.rs.
# Safe to run again: anything already up is left alone.
source "$(dirname "$0")/lib.sh"

"$REPO/scripts/install.sh"

# --- PostgreSQL -------------------------------------------------------------------------------
if ! port_open 127.0.0.1:5432; then
  say "starting PostgreSQL"
  if command -v pg_ctlcluster >/dev/null; then
    version="$(ls /etc/postgresql | sort -V | tail -n1)"
    as_root pg_ctlcluster --skip-systemctl-redirect "$version" main start
  else
    as_root service postgresql start
  fi
  wait_for PostgreSQL 127.0.0.1:5432 30
fi
admin_url="${DATABASE_URL%/*}/postgres"
if ! psql "$admin_url" -qtAc 'SELECT 1' >/dev/null 2>&1; then
  say "giving the postgres role the password from DATABASE_URL"
  password="$(sed -E 's#^[a-z]+://[^:]+:([^@]*)@.*#\1#' <<<"$DATABASE_URL")"
  as_root su postgres -c "psql -qc \"ALTER USER postgres PASSWORD '$password'\"" >/dev/null
fi
db="${DATABASE_URL##*/}"; db="${db%%\?*}"
if [ "$(psql "$admin_url" -qtAc "SELECT 1 FROM pg_database WHERE datname = '$db'")" != 1 ]; then
  say "creating database $db"
  psql "$admin_url" -qc "CREATE DATABASE $db" >/dev/null
fi

# --- Redis ------------------------------------------------------------------------------------
if ! redis-cli -u "$REDIS_URL" ping >/dev/null 2>&1; then
  say "starting Redis (append-only file: a restart keeps the stock reservations)"
  redis-server --daemonize yes --bind 127.0.0.1 --port 6379 --save "" \
    --appendonly yes --appendfsync everysec \
    --logfile "$STATE/redis.log" --dir "$STATE"
  wait_for Redis 127.0.0.1:6379 30
elif [ "$(redis-cli -u "$REDIS_URL" config get appendonly 2>/dev/null | tail -1)" != "yes" ]; then
  say "note: the Redis at $REDIS_URL keeps no append-only file; a restart of it loses stock reservations"
fi

# --- Temporal dev server ----------------------------------------------------------------------
if ! port_open "$TEMPORAL_ADDRESS"; then
  say "starting the Temporal dev server (Web UI on :$TEMPORAL_UI_PORT)"
  args=(server start-dev --ip "${TEMPORAL_ADDRESS%:*}" --port "${TEMPORAL_ADDRESS##*:}"
        --ui-port "$TEMPORAL_UI_PORT" --db-filename "$STATE/temporal.db"
        --sqlite-pragma journal_mode=wal --sqlite-pragma "synchronous=${PAYFLOW_DEV_SQLITE_SYNC:-off}"
        --log-level warn --ui-disable-news-fetch)
  # SQLite in WAL mode without fsync (PAYFLOW_DEV_SQLITE_SYNC=normal to fsync at checkpoints):
  # a crashed process loses nothing, a crashed OS may lose the dev server's recent state; it is
  # a local development store (production runs a Temporal cluster). Measured in BENCHMARKS.md.
  # The dev server has one history shard, and its queue readers default to 20 reads a second per
  # shard: every workflow and activity task then waits ~45 ms to be dispatched. A production
  # cluster spreads that over hundreds of shards; here the ceiling is raised instead (it costs
  # nothing when idle). One task queue partition avoids forwarding between partitions (10/s).
  for dc in history.transferProcessorMaxPollRPS=1000 history.timerProcessorMaxPollRPS=1000 \
            history.visibilityProcessorMaxPollRPS=1000 \
            matching.numTaskqueueReadPartitions=1 matching.numTaskqueueWritePartitions=1; do
    args+=(--dynamic-config-value "$dc")
  done
  if [ -n "${PAYFLOW_CODEC_ENDPOINT:-}" ]; then args+=(--ui-codec-endpoint "$PAYFLOW_CODEC_ENDPOINT"); fi
  start_bg temporal "$(command -v temporal)" "${args[@]}"
  wait_for Temporal "$TEMPORAL_ADDRESS" 60
fi
for ((i = 0; ; i++)); do
  temporal operator cluster health --address "$TEMPORAL_ADDRESS" >/dev/null 2>&1 && break
  [ "$i" -lt 150 ] || die "the Temporal server at $TEMPORAL_ADDRESS is not serving after 30s (log: $STATE/temporal.log)"
  sleep 0.2
done

# --- Kafka (Tansu) ----------------------------------------------------------------------------
if ! port_open "$KAFKA_BOOTSTRAP_SERVERS"; then
  say "starting Tansu (Kafka protocol, SQLite storage) under its guard (scripts/broker-guard.sh)"
  start_bg broker-guard "$REPO/scripts/broker-guard.sh"
  wait_for Tansu "$KAFKA_BOOTSTRAP_SERVERS" 30
fi

say "infrastructure up: PostgreSQL, Redis, Temporal ($TEMPORAL_ADDRESS, UI $PAYFLOW_UI_URL), Kafka ($KAFKA_BOOTSTRAP_SERVERS)"
