"""Fixtures of the client's tests: the live stack that tests/e2e/test_client_py*.c builds
(tests/support/tl_pytest.c runs pytest with its environment) - broker URL and MQ_PREFIX
of the stack's workers, a Duo stage on the emulator, duoctl, the emulator's control API.

Tests marked ``stack`` fail (they are not skipped) when that environment is missing, so a
suite that runs them without a stack cannot pass by accident."""

import json
import os
import secrets
import ssl
import subprocess
import sys
import urllib.request
import uuid
from typing import Any, Dict, Iterator, Optional, Tuple

import pytest

HERE = os.path.dirname(os.path.abspath(__file__))
# The tests import the package that is installed (tl_pytest installs it into a virtual
# environment); from a bare checkout, the source tree.
try:
    import duo_workers  # noqa: F401
except ImportError:  # pragma: no cover - running from the source tree
    sys.path.insert(0, os.path.join(HERE, "..", "src"))


def source_dir() -> str:
    return os.environ.get("DUO_SOURCE_DIR") or os.path.abspath(os.path.join(HERE, "..", "..", ".."))


def need(name: str) -> str:
    val = os.environ.get(name)
    if not val:
        pytest.fail("%s is not set: run the suite through tests/e2e/test_client_py (CTest), "
                    "which builds the stack" % name)
    return val


class Stack:
    """The stack of the test run: names from the environment, helpers to set up data."""

    def __init__(self) -> None:
        self.url = need("AMQP_URL")
        self.prefix = need("MQ_PREFIX")
        self.stage = need("DUO_STAGE_UUID")
        self.account = need("EMU_ACCOUNT")
        self.auth_ikey = need("EMU_AUTH_IKEY")
        self.emu_url = need("DUO_EMU_URL")
        self.emu_host = need("DUO_EMU_HOST")
        self.ca_file = need("DUO_CA_FILE")
        self.bin_dir = need("DUO_BIN_DIR")
        self.ikeys: Dict[str, str] = {}  # stage uuid -> its Auth API integration key

    def emu(self, path: str, body: Optional[Dict[str, Any]] = None) -> Any:
        ctx = ssl.create_default_context(cafile=self.ca_file)
        data = json.dumps(body).encode() if body is not None else None
        req = urllib.request.Request(self.emu_url + path, data=data,
                                     headers={"Content-Type": "application/json"},
                                     method="POST" if body is not None else "GET")
        with urllib.request.urlopen(req, context=ctx, timeout=20) as resp:
            return json.loads(resp.read())["response"]

    def duoctl(self, *args: str) -> str:
        out = subprocess.run([os.path.join(self.bin_dir, "duoctl")] + list(args),
                             capture_output=True, text=True, timeout=60)
        if out.returncode != 0:
            raise RuntimeError("duoctl %s: %s" % (" ".join(args[:2]), out.stderr.strip()[-400:]))
        return out.stdout

    def user(self, name: Optional[str] = None, inactive: bool = False) -> str:
        name = name or "u" + secrets.token_hex(5)
        args = ["user", "upsert", "--username", name]
        if inactive:
            args.append("--inactive")
        self.duoctl(*args)
        return name

    def new_stage(self, account_opts: Optional[Dict[str, Any]] = None, admin: bool = True,
                  secret: Optional[str] = None) -> Tuple[str, str]:
        """A fresh emulator account and a stage on it: (stage uuid, account name)."""
        name = "py" + secrets.token_hex(6)
        ikey, skey = "DI" + secrets.token_hex(9).upper(), secrets.token_hex(20)
        aikey, askey = "DA" + secrets.token_hex(9).upper(), secrets.token_hex(20)
        body: Dict[str, Any] = {"account": name, "integrations": [
            {"ikey": ikey, "skey": skey, "type": "auth"},
            {"ikey": aikey, "skey": askey, "type": "admin"}]}
        body.update(account_opts or {})
        self.emu("/_emu/account", body)
        args = ["stage", "create", "--name", "stage-" + name, "--api-hostname", self.emu_host,
                "--client-id", ikey, "--client-secret", secret or skey]
        if admin:
            args += ["--admin-integration-key", aikey, "--admin-secret-key", askey]
        stage = json.loads(self.duoctl(*args))["uuid"]
        self.ikeys[stage] = ikey
        return stage, name

    def enrolled(self, client: Any, name: Optional[str] = None) -> Tuple[str, str]:
        """A local user with a confirmed Duo device on the stage: (username, device_id),
        enrolled through the client itself."""
        name = self.user(name)
        enr = client.enroll_begin(self.stage, name)
        self.emu("/_emu/enrollment", {"account": self.account, "action": "complete",
                                      "activation_code": enr.activation_code})
        st = client.enroll_status(self.stage, enr.enrollment_id)
        assert st.succeeded and st.device_id
        return name, st.device_id


