"""What the client takes from the message contract (schemas/README.md): job types, their
routing keys, and how long to wait for a reply. tests/test_contract_tables.py holds these
to the README's tables."""

from typing import Dict

#: AMQP ``type`` of each job -> routing key on ``<prefix>.jobs``.
ROUTING_KEYS: Dict[str, str] = {
    "enroll.begin": "enroll",
    "enroll.status": "enroll",
    "auth": "auth",
    "import.manual": "import",
    "import.auto": "import",
}

#: Default timeout (seconds) of one call per job type: schemas/README.md, "How long to
#: wait for a reply", column "the duo_workers client waits". For ``import.auto`` it
#: bounds the wait for each reply (the first, every progress reply, the final one).
TIMEOUTS: Dict[str, float] = {
    "enroll.begin": 120.0,
    "enroll.status": 120.0,
    "import.manual": 120.0,
    "auth": 90.0,
    "import.auto": 120.0,
}

CONTENT_TYPE = "application/msgpack"
DEFAULT_PREFIX = "duo"
