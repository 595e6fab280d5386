"""The operator dashboard at /admin: who may see it (the admin token, CSRF, the cookie's scope,
token rotation, logout, the limit on wrong tokens) and what it shows (health per backend, model
versions, the experiment, traffic), with a dead backend shown as down and not as a 500."""

from __future__ import annotations

import json
import re
import time

import aiohttp
import msgspec
import redis.asyncio

from recommender.registry import ModelRegistry
from services.feedback.aggregate import add_batch
from services.feedback.backend import keys_of
from services.feedback.schemas import (
    Arm,
    ArmPoint,
    ArmReport,
    Click,
    EventBatch,
    Experiment,
    ExperimentReport,
    Impression,
    Interval,
)
from tests.conftest import replace
from tests.support import async_wait_until
from tests.web import stubs
from tests.web.conftest import stub_settings
from tests.web.helpers import ADMIN_TOKEN, admin_dashboard, admin_login, browser, field

COOKIE = "marquee_admin"


def _row(page: str, table_id: str, label: str) -> str:
    """The <tr> of the table ``table_id`` that mentions ``label``."""
    table = page[page.index(f'id="{table_id}"') :]
    table = table[: table.index("</table>")]
    rows = [r for r in table.split("<tr") if label in r]
    assert rows, f"no row with {label!r} in #{table_id}"
    return rows[0]


# ---- who may see it ---------------------------------------------------------------------------
async def test_a_wrong_token_is_refused_and_sets_nothing(monolith_base):
    async with browser() as session:
        resp = await admin_login(session, monolith_base, "not-the-admin-token")
        assert resp.status == 403
        assert COOKIE not in resp.cookies
        assert "Set-Cookie" not in resp.headers
        async with session.get(f"{monolith_base}/admin", allow_redirects=False) as page:
            assert page.status == 303 and page.headers["Location"] == "/admin/login"


async def test_logging_in_needs_the_forms_csrf_token(monolith_base):
    async with browser() as session:
        form = {"token": ADMIN_TOKEN}
        async with session.post(
            f"{monolith_base}/admin/login", data=form, allow_redirects=False
        ) as resp:
            assert resp.status == 403
            assert "did not come from Marquee" in await resp.text()
            assert COOKIE not in resp.cookies


async def test_the_session_cookie_is_scoped_to_admin(monolith_base):
    async with browser() as session:
        resp = await admin_login(session, monolith_base)
        assert resp.status == 303 and resp.headers["Location"] == "/admin"
        cookie = resp.cookies[COOKIE]
        assert cookie["path"] == "/admin"
        assert cookie["httponly"] and cookie["samesite"] == "Strict"
        assert not cookie["secure"]  # plain HTTP and secure_cookies off
        assert ADMIN_TOKEN not in cookie.value


async def test_the_session_cookie_is_secure_behind_tls(serve, settings):
    base = await serve(replace(settings, secure_cookies=True))
    jar = aiohttp.CookieJar(unsafe=True, treat_as_secure_origin=[base])  # TLS ends in front
    async with aiohttp.ClientSession(cookie_jar=jar) as session:
        resp = await admin_login(session, base)
        assert resp.status == 303 and resp.cookies[COOKIE]["secure"]


async def test_the_dashboard_asks_for_a_login_first(monolith_base):
    async with (
        browser() as session,
        session.get(f"{monolith_base}/admin", allow_redirects=False) as resp,
    ):
        assert resp.status == 303 and resp.headers["Location"] == "/admin/login"


async def test_rotating_the_admin_token_ends_every_session(serve, settings):
    before = await serve(settings)
    after = await serve(replace(settings, admin_token="a-rotated-admin-token"))
    async with browser() as session:
        resp = await admin_login(session, before)
        assert resp.status == 303
        cookie = resp.cookies[COOKIE].value
    headers = {"Cookie": f"{COOKIE}={cookie}"}
    async with browser() as other:
        async with other.get(f"{before}/admin", headers=headers, allow_redirects=False) as resp:
            assert resp.status == 200  # the same cookie, the same token: still in
        async with other.get(f"{after}/admin", headers=headers, allow_redirects=False) as resp:
            assert resp.status == 303 and resp.headers["Location"] == "/admin/login"


