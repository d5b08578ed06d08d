#!/usr/bin/env python3
"""isolation.py - one stage's Duo incident against another stage's traffic (issue 22).

Driven by bench/run_isolation.sh, which starts the workers and exports the stack's
environment. Two stages on two Duo hosts of the emulator: B on 127.0.0.1:<port>, A on
localhost:<port>, each with its own emulator account. B sends passcode logins, enrollments
and manual imports at a steady rate, and one automatic import, first alone, then while
A's Duo answers every call only after A_LATENCY_MS and A's users keep logging in and
enrolling (and A_MANUAL manual imports are queued). Then A's Duo recovers.

Prints B's p50/p99 per job type in both phases side by side, B's automatic import time
in both, how fast A's jobs were answered once its breakers were open, when they opened
and closed, and every job sent without a reply (lost). Knobs (env): SECS (60),
AUTH_RATE (20), ENROLL_RATE (1), MANUAL_RATE (1), A_LATENCY_MS (60000), A_MANUAL (10),
IMPORT_USERS (30000), DRAIN_SECS (420: a job deferred while A's breaker was open may come
back from the 300 s retry tier).
"""
import json
import os
import ssl
import subprocess
import sys
import time
import urllib.request
import uuid

import msgpack
import pika

PREFIX = os.environ["MQ_PREFIX"]
SECS = float(os.environ.get("SECS", "60"))
AUTH_RATE = float(os.environ.get("AUTH_RATE", "20"))
ENROLL_RATE = float(os.environ.get("ENROLL_RATE", "1"))
MANUAL_RATE = float(os.environ.get("MANUAL_RATE", "1"))
A_LATENCY_MS = int(os.environ.get("A_LATENCY_MS", "60000"))
A_MANUAL = int(os.environ.get("A_MANUAL", "10"))
IMPORT_USERS = int(os.environ.get("IMPORT_USERS", "30000"))
DRAIN_SECS = float(os.environ.get("DRAIN_SECS", "420"))
KIND = {"auth": "auth", "enroll.begin": "enroll", "enroll.status": "enroll",
        "import.manual": "import", "import.auto": "import"}


def emu(path, body):
    ctx = ssl.create_default_context(cafile=os.environ["DUO_CA_FILE"])
    req = urllib.request.Request(os.environ["DUO_EMU_URL"] + path,
                                 data=json.dumps(body).encode(),
                                 headers={"Content-Type": "application/json"}, method="POST")
    with urllib.request.urlopen(req, context=ctx, timeout=60) as resp:
        return json.loads(resp.read())


def duoctl(*args):
    out = subprocess.run([os.environ["DUOCTL"], *args], capture_output=True, text=True,
                         check=True)
    return out.stdout


def psql(sql):
    subprocess.run(["psql", "-X", "-q", "-v", "ON_ERROR_STOP=1", os.environ["DATABASE_URL"],
                    "-c", sql], check=True, capture_output=True)


def tenant(name, host):
    ikey, skey = "DI" + uuid.uuid4().hex[:18].upper(), uuid.uuid4().hex * 2
    aikey, askey = "DA" + uuid.uuid4().hex[:18].upper(), uuid.uuid4().hex * 2
    account = PREFIX + "-" + name
    emu("/_emu/account", {"account": account, "admin_pages_per_min": 0,
                          "integrations": [{"ikey": ikey, "skey": skey, "type": "auth"},
                                           {"ikey": aikey, "skey": askey, "type": "admin"}]})
    uuid_ = json.loads(duoctl("stage", "create", "--name", account, "--api-hostname", host,
                              "--client-id", ikey, "--client-secret", skey,
                              "--admin-integration-key", aikey, "--admin-secret-key",
                              askey))["uuid"]
    return {"name": name, "account": account, "stage": uuid_}


