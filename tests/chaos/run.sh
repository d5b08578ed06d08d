#!/usr/bin/env bash
# run.sh - the chaos harness, one command:
#   tests/chaos/run.sh [--jobs 10000] [--cluster] [--pg-failover sync|async] [--kills N] ...
# (all options: tests/chaos/run.sh --help). Needs the local services up
# (scripts/services.sh start) and a build; DUO_BIN_DIR defaults to build/bin. With
# --cluster it starts the three-node cluster of scripts/cluster.sh (if not up) and gives
# every process all three node URLs. With --pg-failover it starts a fresh primary +
# standby pair (scripts/pg-ha.sh, that replication mode), gives every process both hosts
# and stops the pair afterwards (unless --keep). Loopback only; bounded by --send-secs +
# --wait-secs.
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
ha="" keep="" prev=""
for a in "$@"; do
  if [ "$a" = "--cluster" ]; then
    "$ROOT/scripts/cluster.sh" start
    # The harness declares topologies under prefixes of its own: the administrator.
    CHAOS_AMQP_URLS="$("$ROOT/scripts/cluster.sh" urls admin)"
    export CHAOS_AMQP_URLS
  fi
  case "$a" in --pg-failover=*) ha="${a#*=}" ;; --keep) keep=1 ;; esac
  [ "$prev" = "--pg-failover" ] && ha="$a"
  prev="$a"
done
if [ -z "$ha" ]; then
  exec python3 "$ROOT/tests/chaos/chaos.py" "$@"
fi
case "$ha" in sync|async) ;; *) echo "chaos: --pg-failover sync|async" >&2; exit 2 ;; esac
"$ROOT/scripts/pg-ha.sh" start "$ha"
eval "$("$ROOT/scripts/pg-ha.sh" env)"
[ -n "$keep" ] || trap '"$ROOT/scripts/pg-ha.sh" stop' EXIT
python3 "$ROOT/tests/chaos/chaos.py" "$@"
