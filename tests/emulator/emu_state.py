"""emu_state.py - the emulator's state: accounts, their integrations, users (status,
aliases, phones, groups), enrollments, behaviours, settings (new-user policy, short pages,
rate limits), scheduled listing mutations, faults, async transactions, pushes and
statistics.

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
MAX_PUSH_LOG = 20000
USER_STATUSES = ("active", "bypass", "disabled", "locked out")
NEW_USER_POLICIES = ("enroll", "allow", "deny")


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

    __slots__ = ("user_id", "username", "enrolled", "email", "realname", "created",
                 "status", "aliases", "phones", "groups")

    def __init__(self, user_id, username, enrolled, created, email=None, realname=None):
        self.user_id = user_id
        self.username = username
        self.enrolled = enrolled
        self.created = created
        self.email = email
        self.realname = realname
        self.status = "active"
        self.aliases = {}     # alias1..alias8 -> name
        self.phones = None    # None: one default phone when enrolled; else a list of caps
        self.groups = None    # None: no groups; else a list of group names


class GenRange:
    """count users named prefix + zero-padded (start + i); ids 'DUG' rr iiiiiiii hhhhhhh."""

    def __init__(self, number, prefix, start, count, width, salt, extra=None):
        self.extra = extra or {}  # {"status", "phones": [caps...], "groups": [names]}
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
        self.by_alias = {}
        self.new_user_policy = "enroll"
        self.page_cap = 0                      # 0: pages are as long as `limit`
        self.page_sizes = collections.deque()  # scripted sizes of the next pages
        self.limits = {}                       # kind -> {"per_min", "retry_after", "times"}
        if pages_per_min > 0:
            self.set_limit("pages", pages_per_min, None)
        self.schedules = []                    # [{"after_pages": n, "actions": {...}}]
        self.pushes = collections.deque(maxlen=MAX_PUSH_LOG)
        self.push_total = 0
        self.push_by_user = {}
        self.push_seq = 0

    # --- users -------------------------------------------------------------------
    def find(self, user_id=None, username=None):
        """A user view (dict with user_id, username, enrolled, ...) or None."""
        if user_id is not None:
            u = self.by_id.get(user_id)
            if u is not None:
                return explicit_view(u)
            return self._find_generated(lambda r: r.index_of_id(user_id))
        if username is not None:
            u = self.by_name.get(username) or self.by_alias.get(username)
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

    def add_user(self, username, user_id=None, enrolled=True, email=None, realname=None,
                 at=None):
        """Adds an explicit user (at listing position `at` among explicit users, default
        last); returns its id, or the existing id if the username (or alias) exists."""
        existing = self.find(username=username)
        if existing is not None:
            return existing["user_id"]
        uid = user_id or digest_id("DU", "%s/%s/%d" % (self.name, username, self.created))
        u = User(uid, username, enrolled, int(time.time()), email, realname)
        self.by_name[username] = u
        self.by_id[uid] = u
        if at is None or at >= len(self.order):
            self.order.append(u)
        else:
            self.order.insert(max(0, at), u)
        return uid

    def set_aliases(self, u, aliases):
        for name in u.aliases.values():
            if self.by_alias.get(name) is u:
                del self.by_alias[name]
        u.aliases = dict(aliases)
        for name in u.aliases.values():
            self.by_alias[name] = u

    def add_range(self, prefix, start, count, width, extra=None):
        r = GenRange(len(self.ranges), prefix, start, count, width, self.name, extra)
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
            self.set_aliases(u, {})
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

    def all_explicit(self):
        return [explicit_view(u) for u in self.order]

    def next_page_size(self, limit):
        """How many users the next listing page holds: the next scripted size if any,
        else `limit` capped by page_cap (Duo may return fewer than asked)."""
        size = limit
        if self.page_sizes:
            size = min(size, self.page_sizes.popleft())
        elif self.page_cap > 0:
            size = min(size, self.page_cap)
        return max(0, size)

    def page_served(self):
        """Counts one served listing page towards the scheduled mutations and applies
        those that are due (after the page was built, so the next page sees them)."""
        due = []
        for sch in self.schedules:
            sch["after_pages"] -= 1
            if sch["after_pages"] <= 0:
                due.append(sch)
        for sch in due:
            self.schedules.remove(sch)
            sch["apply"]()

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

    # --- settings, rate limits, pushes -----------------------------------------------
    def set_limit(self, kind, per_min, retry_after):
        if per_min <= 0:
            self.limits.pop(kind, None)
            return
        self.limits[kind] = {"per_min": per_min, "retry_after": retry_after,
                             "times": collections.deque()}

    def over_limit(self, kind):
        """The limit a call of `kind` exceeds now (sliding 60 s window), or None; a call
        that is not refused is counted."""
        lim = self.limits.get(kind)
        if lim is None:
            return None
        now = time.monotonic()
        times = lim["times"]
        while times and now - times[0] >= 60.0:
            times.popleft()
        if len(times) >= lim["per_min"]:
            self.stats["throttled"] += 1
            by = self.stats["throttled_by"]
            by[kind] = by.get(kind, 0) + 1
            return lim
        times.append(now)
        return None

    def record_push(self, view, factor, params, txid):
        self.push_seq += 1
        self.push_total += 1
        uid = view["user_id"]
        self.push_by_user[uid] = self.push_by_user.get(uid, 0) + 1
        self.pushes.append({"seq": self.push_seq, "user_id": uid,
                            "username": view["username"], "factor": factor,
                            "device": params.get("device") or "auto", "txid": txid,
                            "async": txid is not None, "time": time.time(),
                            "type": params.get("type"),
                            "display_username": params.get("display_username"),
                            "pushinfo": params.get("pushinfo")})


def explicit_view(u):
    return {"user_id": u.user_id, "username": u.username, "enrolled": u.enrolled,
            "email": u.email, "realname": u.realname, "created": u.created,
            "gen_pos": None, "status": u.status, "aliases": u.aliases,
            "phones": u.phones, "groups": u.groups}


def generated_view(r, i, created, pos):
    ex = r.extra
    return {"user_id": r.user_id(i), "username": r.username(i), "enrolled": True,
            "email": None, "realname": None, "created": created, "gen_pos": pos,
            "status": ex.get("status", "active"), "aliases": {},
            "phones": ex.get("phones"), "groups": ex.get("groups")}


def new_stats():
    return {"requests": {}, "sig": {"v5": 0, "v2-sha512": 0, "v2-sha1": 0},
            "admin_pages": 0, "throttled": 0, "throttled_by": {}, "enrollments": 0}


def count_request(stats, path, status):
    per_path = stats["requests"].setdefault(path, {})
    key = str(status)
    per_path[key] = per_path.get(key, 0) + 1


def phone_of(view, k=0, caps=None):
    """The k-th phone of a user (k = 0 keeps the id every earlier version gave)."""
    uid = view["user_id"]
    pid = digest_id("DP", uid) if k == 0 else digest_id("DP", "%s/%d" % (uid, k))
    return {"phone_id": pid, "number": "+1555555%04d" % (100 + k), "extension": "",
            "name": "", "type": "Mobile", "platform": "Apple iOS", "model": "iPhone",
            "activated": True, "sms_passcodes_sent": False,
            "capabilities": PHONE_CAPS if caps is None else list(caps),
            "last_seen": "", "postdelay": None, "predelay": None}


def phones_of(view):
    """All phones of a user view: none unless enrolled; one default phone unless the
    user's `phones` says otherwise (a list of capability lists)."""
    if not view["enrolled"]:
        return []
    spec = view.get("phones")
    if spec is None:
        return [phone_of(view)]
    return [phone_of(view, k, caps) for k, caps in enumerate(spec)]


