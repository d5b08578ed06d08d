#!/usr/bin/env python3
"""emulator_conformance.py - the second judge of the Duo emulator: drives it with Duo's
OFFICIAL Python client (Debian's python3-duo-client, module duo_client) for every call the
workers make, and checks the behaviours real Duo has that tests rely on (short pages,
users changing mid-listing, new-user policy, user statuses, result/status pairs, push
counting, faults after acting, per-kind rate limits, non-JSON 5xx, Duo's validations).

Invariant: every Duo call goes through duo_client (its signing, its paging iterator, its
error raising, its 429 back-off); only the emulator's unsigned /_emu/ control API is called
directly. The client verifies the emulator's TLS certificate against DUO_CA_FILE.

Usage: emulator_conformance.py   (env DUO_EMU_URL, DUO_CA_FILE; exits 1 on any failure)
"""

import hashlib
import http.client
import json
import os
import random
import ssl
import sys
import time
import urllib.error
import urllib.parse
import urllib.request

try:
    import duo_client
except ImportError:
    print("FAIL python3-duo-client is not installed (scripts/bootstrap.sh installs it)")
    sys.exit(1)

URL = os.environ["DUO_EMU_URL"]
CA = os.environ["DUO_CA_FILE"]
PORT = urllib.parse.urlsplit(URL).port
HOST = "localhost"  # the emulator certificate's DNS name (duo_client checks DNS SANs)
RUN = "conf%d%d" % (os.getpid(), random.randrange(1 << 30))
RESULTS = {"pass": 0, "fail": 0}


def check(name, cond, detail=""):
    if cond:
        RESULTS["pass"] += 1
        print("ok   " + name)
    else:
        RESULTS["fail"] += 1
        print("FAIL %s%s" % (name, (": " + str(detail)[:400]) if detail else ""))


def ctl(path, body=None):
    """One control call (POST JSON or GET); answers the parsed JSON (the bare object for
    GET, the `response` for POST) or raises."""
    ctx = ssl.create_default_context(cafile=CA)
    data = json.dumps(body).encode() if body is not None else None
    req = urllib.request.Request(URL + path, data=data,
                                 headers={"Content-Type": "application/json"},
                                 method="POST" if data is not None else "GET")
    with urllib.request.urlopen(req, context=ctx, timeout=30) as resp:
        obj = json.loads(resp.read())
    return obj["response"] if data is not None else obj


def raises(fn):
    """The exception fn() raises, or None."""
    try:
        fn()
    except Exception as exc:  # the client raises RuntimeError, http.client errors ...
        return exc
    return None


def envelope(exc):
    """The parsed error body of a RuntimeError raised by duo_client (its .data is the
    parsed JSON for a Duo envelope, the text otherwise), or {}."""
    data = getattr(exc, "data", None)
    if isinstance(data, (str, bytes)):
        try:
            data = json.loads(data)
        except ValueError:
            return {}
    return data if isinstance(data, dict) else {}


def code_of(exc):
    """Duo's error code from a RuntimeError raised by duo_client, or None."""
    return envelope(exc).get("code")


def detail_of(exc):
    return envelope(exc).get("message_detail")


