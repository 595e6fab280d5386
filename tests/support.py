"""Helpers the tests share: the test secrets and deadlines, and the process harness (the bench's:
``bench.procs``) under the names the tests use."""

from __future__ import annotations

import asyncio
import dataclasses
import random
import time
from collections.abc import Awaitable, Callable
from pathlib import Path

import aiohttp

from bench.procs import (
    PROJECT_ROOT,
    PYTHON,
    Server,
    free_port,
    http_ready,
    port_open,
    redis_server,
    service_env,
    wait_until,
)

__all__ = [
    "GENEROUS",
    "Answer",
    "PROJECT_ROOT",
    "PYTHON",
    "SERVICE",
    "TEST_SECRETS",
    "Process",
    "async_wait_until",
    "free_port",
    "get_json",
    "http_ready",
    "marquee_env",
    "port_open",
    "similar_load",
    "start_redis",
    "wait_until",
]

# The secrets every test's settings and child processes share.
TEST_SECRETS = {
    "secret_key": "test-secret-key-of-the-suite",
    "service_token": "test-service-token",
    "admin_token": "test-admin-token",
}


# Deadlines far above any wait a test causes: a starved machine can stall any call for a while,
# and a test must not see a fallback it did not cause (an outcome, never a race). A test of the
# deadlines themselves sets them short.
GENEROUS = {
    "catalog_timeout": 5.0,
    "subscription_timeout": 5.0,
    "recommender_timeout": 5.0,
    "cache_timeout": 2.0,
    "page_budget": 6.0,
}


# A service's credentials (the service token), for the API calls only users and services may make.
SERVICE = {"Authorization": f"Bearer {TEST_SECRETS['service_token']}"}


def marquee_env(**settings: object) -> dict[str, str]:
    """A child process's environment: ours without any ``MARQUEE_*``, plus the test secrets, one
    worker, no access log, and ``MARQUEE_<NAME>`` for each keyword (which win)."""
    return service_env({**TEST_SECRETS, "workers": 1, "access_log": False, **settings})


class Process(Server):
    """A child process of the test, stopped by its PID. It waits for nothing when started: the
    fixture polls for what it needs (a port, ``/readyz``, an exit)."""

    def __init__(self, args: list[str], env: dict[str, str], log_path: Path) -> None:
        super().__init__(name=Path(args[0]).name, args=args, env=env, log_path=log_path)


def start_redis(port: int, workdir: Path, *options: str) -> Server:
    """A redis-server of the test's own on ``port`` (see ``bench.procs.redis_server``)."""
    return redis_server(workdir, *options, port=port)


async def async_wait_until(
    condition: Callable[[], Awaitable[bool]], timeout: float = 10.0, what: str = "condition"
) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if await condition():
            return
        await asyncio.sleep(0.02)
    raise TimeoutError(f"timed out after {timeout}s waiting for {what}")


@dataclasses.dataclass
class Answer:
    """One ``similar`` request of a load run: when it was sent, its status and the version
    that answered (None, and the error, when none did)."""

    started: float
    status: int
    version: str | None
    error: str | None = None


async def similar_load(
    http: aiohttp.ClientSession,
    bases: list[str],
    movies: list[int],
    answers: list[Answer],
    stop: asyncio.Event,
    *,
    seed: int,
    queries: tuple[str, ...] = ("?k=5",),
    seconds: float = 60.0,
) -> None:
    """``GET /v1/similar/{id}<query>`` for random movies, queries and servers, back to back,
    until ``stop`` is set (or ``seconds`` have passed), every answer kept."""
    rng = random.Random(seed)
    deadline = time.monotonic() + seconds
    while not stop.is_set() and time.monotonic() < deadline:
        started = time.monotonic()
        url = f"{rng.choice(bases)}/v1/similar/{rng.choice(movies)}{rng.choice(queries)}"
        try:
            async with http.get(url) as resp:
                body = await resp.json(content_type=None)
                version = body.get("model_version") if resp.status == 200 else None
                answers.append(
                    Answer(started, resp.status, version, None if version else str(body))
                )
        except (aiohttp.ClientError, ValueError) as exc:
            answers.append(Answer(started, 0, None, repr(exc)))


async def get_json(session: aiohttp.ClientSession, url: str, **kwargs) -> tuple[int, dict]:
    async with session.get(url, **kwargs) as resp:
        return resp.status, await resp.json(content_type=None)
