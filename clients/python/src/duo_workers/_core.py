"""What the blocking and the asyncio client share: job bodies, the bookkeeping of one call
(correlation, the reply rules of schemas/README.md "Several replies per job"), reply
decoding into results or exceptions, and the broker URL list."""

import itertools
import os
import time
import urllib.parse
import uuid
from typing import Any, Callable, Dict, List, Literal, Mapping, Optional, Set, Union

import msgpack

from . import errors
from ._contract import DEFAULT_PREFIX, ROUTING_KEYS, TIMEOUTS
from .results import AuthResult, Enrollment, EnrollmentStatus, ImportedDevice, ImportProgress

Factor = Literal["auto", "push", "passcode", "phone", "sms"]
Result = Union[Enrollment, EnrollmentStatus, AuthResult, ImportedDevice]

_PARSERS: Dict[str, Callable[[Mapping[str, Any]], Result]] = {
    "enroll.begin": Enrollment.from_reply,
    "enroll.status": EnrollmentStatus.from_reply,
    "auth": AuthResult.from_reply,
    "import.manual": ImportedDevice.from_reply,
}


def broker_urls(url: Union[None, str, List[str]]) -> List[str]:
    """The URL list: a list, or one string with comma-separated URLs (as the workers'
    AMQP_URL), or $AMQP_URL when None."""
    if url is None:
        url = os.environ.get("AMQP_URL")
        if not url:
            raise ValueError("no broker URL: pass url= or set AMQP_URL")
    urls = [u.strip() for u in (url.split(",") if isinstance(url, str) else url)]
    urls = [u for u in urls if u]
    if not urls:
        raise ValueError("empty broker URL list")
    return urls


def url_user(url: str) -> str:
    """The broker user a URL logs in as (RabbitMQ's default when none is given), which the
    client sends as the jobs' user_id property (the contract recommends it)."""
    user = urllib.parse.urlsplit(url).username
    return urllib.parse.unquote(user) if user else "guest"


def prefix_of(prefix: Optional[str]) -> str:
    return prefix or os.environ.get("MQ_PREFIX") or DEFAULT_PREFIX


def pack(body: Mapping[str, Any]) -> bytes:
    raw: bytes = msgpack.packb(dict(body), use_bin_type=True)
    return raw


def unpack(raw: bytes) -> Any:
    return msgpack.unpackb(raw, raw=False)


def _put(body: Dict[str, Any], key: str, val: Any) -> None:
    if val is not None:
        body[key] = val


def enroll_begin_body(stage_uuid: str, username: str,
                      valid_secs: Optional[int]) -> Dict[str, Any]:
    body: Dict[str, Any] = {"stage_uuid": stage_uuid, "username": username}
    _put(body, "valid_secs", valid_secs)
    return body


def enroll_status_body(stage_uuid: str, enrollment_id: str) -> Dict[str, Any]:
    return {"stage_uuid": stage_uuid, "enrollment_id": enrollment_id}


def auth_body(stage_uuid: Optional[str], username: Optional[str], device_id: Optional[str],
              factor: Optional[str], passcode: Optional[str], device: Optional[str],
              ipaddr: Optional[str], push_type: Optional[str],
              display_username: Optional[str],
              pushinfo: Optional[Mapping[str, str]]) -> Dict[str, Any]:
    if device_id is None and (stage_uuid is None or username is None):
        raise ValueError("auth needs stage_uuid and username, or device_id")
    if device_id is not None and (stage_uuid is not None or username is not None):
        raise ValueError("auth takes stage_uuid and username, or device_id, not both")
    if factor == "passcode" and not passcode:
        raise ValueError("factor 'passcode' needs passcode")
    body: Dict[str, Any] = {}
    _put(body, "stage_uuid", stage_uuid)
    _put(body, "username", username)
    _put(body, "device_id", device_id)
    _put(body, "factor", factor)
    _put(body, "passcode", passcode)
    _put(body, "device", device)
    _put(body, "ipaddr", ipaddr)
    _put(body, "type", push_type)
    _put(body, "display_username", display_username)
    if pushinfo is not None:
        body["pushinfo"] = dict(pushinfo)
    return body


