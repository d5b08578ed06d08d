#!/usr/bin/env bash
# test_fuzz.sh - CTest entry for the libFuzzer harnesses: runs tests/fuzz/run.sh for
# FUZZ_SECONDS (default 60) per harness and counts each harness as one test.
#
# Invariant: passes only when every harness built, replayed the checked-in reproducers and
# fuzzed its whole time without a crash, leak, UB report or timeout. Scratch files go to
# the CTest build's own fuzz folder, so parallel builds never share a corpus copy.
set -u -o pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
src=${DUO_SOURCE_DIR:-$(cd "$here/../.." && pwd)}
if [[ -n ${DUO_BIN_DIR:-} ]]; then
  export FUZZ_BUILD_DIR=${FUZZ_BUILD_DIR:-$(dirname "$DUO_BIN_DIR")/fuzz}
fi
export FUZZ_SECONDS=${FUZZ_SECONDS:-60}

out=$(bash "$src/tests/fuzz/run.sh" 2>&1)
rc=$?
echo "$out"
passed=$(grep -Ec '^fuzz: [a-z_]+: ok' <<<"$out")
failed=$(grep -Ec '^fuzz: [a-z_]+: FAILED' <<<"$out")
if [[ $rc -ne 0 && $failed -eq 0 ]]; then
  failed=1 # the toolchain or a build failed before any harness ran
fi
echo "$passed passed, $failed failed"
[[ $rc -eq 0 && $failed -eq 0 && $passed -gt 0 ]]
