"""Typed clients for the three backends, each in two transports with one async interface.

The composer and the pages only see these interfaces, so the monolith (in-process: the logic
objects are called directly) and the microservices deployment (HTTP through the platform's
resilient ``BackendClient``) share every line above the transport. Both return the services'
own payload Structs and raise the same two exceptions: ``BackendRejected`` for a 4xx-equivalent
(unknown id, bad input) and ``BackendError`` when no answer could be had (down, slow, open
circuit, 5xx, an answer that breaks the contract).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Protocol, TypeVar
from urllib.parse import urlencode

from recommender.batch import BatchJobs
from recommender.box import RecommenderBox
from recommender.models_api import read_model_list
from recommender.schemas import (
    BatchJob,
    BatchJobList,
    BatchResults,
    ModelInfo,
    ModelList,
    Recommendations,
    RecommendRequest,
    Similar,
    UserRecommendations,
)
from services.catalog.catalog import Catalog
from services.catalog.schemas import Genre, Genres, Movie, MovieList, Movies, SearchResult
from services.feedback.schemas import Arm, ExperimentReport
from services.platform.auth import SESSION_HEADER
from services.platform.errors import ApiError
from services.platform.http_client import BackendClient, BackendError, BackendRejected, decoder
from services.platform.metrics import Metrics
from services.platform.settings import Settings
from services.subscription.accounts import Accounts
from services.subscription.schemas import (
    Credentials,
    DemoLogin,
    Plan,
    PlanChoice,
    Plans,
    SessionEnded,
    SessionGrant,
    SessionState,
    Subscription,
)
from services.subscription.subscriptions import Subscriptions

T = TypeVar("T")
# The running experiment's report, in-process (the recommender's own report function); None
# while no experiment runs.
ReportExperiment = Callable[[], Awaitable[ExperimentReport | None]]
ACCOUNTS_TIMEOUT = 5.0  # seconds a log-in may take: its password hash may wait behind others

__all__ = [
    "BackendError",
    "BackendRejected",
    "BatchClient",
    "CatalogClient",
    "Clients",
    "RecommenderClient",
    "SubscriptionClient",
    "http_clients",
    "local_clients",
]


# ---- the interfaces ---------------------------------------------------------------------------
class CatalogClient(Protocol):
    async def movie(self, movie_id: int, *, timeout: float | None = None) -> Movie: ...

    async def movies(self, ids: Sequence[int], *, timeout: float | None = None) -> Movies: ...

    async def search(
        self, q: str, genre: str | None, limit: int, offset: int, *, timeout: float | None = None
    ) -> SearchResult: ...

    async def popular(
        self, limit: int, genre: str | None = None, *, timeout: float | None = None
    ) -> list[Movie]: ...

    async def genres(self, *, timeout: float | None = None) -> list[Genre]: ...


class SubscriptionClient(Protocol):
    async def plans(self, *, timeout: float | None = None) -> list[Plan]: ...

    async def get(
        self, user_id: int, session_token: str, *, timeout: float | None = None
    ) -> Subscription: ...

    async def put(
        self, user_id: int, plan: str, session_token: str, idempotency_key: str
    ) -> Subscription: ...

    async def cancel(
        self, user_id: int, session_token: str, idempotency_key: str
    ) -> Subscription: ...

    # accounts and sessions (services.subscription.accounts); ``client`` is the visitor's
    # address, which the log-in limits are kept by
    async def register(self, name: str, password: str, client: str | None) -> SessionGrant: ...

    async def log_in(self, name: str, password: str, client: str | None) -> SessionGrant: ...

    async def demo_log_in(self, user_id: int, client: str | None) -> SessionGrant: ...

    async def log_out(self, session_token: str) -> SessionEnded: ...

    async def session_state(
        self, user_id: int, session_token: str, *, timeout: float | None = None
    ) -> SessionState: ...


class RecommenderClient(Protocol):
    async def similar(
        self, movie_id: int, k: int, *, arm: Arm | None = None, timeout: float | None = None
    ) -> Similar:
        """``arm``: an experiment arm whose model version answers; None = the served one."""
        ...

    async def user_recommendations(
        self, user_id: int, k: int, *, timeout: float | None = None
    ) -> UserRecommendations: ...

    async def recommend(
        self, history: list[int], k: int, *, timeout: float | None = None
    ) -> Recommendations: ...

    # the operator dashboard's reads
    async def model(self, *, timeout: float | None = None) -> ModelInfo: ...

    async def models(self, *, timeout: float | None = None) -> ModelList: ...

    async def experiment_report(
        self, *, timeout: float | None = None
    ) -> ExperimentReport | None: ...


class BatchClient(Protocol):
    """A user's batch jobs (the recommender's batch API); each call carries the user's session,
    so the recommender checks for itself whose jobs they are."""

    async def submit(
        self, data: bytes, filename: str | None, k: int, user_id: int, session_token: str
    ) -> BatchJob: ...

    async def status(self, job_id: str, user_id: int, session_token: str) -> BatchJob: ...

    async def recent(self, user_id: int, session_token: str) -> list[BatchJob]: ...

    async def results(
        self, job_id: str, user_id: int, session_token: str, cursor: int = 0
    ) -> BatchResults: ...


@dataclass
class Clients:
    """The web server's backends; ``close`` releases connections (HTTP only)."""

    catalog: CatalogClient
    subscriptions: SubscriptionClient
    recommender: RecommenderClient
    batch: BatchClient
    closers: tuple[Callable[[], Awaitable[None]], ...] = ()

    async def close(self) -> None:
        for close in self.closers:
            await close()


