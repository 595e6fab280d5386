"""The accounts' routes on the subscription service over real HTTP, on both stores: register,
log in (limited: 429 + Retry-After), log out (the token is then refused by every route), the
session check, demo logins only in development."""

from __future__ import annotations

import dataclasses

import aiohttp

from services.platform.auth import SESSION_HEADER, session_claims, session_token
from services.platform.settings import Settings
from services.subscription.app import create_app
from tests.services.conftest import Serve
from tests.services.helpers import SECRET, service_headers
from tests.support import get_json

PASSWORD = "correct horse battery"


async def post(http: aiohttp.ClientSession, url: str, body: object, **kwargs) -> tuple[int, dict]:
    async with http.post(url, json=body, **kwargs) as resp:
        return resp.status, await resp.json(content_type=None)


async def register(http: aiohttp.ClientSession, base: str, name: str = "ada") -> dict:
    status, grant = await post(http, f"{base}/v1/accounts", {"name": name, "password": PASSWORD})
    assert status == 201, grant
    return grant


def session(token: str, key: str | None = None) -> dict[str, str]:
    headers = {SESSION_HEADER: token}
    if key:
        headers["Idempotency-Key"] = key
    return headers


async def test_register_then_log_in_gives_a_session_of_the_account(
    http: aiohttp.ClientSession, subscription_url: str
) -> None:
    made = await register(http, subscription_url, "Ada")
    assert made["user_id"] >= 1_000_000 and made["name"] == "Ada" and made["generation"] == 0
    status, grant = await post(
        http, f"{subscription_url}/v1/sessions", {"name": "ada", "password": PASSWORD}
    )
    assert status == 201 and grant["user_id"] == made["user_id"]
    assert grant["max_age"] > 0 and grant["token"].startswith(f"{made['user_id']}.0.")
    url = f"{subscription_url}/v1/users/{made['user_id']}/subscription"
    status, body = await get_json(http, url, headers=session(grant["token"]))
    assert (status, body["status"]) == (200, "none")


async def test_a_wrong_password_is_401_and_gives_no_token(
    http: aiohttp.ClientSession, subscription_url: str
) -> None:
    await register(http, subscription_url)
    status, body = await post(
        http, f"{subscription_url}/v1/sessions", {"name": "ada", "password": "not it at all"}
    )
    assert status == 401 and body["error"]["code"] == "wrong_credentials"
    assert "token" not in str(body)


async def test_brute_force_gets_429_with_retry_after_after_five_failures(
    http: aiohttp.ClientSession, subscription_url: str
) -> None:
    await register(http, subscription_url)
    statuses = []
    for i in range(6):
        async with http.post(
            f"{subscription_url}/v1/sessions", json={"name": "ada", "password": f"guess-{i:04d}"}
        ) as resp:
            statuses.append(resp.status)
            body = await resp.json()
            retry_after = resp.headers.get("Retry-After")
    assert statuses == [401] * 5 + [429]
    assert body["error"]["code"] == "too_many_attempts"
    assert "try again in" in body["error"]["message"]
    assert retry_after is not None and 1 <= int(retry_after) <= 60
    assert body["error"]["details"] == {"retry_after": int(retry_after)}
    status, _ = await post(
        http, f"{subscription_url}/v1/sessions", {"name": "ada", "password": PASSWORD}
    )
    assert status == 429, "while limited even the right password is not checked"


async def test_the_stated_client_address_is_believed_only_from_the_service_token(
    http: aiohttp.ClientSession, subscription_url: str
) -> None:
    """A visitor cannot escape the per-address limit by naming other addresses; the web server
    (service token) relays the visitors' own."""
    url = f"{subscription_url}/v1/sessions"
    for i in range(20):  # the per-address burst, each attempt "from" another address
        body = {"name": f"name{i:02d}", "password": "guess-guess", "client": f"203.0.113.{i}"}
        assert (await post(http, url, body))[0] == 401
    body = {"name": "name-next", "password": "guess-guess", "client": "203.0.113.99"}
    assert (await post(http, url, body))[0] == 429
    relayed = await post(http, url, body, headers=service_headers())
    assert relayed[0] == 401  # the web server's visitor 203.0.113.99 is somebody else


async def test_logging_out_makes_every_route_refuse_the_token(
    http: aiohttp.ClientSession, subscription_url: str
) -> None:
    made = await register(http, subscription_url)
    url = f"{subscription_url}/v1/users/{made['user_id']}/subscription"
    async with http.put(url, json={"plan": "basic"}, headers=session(made["token"], "k1")) as r:
        assert r.status == 200
    async with http.delete(
        f"{subscription_url}/v1/sessions/current", headers=session(made["token"])
    ) as resp:
        assert resp.status == 200
        assert await resp.json() == {"user_id": made["user_id"], "generation": 1}
    status, body = await get_json(http, url, headers=session(made["token"]))
    assert (status, body["error"]["code"]) == (401, "session_ended")
    async with http.delete(url, headers=session(made["token"], "k2")) as resp:
        assert resp.status == 401
    status, body = await get_json(http, url, headers=service_headers())
    assert body["plan"]["id"] == "basic", "a refused write changed nothing"


async def test_the_session_check_answers_the_user_and_the_service_only(
    http: aiohttp.ClientSession, subscription_url: str
) -> None:
    ada = await register(http, subscription_url, "ada")
    grace = await register(http, subscription_url, "grace")
    url = f"{subscription_url}/v1/users/{ada['user_id']}/session"
    expected = {"user_id": ada["user_id"], "generation": 0, "name": "ada"}
    assert await get_json(http, url, headers=session(ada["token"])) == (200, expected)
    assert await get_json(http, url, headers=service_headers()) == (200, expected)
    assert (await get_json(http, url, headers=session(grace["token"])))[0] == 403
    assert (await get_json(http, url))[0] == 401
    forged = session_token(ada["user_id"], "not-the-secret")
    assert (await get_json(http, url, headers=session(forged)))[0] == 401


async def test_demo_logins_are_403_outside_development(
    http: aiohttp.ClientSession, subscription_url: str
) -> None:
    status, body = await post(http, f"{subscription_url}/v1/sessions/demo", {"user_id": 5})
    assert (status, body["error"]["code"]) == (403, "demo_logins_off")


async def test_demo_logins_work_in_development(
    http: aiohttp.ClientSession, settings: Settings, serve: Serve
) -> None:
    server = await serve(create_app(dataclasses.replace(settings, development=True)))
    base = str(server.make_url("")).rstrip("/")
    status, grant = await post(http, f"{base}/v1/sessions/demo", {"user_id": 5})
    assert status == 201 and (grant["user_id"], grant["name"]) == (5, None)
    # the session's own lifetime: a token signed in the last minute may be handed out again
    assert session_claims(grant["token"], SECRET, settings.session_max_age) == (5, 0)
    status, _ = await post(http, f"{base}/v1/sessions/demo", {"user_id": 1_000_000})
    assert status == 400, "an account's id is never a demo login"


async def test_bad_bodies_are_400(http: aiohttp.ClientSession, subscription_url: str) -> None:
    for body in ({"name": "ada"}, {"name": 5, "password": PASSWORD}, [], {"x": 1}):
        for path in ("/v1/accounts", "/v1/sessions"):
            status, answer = await post(http, f"{subscription_url}{path}", body)
            assert status == 400, (path, body, answer)
