"""The page composer: one movie page from three backends, concurrently, each fragment with its
own deadline and fallback.

Every call starts at once. The titles lookup for similar movies is chained directly onto the
recommender's answer inside one task, so the page costs
``max(catalog, subscription, recommender + catalog batch)`` and never the sum. Only the movie
itself (the primary fragment) can fail the page; the plan and the similar row degrade to a
fallback within their own deadlines, and the whole page stays within ``settings.page_budget``.

What depends only on a model version is not fetched again for every visitor: the titled similar
row of a movie is kept per (movie, model version) for ``ROW_TTL`` seconds, so a page whose row is
known skips the catalog batch call; the plan choices and the popular-in-genre fallback rows are
configuration-like and kept for minutes.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Awaitable
from dataclasses import dataclass, field
from typing import TypeVar

from recommender.schemas import Similar
from services.catalog.genres import primary_genre
from services.catalog.schemas import Genre, Movie
from services.feedback.schemas import Arm
from services.platform.errors import ApiError, BadRequest, NotFound, NotReady
from services.platform.lru import Lru
from services.platform.metrics import Metrics
from services.platform.settings import Settings
from services.subscription.schemas import Plan, Subscription
from web_server.clients import BackendError, BackendRejected, Clients
from web_server.schemas import Page, PageItem, PlanBox, SimilarRow

T = TypeVar("T")

SIMILAR_K = 12
PLANS_TTL = 300.0  # plans are configuration: fetched once in a while, not on every page
GENRES_TTL = 300.0  # the genre list changes only when the catalog is rebuilt
ROW_TTL = 600.0  # a titled similar row: its ids are fixed by the model version, titles rarely move
ROWS_KEPT = 8192
FALLBACK_TTL = 60.0  # popular-in-genre rows, shown while the recommender is out


@dataclass(frozen=True)
class Viewer:
    """A logged-in visitor; the token goes to the subscription service as proof of identity."""

    user_id: int
    session_token: str


ANONYMOUS = Subscription(user_id=None, status="anonymous", plan=None, updated_at=None)


def unavailable(user_id: int) -> Subscription:
    return Subscription(user_id=user_id, status="unavailable", plan=None, updated_at=None)


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

    def skipped(self, name: str, outcome: str) -> None:
        """A call not made because its answer was at hand (``outcome``: "cache")."""
        self.timings[name] = 0.0
        self.outcomes[name] = outcome

    def server_timing(self) -> str:
        return ", ".join(
            f'{name};dur={ms};desc="{self.outcomes.get(name, "ok")}"'
            for name, ms in self.timings.items()
        )


class PageFailed(Exception):
    """The primary fragment failed: the page is a 400/404/503, with the timings so far."""

    def __init__(self, error: ApiError, trace: Trace) -> None:
        super().__init__(error.message)
        self.error = error
        self.trace = trace


@dataclass(frozen=True)
class _KnownRow:
    ids: tuple[int, ...]
    row: SimilarRow


class Composer:
    def __init__(self, clients: Clients, settings: Settings, metrics: Metrics | None) -> None:
        self.clients = clients
        self.settings = settings
        self.metrics = metrics
        self._plans: tuple[Plan, ...] | None = None
        self._plans_at = 0.0
        self._genres: list[Genre] | None = None
        self._genres_at = 0.0
        self._rows: Lru[tuple[int, str], _KnownRow] = Lru(ROWS_KEPT, ROW_TTL)
        self._fallbacks: Lru[str | None, SimilarRow] = Lru(64, FALLBACK_TTL)

    # ---- helpers ------------------------------------------------------------------------------
    def _left(self, deadline: float, own: float) -> float:
        """A call's deadline: its own, cut to what is left of the page budget."""
        return max(0.001, min(own, deadline - time.monotonic()))

    def count_fallback(self, fragment: str, reason: str) -> None:
        if self.metrics:
            self.metrics.count_fallback(fragment, reason)

    async def plans(self, timeout: float) -> tuple[Plan, ...]:
        """The plan choices, kept for a few minutes (they are configuration, not data)."""
        now = time.monotonic()
        if self._plans is None or now - self._plans_at > PLANS_TTL:
            self._plans = tuple(await self.clients.subscriptions.plans(timeout=timeout))
            self._plans_at = now
        return self._plans

    async def genres(self) -> list[Genre]:
        """The genre list for filters and home rows; it changes only when the catalog is rebuilt."""
        now = time.monotonic()
        if self._genres is None or now - self._genres_at > GENRES_TTL:
            self._genres = await self.clients.catalog.genres(timeout=self.settings.catalog_timeout)
            self._genres_at = now
        return self._genres

    # ---- fragments ----------------------------------------------------------------------------
    async def _plan(self, viewer: Viewer, trace: Trace, deadline: float) -> PlanBox | str:
        """The viewer's plan box, or the reason it could not be had."""
        timeout = self._left(deadline, self.settings.subscription_timeout)
        subs = self.clients.subscriptions

        async def both() -> PlanBox:
            if self._plans is not None and time.monotonic() - self._plans_at <= PLANS_TTL:
                subscription = await subs.get(viewer.user_id, viewer.session_token, timeout=timeout)
                return PlanBox(subscription, self._plans)
            subscription, choices = await asyncio.gather(
                subs.get(viewer.user_id, viewer.session_token, timeout=timeout),
                self.plans(timeout),
            )
            return PlanBox(subscription, choices)

        try:
            return await trace.call("subscription", both())
        except BackendRejected as exc:
            return f"rejected_{exc.status}"
        except BackendError as exc:
            return exc.reason

    async def _recommended(
        self, movie_id: int, trace: Trace, deadline: float, arm: Arm | None = None
    ) -> SimilarRow:
        """Recommender (the version of the viewer's experiment arm, if any), then at once the
        catalog batch for titles: one chain, one task. A row already titled for this (movie,
        model version) skips the batch call."""
        answer: Similar = await trace.call(
            "recommender",
            self.clients.recommender.similar(
                movie_id,
                SIMILAR_K,
                arm=arm,
                timeout=self._left(deadline, self.settings.recommender_timeout),
            ),
        )
        ids = tuple(item.movie_id for item in answer.items if item.movie_id != movie_id)
        key = (movie_id, answer.model_version)
        known = self._rows.get(key)
        if known is not None and known.ids == ids:
            trace.skipped("catalog_batch", "cache")
            row = known.row
            if row.source == answer.source:
                return row
            return SimilarRow(row.items, answer.source, answer.model_version)
        scores = {item.movie_id: item.score for item in answer.items}
        found = await trace.call(
            "catalog_batch",
            self.clients.catalog.movies(
                ids, timeout=self._left(deadline, self.settings.catalog_timeout)
            ),
        )
        items = tuple(_page_item(m, scores.get(m.id)) for m in found.items)
        if not items:
            raise BackendRejected("recommender", 404, "no_neighbours", "no similar movies")
        row = SimilarRow(items, answer.source, answer.model_version)
        self._rows.put(key, _KnownRow(ids, row))
        return row

    async def popular_in_genre(self, movie: Movie, trace: Trace, deadline: float) -> SimilarRow:
        """The fallback row: popular movies in the movie's most distinctive genre."""
        genre = primary_genre(movie.genres)
        row = self._fallbacks.get(genre)
        if row is None:
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
                return SimilarRow((), "fallback")
            row = SimilarRow(tuple(_page_item(m, None) for m in movies), "fallback")
            self._fallbacks.put(genre, row)
        else:
            trace.skipped("catalog_popular", "cache")
        items = tuple(i for i in row.items if i.movie_id != movie.id)[:SIMILAR_K]
        return SimilarRow(items, "fallback")

    # ---- the page -----------------------------------------------------------------------------
    async def start_movie_page(
        self, movie_id: int, viewer: Viewer | None, arm: Arm | None = None
    ) -> PendingPage:
        """Start every call at once and wait only for the movie (the primary fragment). ``arm``:
        the viewer's experiment arm, whose model version makes the similar row.

        The plan and the similar row keep running in their tasks; the caller can show the movie
        at once (the streamed HTML page) and await the rest from the returned ``PendingPage``.
        Raises ``PageFailed`` when the movie itself fails, having cancelled the rest.
        """
        deadline = time.monotonic() + self.settings.page_budget
        trace = Trace()
        # The critical path first: the recommender -> catalog batch chain leaves first.
        similar_task = asyncio.create_task(self._recommended(movie_id, trace, deadline, arm))
        plan_task = asyncio.create_task(self._plan(viewer, trace, deadline)) if viewer else None
        pending = PendingPage(self, viewer, trace, deadline, plan_task, similar_task)
        try:
            pending.movie = await trace.call(
                "catalog",
                self.clients.catalog.movie(
                    movie_id, timeout=self._left(deadline, self.settings.catalog_timeout)
                ),
            )
        except BaseException as exc:
            await pending.cancel()
            if isinstance(exc, BackendError | BackendRejected):
                raise PageFailed(self._primary_error(movie_id, exc), trace) from None
            raise
        return pending

    async def compose_movie_page(self, movie_id: int, viewer: Viewer | None) -> tuple[Page, Trace]:
        """The whole movie page's data and its calls' trace; raises ``PageFailed`` only when
        the movie itself fails."""
        pending = await self.start_movie_page(movie_id, viewer)
        try:
            return await pending.finish(), pending.trace
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