# ---- HTTP -------------------------------------------------------------------------------------
def _csv(ids: Sequence[int]) -> str:
    return ",".join(str(i) for i in ids)


class HttpCatalog:
    def __init__(self, client: BackendClient) -> None:
        self.client = client

    async def movie(self, movie_id: int, *, timeout: float | None = None) -> Movie:
        return await self.client.get(f"/v1/movies/{movie_id}", Movie, timeout=timeout)

    async def movies(self, ids: Sequence[int], *, timeout: float | None = None) -> Movies:
        if not ids:
            return Movies([], [])
        return await self.client.get(f"/v1/movies?ids={_csv(ids)}", Movies, timeout=timeout)

    async def search(
        self, q: str, genre: str | None, limit: int, offset: int, *, timeout: float | None = None
    ) -> SearchResult:
        query = {"q": q, "limit": str(limit), "offset": str(offset)}
        if genre:
            query["genre"] = genre
        return await self.client.get(
            "/v1/movies/search", SearchResult, query=query, timeout=timeout
        )

    async def popular(
        self, limit: int, genre: str | None = None, *, timeout: float | None = None
    ) -> list[Movie]:
        query = {"limit": str(limit)}
        if genre:
            query["genre"] = genre
        found = await self.client.get("/v1/movies/popular", MovieList, query=query, timeout=timeout)
        return found.items

    async def genres(self, *, timeout: float | None = None) -> list[Genre]:
        return (await self.client.get("/v1/genres", Genres, timeout=timeout)).items


