#!/usr/bin/env bash
# test.sh - the one test command: bootstrap, build with ASan/UBSan, start the
# project-local services, run every test through CTest, stop the services.
# Exits non-zero on any failure. Extra arguments go to ctest (e.g. -L unit, -R duo).
set -euo pipefail
ROOT="$(cd "$(dirname "$0")/.." && pwd)"
cd "$ROOT"
BUILD="${DUO_BUILD_DIR:-$ROOT/build-test}"

"$ROOT/scripts/bootstrap.sh"
"$ROOT/scripts/check-style.sh"
cmake -S "$ROOT" -B "$BUILD" -DCMAKE_BUILD_TYPE=Debug -DDUO_SANITIZE=ON >/dev/null
cmake --build "$BUILD" -j"$(nproc)"

cleanup() { [ -n "${DUO_KEEP_SERVICES:-}" ] || "$ROOT/scripts/services.sh" stop; }
trap cleanup EXIT
"$ROOT/scripts/services.sh" start
eval "$("$ROOT/scripts/services.sh" env)"
# Tests declare throwaway topologies under prefixes of their own, so they use the broker's
# administrator on vhost "/", apart from the project's vhost duo (tests of the project's
# least-privilege identities use DUO_MQ_PUBLISHER_URL or make their own).
export DUO_MQ_WORKER_URL="$AMQP_URL" AMQP_URL="$DUO_MQ_ADMIN_URL"
export ASAN_OPTIONS="detect_leaks=1:abort_on_error=1"
export UBSAN_OPTIONS="print_stacktrace=1:halt_on_error=1"
export LSAN_OPTIONS="suppressions=$ROOT/tests/lsan.supp"

rm -f "$DUO_RUN_DIR/test-secrets.txt" "$DUO_RUN_DIR"/logs/*.log
cd "$BUILD"
status=0
ctest --output-on-failure -j2 "$@" || status=$?
if [ $# -eq 0 ]; then
  # After a full run: no secret the tests used may appear in any log.
  DUO_BUILD_DIR="$BUILD" "$ROOT/scripts/check-secret-logs.sh" || status=1
fi
exit $status
