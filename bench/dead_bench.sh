#!/usr/bin/env bash
# dead_bench.sh - times duoctl's dead-letter commands on N dead letters (bench/README.md,
# "Dead letters"): fill, status (counts by kind), list, filtered list, replay, purge, with
# each command's wall time and peak memory (max RSS). Half the messages have a failed job
# record (reason duo_bad_signature), half none (a message that never became a job), so
# the filters select half and the job-record lookups are part of the figure.
#   bench/dead_bench.sh N            (a Release build in build-rel, made if missing)
# Uses the project's services (scripts/services.sh) on a database and a prefix of its own,
# dropped at the end. Set DUO_REL_BUILD_DIR to use another build.
set -euo pipefail
ROOT="$(cd "$(dirname "$0")/.." && pwd)"
cd "$ROOT"
N="${1:?usage: dead_bench.sh N}"
BUILD="${DUO_REL_BUILD_DIR:-$ROOT/build-rel}"
if [ ! -x "$BUILD/bin/duoctl" ] || [ ! -x "$BUILD/bin/dead_fill" ]; then
  cmake -S "$ROOT" -B "$BUILD" -DCMAKE_BUILD_TYPE=Release >/dev/null
  cmake --build "$BUILD" --target duoctl dead_fill -j"$(nproc)" >/dev/null
fi
"$ROOT/scripts/services.sh" start >/dev/null
eval "$("$ROOT/scripts/services.sh" env)"
DB="deadbench_$$"
export AMQP_URL="$DUO_MQ_ADMIN_URL" MQ_PREFIX="deadbench$$"
export DATABASE_URL="${DUO_PG_ADMIN_URL%/*}/$DB" DUO_SECRET_KEY="$(openssl rand -base64 32)"
STAGE=00000000-0000-4000-8000-000000000001
cleanup() {
  "$BUILD/bin/duoctl" dead purge --all --yes >/dev/null 2>&1 || true
  for q in dead enroll auth import; do
    "$ROOT/scripts/services.sh" mqctl delete_queue -p / "$MQ_PREFIX.$q" >/dev/null 2>&1 || true
  done
  psql "$DUO_PG_ADMIN_URL" -qc "DROP DATABASE IF EXISTS $DB WITH (FORCE)" >/dev/null 2>&1 || true
}
trap cleanup EXIT
psql "$DUO_PG_ADMIN_URL" -qc "CREATE DATABASE $DB" >/dev/null
"$BUILD/bin/duoctl" migrate >/dev/null 2>&1
psql "$DATABASE_URL" -qc "INSERT INTO job (job_id, job_type, state, attempts, error_code, finished_at)
  SELECT 'fill-' || g, 'enroll.begin', 'done', 1, 'duo_bad_signature', now()
  FROM generate_series(0, $N - 1, 2) g" >/dev/null

# t LABEL CMD...: one timed line "LABEL  wall  maxrss", output of CMD to a file.
t() {
  local label="$1"; shift
  /usr/bin/time -f "%e %M" -o "$DUO_RUN_DIR/dead_bench.time" "$@" >"$DUO_RUN_DIR/dead_bench.out" 2>/dev/null
  read -r wall rss <"$DUO_RUN_DIR/dead_bench.time"
  printf '%-40s %8ss %8d KB   %s\n' "$label" "$wall" "$rss" "$(tail -c 200 "$DUO_RUN_DIR/dead_bench.out" | tail -1 | cut -c1-90)"
}
fill() { t "fill $N" "$BUILD/bin/dead_fill" "$N" "$STAGE"; }
# Rejected messages leave P.dead through the broker's at-least-once dead-lettering, after
# duoctl returned: how long until the last one is confirmed into its work queue.
leaving() {
  "$ROOT/scripts/services.sh" mqctl eval "{ok, Q} = rabbit_amqqueue:lookup(rabbit_misc:r(<<\"/\">>,
    queue, <<\"$MQ_PREFIX.dead\">>)), {ok, {_, O}, _} = ra:local_query(amqqueue:get_pid(Q),
    fun rabbit_fifo:overview/1), maps:get(num_discarded, O) + maps:get(num_discard_checked_out, O)."
}
moved() {
  local start; start=$(date +%s.%N)
  while [ "$(leaving)" != 0 ]; do sleep 0.2; done
  printf '%-40s %8.2fs\n' "  ... moved to the work queue after" "$(echo "$(date +%s.%N) - $start" | bc)"
}
echo "dead_bench: N=$N build=$BUILD $(uptime | sed 's/.*load/load/')"
fill
t "status --json" "$BUILD/bin/duoctl" status --json
t "dead list" "$BUILD/bin/duoctl" dead list
t "dead list --json" "$BUILD/bin/duoctl" dead list --json
t "dead list --reason duo_bad_signature" "$BUILD/bin/duoctl" dead list --reason duo_bad_signature
t "dead replay --reason duo_bad_signature" "$BUILD/bin/duoctl" dead replay --reason duo_bad_signature
moved
t "dead replay --all" "$BUILD/bin/duoctl" dead replay --all
moved
"$ROOT/scripts/services.sh" mqctl purge_queue -p / "$MQ_PREFIX.enroll" >/dev/null
fill
t "dead purge --reason duo_bad_signature" "$BUILD/bin/duoctl" dead purge --reason duo_bad_signature --yes
t "dead purge --all" "$BUILD/bin/duoctl" dead purge --all --yes
t "status --json (empty)" "$BUILD/bin/duoctl" status --json