class HttpSubscriptions:
    """The user's own session token goes along, so the subscription service checks for itself
    that the caller may read or change this user's plan.

    Registering and logging in go through a client of their own (``accounts``: its own
    connections, breaker and a deadline long enough for a password hash queued behind others),
    so a flood of log-ins can neither open the breaker of the plan reads nor take their
    connections. They carry the service token, so the service believes the visitor's address
    they state."""

    def __init__(self, client: BackendClient, accounts: BackendClient, service_token: str) -> None:
        self.client = client
        self.accounts = accounts
        self.service = {"Authorization": f"Bearer {service_token}"}

    async def plans(self, *, timeout: float | None = None) -> list[Plan]:
        return (await self.client.get("/v1/plans", Plans, timeout=timeout)).items

    async def get(
        self, user_id: int, session_token: str, *, timeout: float | None = None
    ) -> Subscription:
        return await self.client.get(
            f"/v1/users/{user_id}/subscription",
            Subscription,
            headers={SESSION_HEADER: session_token},
            timeout=timeout,
        )

    async def put(
        self, user_id: int, plan: str, session_token: str, idempotency_key: str
    ) -> Subscription:
        return await self.client.send(
            "PUT",
            f"/v1/users/{user_id}/subscription",
            Subscription,
            body=PlanChoice(plan),
            headers={SESSION_HEADER: session_token, "Idempotency-Key": idempotency_key},
        )

    async def cancel(self, user_id: int, session_token: str, idempotency_key: str) -> Subscription:
        return await self.client.send(
            "DELETE",
            f"/v1/users/{user_id}/subscription",
            Subscription,
            headers={SESSION_HEADER: session_token, "Idempotency-Key": idempotency_key},
        )

    async def register(self, name: str, password: str, client: str | None) -> SessionGrant:
        body = Credentials(name, password, client)
        return await self.accounts.send(
            "POST", "/v1/accounts", SessionGrant, body=body, headers=self.service
        )

    async def log_in(self, name: str, password: str, client: str | None) -> SessionGrant:
        body = Credentials(name, password, client)
        return await self.accounts.send(
            "POST", "/v1/sessions", SessionGrant, body=body, headers=self.service
        )

    async def demo_log_in(self, user_id: int, client: str | None) -> SessionGrant:
        body = DemoLogin(user_id, client)
        return await self.accounts.send(
            "POST", "/v1/sessions/demo", SessionGrant, body=body, headers=self.service
        )

    async def log_out(self, session_token: str) -> SessionEnded:
        return await self.accounts.send(
            "DELETE",
            "/v1/sessions/current",
            SessionEnded,
            headers={SESSION_HEADER: session_token},
        )

    async def session_state(
        self, user_id: int, session_token: str, *, timeout: float | None = None
    ) -> SessionState:
        return await self.client.get(
            f"/v1/users/{user_id}/session",
            SessionState,
            headers={SESSION_HEADER: session_token},
            timeout=timeout,
        )


class HttpRecommender:
    """``operator``: the client of the dashboard's reads (model, models, experiment), with
    breakers of its own, so an operator reloading the dashboard while the experiment store is
    failing cannot open the breakers the pages' calls go through."""

    def __init__(
        self, client: BackendClient, operator: BackendClient | None = None, admin_token: str = ""
    ) -> None:
        self.client = client
        self.operator = operator or client
        self.admin = {"Authorization": f"Bearer {admin_token}"}

    async def similar(
        self, movie_id: int, k: int, *, arm: Arm | None = None, timeout: float | None = None
    ) -> Similar:
        path = f"/v1/similar/{movie_id}?k={k}"
        if arm is not None:
            path += f"&arm={arm}"
        return await self.client.get(path, Similar, timeout=timeout)

    async def user_recommendations(
        self, user_id: int, k: int, *, timeout: float | None = None
    ) -> UserRecommendations:
        return await self.client.get(
            f"/v1/users/{user_id}/recommendations?k={k}", UserRecommendations, timeout=timeout
        )

    async def recommend(
        self, history: list[int], k: int, *, timeout: float | None = None
    ) -> Recommendations:
        return await self.client.send(
            "POST",
            "/v1/recommendations",
            Recommendations,
            body=RecommendRequest(history, k),
            timeout=timeout,
        )

    async def model(self, *, timeout: float | None = None) -> ModelInfo:
        return await self.operator.get("/v1/model", ModelInfo, timeout=timeout)

    async def models(self, *, timeout: float | None = None) -> ModelList:
        return await self.operator.get("/v1/models", ModelList, timeout=timeout)

    async def experiment_report(self, *, timeout: float | None = None) -> ExperimentReport | None:
        """The running experiment's report, or None: 404 (code ``no_experiment``) when none
        runs, or from a recommender too old to run experiments at all."""
        try:
            return await self.operator.get(
                "/v1/experiments/current", ExperimentReport, headers=self.admin, timeout=timeout
            )
        except BackendRejected as exc:
            if exc.status == 404:
                return None
            raise


BATCH_TIMEOUT = 30.0  # a batch upload is checked whole before it is queued: seconds, not ms


