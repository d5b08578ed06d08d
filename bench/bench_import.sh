#!/usr/bin/env bash
# bench_import.sh - bulk import at scale, one command:  bash bench/bench_import.sh
#
# Uses the running local services (scripts/services.sh start), a Release build in
# build-bench/, its own database, MQ prefix and emulator accounts (all removed at the end).
#  1. 1,000,000 Duo users in the emulator (no page-rate limit), 1,000,000 local users;
#     `duoctl import auto --follow` with N = 1 and 2 import workers: wall time, users/s,
#     peak RSS (VmHWM) per worker.
#  2. The reference's per-user pattern (look up user, look up device, insert: three
#     autocommit statements per Duo user, sent one by one by psql) over a sample,
#     extrapolated to 1,000,000.
#  3. The emulator limited to 200 pages/min, IMPORT_PAGES_PER_MIN=200, for RATE_SECS:
#     achieved fraction of the allowed rate, share of 429 answers.
#  4. Two tenants at once on the same 2 workers: two stages whose emulator accounts allow
#     TENANT_A and TENANT_B pages/min, each imported with that budget (pages_per_min),
#     for WARM_SECS + RATE_SECS: the fraction of its own budget each one got, from the
#     start and after the warm-up (the first seconds defer the slow run's far pages).
# During each import, CPU seconds per process group (import workers, this database's
# PostgreSQL backends, other PostgreSQL processes, the emulator, the broker) from
# /proc/<pid>/stat deltas. The emulator is the benchmark's own instance (this tree's
# code, its own port), so its CPU is the benchmark's alone; after the imports, its own
# page rate is measured with bench/import_pages (N clients, no broker, no database).
# BASE_REV=<git rev> adds a "before" column from the same run: that revision's worker
# and emulator (git archive into /tmp, Release build) are run alternately with this
# tree's, on the same database and Duo users (the emulator restarts on its port).
# Knobs (env): USERS (1000000), SAMPLE (20000), RATE_SECS (90), WORKERS ("1 2"),
# RUNS (1; with more, each figure is the median), EMU_SECS (15, the emulator-alone
# phase per client count), BASE_REV (unset), TENANT_A (60), TENANT_B (300),
# TENANT_USERS (300000), WARM_SECS (15), PHASES ("auto emu ref rate tenants").
set -euo pipefail

ROOT="$(cd "$(dirname "$0")/.." && pwd)"
eval "$("$ROOT/scripts/services.sh" env)"
export AMQP_URL="$DUO_MQ_ADMIN_URL"   # own prefixes: the broker administrator on vhost /
USERS="${USERS:-1000000}"
SAMPLE="${SAMPLE:-20000}"
RATE_SECS="${RATE_SECS:-90}"
WORKERS="${WORKERS:-1 2}"
EMU_SECS="${EMU_SECS:-15}"
RUNS="${RUNS:-1}"
TENANT_A="${TENANT_A:-60}"          # two-tenant case: page budgets (pages/min)
TENANT_B="${TENANT_B:-300}"
TENANT_USERS="${TENANT_USERS:-300000}"
WARM_SECS="${WARM_SECS:-15}"
BASE_REV="${BASE_REV:-}"
BUILD="$ROOT/build-bench"
TAG="bimp$$"
DB="bench_import_$$"
PSQL=(psql -X -q -v ON_ERROR_STOP=1)

cmake -S "$ROOT" -B "$BUILD" -DCMAKE_BUILD_TYPE=Release >/dev/null
cmake --build "$BUILD" -j2 --target duo-import duoctl import_pages >/dev/null
BIN="$BUILD/bin"
BASE_DIR="/tmp/bimp$$.base"
VARIANTS="new"
if [ -n "$BASE_REV" ]; then
  rm -rf "$BASE_DIR"; mkdir -p "$BASE_DIR"
  git -C "$ROOT" archive "$BASE_REV" | tar -x -C "$BASE_DIR"
  cmake -S "$BASE_DIR" -B "$BASE_DIR/build" -DCMAKE_BUILD_TYPE=Release >/dev/null
  cmake --build "$BASE_DIR/build" -j2 --target duo-import duoctl >/dev/null
  VARIANTS="base new"
fi
variant_root() { if [ "$1" = base ]; then echo "$BASE_DIR"; else echo "$ROOT"; fi; }
variant_bin() { if [ "$1" = base ]; then echo "$BASE_DIR/build/bin"; else echo "$BIN"; fi; }

