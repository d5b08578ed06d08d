"""contract.py - the message contract of schemas/README.md, tried as an integrator would:
pika + msgpack + jsonschema against live workers (started by test_contract.c).

Invariant: what is checked is read from schemas/README.md itself (the reply routing
table, the message_id table, the error code table, the Python examples) and from the
JSON Schemas, never restated here, so the page and the workers cannot drift apart.
Exits non-zero, naming each broken promise, when any check fails.

Environment (set by test_contract.c): AMQP_URL, MQ_PREFIX, DUO_STAGE_UUID, EMU_ACCOUNT,
EMU_AUTH_IKEY, DUO_EMU_URL, DUO_EMU_HOST, DUO_CA_FILE, DUO_BIN_DIR,
DUO_SOURCE_DIR, DATABASE_URL, DUO_SECRET_KEY.
"""

import glob
import json
import os
import re
import secrets
import ssl
import subprocess
import sys
import time
import urllib.request
import uuid

import jsonschema
import msgpack
import pika

SRC = os.environ["DUO_SOURCE_DIR"]
PREFIX = os.environ["MQ_PREFIX"]
STAGE = os.environ["DUO_STAGE_UUID"]
ACCOUNT = os.environ["EMU_ACCOUNT"]
FAILURES = []


def check(cond, what):
    print(("ok   " if cond else "FAIL ") + what, flush=True)
    if not cond:
        FAILURES.append(what)
    return cond


# ---- what the documentation says -------------------------------------------------------

def readme():
    with open(os.path.join(SRC, "schemas", "README.md"), encoding="utf-8") as fh:
        return fh.read()


def section(text, heading):
    start = text.index(heading)
    nxt = re.search(r"^#{2,3} ", text[start + len(heading):], re.M)
    return text[start:start + len(heading) + nxt.start()] if nxt else text[start:]


def table_rows(text):
    """Rows of the first markdown table in text, as lists of cells."""
    rows = []
    for line in text.splitlines():
        if re.match(r"^\|[-| ]+\|$", line):
            continue  # the header's underline
        if line.startswith("|"):
            rows.append([c.strip() for c in line.strip().strip("|").split("|")])
        elif rows:
            break
    return rows[1:]


def ticked(cell):
    return re.findall(r"`([^`]+)`", cell)


def documented_routes(doc):
    """job type -> (reply routing key, the first binding pattern offered)."""
    routes = {}
    for row in table_rows(section(doc, "### Where replies go")):
        types, keys, binds = ticked(row[0]), ticked(row[1]), ticked(row[2])
        if len(types) == 1 and keys and binds:
            routes[types[0]] = (keys[0], binds[-1] if types[0].startswith("enroll.") else binds[0])
    return routes


def documented_codes(doc):
    codes = set()
    for row in table_rows(section(doc, "### Error codes")):
        codes.update(c for c in ticked(row[0]) if re.fullmatch(r"[a-z_]+", c))
    return codes


def documented_message_ids(doc):
    rows = table_rows(section(doc, "### Several replies per job"))
    return {row[0]: ticked(row[1])[0] for row in rows if ticked(row[1])}


def python_examples(doc):
    return re.findall(r"```python\n(.*?)```", doc, re.S)


SCHEMAS = {}


def schema(name):
    if name not in SCHEMAS:
        with open(os.path.join(SRC, "schemas", name + ".schema.json"), encoding="utf-8") as fh:
            SCHEMAS[name] = jsonschema.Draft202012Validator(json.load(fh))
    return SCHEMAS[name]


def valid(name, body):
    errors = [e.message for e in schema(name).iter_errors(body)]
    return check(not errors, "reply validates against %s %s" % (name, errors[:2] if errors else ""))


# ---- the code's error codes are all documented --------------------------------------------

def codes_in_source():
    found = set()
    for path in glob.glob(os.path.join(SRC, "workers", "*", "*.c")) + \
            glob.glob(os.path.join(SRC, "common", "*", "*.c")):
        with open(path, encoding="utf-8") as fh:
            text = fh.read()
        found.update(re.findall(r'job_fail\(\s*\w+,\s*"([a-z_]+)"', text))
        for pair in re.findall(r'job_fail\(\s*\w+,\s*\w+\s*\?\s*"([a-z_]+)"\s*:\s*"([a-z_]+)"', text):
            found.update(pair)
        found.update(re.findall(r'refuse\(\s*\w+,\s*\w+,\s*"([a-z_]+)"', text))
        if path.endswith("duo_response.c"):
            found.update(c for c in re.findall(r'return "(duo_[a-z_]+)";', text) if c != "duo_ok")
    return found


