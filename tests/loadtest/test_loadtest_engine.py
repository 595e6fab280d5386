"""The raw HTTP/1.1 engine against real servers: every way a response can end, keep-alive reuse,
and what it reports when the server misbehaves."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable

from aiohttp import web

from loadtest.engine import Engine, Exchange, clock, format_request

Handler = Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]]


async def fetch_all(base: str, targets: list[str], *, limit: int = 4, timeout: float = 5.0):
    """GET each target through one engine; the finished exchanges, in completion order."""
    loop = asyncio.get_running_loop()
    engine = Engine(loop, limit=limit, timeout=timeout, user_agent="test")
    pool = engine.origin(base)
    done: list[Exchange] = []
    finished = loop.create_future()

    def on_done(ex: Exchange) -> None:
        done.append(ex)
        if len(done) == len(targets) and not finished.done():
            finished.set_result(None)

    for target in targets:
        data = format_request(pool.origin, "GET", target, "test")
        engine.submit(pool, Exchange(data, on_done, clock() + timeout))
    await asyncio.wait_for(finished, timeout * 3)
    conns = len(pool.conns)
    engine.close()
    return done, conns


async def raw_server(handler: Handler) -> tuple[str, asyncio.Server]:
    server = await asyncio.start_server(handler, "127.0.0.1", 0)
    return f"http://127.0.0.1:{server.sockets[0].getsockname()[1]}", server


async def test_chunked_streamed_responses_are_read_to_the_end(serve):
    async def streamed(request: web.Request) -> web.StreamResponse:
        resp = web.StreamResponse()
        resp.enable_chunked_encoding()
        await resp.prepare(request)
        for part in (b"<html>", b"x" * 5000, b"</html>"):
            await resp.write(part)
            await asyncio.sleep(0.005)
        await resp.write_eof()
        return resp

    app = web.Application()
    app.router.add_get("/{tail:.*}", streamed)
    url = await serve(app)
    done, conns = await fetch_all(url, ["/a", "/b", "/c"], limit=1)
    assert [ex.status for ex in done] == [200, 200, 200]
    assert all(ex.body == b"<html>" + b"x" * 5000 + b"</html>" for ex in done)
    assert conns == 1  # one keep-alive connection served all three


async def test_keep_alive_reuses_few_connections(serve):
    async def ok(request: web.Request) -> web.Response:
        return web.Response(text="ok")

    app = web.Application()
    app.router.add_get("/{tail:.*}", ok)
    url = await serve(app)
    done, conns = await fetch_all(url, [f"/{i}" for i in range(40)], limit=4)
    assert len(done) == 40 and {ex.error for ex in done} == {None}
    assert conns <= 4


async def test_connection_close_and_close_delimited_bodies():
    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.readuntil(b"\r\n\r\n")
        # no Content-Length, no chunking: the body ends when the server closes
        writer.write(b"HTTP/1.1 200 OK\r\nConnection: close\r\n\r\nall of ")
        await writer.drain()
        await asyncio.sleep(0.01)
        writer.write(b"it")
        writer.close()

    url, server = await raw_server(handler)
    async with server:
        done, _ = await fetch_all(url, ["/1", "/2"], limit=1)
    assert [(ex.status, ex.body, ex.error) for ex in done] == [(200, b"all of it", None)] * 2


async def test_a_response_split_into_tiny_pieces_is_reassembled():
    body = b'{"items": [1, 2, 3]}'
    response = b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n%s" % (len(body), body)

    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        while True:
            try:
                await reader.readuntil(b"\r\n\r\n")
            except asyncio.IncompleteReadError:
                return
            for i in range(0, len(response), 7):
                writer.write(response[i : i + 7])
                await writer.drain()
                await asyncio.sleep(0.001)

    url, server = await raw_server(handler)
    async with server:
        done, _ = await fetch_all(url, ["/a", "/b"], limit=1)
    assert [(ex.status, ex.body) for ex in done] == [(200, body)] * 2


async def test_garbage_is_a_bad_response_and_an_error_body_is_kept():
    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        line = await reader.readuntil(b"\r\n\r\n")
        if line.startswith(b"GET /garbage"):
            writer.write(b"SSH-2.0-OpenSSH\r\n\r\n")
        else:
            writer.write(b"HTTP/1.1 503 Service Unavailable\r\nContent-Length: 4\r\n\r\nbusy")
        await writer.drain()
        writer.close()

    url, server = await raw_server(handler)
    async with server:
        done, _ = await fetch_all(url, ["/garbage", "/busy"], limit=2)
    by_error = {ex.error: ex for ex in done}
    assert by_error["bad_response"].message.startswith("not an HTTP/1.x response")
    assert by_error[None].status == 503 and by_error[None].body == b"busy"


async def test_a_silent_server_times_out_at_the_deadline():
    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await asyncio.sleep(30)

    url, server = await raw_server(handler)
    async with server:
        started = clock()
        done, _ = await fetch_all(url, ["/x"], timeout=0.3)
    (ex,) = done
    assert ex.error == "timeout" and "0.3 s" in ex.message
    assert clock() - started >= 0.3