export DATABASE_URL="${DUO_PG_ADMIN_URL%/*}/$DB"
export MQ_PREFIX="$TAG"
export DUO_SECRET_KEY="YmVuY2gta2V5LWJlbmNoLWtleS1iZW5jaC1rZXktMDA="
export LOG_LEVEL=warn
export PGOPTIONS="-c client_min_messages=warning"
PIDS=()
EMU_PID=""
EMU_PORT=$((58600 + $$ % 300))
export DUO_EMU_URL="https://127.0.0.1:$EMU_PORT" DUO_EMU_HOST="127.0.0.1:$EMU_PORT"
HZ=$(getconf CLK_TCK)

cleanup() {
  for p in "${PIDS[@]:-}" "$EMU_PID"; do [ -n "$p" ] && kill -TERM "$p" 2>/dev/null || true; done
  sleep 1
  rm -rf "$BASE_DIR" "/tmp/$TAG".*
  for d in "$DB" "${DB}_base" "${DB%_base}" "${DB%_base}_base"; do
    "${PSQL[@]}" "$DUO_PG_ADMIN_URL" -c "DROP DATABASE IF EXISTS $d WITH (FORCE)" >/dev/null 2>&1 || true
  done
}
trap cleanup EXIT

emu() { curl -fsS --cacert "$DUO_CA_FILE" -X "$1" -H 'Content-Type: application/json' \
          ${3:+-d "$3"} "$DUO_EMU_URL$2"; }
sql() { "${PSQL[@]}" "$DATABASE_URL" -At -c "$1"; }
ms() { date +%s%3N; }

account() { # name pages_per_min [users]
  emu POST /_emu/account "{\"account\":\"$1\",\"integrations\":[{\"ikey\":\"DIA$TAG$1\",\"skey\":\"auth-secret-$TAG\",\"type\":\"auth\"},{\"ikey\":\"DIX$TAG$1\",\"skey\":\"admin-secret-$TAG\",\"type\":\"admin\"}],\"admin_licensed\":true,\"admin_pages_per_min\":$2}" >/dev/null
  emu POST /_emu/users "{\"account\":\"$1\",\"generate\":{\"count\":${3:-$USERS},\"prefix\":\"b\",\"start\":0}}" >/dev/null
}

stage() { # name account
  "$BIN/duoctl" stage create --name "$1" --api-hostname "$DUO_EMU_HOST" --client-id "DIA$TAG$2" \
    --client-secret "auth-secret-$TAG" --admin-integration-key "DIX$TAG$2" \
    --admin-secret-key "admin-secret-$TAG" | python3 -c 'import json,sys; print(json.load(sys.stdin)["uuid"])'
}

start_workers() { # variant n [extra env...]
  local bin; bin="$(variant_bin "$1")"; local n="$2"; shift 2
  PIDS=()
  for _ in $(seq 1 "$n"); do
    env "$@" "$bin/duo-import" 2>>"/tmp/$TAG.worker.log" &
    PIDS+=($!)
  done
  sleep 1
}

stop_workers() {
  for p in "${PIDS[@]}"; do kill -TERM "$p" 2>/dev/null || true; done
  for p in "${PIDS[@]}"; do wait "$p" 2>/dev/null || true; done
  PIDS=()
}

EMU_VARIANT=""
start_emulator() { # variant: (re)starts the emulator with that tree's code, then the account
  [ "$EMU_VARIANT" = "$1" ] && return 0
  if [ -n "$EMU_PID" ]; then kill -TERM "$EMU_PID" 2>/dev/null || true; wait "$EMU_PID" 2>/dev/null || true; fi
  EMU_VARIANT="$1"
  python3 "$(variant_root "$1")/tests/emulator/duo_emulator.py" --host 127.0.0.1 --port "$EMU_PORT" \
    --cert "$DUO_RUN_DIR/emu/server.crt" --key "$DUO_RUN_DIR/emu/server.key" \
    >"/tmp/$TAG.emu.log" 2>&1 &
  EMU_PID=$!
  for _ in $(seq 1 50); do
    if curl -fsS --cacert "$DUO_CA_FILE" "$DUO_EMU_URL/auth/v2/ping" >/dev/null 2>&1; then
      account "${TAG}a" 0; return 0
    fi
    sleep 0.2
  done
  echo "emulator did not start; see /tmp/$TAG.emu.log" >&2; return 1
}

