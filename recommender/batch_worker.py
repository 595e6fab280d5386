"""The batch worker: takes jobs off the Redis Stream and computes their predictions.

Delivery is at-least-once. A job's stream entry stays pending (unacked) while a worker runs it;
the worker touches the entry (XCLAIM to itself) after every chunk, so the entry only goes idle
when its worker is dead or stuck. Any worker reclaims entries idle longer than
``settings.batch_claim_idle`` seconds (XAUTOCLAIM) and resumes the job at its first missing chunk.
Results are one hash field per chunk, so a chunk computed twice overwrites itself: rows are
never lost and never duplicated. The entry is acked (and deleted) only after the job is marked
done.

One job, one model version: the version is recorded on the job when it first starts, and a
resumed job is finished with that same version (loaded from the registry) - or, if that version
is gone, restarted from scratch with the current one. Between jobs the worker follows the
registry's current version, so a newly published model is used for the next job.

Run it as ``python -m recommender worker`` (Procfile ``worker``), or inside the monolith with
:func:`batch_worker_ctx`. The worker process also runs the feedback aggregator
(``services.feedback.worker``), which counts the experiment's impressions and clicks.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
import socket
import time
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass
from typing import cast

import numpy as np
import orjson
from aiohttp import web
from redis.exceptions import ResponseError

from recommender import redisconn
from recommender.batch import (
    DONE,
    FAILED,
    GROUP,
    KINDS,
    MAX_WARNINGS,
    QUEUED,
    RUNNING,
    BatchKeys,
    DurabilityGuard,
    EvictingStore,
)
from recommender.model import SimilarityModel
from recommender.redisconn import AsyncClient
from recommender.registry import IntegrityError, ModelRegistry, RegistryError
from services.platform.app import SETTINGS
from services.platform.background import running
from services.platform.metrics import Metrics
from services.platform.middleware import METRICS
from services.platform.settings import Settings, settings_or_exit

# XREADGROUP's reply with decode_responses: [(stream, [(entry id, {field: value})])]
StreamReply = list[tuple[str, list[tuple[str, dict[str, str]]]]]

log = logging.getLogger("marquee.batch.worker")

BACKOFF_START, BACKOFF_MAX = 0.2, 5.0
MODEL_WAIT = 2.0  # seconds between registry checks while no model is published
PRUNE_EVERY = 60.0  # seconds between sweeps of dead consumers
REFUSED_WAIT = 10.0  # seconds between looks at a state Redis that evicts


def default_consumer_name() -> str:
    return f"{socket.gethostname()}-{os.getpid()}"


# ---- the computation (pure, runs in a thread) ----------------------------------------------
@dataclass(frozen=True)
class History:
    """One user's rows of a histories upload (a unit of work: one list of recommendations)."""

    user: int
    row: int  # 1-based input row of the user's first history row
    movies: list[int]
    ratings: list[float] | None
    timestamps: list[int] | None


def histories_of(data: dict) -> list[History]:
    """A histories job's input grouped by user, in order of first appearance."""
    users, movies = data["ids"], data["movies"]
    ratings, stamps = data.get("ratings") or None, data.get("timestamps") or None
    rows: dict[int, list[int]] = {}
    for i, user in enumerate(users):
        rows.setdefault(user, []).append(i)
    return [
        History(
            user=user,
            row=idx[0] + 1,
            movies=[movies[i] for i in idx],
            ratings=[ratings[i] for i in idx] if ratings else None,
            timestamps=[stamps[i] for i in idx] if stamps else None,
        )
        for user, idx in rows.items()
    ]


def known_mask(model: SimilarityModel, kind: str, ids: np.ndarray) -> np.ndarray:
    """Which ids the model knows, vectorised (movie ids for "movies" and "histories")."""
    if kind in ("movies", "histories"):
        return model.item_indices(ids) >= 0
    users = np.asarray(model.user_ids)
    if users.size == 0:
        return np.zeros(ids.shape, dtype=bool)
    pos = np.minimum(np.searchsorted(users, ids), users.size - 1)
    return users[pos] == ids


