"""Feedback events, the web side: which arm a visitor is in, the tracked similar row (one
impression per page view) and the redirect that counts a click (``GET /r/{token}/{movie_id}``).

Costs on the movie page (the hot path): the experiment is read from a store that re-reads it
every few seconds (a clock read per page), the arm is a hash, the token one HMAC, the impression
an append to an in-process buffer (``services.feedback.buffer``) that a background task flushes
as one stream entry per ``feedback_flush_interval``. No Redis call per page.

The redirect is refused, and nothing counted, for a token we did not sign (403), an old one
(410, ``feedback_token_ttl``), a movie the row did not show (400), or a link of the row followed
a second time (409: ``SADD followed(view) movie`` answered 0). A click is counted for the first
movie followed in a view only (the set then holds one movie); another movie of the same row
redirects and adds nothing. With the state Redis down the visitor is redirected anyway and
nothing is counted. The redirect only ever goes to ``/movies/<id>``: never an open redirect.
"""

from __future__ import annotations

import base64
import logging
import os
import secrets
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field

from aiohttp import web

from recommender.redisconn import FAILURES, AsyncClient
from services.feedback.aggregate import add_batch
from services.feedback.assignment import arm_for
from services.feedback.backend import Feedback, open_feedback
from services.feedback.buffer import EventBuffer, Sink
from services.feedback.schemas import (
    Arm,
    Click,
    EventBatch,
    Experiment,
    FeedbackKeys,
    Impression,
    ShownRow,
)
from services.feedback.state import ExperimentStore
from services.feedback.tokens import MAX_TOKEN, read_row_token, row_token
from services.platform.app import SETTINGS, add_openapi_paths
from services.platform.errors import ApiError, BadRequest, Conflict, Forbidden
from services.platform.lru import Lru
from services.platform.metrics import Metrics
from services.platform.middleware import METRICS, error_response
from services.platform.openapi import operation, path_param
from services.platform.params import path_id
from services.platform.settings import Settings
from web_server import session
from web_server.fragments import RowFragment
from web_server.render import error_page

log = logging.getLogger("marquee.feedback")

VISITOR_COOKIE = "marquee_visitor"
VISITOR_MAX_AGE = 400 * 24 * 3600  # the longest a browser keeps a cookie
FOLLOWED_KEPT = 65536  # views whose follows a process without Redis remembers


class Gone(ApiError):
    status = 410
    code = "gone"


@dataclass(frozen=True, slots=True)
class PageArm:
    """The viewer's place in the running experiment (None when none runs): its id, the arm and
    the version that arm is to be served by; for a visitor seen first, the id their cookie is
    to carry."""

    experiment: str | None
    arm: Arm | None
    version: str | None = None
    new_visitor: str | None = None


NO_EXPERIMENT = PageArm(None, None)


