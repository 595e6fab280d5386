"""Latency recording: HDR histograms per scenario, per-second windows, errors by kind.

Whole-run percentiles come from HDR histograms (microsecond resolution, 3 significant digits,
so p99.9 and max are exact to 0.1 %, not averaged away). Per-second windows keep the raw
microsecond samples of that second and compute exact percentiles from them; a window holds
at most one second of traffic, so that stays small.

Only successful responses (2xx/3xx) go into latency histograms; every failure is counted by
kind (``http_503``, ``timeout``, ``connection``, ``unsent``...) so a fast error page can never
make the latency look better.
"""

from __future__ import annotations

from array import array
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from hdrh.histogram import HdrHistogram

LOWEST_US = 1
HIGHEST_US = 24 * 3600 * 1_000_000  # a day: latency from intended time can exceed the timeout
SIG_FIGS = 3
PERCENTILES = (50.0, 90.0, 99.0, 99.9)


def new_histogram() -> HdrHistogram:
    return HdrHistogram(LOWEST_US, HIGHEST_US, SIG_FIGS)


@dataclass
class Window:
    """One second of completions (by completion time)."""

    latencies_us: array = field(default_factory=lambda: array("q"))
    errors: Counter = field(default_factory=Counter)
    sent: int = 0  # scenarios started in this second (the offered load, next to completions)


@dataclass
class ScenarioStats:
    histogram: HdrHistogram = field(default_factory=new_histogram)
    ok: int = 0
    errors: Counter = field(default_factory=Counter)


class Recorder:
    """Collects outcomes; cheap per call (one histogram insert, one array append)."""

    def __init__(self, t0: float) -> None:
        self.t0 = t0
        self.scenarios: dict[str, ScenarioStats] = {}
        self.windows: dict[int, Window] = {}
        self.in_flight = 0
        self.last_completion = t0

    def _scenario(self, name: str) -> ScenarioStats:
        stats = self.scenarios.get(name)
        if stats is None:
            stats = self.scenarios[name] = ScenarioStats()
        return stats

    def _window(self, now: float) -> Window:
        idx = int(now - self.t0) if now > self.t0 else 0
        win = self.windows.get(idx)
        if win is None:
            win = self.windows[idx] = Window()
        return win

    def started(self, now: float) -> None:
        self._window(now).sent += 1

    def ok(self, name: str, latency: float, now: float) -> None:
        us = max(int(latency * 1_000_000), LOWEST_US)
        stats = self._scenario(name)
        stats.histogram.record_value(min(us, HIGHEST_US))
        stats.ok += 1
        self._window(now).latencies_us.append(us)
        if now > self.last_completion:
            self.last_completion = now

    def error(self, name: str, kind: str, now: float) -> None:
        self._scenario(name).errors[kind] += 1
        self._window(now).errors[kind] += 1
        if now > self.last_completion:
            self.last_completion = now

    def window_summary(self, idx: int) -> dict[str, Any]:
        win = self.windows.get(idx) or Window()
        return summarise_window(idx, win)

    def summary(self, elapsed: float) -> dict[str, Any]:
        """The results payload: totals, per scenario, windows, percentile curve, HDR blobs."""
        total = new_histogram()
        total_errors: Counter = Counter()
        scenarios = {}
        for name in sorted(self.scenarios):
            stats = self.scenarios[name]
            total.add(stats.histogram)
            total_errors.update(stats.errors)
            scenarios[name] = summarise(stats.histogram, stats.errors, elapsed)
        last = max(self.windows) if self.windows else -1
        return {
            "elapsed_s": round(elapsed, 3),
            "total": summarise(total, total_errors, elapsed),
            "scenarios": scenarios,
            "windows": [self.window_summary(i) for i in range(last + 1)],
            "percentile_curve": percentile_curve(total),
            "hdr": {
                "total": total.encode().decode("ascii"),
                **{n: s.histogram.encode().decode("ascii") for n, s in self.scenarios.items()},
            },
        }


def _ms(us: float) -> float:
    return round(us / 1000.0, 3)


def summarise(hist: HdrHistogram, errors: Counter, elapsed: float) -> dict[str, Any]:
    ok = hist.get_total_count()
    n_err = sum(errors.values())
    count = ok + n_err
    latency = None
    if ok:
        latency = {
            "min": _ms(hist.get_min_value()),
            "mean": _ms(hist.get_mean_value()),
            **{_pname(p): _ms(hist.get_value_at_percentile(p)) for p in PERCENTILES},
            "max": _ms(hist.get_max_value()),
        }
    return {
        "count": count,
        "ok": ok,
        "errors": dict(sorted(errors.items())),
        "error_count": n_err,
        "error_rate": round(n_err / count, 6) if count else 0.0,
        "throughput_rps": round(ok / elapsed, 3) if elapsed > 0 else 0.0,
        "latency_ms": latency,
    }


def _pname(p: float) -> str:
    return "p" + (f"{p:g}".replace(".", "_"))


def summarise_window(idx: int, win: Window) -> dict[str, Any]:
    n = len(win.latencies_us)
    out: dict[str, Any] = {"t": idx, "sent": win.sent, "ok": n, "errors": sum(win.errors.values())}
    if n:
        values = np.frombuffer(win.latencies_us, dtype=np.int64)
        p50, p90, p99 = np.percentile(values, [50, 90, 99], method="inverted_cdf")
        out.update(p50=_ms(p50), p90=_ms(p90), p99=_ms(p99), max=_ms(values.max()))
    else:
        out.update(p50=None, p90=None, p99=None, max=None)
    if win.errors:
        out["error_kinds"] = dict(win.errors)
    return out


def percentile_curve(hist: HdrHistogram, points: int = 48) -> list[list[float]]:
    """``[percentile, latency_ms]`` pairs spaced evenly in log(1 / (1 - p)), HDR-plot style."""
    n = hist.get_total_count()
    if not n:
        return []
    top = min(max(np.log10(n), 1.0), 5.0)  # no point resolving beyond 1 / count
    curve = []
    for x in np.linspace(0.0, top, points):
        p = 100.0 * (1.0 - 10.0 ** (-x))
        curve.append([round(float(p), 5), _ms(hist.get_value_at_percentile(p))])
    curve.append([100.0, _ms(hist.get_max_value())])
    return curve
