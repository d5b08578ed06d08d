"""emu_state.py - the emulator's state: accounts, their integrations, users, enrollments,
behaviours, faults, async transactions and statistics.

Invariant: generated users are never materialised. A range (prefix, start, count, width)
plus a sorted list of removed positions describes them; a user's id encodes its range and
index, so lookups by id or username and any page are computed on the fly.
"""

import bisect
import collections
import hashlib
import json
import time

ID_ALPHABET = "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZ"
PHONE_CAPS = ["auto", "push", "sms", "phone", "mobile_otp"]
DEFAULT_BEHAVIOR = {"push": "allow", "delay_ms": 0, "passcode": "123456",
                    "preauth": "auth"}
MAX_TX = 200000


# Three base-36 digits per entry, least significant first: digest_id takes the digest's
# digits three at a time (a page of 300 users needs 300 digests; this is its hot loop).
DIGITS3 = tuple(ID_ALPHABET[c % 36] + ID_ALPHABET[c // 36 % 36] + ID_ALPHABET[c // 1296]
                for c in range(36 ** 3))


def digest_id(prefix, text, length=18):
    """A deterministic id: prefix + `length` upper-case alphanumerics from SHA-256 (its
    base-36 digits, least significant first)."""
    num = int.from_bytes(hashlib.sha256(text.encode("utf-8")).digest(), "big")
    out = []
    for _ in range((length + 2) // 3):
        num, rem = divmod(num, 46656)
        out.append(DIGITS3[rem])
    return prefix + "".join(out)[:length]


BIG3 = tuple(d[::-1] for d in DIGITS3)


def base36(num, width):
    """The lowest `width` base-36 digits of num, most significant first."""
    out = []
    for _ in range((width + 2) // 3):
        num, rem = divmod(num, 46656)
        out.append(BIG3[rem])
    return "".join(reversed(out))[-width:]


class User:
    """An explicit (materialised) user."""

    __slots__ = ("user_id", "username", "enrolled", "email", "realname", "created")

    def __init__(self, user_id, username, enrolled, created, email=None, realname=None):
        self.user_id = user_id
        self.username = username
        self.enrolled = enrolled
        self.created = created
        self.email = email
        self.realname = realname


class GenRange:
    """count users named prefix + zero-padded (start + i); ids 'DUG' rr iiiiiiii hhhhhhh."""

    def __init__(self, number, prefix, start, count, width, salt):
        self.number = number
        self.prefix = prefix
        self.start = start
        self.count = count
        self.width = width
        self.tag = digest_id("", "%s/%d/%s" % (salt, number, prefix), 7)
        self.id_head = "DUG" + base36(number, 2)

    def username(self, i):
        return self.prefix + str(self.start + i).zfill(self.width)

    def user_id(self, i):
        return self.id_head + base36(i, 8) + self.tag

    def index_of_id(self, user_id):
        if len(user_id) != 20 or not user_id.startswith("DUG") or user_id[13:] != self.tag:
            return None
        if int(user_id[3:5], 36) != self.number:
            return None
        i = int(user_id[5:13], 36)
        return i if i < self.count else None

    def index_of_name(self, username):
        digits = username[len(self.prefix):]
        if not username.startswith(self.prefix) or not digits.isdigit():
            return None
        if len(digits) < self.width or (len(digits) > self.width and digits[0] == "0"):
            return None
        i = int(digits) - self.start
        return i if 0 <= i < self.count and self.username(i) == username else None


class Enrollment:
    __slots__ = ("code", "user_id", "expires", "state")

    def __init__(self, code, user_id, expires):
        self.code = code
        self.user_id = user_id
        self.expires = expires
        self.state = "waiting"


class Account:
    """Everything one test owns. Users are explicit (dict + ordered list) then ranges."""

    def __init__(self, name, admin_licensed, pages_per_min):
        self.name = name
        self.created = int(time.time())
        self.admin_licensed = admin_licensed
        self.pages_per_min = pages_per_min
        self.page_times = collections.deque()
        self.integrations = []
        self.by_name = {}
        self.by_id = {}
        self.order = []
        self.ranges = []
        self.gen_total = 0
        self.removed = []  # sorted generated positions (offset into the ranges' sequence)
        self.enrollments = {}
        self.behavior = {}
        self.user_behavior = {}
        self.faults = []
        self.tx = {}
        self.stats = new_stats()

    # --- users -------------------------------------------------------------------
    def find(self, user_id=None, username=None):
        """A user view (dict with user_id, username, enrolled, ...) or None."""
        if user_id is not None:
            u = self.by_id.get(user_id)
            if u is not None:
                return explicit_view(u)
            return self._find_generated(lambda r: r.index_of_id(user_id))
        if username is not None:
            u = self.by_name.get(username)
            if u is not None:
                return explicit_view(u)
            return self._find_generated(lambda r: r.index_of_name(username))
        return None

    def _find_generated(self, index_in):
        base = 0
        for r in self.ranges:
            i = index_in(r)
            if i is not None:
                pos = base + i
                k = bisect.bisect_left(self.removed, pos)
                if k < len(self.removed) and self.removed[k] == pos:
                    return None
                return generated_view(r, i, self.created, pos)
            base += r.count
        return None

    def add_user(self, username, user_id=None, enrolled=True, email=None, realname=None):
        existing = self.find(username=username)
        if existing is not None:
            return existing["user_id"]
        uid = user_id or digest_id("DU", "%s/%s/%d" % (self.name, username, self.created))
        u = User(uid, username, enrolled, int(time.time()), email, realname)
        self.by_name[username] = u
        self.by_id[uid] = u
        self.order.append(u)
        return uid

    def add_range(self, prefix, start, count, width):
        r = GenRange(len(self.ranges), prefix, start, count, width, self.name)
        self.ranges.append(r)
        self.gen_total += count
        return r

    def remove(self, view):
        if view.get("gen_pos") is not None:
            bisect.insort(self.removed, view["gen_pos"])
            return
        u = self.by_id.pop(view["user_id"], None)
        if u is not None:
            self.by_name.pop(u.username, None)
            self.order.remove(u)

    def total_users(self):
        return len(self.order) + self.gen_total - len(self.removed)

    def page(self, offset, limit):
        """Views of users [offset, offset+limit) in listing order."""
        out = []
        n_exp = len(self.order)
        for u in self.order[offset: offset + limit]:
            out.append(explicit_view(u))
        gen_off = max(0, offset - n_exp)
        pos = self._visible_to_pos(gen_off)
        while len(out) < limit and pos < self.gen_total:
            k = bisect.bisect_left(self.removed, pos) if self.removed else 0
            if k < len(self.removed) and self.removed[k] == pos:
                pos += 1
                continue
            out.append(self._view_at(pos))
            pos += 1
        return out

    def _visible_to_pos(self, visible):
        """The generated position of the visible-th non-removed generated user."""
        pos = visible
        while True:
            k = bisect.bisect_right(self.removed, pos)
            if visible + k == pos:
                return pos
            pos = visible + k

    def _view_at(self, pos):
        base = 0
        for r in self.ranges:
            if pos < base + r.count:
                return generated_view(r, pos - base, self.created, pos)
            base += r.count
        return None

    # --- behaviour -----------------------------------------------------------------
    def behavior_for(self, user_id):
        eff = dict(DEFAULT_BEHAVIOR)
        eff.update(self.behavior)
        eff.update(self.user_behavior.get(user_id, {}))
        return eff

    def add_tx(self, txid, record):
        if len(self.tx) >= MAX_TX:
            self.tx.pop(next(iter(self.tx)))
        self.tx[txid] = record


def explicit_view(u):
    return {"user_id": u.user_id, "username": u.username, "enrolled": u.enrolled,
            "email": u.email, "realname": u.realname, "created": u.created,
            "gen_pos": None}


def generated_view(r, i, created, pos):
    return {"user_id": r.user_id(i), "username": r.username(i), "enrolled": True,
            "email": None, "realname": None, "created": created, "gen_pos": pos}


def new_stats():
    return {"requests": {}, "sig": {"v5": 0, "v2-sha512": 0, "v2-sha1": 0},
            "admin_pages": 0, "throttled": 0}


def count_request(stats, path, status):
    per_path = stats["requests"].setdefault(path, {})
    key = str(status)
    per_path[key] = per_path.get(key, 0) + 1


def phone_of(view):
    uid = view["user_id"]
    return {"phone_id": digest_id("DP", uid), "number": "+15555550100", "extension": "",
            "name": "", "type": "Mobile", "platform": "Apple iOS", "model": "iPhone",
            "activated": True, "sms_passcodes_sent": False, "capabilities": PHONE_CAPS,
            "last_seen": "", "postdelay": None, "predelay": None}


def admin_user(view):
    """The full Admin API user object Duo returns for a user view."""
    name = view["username"]
    return {"user_id": view["user_id"], "username": name,
            "email": view["email"] if view["email"] is not None else name + "@example.test",
            "realname": view["realname"] if view["realname"] is not None else name,
            "firstname": "", "lastname": "", "alias1": None, "alias2": None,
            "alias3": None, "alias4": None, "aliases": {}, "notes": "",
            "status": "active", "is_enrolled": view["enrolled"],
            "phones": [phone_of(view)] if view["enrolled"] else [], "tokens": [],
            "u2ftokens": [], "webauthncredentials": [], "desktoptokens": [],
            "groups": [], "created": view["created"], "last_directory_sync": None,
            "last_login": None}


def plain(text):
    """True if json.dumps writes text as itself between quotes (no escapes)."""
    return text.isascii() and text.isprintable() and '"' not in text and "\\" not in text


# admin_user() of an enrolled user with default email and realname, as json.dumps writes
# it, split at the fields that vary: user_id, username, phone_id, created (in the order
# USER_SLOTS says). Built from admin_user() itself, so the two cannot drift apart.
def _user_template():
    marks = {"user_id": "ZQUIDQZ", "username": "ZQNAMEQZ", "phone_id": "ZQPHONEQZ",
             "created": "987654321987"}
    obj = admin_user({"user_id": marks["user_id"], "username": marks["username"],
                      "enrolled": True, "email": None, "realname": None,
                      "created": int(marks["created"])})
    obj["phones"][0]["phone_id"] = marks["phone_id"]
    text = json.dumps(obj).replace("%", "%%")
    for k, m in marks.items():
        text = text.replace(m, "\0" + k + "\0")
    pieces = text.split("\0")
    fmt = "".join(p if n % 2 == 0 else ("%d" if p == "created" else "%s")
                  for n, p in enumerate(pieces))
    order = tuple(p for n, p in enumerate(pieces) if n % 2 == 1)
    return fmt, order


USER_FMT, USER_SLOTS = _user_template()


def admin_user_json(view):
    """json.dumps(admin_user(view)), from USER_FMT for the common case (a generated or
    default user whose id and name need no escaping)."""
    uid, name = view["user_id"], view["username"]
    if (not view["enrolled"] or view["email"] is not None or view["realname"] is not None
            or not plain(uid) or not plain(name)):
        return json.dumps(admin_user(view))
    vals = {"user_id": uid, "username": name, "phone_id": digest_id("DP", uid),
            "created": view["created"]}
    return USER_FMT % tuple(vals[k] for k in USER_SLOTS)


def auth_device(view):
    p = phone_of(view)
    return {"device": p["phone_id"], "type": "phone", "number": "XXX-XXX-0100",
            "name": "iPhone", "display_name": "iOS (XXX-XXX-0100)",
            "capabilities": PHONE_CAPS}
