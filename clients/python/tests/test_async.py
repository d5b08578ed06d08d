"""The AsyncClient against the live stack: every job type, error codes from the workers
and through the broker, a reply arriving twice, out-of-order progress, timeouts, and many
concurrent calls from asyncio tasks. pytest has no asyncio plugin here (Debian's
python3-pytest alone), so each test runs its own loop with asyncio.run."""

import asyncio
import secrets
import uuid

import pytest

import duo_workers
from duo_workers import AsyncClient, errors

from conftest import error_reply, new_job_id, progress_reply

pytestmark = pytest.mark.stack


def run(coro):
    return asyncio.run(asyncio.wait_for(coro, 300))


def test_every_job_type_async(stack):
    async def main():
        async with AsyncClient(stack.url, prefix=stack.prefix) as c:
            name = stack.user()
            enr = await c.enroll_begin(stack.stage, name)
            assert isinstance(enr, duo_workers.Enrollment) and enr.activation_code
            stack.emu("/_emu/enrollment", {"account": stack.account, "action": "complete",
                                           "activation_code": enr.activation_code})
            st = await c.enroll_status(stack.stage, enr.enrollment_id)
            assert st.succeeded and st.device_id
            res = await c.auth(stack.stage, name, factor="push")
            assert res.allowed and res.device_id == st.device_id
            res = await c.auth(device_id=st.device_id, factor="passcode", passcode="123456")
            assert res.allowed
            duo_name = "pyaimp" + secrets.token_hex(4)
            stack.emu("/_emu/users", {"account": stack.account, "users": [{"username": duo_name}]})
            dev = await c.import_manual(stack.stage, duo_name, stack.user())
            assert dev.resolved_from == "username" and dev.device_id
            stage, account = stack.new_stage()
            stack.emu("/_emu/users", {"account": account,
                                      "generate": {"prefix": "aa", "count": 250}})
            replies = [p async for p in await c.import_auto(stage, page_size=100)]
            assert replies[0].state == "running" and replies[-1].final
            assert replies[-1].state == "done" and replies[-1].counts.pages_done == 3
            assert replies[-1].counts.seen == 250
    run(main())


def test_error_codes_async(stack):
    async def main():
        async with AsyncClient(stack.url, prefix=stack.prefix) as c:
            with pytest.raises(errors.StageNotFoundError):
                await c.enroll_begin(str(uuid.uuid4()), stack.user())
            with pytest.raises(errors.NoDeviceError) as info:
                await c.auth(stack.stage, stack.user(), factor="push")
            assert not info.value.transient and info.value.job_id
            with pytest.raises(errors.DuoUserNotFoundError) as info:
                await c.import_manual(stack.stage, "DU" + "X" * 18, stack.user())
            assert info.value.duo_code == 40401
            unlicensed, _ = stack.new_stage({"admin_licensed": False})
            with pytest.raises(errors.LicenseRequiredError):
                async for _ in await c.import_auto(unlicensed):
                    pass
            stage, account = stack.new_stage()
            stack.emu("/_emu/users", {"account": account,
                                      "generate": {"prefix": "ab", "count": 600}})
            first_run = await c.import_auto(stage, page_size=100, pages_per_min=30)
            first = await first_run.__anext__()
            with pytest.raises(errors.ImportAlreadyRunningError) as info:
                async for _ in await c.import_auto(stage):
                    pass
            assert info.value.run_id == first.run_id
            first_run.close()
    run(main())


def test_every_code_through_the_broker_async(stack, fake):
    fake.answer = lambda jtype, jid, body: [(jid, error_reply(jtype, jid, body["username"],
                                                              duo_code=42901))]

    async def main():
        async with AsyncClient(stack.url, prefix=fake.prefix) as c:
            async def one(code, cls):
                with pytest.raises(cls) as info:
                    await c.enroll_begin(stack.stage, code)
                assert info.value.code == code and info.value.duo_code == 42901
            await asyncio.gather(*(one(code, cls) for code, cls in duo_workers.ERRORS.items()))
    run(main())


def test_duplicates_and_out_of_order_progress_async(stack, fake):
    run_id = str(uuid.uuid4())

    def replies(jtype, jid, body):
        if jtype != "import.auto":
            ok = {"job_id": jid, "job_type": jtype, "status": "ok", "device_id": str(uuid.uuid4()),
                  "duo_user_id": "DU" + "A" * 18, "resolved_from": "user_id"}
            return [(jid, ok), (jid, ok)]
        p = lambda n: (run_id + ".progress.%d" % n, progress_reply(jid, run_id, n, 4, True))
        final = (run_id + ".final", progress_reply(jid, run_id, 4, 4, False, "done"))
        return [(jid, progress_reply(jid, run_id, 0, 4, True)), p(2), p(1), p(2), final, final]
    fake.answer = replies

    async def main():
        async with AsyncClient(stack.url, prefix=fake.prefix) as c:
            for _ in range(3):
                dev = await c.import_manual(stack.stage, "DU" + "A" * 18, "someone")
                assert dev.resolved_from == "user_id"
            got = [p async for p in await c.import_auto(stack.stage)]
            assert [(p.counts.pages_done, p.final) for p in got] == [(0, False), (2, False),
                                                                     (4, True)]
            for _ in range(50):
                if c.dropped_replies >= 6:
                    break
                await asyncio.sleep(0.05)
            # 3 second copies, the stale progress 1, the repeated progress 2 and final.
            assert c.dropped_replies == 6
    run(main())


def test_timeout_async(stack, fake):
    async def main():
        async with AsyncClient(stack.url, prefix=fake.prefix) as c:
            # Never answered: only the call's own timeout ends it.
            with pytest.raises(errors.JobTimeoutError) as info:
                await c.auth(stack.stage, "x", timeout=1.0)
            assert info.value.transient
    run(main())


def test_many_concurrent_calls_from_tasks(stack, client):
    name, dev = stack.enrolled(client)

    async def main():
        async with AsyncClient(stack.url, prefix=stack.prefix) as c:
            async def one(k):
                jid = new_job_id()
                if k % 4 == 0:
                    with pytest.raises(errors.DeviceNotFoundError) as info:
                        await c.auth(device_id=str(uuid.uuid4()), job_id=jid)
                    return info.value.job_id
                r = await c.auth(device_id=dev, factor="passcode",
                                 passcode="123456" if k % 2 else "111111", job_id=jid)
                assert r.job_id == jid and r.allowed == bool(k % 2)
                return r.job_id
            ids = await asyncio.gather(*(one(k) for k in range(300)))
            assert len(set(ids)) == 300
    run(main())


def test_the_broker_refusing_a_job_async(stack):
    import pika
    conn = pika.BlockingConnection(pika.URLParameters(stack.url))
    unbound = "pyaunbound" + secrets.token_hex(3)
    conn.channel().exchange_declare(unbound + ".jobs", "direct")

    async def main():
        async with AsyncClient(stack.url, prefix="pyanone" + secrets.token_hex(3)) as c:
            for _ in range(2):  # no such exchange (404); the client goes on afterwards
                with pytest.raises(errors.JobRefusedError):
                    await c.enroll_status(stack.stage, str(uuid.uuid4()), timeout=10)
        async with AsyncClient(stack.url, prefix=unbound) as c:
            with pytest.raises(errors.JobNotRoutedError):  # mandatory: returned, not lost
                await c.auth(stack.stage, "x", timeout=10)
    try:
        run(main())
    finally:
        conn.channel().exchange_delete(unbound + ".jobs")
        conn.close()