async def test_logging_out_ends_the_session(monolith_base):
    async with browser() as session:
        assert (await admin_login(session, monolith_base)).status == 303
        async with session.get(f"{monolith_base}/admin") as resp:
            page = await resp.text()
        form = {"csrf_token": field(page, "csrf_token")}
        async with session.post(
            f"{monolith_base}/admin/logout", data=form, allow_redirects=False
        ) as resp:
            assert resp.status == 303 and resp.headers["Location"] == "/admin/login"
            assert resp.cookies[COOKIE].value == ""  # dropped
        async with session.get(f"{monolith_base}/admin", allow_redirects=False) as resp:
            assert resp.status == 303


async def test_logging_out_needs_the_csrf_token(monolith_base):
    async with browser() as session:
        assert (await admin_login(session, monolith_base)).status == 303
        async with session.post(f"{monolith_base}/admin/logout", allow_redirects=False) as resp:
            assert resp.status == 403
        async with session.get(f"{monolith_base}/admin", allow_redirects=False) as resp:
            assert resp.status == 200  # still logged in


async def test_wrong_tokens_are_limited_per_address(monolith_base):
    async with browser() as session:
        statuses = [
            (await admin_login(session, monolith_base, f"guess-{n}")).status for n in range(6)
        ]
        limited = await admin_login(session, monolith_base)  # even the right one, for now
    assert statuses == [403] * 5 + [429]
    assert limited.status == 429 and int(limited.headers["Retry-After"]) >= 1
    assert COOKIE not in limited.cookies


async def test_without_an_admin_token_there_is_no_dashboard(serve, settings):
    base = await serve(replace(settings, admin_token=""))
    async with browser() as session:
        for path in ("/admin", "/admin/login"):
            async with session.get(f"{base}{path}", allow_redirects=False) as resp:
                assert resp.status == 404
                assert "MARQUEE_ADMIN_TOKEN" in await resp.text()
        async with session.post(f"{base}/admin/login", data={"token": ""}) as resp:
            assert resp.status == 404
            assert COOKIE not in resp.cookies


# ---- what it shows ----------------------------------------------------------------------------
async def test_the_dashboard_shows_versions_and_health(monolith_base, model_dir):
    version = ModelRegistry(model_dir).current_version()
    assert version
    async with browser() as session:
        async with session.get(f"{monolith_base}/movies/1") as resp:  # some traffic to show
            assert resp.status == 200
        assert (await admin_login(session, monolith_base)).status == 303
        async with session.get(f"{monolith_base}/admin") as resp:
            page = await resp.text()
            assert resp.status == 200
            assert resp.headers["Cache-Control"] == "no-store"
    for service in ("catalog", "subscription", "recommender", "web"):
        assert "ready</span>" in _row(page, "health", f'<th scope="row">{service}</th>')
    assert version in _row(page, "loaded", "in-process")
    assert "published</span>" in _row(page, "published", version)
    assert "/movies/{id}" in _row(page, "routes", "/movies/{id}")
    assert "No experiment is running" in page


async def test_the_dashboard_over_real_services(microservices_stack, model_dir):
    version = ModelRegistry(model_dir).current_version()
    stack = microservices_stack
    async with browser() as session:
        assert (await admin_login(session, stack.web_url)).status == 303
        async with session.get(f"{stack.web_url}/admin") as resp:
            page = await resp.text()
            assert resp.status == 200, stack.processes["web"].log_tail()
    urls = {
        "catalog": stack.catalog_url,
        "subscription": stack.subscription_url,
        "recommender": stack.recommender_url,
    }
    for service, url in urls.items():
        assert "ready</span>" in _row(page, "health", url), service
    assert version and version in _row(page, "loaded", stack.recommender_url)
    assert "published</span>" in _row(page, "published", version)
    assert 'id="queue-depth"><strong>0</strong>' in page


async def test_a_dead_backend_shows_as_down(dead_catalog_base):
    page = await admin_dashboard(dead_catalog_base)
    catalog = _row(page, "health", '<th scope="row">catalog</th>')
    assert "down</span>" in catalog and "cannot connect" in catalog
    for service in ("subscription", "recommender"):
        assert "ready</span>" in _row(page, "health", f'<th scope="row">{service}</th>')
    assert stubs.STUB_VERSION in _row(page, "published", stubs.STUB_VERSION)
    assert "75.00%" in _row(page, "caches", "redis")  # the stub's 30 hits, 10 misses
    assert re.search(r'id="queue-depth"><strong>3</strong>', page)


async def test_a_hanging_backend_is_shown_as_not_answering(serve, tmp_path, stub_backends):
    stub_backends.catalog.delay = 60.0  # answers nothing until the test ends
    base = await serve(stub_settings(tmp_path, stub_backends, admin_probe_timeout=0.3))
    page = await admin_dashboard(base)
    catalog = _row(page, "health", '<th scope="row">catalog</th>')
    assert "down</span>" in catalog and "no answer in time" in catalog
    assert "ready</span>" in _row(page, "health", '<th scope="row">recommender</th>')


