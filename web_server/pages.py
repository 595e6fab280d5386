"""The web server's routes: HTML pages, the form posts, and the composed page as JSON.

Handlers are thin: they parse input, ask the composer or a client, and render. Errors raised as
``ApiError`` become HTML pages on HTML routes (see ``render.html_errors``) and JSON on ``/api``.
"""

from __future__ import annotations

import asyncio
import contextlib
import hmac
import os
import re
from collections.abc import Awaitable, Sequence
from typing import TypeVar

from aiohttp import web

from recommender.schemas import ScoredMovie
from services.catalog.schemas import Movie
from services.platform.app import SETTINGS
from services.platform.errors import BadRequest, Forbidden, NotReady
from services.platform.jsonutil import json_response, read_form
from services.platform.middleware import (
    CLIENT_CLOSED,
    client_went_away,
    error_response,
    mark_client_gone,
)
from services.platform.openapi import form_post, operation, path_param, query_param
from services.platform.params import MAX_ID, parse_id, path_id, query_int
from services.platform.settings import Settings
from services.subscription.schemas import SessionGrant
from web_server import session
from web_server.clients import BackendError, BackendRejected
from web_server.composer import PageFailed, Viewer
from web_server.feedback import NO_EXPERIMENT, WEB_FEEDBACK, set_visitor_cookie
from web_server.fragments import FRAGMENTS
from web_server.render import error_page, page, render
from web_server.schemas import Page
from web_server.state import CLIENTS, COMPOSER
from web_server.stencil import Stencil
from web_server.streaming import NOTHING, Fragment, of_future, stream

T = TypeVar("T")

ROW = 12
SEARCH_PAGE = 20
HOME_GENRES = ("Comedy", "Drama", "Action", "Animation", "Sci-Fi")
PLAN_IDS = ("basic", "standard", "premium")
KEY_RE = re.compile(r"^[A-Za-z0-9_-]{8,64}$")


def viewer(request: web.Request) -> Viewer | None:
    user = session.current_user(request)
    if user is None:
        return None
    return Viewer(user, session.session_cookie(request) or "")


def see_other(location: str) -> web.Response:
    """303: after a POST the browser GETs the result page (reload never re-posts)."""
    return web.Response(status=303, headers={"Location": location})


def new_key() -> str:
    """A fresh Idempotency-Key per rendered form: submitting one form twice applies once."""
    return os.urandom(16).hex()


# ---- the movie page ---------------------------------------------------------------------------
async def movie_page(request: web.Request) -> web.StreamResponse:
    """The movie page, streamed: the movie's details (the catalog, the primary fragment) go out
    as soon as they are known; the plan box and the similar row follow as they complete.

    The status is decided before the first byte: an unknown movie is a 404 page, a catalog
    outage a 503 page. ``Server-Timing`` therefore lists the calls finished when the headers
    leave (the catalog, and whatever else was quicker); the composed JSON
    (``/api/pages/movies/{id}``) carries every backend's time. The HTML comes from the
    fragment caches (``web_server.fragments``): per request only the viewer's bits are filled.
    """
    movie_id = path_id(request, "id")
    visitor = viewer(request)
    feedback = request.app.get(WEB_FEEDBACK)
    arm = await feedback.page_arm(request) if feedback is not None else NO_EXPERIMENT
    try:
        pending = await request.app[COMPOSER].start_movie_page(movie_id, visitor, arm.arm)
    except PageFailed as failed:
        return _failed_page(request, failed)
    try:
        if client_went_away(request):  # nobody to render the page for
            mark_client_gone(request)
            return web.Response(status=CLIENT_CLOSED)
        fragments = request.app[FRAGMENTS]
        movie = pending.movie
        csrf = session.csrf_token(request) if visitor else ""
        chunks = fragments.shell(movie, visitor is not None).fill(
            {
                "user": visitor.user_id,
                "user_label": session.current_label(request) or "",
                "user_initial": session.current_initial(request) or "",
                "csrf": csrf,
            }
            if visitor
            else {}
        )
        form = {"movie_id": movie_id, "csrf": csrf, "key": new_key()}

        async def plan_html() -> str:
            return fragments.plan_box(await pending.plan()).text(form)

        async def similar_html() -> str:
            row = await pending.similar()
            fragment = fragments.similar_row(row, movie, "similar" in pending.degraded)
            if feedback is None or not fragment.tracked or row.model_version is None:
                return fragment.html()
            return feedback.tracked_html(fragment, row.model_version, arm)

        def before_send(response: web.StreamResponse) -> None:
            session.remember_movie(request, response, movie_id)
            set_visitor_cookie(request, response, arm)

        return await stream(
            request,
            chunks,
            [Fragment(pending.plan_done, plan_html), Fragment(pending.similar_done, similar_html)],
            headers={"Server-Timing": pending.trace.server_timing()},
            before_send=before_send,
        )
    finally:
        await pending.cancel()


