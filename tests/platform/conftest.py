"""A small real backend whose behaviour each test sets: status, delay, body."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from dataclasses import dataclass, field

import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer

from services.platform.app import add_route, answer_before_routing, create_base_app
from services.platform.settings import Settings


@dataclass
class Behaviour:
    status: int = 200
    delay: float = 0.0
    body: bytes = b'{"ok": true}'
    hits: int = 0
    request_ids: list[str] = field(default_factory=list)


async def start_backend() -> tuple[TestServer, str, Behaviour]:
    behaviour = Behaviour()

    async def handle(request: web.Request) -> web.Response:
        behaviour.hits += 1
        behaviour.request_ids.append(request.headers.get("X-Request-ID", ""))
        if behaviour.delay:
            await asyncio.sleep(behaviour.delay)  # the backend is slow: its behaviour under test
        return web.Response(
            body=behaviour.body, status=behaviour.status, content_type="application/json"
        )

    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", handle)
    server = TestServer(app, host="127.0.0.1")
    await server.start_server()
    return server, str(server.make_url("")).rstrip("/"), behaviour


@pytest.fixture
async def backend() -> AsyncIterator[tuple[str, Behaviour]]:
    server, url, behaviour = await start_backend()
    yield url, behaviour
    await server.close()


@pytest.fixture
async def replicas() -> AsyncIterator[list[tuple[str, Behaviour]]]:
    """Two replicas of one backend, as the web server sees several recommender boxes."""
    started = [await start_backend() for _ in range(2)]
    yield [(url, behaviour) for _, url, behaviour in started]
    for server, _, _ in started:
        await server.close()


@dataclass
class Remembering:
    """A service app whose ``/things/{thing}`` route keeps answers by request target."""

    url: str
    remembered: dict[str, bytes]
    routed: list[str]  # the targets the route's own handler saw


@pytest.fixture
async def remembering(tmp_path) -> AsyncIterator[Remembering]:
    app = create_base_app(Settings(var_dir=tmp_path, access_log=False), "t")
    remembered: dict[str, bytes] = {"/things/1?k=2": b'{"thing":1,"from":"memory"}'}
    routed: list[str] = []

    async def thing(request: web.Request) -> web.Response:
        routed.append(request.raw_path)
        return web.json_response({"thing": request.match_info["thing"], "from": "route"})

    assert answer_before_routing(app, "/things/{thing}", remembered.get)
    add_route(app, "GET", "/things/{thing}", thing)
    add_route(app, "POST", "/things/{thing}", thing)
    server = TestServer(app, host="127.0.0.1")
    await server.start_server()
    yield Remembering(str(server.make_url("")).rstrip("/"), remembered, routed)
    await server.close()
