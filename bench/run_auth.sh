#!/usr/bin/env bash
# run_auth.sh - the authentication worker benchmark in one command (see bench/README.md).
# Builds an optimised tree (build-bench-auth, or BENCH_BUILD), prepares a private database, stage, emulator
# account with BENCH_USERS users and their devices, and MQ prefix on the local services
# of scripts/services.sh, runs bench_auth (held pushes, then the fast path next to
# raw_roundtrip), and removes what it made. Loopback only; every phase is time-bounded.
#   bench/run_auth.sh [RUNS [held|fast|all|raw [N,N,..]]]
#   (default: 3 runs per figure, all phases, N = 500,1000,2000; medians are printed;
#   raw = raw_roundtrip alone, 20,000 messages, with the client's own CPU per message)
# BASE_REV=<rev> adds that revision's worker as a "before" column in the same run;
# BENCH_BUILD picks the build folder; BENCH_ATTACH runs a profiler on the worker during
# one fast-path phase (bench/README.md, "Where a fast-path job's time goes").
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
RUNS=${1:-3}
WHAT=${2:-all}
NS=${3:-500,1000,2000}
BUILD=${BENCH_BUILD:-$ROOT/build-bench-auth}
eval "$("$ROOT/scripts/services.sh" env)"
export AMQP_URL="$DUO_MQ_ADMIN_URL"   # own prefixes: the broker administrator on vhost /
cmake -S "$ROOT" -B "$BUILD" -DCMAKE_BUILD_TYPE=Release -DDUO_SANITIZE=OFF >/dev/null
cmake --build "$BUILD" -j2 --target duo-auth duoctl bench_auth raw_roundtrip >/dev/null
# BASE_REV=<git rev>: that revision's duo-auth (git archive, Release build) is measured
# too, alternately with this tree's in every run, as a "before" column. It runs on this
# tree's database schema, so the revision must share it.
if [ -n "${BASE_REV:-}" ]; then
  BASE_DIR=${TMPDIR:-/tmp}/bench-auth-base-$(git -C "$ROOT" rev-parse --short "$BASE_REV^{commit}")
  if [ ! -x "$BASE_DIR/build/bin/duo-auth" ]; then   # kept between runs: a revision is fixed
    rm -rf "$BASE_DIR"; mkdir -p "$BASE_DIR"
    git -C "$ROOT" archive "$BASE_REV" | tar -x -C "$BASE_DIR"
    cmake -S "$BASE_DIR" -B "$BASE_DIR/build" -DCMAKE_BUILD_TYPE=Release -DDUO_SANITIZE=OFF >/dev/null
    cmake --build "$BASE_DIR/build" -j2 --target duo-auth >/dev/null
  fi
  export BENCH_BASE_WORKER=$BASE_DIR/build/bin/duo-auth
fi

