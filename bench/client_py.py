"""client_py.py - throughput of the Python client (clients/python) itself: calls per second
from one process, blocking and asyncio, beside the same round trip in raw pika.

A stand-in worker (a separate process, `client_py.py respond PREFIX`) answers every auth
job at once with a valid ok reply, so what is measured is the client's side of a call:
encode, publish with a confirm and `mandatory`, the reply's trip back through the
client's reply queue, decode, correlate. The queue is a durable quorum queue, as the
workers' are, so each confirm costs what it costs in production. No database, no Duo.

usage: client_py.py run CALLS        (AMQP_URL: a broker user that may declare on its vhost)
Prints one line per mode:
  client_py: mode=<m> conc=<n> calls=<N> secs=<s> calls_per_s=<r> cpu_ms_per_call=<c>
Modes: raw (pika, one call at a time, as schemas/README.md's raw example), sync (Client, 1
thread), sync (Client, 16 threads), async (AsyncClient, 1 task), async (64 tasks).
"""

import asyncio
import os
import secrets
import subprocess
import sys
import threading
import time
import uuid

import msgpack
import pika

RK = "auth"


def declare(url, prefix):
    conn = pika.BlockingConnection(pika.URLParameters(url))
    ch = conn.channel()
    ch.exchange_declare(prefix + ".jobs", "direct", durable=True)
    ch.queue_declare(prefix + ".auth", durable=True, arguments={"x-queue-type": "quorum"})
    ch.queue_bind(prefix + ".auth", prefix + ".jobs", routing_key=RK)
    conn.close()


def remove(url, prefix):
    conn = pika.BlockingConnection(pika.URLParameters(url))
    ch = conn.channel()
    ch.queue_delete(prefix + ".auth")
    ch.exchange_delete(prefix + ".jobs")
    conn.close()


def respond(url, prefix):
    """The stand-in worker: an ok auth reply to each job, at once."""
    conn = pika.BlockingConnection(pika.URLParameters(url))
    ch = conn.channel()
    ch.basic_qos(prefetch_count=512)
    device = str(uuid.uuid4())

    def on_job(ch, method, props, body):
        reply = msgpack.packb({"job_id": props.message_id, "job_type": props.type,
                               "status": "ok", "result": "allow", "device_id": device,
                               "bypass": False, "duo_status": "allow"})
        ch.basic_publish("", props.reply_to, reply, pika.BasicProperties(
            message_id=props.message_id, correlation_id=props.correlation_id,
            type=props.type + ".result", content_type="application/msgpack",
            delivery_mode=2))
        ch.basic_ack(method.delivery_tag)

    ch.basic_consume(prefix + ".auth", on_job)
    try:
        ch.start_consuming()
    except KeyboardInterrupt:
        pass


def report(mode, conc, calls, secs, cpu):
    print("client_py: mode=%s conc=%d calls=%d secs=%.2f calls_per_s=%.0f cpu_ms_per_call=%.3f"
          % (mode, conc, calls, secs, calls / secs, cpu * 1000.0 / calls), flush=True)


def timed(fn):
    t0, c0 = time.perf_counter(), time.process_time()
    fn()
    return time.perf_counter() - t0, time.process_time() - c0


def bench_raw(url, prefix, calls):
    conn = pika.BlockingConnection(pika.URLParameters(url))
    ch = conn.channel()
    ch.confirm_delivery()
    q = ch.queue_declare(queue="", exclusive=True).method.queue
    body = msgpack.packb({"stage_uuid": str(uuid.uuid4()), "username": "alice",
                          "factor": "passcode", "passcode": "123456"})

    def loop():
        replies = ch.consume(q, auto_ack=True, inactivity_timeout=30)
        for _ in range(calls):
            jid = str(uuid.uuid4())
            ch.basic_publish(prefix + ".jobs", RK, body, pika.BasicProperties(
                message_id=jid, type="auth", reply_to=q, correlation_id=jid,
                content_type="application/msgpack", delivery_mode=2), mandatory=True)
            for method, props, raw in replies:
                if method is None:
                    raise SystemExit("raw: no reply in 30 s")
                if props.correlation_id == jid:
                    msgpack.unpackb(raw, raw=False)
                    break
    secs, cpu = timed(loop)
    ch.cancel()
    conn.close()
    report("raw", 1, calls, secs, cpu)


def bench_sync(url, prefix, calls, threads):
    from duo_workers import Client
    stage = str(uuid.uuid4())
    with Client(url, prefix=prefix) as c:
        c.auth(stage, "alice", factor="passcode", passcode="123456")  # warm up
        per = calls // threads

        def work():
            for _ in range(per):
                c.auth(stage, "alice", factor="passcode", passcode="123456")

        def run_all():
            ts = [threading.Thread(target=work) for _ in range(threads)]
            for t in ts:
                t.start()
            for t in ts:
                t.join()
        secs, cpu = timed(run_all)
    report("sync", threads, per * threads, secs, cpu)


def bench_async(url, prefix, calls, tasks):
    from duo_workers import AsyncClient
    stage = str(uuid.uuid4())

    async def main():
        async with AsyncClient(url, prefix=prefix) as c:
            await c.auth(stage, "alice", factor="passcode", passcode="123456")
            per = calls // tasks

            async def work():
                for _ in range(per):
                    await c.auth(stage, "alice", factor="passcode", passcode="123456")
            t0, c0 = time.perf_counter(), time.process_time()
            await asyncio.gather(*(work() for _ in range(tasks)))
            return per * tasks, time.perf_counter() - t0, time.process_time() - c0
    n, secs, cpu = asyncio.run(main())
    report("async", tasks, n, secs, cpu)


def main():
    url = os.environ["AMQP_URL"]
    if len(sys.argv) == 3 and sys.argv[1] == "respond":
        respond(url, sys.argv[2])
        return
    if len(sys.argv) != 3 or sys.argv[1] != "run":
        raise SystemExit("usage: client_py.py run CALLS | respond PREFIX")
    calls = int(sys.argv[2])
    prefix = "benchpy" + secrets.token_hex(4)
    declare(url, prefix)
    responder = subprocess.Popen([sys.executable, os.path.abspath(__file__), "respond", prefix])
    try:
        bench_raw(url, prefix, calls)
        bench_sync(url, prefix, calls, 1)
        bench_sync(url, prefix, calls, 16)
        bench_async(url, prefix, calls, 1)
        bench_async(url, prefix, calls, 64)
    finally:
        responder.terminate()
        responder.wait(10)
        remove(url, prefix)


if __name__ == "__main__":
    main()
