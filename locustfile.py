"""Locust version of Marquee's load-test scenarios (``python -m loadtest`` is the main tool).

Locust is not a Marquee dependency; install it yourself to use this file:

    pip install locust
    locust -f locustfile.py --host http://127.0.0.1:8080

Environment: ``MARQUEE_RECOMMENDER_URL`` (recommender API base, default: the host),
``MARQUEE_CATALOG_URL`` (for the popular list, default: the host) and ``LOADTEST_MIX``
(``page=70,similar=20,search=10``; default: the tool's default mix). Locust is a closed-model
generator: under overload it under-reports latency (see docs/loadtest.md).
"""

from __future__ import annotations

import functools
import json
import os
import random
import urllib.request

from locust import HttpUser, between

from loadtest.config import DEFAULT_DATA_DIR, DEFAULT_MIX, parse_mix
from loadtest.scenarios import PLANS, REDIRECTS, extract_csrf, plan_form
from loadtest.workload import Workload, build_workload, movies_from_files, movies_from_popular


@functools.cache
def workload(catalog: str) -> Workload:
    """Popular movies from the catalog, or the bundled ratings when it is unreachable."""
    try:
        url = f"{catalog}/v1/movies/popular?limit=2000"
        with urllib.request.urlopen(url, timeout=3) as resp:  # noqa: S310 - operator's URL
            movies = movies_from_popular(json.load(resp))
        source = f"catalog {catalog}"
    except (OSError, ValueError):
        movies, source = movies_from_files(DEFAULT_DATA_DIR, 2000), "file"
    return build_workload(movies, popularity="counts", zipf_s=1.0, user_ids=(1, 610), source=source)


def page(user: MarqueeUser) -> None:
    user.client.get(f"/movies/{user.wl.movie(user.rng)}", name="/movies/[id]")


def page_json(user: MarqueeUser) -> None:
    user.client.get(f"/api/pages/movies/{user.wl.movie(user.rng)}", name="/api/pages/movies/[id]")


def similar(user: MarqueeUser) -> None:
    user.client.get(
        f"{user.rec}/v1/similar/{user.wl.movie(user.rng)}?k=10", name="/v1/similar/[id]"
    )


def user_recs(user: MarqueeUser) -> None:
    user.client.get(
        f"{user.rec}/v1/users/{user.wl.user(user.rng)}/recommendations?k=10",
        name="/v1/users/[id]/recommendations",
    )


def batch_similar(user: MarqueeUser) -> None:
    ids = ",".join(map(str, user.wl.movies(user.rng, user.rng.randint(3, 10))))
    user.client.get(f"{user.rec}/v1/similar?ids={ids}&k=10", name="/v1/similar?ids")


def history_recs(user: MarqueeUser) -> None:
    history = user.wl.movies(user.rng, user.rng.randint(5, 20))
    user.client.post(
        f"{user.rec}/v1/recommendations",
        json={"history": history, "k": 10},
        name="/v1/recommendations",
    )


def search(user: MarqueeUser) -> None:
    word, genre = user.wl.search(user.rng)
    params = {"q": word} if genre is None else {"q": word, "genre": genre}
    user.client.get("/search", params=params, name="/search")


def home(user: MarqueeUser) -> None:
    user.client.get("/", name="/")


def session(user: MarqueeUser) -> None:
    """Log in, view a movie page, then subscribe / change plan / cancel (own cookie jar)."""
    user.client.cookies.clear()
    token = extract_csrf(user.client.get("/login", name="/login").content)
    if token is None:
        return
    form = {"user_id": str(user.wl.user(user.rng)), "csrf_token": token}
    with user.client.post(
        "/login", data=form, allow_redirects=False, name="POST /login", catch_response=True
    ) as resp:
        if resp.status_code not in REDIRECTS:
            resp.failure(f"login answered {resp.status_code}")
            return
    html = user.client.get(f"/movies/{user.wl.movie(user.rng)}", name="/movies/[id]").content
    form = plan_form(html, user.rng.choice((*PLANS, "cancel")), token)
    with user.client.post(
        "/subscription",
        data=form,
        allow_redirects=False,
        name="POST /subscription",
        catch_response=True,
    ) as resp:
        if resp.status_code not in REDIRECTS:
            resp.failure(f"subscription answered {resp.status_code}")


SCENARIO_FUNCTIONS = {
    "page": page,
    "page_json": page_json,
    "similar": similar,
    "user_recs": user_recs,
    "batch_similar": batch_similar,
    "history_recs": history_recs,
    "session": session,
    "search": search,
    "home": home,
}


def task_weights() -> dict:
    mix = parse_mix(os.environ["LOADTEST_MIX"]) if "LOADTEST_MIX" in os.environ else DEFAULT_MIX
    return {SCENARIO_FUNCTIONS[name]: max(1, round(w)) for name, w in mix.items() if w > 0}


class MarqueeUser(HttpUser):
    """One simulated visitor; anonymous except inside the ``session`` scenario."""

    wait_time = between(0.5, 2.0)
    tasks = task_weights()

    def on_start(self) -> None:
        host = (self.host or "http://127.0.0.1:8080").rstrip("/")
        self.rec = os.environ.get("MARQUEE_RECOMMENDER_URL", host).rstrip("/")
        self.wl = workload(os.environ.get("MARQUEE_CATALOG_URL", host).rstrip("/"))
        self.rng = random.Random()
