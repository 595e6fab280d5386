"""The load generator's HTTP/1.1 engine: raw keep-alive connections over asyncio protocols.

Why not an HTTP client library: a load generator's CPU comes out of the machine under test, and
a general client (aiohttp) spends ~150 µs per request on things a load generator does not need
(request objects, header multidicts, a coroutine and a task per request). Here a request is a
pre-formatted byte string, a response is parsed just far enough to find its end (Content-Length,
chunked, or close-delimited), and completion is a plain callback: no coroutine, no task, no
future per request. ``make bench`` (``loadgen``) measures the CPU per request beside wrk.

One request is in flight per connection (no pipelining). Each origin has a pool capped at
``limit`` connections; requests beyond that wait in the pool's backlog, in order. Timeouts cost
no timer per request: each exchange carries a deadline, and one sweeper walks a FIFO of them.
Deadlines are nearly monotonic (submit order), so a timeout fires at most a few milliseconds
late, and the wait it records is the real one.
"""

from __future__ import annotations

import asyncio
import contextlib
import ssl as ssl_module
import time
from collections import deque
from collections.abc import Callable
from typing import cast
from urllib.parse import urlsplit

clock = time.perf_counter  # uvloop's loop.time() has only millisecond resolution

QUEUED, SENT, DONE = 0, 1, 2
MAX_HEAD = 64 * 1024  # a response head larger than this is a bad response
NO_BODY = frozenset({204, 304})


class Origin:
    """Scheme, host and port of a base URL, plus the path prefix requests are relative to."""

    __slots__ = ("base", "host", "port", "ssl", "prefix", "host_header")

    def __init__(self, base: str) -> None:
        parts = urlsplit(base)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError(f"not an http(s) URL: {base!r}")
        self.base = base.rstrip("/")
        self.host = parts.hostname
        self.ssl = parts.scheme == "https"
        self.port = parts.port or (443 if self.ssl else 80)
        self.prefix = parts.path.rstrip("/")
        self.host_header = parts.netloc.rpartition("@")[2]


class Exchange:
    """One request and, once done, its outcome. ``on_done(exchange)`` is called exactly once.

    The runner hangs its own bookkeeping on the spare slots (``tag``, ``index``, ``start``,
    ``user``) so a request needs no second object.
    """

    __slots__ = (
        "data",
        "on_done",
        "deadline",
        "state",
        "conn",
        "sent_at",
        "status",
        "head",
        "body",
        "error",
        "message",
        "queued_at",
        "keep",
        "tag",
        "index",
        "start",
        "user",
    )

    def __init__(self, data: bytes, on_done: Callable[[Exchange], None], deadline: float) -> None:
        self.data = data
        self.on_done = on_done
        self.deadline = deadline
        self.state = QUEUED
        self.conn: Connection | None = None
        self.sent_at = 0.0
        self.status = 0
        self.head = b""
        self.body = b""
        self.error: str | None = None  # None | "timeout" | "connection" | "bad_response"
        self.message = ""
        self.queued_at = 0.0  # when it had to wait for a free connection (0: it did not)
        self.keep = True  # keep head and body of a success (error bodies are always kept)
        self.tag: object = None
        self.index = 0
        self.start = 0.0
        self.user = -1

    def header_values(self, name: bytes) -> list[bytes]:
        """All values of one response header (``name`` in lower case), e.g. Set-Cookie."""
        out = []
        for line in self.head.split(b"\r\n")[1:]:
            key, _, value = line.partition(b":")
            if key.strip().lower() == name:
                out.append(value.strip())
        return out


