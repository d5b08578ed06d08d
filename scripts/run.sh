#!/usr/bin/env bash
# run.sh - the one run command: bootstrap, build, start PostgreSQL, RabbitMQ and (without
# Duo credentials) the Duo emulator, migrate, start every worker, then run the main job
# once as a demonstration: enroll a user with Duo and challenge them.
#   scripts/run.sh          start everything and run the demo (idempotent)
#   scripts/run.sh stop     stop the workers and the services
#   scripts/run.sh status   what is running
# With real Duo: export DUO_API_HOSTNAME, DUO_CLIENT_ID, DUO_CLIENT_SECRET (and optionally
# DUO_ADMIN_INTEGRATION_KEY, DUO_ADMIN_SECRET_KEY) before running; the demo then only
# starts an enrollment and prints the activation link for you to scan.
# Identities: duoctl migrates as the database owner; each worker connects as its own
# least-privilege role (DUO_DB_URL_<KIND> from services.sh) and as the broker user duo.
# Ports: every one is a setting (services.sh's, and DUO_METRICS_PORT, the first of the
# three consecutive metrics ports, default 9101). With the default, ports already taken
# are replaced by free ones; a port set explicitly and taken stops the run at once,
# naming the program that holds it. Metrics listen on METRICS_ADDR (default 127.0.0.1).
# A worker counts as started only once its /healthz answers 200; otherwise the run
# prints the last lines of its log and exits non-zero.
set -euo pipefail
ROOT="$(cd "$(dirname "$0")/.." && pwd)"
RUN="${DUO_RUN_DIR:-$ROOT/.run}"
BUILD="${DUO_BUILD_DIR:-$ROOT/build}"
BIN="$BUILD/bin"
WORKERS=(enroll auth import)

say() { echo "run: $*" >&2; }
die() { say "$*"; exit 1; }

port_holder() { ss -Hltnp "sport = :$1" 2>/dev/null | head -1 | grep -o 'users:(([^)]*))' || ss -Hltn "sport = :$1" 2>/dev/null | head -1; }
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }

# The metrics port of the n-th worker (0-based): DUO_METRICS_PORT + n, or when that
# default is taken a free port; an explicit DUO_METRICS_PORT that is taken is fatal.
metrics_port() {
  local n="$1" port holder
  port=$(( ${DUO_METRICS_PORT:-9101} + n ))
  holder="$(port_holder "$port")"
  [ -z "$holder" ] && { echo "$port"; return; }
  if [ -n "${DUO_METRICS_PORT:-}" ]; then
    die "metrics port $port (DUO_METRICS_PORT=$DUO_METRICS_PORT + $n) is taken by $holder; set DUO_METRICS_PORT to a free range"
  fi
  port="$(free_port)"
  say "metrics port $(( 9101 + n )) is taken by $holder; using $port instead"
  echo "$port"
}

# Waits until the worker's /healthz answers 200; on failure prints its log tail.
await_health() {
  local w="$1" pid="$2" port="$3" log="$4" host="${METRICS_ADDR:-127.0.0.1}"
  [ "$host" = 0.0.0.0 ] && host=127.0.0.1
  [ "$host" = :: ] && host=::1
  case "$host" in *:*) host="[$host]" ;; esac
  for _ in $(seq 1 "${DUO_HEALTH_WAIT_SECS:-45}0"); do
    curl -fsS -o /dev/null "http://$host:$port/healthz" 2>/dev/null && return 0
    kill -0 "$pid" 2>/dev/null || break
    sleep 0.1
  done
  if kill -0 "$pid" 2>/dev/null; then
    say "duo-$w (pid $pid) did not answer http://$host:$port/healthz; last lines of $log:"
    kill -TERM "$pid" 2>/dev/null || true
  else
    say "duo-$w exited at start; last lines of $log:"
  fi
  tail -n 20 "$log" >&2
  rm -f "$RUN/workers/$w.pid"
  exit 1
}

stop_workers() {
  for w in "${WORKERS[@]}"; do
    f="$RUN/workers/$w.pid"
    [ -f "$f" ] || continue
    pid="$(cat "$f")"
    if kill -0 "$pid" 2>/dev/null; then
      kill -TERM "$pid"
      for _ in $(seq 1 100); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
      kill -KILL "$pid" 2>/dev/null || true
      say "stopped duo-$w"
    fi
    rm -f "$f" "$RUN/workers/$w.port"
  done
}

case "${1:-start}" in
  stop) stop_workers; "$ROOT/scripts/services.sh" stop; exit 0 ;;
  status)
    "$ROOT/scripts/services.sh" status
    for w in "${WORKERS[@]}"; do
      f="$RUN/workers/$w.pid"
      if [ -f "$f" ] && kill -0 "$(cat "$f")" 2>/dev/null; then echo "duo-$w: up"; else echo "duo-$w: down"; fi
    done
    exit 0 ;;
  start) ;;
  *) echo "usage: $0 [start|stop|status]" >&2; exit 2 ;;
esac

"$ROOT/scripts/bootstrap.sh"
cmake -S "$ROOT" -B "$BUILD" -DCMAKE_BUILD_TYPE=RelWithDebInfo >/dev/null
cmake --build "$BUILD" -j"$(nproc)" >/dev/null
mkdir -p "$RUN"
# The key that encrypts stage secrets at rest: made once, kept in the state folder.
if [ -z "${DUO_SECRET_KEY:-}" ] && [ -z "${DUO_SECRET_KEY_FILE:-}" ]; then
  [ -f "$RUN/secret.key" ] || (umask 077; openssl rand -base64 32 > "$RUN/secret.key")
  export DUO_SECRET_KEY_FILE="$RUN/secret.key"
