#!/usr/bin/env bash
# test_duoctl_admin.sh - duoctl stage/user/device administration against a fresh
# database: every command works, secrets are stored only as v1: envelopes and never
# printed, a missing key is refused, rotate-key re-encrypts under a new key, delete
# reports its device count, and a bulk user load works. Prints "N passed, M failed".
set -uo pipefail

ROOT="${DUO_SOURCE_DIR:-$(cd "$(dirname "$0")/../.." && pwd)}"
if [ -z "${DUO_PG_ADMIN_URL:-}" ]; then
  eval "$("$ROOT/scripts/services.sh" env)"
fi
DUOCTL="${DUO_BIN_DIR:-$ROOT/build/bin}/duoctl"
TMP="$(mktemp -d)"
DB="duoadmin_$$_${RANDOM}"
PASS=0
FAIL=0
cleanup() {
  psql "$DUO_PG_ADMIN_URL" -qc "DROP DATABASE IF EXISTS $DB WITH (FORCE)" >/dev/null 2>&1
  rm -rf "$TMP"
}
trap cleanup EXIT

ok() { PASS=$((PASS + 1)); echo "ok   $1"; }
bad() { FAIL=$((FAIL + 1)); echo "FAIL $1${2:+: $2}"; }
expect() { # expect NAME COMMAND... : passes when the command succeeds (stdout dropped)
  local name="$1"; shift
  if "$@" >/dev/null; then ok "$name"; else bad "$name"; fi
}
sql() { psql "$DATABASE_URL" -XAtqc "$1"; }
jq_py() { # jq_py FILE EXPR: evaluates EXPR over the JSON lines of FILE (list o)
  python3 - "$1" "$2" <<'PY'
import json, sys
o = [json.loads(l) for l in open(sys.argv[1]) if l.strip()]
sys.exit(0 if eval(sys.argv[2]) else 1)
PY
}
ctl() { "$DUOCTL" "$@"; }

psql "$DUO_PG_ADMIN_URL" -qc "CREATE DATABASE $DB" >/dev/null || { echo "cannot create $DB"; exit 1; }
export DATABASE_URL="${DUO_PG_ADMIN_URL%/*}/$DB"
unset DUO_SECRET_KEY DUO_SECRET_KEY_FILE DUO_SECRET_KEY_PREVIOUS
expect "migrate" ctl migrate

KEY1="$(openssl rand -base64 32)"
KEY2="$(openssl rand -base64 32)"
CSEC="cs-$RANDOM-$RANDOM-client-secret-value"
ASEC="as-$RANDOM-$RANDOM-admin-secret-value"
CSEC2="cs2-$RANDOM-$RANDOM-rotated-client"

# --- a missing or malformed key is refused with a clear message ---
out="$(ctl stage create --name nokey --api-hostname h --client-id c --client-secret x 2>&1)"
rc=$?
if [ $rc -ne 0 ] && grep -q "DUO_SECRET_KEY" <<<"$out"; then ok "missing key refused"; else bad "missing key refused" "$rc $out"; fi
out="$(DUO_SECRET_KEY=not-a-key ctl stage create --name nokey --api-hostname h --client-id c --client-secret x 2>&1)"
rc=$?
if [ $rc -ne 0 ] && grep -q "DUO_SECRET_KEY" <<<"$out"; then ok "malformed key refused"; else bad "malformed key refused" "$rc $out"; fi
expect "nothing stored without a key" test "$(sql 'SELECT count(*) FROM duo_stage')" = 0

# --- create: flag, file and stdin secrets; key from a file ---
export DUO_SECRET_KEY_FILE="$TMP/key"
(umask 077; printf '%s\n' "$KEY1" >"$DUO_SECRET_KEY_FILE")   # a key file others can read is refused
printf '%s\n' "$ASEC" >"$TMP/asec"
openssl req -x509 -newkey rsa:2048 -nodes -keyout "$TMP/ca.key" -out "$TMP/ca.pem" -days 1 \
  -subj "/CN=duo-admin-test" >/dev/null 2>&1