class Connection(asyncio.Protocol):
    """One keep-alive connection; parses exactly one response per request it is given."""

    def __init__(self, pool: Pool) -> None:
        self.pool = pool
        self.transport: asyncio.Transport | None = None
        self.ex: Exchange | None = None
        self.buf = b""  # unparsed bytes (a response split over several reads)
        self.body_start = -1  # -1: reading the head
        self.length = -1  # body length; -1 chunked, -2 until close
        self.chunks = bytearray()
        self.scan = 0  # chunked: where the next chunk-size line starts
        self.close_after = False
        self.lost = False

    # ---- asyncio callbacks --------------------------------------------------------------
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)  # uvloop's is not a subclass

    def data_received(self, data: bytes) -> None:
        ex = self.ex
        if ex is None:
            return  # an unsolicited byte or the tail of a timed-out response: ignored
        # usually a whole response arrives in one piece: parse ``data`` itself, copy nothing
        buf = self.buf + data if self.buf else data
        if self.body_start < 0:
            end = buf.find(b"\r\n\r\n")
            if end < 0:
                self.buf = buf
                if len(buf) > MAX_HEAD:
                    self._fail(ex, "bad_response", "response head too large")
                return
            if not self._parse_head(ex, buf, end):
                return
        length = self.length
        if length >= 0:
            stop = self.body_start + length
            if len(buf) < stop:
                self.buf = buf
                return
            if ex.keep or ex.status >= 400:
                ex.body = buf[self.body_start : stop]
            self.buf = buf[stop:] if len(buf) > stop else b""
            self._complete(ex)
        elif length == -1:
            self.buf = buf
            self._parse_chunks(ex)
        else:
            self.buf = buf  # delimited by the close

    def connection_lost(self, exc: Exception | None) -> None:
        self.lost = True
        ex = self.ex
        self.ex = None
        if ex is not None and ex.state == SENT:
            if self.length == -2 and self.body_start >= 0:
                ex.body = self.buf[self.body_start :]
                self._reset()
                self.pool.discard(self)
                _finish(ex)
                return
            ex.error = "connection"
            ex.message = f"connection closed before the response ended ({exc or 'EOF'})"
            self.pool.discard(self)
            _finish(ex)
            return
        self.pool.discard(self)

    # ---- parsing ------------------------------------------------------------------------
    def _parse_head(self, ex: Exchange, buf: bytes, end: int) -> bool:
        # fast path: the usual casing, a plain Content-Length (what aiohttp, nginx... send)
        at = buf.find(b"\r\nContent-Length: ", 0, end)
        if at >= 0 and buf.startswith(b"HTTP/1.1 ") and ex.data[0] != 72:  # 72: "H" of HEAD
            status = buf[9:12]
            if status.isdigit() and buf[9] != 49 and status not in (b"204", b"304"):  # 49: "1"
                eol = buf.find(b"\r\n", at + 18)
                try:
                    self.length = int(buf[at + 18 : eol])
                except ValueError:
                    pass
                else:
                    ex.status = int(status)
                    if ex.keep:
                        ex.head = buf[:end]
                    self.body_start = end + 4
                    self.close_after = buf.find(b"\r\nConnection: close", 0, end) >= 0
                    return True
        return self._parse_head_slowly(ex, buf, end)

    def _parse_head_slowly(self, ex: Exchange, buf: bytes, end: int) -> bool:
        if not buf.startswith(b"HTTP/1.") or end < 12:
            self._fail(ex, "bad_response", f"not an HTTP/1.x response: {buf[:40]!r}")
            return False
        try:
            status = int(buf[9:12])
        except ValueError:
            self._fail(ex, "bad_response", f"bad status line: {buf[:40]!r}")
            return False
        lower = buf[:end].lower()
        ex.status = status
        if ex.keep:
            ex.head = buf[:end]
        self.body_start = end + 4
        self.close_after = b"\r\nconnection: close" in lower or buf.startswith(b"HTTP/1.0")
        at = lower.find(b"\r\ncontent-length:")
        if status in NO_BODY or status < 200 or ex.data.startswith(b"HEAD "):
            self.length = 0
        elif b"\r\ntransfer-encoding:" in lower and b"chunked" in lower:
            self.length = -1
            self.scan = self.body_start
            self.chunks = bytearray()
        elif at >= 0:
            eol = lower.find(b"\r\n", at + 2)
            try:
                self.length = int(lower[at + 17 : eol if eol >= 0 else None])
            except ValueError:
                self._fail(ex, "bad_response", "bad Content-Length")
                return False
        else:
            self.length = -2  # delimited by the server closing the connection
            self.close_after = True
        return True

    def _parse_chunks(self, ex: Exchange) -> None:
        buf = self.buf
        while True:
            eol = buf.find(b"\r\n", self.scan)
            if eol < 0:
                return
            line = buf[self.scan : eol].split(b";", 1)[0].strip()
            try:
                size = int(line, 16)
            except ValueError:
                self._fail(ex, "bad_response", f"bad chunk size {line[:20]!r}")
                return
            if size == 0:
                # last chunk, then optional trailers, then an empty line
                if buf[eol + 2 : eol + 4] == b"\r\n":
                    end = eol + 4
                else:
                    stop = buf.find(b"\r\n\r\n", eol + 2)
                    if stop < 0:
                        return
                    end = stop + 4
                if len(buf) < end:
                    return
                ex.body = bytes(self.chunks)
                self.buf = buf[end:] if len(buf) > end else b""
                self._complete(ex)
                return
            data_end = eol + 2 + size
            if len(buf) < data_end + 2:
                return
            if ex.keep or ex.status >= 400:
                self.chunks += buf[eol + 2 : data_end]
            self.scan = data_end + 2

    # ---- outcomes -----------------------------------------------------------------------
    def start(self, ex: Exchange) -> None:
        self.ex = ex
        ex.conn = self
        ex.state = SENT
        ex.sent_at = clock()
        assert self.transport is not None
        self.transport.write(ex.data)

    def _reset(self) -> None:
        self.body_start = -1
        self.length = -1

    def _complete(self, ex: Exchange) -> None:
        self.ex = None
        self.body_start = -1
        self.length = -1
        if self.close_after:
            self.close_after = False
            self.abort()
            self.pool.discard(self)
        elif self.pool.backlog:
            self.pool.release(self)
        else:
            self.pool.idle.append(self)
        if ex.state != DONE:
            ex.state = DONE
            ex.conn = None
            ex.on_done(ex)

    def _fail(self, ex: Exchange, kind: str, message: str) -> None:
        self.ex = None
        ex.error = kind
        ex.message = message
        self.abort()
        self.pool.discard(self)
        _finish(ex)

    def abort(self) -> None:
        self.lost = True
        if self.transport is not None:
            self.transport.abort()