class Tenant:
    """One emulator account with an Auth and an Admin integration and official clients."""

    def __init__(self, name, digest=hashlib.sha1):
        self.account = RUN + "-" + name
        self.auth_ikey, self.admin_ikey = "DIA" + self.account, "DIM" + self.account
        self.skey = "secret-" + self.account
        ctl("/_emu/account", {"account": self.account, "integrations": [
            {"ikey": self.auth_ikey, "skey": self.skey, "type": "auth"},
            {"ikey": self.admin_ikey, "skey": self.skey, "type": "admin"}]})
        self.auth = duo_client.Auth(ikey=self.auth_ikey, skey=self.skey, host=HOST,
                                    port=PORT, ca_certs=CA, digestmod=digest)
        self.admin = duo_client.Admin(ikey=self.admin_ikey, skey=self.skey, host=HOST,
                                      port=PORT, ca_certs=CA, digestmod=digest)

    def users(self, users=None, generate=None):
        body = {"account": self.account, "users": users or []}
        if generate:
            body["generate"] = generate
        return {u["username"]: u["user_id"] for u in ctl("/_emu/users", body)["users"]}

    def set(self, **settings):
        return ctl("/_emu/settings", dict(settings, account=self.account))

    def behave(self, user, **fields):
        ctl("/_emu/behavior", dict(fields, account=self.account, user=user))

    def fault(self, **fault):
        ctl("/_emu/faults", dict(fault, account=self.account))

    def stats(self):
        return ctl("/_emu/stats?account=" + urllib.parse.quote(self.account))

    def pushes(self):
        return ctl("/_emu/pushes?account=" + urllib.parse.quote(self.account))

    def no_backoff(self, client):
        """A copy of a client that returns a 429 at once instead of backing off."""
        c = duo_client.Admin(ikey=client.ikey, skey=client.skey, host=HOST, port=PORT,
                             ca_certs=CA, digestmod=client.digestmod)
        c._MAX_BACKOFF_WAIT_SECS = 0
        return c


def wait_result(auth, txid, limit_s=10):
    """Polls auth_status (the client's own call) until it stops waiting."""
    seen = []
    deadline = time.time() + limit_s
    while time.time() < deadline:
        st = auth.auth_status(txid)
        seen.append(st["status"])
        if not st["waiting"]:
            return st, seen
        time.sleep(0.1)
    return None, seen


# --- the calls the workers make ---------------------------------------------------------
def test_auth_api(t):
    check("ping", isinstance(t.auth.ping()["time"], int))
    check("check (signed)", isinstance(t.auth.check()["time"], int))
    wrong = duo_client.Auth(ikey=t.auth_ikey, skey="wrong", host=HOST, port=PORT,
                            ca_certs=CA)
    e = raises(wrong.check)
    check("wrong secret -> 401 40103", getattr(e, "status", None) == 401 and
          code_of(e) == 40103, e)
    e = raises(lambda: duo_client.Auth(ikey=t.admin_ikey, skey=t.skey, host=HOST, port=PORT,
                                       ca_certs=CA).check())
    check("auth call with the admin key -> 403 40301", code_of(e) == 40301, e)
    ids = t.users([{"username": "alice"}])
    r = t.auth.preauth(username="alice")
    check("preauth known -> auth + devices", r["result"] == "auth" and
          r["devices"][0]["capabilities"], r)
    check("preauth by user_id", t.auth.preauth(user_id=ids["alice"])["result"] == "auth")
    r = t.auth.preauth(username="nobody-" + RUN)
    check("preauth unknown, default policy -> enroll", r["result"] == "enroll", r)
    r = t.auth.auth("push", username="alice", device="auto")
    check("sync auth allow/allow", (r["result"], r["status"]) == ("allow", "allow"), r)
    dev = t.auth.preauth(username="alice")["devices"][0]["device"]
    r = t.auth.auth("push", user_id=ids["alice"], device=dev, ipaddr="10.0.0.1",
                    type="Test Login", display_username="Alice",
                    pushinfo="from=login%20page&app=x")
    check("sync auth with the preauth device + pushinfo", r["result"] == "allow", r)
    r = t.auth.auth("passcode", username="alice", passcode="123456")
    check("passcode allow", r["result"] == "allow", r)
    t.behave("alice", push="allow", delay_ms=300)
    r = t.auth.auth("push", username="alice", device="auto", async_txn=True)
    check("async auth -> txid", bool(r.get("txid")), r)
    st, seen = wait_result(t.auth, r["txid"])
    check("auth_status: pushed, then success", st is not None and st["success"] and
          seen[0] == "pushed" and st["status"] == "allow", (st, seen))
    e = raises(lambda: t.auth.auth_status("no-such-txid"))
    check("auth_status unknown txid -> 400 40002 txid", code_of(e) == 40002 and
          detail_of(e) == "txid", e)
    t.behave("alice", delay_ms=0)


