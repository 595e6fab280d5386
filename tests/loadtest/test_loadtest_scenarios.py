"""Every scenario sends what the Marquee contracts say, including the logged-in session."""

from __future__ import annotations

import asyncio
import random
from collections import Counter

from loadtest.config import SCENARIOS
from loadtest.runner import Mix, arrival_offset, run_load
from loadtest.scenarios import REGISTRY, Replay, extract_csrf, plan_form
from loadtest.workload import Movie, build_workload, load_workload, movies_from_files


async def test_every_scenario_succeeds_against_the_contract(fake_marquee, config, workload):
    url, hits = await fake_marquee()
    cfg = config(base_url=url, users=3, requests=180, mix={name: 1 for name in SCENARIOS})
    res = await run_load(cfg, workload=workload)
    assert res["total"]["error_count"] == 0, res["total"]["errors"]
    assert res["total"]["ok"] == 180
    assert set(res["scenarios"]) == set(SCENARIOS)
    n_sessions = res["scenarios"]["session"]["ok"]
    assert n_sessions > 0
    # one session = login form, login, movie page, subscription change (with a cookie)
    assert hits["login_form"] == hits["login"] == hits["subscription"] == n_sessions
    changes = sum(v for k, v in hits.items() if k.startswith("subscription_"))
    assert changes == n_sessions
    for name in (
        "page_json",
        "similar",
        "user_recs",
        "batch_similar",
        "history_recs",
        "search",
        "home",
    ):
        assert hits[name] == res["scenarios"][name]["ok"] > 0


async def test_session_without_csrf_token_is_a_bad_response(serve, config, workload):
    from aiohttp import web

    async def no_form(request: web.Request) -> web.Response:
        return web.Response(text="<html>no form here</html>", content_type="text/html")

    app = web.Application()
    app.router.add_get("/login", no_form)
    url = await serve(app)
    res = await run_load(
        config(base_url=url, requests=3, rate=50.0, mix={"session": 1}), workload=workload
    )
    assert res["total"]["errors"] == {"bad_response": 3}


def test_extract_csrf_either_attribute_order():
    assert extract_csrf(b'<input type="hidden" name="csrf_token" value="abc">') == "abc"
    assert extract_csrf(b"<input value='xyz' type=hidden name='csrf_token'>") == "xyz"
    assert extract_csrf(b"<input name=other value=1>") is None


def test_zipf_sampling_prefers_popular_movies():
    movies = [Movie(id=i, title=f"T{i}", genres=(), rating_count=1) for i in range(1, 101)]
    wl = build_workload(movies, popularity="zipf", zipf_s=1.2, user_ids=(1, 610), source="t")
    rng = random.Random(1)
    counts = Counter(wl.movie(rng) for _ in range(20000))
    ranked = [mid for mid, _ in counts.most_common()]
    assert ranked[:3] == [1, 2, 3]
    # rank 1 vs rank 10 under s=1.2: 10**1.2 ~ 15.8x
    assert 10 < counts[1] / counts[10] < 25


def test_counts_popularity_follows_rating_counts():
    movies = [Movie(1, "A", (), 10), Movie(2, "B", (), 1000), Movie(3, "C", (), 100)]
    wl = build_workload(movies, popularity="counts", zipf_s=1.0, user_ids=(1, 5), source="t")
    assert wl.movie_ids == (2, 3, 1)
    rng = random.Random(2)
    counts = Counter(wl.movie(rng) for _ in range(11100))
    assert counts[2] > 8 * counts[3] > 0 and counts[3] > 4 * counts[1]
    assert all(1 <= wl.user(rng) <= 5 for _ in range(100))


async def test_workload_from_catalog_then_fallback_to_bundled_data(fake_marquee, closed_port):
    url, _ = await fake_marquee()
    # a blocking fetch (it runs once, before any load): off this loop, which serves the catalog
    wl, warning = await asyncio.to_thread(
        load_workload,
        catalog_base=url,
        limit=5,
        popularity="counts",
        zipf_s=1.0,
        user_ids=(1, 610),
        data_dir="unused",
    )
    assert warning is None and wl.source.startswith("catalog")
    assert wl.movie_ids == (1, 2, 3, 4, 5)
    assert "alpha" in wl.search_words and "Drama" in wl.genres
    # catalog unreachable: use the bundled ratings.csv
    wl2, warning2 = await asyncio.to_thread(
        load_workload,
        catalog_base=f"http://127.0.0.1:{closed_port}",
        limit=50,
        popularity="counts",
        zipf_s=1.0,
        user_ids=(1, 610),
        data_dir=str(_data_dir()),
        timeout=1.0,
    )
    assert warning2 and "unavailable" in warning2
    assert wl2.source.startswith("file") and len(wl2.movie_ids) == 50
    assert wl2.movie_ids[0] == 356  # Forrest Gump: the most rated movie in ml-latest-small


def _data_dir():
    from loadtest.config import DEFAULT_DATA_DIR

    return DEFAULT_DATA_DIR


