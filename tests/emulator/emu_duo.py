"""emu_duo.py - the Duo endpoints: Auth API v2 (ping, check, enroll, enroll_status,
preauth, auth, auth_status) and Admin API v1 (users with filters, including
username_list and user_id_list as the JSON arrays Duo's client sends, and short pages,
users/{user_id}, info/summary), with faults before and after acting, signature checks,
integration types, licensing, the new-user policy and per-kind rate limits.

Invariant: the order of checks is faults, credentials/date/key/signature/skew, integration
state and type, licence, method, rate limit, parameters; only then does a call touch
account state. A fault marked `after` replaces the answer only once the call has acted.
"""

import asyncio
import json
import secrets
import time
import urllib.parse
import uuid

import emu_http
import emu_sign
from emu_state import (Enrollment, admin_user, admin_user_json, auth_devices, digest_id,
                       phones_of)

HOLD_LIMIT_S = 600
STATUS_HOLD_S = 30
PUSH_MSG = "Pushed a login request to your device..."
PUSH_FAILED_MSG = "Failed to push a login request to your device."
UNKNOWN_ALLOW_MSG = "Allowing unknown user"
BYPASS_MSG = "Allowing bypass user"
RESULTS = {"allow": ("allow", "allow", "Success. Logging you in..."),
           "deny": ("deny", "deny", "Login request denied."),
           "timeout": ("deny", "timeout", "Login request timed out."),
           "fraud": ("deny", "fraud", "Login request reported as fraudulent."),
           "locked_out": ("deny", "locked_out", "Your account is locked out."),
           "bypass": ("allow", "bypass", BYPASS_MSG),
           "push_failed": ("deny", "push_failed", PUSH_FAILED_MSG)}
# What a user's Duo status does to any auth attempt (before the factor is looked at).
STATUS_RESULTS = {"bypass": ("allow", "bypass", BYPASS_MSG),
                  "disabled": ("deny", "deny", "Your account is disabled."),
                  "locked out": ("deny", "locked_out", "Your account is locked out.")}
FACTORS = ("auto", "push", "phone", "passcode", "sms")
PUSH_FACTORS = ("auto", "push", "phone")
PUSHINFO_MAX = 20000
LIST_FILTERS = ("username", "email", "user_id_list", "username_list")
LIST_FILTER_MAX = 100
DEFAULT_DOMAIN = "@example.test"
EDGE_HTML = ("<html>\r\n<head><title>%d %s</title></head>\r\n<body>\r\n<center><h1>%d %s"
             "</h1></center>\r\n</body>\r\n</html>\r\n")


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
def take_fault(faults, path, after=False, host_only=False):
    for i, f in enumerate(faults):
        if host_only and f["path_prefix"] not in ("/", path):
            continue
        if bool(f.get("after")) == after and path.startswith(f["path_prefix"]):
            f["count"] -= 1
            if f["count"] <= 0:
                del faults[i]
            return f
    return None


def fault_response(f):
    if f.get("drop"):
        return emu_http.Response(0, drop=True)
    headers = {}
    if f.get("retry_after") is not None:
        headers["Retry-After"] = str(f["retry_after"])
    if f.get("content_type"):
        headers["Content-Type"] = f["content_type"]
    status = f.get("status")
    if f.get("html"):
        status = status or 502
        reason = emu_http.REASONS.get(status, "Error")
        headers.setdefault("Content-Type", "text/html")
        body = (EDGE_HTML % (status, reason, status, reason)).encode()
        return emu_http.Response(status, body, headers)
    if f.get("body") is not None:
        return emu_http.Response(status or 200, f["body"].encode("utf-8"), headers)
    if status == 429:
        return fail(429, 42901, "Too Many Requests", headers=headers)
    if status == 500:
        return fail(500, 50001, "Internal server error", headers=headers)
    reason = emu_http.REASONS.get(status, "Error")
    return fail(status, status * 100 + 1, reason, headers=headers)


def answers(f):
    return f.get("status") is not None or f.get("body") is not None or f.get("drop") \
        or f.get("html")