def test_enroll(t):
    r = t.auth.enroll(username="enr-" + RUN, valid_secs=600)
    check("enroll answers Duo's fields", r["activation_code"].startswith("duo://") and
          r["activation_barcode"].startswith("https://") and r["user_id"].startswith("DU")
          and r["username"] == "enr-" + RUN, r)
    check("enroll_status waiting",
          t.auth.enroll_status(r["user_id"], r["activation_code"]) == "waiting")
    ctl("/_emu/enrollment", {"account": t.account, "activation_code": r["activation_code"],
                             "action": "complete"})
    check("enroll_status success",
          t.auth.enroll_status(r["user_id"], r["activation_code"]) == "success")
    check("enroll_status of another code -> invalid",
          t.auth.enroll_status(r["user_id"], "duo://nope") == "invalid")
    e = raises(lambda: t.auth.enroll(username="enr-" + RUN))
    check("enroll of an existing username -> 400 40002", code_of(e) == 40002, e)


def test_admin_listing(t):
    t.users(generate={"count": 250, "prefix": "lst", "start": 0})
    names = [u["username"] for u in t.admin.get_users()]
    check("get_users (client iterator, 100 a page) lists each user once",
          sorted(names) == ["lst%07d" % i for i in range(250)], len(names))
    t.set(page_sizes=[100, 7, 50], page_cap=33)
    before = t.stats()["admin_pages"]
    names = [u["username"] for u in t.admin.get_users_iterator()]
    pages = t.stats()["admin_pages"] - before
    check("short pages: the client follows next_offset and misses nobody",
          sorted(names) == ["lst%07d" % i for i in range(250)], len(names))
    # 100 + 7 + 50 = 157, then 93 left in pages of 33: 3 more.
    check("short pages: 6 pages served", pages == 6, pages)
    resp, data = t.admin.api_call("GET", "/admin/v1/users", {"limit": "300", "offset": "0"})
    body = json.loads(data)
    check("a short page says so: 33 of limit 300, next_offset 33",
          len(body["response"]) == 33 and body["metadata"]["next_offset"] == 33 and
          body["metadata"]["total_objects"] == 250, body["metadata"])
    t.set(page_cap=0)
    one = t.admin.get_users_by_name("lst0000042")
    check("get_users_by_name finds one", len(one) == 1 and
          one[0]["username"] == "lst0000042", one)
    check("get_users_by_name unknown -> []", t.admin.get_users_by_name("zz-" + RUN) == [])
    by_id = t.admin.get_user_by_id(one[0]["user_id"])
    check("get_user_by_id answers the user object", by_id["username"] == "lst0000042" and
          by_id["status"] == "active" and by_id["phones"], by_id)
    e = raises(lambda: t.admin.get_user_by_id("DUNOSUCHUSER000000000"))
    check("get_user_by_id unknown -> 404 40401", getattr(e, "status", None) == 404 and
          code_of(e) == 40401, e)
    ids = [u["user_id"] for u in t.admin.get_users(limit=3, offset=10)]
    got = t.admin.json_api_call("GET", "/admin/v1/users",
                                {"user_id_list": ids, "username_list": ["lst0000200"]})
    check("user_id_list + username_list filters",
          [u["user_id"] for u in got][:3] == ids and got[3]["username"] == "lst0000200",
          [u["username"] for u in got])
    # As Duo's client sends them (get_users_by_names / get_users_by_ids in duo_client 5):
    # one parameter holding a JSON array; its brackets, quotes and commas are signed too.
    names = ["lst0000005", "lst0000123", "zz-none-" + RUN]
    got = t.admin.json_api_call("GET", "/admin/v1/users",
                                {"username_list": json.dumps(names), "limit": "100",
                                 "offset": "0"})
    check("username_list as a JSON array finds the users it names, in order",
          [u["username"] for u in got] == names[:2], [u["username"] for u in got])
    got = t.admin.json_api_call("GET", "/admin/v1/users",
                                {"user_id_list": json.dumps(ids[1:]), "limit": "100",
                                 "offset": "0"})
    check("user_id_list as a JSON array", [u["user_id"] for u in got] == ids[1:],
          [u["user_id"] for u in got])
    e = raises(lambda: t.admin.json_api_call("GET", "/admin/v1/users",
                                             {"username_list": "[1, 2]"}))
    check("username_list of non-strings -> 400", getattr(e, "status", None) == 400, e)
    got = t.admin.json_api_call("GET", "/admin/v1/users", {"email": "lst0000007@example.test"})
    check("email filter", len(got) == 1 and got[0]["username"] == "lst0000007", got)


