"""emu_control.py - the unsigned JSON control API under /_emu/ that tests use to set up
accounts, settings (new-user policy, short pages, rate limits), users (status, aliases,
phones, groups) and scheduled listing mutations, enrollments, behaviours and faults, and
to read statistics and the pushes sent.

Invariant: an account owns its integrations exactly; replacing an account first drops the
ikeys it held, and an ikey belongs to at most one account.
"""

import json
import urllib.parse

import emu_http
from emu_state import NEW_USER_POLICIES, PHONE_CAPS, USER_STATUSES, Account

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


def phones_spec(val):
    """`phones`: a count (each phone with every capability) or a list of phones, each a
    list of capabilities or {"capabilities": [...]}; answers a list of capability lists."""
    if isinstance(val, bool):
        raise ControlError("phones")
    if isinstance(val, int):
        if val < 0 or val > 1000:
            raise ControlError("phones")
        return [list(PHONE_CAPS) for _ in range(val)]
    if not isinstance(val, list):
        raise ControlError("phones")
    out = []
    for p in val:
        caps = p.get("capabilities") if isinstance(p, dict) else p
        if not isinstance(caps, list) or not all(isinstance(c, str) for c in caps):
            raise ControlError("phones")
        out.append(caps)
    return out


def groups_spec(val):
    """`groups`: a count (groups named group-001 ...) or a list of names."""
    if isinstance(val, int) and not isinstance(val, bool) and 0 <= val <= 10000:
        return ["group-%03d" % (k + 1) for k in range(val)]
    if isinstance(val, list) and all(isinstance(g, str) for g in val):
        return list(val)
    raise ControlError("groups")


def aliases_spec(val):
    """`aliases`: {"alias1".."alias8": name} or a list of up to 8 names."""
    if isinstance(val, list):
        val = {"alias%d" % (k + 1): a for k, a in enumerate(val)}
    if not isinstance(val, dict) or len(val) > 8:
        raise ControlError("aliases")
    for k, v in val.items():
        if k not in ["alias%d" % n for n in range(1, 9)] or not isinstance(v, str) or not v:
            raise ControlError("aliases")
    return val


def status_spec(val):
    if val not in USER_STATUSES:
        raise ControlError("status")
    return val


def apply_user_fields(acc, user, u):
    """Sets the optional fields of one explicit user from a control object."""
    if "enrolled" in u:
        user.enrolled = bool(u["enrolled"])
    if "status" in u:
        user.status = status_spec(u["status"])
    if "phones" in u:
        user.phones = phones_spec(u["phones"])
    if "groups" in u:
        user.groups = groups_spec(u["groups"])
    if "aliases" in u:
        aliases = aliases_spec(u["aliases"])
        for name in aliases.values():
            other = acc.find(username=name)
            if other is not None and other["user_id"] != user.user_id:
                raise ControlError("aliases")
        acc.set_aliases(user, aliases)
    if "email" in u:
        user.email = u["email"]
    if "realname" in u:
        user.realname = u["realname"]


def add_users(acc, users, gen):
    """Adds explicit users and a generated range; answers the explicit users' ids."""
    created = []
    for u in users:
        at = u.get("at")
        if at is not None and (not isinstance(at, int) or at < 0):
            raise ControlError("at")
        uid = acc.add_user(need(u, "username"), u.get("user_id"),
                           bool(u.get("enrolled", True)), u.get("email"), u.get("realname"),
                           at)
        user = acc.by_id.get(uid)
        if user is not None:  # an explicit user (new, or the existing one of that name)
            apply_user_fields(acc, user, u)
        created.append({"username": u["username"], "user_id": uid})
    if gen:
        count = need(gen, "count", int)
        start = int(gen.get("start", 0))
        if count < 0 or start < 0:
            raise ControlError("count")
        extra = {}
        if "status" in gen:
            extra["status"] = status_spec(gen["status"])
        if "phones" in gen:
            extra["phones"] = phones_spec(gen["phones"])
        if "groups" in gen:
            extra["groups"] = groups_spec(gen["groups"])
        acc.add_range(gen.get("prefix", "user"), start, count, int(gen.get("width", 7)),
                      extra)
    return created


def c_users(emu, body):
    acc = account_of(emu, body)
    created = add_users(acc, body.get("users", []), body.get("generate"))
    return {"users": created, "total": acc.total_users()}


def c_update(emu, body):
    acc = account_of(emu, body)
    who = need(body, "user")
    view = acc.find(user_id=who) or acc.find(username=who)
    if view is None:
        raise ControlError("user")
    user = acc.by_id.get(view["user_id"])
    if user is None:
        raise ControlError("user")  # generated users cannot be changed one by one
    apply_user_fields(acc, user, body)
    return {"user_id": user.user_id}


def remove_users(acc, names):
    removed = []
    for who in names:
        view = acc.find(user_id=who) or acc.find(username=who)
        if view is not None:
            acc.remove(view)
            removed.append(view["user_id"])
    return removed


