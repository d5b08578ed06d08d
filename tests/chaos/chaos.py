#!/usr/bin/env python3
"""chaos.py - the chaos harness (run it through tests/chaos/run.sh).

Sends mixed jobs (enroll.begin/status, auth with every outcome, manual imports, one
automatic import, a handful of deliberately bad messages) through several worker
processes of each kind while it kill -9s random workers, restarts RabbitMQ (or stops one
node of a cluster) and PostgreSQL (or, with --pg-failover, crashes the primary of
scripts/pg-ha.sh and promotes its standby), and has the emulator answer bursts of 429
and 5xx.
Then it checks, from the reply queue, the dead-letter queue and the database, that every
job got its final reply, no device was stored twice, the automatic import's counts match
the emulator's users and only the bad messages were dead-lettered; it prints one summary
line and exits non-zero when anything is lost or wrong.

Key invariant: replies are read from a durable quorum queue of the harness's own, bound
to <prefix>.results, so no reply is lost by the harness itself across broker restarts;
what the harness cannot tell apart from a worker's duplicate is counted separately."""

import argparse
import json
import os
import queue
import random
import sys
import threading
import time
import urllib.parse

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from stack import Stack, services, need  # noqa: E402

# Honest answers to faults: Duo trouble (including a Duo host whose circuit breaker the
# injected 5xx bursts opened), an auth job whose worker died after its push may have gone
# out but before its txid was stored (it is never pushed again), and an enroll.begin
# whose worker died after Duo may have created the activation but before it was recorded
# (Duo's enroll is never called twice for one job).
TRANSIENT_PREFIXES = ("duo_", "push_outcome_unknown", "enroll_outcome_unknown")


