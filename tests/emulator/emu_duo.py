"""emu_duo.py - the Duo endpoints: Auth API v2 (ping, check, enroll, enroll_status,
preauth, auth, auth_status) and Admin API v1 (users, info/summary), with faults,
signature checks, integration types, licensing and the admin page-rate limit.

Invariant: the order of checks is faults, credentials/date/key/signature/skew, integration
state and type, licence, method, parameters; only then does a call touch account state.
"""

import asyncio
import json
import secrets
import time
import urllib.parse
import uuid

import emu_http
import emu_sign
from emu_state import Enrollment, admin_user, admin_user_json, auth_device, digest_id

HOLD_LIMIT_S = 600
PUSH_MSG = "Pushed a login request to your device..."
RESULTS = {"allow": ("allow", "allow", "Success. Logging you in..."),
           "deny": ("deny", "deny", "Login request denied."),
           "timeout": ("deny", "timeout", "Login request timed out.")}
FACTORS = ("auto", "push", "phone", "passcode", "sms")


def ok(response, metadata=None):
    env = {"stat": "OK", "response": response}
    if metadata is not None:
        env["metadata"] = metadata
    return emu_http.Response(200, json.dumps(env).encode())


def fail(status, code, message, detail=None, headers=None):
    env = {"stat": "FAIL", "code": code, "message": message}
    if detail is not None:
        env["message_detail"] = detail
    return emu_http.Response(status, json.dumps(env).encode(), headers)


def bad_param(detail):
    return fail(400, 40002, "Invalid request parameters", detail)


def forbidden():
    return fail(403, 40301, "Access forbidden")


class ParamError(Exception):
    pass


# --- faults --------------------------------------------------------------------------
def take_fault(faults, path):
    for i, f in enumerate(faults):
        if path.startswith(f["path_prefix"]):
            f["count"] -= 1
            if f["count"] <= 0:
                del faults[i]
            return f
    return None


def fault_response(f):
    headers = {}
    if f.get("retry_after") is not None:
        headers["Retry-After"] = str(f["retry_after"])
    status = f.get("status")
    if f.get("body") is not None:
        return emu_http.Response(status or 200, f["body"].encode("utf-8"), headers)
    if status == 429:
        return fail(429, 42901, "Too Many Requests", headers=headers)
    reason = emu_http.REASONS.get(status, "Error")
    return fail(status, status * 100 + 1, reason, headers=headers)


async def apply_fault(emu, account, path):
    """A fault response, or None to continue (no fault, or a latency-only fault)."""
    f = take_fault(account.faults, path) if account is not None else None
    if f is None:
        f = take_fault(emu.global_faults, path)
    if f is None:
        return None
    if f.get("latency_ms"):
        await asyncio.sleep(f["latency_ms"] / 1000.0)
    if f.get("status") is None and f.get("body") is None:
        return None
    return fault_response(f)


# --- request checks --------------------------------------------------------------------
def peek_account(emu, req):
    try:
        ikey, _ = emu_sign.parse_authorization(req.headers.get("authorization"))
    except emu_sign.SigError:
        return None
    integ = emu.integrations.get(ikey)
    return emu.accounts.get(integ["account"]) if integ else None


def check_access(emu, req, account):
    """Verifies the request; returns a failure Response or None."""
    def skey_of(ikey):
        integ = emu.integrations.get(ikey)
        return integ["skey"] if integ else None
    try:
        ikey, scheme = emu_sign.verify(req, skey_of)
    except emu_sign.SigError as err:
        return fail(err.status, err.code, err.message)
    integ = emu.integrations[ikey]
    account.stats["sig"][scheme] += 1
    kind = "admin" if req.path.startswith("/admin/") else "auth"
    if integ["disabled"] or integ["type"] != kind:
        return forbidden()
    if kind == "admin" and not account.admin_licensed:
        return forbidden()
    return None


def request_params(req):
    """Parameters as a dict (first value of each key) from query, form or JSON body."""
    pairs = emu_sign.decode_form(req.query)
    if req.body and emu_sign.is_json(req):
        try:
            obj = json.loads(req.body)
        except ValueError:
            raise ParamError("body") from None
        if not isinstance(obj, dict):
            raise ParamError("body")
        pairs += [(k, v if isinstance(v, str) else json.dumps(v)) for k, v in obj.items()]
    elif req.body:
        pairs += emu_sign.decode_form(req.body)
    params = {}
    for k, v in pairs:
        params.setdefault(k, v)
    return params


