#!/usr/bin/env bash
# test_chaos_small_serial.sh - the chaos harness in small: 600 mixed jobs through two
# workers of each kind, one of them kill -9'd mid-run, bursts of 429/5xx from the
# emulator, five deliberately bad messages. Fails when a job gets no final reply, a
# device is stored twice, an auth job's push reached the emulator twice, the automatic import miscounts or something unexpected is
# dead-lettered (tests/chaos/chaos.py decides). Runs alone: it loads the machine.
set -euo pipefail
ROOT="${DUO_SOURCE_DIR:-$(cd "$(dirname "$0")/../.." && pwd)}"
out="$(mktemp)"
trap 'rm -f "$out"' EXIT
status=0
timeout 300 "$ROOT/tests/chaos/run.sh" --jobs 600 --gen-users 1000 --kills 1 --send-secs 20 \
  --wait-secs 120 --no-mq-restart --no-pg-restart --fault-point-share 0 >"$out" 2>&1 || status=$?
cat "$out"
grep -q '^chaos: jobs=600 replied=600 lost=0 ' "$out" || { echo "FAIL: jobs lost"; exit 1; }
grep -q ' kills=1 ' "$out" || { echo "FAIL: no worker was killed"; exit 1; }
grep -q ' pushed_twice=0 ' "$out" || { echo "FAIL: an auth job pushed twice"; exit 1; }
[ "$status" -eq 0 ] || { echo "FAIL: chaos harness exited $status"; exit 1; }
echo "PASS"