async def test_a_dead_recommender_takes_down_only_its_sections(dead_recommender_base):
    page = await admin_dashboard(dead_recommender_base)
    assert "down</span>" in _row(page, "health", '<th scope="row">recommender</th>')
    assert "ready</span>" in _row(page, "health", '<th scope="row">catalog</th>')
    for section in ("The registry", "The experiment", "The batch queue depth"):
        assert f"{section} unavailable:" in page
    assert "unavailable</span>" in _row(page, "caches", "recommender http://")
    assert 'id="routes"' in page  # this web server's own numbers are still there


async def test_the_running_experiment_is_charted_per_arm(serve, serve_app, tmp_path, stub_backends):
    report = ExperimentReport(
        Experiment("exp-1", "v-control", "v-candidate", 0.2, "salt", "2026-12-07T08:00:00Z"),
        [
            ArmReport(
                "control",
                "v-control",
                200,
                20,
                Interval(0.1, 0.066, 0.149),
                [ArmPoint(29_000_000, 100, 12), ArmPoint(29_000_001, 100, 8)],
            ),
            ArmReport(
                "candidate",
                "v-candidate",
                50,
                10,
                Interval(0.2, 0.112, 0.33),
                [ArmPoint(29_000_000, 25, 4), ArmPoint(29_000_001, 25, 6)],
            ),
        ],
        Interval(0.1, -0.01, 0.23),
    )
    recommender = await serve_app(
        stubs.recommender_app(stubs.Behaviour(), json.loads(msgspec.json.encode(report)))
    )
    settings = stub_settings(tmp_path, stub_backends, recommender_urls=(recommender,))
    base = await serve(settings)
    page = await admin_dashboard(base)
    assert "v-candidate" in _row(page, "arms", "candidate")
    assert "20.00%" in _row(page, "arms", "candidate")
    assert "11.20% – 33.00%" in _row(page, "arms", "candidate")
    assert "no clear difference yet" in page
    assert page.count("<svg") == 2 and 'aria-label="CTR per minute, by arm"' in page
    assert "polyline" in page


async def test_a_real_experiment_is_counted_and_shown(experiment_monolith, redis_url):
    """In-process: events on the stream, counted by the monolith's aggregator, reported by the
    recommender's own report function, shown per arm."""
    running = experiment_monolith
    exp = running.experiment
    now = time.time()

    def events(arm: Arm, version: str, shown: int, clicked: int) -> list[Impression | Click]:
        out: list[Impression | Click] = [
            Impression(f"{arm}-{n}", version, exp.id, arm, [1, 2, 3], now) for n in range(shown)
        ]
        out += [Click(f"{arm}-{n}", version, exp.id, arm, 2, 2, now) for n in range(clicked)]
        return out

    batch = EventBatch(
        "batch-1",
        events("control", exp.control, 100, 10) + events("candidate", exp.candidate, 100, 30),
    )
    state = redis.asyncio.Redis.from_url(redis_url)
    try:
        await add_batch(state, keys_of(running.settings), batch, 10_000)
    finally:
        await state.aclose()

    async with browser() as session:
        assert (await admin_login(session, running.base)).status == 303

        async def counted() -> bool:
            async with session.get(f"{running.base}/admin") as resp:
                return "30.00%" in await resp.text()

        await async_wait_until(counted, 30.0, "the events counted on the dashboard")
        async with session.get(f"{running.base}/admin") as resp:
            page = await resp.text()
    control = _row(page, "arms", '"swatch control"')
    assert exp.control in control and "10.00%" in control and ">100<" in control
    candidate = _row(page, "arms", '"swatch candidate"')
    assert exp.candidate in candidate and ">30<" in candidate
    assert "candidate better" in page  # 30 % against 10 %: the interval excludes 0
    assert "candidate</span>" in _row(page, "published", exp.candidate)
    assert page.count("<svg") == 2 and "<circle" in page  # one minute so far: one point


async def test_the_models_api_lists_the_registry(monolith_base, model_dir, http):
    registry = ModelRegistry(model_dir)
    async with http.get(f"{monolith_base}/v1/models") as resp:
        body = await resp.json()
        assert resp.status == 200
    assert body["current"] == registry.current_version()
    assert [m["version"] for m in body["items"]] == [m.version for m in registry.manifests()]
    assert body["unreadable"] == []
