"""Typed clients for the three backends, each in two transports with one async interface.

The composer and the pages only see these interfaces, so the monolith (in-process: the logic
objects are called directly) and the microservices deployment (HTTP through the platform's
resilient ``BackendClient``) share every line above the transport. Both raise the same two
exceptions: ``BackendRejected`` for a 4xx-equivalent (unknown id, bad input) and ``BackendError``
when no answer could be had (down, slow, open circuit, 5xx, garbage).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, Protocol, TypeVar

from services.platform.auth import SESSION_HEADER
from services.platform.errors import ApiError
from services.platform.http_client import BackendClient, BackendError, BackendRejected
from services.platform.metrics import Metrics
from services.platform.settings import Settings

T = TypeVar("T")

__all__ = [
    "BackendError",
    "BackendRejected",
    "CatalogClient",
    "Clients",
    "RecommenderClient",
    "SubscriptionClient",
    "http_clients",
    "local_clients",
]


# ---- the interfaces ---------------------------------------------------------------------------
class CatalogClient(Protocol):
    async def movie(self, movie_id: int, *, timeout: float | None = None) -> dict: ...

    async def movies(
        self, ids: list[int], *, timeout: float | None = None
    ) -> tuple[list[dict], list[int]]: ...

    async def search(
        self, q: str, genre: str | None, limit: int, offset: int, *, timeout: float | None = None
    ) -> dict: ...

    async def popular(
        self, limit: int, genre: str | None = None, *, timeout: float | None = None
    ) -> list[dict]: ...

    async def genres(self, *, timeout: float | None = None) -> list[dict]: ...


class SubscriptionClient(Protocol):
    async def plans(self, *, timeout: float | None = None) -> list[dict]: ...

    async def get(
        self, user_id: int, session_token: str, *, timeout: float | None = None
    ) -> dict: ...

    async def put(
        self, user_id: int, plan: str, session_token: str, idempotency_key: str
    ) -> dict: ...

    async def cancel(self, user_id: int, session_token: str, idempotency_key: str) -> dict: ...


class RecommenderClient(Protocol):
    async def similar(self, movie_id: int, k: int, *, timeout: float | None = None) -> dict: ...

    async def user_recommendations(
        self, user_id: int, k: int, *, timeout: float | None = None
    ) -> dict: ...

    async def recommend(
        self, history: list[int], k: int, *, timeout: float | None = None
    ) -> dict: ...


@dataclass
class Clients:
    """The web server's three backends; ``close`` releases connections (HTTP only)."""

    catalog: CatalogClient
    subscriptions: SubscriptionClient
    recommender: RecommenderClient
    closers: tuple[Callable[[], Awaitable[None]], ...] = ()

    async def close(self) -> None:
        for close in self.closers:
            await close()


# ---- HTTP -------------------------------------------------------------------------------------
def _csv(ids: list[int]) -> str:
    return ",".join(str(i) for i in ids)


def _expect(backend: str, data: Any, key: str) -> Any:
    """A field the contract promises; a body without it is garbage, i.e. a failed call."""
    if not isinstance(data, dict) or key not in data:
        raise BackendError(backend, "invalid", f"response lacks {key!r}")
    return data[key]


def _expect_dict(backend: str, data: Any) -> dict:
    if not isinstance(data, dict):
        raise BackendError(backend, "invalid", "response is not a JSON object")
    return data


