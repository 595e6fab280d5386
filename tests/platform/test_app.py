import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer

from services.platform.app import add_ready_check, add_route, create_base_app
from services.platform.errors import BadRequest
from services.platform.settings import Settings


@pytest.fixture
async def base_url(tmp_path):
    app = create_base_app(Settings(var_dir=tmp_path, access_log=False, max_body_bytes=100), "t")

    async def bad(request: web.Request) -> web.Response:
        raise BadRequest("k must be an integer", code="invalid_param")

    async def boom(request: web.Request) -> web.Response:
        raise RuntimeError("secret internals")

    async def echo(request: web.Request) -> web.Response:
        return web.Response(body=await request.read())

    add_route(app, "GET", "/bad", bad)
    add_route(app, "GET", "/boom", boom)
    add_route(app, "POST", "/echo", echo)
    ready = {"value": False}
    add_ready_check(app, "thing", lambda: ready["value"])
    server = TestServer(app, host="127.0.0.1")
    await server.start_server()
    yield str(server.make_url("")).rstrip("/"), ready
    await server.close()


async def test_domain_errors_are_json_with_status_code_and_message(base_url, http):
    url, _ = base_url
    async with http.get(url + "/bad") as resp:
        assert resp.status == 400
        assert await resp.json() == {
            "error": {"code": "invalid_param", "message": "k must be an integer"}
        }


async def test_unknown_routes_are_json_404(base_url, http):
    url, _ = base_url
    async with http.get(url + "/nope") as resp:
        assert resp.status == 404
        assert (await resp.json())["error"]["code"] == "not_found"


async def test_wrong_method_is_json_405(base_url, http):
    url, _ = base_url
    async with http.post(url + "/bad") as resp:
        assert resp.status == 405
        assert (await resp.json())["error"]["code"] == "method_not_allowed"


async def test_unexpected_errors_never_leak_a_traceback(base_url, http):
    url, _ = base_url
    async with http.get(url + "/boom") as resp:
        text = await resp.text()
    assert resp.status == 500
    assert "secret internals" not in text and "Traceback" not in text


async def test_too_large_bodies_get_413_json(base_url, http):
    url, _ = base_url
    async with http.post(url + "/echo", data=b"x" * 1000) as resp:
        assert resp.status == 413
        assert (await resp.json())["error"]["code"] == "too_large"


async def test_request_id_is_echoed_or_made(base_url, http):
    url, _ = base_url
    async with http.get(url + "/healthz", headers={"X-Request-ID": "abc-1"}) as resp:
        assert resp.headers["X-Request-ID"] == "abc-1"
    async with http.get(url + "/healthz") as resp:
        assert len(resp.headers["X-Request-ID"]) == 32


async def test_readyz_follows_the_ready_checks(base_url, http):
    url, ready = base_url
    async with http.get(url + "/readyz") as resp:
        assert resp.status == 503
        assert (await resp.json())["checks"] == {"thing": False}
    ready["value"] = True
    async with http.get(url + "/readyz") as resp:
        assert resp.status == 200


async def test_metrics_count_requests_by_route_and_status(base_url, http):
    url, _ = base_url
    await (await http.get(url + "/bad")).release()
    async with http.get(url + "/metrics") as resp:
        text = await resp.text()
    assert 'marquee_http_requests_total{method="GET",route="/bad",status="400"} 1.0' in text
