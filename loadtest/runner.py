"""The load runner: open or closed model on the engine, with honest timing and its own health.

Open model (``--rate``): arrival ``k`` is due at a fixed offset from the start (constant
spacing, or Poisson), whatever the server does. A scheduler callback wakes about every
millisecond and hands every due arrival to the engine (it waits in the pool's backlog when all
``--connections`` are busy). Latency is measured from the *intended* time, so a stalled server
cannot hide its queue: no coordinated omission.

The generator's own lateness is measured apart: *send lag* is how late the scheduler got to an
arrival (the generator short of CPU, not the server being slow). Its p99 is shown beside the
latency, and past ``--max-send-lag`` the run is marked invalid: its latencies include the
generator's own delay. Arrivals still not handed over when the send phase ends are ``unsent``
(the offered load was not produced), which also marks the run invalid.

Closed model (``--users``): N users each run one scenario after another, with optional think
time. Latency is measured from the actual send; a slow server slows the users down, which is
what real closed populations do and why this model under-reports queueing.

Every run is bounded: each request times out ``--timeout`` after it was due (open) or sent
(closed); after the send phase the run waits at most one timeout (plus a grace) for what is in
flight, and a hard deadline stops everything.
"""

from __future__ import annotations

import asyncio
import bisect
import contextlib
import dataclasses
import gc
import math
import random
import resource
import signal
import sys
from array import array
from collections.abc import Callable
from datetime import UTC, datetime
from itertools import accumulate
from typing import Any, TextIO

import numpy as np

from loadtest import thresholds as thresholds_module
from loadtest.config import REPLAY, RunConfig
from loadtest.engine import DONE, Engine, Exchange, Pool, clock, format_request, probe
from loadtest.holdout import ReplayUsers, read_holdout, select_users
from loadtest.online import baseline, replay_report
from loadtest.scenarios import (
    REC,
    REGISTRY,
    WEB,
    BadResponse,
    Flow,
    Replay,
    Request,
    Response,
    Scenario,
    read_targets,
)
from loadtest.stats import Recorder, percentile
from loadtest.workload import Movie, Workload, build_workload, load_workload

USER_AGENT = "marquee-loadtest/2"
# seconds: an arrival this close to due is sent now: by the scheduler (its timers fire up to
# ~1 ms late), and when the generator is awake anyway for a response (a wake-up costs ~20-35 µs
# of CPU on a VM, more than the rest of a request). So an arrival may leave up to 1 ms early
# (its latency then counts from the actual send), never late because of this.
EARLY = 0.001
MAX_PER_TICK = 256  # arrivals handed over per scheduler wake-up before I/O gets a turn
DRAIN_GRACE = 0.5  # seconds past the last timeout, so a timeout is seen as one
REC_SCENARIOS = frozenset({"similar", "user_recs", "batch_similar", "history_recs"})


class TargetUnreachable(Exception):
    """A base URL the run needs does not accept connections (checked before any load)."""


class Mix:
    """Weighted scenario choice (a bisect over cumulative weights: cheap per request)."""

    def __init__(self, weights: dict[str, float], funcs: dict[str, Scenario]) -> None:
        self.names = [n for n, w in weights.items() if w > 0]
        self.funcs: list[Scenario] = [funcs[n] for n in self.names]
        self.cum = list(accumulate(weights[n] for n in self.names))
        self.single = len(self.names) == 1

    def pick(self, rng: random.Random) -> int:
        if self.single:
            return 0
        i = bisect.bisect_right(self.cum, rng.random() * self.cum[-1])
        return min(i, len(self.names) - 1)


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


def arrival_offsets(k0: int, k1: int, rate: float, ramp: float) -> np.ndarray:
    """``arrival_offset`` for ``k0 <= k < k1`` at once."""
    k = np.arange(k0, k1, dtype=np.float64)
    if ramp <= 0:
        return k / rate
    in_ramp = rate * ramp / 2.0
    return np.where(k < in_ramp, np.sqrt(2.0 * ramp * k / rate), ramp + (k - in_ramp) / rate)


def _rate_at(t: float, rate: float, ramp: float) -> float:
    return rate if ramp <= 0 or t >= ramp else max(rate * t / ramp, rate * 0.01)


