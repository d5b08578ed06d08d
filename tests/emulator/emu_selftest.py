"""emu_selftest.py - checks emu_sign against every vector in Duo's signing-vectors.json by
sending each vector through the same verify() path a real request takes.

Invariant: vectors are replayed as a wire request (form or query re-encoded with '+' for
space, the exact v5 body), so the server's decode-then-canonicalise path is what is tested.
"""

import base64
import json
import urllib.parse

import emu_http
import emu_sign


def wire_request(vec):
    """Builds the request a client would have sent for one request vector."""
    method, params = vec["method"], [tuple(p) for p in vec["params"]]
    headers = {"host": vec["host"], "authorization": vec["authorization"]}
    for name, value in vec.get("x_duo_headers", []):
        headers[name.lower()] = value
    if "x-duo-date" not in headers:
        headers["date"] = vec["date"]
    encoded = urllib.parse.urlencode(params, quote_via=urllib.parse.quote_plus)
    body, target = b"", vec["path"]
    if vec["sig_version"] == 5 and method.upper() == "POST":
        body = vec["body"].encode("utf-8")
        headers["content-type"] = "application/json"
    elif method.upper() == "POST":
        body = encoded.encode("ascii")
        headers["content-type"] = "application/x-www-form-urlencoded"
    elif encoded:
        target += "?" + encoded
    req = emu_http.Request(method, target, "HTTP/1.1", headers, None)
    req.body = body
    return req


def expected_scheme(vec):
    if vec["sig_version"] == 5:
        return "v5"
    return "v2-" + vec["digest"]


def check_request(vec):
    """An error string for one request vector, or None."""
    req = wire_request(vec)
    v5, v2 = emu_sign.canonical_strings(req, vec["date"])
    canon = v5 if vec["sig_version"] == 5 else v2
    if canon != vec["canonical"]:
        return "canonical differs:\n%r\n%r" % (canon, vec["canonical"])
    ikey, sig = base64.b64decode(vec["authorization"][6:]).decode().split(":", 1)
    if sig != vec["signature_hex"]:
        return "authorization does not carry signature_hex"
    try:
        _, scheme = emu_sign.verify(req, lambda k: vec["skey"] if k == ikey else None,
                                    check_skew=False)
    except emu_sign.SigError as err:
        return "rejected: %d %s" % (err.code, err.message)
    if scheme != expected_scheme(vec):
        return "matched %s, expected %s" % (scheme, expected_scheme(vec))
    return None


def check_negative(vec):
    """A wrong skey must give 40103."""
    req = wire_request(vec)
    try:
        emu_sign.verify(req, lambda k: "wrong" + vec["skey"], check_skew=False)
    except emu_sign.SigError as err:
        return None if err.code == 40103 else "wrong skey gave %d" % err.code
    return "wrong skey accepted"


def run(path):
    """Runs all vectors; prints one line each and a summary; returns the exit status."""
    with open(path, encoding="utf-8") as fh:
        vectors = json.load(fh)
    passed = failed = 0
    checks = [("params/" + v["name"],
               lambda v=v: None if emu_sign.canon_params([tuple(p) for p in v["params"]])
               == v["canonical"] else "canonical differs")
              for v in vectors["params"]]
    for v in vectors["requests"]:
        checks.append(("request/" + v["name"], lambda v=v: check_request(v)))
        checks.append(("negative/" + v["name"], lambda v=v: check_negative(v)))
    for name, fn in checks:
        err = fn()
        if err is None:
            passed += 1
        else:
            failed += 1
            print("FAIL %s: %s" % (name, err))
    print("self-test: %d passed, %d failed" % (passed, failed))
    return 0 if failed == 0 and passed > 0 else 1
