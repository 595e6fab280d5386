"""The scenarios: what one simulated visit asks for, as data (sans I/O).

A scenario is a function ``(workload, rng) -> Request | Flow``:

- most return one ``Request``; the visit succeeds when its status is below 400;
- a multi-step visit (``session``) is a ``Flow``: a generator that yields each ``Request`` and
  is sent back its ``Response``; it raises ``BadResponse`` when an answer is not what a real
  client needs (no CSRF token, no redirect). Any status of 400 or more ends it as an error.

Nothing here does I/O, so one definition drives both the tool's engine (``loadtest.runner``)
and Locust (``locustfile.py``), and this module needs only the standard library.
"""

from __future__ import annotations

import json
import random
import re
from collections.abc import Callable, Generator
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlencode

from loadtest.workload import Workload

WEB, REC = "web", "rec"  # which base URL a request goes to: the web server or the recommender API
PLANS = ("basic", "standard", "premium")
REDIRECTS = frozenset({301, 302, 303, 307, 308})
FORM = "application/x-www-form-urlencoded"
JSON = "application/json"


@dataclass(frozen=True, slots=True)
class Request:
    """One HTTP request. ``template`` names the endpoint (``/movies/{id}``) for error grouping."""

    origin: str  # WEB or REC
    method: str
    template: str
    target: str  # path and query, relative to the origin's base URL
    body: bytes = b""
    content_type: str | None = None


@dataclass(frozen=True, slots=True)
class Response:
    status: int
    body: bytes


class BadResponse(Exception):
    """The server answered, but not with what a real client needs (no CSRF token, no redirect)."""


Flow = Generator[Request, Response, None]
Scenario = Callable[[Workload, random.Random], "Request | Flow"]


def get(origin: str, template: str, target: str) -> Request:
    return Request(origin, "GET", template, target)


def post_form(origin: str, target: str, form: dict[str, str]) -> Request:
    return Request(origin, "POST", target, target, urlencode(form).encode(), FORM)


def hidden_value(html: bytes, name: str) -> str | None:
    """The first hidden input ``name``'s value, whichever attribute comes first."""
    quoted = re.escape(name.encode())
    for pattern in (
        rb"""name=["']""" + quoted + rb"""["'][^>]*?value=["']([^"']+)["']""",
        rb"""value=["']([^"']+)["'][^>]*?name=["']""" + quoted + rb"""["']""",
    ):
        match = re.search(pattern, html)
        if match:
            return match.group(1).decode("utf-8", "replace")
    return None


def extract_csrf(html: bytes) -> str | None:
    return hidden_value(html, "csrf_token")


def plan_form(html: bytes, choice: str, token: str) -> dict[str, str]:
    """What the movie page's plan form posts for ``choice`` (a plan id or "cancel"): the choice
    plus the form's hidden fields (CSRF token, idempotency key, movie id)."""
    form = {"action": "cancel"} if choice == "cancel" else {"plan": choice}
    form["csrf_token"] = extract_csrf(html) or token
    for name in ("idempotency_key", "movie_id"):
        value = hidden_value(html, name)
        if value is not None:
            form[name] = value
    return form


# ---- one-request scenarios ------------------------------------------------------------------
def page(wl: Workload, rng: random.Random) -> Request:
    return get(WEB, "/movies/{id}", f"/movies/{wl.movie(rng)}")


def page_json(wl: Workload, rng: random.Random) -> Request:
    return get(WEB, "/api/pages/movies/{id}", f"/api/pages/movies/{wl.movie(rng)}")


def similar(wl: Workload, rng: random.Random) -> Request:
    return get(REC, "/v1/similar/{id}", f"/v1/similar/{wl.known_movie(rng)}?k=10")


def user_recs(wl: Workload, rng: random.Random) -> Request:
    target = f"/v1/users/{wl.user(rng)}/recommendations?k=10"
    return get(REC, "/v1/users/{id}/recommendations", target)


def batch_similar(wl: Workload, rng: random.Random) -> Request:
    ids = ",".join(map(str, wl.movies(rng, rng.randint(3, 10))))
    return get(REC, "/v1/similar?ids=", f"/v1/similar?ids={ids}&k=10")


def history_recs(wl: Workload, rng: random.Random) -> Request:
    history = wl.movies(rng, rng.randint(5, 20))
    body = json.dumps({"history": history, "k": 10}, separators=(",", ":")).encode()
    return Request(REC, "POST", "/v1/recommendations", "/v1/recommendations", body, JSON)


def search(wl: Workload, rng: random.Random) -> Request:
    word, genre = wl.search(rng)
    query = {"q": word} if genre is None else {"q": word, "genre": genre}
    return get(WEB, "/search", f"/search?{urlencode(query)}")


def home(wl: Workload, rng: random.Random) -> Request:
    return get(WEB, "/", "/")


# ---- multi-step visits ----------------------------------------------------------------------
def session(wl: Workload, rng: random.Random) -> Flow:
    """A logged-in visit: log in, view a movie page, then subscribe, change plan or cancel.

    The driver gives each visit its own cookie jar (one simulated user) and shares the
    connections; requests are never redirected, so the redirects themselves are checked.
    """
    login_page = yield get(WEB, "/login", "/login")
    token = extract_csrf(login_page.body)
    if token is None:
        raise BadResponse("no csrf_token on /login")
    user = str(wl.user(rng))
    answer = yield post_form(WEB, "/login", {"user_id": user, "csrf_token": token})
    if answer.status not in REDIRECTS:
        raise BadResponse(f"POST /login answered {answer.status}, expected a redirect")
    html = (yield get(WEB, "/movies/{id}", f"/movies/{wl.movie(rng)}")).body
    form = plan_form(html, rng.choice((*PLANS, "cancel")), token)
    answer = yield post_form(WEB, "/subscription", form)
    if answer.status not in REDIRECTS:
        raise BadResponse(f"POST /subscription answered {answer.status}, expected a redirect")


REGISTRY: dict[str, Scenario] = {
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


# ---- replaying a list of request targets ----------------------------------------------------
_NUMBER = re.compile(r"\d+")


class Replay:
    """``--paths FILE``: GET each listed target in turn (cycling), against the base URL.

    The requests are built once, so a replay costs the generator almost nothing beyond the
    engine itself; that makes it the mode to compare with wrk, which replays the same way.
    """

    def __init__(self, targets: list[str]) -> None:
        if not targets:
            raise ValueError("no request targets to replay")
        self.requests = [get(WEB, _NUMBER.sub("{n}", t), t) for t in targets]
        self.next = 0

    def __call__(self, wl: Workload, rng: random.Random) -> Request:
        i = self.next
        self.next = i + 1 if i + 1 < len(self.requests) else 0
        return self.requests[i]


def read_targets(path: str | Path) -> list[str]:
    """One request target per line (``/v1/similar/1?k=10``); blank lines and ``#`` ignored."""
    out = []
    for n, line in enumerate(Path(path).read_text(encoding="utf-8").splitlines(), start=1):
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        if not line.startswith("/") or any(c.isspace() for c in line):
            raise ValueError(f"{path}:{n}: not a request target starting with '/': {line[:60]!r}")
        out.append(line)
    return out
