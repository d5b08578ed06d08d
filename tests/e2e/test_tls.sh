#!/usr/bin/env bash
# test_tls.sh - TLS end to end against the local services' TLS listeners (certificate for
# localhost from scripts/gen-ca.sh): an enrollment worker connects to PostgreSQL with
# sslmode=verify-full and to RabbitMQ with amqps:// (CA verification and host name check)
# and completes an enroll.begin job sent by duoctl, itself over amqps; both connections
# are seen encrypted by the servers. A wrong CA or a wrong host name, for either service,
# stops the worker at once with one line naming the setting to fix.
# Prints "N passed, M failed"; exits non-zero on any failure.
set -u
ROOT="${DUO_SOURCE_DIR:-$(cd "$(dirname "$0")/../.." && pwd)}"
BIN="${DUO_BIN_DIR:-$ROOT/build-test/bin}"
if [ -z "${DUO_TLS_CA_FILE:-}" ]; then eval "$("$ROOT/scripts/services.sh" env)"; fi
TAG="tls$$x$RANDOM"
DB="duo$TAG"
TMP="$(mktemp -d)"
WPID=""
pass=0; fail=0
ok() { pass=$((pass + 1)); echo "ok   $1"; }
bad() { fail=$((fail + 1)); echo "FAIL $1${2:+: $2}"; }
cleanup() {
  [ -n "$WPID" ] && kill -KILL "$WPID" 2>/dev/null
  psql "$DUO_PG_ADMIN_URL" -qc "DROP DATABASE IF EXISTS $DB WITH (FORCE)" >/dev/null 2>&1
  "$ROOT/scripts/services.sh" mqctl delete_vhost "v$TAG" >/dev/null 2>&1 </dev/null
  "$ROOT/scripts/services.sh" mqctl delete_user "$TAG-w" >/dev/null 2>&1 </dev/null
  "$ROOT/scripts/services.sh" mqctl delete_user "$TAG-p" >/dev/null 2>&1 </dev/null
  rm -rf "$TMP"
}
trap cleanup EXIT

# postgresql://user:pw@127.0.0.1:port/db -> the same over TLS to HOST, verified by CA.
pg_tls() { # pg_tls URL HOST CA
  local url="${1%/*}/$DB" hp
  hp="${url#*@}"; hp="${hp%%/*}"
  echo "${url%%@*}@$2:${hp#*:}/$DB?sslmode=verify-full&sslrootcert=$3"
}
# The project's broker identity (scripts/mq-definitions.py) on a vhost of the test's own.
MQ_PW="$(openssl rand -hex 12)"
python3 "$ROOT/scripts/mq-definitions.py" --vhost "v$TAG" --prefix "$TAG" --worker "$TAG-w:$MQ_PW" \
  --publisher "$TAG-p:$MQ_PW" >"$TMP/defs.json" &&
  "$ROOT/scripts/services.sh" mqctl import_definitions "$TMP/defs.json" >/dev/null </dev/null ||
  { echo "cannot make the broker identities"; exit 1; }
amqps() { echo "amqps://$TAG-w:$MQ_PW@$1:$DUO_MQ_TLS_PORT/v$TAG"; }

export MQ_PREFIX="$TAG" DUO_SECRET_KEY="$(openssl rand -base64 32)" LOG_LEVEL=info
export AMQP_URL; AMQP_URL="$(amqps localhost)"
export AMQP_CA_FILE="$DUO_TLS_CA_FILE"
psql "$DUO_PG_ADMIN_URL" -qc "CREATE DATABASE $DB" >/dev/null || { echo "cannot create $DB"; exit 1; }
export DATABASE_URL; DATABASE_URL="$(pg_tls "$DUO_PG_ADMIN_URL" localhost "$DUO_TLS_CA_FILE")"
WORKER_DB="$(pg_tls "$DUO_DB_URL_ENROLL" localhost "$DUO_TLS_CA_FILE")"

out="$("$BIN/duoctl" migrate 2>&1)" && ok "migrate over verify-full" || bad "migrate over verify-full" "$out"
IKEY="DI${TAG^^}AAAAAAAAAAAAAAAAAAAA"; IKEY="${IKEY:0:20}"; SKEY="$(openssl rand -hex 20)"
curl -fsS --cacert "$DUO_CA_FILE" -H 'Content-Type: application/json' "$DUO_EMU_URL/_emu/account" \
  -d "{\"account\":\"$TAG\",\"integrations\":[{\"ikey\":\"$IKEY\",\"skey\":\"$SKEY\",\"type\":\"auth\"}]}" >/dev/null ||
  bad "emulator account"