def _page_item(movie: Movie, score: float | None) -> PageItem:
    return PageItem(movie.id, movie.title, movie.year, movie.genres, score)


class PendingPage:
    """A movie page whose movie is known while its optional fragments may still be running.

    ``plan()`` and ``similar()`` each await their own task and apply its fallback; both can be
    awaited in any order and more than once. ``cancel()`` stops whatever is still running (a
    client that went away must not leave backend calls behind).
    """

    movie: Movie

    def __init__(
        self,
        composer: Composer,
        viewer: Viewer | None,
        trace: Trace,
        deadline: float,
        plan_task: asyncio.Task[PlanBox | str] | None,
        similar_task: asyncio.Task[SimilarRow],
    ) -> None:
        self.composer = composer
        self.viewer = viewer
        self.trace = trace
        self.deadline = deadline
        self.degraded: list[str] = []
        self._plan_task = plan_task
        self._similar_task = similar_task
        self._plan: PlanBox | None = None
        self._similar: SimilarRow | None = None

    def plan_done(self) -> bool:
        return self._plan_task is None or self._plan_task.done()

    def similar_done(self) -> bool:
        return self._similar_task.done()

    async def plan(self) -> PlanBox:
        """The viewer's plan box; anonymous without a viewer, "unavailable" on failure."""
        if self._plan is None:
            if self._plan_task is None or self.viewer is None:
                self._plan = PlanBox(ANONYMOUS, ())
            else:
                box = await self._plan_task
                if isinstance(box, str):
                    self.degraded.append("plan")
                    self.composer.count_fallback("plan", box)
                    box = PlanBox(unavailable(self.viewer.user_id), ())
                self._plan = box
        return self._plan

    async def similar(self) -> SimilarRow:
        """The similar row: the recommender's, or popular movies in the genre when it fails."""
        if self._similar is None:
            composer = self.composer
            try:
                similar = await self._similar_task
            except (BackendError, BackendRejected) as exc:
                reason = exc.reason if isinstance(exc, BackendError) else f"rejected_{exc.status}"
                similar = await composer.popular_in_genre(self.movie, self.trace, self.deadline)
                if isinstance(exc, BackendError):
                    # An outage, not a movie the model simply does not know: say so on the page.
                    self.degraded.append("similar")
                composer.count_fallback("similar", reason)
            self._similar = similar
        return self._similar

    async def finish(self) -> Page:
        box = await self.plan()
        similar = await self.similar()
        return Page(
            movie=self.movie,
            plan=box.subscription,
            similar=similar,
            degraded=list(self.degraded),
            timings=dict(self.trace.timings),
        )

    async def cancel(self) -> None:
        tasks = [t for t in (self._plan_task, self._similar_task) if t is not None]
        for task in tasks:  # a no-op on a finished task; awaiting it below retrieves its error
            task.cancel()
        for task in tasks:
            with contextlib.suppress(BaseException):
                await task