def _finish(ex: Exchange) -> None:
    if ex.state != DONE:
        ex.state = DONE
        ex.conn = None
        ex.on_done(ex)


class Pool:
    """Connections to one origin: idle ones (LIFO, so few stay hot), a cap, a FIFO backlog."""

    def __init__(self, engine: Engine, origin: Origin) -> None:
        self.engine = engine
        self.origin = origin
        self.idle: list[Connection] = []
        self.conns: set[Connection] = set()
        self.opening = 0
        self.backlog: deque[Exchange] = deque()

    def submit(self, ex: Exchange) -> None:
        idle = self.idle
        while idle:
            conn = idle.pop()
            if not conn.lost:
                conn.start(ex)
                return
        ex.queued_at = clock()
        self.backlog.append(ex)
        self._grow()

    def _grow(self) -> None:
        if self.backlog and len(self.conns) + self.opening < self.engine.limit:
            self.opening += 1
            self.engine.loop.create_task(self._connect())

    async def _connect(self) -> None:
        origin, engine = self.origin, self.engine
        try:
            async with asyncio.timeout(engine.connect_timeout):
                _, conn = await engine.loop.create_connection(
                    lambda: Connection(self),
                    origin.host,
                    origin.port,
                    ssl=engine.ssl_context if origin.ssl else None,
                    server_hostname=origin.host if origin.ssl else None,
                )
        except Exception as exc:  # noqa: BLE001 - refused, timed out, TLS, DNS: all one outcome
            self.opening -= 1
            message = _describe(exc, origin)
            # one failed connect fails one waiting request (as if each request connected)
            while self.backlog:
                ex = self.backlog.popleft()
                if ex.state == QUEUED:
                    ex.error = "connection"
                    ex.message = message
                    _finish(ex)
                    break
            self._grow()
            return
        self.opening -= 1
        if engine.closed:  # the run ended while this connection was being opened
            conn.abort()
            return
        if conn.lost:  # closed between connect and now
            self._grow()
            return
        self.conns.add(conn)
        self.release(conn)

    def release(self, conn: Connection) -> None:
        """``conn`` is free: give it the oldest waiting request, or park it."""
        backlog = self.backlog
        while backlog:
            ex = backlog.popleft()
            if ex.state == QUEUED:
                conn.start(ex)
                return
        self.idle.append(conn)

    def discard(self, conn: Connection) -> None:
        if conn in self.conns:
            self.conns.discard(conn)
            with contextlib.suppress(ValueError):
                self.idle.remove(conn)
            self._grow()

    def close(self) -> None:
        for conn in list(self.conns):
            conn.abort()
        self.conns.clear()
        self.idle.clear()


def _describe(exc: BaseException, origin: Origin) -> str:
    where = f"{origin.host}:{origin.port}"
    if isinstance(exc, TimeoutError):
        return f"connect to {where} timed out"
    if isinstance(exc, ConnectionRefusedError):
        return f"connection to {where} refused"
    return f"cannot connect to {where}: {getattr(exc, 'strerror', None) or exc}"


