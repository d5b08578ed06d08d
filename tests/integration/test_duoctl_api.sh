#!/usr/bin/env bash
# test_duoctl_api.sh - `duoctl api` against the Duo emulator: v5, v2-sha512 and v2-sha1
# signatures with non-ASCII and punctuation-heavy keys and values (the emulator checks
# every signature), the JSON it prints, a wrong skey (exit 1, 40103 on stderr, secret
# never echoed) and usage errors (exit 2). Uses its own emulator account.
set -uo pipefail

ROOT="${DUO_SOURCE_DIR:-$(cd "$(dirname "$0")/../.." && pwd)}"
if [ -z "${DUO_EMU_URL:-}" ]; then eval "$("$ROOT/scripts/services.sh" env)"; fi
DUOCTL="${DUO_BIN_DIR:-$ROOT/build/bin}/duoctl"
TMP="$(mktemp -d)"
trap 'rm -rf "$TMP"' EXIT

pass=0
fail=0
ok() { pass=$((pass + 1)); }
bad() { fail=$((fail + 1)); echo "FAIL: $*" >&2; }

ACC="dapi$$$(date +%s%N | tail -c 7)"
IKEY="DIA$ACC"
AIKEY="DIM$ACC"
SKEY="sk-$ACC-very-secret"
curl -fsS --cacert "$DUO_CA_FILE" -H 'Content-Type: application/json' \
  -d "{\"account\":\"$ACC\",\"integrations\":[{\"ikey\":\"$IKEY\",\"skey\":\"$SKEY\",\"type\":\"auth\"},{\"ikey\":\"$AIKEY\",\"skey\":\"$SKEY\",\"type\":\"admin\"}],\"admin_licensed\":true}" \
  "$DUO_EMU_URL/_emu/account" >/dev/null || { echo "cannot create emulator account" >&2; exit 1; }

api() { "$DUOCTL" api --host "$DUO_EMU_HOST" --ca-file "$DUO_CA_FILE" "$@"; }

# json_get FILE EXPR: prints a field of the printed envelope (python3 reads the JSON).
json_get() { python3 -c 'import json,sys; d=json.load(open(sys.argv[1])); print(eval(sys.argv[2]))' "$1" "$2"; }

WEIRD_VAL='a b&c=d+e%f-g~h/i*j?k#l "quote" ünï©ødé 日本 😀'
WEIRD_KEY='-k &+%ü é'

for sig in "5 sha512" "2 sha512" "2 sha1"; do
  set -- $sig
  ver=$1 dig=$2
  tag="v$ver-$dig"
  user="u-$tag $WEIRD_VAL"
  if api --ikey "$IKEY" --skey "$SKEY" --sig-version "$ver" --digest "$dig" -- \
      POST /auth/v2/enroll "username=$user" valid_secs=600 >"$TMP/out" 2>"$TMP/err"; then
    got="$(json_get "$TMP/out" 'd["stat"] + "|" + d["response"]["username"]')"
    [ "$got" = "OK|$user" ] && ok || bad "$tag enroll echoed '$got'"
  else
    bad "$tag enroll failed: $(cat "$TMP/err")"
  fi
  # Punctuation and UTF-8 in keys too, and a value starting with '-': the signature covers
  # them, so the emulator accepting the call proves the encoding.
  if api --ikey "$IKEY" --skey "$SKEY" --sig-version "$ver" --digest "$dig" -- \
      GET /auth/v2/check "$WEIRD_KEY=$WEIRD_VAL" "x=-y=z" >"$TMP/out" 2>"$TMP/err"; then
    [ "$(json_get "$TMP/out" 'type(d["response"]["time"]).__name__')" = int ] && ok || bad "$tag check output"
  else
    bad "$tag check with odd params failed: $(cat "$TMP/err")"
  fi
  # A page of the user list, as an import reads it: duoctl api still prints Duo's whole
  # answer (the streaming scanner that keeps user_id and username is the import's).
  if api --ikey "$AIKEY" --skey "$SKEY" --sig-version "$ver" --digest "$dig" \
      GET /admin/v1/users limit=2 offset=0 >"$TMP/out" 2>"$TMP/err"; then
    keys="$(json_get "$TMP/out" '",".join(sorted(d["response"][0].keys()))')"
    case ",$keys," in
      *,status,*) ok ;;
      *) bad "$tag users page printed only '$keys'" ;;
    esac
    [ "$(json_get "$TMP/out" '"total_objects" in d.get("metadata", {})')" = True ] && ok ||
      bad "$tag users page without metadata"
  else
    bad "$tag users page failed: $(cat "$TMP/err")"
  fi
  if api --ikey "$AIKEY" --skey "$SKEY" --sig-version "$ver" --digest "$dig" \
      GET /admin/v1/users "username=$user" >"$TMP/out" 2>"$TMP/err"; then
    got="$(json_get "$TMP/out" 'd["response"][0]["username"]')"
    [ "$got" = "$user" ] && ok || bad "$tag admin lookup got '$got'"
  else
    bad "$tag admin lookup failed: $(cat "$TMP/err")"
  fi
