"""The web side of feedback events: the tracked similar row, the impressions it buffers, the
redirect that counts a click once, and the arm a visitor keeps.

The monolith tests run the real model on the test Redis (the stream and the followed sets live
there); the arm tests run the web server over the stub backends without Redis (the experiment in
its var-dir file), so the recommender's received ``arm`` can be read off the stub's calls."""

from __future__ import annotations

import time
import urllib.request

import aiohttp
import pytest
import redis

from services.feedback.aggregate import LocalCounts
from services.feedback.assignment import arm_for
from services.feedback.backend import counts_path
from services.feedback.schemas import Click, FeedbackKeys, Impression, ShownRow
from services.feedback.tokens import read_row_token, row_token
from services.platform.settings import Settings
from tests.conftest import Versions
from tests.experiments.conftest import new_experiment
from tests.feedback.conftest import (
    experiment,
    replace,
    stream_events,
    tracked_links,
    write_experiment,
)
from tests.support import TEST_SECRETS, async_wait_until, free_port
from tests.web.conftest import Stubs
from tests.web.helpers import browser
from web_server.feedback import WEB_FEEDBACK

SECRET = TEST_SECRETS["secret_key"]


async def get_page(session: aiohttp.ClientSession, url: str) -> str:
    async with session.get(url) as resp:
        assert resp.status == 200
        return await resp.text()


async def follow(
    session: aiohttp.ClientSession, base: str, token: str, movie: int, json: bool = False
) -> tuple[int, str, str]:
    headers = {"Accept": "application/json"} if json else {}
    async with session.get(
        f"{base}/r/{token}/{movie}", allow_redirects=False, headers=headers
    ) as resp:
        return resp.status, resp.headers.get("Location", ""), await resp.text()


def view_of(token: str) -> str:
    shown = read_row_token(token, SECRET)
    assert shown is not None
    return shown.view


def clicks(state: redis.Redis, keys: FeedbackKeys) -> list[Click]:
    return [e for e in stream_events(state, keys) if isinstance(e, Click)]


def impressions(state: redis.Redis, keys: FeedbackKeys) -> list[Impression]:
    return [e for e in stream_events(state, keys) if isinstance(e, Impression)]


async def wait_for_impressions(state: redis.Redis, keys: FeedbackKeys, n: int) -> None:
    async def flushed() -> bool:
        return len(impressions(state, keys)) >= n

    await async_wait_until(flushed, 20.0, f"{n} impressions in the stream")


# ---- the tracked row ------------------------------------------------------------------------
async def test_the_similar_rows_links_are_tracked_with_one_token(start_web, monolith_settings):
    web = await start_web(monolith_settings)
    async with browser() as session:
        page = await get_page(session, f"{web.url}/movies/1")
    links = tracked_links(page)
    assert len(links) >= 5
    tokens = {token for token, _ in links}
    assert len(tokens) == 1
    shown = read_row_token(tokens.pop(), SECRET)
    assert shown is not None
    assert shown.movies == [movie for _, movie in links]  # in the order shown
    assert shown.version and shown.experiment is None and shown.arm is None


async def test_each_page_view_gets_its_own_token_and_one_impression(
    start_web, monolith_settings, state, keys
):
    web = await start_web(monolith_settings)
    async with browser() as session:
        first = tracked_links(await get_page(session, f"{web.url}/movies/1"))
        second = tracked_links(await get_page(session, f"{web.url}/movies/1"))
    views = {view_of(links[0][0]) for links in (first, second)}
    assert len(views) == 2
    await wait_for_impressions(state, keys, 2)
    shown = impressions(state, keys)
    assert {i.view for i in shown} == views
    assert all(i.movies == [m for _, m in first] for i in shown)


# ---- the redirect -----------------------------------------------------------------------------
async def test_following_a_link_redirects_and_counts_one_click(
    start_web, monolith_settings, state, keys
):
    web = await start_web(monolith_settings)
    async with browser() as session:
        links = tracked_links(await get_page(session, f"{web.url}/movies/1"))
        token, movie = links[2]
        status, location, _ = await follow(session, web.url, token, movie)
    assert (status, location) == (303, f"/movies/{movie}")

    async def counted() -> bool:
        return len(clicks(state, keys)) == 1

    await async_wait_until(counted, 20.0, "the click in the stream")
    click = clicks(state, keys)[0]
    assert (click.movie, click.position) == (movie, 3)
    assert click.view == view_of(token)


