#!/usr/bin/env python3
"""leaks.py - the long-running worker paths under a leak checker (run it through
tests/chaos/leaks.sh).

Runs one enrollment worker and one authentication worker (optionally under valgrind
memcheck) through rounds of jobs on a private stack: enroll.begin, enroll.status (half
of them completed at the emulator first), auth push allow/deny and passcode right/wrong.
Prints the resident set size (VmRSS) of each worker after every round, then stops the
workers with SIGTERM so a leak checker reports at exit, and prints its verdict.

Key invariant: the first round is the warm-up (connections, caches, the schema set);
growth is measured from the end of that round, so only memory that keeps growing with
the number of jobs counts."""

import argparse
import json
import os
import random
import re
import sys
import threading
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from stack import Stack, need  # noqa: E402


class Client:
    """Jobs out through `chaos send`, replies in through `chaos drain`."""

    def __init__(self, stack):
        self.s = stack
        self.lock = threading.Lock()
        self.replies = {}
        self.n = 0
        self.drain = stack.driver(["drain", stack.urls, stack.prefix + ".chaos.replies",
                                   "--bind", stack.prefix])
        self.sender = stack.driver(["send", stack.urls, stack.prefix])
        threading.Thread(target=self.read, daemon=True).start()
        threading.Thread(target=lambda: [None for _ in self.sender.stdout], daemon=True).start()

    def read(self):
        for line in self.drain.stdout:
            m = json.loads(line)
            with self.lock:
                self.replies.setdefault(m.get("corr"), m.get("body"))

    def send(self, job_type, kind, body):
        self.n += 1
        job_id = "%s-%d" % (self.s.tag, self.n)
        self.sender.stdin.write(json.dumps({"id": job_id, "type": job_type, "kind": kind,
                                            "body": body}) + "\n")
        return job_id

    def wait(self, ids, timeout):
        deadline = time.time() + timeout
        while time.time() < deadline:
            with self.lock:
                if all(i in self.replies for i in ids):
                    return [self.replies[i] for i in ids]
            time.sleep(0.2)
        raise SystemExit("leaks: %d replies missing after %ds" % (
            sum(1 for i in ids if i not in self.replies), timeout))

    def close(self):
        self.sender.stdin.close()
        self.sender.wait()
        self.drain.terminate()


def rss_kib(pid):
    with open("/proc/%d/status" % pid) as f:
        m = re.search(r"VmRSS:\s+(\d+)", f.read())
    return int(m.group(1)) if m else -1