@dataclass
class WebFeedback:
    settings: Settings
    keys: FeedbackKeys
    store: ExperimentStore
    buffer: EventBuffer
    redis: AsyncClient | None  # the state Redis: the followed sets; None = in-process sets
    metrics: Metrics | None = None
    _followed: Lru[str, set[int]] = field(init=False)

    def __post_init__(self) -> None:
        self._followed = Lru(FOLLOWED_KEPT, float(self.settings.feedback_token_ttl))

    # ---- the movie page ------------------------------------------------------------------------
    async def page_arm(self, request: web.Request) -> PageArm:
        """The viewer's arm: by user id when logged in, else by the visitor cookie (made here
        when an experiment runs and the visitor has none)."""
        experiment = await self.store.current()
        if experiment is None or experiment.stopped is not None:
            return NO_EXPERIMENT
        user = session.current_user(request)
        if user is not None:
            return _in(experiment, arm_for(experiment, f"user:{user}"))
        visitor = _visitor(request)
        new = None
        if visitor is None:
            visitor = new = secrets.token_urlsafe(16)
        return _in(experiment, arm_for(experiment, f"visitor:{visitor}"), new)

    def tracked_html(self, fragment: RowFragment, version: str, arm: PageArm) -> str:
        """The row with this view's token in its links, and its impression buffered. A row the
        arm's version did not make (the box fell back to the published version: the candidate
        still loading, or broken) is recorded outside the experiment: it says nothing of the
        arm, and counted under the arm it would skew the comparison."""
        now = time.time()
        view = base64.urlsafe_b64encode(os.urandom(9)).decode()
        ids = fragment.ids
        if arm.version != version:
            arm = NO_EXPERIMENT
        shown = ShownRow(view, version, arm.experiment, arm.arm, ids, int(now))
        self.buffer.add(Impression(view, version, arm.experiment, arm.arm, ids, now))
        return fragment.html(row_token(shown, self.settings.secret_key))

    # ---- the redirect ----------------------------------------------------------------------
    async def follow(self, view: str, movie_id: int) -> str:
        """Record that the view's visitor followed ``movie_id``: "first" (the view's click),
        "extra" (another movie of a view already counted), "replay" (this one again), or
        "unrecorded" (the state Redis is down)."""
        if self.redis is None:
            followed = self._followed.get(view)
            if followed is None:
                followed = set()
                self._followed.put(view, followed)
            if movie_id in followed:
                return "replay"
            followed.add(movie_id)
            return "first" if len(followed) == 1 else "extra"
        key = self.keys.followed(view)
        try:
            async with self.redis.pipeline(transaction=True) as pipe:
                pipe.sadd(key, movie_id)
                pipe.expire(key, self.settings.feedback_token_ttl)
                pipe.scard(key)
                added, _, size = await pipe.execute()
        except FAILURES as exc:
            log.warning("feedback: follow not recorded", extra={"error": str(exc)})
            return "unrecorded"
        if not added:
            return "replay"
        return "first" if size == 1 else "extra"


WEB_FEEDBACK = web.AppKey("web_feedback", WebFeedback)


def _visitor(request: web.Request) -> str | None:
    value = request.cookies.get(VISITOR_COOKIE, "")
    if 16 <= len(value) <= 64 and value.replace("-", "").replace("_", "").isalnum():
        return value
    return None


def _in(experiment: Experiment, arm: Arm | None, new_visitor: str | None = None) -> PageArm:
    version = experiment.version(arm) if arm is not None else None
    return PageArm(experiment.id, arm, version, new_visitor)


def set_visitor_cookie(request: web.Request, response: web.StreamResponse, arm: PageArm) -> None:
    """Give a visitor seen first during an experiment the cookie that keeps their arm."""
    if arm.new_visitor is None or response.prepared:
        return
    response.set_cookie(
        VISITOR_COOKIE,
        arm.new_visitor,
        max_age=VISITOR_MAX_AGE,
        httponly=True,
        samesite="Lax",
        path="/",
        secure=session.secure_cookie(request),
    )


# ---- GET /r/{token}/{movie_id} -------------------------------------------------------------------
def _refuse(request: web.Request, exc: ApiError, reason: str, movie_id: int) -> web.Response:
    metrics = request.app[WEB_FEEDBACK].metrics
    if metrics is not None:
        metrics.feedback_refusals.labels(reason).inc()
    if "application/json" in request.headers.get("Accept", ""):
        return error_response(exc)
    return error_page(
        request, exc.status, exc.message, link=(f"/movies/{movie_id}", "Go on to the movie")
    )


