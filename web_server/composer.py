"""The page composer: one movie page from three backends, concurrently, each fragment with its
own deadline and fallback.

Every call starts at once. The titles lookup for similar movies is chained directly onto the
recommender's answer inside one task, so the page costs
``max(catalog, subscription, recommender + catalog batch)`` and never the sum. Only the movie
itself (the primary fragment) can fail the page; the plan and the similar row degrade to a
fallback within their own deadlines, and the whole page stays within ``settings.page_budget``.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Awaitable
from dataclasses import dataclass, field
from typing import TypeVar

from services.platform.errors import ApiError, BadRequest, NotFound, NotReady
from services.platform.metrics import Metrics
from services.platform.settings import Settings
from web_server.clients import BackendError, BackendRejected, Clients

T = TypeVar("T")

SIMILAR_K = 12
PLANS_TTL = 300.0  # plans are configuration: fetched once in a while, not on every page


@dataclass(frozen=True)
class Viewer:
    """A logged-in visitor; the token goes to the subscription service as proof of identity."""

    user_id: int
    session_token: str


@dataclass
class Trace:
    """Each backend call's time (ms) and outcome, for ``Server-Timing`` and the JSON timings."""

    timings: dict[str, float] = field(default_factory=dict)
    outcomes: dict[str, str] = field(default_factory=dict)

    async def call(self, name: str, awaitable: Awaitable[T]) -> T:
        started = time.perf_counter()
        outcome = "ok"
        try:
            return await awaitable
        except BackendRejected as exc:
            outcome = f"rejected_{exc.status}"
            raise
        except BackendError as exc:
            outcome = exc.reason
            raise
        except asyncio.CancelledError:
            outcome = "cancelled"
            raise
        finally:
            self.timings[name] = round((time.perf_counter() - started) * 1000, 1)
            self.outcomes[name] = outcome

    def server_timing(self) -> str:
        return ", ".join(
            f'{name};dur={ms};desc="{self.outcomes.get(name, "ok")}"'
            for name, ms in self.timings.items()
        )


@dataclass
class Page:
    movie: dict
    plan: dict
    similar: dict  # {"items": [{"movie_id","title","year","genres","score"}], "source": ...}
    degraded: list[str]
    timings: dict[str, float]
    outcomes: dict[str, str]
    plans: list[dict] = field(default_factory=list)  # choices for the plan box
    trace: Trace = field(default_factory=Trace, repr=False)

    def to_json(self) -> dict:
        return {
            "movie": self.movie,
            "plan": self.plan,
            "similar": self.similar,
            "degraded": self.degraded,
            "timings": self.timings,
        }

    def server_timing(self) -> str:
        return self.trace.server_timing()


class PageFailed(Exception):
    """The primary fragment failed: the page is a 400/404/503, with the timings so far."""

    def __init__(self, error: ApiError, trace: Trace) -> None:
        super().__init__(error.message)
        self.error = error
        self.trace = trace


def anonymous_plan(user_id: int | None = None, status: str = "anonymous") -> dict:
    return {"user_id": user_id, "status": status, "plan": None, "updated_at": None}


def first_genre(movie: dict) -> str | None:
    genres = [g for g in movie.get("genres") or [] if g != "(no genres listed)"]
    return genres[0] if genres else None


def similar_item(movie: dict, score: float | None) -> dict:
    return {
        "movie_id": movie["id"],
        "title": movie["title"],
        "year": movie.get("year"),
        "genres": movie.get("genres", []),
        "score": score,
    }