ticks() { # utime + stime of a pid (0 when gone)
  local s; s=$(cat "/proc/$1/stat" 2>/dev/null) || { echo 0; return; }
  s=${s##*) }; set -- $s; echo $(( ${12} + ${13} ))
}

cpu_snap() { # file: "group pid ticks" for every process of interest
  {
    for p in "${PIDS[@]:-}"; do [ -n "$p" ] && echo "worker $p $(ticks "$p")"; done
    echo "emulator $EMU_PID $(ticks "$EMU_PID")"
    for p in $(pgrep -f "$DUO_RUN_DIR/rabbit/home" || true); do echo "broker $p $(ticks "$p")"; done
    for p in $(pgrep -u postgres || true); do
      if tr '\0' ' ' <"/proc/$p/cmdline" 2>/dev/null | grep -q " $DB "; then g=pg_backends; else g=pg_other; fi
      echo "$g $p $(ticks "$p")"
    done
    awk '/^cpu / {print "machine_busy 0", $2+$3+$4+$7+$8; print "machine_all 0", $2+$3+$4+$5+$6+$7+$8}' /proc/stat
  } >"$1"
}

cpu_report() { # before after wall_secs
  python3 - "$1" "$2" "$3" "$HZ" <<'PY'
import sys
def load(f):
    return {(g, p): int(t) for g, p, t in (l.split() for l in open(f))}
a, b, wall, hz = load(sys.argv[1]), load(sys.argv[2]), float(sys.argv[3]), int(sys.argv[4])
sums = {}
for k, t in b.items():
    sums[k[0]] = sums.get(k[0], 0) + max(0, t - a.get(k, 0))
all_ = sums.pop("machine_all", 1) or 1
busy = sums.pop("machine_busy", 0)
sums["others"] = max(0, busy - sum(sums.values()))
parts = ["%s %.1fs (%.0f%%)" % (g, v / hz, 100 * v / hz / wall) for g, v in sorted(sums.items())]
print("  cpu: " + ", ".join(parts) + "; machine busy %.0f%% of 2 cores" % (100 * busy / all_))
PY
}

hwm() { awk '/VmHWM/ {printf "%.1f", $2/1024}' "/proc/$1/status"; }

phase() { [[ " ${PHASES:-auto emu ref rate tenants} " == *" $1 "* ]]; }

median() { tr ' ' '\n' | grep -v '^$' | sort -g | awk '{v[NR]=$1} END {print (NR%2 ? v[(NR+1)/2] : (v[NR/2]+v[NR/2+1])/2)}'; }

echo "== setup: $USERS Duo users, $USERS local users; variants: $VARIANTS${BASE_REV:+ (base = $BASE_REV)}"
start_emulator new
# Each variant has a database of its own, at its own schema (its revision's migrations,
# applied by its duoctl): a schema change is part of what is compared. Same users, a stage
# on the same emulator account.
setup_db() { # variant database
  "${PSQL[@]}" "$DUO_PG_ADMIN_URL" -c "CREATE DATABASE $2" >/dev/null
  DATABASE_URL="${DUO_PG_ADMIN_URL%/*}/$2" DUO_MIGRATIONS_DIR="$(variant_root "$1")/migrations" \
    "$(variant_bin "$1")/duoctl" migrate >/dev/null
  DATABASE_URL="${DUO_PG_ADMIN_URL%/*}/$2" BIN="$(variant_bin "$1")" stage "bench-$TAG" "${TAG}a"
  "${PSQL[@]}" "${DUO_PG_ADMIN_URL%/*}/$2" -At -c "INSERT INTO app_user (username) SELECT 'b' || lpad(g::text, 7, '0') FROM generate_series(0, $USERS - 1) g" -c "ANALYZE" >/dev/null
}
use_db() { # variant: DATABASE_URL, DB and S1 of its database
  if [ "$1" = base ]; then DB=$DB_BASE; S1=$S1_BASE; else DB=$DB_NEW; S1=$S1_NEW; fi
  export DATABASE_URL="${DUO_PG_ADMIN_URL%/*}/$DB"
}
DB_NEW=$DB DB_BASE=${DB}_base
S1_NEW=$(setup_db new "$DB_NEW")
if [ -n "$BASE_REV" ]; then S1_BASE=$(setup_db base "$DB_BASE"); fi
use_db new

import_once() { # variant n
  local v="$1" n="$2"
  use_db "$v"
  start_emulator "$v"
  sql "TRUNCATE duo_device, import_run CASCADE"
  sql "VACUUM ANALYZE duo_device" 2>/dev/null || true
  start_workers "$v" "$n" IMPORT_PAGES_PER_MIN=100000
  cpu_snap "/tmp/$TAG.cpu0"
  t0=$(ms)
  "$BIN/duoctl" import auto --stage "$S1" --follow --timeout 300 >"/tmp/$TAG.final.json"
  t1=$(ms)
  cpu_snap "/tmp/$TAG.cpu1"
  rss=""; for p in "${PIDS[@]}"; do rss="$rss $(hwm "$p")MB"; done
  stop_workers
  secs=$(echo "scale=2; ($t1 - $t0) / 1000" | bc)
  created=$(python3 -c 'import json,sys; c=json.load(open(sys.argv[1]))["counts"]; print(c["created"], c["existing"], c["unknown_user"], c["errors"], c["pages_total"])' <(tail -1 "/tmp/$TAG.final.json"))
  echo "$v workers=$n wall=${secs}s users/s=$(echo "$USERS / $secs" | bc) created/existing/unknown/errors/pages=$created peak_rss=[$rss ]"
  cpu_report "/tmp/$TAG.cpu0" "/tmp/$TAG.cpu1" "$secs"
  eval "ALL_${v}_$n=\"\${ALL_${v}_$n:-} $secs\""
}

if phase auto; then
echo "== automatic import, no rate limit ($RUNS run(s) per variant and worker count, alternating)"
for n in $WORKERS; do
  for _ in $(seq 1 "$RUNS"); do for v in $VARIANTS; do import_once "$v" "$n"; done; done
done
for n in $WORKERS; do
  for v in $VARIANTS; do
    m=$(eval echo "\$ALL_${v}_$n" | median)
    echo "median $v workers=$n: ${m}s = $(echo "$USERS / $m" | bc) users/s (runs:$(eval echo "\$ALL_${v}_$n"))"
    eval "WALL_${v}_$n=$m"
  done
done
use_db new
fi

if phase emu; then
echo "== emulator alone: bench/import_pages, 300-user pages, ${EMU_SECS}s per client count"
for v in $VARIANTS; do for n in $WORKERS; do
  start_emulator "$v"
  echo -n "$v "
  cpu_snap "/tmp/$TAG.cpu0"
  CL=()
  for i in $(seq 1 "$n"); do
    "$BIN/import_pages" "$DUO_EMU_HOST" "DIX$TAG${TAG}a" "admin-secret-$TAG" "$EMU_SECS" 300 \
      "$USERS" $((i * 1000)) >"/tmp/$TAG.pages.$i" &
    CL+=($!)
  done
  for p in "${CL[@]}"; do wait "$p"; done
  cpu_snap "/tmp/$TAG.cpu1"
  python3 - "$n" /tmp/$TAG.pages.* <<'PY'
import sys
tot = cpu = 0.0
for f in sys.argv[2:]:
    kv = dict(x.split("=") for x in open(f).read().split())
    tot += float(kv["pages/s"]); cpu += float(kv["cpu"])
print(f"clients={sys.argv[1]} {tot:.1f} pages/s = {tot * 300:.0f} users/s -> 1M users in "
      f"{1e6 / 300 / max(tot, 0.1):.1f}s; client CPU {cpu:.1f}s")
PY
  cpu_report "/tmp/$TAG.cpu0" "/tmp/$TAG.cpu1" "$EMU_SECS"
  rm -f /tmp/$TAG.pages.*
done; done
start_emulator new
fi

if phase ref; then
echo "== reference per-user pattern (3 autocommit statements per user), sample $SAMPLE"
sql "TRUNCATE duo_device CASCADE"
SID=$(sql "SELECT id FROM duo_stage LIMIT 1")
python3 - "$SAMPLE" "$SID" >"/tmp/$TAG.ref.sql" <<'PY'
import sys
n, sid = int(sys.argv[1]), sys.argv[2]
for i in range(n):
    u = "b%07d" % (i * 37 % 1000000)
    d = "DUREF%015d" % i
    print(f"SELECT id FROM app_user WHERE username = '{u}';")
    print(f"SELECT id FROM duo_device WHERE stage_id = {sid} AND duo_user_id = '{d}';")
    print(f"INSERT INTO duo_device (user_id, stage_id, duo_user_id, name) SELECT id, {sid}, '{d}', 'Imported Duo Authenticator' FROM app_user WHERE username = '{u}';")
PY
t0=$(ms)
"${PSQL[@]}" "$DATABASE_URL" -f "/tmp/$TAG.ref.sql" >/dev/null
t1=$(ms)
ref_secs=$(echo "scale=2; ($t1 - $t0) / 1000" | bc)
ref_full=$(echo "scale=1; $ref_secs * $USERS / $SAMPLE" | bc)
echo "reference: $SAMPLE users in ${ref_secs}s -> $(echo "$SAMPLE * 1000 / ($t1 - $t0)" | bc) users/s, extrapolated to $USERS users: ${ref_full}s (database work only, no Duo calls)"
for n in $WORKERS; do for v in $VARIANTS; do
  w=$(eval echo "\$WALL_${v}_$n")
  echo "speed-up, $v, $n worker(s): $(echo "scale=1; $ref_full / $w" | bc)x"
done; done
rm -f "/tmp/$TAG.ref.sql"
fi

if phase rate; then
start_emulator new
echo "== rate-limited emulator: 200 pages/min, IMPORT_PAGES_PER_MIN=200, ${RATE_SECS}s"
sql "TRUNCATE duo_device, import_run CASCADE"
account "${TAG}r" 200
S2=$(stage "bench-rate-$TAG" "${TAG}r")
start_workers new 2 IMPORT_PAGES_PER_MIN=200
"$BIN/duoctl" import auto --stage "$S2" --timeout 60 >/dev/null
stats0=$(emu GET "/_emu/stats?account=${TAG}r")
t0=$(ms)
sleep "$RATE_SECS"
stats=$(emu GET "/_emu/stats?account=${TAG}r")
t1=$(ms)
stop_workers
python3 - "$stats0" "$stats" "$t0" "$t1" <<'PY'
import json, sys
a, s = json.loads(sys.argv[1]), json.loads(sys.argv[2]); secs = (int(sys.argv[4]) - int(sys.argv[3])) / 1000
pages, thr = s["admin_pages"] - a["admin_pages"], s["throttled"] - a["throttled"]
allowed = 200 * secs / 60
print(f"pages served {pages} in {secs:.0f}s allowed {allowed:.0f}: "
      f"{100 * pages / allowed:.1f}% of the allowed rate; 429s {thr} of {pages + thr} calls "
      f"= {100 * thr / max(1, pages + thr):.2f}%")
PY
fi

if phase tenants; then
start_emulator new
echo "== two tenants at once: budgets $TENANT_A and $TENANT_B pages/min (each its emulator account's limit and its run's pages_per_min), 2 workers, ${RATE_SECS}s"
sql "TRUNCATE duo_device, import_run CASCADE"
account "${TAG}ta" "$TENANT_A" "$TENANT_USERS"
account "${TAG}tb" "$TENANT_B" "$TENANT_USERS"
SA=$(stage "bench-ta-$TAG" "${TAG}ta")
SB=$(stage "bench-tb-$TAG" "${TAG}tb")
# The workers allow any rate: each run's own budget (pages_per_min) is what paces it.
start_workers new 2 IMPORT_PAGES_PER_MIN=100000
"$BIN/duoctl" import auto --stage "$SA" --pages-per-min "$TENANT_A" --timeout 60 >/dev/null &
ja=$!
"$BIN/duoctl" import auto --stage "$SB" --pages-per-min "$TENANT_B" --timeout 60 >/dev/null &
jb=$!
wait "$ja" "$jb"
ta0=$(emu GET "/_emu/stats?account=${TAG}ta"); tb0=$(emu GET "/_emu/stats?account=${TAG}tb")
t0=$(ms)
sleep "$WARM_SECS"
ta1=$(emu GET "/_emu/stats?account=${TAG}ta"); tb1=$(emu GET "/_emu/stats?account=${TAG}tb")
t1=$(ms)
sleep "$RATE_SECS"
ta2=$(emu GET "/_emu/stats?account=${TAG}ta"); tb2=$(emu GET "/_emu/stats?account=${TAG}tb")
t2=$(ms)
stop_workers
python3 - "$TENANT_A" "$TENANT_B" "$t0" "$t1" "$t2" "$ta0" "$ta1" "$ta2" "$tb0" "$tb1" "$tb2" <<'PY'
import json, sys
a = sys.argv
t0, t1, t2 = (int(x) / 1000 for x in a[3:6])
for name, budget, st in (("A", int(a[1]), a[6:9]), ("B", int(a[2]), a[9:12])):
    s0, s1, s2 = (json.loads(x) for x in st)
    for label, x, y, secs in (("from the start", s0, s2, t2 - t0), ("after warm-up", s1, s2, t2 - t1)):
        pages, thr = y["admin_pages"] - x["admin_pages"], y["throttled"] - x["throttled"]
        allowed = budget * secs / 60
        print(f"tenant {name} ({budget} pages/min), {label} ({secs:.0f}s): {pages} pages of "
              f"{allowed:.0f} allowed = {100 * pages / allowed:.1f}% of its budget; 429s {thr}")
PY
fi