# ---- talking to the stack ---------------------------------------------------------------

def emu(path, body):
    ctx = ssl.create_default_context(cafile=os.environ["DUO_CA_FILE"])
    req = urllib.request.Request(os.environ["DUO_EMU_URL"] + path, data=json.dumps(body).encode(),
                                 headers={"Content-Type": "application/json"}, method="POST")
    with urllib.request.urlopen(req, context=ctx, timeout=10) as resp:
        return json.loads(resp.read())


def duoctl(*args):
    out = subprocess.run([os.path.join(os.environ["DUO_BIN_DIR"], "duoctl")] + list(args),
                         capture_output=True, text=True, timeout=60)
    if out.returncode != 0:
        raise RuntimeError("duoctl %s: %s" % (args[0], out.stderr.strip()[-300:]))
    return out.stdout


def new_stage(account_opts, admin=True, secret=None):
    """A fresh emulator account and a stage using it; returns (stage uuid, auth ikey)."""
    name = "c" + secrets.token_hex(6)
    ikey, skey = "DI" + secrets.token_hex(9).upper()[:18], secrets.token_hex(20)
    aikey, askey = "DA" + secrets.token_hex(9).upper()[:18], secrets.token_hex(20)
    body = {"account": name, "integrations": [{"ikey": ikey, "skey": skey, "type": "auth"},
                                               {"ikey": aikey, "skey": askey, "type": "admin"}]}
    body.update(account_opts)
    emu("/_emu/account", body)
    args = ["stage", "create", "--name", "stage-" + name, "--api-hostname",
            os.environ["DUO_EMU_HOST"], "--client-id", ikey, "--client-secret", secret or skey]
    if admin:
        args += ["--admin-integration-key", aikey, "--admin-secret-key", askey]
    return json.loads(duoctl(*args))["uuid"], name


class Bus:
    """One connection: publishes jobs with confirms and reads replies from queues bound
    to the results exchange with exactly the documented patterns."""

    def __init__(self):
        self.conn = pika.BlockingConnection(pika.URLParameters(os.environ["AMQP_URL"]))
        self.ch = self.conn.channel()
        self.ch.confirm_delivery()
        self.queues = {}
        self.held = {}  # queue -> replies read for other correlation ids, kept for them

    def bound(self, pattern):
        if pattern not in self.queues:
            q = self.ch.queue_declare(queue="", exclusive=True).method.queue
            self.ch.queue_bind(q, PREFIX + ".results", routing_key=pattern)
            self.queues[pattern] = q
        return self.queues[pattern]

    def publish(self, kind, jtype, body, job_id=None, corr=None, raw=None, reply_to=None):
        props = pika.BasicProperties(message_id=job_id, type=jtype, correlation_id=corr,
                                     reply_to=reply_to, content_type="application/msgpack",
                                     delivery_mode=2)
        self.ch.basic_publish(PREFIX + ".jobs", kind,
                              raw if raw is not None else msgpack.packb(body), props,
                              mandatory=True)

    def replies(self, queue, corr, timeout=60, until_last=True, most=None):
        """Replies on queue whose correlation_id is corr, until the last one (rule 2), or
        until `most` replies."""
        got, end = [], time.time() + timeout
        held = self.held.setdefault(queue, [])
        while time.time() < end and (most is None or len(got) < most):
            mine = [m for m in held if m[1].correlation_id == corr]
            if mine:
                held.remove(mine[0])
                method, props, raw = mine[0]
            else:
                method, props, raw = self.ch.basic_get(queue, auto_ack=True)
                if method is None:
                    self.conn.sleep(0.05)
                    continue
                if props.correlation_id != corr:
                    held.append((method, props, raw))
                    continue
            body = msgpack.unpackb(raw, raw=False)
            got.append((method, props, body))
            if until_last and body.get("progress") is not True:
                break
        return got

    def job(self, kind, jtype, body, pattern, timeout=60, corr=None):
        q = self.bound(pattern)
        jid = "ct-" + uuid.uuid4().hex
        self.publish(kind, jtype, body, job_id=jid, corr=corr)
        got = self.replies(q, corr or jid, timeout)
        if not check(bool(got), "%s: a reply on a queue bound to %s" % (jtype, pattern)):
            return jid, None, None
        method, props, reply = got[-1]
        return jid, (method, props), reply


