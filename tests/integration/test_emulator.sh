#!/usr/bin/env bash
# test_emulator.sh - checks the Duo emulator (tests/emulator/duo_emulator.py) against
# docs/EMULATOR.md: signature vectors, Duo's error envelopes, the control API, faults,
# licensing, the page-rate limit and paging. Signs requests with its own small Python
# snippet (not the emulator's code). Uses a fresh account name per run, so it can run
# beside other tests on the shared emulator.
set -uo pipefail

ROOT="${DUO_SOURCE_DIR:-$(cd "$(dirname "$0")/../.." && pwd)}"
if [ -z "${DUO_EMU_URL:-}" ] || [ -z "${DUO_CA_FILE:-}" ]; then
  eval "$("$ROOT/scripts/services.sh" env)"
fi
TMP="$(mktemp -d)"
trap 'rm -rf "$TMP"' EXIT
RUN_ID="emutest-$$-$RANDOM-$(date +%s)"
PASS=0
FAIL=0

ok() { PASS=$((PASS + 1)); echo "ok   $1"; }
bad() { FAIL=$((FAIL + 1)); echo "FAIL $1${2:+: $2}"; }
check() { # check NAME PYTHON-EXPR-over-r (r = last response JSON, s = status, h = headers)
  if python3 - "$TMP/last" "$2" <<'PY'
import json, sys
last = json.load(open(sys.argv[1]))
s, h = last["status"], last["headers"]
try:
    r = json.loads(last["body"])
except ValueError:
    r = None
b = last["body"]
sys.exit(0 if eval(sys.argv[2]) else 1)
PY
  then ok "$1"; else bad "$1" "$(head -c 400 "$TMP/last")"; fi
}

# A small independent Duo signer: sign.py METHOD PATH VERSION IKEY SKEY [k=v ...]
# (VERSION: 5, 2-sha512, 2-sha1; env DATE_OFFSET shifts the date, RAW_AUTH overrides
# the Authorization header, NO_AUTH omits it). Writes {"status","headers","body"}.
cat > "$TMP/sign.py" <<'PY'
import base64, email.utils, hashlib, hmac, json, os, ssl, sys, time
import urllib.error, urllib.parse, urllib.request
method, path, version, ikey, skey = sys.argv[1:6]
params = [tuple(a.split("=", 1)) for a in sys.argv[6:]]
base = os.environ["DUO_EMU_URL"]
host = urllib.parse.urlsplit(base).hostname.lower()
date = email.utils.formatdate(time.time() + float(os.environ.get("DATE_OFFSET", "0")))
def q(s): return urllib.parse.quote(s, safe="~")
canon = "&".join(sorted(q(k) + "=" + q(v) for k, v in params))
wire = urllib.parse.urlencode(params, quote_via=urllib.parse.quote_plus)
body, headers, url = None, {"Date": date}, base + path
if version == "5" and method == "POST":
    body = json.dumps(dict(params), separators=(",", ":")).encode()
    headers["Content-Type"] = "application/json"
    lines = [date, method, host, path, "", hashlib.sha512(body).hexdigest()]
elif method == "POST":
    body = wire.encode()
    headers["Content-Type"] = "application/x-www-form-urlencoded"
    lines = [date, method, host, path, canon]
else:
    url += "?" + wire if wire else ""
    lines = [date, method, host, path, canon]
if version == "5":
    if method != "POST":
        lines.append(hashlib.sha512(b"").hexdigest())
    lines.append(hashlib.sha512(b"").hexdigest())
digest = hashlib.sha1 if version == "2-sha1" else hashlib.sha512
sig = hmac.new(skey.encode(), "\n".join(lines).encode(), digest).hexdigest()
headers["Authorization"] = os.environ.get("RAW_AUTH") or \
    "Basic " + base64.b64encode((ikey + ":" + sig).encode()).decode()
if os.environ.get("NO_AUTH"):
    del headers["Authorization"]
ctx = ssl.create_default_context(cafile=os.environ["DUO_CA_FILE"])
req = urllib.request.Request(url, data=body, headers=headers, method=method)
try:
    resp = urllib.request.urlopen(req, context=ctx,
                                  timeout=float(os.environ.get("READ_TIMEOUT", "30")))
    status, hdrs, data = resp.status, dict(resp.headers), resp.read()