def prepare(t, logins, enrolls, manuals, generated=0):
    """Duo users (login users and those to import by hand; `generated` more for the
    automatic import), local users (those imported by hand under another name), and
    devices for the login users."""
    n = t["name"]
    users = [{"username": "%s_l%d" % (n, i)} for i in range(logins)]
    users += [{"username": "%s_m%d" % (n, i)} for i in range(manuals)]
    for i in range(0, len(users), 500):
        emu("/_emu/users", {"account": t["account"], "users": users[i:i + 500]})
    if generated:
        emu("/_emu/users", {"account": t["account"],
                            "generate": {"count": generated, "prefix": n + "_g"}})
    psql("INSERT INTO app_user (username) SELECT '%s_l' || i FROM generate_series(0, %d) i;"
         "INSERT INTO app_user (username) SELECT '%s_e' || i FROM generate_series(0, %d) i;"
         "INSERT INTO app_user (username) SELECT '%s_lm' || i FROM generate_series(0, %d) i;"
         "INSERT INTO duo_device (user_id, stage_id, duo_user_id, duo_user_kind, name) "
         "SELECT u.id, s.id, u.username, 'username', 'bench phone' FROM app_user u, duo_stage s "
         "WHERE u.username LIKE '%s\\_l%%' AND s.uuid = '%s'"
         % (n, logins - 1, n, enrolls - 1, n, manuals - 1, n, t["stage"]))
    if generated:
        psql("INSERT INTO app_user (username) SELECT '%s_g' || lpad(i::text, 7, '0') "
             "FROM generate_series(0, %d) i" % (n, generated - 1))


class Bus:
    """Publishes jobs with confirms and collects replies on a private queue."""

    def __init__(self):
        self.conn = pika.BlockingConnection(pika.URLParameters(os.environ["AMQP_URL"]))
        self.ch = self.conn.channel()
        self.ch.confirm_delivery()
        self.q = self.ch.queue_declare(queue="", exclusive=True).method.queue
        self.ch.basic_consume(self.q, self.on_reply, auto_ack=True)
        self.jobs = {}  # id -> job record

    def on_reply(self, ch, method, props, raw):
        j = self.jobs.get(props.correlation_id)
        if j is None:
            return
        body = msgpack.unpackb(raw, raw=False)
        if body.get("progress") is True:
            return
        if j["reply"] is None:
            j["reply"], j["got"] = body, time.time()

    def send(self, who, jtype, body):
        jid = "%s-%s-%s" % (who, jtype, uuid.uuid4().hex[:12])
        props = pika.BasicProperties(message_id=jid, type=jtype, correlation_id=jid,
                                     reply_to=self.q, content_type="application/msgpack",
                                     delivery_mode=2)
        self.jobs[jid] = {"who": who, "type": jtype, "sent": time.time(), "reply": None,
                          "got": None}
        self.ch.basic_publish(PREFIX + ".jobs", KIND[jtype], msgpack.packb(body), props,
                              mandatory=True)
        return self.jobs[jid]

    def pump(self, secs):
        self.conn.process_data_events(time_limit=secs)


class Traffic:
    """A stage's steady traffic: passcode logins, enrollments, manual imports."""

    def __init__(self, bus, t, auth_rate, enroll_rate, manual_rate, logins):
        self.bus, self.t, self.logins = bus, t, logins
        self.rates = {"auth": auth_rate, "enroll.begin": enroll_rate,
                      "import.manual": manual_rate}
        self.next = {k: time.time() for k in self.rates}
        self.n = {k: 0 for k in self.rates}

    def restart(self):
        """A new phase: the steady rate from now, no burst for the time between phases."""
        self.next = {k: time.time() for k in self.rates}

    def tick(self, now):
        for k, rate in self.rates.items():
            while rate > 0 and self.next[k] <= now:
                self.next[k] += 1.0 / rate
                i = self.n[k]
                self.n[k] += 1
                n, st = self.t["name"], self.t["stage"]
                if k == "auth":
                    body = {"stage_uuid": st, "username": "%s_l%d" % (n, i % self.logins),
                            "factor": "passcode", "passcode": "123456"}
                elif k == "enroll.begin":
                    body = {"stage_uuid": st, "username": "%s_e%d" % (n, i)}
                else:
                    # Local name unlike Duo's: the automatic import leaves these alone.
                    body = {"stage_uuid": st, "duo_user_id": "%s_m%d" % (n, i),
                            "username": "%s_lm%d" % (n, i)}
                self.bus.send(n, k, body)