@pytest.fixture(scope="session")
def stack() -> Stack:
    return Stack()


@pytest.fixture(scope="session")
def client(stack: Stack) -> Iterator[Any]:
    from duo_workers import Client
    with Client(stack.url, prefix=stack.prefix) as c:
        yield c


def new_job_id() -> str:
    return "py-" + uuid.uuid4().hex


class FakeWorker:
    """A stand-in for the workers on a prefix of its own (the broker's administrator on
    vhost /, as the stack's tests use): it binds a queue per routing key of
    ``<prefix>.jobs`` and answers each job with what ``self.answer(job_type, job_id, body)``
    returns, a list of (reply message_id, reply body), published to the job's reply_to
    with its correlation_id, in that order. Lets a test send what a real worker sends only
    under faults: every error code, a reply twice, progress out of order, no reply."""

    def __init__(self, url: str) -> None:
        import threading

        import pika
        self.prefix = "pyfake" + secrets.token_hex(4)
        self.answer: Any = lambda jtype, jid, body: []
        self.jobs: list = []
        self._conn = pika.BlockingConnection(pika.URLParameters(url))
        ch = self._conn.channel()
        ch.exchange_declare(self.prefix + ".jobs", "direct", auto_delete=True)
        for key in ("enroll", "auth", "import"):
            q = ch.queue_declare("", exclusive=True).method.queue
            ch.queue_bind(q, self.prefix + ".jobs", routing_key=key)
            ch.basic_consume(q, self._on_job, auto_ack=True)
        self._ch = ch
        self._stop = False
        self._thread = threading.Thread(target=self._loop, daemon=True)
        self._thread.start()

    def _loop(self) -> None:
        while not self._stop:
            self._conn.process_data_events(time_limit=0.2)
        self._conn.close()

    def _on_job(self, ch: Any, method: Any, props: Any, raw: bytes) -> None:
        import msgpack
        import pika
        body = msgpack.unpackb(raw, raw=False)
        self.jobs.append((props, body))
        for mid, reply in self.answer(props.type, props.message_id, body):
            ch.basic_publish("", props.reply_to, msgpack.packb(reply), pika.BasicProperties(
                message_id=mid, correlation_id=props.correlation_id,
                type=props.type + ".result", content_type="application/msgpack"))

    def close(self) -> None:
        self._stop = True
        self._thread.join(10)


@pytest.fixture
def fake(stack: Stack) -> Iterator[FakeWorker]:
    worker = FakeWorker(stack.url)
    yield worker
    worker.close()


def error_reply(jtype: str, jid: str, code: str, **extra: Any) -> Dict[str, Any]:
    err = {"code": code, "message": "a %s for the test" % code}
    err.update(extra)
    return {"job_id": jid, "job_type": jtype, "status": "error", "error": err}


def progress_reply(jid: str, run: str, done: int, total: int, progress: bool,
                   state: str = "running") -> Dict[str, Any]:
    return {"job_id": jid, "job_type": "import.auto", "status": "ok", "run_id": run,
            "state": state, "progress": progress,
            "counts": {"pages_total": total, "pages_done": done, "created": done * 10,
                       "existing": 0, "unknown_user": 0, "errors": 0, "seen": done * 10}}
