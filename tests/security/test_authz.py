"""Who may do what: a user reads and writes only their own subscription and batch jobs; service
writes need the service token; model reload / rollback need the admin token; every token is
compared in constant time."""

from __future__ import annotations

import ast
import re
import shutil
from pathlib import Path

import aiohttp
import pytest

from services.platform import auth
from services.platform.settings import PROJECT_ROOT
from tests.conftest import replace
from tests.security.conftest import (
    ADMIN_TOKEN,
    SECRET,
    SERVICE_TOKEN,
    browser,
    csrf_tokens,
    get_page,
    log_in,
)

ALICE, BOB = 61, 62


def _session(user_id: int, key: str | None = None) -> dict[str, str]:
    headers = {auth.SESSION_HEADER: auth.session_token(user_id, SECRET)}
    if key:
        headers["Idempotency-Key"] = key
    return headers


def _bearer(token: str, key: str | None = None) -> dict[str, str]:
    headers = {"Authorization": f"Bearer {token}"}
    if key:
        headers["Idempotency-Key"] = key
    return headers


@pytest.fixture
async def subscription_base(settings, serve_app) -> str:
    from services.subscription.app import create_app

    return await serve_app(create_app(settings))


async def _status(session, method: str, url: str, **kwargs) -> tuple[int, dict]:
    async with session.request(method, url, **kwargs) as resp:
        return resp.status, await resp.json()


async def test_a_user_reads_and_writes_only_their_own_subscription(subscription_base, http):
    url = f"{subscription_base}/v1/users/{ALICE}/subscription"
    body = {"plan": "premium"}
    # Bob's session on Alice's subscription: 403 for reading and for both writes
    assert (await _status(http, "GET", url, headers=_session(BOB)))[0] == 403
    status, error = await _status(http, "PUT", url, json=body, headers=_session(BOB, "k-bob-1"))
    assert status == 403 and error["error"]["code"] == "forbidden"
    assert (await _status(http, "DELETE", url, headers=_session(BOB, "k-bob-2")))[0] == 403
    # no credentials, a forged session, a wrong bearer token, the admin token: 401
    forged = {auth.SESSION_HEADER: auth.session_token(ALICE, "guess")}
    for headers in (
        {},
        forged,
        _bearer("nope"),
        _bearer(ADMIN_TOKEN),
        _bearer(SERVICE_TOKEN + "x"),
    ):
        status, error = await _status(
            http, "PUT", url, json=body, headers={**headers, "Idempotency-Key": "k-x"}
        )
        assert status == 401, headers
        assert error["error"]["code"] == "unauthorized"
    # nothing was changed by any of that
    status, sub = await _status(http, "GET", url, headers=_session(ALICE))
    assert status == 200 and sub["status"] == "none"
    # Alice herself, and a service holding the service token, may write
    status, sub = await _status(http, "PUT", url, json=body, headers=_session(ALICE, "k-alice"))
    assert status == 200 and sub["plan"]["id"] == "premium"
    status, sub = await _status(
        http, "PUT", url, json={"plan": "basic"}, headers=_bearer(SERVICE_TOKEN, "k-svc")
    )
    assert status == 200 and sub["plan"]["id"] == "basic"


async def test_the_web_forms_only_ever_act_for_the_session_user(web_base, http):
    async with browser() as session:
        await log_in(session, web_base, ALICE)
        page = await get_page(session, f"{web_base}/movies/1")
        key = re.search(r'name="idempotency_key" value="([^"]+)"', page).group(1)
        form = {
            "csrf_token": csrf_tokens(page)[-1],
            "action": "subscribe",
            "plan": "standard",
            "idempotency_key": key,
            "movie_id": "1",
            "user_id": str(BOB),  # ignored: the user is the session's
        }
        async with session.post(f"{web_base}/subscription", data=form, allow_redirects=False) as r:
            assert r.status == 303
    alice = f"{web_base}/v1/users/{ALICE}/subscription"
    bob = f"{web_base}/v1/users/{BOB}/subscription"
    assert (await _status(http, "GET", alice, headers=_session(ALICE)))[1]["plan"][
        "id"
    ] == "standard"
    assert (await _status(http, "GET", bob, headers=_session(BOB)))[1]["status"] == "none"
    # logged out, the form is refused outright
    async with browser() as anonymous:
        page = await get_page(anonymous, f"{web_base}/login")
        form["csrf_token"] = csrf_tokens(page)[0]
        async with anonymous.post(f"{web_base}/subscription", data=form) as r:
            assert r.status == 403


@pytest.fixture
async def recommender_base(settings, serve_app, tmp_path: Path) -> str:
    """A recommender on a throwaway copy of the model registry (rollback may change it)."""
    from recommender.app import create_app

    models = shutil.copytree(settings.model_dir, tmp_path / "models")
    return await serve_app(create_app(replace(settings, model_dir=models)))