def c_schedule(emu, body):
    acc = account_of(emu, body)
    after = need(body, "after_pages", int)
    if after < 1:
        raise ControlError("after_pages")
    users, gen = body.get("add", []), body.get("generate")
    remove = body.get("remove", [])
    if not isinstance(users, list) or not isinstance(remove, list) or \
            not all(isinstance(r, str) for r in remove):
        raise ControlError("remove")
    for u in users:
        need(u, "username")
    if gen is not None:
        need(gen, "count", int)

    def apply():
        try:
            remove_users(acc, remove)
            add_users(acc, users, gen)
        except ControlError:
            pass
    acc.schedules.append({"after_pages": after, "apply": apply})
    return {"scheduled": len(acc.schedules)}


def c_settings(emu, body):
    acc = account_of(emu, body)
    if "new_user_policy" in body:
        if body["new_user_policy"] not in NEW_USER_POLICIES:
            raise ControlError("new_user_policy")
        acc.new_user_policy = body["new_user_policy"]
    if "page_cap" in body:
        cap = need(body, "page_cap", int)
        if cap < 0:
            raise ControlError("page_cap")
        acc.page_cap = cap
    if "page_sizes" in body:
        sizes = body["page_sizes"]
        if not isinstance(sizes, list) or not all(
                isinstance(n, int) and not isinstance(n, bool) and n >= 0 for n in sizes):
            raise ControlError("page_sizes")
        acc.page_sizes.clear()
        acc.page_sizes.extend(sizes)
    limits = body.get("rate_limits", {})
    if not isinstance(limits, dict):
        raise ControlError("rate_limits")
    for kind, spec in limits.items():
        if spec is None:
            acc.set_limit(kind, 0, None)
            continue
        per_min = need(spec, "per_min", int)
        retry = spec.get("retry_after")
        if retry is not None and (not isinstance(retry, int) or retry < 0):
            raise ControlError("retry_after")
        acc.set_limit(kind, per_min, retry)
    return settings_of(acc)


def settings_of(acc):
    return {"new_user_policy": acc.new_user_policy, "page_cap": acc.page_cap,
            "page_sizes": list(acc.page_sizes),
            "rate_limits": {k: {"per_min": v["per_min"], "retry_after": v["retry_after"]}
                            for k, v in acc.limits.items()},
            "schedules": len(acc.schedules)}


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
    if body.get("clear"):
        # Recovery: forget the faults still queued (for one account, or the global ones);
        # requests already waiting out a latency fault finish as they started.
        target = account_of(emu, body).faults if body.get("account") else emu.global_faults
        dropped = len(target)
        target.clear()
        return {"cleared": dropped}
    fault = {"path_prefix": body.get("path_prefix", "/"),
             "status": body.get("status"), "count": int(body.get("count", 1)),
             "retry_after": body.get("retry_after"),
             "latency_ms": int(body.get("latency_ms", 0) or 0), "body": body.get("body"),
             "after": bool(body.get("after", False)), "drop": bool(body.get("drop", False)),
             "html": bool(body.get("html", False)), "content_type": body.get("content_type")}
    if fault["status"] is not None and (not isinstance(fault["status"], int) or
                                        not 100 <= fault["status"] <= 599):
        raise ControlError("status")
    if fault["body"] is not None and not isinstance(fault["body"], str):
        raise ControlError("body")
    if fault["content_type"] is not None and not isinstance(fault["content_type"], str):
        raise ControlError("content_type")
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
    out["pushes"] = acc.push_total
    return out


def c_pushes(emu, query):
    """Pushes (push/phone/auto auth calls that reached a user's phone) of an account:
    totals per user id and username, per txid with its auth_status polls, and the log."""
    params = dict(urllib.parse.parse_qsl(query))
    acc = emu.accounts.get(params.get("account", ""))
    if acc is None:
        raise ControlError("account")
    by_name = {}
    for p in acc.pushes:
        by_name[p["username"]] = by_name.get(p["username"], 0) + 1
    txids = {}
    for p in acc.pushes:
        if p["txid"] is not None:
            tx = acc.tx.get(p["txid"])
            txids[p["txid"]] = {"user_id": p["user_id"], "username": p["username"],
                                "pushes": txids.get(p["txid"], {}).get("pushes", 0) + 1,
                                "polls": tx["polls"] if tx else 0,
                                "result": tx["answer"]["result"] if tx else None,
                                "status": tx["answer"]["status"] if tx else None}
    log = list(acc.pushes)
    who = params.get("user")
    if who:
        log = [p for p in log if who in (p["user_id"], p["username"])]
    return {"total": acc.push_total, "by_user": dict(acc.push_by_user),
            "by_username": by_name, "txids": txids, "pushes": log}


def c_pushes_reset(emu, body):
    acc = account_of(emu, body)
    acc.pushes.clear()
    acc.push_total = 0
    acc.push_by_user = {}
    return {"total": 0}


POSTS = {"/_emu/account": c_account, "/_emu/integration": c_integration,
         "/_emu/users": c_users, "/_emu/users/remove": c_remove,
         "/_emu/users/update": c_update, "/_emu/users/schedule": c_schedule,
         "/_emu/settings": c_settings, "/_emu/pushes/reset": c_pushes_reset,
         "/_emu/enrollment": c_enrollment, "/_emu/behavior": c_behavior,
         "/_emu/faults": c_faults}
GETS = {"/_emu/stats": c_stats, "/_emu/pushes": c_pushes}


def handle(emu, req):
    """Serves one control call; returns a Response."""
    try:
        if req.path in GETS and req.method == "GET":
            return emu_http.Response(200, json.dumps(GETS[req.path](emu, req.query)).encode())
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
