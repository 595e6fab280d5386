"""The two load models and the run itself.

Open model (``--rate``): requests are *scheduled* at intended times (constant spacing, or
Poisson) whatever the server does, and latency is measured from the intended send time, as
wrk2 does. If the server (or our connection cap) holds requests back, the wait shows up as
latency instead of silently lowering the offered load — no coordinated omission.

Closed model (``--users``): N users each run one scenario after another, with optional think
time. Latency is measured from the actual send; a slow server slows the users down, which is
what real closed populations do and why this model under-reports queueing.

Every run is bounded: per-request timeout, a drain period of at most one timeout after the
send phase, and a hard deadline after which everything still running is cancelled.
"""

from __future__ import annotations

import asyncio
import bisect
import contextlib
import math
import random
import signal
import sys
import time
from collections import Counter
from collections.abc import Callable
from datetime import UTC, datetime
from itertools import accumulate, count
from typing import Any, TextIO

import aiohttp

from loadtest.config import RunConfig
from loadtest.scenarios import REGISTRY, Context, Scenario, classify
from loadtest.stats import Recorder, new_histogram, summarise
from loadtest.workload import Workload, load_workload

USER_AGENT = "marquee-loadtest/1"
EARLY_WAKE = 0.001  # seconds
# All timing uses perf_counter: uvloop's loop.time() only has millisecond resolution, which
# would quantise every latency. Sleeps take relative delays, so they need no loop clock.
clock = time.perf_counter
DRAIN_GRACE = 0.5  # seconds past the last timeout, so a timeout is seen as one


class Mix:
    """Weighted scenario choice (a bisect over cumulative weights: cheap per request)."""

    def __init__(self, weights: dict[str, float]) -> None:
        self.names = [n for n, w in weights.items() if w > 0]
        self.funcs: list[Scenario] = [REGISTRY[n] for n in self.names]
        self.cum = list(accumulate(weights[n] for n in self.names))

    def pick(self, rng: random.Random) -> tuple[str, Scenario]:
        i = bisect.bisect_right(self.cum, rng.random() * self.cum[-1])
        i = min(i, len(self.names) - 1)
        return self.names[i], self.funcs[i]


def arrival_offset(k: int, rate: float, ramp: float) -> float:
    """Seconds from the start at which arrival ``k`` (0-based) is due, constant spacing.

    During the ramp the rate grows linearly from 0 to ``rate``, so the cumulative number of
    arrivals is ``rate * t**2 / (2 * ramp)``; afterwards it grows by ``rate`` per second.
    """
    if ramp <= 0:
        return k / rate
    in_ramp = rate * ramp / 2.0
    if k < in_ramp:
        return math.sqrt(2.0 * ramp * k / rate)
    return ramp + (k - in_ramp) / rate


def _rate_at(t: float, rate: float, ramp: float) -> float:
    return rate if ramp <= 0 or t >= ramp else max(rate * t / ramp, rate * 0.01)