class Composer:
    def __init__(self, clients: Clients, settings: Settings, metrics: Metrics | None) -> None:
        self.clients = clients
        self.settings = settings
        self.metrics = metrics
        self._plans: list[dict] | None = None
        self._plans_at = 0.0
        self._genres: list[dict] | None = None
        self._genres_at = 0.0

    # ---- helpers ------------------------------------------------------------------------------
    def _left(self, deadline: float, own: float) -> float:
        """A call's deadline: its own, cut to what is left of the page budget."""
        return max(0.001, min(own, deadline - time.monotonic()))

    def _fallback(self, fragment: str, reason: str, degraded: list[str]) -> None:
        degraded.append(fragment)
        if self.metrics:
            self.metrics.fallbacks.labels(fragment, reason).inc()

    async def plans(self, timeout: float) -> list[dict]:
        """The plan choices, cached for a few minutes (they are configuration, not data)."""
        now = time.monotonic()
        if self._plans is None or now - self._plans_at > PLANS_TTL:
            self._plans = await self.clients.subscriptions.plans(timeout=timeout)
            self._plans_at = now
        return self._plans

    async def genres(self) -> list[dict]:
        """The genre list for filters and home rows; it changes only when the catalog is rebuilt."""
        now = time.monotonic()
        if self._genres is None or now - self._genres_at > PLANS_TTL:
            self._genres = await self.clients.catalog.genres(timeout=self.settings.catalog_timeout)
            self._genres_at = now
        return self._genres

    # ---- fragments ----------------------------------------------------------------------------
    async def _plan(
        self, viewer: Viewer, trace: Trace, deadline: float
    ) -> tuple[dict, list[dict], str | None]:
        """(subscription, plan choices, failure reason or None)."""
        timeout = self._left(deadline, self.settings.subscription_timeout)
        subs = self.clients.subscriptions

        async def both() -> tuple[dict, list[dict]]:
            return await asyncio.gather(
                subs.get(viewer.user_id, viewer.session_token, timeout=timeout),
                self.plans(timeout),
            )

        try:
            subscription, choices = await trace.call("subscription", both())
        except BackendRejected as exc:
            return anonymous_plan(viewer.user_id, "unavailable"), [], f"rejected_{exc.status}"
        except BackendError as exc:
            return anonymous_plan(viewer.user_id, "unavailable"), [], exc.reason
        return subscription, choices, None

    async def _recommended(self, movie_id: int, trace: Trace, deadline: float) -> dict:
        """Recommender, then at once the catalog batch for titles: one chain, one task."""
        answer = await trace.call(
            "recommender",
            self.clients.recommender.similar(
                movie_id, SIMILAR_K, timeout=self._left(deadline, self.settings.recommender_timeout)
            ),
        )
        scores = {item["movie_id"]: item.get("score") for item in answer["items"]}
        ids = [i for i in scores if i != movie_id]
        movies, _missing = await trace.call(
            "catalog_batch",
            self.clients.catalog.movies(
                ids, timeout=self._left(deadline, self.settings.catalog_timeout)
            ),
        )
        items = [similar_item(m, scores.get(m["id"])) for m in movies]
        if not items:
            raise BackendRejected("recommender", 404, "no_neighbours", "no similar movies")
        return {"items": items, "source": answer.get("source", "model")}

    async def _popular_in_genre(self, movie: dict, trace: Trace, deadline: float) -> dict:
        genre = first_genre(movie)
        try:
            movies = await trace.call(
                "catalog_popular",
                self.clients.catalog.popular(
                    SIMILAR_K + 1,
                    genre,
                    timeout=self._left(deadline, self.settings.catalog_timeout),
                ),
            )
        except (BackendError, BackendRejected):
            movies = []
        items = [similar_item(m, None) for m in movies if m["id"] != movie["id"]][:SIMILAR_K]
        return {"items": items, "source": "fallback"}

    # ---- the page -----------------------------------------------------------------------------
    async def start_movie_page(self, movie_id: int, viewer: Viewer | None) -> PendingPage:
        """Start every call at once and wait only for the movie (the primary fragment).

        The plan and the similar row keep running in their tasks; the caller can show the movie
        at once (the streamed HTML page) and await the rest from the returned ``PendingPage``.
        Raises ``PageFailed`` when the movie itself fails, having cancelled the rest.
        """
        deadline = time.monotonic() + self.settings.page_budget
        trace = Trace()
        # The critical path first: tasks start in creation order, and each request costs
        # ~0.15 ms of CPU to send, so the recommender -> catalog batch chain leaves first.
        similar_task = asyncio.create_task(self._recommended(movie_id, trace, deadline))
        movie_task = asyncio.create_task(
            trace.call(
                "catalog",
                self.clients.catalog.movie(
                    movie_id, timeout=self._left(deadline, self.settings.catalog_timeout)
                ),
            )
        )
        plan_task = asyncio.create_task(self._plan(viewer, trace, deadline)) if viewer else None
        pending = PendingPage(self, movie_id, trace, deadline, plan_task, similar_task)
        try:
            pending.movie = await movie_task
        except BaseException as exc:
            await pending.cancel()
            if isinstance(exc, BackendError | BackendRejected):
                raise PageFailed(self._primary_error(movie_id, exc), trace) from None
            raise
        return pending

    async def compose_movie_page(self, movie_id: int, viewer: Viewer | None) -> Page:
        """The whole movie page's data; raises ``PageFailed`` only when the movie itself fails."""
        pending = await self.start_movie_page(movie_id, viewer)
        try:
            return await pending.finish()
        finally:
            await pending.cancel()

    @staticmethod
    def _primary_error(movie_id: int, exc: BackendError | BackendRejected) -> ApiError:
        if isinstance(exc, BackendRejected):
            if exc.status == 404:
                return NotFound(f"movie {movie_id} does not exist", code="unknown_movie")
            return BadRequest(exc.message, code=exc.code)
        return NotReady(
            "the catalog is unavailable right now; please try again shortly",
            code="catalog_unavailable",
        )


