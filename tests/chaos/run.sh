#!/usr/bin/env bash
# run.sh - the chaos harness, one command:
#   tests/chaos/run.sh [--jobs 10000] [--cluster] [--kills N] [--no-mq-restart] ...
# (all options: tests/chaos/run.sh --help). Needs the local services up
# (scripts/services.sh start) and a build; DUO_BIN_DIR defaults to build/bin. With
# --cluster it starts the three-node cluster of scripts/cluster.sh (if not up) and gives
# every process all three node URLs. Loopback only; bounded by --send-secs + --wait-secs.
# Prints one summary line "chaos: jobs=... lost=0 ..." and exits non-zero when a job was
# lost, a device duplicated, the import miscounted or an unexpected message dead-lettered.
set -euo pipefail
ROOT="$(cd "$(dirname "$0")/../.." && pwd)"
eval "$("$ROOT/scripts/services.sh" env)"
export AMQP_URL="$DUO_MQ_ADMIN_URL"   # own prefixes: the broker administrator on vhost /
export DUO_BIN_DIR="${DUO_BIN_DIR:-$ROOT/build/bin}"
export DUO_SOURCE_DIR="$ROOT"
if [ ! -x "$DUO_BIN_DIR/chaos" ]; then
  echo "chaos: $DUO_BIN_DIR/chaos not built (cmake --build ...; or set DUO_BIN_DIR)" >&2
  exit 2
fi
for a in "$@"; do
  if [ "$a" = "--cluster" ]; then
    "$ROOT/scripts/cluster.sh" start
    CHAOS_AMQP_URLS="$("$ROOT/scripts/cluster.sh" urls)"
    export CHAOS_AMQP_URLS
  fi
done
exec python3 "$ROOT/tests/chaos/chaos.py" "$@"
