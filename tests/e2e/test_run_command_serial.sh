#!/usr/bin/env bash
# test_run_command_serial.sh - the README's run command on its own ports and state folder:
# it builds, brings PostgreSQL, RabbitMQ and the emulator up, starts every worker, runs
# the main job (enroll, scan, authenticate) and prints where to look; `run.sh status`
# shows everything up; `run.sh stop` brings everything down again. Before that: a metrics
# port set explicitly and held by another program stops the run at once, naming the port
# and its holder; a worker that cannot start is reported with its log tail and a non-zero
# exit, never as "started". The workers run as their least-privilege roles, their
# metrics on loopback only, and the key file is private.
set -u
ROOT="${DUO_SOURCE_DIR:?}"
TMP="$(mktemp -d /tmp/duo-runcmd.XXXXXX)"
chmod 755 "$TMP"
export DUO_RUN_DIR="$TMP/run" DUO_BUILD_DIR="${DUO_RUN_BUILD_DIR:-$TMP/build}"
# Ports of its own, free now (other checkouts may run this very test at the same time).
read -r DUO_PG_PORT DUO_MQ_PORT DUO_MQ_TLS_PORT DUO_MQ_DIST_PORT DUO_EMU_PORT < <(python3 -c '
import socket
ss = [socket.socket() for _ in range(5)]
for s in ss: s.bind(("127.0.0.1", 0))
print(*[s.getsockname()[1] for s in ss])')
export DUO_PG_PORT DUO_MQ_PORT DUO_MQ_TLS_PORT DUO_MQ_DIST_PORT DUO_EMU_PORT
unset DATABASE_URL AMQP_URL DUO_SECRET_KEY DUO_SECRET_KEY_FILE MQ_PREFIX DUO_CA_FILE DUO_METRICS_PORT \
  METRICS_ADDR METRICS_PORT
HOLDER_PID=
pass=0; fail=0
ok() { pass=$((pass + 1)); }
bad() { echo "FAIL: $*"; fail=$((fail + 1)); }
cleanup() {
  [ -n "$HOLDER_PID" ] && kill "$HOLDER_PID" 2>/dev/null
  "$ROOT/scripts/run.sh" stop >/dev/null 2>&1; rm -rf "$TMP"
}
trap cleanup EXIT

# A program of ours holds a port; DUO_METRICS_PORT names it explicitly.
python3 -c 'import socket,sys,time; s=socket.socket(); s.bind(("127.0.0.1",0)); s.listen(); print(s.getsockname()[1], flush=True); time.sleep(3600)' >"$TMP/holder.port" &
HOLDER_PID=$!
for _ in $(seq 1 50); do [ -s "$TMP/holder.port" ] && break; sleep 0.1; done
held="$(cat "$TMP/holder.port")"
out="$(DUO_METRICS_PORT="$held" "$ROOT/scripts/run.sh" 2>&1)"; rc=$?
[ $rc -ne 0 ] && ok || bad "run.sh with its metrics port taken exited 0"
printf '%s' "$out" | tail -1 | grep -q "port $held .*taken by .*python3" && ok ||
  bad "no line naming port $held and its holder: $(printf '%s' "$out" | tail -3)"
printf '%s' "$out" | grep -q "started duo-" && bad "a worker was reported started: $out" || ok
kill "$HOLDER_PID"; HOLDER_PID=""

# A worker that cannot start: reported with its log, never as started.
out="$(DUO_SCHEMAS_DIR=/nonexistent "$ROOT/scripts/run.sh" 2>&1)"; rc=$?
[ $rc -ne 0 ] && ok || bad "run.sh with a worker that cannot start exited 0"
printf '%s' "$out" | grep -q "duo-enroll exited at start" && ok || bad "no word of the failed worker: $out"
printf '%s' "$out" | grep -q "no schemas folder found" && ok || bad "no log tail naming the cause: $out"
printf '%s' "$out" | grep -q "started duo-" && bad "a worker was reported started: $out" || ok

out="$("$ROOT/scripts/run.sh" 2>&1)"; rc=$?
[ $rc -eq 0 ] && ok || bad "run.sh exited $rc: $(printf '%s' "$out" | tail -20)"
printf '%s' "$out" | grep -q '"enrollment_status":"success"' && ok || bad "no successful enrollment in: $out"
printf '%s' "$out" | grep -q '"result":"allow"' && ok || bad "no allowed push in: $out"
printf '%s' "$out" | grep -q 'run.sh stop' && ok || bad "no word on how to stop"
[ "$(printf '%s' "$out" | grep -c 'started duo-.*healthy')" -eq 3 ] && ok || bad "not three healthy workers: $out"
# Least privilege: each worker's database session runs as its own role, metrics listen
# on loopback only, the key file and the passwords are private.
eval "$("$ROOT/scripts/services.sh" env)"
roles="$(psql "$DUO_PG_ADMIN_URL" -XAtqc "SELECT string_agg(DISTINCT usename, ',' ORDER BY usename) FROM pg_stat_activity WHERE datname = 'duo' AND usename LIKE 'duo\_%'")"
[ "$roles" = "duo_auth,duo_enroll,duo_import" ] && ok || bad "worker sessions run as: $roles"
for w in enroll auth import; do
  p="$(cat "$DUO_RUN_DIR/workers/$w.port")"
  ss -Hltn "sport = :$p" | grep -q "127.0.0.1:$p" && ok || bad "duo-$w metrics not on loopback: $(ss -Hltn "sport = :$p")"
done
for f in "$DUO_RUN_DIR/secret.key" "$DUO_RUN_DIR/secrets.env" "$DUO_RUN_DIR/env"; do
  [ "$(stat -c %a "$f")" = 600 ] && ok || bad "$f is mode $(stat -c %a "$f")"
done
st="$("$ROOT/scripts/run.sh" status 2>&1)"
for s in postgresql rabbitmq emulator duo-enroll duo-auth duo-import; do
  printf '%s' "$st" | grep -q "^$s: up" && ok || bad "$s not up: $st"
done
# Running it again while up is harmless.
"$ROOT/scripts/run.sh" >/dev/null 2>&1 && ok || bad "second run.sh failed"
"$ROOT/scripts/run.sh" stop >/dev/null 2>&1 && ok || bad "run.sh stop failed"
st="$("$ROOT/scripts/run.sh" status 2>&1)"
[ "$(printf '%s' "$st" | grep -c ': down')" -eq 6 ] && ok || bad "not all down after stop: $st"
# A key file other users can read stops the run before any worker starts.
chmod 644 "$DUO_RUN_DIR/secret.key"
out="$("$ROOT/scripts/run.sh" 2>&1)" && bad "run.sh accepted a world-readable key file" || ok
printf '%s' "$out" | grep -q "secret.key is readable by other users (mode 644); chmod 600 it" && ok ||
  bad "no word of the key file's mode: $(printf '%s' "$out" | tail -3)"
echo "$pass passed, $fail failed"
[ "$fail" -eq 0 ]