def compute_rows(
    model: SimilarityModel,
    kind: str,
    k: int,
    ids: Sequence[int] | Sequence[History],
    known: np.ndarray,
    start: int,
    stop: int,
) -> list[dict]:
    """Result rows for work units [start, stop) - the same answers as the online API
    (``/v1/similar``, ``/v1/users/{id}/recommendations``, and for histories ``predict``)."""
    source, target = KINDS[kind]
    if kind == "histories":
        return _history_rows(model, k, ids[start:stop])  # type: ignore[arg-type]
    query = model.similar if kind == "movies" else model.recommend_user
    rows: list[dict] = []
    for i in range(start, stop):
        if not known[i]:
            continue
        for rank, (movie, score) in enumerate(query(ids[i], k), 1):  # type: ignore[arg-type]
            rows.append(
                {
                    "row": i + 1,
                    source: ids[i],
                    "rank": rank,
                    target: int(movie),
                    "score": round(float(score), 6),
                }
            )
    return rows


def _history_rows(model: SimilarityModel, k: int, work: Sequence[History]) -> list[dict]:
    rows: list[dict] = []
    for unit in work:
        answer = model.recommend_history(unit.movies, unit.ratings, unit.timestamps, k=k)
        for rank, (movie, score) in enumerate(answer.items, 1):
            rows.append(
                {
                    "row": unit.row,
                    "user_id": unit.user,
                    "rank": rank,
                    "movie_id": int(movie),
                    "score": round(float(score), 6),
                }
            )
    return rows


def unknown_warnings(
    kind: str, ids: list[int], lines: list[int], known: np.ndarray, version: str
) -> tuple[list[dict], int]:
    """Per-line warnings for ids the model does not know (the first MAX_WARNINGS, and a count);
    for histories the ids are the rows' movie ids, which are ignored like the API ignores them."""
    name = "movie_id" if kind == "histories" else KINDS[kind][0]
    missing = np.flatnonzero(~known)
    warnings = [
        {
            "line": lines[i],
            "row": int(i) + 1,
            "id": ids[i],
            "message": f"line {lines[i]}: unknown {name} {ids[i]} (not in model {version}); "
            + ("ignored" if kind == "histories" else "skipped"),
        }
        for i in missing[:MAX_WARNINGS].tolist()
    ]
    return warnings, int(missing.size)


# ---- models ---------------------------------------------------------------------------------
class Models:
    """The registry's models, loaded on demand: the current one plus the one a resumed job needs."""

    def __init__(self, settings: Settings) -> None:
        key = settings.model_signing_key.encode() if settings.model_signing_key else None
        self.registry = ModelRegistry(settings.model_dir, key)
        self.loaded: dict[str, SimilarityModel] = {}
        self.current: str | None = None

    async def refresh(self) -> str | None:
        """Follow the registry's current version; the version in use (None if none loads)."""
        version = await asyncio.to_thread(self.registry.current_version)
        if version is not None and version != self.current:
            try:
                await self._load(version)
                if self.current is not None:
                    log.info(
                        "model: switched", extra={"version": version, "previous": self.current}
                    )
                self.current = version
            except (RegistryError, IntegrityError, OSError, ValueError) as exc:
                log.error(
                    "model: cannot load the current version; keeping the previous one",
                    extra={"version": version, "error": str(exc)},
                )
        self._evict()
        return self.current

    async def get(self, version: str | None) -> tuple[SimilarityModel, str] | None:
        """The model of ``version`` (the current one when None); None if it cannot be loaded."""
        version = version or self.current
        if version is None:
            return None
        if version not in self.loaded:
            try:
                await self._load(version)
            except (RegistryError, IntegrityError, OSError, ValueError) as exc:
                log.warning(
                    "model: version unavailable", extra={"version": version, "error": str(exc)}
                )
                return None
        return self.loaded[version], version

    async def _load(self, version: str) -> None:
        model, manifest = await asyncio.to_thread(self.registry.load, version)
        self.loaded[str(manifest.version)] = model

    def _evict(self) -> None:
        for version in [v for v in self.loaded if v != self.current]:
            del self.loaded[version]