def test_listing_mutations(t):
    names = ["mx%d" % i for i in range(1, 7)]
    t.users([{"username": n} for n in names])
    # After the first page (mx1, mx2): mx1 is deleted (so everything moves up one place
    # and mx3 falls before the next offset) and mnew is added at the end.
    ctl("/_emu/users/schedule", {"account": t.account, "after_pages": 1,
                                 "remove": ["mx1"], "add": [{"username": "mnew"}]})
    client = duo_client.Admin(ikey=t.admin_ikey, skey=t.skey, host=HOST, port=PORT,
                              ca_certs=CA, paging_limit=2)
    seen = [u["username"] for u in client.get_users_iterator()]
    check("deleted mid-listing: the next page skips one user (as Duo's offsets do)",
          seen == ["mx1", "mx2", "mx4", "mx5", "mx6", "mnew"], seen)
    ctl("/_emu/users/schedule", {"account": t.account, "after_pages": 1,
                                 "add": [{"username": "mfront", "at": 0}]})
    seen = [u["username"] for u in client.get_users_iterator()]
    check("added before the offset mid-listing: the next page repeats one user",
          seen == ["mx2", "mx3", "mx3", "mx4", "mx5", "mx6", "mnew"], seen)
    check("the added user is there afterwards",
          len(t.admin.get_users_by_name("mfront")) == 1)


def test_user_objects(t):
    t.users([{"username": "big", "phones": 30, "groups": 40,
              "aliases": ["big.alias", "big2"], "email": "big@corp.test"},
             {"username": "nodev", "enrolled": False},
             {"username": "zerophones", "phones": 0},
             {"username": "byp", "status": "bypass"},
             {"username": "dis", "status": "disabled"},
             {"username": "lock", "status": "locked out"}])
    big = t.admin.get_users_by_name("big")[0]
    check("large user object: 30 phones, 40 groups, aliases",
          len(big["phones"]) == 30 and len(big["groups"]) == 40 and
          big["aliases"] == {"alias1": "big.alias", "alias2": "big2"} and
          big["alias1"] == "big.alias" and len({p["phone_id"] for p in big["phones"]}) == 30,
          (len(big["phones"]), len(big["groups"]), big["aliases"]))
    check("lookup by alias finds the user",
          [u["username"] for u in t.admin.get_users_by_name("big2")] == ["big"])
    check("preauth lists all 30 devices",
          len(t.auth.preauth(username="big")["devices"]) == 30)
    for name in ("nodev", "zerophones"):
        u = t.admin.get_users_by_name(name)[0]
        check("user without devices (%s): is_enrolled false, no phones" % name,
              u["is_enrolled"] is False and u["phones"] == [], u)
        check("preauth of a user without devices -> enroll",
              t.auth.preauth(username=name)["result"] == "enroll")
    statuses = {u["username"]: u["status"] for u in t.admin.get_users()
                if u["username"] in ("byp", "dis", "lock", "big")}
    check("user status in the listing", statuses == {"byp": "bypass", "dis": "disabled",
                                                     "lock": "locked out", "big": "active"},
          statuses)
    r = t.auth.preauth(username="byp")
    check("preauth bypass user -> allow", r["result"] == "allow", r)
    check("preauth disabled / locked out -> deny",
          t.auth.preauth(username="dis")["result"] == "deny" and
          t.auth.preauth(username="lock")["result"] == "deny")
    r = t.auth.auth("push", username="byp", device="auto")
    check("auth bypass user -> allow/bypass", (r["result"], r["status"]) ==
          ("allow", "bypass"), r)
    r = t.auth.auth("push", username="lock", device="auto")
    check("auth locked-out user -> deny/locked_out", (r["result"], r["status"]) ==
          ("deny", "locked_out"), r)
    ctl("/_emu/users/update", {"account": t.account, "user": "lock", "status": "active"})
    r = t.auth.auth("push", username="lock", device="auto")
    check("unlocked (users/update) -> allow", r["result"] == "allow", r)
    t.users(generate={"count": 3, "prefix": "gbig", "phones": 4, "groups": 5,
                      "status": "bypass"})
    g = t.admin.get_users_by_name("gbig0000001")[0]
    check("generated users with phones/groups/status", len(g["phones"]) == 4 and
          len(g["groups"]) == 5 and g["status"] == "bypass", g["status"])