async def apply_fault(emu, account, path, after=False, host_only=False):
    """A fault response, or None to continue (no fault, or a latency-only fault). With
    host_only, only the account's faults of the whole host ("/") or of this very path."""
    f = take_fault(account.faults, path, after, host_only) if account is not None else None
    if f is None:
        f = take_fault(emu.global_faults, path, after)
    if f is None:
        return None
    if f.get("latency_ms"):
        await asyncio.sleep(f["latency_ms"] / 1000.0)
    if not answers(f):
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


class Params(dict):
    """Request parameters: the first value of each key; all values in .multi."""

    def __init__(self, pairs):
        super().__init__()
        self.multi = {}
        for k, v in pairs:
            self.setdefault(k, v)
            self.multi.setdefault(k, []).append(v)

    def all(self, name):
        return self.multi.get(name, [])


def request_params(req):
    """Parameters (Params) from query, form or JSON body."""
    pairs = emu_sign.decode_form(req.query)
    if req.body and emu_sign.is_json(req):
        try:
            obj = json.loads(req.body)
        except ValueError:
            raise ParamError("body") from None
        if not isinstance(obj, dict):
            raise ParamError("body")
        for k, v in obj.items():
            if isinstance(v, list):
                pairs += [(k, x if isinstance(x, str) else json.dumps(x)) for x in v]
            else:
                pairs.append((k, v if isinstance(v, str) else json.dumps(v)))
    elif req.body:
        pairs += emu_sign.decode_form(req.body)
    return Params(pairs)


def route_of(path):
    """(methods, handler, extra) for a Duo path, or None."""
    route = ROUTES.get(path)
    if route is not None:
        return route[0], route[1], None
    if path.startswith(USER_PREFIX) and "/" not in path[len(USER_PREFIX):] \
            and len(path) > len(USER_PREFIX):
        return ("GET",), h_user_by_id, path[len(USER_PREFIX):]
    return None


def throttled(lim):
    headers = {}
    if lim.get("retry_after") is not None:
        headers["Retry-After"] = str(lim["retry_after"])
    return fail(429, 42901, "Too Many Requests", headers=headers)


async def handle(emu, req):
    """Serves one Duo API request: returns (Response or None, account or None)."""
    if req.path == "/auth/v2/ping":
        # Duo needs no signature here; a signed ping names its account, whose faults of
        # the whole host ("/") stand for its deployment's (a hung host hangs its ping
        # too); a fault of some endpoints is that API's trouble, not the host's.
        resp = await apply_fault(emu, peek_account(emu, req), req.path, host_only=True)
        return resp or ok({"time": int(time.time())}), None
    account = peek_account(emu, req)
    resp = await apply_fault(emu, account, req.path)
    if resp is not None:
        return resp, account
    route = route_of(req.path)
    denied = check_access(emu, req, account) if account is not None else None
    if account is None:
        denied = unverified_failure(emu, req)
    if denied is not None:
        return denied, account
    if route is None:
        return fail(404, 40401, "Resource not found"), account
    if req.method not in route[0]:
        return fail(405, 40501, "Method not allowed"), account
    lim = account.over_limit(req.path)
    if lim is not None:
        return throttled(lim), account
    try:
        params = request_params(req)
        if route[2] is not None:
            params["user_id"] = route[2]
        resp = await route[1](account, req, params)
    except ParamError as err:
        resp = bad_param(str(err))
    if resp is None:  # a held request whose client went away
        return None, account
    after = await apply_fault(emu, account, req.path, after=True)
    return (after or resp), account


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
    account.stats["enrollments"] += 1
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
    if view is not None and view.get("status", "active") != "active":
        result, _, msg = STATUS_RESULTS[view["status"]]
        return ok({"result": result, "status_msg": msg})
    if view is None or not phones_of(view):
        policy = account.new_user_policy
        if policy == "allow":
            return ok({"result": "allow", "status_msg": UNKNOWN_ALLOW_MSG})
        if policy == "deny":
            return ok({"result": "deny", "status_msg": "Access denied"})
        host = req.headers.get("host", "localhost")
        return ok({"result": "enroll", "status_msg": "Enroll an authentication device to proceed",
                   "enroll_portal_url": "https://%s/portal?code=%s" % (host, secrets.token_hex(8))})
    mode = account.behavior_for(view["user_id"])["preauth"]
    if mode == "allow":
        return ok({"result": "allow", "status_msg": UNKNOWN_ALLOW_MSG})
    if mode == "deny":
        return ok({"result": "deny", "status_msg": "Access denied"})
    return ok({"result": "auth", "status_msg": "Account is active",
               "devices": auth_devices(view)})


