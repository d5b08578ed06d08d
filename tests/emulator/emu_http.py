"""emu_http.py - a minimal HTTP/1.1 server on asyncio streams (TLS via ssl.SSLContext):
keep-alive, Content-Length and chunked bodies, Expect: 100-continue; a response marked
`drop` closes the connection without an answer.

Invariant: one coroutine per connection, never a thread; a handler that waits (delayed or
held pushes) only awaits, so thousands of pending requests cost memory, not the loop.
"""

import asyncio
import urllib.parse

MAX_HEAD = 65536
MAX_BODY = 16 * 1024 * 1024
IDLE_TIMEOUT_S = 600
REASONS = {100: "Continue", 200: "OK", 400: "Bad Request", 401: "Unauthorized",
           403: "Forbidden", 404: "Not Found", 405: "Method Not Allowed",
           411: "Length Required", 413: "Payload Too Large",
           429: "Too Many Requests", 431: "Request Header Fields Too Large",
           500: "Internal Server Error", 502: "Bad Gateway",
           503: "Service Unavailable", 504: "Gateway Timeout"}


class BadRequest(Exception):
    def __init__(self, status):
        super().__init__(status)
        self.status = status


class Request:
    """One parsed request. headers: lower-case name -> value (repeats joined by ', ')."""

    __slots__ = ("method", "target", "path", "query", "version", "headers", "body",
                 "conn")

    def __init__(self, method, target, version, headers, conn):
        self.method = method
        self.target = target
        raw_path, _, self.query = target.partition("?")
        self.path = urllib.parse.unquote(raw_path)
        self.version = version
        self.headers = headers
        self.body = b""
        self.conn = conn


class Response:
    """An answer; drop=True means: close the connection without answering."""

    __slots__ = ("status", "body", "headers", "close", "drop")

    def __init__(self, status, body=b"", headers=None, close=False, drop=False):
        self.status = status
        self.body = body
        self.headers = headers or {}
        self.close = close
        self.drop = drop


class Conn:
    """One client connection: its streams and the bytes read but not yet parsed."""

    def __init__(self, reader, writer):
        self.reader = reader
        self.writer = writer
        self.buf = bytearray()
        self.eof = False

    async def fill(self, timeout=None):
        """Reads more bytes into buf; False at EOF or on a broken connection."""
        try:
            if timeout is None:
                data = await self.reader.read(65536)
            else:
                data = await asyncio.wait_for(self.reader.read(65536), timeout)
        except (ConnectionError, OSError, asyncio.TimeoutError, asyncio.IncompleteReadError):
            data = b""
        except Exception:  # ssl errors on abrupt close
            data = b""
        if not data:
            self.eof = True
            return False
        self.buf.extend(data)
        return True

    async def wait_gone(self, limit_s):
        """Waits until the client closes the connection (True) or limit_s passes (False).
        Bytes the client sends meanwhile (a pipelined request) are kept in buf."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + limit_s
        while not self.eof:
            left = deadline - loop.time()
            if left <= 0:
                return False
            try:
                await asyncio.wait_for(self._read_once(), left)
            except asyncio.TimeoutError:
                return False
        return True

    async def _read_once(self):
        await self.fill()

    async def take_until(self, marker, limit, timeout=None):
        while True:
            idx = self.buf.find(marker)
            if idx >= 0:
                out = bytes(self.buf[: idx + len(marker)])
                del self.buf[: idx + len(marker)]
                return out
            if len(self.buf) > limit:
                raise BadRequest(431)
            if not await self.fill(timeout):
                return None

    async def take(self, n):
        while len(self.buf) < n:
            if not await self.fill():
                raise BadRequest(400)
        out = bytes(self.buf[:n])
        del self.buf[:n]
        return out

    def write(self, data):
        self.writer.write(data)


def parse_head(head, conn):
    lines = head.decode("latin-1").split("\r\n")
    parts = lines[0].split(" ")
    if len(parts) != 3 or not parts[2].startswith("HTTP/1."):
        raise BadRequest(400)
    headers = {}
    for line in lines[1:]:
        if not line:
            continue
        name, sep, value = line.partition(":")
        if not sep:
            raise BadRequest(400)
        name = name.strip().lower()
        value = value.strip()
        headers[name] = headers[name] + ", " + value if name in headers else value
    return Request(parts[0], parts[1], parts[2], headers, conn)


async def read_chunked(conn):
    body = bytearray()
    while True:
        line = await conn.take_until(b"\r\n", 1024)
        if line is None:
            raise BadRequest(400)
        try:
            size = int(line.split(b";")[0].strip(), 16)
        except ValueError:
            raise BadRequest(400) from None
        if size == 0:
            while True:  # trailers end with an empty line
                trailer = await conn.take_until(b"\r\n", MAX_HEAD)
                if trailer is None or trailer == b"\r\n":
                    return bytes(body)
        if len(body) + size > MAX_BODY:
            raise BadRequest(413)
        body.extend(await conn.take(size))
        await conn.take(2)


async def read_body(conn, req):
    if "chunked" in req.headers.get("transfer-encoding", "").lower():
        if req.headers.get("expect", "").lower() == "100-continue":
            conn.write(b"HTTP/1.1 100 Continue\r\n\r\n")
        return await read_chunked(conn)
    length = req.headers.get("content-length")
    if length is None:
        return b""
    try:
        n = int(length)
    except ValueError:
        raise BadRequest(400) from None
    if n < 0:
        raise BadRequest(400)
    if n > MAX_BODY:
        raise BadRequest(413)
    if n and req.headers.get("expect", "").lower() == "100-continue" and len(conn.buf) < n:
        conn.write(b"HTTP/1.1 100 Continue\r\n\r\n")
    return await conn.take(n)


def wants_close(req):
    token = req.headers.get("connection", "").lower()
    if req.version == "HTTP/1.0":
        return "keep-alive" not in token
    return "close" in token


def encode_response(resp, close):
    reason = REASONS.get(resp.status, "Status")
    head = ["HTTP/1.1 %d %s" % (resp.status, reason),
            "Content-Length: %d" % len(resp.body),
            "Connection: " + ("close" if close else "keep-alive")]
    if "Content-Type" not in resp.headers:
        head.append("Content-Type: application/json")
    for k, v in resp.headers.items():
        head.append("%s: %s" % (k, v))
    return ("\r\n".join(head) + "\r\n\r\n").encode("latin-1") + resp.body


async def serve_conn(reader, writer, handler):
    """Serves requests on one connection until close, error or idle timeout."""
    conn = Conn(reader, writer)
    try:
        while True:
            try:
                head = await conn.take_until(b"\r\n\r\n", MAX_HEAD, IDLE_TIMEOUT_S)
                if head is None:
                    break
                req = parse_head(head, conn)
                req.body = await read_body(conn, req)
            except BadRequest as exc:
                conn.write(encode_response(Response(exc.status), True))
                break
            resp = await handler(req)
            if resp is None or resp.drop:  # client gone, or a fault drops the connection
                break
            close = resp.close or wants_close(req)
            conn.write(encode_response(resp, close))
            await writer.drain()
            if close:
                break
    except (ConnectionError, OSError):
        pass
    except Exception:  # an SSL error on a half-closed socket: drop the connection
        pass
    finally:
        try:
            writer.close()
        except Exception:
            pass
