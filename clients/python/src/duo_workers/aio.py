"""The asyncio client (aio-pika).

One :class:`AsyncClient` per process (per event loop), shared by every task of that loop;
it is not for use from other threads or loops. A background task owns the connection: it
reconnects after a loss (the URLs in turn) and publishes again, with the same message_id,
every single-reply job still waiting. Publishing uses publisher confirms and
``mandatory``; several jobs may wait for their confirms at once.
"""

import asyncio
import logging
import time
from typing import Any, AsyncIterator, Dict, List, Mapping, Optional, Tuple, Union

import aio_pika
import aio_pika.exceptions
import aiormq.exceptions

from . import _core, errors
from ._contract import CONTENT_TYPE
from .results import AuthResult, Enrollment, EnrollmentStatus, ImportedDevice, ImportProgress

log = logging.getLogger("duo_workers")

_Event = Tuple[Optional[str], Any]


class _AsyncCall(_core.Call):
    def __init__(self, *args: Any) -> None:
        super().__init__(*args)
        self.events: "asyncio.Queue[_Event]" = asyncio.Queue()

    def deliver(self, message_id: Optional[str], body: Any) -> None:
        self.events.put_nowait((message_id, body))

    def fail(self, exc: BaseException) -> None:
        self.finished = True
        self.events.put_nowait((None, exc))


class _Link:
    """One live connection: its channel, the jobs exchange and the reply queue."""

    def __init__(self, gen: int, conn: Any, channel: Any, exchange: Any, reply_queue: str,
                 user: str) -> None:
        self.gen, self.conn, self.channel = gen, conn, channel
        self.exchange, self.reply_queue, self.user = exchange, reply_queue, user
        self.lost = asyncio.Event()


class AsyncImportRun:
    """The replies of one ``import_auto`` job as an async iterator of
    :class:`ImportProgress`, ending after the final one (see :class:`ImportRun`)."""

    def __init__(self, client: "AsyncClient", call: _AsyncCall) -> None:
        self._client = client
        self._call = call
        self._done = False
        self.job_id = call.job_id

    @property
    def run_id(self) -> Optional[str]:
        return self._call.run_id

    def __aiter__(self) -> "AsyncImportRun":
        return self

    async def __anext__(self) -> ImportProgress:
        if self._done:
            raise StopAsyncIteration
        try:
            mid, body = await self._client._wait(self._call)
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

    async def __aenter__(self) -> "AsyncImportRun":
        return self

    async def __aexit__(self, *exc: Any) -> None:
        self.close()