def test_new_user_policy(t):
    ghost = "ghost-" + RUN
    t.set(new_user_policy="allow")
    r = t.auth.preauth(username=ghost)
    check("policy allow: preauth unknown -> allow 'Allowing unknown user'",
          r == {"result": "allow", "status_msg": "Allowing unknown user"}, r)
    r = t.auth.auth("push", username=ghost, device="auto")
    check("policy allow: auth unknown -> allow/bypass", (r["result"], r["status"]) ==
          ("allow", "bypass"), r)
    check("policy allow: the user still does not exist",
          t.admin.get_users_by_name(ghost) == [])
    t.set(new_user_policy="deny")
    check("policy deny: preauth unknown -> deny",
          t.auth.preauth(username=ghost)["result"] == "deny")
    t.set(new_user_policy="enroll")
    check("policy enroll (default): preauth unknown -> enroll",
          t.auth.preauth(username=ghost)["result"] == "enroll")


def test_statuses(t):
    t.users([{"username": "st"}])
    want = {"allow": ("allow", "allow"), "deny": ("deny", "deny"),
            "fraud": ("deny", "fraud"), "locked_out": ("deny", "locked_out"),
            "timeout": ("deny", "timeout"), "push_failed": ("deny", "push_failed"),
            "bypass": ("allow", "bypass")}
    for push, pair in want.items():
        t.behave("st", push=push, delay_ms=0)
        r = t.auth.auth("push", username="st", device="auto")
        check("sync %s -> %s/%s" % ((push,) + pair), (r["result"], r["status"]) == pair, r)
        txid = t.auth.auth("push", username="st", device="auto", async_txn=True)["txid"]
        st, _ = wait_result(t.auth, txid)
        check("async %s -> auth_status %s" % (push, pair[1]), st is not None and
              st["status"] == pair[1] and st["success"] == (pair[0] == "allow"), st)
    t.behave("st", push="push_failed", delay_ms=300)
    txid = t.auth.auth("push", username="st", device="auto", async_txn=True)["txid"]
    st, seen = wait_result(t.auth, txid)
    check("async push_failed: waiting/push_failed, then deny/push_failed",
          seen[0] == "push_failed" and st is not None and not st["success"], seen)
    t.behave("st", push="allow", delay_ms=0)


