"""Typed results of the job types (schemas/README.md, "Results": the ok fields)."""

from dataclasses import dataclass
from typing import Any, List, Literal, Mapping, Optional

AuthOutcome = Literal["allow", "deny", "timeout", "rate_limited"]
EnrollmentState = Literal["waiting", "invalid", "success"]
ImportState = Literal["running", "done", "failed"]


def _opt_str(body: Mapping[str, Any], key: str) -> Optional[str]:
    val = body.get(key)
    return val if isinstance(val, str) else None


def _opt_int(body: Mapping[str, Any], key: str) -> Optional[int]:
    val = body.get(key)
    return val if isinstance(val, int) and not isinstance(val, bool) else None


@dataclass(frozen=True)
class Enrollment:
    """Reply of ``enroll.begin``: show the QR code (``activation_barcode``) or the link."""

    job_id: str
    enrollment_id: str
    activation_barcode: str
    activation_code: str
    activation_url: Optional[str]
    expires_at: int
    stage_name: str

    @classmethod
    def from_reply(cls, body: Mapping[str, Any]) -> "Enrollment":
        return cls(job_id=body["job_id"], enrollment_id=body["enrollment_id"],
                   activation_barcode=body["activation_barcode"],
                   activation_code=body["activation_code"],
                   activation_url=_opt_str(body, "activation_url"),
                   expires_at=body["expires_at"], stage_name=body["stage_name"])


@dataclass(frozen=True)
class EnrollmentStatus:
    """Reply of ``enroll.status``; ``device_id`` is set once the enrollment succeeded."""

    job_id: str
    enrollment_status: EnrollmentState
    device_id: Optional[str]

    @property
    def succeeded(self) -> bool:
        return self.enrollment_status == "success"

    @classmethod
    def from_reply(cls, body: Mapping[str, Any]) -> "EnrollmentStatus":
        return cls(job_id=body["job_id"], enrollment_status=body["enrollment_status"],
                   device_id=_opt_str(body, "device_id"))


@dataclass(frozen=True)
class AuthResult:
    """Reply of ``auth``. Only :attr:`allowed` (``result == "allow"``) means the user is
    authenticated; a wrong passcode is ``deny``, not an exception."""

    job_id: str
    result: AuthOutcome
    device_id: str
    bypass: bool
    duo_status: Optional[str]
    duo_status_msg: Optional[str]
    retry_after_secs: Optional[int]

    @property
    def allowed(self) -> bool:
        return self.result == "allow"

    @classmethod
    def from_reply(cls, body: Mapping[str, Any]) -> "AuthResult":
        return cls(job_id=body["job_id"], result=body["result"],
                   device_id=body["device_id"], bypass=body.get("bypass") is True,
                   duo_status=_opt_str(body, "duo_status"),
                   duo_status_msg=_opt_str(body, "duo_status_msg"),
                   retry_after_secs=_opt_int(body, "retry_after_secs"))


@dataclass(frozen=True)
class ImportedDevice:
    """Reply of ``import.manual``."""

    job_id: str
    device_id: str
    duo_user_id: str
    resolved_from: Literal["user_id", "username"]

    @classmethod
    def from_reply(cls, body: Mapping[str, Any]) -> "ImportedDevice":
        return cls(job_id=body["job_id"], device_id=body["device_id"],
                   duo_user_id=body["duo_user_id"], resolved_from=body["resolved_from"])


@dataclass(frozen=True)
class ImportCounts:
    pages_total: int
    pages_done: int
    created: int
    existing: int
    unknown_user: int
    errors: int
    seen: int
    total_objects: Optional[int]
    total_at_end: Optional[int]

    @classmethod
    def from_reply(cls, c: Mapping[str, Any]) -> "ImportCounts":
        return cls(pages_total=c["pages_total"], pages_done=c["pages_done"],
                   created=c["created"], existing=c["existing"],
                   unknown_user=c["unknown_user"], errors=c["errors"],
                   seen=c.get("seen", c["created"] + c["existing"] + c["unknown_user"]),
                   total_objects=_opt_int(c, "total_objects"),
                   total_at_end=_opt_int(c, "total_at_end"))


@dataclass(frozen=True)
class ImportProgress:
    """One reply of ``import.auto``: the first, a progress reply, or the final one
    (:attr:`final`, the last item the iterator yields)."""

    job_id: str
    message_id: Optional[str]
    run_id: str
    state: ImportState
    progress: bool
    counts: ImportCounts
    dry_run: Optional[bool]
    page_errors: Optional[List[Any]]

    @property
    def final(self) -> bool:
        return not self.progress

    @classmethod
    def from_reply(cls, body: Mapping[str, Any],
                   message_id: Optional[str] = None) -> "ImportProgress":
        errs = body.get("page_errors")
        dry = body.get("dry_run")
        return cls(job_id=body["job_id"], message_id=message_id, run_id=body["run_id"],
                   state=body["state"], progress=body.get("progress") is True,
                   counts=ImportCounts.from_reply(body["counts"]),
                   dry_run=dry if isinstance(dry, bool) else None,
                   page_errors=list(errs) if isinstance(errs, list) else None)