class Run:
    """One load run: owns the recorder, the progress line and the generator's own health."""

    def __init__(self, cfg: RunConfig, ctx: Context, loop: asyncio.AbstractEventLoop) -> None:
        self.cfg = cfg
        self.ctx = ctx
        self.loop = loop
        self.mix = Mix(cfg.mix)
        self.rng = random.Random(cfg.seed)
        self.t0 = clock()
        self.rec = Recorder(self.t0)
        self.send_lag = new_histogram()  # open model: how late the generator itself sent
        self.sent = 0
        self.unsent = 0
        self.planned_end = self.t0

    async def _one(self, name: str, fn: Scenario, start: float) -> None:
        self.sent += 1
        self.rec.in_flight += 1
        self.rec.started(clock())
        try:
            await fn(self.ctx, self.rng)
        except asyncio.CancelledError:
            self.rec.error(name, "cancelled", clock())
            raise
        except Exception as exc:  # noqa: BLE001 - every failure is data, classified by kind
            self.rec.error(name, classify(exc), clock())
        else:
            now = clock()
            self.rec.ok(name, now - start, now)
        finally:
            self.rec.in_flight -= 1

    # ---- open model -------------------------------------------------------------------
    def _schedule(self) -> Callable[[int], float]:
        cfg = self.cfg
        rate = float(cfg.rate or 1.0)
        if cfg.arrival == "constant":
            return lambda k: arrival_offset(k, rate, cfg.ramp_up)
        times: list[float] = [0.0]
        rng = random.Random(None if cfg.seed is None else cfg.seed + 1)

        def poisson(k: int) -> float:
            while len(times) <= k:
                t = times[-1]
                times.append(t + rng.expovariate(_rate_at(t, rate, cfg.ramp_up)))
            return times[k]

        return poisson

    async def run_open(self) -> None:
        cfg = self.cfg
        assert cfg.rate is not None
        at = self._schedule()
        if cfg.duration is not None:
            send_for = cfg.ramp_up + cfg.duration
        else:
            assert cfg.requests is not None
            send_for = at(cfg.requests - 1) + 1.0 / cfg.rate
        limit = cfg.requests if cfg.requests is not None else math.inf
        end_send = self.t0 + send_for
        self.planned_end = end_send
        drain_deadline = end_send + cfg.timeout + DRAIN_GRACE
        slots = asyncio.Semaphore(cfg.connections)
        tasks: set[asyncio.Task] = set()
        try:
            await self._dispatch(at, limit, end_send, drain_deadline, slots, tasks)
            await self._drain(tasks, drain_deadline)
        finally:
            for task in list(tasks):
                task.cancel()
            if tasks:
                await asyncio.gather(*tasks, return_exceptions=True)
        if self.unsent:
            now = clock()
            for _ in range(self.unsent):
                self.rec.error(self.mix.pick(self.rng)[0], "unsent", now)

    async def _dispatch(
        self,
        at: Callable[[int], float],
        limit: float,
        end_send: float,
        drain_deadline: float,
        slots: asyncio.Semaphore,
        tasks: set[asyncio.Task],
    ) -> None:
        """Start each arrival at its intended time (or as soon as a connection slot frees)."""
        cfg = self.cfg
        loop = self.loop

        def done(task: asyncio.Task) -> None:
            tasks.discard(task)
            slots.release()

        for k in count():
            if k >= limit:
                break
            intended = self.t0 + at(k)
            if intended >= end_send and cfg.duration is not None:
                break
            delay = intended - clock()
            if delay > EARLY_WAKE:
                # Timers fire up to ~1 ms late (epoll's millisecond timeout is rounded up);
                # waking early keeps the generator's own lateness out of the latencies.
                await asyncio.sleep(delay - EARLY_WAKE)
            if slots.locked():
                # Our connection cap is full: wait (the wait counts as latency) but never
                # past the drain deadline; what is still due then is reported as unsent.
                try:
                    async with asyncio.timeout(max(drain_deadline - clock(), 0.0)):
                        await slots.acquire()
                except TimeoutError:
                    self.unsent += self._remaining(at, k, end_send, limit)
                    break
            else:
                await slots.acquire()
            now = clock()
            self.send_lag.record_value(max(int((now - intended) * 1e6), 1))
            name, fn = self.mix.pick(self.rng)
            # Timed from the intended time when late (the queueing counts); from the real
            # send when the early wake-up sent it a little ahead of time.
            task = loop.create_task(self._one(name, fn, min(intended, now)))
            tasks.add(task)
            task.add_done_callback(done)

    def _remaining(self, at: Callable[[int], float], k: int, end_send: float, limit: float) -> int:
        if limit != math.inf:
            return int(limit) - k
        n = 0
        while self.t0 + at(k + n) < end_send:
            n += 1
        return n

    async def _drain(self, tasks: set[asyncio.Task], deadline: float) -> None:
        pending = set(tasks)
        if pending:
            _, pending = await asyncio.wait(pending, timeout=max(deadline - clock(), 0))
        for task in pending:
            task.cancel()
        if pending:
            await asyncio.gather(*pending, return_exceptions=True)

    # ---- closed model -----------------------------------------------------------------
    async def run_closed(self) -> None:
        cfg = self.cfg
        assert cfg.users is not None
        end = self.t0 + cfg.ramp_up + cfg.duration if cfg.duration is not None else math.inf
        self.planned_end = end if end != math.inf else self.t0
        tickets = [cfg.requests if cfg.requests is not None else math.inf]
        loop = self.loop

        async def user(i: int) -> None:
            if cfg.ramp_up > 0:
                await asyncio.sleep(cfg.ramp_up * i / cfg.users)
            while clock() < end and tickets[0] > 0:
                tickets[0] -= 1
                name, fn = self.mix.pick(self.rng)
                await self._one(name, fn, clock())
                if cfg.think_time > 0:
                    await asyncio.sleep(cfg.think_time * self.rng.uniform(0.5, 1.5))

        tasks = {loop.create_task(user(i)) for i in range(cfg.users)}
        deadline = (end if end != math.inf else self.t0 + cfg.hard_deadline) + cfg.timeout
        deadline += DRAIN_GRACE
        try:
            await self._drain(tasks, deadline)
        finally:
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)

    # ---- progress ---------------------------------------------------------------------
    async def progress(self, stream: TextIO, tty: bool) -> None:
        """Once per second: the last full second's figures (one line, redrawn on a tty)."""
        second = 1
        while True:
            await asyncio.sleep(max(self.t0 + second - clock(), 0.0))
            self.print_progress(stream, tty)
            second += 1

    def print_progress(self, stream: TextIO, tty: bool, final: bool = False) -> None:
        elapsed = clock() - self.t0
        window = max(int(elapsed) - (0 if final else 1), 0)
        line = self.progress_line(window, elapsed)
        stream.write(("\r\x1b[2K" + line + ("\n" if final else "")) if tty else line + "\n")
        stream.flush()

    def progress_line(self, window: int, elapsed: float) -> str:
        w = self.rec.window_summary(window)
        total_err = sum(sum(s.errors.values()) for s in self.rec.scenarios.values())
        total_ok = sum(s.ok for s in self.rec.scenarios.values())

        def ms(v: float | None) -> str:
            return "-" if v is None else f"{v:.1f}ms"

        return (
            f"[{elapsed:5.1f}s] done {total_ok} err {total_err} | second {window + 1}: "
            f"{w['ok']} ok {w['errors']} err p50 {ms(w['p50'])} p99 {ms(w['p99'])}"
            f" max {ms(w['max'])} | in-flight {self.rec.in_flight}"
        )

    def results(self, extra: dict[str, Any]) -> dict[str, Any]:
        # to the last completion, or the planned end if later (but not past an interrupt)
        end = max(self.rec.last_completion, min(self.planned_end, clock()))
        elapsed = max(end - self.t0, 1e-9)
        out = {"tool": "marquee-loadtest", "format": 1, **extra, **self.rec.summary(elapsed)}
        out["generator"] = {
            "sent": self.sent,
            "unsent": self.unsent,
            "offered_rate": self.cfg.rate,
            "send_lag_ms": summarise(self.send_lag, Counter(), elapsed)["latency_ms"],
        }
        return out