# ---- the checks -----------------------------------------------------------------------------

def check_one_reply(bus, routes, jtype, kind, body, expect, corr=None, timeout=60):
    """Publishes one job without reply_to and holds its reply to the documented rules."""
    key, pattern = routes[jtype]
    jid, mp, reply = bus.job(kind, jtype, body, pattern, timeout, corr)
    if reply is None:
        return None
    method, props = mp
    check(method.routing_key == key, "%s: routing key %s (documented %s)" % (jtype, method.routing_key, key))
    check(props.type == jtype + ".result", "%s: type property %s" % (jtype, props.type))
    check(props.message_id == jid, "%s: message_id is the job id" % jtype)
    check(props.correlation_id == (corr or jid), "%s: correlation_id" % jtype)
    check(reply.get("job_id") == jid and reply.get("job_type") == jtype, "%s: job_id/job_type" % jtype)
    valid(jtype + ".result", reply)
    if reply.get("status") == "error":
        valid("error.result", reply)
    code = reply.get("error", {}).get("code") if reply.get("status") == "error" else "ok"
    check(code == expect, "%s: outcome %s (expected %s) %s" % (
        jtype, code, expect, reply.get("error", {}).get("message", "")[:160]))
    return reply


def duo_code_is(reply, code):
    got = (reply or {}).get("error", {}).get("duo_code")
    return check(got == code, "duo_code %s (expected %s)" % (got, code))


def enroll_alice(bus, routes):
    duoctl("user", "upsert", "--username", "alice")
    r = check_one_reply(bus, routes, "enroll.begin", "enroll", {"stage_uuid": STAGE, "username": "alice"}, "ok")
    if not r:
        return
    emu("/_emu/enrollment", {"account": ACCOUNT, "action": "complete",
                             "activation_code": r["activation_code"]})
    r2 = check_one_reply(bus, routes, "enroll.status", "enroll",
                         {"stage_uuid": STAGE, "enrollment_id": r["enrollment_id"]}, "ok",
                         corr="my-correlation")
    check(r2 is not None and r2.get("enrollment_status") == "success", "enroll.status success")


def check_situations(bus, routes):
    duoctl("user", "upsert", "--username", "bob")
    check_one_reply(bus, routes, "auth", "auth", {"stage_uuid": STAGE, "username": "bob"}, "no_device")
    check_one_reply(bus, routes, "auth", "auth", {"device_id": str(uuid.uuid4())}, "device_not_found")
    check_one_reply(bus, routes, "enroll.status", "enroll",
                    {"stage_uuid": STAGE, "enrollment_id": str(uuid.uuid4())}, "enrollment_not_found")
    r = check_one_reply(bus, routes, "auth", "auth",
                        {"stage_uuid": STAGE, "username": "alice", "factor": "sms"}, "ok")
    check(r is not None and r.get("result") == "deny" and r.get("duo_status") == "sent",
          "auth sms: result deny with duo_status sent")
    r = check_one_reply(bus, routes, "auth", "auth",
                        {"stage_uuid": STAGE, "username": "alice", "factor": "push"}, "ok")
    check(r is not None and r.get("result") == "allow", "auth push: allow")
    r = check_one_reply(bus, routes, "import.manual", "import",
                        {"stage_uuid": STAGE, "duo_user_id": "DU" + "Z" * 18, "username": "bob"},
                        "duo_user_not_found")
    duo_code_is(r, 40401)