printf '%s' "$CSEC" | ctl stage create --name alpha --api-hostname api-alpha.example.com \
  --client-id CIDALPHA --client-secret-stdin --admin-integration-key DIALPHA \
  --admin-secret-key-file "$TMP/asec" --friendly-name "Alpha Stage" --configure-flow flowA \
  --ca-bundle "$TMP/ca.pem" --sig-version 2 >"$TMP/create" 2>"$TMP/err"
expect "stage create" jq_py "$TMP/create" 'o[0]["name"] == "alpha" and o[0]["client_secret"] == "set" and o[0]["admin_secret_key"] == "set" and o[0]["ca_bundle"] == "set" and o[0]["sig_version"] == 2'
UUID="$(python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["uuid"])' "$TMP/create" 2>/dev/null)"
expect "stage create b" ctl stage create --name beta --api-hostname api-beta.example.com --client-id CIDBETA --client-secret "$CSEC-beta"
out="$(ctl stage create --name beta --api-hostname h --client-id c --client-secret x 2>&1)"
if [ $? -ne 0 ] && grep -q "already exists" <<<"$out"; then ok "duplicate name refused"; else bad "duplicate name refused" "$out"; fi
out="$(ctl stage create --name half --api-hostname h --client-id c --client-secret x --admin-integration-key DI 2>&1)"
if [ $? -ne 0 ] && grep -q "go together" <<<"$out"; then ok "half admin pair refused"; else bad "half admin pair refused" "$out"; fi
out="$(ctl stage create --name nosecret --api-hostname h --client-id c 2>&1)"
if [ $? -ne 0 ] && grep -q "client secret" <<<"$out"; then ok "missing client secret refused"; else bad "missing client secret refused" "$out"; fi

# --- raw columns hold envelopes, never the secret ---
raw="$(sql "SELECT client_secret_enc || ' ' || admin_secret_key_enc FROM duo_stage WHERE name = 'alpha'")"
KID1="$(sql "SELECT substr(client_secret_enc, 4, 8) FROM duo_stage WHERE name = 'alpha'")"
if [[ "$raw" == v1:* ]] && ! grep -q -e "$CSEC" -e "$ASEC" <<<"$raw"; then ok "raw columns are envelopes"; else bad "raw columns are envelopes" "$raw"; fi
expect "ca bundle stored as PEM" test "$(sql "SELECT ca_bundle LIKE '-----BEGIN CERTIFICATE-----%' FROM duo_stage WHERE name = 'alpha'")" = t

# --- list / show never print secrets ---
ctl stage list >"$TMP/list" 2>&1
expect "stage list" jq_py "$TMP/list" '[x["name"] for x in o] == ["alpha", "beta"]'
ctl stage show "$UUID" >"$TMP/show" 2>&1
expect "stage show by uuid" jq_py "$TMP/show" 'o[0]["name"] == "alpha" and o[0]["admin_integration_key"] == "DIALPHA" and o[0]["friendly_name"] == "Alpha Stage"'
ctl stage show alpha >>"$TMP/show" 2>&1
expect "stage show by name" jq_py "$TMP/show" 'len(o) == 2 and o[1]["uuid"] == o[0]["uuid"]'
if ! grep -q -e "$CSEC" -e "$ASEC" "$TMP/list" "$TMP/show" "$TMP/create"; then ok "secrets never printed"; else bad "secrets never printed"; fi
out="$(ctl stage show nosuch 2>&1)"
if [ $? -ne 0 ] && grep -q "no stage" <<<"$out"; then ok "show unknown stage"; else bad "show unknown stage" "$out"; fi

# --- update ---
ctl stage update alpha --name alpha2 --friendly-name "" --configure-flow flowB >"$TMP/upd" 2>&1
expect "stage update" jq_py "$TMP/upd" 'o[0]["name"] == "alpha2" and o[0]["friendly_name"] is None and o[0]["configure_flow"] == "flowB" and o[0]["client_secret"] == "set"'
expect "update keeps envelope" test "$(sql "SELECT client_secret_enc || ' ' || admin_secret_key_enc FROM duo_stage WHERE name = 'alpha2'")" = "$raw"
ctl stage update "$UUID" --admin-integration-key "" --admin-secret-key "" >"$TMP/upd2" 2>&1
expect "clear admin pair" jq_py "$TMP/upd2" 'o[0]["admin_secret_key"] == "unset" and o[0]["admin_integration_key"] is None'
printf '%s\n' "$ASEC" | ctl stage update alpha2 --admin-integration-key DIALPHA --admin-secret-key-stdin >/dev/null
expect "set admin pair again" test "$(sql "SELECT admin_secret_key_enc LIKE 'v1:%' FROM duo_stage WHERE name = 'alpha2'")" = t