done

# Every signature kind was seen and accepted by the emulator.
curl -fsS --cacert "$DUO_CA_FILE" "$DUO_EMU_URL/_emu/stats?account=$ACC" >"$TMP/stats"
for kind in v5 v2-sha512 v2-sha1; do
  n="$(json_get "$TMP/stats" "d['sig']['$kind']")"
  [ "$n" -ge 3 ] && ok || bad "emulator counted $n $kind signatures, expected 3"
done

# Wrong secret: exit 1, the Duo error on stderr, the secret never printed.
api --ikey "$IKEY" --skey "wrong-$SKEY" GET /auth/v2/check >"$TMP/out" 2>"$TMP/err"
rc=$?
[ "$rc" -eq 1 ] && ok || bad "wrong skey exit $rc, expected 1"
grep -q 40103 "$TMP/err" && grep -q 401 "$TMP/err" && ok || bad "no 40103 on stderr: $(cat "$TMP/err")"
grep -q "$SKEY" "$TMP/out" "$TMP/err" && bad "secret key printed" || ok
[ -s "$TMP/out" ] && bad "stdout not empty on error" || ok

# Usage errors exit 2.
"$DUOCTL" api --ikey "$IKEY" --skey "$SKEY" GET /auth/v2/check >/dev/null 2>&1
[ $? -eq 2 ] && ok || bad "missing --host is not a usage error"
api --ikey "$IKEY" --skey "$SKEY" --sig-version 3 GET /auth/v2/check >/dev/null 2>&1
[ $? -eq 2 ] && ok || bad "--sig-version 3 is not a usage error"
api --ikey "$IKEY" --skey "$SKEY" GET /auth/v2/check novalue >/dev/null 2>&1
[ $? -eq 2 ] && ok || bad "a parameter without '=' is not a usage error"
"$DUOCTL" api --help >"$TMP/out" 2>&1 && grep -q "response" "$TMP/out" && ok || bad "--help"

# DUO_CA_FILE from the environment is used when --ca-file is absent.
DUO_CA_FILE="$DUO_CA_FILE" "$DUOCTL" api --host "$DUO_EMU_HOST" --ikey "$IKEY" --skey "$SKEY" \
  GET /auth/v2/check >/dev/null 2>"$TMP/err" && ok || bad "DUO_CA_FILE from env: $(cat "$TMP/err")"
# The unrelated CA is refused as a TLS error.
"$DUOCTL" api --host "$DUO_EMU_HOST" --ca-file "$DUO_RUN_DIR/emu/other-ca.crt" --ikey "$IKEY" \
  --skey "$SKEY" GET /auth/v2/check >/dev/null 2>"$TMP/err"
rc=$?
[ "$rc" -eq 1 ] && grep -q "TLS" "$TMP/err" && ok || bad "wrong CA: exit $rc, $(cat "$TMP/err")"

echo "$pass passed, $fail failed"
[ "$fail" -eq 0 ]
