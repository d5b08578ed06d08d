"""The blocking client (pika).

One :class:`Client` per process, shared by every thread: its methods are thread-safe.
One background thread owns the broker connection (pika's connections are not
thread-safe; this one is a SelectConnection): it publishes the jobs the callers hand it
with ``mandatory`` on a channel in confirm mode, taking the broker's confirms as they
come (many jobs may await theirs at once), reads the replies from the client's exclusive reply queue and
hands each to the thread waiting for it. After a lost connection it reconnects (the URLs
in turn), and publishes again, with the same message_id, every single-reply job still
waiting, so each either gets its (stored) reply or times out: a caller never waits longer
than its timeout.
"""

import collections
import logging
import queue
import threading
import time
from typing import Any, Deque, Dict, Iterator, List, Mapping, Optional, Tuple, Union

import pika
import pika.exceptions

from . import _core, errors
from ._contract import CONTENT_TYPE
from .results import AuthResult, Enrollment, EnrollmentStatus, ImportedDevice, ImportProgress

log = logging.getLogger("duo_workers")

_Event = Tuple[Optional[str], Any]  # (reply message_id, body) or (None, exception)


class _SyncCall(_core.Call):
    def __init__(self, *args: Any) -> None:
        super().__init__(*args)
        self.events: "queue.Queue[_Event]" = queue.Queue()

    def deliver(self, message_id: Optional[str], body: Any) -> None:
        self.events.put((message_id, body))

    def fail(self, exc: BaseException) -> None:
        self.finished = True
        self.events.put((None, exc))


class ImportRun:
    """The replies of one ``import_auto`` job, as an iterator of :class:`ImportProgress`:
    the first reply, progress replies, and the final one (``final`` true), after which
    iteration stops. An error reply raises its exception. Each reply is awaited for at most
    the call's timeout. ``close()`` (or leaving a ``with`` block) stops listening; the run
    itself goes on."""

    def __init__(self, client: "Client", call: _SyncCall) -> None:
        self._client = client
        self._call = call
        self._done = False
        self.job_id = call.job_id

    @property
    def run_id(self) -> Optional[str]:
        return self._call.run_id

    def __iter__(self) -> "ImportRun":
        return self

    def __next__(self) -> ImportProgress:
        if self._done:
            raise StopIteration
        try:
            mid, body = self._client._wait(self._call)
            item = _core.progress_of(body, mid)
        except BaseException:
            self.close()
            raise
        if item.final:
            self.close()
        return item

    def __del__(self) -> None:  # an iteration abandoned without close()
        try:
            self.close()
        except Exception:
            pass

    def close(self) -> None:
        if not self._done:
            self._done = True
            self._client._forget(self._call)

    def __enter__(self) -> "ImportRun":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()