def _failed_page(request: web.Request, failed: PageFailed) -> web.Response:
    headers = {"Server-Timing": failed.trace.server_timing()}
    return error_page(request, failed.error.status, failed.error.message, headers=headers)


async def movie_page_json(request: web.Request) -> web.Response:
    movie_id = path_id(request, "id")
    try:
        page, trace = await request.app[COMPOSER].compose_movie_page(movie_id, viewer(request))
    except PageFailed as failed:
        response = error_response(failed.error)
        response.headers["Server-Timing"] = failed.trace.server_timing()
        return response
    return json_response(page, headers={"Server-Timing": trace.server_timing()})


# ---- home -------------------------------------------------------------------------------------
async def _quietly(awaitable: Awaitable[T]) -> T | None:
    """An optional home-page row: on any backend failure the row is simply left out."""
    try:
        return await awaitable
    except (BackendError, BackendRejected):
        return None


async def _titled(
    request: web.Request, items: Sequence[ScoredMovie], exclude: int | None = None
) -> list[Movie]:
    """A recommender answer's ids as movies: titles from one catalog batch, order kept."""
    ids = [i.movie_id for i in items if i.movie_id != exclude]
    return (await request.app[CLIENTS].catalog.movies(ids)).items


def _row_section(
    request: web.Request,
    section_id: str,
    heading: str,
    items: Sequence[Movie],
    *,
    note: str = "",
    anchor: Movie | None = None,
) -> str:
    context = {
        "section_id": section_id,
        "heading": heading,
        "items": items,
        "note": note,
        "anchor": anchor,
    }
    return render(request, "_row_section.html", context)


async def _for_you_html(request: web.Request, user_id: int) -> str:
    """ "For you": the recommender's picks from the user's rating history (quietly optional)."""
    recommender = request.app[CLIENTS].recommender
    answer = await _quietly(recommender.user_recommendations(user_id, ROW))
    items = await _quietly(_titled(request, answer.items)) if answer else None
    if not items:
        return ""
    return _row_section(
        request, "for-you", "For you", items, note=f"Picked from what user {user_id} rated."
    )


async def _because_html(request: web.Request, movie_id: int) -> str:
    """ "Because you watched X": movies like the one this viewer last opened (quietly optional)."""
    clients = request.app[CLIENTS]
    movie, answer = await asyncio.gather(
        _quietly(clients.catalog.movie(movie_id)),
        _quietly(clients.recommender.similar(movie_id, ROW)),
    )
    if movie is None or answer is None:
        return ""
    items = await _quietly(_titled(request, answer.items, exclude=movie_id))
    if not items:
        return ""
    return _row_section(request, "because", "Because you watched", items, anchor=movie)


async def home(request: web.Request) -> web.StreamResponse:
    """Home, streamed: the catalog rows (popular now, genres) are the primary content; the
    personal rows (recommender) are fragments that cannot hold the page back."""
    clients = request.app[CLIENTS]
    user = session.current_user(request)
    futures: dict[str, asyncio.Future[str]] = {}
    if user is not None:
        futures["for_you"] = asyncio.ensure_future(_for_you_html(request, user))
        last = session.last_movie(request)
        if last is not None:
            futures["because"] = asyncio.ensure_future(_because_html(request, last))
    try:
        jobs = [clients.catalog.popular(ROW)]
        jobs += [clients.catalog.popular(ROW, genre) for genre in HOME_GENRES]
        results = await asyncio.gather(*(_quietly(job) for job in jobs))
        popular, rows = results[0], results[1:]
        genre_rows = [(g, items) for g, items in zip(HOME_GENRES, rows, strict=True) if items]
        context = {"popular": popular, "genre_rows": genre_rows}
        shell = Stencil(render(request, "home.html", context))
        fragments = [of_future(futures[n]) if n in futures else NOTHING for n in shell.slots]
        return await stream(request, shell.fill({}), fragments)
    finally:
        for future in futures.values():
            future.cancel()
        for future in futures.values():
            with contextlib.suppress(BaseException):
                await future