except urllib.error.HTTPError as e:
    status, hdrs, data = e.code, dict(e.headers), e.read()
json.dump({"status": status, "headers": hdrs, "body": data.decode()}, sys.stdout)
PY

AUTH_IKEY="DIAU${RUN_ID//[^A-Za-z0-9]/}"; AUTH_SKEY="authsecret-$RUN_ID"
ADM_IKEY="DIAD${RUN_ID//[^A-Za-z0-9]/}"; ADM_SKEY="adminsecret-$RUN_ID"
call() { python3 "$TMP/sign.py" "$@" > "$TMP/last"; }        # call METHOD PATH VER IKEY SKEY k=v...
auth() { call "$1" "$2" 5 "$AUTH_IKEY" "$AUTH_SKEY" "${@:3}"; }
admin() { call GET "$1" 5 "$ADM_IKEY" "$ADM_SKEY" "${@:2}"; }
ctl() { # ctl PATH JSON
  curl -sS --cacert "$DUO_CA_FILE" -H 'Content-Type: application/json' -d "$2" \
    -o "$TMP/body" -w '%{http_code}' "$DUO_EMU_URL$1" > "$TMP/code"
  python3 -c 'import json,sys; json.dump({"status": int(open(sys.argv[1]).read()), "headers": {}, "body": open(sys.argv[2]).read()}, sys.stdout)' \
    "$TMP/code" "$TMP/body" > "$TMP/last"
}
stats() { curl -sS --cacert "$DUO_CA_FILE" -o "$TMP/body" "$DUO_EMU_URL/_emu/stats?account=$1"
  python3 -c 'import json,sys; json.dump({"status": 200, "headers": {}, "body": open(sys.argv[1]).read()}, sys.stdout)' "$TMP/body" > "$TMP/last"; }