def test_push_counting_and_faults_after(t):
    ids = t.users([{"username": "pc"}])
    ctl("/_emu/pushes/reset", {"account": t.account})
    txid = t.auth.auth("push", username="pc", device="auto", async_txn=True,
                       pushinfo="job=j1")["txid"]
    t.auth.auth_status(txid)
    t.auth.auth_status(txid)
    t.auth.auth("passcode", username="pc", passcode="123456")
    p = t.pushes()
    check("one push counted per user and per txid (passcode is no push)",
          p["total"] == 1 and p["by_user"] == {ids["pc"]: 1} and
          p["by_username"] == {"pc": 1} and p["txids"][txid]["pushes"] == 1 and
          p["txids"][txid]["polls"] == 2 and p["pushes"][0]["pushinfo"] == "job=j1", p)
    t.fault(path_prefix="/auth/v2/auth", status=503, after=True)
    e = raises(lambda: t.auth.auth("push", username="pc", device="auto", async_txn=True))
    check("503 after acting: the client sees 503", getattr(e, "status", None) == 503, e)
    p = t.pushes()
    check("503 after acting: the push was sent anyway", p["total"] == 2 and
          p["pushes"][-1]["txid"] is not None, p["total"])
    t.fault(path_prefix="/auth/v2/auth", drop=True, after=True)
    e = raises(lambda: t.auth.auth("push", username="pc", device="auto"))
    check("drop after acting: the client loses the connection",
          isinstance(e, (http.client.HTTPException, ConnectionError, OSError)), repr(e))
    check("drop after acting: the push was sent anyway", t.pushes()["total"] == 3)
    t.fault(path_prefix="/auth/v2/auth", drop=True)
    e = raises(lambda: t.auth.auth("push", username="pc", device="auto"))
    check("drop before acting: no push", e is not None and t.pushes()["total"] == 3, e)
    st = t.stats()
    check("stats count dropped answers and pushes", st["requests"]["/auth/v2/auth"].get(
        "drop") == 2 and st["pushes"] == 3, st["requests"]["/auth/v2/auth"])
    n = t.stats()["enrollments"]
    t.fault(path_prefix="/auth/v2/enroll", status=500, after=True)
    e = raises(lambda: t.auth.enroll(username="enr2-" + RUN))
    check("500 after enroll: 500 50001, but the activation exists",
          code_of(e) == 50001 and t.stats()["enrollments"] == n + 1 and
          len(t.admin.get_users_by_name("enr2-" + RUN)) == 1, e)


def test_errors_and_limits(t):
    t.users([{"username": "rl"}])
    uid = t.admin.get_users_by_name("rl")[0]["user_id"]
    t.set(rate_limits={"single": {"per_min": 2, "retry_after": 3}})
    fast = t.no_backoff(t.admin)
    fast.get_user_by_id(uid)
    fast.get_user_by_id(uid)
    e = raises(lambda: fast.get_user_by_id(uid))
    check("single-object limit: 3rd call in a minute -> 429 42901",
          getattr(e, "status", None) == 429 and code_of(e) == 42901, e)
    resp, _ = fast.api_call("GET", "/admin/v1/users/" + uid, {})
    check("single-object 429 carries Retry-After: 3", resp.status == 429 and
          resp.getheader("Retry-After") == "3", resp.getheader("Retry-After"))
    check("list pages are limited apart from single objects",
          len(fast.get_users(limit=10, offset=0)) >= 1)
    t.set(rate_limits={"single": None, "pages": {"per_min": 1}})
    fast.get_users(limit=10, offset=0)
    e = raises(lambda: fast.get_users(limit=10, offset=0))
    resp, _ = fast.api_call("GET", "/admin/v1/users", {"limit": "10", "offset": "0"})
    check("page limit: 429 42901 without Retry-After", code_of(e) == 42901 and
          resp.getheader("Retry-After") is None, e)
    check("single objects are not limited by the page limit",
          fast.get_user_by_id(uid)["user_id"] == uid)
    st = t.stats()
    check("stats: throttled per kind", st["throttled_by"].get("single") == 2 and
          st["throttled_by"].get("pages") == 2, st["throttled_by"])
    t.set(rate_limits={"pages": None})
    t.fault(path_prefix="/auth/v2/check", status=429, retry_after=1)
    started = time.time()
    ok = t.auth.check()
    check("the client's own back-off gets past one 429",
          ok["time"] > 0 and time.time() - started >= 1.0)
    e = raises(lambda: t.admin.json_api_call("GET", "/admin/v1/info/summary", {}))
    check("admin licensed: info/summary works", e is None, e)
    t.fault(path_prefix="/auth/v2/preauth", status=502, html=True)
    e = raises(lambda: t.auth.preauth(username="rl"))
    check("non-JSON 502 (HTML from the edge): RuntimeError 'Received 502 Bad Gateway'",
          getattr(e, "status", None) == 502 and str(e) == "Received 502 Bad Gateway" and
          "<html>" in e.data, e)
    t.fault(path_prefix="/auth/v2/preauth", status=500)
    e = raises(lambda: t.auth.preauth(username="rl"))
    check("500 -> 50001 envelope", getattr(e, "status", None) == 500 and
          code_of(e) == 50001, e)
    lic = Tenant("unlicensed")
    ctl("/_emu/account", {"account": lic.account, "admin_licensed": False, "integrations": [
        {"ikey": lic.admin_ikey, "skey": lic.skey, "type": "admin"}]})
    e = raises(lambda: lic.admin.get_users(limit=1))
    check("unlicensed Admin API -> 403 40301", getattr(e, "status", None) == 403 and
          code_of(e) == 40301, e)