# ---- search -----------------------------------------------------------------------------------
async def search(request: web.Request) -> web.Response:
    q = request.query.get("q", "").strip()[:200]
    genre = request.query.get("genre", "").strip()[:64] or None
    number = query_int(request, "page", 1, minimum=1, maximum=1000)
    clients = request.app[CLIENTS]
    genres = await _quietly(request.app[COMPOSER].genres()) or []
    results = None
    if q or genre:
        try:
            offset = (number - 1) * SEARCH_PAGE
            results = await clients.catalog.search(q, genre, SEARCH_PAGE, offset)
        except BackendRejected as exc:
            raise BadRequest(exc.message, code=exc.code) from None
        except BackendError:
            raise NotReady("search is unavailable right now; please try again shortly") from None
    total = results.total if results else 0
    context = {
        "q": q,
        "genre": genre,
        "genres": genres,
        "results": results,
        "page": number,
        "pages": max(1, -(-total // SEARCH_PAGE)),
    }
    return page(request, "search.html", context)


# ---- log in, join, log out -------------------------------------------------------------------
def _safe_next(raw: object) -> str:
    """Only a local path: never redirect a visitor off the site."""
    if isinstance(raw, str) and raw.startswith("/") and not raw.startswith(("//", "/\\")):
        return raw[:500]
    return "/"


def _account_page(
    request: web.Request,
    template: str,
    next_url: str,
    *,
    error: str | None = None,
    name: str = "",
    user_id: str = "",
    status: int = 200,
    retry_after: int | None = None,
) -> web.Response:
    """The log-in or join form, with what the visitor typed (never the password) and why it
    was refused; a 429 says when to try again."""
    context = {
        "next": next_url,
        "error": error,
        "name": name,
        "value": user_id,
        "development": request.app[SETTINGS].development,
    }
    headers = {"Retry-After": str(retry_after)} if retry_after else None
    return page(request, template, context, status=status, headers=headers)


def _retry_after(exc: BackendRejected) -> int | None:
    details = exc.details if isinstance(exc.details, dict) else {}
    seconds = details.get("retry_after")
    return seconds if isinstance(seconds, int) and seconds > 0 else None


async def _signed_in(
    request: web.Request, call: Awaitable[SessionGrant], template: str, next_url: str, **typed: str
) -> web.StreamResponse:
    """Await a log-in or registration: on success set the cookie and go on to ``next_url``; a
    refusal goes back on the form with the service's reason and status."""
    try:
        grant = await call
    except BackendRejected as exc:
        return _account_page(
            request,
            template,
            next_url,
            error=exc.message,
            status=exc.status,
            retry_after=_retry_after(exc),
            **typed,
        )
    except BackendError:
        raise NotReady("logging in is not possible right now; please try again shortly") from None
    response = see_other(next_url)
    session.login(request, response, grant)
    return response


async def login_form(request: web.Request) -> web.Response:
    return _account_page(request, "login.html", _safe_next(request.query.get("next")))


async def login(request: web.Request) -> web.StreamResponse:
    """Name and password; or, in development only, a MovieLens user id alone (the subscription
    service refuses a demo login outside development, whatever this form says)."""
    form = await read_form(request)
    session.require_csrf(request, form)
    next_url = _safe_next(form.get("next"))
    subscriptions = request.app[CLIENTS].subscriptions
    client = session.client_address(request)
    if "user_id" in form:
        raw = str(form.get("user_id", "")).strip()[:20]
        try:
            user_id = parse_id(raw, "user_id")
        except BadRequest:
            return _account_page(
                request,
                "login.html",
                next_url,
                error="Enter your MovieLens user id: a whole number (1 to 610 have ratings).",
                user_id=raw,
                status=400,
            )
        call = subscriptions.demo_log_in(user_id, client)
        return await _signed_in(request, call, "login.html", next_url, user_id=raw)
    name = str(form.get("name", "")).strip()[:64]
    password = str(form.get("password", ""))[:1024]
    if not name or not password:
        return _account_page(
            request,
            "login.html",
            next_url,
            error="Enter your name and your password.",
            name=name,
            status=400,
        )
    call = subscriptions.log_in(name, password, client)
    return await _signed_in(request, call, "login.html", next_url, name=name)


async def join_form(request: web.Request) -> web.Response:
    return _account_page(request, "join.html", _safe_next(request.query.get("next")))


async def join(request: web.Request) -> web.StreamResponse:
    """Make an account (name, password twice) and log it in."""
    form = await read_form(request)
    session.require_csrf(request, form)
    next_url = _safe_next(form.get("next"))
    name = str(form.get("name", "")).strip()[:64]
    password = str(form.get("password", ""))[:1024]
    confirm = str(form.get("confirm", ""))[:1024]
    if not hmac.compare_digest(password.encode(), confirm.encode()):
        return _account_page(
            request,
            "join.html",
            next_url,
            error="The two passwords are not the same; type them again.",
            name=name,
            status=400,
        )
    call = request.app[CLIENTS].subscriptions.register(
        name, password, session.client_address(request)
    )
    return await _signed_in(request, call, "join.html", next_url, name=name)


async def logout(request: web.Request) -> web.StreamResponse:
    """End every session of this user (the subscription service moves them to the next session
    generation), then drop the cookie. If that cannot be done now, nothing changes and the
    visitor is told so: a cookie dropped here while it still works elsewhere is no logout."""
    form = await read_form(request)
    session.require_csrf(request, form)
    response = see_other("/")
    token = session.session_cookie(request)
    ended = None
    if token and session.current_user(request) is not None:
        try:
            ended = await request.app[CLIENTS].subscriptions.log_out(token)
        except BackendRejected:  # not a live session of ours any more: nothing to end
            ended = None
        except BackendError:
            raise NotReady(
                "you could not be logged out right now, so you are still logged in; "
                "please try again shortly"
            ) from None
    session.logout(request, response, ended)
    return response


# ---- subscription -----------------------------------------------------------------------------
async def change_subscription(request: web.Request) -> web.StreamResponse:
    """Subscribe, change or cancel the logged-in user's own plan, then redirect back (PRG)."""
    form = await read_form(request)
    user = session.current_user(request)
    if user is None:
        raise Forbidden("log in to choose a plan", code="login_required")
    session.require_csrf(request, form)
    action = str(form.get("action", "subscribe"))
    plan = str(form.get("plan", ""))
    key = str(form.get("idempotency_key", ""))
    if action not in ("subscribe", "change", "cancel"):
        raise BadRequest("unknown action", code="invalid_action")
    if action != "cancel" and plan not in PLAN_IDS:
        raise BadRequest("choose one of the plans: basic, standard or premium", code="invalid_plan")
    if not KEY_RE.match(key):
        raise BadRequest("the form lacks its idempotency key; reload the page", code="invalid_key")
    back = "/"
    movie_id = str(form.get("movie_id", ""))
    if movie_id.isdigit() and 0 < int(movie_id) <= MAX_ID:
        back = f"/movies/{int(movie_id)}"
    token = session.session_cookie(request) or ""
    idempotency_key = f"web-{user}-{key}"
    subs = request.app[CLIENTS].subscriptions
    try:
        if action == "cancel":
            await subs.cancel(user, token, idempotency_key)
        else:
            await subs.put(user, plan, token, idempotency_key)
    except BackendRejected as exc:
        raise BadRequest(exc.message, code=exc.code) from None
    except BackendError:
        raise NotReady(
            "your plan change could not be confirmed right now; please send the form again "
            "(it never applies twice)"
        ) from None
    return see_other(back)


# ---- routes -----------------------------------------------------------------------------------
def setup_routes(app: web.Application) -> None:
    app.router.add_get("/", home, name="home")
    app.router.add_get("/movies/{id}", movie_page, name="movie")
    app.router.add_get("/search", search, name="search")
    app.router.add_get("/login", login_form, name="login")
    app.router.add_post("/login", login)
    app.router.add_get("/join", join_form, name="join")
    app.router.add_post("/join", join)
    app.router.add_post("/logout", logout, name="logout")
    app.router.add_post("/subscription", change_subscription, name="subscription")
    app.router.add_get("/api/pages/movies/{id}", movie_page_json, name="movie_json")


def openapi_paths(settings: Settings) -> dict:
    html = "text/html"
    movie_id = [path_param("id", "MovieLens movie id")]
    writes = (400, 403, 503)

    return {
        "/api/pages/movies/{id}": {
            "get": operation(
                "The composed movie page as JSON (movie, plan, similar, degraded, timings); "
                "Server-Timing header lists each backend's time",
                returns=Page,
                parameters=movie_id,
                errors=(400, 404, 503),
            )
        },
        "/": {"get": operation("Home page (HTML)", errors=(), content_type=html)},
        "/movies/{id}": {
            "get": operation(
                "Movie page (HTML)", parameters=movie_id, errors=(400, 404, 503), content_type=html
            )
        },
        "/search": {
            "get": operation(
                "Search page (HTML)",
                parameters=[
                    query_param("q", {"type": "string"}, "title words"),
                    query_param("genre", {"type": "string"}, "genre filter"),
                    query_param("page", {"type": "integer", "minimum": 1}, "result page"),
                ],
                errors=(400, 503),
                content_type=html,
            )
        },
        "/login": {
            "get": operation("Log-in form (HTML)", errors=(), content_type=html),
            "post": form_post(
                "Log in with name + password (or, in development, a MovieLens user id); sets "
                "the session cookie",
                (400, 401, 403, 429, 503),
            ),
        },
        "/join": {
            "get": operation("Join form (HTML)", errors=(), content_type=html),
            "post": form_post(
                "Make an account (name, password twice) and log it in", (400, 403, 409, 429, 503)
            ),
        },
        "/logout": {"post": form_post("Log out: end every session of this user", writes)},
        "/subscription": {
            "post": form_post("Subscribe, change or cancel the viewer's plan", writes)
        },
    }