# ---- the worker -----------------------------------------------------------------------------
@dataclass
class Entry:
    entry_id: str
    job_id: str


class Stopped(Exception):
    """The worker was asked to stop in the middle of a job (the job is left for another)."""


class Worker:
    def __init__(
        self,
        redis: AsyncClient,
        settings: Settings,
        consumer: str,
        stop: asyncio.Event,
        metrics: Metrics | None = None,
    ) -> None:
        self.redis = redis
        self.settings = settings
        self.consumer = consumer
        self.stop = stop
        self.metrics = metrics
        self.models = Models(settings)
        self.keys = BatchKeys.of(settings)
        self.guard = DurabilityGuard(settings.state_redis_candidates())
        self.claim_idle_ms = max(1, int(settings.batch_claim_idle * 1000))
        self.block_ms = max(50, min(1000, self.claim_idle_ms // 2))
        self._last_prune = 0.0

    async def run(self) -> None:
        backoff = BACKOFF_START
        outage = False
        group_ready = False
        warned_no_model = False
        refused = False
        while not self.stop.is_set():
            try:
                await self.guard.check(self.redis)  # read again every minute; cheap otherwise
                refused = False
                if await self.models.refresh() is None:
                    if not warned_no_model:
                        log.warning(
                            "no model published yet; waiting for one",
                            extra={"model_dir": str(self.settings.model_dir)},
                        )
                    warned_no_model = True
                    await self._pause(MODEL_WAIT)
                    continue
                if not group_ready:
                    await self.ensure_group()
                    group_ready = True
                entry = await self.reclaim() or await self.read_new()
                if entry is not None:
                    await self.process(entry)
                await self.prune_consumers()
                if outage:
                    log.info("redis: reconnected")
                backoff, outage = BACKOFF_START, False
            except Stopped:
                break
            except EvictingStore as exc:
                if not refused:
                    log.error("not taking batch jobs", extra={"reason": exc.message})
                refused = True
                await self._pause(REFUSED_WAIT)
            except ResponseError as exc:
                # e.g. NOGROUP / UNBLOCKED: the stream or its group was deleted under us
                log.warning("redis: stream error; recreating the group", extra={"error": str(exc)})
                group_ready = False
                await self._pause(BACKOFF_START)
            except redisconn.FAILURES as exc:
                if not outage:
                    log.warning("redis: unavailable; retrying", extra={"error": str(exc)})
                outage = True
                await self._pause(backoff)
                backoff = min(backoff * 2, BACKOFF_MAX)
            except Exception:
                # never let one bad job or a registry hiccup kill the worker; a job in hand
                # stays pending and is retried (up to batch_max_attempts)
                log.exception("batch worker: unexpected error; carrying on")
                await self._pause(BACKOFF_MAX)

    async def _pause(self, seconds: float) -> None:
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self.stop.wait(), seconds)

    # ---- the queue ----------------------------------------------------------------------
    async def ensure_group(self) -> None:
        try:
            await self.redis.xgroup_create(self.keys.stream, GROUP, id="0", mkstream=True)
        except ResponseError as exc:
            if "BUSYGROUP" not in str(exc):
                raise

    async def reclaim(self) -> Entry | None:
        """A job whose worker went silent for longer than the claim idle time, if any."""
        reply = await self.redis.xautoclaim(
            self.keys.stream,
            GROUP,
            self.consumer,
            min_idle_time=self.claim_idle_ms,
            start_id="0-0",
            count=1,
        )
        messages = reply[1] if len(reply) > 1 else []
        for entry_id, fields in messages:
            if fields and "job" in fields:
                log.info("job reclaimed", extra={"job_id": fields["job"], "entry": entry_id})
                return Entry(entry_id, fields["job"])
            await self._done(entry_id)  # a deleted or malformed entry: drop it
        return None

    async def read_new(self) -> Entry | None:
        """The next queued job, waiting up to ``block_ms``; a stop ends the wait at once (an
        entry delivered just then stays pending and is reclaimed: at-least-once holds)."""
        read = asyncio.ensure_future(
            self.redis.xreadgroup(
                GROUP, self.consumer, {self.keys.stream: ">"}, count=1, block=self.block_ms
            )
        )
        stopping = asyncio.ensure_future(self.stop.wait())
        await asyncio.wait({read, stopping}, return_when=asyncio.FIRST_COMPLETED)
        stopping.cancel()
        if not read.done():
            read.cancel()
            with contextlib.suppress(asyncio.CancelledError, *redisconn.FAILURES):
                await read
            raise Stopped
        reply = cast(StreamReply, read.result())
        for _stream, messages in reply or []:
            for entry_id, fields in messages:
                if fields and "job" in fields:
                    return Entry(entry_id, fields["job"])
                await self._done(entry_id)
        return None

    async def _done(self, entry_id: str) -> None:
        async with self.redis.pipeline(transaction=True) as pipe:
            pipe.xack(self.keys.stream, GROUP, entry_id)
            pipe.xdel(self.keys.stream, entry_id)
            await pipe.execute()
        if self.metrics is not None:
            self.metrics.batch_queue_depth.set(await self.redis.xlen(self.keys.stream))

    async def _touch(self, entry_id: str) -> None:
        """Reset the entry's idle time: this worker is alive and still on the job."""
        await self.redis.xclaim(
            self.keys.stream,
            GROUP,
            self.consumer,
            min_idle_time=0,
            message_ids=[entry_id],
            justid=True,
        )

    async def _release(self, entry_id: str, job_id: str) -> None:
        """Stopping mid-job: mark the entry idle enough that another worker takes it at once."""
        await self.redis.hset(self.keys.job(job_id), "status", QUEUED)
        await self.redis.xclaim(
            self.keys.stream,
            GROUP,
            self.consumer,
            min_idle_time=0,
            message_ids=[entry_id],
            idle=self.claim_idle_ms + 1000,
            justid=True,
        )

    async def prune_consumers(self) -> None:
        """Forget consumers (dead workers) that hold nothing and have been silent for long."""
        now = time.monotonic()
        if now - self._last_prune < PRUNE_EVERY:
            return
        self._last_prune = now
        threshold = max(3600_000, self.claim_idle_ms * 10)
        for info in await self.redis.xinfo_consumers(self.keys.stream, GROUP):
            if info["name"] != self.consumer and not info["pending"] and info["idle"] > threshold:
                await self.redis.xgroup_delconsumer(self.keys.stream, GROUP, info["name"])

    # ---- a job --------------------------------------------------------------------------
    async def process(self, entry: Entry) -> None:
        r, job_id = self.redis, entry.job_id
        fields = cast(dict[str, str], await r.hgetall(self.keys.job(job_id)))  # decoded replies
        if not fields or fields.get("status") in (DONE, FAILED):
            await self._done(entry.entry_id)  # expired, or finished by a worker that died
            return  # before acking
        attempts = await r.hincrby(self.keys.job(job_id), "attempts", 1)
        if attempts > self.settings.batch_max_attempts:
            await self._fail(entry, f"gave up after {attempts - 1} attempts")
            return
        raw_input = await r.get(self.keys.input(job_id))
        if raw_input is None:
            await self._fail(entry, "the job's input expired before it ran")
            return
        data = orjson.loads(raw_input)
        ids, lines = data["ids"], data["lines"]
        kind, k = fields["kind"], int(fields["k"])

        recorded = fields.get("model_version") or None
        got = await self.models.get(recorded)
        if got is None:  # the recorded version is gone from the registry: start over
            got = await self.models.get(None)
            if got is None:
                raise RegistryError("no model available")
        model, version = got
        if recorded and recorded != version:
            log.warning(
                "job restarted with another model version",
                extra={"job_id": job_id, "was": recorded, "now": version},
            )
            await r.delete(self.keys.results(job_id), self.keys.counts(job_id))

        checked = data["movies"] if kind == "histories" else ids
        known = await asyncio.to_thread(
            known_mask, model, kind, np.asarray(checked, dtype=np.int64)
        )
        warnings, warning_count = unknown_warnings(kind, checked, lines, known, version)
        work: Sequence[int] | Sequence[History] = ids
        if kind == "histories":
            work = histories_of(data)
            known = np.ones(len(work), dtype=bool)
        await r.hset(
            self.keys.job(job_id),
            mapping={
                "status": RUNNING,
                "model_version": version,
                "warnings": orjson.dumps(warnings).decode(),
                "warning_count": warning_count,
            },
        )
        await r.hsetnx(self.keys.job(job_id), "started", time.time())
        log.info(
            "job started",
            extra={
                "job_id": job_id,
                "kind": kind,
                "rows": len(ids),
                "attempt": attempts,
                "model_version": version,
            },
        )
        started = time.perf_counter()
        try:
            computed = await self._run_chunks(
                entry, model, kind, k, work, known, int(fields["chunk_size"])
            )
        except Stopped:
            await self._release(entry.entry_id, job_id)
            log.info("stopping mid-job; released it", extra={"job_id": job_id})
            raise
        except redisconn.FAILURES:
            raise  # not the job's fault: it stays pending and is retried
        except Exception as exc:
            log.exception("job failed", extra={"job_id": job_id})
            await self._fail(entry, f"{type(exc).__name__}: {exc}")
            return
        await self._finish(entry)
        elapsed = time.perf_counter() - started
        log.info(
            "job done",
            extra={
                "job_id": job_id,
                "rows": len(ids),
                "computed_rows": computed,
                "seconds": round(elapsed, 3),
                "model_version": version,
                "rows_per_s": round(computed / elapsed, 1) if elapsed > 0 else None,
            },
        )

    async def _run_chunks(
        self,
        entry: Entry,
        model: SimilarityModel,
        kind: str,
        k: int,
        ids: Sequence[int] | Sequence[History],
        known: np.ndarray,
        chunk_size: int,
    ) -> int:
        """Compute the missing chunks; returns how many input rows this worker computed."""
        r, job_id, s = self.redis, entry.job_id, self.settings
        total = len(ids)
        n_chunks = (total + chunk_size - 1) // chunk_size
        done = {int(c) for c in await r.hkeys(self.keys.results(job_id))}

        def size(c: int) -> int:
            return min(chunk_size, total - c * chunk_size)

        processed = sum(size(c) for c in done if c < n_chunks)
        computed = 0
        for c in range(n_chunks):
            if c in done:
                continue
            if self.stop.is_set():
                raise Stopped
            start = c * chunk_size
            rows = await asyncio.to_thread(
                compute_rows, model, kind, k, ids, known, start, start + size(c)
            )
            processed += size(c)
            computed += size(c)
            async with r.pipeline(transaction=True) as pipe:
                pipe.hset(self.keys.results(job_id), str(c), orjson.dumps(rows))
                pipe.hset(self.keys.counts(job_id), str(c), len(rows))
                pipe.hset(self.keys.job(job_id), "processed_rows", processed)
                pipe.expire(self.keys.results(job_id), s.batch_ttl)
                pipe.expire(self.keys.counts(job_id), s.batch_ttl)
                await pipe.execute()
            await self._touch(entry.entry_id)
            if self.metrics is not None:
                self.metrics.batch_rows.inc(size(c))
            if s.batch_chunk_pause > 0:
                await self._pause(s.batch_chunk_pause)
        return computed

    async def _finish(self, entry: Entry) -> None:
        r, job_id, ttl = self.redis, entry.job_id, self.settings.batch_ttl
        counts = await r.hvals(self.keys.counts(job_id))
        async with r.pipeline(transaction=True) as pipe:
            pipe.hset(
                self.keys.job(job_id),
                mapping={
                    "status": DONE,
                    "finished": time.time(),
                    "result_rows": sum(map(int, counts)),
                },
            )
            # results live batch_ttl from the moment they are ready
            for key in (
                self.keys.job(job_id),
                self.keys.input(job_id),
                self.keys.results(job_id),
                self.keys.counts(job_id),
            ):
                pipe.expire(key, ttl)
            await pipe.execute()
        await self._done(entry.entry_id)

    async def _fail(self, entry: Entry, error: str) -> None:
        log.error("job failed", extra={"job_id": entry.job_id, "error": error})
        await self.redis.hset(
            self.keys.job(entry.job_id),
            mapping={
                "status": FAILED,
                "error": error[:500],
                "finished": time.time(),
            },
        )
        await self._done(entry.entry_id)


async def run_worker(
    settings: Settings,
    *,
    stop_event: asyncio.Event | None = None,
    consumer_name: str | None = None,
    metrics: Metrics | None = None,
) -> None:
    """Consume batch jobs until ``stop_event`` is set (a job in progress is handed back)."""
    url = settings.state_redis_candidates()
    if not url:
        raise RuntimeError("the batch worker needs a state Redis; MARQUEE_STATE_REDIS_URL is empty")
    stop = stop_event or asyncio.Event()
    client = redisconn.connect(
        url, decode_responses=True, socket_connect_timeout=2.0, health_check_interval=30
    )
    consumer = consumer_name or default_consumer_name()
    log.info(
        "batch worker started",
        extra={
            "consumer": consumer,
            "redis": redisconn.describe(url),
            "queue": BatchKeys.of(settings).stream,
            "model_dir": str(settings.model_dir),
        },
    )
    try:
        await Worker(client, settings, consumer, stop, metrics).run()
    finally:
        await client.aclose()
        log.info("batch worker stopped", extra={"consumer": consumer})


async def batch_worker_ctx(app: web.Application) -> AsyncIterator[None]:
    """cleanup_ctx for the monolith: a batch worker as a background task of the web process.

    Off when there is no state Redis (``MARQUEE_REDIS_URL=`` and no ``MARQUEE_STATE_REDIS_URL``);
    with ``auto`` and no local Redis it waits quietly (one warning per outage) and starts
    consuming when Redis appears. On a Redis that evicts it takes no job (logged once).
    """
    settings = app[SETTINGS]
    if not settings.state_redis_candidates():
        log.info("batch worker off: no state Redis configured")
        yield
        return
    consumer = f"monolith-{default_consumer_name()}"
    metrics = app.get(METRICS)
    async with running(
        lambda stop: run_worker(settings, stop_event=stop, consumer_name=consumer, metrics=metrics),
        "batch worker",
        settings.shutdown_timeout,
    ):
        yield


async def _refuse_evicting_store(settings: Settings) -> None:
    """A worker started on a Redis that evicts exits at once with the reason (a crash loop an
    operator sees beats a worker that silently does nothing). Unreachable: start and retry."""
    url = settings.state_redis_candidates()
    assert url is not None
    client = redisconn.connect(url, socket_connect_timeout=2.0, socket_timeout=5.0)
    try:
        await DurabilityGuard(url).check(client)
    except EvictingStore as exc:
        log.error("not taking batch jobs", extra={"reason": exc.message})
        raise SystemExit(2) from None
    except redisconn.FAILURES:
        pass
    finally:
        await client.aclose()


async def _serve(settings: Settings) -> None:
    await _refuse_evicting_store(settings)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    from services.feedback.worker import run_aggregator  # keeps the batch-only import light

    # the feedback aggregator beside the batch loop: one process to run, one signal stops both
    await asyncio.gather(run_worker(settings, stop_event=stop), run_aggregator(settings, stop))


def main() -> None:
    """``python -m recommender worker``: consume batch jobs until SIGTERM/SIGINT."""
    from services.platform.logs import configure_logging

    settings = settings_or_exit()
    configure_logging("worker", settings.log_level)
    if not settings.state_redis_candidates():
        log.error("the batch worker needs a state Redis; set MARQUEE_STATE_REDIS_URL")
        raise SystemExit(2)
    try:
        import uvloop

        asyncio.set_event_loop_policy(uvloop.EventLoopPolicy())
    except ImportError:
        pass
    asyncio.run(_serve(settings))


if __name__ == "__main__":
    main()