account() { # account NAME LICENSED PAGES_PER_MIN
  ctl /_emu/account "{\"account\":\"$1\",\"admin_licensed\":$2,\"admin_pages_per_min\":$3,
    \"integrations\":[{\"ikey\":\"$AUTH_IKEY\",\"skey\":\"$AUTH_SKEY\",\"type\":\"auth\"},
                      {\"ikey\":\"$ADM_IKEY\",\"skey\":\"$ADM_SKEY\",\"type\":\"admin\"}]}"
}

# --- signature vectors ------------------------------------------------------------
if python3 "$ROOT/tests/emulator/duo_emulator.py" --self-test > "$TMP/selftest" 2>&1; then
  ok "self-test vectors ($(tail -1 "$TMP/selftest"))"
else bad "self-test vectors" "$(cat "$TMP/selftest")"; fi

# --- signing and envelopes --------------------------------------------------------
A="$RUN_ID-a"
account "$A" true 0; check "create account" 's == 200 and r["stat"] == "OK"'
NO_AUTH=1 auth GET /auth/v2/check; check "unsigned -> 40101" 's == 401 and r["code"] == 40101'
RAW_AUTH="Basic !!!" auth GET /auth/v2/check; check "garbled auth -> 40101" 'r["code"] == 40101'
call GET /auth/v2/check 5 "DINOSUCHKEY$RUN_ID" x; check "unknown ikey -> 40102" 's == 401 and r["code"] == 40102'
call GET /auth/v2/check 5 "$AUTH_IKEY" wrong-skey; check "wrong skey -> 40103" 's == 401 and r["code"] == 40103'
call POST /auth/v2/preauth 2-sha512 "$AUTH_IKEY" wrong-skey username=x; check "wrong skey v2 POST -> 40103" 'r["code"] == 40103'
DATE_OFFSET=-900 auth GET /auth/v2/check; check "old date -> 40105" 's == 401 and r["code"] == 40105'
for v in 5 2-sha512 2-sha1; do
  call GET /auth/v2/check "$v" "$AUTH_IKEY" "$AUTH_SKEY"; check "check signed $v" 's == 200 and isinstance(r["response"]["time"], int)'
done
stats "$A"; check "stats count each signature scheme" 'r["sig"] == {"v5": 1, "v2-sha512": 1, "v2-sha1": 1}'
call GET /admin/v1/info/summary 5 "$AUTH_IKEY" "$AUTH_SKEY"; check "admin path with auth key -> 40301" 's == 403 and r["code"] == 40301'
call GET /auth/v2/check 5 "$ADM_IKEY" "$ADM_SKEY"; check "auth path with admin key -> 40301" 'r["code"] == 40301'
auth POST /auth/v2/check; check "wrong method -> 405" 's == 405 and r["code"] == 40501'

# --- users, preauth, auth ------------------------------------------------------------
ctl /_emu/users "{\"account\":\"$A\",\"users\":[{\"username\":\"alice\"},{\"username\":\"Ålice +&=/ x\"}]}"
check "add users" 's == 200 and len(r["response"]["users"]) == 2 and all(len(u["user_id"]) == 20 and u["user_id"].startswith("DU") for u in r["response"]["users"])'
ALICE_ID="$(python3 -c 'import json,sys; print(json.loads(json.load(open(sys.argv[1]))["body"])["response"]["users"][0]["user_id"])' "$TMP/last")"
auth POST /auth/v2/preauth username=alice; check "preauth known user -> auth" 'r["response"]["result"] == "auth" and r["response"]["devices"]'
call POST /auth/v2/preauth 2-sha1 "$AUTH_IKEY" "$AUTH_SKEY" "username=Ålice +&=/ x"; check "preauth non-ASCII via v2 form" 's == 200 and r["response"]["result"] == "auth"'
auth POST /auth/v2/preauth username=nobody; check "preauth unknown -> enroll" 'r["response"]["result"] == "enroll"'
auth POST /auth/v2/auth user_id="$ALICE_ID" factor=push device=auto; check "push default allow" 'r["response"]["result"] == "allow"'
ctl /_emu/behavior "{\"account\":\"$A\",\"user\":\"alice\",\"push\":\"deny\"}"; check "behavior deny" 's == 200'
auth POST /auth/v2/auth username=alice factor=auto device=auto; check "push deny" 'r["response"]["result"] == "deny" and r["response"]["status"] == "deny"'
ctl /_emu/behavior "{\"account\":\"$A\",\"user\":\"alice\",\"push\":\"timeout\"}"
auth POST /auth/v2/auth username=alice factor=push device=auto; check "push timeout" 'r["response"]["result"] == "deny" and r["response"]["status"] == "timeout"'
ctl /_emu/behavior "{\"account\":\"$A\",\"user\":\"alice\",\"push\":\"fraud\"}"
auth POST /auth/v2/auth username=alice factor=push device=auto; check "push fraud -> deny/fraud" 'r["response"]["result"] == "deny" and r["response"]["status"] == "fraud"'
ctl /_emu/behavior "{\"account\":\"$A\",\"user\":\"alice\",\"push\":\"weird\"}"
auth POST /auth/v2/auth username=alice factor=push device=auto; check "push unknown string verbatim" 'r["response"]["result"] == "weird" and r["response"]["status"] == "weird"'
auth POST /auth/v2/auth username=alice factor=passcode passcode=000000; check "wrong passcode" 'r["response"]["result"] == "deny" and r["response"]["status_msg"] == "Incorrect passcode"'
auth POST /auth/v2/auth username=alice factor=passcode passcode=123456; check "right passcode" 'r["response"]["result"] == "allow"'
auth POST /auth/v2/auth username=alice factor=sms; check "sms sent" 'r["response"]["status"] == "sent"'
ctl /_emu/behavior "{\"account\":\"$A\",\"user\":\"alice\",\"push\":\"allow\",\"delay_ms\":400}"
auth POST /auth/v2/auth username=alice factor=push device=auto async=1; check "async auth -> txid" 's == 200 and r["response"]["txid"]'
TXID="$(python3 -c 'import json,sys; print(json.loads(json.load(open(sys.argv[1]))["body"])["response"]["txid"])' "$TMP/last")"
auth GET /auth/v2/auth_status txid="$TXID"; check "auth_status answers" 's == 200 and r["response"]["result"] in ("waiting", "allow")'
for _ in $(seq 1 50); do auth GET /auth/v2/auth_status txid="$TXID"
  grep -q waiting "$TMP/last" || break; sleep 0.2; done
check "auth_status ends allow" 'r["response"]["result"] == "allow"'
auth GET /auth/v2/auth_status txid=nope; check "unknown txid -> 40002" 's == 400 and r["message_detail"] == "txid"'
ctl /_emu/users/remove "{\"account\":\"$A\",\"username\":\"alice\"}"; check "remove user" 's == 200'
auth POST /auth/v2/auth user_id="$ALICE_ID" factor=push device=auto; check "removed user -> 40002 user_id" 's == 400 and r["code"] == 40002 and r["message_detail"] == "user_id"'

# --- enrollment ------------------------------------------------------------------
auth POST /auth/v2/enroll username=bob valid_secs=3600
check "enroll fields" 's == 200 and r["response"]["activation_code"].startswith("duo://") and r["response"]["activation_barcode"].startswith("https://") and r["response"]["activation_url"] and r["response"]["username"] == "bob" and len(r["response"]["user_id"]) == 20 and r["response"]["expiration"] > 0'
read -r BOB_ID BOB_CODE < <(python3 -c 'import json,sys; x=json.loads(json.load(open(sys.argv[1]))["body"])["response"]; print(x["user_id"], x["activation_code"])' "$TMP/last")
auth POST /auth/v2/enroll_status user_id="$BOB_ID" activation_code="$BOB_CODE"; check "enroll_status waiting" 'r["response"] == "waiting"'
auth POST /auth/v2/enroll username=bob; check "enroll existing -> 40002" 's == 400 and r["message_detail"] == "username already exists"'
ctl /_emu/enrollment "{\"account\":\"$A\",\"activation_code\":\"$BOB_CODE\",\"action\":\"complete\"}"; check "complete enrollment" 's == 200'
auth POST /auth/v2/enroll_status user_id="$BOB_ID" activation_code="$BOB_CODE"; check "enroll_status success" 'r["response"] == "success"'
auth POST /auth/v2/auth username=bob factor=push device=auto; check "enrolled user can push" 'r["response"]["result"] == "allow"'
auth POST /auth/v2/enroll username=carol
read -r CAROL_ID CAROL_CODE < <(python3 -c 'import json,sys; x=json.loads(json.load(open(sys.argv[1]))["body"])["response"]; print(x["user_id"], x["activation_code"])' "$TMP/last")
ctl /_emu/enrollment "{\"account\":\"$A\",\"user_id\":\"$CAROL_ID\",\"action\":\"expire\"}"
auth POST /auth/v2/enroll_status user_id="$CAROL_ID" activation_code="$CAROL_CODE"; check "expired -> invalid" 'r["response"] == "invalid"'

# --- faults ----------------------------------------------------------------------
ctl /_emu/faults "{\"account\":\"$A\",\"path_prefix\":\"/auth/v2/check\",\"status\":429,\"count\":1,\"retry_after\":7}"
auth GET /auth/v2/check; check "429 with Retry-After" 's == 429 and r["code"] == 42901 and h.get("Retry-After") == "7"'
auth GET /auth/v2/check; check "fault used up" 's == 200'
ctl /_emu/faults "{\"account\":\"$A\",\"path_prefix\":\"/auth/v2/check\",\"status\":429,\"count\":1}"
auth GET /auth/v2/check; check "429 without Retry-After" 's == 429 and "Retry-After" not in h'
ctl /_emu/faults "{\"account\":\"$A\",\"path_prefix\":\"/auth/\",\"status\":503,\"count\":2}"
auth GET /auth/v2/check; check "503 injected" 's == 503'
auth POST /auth/v2/preauth username=bob; check "503 injected again" 's == 503'
ctl /_emu/faults "{\"account\":\"$A\",\"path_prefix\":\"/auth/v2/check\",\"status\":200,\"count\":1,\"body\":\"{not json\"}"
auth GET /auth/v2/check; check "malformed body verbatim" 's == 200 and b == "{not json"'
ctl /_emu/faults "{\"account\":\"$A\",\"path_prefix\":\"/auth/v2/check\",\"count\":1,\"latency_ms\":50}"
auth GET /auth/v2/check; check "latency-only fault then normal answer" 's == 200 and r["stat"] == "OK"'

# --- admin: licence, paging, rate limit ------------------------------------------------
B="$RUN_ID-b"
account "$B" false 0
admin /admin/v1/users; check "unlicensed admin -> 40301" 's == 403 and r["code"] == 40301'
C="$RUN_ID-c"
account "$C" true 0
ctl /_emu/users "{\"account\":\"$C\",\"generate\":{\"count\":1000,\"prefix\":\"gen\",\"start\":1}}"; check "generate 1000 users" 's == 200 and r["response"]["total"] == 1000'
admin /admin/v1/users limit=301; check "limit 301 -> 40002 limit" 's == 400 and r["message_detail"] == "limit"'
: > "$TMP/names"
OFFSET=0
for _ in $(seq 1 10); do
  admin /admin/v1/users limit=300 offset="$OFFSET"
  python3 - "$TMP/last" "$TMP/names" > "$TMP/next" <<'PY'
import json, sys
r = json.loads(json.load(open(sys.argv[1]))["body"])
with open(sys.argv[2], "a") as out:
    for u in r["response"]:
        keys = {"user_id", "username", "email", "realname", "status", "is_enrolled", "phones",
                "tokens", "groups", "created", "last_login", "aliases", "webauthncredentials"}
        if not keys <= set(u) or u["status"] != "active" or not u["user_id"].startswith("DU"):
            out.write("BADOBJECT\n")
        out.write(u["username"] + " " + u["user_id"] + "\n")
print(r["metadata"].get("next_offset", "END"), r["metadata"]["total_objects"])
PY
  read -r OFFSET TOTAL < "$TMP/next"
  [ "$OFFSET" = "END" ] && break
done
if [ "$OFFSET" = "END" ] && [ "$TOTAL" = 1000 ] && ! grep -q BADOBJECT "$TMP/names" &&
   [ "$(wc -l < "$TMP/names")" = 1000 ] && [ "$(cut -d' ' -f2 "$TMP/names" | sort -u | wc -l)" = 1000 ] &&
   [ "$(cut -d' ' -f1 "$TMP/names" | sort)" = "$(seq -f 'gen%07g' 1 1000 | sort)" ]; then
  ok "paging 1000 generated users: each exactly once"
else bad "paging 1000 generated users" "offset=$OFFSET total=${TOTAL:-} lines=$(wc -l < "$TMP/names")"; fi
GEN_ID="$(grep '^gen0000500 ' "$TMP/names" | cut -d' ' -f2)"
admin /admin/v1/users username=gen0000500; check "username lookup" "len(r['response']) == 1 and r['response'][0]['user_id'] == '$GEN_ID'"
auth POST /auth/v2/auth user_id="$GEN_ID" factor=push device=auto; check "generated user by id can push" 'r["response"]["result"] == "allow"'
admin /admin/v1/info/summary; check "info summary user_count" 'r["response"]["user_count"] == 1000'
D="$RUN_ID-d"
account "$D" true 2
admin /admin/v1/users; admin /admin/v1/users
admin /admin/v1/users; check "page rate limit -> 42901" 's == 429 and r["code"] == 42901'
stats "$D"; check "stats throttled and admin_pages" 'r["throttled"] == 1 and r["admin_pages"] == 2 and r["requests"]["/admin/v1/users"]["429"] == 1'
ctl /_emu/integration "{\"ikey\":\"$ADM_IKEY\",\"disabled\":true}"
admin /admin/v1/info/summary; check "disabled integration -> 40301" 's == 403 and r["code"] == 40301'

# --- a held push ends when its client goes away ------------------------------------------
E="$RUN_ID-e"
account "$E" true 0
ctl /_emu/users "{\"account\":\"$E\",\"users\":[{\"username\":\"hold\"}]}"
ctl /_emu/behavior "{\"account\":\"$E\",\"user\":\"*\",\"push\":\"hang\"}"
# The client gives up 2 s after connecting (not 2 s after starting: a loaded machine can
# take that long just to start Python), then exits, closing the connection.
READ_TIMEOUT=2 timeout 60 python3 "$TMP/sign.py" POST /auth/v2/auth 5 "$AUTH_IKEY" "$AUTH_SKEY" username=hold factor=push device=auto >/dev/null 2>&1
for _ in $(seq 1 50); do stats "$E"; grep -q '"499"' "$TMP/last" && break; sleep 0.2; done
check "hang released when the client leaves" 'r["requests"]["/auth/v2/auth"] == {"499": 1}'

echo "$PASS passed, $FAIL failed"
[ "$FAIL" -eq 0 ] && [ "$PASS" -gt 0 ]