fi
# The key file must stay private: workers refuse a key file other users can read.
if [ -n "${DUO_SECRET_KEY_FILE:-}" ] && [ -f "$DUO_SECRET_KEY_FILE" ] &&
   [ -n "$(find "$DUO_SECRET_KEY_FILE" -perm /077 2>/dev/null)" ]; then
  die "$DUO_SECRET_KEY_FILE is readable by other users (mode $(stat -c %a "$DUO_SECRET_KEY_FILE")); chmod 600 it"
fi
"$ROOT/scripts/services.sh" start
eval "$("$ROOT/scripts/services.sh" env)"
mkdir -p "$RUN/workers" "$RUN/logs"

export MQ_PREFIX="${MQ_PREFIX:-duo}"
"$BIN/duoctl" migrate >/dev/null

stage_exists() { "$BIN/duoctl" stage show demo >/dev/null 2>&1; }
if [ -n "${DUO_API_HOSTNAME:-}" ]; then
  MODE=duo
  if ! stage_exists; then
    args=(--name demo --api-hostname "$DUO_API_HOSTNAME" --client-id "$DUO_CLIENT_ID" --client-secret-stdin)
    if [ -n "${DUO_ADMIN_INTEGRATION_KEY:-}" ]; then
      args+=(--admin-integration-key "$DUO_ADMIN_INTEGRATION_KEY" --admin-secret-key-file <(printf '%s' "$DUO_ADMIN_SECRET_KEY"))
    fi
    printf '%s' "$DUO_CLIENT_SECRET" | "$BIN/duoctl" stage create "${args[@]}" >/dev/null
  fi
else
  MODE=emulator
  IKEY=DIDEMO0000000000AUTH; SKEY=demodemodemodemodemodemodemodemodemodemo
  AIKEY=DIDEMO000000000ADMIN; ASKEY=adminadminadminadminadminadminadminadmin
  curl -fsS --cacert "$DUO_CA_FILE" -H 'Content-Type: application/json' "$DUO_EMU_URL/_emu/account" \
    -d "{\"account\":\"demo\",\"integrations\":[{\"ikey\":\"$IKEY\",\"skey\":\"$SKEY\",\"type\":\"auth\"},{\"ikey\":\"$AIKEY\",\"skey\":\"$ASKEY\",\"type\":\"admin\"}],\"admin_licensed\":true}" >/dev/null
  if ! stage_exists; then
    printf '%s' "$SKEY" | "$BIN/duoctl" stage create --name demo --api-hostname "$DUO_EMU_HOST" \
      --client-id "$IKEY" --client-secret-stdin --admin-integration-key "$AIKEY" \
      --admin-secret-key-file <(printf '%s' "$ASKEY") --friendly-name "Duo (emulator)" >/dev/null
  fi
fi

n=0
for w in "${WORKERS[@]}"; do
  [ -x "$BIN/duo-$w" ] || continue
  f="$RUN/workers/$w.pid"
  if [ -f "$f" ] && kill -0 "$(cat "$f")" 2>/dev/null; then n=$((n + 1)); continue; fi
  port="$(metrics_port "$n")"
  url_var="DUO_DB_URL_${w^^}"
  DATABASE_URL="${!url_var}" METRICS_PORT=$port setsid nohup "$BIN/duo-$w" >>"$RUN/logs/$w.log" 2>&1 &
  pid=$!
  echo "$pid" > "$f"
  echo "$port" > "$RUN/workers/$w.port"
  await_health "$w" "$pid" "$port" "$RUN/logs/$w.log"
  say "started duo-$w (pid $pid, healthy; metrics http://${METRICS_ADDR:-127.0.0.1}:$port/metrics, log $RUN/logs/$w.log)"
  n=$((n + 1))
done

# The main job, once: enroll a demo user and, on the emulator, scan and authenticate.
user="demo-$(date +%s)"
"$BIN/duoctl" user upsert --username "$user" >/dev/null
say "enrolling $user with Duo ($MODE)"
begin="$("$BIN/duoctl" enroll begin --stage demo --username "$user" --timeout 60)"
echo "$begin"
if [ "$MODE" = emulator ]; then
  code="$(printf '%s' "$begin" | python3 -c 'import json,sys; print(json.load(sys.stdin)["activation_code"])')"
  enrollment="$(printf '%s' "$begin" | python3 -c 'import json,sys; print(json.load(sys.stdin)["enrollment_id"])')"
  curl -fsS --cacert "$DUO_CA_FILE" -H 'Content-Type: application/json' "$DUO_EMU_URL/_emu/enrollment" \
    -d "{\"account\":\"demo\",\"activation_code\":\"$code\",\"action\":\"complete\"}" >/dev/null
  say "the emulator scanned the QR code; checking the enrollment"
  "$BIN/duoctl" enroll status --stage demo --enrollment "$enrollment" --timeout 60
  if [ -x "$BIN/duo-auth" ]; then
    say "challenging $user with a push"
    "$BIN/duoctl" auth --stage demo --username "$user" --factor push --timeout 60 || true
  fi
else
  say "scan the activation_barcode above with Duo Mobile, then:"
  say "  $BIN/duoctl enroll status --stage demo --enrollment <enrollment_id>"
fi

cat >&2 <<MSG

run: everything is up.
  logs:     $RUN/logs/*.log (JSON lines), services under $RUN/
  metrics:  $(for w in "${WORKERS[@]}"; do [ -f "$RUN/workers/$w.port" ] && printf 'http://%s:%s/metrics (%s) ' "${METRICS_ADDR:-127.0.0.1}" "$(cat "$RUN/workers/$w.port")" "$w"; done); /healthz on each
  try:      eval "\$(scripts/services.sh env)"; export DUO_SECRET_KEY_FILE=$RUN/secret.key
            $BIN/duoctl stage list
  stop:     scripts/run.sh stop
MSG