class HttpBatch:
    def __init__(self, client: BackendClient) -> None:
        self.client = client

    async def submit(
        self, data: bytes, filename: str | None, k: int, user_id: int, session_token: str
    ) -> BatchJob:
        query = urlencode({"k": k, "filename": filename or ""})
        return await self.client.send(
            "POST",
            f"/v1/batch?{query}",
            BatchJob,
            raw=data,
            content_type="text/csv",
            headers={SESSION_HEADER: session_token},
            timeout=BATCH_TIMEOUT,
        )

    async def status(self, job_id: str, user_id: int, session_token: str) -> BatchJob:
        return await self.client.get(
            f"/v1/batch/{job_id}",
            BatchJob,
            headers={SESSION_HEADER: session_token},
            timeout=BATCH_TIMEOUT,
        )

    async def recent(self, user_id: int, session_token: str) -> list[BatchJob]:
        found = await self.client.get(
            f"/v1/users/{user_id}/batch",
            BatchJobList,
            headers={SESSION_HEADER: session_token},
            timeout=BATCH_TIMEOUT,
        )
        return found.items

    async def results(
        self, job_id: str, user_id: int, session_token: str, cursor: int = 0
    ) -> BatchResults:
        return await self.client.get(
            f"/v1/batch/{job_id}/results?format=json&cursor={cursor}",
            BatchResults,
            headers={SESSION_HEADER: session_token},
            timeout=BATCH_TIMEOUT,
        )


def http_clients(settings: Settings, metrics: Metrics | None = None) -> Clients:
    """One ``BackendClient`` (connection pools, breakers, retry budget) per backend."""

    def backend(name: str, urls: str | tuple[str, ...], timeout: float) -> BackendClient:
        return BackendClient(
            name,
            urls,
            timeout=timeout,
            metrics=metrics,
            connections=settings.backend_connections,
            failure_threshold=settings.breaker_failures,
            reset_after=settings.breaker_reset,
            retry_ratio=settings.retry_budget_ratio,
            refresh_interval=settings.backend_dns_refresh,
        )

    catalog = backend("catalog", settings.catalog_url, settings.catalog_timeout)
    # Several comma-separated URLs = subscription replicas (one shared database), balanced like
    # the recommenders.
    replicas = tuple(u.strip() for u in settings.subscription_url.split(",") if u.strip())
    subscription = backend("subscription", replicas, settings.subscription_timeout)
    accounts = backend("accounts", replicas, max(ACCOUNTS_TIMEOUT, settings.subscription_timeout))
    recommender = backend("recommender", settings.recommender_urls, settings.recommender_timeout)
    operator = backend("recommender_admin", settings.recommender_urls, settings.admin_probe_timeout)
    return Clients(
        HttpCatalog(catalog),
        HttpSubscriptions(subscription, accounts, settings.service_token),
        HttpRecommender(recommender, operator, settings.admin_token),
        HttpBatch(recommender),
        closers=(
            catalog.close,
            subscription.close,
            accounts.close,
            recommender.close,
            operator.close,
        ),
    )


# ---- in-process -------------------------------------------------------------------------------
class _Local:
    """Calls a logic object directly and speaks the HTTP client's exceptions and metrics."""

    def __init__(self, name: str, metrics: Metrics | None) -> None:
        self.name = name
        self.metrics = metrics

    def _count(self, outcome: str, started: float) -> None:
        if self.metrics:
            self.metrics.backend_calls.labels(self.name, outcome).inc()
            self.metrics.backend_latency.labels(self.name).observe(time.perf_counter() - started)

    def _translate(self, exc: Exception, started: float) -> Exception:
        if isinstance(exc, ApiError) and 400 <= exc.status < 500:
            self._count("rejected", started)
            details = exc.details if isinstance(exc.details, dict) else None
            return BackendRejected(self.name, exc.status, exc.code, exc.message, details)
        if isinstance(exc, ApiError):
            self._count(f"status_{exc.status}", started)
            return BackendError(self.name, f"status_{exc.status}", exc.message)
        self._count("error", started)
        return BackendError(self.name, "error", f"{type(exc).__name__}: {exc}")

    def call(self, fn: Callable[..., T], *args: object) -> T:
        """A synchronous logic call (in-memory or fast SQLite): run it inline."""
        started = time.perf_counter()
        try:
            result = fn(*args)
        except Exception as exc:
            raise self._translate(exc, started) from exc
        self._count("ok", started)
        return result

    async def acall(self, coro: Awaitable[T], timeout: float | None) -> T:
        """An async logic call, held to the same deadline an HTTP call would have."""
        started = time.perf_counter()
        try:
            async with asyncio.timeout(timeout):
                result = await coro
        except TimeoutError:
            self._count("timeout", started)
            message = f"no answer in {(timeout or 0) * 1000:.0f} ms"
            raise BackendError(self.name, "timeout", message) from None
        except Exception as exc:
            raise self._translate(exc, started) from exc
        self._count("ok", started)
        return result


