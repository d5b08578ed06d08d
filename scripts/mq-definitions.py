#!/usr/bin/env python3
"""mq-definitions.py - RabbitMQ definitions (JSON, for `rabbitmqctl import_definitions`
or `load_definitions`) of the project's broker identities on one vhost.

  mq-definitions.py --vhost duo --prefix duo --worker duo:PW --publisher duo-upstream:PW \
                    [--admin duo-admin:PW]

Key invariant: the permissions here are the documented ones (README, Security):
  worker     configure/read ^(P\\..*|amq\\.gen-.*)$, write ^(P\\..*|amq\\.gen-.*|amq\\.default)$
             (declares the topology, consumes work queues, replies through the default
             exchange; duoctl's private reply queue is server-named amq.gen-*)
  publisher  configure/read ^amq\\.gen-.*$ (its own reply queue), write ^P\\.jobs$ only:
             it can publish jobs and read its replies, never consume a work queue, publish
             a reply or touch the topology
  admin      administrator tag, everything on the vhost and on "/" (tests, operators)
Passwords are stored as RabbitMQ's salted SHA-256 hashes, never in clear.
"""
import argparse, base64, hashlib, json, os, re, sys


def pw_hash(password):
    salt = os.urandom(4)
    return base64.b64encode(salt + hashlib.sha256(salt + password.encode()).digest()).decode()


def user(spec, tags):
    name, _, password = spec.partition(":")
    if not name or not password:
        sys.exit("mq-definitions: expected NAME:PASSWORD, got %r" % name)
    return {"name": name, "password_hash": pw_hash(password),
            "hashing_algorithm": "rabbit_password_hashing_sha256", "tags": ",".join(tags)}, name


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--vhost", required=True)
    ap.add_argument("--prefix", required=True)
    ap.add_argument("--worker", required=True)
    ap.add_argument("--publisher", required=True)
    ap.add_argument("--admin")
    a = ap.parse_args()
    if not re.fullmatch(r"[A-Za-z0-9_.-]+", a.prefix):
        sys.exit("mq-definitions: MQ_PREFIX %r has characters a queue name cannot" % a.prefix)
    p = re.escape(a.prefix)
    users, perms = [], []
    u, worker = user(a.worker, [])
    users.append(u)
    perms.append({"user": worker, "vhost": a.vhost,
                  "configure": r"^(%s\..*|amq\.gen-.*)$" % p,
                  "write": r"^(%s\..*|amq\.gen-.*|amq\.default)$" % p,
                  "read": r"^(%s\..*|amq\.gen-.*)$" % p})
    u, pub = user(a.publisher, [])
    users.append(u)
    perms.append({"user": pub, "vhost": a.vhost, "configure": r"^amq\.gen-.*$",
                  "write": r"^%s\.jobs$" % p, "read": r"^amq\.gen-.*$"})
    vhosts = [{"name": a.vhost}]
    if a.admin:
        u, admin = user(a.admin, ["administrator"])
        users.append(u)
        for v in sorted({a.vhost, "/"}):
            perms.append({"user": admin, "vhost": v, "configure": ".*", "write": ".*", "read": ".*"})
        if a.vhost != "/":
            vhosts.append({"name": "/"})
    json.dump({"users": users, "vhosts": vhosts, "permissions": perms}, sys.stdout, indent=1)
    print()


main()
