"""duo_workers - the Python client of the Duo workers' message contract
(schemas/README.md): :class:`Client` (blocking, pika) and :class:`AsyncClient` (asyncio,
aio-pika), one method per job type, typed results, one exception class per error code."""

from . import errors
from ._contract import ROUTING_KEYS, TIMEOUTS
from .aio import AsyncClient, AsyncImportRun
from .client import Client, ImportRun
from .errors import *  # noqa: F401,F403 - every exception class, ERRORS, error_class
from .results import (AuthResult, Enrollment, EnrollmentStatus, ImportCounts, ImportedDevice,
                      ImportProgress)

__version__ = "0.1.0"

__all__ = [
    "AsyncClient", "AsyncImportRun", "AuthResult", "Client", "Enrollment", "EnrollmentStatus",
    "ImportCounts", "ImportProgress", "ImportRun", "ImportedDevice", "ROUTING_KEYS",
    "TIMEOUTS", "errors",
] + errors.__all__