class HttpCatalog:
    def __init__(self, client: BackendClient) -> None:
        self.client = client

    async def movie(self, movie_id: int, *, timeout: float | None = None) -> dict:
        data = await self.client.get_json(f"/v1/movies/{movie_id}", timeout=timeout)
        _expect(self.client.name, data, "title")
        return data

    async def movies(
        self, ids: list[int], *, timeout: float | None = None
    ) -> tuple[list[dict], list[int]]:
        if not ids:
            return [], []
        data = await self.client.get_json("/v1/movies", params={"ids": _csv(ids)}, timeout=timeout)
        return _expect(self.client.name, data, "items"), list(data.get("missing", []))

    async def search(
        self, q: str, genre: str | None, limit: int, offset: int, *, timeout: float | None = None
    ) -> dict:
        params = {"q": q, "limit": str(limit), "offset": str(offset)}
        if genre:
            params["genre"] = genre
        data = await self.client.get_json("/v1/movies/search", params=params, timeout=timeout)
        _expect(self.client.name, data, "items")
        return data

    async def popular(
        self, limit: int, genre: str | None = None, *, timeout: float | None = None
    ) -> list[dict]:
        params = {"limit": str(limit)}
        if genre:
            params["genre"] = genre
        data = await self.client.get_json("/v1/movies/popular", params=params, timeout=timeout)
        return _expect(self.client.name, data, "items")

    async def genres(self, *, timeout: float | None = None) -> list[dict]:
        data = await self.client.get_json("/v1/genres", timeout=timeout)
        return _expect(self.client.name, data, "items")


class HttpSubscriptions:
    """The user's own session token goes along, so the subscription service checks for itself
    that the caller may read or change this user's plan."""

    def __init__(self, client: BackendClient) -> None:
        self.client = client

    async def plans(self, *, timeout: float | None = None) -> list[dict]:
        return _expect(
            self.client.name, await self.client.get_json("/v1/plans", timeout=timeout), "items"
        )

    async def get(self, user_id: int, session_token: str, *, timeout: float | None = None) -> dict:
        data = await self.client.get_json(
            f"/v1/users/{user_id}/subscription",
            headers={SESSION_HEADER: session_token},
            timeout=timeout,
        )
        _expect(self.client.name, data, "status")
        return data

    async def put(self, user_id: int, plan: str, session_token: str, idempotency_key: str) -> dict:
        data = await self.client.send_json(
            "PUT",
            f"/v1/users/{user_id}/subscription",
            json={"plan": plan},
            headers={SESSION_HEADER: session_token, "Idempotency-Key": idempotency_key},
        )
        _expect(self.client.name, data, "status")
        return data

    async def cancel(self, user_id: int, session_token: str, idempotency_key: str) -> dict:
        data = await self.client.send_json(
            "DELETE",
            f"/v1/users/{user_id}/subscription",
            headers={SESSION_HEADER: session_token, "Idempotency-Key": idempotency_key},
        )
        _expect(self.client.name, data, "status")
        return data


class HttpRecommender:
    def __init__(self, client: BackendClient) -> None:
        self.client = client

    async def similar(self, movie_id: int, k: int, *, timeout: float | None = None) -> dict:
        data = await self.client.get_json(
            f"/v1/similar/{movie_id}", params={"k": str(k)}, timeout=timeout
        )
        _expect(self.client.name, data, "items")
        return data

    async def user_recommendations(
        self, user_id: int, k: int, *, timeout: float | None = None
    ) -> dict:
        data = await self.client.get_json(
            f"/v1/users/{user_id}/recommendations", params={"k": str(k)}, timeout=timeout
        )
        _expect(self.client.name, data, "items")
        return data

    async def recommend(self, history: list[int], k: int, *, timeout: float | None = None) -> dict:
        data = await self.client.send_json(
            "POST", "/v1/recommendations", json={"history": history, "k": k}, timeout=timeout
        )
        _expect(self.client.name, data, "items")
        return data


