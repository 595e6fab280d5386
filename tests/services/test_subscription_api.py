"""The subscription service over real HTTP: plans, auth, idempotent writes, persistence."""

from __future__ import annotations

import aiohttp

from services.platform.settings import Settings
from services.subscription.app import create_app
from tests.services.conftest import Serve
from tests.services.helpers import router_routes, service_headers, session_headers
from tests.support import get_json

USER = 42


def sub_url(base: str, user_id: int = USER) -> str:
    return f"{base}/v1/users/{user_id}/subscription"


async def put_plan(
    http: aiohttp.ClientSession, base: str, plan: object, headers: dict, user_id: int = USER
) -> tuple[int, dict]:
    async with http.put(sub_url(base, user_id), json={"plan": plan}, headers=headers) as resp:
        return resp.status, await resp.json(content_type=None)


async def current(http: aiohttp.ClientSession, base: str, user_id: int = USER) -> dict:
    status, body = await get_json(http, sub_url(base, user_id), headers=service_headers())
    assert status == 200
    return body


async def test_plans_are_public_and_priced_in_eur(
    http: aiohttp.ClientSession, subscription_url: str
) -> None:
    status, body = await get_json(http, f"{subscription_url}/v1/plans")
    prices = {p["id"]: (p["price_cents"], p["currency"]) for p in body["items"]}
    assert status == 200
    assert prices == {"basic": (799, "EUR"), "standard": (1299, "EUR"), "premium": (1799, "EUR")}
    assert all(p["name"] and p["features"] for p in body["items"])


async def test_new_user_has_no_subscription(
    http: aiohttp.ClientSession, subscription_url: str
) -> None:
    assert await current(http, subscription_url) == {
        "user_id": USER,
        "status": "none",
        "plan": None,
        "updated_at": None,
    }


async def test_service_token_may_subscribe_a_user(
    http: aiohttp.ClientSession, subscription_url: str
) -> None:
    status, body = await put_plan(http, subscription_url, "standard", service_headers("k1"))
    assert status == 200
    assert (body["status"], body["plan"]["id"], body["user_id"]) == ("active", "standard", USER)
    assert body["updated_at"]
    assert await current(http, subscription_url) == body


async def test_user_may_subscribe_with_own_session(
    http: aiohttp.ClientSession, subscription_url: str
) -> None:
    status, body = await put_plan(http, subscription_url, "basic", session_headers(USER, "k1"))
    assert (status, body["plan"]["id"]) == (200, "basic")


async def test_user_may_read_own_subscription_with_session(
    http: aiohttp.ClientSession, subscription_url: str
) -> None:
    status, body = await get_json(http, sub_url(subscription_url), headers=session_headers(USER))
    assert (status, body["status"]) == (200, "none")


async def test_another_users_session_is_403_and_changes_nothing(
    http: aiohttp.ClientSession, subscription_url: str
) -> None:
    status, body = await put_plan(http, subscription_url, "premium", session_headers(7, "k1"))
    assert (status, body["error"]["code"]) == (403, "forbidden")
    assert (await current(http, subscription_url))["status"] == "none"


async def test_reading_another_users_subscription_is_403(
    http: aiohttp.ClientSession, subscription_url: str
) -> None:
    status, body = await get_json(http, sub_url(subscription_url), headers=session_headers(7))
    assert (status, body["error"]["code"]) == (403, "forbidden")


async def test_no_credentials_is_401_and_changes_nothing(
    http: aiohttp.ClientSession, subscription_url: str
) -> None:
    status, body = await put_plan(http, subscription_url, "basic", {"Idempotency-Key": "k1"})
    assert (status, body["error"]["code"]) == (401, "unauthorized")
    assert (await current(http, subscription_url))["status"] == "none"


async def test_wrong_token_or_forged_session_is_401(
    http: aiohttp.ClientSession, subscription_url: str
) -> None:
    forged = {"X-Marquee-Session": session_headers(USER)["X-Marquee-Session"] + "x"}
    for headers in ({"Authorization": "Bearer nope"}, forged):
        status, body = await get_json(http, sub_url(subscription_url), headers=headers)
        assert (status, body["error"]["code"]) == (401, "unauthorized")


async def test_retry_returns_first_response_and_applies_once(
    http: aiohttp.ClientSession, subscription_url: str
) -> None:
    _, first = await put_plan(http, subscription_url, "standard", service_headers("key-a"))
    await put_plan(http, subscription_url, "premium", service_headers("key-b"))
    status, retried = await put_plan(http, subscription_url, "standard", service_headers("key-a"))
    assert (status, retried) == (200, first)
    assert (await current(http, subscription_url))["plan"]["id"] == "premium"


async def test_key_reused_for_a_different_body_is_409(
    http: aiohttp.ClientSession, subscription_url: str
) -> None:
    await put_plan(http, subscription_url, "standard", service_headers("key-a"))
    status, body = await put_plan(http, subscription_url, "premium", service_headers("key-a"))
    assert (status, body["error"]["code"]) == (409, "idempotency_key_reused")
    assert (await current(http, subscription_url))["plan"]["id"] == "standard"