def outcome(account, view, factor, params):
    """(result, status, status_msg, delay_s, hang) for one auth attempt."""
    if view.get("status", "active") != "active":
        return STATUS_RESULTS[view["status"]] + (0, False)
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


def needed_capability(factor):
    return {"push": ("push",), "phone": ("phone",), "sms": ("sms",),
            "auto": ("push", "phone")}.get(factor, ())


def check_device(view, factor, params):
    """Duo's device rule: `device` (default auto) must name a phone of the user with the
    capability the factor needs, or be `auto` with at least one such phone."""
    caps = needed_capability(factor)
    if not caps:
        return
    phones = phones_of(view)
    device = params.get("device") or "auto"
    if device == "auto":
        if not any(set(caps) & set(p["capabilities"]) for p in phones):
            raise ParamError("no capable device")
        return
    for p in phones:
        if p["phone_id"] == device and set(caps) & set(p["capabilities"]):
            return
    raise ParamError("device")


def check_pushinfo(params):
    """pushinfo is URL-encoded key=value pairs, under 20,000 bytes as sent."""
    info = params.get("pushinfo")
    if info is not None and len(urllib.parse.quote(info, safe="=&%+")) >= PUSHINFO_MAX:
        raise ParamError("pushinfo")


def unknown_user_answer(account, params):
    """Auth for a username Duo does not have (or a user without devices) under a
    new-user policy other than enroll: (result, status, status_msg)."""
    if account.new_user_policy == "allow":
        return ("allow", "bypass", UNKNOWN_ALLOW_MSG)
    return ("deny", "deny", "Access denied")


def auth_args(account, params):
    """(view or None, factor); None: an unknown/unenrolled user under the new-user
    policy `allow` or `deny`."""
    factor = params.get("factor", "")
    policy = account.new_user_policy
    try:
        view = find_user(account, params)
    except ParamError as err:
        if str(err) == "username" and params.get("username") and policy != "enroll" \
                and not params.get("user_id"):
            view = None
        else:
            raise
    if factor not in FACTORS:
        raise ParamError("factor")
    check_pushinfo(params)
    if view is None:
        return None, factor
    if view.get("status", "active") != "active":
        return view, factor
    if not phones_of(view):
        if policy != "enroll":
            return None, factor
        if factor != "passcode":
            raise ParamError("no capable device")
    check_device(view, factor, params)
    return view, factor


async def h_auth(account, req, params):
    view, factor = auth_args(account, params)
    if view is None:
        result, status, msg = unknown_user_answer(account, params)
        delay, hang = 0, False
    else:
        result, status, msg, delay, hang = outcome(account, view, factor, params)
    answer = {"result": result, "status": status, "status_msg": msg}
    is_async = params.get("async") == "1"
    txid = str(uuid.uuid4()) if is_async else None
    if view is not None and factor in PUSH_FACTORS and \
            view.get("status", "active") == "active":
        account.record_push(view, factor, params, txid)
    if is_async:
        ready = time.time() + (HOLD_LIMIT_S if hang else delay)
        waiting = PUSH_FAILED_MSG if status == "push_failed" else PUSH_MSG
        account.add_tx(txid, {"ready": ready, "answer": answer, "polls": 0,
                              "waiting": "push_failed" if status == "push_failed"
                              else "pushed", "waiting_msg": waiting,
                              "user_id": view["user_id"] if view else None})
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
    tx = account.tx[txid]
    tx["polls"] += 1
    wait = tx["ready"] - time.time()
    if wait > 0:
        # Duo long-polls: the first poll answers the current state (pushed); later ones
        # are held until the transaction's result changes (at most STATUS_HOLD_S, then
        # "waiting" again), so a client never spins.
        if tx["polls"] > 1 and await req.conn.wait_gone(min(wait, STATUS_HOLD_S)):
            return None
        if time.time() < tx["ready"]:
            return ok({"result": "waiting", "status": tx["waiting"],
                       "status_msg": tx["waiting_msg"]})
    return ok(tx["answer"])


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