class Visit:
    """A multi-step scenario in progress: its flow, its cookies, the request it waits on."""

    __slots__ = ("index", "flow", "start", "user", "cookies", "request", "first")

    def __init__(self, index: int, flow: Flow, start: float, user: int) -> None:
        self.index = index
        self.flow = flow
        self.start = start
        self.user = user
        self.cookies: dict[str, str] = {}
        self.request: Request | None = None
        self.first = True


def _set_cookies(jar: dict[str, str], ex: Exchange) -> None:
    for raw in ex.header_values(b"set-cookie"):
        pair, _, attrs = raw.decode("latin-1").partition(";")
        name, _, value = pair.strip().partition("=")
        expired = "max-age=0" in attrs.lower().replace(" ", "")
        if not name:
            continue
        if expired or not value:
            jar.pop(name, None)
        else:
            jar[name] = value


class Run:
    """One load run: scheduler, completion callbacks, recorder and the generator's own health."""

    def __init__(
        self,
        cfg: RunConfig,
        engine: Engine,
        pools: dict[str, Pool],
        mix: Mix,
        workload: Workload,
        loop: asyncio.AbstractEventLoop,
    ) -> None:
        self.cfg = cfg
        self.engine = engine
        self.pools = pools
        self.mix = mix
        self.funcs = mix.funcs
        self.wl = workload
        self.loop = loop
        self.rng = random.Random(cfg.seed)
        self.timeout = cfg.timeout
        self.t0 = clock()
        self.rec = Recorder(self.t0, mix.names)
        self.send_lag = array("f")  # open model: seconds the scheduler was late, per arrival
        self.conn_wait = array("f")  # seconds spent waiting for a free connection, when any
        self.http_requests = 0
        self.sent = 0
        self.unsent = 0
        self.skipped = 0  # open model: arrivals passed over because they were already too late
        self.planned_end = self.t0
        self.sending = True
        self.finished: asyncio.Future[None] = loop.create_future()
        self.cache_wire = cfg.paths is not None  # replayed requests repeat: format them once
        self.wire: dict[int, bytes] = {}
        # open model state
        self.k = 0
        self.offsets: list[float] = []
        self.at: Callable[[int], float] = lambda k: 0.0
        self.limit: float = math.inf
        self.end_send = self.t0
        self.send_for = 0.0
        self.timer: asyncio.TimerHandle | None = None
        self.next_due = math.inf  # when the next arrival is due (open model, between ticks)
        # closed model state
        self.end = math.inf
        self.tickets: float = math.inf
        self.active_users = 0

    # ---- sending ------------------------------------------------------------------------------
    def _format(self, req: Request, cookies: dict[str, str] | None) -> bytes:
        if self.cache_wire and not cookies:
            key = id(req)
            data = self.wire.get(key)
            if data is None:
                data = self.wire[key] = self._format_now(req, None)
            return data
        return self._format_now(req, cookies)

    def _format_now(self, req: Request, cookies: dict[str, str] | None) -> bytes:
        cookie = "; ".join(f"{k}={v}" for k, v in cookies.items()) if cookies else None
        return format_request(
            self.pools[req.origin].origin,
            req.method,
            req.target,
            USER_AGENT,
            req.body,
            req.content_type,
            cookie,
        )

    def launch(self, index: int, start: float, user: int) -> None:
        """Start one scenario execution (timed from ``start``); the caller counts it as sent."""
        self.rec.in_flight += 1
        item = self.funcs[index](self.wl, self.rng)
        if type(item) is Request:
            ex = Exchange(self._format(item, None), self._single_done, start + self.timeout)
            ex.keep = False
            ex.tag = item
            ex.index = index
            ex.start = start
            ex.user = user
            self.http_requests += 1
            self.engine.submit(self.pools[item.origin], ex)
        else:
            assert not isinstance(item, Request)
            self._step(Visit(index, item, start, user), None)

    def _single_done(self, ex: Exchange) -> None:
        now = clock()
        if ex.queued_at:
            self.conn_wait.append(ex.sent_at - ex.queued_at if ex.sent_at else now - ex.queued_at)
        if ex.error is None and ex.status < 400:
            self.rec.ok(ex.index, now - ex.start, now)
        else:
            req = ex.tag
            assert isinstance(req, Request)
            self._fail(ex.index, req, ex, now, now - ex.start)
        if ex.user < 0 and self.sending:  # the open model's common case, inline
            self.rec.in_flight -= 1
            if now + EARLY >= self.next_due:
                if self.timer is not None:
                    self.timer.cancel()
                self._tick()
        else:
            self._after(ex.user)

    def _fail(self, index: int, req: Request, ex: Exchange, now: float, waited: float) -> None:
        status: int | None = ex.status or None
        if ex.error is None:
            kind = f"http_{ex.status}"
            message = f"HTTP {ex.status}: " + ex.body[:200].decode("utf-8", "replace")
        else:
            kind, message = ex.error, ex.message
        self.rec.error(
            index,
            kind,
            now,
            method=req.method,
            template=req.template,
            status=status,
            url=self.pools[req.origin].origin.base + req.target,
            message=message,
            waited=waited,
        )

    # ---- multi-step visits --------------------------------------------------------------------
    def _step(self, visit: Visit, response: Response | None) -> None:
        try:
            req = next(visit.flow) if response is None else visit.flow.send(response)
        except StopIteration:
            now = clock()
            self.rec.ok(visit.index, now - visit.start, now)
            self._after(visit.user)
            return
        except BadResponse as exc:
            self._visit_error(visit, "bad_response", str(exc))
            return
        except Exception as exc:  # noqa: BLE001 - a broken flow is one failed visit, not a crash
            self._visit_error(visit, f"other_{type(exc).__name__}", str(exc))
            return
        visit.request = req
        deadline = (visit.start if visit.first else clock()) + self.timeout
        visit.first = False
        ex = Exchange(self._format(req, visit.cookies), self._flow_done, deadline)
        ex.tag = visit
        self.http_requests += 1
        self.engine.submit(self.pools[req.origin], ex)

    def _flow_done(self, ex: Exchange) -> None:
        visit = ex.tag
        assert isinstance(visit, Visit) and visit.request is not None
        if ex.error is None and ex.status < 400:
            _set_cookies(visit.cookies, ex)
            self._step(visit, Response(ex.status, ex.body))
            return
        visit.flow.close()
        now = clock()
        self._fail(visit.index, visit.request, ex, now, now - visit.start)
        self._after(visit.user)

    def _visit_error(self, visit: Visit, kind: str, message: str) -> None:
        req = visit.request
        self.rec.error(
            visit.index,
            kind,
            clock(),
            method=req.method if req else "",
            template=req.template if req else "",
            url=(self.pools[req.origin].origin.base + req.target) if req else "",
            message=message,
        )
        self._after(visit.user)

    def _after(self, user: int) -> None:
        """One scenario execution ended: a closed-model user goes on; the drain may be over."""
        self.rec.in_flight -= 1
        if user >= 0:
            if self.cfg.think_time > 0:
                pause = self.cfg.think_time * self.rng.uniform(0.5, 1.5)
                self.loop.call_later(pause, self._user_next, user)
            else:
                self.loop.call_soon(self._user_next, user)
        elif not self.sending and self.rec.in_flight == 0 and not self.finished.done():
            self.finished.set_result(None)

    # ---- open model ---------------------------------------------------------------------------
    def _schedule(self) -> Callable[[int], float]:
        cfg = self.cfg
        rate = float(cfg.rate or 1.0)
        if cfg.arrival == "constant":
            return lambda k: arrival_offset(k, rate, cfg.ramp_up)
        times = self.offsets
        times.append(0.0)
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
        self.at = self._schedule()
        if cfg.duration is not None:
            send_for = cfg.ramp_up + cfg.duration
        else:
            assert cfg.requests is not None
            send_for = self.at(cfg.requests - 1) + 1.0 / cfg.rate
        self.limit = cfg.requests if cfg.requests is not None else math.inf
        self.send_for = send_for
        self.end_send = self.t0 + send_for
        self.planned_end = self.end_send
        self._tick()
        await self._wait_finished(self.end_send + cfg.timeout + DRAIN_GRACE)

    def _tick(self) -> None:
        """Hand every arrival due by now (+EARLY) to the engine; sleep until the next one."""
        self.timer = None
        self.next_due = math.inf  # while dispatching (no ride-along from inside a send)
        now = clock()
        horizon = now + EARLY
        t0, at, limit, send_for = self.t0, self.at, self.limit, self.send_for
        bounded = self.cfg.duration is not None
        lag, pick, rng, launch = self.send_lag.append, self.mix.pick, self.rng, self.launch
        sent_at = self.rec.sent_at.append
        n = 0
        while self.k < limit:
            offset = at(self.k)
            intended = t0 + offset
            if bounded and offset >= send_for:
                self._end_sending()
                return
            if now - intended > self.timeout:
                # so late it would time out on the spot: the generator fell behind; skipping
                # such arrivals (counted as unsent) lets it catch up with the schedule
                self.k += 1
                self.skipped += 1
                continue
            if intended > horizon:
                # at least 1 ms: uvloop truncates timers to whole milliseconds, and a 0 ms
                # timer would spin; waking 1 ms on is still before ``intended``
                self.timer = self.loop.call_later(max(intended - EARLY - now, 0.001), self._tick)
                self.next_due = intended
                return
            if n >= MAX_PER_TICK:
                self.timer = self.loop.call_later(0, self._tick)
                return
            lag(now - intended if now > intended else 0.0)
            sent_at(now - t0)
            self.k += 1
            n += 1
            launch(pick(rng), intended if intended < now else now, -1)
            now = clock()
        self._end_sending()

    def _end_sending(self) -> None:
        """Count what was due but never handed over, then let the drain finish the run."""
        self.unsent = self.skipped + self._remaining()
        if self.unsent:
            # spread over the scenarios in the mix's proportions, as they would have been picked
            weights = np.diff([0.0, *self.mix.cum])
            split = np.random.default_rng(self.cfg.seed).multinomial(
                self.unsent, weights / weights.sum()
            )
            now = clock()
            for index, count in enumerate(split.tolist()):
                if count:
                    self.rec.error_many(
                        index, "unsent", now, count, "due, but the generator never sent it"
                    )
        self.sending = False
        if self.rec.in_flight == 0 and not self.finished.done():
            self.finished.set_result(None)

    def _remaining(self) -> int:
        """Arrivals of the schedule not yet reached when the send phase ended."""
        if self.limit != math.inf:
            return int(self.limit) - self.k
        cfg = self.cfg
        send_for = self.send_for
        if cfg.arrival == "constant":
            total = self.k
            step = 65536
            while True:
                offs = arrival_offsets(total, total + step, float(cfg.rate or 1), cfg.ramp_up)
                inside = int(np.searchsorted(offs, send_for))
                total += inside
                if inside < step:
                    return total - self.k
        n = 0
        while self.at(self.k + n) < send_for:
            n += 1
        return n

    def due_per_second(self) -> list[int]:
        """Arrivals the schedule offered per second (sent or not): the line to compare sent with."""
        total = self.k + self.unsent - self.skipped
        if not total or self.cfg.model != "open":
            return []
        if self.cfg.arrival == "constant":
            offs = arrival_offsets(0, total, float(self.cfg.rate or 1), self.cfg.ramp_up)
        else:
            offs = np.asarray(self.offsets[:total])
        return np.bincount(offs.astype(np.int64)).astype(int).tolist()

    async def _wait_finished(self, deadline: float) -> None:
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(max(deadline - clock(), 0.0) + 0.001):
                await asyncio.shield(self.finished)
        self.stop()

    def stop(self) -> None:
        """End the run now: what is still in flight is counted as ``cancelled``."""
        self.sending = False
        self.next_due = math.inf
        if self.timer is not None:
            self.timer.cancel()
            self.timer = None
        self.end = min(self.end, clock())
        for ex in list(self.engine.deadlines):
            if ex.state != DONE:
                self.engine.expire(ex, "cancelled", "still running when the run ended")

    # ---- closed model -------------------------------------------------------------------------
    async def run_closed(self) -> None:
        cfg = self.cfg
        assert cfg.users is not None
        if cfg.duration is not None:
            self.end = self.t0 + cfg.ramp_up + cfg.duration
        self.planned_end = self.end if self.end != math.inf else self.t0
        self.tickets = cfg.requests if cfg.requests is not None else math.inf
        self.active_users = cfg.users
        for u in range(cfg.users):
            delay = cfg.ramp_up * u / cfg.users
            if delay > 0:
                self.loop.call_later(delay, self._user_next, u)
            else:
                self.loop.call_soon(self._user_next, u)
        deadline = self.end if self.end != math.inf else self.t0 + cfg.hard_deadline
        await self._wait_finished(deadline + cfg.timeout + DRAIN_GRACE)

    def _user_next(self, user: int) -> None:
        now = clock()
        if now >= self.end or self.tickets <= 0:
            self.active_users -= 1
            if self.active_users == 0:
                self.sending = False
                if self.rec.in_flight == 0 and not self.finished.done():
                    self.finished.set_result(None)
            return
        self.tickets -= 1
        self.sent += 1
        self.rec.sent_at.append(now - self.t0)
        self.launch(self.mix.pick(self.rng), now, user)

    # ---- progress -----------------------------------------------------------------------------
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
        total_err = sum(len(s.err_kind) for s in self.rec.series)
        total_ok = sum(s.ok for s in self.rec.series)

        def ms(v: float | None) -> str:
            return "-" if v is None else f"{v:.1f}ms"

        lag = ""
        if self.cfg.model == "open" and len(self.send_lag):
            recent = np.frombuffer(self.send_lag, dtype=np.float32)[-1000:]
            lag = f" | send lag p99 {float(np.percentile(recent, 99)) * 1000:.1f}ms"
        return (
            f"[{elapsed:5.1f}s] done {total_ok} err {total_err} | second {window + 1}: "
            f"{w['ok']} ok {w['errors']} err p50 {ms(w['p50'])} p99 {ms(w['p99'])}"
            f" max {ms(w['max'])} | in-flight {self.rec.in_flight}{lag}"
        )

    # ---- results ------------------------------------------------------------------------------
    def generator_health(self, elapsed: float, cpu_s: float) -> dict[str, Any]:
        lag = np.frombuffer(self.send_lag, dtype=np.float32).astype(np.float64) * 1e6
        wait = np.frombuffer(self.conn_wait, dtype=np.float32).astype(np.float64) * 1e6
        due = self.k + self.unsent - self.skipped
        sent = len(self.send_lag) if self.cfg.model == "open" else self.sent
        return {
            "model": self.cfg.model,
            "offered_rate": self.cfg.rate,
            "due": due if self.cfg.model == "open" else None,
            "sent": sent,
            "unsent": self.unsent,
            # over the send phase (open model): comparable with the offered rate
            "sent_rate": round(sent / (self.send_for if self.send_for > 0 else elapsed), 3),
            "send_lag_ms": (
                {
                    "p50": percentile(lag, 50),
                    "p90": percentile(lag, 90),
                    "p99": percentile(lag, 99),
                    "max": round(float(lag.max()) / 1000, 3),
                }
                if len(lag)
                else None
            ),
            "max_send_lag_ms": round(self.cfg.max_send_lag * 1000, 3),
            "connection_wait": {
                "requests": int(len(wait)),
                "p99_ms": percentile(wait, 99),
                "max_ms": round(float(wait.max()) / 1000, 3) if len(wait) else None,
            },
            "http_requests": self.http_requests,
            "cpu_s": round(cpu_s, 4),
            "cpu_us_per_request": (
                round(cpu_s * 1e6 / self.http_requests, 2) if self.http_requests else None
            ),
        }

    def validity(self, gen: dict[str, Any]) -> list[str]:
        """Why the run's latencies cannot be trusted (empty when they can)."""
        reasons = []
        lag = gen.get("send_lag_ms")
        limit = gen["max_send_lag_ms"]
        if lag and lag["p99"] is not None and lag["p99"] > limit:
            reasons.append(
                f"the load generator fell behind its schedule: send lag p99 "
                f"{lag['p99']:,.1f} ms > {limit:g} ms allowed (--max-send-lag); "
                f"offered {gen['offered_rate']:g}/s, sent {gen['sent_rate']:,.1f}/s. Its own "
                "lateness is inside the latency figures: lower --rate, give the generator a "
                "CPU of its own, or raise --max-send-lag knowingly"
            )
        if self.unsent:
            reasons.append(
                f"{self.unsent:,} arrivals were due but never sent: the generator could not "
                "produce the offered load"
            )
        return reasons

    def metric(self, scope: str | None, name: str, elapsed: float) -> float | None:
        """One figure for a threshold: latency in ms, error rate as a fraction, or req/s."""
        series = (
            self.rec.series
            if scope is None
            else [s for n, s in zip(self.rec.names, self.rec.series, strict=True) if n == scope]
        )
        ok = sum(s.ok for s in series)
        errors = sum(len(s.err_kind) for s in series)
        if name == "errors":
            return errors / (ok + errors) if ok + errors else None
        if name == "rps":
            return ok / elapsed if elapsed > 0 else None
        parts = [np.frombuffer(s.lat, dtype=np.uint32) for s in series if len(s.lat)]
        if not parts:
            return None
        values = np.concatenate(parts)
        if name == "mean":
            return round(float(values.mean()) / 1000, 3)
        if name == "min":
            return round(float(values.min()) / 1000, 3)
        if name == "max":
            return round(float(values.max()) / 1000, 3)
        return percentile(values, float(name[1:]))

    def results(self, extra: dict[str, Any], cpu_s: float) -> dict[str, Any]:
        # to the last completion, or the planned end if later (but not past an interrupt)
        end = max(self.rec.last_completion, min(self.planned_end, clock()))
        elapsed = max(end - self.t0, 1e-9)
        self.rec.due = self.due_per_second()
        out: dict[str, Any] = {"tool": "marquee-loadtest", "format": 2, **extra}
        out.update(self.rec.summary(elapsed))
        gen = self.generator_health(elapsed, cpu_s)
        out["generator"] = gen
        reasons = self.validity(gen)
        out["valid"] = not reasons
        out["invalid_reasons"] = reasons
        parsed = [thresholds_module.parse(t) for t in self.cfg.thresholds]
        out["thresholds"] = thresholds_module.evaluate(
            parsed, lambda scope, name: self.metric(scope, name, elapsed)
        )
        return out