# --- rotate-key: new key current, old key previous; secrets re-encrypted, still readable ---
unset DUO_SECRET_KEY_FILE
out="$(DUO_SECRET_KEY="$KEY2" ctl stage update alpha2 --client-secret "$CSEC2" 2>&1)"
expect "update under new key" test $? -eq 0
out="$(DUO_SECRET_KEY="$KEY2" ctl stage rotate-key 2>&1)"
if [ $? -ne 0 ] && grep -q "DUO_SECRET_KEY_PREVIOUS" <<<"$out"; then ok "rotate without previous key names it"; else bad "rotate without previous key names it" "$out"; fi
export DUO_SECRET_KEY="$KEY2" DUO_SECRET_KEY_PREVIOUS="$KEY1"
ctl stage rotate-key >"$TMP/rot" 2>&1
# alpha2 admin secret + beta client secret were under KEY1; alpha2 client secret already KEY2.
expect "rotate-key count" jq_py "$TMP/rot" 'o[0]["reencrypted"] == 2'
KID2="$(python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["key_id"])' "$TMP/rot" 2>/dev/null)"
expect "all under new key" test "$(sql "SELECT count(*) FROM duo_stage WHERE client_secret_enc NOT LIKE 'v1:$KID2:%' OR admin_secret_key_enc NOT LIKE 'v1:$KID2:%'")" = 0
expect "key id changed" test "$KID1" != "$KID2"
ctl stage rotate-key >"$TMP/rot2" 2>&1
expect "rotate-key again is a no-op" jq_py "$TMP/rot2" 'o[0]["reencrypted"] == 0'
# Readable after rotation with the new key only: rotating once more (to a third key, the
# second as previous) must decrypt every secret. test_store_admin checks the values.
KEY3="$(openssl rand -base64 32)"
out="$(DUO_SECRET_KEY="$KEY3" DUO_SECRET_KEY_PREVIOUS="$KEY1" ctl stage rotate-key 2>&1)"
if [ $? -ne 0 ] && grep -q "$KID2" <<<"$out"; then ok "rotation names the missing key id"; else bad "rotation names the missing key id" "$out"; fi
DUO_SECRET_KEY="$KEY3" DUO_SECRET_KEY_PREVIOUS="$KEY2" ctl stage rotate-key >"$TMP/rot3" 2>&1
expect "secrets decrypt after rotation" jq_py "$TMP/rot3" 'o[0]["reencrypted"] == 3'
unset DUO_SECRET_KEY_PREVIOUS
export DUO_SECRET_KEY="$KEY3"
expect "stage readable after rotation" ctl stage show alpha2
raw2="$(sql "SELECT string_agg(client_secret_enc || admin_secret_key_enc, ' ') FROM duo_stage")"
if ! grep -q -e "$CSEC" -e "$ASEC" <<<"$raw2"; then ok "no plaintext after rotation"; else bad "no plaintext after rotation"; fi

# --- users ---
ctl user upsert --username alice --email alice@example.com >"$TMP/u1" 2>&1
expect "user upsert insert" jq_py "$TMP/u1" 'o[0]["inserted"] is True'
ctl user upsert --username alice --inactive >"$TMP/u2" 2>&1
expect "user upsert update" jq_py "$TMP/u2" 'o[0]["inserted"] is False and o[0]["active"] is False'
expect "upsert keeps email" test "$(sql "SELECT email || active::text FROM app_user WHERE username = 'alice'")" = "alice@example.comfalse"
ctl user upsert --username bob >/dev/null
ctl user list >"$TMP/ul" 2>&1
expect "user list" jq_py "$TMP/ul" '[x["username"] for x in o] == ["alice", "bob"]'
ctl user list --limit 1 >"$TMP/ul1" 2>&1
expect "user list --limit" jq_py "$TMP/ul1" 'len(o) == 1'
python3 -c '
import sys
print("username,email")
for i in range(100000):
    print("load%06d,load%06d@example.com" % (i, i) if i % 2 else "load%06d," % i)' >"$TMP/users.csv"
