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
# Formatting by tool: every C file as .clang-format says (Debian's clang-format 14).
if command -v clang-format >/dev/null 2>&1; then
  if ! clang-format --dry-run -Werror $(git ls-files '*.c' '*.h') 2>/tmp/clang-format.$$; then
    head -20 /tmp/clang-format.$$ >&2
    rm -f /tmp/clang-format.$$
    echo "check-style: run clang-format -i on the files above" >&2
    exit 1
  fi
  rm -f /tmp/clang-format.$$
fi
# The repository stands alone: no tracked file may reach for a folder beside the clone
# (the project was started from notes kept next to it; everything it needs is copied in).
if git ls-files -z 2>/dev/null | xargs -0 grep -lE '(\.\./|/work/)shared\b' -- 2>/dev/null \
     | grep -v '^scripts/check-style.sh$'; then
  echo "check-style: the files above refer to a shared folder outside the repository" >&2
  exit 1
fi
