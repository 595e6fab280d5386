"""Graceful shutdown, per service: SIGTERM while a request is in flight; the request completes
with a 200, then the process exits 0.

A request is held in flight without sleeps: ``Expect: 100-continue`` makes the server confirm it
has parsed the request and started handling it, and a lock the test holds keeps the handler
waiting (the recommender's registry lock, the SQLite file of the catalog and of the subscription
store) until SIGTERM has been delivered. The web server's page waits on a slow backend.

(The request body is always sent before SIGTERM: once shutting down, aiohttp drops the data
still arriving on open connections, so a request whose body is mid-upload at SIGTERM is not
finished but cut after ``shutdown_timeout``.)
"""

from __future__ import annotations

import asyncio
import fcntl
import shutil
import signal
import sqlite3
from pathlib import Path
from urllib.parse import urlsplit

import aiohttp
import orjson
from aiohttp.test_utils import TestServer

from recommender.registry import ModelRegistry
from tests.faults.conftest import FaultStack
from tests.support import async_wait_until, port_open
from tests.web import stubs


def _port(url: str) -> int:
    return urlsplit(url).port or 80


async def start_request(
    url: str, method: str, path: str, headers: dict[str, str], length: int
) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    """Send the request head, and return once the server said "100 Continue": it is handling
    the request and waiting for the body."""
    reader, writer = await asyncio.open_connection("127.0.0.1", _port(url))
    head = [
        f"{method} {path} HTTP/1.1",
        "Host: 127.0.0.1",
        f"Content-Length: {length}",
        "Expect: 100-continue",
        "Connection: close",
    ]
    head += [f"{k}: {v}" for k, v in headers.items()]
    writer.write(("\r\n".join(head) + "\r\n\r\n").encode())
    await writer.drain()
    interim = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 5)
    assert interim.startswith(b"HTTP/1.1 100"), interim
    return reader, writer


async def finish_request(
    reader: asyncio.StreamReader, writer: asyncio.StreamWriter, body: bytes
) -> tuple[int, dict]:
    writer.write(body)
    await writer.drain()
    raw = await asyncio.wait_for(reader.read(), 10)
    writer.close()
    head, _, payload = raw.partition(b"\r\n\r\n")
    status = int(head.split(b" ", 2)[1])
    if b"transfer-encoding: chunked" in head.lower():
        payload = _unchunk(payload)
    return status, orjson.loads(payload)


def _unchunk(data: bytes) -> bytes:
    out = b""
    while data:
        size, _, rest = data.partition(b"\r\n")
        n = int(size, 16)
        if n == 0:
            break
        out += rest[:n]
        data = rest[n + 2 :]
    return out


async def listener_closed(url: str) -> None:
    async def closed() -> bool:
        return not port_open(_port(url))

    await async_wait_until(closed, 10, f"{url} to stop listening after SIGTERM")


async def exit_code(process, timeout: float = 10.0) -> int:
    async def exited() -> bool:
        return process.proc.poll() is not None

    await async_wait_until(exited, timeout, "the process to exit")
    return process.proc.returncode


def republished_registry(model_dir: Path, tmp_path: Path) -> Path:
    """A private copy of the session's registry with a second version published, so that a
    rollback has somewhere to go (the shared registry is never changed)."""
    target = tmp_path / "models"
    shutil.copytree(model_dir, target, symlinks=True)
    registry = ModelRegistry(target)
    model, manifest = registry.load()
    registry.register(model, data_hash=manifest.data_hash, metrics={}, trained_seconds=0.0)
    return target


