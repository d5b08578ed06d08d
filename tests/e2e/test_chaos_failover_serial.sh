#!/usr/bin/env bash
# test_chaos_failover_serial.sh - a PostgreSQL failover in small: a primary and a
# synchronous streaming standby (scripts/pg-ha.sh), 400 mixed jobs through two workers of
# each kind whose DATABASE_URL names both hosts, one worker kill -9'd, and at 60 % of the
# send window the primary stopped hard (pg_ctl -m immediate) and the standby promoted;
# for the 2 s before the crash the primary's WAL sender is frozen (a standby behind), so
# commits wait for it and the test fails unless that wait is what makes answers durable.
# Fails when a job gets no final reply, a device is stored twice, a device or a
# synchronously committed job record that a reply reported is missing on the new primary,
# or anything else tests/chaos/chaos.py checks goes wrong. Runs alone: it loads the machine.
set -euo pipefail
ROOT="${DUO_SOURCE_DIR:-$(cd "$(dirname "$0")/../.." && pwd)}"
out="$(mktemp)"
trap 'rm -f "$out"' EXIT
status=0
timeout 400 "$ROOT/tests/chaos/run.sh" --jobs 400 --gen-users 1000 --kills 1 --send-secs 20 \
  --wait-secs 150 --no-mq-restart --fault-point-share 0 --pg-failover sync --standby-lag 2 >"$out" 2>&1 || status=$?
cat "$out"
grep -q '^chaos: jobs=400 replied=400 lost=0 ' "$out" || { echo "FAIL: jobs lost"; exit 1; }
grep -q ' dup_devices=0 ' "$out" || { echo "FAIL: duplicate devices"; exit 1; }
grep -q ' devices_ok=yes ' "$out" || { echo "FAIL: devices do not match the replies"; exit 1; }
grep -q ' pg_failovers=1 ' "$out" || { echo "FAIL: no failover happened"; exit 1; }
grep -q ' missing_devices=0 ' "$out" || { echo "FAIL: a reported device is not on the new primary"; exit 1; }
grep -q " standby_writes=0 " "$out" || { echo "FAIL: a worker wrote to the standby"; exit 1; }
[ "$status" -eq 0 ] || { echo "FAIL: chaos harness exited $status"; exit 1; }
echo "PASS"