def groups_of(view):
    return [{"group_id": digest_id("DG", name), "name": name, "desc": "",
             "status": "Active", "push_enabled": True, "sms_enabled": True,
             "voice_enabled": True, "mobile_otp_enabled": True}
            for name in view.get("groups") or []]


def admin_user(view):
    """The full Admin API user object Duo returns for a user view."""
    name = view["username"]
    aliases = view.get("aliases") or {}
    phones = phones_of(view)
    return {"user_id": view["user_id"], "username": name,
            "email": view["email"] if view["email"] is not None else name + "@example.test",
            "realname": view["realname"] if view["realname"] is not None else name,
            "firstname": "", "lastname": "", "alias1": aliases.get("alias1"),
            "alias2": aliases.get("alias2"), "alias3": aliases.get("alias3"),
            "alias4": aliases.get("alias4"), "aliases": dict(aliases), "notes": "",
            "status": view.get("status", "active"), "is_enrolled": bool(phones),
            "phones": phones, "tokens": [],
            "u2ftokens": [], "webauthncredentials": [], "desktoptokens": [],
            "groups": groups_of(view), "created": view["created"],
            "last_directory_sync": None, "last_login": None}


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
            or view.get("status", "active") != "active" or view.get("aliases")
            or view.get("phones") is not None or view.get("groups")
            or not plain(uid) or not plain(name)):
        return json.dumps(admin_user(view))
    vals = {"user_id": uid, "username": name, "phone_id": digest_id("DP", uid),
            "created": view["created"]}
    return USER_FMT % tuple(vals[k] for k in USER_SLOTS)


def auth_devices(view):
    """The devices preauth lists: every phone of the user, with its capabilities."""
    out = []
    for p in phones_of(view):
        masked = "XXX-XXX-" + p["number"][-4:]
        out.append({"device": p["phone_id"], "type": "phone", "number": masked,
                    "name": "iPhone", "display_name": "iOS (%s)" % masked,
                    "capabilities": p["capabilities"]})
    return out
