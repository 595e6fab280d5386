"""Keep-alive HTTP/1.1 connections to one backend endpoint, for service-to-service calls.

Why not aiohttp's client: a page makes three or four backend calls, and aiohttp's client spends
~110-135 µs of CPU on each (request and response objects, connector bookkeeping, timers, tracing
hooks); this pool speaks the same protocol in ~25 µs, measured against one server in one run
(docs/performance.md). Parsing is httptools' (llhttp, the parser Node.js uses), so the protocol
handling is a well-kept library's; what is ours is the pooling: a bounded number of connections
per endpoint (the bulkhead: one slow backend cannot take every socket), idle connections reused
in LIFO order and dropped after ``idle_timeout``, and waiters served in FIFO order.

A connection whose exchange did not finish cleanly (a deadline, a cancellation, a parse error)
is aborted, never reused: its state on the wire is unknown. A request that fails on a reused
connection before any byte of the answer arrived (the server had closed it while idle) is sent
once more on a fresh connection when the caller says the request is safe to repeat.
"""

from __future__ import annotations

import asyncio
import ssl
import time
from collections import deque

import httptools

Response = tuple[int, bytes]  # status, body


class StaleConnection(ConnectionError):
    """The connection died before any byte of the answer arrived."""


class ProtocolError(ConnectionError):
    """The peer's bytes are not HTTP/1.1."""


class _Connection(asyncio.Protocol):
    """One connection, one exchange at a time (no pipelining)."""

    __slots__ = ("pool", "transport", "parser", "waiter", "chunks", "started", "closed", "used_at")

    def __init__(self, pool: ConnectionPool) -> None:
        self.pool = pool
        self.transport: asyncio.Transport | None = None
        self.parser = httptools.HttpResponseParser(self)
        self.waiter: asyncio.Future[Response] | None = None
        self.chunks: list[bytes] = []
        self.started = False  # a byte of the current answer has arrived
        self.closed = False
        self.used_at = 0.0

    # ---- asyncio protocol ---------------------------------------------------------------------
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def data_received(self, data: bytes) -> None:
        self.started = True
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserError as exc:
            self._fail(ProtocolError(f"bad HTTP from the backend: {exc}"))
            self.abort()

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        if self.started:
            self._fail(ConnectionResetError("the backend closed the connection mid-answer"))
        else:
            self._fail(StaleConnection("the backend closed the connection"))
        self.pool._forget(self)

    # ---- httptools callbacks ------------------------------------------------------------------
    def on_body(self, body: bytes) -> None:
        self.chunks.append(body)

    def on_message_complete(self) -> None:
        waiter, self.waiter = self.waiter, None
        body = b"".join(self.chunks)
        self.chunks = []
        if not self.parser.should_keep_alive():
            self.abort()
        if waiter is not None and not waiter.done():
            waiter.set_result((self.parser.get_status_code(), body))

    # ---- exchange -----------------------------------------------------------------------------
    def send(self, data: bytes) -> asyncio.Future[Response]:
        waiter = asyncio.get_running_loop().create_future()
        if self.closed or self.transport is None:
            waiter.set_exception(StaleConnection("the backend closed the connection"))
            return waiter
        self.waiter = waiter
        self.started = False
        self.transport.write(data)
        return waiter

    def _fail(self, exc: Exception) -> None:
        waiter, self.waiter = self.waiter, None
        if waiter is not None and not waiter.done():
            waiter.set_exception(exc)

    def abort(self) -> None:
        self.closed = True
        if self.transport is not None:
            self.transport.abort()


class ConnectionPool:
    """At most ``limit`` connections to ``host:port`` (TLS with ``ssl_context``)."""

    def __init__(
        self,
        host: str,
        port: int,
        *,
        limit: int = 100,
        ssl_context: ssl.SSLContext | None = None,
        idle_timeout: float = 30.0,
    ) -> None:
        self.host = host
        self.port = port
        self.limit = limit
        self.ssl_context = ssl_context
        self.idle_timeout = idle_timeout
        self.size = 0  # open or opening
        self._idle: list[_Connection] = []
        self._waiters: deque[asyncio.Future[_Connection | None]] = deque()
        self._closed = False

    async def request(self, data: bytes, *, repeatable: bool) -> Response:
        """Send one request (head and body, already encoded) and return its answer.

        Cancellation (the caller's deadline) aborts the connection; ``repeatable`` lets a
        request that met a connection the server had closed while idle go out once more."""
        for attempt in (0, 1):
            conn, reused = await self._acquire()
            try:
                response = await conn.send(data)
            except StaleConnection:
                conn.abort()
                if not (reused and repeatable and attempt == 0):
                    raise
                continue
            except BaseException:
                conn.abort()
                raise
            self._release(conn)
            return response
        raise AssertionError("unreachable")

    async def _acquire(self) -> tuple[_Connection, bool]:
        """An idle connection (reused=True) or a new one, waiting while ``limit`` are busy."""
        now = time.monotonic()
        while self._idle:
            conn = self._idle.pop()
            if not conn.closed and now - conn.used_at < self.idle_timeout:
                return conn, True
            conn.abort()
        while self.size >= self.limit:
            waiter = asyncio.get_running_loop().create_future()
            self._waiters.append(waiter)
            try:
                handed = await waiter
            except asyncio.CancelledError:
                if waiter.done() and not waiter.cancelled():
                    self._hand_on(waiter.result())  # given to us as we were cancelled: pass on
                raise
            if handed is not None:
                return handed, True
        if self._closed:
            raise ConnectionError("the pool is closed")
        self.size += 1
        try:
            _, conn = await asyncio.get_running_loop().create_connection(
                lambda: _Connection(self), self.host, self.port, ssl=self.ssl_context
            )
        except BaseException:
            self.size -= 1
            self._hand_on(None)
            raise
        return conn, False

    def _release(self, conn: _Connection) -> None:
        if conn.closed or self._closed:
            return  # _forget counted it out
        conn.used_at = time.monotonic()
        self._hand_on(conn)

    def _hand_on(self, conn: _Connection | None) -> None:
        """Give a free connection (or, with None, a free slot) to the first live waiter."""
        while self._waiters:
            waiter = self._waiters.popleft()
            if not waiter.done():
                waiter.set_result(conn)
                return
        if conn is not None:
            self._idle.append(conn)

    def _forget(self, conn: _Connection) -> None:
        """A connection closed: its slot is free again."""
        self.size -= 1
        if conn in self._idle:
            self._idle.remove(conn)
        self._hand_on(None)

    def close(self) -> None:
        self._closed = True
        for conn in self._idle:
            conn.abort()
        self._idle.clear()
        while self._waiters:
            waiter = self._waiters.popleft()
            if not waiter.done():
                waiter.set_exception(ConnectionError("the pool is closed"))
