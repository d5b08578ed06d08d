"""emu_control.py - the unsigned JSON control API under /_emu/ that tests use to set up
accounts, users, enrollments, behaviours and faults and to read statistics.

Invariant: an account owns its integrations exactly; replacing an account first drops the
ikeys it held, and an ikey belongs to at most one account.
"""

import json
import urllib.parse

import emu_http
from emu_state import Account

PUSH_FIELDS = ("push", "delay_ms", "passcode", "preauth")


class ControlError(Exception):
    pass


def reply(obj, status=200):
    body = {"stat": "OK", "response": obj} if status == 200 else obj
    return emu_http.Response(status, json.dumps(body).encode())


def error(detail):
    return reply({"stat": "FAIL", "code": 40002, "message": "Invalid request parameters",
                  "message_detail": detail}, 400)


def need(obj, name, kind=str):
    val = obj.get(name)
    if not isinstance(val, kind) or isinstance(val, bool) and kind is int:
        raise ControlError(name)
    return val


def account_of(emu, body):
    acc = emu.accounts.get(need(body, "account"))
    if acc is None:
        raise ControlError("account")
    return acc


def c_account(emu, body):
    name = need(body, "account")
    old = emu.accounts.get(name)
    if old is not None:
        for ikey in old.integrations:
            emu.integrations.pop(ikey, None)
    acc = Account(name, bool(body.get("admin_licensed", True)),
                  int(body.get("admin_pages_per_min", 0) or 0))
    for integ in body.get("integrations", []):
        ikey, skey = need(integ, "ikey"), need(integ, "skey")
        kind = integ.get("type", "auth")
        if kind not in ("auth", "admin"):
            raise ControlError("type")
        prev = emu.integrations.get(ikey)
        if prev is not None and prev["account"] in emu.accounts:
            emu.accounts[prev["account"]].integrations.remove(ikey)
        emu.integrations[ikey] = {"skey": skey, "type": kind, "account": name,
                                  "disabled": bool(integ.get("disabled", False))}
        acc.integrations.append(ikey)
    emu.accounts[name] = acc
    return {"account": name, "integrations": len(acc.integrations)}


def c_integration(emu, body):
    integ = emu.integrations.get(need(body, "ikey"))
    if integ is None:
        raise ControlError("ikey")
    integ["disabled"] = bool(body.get("disabled", True))
    return {"ikey": body["ikey"], "disabled": integ["disabled"]}


def c_users(emu, body):
    acc = account_of(emu, body)
    created = []
    for u in body.get("users", []):
        uid = acc.add_user(need(u, "username"), u.get("user_id"),
                           bool(u.get("enrolled", True)), u.get("email"), u.get("realname"))
        created.append({"username": u["username"], "user_id": uid})
    gen = body.get("generate")
    if gen:
        count = need(gen, "count", int)
        start = int(gen.get("start", 0))
        if count < 0 or start < 0:
            raise ControlError("count")
        acc.add_range(gen.get("prefix", "user"), start, count, int(gen.get("width", 7)))
    return {"users": created, "total": acc.total_users()}


def c_remove(emu, body):
    acc = account_of(emu, body)
    view = acc.find(user_id=body["user_id"]) if body.get("user_id") else \
        acc.find(username=need(body, "username"))
    if view is None:
        raise ControlError("username")
    acc.remove(view)
    return {"removed": view["user_id"]}


def c_enrollment(emu, body):
    acc = account_of(emu, body)
    action = need(body, "action")
    if action not in ("complete", "expire"):
        raise ControlError("action")
    if body.get("activation_code"):
        enr = acc.enrollments.get(body["activation_code"])
    else:
        uid = need(body, "user_id")
        found = [e for e in acc.enrollments.values() if e.user_id == uid]
        enr = found[-1] if found else None
    if enr is None:
        raise ControlError("activation_code")
    enr.state = "success" if action == "complete" else "expired"
    user = acc.by_id.get(enr.user_id)
    if user is not None and action == "complete":
        user.enrolled = True
    return {"user_id": enr.user_id, "state": enr.state}


def c_behavior(emu, body):
    acc = account_of(emu, body)
    who = need(body, "user")
    fields = {k: body[k] for k in PUSH_FIELDS if k in body}
    if "delay_ms" in fields:
        fields["delay_ms"] = int(fields["delay_ms"] or 0)
    if who == "*":
        acc.behavior.update(fields)
        return {"user": "*"}
    view = acc.find(user_id=who) or acc.find(username=who)
    if view is None:
        raise ControlError("user")
    acc.user_behavior.setdefault(view["user_id"], {}).update(fields)
    return {"user": view["user_id"]}


def c_faults(emu, body):
    fault = {"path_prefix": body.get("path_prefix", "/"),
             "status": body.get("status"), "count": int(body.get("count", 1)),
             "retry_after": body.get("retry_after"),
             "latency_ms": int(body.get("latency_ms", 0) or 0), "body": body.get("body")}
    if fault["status"] is not None and not isinstance(fault["status"], int):
        raise ControlError("status")
    if fault["body"] is not None and not isinstance(fault["body"], str):
        raise ControlError("body")
    target = account_of(emu, body).faults if body.get("account") else emu.global_faults
    target.append(fault)
    return {"queued": len(target)}


def c_stats(emu, query):
    params = dict(urllib.parse.parse_qsl(query))
    if not params.get("account"):
        return {"requests": emu.global_stats["requests"], "in_flight": emu.in_flight,
                "accounts": len(emu.accounts)}
    acc = emu.accounts.get(params["account"])
    if acc is None:
        raise ControlError("account")
    out = dict(acc.stats)
    out["in_flight"] = emu.in_flight
    return out


POSTS = {"/_emu/account": c_account, "/_emu/integration": c_integration,
         "/_emu/users": c_users, "/_emu/users/remove": c_remove,
         "/_emu/enrollment": c_enrollment, "/_emu/behavior": c_behavior,
         "/_emu/faults": c_faults}


def handle(emu, req):
    """Serves one control call; returns a Response."""
    try:
        if req.path == "/_emu/stats" and req.method == "GET":
            return emu_http.Response(200, json.dumps(c_stats(emu, req.query)).encode())
        fn = POSTS.get(req.path)
        if fn is None or req.method != "POST":
            return reply({"stat": "FAIL", "code": 40401, "message": "Resource not found"},
                         404)
        try:
            body = json.loads(req.body or b"{}")
        except ValueError:
            raise ControlError("body") from None
        if not isinstance(body, dict):
            raise ControlError("body")
        return reply(fn(emu, body))
    except ControlError as err:
        return error(str(err))
    except (TypeError, ValueError, KeyError, AttributeError) as err:
        return error("invalid value: %r" % (err,))
