#!/usr/bin/env bash
# run.sh - builds the libFuzzer harnesses with clang (ASan + UBSan) and runs each for a
# bounded time on a scratch copy of the checked-in corpus.
#
# Invariant: the checked-in corpus is only ever written with FUZZ_MERGE=1 (and then only
# inputs that add coverage); any crash, leak, UB report or timeout makes this script exit
# non-zero and print the reproducer's path.
#
# Environment:
#   FUZZ_SECONDS   seconds per harness (default 60)
#   FUZZ_TARGETS   harnesses to run (default "msg duo_response duo_sign")
#   FUZZ_BUILD_DIR build folder (default <source>/build-fuzz)
#   FUZZ_MERGE=1   merge new coverage-increasing inputs back into tests/fuzz/corpus/
#   FUZZ_ARGS      extra libFuzzer flags, e.g. "-jobs=4 -workers=4"
set -u -o pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
src=$(cd "$here/../.." && pwd)
out=${FUZZ_BUILD_DIR:-$src/build-fuzz}
seconds=${FUZZ_SECONDS:-60}
targets=${FUZZ_TARGETS:-msg duo_response duo_sign}
CC=${CC_FUZZ:-clang}

# Sources each harness links; only what the code under test needs.
declare -A sources=(
  [msg]="codec/msg.c codec/schema.c base/buf.c base/err.c"
  [duo_response]="duo/duo_response.c base/err.c"
  [duo_sign]="duo/duo_sign.c base/buf.c base/err.c"
)
declare -A libs=([msg]="-lmsgpackc -ljansson" [duo_response]="-ljansson"
                 [duo_sign]="-ljansson -lcrypto")
# msgpack bodies are capped at 64 KiB, but small inputs find bugs faster.
declare -A maxlen=([msg]=8192 [duo_response]=8192 [duo_sign]=1024)

die() { echo "fuzz: $*" >&2; exit 2; }

check_toolchain() {
  command -v "$CC" >/dev/null || die "$CC not found (scripts/bootstrap.sh installs clang)"
  local rt
  rt="$("$CC" -print-resource-dir)/lib/linux/libclang_rt.fuzzer-x86_64.a"
  [[ -f $rt ]] || die "libFuzzer runtime missing ($rt): install libclang-rt-14-dev"
}

build() {
  local name=$1 files=() f
  for f in ${sources[$name]}; do files+=("$src/common/$f"); done
  "$CC" -g -O1 -std=c11 -D_GNU_SOURCE -fno-omit-frame-pointer \
    -fsanitize=fuzzer,address,undefined -fno-sanitize-recover=undefined \
    -Wall -Wextra -Werror -Wshadow -Wstrict-prototypes -Wmissing-prototypes \
    -DFUZZ_SOURCE_DIR="\"$src\"" -I"$src/common/base" -I"$src/common/codec" -I"$src/common/duo" \
    -o "$out/fuzz_$name" "$here/fuzz_$name.c" "${files[@]}" ${libs[$name]} -lm
}

# Prints the reproducers libFuzzer left for one harness; returns 1 if there are any.
report_artifacts() {
  local name=$1 found=0 f
  for f in "$out/artifacts/$name"/*; do
    [[ -e $f ]] || continue
    echo "fuzz: $name: reproducer $f (rerun: $out/fuzz_$name $f)"
    found=1
  done
  return $found
}

# Replays the known reproducers in tests/fuzz/crashes/<name>/ so a fixed bug stays fixed.
replay_crashes() {
  local name=$1 dir="$here/crashes/$1"
  compgen -G "$dir/*" >/dev/null || return 0
  "$out/fuzz_$name" -runs=0 "$dir"/* >"$out/$name.replay.log" 2>&1 && return 0
  echo "fuzz: $name: a checked-in reproducer in $dir still fails; see $out/$name.replay.log"
  tail -n 30 "$out/$name.replay.log"
  return 1
}

run_one() {
  local name=$1 corpus="$out/corpus/$1" log="$out/$1.log" rc dict=()
  [[ -f $here/$name.dict ]] && dict=(-dict="$here/$name.dict")
  rm -rf "$corpus" "$out/artifacts/$name"
  mkdir -p "$corpus" "$out/artifacts/$name"
  cp "$here/corpus/$name"/* "$corpus"/ 2>/dev/null
  replay_crashes "$name" || return 1
  # shellcheck disable=SC2086 # FUZZ_ARGS is a list of flags
  UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1 ASAN_OPTIONS=detect_leaks=1 \
  DUO_SOURCE_DIR="$src" "$out/fuzz_$name" -max_total_time="$seconds" \
    -max_len="${maxlen[$name]}" -timeout=20 -rss_limit_mb=2048 -print_final_stats=1 \
    -artifact_prefix="$out/artifacts/$name/" "${dict[@]}" ${FUZZ_ARGS:-} "$corpus" >"$log" 2>&1
  rc=$?
  if [[ $rc -ne 0 ]] || ! report_artifacts "$name"; then
    echo "fuzz: $name: FAILED (exit $rc), log $log"
    grep -E "ERROR|SUMMARY|runtime error|Test unit written" "$log" | head -n 20
    report_artifacts "$name"
    return 1
  fi
  echo "fuzz: $name: ok, $(grep -Eo 'stat::number_of_executed_units: *[0-9]+' "$log" |
    grep -Eo '[0-9]+$') runs in ${seconds}s, corpus $(ls "$corpus" | wc -l) inputs"
  if [[ ${FUZZ_MERGE:-0} == 1 ]]; then
    "$out/fuzz_$name" -merge=1 -max_len="${maxlen[$name]}" "$here/corpus/$name" "$corpus" \
      >"$out/$name.merge.log" 2>&1 || { echo "fuzz: $name: merge failed"; return 1; }
    echo "fuzz: $name: merged into tests/fuzz/corpus/$name ($(ls "$here/corpus/$name" | wc -l) inputs)"
  fi
}

main() {
  check_toolchain
  mkdir -p "$out"
  local name failed=0 passed=0
  for name in $targets; do
    [[ -n ${sources[$name]:-} ]] || die "unknown harness '$name'"
    build "$name" || die "building fuzz_$name failed"
  done
  for name in $targets; do
    if run_one "$name"; then passed=$((passed + 1)); else failed=$((failed + 1)); fi
  done
  echo "fuzz: $passed harnesses clean, $failed with findings"
  [[ $failed -eq 0 ]]
}

main "$@"
