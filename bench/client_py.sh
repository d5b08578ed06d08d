#!/usr/bin/env bash
# client_py.sh - throughput of the Python client package (clients/python) itself, in one
# command (see bench/README.md, "Python client"): calls per second from one process with
# the blocking Client (1 and 16 threads) and the AsyncClient (1 and 64 tasks), beside the
# same round trip in raw pika, against a stand-in worker that answers at once (no database,
# no Duo) on a quorum queue of a private prefix on the local broker of scripts/services.sh.
#   bench/client_py.sh [CALLS [RUNS]]     (default 5000 calls per mode, 3 runs)
# Needs the local services up (scripts/services.sh start) and Debian's python3-pika,
# python3-aio-pika and python3-msgpack. Prints one line per mode and run, then the median
# calls/s per mode.
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
CALLS=${1:-5000}
RUNS=${2:-3}
eval "$("$ROOT/scripts/services.sh" env)"
export AMQP_URL="$DUO_MQ_ADMIN_URL"   # own prefix: the broker administrator on vhost /
export PYTHONPATH="$ROOT/clients/python/src${PYTHONPATH:+:$PYTHONPATH}"
out=$(mktemp)
trap 'rm -f "$out"' EXIT
for _ in $(seq 1 "$RUNS"); do
  timeout 900 /usr/bin/python3 "$ROOT/bench/client_py.py" run "$CALLS" | tee -a "$out"
done
echo "median over $RUNS run(s) of $CALLS calls:"
for key in "raw conc=1" "sync conc=1" "sync conc=16" "async conc=1" "async conc=64"; do
  m=${key%% *}; c=${key##*=}
  lines=$(grep " mode=$m conc=$c " "$out" || true)
  [ -n "$lines" ] || continue
  n=$(printf '%s\n' "$lines" | wc -l)
  mid=$(( (n + 1) / 2 ))
  rate=$(printf '%s\n' "$lines" | sed 's/.*calls_per_s=\([0-9]*\).*/\1/' | sort -n | sed -n "${mid}p")
  cpu=$(printf '%s\n' "$lines" | sed 's/.*cpu_ms_per_call=\([0-9.]*\).*/\1/' | sort -n | sed -n "${mid}p")
  printf '  %-14s %7s calls/s  %s ms CPU per call\n' "$key" "$rate" "$cpu"
done