TAG=benchauth$$
export DUO_BIN_DIR=$BUILD/bin
export MQ_PREFIX=$TAG
export DATABASE_URL=${DUO_PG_ADMIN_URL%/*}/$TAG
export DUO_SECRET_KEY=$(head -c 32 /dev/urandom | base64)
export BENCH_USERS=2000 BENCH_USER_PREFIX=bu BENCH_HOLD_MS=5000
export BENCH_IKEY=DI$(head -c 9 /dev/urandom | od -An -tx1 | tr -d ' \n')
export BENCH_SKEY=$(head -c 20 /dev/urandom | od -An -tx1 | tr -d ' \n')
# The worker under test: default prefetch (2000); a guard that never refuses the bench
# (each user is pushed once per run); a bulkhead as wide as the prefetch; warnings only
# in its log.
export PUSH_CAP=1000 PUSH_WINDOW_SECS=1 DENY_COOLDOWN_SECS=0 AUTH_DEADLINE_SECS=60 LOG_LEVEL=warn
# One stage takes every call of the benchmark: its bulkhead (issue 22; default half the
# prefetch, 1,000) would refuse half of 2,000 held pushes as stage_busy.
export STAGE_MAX_CALLS=2000
export TMPDIR=${TMPDIR:-/tmp}

emu() { curl -sf --cacert "$DUO_CA_FILE" -H 'Content-Type: application/json' -d "$2" "$DUO_EMU_URL$1" >/dev/null; }
cleanup() {
  "$BUILD/bin/bench_auth" cleanup >/dev/null 2>&1 || true
  psql -q "$DUO_PG_ADMIN_URL" -c "DROP DATABASE IF EXISTS $TAG WITH (FORCE)" >/dev/null 2>&1 || true
}
trap cleanup EXIT

psql -q "$DUO_PG_ADMIN_URL" -c "CREATE DATABASE $TAG" >/dev/null
"$BUILD/bin/duoctl" migrate >/dev/null
STAGE=$(printf '%s' "$BENCH_SKEY" | "$BUILD/bin/duoctl" stage create --name "$TAG" \
  --api-hostname "$DUO_EMU_HOST" --client-id "$BENCH_IKEY" --client-secret-stdin |
  python3 -c 'import json,sys; print(json.load(sys.stdin)["uuid"])')
export BENCH_STAGE=$STAGE
emu /_emu/account "{\"account\":\"$TAG\",\"integrations\":[{\"ikey\":\"$BENCH_IKEY\",\"skey\":\"$BENCH_SKEY\",\"type\":\"auth\"}]}"
emu /_emu/users "{\"account\":\"$TAG\",\"generate\":{\"count\":$BENCH_USERS,\"prefix\":\"$BENCH_USER_PREFIX\"}}"
emu /_emu/behavior "{\"account\":\"$TAG\",\"user\":\"*\",\"push\":\"allow\",\"delay_ms\":$BENCH_HOLD_MS}"
psql -q "$DATABASE_URL" >/dev/null <<SQL
INSERT INTO app_user (username)
  SELECT '$BENCH_USER_PREFIX' || lpad(i::text, 7, '0') FROM generate_series(0, $BENCH_USERS - 1) i;
INSERT INTO duo_device (user_id, stage_id, duo_user_id, duo_user_kind, name)
  SELECT u.id, s.id, u.username, 'username', 'bench' FROM app_user u, duo_stage s;
-- History and statistics as a running database has them: without statistics the device
-- lookup's generic plan scanned the stage's whole (stage_id, duo_user_id) index in a
-- BitmapAnd for every login, and with an empty job table analyzed the claim's generic
-- plan was a sequential scan of job. 100,000 earlier jobs, 20,000 earlier challenges.
INSERT INTO job (job_id, job_type, state, reply, created_at, finished_at)
  SELECT 'old-' || g, 'auth', 'done', '\\x81a6737461747573a26f6b'::bytea,
         now() - interval '1 day' + g * interval '1 ms', now() - interval '1 day' + g * interval '1 ms'
  FROM generate_series(1, 100000) g;
INSERT INTO auth_challenge (user_id, stage_id, created_at, result, decided_at)
  SELECT u.id, u.stage, now() - interval '1 day', 'allow', now() - interval '1 day'
  FROM (SELECT id, (SELECT id FROM duo_stage) AS stage FROM app_user) u, generate_series(1, 10) g;
ANALYZE;
SQL

echo "bench_auth: $(nproc) CPUs; broker, PostgreSQL, emulator and the worker share them;" \
  "this tree $(git -C "$ROOT" rev-parse --short HEAD)${BASE_REV:+, base $BASE_REV}; load $(cut -d' ' -f1-3 /proc/loadavg)"
case "$WHAT" in
  held|fast|all|raw) ;;
  *) echo "run_auth.sh: unknown phase '$WHAT' (held, fast, all, raw)" >&2; exit 2 ;;
esac
case "$WHAT" in held|all) "$BUILD/bin/bench_auth" held "$NS" "$RUNS" ;; esac
case "$WHAT" in fast|all) "$BUILD/bin/bench_auth" fast 5000 256 "$RUNS" ;; esac
case "$WHAT" in raw) "$BUILD/bin/bench_auth" raw 20000 256 "$RUNS" ;; esac
