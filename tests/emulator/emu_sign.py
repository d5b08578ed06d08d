"""emu_sign.py - checks Duo request signatures (v2 HMAC-SHA1/SHA512, v5 HMAC-SHA512)
the way Duo does: the canonical string is rebuilt from what was received (decoded query or
form body, exact body bytes for v5), never from the client's own canonical text.

Written from Duo's documented signing rules, independently of the C client. Invariant: a
request is accepted only if one of the three HMACs over the rebuilt canonical string
equals the hex signature it carries (constant-time compare).
"""

import base64
import binascii
import datetime
import email.utils
import hashlib
import hmac
import time
import urllib.parse

SKEW_LIMIT_S = 300
DAY_NAMES = ("Mon", "Tue", "Wed", "Thu", "Fri", "Sat", "Sun")
EMPTY_SHA512 = hashlib.sha512(b"").hexdigest()


class SigError(Exception):
    """A signature failure carrying Duo's HTTP status, code and message."""

    def __init__(self, status, code, message):
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message


def canon_params(pairs):
    """Duo's canonical params: each key and value UTF-8 percent-encoded (upper-case hex,
    only A-Za-z0-9-._~ bare), sorted by encoded key then encoded value, joined k=v&..."""
    enc = [(urllib.parse.quote(k, safe="~"), urllib.parse.quote(v, safe="~"))
           for k, v in pairs]
    enc.sort()
    return "&".join(k + "=" + v for k, v in enc)


def decode_form(raw):
    """Decodes a query string or form body (+ is space) into (key, value) pairs."""
    if isinstance(raw, bytes):
        raw = raw.decode("utf-8", errors="replace")
    return urllib.parse.parse_qsl(raw, keep_blank_values=True, encoding="utf-8",
                                  errors="replace")


def host_for_sig(host_header):
    """Host header lower-cased without its port (handles [v6]:port)."""
    host = (host_header or "").strip().lower()
    if host.startswith("["):
        end = host.find("]")
        return host[: end + 1] if end >= 0 else host
    colon = host.rfind(":")
    return host[:colon] if colon >= 0 else host


def x_duo_hash(headers):
    """SHA-512 hex of the X-Duo-* headers: lower-case names sorted, name\\0value\\0..."""
    items = sorted((k.lower(), v) for k, v in headers.items()
                   if k.lower().startswith("x-duo-"))
    parts = []
    for k, v in items:
        parts.append(k)
        parts.append(v)
    return hashlib.sha512("\x00".join(parts).encode("utf-8")).hexdigest()


def parse_authorization(value):
    """Returns (ikey, hexsig) from 'Basic base64(ikey:hexsig)' or raises SigError 40101."""
    bad = SigError(401, 40101, "Missing request credentials")
    if not value:
        raise bad
    scheme, _, token = value.strip().partition(" ")
    if scheme.lower() != "basic" or not token:
        raise bad
    try:
        decoded = base64.b64decode(token.strip(), validate=True).decode("utf-8")
    except (binascii.Error, UnicodeDecodeError, ValueError):
        raise bad from None
    ikey, sep, sig = decoded.partition(":")
    if not sep or not ikey or not sig:
        raise bad
    return ikey, sig.strip().lower()


def parse_date(value):
    """Unix time of an RFC 2822 date with an English day name, or raises SigError 40104."""
    bad = SigError(401, 40104, "Missing request timestamp")
    if not value:
        raise bad
    head = value.strip().split(",", 1)
    if len(head) == 2 and head[0].strip() not in DAY_NAMES:
        raise bad
    try:
        parsed = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError, IndexError):
        raise bad from None
    if parsed is None:
        raise bad
    if parsed.tzinfo is None:  # "-0000" means UTC with no zone information
        parsed = parsed.replace(tzinfo=datetime.timezone.utc)
    return parsed.timestamp()


def canonical_strings(req, date):
    """The three canonical strings (v5, v2) a correct client could have signed for req.
    req has method, host, path, query (raw str), headers (lower-case names), body (bytes)."""
    method = req.method.upper()
    host = host_for_sig(req.headers.get("host", ""))
    query_pairs = decode_form(req.query)
    v5_params = canon_params(query_pairs)
    body_hash = hashlib.sha512(req.body).hexdigest() if req.body else EMPTY_SHA512
    v5 = "\n".join([date, method, host, req.path, v5_params, body_hash,
                    x_duo_hash(req.headers)])
    if method in ("POST", "PUT", "PATCH") and req.body and not is_json(req):
        v2_pairs = decode_form(req.body)
    else:
        v2_pairs = query_pairs
    v2 = "\n".join([date, method, host, req.path, canon_params(v2_pairs)])
    return v5, v2


def is_json(req):
    return req.headers.get("content-type", "").split(";")[0].strip().lower() == \
        "application/json"


def hmac_hex(skey, text, digest):
    return hmac.new(skey.encode("utf-8"), text.encode("utf-8"), digest).hexdigest()


def match_signature(skey, req, date, sig):
    """Which signature scheme matches: 'v5', 'v2-sha512', 'v2-sha1' or None."""
    v5, v2 = canonical_strings(req, date)
    candidates = (("v5", v5, hashlib.sha512), ("v2-sha512", v2, hashlib.sha512),
                  ("v2-sha1", v2, hashlib.sha1))
    for name, text, digest in candidates:
        if hmac.compare_digest(hmac_hex(skey, text, digest), sig):
            return name
    return None


def request_date(req):
    """The signed date string: X-Duo-Date first, then Date."""
    return req.headers.get("x-duo-date") or req.headers.get("date") or ""


def verify(req, lookup_skey, now=None, check_skew=True):
    """Checks credentials, date, key and signature in Duo's order. lookup_skey(ikey)
    returns the secret key or None. Returns (ikey, scheme); raises SigError."""
    ikey, sig = parse_authorization(req.headers.get("authorization"))
    date = request_date(req)
    when = parse_date(date)
    skey = lookup_skey(ikey)
    if skey is None:
        raise SigError(401, 40102, "Invalid integration key in request credentials")
    scheme = match_signature(skey, req, date, sig)
    if scheme is None:
        raise SigError(401, 40103, "Invalid signature in request credentials")
    now = time.time() if now is None else now
    if check_skew and abs(now - when) > SKEW_LIMIT_S:
        raise SigError(401, 40105, "Request timestamp is too old")
    return ikey, scheme
