#!/usr/bin/env bash
# Runs the dev stack's Kafka broker (Tansu on SQLite storage) and keeps it serving with no
# person: it restarts the broker when the broker exits, and when the broker stops taking records
# (PAYFLOW_BROKER_CHECK_FAILURES probes in a row, PAYFLOW_BROKER_CHECK_SECS apart, each
# `payflow admin broker-check`): after a crash Tansu has been seen to keep its port open while
# refusing every produce until restarted. Acknowledged records a crash loses are caught by
# `payflow events audit --republish`, which the guard runs a minute after each restart. up.sh starts it; down.sh stops it before the broker.
source "$(dirname "$0")/lib.sh"

every="${PAYFLOW_BROKER_CHECK_SECS:-5}"
allowed="${PAYFLOW_BROKER_CHECK_FAILURES:-3}"
payflow="${PAYFLOW_BIN:-$BIN}/payflow"

start_broker() {
  [ -f "$STATE/tansu.log" ] && mv -f "$STATE/tansu.log" "$STATE/tansu.log.1"
  start_bg tansu "$(command -v tansu)" broker \
    --listener-url "tcp://$KAFKA_BOOTSTRAP_SERVERS" \
    --advertised-listener-url "tcp://$KAFKA_BOOTSTRAP_SERVERS" \
    --storage-engine "sqlite://tansu.db"
}

# Waits up to $2 seconds for process $1 to be gone.
gone_within() {
  local i
  for ((i = 0; i < $2 * 10; i++)); do
    kill -0 "$1" 2>/dev/null || return 0
    sleep 0.1
  done
  return 1
}

restart_broker() {
  say "broker guard: $1; restarting Tansu (its log so far: $STATE/tansu.log.1)"
  local pid
  pid="$(cat "$STATE/tansu.pid" 2>/dev/null || true)"
  if [ -n "$pid" ] && kill -0 "$pid" 2>/dev/null; then
    # A broker that is only slow gets to finish what it acknowledged: SIGKILL is what has
    # made Tansu lose records.
    kill "$pid" 2>/dev/null || true
    kill -CONT "$pid" 2>/dev/null || true
    if ! gone_within "$pid" 15; then
      kill -9 "$pid" 2>/dev/null || true
      gone_within "$pid" 15 || say "broker guard: Tansu ($pid) outlived SIGKILL; starting another"
    fi
  fi
  start_broker
  audit_due=$((SECONDS + audit_after))
}

# After a restart, once payments have had time to finish: what the broker acknowledged and
# lost is looked for, and published again with its event id, over the hour before. In the
# background and bounded, so the broker is probed meanwhile; one at a time.
audit_after="${PAYFLOW_BROKER_AUDIT_AFTER_SECS:-60}"
audit_due=""
audit_pid=""
audit_lost_events() {
  say "broker guard: auditing the events of the payments that ended in the last hour or are running"
  (
    code=0
    timeout 300 "$payflow" events audit --since 1h --republish >"$STATE/broker-audit.out" 2>&1 || code=$?
    {
      date -u +%FT%TZ
      cat "$STATE/broker-audit.out"
      echo "audit finished (exit $code)"
    } >>"$STATE/broker-audit.log"
    exit "$code"
  ) &
  audit_pid=$!
}

# The audit that ran, if it has finished: logged, and due again in a while if it failed.
audit_finished() {
  { [ -n "$audit_pid" ] && ! kill -0 "$audit_pid" 2>/dev/null; } || return 1
  if wait "$audit_pid"; then
    say "broker guard: audit done ($(grep -m 1 '^payments ended' "$STATE/broker-audit.out" || true))"
  else
    say "broker guard: the audit found events missing or failed; see $STATE/broker-audit.log (again in ${audit_after}s)"
    audit_due=$((SECONDS + audit_after))
  fi
  audit_pid=""
}

# An audit still running when the guard is stopped is stopped with it.
trap '[ -n "$audit_pid" ] && pkill -TERM -P "$audit_pid" 2>/dev/null; exit 0' TERM INT

say "broker guard: Tansu on $KAFKA_BOOTSTRAP_SERVERS, probed every ${every}s"
start_broker
failures=0
while sleep "$every"; do
  pid="$(cat "$STATE/tansu.pid" 2>/dev/null || true)"
  if [ -z "$pid" ] || ! kill -0 "$pid" 2>/dev/null; then
    restart_broker "the broker exited"
    failures=0
    continue
  fi
  # Before payflow is built only an exit is noticed.
  [ -x "$payflow" ] || continue
  audit_finished || true
  if "$payflow" admin broker-check --deadline-ms "$((every * 1000))" >/dev/null 2>&1; then
    failures=0
    if [ -n "$audit_due" ] && [ -z "$audit_pid" ] && [ "$SECONDS" -ge "$audit_due" ]; then
      audit_due=""
      audit_lost_events
    fi
  else
    failures=$((failures + 1))
    say "broker guard: the broker took no probe record ($failures of $allowed)"
    if [ "$failures" -ge "$allowed" ]; then
      restart_broker "the broker took no record in $allowed probes"
      failures=0
    fi
  fi
done