class LocalCatalog(_Local):
    def __init__(self, catalog: Catalog, metrics: Metrics | None = None) -> None:
        super().__init__("catalog", metrics)
        self.catalog = catalog

    async def movie(self, movie_id: int, *, timeout: float | None = None) -> Movie:
        return self.call(self.catalog.movie, movie_id)

    async def movies(self, ids: Sequence[int], *, timeout: float | None = None) -> Movies:
        if not ids:
            return Movies([], [])
        return self.call(self.catalog.movies, list(ids))

    async def search(
        self, q: str, genre: str | None, limit: int, offset: int, *, timeout: float | None = None
    ) -> SearchResult:
        return await self.acall(self.catalog.search(q, genre, limit, offset), timeout)

    async def popular(
        self, limit: int, genre: str | None = None, *, timeout: float | None = None
    ) -> list[Movie]:
        return self.call(self.catalog.popular, limit, genre)

    async def genres(self, *, timeout: float | None = None) -> list[Genre]:
        return self.call(self.catalog.genres)


class LocalSubscriptions(_Local):
    """Reads need no session check: in one process the web server has checked the session
    itself (within its recheck interval). A write is checked exactly, as the service's HTTP
    routes do: a logged-out token changes nothing, whichever worker process it reaches."""

    def __init__(
        self, subscriptions: Subscriptions, accounts: Accounts, metrics: Metrics | None = None
    ) -> None:
        super().__init__("subscription", metrics)
        self.subscriptions = subscriptions
        self.accounts = accounts

    async def _live(self, user_id: int, session_token: str) -> None:
        claims = await self.acall(self.accounts.check_session(session_token), None)
        if claims is None or claims.user_id != user_id:
            raise BackendRejected(
                self.name, 401, "session_ended", "this session has ended; log in again"
            )

    async def plans(self, *, timeout: float | None = None) -> list[Plan]:
        return self.call(self.subscriptions.plans)

    async def get(
        self, user_id: int, session_token: str, *, timeout: float | None = None
    ) -> Subscription:
        return await self.acall(self.subscriptions.get(user_id), timeout)

    async def put(
        self, user_id: int, plan: str, session_token: str, idempotency_key: str
    ) -> Subscription:
        await self._live(user_id, session_token)
        return await self.acall(self.subscriptions.put(user_id, plan, idempotency_key), None)

    async def cancel(self, user_id: int, session_token: str, idempotency_key: str) -> Subscription:
        await self._live(user_id, session_token)
        return await self.acall(self.subscriptions.cancel(user_id, idempotency_key), None)

    async def register(self, name: str, password: str, client: str | None) -> SessionGrant:
        return await self.acall(self.accounts.register(name, password, client), None)

    async def log_in(self, name: str, password: str, client: str | None) -> SessionGrant:
        return await self.acall(self.accounts.log_in(name, password, client), None)

    async def demo_log_in(self, user_id: int, client: str | None) -> SessionGrant:
        return await self.acall(self.accounts.demo_log_in(user_id), None)

    async def log_out(self, session_token: str) -> SessionEnded:
        return await self.acall(self.accounts.log_out(session_token), None)

    async def session_state(
        self, user_id: int, session_token: str, *, timeout: float | None = None
    ) -> SessionState:
        return await self.acall(self.accounts.session_state(user_id), timeout)


