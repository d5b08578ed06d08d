#!/usr/bin/env bash
# run_isolation.sh - issue 22's scenario, one command:  bash bench/run_isolation.sh
#
# Uses the running local services (scripts/services.sh start), a Release build in
# build-bench/, its own database, MQ prefix and emulator accounts (removed at the end),
# and the emulator of the stack (two Duo hosts: 127.0.0.1:<port> for stage B,
# localhost:<port> for stage A). One worker of each kind with the default settings.
# bench/isolation.py drives it: B's steady traffic alone, then while A's Duo answers every
# call only after A_LATENCY_MS; then A's recovery. It prints B's p50/p99 per job type side
# by side, B's automatic import time in both phases, how fast A's jobs were answered
# with the breaker open, when A's breakers opened and closed, and lost jobs (exit 1 if
# any). Knobs (env): see bench/isolation.py (SECS, AUTH_RATE, ENROLL_RATE, MANUAL_RATE,
# A_LATENCY_MS, A_MANUAL, IMPORT_USERS, DRAIN_SECS). Run nothing else meanwhile.
set -euo pipefail

ROOT="$(cd "$(dirname "$0")/.." && pwd)"
eval "$("$ROOT/scripts/services.sh" env)"
export AMQP_URL="$DUO_MQ_ADMIN_URL"   # own prefix: the broker administrator on vhost /
BUILD="$ROOT/build-bench"
TAG="biso$$"
DB="bench_isolation_$$"
PSQL=(psql -X -q -v ON_ERROR_STOP=1)

cmake -S "$ROOT" -B "$BUILD" -DCMAKE_BUILD_TYPE=Release >/dev/null
cmake --build "$BUILD" -j2 --target duo-enroll duo-auth duo-import duoctl >/dev/null
BIN="$BUILD/bin"

export DATABASE_URL="${DUO_PG_ADMIN_URL%/*}/$DB"
export MQ_PREFIX="$TAG"
export DUO_SECRET_KEY="YmVuY2gta2V5LWJlbmNoLWtleS1iZW5jaC1rZXktMDA="
export LOG_LEVEL="${LOG_LEVEL:-warn}"
export PGOPTIONS="-c client_min_messages=warning"
export DUOCTL="$BIN/duoctl"
PIDS=()

cleanup() {
  for p in "${PIDS[@]:-}"; do [ -n "$p" ] && kill -TERM "$p" 2>/dev/null || true; done
  for p in "${PIDS[@]:-}"; do [ -n "$p" ] && wait "$p" 2>/dev/null || true; done
  "$ROOT/scripts/services.sh" mqctl list_queues -p / name 2>/dev/null | grep "^$TAG\." |
    while read -r q; do "$ROOT/scripts/services.sh" mqctl delete_queue -p / "$q" >/dev/null 2>&1 || true; done
  "${PSQL[@]}" "$DUO_PG_ADMIN_URL" -c "DROP DATABASE IF EXISTS $DB WITH (FORCE)" >/dev/null 2>&1 || true
}
trap cleanup EXIT

"${PSQL[@]}" "$DUO_PG_ADMIN_URL" -c "CREATE DATABASE $DB" >/dev/null
"$BIN/duoctl" migrate >/dev/null
for w in enroll auth import; do
  "$BIN/duo-$w" 2>>"/tmp/$TAG.$w.log" &
  PIDS+=($!)
done
sleep 1
/usr/bin/python3 "$ROOT/bench/isolation.py"