# ---- the plan ---------------------------------------------------------------------------
class Plan:
    """How many jobs of each kind and which users; scaled from --jobs (10,000 = full)."""

    def __init__(self, jobs, gen_users):
        s = jobs / 10000.0
        self.total = jobs
        self.begin = max(5, int(1800 * s))
        self.auth = max(10, int(4000 * s))
        self.manual = max(5, int(1999 * s))
        self.status = jobs - 1 - self.begin - self.auth - self.manual
        self.auth_users = max(40, int(400 * s)) // 4 * 4
        self.manual_users = max(4, int(self.manual * 0.9))
        self.gen_total = gen_users
        self.gen_local = gen_users - max(1, gen_users // 50)   # the rest: unknown_user


def auth_expect(i, plan):
    """Behaviour group of auth user i: allow, deny, timeout (push) or passcode."""
    return ("allow", "deny", "timeout", "passcode")[i * 4 // plan.auth_users]


class Run:
    def __init__(self, args, stack, plan):
        self.args, self.s, self.plan = args, stack, plan
        self.lock = threading.Lock()
        self.jobs = {}            # job id -> {"type", "expect": set or callable}
        self.finals = {}          # job id -> list of final reply bodies
        self.progress = 0
        self.foreign = 0
        self.drain_redeliveries = 0
        self.bad_replies = {}
        self.republished = set()
        self.unexpected = []
        self.dynamic = queue.Queue()
        self.followups = queue.Queue()
        self.enrollments = []     # (enrollment_id, fate) of completed begin jobs
        self.begins_done = 0
        self.status_sent = 0
        self.counter = 0
        self.counts = dict(kills=0, fault_exits=0, crashes=0, mq_restarts=0, pg_restarts=0,
                           node_stops=0, fault_bursts=0, pg_failovers=0)
        self.failover = {}        # "at", "took_ms", "lag_bytes" of the promotion
        self.reply_times = []     # arrival time of each first final reply
        self.crash_info = []
        self.feeding_done = threading.Event()
        self.stop = threading.Event()
        self.sender = None

    def new_id(self, kind):
        with self.lock:
            self.counter += 1
            return "%s-%s-%d" % (self.s.tag, kind, self.counter)

    # ---- sending --------------------------------------------------------------------
    def send(self, job_type, kind, body, expect, job_id=None):
        job_id = job_id or self.new_id(job_type)
        if job_type == "auth" and body.get("factor") != "passcode":
            # The emulator logs each push with its pushinfo: this ties a push to its job,
            # so the verdict can count pushes per job (at most one, under any fault).
            body = dict(body, pushinfo={"job": job_id})
        with self.lock:
            self.jobs[job_id] = {"type": job_type, "expect": expect}
        self.sender.stdin.write(json.dumps({"id": job_id, "type": job_type, "kind": kind,
                                            "body": body}) + "\n")
        return job_id

    def send_bad(self):
        a = self.s.stages["a"][0]
        bad = [
            {"id": "bad-1", "type": "enroll.begin", "kind": "enroll", "raw_hex": "82a568656c6c6f"},
            {"id": "bad-2", "type": "enroll.bogus", "kind": "enroll", "body": {"x": 1}},
            {"id": "bad-3", "type": "auth", "kind": "auth",
             "body": {"stage_uuid": a, "username": "au0000", "factor": "pigeon"}},
            # No message_id and no reply_to: the worker cannot address a reply (it only
            # dead-letters it), so bad_replied tops out at 4 of 5.
            {"corr": "bad-4", "type": "auth", "kind": "auth",
             "body": {"stage_uuid": a, "username": "au0000"}},
            {"id": "bad-5", "type": "import.manual", "kind": "import", "raw_hex": "93010203"},
        ]
        for b in bad:
            b["id"] = b.get("id")
            if b["id"] is None:
                del b["id"]
            self.bad_replies[b.get("id") or b["corr"]] = []
            self.sender.stdin.write(json.dumps(b) + "\n")
        return len(bad)

    def static_jobs(self):
        """Every job that does not depend on another job's reply, shuffled."""
        p, a = self.plan, self.s.stages["a"][0]
        out = []
        for i in range(p.begin):
            out.append(("enroll.begin", "enroll", {"stage_uuid": a, "username": "en%05d" % i},
                        {("ok", None)}))
        for i in range(p.auth):
            u = random.randrange(p.auth_users)
            group = auth_expect(u, p)
            body = {"stage_uuid": a, "username": "au%04d" % u, "factor": "push"}
            want = {("ok", group)}
            if group == "passcode":
                right = random.random() < 0.5
                body.update(factor="passcode", passcode="123456" if right else "000001")
                want = {("ok", "allow" if right else "deny")}
            out.append(("auth", "auth", body, want))
        for i in range(p.manual):
            u = i % p.manual_users   # the tail imports some users a second time
            by_id = u % 2 == 1
            out.append(("import.manual", "import",
                        {"stage_uuid": a, "username": "im%05d" % u,
                         "duo_user_id": self.manual_ids[u] if by_id else "im%05d" % u},
                        {("ok", None), ("error", "device_exists")}))
        random.shuffle(out)
        return out

    def feed(self):
        """Sends the static jobs at an even pace over --send-secs, the automatic import
        at a fifth of the way, and status jobs as begin replies arrive."""
        jobs = self.static_jobs()
        gap = self.args.send_secs / max(1, len(jobs))
        t0 = time.time()
        auto_at = len(jobs) // 5
        for n, (jt, kind, body, want) in enumerate(jobs):
            if n == auto_at:
                self.auto_id = self.send("import.auto", "import",
                                         {"stage_uuid": self.s.stages["b"][0], "page_size": 50},
                                         {("ok", None)})
            if n == len(jobs) // 2:
                self.send_bad()
            self.send(jt, kind, body, want)
            self.flush_dynamic()
            delay = t0 + (n + 1) * gap - time.time()
            if delay > 0:
                time.sleep(delay)
        while not self.stop.is_set() and self.status_sent_total() < self.plan.status:
            self.flush_dynamic(timeout=0.5)
        self.flush_dynamic()
        self.sender.stdin.close()
        self.feeding_done.set()

    def status_sent_total(self):
        with self.lock:
            return self.status_sent

    def flush_dynamic(self, timeout=0.0):
        try:
            item = self.dynamic.get(timeout=timeout) if timeout else self.dynamic.get_nowait()
        except queue.Empty:
            return
        while True:
            self.send(*item)
            try:
                item = self.dynamic.get_nowait()
            except queue.Empty:
                return

    # ---- enrollment follow-ups ----------------------------------------------------
    def follow_begin(self, body):
        """Completes, expires or leaves an enrollment at the emulator, then asks its status
        (sometimes twice at once, to race two workers for one device)."""
        a, account = self.s.stages["a"]
        ok = body is not None and body.get("status") == "ok"
        fate = random.choices(["complete", "expire", "wait"], [70, 15, 15])[0]
        if ok and fate != "wait":
            self.s.emu.call("POST", "/_emu/enrollment", {
                "account": account, "activation_code": body["activation_code"],
                "action": fate})
        want = {"complete": {("ok", "success"), ("error", "device_exists")},
                "expire": {("ok", "invalid")}, "wait": {("ok", "waiting")}}[fate]
        with self.lock:
            self.begins_done += 1
            left = self.plan.begin - self.begins_done
            copies = 0
            if ok:
                copies = 1
                if fate == "complete" and random.random() < 0.5:
                    copies = 2
                self.enrollments.append((body["enrollment_id"], fate, want))
            copies = max(0, min(copies, self.plan.status - self.status_sent - left))
            if left == 0:
                copies = self.plan.status - self.status_sent
            self.status_sent += copies
            pool = list(self.enrollments)
        for c in range(copies):
            eid, f, w = (body["enrollment_id"], fate, want) if ok and c < 2 else random.choice(pool)
            if f == "complete":
                w = {("ok", "success"), ("error", "device_exists")}
            self.dynamic.put(("enroll.status", "enroll", {"stage_uuid": a, "enrollment_id": eid}, w))

    def followup_loop(self):
        while True:
            body = self.followups.get()
            if body is StopIteration:
                return
            try:
                self.follow_begin(body)
            except Exception as ex:   # an emulator hiccup must not stop the harness
                print("chaos: follow-up failed: %s" % ex, file=sys.stderr)

    # ---- replies --------------------------------------------------------------------
    def on_reply(self, line):
        m = json.loads(line)
        corr, body = m.get("corr") or m.get("mid"), m.get("body")
        with self.lock:
            if corr in self.bad_replies:
                self.bad_replies[corr].append(body)
                return
            job = self.jobs.get(corr)
            if job is None:
                self.foreign += 1
                return
            if body and body.get("progress") is True:
                self.progress += 1
                return
            prev = self.finals.setdefault(corr, [])
            if m.get("redelivered") and body in prev:
                self.drain_redeliveries += 1
                return
            prev.append(body)
            first = len(prev) == 1
            if first:
                self.reply_times.append(time.time())
        if first and job["type"] == "enroll.begin":
            self.followups.put(body)

    def read_replies(self, proc):
        for line in proc.stdout:
            if line.strip():
                self.on_reply(line)

    def read_sender(self, proc):
        for line in proc.stdout:
            m = json.loads(line)
            if "republished" in m:
                with self.lock:
                    self.republished.add(m["republished"])

    def missing(self):
        with self.lock:
            return [j for j in self.jobs if j not in self.finals]


# ---- chaos --------------------------------------------------------------------------------
def worker_loop(run):
    """kill -9 random workers at random moments and restart them; notices workers that
    died by themselves (a crash) and restarts those too."""
    s, killed = run.s, set()
    faulted = set()
    next_kill = time.time() + random.uniform(1, 3)
    stop_kills_at = None
    while not run.stop.is_set():
        for name, slot, p in s.all_workers():
            if p is None or p.poll() is None or p.pid in killed:
                continue
            if p.pid in faulted and p.returncode == 137:
                run.counts["fault_exits"] += 1
            else:
                run.counts["crashes"] += 1
                run.crash_info.append("%s-%d exit %s" % (name, slot, p.returncode))
            killed.add(p.pid)
            np = s.start_worker(name, slot)
            note(run, "%s-%d pid %d exited %s by itself; restarted as pid %d" % (
                name, slot, p.pid, p.returncode, np.pid))
        if run.feeding_done.is_set() and stop_kills_at is None:
            stop_kills_at = time.time() + 5
        if run.args.kills and time.time() >= next_kill and run.counts["kills"] < run.args.kills \
                and (stop_kills_at is None or time.time() < stop_kills_at):
            name, slot, p = random.choice([w for w in s.all_workers() if w[2]])
            killed.add(p.pid)
            p.kill()
            p.wait()
            run.counts["kills"] += 1
            note(run, "kill -9 %s-%d pid %d" % (name, slot, p.pid))
            time.sleep(random.uniform(0.1, 1.5))
            extra = None
            if random.random() < run.args.fault_point_share:
                extra = {"DUO_FAULT_POINT": "after_commit"}
            np = s.start_worker(name, slot, extra)
            if extra:
                faulted.add(np.pid)
            note(run, "started %s-%d pid %d%s" % (name, slot, np.pid,
                                                  " with DUO_FAULT_POINT" if extra else ""))
            next_kill = time.time() + random.uniform(*run.args.kill_gap)
        time.sleep(0.2)


def note(run, what):
    """One timestamped line in <workdir>/events.log, to line up with the worker logs."""
    now = time.time()
    with open(os.path.join(run.s.workdir, "events.log"), "a") as f:
        f.write("%s.%03d %s\n" % (time.strftime("%H:%M:%S", time.gmtime(now)),
                                  int(now * 1000) % 1000, what))


def fault(run, key, path, status, count, retry_after=None):
    body = {"account": run.s.stages[key][1], "path_prefix": path, "status": status,
            "count": count}
    if retry_after is not None:
        body["retry_after"] = retry_after
    run.s.emu.call("POST", "/_emu/faults", body)
    run.counts["fault_bursts"] += 1
    note(run, "fault %s" % json.dumps(body))


def event_loop(run):
    """The scheduled faults, at fractions of the send window."""
    w, a = run.args.send_secs, run.args
    ev = [(0.05, lambda: fault(run, "a", "/auth/v2/auth", 429, 40, 1)),
          (0.10, lambda: fault(run, "a", "/auth/v2/enroll", 503, 25)),
          (0.22, lambda: fault(run, "b", "/admin/v1/users", 429, 8)),
          (0.35, lambda: fault(run, "a", "/auth/v2/", 429, 60)),
          (0.40, lambda: fault(run, "b", "/admin/v1/users", 500, 4)),
          (0.55, lambda: fault(run, "a", "/auth/v2/", 502, 30)),
          (0.70, lambda: fault(run, "a", "/auth/v2/enroll_status", 429, 30, 0))]
    if a.cluster:
        node = str(random.randint(1, 3))
        ev += [(0.25, lambda: stop_node(run, node)), (0.45, lambda: start_node(run, node))]
    elif a.mq_restart:
        ev.append((0.25, lambda: restart(run, "mq")))
    t0 = time.time()
    if a.pg_failover:
        # On a timer of its own: a slow broker restart (a minute on a loaded machine)
        # must not push the failover past the send window.
        thread(at_time, run, t0 + 0.60 * w, lambda: failover_now(run))
    elif a.pg_restart:
        ev.append((0.60, lambda: restart(run, "pg")))
    for at, fn in sorted(ev, key=lambda e: e[0]):
        at_time(run, t0 + at * w, fn)


def at_time(run, when, fn):
    """Runs fn() at time when, unless the run stops first."""
    while time.time() < when and not run.stop.is_set():
        time.sleep(0.1)
    if run.stop.is_set():
        return
    try:
        fn()
    except Exception as ex:
        print("chaos: event failed: %s" % ex, file=sys.stderr)


def restart(run, what):
    note(run, "restart-" + what)
    took, _ = services(["scripts/services.sh", "restart-" + what])
    run.counts[what + "_restarts"] += 1
    print("chaos: restarted %s in %.1fs" % (what, took), file=sys.stderr)


def failover_now(run):
    """Crashes the primary (pg_ctl -m immediate) and promotes the standby."""
    note(run, "pg failover: stop the primary hard, promote the standby")
    at = time.time()
    took, out = services(["scripts/pg-ha.sh", "failover", str(run.args.promote_delay),
                          str(run.args.standby_lag)])
    fields = dict(kv.split("=", 1) for kv in out.split() if "=" in kv)
    run.failover = {"at": at, "took_ms": int(fields.get("took_ms", -1)),
                    "lag_bytes": int(fields.get("lag_bytes", -1))}
    run.counts["pg_failovers"] += 1
    note(run, "standby promoted: %s" % out.strip())
    print("chaos: failover done in %.1fs (%s)" % (took, out.strip()), file=sys.stderr)


def stop_node(run, node):
    note(run, "stop-node " + node)
    services(["scripts/cluster.sh", "stop-node", node])
    run.counts["node_stops"] += 1
    print("chaos: stopped cluster node %s" % node, file=sys.stderr)


def start_node(run, node):
    note(run, "start-node " + node)
    services(["scripts/cluster.sh", "start-node", node])
    print("chaos: started cluster node %s again" % node, file=sys.stderr)


# ---- setup --------------------------------------------------------------------------------
def setup(run):
    s, p = run.s, run.plan
    s.create()
    s.stage("a", s.tag + "-a")
    s.stage("b", s.tag + "-b")
    s.save_secrets()
    emu = s.emu
    users = [{"username": "au%04d" % i} for i in range(p.auth_users)]
    users += [{"username": "im%05d" % i} for i in range(p.manual_users)]
    got = emu.call("POST", "/_emu/users", {"account": s.stages["a"][1], "users": users})
    ids = {u["username"]: u["user_id"] for u in got["response"]["users"]}
    run.manual_ids = [ids["im%05d" % i] for i in range(p.manual_users)]
    emu.call("POST", "/_emu/users", {"account": s.stages["b"][1],
                                     "generate": {"count": p.gen_total, "prefix": "gen"}})
    for i in range(p.auth_users):
        group = auth_expect(i, p)
        if group in ("deny", "timeout"):
            emu.call("POST", "/_emu/behavior", {"account": s.stages["a"][1],
                                                "user": "au%04d" % i, "push": group})
    s.load_users(["en%05d" % i for i in range(p.begin)] + [u["username"] for u in users] +
                 ["gen%07d" % i for i in range(p.gen_local)])


def start_workers(run):
    for name in ("enroll", "auth", "import"):
        for slot in range(run.args.per_kind):
            run.s.start_worker(name, slot)


def pre_phase(run):
    """Gives the auth users their devices (import.manual) before the chaos starts."""
    a = run.s.stages["a"][0]
    ids = [run.send("import.manual", "import",
                    {"stage_uuid": a, "username": "au%04d" % i, "duo_user_id": "au%04d" % i},
                    {("ok", None)}, job_id="%s-pre-%d" % (run.s.tag, i))
           for i in range(run.plan.auth_users)]
    deadline = time.time() + 180
    while time.time() < deadline:
        with run.lock:
            done = [j for j in ids if j in run.finals]
        if len(done) == len(ids):
            break
        time.sleep(0.2)
    with run.lock:
        bad = [j for j in ids if not run.finals.get(j) or
               run.finals[j][0].get("status") != "ok"]
        for j in ids:
            run.jobs.pop(j, None)
            run.finals.pop(j, None)
    if bad:
        raise SystemExit("chaos: pre-phase: %d auth users got no device (%s)" % (len(bad), bad[:3]))


# ---- checks -------------------------------------------------------------------------------
def outcome(job_type, body):
    if body is None:
        return ("undecodable", None)
    if body.get("status") != "ok":
        return ("error", (body.get("error") or {}).get("code"))
    key = {"enroll.status": "enrollment_status", "auth": "result"}.get(job_type)
    return ("ok", body.get(key) if key else None)


def classify(run):
    """(transient, wrong) counts over the first final reply of each job."""
    transient = 0
    with run.lock:
        items = [(j, run.jobs[j], run.finals[j][0]) for j in run.jobs if j in run.finals]
    for job_id, job, body in items:
        got = outcome(job["type"], body)
        if got in job["expect"]:
            continue
        if got[0] == "error" and (got[1] or "").startswith(TRANSIENT_PREFIXES):
            transient += 1
            continue
        run.unexpected.append("%s %s: %s" % (job["type"], job_id, json.dumps(body)[:300]))
    return transient, len(run.unexpected)


def db_checks(run):
    s = run.s
    q = s.psql
    dup = int(q("SELECT count(*) FROM (SELECT stage_id, duo_user_id FROM duo_device "
                "GROUP BY 1, 2 HAVING count(*) > 1) d"))

    def devices(stage, like):
        return int(q("SELECT count(*) FROM duo_device d JOIN duo_stage s ON s.id = d.stage_id "
                     "JOIN app_user u ON u.id = d.user_id WHERE s.uuid = '%s' AND "
                     "u.username LIKE '%s'" % (s.stages[stage][0], like)))
    running = int(q("SELECT count(*) FROM job WHERE state <> 'done'"))
    return dup, devices("b", "gen%"), devices("a", "im%"), devices("a", "en%"), running


def expected_devices(run):
    """Users whose device a reply reported: imported im* users and enrolled en* ones."""
    im, en = set(), set()
    with run.lock:
        for j, bodies in run.finals.items():
            b, t = bodies[0], run.jobs[j]["type"]
            if b and b.get("status") == "ok":
                if t == "import.manual":
                    im.add(b.get("duo_user_id"))
                elif t == "enroll.status" and b.get("enrollment_status") == "success":
                    en.add(b.get("device_id"))
    return len(im), len(en)


def import_check(run):
    """The automatic import's final reply against the emulator's users."""
    p = run.plan
    with run.lock:
        finals = run.finals.get(getattr(run, "auto_id", None)) or [None]
    b = finals[0] or {}
    c = b.get("counts") or {}
    truth = {"created": p.gen_local, "existing": 0, "unknown_user": p.gen_total - p.gen_local,
             "errors": 0}
    ok = b.get("state") == "done" and all(c.get(k) == v for k, v in truth.items())
    if not ok:
        run.unexpected.append("import.auto final: %s" % json.dumps(b)[:400])
    return ok, c.get("created")


def dead_letters(run):
    s = run.s
    out = s.driver(["drain", s.urls, s.prefix + ".dead", "--idle-exit", "3000"])
    out.stdin.close()
    lines = [json.loads(x) for x in out.stdout if x.strip()]
    out.wait()
    seen = {m.get("mid") or m.get("corr") for m in lines}
    matched = len(seen & set(run.bad_replies))
    others = [m.get("mid") or m.get("corr") for m in lines
              if (m.get("mid") or m.get("corr")) not in run.bad_replies]
    return matched, others


def failover_checks(run):
    """After a promotion: what the new primary lacks of what replies reported. Returns
    (devices named by an ok reply that are absent, job rows absent for jobs with a final
    reply: all, of them auth jobs) and writes the ids to <workdir>/failover-absent.txt."""
    s = run.s
    a = s.stages["a"][0]
    have_user_ids = set(s.psql("SELECT d.duo_user_id FROM duo_device d JOIN duo_stage s ON "
                               "s.id = d.stage_id WHERE s.uuid = '%s'" % a).split())
    have_uuids = set(s.psql("SELECT uuid FROM duo_device").split())
    have_jobs = set(s.psql("SELECT job_id FROM job").split())
    missing, absent = [], []
    with run.lock:
        for j, bodies in run.finals.items():
            b, t = bodies[0] or {}, run.jobs[j]["type"]
            if j not in have_jobs:
                absent.append((j, t))
            if b.get("status") != "ok":
                continue
            if t == "import.manual" and b.get("duo_user_id") not in have_user_ids:
                missing.append((j, t, b.get("duo_user_id")))
            if t == "enroll.status" and b.get("enrollment_status") == "success" and \
                    b.get("device_id") not in have_uuids:
                missing.append((j, t, b.get("device_id")))
    with open(os.path.join(s.workdir, "failover-absent.txt"), "w") as f:
        f.write("".join("device %s %s %s\n" % m for m in missing))
        f.write("".join("job-row %s %s\n" % r for r in absent))
    return len(missing), len(absent), sum(1 for _, t in absent if t == "auth")


def reply_stall(run):
    """Longest stretch without a first final reply from the failover until 60 s after."""
    at = run.failover.get("at")
    if not at:
        return 0.0
    with run.lock:
        times = sorted(t for t in run.reply_times if at - 1 <= t <= at + 60)
    gaps = [b - a for a, b in zip([at] + times, times)]
    return max(gaps) if gaps else 0.0


def emu_faults(run):
    n429 = n5xx = 0
    for _, account in run.s.stages.values():
        for by_status in run.s.emu.stats(account)["requests"].values():
            for st, n in by_status.items():
                n429 += n if st == "429" else 0
                n5xx += n if st.startswith("5") else 0
    return n429, n5xx


def push_count(run):
    """(pushes, jobs pushed more than once) over the auth jobs, from the emulator's log."""
    got = run.s.emu.call("GET", "/_emu/pushes?account=%s" % run.s.stages["a"][1])
    per_job = {}
    for p in got.get("pushes", []):
        job = urllib.parse.parse_qs(p.get("pushinfo") or "").get("job", [None])[0]
        if job:
            per_job[job] = per_job.get(job, 0) + 1
    twice = sorted(j for j, n in per_job.items() if n > 1)
    return sum(per_job.values()), twice


def dup_count(run):
    """Duplicated final replies (beyond the first per job), and those of jobs the sender
    itself published twice; the job ids go to <workdir>/dup-replies.txt."""
    dups = harness = 0
    with run.lock, open(os.path.join(run.s.workdir, "dup-replies.txt"), "w") as f:
        for j, bodies in run.finals.items():
            if len(bodies) > 1:
                f.write("%s %d%s\n" % (j, len(bodies), " republished" if j in run.republished
                                       else ""))
                if j in run.republished:
                    harness += len(bodies) - 1
                else:
                    dups += len(bodies) - 1
    return dups, harness


# ---- main ---------------------------------------------------------------------------------
def parse_args():
    ap = argparse.ArgumentParser(description="chaos harness (see tests/chaos/run.sh)")
    ap.add_argument("--jobs", type=int, default=10000)
    ap.add_argument("--send-secs", type=float, default=0)
    ap.add_argument("--kills", type=int, default=1000, help="most workers to kill -9")
    ap.add_argument("--kill-gap", default="1.5,5", help="seconds between kills: MIN,MAX")
    ap.add_argument("--per-kind", type=int, default=2)
    ap.add_argument("--gen-users", type=int, default=5000)
    ap.add_argument("--cluster", action="store_true")
    ap.add_argument("--no-mq-restart", dest="mq_restart", action="store_false")
    ap.add_argument("--no-pg-restart", dest="pg_restart", action="store_false")
    ap.add_argument("--pg-failover", choices=("sync", "async"),
                    help="run against the primary + standby of scripts/pg-ha.sh (started by "
                         "run.sh with this replication mode) and, at 60%% of the send "
                         "window instead of the restart, crash the primary and promote "
                         "the standby")
    ap.add_argument("--promote-delay", type=float, default=3.0,
                    help="seconds between the primary's crash and the promotion")
    ap.add_argument("--standby-lag", type=float, default=0,
                    help="before the crash, hold back the primary's WAL sender this many "
                         "seconds (a standby that far behind; with sync, commits wait)")
    ap.add_argument("--fault-point-share", type=float, default=0.2)
    ap.add_argument("--wait-secs", type=float, default=300)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--keep", action="store_true", help="keep database and queues")
    a = ap.parse_args()
    a.kill_gap = tuple(float(x) for x in a.kill_gap.split(","))
    if a.send_secs <= 0:
        a.send_secs = max(20.0, a.jobs / 150.0)
    if a.jobs < 100:
        ap.error("--jobs must be at least 100")
    return a


def thread(fn, *args):
    t = threading.Thread(target=fn, args=args, daemon=True)
    t.start()
    return t


def wait_replies(run, deadline):
    while time.time() < deadline:
        if run.feeding_done.is_set() and not run.missing():
            return
        time.sleep(0.5)


def report(run, elapsed):
    a, p = run.args, run.plan
    transient, wrong = classify(run)
    dup_dev, dev_b, dev_im, dev_en, running = db_checks(run)
    exp_im, exp_en = expected_devices(run)
    imp_ok, created = import_check(run)
    dead_ok, dead_other = dead_letters(run)
    n429, n5xx = emu_faults(run)
    dups, harness = dup_count(run)
    pushes, pushed_twice = push_count(run)
    lost = run.missing()
    with run.lock:
        sent = len(run.jobs)
        replied = sent - len(lost)
    devices_ok = dev_b == p.gen_local and dev_im == exp_im and dev_en == exp_en
    ha, ha_bad = "", False
    if a.pg_failover:
        missing_dev, absent, absent_auth = failover_checks(run)
        f = run.failover
        _, out = services(["scripts/pg-ha.sh", "standby-writes"])
        standby_writes = int(out.strip() or 0)
        ha = (" pg_failover=%s pg_failovers=%d lag_bytes=%d promote_ms=%d reply_stall=%.1fs "
              "standby_writes=%d missing_devices=%d absent_job_rows=%d absent_auth_rows=%d" % (
                  a.pg_failover, run.counts["pg_failovers"], f.get("lag_bytes", -1),
                  f.get("took_ms", -1), reply_stall(run), standby_writes, missing_dev, absent,
                  absent_auth))
        # Synchronous replication promises every synchronously committed row: all but the
        # authentication worker's (synchronous_commit=off by design, README "Durability").
        # A write the standby refused: a worker used a connection to it (the store must
        # refuse a standby at connect).
        ha_bad = run.counts["pg_failovers"] != 1 or missing_dev > 0 or standby_writes > 0 or \
            (a.pg_failover == "sync" and absent - absent_auth > 0)
    restarts = ("node_stops=%d" % run.counts["node_stops"]) if a.cluster else \
        ("mq_restarts=%d" % run.counts["mq_restarts"])
    line = ("chaos: jobs=%d replied=%d lost=%d dup_replies=%d harness_dups=%d "
            "drain_redeliveries=%d dup_devices=%d bad_replied=%d/%d dead_letters=%d/%d unexpected_dead=%d "
            "import_created=%s/%d devices_ok=%s transient_errors=%d wrong=%d kills=%d "
            "fault_exits=%d crashes=%d %s pg_restarts=%d 429s=%d 5xx=%d pushes=%d "
            "pushed_twice=%d elapsed=%.0fs%s" % (
                sent, replied, len(lost), dups, harness, run.drain_redeliveries, dup_dev,
                sum(1 for v in run.bad_replies.values() if v), len(run.bad_replies), dead_ok, len(run.bad_replies), len(dead_other), created, p.gen_local,
                "yes" if devices_ok else "no", transient, wrong, run.counts["kills"],
                run.counts["fault_exits"], run.counts["crashes"], restarts,
                run.counts["pg_restarts"], n429, n5xx, pushes, len(pushed_twice), elapsed, ha))
    for j in pushed_twice[:10]:
        print("chaos: pushed twice: %s" % j, file=sys.stderr)
    for u in run.unexpected[:10]:
        print("chaos: unexpected: " + u, file=sys.stderr)
    for j in lost[:10]:
        print("chaos: lost: %s (%s)" % (j, run.jobs[j]["type"]), file=sys.stderr)
    for c in run.crash_info[:10]:
        print("chaos: crash: " + c, file=sys.stderr)
    for k, v in run.bad_replies.items():
        print("chaos: bad message %s answered: %s" % (k, json.dumps(v)[:200]), file=sys.stderr)
    for d in dead_other[:10]:
        print("chaos: unexpected dead letter: %s" % d, file=sys.stderr)
    if not devices_ok:
        print("chaos: devices: auto %d/%d, manual %d/%d, enrolled %d/%d" % (
            dev_b, p.gen_local, dev_im, exp_im, dev_en, exp_en), file=sys.stderr)
    print("chaos: job rows not done: %d; progress messages %d; other replies %d" % (
        running, run.progress, run.foreign), file=sys.stderr)
    print(line, flush=True)
    return not (lost or dup_dev or dead_ok != len(run.bad_replies) or dead_other or
                not imp_ok or not devices_ok or wrong or run.counts["crashes"] or pushed_twice or
                ha_bad)


def main():
    a = parse_args()
    if a.seed:
        random.seed(a.seed)
    tag = "chaos%d%d" % (os.getpid(), int(time.time()) % 100000)
    urls = need("CHAOS_AMQP_URLS") if a.cluster else need("AMQP_URL")
    s = Stack(tag, urls, os.path.join(need("DUO_RUN_DIR"), "chaos", tag),
              pg_ha=bool(a.pg_failover))
    run = Run(a, s, Plan(a.jobs, a.gen_users))
    print("chaos: tag %s, logs in %s" % (tag, s.workdir), file=sys.stderr)
    ok = False
    try:
        setup(run)
        drain = s.driver(["drain", urls, tag + ".chaos.replies", "--bind", tag])
        run.sender = s.driver(["send", urls, tag])
        thread(run.read_replies, drain)
        thread(run.read_sender, run.sender)
        for _ in range(4):
            thread(run.followup_loop)
        start_workers(run)
        pre_phase(run)
        t0 = time.time()
        note(run, "main phase starts")
        deadline = t0 + a.send_secs + a.wait_secs
        threads = [thread(worker_loop, run), thread(event_loop, run), thread(run.feed)]
        threads[2].join(a.send_secs + a.wait_secs)
        wait_replies(run, deadline)
        time.sleep(5)   # late duplicates, if any, arrive now
        elapsed = time.time() - t0
        run.stop.set()
        for t in threads:
            t.join(120)
        s.stop_workers()
        ok = report(run, elapsed)
        drain.terminate()
        run.sender.terminate()
    finally:
        s.teardown(keep_db=a.keep)
        if not a.keep:
            s.driver(["cleanup", urls, tag]).wait()
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