async def handle(emu, req):
    """Serves one Duo API request: returns (Response or None, account or None)."""
    if req.path == "/auth/v2/ping":
        resp = await apply_fault(emu, None, req.path)
        return resp or ok({"time": int(time.time())}), None
    account = peek_account(emu, req)
    resp = await apply_fault(emu, account, req.path)
    if resp is not None:
        return resp, account
    route = ROUTES.get(req.path)
    if route is None and req.path.startswith(USER_PREFIX) and "/" not in req.path[len(USER_PREFIX):]:
        route = (("GET",), h_user_by_id)
    denied = check_access(emu, req, account) if account is not None else None
    if account is None:
        denied = unverified_failure(emu, req)
    if denied is not None:
        return denied, account
    if route is None:
        return fail(404, 40401, "Resource not found"), account
    if req.method not in route[0]:
        return fail(405, 40501, "Method not allowed"), account
    try:
        params = request_params(req)
        return await route[1](account, req, params), account
    except ParamError as err:
        return bad_param(str(err)), account


def unverified_failure(emu, req):
    """The failure for a request whose ikey names no integration (40101/40104/40102)."""
    try:
        emu_sign.verify(req, lambda ikey: None)
    except emu_sign.SigError as err:
        return fail(err.status, err.code, err.message)
    return fail(401, 40102, "Invalid integration key in request credentials")


# --- Auth API ------------------------------------------------------------------------
async def h_check(account, req, params):
    return ok({"time": int(time.time())})


def find_user(account, params):
    """The user addressed by user_id (first) or username; raises ParamError."""
    if params.get("user_id"):
        view = account.find(user_id=params["user_id"])
        if view is None:
            raise ParamError("user_id")
        return view
    if params.get("username"):
        view = account.find(username=params["username"])
        if view is None:
            raise ParamError("username")
        return view
    raise ParamError("username")


async def h_enroll(account, req, params):
    username = params.get("username") or "user-" + secrets.token_hex(6)
    try:
        valid = int(params.get("valid_secs", "86400"))
    except ValueError:
        raise ParamError("valid_secs") from None
    if valid <= 0:
        raise ParamError("valid_secs")
    if account.find(username=username) is not None:
        raise ParamError("username already exists")
    user_id = account.add_user(username, enrolled=False)
    code = "duo://%s-%s" % (digest_id("", secrets.token_hex(16), 20),
                            digest_id("", secrets.token_hex(16), 20))
    expires = int(time.time()) + valid
    account.enrollments[code] = Enrollment(code, user_id, expires)
    host = req.headers.get("host", "localhost")
    quoted = urllib.parse.quote(code, safe="")
    return ok({"activation_barcode": "https://%s/frame/qr?value=%s" % (host, quoted),
               "activation_code": code,
               "activation_url": "https://%s/activate/%s" % (host, code[6:]),
               "expiration": expires, "user_id": user_id, "username": username})


async def h_enroll_status(account, req, params):
    for name in ("user_id", "activation_code"):
        if not params.get(name):
            raise ParamError(name)
    e = account.enrollments.get(params["activation_code"])
    if e is None or e.user_id != params["user_id"]:
        return ok("invalid")
    if e.state == "success":
        return ok("success")
    if e.state == "expired" or time.time() > e.expires:
        return ok("invalid")
    return ok("waiting")


async def h_preauth(account, req, params):
    try:
        view = find_user(account, params)
    except ParamError as err:
        if str(err) != "username" or not params.get("username"):
            raise
        view = None
    if view is None or not view["enrolled"]:
        host = req.headers.get("host", "localhost")
        return ok({"result": "enroll", "status_msg": "Enroll an authentication device to proceed",
                   "enroll_portal_url": "https://%s/portal?code=%s" % (host, secrets.token_hex(8))})
    mode = account.behavior_for(view["user_id"])["preauth"]
    if mode == "allow":
        return ok({"result": "allow", "status_msg": "Allowing unknown user"})
    if mode == "deny":
        return ok({"result": "deny", "status_msg": "Access denied"})
    return ok({"result": "auth", "status_msg": "Account is active",
               "devices": [auth_device(view)]})


