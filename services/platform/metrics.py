"""Prometheus metrics. One registry per app, so several apps in one process (tests, the monolith's
components) never collide, and every component reports through the same object.

With ``MARQUEE_WORKERS`` > 1 the kernel hands each scrape to any one of the worker processes, so
a per-process registry would answer with that worker's share only. There the runner switches
prometheus-client to its multiprocess mode before forking (:func:`enable_multiprocess`): every
value lives in a per-process memory-mapped file in one directory per server, and a scrape,
whichever worker takes it, merges the files of all workers (counters and histograms of dead
workers included: their requests happened). A single process keeps the plain in-memory values:
they cost less on the hot path, and several apps may share the process.
"""

from __future__ import annotations

import asyncio
import os
import re
import shutil
from bisect import bisect_left
from collections.abc import Callable, Iterable
from pathlib import Path

from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    ProcessCollector,
    generate_latest,
    values,
)
from prometheus_client.metrics_core import Metric
from prometheus_client.multiprocess import MultiProcessCollector, mark_process_dead

MULTIPROC_ENV = "PROMETHEUS_MULTIPROC_DIR"
_DB_FILE = re.compile(r"_(\d+)\.db$")

LATENCY_BUCKETS = (
    0.0005,
    0.001,
    0.0025,
    0.005,
    0.01,
    0.025,
    0.05,
    0.1,
    0.25,
    0.5,
    1.0,
    2.5,
    5.0,
    10.0,
)


