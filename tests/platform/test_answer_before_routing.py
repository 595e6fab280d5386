"""``answer_before_routing``: a GET whose exact target a route remembered is answered without
aiohttp's routing, and is otherwise indistinguishable from the route's own answers."""

from __future__ import annotations

from aiohttp import web
from aiohttp.test_utils import TestServer

from services.platform.app import add_route, answer_before_routing, create_base_app
from services.platform.settings import Settings
from tests.observability.helpers import scrape, value


async def test_a_remembered_target_is_answered_without_reaching_the_route(remembering, http):
    async with http.get(remembering.url + "/things/1?k=2") as resp:
        assert resp.status == 200 and resp.content_type == "application/json"
        assert await resp.read() == b'{"thing":1,"from":"memory"}'
        assert len(resp.headers["X-Request-ID"]) == 32
    assert remembering.routed == []


async def test_a_remembered_answer_is_counted_as_the_routes_request(remembering, http):
    for _ in range(3):
        await (await http.get(remembering.url + "/things/1?k=2")).release()
    text = await scrape(http, remembering.url)
    counted = value(text, "marquee_http_requests_total", route="/things/{thing}", status="200")
    assert counted == 3


async def test_any_other_target_is_routed(remembering, http):
    for target in ("/things/1", "/things/1?k=02", "/things/2?k=2"):
        async with http.get(remembering.url + target) as resp:
            assert (resp.status, (await resp.json())["from"]) == (200, "route")
    assert remembering.routed == ["/things/1", "/things/1?k=02", "/things/2?k=2"]


async def test_other_methods_on_a_remembered_target_are_routed(remembering, http):
    async with http.post(remembering.url + "/things/1?k=2") as resp:
        assert (resp.status, (await resp.json())["from"]) == (200, "route")
    async with http.head(remembering.url + "/things/1?k=2") as resp:
        assert resp.status == 200
    assert remembering.routed == ["/things/1?k=2"] * 2


async def test_a_target_forgotten_is_routed_again(remembering, http):
    remembering.remembered.clear()
    async with http.get(remembering.url + "/things/1?k=2") as resp:
        assert (await resp.json())["from"] == "route"
    assert remembering.routed == ["/things/1?k=2"]


async def test_an_app_with_middlewares_of_its_own_keeps_routing_every_request(tmp_path, http):
    app = create_base_app(Settings(var_dir=tmp_path, access_log=False), "web", own_middlewares=True)
    seen: list[str] = []

    @web.middleware
    async def record(request: web.Request, handler):
        seen.append(request.raw_path)
        return await handler(request)

    async def thing(request: web.Request) -> web.Response:
        return web.json_response({"from": "route"})

    app.middlewares.append(record)
    assert not answer_before_routing(app, "/things/{thing}", {"/things/1": b"{}"}.get)
    add_route(app, "GET", "/things/{thing}", thing)
    server = TestServer(app, host="127.0.0.1")
    await server.start_server()
    try:
        async with http.get(str(server.make_url("/things/1"))) as resp:
            assert (await resp.json())["from"] == "route"
    finally:
        await server.close()
    assert seen == ["/things/1"]
