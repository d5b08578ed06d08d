#!/usr/bin/env python3
"""duo_emulator.py - a Duo Auth API v2 / Admin API v1 stand-in for tests and benchmarks,
HTTPS on asyncio, Python standard library only. The contract is docs/EMULATOR.md.

Invariant: every Duo endpoint except ping checks the signature, date and integration the
way Duo does before it looks at parameters; waiting (delays, held pushes) only awaits,
so the event loop keeps serving thousands of other requests meanwhile.

Usage: duo_emulator.py --host 127.0.0.1 --port 58443 --cert FILE --key FILE [--verbose]
       duo_emulator.py --self-test [--vectors FILE]
"""

import argparse
import asyncio
import asyncio.sslproto
import os
import resource
import ssl
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import emu_control  # noqa: E402
import emu_duo  # noqa: E402
import emu_http  # noqa: E402
import emu_selftest  # noqa: E402
from emu_state import count_request  # noqa: E402


class Emulator:
    """All state of one emulator process (no module-level mutable state)."""

    def __init__(self, verbose=False):
        self.accounts = {}
        self.integrations = {}  # ikey -> {"skey", "type", "account", "disabled"}
        self.global_faults = []
        self.global_stats = {"requests": {}}
        self.in_flight = 0
        self.verbose = verbose

    async def handle(self, req):
        """Routes one request; returns a Response, or None if the client went away."""
        self.in_flight += 1
        try:
            if req.path.startswith("/_emu/"):
                resp, account = emu_control.handle(self, req), None
            else:
                resp, account = await emu_duo.handle(self, req)
        except Exception as exc:  # a bug here must not kill the connection loop
            resp, account = emu_duo.fail(500, 50001, "Internal server error", repr(exc)), None
        finally:
            self.in_flight -= 1
        status = 499 if resp is None else "drop" if resp.drop else resp.status
        count_request(self.global_stats, req.path, status)
        if account is not None:
            count_request(account.stats, req.path, status)
        if self.verbose:
            print("%s %s %d" % (req.method, req.target, status), flush=True)
        return resp


def raise_nofile():
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard == resource.RLIM_INFINITY or hard > soft:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
        except (ValueError, OSError):
            pass


def shrink_tls_buffers():
    """asyncio gives every TLS connection a 256 KiB read buffer; 2,000 held pushes would
    cost 512 MiB. A TLS record is at most 16 KiB, so 32 KiB loses nothing."""
    proto = getattr(asyncio.sslproto, "SSLProtocol", None)
    if proto is not None and getattr(proto, "max_size", 0) > 32 * 1024:
        proto.max_size = 32 * 1024


async def serve(args):
    shrink_tls_buffers()
    emu = Emulator(args.verbose)
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.load_cert_chain(args.cert, args.key)
    server = await asyncio.start_server(
        lambda r, w: emu_http.serve_conn(r, w, emu.handle), args.host, args.port,
        ssl=ctx, backlog=4096, limit=emu_http.MAX_HEAD, ssl_handshake_timeout=30)
    print("duo emulator listening on https://%s:%d" % (args.host, args.port), flush=True)
    async with server:
        await server.serve_forever()


def main():
    ap = argparse.ArgumentParser(description="Duo API emulator")
    ap.add_argument("--host", default="127.0.0.1")
    ap.add_argument("--port", type=int, default=58443)
    ap.add_argument("--cert")
    ap.add_argument("--key")
    ap.add_argument("--verbose", action="store_true", help="log one line per request")
    ap.add_argument("--self-test", action="store_true",
                    help="check the signature code against the Duo vectors and exit")
    ap.add_argument("--vectors", default=os.path.join(os.path.dirname(os.path.abspath(
        __file__)), "signing-vectors.json"))
    args = ap.parse_args()
    if args.self_test:
        return emu_selftest.run(args.vectors)
    if not args.cert or not args.key:
        ap.error("--cert and --key are required")
    raise_nofile()
    try:
        asyncio.run(serve(args))
    except KeyboardInterrupt:
        pass
    return 0


if __name__ == "__main__":
    sys.exit(main())

