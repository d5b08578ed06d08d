"""Exceptions of the duo_workers client.

Every error code of the contract (schemas/README.md, "Error codes") is a class named after
it: the code in CamelCase plus ``Error`` (``stage_not_found`` -> ``StageNotFoundError``).
Each one derives from :class:`TransientJobError` or :class:`PermanentJobError`:

* transient: nothing is wrong with the request or the configuration; the same request,
  sent again later as a new job, may succeed (Duo busy or unreachable, a run already
  going, a push whose outcome was lost);
* permanent: sending the same request again gives the same answer until someone fixes
  the request, the data or the configuration.

Failures on the client's side (no reply in time, the broker refusing or losing a job,
the connection lost under a multi-reply call) derive from :class:`ClientError`, and carry
the same ``transient`` flag. Catch :class:`DuoWorkersError` for all of them.
"""

from typing import Any, Dict, Mapping, Optional, Type

__all__ = [
    "AdminApiNotConfiguredError",
    "ClientClosedError",
    "ClientError",
    "ConnectionLostError",
    "DeviceExistsError",
    "DeviceNotFoundError",
    "DuoBadIntegrationKeyError",
    "DuoBadResponseError",
    "DuoBadSignatureError",
    "DuoCancelledError",
    "DuoCircuitOpenError",
    "DuoForbiddenError",
    "DuoIntegrationDisabledError",
    "DuoInvalidRequestError",
    "DuoLocalErrorError",
    "DuoMissingCredentialsError",
    "DuoNetworkError",
    "DuoNotFoundError",
    "DuoRateLimitedError",
    "DuoStageBusyError",
    "DuoTimeoutError",
    "DuoTimestampError",
    "DuoTlsError",
    "DuoUnavailableError",
    "DuoUserDeniedError",
    "DuoUserExistsError",
    "DuoUserLockedOutError",
    "DuoUserNotFoundError",
    "DuoUserUnverifiedError",
    "DuoWorkersError",
    "ERRORS",
    "EnrollOutcomeUnknownError",
    "EnrollmentNotFoundError",
    "ImportAlreadyRunningError",
    "ImportPageFailedError",
    "ImportRunNotFoundError",
    "InvalidMessageError",
    "InvalidParameterError",
    "JobError",
    "JobNotRoutedError",
    "JobRefusedError",
    "JobTimeoutError",
    "LicenseRequiredError",
    "MessageTooLargeError",
    "NoDeviceError",
    "PermanentJobError",
    "PushOutcomeUnknownError",
    "RetriesExhaustedError",
    "SchemaInvalidError",
    "StageMisconfiguredError",
    "StageNotFoundError",
    "StageSecretUnreadableError",
    "TransientJobError",
    "UnknownJobTypeError",
    "UserInactiveError",
    "UserNotFoundError",
    "error_class",
    "from_reply",
]


class DuoWorkersError(Exception):
    """Base of every exception this package raises."""

    #: True when the same request may succeed if sent again later (as a new job).
    transient: bool = False
    #: The contract's error code (a client-side code for ClientError subclasses).
    code: str = ""

    def __init__(self, message: str, *, job_id: Optional[str] = None,
                 duo_code: Optional[int] = None, run_id: Optional[str] = None,
                 code: Optional[str] = None, reason: Optional[str] = None,
                 retry_after_secs: Optional[int] = None) -> None:
        super().__init__(message)
        self.message = message
        self.job_id = job_id
        self.duo_code = duo_code
        self.run_id = run_id
        #: duo_unavailable without a call to Duo: "circuit_open" (the stage's Duo host is
        #: failing) or "stage_busy" (the stage had its most calls in flight); else None.
        self.reason = reason
        #: With a reason: when trying again may succeed.
        self.retry_after_secs = retry_after_secs
        if code is not None:
            self.code = code

    def __str__(self) -> str:
        extra = ""
        if self.duo_code is not None:
            extra += " duo_code=%d" % self.duo_code
        if self.run_id:
            extra += " run_id=%s" % self.run_id
        if self.job_id:
            extra += " job_id=%s" % self.job_id
        return "%s: %s%s" % (self.code or type(self).__name__, self.message, extra)


class JobError(DuoWorkersError):
    """A worker answered the job with ``status: "error"``. An error code this version of
    the package does not know (a newer contract) is raised as this class itself."""


class TransientJobError(JobError):
    """An error reply worth trying again later with a new job."""

    transient = True


class PermanentJobError(JobError):
    """An error reply that repeats until the request or the configuration is fixed."""

    transient = False


class ClientError(DuoWorkersError):
    """A failure on the client's side of the broker."""


class JobTimeoutError(ClientError, TimeoutError):
    """No (final) reply within the call's timeout. The job may still run and its reply
    still come; it is dropped. Sending the request again with the same ``job_id`` gets the
    stored reply once the job is done (never a second run)."""

    transient = True
    code = "client_timeout"


class ConnectionLostError(ClientError, ConnectionError):
    """The broker connection was lost under a call that cannot be resumed: an
    ``import_auto`` whose later replies were going to the lost reply queue (the run goes
    on; ``run_id`` names it when known), or a client closed with calls in flight."""

    transient = True
    code = "connection_lost"


class JobNotRoutedError(ClientError):
    """The broker returned the job as unroutable (mandatory): no queue is bound for its
    routing key under this prefix - the workers never declared their topology, or
    ``prefix`` is wrong. Nothing was queued."""

    transient = False
    code = "not_routed"


