"""stack.py - a private stack for the chaos harness: its own database, MQ prefix, emulator
accounts and stages, worker processes it can kill and restart, and the bench/chaos driver
processes (job sender, reply drain). Python standard library only.

Key invariant: everything is named after one tag, so a run never touches another test's
database, queues or emulator account, and teardown removes exactly what it made."""

import json
import os
import random
import ssl
import string
import subprocess
import threading
import time
import urllib.request

TEST_SECRET_KEY = "dGVzdC1rZXktdGVzdC1rZXktdGVzdC1rZXktdGVzdDA="  # test-only key


def need(name):
    value = os.environ.get(name)
    if not value:
        raise SystemExit("chaos: %s is not set (eval \"$(scripts/services.sh env)\")" % name)
    return value


def rand_key(prefix, n):
    alphabet = string.ascii_uppercase + string.digits
    return prefix + "".join(random.choice(alphabet) for _ in range(n - len(prefix)))


class Emulator:
    """The Duo emulator's control API (docs/EMULATOR.md)."""

    def __init__(self):
        self.url = need("DUO_EMU_URL")
        self.ctx = ssl.create_default_context(cafile=need("DUO_CA_FILE"))

    def call(self, method, path, body=None):
        data = json.dumps(body).encode() if body is not None else None
        req = urllib.request.Request(self.url + path, data=data, method=method,
                                     headers={"Content-Type": "application/json"})
        with urllib.request.urlopen(req, context=self.ctx, timeout=120) as resp:
            return json.loads(resp.read() or b"{}")

    def account(self, name, auth, admin):
        self.call("POST", "/_emu/account", {
            "account": name, "admin_licensed": True, "admin_pages_per_min": 0,
            "integrations": [dict(ikey=auth[0], skey=auth[1], type="auth"),
                             dict(ikey=admin[0], skey=admin[1], type="admin")]})

    def stats(self, account):
        return self.call("GET", "/_emu/stats?account=" + account)