def setup(s, users, auth_users):
    s.create()
    s.stage("a", s.tag + "-a")
    s.save_secrets()
    account = s.stages["a"][1]
    s.emu.call("POST", "/_emu/users", {"account": account, "users": [
        {"username": "au%03d" % i} for i in range(auth_users)]})
    for i in range(auth_users // 2, auth_users):
        s.emu.call("POST", "/_emu/behavior", {"account": account, "user": "au%03d" % i,
                                              "push": "deny"})
    s.load_users(["en%06d" % i for i in range(users)] + ["au%03d" % i for i in range(auth_users)])


def give_devices(s, c, auth_users):
    a = s.stages["a"][0]
    imp = s.start_worker("import", 0)
    ids = [c.send("import.manual", "import", {"stage_uuid": a, "username": "au%03d" % i,
                                              "duo_user_id": "au%03d" % i})
           for i in range(auth_users)]
    bad = [r for r in c.wait(ids, 120) if not r or r.get("status") != "ok"]
    imp.terminate()
    imp.wait()
    if bad:
        raise SystemExit("leaks: import failed: %s" % bad[:2])


def one_round(s, c, first_user, n, auth_users):
    """n enrollments (begin + status) and 2n auth jobs; returns the error replies."""
    a, account = s.stages["a"]
    begins = [c.send("enroll.begin", "enroll", {"stage_uuid": a, "username": "en%06d" % u})
              for u in range(first_user, first_user + n)]
    auths = []
    for i in range(2 * n):
        body = {"stage_uuid": a, "username": "au%03d" % random.randrange(auth_users)}
        if i % 2:
            body.update(factor="passcode", passcode=random.choice(["123456", "999999"]))
        auths.append(c.send("auth", "auth", body))
    statuses = []
    for r in c.wait(begins, 600):
        if r and r.get("status") == "ok":
            if random.random() < 0.5:
                s.emu.call("POST", "/_emu/enrollment", {"account": account, "action": "complete",
                                                        "activation_code": r["activation_code"]})
            statuses.append(c.send("enroll.status", "enroll",
                                   {"stage_uuid": a, "enrollment_id": r["enrollment_id"]}))
    replies = c.wait(auths + statuses, 600) + c.wait(begins, 1)
    return [r for r in replies if not r or r.get("status") != "ok"]


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--jobs", type=int, default=4000, help="enroll jobs (auth gets as many)")
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--valgrind", action="store_true")
    a = ap.parse_args()
    tag = "leaks%d%d" % (os.getpid(), int(time.time()) % 100000)
    s = Stack(tag, need("AMQP_URL"), os.path.join(need("DUO_RUN_DIR"), "chaos", tag))
    s.env["LOG_LEVEL"] = "error"
    per_round = max(10, a.jobs // 2 // a.rounds)   # begin + status = 2 enroll jobs each
    auth_users = 40
    setup(s, per_round * a.rounds, auth_users)
    c = Client(s)
    vg = ["valgrind", "--leak-check=full", "--show-leak-kinds=definite,indirect",
          "--errors-for-leak-kinds=definite,indirect", "--num-callers=30"]
    wrap = lambda name: vg + ["--log-file=%s/valgrind-%s.log" % (s.workdir, name)] \
        if a.valgrind else None
    print("leaks: tag %s, logs in %s" % (tag, s.workdir), flush=True)
    try:
        give_devices(s, c, auth_users)
        workers = {n: s.start_worker(n, 0, wrapper=wrap(n)) for n in ("enroll", "auth")}
        base = None
        for r in range(a.rounds):
            errs = one_round(s, c, r * per_round, per_round, auth_users)
            rss = {n: rss_kib(p.pid) for n, p in workers.items()}
            base = base or rss
            print("leaks: round %d: %d jobs, %d error replies, RSS enroll %d KiB (%+d), "
                  "auth %d KiB (%+d)" % (r + 1, (r + 1) * per_round * 4, len(errs),
                                         rss["enroll"], rss["enroll"] - base["enroll"],
                                         rss["auth"], rss["auth"] - base["auth"]), flush=True)
            for e in errs[:3]:
                print("leaks:   error reply: %s" % json.dumps(e)[:200], flush=True)
        for p in workers.values():
            p.terminate()
        codes = {n: p.wait(timeout=300) for n, p in workers.items()}
        print("leaks: workers exited %s" % codes, flush=True)
        ok = all(v == 0 for v in codes.values())
        if a.valgrind:
            ok = report_valgrind(s.workdir) and ok
    finally:
        c.close()
        s.teardown()
        s.driver(["cleanup", s.urls, tag]).wait()
    return 0 if ok else 1


def report_valgrind(workdir):
    ok = True
    for name in ("enroll", "auth"):
        with open(os.path.join(workdir, "valgrind-%s.log" % name)) as f:
            text = f.read()
        for key in ("definitely lost", "indirectly lost", "possibly lost", "ERROR SUMMARY"):
            m = re.search(key + r":\s+([\d,]+)[^\n]*", text)
            print("leaks: %s: %s" % (name, m.group(0) if m else key + ": (not reported)"))
        m = re.search(r"definitely lost:\s+([\d,]+)", text)
        ok = ok and m is not None and m.group(1) == "0"
        m = re.search(r"indirectly lost:\s+([\d,]+)", text)
        ok = ok and (m is None or m.group(1) == "0")
    return ok


if __name__ == "__main__":
    sys.exit(main())