async def test_admin_endpoints_need_the_admin_token(recommender_base, http):
    for action in ("reload", "rollback"):
        url = f"{recommender_base}/v1/model/{action}"
        status, error = await _status(http, "POST", url)
        assert status == 401 and error["error"]["code"] == "unauthorized"
        for wrong in (
            "",
            "x" * len(ADMIN_TOKEN),
            SERVICE_TOKEN,
            ADMIN_TOKEN[:-1],
            ADMIN_TOKEN + "x",
        ):
            status, _ = await _status(http, "POST", url, headers=_bearer(wrong))
            assert status in (401, 403), (action, wrong)
        async with http.post(url, headers={"Authorization": f"Basic {ADMIN_TOKEN}"}) as resp:
            assert resp.status in (401, 403)
    status, body = await _status(
        http, "POST", f"{recommender_base}/v1/model/reload", headers=_bearer(ADMIN_TOKEN)
    )
    assert status == 200, body
    # one version only: nothing to roll back to, but the token was accepted (409, not 401/403)
    status, body = await _status(
        http, "POST", f"{recommender_base}/v1/model/rollback", headers=_bearer(ADMIN_TOKEN)
    )
    assert status == 409, body


async def test_batch_jobs_are_private_to_their_owner(recommender_base, web_base, http):
    csv = b"movie_id\n1\n2\n"
    headers = {**_session(ALICE), "Content-Type": "text/csv"}
    async with http.post(f"{recommender_base}/v1/batch", data=csv, headers=headers) as resp:
        assert resp.status == 202, await resp.text()
        job_id = (await resp.json())["job_id"]
    job = f"{recommender_base}/v1/batch/{job_id}"
    assert (await _status(http, "GET", job, headers=_session(BOB)))[0] == 403
    assert (await _status(http, "GET", job))[0] == 403
    assert (await _status(http, "GET", job + "/results", headers=_session(BOB)))[0] == 403
    assert (await _status(http, "GET", job, headers=_session(ALICE)))[0] == 200
    assert (await _status(http, "GET", job, headers=_bearer(SERVICE_TOKEN)))[0] == 200
    # the web pages read the same store: Bob sees a 403 page for Alice's job
    async with browser() as session:
        await log_in(session, web_base, BOB)
        async with session.get(f"{web_base}/batch/{job_id}") as resp:
            assert resp.status == 403
            assert "belongs to another user" in await resp.text()


# ---- constant-time comparisons ----------------------------------------------------------------
SOURCES = [
    p
    for folder in ("services", "recommender", "web_server")
    for p in (PROJECT_ROOT / folder).rglob("*.py")
]
SECRET_NAME = re.compile(r"(_token|secret_key|^token$|^mac$|signature|password)$", re.I)


def _secret_names(node: ast.AST) -> list[str]:
    names = [
        n.id if isinstance(n, ast.Name) else n.attr
        for n in ast.walk(node)
        if isinstance(n, ast.Name | ast.Attribute)
    ]
    return [n for n in names if SECRET_NAME.search(n)]


def unsafe_comparisons(source: str) -> list[int]:
    """Lines comparing a token, secret or MAC with ``==`` / ``!=`` against a non-constant."""
    lines = []
    for node in ast.walk(ast.parse(source)):
        if not isinstance(node, ast.Compare):
            continue
        if not any(isinstance(op, ast.Eq | ast.NotEq) for op in node.ops):
            continue
        operands = [node.left, *node.comparators]
        if any(isinstance(o, ast.Constant) for o in operands):
            continue  # against a constant (None, "", a scheme name): no secret to leak
        if any(_secret_names(o) for o in operands):
            lines.append(node.lineno)
    return lines


def test_the_timing_check_finds_what_it_looks_for():
    source = (
        "ok = hmac.compare_digest(token, settings.admin_token)\n"
        "bad = header_token == settings.admin_token\n"
        "also_bad = mac != expected\n"
        "fine = token is None or token == ''\n"
    )
    assert unsafe_comparisons(source) == [2, 3]


def test_secrets_are_compared_only_with_compare_digest():
    """No ``==`` / ``!=`` between a token, secret or MAC and another value anywhere in the
    services: such a comparison stops at the first differing byte and leaks it through timing."""
    offenders = [
        f"{path.relative_to(PROJECT_ROOT)}:{line}"
        for path in SOURCES
        for line in unsafe_comparisons(path.read_text())
    ]
    assert offenders == []
    auth_source = (PROJECT_ROOT / "services/platform/auth.py").read_text()
    assert auth_source.count("hmac.compare_digest(") >= 2  # bearer tokens and MACs


async def test_wrong_tokens_of_the_right_length_are_refused(subscription_base):
    url = f"{subscription_base}/v1/users/{ALICE}/subscription"
    async with aiohttp.ClientSession() as http:
        for i in range(len(SERVICE_TOKEN)):
            wrong = (
                SERVICE_TOKEN[:i]
                + ("A" if SERVICE_TOKEN[i] != "A" else "B")
                + SERVICE_TOKEN[i + 1 :]
            )
            async with http.get(url, headers=_bearer(wrong)) as resp:
                assert resp.status == 401