class AsyncClient:
    """Asyncio client of the Duo workers: ``async with AsyncClient(url) as client`` (or
    ``await client.connect()`` ... ``await client.close()``). Arguments as
    :class:`duo_workers.Client`."""

    def __init__(self, url: Union[None, str, List[str]] = None, *, prefix: Optional[str] = None,
                 connect_timeout: float = 30.0, reconnect_delay_max: float = 5.0) -> None:
        self._urls = _core.broker_urls(url)
        self._prefix = _core.prefix_of(prefix)
        self._exchange_name = self._prefix + ".jobs"
        self._connect_timeout = connect_timeout
        self._delay_max = reconnect_delay_max
        self._calls: Dict[str, _AsyncCall] = {}
        self._link: Optional[_Link] = None
        self._up: Optional[asyncio.Event] = None
        self._task: Optional["asyncio.Task[None]"] = None
        self._closing = False
        self._gen = 0
        self._next_url = 0
        self._last_error: Optional[BaseException] = None
        self._publishing: "set[asyncio.Task[None]]" = set()
        #: Replies dropped: duplicates, late replies of calls that timed out, strays.
        self.dropped_replies = 0
        #: Successful (re)connections so far.
        self.connects = 0

    async def connect(self) -> "AsyncClient":
        """Connects; raises :class:`ConnectionError` when no URL answers in time."""
        if self._task is None:
            self._up = asyncio.Event()
            self._task = asyncio.get_running_loop().create_task(self._run())
        assert self._up is not None
        try:
            await asyncio.wait_for(self._up.wait(), self._connect_timeout)
        except asyncio.TimeoutError:
            await self.close()
            raise ConnectionError("cannot connect to any broker URL within %.0f s: %s"
                                  % (self._connect_timeout, self._last_error)) from None
        return self

    async def __aenter__(self) -> "AsyncClient":
        return await self.connect()

    async def __aexit__(self, *exc: Any) -> None:
        await self.close()

    # ---- the job types ---------------------------------------------------------------

    async def enroll_begin(self, stage_uuid: str, username: str, *,
                           valid_secs: Optional[int] = None, job_id: Optional[str] = None,
                           timeout: Optional[float] = None) -> Enrollment:
        body = _core.enroll_begin_body(stage_uuid, username, valid_secs)
        return await self._one("enroll.begin", body, job_id, timeout)  # type: ignore[return-value]

    async def enroll_status(self, stage_uuid: str, enrollment_id: str, *,
                            job_id: Optional[str] = None,
                            timeout: Optional[float] = None) -> EnrollmentStatus:
        body = _core.enroll_status_body(stage_uuid, enrollment_id)
        return await self._one("enroll.status", body, job_id, timeout)  # type: ignore[return-value]

    async def auth(self, stage_uuid: Optional[str] = None, username: Optional[str] = None, *,
                   device_id: Optional[str] = None, factor: Optional[_core.Factor] = None,
                   passcode: Optional[str] = None, device: Optional[str] = None,
                   ipaddr: Optional[str] = None, push_type: Optional[str] = None,
                   display_username: Optional[str] = None,
                   pushinfo: Optional[Mapping[str, str]] = None, job_id: Optional[str] = None,
                   timeout: Optional[float] = None) -> AuthResult:
        body = _core.auth_body(stage_uuid, username, device_id, factor, passcode, device, ipaddr,
                               push_type, display_username, pushinfo)
        return await self._one("auth", body, job_id, timeout)  # type: ignore[return-value]

    async def import_manual(self, stage_uuid: str, duo_user_id: str, username: str, *,
                            job_id: Optional[str] = None,
                            timeout: Optional[float] = None) -> ImportedDevice:
        body = _core.import_manual_body(stage_uuid, duo_user_id, username)
        return await self._one("import.manual", body, job_id, timeout)  # type: ignore[return-value]

    async def import_auto(self, stage_uuid: str, *, page_size: Optional[int] = None,
                          pages_per_min: Optional[int] = None, dry_run: Optional[bool] = None,
                          job_id: Optional[str] = None,
                          timeout: Optional[float] = None) -> AsyncImportRun:
        """Publishes the job (awaiting its confirm) and returns the async iterator of its
        replies."""
        body = _core.import_auto_body(stage_uuid, page_size, pages_per_min, dry_run)
        call = self._start("import.auto", body, job_id, timeout)
        run = AsyncImportRun(self, call)
        try:
            await self._publish_first(call)
        except BaseException:
            run.close()
            raise
        return run

    # ---- calls -------------------------------------------------------------------------

    def _start(self, job_type: str, body: Mapping[str, Any], job_id: Optional[str],
               timeout: Optional[float]) -> _AsyncCall:
        if self._closing or self._task is None:
            raise errors.ClientClosedError("the client is closed or not connected yet")
        call = _AsyncCall(job_type, body, job_id, timeout)
        if call.job_id in self._calls:
            raise ValueError("job %s is already in flight on this client" % call.job_id)
        self._calls[call.job_id] = call
        return call

    async def _one(self, job_type: str, body: Mapping[str, Any], job_id: Optional[str],
                   timeout: Optional[float]) -> _core.Result:
        call = self._start(job_type, body, job_id, timeout)
        try:
            await self._publish_first(call)
            _mid, reply = await self._wait(call)
        finally:
            self._forget(call)
        return _core.result_of(job_type, reply)

    async def _publish_first(self, call: _AsyncCall) -> None:
        """Publishes on the current connection; while there is none, the reconnecting task
        publishes it later (and the wait for its reply bounds the call)."""
        link = self._link
        if link is not None and not link.lost.is_set():
            await self._publish(call, link)

    async def _publish(self, call: _AsyncCall, link: _Link) -> None:
        """Publishes and awaits the confirm. A refusal fails the call (its waiter raises
        it); a lost connection leaves it to the reconnecting task."""
        call.gen = link.gen
        msg = aio_pika.Message(call.raw, message_id=call.job_id, type=call.job_type,
                               reply_to=link.reply_queue, correlation_id=call.job_id,
                               content_type=CONTENT_TYPE,
                               delivery_mode=aio_pika.DeliveryMode.PERSISTENT, user_id=link.user)
        try:
            await link.exchange.publish(msg, call.routing_key, mandatory=True,
                                        timeout=call.timeout)
        except aio_pika.exceptions.PublishError:
            self._fail(call, errors.JobNotRoutedError(
                "the broker could not route job %s to a queue (exchange %s, routing key %s): "
                "are the workers' queues declared under this prefix?"
                % (call.job_id, self._exchange_name, call.routing_key), job_id=call.job_id))
        except (aiormq.exceptions.ChannelAccessRefused,
                aiormq.exceptions.ChannelNotFoundEntity) as exc:
            # 403 (no write permission on the jobs exchange) or 404 (no such exchange): the
            # broker closed the channel; this job cannot go, the others go on a new one.
            self._fail(call, errors.JobRefusedError(
                "the broker refused job %s: %s" % (call.job_id, exc), job_id=call.job_id))
            link.lost.set()
        except aio_pika.exceptions.DeliveryError:
            self._fail(call, errors.JobRefusedError(
                "the broker refused job %s (negative confirm)" % call.job_id,
                job_id=call.job_id))
        except (asyncio.CancelledError, KeyboardInterrupt):
            raise
        except Exception as exc:
            # The connection went away under the publish: the reconnecting task sends the
            # job again (single-reply jobs), or fails it (import.auto).
            log.info("duo_workers: publish of %s interrupted: %r", call.job_id, exc)
            self._last_error = exc
            link.lost.set()

    async def _wait(self, call: _AsyncCall) -> Tuple[Optional[str], Mapping[str, Any]]:
        since = time.monotonic()
        try:
            mid, item = await asyncio.wait_for(call.events.get(), call.timeout)
        except asyncio.TimeoutError:
            up = self._link is not None and not self._link.lost.is_set()
            why = "" if up else "broker unreachable: %r" % self._last_error
            raise _core.timeout_error(call, time.monotonic() - since, why) from None
        if isinstance(item, BaseException):
            raise item
        return mid, item

    def _forget(self, call: _AsyncCall) -> None:
        call.finished = True
        if self._calls.get(call.job_id) is call:
            del self._calls[call.job_id]

    def _fail(self, call: _AsyncCall, exc: BaseException) -> None:
        if self._calls.get(call.job_id) is call:
            del self._calls[call.job_id]
        call.fail(exc)

    async def _on_reply(self, message: Any) -> None:
        corr = message.correlation_id
        try:
            body = _core.unpack(message.body)
        except Exception:
            body = None
        call = self._calls.get(corr) if corr else None
        if call is not None and call.accept(message.message_id, body):
            call.deliver(message.message_id, body)
        else:
            self.dropped_replies += 1
            log.debug("duo_workers: dropped reply %s (correlation %s)", message.message_id, corr)

    # ---- the connection task ---------------------------------------------------------------

    async def _open(self) -> Optional[_Link]:
        for i in range(len(self._urls)):
            url = self._urls[(self._next_url + i) % len(self._urls)]
            conn = None
            try:
                conn = await aio_pika.connect(url, timeout=5)
                channel = await conn.channel(publisher_confirms=True, on_return_raises=True)
                exchange = await channel.get_exchange(self._exchange_name, ensure=False)
                queue = await channel.declare_queue("", exclusive=True, auto_delete=True)
                await queue.consume(self._on_reply, no_ack=True)
            except Exception as exc:
                self._last_error = exc
                log.info("duo_workers: cannot connect to %s: %r", url.split("@")[-1], exc)
                if conn is not None:
                    try:
                        await conn.close()
                    except Exception:
                        pass
                continue
            self._next_url = (self._next_url + i) % len(self._urls)
            self._gen += 1
            link = _Link(self._gen, conn, channel, exchange, queue.name, _core.url_user(url))
            conn.close_callbacks.add(lambda *args: self._closed(link, args))
            channel.close_callbacks.add(lambda *args: self._closed(link, args))
            return link
        return None

    def _closed(self, link: _Link, args: Tuple[Any, ...]) -> None:
        exc = args[-1] if args else None
        if isinstance(exc, BaseException):
            self._last_error = exc
        link.lost.set()

    async def _run(self) -> None:
        delay = 0.1
        assert self._up is not None
        while not self._closing:
            link = await self._open()
            if link is None:
                await asyncio.sleep(delay)
                delay = min(delay * 2, self._delay_max)
                continue
            delay = 0.1
            self._link = link
            self.connects += 1
            if self.connects > 1:
                log.warning("duo_workers: reconnected")
            # Every single-reply job still waiting goes out again with the same message_id;
            # so does a job that never went out.
            for call in sorted(self._calls.values(), key=lambda c: c.seq):
                if not call.finished and call.gen != link.gen and (not call.multi or call.gen is None):
                    task = asyncio.get_running_loop().create_task(self._publish(call, link))
                    self._publishing.add(task)
                    task.add_done_callback(self._publishing.discard)
            self._up.set()
            await link.lost.wait()
            self._up.clear()
            self._link = None
            for call in list(self._calls.values()):
                if call.multi and call.gen is not None and not call.finished:
                    self._fail(call, _core.lost_error(call, repr(self._last_error)))
            try:
                await link.conn.close()
            except Exception:
                pass
            if not self._closing:
                log.warning("duo_workers: broker connection lost: %r", self._last_error)

    @property
    def connected(self) -> bool:
        return self._link is not None and not self._link.lost.is_set()

    @property
    def reply_queue(self) -> str:
        return self._link.reply_queue if self._link is not None else ""

    async def close(self) -> None:
        """Closes the connection; calls still waiting raise :class:`ClientClosedError`."""
        self._closing = True
        for call in list(self._calls.values()):
            self._fail(call, errors.ClientClosedError("the client was closed", job_id=call.job_id))
        link = self._link
        if link is not None:
            link.lost.set()
        if self._task is not None:
            try:
                await asyncio.wait_for(self._task, 10)
            except (asyncio.TimeoutError, Exception):
                self._task.cancel()
