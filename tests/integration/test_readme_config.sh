#!/usr/bin/env bash
# test_readme_config.sh - the README's configuration table is the one duoctl generates
# from common/base/config.c: every variable is documented with its current default; and its
# table of the worker roles' privileges is the one `duoctl migrate` grants.
set -u
ROOT="${DUO_SOURCE_DIR:-$(cd "$(dirname "$0")/../.." && pwd)}"
DUOCTL="${DUO_BIN_DIR:-$ROOT/build/bin}/duoctl"
pass=0; fail=0
while IFS= read -r line; do
  if grep -qF -- "$line" "$ROOT/README.md"; then pass=$((pass + 1)); else
    echo "README.md lacks: $line"; fail=$((fail + 1)); fi
done < <("$DUOCTL" config-doc | tail -n +3; "$DUOCTL" migrate --grants-doc | tail -n +3)
echo "$pass passed, $fail failed"
[ "$fail" -eq 0 ]