def import_manual_body(stage_uuid: str, duo_user_id: str, username: str) -> Dict[str, Any]:
    return {"stage_uuid": stage_uuid, "duo_user_id": duo_user_id, "username": username}


def import_auto_body(stage_uuid: str, page_size: Optional[int], pages_per_min: Optional[int],
                     dry_run: Optional[bool]) -> Dict[str, Any]:
    body: Dict[str, Any] = {"stage_uuid": stage_uuid}
    _put(body, "page_size", page_size)
    _put(body, "pages_per_min", pages_per_min)
    _put(body, "dry_run", dry_run)
    return body


_counter = itertools.count()


class Call:
    """One job in flight: what to publish, and which replies it still takes.

    The reply rules (schemas/README.md): replies are matched by correlation_id (the client
    sets it to the job id); a reply whose message_id was handled already is a duplicate
    and dropped (rule 3); a reply without ``progress: true`` is the last (rule 2), and
    progress replies after it, or older than one already taken (``counts.pages_done``),
    are dropped."""

    def __init__(self, job_type: str, body: Mapping[str, Any], job_id: Optional[str],
                 timeout: Optional[float]) -> None:
        if job_type not in ROUTING_KEYS:
            raise ValueError("unknown job type %r" % job_type)
        self.job_type = job_type
        self.job_id = job_id or str(uuid.uuid4())
        if not 1 <= len(self.job_id.encode()) <= 255:
            raise ValueError("job_id must be 1..255 bytes")
        self.routing_key = ROUTING_KEYS[job_type]
        self.raw = pack(body)
        self.multi = job_type == "import.auto"
        self.timeout = TIMEOUTS[job_type] if timeout is None else float(timeout)
        self.started = time.monotonic()
        self.seq = next(_counter)
        self.seen: Set[str] = set()
        self.pages_done = -1
        self.finished = False
        self.gen: Optional[int] = None  # the connection generation it was published on
        self.run_id: Optional[str] = None

    def accept(self, message_id: Optional[str], body: Any) -> bool:
        """True when the reply is new and belongs to this call."""
        if self.finished or not isinstance(body, dict):
            return False
        if body.get("job_id") not in (self.job_id, None):
            return False
        if message_id is not None:
            if message_id in self.seen:
                return False
            self.seen.add(message_id)
        if self.multi and body.get("progress") is True:
            counts = body.get("counts")
            done = counts.get("pages_done", 0) if isinstance(counts, dict) else 0
            if isinstance(done, int) and self.pages_done >= 0 and done < self.pages_done:
                return False  # an older progress reply from another worker
            if isinstance(done, int):
                self.pages_done = max(self.pages_done, done)
        else:
            self.finished = True
        if isinstance(body.get("run_id"), str):
            self.run_id = body["run_id"]
        return True


def result_of(job_type: str, body: Mapping[str, Any]) -> Result:
    """The typed result of a single-reply job, or raises its error."""
    if body.get("status") != "ok":
        raise errors.from_reply(body)
    return _PARSERS[job_type](body)


def progress_of(body: Mapping[str, Any], message_id: Optional[str]) -> ImportProgress:
    if body.get("status") != "ok":
        raise errors.from_reply(body)
    return ImportProgress.from_reply(body, message_id)


def timeout_error(call: Call, waited: float, why: str = "") -> errors.JobTimeoutError:
    what = "reply" if not call.multi or not call.seen else "next reply"
    msg = "no %s to %s job %s within %.1f s" % (what, call.job_type, call.job_id, waited)
    if why:
        msg += " (%s)" % why
    return errors.JobTimeoutError(msg, job_id=call.job_id, run_id=call.run_id)


def lost_error(call: Call, why: str) -> errors.ConnectionLostError:
    msg = ("the broker connection was lost (%s) while import.auto job %s waited for its "
           "replies, which go to the lost reply queue" % (why, call.job_id))
    if call.run_id:
        msg += "; run %s goes on (duoctl status follows it)" % call.run_id
    else:
        msg += ("; no reply had come, so the job may not have reached a worker: sending it "
                "again with the same job_id is safe (a job that ran answers its first reply)")
    return errors.ConnectionLostError(msg, job_id=call.job_id, run_id=call.run_id)