def check_duo_codes(bus, routes):
    """The same Duo answer gets the same code, and Duo's numeric code, for every job type."""
    emu("/_emu/integration", {"ikey": os.environ["EMU_AUTH_IKEY"], "disabled": True})
    try:
        for jtype, kind, body in (
                ("enroll.begin", "enroll", {"stage_uuid": STAGE, "username": "alice"}),
                ("auth", "auth", {"stage_uuid": STAGE, "username": "alice", "factor": "push"})):
            r = check_one_reply(bus, routes, jtype, kind, body, "duo_integration_disabled")
            duo_code_is(r, 40301)
    finally:
        emu("/_emu/integration", {"ikey": os.environ["EMU_AUTH_IKEY"], "disabled": False})
    bad, _ = new_stage({}, secret="0" * 40)
    duoctl("user", "upsert", "--username", "carol")
    r = check_one_reply(bus, routes, "enroll.begin", "enroll", {"stage_uuid": bad, "username": "carol"},
                        "duo_bad_signature")
    duo_code_is(r, 40103)
    # Duo's 400 40002 "username already exists" on enroll: the user is in Duo already.
    emu("/_emu/users", {"account": ACCOUNT, "users": [{"username": "dana"}]})
    duoctl("user", "upsert", "--username", "dana")
    r = check_one_reply(bus, routes, "enroll.begin", "enroll", {"stage_uuid": STAGE, "username": "dana"},
                        "duo_user_exists")
    duo_code_is(r, 40002)
    # Without the Admin API a Duo user id is checked by preauth: Duo refuses an unknown
    # id with 40002.
    no_admin, _ = new_stage({}, admin=False)
    r = check_one_reply(bus, routes, "import.manual", "import",
                        {"stage_uuid": no_admin, "duo_user_id": "DU" + "Y" * 18, "username": "dana"},
                        "duo_user_not_found")
    duo_code_is(r, 40002)
    unlicensed, _ = new_stage({"admin_licensed": False})
    r = check_one_reply(bus, routes, "import.auto", "import", {"stage_uuid": unlicensed}, "license_required")
    duo_code_is(r, 40301)


def check_bad_messages(bus):
    q = bus.bound("#.result")
    for label, jid in (("no message_id", None), ("empty message_id", "")):
        corr = "corr-" + uuid.uuid4().hex
        bus.publish("auth", "auth", {"username": "x"}, job_id=jid, corr=corr)
        got = bus.replies(q, corr, 30)
        if check(bool(got), "%s: a reply on #.result" % label):
            method, props, body = got[0]
            check(props.message_id is None, "%s: reply has no message_id property" % label)
            check(body.get("job_id") == "" and body["error"]["code"] == "invalid_message",
                  "%s: job_id '' and invalid_message" % label)
            valid("error.result", body)
    corr = "corr-" + uuid.uuid4().hex
    bus.publish("auth", "auth.typo", {"username": "x"}, job_id="ct-" + uuid.uuid4().hex, corr=corr)
    got = bus.replies(q, corr, 30)
    if check(bool(got), "unknown type: a reply on #.result"):
        check(got[0][0].routing_key == "auth.typo.result", "unknown type: routed as <type>.result")
        check(got[0][2]["error"]["code"] == "unknown_job_type", "unknown type: unknown_job_type")


def check_duplicate(bus, routes):
    key, pattern = routes["enroll.status"]
    q = bus.bound(pattern)
    jid = "ct-" + uuid.uuid4().hex
    body = {"stage_uuid": STAGE, "enrollment_id": str(uuid.uuid4())}
    bus.publish("enroll", "enroll.status", body, job_id=jid)
    first = bus.replies(q, jid, 30)
    bus.publish("enroll", "enroll.status", body, job_id=jid)
    second = bus.replies(q, jid, 30)
    if check(bool(first) and bool(second), "a re-sent job id is answered again"):
        check(first[0][1].message_id == second[0][1].message_id == jid,
              "the repeated reply has the same message_id (drop it as a duplicate)")
        check(first[0][2] == second[0][2], "the repeated reply has the same body")