async def follow(request: web.Request) -> web.StreamResponse:
    """A tracked link of a similar row: 303 to ``/movies/<id>``, the click counted once."""
    movie_id = path_id(request, "movie_id")
    feedback = request.app[WEB_FEEDBACK]
    settings = feedback.settings
    shown = read_row_token(request.match_info["token"], settings.secret_key)
    if shown is None:
        exc: ApiError = Forbidden(
            "this link was not made by Marquee or was altered; nothing was recorded",
            code="forged_link",
        )
        return _refuse(request, exc, "forged", movie_id)
    if time.time() - shown.issued > settings.feedback_token_ttl:
        exc = Gone("this link is too old to be counted; nothing was recorded", code="expired_link")
        return _refuse(request, exc, "expired", movie_id)
    try:
        position = shown.movies.index(movie_id) + 1
    except ValueError:
        exc = BadRequest(
            f"movie {movie_id} was not in the row this link came from; nothing was recorded",
            code="not_in_row",
        )
        return _refuse(request, exc, "not_in_row", movie_id)
    outcome = await feedback.follow(shown.view, movie_id)
    if outcome == "replay":
        exc = Conflict(
            "this link was already followed from this page; nothing more was recorded",
            code="replayed_link",
        )
        return _refuse(request, exc, "replay", movie_id)
    if outcome == "first":
        click = Click(
            shown.view, shown.version, shown.experiment, shown.arm, movie_id, position, time.time()
        )
        feedback.buffer.add(click)
    if feedback.metrics is not None:
        feedback.metrics.feedback_clicks.labels("counted" if outcome == "first" else outcome).inc()
    return web.Response(status=303, headers={"Location": f"/movies/{movie_id}"})


# ---- resources -----------------------------------------------------------------------------
def _sink(feedback: Feedback, maxlen: int) -> Sink:
    """With the state Redis: one XADD per batch (the stream trimmed to about ``maxlen``);
    without: the local counts file, which the report reads."""
    redis, local, keys = feedback.redis, feedback.local, feedback.keys
    if redis is not None:

        async def xadd(batch: EventBatch) -> None:
            await add_batch(redis, keys, batch, maxlen)

        return xadd
    assert local is not None
    return local.add


async def feedback_ctx(app: web.Application) -> AsyncIterator[None]:
    """The experiment store, the event buffer and its flusher; on shutdown (SIGTERM included:
    the runner's graceful exit runs every cleanup_ctx) the buffer's last events are flushed.

    In the monolith the recommender's feedback resources are used (opened by its cleanup_ctx,
    which runs first and closes last): one store, one Redis client, and without Redis one
    process owning the local counts file. The web server alone opens its own."""
    from recommender.experiments import EXPERIMENTS

    settings = app[SETTINGS]
    shared = app[EXPERIMENTS].feedback if EXPERIMENTS in app else None
    feedback = shared if shared is not None else await open_feedback(settings)
    metrics = app[METRICS]
    buffer = EventBuffer(
        _sink(feedback, settings.feedback_stream_max),
        capacity=settings.feedback_buffer_max,
        interval=settings.feedback_flush_interval,
        metrics=metrics,
    )
    app[WEB_FEEDBACK] = WebFeedback(
        settings, feedback.keys, feedback.store, buffer, feedback.redis, metrics
    )
    log.info("feedback events: buffered, then to %s", feedback.where)
    buffer.start()
    try:
        yield
    finally:
        await buffer.close()
        if shared is None:
            await feedback.close()


def openapi_paths() -> dict:
    token = {
        "name": "token",
        "in": "path",
        "required": True,
        "description": "the page view's signed row token",
        "schema": {"type": "string", "maxLength": MAX_TOKEN},
    }
    return {
        "/r/{token}/{movie_id}": {
            "get": operation(
                "A tracked link of a movie page's similar row: 303 to /movies/{movie_id}, the "
                "view's first follow counted as a click; refused (nothing counted) when the movie "
                "was not in the row (400), the token is not ours (403), the link was followed "
                "already (409) or is too old (410). HTML, or JSON with Accept: application/json",
                parameters=[token, path_param("movie_id", "the movie followed")],
                ok=303,
                errors=(400, 403, 409, 410),
                content_type="text/html",
            )
        }
    }


def setup_feedback(app: web.Application) -> None:
    app.cleanup_ctx.append(feedback_ctx)
    add_openapi_paths(app, openapi_paths())
    # GET only: a HEAD (a link checker, a prefetch) must not count as a click.
    app.router.add_get("/r/{token}/{movie_id}", follow, name="follow", allow_head=False)