ctl user load "$TMP/users.csv" >"$TMP/load" 2>&1
expect "user load 100000 CSV" jq_py "$TMP/load" 'o[0]["read"] == 100000 and o[0]["inserted"] == 100000'
expect "loaded rows present" test "$(sql "SELECT count(*) FROM app_user WHERE username LIKE 'load%'")" = 100000
expect "empty email is NULL" test "$(sql "SELECT count(*) FROM app_user WHERE username LIKE 'load%' AND email IS NULL")" = 50000
printf '{"username":"load000001","email":"x"}\n{"username":"json1","email":"j@example.com"}\n{"username":"json2"}\n' |
  ctl user load - >"$TMP/load2" 2>&1
expect "user load JSON lines" jq_py "$TMP/load2" 'o[0]["read"] == 3 and o[0]["inserted"] == 2 and o[0]["existing"] == 1'
printf 'ok1,a@b\n{"username": 5}\n' | ctl user load - >"$TMP/load3" 2>&1
rc=$?
if [ $rc -ne 0 ] && grep -q "line 2" "$TMP/load3" && [ "$(sql "SELECT count(*) FROM app_user WHERE username = 'ok1'")" = 0 ]; then
  ok "bad line: all or nothing"; else bad "bad line: all or nothing" "$(cat "$TMP/load3")"; fi

# --- devices ---
sql "INSERT INTO duo_device (user_id, stage_id, duo_user_id, name)
     SELECT u.id, s.id, 'DU' || u.id, 'phone' FROM app_user u, duo_stage s
     WHERE s.name = 'alpha2' AND u.username IN ('alice', 'bob', 'json1');
     INSERT INTO duo_device (user_id, stage_id, duo_user_id, name)
     SELECT u.id, s.id, 'DU' || u.id, 'phone' FROM app_user u, duo_stage s
     WHERE s.name = 'beta' AND u.username = 'alice'" >/dev/null
ctl device list >"$TMP/dl" 2>&1
expect "device list" jq_py "$TMP/dl" 'len(o) == 4'
ctl device list --stage alpha2 >"$TMP/dl2" 2>&1
expect "device list --stage" jq_py "$TMP/dl2" 'len(o) == 3 and all(x["stage"] == "alpha2" for x in o)'
ctl device list --stage "$UUID" --user alice >"$TMP/dl3" 2>&1
expect "device list --stage uuid --user" jq_py "$TMP/dl3" 'len(o) == 1 and o[0]["username"] == "alice"'
out="$(ctl device list --stage nosuch 2>&1)"
if [ $? -ne 0 ] && grep -q "no stage" <<<"$out"; then ok "device list unknown stage"; else bad "device list unknown stage" "$out"; fi
DEV="$(python3 -c 'import json,sys; print(json.loads(open(sys.argv[1]).readline())["id"])' "$TMP/dl3" 2>/dev/null)"
expect "device delete" ctl device delete "$DEV"
out="$(ctl device delete "$DEV" 2>&1)"
if [ $? -ne 0 ] && grep -q "no device" <<<"$out"; then ok "device delete twice"; else bad "device delete twice" "$out"; fi
out="$(ctl device delete "1; DROP TABLE app_user" 2>&1)"
if [ $? -ne 0 ] && grep -q "neither" <<<"$out"; then ok "device delete bad id"; else bad "device delete bad id" "$out"; fi

# --- delete reports its devices ---
ctl stage delete alpha2 >"$TMP/del" 2>&1
expect "stage delete count" jq_py "$TMP/del" 'o[0]["devices_deleted"] == 2'
expect "devices cascaded" test "$(sql "SELECT count(*) FROM duo_device")" = 1
out="$(ctl stage delete alpha2 2>&1)"
if [ $? -ne 0 ] && grep -q "no stage" <<<"$out"; then ok "delete unknown stage"; else bad "delete unknown stage" "$out"; fi

echo "$PASS passed, $FAIL failed"
[ "$FAIL" -eq 0 ] && [ "$PASS" -gt 0 ]
