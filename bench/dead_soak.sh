#!/usr/bin/env bash
# dead_soak.sh - the longer soak of the dead-letter tooling (tests/e2e/test_dead_soak.c):
# builds and starts the project's services as scripts/test.sh does, then runs the soak
# with more rounds and dead letters than the suite's short form, and prints its figures.
#   bench/dead_soak.sh [ROUNDS] [DEAD_PER_ROUND] [SEED]      (defaults 20 10000 time)
set -euo pipefail
ROOT="$(cd "$(dirname "$0")/.." && pwd)"
cd "$ROOT"
BUILD="${DUO_BUILD_DIR:-$ROOT/build-test}"
DUO_KEEP_SERVICES=1 "$ROOT/scripts/test.sh" -R e2e.test_dead_soak >/dev/null
eval "$("$ROOT/scripts/services.sh" env)"
export DUO_MQ_WORKER_URL="$AMQP_URL" AMQP_URL="$DUO_MQ_ADMIN_URL"
export DUO_BIN_DIR="$BUILD/bin" DUO_SOURCE_DIR="$ROOT"
export ASAN_OPTIONS="detect_leaks=1:abort_on_error=1" LSAN_OPTIONS="suppressions=$ROOT/tests/lsan.supp"
export DUO_SOAK_ROUNDS="${1:-20}" DUO_SOAK_DEAD="${2:-10000}"
[ -z "${3:-}" ] || export DUO_SOAK_SEED="$3"
start=$(date +%s)
"$BUILD/tests/test_dead_soak" 2>"$DUO_RUN_DIR/dead_soak.err" | grep -E '^soak |FAILED|PASSED'
echo "elapsed=$(( $(date +%s) - start ))s (stderr in $DUO_RUN_DIR/dead_soak.err)"
