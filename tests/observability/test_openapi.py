"""Each service's /openapi.json tells the truth: every route it serves is documented with the same
methods and path parameters, and every documented path is really served."""

from __future__ import annotations

import re

import pytest
from aiohttp import web

from services.platform.settings import Settings
from tests.conftest import replace
from tests.observability.helpers import routed

METHODS = {"get", "put", "post", "delete", "patch", "options", "head", "trace"}


def _catalog(settings: Settings) -> web.Application:
    from services.catalog.app import create_app

    return create_app(settings)


def _subscription(settings: Settings) -> web.Application:
    from services.subscription.app import create_app

    return create_app(settings)


def _recommender(settings: Settings) -> web.Application:
    from recommender.app import create_app

    return create_app(settings)


def _web_monolith(settings: Settings) -> web.Application:
    from web_server.app import create_app

    return create_app(replace(settings, mode="monolith"))


def _web_micro(settings: Settings) -> web.Application:
    from web_server.app import create_app

    return create_app(replace(settings, mode="microservices"))


APPS = {
    "catalog": _catalog,
    "subscription": _subscription,
    "recommender": _recommender,
    "web-monolith": _web_monolith,
    "web-microservices": _web_micro,
}


def _path_params(path: str) -> set[str]:
    return set(re.findall(r"{([^}:]+)(?::[^}]*)?}", path))


@pytest.mark.parametrize("name", list(APPS))
async def test_openapi_matches_the_router(name, settings, serve_app, http):
    app = APPS[name](settings)
    base = await serve_app(app)  # started: every route a cleanup_ctx adds is in place too
    async with http.get(f"{base}/openapi.json") as resp:
        assert resp.status == 200
        spec = await resp.json()
    assert spec["openapi"].startswith("3.")
    documented = {path: {m for m in item if m in METHODS} for path, item in spec["paths"].items()}
    served = routed(app)

    assert set(served) - set(documented) == set(), "routes missing from openapi.json"
    assert set(documented) - set(served) == set(), "openapi.json documents unrouted paths"
    for path, methods in served.items():
        assert documented[path] == methods, (
            f"{path}: routed {methods}, documented {documented[path]}"
        )
        item = spec["paths"][path]
        for method in methods:
            params = [*item.get("parameters", []), *item[method].get("parameters", [])]
            declared = {p["name"] for p in params if p.get("in") == "path"}
            assert declared == _path_params(path), f"{method.upper()} {path}: path params"
            for p in params:
                if p.get("in") == "path":
                    assert p.get("required") is True, f"{method.upper()} {path}: {p['name']}"
            assert item[method].get("responses"), f"{method.upper()} {path}: no responses"
            for requirement in item[method].get("security", []):
                schemes = spec["components"].get("securitySchemes", {})
                assert set(requirement) <= set(schemes), f"{method.upper()} {path}: security"


@pytest.mark.parametrize("name", list(APPS))
async def test_every_error_status_documented_is_json(name, settings, serve_app, http):
    """A route that is not there answers 404 JSON (API) and a wrong method 405 with Allow."""
    base = await serve_app(APPS[name](settings))
    async with http.get(f"{base}/v1/no-such-route") as resp:
        assert resp.status == 404
        body = await resp.json()
        assert body["error"]["code"] == "not_found"
    async with http.delete(f"{base}/openapi.json") as resp:
        assert resp.status == 405
        assert "GET" in resp.headers["Allow"]
        assert (await resp.json())["error"]["code"] == "method_not_allowed"