def _cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def bases_in_use(cfg: RunConfig) -> list[str]:
    """The base URLs the mix sends load to (the catalog is only read at start, with a fallback)."""
    bases = []
    if any(name not in REC_SCENARIOS for name in cfg.mix):
        bases.append(cfg.web_base)
    if any(name in REC_SCENARIOS for name in cfg.mix):
        bases.append(cfg.recommender_base)
    return list(dict.fromkeys(bases))


async def check_reachable(cfg: RunConfig) -> None:
    """Probe each base URL once (a TCP, or TLS, connect); raise at the first that fails."""
    for base in bases_in_use(cfg):
        why = await probe(base, min(cfg.timeout, 3.0))
        if why is not None:
            raise TargetUnreachable(f"cannot reach {base}: {why}; is the server running?")


def scenario_functions(cfg: RunConfig, replay: ReplayUsers | None = None) -> dict[str, Scenario]:
    if replay is not None:
        return {REPLAY: replay}
    if cfg.paths is not None:
        return {REPLAY: Replay(read_targets(cfg.paths))}
    return dict(REGISTRY)


def replayed_users(cfg: RunConfig) -> tuple[RunConfig, ReplayUsers | None]:
    """``--holdout``: the users to replay (seeded), and a config that starts one visit each."""
    if cfg.holdout is None:
        return cfg, None
    users = select_users(read_holdout(cfg.holdout), cfg.replay_users, cfg.seed or 0)
    visits = len(users) if cfg.requests is None else min(cfg.requests, len(users))
    return dataclasses.replace(cfg, requests=visits), ReplayUsers(users, cfg.pages_per_user)