class LocalRecommender(_Local):
    """The box answers with the bytes its HTTP route would send; they are decoded like an HTTP
    answer (the box's memo and caches hold bytes, so this is the cheapest way in)."""

    def __init__(
        self,
        box: RecommenderBox,
        timeout: float,
        metrics: Metrics | None = None,
        report: ReportExperiment | None = None,
    ) -> None:
        super().__init__("recommender", metrics)
        self.box = box
        self.timeout = timeout
        self.report = report

    async def similar(
        self, movie_id: int, k: int, *, arm: Arm | None = None, timeout: float | None = None
    ) -> Similar:
        if arm is not None:  # an experiment's arm: the version that arm is served by
            served = await self.acall(
                self.box.similar_json(movie_id, k, arm=arm), timeout or self.timeout
            )
            return decoder(Similar).decode(served)
        body = self.box.memoised_similar(movie_id, k)
        if body is None:
            body = await self.acall(self.box.similar_json(movie_id, k), timeout or self.timeout)
        elif self.metrics:
            self._count("ok", time.perf_counter())
        return decoder(Similar).decode(body)

    async def user_recommendations(
        self, user_id: int, k: int, *, timeout: float | None = None
    ) -> UserRecommendations:
        body = await self.acall(
            self.box.user_recommendations_json(user_id, k), timeout or self.timeout
        )
        return decoder(UserRecommendations).decode(body)

    async def recommend(
        self, history: list[int], k: int, *, timeout: float | None = None
    ) -> Recommendations:
        body = await self.acall(self.box.recommend_json(history, k), timeout or self.timeout)
        return decoder(Recommendations).decode(body)

    async def model(self, *, timeout: float | None = None) -> ModelInfo:
        return self.call(self.box.model_info)

    async def models(self, *, timeout: float | None = None) -> ModelList:
        return await self.acall(read_model_list(self.box.registry), timeout or self.timeout)

    async def experiment_report(self, *, timeout: float | None = None) -> ExperimentReport | None:
        if self.report is None:  # this process runs no experiments
            return None
        return await self.acall(self.report(), timeout or self.timeout)


class LocalBatch(_Local):
    """The batch store in-process; whose job it is is checked here, as the API checks it."""

    def __init__(self, jobs: BatchJobs, metrics: Metrics | None = None) -> None:
        super().__init__("batch", metrics)
        self.jobs = jobs

    async def submit(
        self, data: bytes, filename: str | None, k: int, user_id: int, session_token: str
    ) -> BatchJob:
        return await self.acall(self.jobs.submit(data, filename, user_id, k), BATCH_TIMEOUT)

    async def status(self, job_id: str, user_id: int, session_token: str) -> BatchJob:
        job = await self.acall(self.jobs.status(job_id), BATCH_TIMEOUT)
        if job.owner is not None and job.owner != user_id:
            raise BackendRejected(self.name, 403, "not_your_job", "this batch job is another's")
        return job

    async def recent(self, user_id: int, session_token: str) -> list[BatchJob]:
        return await self.acall(self.jobs.recent(user_id, RECENT_JOBS), BATCH_TIMEOUT)

    async def results(
        self, job_id: str, user_id: int, session_token: str, cursor: int = 0
    ) -> BatchResults:
        await self.status(job_id, user_id, session_token)
        job = await self.acall(self.jobs.finished(job_id), BATCH_TIMEOUT)
        return await self.acall(self.jobs.results_page(job, cursor), BATCH_TIMEOUT)


RECENT_JOBS = 20


def local_clients(
    catalog: Catalog,
    subscriptions: Subscriptions,
    accounts: Accounts,
    box: RecommenderBox,
    jobs: BatchJobs,
    settings: Settings,
    metrics: Metrics | None = None,
    report: ReportExperiment | None = None,
) -> Clients:
    """``report``: the recommender's experiment report (``Experiments.report``), for the
    operator dashboard."""
    return Clients(
        LocalCatalog(catalog, metrics),
        LocalSubscriptions(subscriptions, accounts, metrics),
        LocalRecommender(box, settings.recommender_timeout, metrics, report),
        LocalBatch(jobs, metrics),
    )
