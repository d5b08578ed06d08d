#!/usr/bin/env bash
# test_emulator_conformance.sh - the emulator's second judge: Duo's official Python client
# (Debian's python3-duo-client, installed by scripts/bootstrap.sh) drives every call the
# workers make, and the behaviours docs/EMULATOR.md promises beyond them, through
# tests/integration/emulator_conformance.py. Uses fresh account names, so it runs beside
# other tests on the shared emulator.
set -uo pipefail
ROOT="${DUO_SOURCE_DIR:-$(cd "$(dirname "$0")/../.." && pwd)}"
if [ -z "${DUO_EMU_URL:-}" ] || [ -z "${DUO_CA_FILE:-}" ]; then
  eval "$("$ROOT/scripts/services.sh" env)"
fi
export DUO_EMU_URL DUO_CA_FILE
# Debian's interpreter: the one python3-duo-client installs into (a python3 earlier on
# PATH, e.g. from pyenv, does not see Debian's dist-packages).
PY=/usr/bin/python3
[ -x "$PY" ] || PY=python3
exec "$PY" "$ROOT/tests/integration/emulator_conformance.py"
