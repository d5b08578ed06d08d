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
set -euo pipefail
ROOT="$(cd "$(dirname "$0")/.." && pwd)"
RUN="${DUO_RUN_DIR:-$ROOT/.run}"
BUILD="${DUO_BUILD_DIR:-$ROOT/build}"
BIN="$BUILD/bin"
WORKERS=(enroll auth import)

say() { echo "run: $*" >&2; }

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
    rm -f "$f"
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
"$ROOT/scripts/services.sh" start
eval "$("$ROOT/scripts/services.sh" env)"
mkdir -p "$RUN/workers" "$RUN/logs"

# The key that encrypts stage secrets at rest: made once, kept in the state folder.
if [ -z "${DUO_SECRET_KEY:-}" ] && [ -z "${DUO_SECRET_KEY_FILE:-}" ]; then
  [ -f "$RUN/secret.key" ] || (umask 077; openssl rand -base64 32 > "$RUN/secret.key")
  export DUO_SECRET_KEY_FILE="$RUN/secret.key"
fi
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

port=9101
for w in "${WORKERS[@]}"; do
  [ -x "$BIN/duo-$w" ] || continue
  f="$RUN/workers/$w.pid"
  if [ -f "$f" ] && kill -0 "$(cat "$f")" 2>/dev/null; then port=$((port + 1)); continue; fi
  METRICS_PORT=$port setsid nohup "$BIN/duo-$w" >>"$RUN/logs/$w.log" 2>&1 &
  echo $! > "$f"
  say "started duo-$w (pid $!, metrics http://127.0.0.1:$port/metrics, log $RUN/logs/$w.log)"
  port=$((port + 1))
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
  metrics:  http://127.0.0.1:9101/metrics (enroll), :9102 (auth), :9103 (import); /healthz on each
  try:      eval "\$(scripts/services.sh env)"; export DUO_SECRET_KEY_FILE=$RUN/secret.key
            $BIN/duoctl stage list
  stop:     scripts/run.sh stop
MSG