class Metrics:
    def __init__(self, service: str) -> None:
        self.service = service
        self.registry = CollectorRegistry()
        self.multiprocess_dir = multiprocess_dir()
        r = self.registry
        if self.multiprocess_dir is None:
            ProcessCollector(registry=r)  # this process's CPU, memory, file descriptors
        self.requests = Counter(
            "marquee_http_requests",
            "HTTP requests served",
            ["route", "method", "status"],
            registry=r,
        )
        self.latency = Histogram(
            "marquee_http_request_duration_seconds",
            "HTTP request latency",
            ["route", "method"],
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.backend_calls = Counter(
            "marquee_backend_calls",
            "Calls to backends by outcome",
            ["backend", "outcome"],
            registry=r,
        )
        self.backend_latency = Histogram(
            "marquee_backend_call_duration_seconds",
            "Backend call latency",
            ["backend"],
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.circuit_state = Gauge(
            "marquee_circuit_state",
            "Circuit breaker state: 0 closed, 1 half-open, 2 open",
            ["backend", "endpoint"],
            registry=r,
            multiprocess_mode="livemax",  # across workers: the worst state of each breaker
        )
        self.cache = Counter(
            "marquee_cache_requests", "Cache lookups by result", ["cache", "result"], registry=r
        )
        self.shed = Counter(
            "marquee_requests_shed",
            "Requests answered 503 at once because too many were in progress",
            registry=r,
        )
        self.fallbacks = Counter(
            "marquee_fallbacks", "Degraded page fragments", ["fragment", "reason"], registry=r
        )
        self.model_version = Gauge(
            "marquee_model_info",
            "The model version loaded (value 1)",
            ["version"],
            registry=r,
            multiprocess_mode="livemax",
        )
        self.batch_queue_depth = Gauge(
            "marquee_batch_queue_depth",
            "Batch jobs waiting or running",
            registry=r,
            multiprocess_mode="livemostrecent",  # read from Redis: the latest reading wins
        )
        self.batch_rows = Counter("marquee_batch_rows", "Batch rows computed", registry=r)
        self.feedback_events = Counter(
            "marquee_feedback_events",
            "Feedback events (kind: impression, click) by outcome: buffered in this process, "
            "flushed to the stream (or the local counts), dropped (buffer full or sink down)",
            ["kind", "outcome"],
            registry=r,
        )
        self.feedback_clicks = Counter(
            "marquee_feedback_clicks",
            "Tracked-link follows redirected: counted (the view's first), extra (another movie "
            "of a counted view), unrecorded (the state Redis was down: redirected, not counted)",
            ["outcome"],
            registry=r,
        )
        self.feedback_refusals = Counter(
            "marquee_feedback_refusals",
            "Tracked-link follows refused: not_in_row 400, forged 403, expired 410, replay 409",
            ["reason"],
            registry=r,
        )

        self._tallies: dict[tuple[str, str, int], _Tally] = {}
        self._touched: list[_Tally | TalliedCounter] = []  # counted since the last flush
        self._versions: set[str] = set()
        self._fallback_children: dict[tuple[str, str], Counter] = {}

    def observe_request(self, route: str, method: str, status: int, seconds: float) -> None:
        """Count one served request, cheaply: it is tallied in plain Python and the tallies are
        added to the Prometheus values once per turn of the event loop (``flush``), so a busy
        server pays prometheus-client's locks once per batch of requests, not per request (with
        several workers, see ``_touch``)."""
        key = (route, method, status)
        tally = self._tallies.get(key)
        if tally is None:
            tally = self._tallies[key] = _Tally(
                self.requests.labels(route, method, str(status)),
                self.latency.labels(route, method),
            )
        first = not tally.count
        tally.count += 1
        tally.seconds += seconds
        tally.buckets[bisect_left(LATENCY_BOUNDS, seconds)] += 1
        if first:
            self._touch(tally)

    def flush(self) -> None:
        """Add the tallied requests and counts to the Prometheus values (also done before a
        scrape)."""
        touched, self._touched = self._touched, []
        for tally in touched:
            tally.flush()

    def _touch(self, tally: _Tally | TalliedCounter) -> None:
        """``tally`` has its first counts since a flush: one flush per turn of the loop for all
        of them (at once when there is no loop).

        With several workers the counts go to the worker's file at once instead: a worker killed
        by SIGKILL right after answering must leave that request counted, and a response is
        written after its tally (a streamed page excepted), so nothing it answered is lost. The
        price, a few memory-mapped writes per request, is paid only in that mode."""
        if self.multiprocess_dir is not None:
            tally.flush()
            return
        self._touched.append(tally)
        if len(self._touched) == 1:
            _schedule(self.flush)

    def tallied(self, child: Counter) -> TalliedCounter:
        """``child`` counted as a ``TalliedCounter``, flushed with the request tallies."""
        return TalliedCounter(child, self._touch)

    def count_fallback(self, fragment: str, reason: str) -> None:
        """One degraded page fragment (the child bound once per label pair, as above)."""
        key = (fragment, reason)
        child = self._fallback_children.get(key)
        if child is None:
            child = self._fallback_children[key] = self.fallbacks.labels(fragment, reason)
        child.inc()

    def set_model_version(self, version: str) -> None:
        # A multiprocess file keeps a value after clear(): zero the old versions first (the
        # exposition leaves zeros out, so exactly one series shows either way).
        for old in self._versions - {version}:
            self.model_version.labels(old).set(0)
        self.model_version.clear()
        self.model_version.labels(version=version).set(1)
        self._versions = {version}

    def exposition(self) -> bytes:
        self.flush()
        if self.multiprocess_dir is None:
            return generate_latest(self.registry)
        registry = CollectorRegistry()
        registry.register(_AllWorkers(self.multiprocess_dir))
        registry.register(WorkerProcesses(self.multiprocess_dir))
        return generate_latest(registry)


LATENCY_BOUNDS = (*LATENCY_BUCKETS, float("inf"))  # a Histogram's upper bounds, +Inf last


class _Tally:
    """Requests of one (route, method, status) not yet added to the Prometheus values.

    ``flush`` adds a batch the way ``Counter.inc`` and ``Histogram.observe`` add one: to the
    histogram's sum and to the one bucket whose upper bound first holds the value (the
    exposition makes them cumulative). It uses the histogram child's value cells (``_sum``,
    ``_buckets``), which prometheus-client does not document; the version is pinned by the lock
    files and tests/observability compares the exposition with ``observe``'s."""

    __slots__ = ("counter", "histogram", "count", "seconds", "buckets")

    def __init__(self, counter: Counter, histogram: Histogram) -> None:
        self.counter = counter
        self.histogram = histogram
        self.count = 0
        self.seconds = 0.0
        self.buckets = [0] * len(LATENCY_BOUNDS)

    def flush(self) -> None:
        if not self.count:
            return
        self.counter.inc(self.count)
        self.histogram._sum.inc(self.seconds)
        cells = self.histogram._buckets
        for i, n in enumerate(self.buckets):
            if n:
                cells[i].inc(n)
                self.buckets[i] = 0
        self.count = 0
        self.seconds = 0.0


class TalliedCounter:
    """A counter child counted in plain Python and added to its Prometheus value at the next turn
    of the event loop or scrape, as requests are (``_Tally``): ``inc`` on the child takes a lock
    and, with several workers, writes a memory-mapped file, ~0.5 µs on every cache lookup.
    Made by ``Metrics.tallied``, whose ``flush`` flushes it too."""

    __slots__ = ("child", "pending", "_touch")

    def __init__(self, child: Counter, touch: Callable[[TalliedCounter], None]) -> None:
        self.child = child
        self.pending = 0
        self._touch = touch

    def inc(self, n: int = 1) -> None:
        if self.pending:
            self.pending += n
        else:
            self.pending = n
            self._touch(self)

    def flush(self) -> None:
        pending, self.pending = self.pending, 0
        if pending:
            self.child.inc(pending)


def _schedule(flush: Callable[[], None]) -> None:
    """Run ``flush`` at the next turn of the event loop, or now when there is no loop."""
    try:
        asyncio.get_running_loop().call_soon(flush)
    except RuntimeError:
        flush()


# ---- several worker processes -------------------------------------------------------------
def multiprocess_dir() -> Path | None:
    """The directory of the worker files when multiprocess mode is on in this process."""
    if not getattr(values.ValueClass, "_multiprocess", False):
        return None
    return Path(os.environ[MULTIPROC_ENV])


def enable_multiprocess(path: Path) -> None:
    """Before forking the workers of one server: an empty directory for their files, and
    prometheus-client's memory-mapped values for every metric created from now on.

    The library picks its value class from the environment when it is imported, which happened
    long before the runner knows the worker count, so the choice is made again here, the same
    way the library makes it. Files left by an earlier run of this server are removed: their
    pids are gone and their counts would be added to ours."""
    shutil.rmtree(path, ignore_errors=True)
    path.mkdir(parents=True)
    os.environ[MULTIPROC_ENV] = str(path)
    values.ValueClass = values.MultiProcessValue()


def worker_exited(path: Path, pid: int) -> None:
    """A worker is gone: its live gauges (breaker states, model version) stop counting; its
    counters and histograms stay, since what it served was served."""
    mark_process_dead(pid, str(path))


def _pids(path: Path) -> set[int]:
    return {int(m.group(1)) for f in os.listdir(path) if (m := _DB_FILE.search(f))}


class _AllWorkers(MultiProcessCollector):
    """Every worker's files merged, less the zeroed model versions (see set_model_version)."""

    def __init__(self, path: Path) -> None:
        super().__init__(None, str(path))

    def collect(self) -> Iterable[Metric]:
        for family in super().collect():
            if family.name == "marquee_model_info":
                family.samples = [s for s in family.samples if s.value]
            yield family


class WorkerProcesses:
    """``process_*`` of every live worker of this server (and of the runner that forked them),
    labelled ``pid``: a scrape lands on one worker, but memory and CPU are spent by all."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def collect(self) -> Iterable[Metric]:
        families: dict[str, Metric] = {}
        for pid in sorted(_pids(self.path) | {os.getppid()}):
            for family in ProcessCollector(pid=_constant(pid), registry=None).collect():
                merged = families.get(family.name)
                if merged is None:
                    merged = families[family.name] = Metric(
                        family.name, family.documentation, family.type
                    )
                for sample in family.samples:
                    merged.add_sample(sample.name, {**sample.labels, "pid": str(pid)}, sample.value)
        return families.values()


def _constant(pid: int) -> Callable[[], int]:
    return lambda: pid