async def test_a_movie_not_in_the_row_is_refused_and_changes_nothing(
    start_web, monolith_settings, state, keys
):
    web = await start_web(monolith_settings)
    async with browser() as session:
        links = tracked_links(await get_page(session, f"{web.url}/movies/1"))
        token = links[0][0]
        shown_ids = {m for _, m in links}
        outsider = next(m for m in range(2, 10_000) if m not in shown_ids)
        status, location, body = await follow(session, web.url, token, outsider)
        json_status, _, json_body = await follow(session, web.url, token, outsider, json=True)
    assert (status, location) == (400, "")
    assert f'href="/movies/{outsider}"' in body  # the error page offers the way on
    assert json_status == 400 and '"not_in_row"' in json_body
    view = view_of(token)
    assert not state.exists(keys.followed(view))
    await wait_for_impressions(state, keys, 1)  # a flush has happened since
    assert clicks(state, keys) == []


async def test_an_altered_token_is_refused_as_forged(start_web, monolith_settings, state, keys):
    web = await start_web(monolith_settings)
    async with browser() as session:
        token, movie = tracked_links(await get_page(session, f"{web.url}/movies/1"))[0]
        shown = read_row_token(token, SECRET)
        assert shown is not None
        # Another movie list under the same signature, and a row signed with another key.
        altered = row_token(ShownRow(**{**_fields(shown), "movies": [999999]}), SECRET)
        spliced = altered.rsplit(".", 1)[0] + "." + token.rsplit(".", 1)[1]
        foreign = row_token(shown, "another-secret-key-entirely")
        results = [await follow(session, web.url, t, movie) for t in (spliced, foreign, "x.1.y")]
        json_status, _, json_body = await follow(session, web.url, foreign, movie, json=True)
    assert [r[0] for r in results] == [403, 403, 403]
    assert json_status == 403 and '"forged_link"' in json_body
    assert not state.exists(keys.followed(shown.view))


async def test_an_expired_token_is_refused_with_410(start_web, monolith_settings, state, keys):
    web = await start_web(monolith_settings)
    old = int(time.time()) - monolith_settings.feedback_token_ttl - 60
    shown = ShownRow("old-view", "v1", None, None, [2, 3], old)
    async with browser() as session:
        status, location, body = await follow(session, web.url, row_token(shown, SECRET), 3)
    assert (status, location) == (410, "")
    assert 'href="/movies/3"' in body
    assert not state.exists(keys.followed("old-view"))


async def test_following_the_same_link_again_is_a_409_replay(
    start_web, monolith_settings, state, keys
):
    web = await start_web(monolith_settings)
    async with browser() as session:
        token, movie = tracked_links(await get_page(session, f"{web.url}/movies/1"))[0]
        first = await follow(session, web.url, token, movie)
        again = await follow(session, web.url, token, movie)
        json_again = await follow(session, web.url, token, movie, json=True)
    assert first[0] == 303
    assert again[0] == 409 and f'href="/movies/{movie}"' in again[2]
    assert json_again[0] == 409 and '"replayed_link"' in json_again[2]

    async def counted() -> bool:
        return len(clicks(state, keys)) >= 1

    await async_wait_until(counted, 20.0, "the click in the stream")
    await web.stop()  # the last flush: nothing more can come
    assert len(clicks(state, keys)) == 1


async def test_a_second_movie_of_the_same_row_redirects_but_adds_no_click(
    start_web, monolith_settings, state, keys
):
    web = await start_web(monolith_settings)
    async with browser() as session:
        links = tracked_links(await get_page(session, f"{web.url}/movies/1"))
        first = await follow(session, web.url, *links[0])
        second = await follow(session, web.url, *links[1])
    assert first[:2] == (303, f"/movies/{links[0][1]}")
    assert second[:2] == (303, f"/movies/{links[1][1]}")
    await web.stop()
    assert [c.movie for c in clicks(state, keys)] == [links[0][1]]


# ---- no Redis call per page; the last flush --------------------------------------------------
async def test_pages_make_no_redis_call_for_their_impressions(
    start_web, monolith_settings, state, keys
):
    """With flushes far apart, 30 pages add no XADD: the impressions wait in the buffer."""
    web = await start_web(replace(monolith_settings, feedback_flush_interval=3600.0))
    state.config_resetstat()
    async with browser() as session:
        for _ in range(30):
            tracked_links(await get_page(session, f"{web.url}/movies/1"))
    stats = state.info("commandstats")
    assert stats.get("cmdstat_xadd", {}).get("calls", 0) == 0
    assert impressions(state, keys) == []


