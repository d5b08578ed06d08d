"""Calls in flight while the broker goes away: the shared broker restarted (marker
``restart``) and one node of a three-node cluster stopped (marker ``cluster``). Each call
in flight either completes (single-reply jobs are published again with the same message_id
and answered from the job's record) or raises a clear error (an import.auto whose later
replies went to the lost reply queue: ConnectionLostError naming the run); none hangs.
Run by tests/e2e/test_client_py_serial (alone: they stop what other tests use)."""

import asyncio
import os
import subprocess
import threading
import time
from typing import Any, Dict, List

import pytest

from duo_workers import AsyncClient, Client, errors

from conftest import source_dir

SLOW_MS = 4000  # each user's push waits this long in the emulator: calls are in flight


def slow_users(stack, client, n: int) -> List[str]:
    names = []
    for _ in range(n):
        name, _dev = stack.enrolled(client)
        stack.emu("/_emu/behavior", {"account": stack.account, "user": name,
                                     "delay_ms": SLOW_MS})
        names.append(name)
    return names


def script(*args: str) -> None:
    out = subprocess.run([os.path.join(source_dir(), "scripts", args[0])] + list(args[1:]),
                         capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-800:]


def sync_calls_across(stack, url, names, disrupt) -> Dict[str, Any]:
    """Pushes for every name from threads, plus a stream of quick calls and one slow
    import.auto; `disrupt` runs while they are in flight. Returns what each produced."""
    out: Dict[str, Any] = {"auth": [], "quick": [], "quick_errors": [], "import": None}
    stop = threading.Event()
    with Client(url, prefix=stack.prefix) as c:
        stage, account = stack.new_stage()
        stack.emu("/_emu/users", {"account": account, "generate": {"prefix": "fo", "count": 900}})
        run = c.import_auto(stage, page_size=100, pages_per_min=20)

        def push(name):
            t0 = time.monotonic()
            try:
                r = c.auth(stack.stage, name, factor="push")
                out["auth"].append((name, r.allowed, time.monotonic() - t0))
            except Exception as exc:  # noqa: BLE001 - recorded and checked
                out["auth"].append((name, exc, time.monotonic() - t0))

        def quick():
            while not stop.is_set():
                try:
                    c.enroll_status(stack.stage, "00000000-0000-4000-8000-000000000000")
                except errors.EnrollmentNotFoundError:
                    out["quick"].append(1)
                except Exception as exc:  # noqa: BLE001
                    out["quick_errors"].append(exc)

        def follow():
            try:
                out["import"] = list(run)
            except Exception as exc:  # noqa: BLE001
                out["import"] = exc

        threads = [threading.Thread(target=push, args=(n,)) for n in names]
        threads += [threading.Thread(target=quick) for _ in range(2)]
        threads.append(threading.Thread(target=follow))
        for t in threads:
            t.start()
        time.sleep(1.0)
        disrupt()
        time.sleep(2.0)
        stop.set()
        for t in threads:
            t.join(200)
        assert not any(t.is_alive() for t in threads), "a call hung"
        out["connects"] = c.connects
        # The client works on after the disruption. Right after a node stops, a quorum
        # queue may refuse a publish (negative confirm) while it elects a leader: that is
        # the documented transient JobRefusedError, and sending again is the answer.
        for _ in range(20):
            try:
                c.enroll_status(stack.stage, "00000000-0000-4000-8000-000000000000", timeout=60)
            except errors.JobRefusedError:
                time.sleep(0.5)
                continue
            except errors.EnrollmentNotFoundError:
                break
        else:
            raise AssertionError("every publish refused for 10 s after the disruption")
    return out


def check(out, names):
    assert sorted(n for n, _, _ in out["auth"]) == sorted(names)
    for name, got, secs in out["auth"]:
        assert got is True, "%s: %r after %.1f s" % (name, got, secs)
    assert out["connects"] >= 2
    assert out["quick"], "no quick call completed"
    for exc in out["quick_errors"]:  # a clear error, never anything else
        assert isinstance(exc, errors.DuoWorkersError), repr(exc)
    imp = out["import"]
    if isinstance(imp, Exception):
        assert isinstance(imp, errors.ConnectionLostError) and imp.run_id, repr(imp)
    else:
        assert imp[-1].final, imp


def async_calls_across(stack, url, names, disrupt) -> Dict[str, Any]:
    async def main():
        async with AsyncClient(url, prefix=stack.prefix) as c:
            async def push(name):
                try:
                    return (await c.auth(stack.stage, name, factor="push")).allowed
                except Exception as exc:  # noqa: BLE001
                    return exc
            tasks = [asyncio.ensure_future(push(n)) for n in names]
            await asyncio.sleep(1.0)
            await asyncio.get_running_loop().run_in_executor(None, disrupt)
            got = await asyncio.wait_for(asyncio.gather(*tasks), 200)
            after = await c.auth(stack.stage, names[0], factor="passcode", passcode="123456",
                                 timeout=60)
            return got, c.connects, after.allowed
    got, connects, after = asyncio.run(main())
    for name, res in zip(names, got):
        assert res is True, "%s: %r" % (name, res)
    assert connects >= 2 and after


@pytest.mark.restart
def test_broker_restart_in_the_middle_of_calls(stack):
    with Client(stack.url, prefix=stack.prefix) as c:
        names = slow_users(stack, c, 8)
    out = sync_calls_across(stack, stack.url, names, lambda: script("services.sh", "restart-mq"))
    check(out, names)
    async_calls_across(stack, stack.url, names, lambda: script("services.sh", "restart-mq"))


@pytest.mark.cluster
def test_cluster_node_stopped_in_the_middle_of_calls(stack):
    # The client connects to the first URL (node 1) first: stopping it drops its
    # connection and reply queue; the workers start on a node of their own choice (any of
    # the three), as do the work queues' leaders, so a run may also see a worker move and a
    # work queue elect a new leader. Jobs parked in a retry tier then come back through
    # dead-lettering into a queue whose leader may just have moved (see scripts/cluster.sh,
    # dead_letter_worker_publisher_confirm_timeout).
    with Client(stack.url, prefix=stack.prefix) as c:
        names = slow_users(stack, c, 6)
    try:
        out = sync_calls_across(stack, stack.url, names,
                                lambda: script("cluster.sh", "stop-node", "1"))
        check(out, names)
        script("cluster.sh", "start-node", "1")
        async_calls_across(stack, stack.url, names,
                           lambda: script("cluster.sh", "stop-node", "1"))
    finally:
        script("cluster.sh", "start-node", "1")  # a no-op when it is up