async def test_key_used_by_another_user_is_their_own_new_request(
    http: aiohttp.ClientSession, subscription_url: str
) -> None:
    """Keys are scoped per user: user B is never refused (409) for a key user A happened to use."""
    await put_plan(http, subscription_url, "standard", session_headers(USER, "key-a"))
    other = USER + 1
    status, body = await put_plan(
        http, subscription_url, "premium", session_headers(other, "key-a"), user_id=other
    )
    assert (status, body["plan"]["id"]) == (200, "premium")
    assert (await current(http, subscription_url))["plan"]["id"] == "standard"
    assert (await current(http, subscription_url, other))["plan"]["id"] == "premium"


async def test_write_without_idempotency_key_is_400(
    http: aiohttp.ClientSession, subscription_url: str
) -> None:
    status, body = await put_plan(http, subscription_url, "basic", service_headers())
    assert (status, body["error"]["code"]) == (400, "idempotency_key_required")
    assert (await current(http, subscription_url))["status"] == "none"


async def test_unknown_plan_is_400_and_changes_nothing(
    http: aiohttp.ClientSession, subscription_url: str
) -> None:
    await put_plan(http, subscription_url, "basic", service_headers("k1"))
    status, body = await put_plan(http, subscription_url, "gold", service_headers("k2"))
    assert (status, body["error"]["code"]) == (400, "unknown_plan")
    assert (await current(http, subscription_url))["plan"]["id"] == "basic"


async def test_invalid_json_is_400(http: aiohttp.ClientSession, subscription_url: str) -> None:
    async with http.put(
        sub_url(subscription_url), data=b"{plan: basic", headers=service_headers("k1")
    ) as resp:
        body = await resp.json()
    assert (resp.status, body["error"]["code"]) == (400, "invalid_json")


async def test_body_without_a_string_plan_is_400(
    http: aiohttp.ClientSession, subscription_url: str
) -> None:
    for payload in ([1, 2], {"tier": "basic"}, {"plan": 3}, {"plan": None}):
        async with http.put(
            sub_url(subscription_url), json=payload, headers=service_headers("k1")
        ) as resp:
            body = await resp.json()
        assert (resp.status, body["error"]["code"]) == (400, "invalid_body"), payload


async def test_body_over_the_size_limit_is_413(
    http: aiohttp.ClientSession, settings: Settings, subscription_url: str
) -> None:
    huge = b'{"plan": "' + b"x" * settings.max_body_bytes + b'"}'
    async with http.put(sub_url(subscription_url), data=huge, headers=service_headers("k1")) as r:
        body = await r.json()
    assert (r.status, body["error"]["code"]) == (413, "too_large")


async def test_bad_user_id_is_400(http: aiohttp.ClientSession, subscription_url: str) -> None:
    status, body = await get_json(
        http, f"{subscription_url}/v1/users/abc/subscription", headers=service_headers()
    )
    assert (status, body["error"]["code"]) == (400, "invalid_id")


async def test_delete_cancels_the_subscription(
    http: aiohttp.ClientSession, subscription_url: str
) -> None:
    await put_plan(http, subscription_url, "premium", service_headers("k1"))
    async with http.delete(sub_url(subscription_url), headers=service_headers("k2")) as resp:
        body = await resp.json()
    assert (resp.status, body["status"], body["plan"]) == (200, "none", None)
    assert (await current(http, subscription_url))["status"] == "none"


async def test_delete_needs_credentials(http: aiohttp.ClientSession, subscription_url: str) -> None:
    await put_plan(http, subscription_url, "premium", service_headers("k1"))
    async with http.delete(sub_url(subscription_url), headers={"Idempotency-Key": "k2"}) as resp:
        assert resp.status == 401
    assert (await current(http, subscription_url))["status"] == "active"


async def test_subscription_survives_a_restart(
    http: aiohttp.ClientSession, settings: Settings, serve: Serve
) -> None:
    first = await serve(create_app(settings))
    base = str(first.make_url("")).rstrip("/")
    _, written = await put_plan(http, base, "standard", service_headers("k1"))
    await first.close()
    second = await serve(create_app(settings))
    assert await current(http, str(second.make_url("")).rstrip("/")) == written


async def test_readyz_reports_the_store_open(
    http: aiohttp.ClientSession, subscription_url: str
) -> None:
    status, body = await get_json(http, f"{subscription_url}/readyz")
    assert (status, body["checks"]) == (200, {"subscription": True})


async def test_every_route_is_in_openapi_with_its_path_parameters(
    http: aiohttp.ClientSession, settings: Settings, serve: Serve
) -> None:
    server = await serve(create_app(settings))
    _, spec = await get_json(http, str(server.make_url("/openapi.json")))
    for method, path in router_routes(server.app):
        operation = spec["paths"][path][method]
        declared = {p["name"] for p in operation.get("parameters", []) if p["in"] == "path"}
        assert declared == {s[1:-1] for s in path.split("/") if s.startswith("{")}, path