class JobRefusedError(ClientError):
    """The broker refused the job (a negative confirm, or the channel was closed by the
    broker for it, e.g. no permission to write the jobs exchange)."""

    transient = False
    code = "refused"


class ClientClosedError(ClientError):
    """A call on a closed client."""

    transient = False
    code = "client_closed"


# ---- one class per contract error code (schemas/README.md, "Error codes") -------------

class InvalidMessageError(PermanentJobError):
    code = "invalid_message"


class MessageTooLargeError(PermanentJobError):
    code = "message_too_large"


class UnknownJobTypeError(PermanentJobError):
    code = "unknown_job_type"


class SchemaInvalidError(PermanentJobError):
    code = "schema_invalid"


class StageNotFoundError(PermanentJobError):
    code = "stage_not_found"


class UserNotFoundError(PermanentJobError):
    code = "user_not_found"


class DeviceNotFoundError(PermanentJobError):
    code = "device_not_found"


class DeviceExistsError(PermanentJobError):
    code = "device_exists"


class DuoUserExistsError(PermanentJobError):
    code = "duo_user_exists"


class AdminApiNotConfiguredError(PermanentJobError):
    code = "admin_api_not_configured"


class LicenseRequiredError(PermanentJobError):
    code = "license_required"


class DuoRateLimitedError(TransientJobError):
    code = "duo_rate_limited"


class DuoUnavailableError(TransientJobError):
    code = "duo_unavailable"


class DuoTimeoutError(TransientJobError):
    code = "duo_timeout"


class DuoNetworkError(TransientJobError):
    code = "duo_network"


class DuoCancelledError(TransientJobError):
    code = "duo_cancelled"


class DuoInvalidRequestError(PermanentJobError):
    code = "duo_invalid_request"


class DuoNotFoundError(PermanentJobError):
    code = "duo_not_found"


class DuoBadResponseError(PermanentJobError):
    code = "duo_bad_response"


class DuoLocalErrorError(PermanentJobError):
    code = "duo_local_error"


class UserInactiveError(PermanentJobError):
    code = "user_inactive"


class EnrollmentNotFoundError(PermanentJobError):
    code = "enrollment_not_found"


class NoDeviceError(PermanentJobError):
    code = "no_device"


class DuoUserNotFoundError(PermanentJobError):
    code = "duo_user_not_found"


class DuoUserDeniedError(PermanentJobError):
    code = "duo_user_denied"


class DuoUserUnverifiedError(PermanentJobError):
    code = "duo_user_unverified"


class DuoIntegrationDisabledError(PermanentJobError):
    code = "duo_integration_disabled"


class DuoForbiddenError(PermanentJobError):
    code = "duo_forbidden"


class DuoBadSignatureError(PermanentJobError):
    code = "duo_bad_signature"


class DuoBadIntegrationKeyError(PermanentJobError):
    code = "duo_bad_integration_key"


class DuoTimestampError(PermanentJobError):
    code = "duo_timestamp"


class DuoMissingCredentialsError(PermanentJobError):
    code = "duo_missing_credentials"


class DuoTlsError(PermanentJobError):
    code = "duo_tls"


class StageSecretUnreadableError(PermanentJobError):
    code = "stage_secret_unreadable"


class StageMisconfiguredError(PermanentJobError):
    code = "stage_misconfigured"


class ImportAlreadyRunningError(TransientJobError):
    code = "import_already_running"


class ImportPageFailedError(PermanentJobError):
    code = "import_page_failed"


class ImportRunNotFoundError(PermanentJobError):
    code = "import_run_not_found"


class DuoUserLockedOutError(PermanentJobError):
    code = "duo_user_locked_out"


class PushOutcomeUnknownError(TransientJobError):
    code = "push_outcome_unknown"


class EnrollOutcomeUnknownError(TransientJobError):
    code = "enroll_outcome_unknown"


class DuoCircuitOpenError(TransientJobError):
    """Never a reply's code (a metric's): replies say duo_unavailable with a reason."""

    code = "duo_circuit_open"


class DuoStageBusyError(TransientJobError):
    """Never a reply's code (a metric's): replies say duo_unavailable with a reason."""

    code = "duo_stage_busy"


class InvalidParameterError(PermanentJobError):
    code = "invalid_parameter"


class RetriesExhaustedError(TransientJobError):
    code = "retries_exhausted"


#: Every contract error code and its class.
ERRORS: Dict[str, Type[JobError]] = {
    cls.code: cls for cls in (TransientJobError.__subclasses__() + PermanentJobError.__subclasses__())
}


def error_class(code: str) -> Type[JobError]:
    """The class of a contract error code; :class:`JobError` for an unknown code."""
    return ERRORS.get(code, JobError)


def from_reply(reply: Mapping[str, Any]) -> JobError:
    """The exception for an error reply body (``status: "error"``)."""
    err = reply.get("error") or {}
    code = str(err.get("code") or "")
    cls = error_class(code)
    duo_code = err.get("duo_code")
    run_id = err.get("run_id")
    reason = err.get("reason")
    after = err.get("retry_after_secs")
    return cls(str(err.get("message") or ""), job_id=reply.get("job_id") or None,
               duo_code=duo_code if isinstance(duo_code, int) else None,
               run_id=run_id if isinstance(run_id, str) else None,
               code=code if cls is JobError else None,
               reason=reason if isinstance(reason, str) else None,
               retry_after_secs=after if isinstance(after, int) and not isinstance(after, bool)
               else None)