def pause_full_collections() -> tuple[int, int, int]:
    """No full collection of the cyclic GC during the run (young ones go on): a pause of the
    generator counts as the server's latency (requests are timed from when they were due), and
    full collections over the generator's heap (modules, workload, the run's schedule) paused it
    for 10-30 ms a few times a run at 10,000 req/s, visible as the server's p99."""
    gc.freeze()  # what exists now is not scanned during the run (no collect first: in a big
    # process, such as a test run calling ``run_load``, one takes 100-200 ms)
    thresholds = gc.get_threshold()
    young, middle, _ = thresholds
    gc.set_threshold(young, middle, FULL_COLLECTIONS_OFF)
    return thresholds


def resume_full_collections(thresholds: tuple[int, int, int]) -> None:
    """Back to the collector's ``thresholds`` from before the run, the heap unfrozen."""
    gc.set_threshold(*thresholds)
    gc.unfreeze()


FULL_COLLECTIONS_OFF = 1 << 30  # middle-generation collections before a full one


async def run_load(
    cfg: RunConfig,
    *,
    progress: TextIO | None = None,
    warn: Callable[[str], None] | None = None,
    workload: Workload | None = None,
    handle_sigint: bool = False,
) -> dict[str, Any]:
    """Run the load described by ``cfg`` and return the results payload (JSON-ready).

    Raises ``TargetUnreachable`` before sending anything when a base URL refuses connections.
    """
    warn = warn or (lambda msg: print(f"loadtest: warning: {msg}", file=sys.stderr))
    loop = asyncio.get_running_loop()
    warnings: list[str] = []
    started = datetime.now(UTC).isoformat(timespec="seconds")
    await check_reachable(cfg)
    cfg, replay = await asyncio.to_thread(replayed_users, cfg)
    before = (
        await asyncio.to_thread(baseline, cfg.recommender_base, cfg.admin_token)
        if replay is not None
        else {}
    )
    funcs = scenario_functions(cfg, replay)
    if workload is None:
        if cfg.paths is not None or replay is not None:
            workload = build_workload(
                [Movie(1, "", (), 1)],
                popularity="counts",
                zipf_s=1.0,
                user_ids=(1, 1),
                source="none (replaying --paths)" if replay is None else "none (held-out users)",
            )
        else:
            workload, warning = await asyncio.to_thread(
                load_workload,
                catalog_base=cfg.catalog_base,
                limit=cfg.movies,
                popularity=cfg.popularity,
                zipf_s=cfg.zipf_s,
                user_ids=cfg.user_ids,
                data_dir=cfg.data_dir,
                timeout=min(cfg.timeout, 3.0),
                recommender_base=cfg.recommender_base if "similar" in cfg.mix else None,
            )
            if warning:
                warnings.append(warning)
                warn(warning)
    assert workload is not None
    engine = Engine(loop, limit=cfg.connections, timeout=cfg.timeout, user_agent=USER_AGENT)
    pools = {WEB: engine.origin(cfg.web_base), REC: engine.origin(cfg.recommender_base)}
    run = Run(cfg, engine, pools, Mix(cfg.mix, funcs), workload, loop)
    ticker = None
    tty = bool(getattr(progress, "isatty", lambda: False)())
    if progress is not None:
        ticker = loop.create_task(run.progress(progress, tty))
    cpu0 = _cpu_seconds()
    body = loop.create_task(run.run_open() if cfg.model == "open" else run.run_closed())
    if handle_sigint:
        loop.add_signal_handler(signal.SIGINT, body.cancel)
    thresholds = pause_full_collections()
    try:
        async with asyncio.timeout(cfg.hard_deadline):
            await body
    except TimeoutError:
        run.stop()
        warnings.append(f"hard deadline of {cfg.hard_deadline:.0f}s reached; run cut short")
        warn(warnings[-1])
    except asyncio.CancelledError:
        task = asyncio.current_task()
        if task is not None and task.cancelling():
            run.stop()
            engine.close()
            raise  # we ourselves are being cancelled: not an interrupt
        run.stop()
        warnings.append("interrupted (Ctrl-C); results cover the run so far")
        warn(warnings[-1])
    finally:
        cpu_s = _cpu_seconds() - cpu0
        resume_full_collections(thresholds)
        if handle_sigint:
            loop.remove_signal_handler(signal.SIGINT)
        engine.close()
        if ticker is not None and progress is not None:
            ticker.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await ticker
            run.print_progress(progress, tty, final=True)
    results = run.results(
        {
            "started_at": started,
            "config": cfg.to_json(),
            "workload": workload.describe(),
            "warnings": warnings,
        },
        cpu_s,
    )
    if replay is not None:
        assert cfg.holdout is not None
        results["replay"] = await asyncio.to_thread(
            replay_report,
            replay,
            holdout=cfg.holdout,
            base=cfg.recommender_base,
            token=cfg.admin_token,
            model_dir=cfg.model_dir,
            wait=cfg.report_wait,
            before=before,
        )
    return results
