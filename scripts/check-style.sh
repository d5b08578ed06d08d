#!/usr/bin/env bash
# check-style.sh - rejects unsafe C calls (house style, rule 13).
set -euo pipefail
ROOT="$(cd "$(dirname "$0")/.." && pwd)"
cd "$ROOT"
if grep -nE '\b(sprintf|vsprintf|strcpy|strcat|strtok|atoi|atol|gets)\s*\(' \
     $(git ls-files '*.c' '*.h' 2>/dev/null || find . -name '*.[ch]' -not -path './build*') ; then
  echo "check-style: unsafe call above (use snprintf, memcpy with lengths, strtol)" >&2
  exit 1
fi