def test_validations(t):
    ids = t.users([{"username": "val"},
                   {"username": "smsonly", "phones": [["sms", "phone"]]}])
    e = raises(lambda: t.auth.auth("push", username="val", device="DPNOSUCHDEVICE0000000"))
    check("push to a device the user does not have -> 400 40002 device",
          getattr(e, "status", None) == 400 and code_of(e) == 40002 and
          detail_of(e) == "device", e)
    other = t.auth.preauth(username="smsonly")["devices"][0]["device"]
    e = raises(lambda: t.auth.auth("push", username="val", device=other))
    check("push to another user's device -> 40002 device", detail_of(e) == "device", e)
    e = raises(lambda: t.auth.auth("push", user_id=ids["smsonly"], device=other))
    check("push to a device without push capability -> 40002 device",
          detail_of(e) == "device", e)
    e = raises(lambda: t.auth.auth("push", user_id=ids["smsonly"], device="auto"))
    check("push auto without a push-capable device -> 40002 no capable device",
          detail_of(e) == "no capable device", e)
    r = t.auth.auth("phone", user_id=ids["smsonly"], device=other)
    check("phone call to a phone-capable device -> allow", r["result"] == "allow", r)
    n = t.pushes()["total"]
    e = raises(lambda: t.auth.auth("push", username="val", device="auto",
                                   pushinfo="a=" + "x" * 19998))
    check("pushinfo of 20,000 bytes -> 40002 pushinfo, no push",
          detail_of(e) == "pushinfo" and t.pushes()["total"] == n, e)
    r = t.auth.auth("push", username="val", device="auto", pushinfo="a=" + "x" * 19997)
    check("pushinfo of 19,999 bytes -> allowed", r["result"] == "allow", r)
    e = raises(lambda: t.auth.auth("push", username="val", device="auto",
                                   pushinfo="a=" + "é" * 3500))
    check("pushinfo is measured URL-encoded (3,500 x 'é' is 21,002 bytes)",
          detail_of(e) == "pushinfo", e)


def main():
    sha1 = Tenant("a")
    test_auth_api(sha1)
    sha512 = Tenant("b", hashlib.sha512)
    test_auth_api(sha512)
    sig = sha512.stats()["sig"]
    check("signatures verified: v2-sha1 and v2-sha512 clients",
          sha1.stats()["sig"]["v2-sha1"] > 0 and sig["v2-sha512"] > 0, sig)
    test_enroll(sha512)
    test_admin_listing(Tenant("list"))
    test_listing_mutations(Tenant("mut"))
    test_user_objects(Tenant("objs"))
    test_new_user_policy(Tenant("policy"))
    test_statuses(Tenant("status"))
    test_push_counting_and_faults_after(Tenant("push"))
    test_errors_and_limits(Tenant("limits"))
    test_validations(Tenant("valid"))
    print("%d passed, %d failed" % (RESULTS["pass"], RESULTS["fail"]))
    return 0 if RESULTS["fail"] == 0 and RESULTS["pass"] > 0 else 1


if __name__ == "__main__":
    sys.exit(main())