echo "$SKEY" >> "${DUO_RUN_DIR:-$ROOT/.run}/test-secrets.txt"
out="$(printf '%s' "$SKEY" | "$BIN/duoctl" stage create --name "$TAG" --api-hostname "$DUO_EMU_HOST" \
  --client-id "$IKEY" --client-secret-stdin 2>&1)" && ok "stage create" || bad "stage create" "$out"
"$BIN/duoctl" user upsert --username alice >/dev/null 2>&1 || bad "user upsert"

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
PORT="$(free_port)"
DATABASE_URL="$WORKER_DB" METRICS_PORT="$PORT" "$BIN/duo-enroll" 2>"$TMP/worker.log" &
WPID=$!
up=""
for _ in $(seq 1 200); do
  curl -fsS -o /dev/null "http://127.0.0.1:$PORT/healthz" 2>/dev/null && { up=1; break; }
  kill -0 "$WPID" 2>/dev/null || break
  sleep 0.1
done
[ -n "$up" ] && ok "worker healthy over TLS" || bad "worker healthy over TLS" "$(tail -3 "$TMP/worker.log")"

out="$("$BIN/duoctl" enroll begin --stage "$TAG" --username alice --timeout 30 2>&1)"
grep -q '"activation_code"' <<<"$out" && ok "enroll.begin completed over amqps + verify-full" ||
  bad "enroll.begin over TLS" "$out"
who="$(psql "${DUO_PG_ADMIN_URL%/*}/$DB" -XAtqc "SELECT string_agg(DISTINCT coalesce(publisher, '-'), ',') FROM job")"
[ "$who" = "$TAG-w" ] && ok "the job records its broker-validated publisher" || bad "job.publisher: '$who'"

n="$(psql "$DUO_PG_ADMIN_URL" -XAtqc "SELECT count(*) FROM pg_stat_ssl s JOIN pg_stat_activity a USING (pid) WHERE s.ssl AND a.usename = 'duo_enroll' AND a.datname = '$DB'")"
[ "${n:-0}" -ge 1 ] && ok "the worker's database session is encrypted" || bad "no TLS session of duo_enroll: $n"
conns="$("$ROOT/scripts/services.sh" mqctl list_connections client_properties ssl 2>/dev/null | grep "duo-enroll pid $WPID")"
grep -q "true" <<<"$conns" && ok "the worker's broker connection is amqps" || bad "broker connection not TLS" "$conns"
kill -TERM "$WPID"; wait "$WPID" 2>/dev/null; WPID=""

# Each misconfiguration: the worker exits at once (no 30 s of retries) with one error
# line naming the setting.
refused() { # refused WHAT PATTERN ENV...
  local what="$1" pattern="$2" start rc lines; shift 2
  start=$(date +%s)
  env "$@" METRICS_PORT=0 timeout 30 "$BIN/duo-enroll" 2>"$TMP/bad.log"; rc=$?
  lines="$(grep -c '"level":"error"' "$TMP/bad.log")"
  if [ "$rc" -eq 0 ] || [ "$rc" -eq 124 ]; then bad "$what: worker did not stop (rc $rc)"
  elif [ "$lines" -ne 1 ] || ! grep '"level":"error"' "$TMP/bad.log" | grep -q -- "$pattern"; then
    bad "$what: expected one error line with '$pattern'" "$(cat "$TMP/bad.log")"
  elif [ $(( $(date +%s) - start )) -gt 10 ]; then bad "$what: took $(( $(date +%s) - start )) s"
  else ok "$what: one line naming it"; fi
}
refused "wrong broker CA" "AMQP_CA_FILE: the broker's certificate is not signed by $DUO_TLS_OTHER_CA_FILE" \
  DATABASE_URL="$WORKER_DB" AMQP_CA_FILE="$DUO_TLS_OTHER_CA_FILE"
refused "wrong broker host name" "AMQP_URL: host '127.0.0.1' does not match" \
  DATABASE_URL="$WORKER_DB" AMQP_URL="$(amqps 127.0.0.1)"
refused "wrong database CA" "DATABASE_URL sslrootcert=$DUO_TLS_OTHER_CA_FILE does not verify" \
  DATABASE_URL="$(pg_tls "$DUO_DB_URL_ENROLL" localhost "$DUO_TLS_OTHER_CA_FILE")"
refused "wrong database host name" "DATABASE_URL host=127.0.0.1 does not match" \
  DATABASE_URL="$(pg_tls "$DUO_DB_URL_ENROLL" 127.0.0.1 "$DUO_TLS_CA_FILE")"

echo "$pass passed, $fail failed"
[ "$fail" -eq 0 ]
