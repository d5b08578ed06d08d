#!/usr/bin/env bash
# run_held_engine.sh - the client's own cost of held pushes (see bench/README.md,
# "Held pushes"): N pushes held 5 s by the emulator on one bare duo_async engine, RUNS
# times, one line each. Uses the emulator of scripts/services.sh and a Release build in
# build-bench-auth/ (as run_auth.sh). CA_FILE overrides the CA file (e.g. a bundle of
# the system's CAs plus the emulator's, to see the cost of a real CA file).
#   bench/run_held_engine.sh [N [RUNS]]
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
N=${1:-2000}
RUNS=${2:-3}
BUILD=${BENCH_BUILD:-$ROOT/build-bench-auth}
eval "$("$ROOT/scripts/services.sh" env)"
cmake -S "$ROOT" -B "$BUILD" -DCMAKE_BUILD_TYPE=Release -DDUO_SANITIZE=OFF >/dev/null
cmake --build "$BUILD" -j2 --target held_engine >/dev/null
[ -z "${CA_FILE:-}" ] || export DUO_CA_FILE=$CA_FILE
TAG=heldengine$$
export BENCH_IKEY=DI$(head -c 9 /dev/urandom | od -An -tx1 | tr -d ' \n')
export BENCH_SKEY=$(head -c 20 /dev/urandom | od -An -tx1 | tr -d ' \n')
export BENCH_USER_PREFIX=he
emu() { curl -sf --cacert "$DUO_CA_FILE" -H 'Content-Type: application/json' -d "$2" "$DUO_EMU_URL$1" >/dev/null; }
emu /_emu/account "{\"account\":\"$TAG\",\"integrations\":[{\"ikey\":\"$BENCH_IKEY\",\"skey\":\"$BENCH_SKEY\",\"type\":\"auth\"}]}"
emu /_emu/users "{\"account\":\"$TAG\",\"generate\":{\"count\":$N,\"prefix\":\"$BENCH_USER_PREFIX\"}}"
emu /_emu/behavior "{\"account\":\"$TAG\",\"user\":\"*\",\"push\":\"allow\",\"delay_ms\":5000}"
for _ in $(seq "$RUNS"); do "$BUILD/bin/held_engine" "$N"; done
