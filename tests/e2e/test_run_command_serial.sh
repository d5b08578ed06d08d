#!/usr/bin/env bash
# test_run_command_serial.sh - the README's run command on its own ports and state folder:
# it builds, brings PostgreSQL, RabbitMQ and the emulator up, starts every worker, runs
# the main job (enroll, scan, authenticate) and prints where to look; `run.sh status`
# shows everything up; `run.sh stop` brings everything down again.
set -u
ROOT="${DUO_SOURCE_DIR:?}"
TMP="$(mktemp -d /tmp/duo-runcmd.XXXXXX)"
chmod 755 "$TMP"
export DUO_RUN_DIR="$TMP/run" DUO_BUILD_DIR="${DUO_RUN_BUILD_DIR:-$TMP/build}"
export DUO_PG_PORT=56532 DUO_MQ_PORT=56772 DUO_MQ_DIST_PORT=56782 DUO_EMU_PORT=59543
unset DATABASE_URL AMQP_URL DUO_SECRET_KEY DUO_SECRET_KEY_FILE MQ_PREFIX DUO_CA_FILE
pass=0; fail=0
ok() { pass=$((pass + 1)); }
bad() { echo "FAIL: $*"; fail=$((fail + 1)); }
cleanup() { "$ROOT/scripts/run.sh" stop >/dev/null 2>&1; rm -rf "$TMP"; }
trap cleanup EXIT

out="$("$ROOT/scripts/run.sh" 2>&1)"; rc=$?
[ $rc -eq 0 ] && ok || bad "run.sh exited $rc: $(printf '%s' "$out" | tail -20)"
printf '%s' "$out" | grep -q '"enrollment_status":"success"' && ok || bad "no successful enrollment in: $out"
printf '%s' "$out" | grep -q '"result":"allow"' && ok || bad "no allowed push in: $out"
printf '%s' "$out" | grep -q 'run.sh stop' && ok || bad "no word on how to stop"
st="$("$ROOT/scripts/run.sh" status 2>&1)"
for s in postgresql rabbitmq emulator duo-enroll duo-auth duo-import; do
  printf '%s' "$st" | grep -q "^$s: up" && ok || bad "$s not up: $st"
done
# Running it again while up is harmless.
"$ROOT/scripts/run.sh" >/dev/null 2>&1 && ok || bad "second run.sh failed"
"$ROOT/scripts/run.sh" stop >/dev/null 2>&1 && ok || bad "run.sh stop failed"
st="$("$ROOT/scripts/run.sh" status 2>&1)"
[ "$(printf '%s' "$st" | grep -c ': down')" -eq 6 ] && ok || bad "not all down after stop: $st"
echo "$pass passed, $fail failed"
[ "$fail" -eq 0 ]