async def test_recommender_finishes_in_flight_request(spawn, model_dir: Path, tmp_path: Path):
    """A model rollback waits on the registry's lock (held here) when SIGTERM comes."""
    models = republished_registry(model_dir, tmp_path)
    first = ModelRegistry(model_dir).current_version()
    url, process = await spawn("recommender", model_dir=str(models))
    with open(models / ".lock", "a+") as lock:
        fcntl.flock(lock.fileno(), fcntl.LOCK_EX)
        try:
            reader, writer = await start_request(
                url, "POST", "/v1/model/rollback", {"Authorization": "Bearer test-admin-token"}, 0
            )
            process.signal(signal.SIGTERM)
            await listener_closed(url)  # shutting down, with the rollback still in flight
        finally:
            fcntl.flock(lock.fileno(), fcntl.LOCK_UN)
    status, data = await finish_request(reader, writer, b"")
    assert status == 200 and data["version"] == first and data["changed"], data
    assert await exit_code(process) == 0, process.log_tail()


async def test_subscription_finishes_in_flight_request(stack: FaultStack):
    """A cancellation waits on the SQLite write lock (held here) when SIGTERM comes."""
    process = stack.process("subscription")
    db = Path(stack.stack.env["MARQUEE_VAR_DIR"]) / "subscriptions.sqlite3"
    headers = {"Authorization": "Bearer test-service-token", "Idempotency-Key": "shutdown-0001"}
    lock = sqlite3.connect(db, timeout=5, isolation_level=None)
    try:
        lock.execute("BEGIN EXCLUSIVE")  # the service's next write waits for this lock
        reader, writer = await start_request(
            stack.url("subscription"), "DELETE", "/v1/users/77/subscription", headers, 0
        )
        process.signal(signal.SIGTERM)  # delivered while the write is waiting
    finally:
        lock.execute("ROLLBACK")
        lock.close()
    status, data = await finish_request(reader, writer, b"")
    assert status == 200 and data["status"] == "none", data
    assert await exit_code(process) == 0, process.log_tail()


async def test_catalog_finishes_in_flight_request(stack: FaultStack, catalog_db: Path):
    process = stack.process("catalog")
    lock = sqlite3.connect(catalog_db, timeout=5, isolation_level=None)
    try:
        lock.execute("BEGIN EXCLUSIVE")  # the catalog's next read waits for this lock
        reader, writer = await start_request(
            stack.url("catalog"), "GET", "/v1/movies/search?q=shutdown+test", {}, 0
        )
        process.signal(signal.SIGTERM)  # delivered while the read is waiting
    finally:
        lock.execute("ROLLBACK")
        lock.close()
    status, data = await finish_request(reader, writer, b"")
    assert status == 200 and "items" in data, data
    assert await exit_code(process) == 0, process.log_tail()


async def test_web_finishes_in_flight_page(spawn):
    """The page waits on a slow catalog (500 ms) when SIGTERM comes; it is still served."""
    catalog = stubs.Behaviour(delay=0.5)
    apps = [
        stubs.catalog_app(catalog),
        stubs.subscription_app(stubs.Behaviour()),
        stubs.recommender_app(stubs.Behaviour()),
    ]
    servers = [TestServer(app, host="127.0.0.1") for app in apps]
    for server in servers:
        await server.start_server()
    urls = [str(server.make_url("")).rstrip("/") for server in servers]
    try:
        web_url, process = await spawn(
            "web",
            catalog_url=urls[0],
            subscription_url=urls[1],
            recommender_urls=urls[2],
            catalog_timeout="3",
            page_budget="3",
        )
        async with aiohttp.ClientSession() as session:
            page = asyncio.create_task(session.get(f"{web_url}/api/pages/movies/1"))

            async def catalog_called() -> bool:
                return "/v1/movies/1" in catalog.calls

            await async_wait_until(catalog_called, 10, "the page to call the slow catalog")
            process.signal(signal.SIGTERM)
            await listener_closed(web_url)
            async with await page as resp:
                assert resp.status == 200
                data = await resp.json()
        assert data["movie"]["title"] == "Toy Story" and data["degraded"] == []
        assert await exit_code(process) == 0, process.log_tail()
    finally:
        catalog.release.set()
        for server in servers:
            await server.close()
