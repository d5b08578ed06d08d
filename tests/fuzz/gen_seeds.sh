#!/usr/bin/env bash
# gen_seeds.sh - regenerates the hand-made seeds of tests/fuzz/corpus/ (msgpack bodies
# from schemas/examples, Duo envelopes, the signing vectors' params).
#
# Invariant: seeds are derived from checked-in sources only (schemas/examples, the checked-in
# signing vectors) and written under fixed names, so rerunning changes nothing unless the
# sources changed. Inputs the fuzzer found are merged separately (run.sh, FUZZ_MERGE=1).
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
src=$(cd "$here/../.." && pwd)
out=${FUZZ_BUILD_DIR:-$src/build-fuzz}
vectors=${DUO_SIGNING_VECTORS:-$src/tests/data/duo-signing-vectors.json}
mkdir -p "$out" "$here/corpus/msg" "$here/corpus/duo_response" "$here/corpus/duo_sign"

clang -g -O1 -std=c11 -D_GNU_SOURCE -Wall -Wextra -Werror -I"$src/common/base" -I"$src/common/codec" \
  -o "$out/gen_msg_seeds" "$here/gen_msg_seeds.c" "$src/common/codec/msg.c" "$src/common/base/buf.c" \
  "$src/common/base/err.c" \
  -lmsgpackc -ljansson -lm
"$out/gen_msg_seeds" "$src/schemas/examples" "$here/corpus/msg"

python3 - "$here/corpus" "$vectors" <<'PY'
import json, os, sys

corpus, vectors = sys.argv[1], sys.argv[2]

def put(sub, name, data):
    with open(os.path.join(corpus, sub, name), "wb") as f:
        f.write(data)

# ---- msg: hand-written malformed msgpack the examples cannot produce ----
put("msg", "bad-truncated-map", b"\x82\xa8job_type\xa4au")
put("msg", "bad-bin-value", b"\x81\xa1k\xc4\x03abc")
put("msg", "bad-ext-value", b"\x81\xa1k\xd4\x01\x00")
put("msg", "bad-dup-keys", b"\x82\xa1k\x01\xa1k\x02")
put("msg", "bad-invalid-utf8", b"\x81\xa1k\xa2\xc3\x28")
put("msg", "bad-deep-nesting", b"\x81\xa1k" + b"\x91" * 40 + b"\xc0")
put("msg", "bad-huge-map-header", b"\xdf\xff\xff\xff\xff")
put("msg", "bad-top-array", b"\x92\x01\x02")
put("msg", "bad-trailing", b"\x80\xc0")
put("msg", "ok-scalars", b"\x86\xa1a\xc0\xa1b\xc3\xa1c\xcb\x3f\xf8\x00\x00\x00\x00\x00\x00"
    b"\xa1d\xd3\x80\x00\x00\x00\x00\x00\x00\x00\xa1e\xca\x3f\xc0\x00\x00\xa1f\xcf\xff\xff\xff\xff\xff\xff\xff\xff")

# ---- duo_response: byte 0 indexes the harness's status table (even: outputs wanted) ----
STATUS = {200: 0, 400: 4, 401: 5, 403: 6, 404: 7, 429: 9, 500: 10, 503: 12}
def resp(name, status, body):
    put("duo_response", name, bytes([STATUS[status]]) + body.encode())
resp("ok-ping", 200, '{"stat":"OK","response":{"time":1357020061}}')
resp("ok-auth-allow", 200, '{"stat":"OK","response":{"result":"allow","status":"allow",'
     '"status_msg":"Success. Logging you in..."}}')
resp("ok-enroll", 200, '{"stat":"OK","response":{"activation_barcode":"https://api-x/qr?x=1",'
     '"activation_code":"duo://abc-def","expiration":1357020061,"user_id":"DU1",'
     '"username":"alice"}}')
resp("ok-users-metadata", 200, '{"stat":"OK","response":[{"user_id":"DU1","username":"a",'
     '"phones":[]}],"metadata":{"next_offset":100,"total_objects":250}}')
resp("fail-signature", 401, '{"stat":"FAIL","code":40103,"message":"Invalid signature in '
     'request credentials"}')
resp("fail-params", 400, '{"stat":"FAIL","code":40002,"message":"Invalid request parameters",'
     '"message_detail":"username"}')
resp("fail-license", 403, '{"stat":"FAIL","code":40301,"message":"Access forbidden"}')
resp("fail-rate", 429, '{"stat":"FAIL","code":42901,"message":"Too Many Requests"}')
resp("fail-500-html", 500, "<html><body>Internal Server Error</body></html>")
resp("fail-503-empty", 503, "")
resp("bad-200-not-json", 200, "OK")
resp("bad-200-no-stat", 200, '{"response":{}}')
resp("bad-200-fail-stat", 200, '{"stat":"FAIL","code":40002,"message":"x"}')
resp("bad-200-no-response", 200, '{"stat":"OK"}')
resp("bad-200-array", 200, '[{"stat":"OK"}]')
resp("bad-200-dup-keys", 200, '{"stat":"OK","stat":"FAIL","response":1}')
put("duo_response", "raw-status-302", b"\xf0\x01\x2e" + b'{"stat":"OK","response":{}}')

# ---- duo_sign: flags byte, then key NUL value NUL ... from the signing vectors ----
with open(vectors) as f:
    vec = json.load(f)
def sign_seed(flags, params):
    data = b"\0".join(x.encode() for kv in params for x in kv)
    return bytes([flags]) + data
for i, v in enumerate(vec["params"]):
    put("duo_sign", "params-%s" % v["name"], sign_seed(0, v["params"]))
for v in vec["requests"]:
    flags = (1 if v["sig_version"] == 5 else 0) | (2 if v.get("digest") == "sha1" else 0)
    flags |= {"GET": 0, "POST": 4, "DELETE": 8, "PUT": 12}.get(v["method"].upper(), 0)
    params = list(v["params"]) + list(v.get("x_duo_headers") or [])
    put("duo_sign", "request-%s" % v["name"], sign_seed(flags, params))
PY
echo "seeds: msg $(ls "$here/corpus/msg" | wc -l), duo_response $(ls "$here/corpus/duo_response" | wc -l), duo_sign $(ls "$here/corpus/duo_sign" | wc -l)"