async def test_impressions_buffered_at_shutdown_are_flushed(
    start_web, monolith_settings, state, keys
):
    web = await start_web(replace(monolith_settings, feedback_flush_interval=3600.0))
    async with browser() as session:
        for _ in range(5):
            await get_page(session, f"{web.url}/movies/1")
    assert impressions(state, keys) == []
    state.config_resetstat()
    await web.stop()
    assert len(impressions(state, keys)) == 5
    assert state.info("commandstats")["cmdstat_xadd"]["calls"] == 1  # one batch for all


# ---- Redis down, no Redis -------------------------------------------------------------------
async def test_with_the_state_redis_down_the_page_is_served_and_the_link_redirects(
    start_web, stub_web_settings
):
    dead = f"redis://127.0.0.1:{free_port()}/0"
    web = await start_web(replace(stub_web_settings, state_redis_url=dead))
    async with browser() as session:
        links = tracked_links(await get_page(session, f"{web.url}/movies/1"))
        status, location, _ = await follow(session, web.url, *links[0])
    assert (status, location) == (303, f"/movies/{links[0][1]}")
    async with aiohttp.ClientSession() as session, session.get(f"{web.url}/metrics") as resp:
        metrics = await resp.text()
    assert 'marquee_feedback_clicks_total{outcome="unrecorded"} 1.0' in metrics


# ---- arms ---------------------------------------------------------------------------------------
def arm_of(page: str) -> str | None:
    shown = read_row_token(tracked_links(page)[0][0], SECRET)
    assert shown is not None
    return shown.arm


async def test_no_visitor_cookie_is_set_while_no_experiment_runs(start_web, stub_web_settings):
    web = await start_web(stub_web_settings)
    async with browser() as session, session.get(f"{web.url}/movies/1") as resp:
        assert resp.status == 200
        page = await resp.text()
        assert "marquee_visitor" not in resp.cookies
    assert arm_of(page) is None


async def test_a_visitor_keeps_their_arm_across_requests_and_a_restart(
    start_web, stub_web_settings: Settings, stub_backends: Stubs
):
    running = experiment()
    write_experiment(stub_web_settings, running)
    web = await start_web(stub_web_settings)
    async with browser() as session:
        async with session.get(f"{web.url}/movies/1") as resp:
            cookie = resp.cookies["marquee_visitor"]
            assert cookie["httponly"] and cookie["samesite"] == "Lax"
            assert int(cookie["max-age"]) > 300 * 24 * 3600
            arm = arm_of(await resp.text())
        assert arm == arm_for(running, f"visitor:{cookie.value}")
        arms = [arm_of(await get_page(session, f"{web.url}/movies/{m}")) for m in (1, 2, 3)]
        await web.stop()
        restarted = await start_web(stub_web_settings)
        async with session.get(f"{restarted.url}/movies/1") as resp:
            assert "marquee_visitor" not in resp.cookies  # kept, not replaced
            after = arm_of(await resp.text())
    assert arms == [arm, arm, arm] and after == arm
    assert any(f"arm={arm}" in call for call in stub_backends.recommender.calls)


async def test_visitors_are_spread_over_both_arms(start_web, stub_web_settings: Settings):
    write_experiment(stub_web_settings, experiment(share=0.5))
    web = await start_web(stub_web_settings)
    arms = set()
    for _ in range(20):
        async with browser() as session:
            arms.add(arm_of(await get_page(session, f"{web.url}/movies/1")))
    assert arms == {"control", "candidate"}


async def test_a_logged_in_user_keeps_their_arm(start_web, stub_web_settings: Settings):
    running = experiment()
    write_experiment(stub_web_settings, running)
    web = await start_web(stub_web_settings)
    expected = arm_for(running, "user:7")
    async with browser(user_id=7) as session:
        arms = [arm_of(await get_page(session, f"{web.url}/movies/{m}")) for m in (1, 2, 1)]
    async with browser(user_id=7) as other_browser:
        elsewhere = arm_of(await get_page(other_browser, f"{web.url}/movies/1"))
    assert arms == [expected] * 3 and elsewhere == expected


