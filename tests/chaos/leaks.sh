#!/usr/bin/env bash
# leaks.sh - the enrollment and authentication workers through thousands of jobs, twice:
#   1. natively: VmRSS of each worker after every round (flat after the first = no leak
#      that grows with jobs);
#   2. under valgrind memcheck (--leak-check=full) with fewer jobs: definitely/indirectly
#      lost bytes reported when the workers exit on SIGTERM.
# Usage: tests/chaos/leaks.sh [--jobs N] [--valgrind-jobs M]   (defaults 4000 and 800)
# Needs the local services and a build (DUO_BIN_DIR, default build/bin). Exit status is
# non-zero when valgrind reports lost memory or a worker does not exit cleanly.
set -euo pipefail
ROOT="$(cd "$(dirname "$0")/../.." && pwd)"
eval "$("$ROOT/scripts/services.sh" env)"
export AMQP_URL="$DUO_MQ_ADMIN_URL"   # own prefixes: the broker administrator on vhost /
export DUO_BIN_DIR="${DUO_BIN_DIR:-$ROOT/build/bin}"
export DUO_SOURCE_DIR="$ROOT"
jobs=4000 vjobs=800
while [ $# -gt 0 ]; do
  case "$1" in
    --jobs) jobs="$2"; shift 2 ;;
    --valgrind-jobs) vjobs="$2"; shift 2 ;;
    *) echo "usage: $0 [--jobs N] [--valgrind-jobs M]" >&2; exit 2 ;;
  esac
done
status=0
echo "== native run: RSS per round"
python3 "$ROOT/tests/chaos/leaks.py" --jobs "$jobs" --rounds 5 || status=1
if [ "$vjobs" -gt 0 ]; then
  echo "== valgrind memcheck"
  python3 "$ROOT/tests/chaos/leaks.py" --jobs "$vjobs" --rounds 2 --valgrind || status=1
fi
exit $status