def http_clients(settings: Settings, metrics: Metrics | None = None) -> Clients:
    """One ``BackendClient`` (one connection pool, breakers, retry budget) per backend."""

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
        )

    catalog = backend("catalog", settings.catalog_url, settings.catalog_timeout)
    # Several comma-separated URLs = subscription replicas (one shared database), balanced like
    # the recommenders.
    replicas = tuple(u.strip() for u in settings.subscription_url.split(",") if u.strip())
    subscription = backend("subscription", replicas, settings.subscription_timeout)
    recommender = backend("recommender", settings.recommender_urls, settings.recommender_timeout)
    return Clients(
        HttpCatalog(catalog),
        HttpSubscriptions(subscription),
        HttpRecommender(recommender),
        closers=(catalog.close, subscription.close, recommender.close),
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
            return BackendRejected(self.name, exc.status, exc.code, exc.message)
        if isinstance(exc, ApiError):
            self._count(f"status_{exc.status}", started)
            return BackendError(self.name, f"status_{exc.status}", exc.message)
        self._count("error", started)
        return BackendError(self.name, "error", f"{type(exc).__name__}: {exc}")

    def call(self, fn: Callable[..., T], *args: Any) -> T:
        """A synchronous logic call (fast SQLite): run it inline, translate its errors."""
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
    def __init__(self, catalog: Any, metrics: Metrics | None = None) -> None:
        super().__init__("catalog", metrics)
        self.catalog = catalog

    async def movie(self, movie_id: int, *, timeout: float | None = None) -> dict:
        return self.call(self.catalog.movie, movie_id)

    async def movies(
        self, ids: list[int], *, timeout: float | None = None
    ) -> tuple[list[dict], list[int]]:
        if not ids:
            return [], []
        items, missing = self.call(self.catalog.movies, ids)
        return list(items), list(missing)

    async def search(
        self, q: str, genre: str | None, limit: int, offset: int, *, timeout: float | None = None
    ) -> dict:
        return await self.acall(self.catalog.search(q, genre, limit, offset), timeout)

    async def popular(
        self, limit: int, genre: str | None = None, *, timeout: float | None = None
    ) -> list[dict]:
        return self.call(self.catalog.popular, limit, genre)

    async def genres(self, *, timeout: float | None = None) -> list[dict]:
        return self.call(self.catalog.genres)


class LocalSubscriptions(_Local):
    """No session token needed: in one process the web server has verified the session itself."""

    def __init__(self, subscriptions: Any, metrics: Metrics | None = None) -> None:
        super().__init__("subscription", metrics)
        self.subscriptions = subscriptions

    async def plans(self, *, timeout: float | None = None) -> list[dict]:
        return self.call(self.subscriptions.plans)

    async def get(self, user_id: int, session_token: str, *, timeout: float | None = None) -> dict:
        return await self.acall(self.subscriptions.get(user_id), timeout)

    async def put(self, user_id: int, plan: str, session_token: str, idempotency_key: str) -> dict:
        return await self.acall(self.subscriptions.put(user_id, plan, idempotency_key), None)

    async def cancel(self, user_id: int, session_token: str, idempotency_key: str) -> dict:
        return await self.acall(self.subscriptions.cancel(user_id, idempotency_key), None)


class LocalRecommender(_Local):
    def __init__(self, box: Any, timeout: float, metrics: Metrics | None = None) -> None:
        super().__init__("recommender", metrics)
        self.box = box
        self.timeout = timeout

    async def similar(self, movie_id: int, k: int, *, timeout: float | None = None) -> dict:
        return await self.acall(self.box.similar(movie_id, k), timeout or self.timeout)

    async def user_recommendations(
        self, user_id: int, k: int, *, timeout: float | None = None
    ) -> dict:
        return await self.acall(self.box.user_recommendations(user_id, k), timeout or self.timeout)

    async def recommend(self, history: list[int], k: int, *, timeout: float | None = None) -> dict:
        return await self.acall(self.box.recommend(history, k), timeout or self.timeout)


def local_clients(
    catalog: Any, subscriptions: Any, box: Any, settings: Settings, metrics: Metrics | None = None
) -> Clients:
    return Clients(
        LocalCatalog(catalog, metrics),
        LocalSubscriptions(subscriptions, metrics),
        LocalRecommender(box, settings.recommender_timeout, metrics),
    )