def test_movies_from_files_reads_counts_and_titles():
    movies = movies_from_files(_data_dir(), 3)
    assert [m.id for m in movies] == [356, 318, 296]
    assert movies[0].title.startswith("Forrest Gump") and "Drama" in movies[0].genres
    assert movies[0].rating_count == 329


def test_ramp_up_schedule_grows_linearly():
    rate, ramp = 100.0, 2.0
    times = [arrival_offset(k, rate, ramp) for k in range(400)]
    assert times == sorted(times)
    in_first_second = sum(1 for t in times if t < 1.0)
    in_second_second = sum(1 for t in times if 1.0 <= t < 2.0)
    in_third = sum(1 for t in times if 2.0 <= t < 3.0)
    assert abs(in_first_second - 25) <= 1 and abs(in_second_second - 75) <= 1
    assert abs(in_third - 100) <= 1
    assert arrival_offset(10, 100.0, 0.0) == 0.1


def test_mix_pick_follows_weights():
    mix = Mix({"page": 70, "similar": 20, "search": 10}, REGISTRY)
    rng = random.Random(3)
    counts = Counter(mix.names[mix.pick(rng)] for _ in range(20000))
    assert abs(counts["page"] / 20000 - 0.7) < 0.02
    assert abs(counts["search"] / 20000 - 0.1) < 0.02


def test_plan_form_posts_the_forms_hidden_fields_back():
    html = (
        b'<form><input type="hidden" name="csrf_token" value="t1">'
        b'<input type="hidden" name="idempotency_key" value="k1">'
        b'<input type="hidden" name="movie_id" value="42"></form>'
    )
    assert plan_form(html, "premium", "login-token") == {
        "plan": "premium",
        "csrf_token": "t1",
        "idempotency_key": "k1",
        "movie_id": "42",
    }
    assert plan_form(b"<p>no form</p>", "cancel", "login-token") == {
        "action": "cancel",
        "csrf_token": "login-token",
    }


async def test_the_popular_list_is_paged_within_the_catalogs_limit(serve):
    """Like the real catalog, this one rejects ``limit`` above 100: 250 movies take 3 pages."""
    from aiohttp import web

    asked: list[tuple[int, int]] = []

    async def popular(request: web.Request) -> web.Response:
        limit, offset = int(request.query["limit"]), int(request.query["offset"])
        asked.append((limit, offset))
        if limit > 100:
            return web.json_response({"error": {"code": "bad_limit"}}, status=400)
        items = [
            {"id": i, "title": f"Film {i}", "genres": ["Drama"], "rating_count": 1000 - i}
            for i in range(offset + 1, min(offset + limit, 300) + 1)
        ]
        return web.json_response({"items": items})

    app = web.Application()
    app.router.add_get("/v1/movies/popular", popular)
    url = await serve(app)
    wl, warning = await asyncio.to_thread(
        load_workload,
        catalog_base=url,
        limit=250,
        popularity="counts",
        zipf_s=1.0,
        user_ids=(1, 610),
        data_dir="unused",
    )
    assert warning is None and len(wl.movie_ids) == 250
    assert asked == [(100, 0), (100, 100), (50, 200)]


def test_replay_cycles_through_targets_with_templates():
    replay = Replay(["/v1/similar/12?k=10", "/movies/3"])
    reqs = [replay(None, random.Random()) for _ in range(3)]  # type: ignore[arg-type]
    assert [r.target for r in reqs] == ["/v1/similar/12?k=10", "/movies/3", "/v1/similar/12?k=10"]
    assert reqs[0].template == "/v{n}/similar/{n}?k={n}" and reqs[0].method == "GET"


async def test_replay_sends_exactly_the_listed_targets(serve, config, tmp_path):
    from aiohttp import web

    seen: list[str] = []

    async def record(request: web.Request) -> web.Response:
        seen.append(request.path_qs)
        return web.Response(text="ok")

    app = web.Application()
    app.router.add_get("/{tail:.*}", record)
    url = await serve(app)
    paths = tmp_path / "targets.txt"
    paths.write_text("# comment\n/a?x=1\n\n/b/2\n")
    res = await run_load(config(base_url=url, paths=str(paths), rate=200.0, requests=6))
    assert res["total"]["ok"] == 6 and set(res["scenarios"]) == {"replay"}
    assert seen == ["/a?x=1", "/b/2"] * 3


async def test_every_scenario_works_against_the_real_monolith(settings, serve_app, config):
    """The real server's contracts, not the fake's: the popular list (paged), pages, the
    recommender API, search, and a logged-in session changing a plan through its forms."""
    from tests.conftest import replace
    from web_server.app import create_app

    url = await serve_app(create_app(replace(settings, mode="monolith")))
    cfg = config(base_url=url, users=3, requests=90, mix={name: 1 for name in SCENARIOS})
    res = await run_load(cfg)
    assert res["workload"]["source"] == f"catalog {url}" and res["workload"]["movies"] == 2000
    assert res["total"]["error_count"] == 0, res["error_details"]
    assert set(res["scenarios"]) == set(SCENARIOS) and res["scenarios"]["session"]["ok"] > 0
