#!/usr/bin/env bash
# check-secret-logs.sh - after a full test run: no secret used by the tests appears in
# any log (worker logs, emulator log, CTest's captured output). The tests record every
# secret they hand out in $RUN/test-secrets.txt.
set -u
ROOT="$(cd "$(dirname "$0")/.." && pwd)"
RUN="${DUO_RUN_DIR:-$ROOT/.run}"
BUILD="${DUO_BUILD_DIR:-$ROOT/build-test}"
secrets="$RUN/test-secrets.txt"
if [ ! -s "$secrets" ]; then
  echo "check-secret-logs: no secrets were recorded (did the end-to-end tests run?)"
  echo "0 passed, 1 failed"; exit 1
fi
logs=("$RUN"/logs/*.log "$RUN"/emu/emulator.log "$BUILD"/Testing/Temporary/LastTest*.log)
found=0; checked=0
while IFS= read -r s; do
  [ -n "$s" ] || continue
  checked=$((checked + 1))
  if grep -lF -- "$s" "${logs[@]}" 2>/dev/null | head -1 | grep -q .; then
    echo "check-secret-logs: a test secret appears in: $(grep -lF -- "$s" "${logs[@]}" 2>/dev/null | head -3 | tr '\n' ' ')"
    found=$((found + 1))
  fi
done < <(sort -u "$secrets")
echo "check-secret-logs: $checked secrets, $(ls "${logs[@]}" 2>/dev/null | wc -l) log files"
echo "$((checked - found)) passed, $found failed"
[ "$found" -eq 0 ]