def _fields(shown: ShownRow) -> dict:
    return {f: getattr(shown, f) for f in shown.__struct_fields__}


@pytest.mark.timing
def test_tracking_the_row_adds_little_cpu_per_page():
    """The target is under 30 µs per page (``python -m bench.feedback_row`` gives the figure);
    10x headroom here."""
    from bench.feedback_row import measure

    figures = measure(pages=2000, runs=3)
    assert figures["experiment_added_us"] < 300
    assert figures["no_experiment_added_us"] < 300


def test_sigterm_flushes_the_buffered_impressions(web_process, state, keys):
    """The real process and signal: flushes far apart, a page, SIGTERM; the impression is in
    the stream when the process has exited."""
    web = web_process(feedback_flush_interval=3600)
    with urllib.request.urlopen(f"{web.url}/movies/1", timeout=30) as resp:
        assert resp.status == 200
        assert len(tracked_links(resp.read().decode())) >= 5
    assert impressions(state, keys) == []
    assert web.process.stop(timeout=30) == 0
    assert len(impressions(state, keys)) == 1


async def test_without_redis_the_events_are_counted_locally(start_web, stub_web_settings):
    web = await start_web(stub_web_settings)
    async with browser() as session:
        links = tracked_links(await get_page(session, f"{web.url}/movies/1"))
        await get_page(session, f"{web.url}/movies/2")
        status, _, _ = await follow(session, web.url, *links[0])
    assert status == 303
    keys = FeedbackKeys(stub_web_settings.redis_namespace)
    key = keys.counts(None, None, "stub")

    async def counted() -> bool:
        counts = await LocalCounts(counts_path(stub_web_settings), keys).read(key)
        return counts.get("impressions") == 2 and counts.get("clicks") == 1

    await async_wait_until(counted, 20.0, "2 impressions and 1 click in the local counts")


async def test_each_arm_sees_its_versions_row_and_its_click_is_counted_for_it(
    start_web, exp_settings: Settings, versions: Versions, http: aiohttp.ClientSession
):
    """The loop end to end in the monolith: two versions, one user in each arm; each page's
    row is made (and its token signed) by the arm's version, and a click reaches the report."""
    web = await start_web(exp_settings)
    running = new_experiment(versions)
    await web.app[WEB_FEEDBACK].store.save(running)
    users = {arm_for(running, f"user:{u}"): u for u in range(1, 60)}
    expected = {"control": versions.control, "candidate": versions.candidate}

    async def shown(arm: str) -> tuple[str | None, str | None, str]:
        async with browser(user_id=users[arm]) as session:
            links = tracked_links(await get_page(session, f"{web.url}/movies/1"))
        row = read_row_token(links[0][0], SECRET)
        assert row is not None
        return row.experiment, row.arm, row.version

    async def both_arms_served() -> bool:
        # the box loads the candidate in the background; until then the candidate's visitors
        # see the published version's row, recorded outside the experiment
        seen = {arm: await shown(arm) for arm in expected}
        assert all(
            s in ((running.id, a, expected[a]), (None, None, versions.control))
            for a, s in seen.items()
        ), seen
        return seen == {a: (running.id, a, v) for a, v in expected.items()}

    await async_wait_until(both_arms_served, 30.0, "each arm's version making its row")
    async with browser(user_id=users["candidate"]) as session:
        token, movie = tracked_links(await get_page(session, f"{web.url}/movies/1"))[0]
        assert (await follow(session, web.url, token, movie))[0] == 303

    async def reported() -> bool:
        headers = {"Authorization": f"Bearer {TEST_SECRETS['admin_token']}"}
        async with http.get(f"{web.url}/v1/experiments/current", headers=headers) as resp:
            body = await resp.json()
        arms = {a["arm"]: a for a in body.get("arms", [])}
        return arms.get("candidate", {}).get("clicks") == 1

    await async_wait_until(reported, 30.0, "the candidate's click in the experiment report")


async def test_the_visitor_cookie_is_secure_where_tls_ends_in_front(start_web, stub_web_settings):
    write_experiment(stub_web_settings, experiment())
    web = await start_web(replace(stub_web_settings, secure_cookies=True))
    async with browser() as session, session.get(f"{web.url}/movies/1") as resp:
        assert resp.status == 200
        assert resp.cookies["marquee_visitor"]["secure"]