def page_meta(offset, limit, served, total):
    """Duo's paging metadata; next_offset is where the next unseen user is."""
    meta = {"total_objects": total}
    if offset + served < total:
        meta["next_offset"] = offset + served
    if offset > 0:
        meta["prev_offset"] = max(0, offset - limit)
    return meta


def list_filter_values(params, name):
    """The names or ids of a list filter. Duo takes a JSON array of strings in one
    parameter (Duo's Python client sends username_list='["alice","bob"]', its
    get_users_by_names/get_users_by_ids); the parameter repeated, one value each, is read
    too. A value that opens a JSON array but is not one of strings is a 400."""
    values = []
    for raw in params.all(name):
        if not raw.lstrip().startswith("["):
            values.append(raw)
            continue
        try:
            arr = json.loads(raw)
        except ValueError:
            raise ParamError(name)
        if not isinstance(arr, list) or not all(isinstance(v, str) for v in arr):
            raise ParamError(name)
        values += arr
    return values


def filtered_users(account, params):
    """The users a filtered listing names (username/email/user_id_list/username_list),
    in the order asked, without repeats; raises ParamError."""
    views = []
    if "username" in params:
        views.append(account.find(username=params["username"]))
    if "email" in params:
        want = params["email"].lower()
        views += [v for v in account.all_explicit() if
                  (v["email"] or v["username"] + "@example.test").lower() == want]
        if want.endswith(DEFAULT_DOMAIN):  # a generated user's default address
            v = account.find(username=params["email"][:-len(DEFAULT_DOMAIN)])
            if v is not None and v["gen_pos"] is not None:
                views.append(v)
    for name, key in (("user_id_list", "user_id"), ("username_list", "username")):
        values = list_filter_values(params, name)
        if name in params and not 1 <= len(values) <= LIST_FILTER_MAX:
            raise ParamError(name)
        views += [account.find(**{key: v}) for v in values]
    seen, out = set(), []
    for v in views:
        if v is not None and v["user_id"] not in seen:
            seen.add(v["user_id"])
            out.append(v)
    return out


async def h_users(account, req, params):
    limit = int_param(params, "limit", 100, 1, 300)
    offset = int_param(params, "offset", 0, 0, 1 << 62)
    if any(f in params for f in LIST_FILTERS):
        lim = account.over_limit("single")
        if lim is not None:
            return throttled(lim)
        views = filtered_users(account, params)
        chosen = views[offset: offset + limit]
        return ok([admin_user(v) for v in chosen],
                  page_meta(offset, limit, len(chosen), len(views)))
    lim = account.over_limit("pages")
    if lim is not None:
        return throttled(lim)
    account.stats["admin_pages"] += 1
    total = account.total_users()
    size = account.next_page_size(limit)
    page = account.page(offset, size)
    users = ", ".join(admin_user_json(v) for v in page)
    meta = page_meta(offset, limit, len(page), total)
    account.page_served()
    # The bytes json.dumps({"stat", "response", "metadata"}) would write, with the user
    # objects rendered from a template (a 300-user page is most of the emulator's work).
    return emu_http.Response(200, ('{"stat": "OK", "response": [%s], "metadata": %s}' % (
        users, json.dumps(meta))).encode())


async def h_user_by_id(account, req, params):
    lim = account.over_limit("single")
    if lim is not None:
        return throttled(lim)
    view = account.find(user_id=params["user_id"])
    if view is None:
        return fail(404, 40401, "Resource not found")
    return ok(admin_user(view))


async def h_summary(account, req, params):
    return ok({"admin_count": 1, "integration_count": len(account.integrations),
               "telephony_credits_remaining": 0, "user_count": account.total_users(),
               "user_pending_deletion_count": 0})


USER_PREFIX = "/admin/v1/users/"
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