class PendingPage:
    """A movie page whose movie is known while its optional fragments may still be running.

    ``plan()`` and ``similar()`` each await their own task and apply its fallback; both can be
    awaited in any order and more than once. ``cancel()`` stops whatever is still running (a
    client that went away must not leave backend calls behind).
    """

    def __init__(
        self,
        composer: Composer,
        movie_id: int,
        trace: Trace,
        deadline: float,
        plan_task: asyncio.Task | None,
        similar_task: asyncio.Task,
    ) -> None:
        self.composer = composer
        self.movie_id = movie_id
        self.movie: dict = {}
        self.trace = trace
        self.deadline = deadline
        self.degraded: list[str] = []
        self._plan_task = plan_task
        self._similar_task = similar_task
        self._plan: tuple[dict, list[dict]] | None = None
        self._similar: dict | None = None

    async def plan(self) -> tuple[dict, list[dict]]:
        """(the viewer's subscription, the plan choices); anonymous without a viewer."""
        if self._plan is None:
            if self._plan_task is None:
                self._plan = (anonymous_plan(), [])
            else:
                plan, choices, failure = await self._plan_task
                if failure:
                    self.composer._fallback("plan", failure, self.degraded)
                self._plan = (plan, choices)
        return self._plan

    async def similar(self) -> dict:
        """The similar row: the recommender's, or popular movies in the genre when it fails."""
        if self._similar is None:
            composer = self.composer
            try:
                similar = await self._similar_task
            except (BackendError, BackendRejected) as exc:
                reason = exc.reason if isinstance(exc, BackendError) else f"rejected_{exc.status}"
                similar = await composer._popular_in_genre(self.movie, self.trace, self.deadline)
                if isinstance(exc, BackendError):
                    # An outage, not a movie the model simply does not know: say so on the page.
                    composer._fallback("similar", reason, self.degraded)
                elif composer.metrics:
                    composer.metrics.fallbacks.labels("similar", reason).inc()
            self._similar = similar
        return self._similar

    async def finish(self) -> Page:
        plan, choices = await self.plan()
        similar = await self.similar()
        return Page(
            movie=self.movie,
            plan=plan,
            similar=similar,
            degraded=list(self.degraded),
            timings=dict(self.trace.timings),
            outcomes=dict(self.trace.outcomes),
            plans=choices,
            trace=self.trace,
        )

    async def cancel(self) -> None:
        tasks = [t for t in (self._plan_task, self._similar_task) if t is not None]
        for task in tasks:  # a no-op on a finished task; awaiting it below retrieves its error
            task.cancel()
        for task in tasks:
            with contextlib.suppress(BaseException):
                await task