class Client:
    """Blocking client of the Duo workers.

    ``url``: one broker URL, several (a list, or one string with comma-separated URLs,
    tried in turn: a cluster's nodes), or None for ``$AMQP_URL``. ``prefix``: the workers'
    ``MQ_PREFIX`` (default ``$MQ_PREFIX`` or ``duo``). Connects at once; raises
    :class:`ConnectionError` when no URL answers within ``connect_timeout`` seconds.
    Use it as a context manager, or call :meth:`close`.
    """

    def __init__(self, url: Union[None, str, List[str]] = None, *, prefix: Optional[str] = None,
                 connect_timeout: float = 30.0, reconnect_delay_max: float = 5.0) -> None:
        self._urls = _core.broker_urls(url)
        self._prefix = _core.prefix_of(prefix)
        self._exchange = self._prefix + ".jobs"
        self._delay_max = reconnect_delay_max
        self._lock = threading.RLock()  # RLock: ImportRun.__del__ may run anywhere
        self._calls: Dict[str, _SyncCall] = {}
        self._outbox: Deque[_SyncCall] = collections.deque()
        self._conn: Optional[pika.SelectConnection] = None
        self._ch: Any = None
        self._ch_pending: Any = None
        self._unconfirmed: Dict[int, _SyncCall] = {}
        self._tag = 0
        self._url_user = ""
        self._was_up = False
        self._reply_queue = ""
        self._user = ""
        self._gen = 0
        self._next_url = 0
        self._closing = False
        self._wake = threading.Event()
        self._up = threading.Event()
        self._last_error: Optional[BaseException] = None
        #: Replies dropped: duplicates, late replies of calls that timed out, strays.
        self.dropped_replies = 0
        #: Successful (re)connections so far.
        self.connects = 0
        self._thread = threading.Thread(target=self._io_main, name="duo_workers-io", daemon=True)
        self._thread.start()
        if not self._up.wait(connect_timeout):
            self.close()
            raise ConnectionError("cannot connect to any broker URL within %.0f s: %s"
                                  % (connect_timeout, self._last_error))

    # ---- the job types ---------------------------------------------------------------

    def enroll_begin(self, stage_uuid: str, username: str, *, valid_secs: Optional[int] = None,
                     job_id: Optional[str] = None, timeout: Optional[float] = None) -> Enrollment:
        """Starts an enrollment: the QR code and activation link for Duo Mobile."""
        body = _core.enroll_begin_body(stage_uuid, username, valid_secs)
        return self._one("enroll.begin", body, job_id, timeout)  # type: ignore[return-value]

    def enroll_status(self, stage_uuid: str, enrollment_id: str, *, job_id: Optional[str] = None,
                      timeout: Optional[float] = None) -> EnrollmentStatus:
        """Asks Duo whether the enrollment was activated; stores the device once it was."""
        body = _core.enroll_status_body(stage_uuid, enrollment_id)
        return self._one("enroll.status", body, job_id, timeout)  # type: ignore[return-value]

    def auth(self, stage_uuid: Optional[str] = None, username: Optional[str] = None, *,
             device_id: Optional[str] = None, factor: Optional[_core.Factor] = None,
             passcode: Optional[str] = None, device: Optional[str] = None,
             ipaddr: Optional[str] = None, push_type: Optional[str] = None,
             display_username: Optional[str] = None,
             pushinfo: Optional[Mapping[str, str]] = None, job_id: Optional[str] = None,
             timeout: Optional[float] = None) -> AuthResult:
        """Authenticates a user (``stage_uuid`` + ``username``, or ``device_id``).
        ``push_type`` is the job's ``type`` field (the action shown in the push). Only
        ``result.allowed`` means authenticated."""
        body = _core.auth_body(stage_uuid, username, device_id, factor, passcode, device, ipaddr,
                               push_type, display_username, pushinfo)
        return self._one("auth", body, job_id, timeout)  # type: ignore[return-value]

    def import_manual(self, stage_uuid: str, duo_user_id: str, username: str, *,
                      job_id: Optional[str] = None,
                      timeout: Optional[float] = None) -> ImportedDevice:
        """Imports one user who exists in Duo (a Duo user id or a Duo username)."""
        body = _core.import_manual_body(stage_uuid, duo_user_id, username)
        return self._one("import.manual", body, job_id, timeout)  # type: ignore[return-value]

    def import_auto(self, stage_uuid: str, *, page_size: Optional[int] = None,
                    pages_per_min: Optional[int] = None, dry_run: Optional[bool] = None,
                    job_id: Optional[str] = None, timeout: Optional[float] = None) -> ImportRun:
        """Imports every Duo user of the stage. The job is published at once; iterate the
        answer for its replies (the last one has ``final`` true)."""
        body = _core.import_auto_body(stage_uuid, page_size, pages_per_min, dry_run)
        return ImportRun(self, self._start("import.auto", body, job_id, timeout))

    # ---- calls -------------------------------------------------------------------------

    def _start(self, job_type: str, body: Mapping[str, Any], job_id: Optional[str],
               timeout: Optional[float]) -> _SyncCall:
        call = _SyncCall(job_type, body, job_id, timeout)
        with self._lock:
            if self._closing:
                raise errors.ClientClosedError("the client is closed")
            if call.job_id in self._calls:
                raise ValueError("job %s is already in flight on this client" % call.job_id)
            self._calls[call.job_id] = call
            self._outbox.append(call)
        self._kick()
        return call

    def _one(self, job_type: str, body: Mapping[str, Any], job_id: Optional[str],
             timeout: Optional[float]) -> _core.Result:
        call = self._start(job_type, body, job_id, timeout)
        try:
            _mid, reply = self._wait(call)
        finally:
            self._forget(call)
        return _core.result_of(job_type, reply)

    def _wait(self, call: _SyncCall) -> Tuple[Optional[str], Mapping[str, Any]]:
        """The call's next reply; raises its exception, or JobTimeoutError after the call's
        timeout (counted from the last reply for import.auto)."""
        since = time.monotonic()
        try:
            mid, item = call.events.get(timeout=call.timeout)
        except queue.Empty:
            why = "" if self._up.is_set() else "broker unreachable: %r" % self._last_error
            raise _core.timeout_error(call, time.monotonic() - since, why) from None
        if isinstance(item, BaseException):
            raise item
        return mid, item

    def _forget(self, call: _SyncCall) -> None:
        with self._lock:
            call.finished = True
            if self._calls.get(call.job_id) is call:
                del self._calls[call.job_id]

    def _kick(self) -> None:
        """Wakes the I/O thread to publish (pika's one thread-safe entry point)."""
        self._wake.set()
        conn = self._conn
        if conn is not None:
            try:
                conn.ioloop.add_callback_threadsafe(self._flush)
            except Exception:  # closed meanwhile: the next connection publishes the outbox
                pass

    # ---- the I/O thread: one SelectConnection at a time, its callbacks ----------------------

    def _io_main(self) -> None:
        delay = 0.1
        while not self._closing:
            if self._run_connection():
                delay = 0.1
                continue
            if self._closing:
                break
            self._wake.wait(delay)
            self._wake.clear()
            delay = min(delay * 2, self._delay_max)

    def _run_connection(self) -> bool:
        """Connects to the first URL that answers, from the last good one on, and serves
        the connection until it closes. True when one was up."""
        for i in range(len(self._urls)):
            if self._closing:
                return False
            n = (self._next_url + i) % len(self._urls)
            url = self._urls[n]
            self._was_up = False
            try:
                params = pika.URLParameters(url)
                params.connection_attempts = 1
                params.socket_timeout = 5
                params.blocked_connection_timeout = 60
                conn = pika.SelectConnection(params, on_open_callback=self._on_open,
                                             on_open_error_callback=self._on_open_error,
                                             on_close_callback=self._on_closed)
            except Exception as exc:
                self._last_error = exc
                continue
            self._url_user = _core.url_user(url)
            with self._lock:
                self._conn = conn
            try:
                conn.ioloop.start()
            except Exception as exc:  # a bug in a callback must not kill the thread
                log.exception("duo_workers: unexpected error in the I/O thread")
                self._last_error = exc
                self._lost(exc)
            finally:
                with self._lock:
                    self._conn = None
                try:
                    conn.ioloop.close()
                except Exception:
                    pass
            if self._was_up:
                self._next_url = n
                return True
            log.info("duo_workers: cannot connect to %s: %r", _safe(url), self._last_error)
        return False

    def _on_open_error(self, conn: Any, err: BaseException) -> None:
        self._last_error = err
        conn.ioloop.stop()

    def _on_open(self, conn: Any) -> None:
        if self._closing:
            conn.close()
            return
        conn.channel(on_open_callback=self._on_channel)

    def _on_channel(self, ch: Any) -> None:
        self._ch_pending = ch
        ch.add_on_close_callback(self._on_channel_closed)
        ch.add_on_return_callback(self._on_return)
        ch.confirm_delivery(ack_nack_callback=self._on_confirm,
                            callback=lambda _f: ch.queue_declare(
                                "", exclusive=True, auto_delete=True, callback=self._on_queue))

    def _on_queue(self, frame: Any) -> None:
        ch, q = self._ch_pending, frame.method.queue
        ch.basic_consume(q, self._on_reply, auto_ack=True,
                         callback=lambda _f: self._on_ready(ch, q))

    def _on_ready(self, ch: Any, q: str) -> None:
        with self._lock:
            self._ch, self._reply_queue, self._user = ch, q, self._url_user
            self._gen += 1
            self._tag = 0
            self._unconfirmed.clear()
            self.connects += 1
            # Every single-reply job still waiting goes out again (same message_id): its
            # reply, if already sent, went to the lost queue, and the worker answers the
            # copy from its record. Jobs never published go too.
            queued = set(id(c) for c in self._outbox)
            for call in sorted(self._calls.values(), key=lambda c: c.seq):
                if not call.finished and call.gen is not None and id(call) not in queued:
                    self._outbox.append(call)
        self._was_up = True
        self._up.set()
        if self.connects > 1:
            log.warning("duo_workers: reconnected")
        self._flush()

    def _on_channel_closed(self, ch: Any, reason: BaseException) -> None:
        """The broker closed the channel: a publish it refused (403: no write permission
        on the jobs exchange; 404: no such exchange). The jobs awaiting their confirms
        are refused with it; the connection is closed and opened again."""
        conn = self._conn
        if isinstance(reason, pika.exceptions.ChannelClosedByBroker):
            with self._lock:
                refused = list(self._unconfirmed.values())
                self._unconfirmed.clear()
            for call in refused:
                self._fail(call, errors.JobRefusedError(
                    "the broker refused job %s: %s %s" % (call.job_id, reason.reply_code,
                                                          reason.reply_text), job_id=call.job_id))
        if conn is not None and conn.is_open:
            conn.close()

    def _on_closed(self, conn: Any, reason: BaseException) -> None:
        self._lost(reason)
        conn.ioloop.stop()

    def _lost(self, exc: BaseException) -> None:
        if self._was_up and not self._closing:
            log.warning("duo_workers: broker connection lost: %r", exc)
        self._last_error = exc
        self._up.clear()
        with self._lock:
            self._ch = None
            self._unconfirmed.clear()
            for call in list(self._calls.values()):
                if call.multi and call.gen is not None and not call.finished:
                    call.fail(_core.lost_error(call, repr(exc)))
                    del self._calls[call.job_id]

    def _flush(self) -> None:
        """Publishes the outbox; confirms come back asynchronously (_on_confirm)."""
        while True:
            with self._lock:
                if not self._outbox or self._ch is None or not self._ch.is_open:
                    return
                call = self._outbox.popleft()
                if call.finished or self._calls.get(call.job_id) is not call:
                    continue
                ch, reply_queue, user = self._ch, self._reply_queue, self._user
                call.gen = self._gen
                self._tag += 1
                self._unconfirmed[self._tag] = call
            props = pika.BasicProperties(
                message_id=call.job_id, type=call.job_type, reply_to=reply_queue,
                correlation_id=call.job_id, content_type=CONTENT_TYPE, delivery_mode=2,
                user_id=user)
            ch.basic_publish(self._exchange, call.routing_key, call.raw, props, mandatory=True)

    def _on_return(self, _ch: Any, _method: Any, props: pika.BasicProperties,
                   _body: bytes) -> None:
        """An unroutable job (mandatory): the broker returns it before its confirm."""
        with self._lock:
            call = self._calls.get(props.message_id or "")
        if call is not None:
            self._fail(call, errors.JobNotRoutedError(
                "the broker could not route job %s to a queue (exchange %s, routing key %s): "
                "are the workers' queues declared under this prefix?"
                % (call.job_id, self._exchange, call.routing_key), job_id=call.job_id))

    def _on_confirm(self, frame: Any) -> None:
        method = frame.method
        nack = isinstance(method, pika.spec.Basic.Nack)
        with self._lock:
            tags = [t for t in self._unconfirmed if t <= method.delivery_tag] \
                if method.multiple else [method.delivery_tag]
            done = [self._unconfirmed.pop(t) for t in tags if t in self._unconfirmed]
        if nack:
            for call in done:
                exc = errors.JobRefusedError(
                    "the broker did not take job %s (negative confirm); send it again"
                    % call.job_id, job_id=call.job_id)
                exc.transient = True
                self._fail(call, exc)

    def _fail(self, call: _SyncCall, exc: errors.DuoWorkersError) -> None:
        with self._lock:
            if self._calls.get(call.job_id) is call:
                del self._calls[call.job_id]
            elif call.finished:
                return
        call.fail(exc)

    def _on_reply(self, _ch: Any, _method: Any, props: pika.BasicProperties, raw: bytes) -> None:
        corr = props.correlation_id
        try:
            body = _core.unpack(raw)
        except Exception:
            body = None
        with self._lock:
            call = self._calls.get(corr) if corr else None
            taken = call is not None and call.accept(props.message_id, body)
            if not taken:
                self.dropped_replies += 1
        if call is not None and taken:
            call.deliver(props.message_id, body)
        else:
            log.debug("duo_workers: dropped reply %s (correlation %s)", props.message_id, corr)

    # ---- life cycle ------------------------------------------------------------------------

    @property
    def connected(self) -> bool:
        return self._up.is_set()

    @property
    def reply_queue(self) -> str:
        """The client's current exclusive reply queue (changes after a reconnect)."""
        return self._reply_queue

    def close(self) -> None:
        """Stops the I/O thread and closes the connection; calls still waiting raise
        :class:`ClientClosedError`."""
        with self._lock:
            self._closing = True
            calls = list(self._calls.values())
            self._calls.clear()
        for call in calls:
            call.fail(errors.ClientClosedError("the client was closed", job_id=call.job_id))
        self._wake.set()
        conn = self._conn
        if conn is not None:
            try:
                conn.ioloop.add_callback_threadsafe(lambda: _shut(conn))
            except Exception:
                pass
        if threading.current_thread() is not self._thread:
            self._thread.join(timeout=10)

    def __enter__(self) -> "Client":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()


def _shut(conn: Any) -> None:
    """Closes a connection from its I/O thread; its close callback stops its loop."""
    try:
        conn.close()
    except Exception:
        conn.ioloop.stop()


def _safe(url: str) -> str:
    """A URL without its password, for logs."""
    head, sep, tail = url.partition("@")
    if not sep:
        return url
    scheme, _, cred = head.partition("://")
    return "%s://%s@%s" % (scheme, cred.split(":")[0], tail)