class Engine:
    """Pools per origin, one deadline sweeper, and the counters the run reports."""

    def __init__(
        self,
        loop: asyncio.AbstractEventLoop,
        *,
        limit: int,
        timeout: float,
        user_agent: str,
    ) -> None:
        self.loop = loop
        self.limit = limit
        self.timeout = timeout
        self.connect_timeout = min(timeout, 10.0)
        self.user_agent = user_agent
        self.pools: dict[str, Pool] = {}
        self.ssl_context: ssl_module.SSLContext | None = None
        self.deadlines: deque[Exchange] = deque()
        self.sweeper: asyncio.TimerHandle | None = None
        # sweep granularity: a timeout is noticed at most this late (1 % of the timeout)
        self.granularity = min(max(timeout / 100.0, 0.001), 0.1)
        self.closed = False

    def origin(self, base: str) -> Pool:
        pool = self.pools.get(base)
        if pool is None:
            origin = Origin(base)
            if origin.ssl and self.ssl_context is None:
                self.ssl_context = ssl_module.create_default_context()
            pool = self.pools[base] = Pool(self, origin)
        return pool

    def submit(self, pool: Pool, ex: Exchange) -> None:
        """Send ``ex`` on ``pool`` (now or when a connection frees) and watch its deadline."""
        if self.closed:
            ex.error, ex.message = "cancelled", "engine closed"
            _finish(ex)
            return
        self.deadlines.append(ex)
        if self.sweeper is None:
            self._arm(ex.deadline)
        idle = pool.idle
        if idle and not pool.backlog:
            conn = idle.pop()
            if not conn.lost:
                conn.start(ex)
                return
        pool.submit(ex)

    def _arm(self, at: float) -> None:
        delay = max(at - clock(), 0.0) + self.granularity
        self.sweeper = self.loop.call_later(delay, self._sweep)

    def _sweep(self) -> None:
        self.sweeper = None
        now = clock()
        deadlines = self.deadlines
        while deadlines and deadlines[0].deadline <= now:
            ex = deadlines.popleft()
            if ex.state != DONE:
                self.expire(ex, "timeout", f"no response within {self.timeout:g} s")
        while deadlines and deadlines[0].state == DONE:
            deadlines.popleft()
        if deadlines and not self.closed:
            self._arm(deadlines[0].deadline)

    def expire(self, ex: Exchange, kind: str, message: str) -> None:
        """End ``ex`` now as ``kind``; an in-flight request's connection is dropped with it."""
        if ex.state == DONE:
            return
        conn = ex.conn
        if conn is not None:
            conn.ex = None
            conn.abort()
            conn.pool.discard(conn)
        ex.error = kind
        ex.message = message
        _finish(ex)

    def close(self) -> None:
        self.closed = True
        if self.sweeper is not None:
            self.sweeper.cancel()
            self.sweeper = None
        for pool in self.pools.values():
            pool.close()


def format_request(
    origin: Origin,
    method: str,
    target: str,
    user_agent: str,
    body: bytes = b"",
    content_type: str | None = None,
    cookie: str | None = None,
) -> bytes:
    """The request bytes: request line, Host, User-Agent, optional Cookie and body headers."""
    head = (
        f"{method} {origin.prefix}{target} HTTP/1.1\r\nHost: {origin.host_header}\r\n"
        f"User-Agent: {user_agent}\r\n"
    )
    if cookie:
        head += f"Cookie: {cookie}\r\n"
    if body or method in ("POST", "PUT", "PATCH"):
        head += f"Content-Length: {len(body)}\r\n"
        if content_type:
            head += f"Content-Type: {content_type}\r\n"
    return (head + "\r\n").encode("latin-1") + body


async def probe(base: str, timeout: float) -> str | None:
    """Can a TCP (and TLS) connection to ``base`` be opened? None if so, else why not."""
    origin = Origin(base)
    loop = asyncio.get_running_loop()
    try:
        async with asyncio.timeout(timeout):
            transport, _ = await loop.create_connection(
                asyncio.Protocol,
                origin.host,
                origin.port,
                ssl=ssl_module.create_default_context() if origin.ssl else None,
                server_hostname=origin.host if origin.ssl else None,
            )
    except (OSError, TimeoutError, ssl_module.SSLError) as exc:
        return _describe(exc, origin)
    transport.close()
    return None