def run_for(bus, secs, traffics, until=None):
    end = time.time() + secs
    while time.time() < end and not (until and until()):
        now = time.time()
        for t in traffics:
            t.tick(now)
        bus.pump(0.005)


def pct(xs, p):
    if not xs:
        return float("nan")
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(round(p / 100.0 * (len(xs) - 1))))]


def latencies(jobs, who, jtype, t0, t1, ok_only=True):
    out = []
    for j in jobs:
        if j["who"] == who and j["type"] == jtype and t0 <= j["sent"] < t1 and j["reply"]:
            if not ok_only or j["reply"].get("status") == "ok":
                out.append((j["got"] - j["sent"]) * 1000.0)
    return out


def wait_import(bus, job, limit):
    run_for(bus, limit, [], until=lambda: job["reply"] is not None)
    return (job["got"] - job["sent"]) if job["reply"] else float("nan")


def main():
    port = os.environ["DUO_EMU_HOST"].rsplit(":", 1)[1]
    b = tenant("b", "127.0.0.1:" + port)
    a = tenant("a", "localhost:" + port)
    per_phase = int(SECS * max(MANUAL_RATE, 0.1)) + 10
    enrolls = int(2 * SECS * ENROLL_RATE) + 10
    prepare(b, 200, enrolls, 2 * per_phase, IMPORT_USERS)
    prepare(a, 200, enrolls + 100, A_MANUAL)
    bus = Bus()
    jobs = bus.jobs.values
    tb = Traffic(bus, b, AUTH_RATE, ENROLL_RATE, MANUAL_RATE, 200)

    # Phase 1: B alone, then B's automatic import alone.
    p1 = time.time()
    run_for(bus, SECS, [tb])
    p1_end = time.time()
    run_for(bus, 15, [])
    imp = bus.send("b", "import.auto", {"stage_uuid": b["stage"]})
    alone_import = wait_import(bus, imp, 900)
    # The second run must import the same users again: forget the first run's devices.
    psql("DELETE FROM duo_device d USING duo_stage s WHERE d.stage_id = s.id AND "
         "s.uuid = '%s' AND d.name <> 'bench phone'" % b["stage"])

    # Phase 2: A's Duo hangs; A keeps logging in and enrolling, A's manual imports queue.
    emu("/_emu/faults", {"account": a["account"], "path_prefix": "/",
                         "latency_ms": A_LATENCY_MS, "count": 10000000})
    p2 = time.time()
    ta = Traffic(bus, a, AUTH_RATE, ENROLL_RATE, 0, 200)
    for i in range(A_MANUAL):
        bus.send("a", "import.manual", {"stage_uuid": a["stage"],
                                        "duo_user_id": "a_m%d" % i, "username": "a_lm%d" % i})
    imp2 = bus.send("b", "import.auto", {"stage_uuid": b["stage"]})
    tb.restart()
    run_for(bus, SECS, [tb, ta])
    p2_end = time.time()
    incident_import = wait_import(bus, imp2, 900)
    opened = [j["got"] for j in jobs() if j["who"] == "a" and j["reply"] and
              j["reply"].get("error", {}).get("reason") == "circuit_open"]
    first_open = min(opened) - p2 if opened else float("nan")

    # Recovery: A's Duo answers again; A's logins go on until one is allowed.
    emu("/_emu/faults", {"account": a["account"], "clear": True})
    rec = time.time()

    def recovered():
        return any(j["who"] == "a" and j["type"] == "auth" and j["sent"] >= rec and j["reply"]
                   and j["reply"].get("result") == "allow" for j in jobs())
    ta_slow = Traffic(bus, a, 2, 0, 0, 200)
    run_for(bus, 120, [ta_slow], until=recovered)
    allowed = [j["got"] for j in jobs() if j["who"] == "a" and j["type"] == "auth" and
               j["sent"] >= rec and j["reply"] and j["reply"].get("result") == "allow"]
    closed_after = (min(allowed) - rec) if allowed else float("nan")
    run_for(bus, DRAIN_SECS, [], until=lambda: all(j["reply"] for j in jobs()))

    lost = [j for j in jobs() if not j["reply"]]
    print("\n## Isolation: B's latency with and without A's incident (one run)\n")
    print("Settings: SECS=%g AUTH_RATE=%g ENROLL_RATE=%g MANUAL_RATE=%g A_LATENCY_MS=%d "
          "A_MANUAL=%d IMPORT_USERS=%d" % (SECS, AUTH_RATE, ENROLL_RATE, MANUAL_RATE,
                                           A_LATENCY_MS, A_MANUAL, IMPORT_USERS))
    print("\n| B's job | n alone | p50 alone (ms) | p99 alone (ms) | n during A's incident "
          "| p50 during (ms) | p99 during (ms) | p99 ratio |")
    print("|---|---|---|---|---|---|---|---|")
    for jt in ("auth", "enroll.begin", "import.manual"):
        x = latencies(jobs(), "b", jt, p1, p1_end)
        y = latencies(jobs(), "b", jt, p2, p2_end)
        bad = [j for j in jobs() if j["who"] == "b" and j["type"] == jt and j["reply"] and
               j["reply"].get("status") != "ok"]
        print("| %s | %d | %.1f | %.1f | %d | %.1f | %.1f | %.2f |%s" % (
            jt, len(x), pct(x, 50), pct(x, 99), len(y), pct(y, 50), pct(y, 99),
            pct(y, 99) / pct(x, 99) if x and y else float("nan"),
            " not ok: %s" % sorted(set(j["reply"].get("error", {}).get("code", "?")
                                       for j in bad)) if bad else ""))
    print("\n| B's automatic import of %d users | alone | during A's incident | ratio |"
          % IMPORT_USERS)
    print("|---|---|---|---|")
    print("| wall time (s) | %.1f | %.1f | %.2f |" % (alone_import, incident_import,
                                                      incident_import / alone_import))
    after = [((j["got"] - j["sent"]) * 1000.0) for j in jobs()
             if j["who"] == "a" and j["type"] in ("auth", "enroll.begin") and j["reply"]
             and opened and j["sent"] >= min(opened) and j["sent"] < p2_end]
    codes = {}
    for j in jobs():
        if j["who"] == "a" and j["reply"]:
            c = j["reply"].get("error", {}).get("code", "ok")
            r = j["reply"].get("error", {}).get("reason")
            k = "%s %s%s" % (j["type"], c, " (" + r + ")" if r else "")
            codes[k] = codes.get(k, 0) + 1
    print("\n| stage A | figure |")
    print("|---|---|")
    print("| first answer with an open breaker, after the incident began | %.1f s |" % first_open)
    print("| A's logins and enrollments sent after that: answered within | p50 %.0f ms, p99 %.0f "
          "ms, max %.0f ms (n=%d) |" % (pct(after, 50), pct(after, 99),
                                        max(after) if after else float("nan"), len(after)))
    print("| first allowed login after the recovery | %.1f s |" % closed_after)
    print("| jobs sent / without a reply (lost) | %d / %d |" % (len(bus.jobs), len(lost)))
    print("\nA's answers by job type and code: " +
          ", ".join("%s: %d" % kv for kv in sorted(codes.items())))
    for j in lost[:10]:
        print("lost: %s %s sent %.1f s into the run" % (j["who"], j["type"], j["sent"] - p1))
    return 0 if not lost else 1


if __name__ == "__main__":
    sys.exit(main())