def check_import_auto(bus, routes, doc):
    ids = documented_message_ids(doc)
    emu("/_emu/users", {"account": ACCOUNT, "generate": {"prefix": "imp", "count": 3000}})
    key, pattern = routes["import.auto"]
    q = bus.bound(pattern)
    # Two requests for one stage at once: one runs, the other is refused naming the run.
    jid, other = "ct-" + uuid.uuid4().hex, "ct-" + uuid.uuid4().hex
    bus.publish("import", "import.auto", {"stage_uuid": STAGE, "page_size": 100}, job_id=jid)
    bus.publish("import", "import.auto", {"stage_uuid": STAGE, "page_size": 100}, job_id=other)
    # The worker takes both at once, and each checks the Duo licence before it starts a
    # run: either may be the one that runs (the contract promises one, not which).
    first = {j: bus.replies(q, j, 60, most=1) for j in (jid, other)}
    if first[other] and first[other][0][2].get("state") == "running":
        jid, other = other, jid
    got = first[jid]
    if not check(bool(got) and got[0][2].get("state") == "running",
                 "import.auto: of two at once, one answers running first"):
        return
    refused = first[other] + bus.replies(q, other, 3)
    r = refused[-1][2] if refused else {}
    check(len(refused) == 1 and r.get("error", {}).get("code") == "import_already_running"
          and refused[0][1].message_id == other, "a second import.auto: import_already_running")
    check(r.get("error", {}).get("run_id") == got[0][2]["run_id"],
          "import_already_running names the run in error.run_id")
    if refused:
        valid("import.auto.result", r)
        valid("error.result", r)
    end, last = time.time() + 180, None
    while time.time() < end and last is None:
        batch = bus.replies(q, jid, 5, until_last=True)
        got += batch
        if batch and batch[-1][2].get("progress") is not True:
            last = batch[-1]
    if not check(last is not None, "import.auto: a last reply (progress false)"):
        return
    run = got[0][2]["run_id"]
    mids = [p.message_id for _, p, _ in got]
    check(len(mids) == len(set(mids)), "import.auto: every reply has its own message_id")
    check(mids[0] == jid, "import.auto: first reply's message_id is the job id (%s)" % ids)
    for method, props, body in got:
        check(method.routing_key == key and props.correlation_id == jid and body["job_id"] == jid,
              "import.auto reply %s: routing key, correlation_id, job_id" % props.message_id)
        valid("import.auto.result", body)
    for method, props, body in got[1:-1]:
        want = ids["`import.auto` progress reply"].replace("<run_id>", run).replace(
            "<pages_done>", str(body["counts"]["pages_done"]))
        check(props.message_id == want and body["progress"] is True,
              "progress reply message_id %s (documented %s)" % (props.message_id, want))
    want = ids["`import.auto` final reply, when the first reply was not already final"].replace(
        "<run_id>", run)
    check(last[1].message_id == want, "final reply message_id %s" % last[1].message_id)
    counts = last[2]["counts"]
    check(last[2]["state"] == "done" and counts["pages_done"] == counts["pages_total"] >= 30,
          "final reply: state done, every page done (%s)" % counts)
    check(len(got) >= 3, "import.auto: first, progress and final replies (%d)" % len(got))
    # A run with nothing to page: one reply, and it is the last.
    empty, _ = new_stage({})
    jid = "ct-" + uuid.uuid4().hex
    bus.publish("import", "import.auto", {"stage_uuid": empty}, job_id=jid)
    got = bus.replies(q, jid, 30, until_last=True)
    more = bus.replies(q, jid, 3, until_last=True)
    check(len(got) == 1 and got[0][2].get("progress") is False and got[0][2]["state"] == "done"
          and not more, "an empty run: exactly one reply, final")


def check_examples(doc):
    """Runs the README's examples as written: two of the duo_workers package (imported from
    the checkout, as installed from clients/python) and one in raw pika."""
    env = dict(os.environ, DUO_USERNAME="alice")
    pkg = os.path.join(SRC, "clients", "python", "src")
    env["PYTHONPATH"] = pkg + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
    examples = python_examples(doc)
    kinds = ["package" if "from duo_workers import" in code else "raw" for code in examples]
    check(kinds == ["package", "package", "raw"],
          "README has two duo_workers examples, then one raw pika example: %s" % kinds)
    outs = []
    for i, code in enumerate(examples):
        res = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True,
                             text=True, timeout=200)
        outs.append(res.stdout)
        check(res.returncode == 0, "README example %d runs (%s)" % (i + 1, (res.stderr or res.stdout)[-300:]))
    if len(outs) == 3:
        check(outs[0].startswith("authenticated"), "example 1 (package) authenticates alice: %r" % outs[0][:80])
        lines = outs[1].strip().splitlines()
        check(bool(lines) and lines[-1].startswith("done"),
              "example 2 (package) ends with the final reply: %r" % outs[1][-120:])
        check(outs[2].startswith("authenticated"), "example 3 (raw pika) authenticates alice: %r" % outs[2][:80])


def main():
    doc = readme()
    routes = documented_routes(doc)
    check(set(routes) >= {"enroll.begin", "enroll.status", "auth", "import.manual", "import.auto"},
          "the routing table covers every job type: %s" % sorted(routes))
    missing = codes_in_source() - documented_codes(doc)
    check(not missing, "every error code the workers use is documented (missing: %s)" % sorted(missing))
    bus = Bus()
    enroll_alice(bus, routes)
    check_situations(bus, routes)
    check_duo_codes(bus, routes)
    check_bad_messages(bus)
    check_duplicate(bus, routes)
    check_import_auto(bus, routes, doc)
    check_examples(doc)
    bus.conn.close()
    print("%d failure(s)" % len(FAILURES))
    return 1 if FAILURES else 0


if __name__ == "__main__":
    sys.exit(main())