class Stack:
    """Database, emulator accounts, stages, users and worker processes of one run."""

    def __init__(self, tag, amqp_urls, workdir, pg_ha=False):
        self.tag = tag
        self.prefix = tag
        self.urls = amqp_urls
        self.bin = need("DUO_BIN_DIR")
        if pg_ha:
            # The pair of scripts/pg-ha.sh. The workers' DATABASE_URL names both hosts and
            # no target_session_attrs: the store must find the primary by itself. The
            # harness's own psql asks libpq for the writable one explicitly.
            hosts = "host=%s port=%s user=postgres " % (need("CHAOS_PG_HOSTS"),
                                                         need("CHAOS_PG_PORTS"))
            self.admin_url = hosts + "dbname=postgres target_session_attrs=read-write"
            self.db_url = hosts + "dbname=" + tag
            self.check_url = self.db_url + " target_session_attrs=read-write"
        else:
            self.admin_url = need("DUO_PG_ADMIN_URL")
            self.db_url = self.admin_url.rsplit("/", 1)[0] + "/" + tag
            self.check_url = self.db_url
        self.workdir = workdir
        self.emu = Emulator()
        self.env = dict(os.environ)
        self.env.update({
            "DATABASE_URL": self.db_url, "MQ_PREFIX": self.prefix, "AMQP_URL": amqp_urls,
            "DUO_SECRET_KEY": TEST_SECRET_KEY, "RETRY_DELAYS_MS": "300,1000,3000",
            "DUO_RETRY_BUDGET_MS": "20000", "JOB_MAX_ATTEMPTS": "10",
            "PUSH_CAP": "1000", "PUSH_WINDOW_SECS": "1", "DENY_COOLDOWN_SECS": "0",
            "AMQP_HEARTBEAT_SECS": "5", "IMPORT_PAGES_PER_MIN": "300",
            "LOG_LEVEL": os.environ.get("CHAOS_LOG_LEVEL", "warn")})
        self.env.pop("DUO_FAULT_POINT", None)
        if pg_ha:
            # The pair of pg-ha.sh has no worker roles (its own initdb): the failover run
            # tests the store's host choice, not the grants (test_db_roles does that).
            self.env.update({"DB_ROLE_ENROLL": "none", "DB_ROLE_AUTH": "none",
                             "DB_ROLE_IMPORT": "none"})
        self.workers = {}          # name -> [Popen or None]
        self.lock = threading.Lock()
        self.stages = {}           # "a"/"b" -> (uuid, account)
        os.makedirs(workdir, exist_ok=True)
        self.record_secrets = []

    # ---- database -----------------------------------------------------------------
    def psql(self, sql, url=None):
        out = subprocess.run(["psql", "-X", "-q", "-A", "-t", "-v", "ON_ERROR_STOP=1",
                              "-d", url or self.check_url, "-c", sql],
                             capture_output=True, text=True, timeout=120)
        if out.returncode != 0:
            raise RuntimeError("psql: " + out.stderr.strip())
        return out.stdout.strip()

    def duoctl(self, args, stdin=None):
        out = subprocess.run([os.path.join(self.bin, "duoctl")] + args, input=stdin,
                             env=self.env, capture_output=True, text=True, timeout=300)
        if out.returncode != 0:
            raise RuntimeError("duoctl %s: %s" % (args[0], out.stderr.strip()))
        return out.stdout

    def create(self):
        self.psql("CREATE DATABASE " + self.tag, self.admin_url)
        self.duoctl(["migrate"])

    def stage(self, key, account):
        auth = (rand_key("DI", 20), rand_key("", 40))
        admin = (rand_key("DA", 20), rand_key("", 40))
        self.record_secrets += [auth[1], admin[1]]
        self.emu.account(account, auth, admin)
        out = self.duoctl(["stage", "create", "--name", "stage-%s-%s" % (key, self.tag),
                           "--api-hostname", need("DUO_EMU_HOST"), "--client-id", auth[0],
                           "--client-secret", auth[1], "--admin-integration-key", admin[0],
                           "--admin-secret-key", admin[1],
                           "--friendly-name", "Chaos %s" % key])
        self.stages[key] = (json.loads(out)["uuid"], account)
        return self.stages[key][0]

    def load_users(self, names):
        self.duoctl(["user", "load", "-"], stdin="".join("%s,\n" % n for n in names))

    def save_secrets(self):
        """Lets scripts/check-secret-logs.sh prove no secret reached a log."""
        path = os.path.join(need("DUO_RUN_DIR"), "test-secrets.txt")
        with open(path, "a") as f:
            f.write("".join(s + "\n" for s in self.record_secrets + [TEST_SECRET_KEY]))

    # ---- workers ------------------------------------------------------------------
    def start_worker(self, name, slot, extra=None, wrapper=None):
        """Starts duo-<name> in slot (replacing what was there); wrapper, e.g. a valgrind
        command line, goes before the program."""
        env = dict(self.env)
        env.update(extra or {})
        log = open(os.path.join(self.workdir, "%s-%d.log" % (name, slot)), "ab")
        p = subprocess.Popen((wrapper or []) + [os.path.join(self.bin, "duo-" + name)], env=env,
                             stdout=subprocess.DEVNULL, stderr=log)
        log.close()
        with self.lock:
            slots = self.workers.setdefault(name, [])
            while len(slots) <= slot:
                slots.append(None)
            slots[slot] = p
        return p

    def all_workers(self):
        with self.lock:
            return [(n, i, p) for n, ps in self.workers.items() for i, p in enumerate(ps)]

    def stop_workers(self):
        for _, _, p in self.all_workers():
            if p and p.poll() is None:
                p.terminate()
        for _, _, p in self.all_workers():
            if p:
                try:
                    p.wait(timeout=40)
                except subprocess.TimeoutExpired:
                    p.kill()
                    p.wait()

    # ---- driver processes ---------------------------------------------------------
    def driver(self, args):
        return subprocess.Popen([os.path.join(self.bin, "chaos")] + args, env=self.env,
                                stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                stderr=open(os.path.join(self.workdir, "%s.log" % args[0]), "ab"),
                                text=True, bufsize=1)

    def teardown(self, keep_db=False):
        self.stop_workers()
        if not keep_db:
            try:
                self.psql("DROP DATABASE IF EXISTS %s WITH (FORCE)" % self.tag, self.admin_url)
            except RuntimeError:
                pass


def services(what):
    """scripts/services.sh restart-mq|restart-pg, scripts/cluster.sh stop-node N,
    scripts/pg-ha.sh failover S ...; returns (seconds taken, its standard output)."""
    root = need("DUO_SOURCE_DIR")
    t0 = time.time()
    out = subprocess.run(["bash"] + what, cwd=root, check=True, stdout=subprocess.PIPE,
                         stderr=subprocess.DEVNULL, timeout=300, text=True)
    return time.time() - t0, out.stdout