def outcome(account, view, factor, params):
    """(result, status, status_msg, delay_s, hang) for one auth attempt."""
    beh = account.behavior_for(view["user_id"])
    if factor == "passcode":
        if params.get("passcode") == str(beh["passcode"]):
            return ("allow", "allow", "Success. Logging you in...", 0, False)
        return ("deny", "deny", "Incorrect passcode", 0, False)
    if factor == "sms":
        return ("deny", "sent", "New SMS passcodes sent.", 0, False)
    push = beh["push"]
    delay = max(0, int(beh.get("delay_ms") or 0)) / 1000.0
    if push == "hang":
        return ("deny", "timeout", "Login request timed out.", delay, True)
    result, status, msg = RESULTS.get(push, (push, push, ""))
    return (result, status, msg, delay, False)


def auth_args(account, params):
    view = find_user(account, params)
    factor = params.get("factor", "")
    if factor not in FACTORS:
        raise ParamError("factor")
    if not view["enrolled"] and factor != "passcode":
        raise ParamError("no capable device")
    return view, factor


async def h_auth(account, req, params):
    view, factor = auth_args(account, params)
    result, status, msg, delay, hang = outcome(account, view, factor, params)
    answer = {"result": result, "status": status, "status_msg": msg}
    if params.get("async") == "1":
        txid = str(uuid.uuid4())
        ready = time.time() + (HOLD_LIMIT_S if hang else delay)
        account.add_tx(txid, (ready, answer))
        return ok({"txid": txid})
    if hang:
        if await req.conn.wait_gone(HOLD_LIMIT_S):
            return None
    elif delay > 0:
        await asyncio.sleep(delay)
    return ok(answer)


async def h_auth_status(account, req, params):
    txid = params.get("txid")
    if not txid or txid not in account.tx:
        raise ParamError("txid")
    ready, answer = account.tx[txid]
    if time.time() < ready:
        return ok({"result": "waiting", "status": "pushed", "status_msg": PUSH_MSG})
    return ok(answer)


# --- Admin API -----------------------------------------------------------------------
def int_param(params, name, default, lo, hi):
    raw = params.get(name)
    if raw is None or raw == "":
        return default
    try:
        val = int(raw)
    except ValueError:
        raise ParamError(name) from None
    if val < lo or val > hi:
        raise ParamError(name)
    return val


def over_page_rate(account):
    """True if one more page would exceed the account's pages-per-minute (sliding 60 s)."""
    if account.pages_per_min <= 0:
        return False
    now = time.monotonic()
    times = account.page_times
    while times and now - times[0] >= 60.0:
        times.popleft()
    if len(times) >= account.pages_per_min:
        return True
    times.append(now)
    return False


async def h_users(account, req, params):
    if "username" in params:
        view = account.find(username=params["username"])
        users = [admin_user(view)] if view is not None else []
        return ok(users, {"total_objects": len(users)})
    limit = int_param(params, "limit", 100, 1, 300)
    offset = int_param(params, "offset", 0, 0, 1 << 62)
    if over_page_rate(account):
        account.stats["throttled"] += 1
        return fail(429, 42901, "Too Many Requests")
    account.stats["admin_pages"] += 1
    total = account.total_users()
    users = ", ".join(admin_user_json(v) for v in account.page(offset, limit))
    meta = {"total_objects": total}
    if offset + limit < total:
        meta["next_offset"] = offset + limit
    if offset > 0:
        meta["prev_offset"] = max(0, offset - limit)
    # The bytes json.dumps({"stat", "response", "metadata"}) would write, with the user
    # objects rendered from a template (a 300-user page is most of the emulator's work).
    return emu_http.Response(200, ('{"stat": "OK", "response": [%s], "metadata": %s}' % (
        users, json.dumps(meta))).encode())


USER_PREFIX = "/admin/v1/users/"


async def h_user_by_id(account, req, params):
    view = account.find(user_id=urllib.parse.unquote(req.path[len(USER_PREFIX):]))
    if view is None:
        return fail(404, 40401, "Resource not found", "user_id")
    return ok(admin_user(view))


async def h_summary(account, req, params):
    return ok({"admin_count": 1, "integration_count": len(account.integrations),
               "telephony_credits_remaining": 0, "user_count": account.total_users(),
               "user_pending_deletion_count": 0})


ROUTES = {
    "/auth/v2/check": (("GET",), h_check),
    "/auth/v2/enroll": (("POST",), h_enroll),
    "/auth/v2/enroll_status": (("POST",), h_enroll_status),
    "/auth/v2/preauth": (("POST",), h_preauth),
    "/auth/v2/auth": (("POST",), h_auth),
    "/auth/v2/auth_status": (("GET",), h_auth_status),
    "/admin/v1/users": (("GET",), h_users),
    "/admin/v1/info/summary": (("GET",), h_summary),
}