def make_connector(cfg: RunConfig) -> aiohttp.TCPConnector:
    """One pool for the whole run, sized for its concurrency; DNS cached (loopback anyway)."""
    return aiohttp.TCPConnector(limit=cfg.connections, limit_per_host=0, ttl_dns_cache=300)


async def run_load(
    cfg: RunConfig,
    *,
    progress: TextIO | None = None,
    warn: Callable[[str], None] | None = None,
    workload: Workload | None = None,
    handle_sigint: bool = False,
) -> dict[str, Any]:
    """Run the load described by ``cfg`` and return the results payload (JSON-ready)."""
    warn = warn or (lambda msg: print(f"loadtest: warning: {msg}", file=sys.stderr))
    loop = asyncio.get_running_loop()
    timeout = aiohttp.ClientTimeout(total=cfg.timeout)
    headers = {"User-Agent": USER_AGENT}
    warnings: list[str] = []
    started = datetime.now(UTC).isoformat(timespec="seconds")
    connector = make_connector(cfg)
    async with aiohttp.ClientSession(
        connector=connector,
        timeout=timeout,
        headers=headers,
        cookie_jar=aiohttp.DummyCookieJar(),  # anonymous traffic keeps no cookies
    ) as http:
        if workload is None:
            workload, warning = await load_workload(
                http,
                catalog_base=cfg.catalog_base,
                limit=cfg.movies,
                popularity=cfg.popularity,
                zipf_s=cfg.zipf_s,
                user_ids=cfg.user_ids,
                data_dir=cfg.data_dir,
                timeout=min(cfg.timeout, 3.0),
            )
            if warning:
                warnings.append(warning)
                warn(warning)
        ctx = Context(
            http=http,
            connector=connector,
            timeout=timeout,
            web=cfg.web_base,
            rec=cfg.recommender_base,
            workload=workload,
            headers=headers,
        )
        run = Run(cfg, ctx, loop)
        ticker = None
        tty = bool(getattr(progress, "isatty", lambda: False)())
        if progress is not None:
            ticker = loop.create_task(run.progress(progress, tty))
        body = loop.create_task(run.run_open() if cfg.model == "open" else run.run_closed())
        if handle_sigint:
            loop.add_signal_handler(signal.SIGINT, body.cancel)
        try:
            async with asyncio.timeout(cfg.hard_deadline):
                await body
        except TimeoutError:
            warnings.append(f"hard deadline of {cfg.hard_deadline:.0f}s reached; run cut short")
            warn(warnings[-1])
        except asyncio.CancelledError:
            task = asyncio.current_task()
            if task is not None and task.cancelling():
                raise  # we ourselves are being cancelled: not an interrupt
            warnings.append("interrupted (Ctrl-C); results cover the run so far")
            warn(warnings[-1])
        finally:
            if handle_sigint:
                loop.remove_signal_handler(signal.SIGINT)
            if ticker is not None and progress is not None:
                ticker.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await ticker
                run.print_progress(progress, tty, final=True)
    return run.results(
        {
            "started_at": started,
            "config": cfg.to_json(),
            "workload": workload.describe(),
            "warnings": warnings,
        }
    )
