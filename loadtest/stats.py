"""Recording outcomes and summarising them: exact percentiles, windows, errors with details.

Every latency is kept (4 bytes, microseconds, plus 4 bytes of completion time): recording costs
two array appends, and every percentile is exact rather than bucketed. About 8 bytes per
request: a 10-minute run at 3,000 req/s holds 15 MB. At the end the samples also become HDR
histograms (for merging with other tools), per-second windows, and the time-block histograms
that ``--compare`` bootstraps its intervals from (``loadtest.spread``).

What counts in the latency figures: every successful response (status < 400) and every
timed-out request, at its full wait (a timeout is a latency of at least ``--timeout``, not a
missing sample). Other failures (HTTP errors, refused or dropped connections) are counted by
kind and kept out, so a fast error page never makes the latency look better.
"""

from __future__ import annotations

import bisect
from array import array
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from hdrh.histogram import HdrHistogram

from loadtest import spread

HIGHEST_US = 2**32 - 1  # what an unsigned 32-bit sample holds: 71 minutes
SIG_FIGS = 3
PERCENTILES = (50.0, 90.0, 99.0, 99.9)
MAX_SAMPLES_PER_ERROR = 5


def pname(p: float) -> str:
    """``99.9`` -> ``p99_9`` (the JSON key of a percentile)."""
    return "p" + f"{p:g}".replace(".", "_")


@dataclass
class ErrorGroup:
    """Failures of one kind at one endpoint, with a few example URLs and messages."""

    scenario: str
    kind: str
    method: str
    template: str
    status: int | None
    count: int = 0
    samples: list[dict[str, str]] = field(default_factory=list)

    def to_json(self) -> dict[str, Any]:
        return {
            "scenario": self.scenario,
            "kind": self.kind,
            "method": self.method,
            "template": self.template,
            "status": self.status,
            "count": self.count,
            "samples": self.samples,
        }


class Series:
    """One scenario's outcomes, in completion order (so each time array is sorted)."""

    __slots__ = ("lat", "at", "ok", "timeouts", "err_at", "err_kind")

    def __init__(self) -> None:
        self.lat = array("I")  # µs, successes and timeouts
        self.at = array("f")  # completion, seconds since t0
        self.ok = 0
        self.timeouts = 0
        self.err_at = array("f")
        self.err_kind: list[str] = []


class Recorder:
    """Collects outcomes; the hot path is ``ok`` (two appends and a counter)."""

    def __init__(self, t0: float, names: list[str]) -> None:
        self.t0 = t0
        self.names = names
        self.series = [Series() for _ in names]
        self.groups: dict[tuple[int, str, str, str, int | None], ErrorGroup] = {}
        self.sent_at = array("f")  # when each scenario started (seconds since t0)
        self.due: list[int] = []  # open model: arrivals due per second (the offered load)
        self.in_flight = 0
        self.last_completion = t0

    def ok(self, i: int, latency: float, now: float) -> None:
        s = self.series[i]
        us = int(latency * 1_000_000) or 1
        s.lat.append(us if us < HIGHEST_US else HIGHEST_US)
        s.at.append(now - self.t0)
        s.ok += 1
        self.last_completion = now

    def error(
        self,
        i: int,
        kind: str,
        now: float,
        *,
        method: str = "",
        template: str = "",
        status: int | None = None,
        url: str = "",
        message: str = "",
        waited: float | None = None,
    ) -> None:
        """A failure; a timeout also enters the latency samples at its full wait."""
        s = self.series[i]
        at = now - self.t0
        s.err_at.append(at)
        s.err_kind.append(kind)
        if kind == "timeout" and waited is not None:
            s.lat.append(min(int(waited * 1e6) or 1, HIGHEST_US))
            s.at.append(at)
            s.timeouts += 1
        if now > self.last_completion:
            self.last_completion = now
        key = (i, kind, method, template, status)
        group = self.groups.get(key)
        if group is None:
            group = self.groups[key] = ErrorGroup(self.names[i], kind, method, template, status)
        group.count += 1
        sample = {"url": url, "message": message[:300]}
        if len(group.samples) < MAX_SAMPLES_PER_ERROR and sample not in group.samples:
            group.samples.append(sample)

    def error_many(self, i: int, kind: str, now: float, count: int, message: str) -> None:
        """``count`` failures of one kind at once (arrivals that were never sent)."""
        s = self.series[i]
        s.err_at.extend(array("f", [now - self.t0]) * count)
        s.err_kind.extend([kind] * count)
        key = (i, kind, "", "", None)
        group = self.groups.get(key)
        if group is None:
            group = self.groups[key] = ErrorGroup(self.names[i], kind, "", "", None)
            group.samples.append({"url": "", "message": message})
        group.count += count

    # ---- live figures (progress line) -----------------------------------------------------
    def window_summary(self, idx: int) -> dict[str, Any]:
        """One second's completions, found by bisecting each scenario's sorted time array."""
        parts, errors, timeouts = [], 0, 0
        for s in self.series:
            lo, hi = bisect.bisect_left(s.at, idx), bisect.bisect_left(s.at, idx + 1)
            if hi > lo:
                parts.append(np.frombuffer(s.lat, dtype=np.uint32)[lo:hi])
            elo, ehi = bisect.bisect_left(s.err_at, idx), bisect.bisect_left(s.err_at, idx + 1)
            errors += ehi - elo
            timeouts += s.err_kind[elo:ehi].count("timeout")
        values = np.concatenate(parts) if parts else np.empty(0, np.uint32)
        out: dict[str, Any] = {"t": idx, "ok": len(values) - timeouts, "errors": errors}
        out.update(_window_percentiles(values))
        return out

    # ---- the end-of-run payload -------------------------------------------------------------
    def summary(self, elapsed: float) -> dict[str, Any]:
        """Totals, per scenario, error details, windows, percentile curve, HDR and spread data."""
        scenarios: dict[str, Any] = {}
        all_lat, all_at = [], []
        total_errors: Counter = Counter()
        total_ok = total_timeouts = 0
        for name, s in zip(self.names, self.series, strict=True):
            if not s.ok and not s.err_kind:
                continue
            lat = np.frombuffer(s.lat, dtype=np.uint32)
            errors = Counter(s.err_kind)
            scenarios[name] = summarise(lat, s.ok, s.timeouts, errors, elapsed)
            all_lat.append(lat)
            all_at.append(np.frombuffer(s.at, dtype=np.float32))
            total_errors.update(errors)
            total_ok += s.ok
            total_timeouts += s.timeouts
        lat = np.concatenate(all_lat) if all_lat else np.empty(0, np.uint32)
        at = np.concatenate(all_at) if all_at else np.empty(0, np.float32)
        groups = sorted(self.groups.values(), key=lambda g: (-g.count, g.scenario, g.kind))
        return {
            "elapsed_s": round(elapsed, 3),
            "total": summarise(lat, total_ok, total_timeouts, total_errors, elapsed),
            "scenarios": dict(sorted(scenarios.items())),
            "error_details": [g.to_json() for g in groups],
            "windows": self._windows(lat, at),
            "percentile_curve": percentile_curve(lat),
            "hdr": {
                "total": encode_hdr(lat),
                **{
                    n: encode_hdr(np.frombuffer(s.lat, dtype=np.uint32))
                    for n, s in zip(self.names, self.series, strict=True)
                    if len(s.lat)
                },
            },
            "spread": spread.encode(self._spread_input(), elapsed),
        }

    def _spread_input(self) -> dict[str, spread.Samples]:
        out = {}
        for name, s in zip(self.names, self.series, strict=True):
            if s.ok or s.err_kind:
                out[name] = spread.Samples(
                    lat_us=np.frombuffer(s.lat, dtype=np.uint32),
                    lat_at=np.frombuffer(s.at, dtype=np.float32),
                    err_at=np.frombuffer(s.err_at, dtype=np.float32),
                    ok=s.ok,
                    timeouts=s.timeouts,
                )
        return out

    def _windows(self, lat: np.ndarray, at: np.ndarray) -> list[dict[str, Any]]:
        err_at = [np.frombuffer(s.err_at, dtype=np.float32) for s in self.series]
        errs = np.concatenate(err_at) if err_at else np.empty(0, np.float32)
        sent = np.frombuffer(self.sent_at, dtype=np.float32)
        last = max([int(x.max()) for x in (at, errs, sent) if len(x)] + [len(self.due) - 1, -1])
        if last < 0:
            return []
        n = last + 1
        sec = at.astype(np.int64)
        order = np.argsort(sec, kind="stable")
        bounds = np.searchsorted(sec[order], np.arange(n + 1))
        lat_sorted = lat[order]
        err_counts = np.bincount(errs.astype(np.int64), minlength=n)
        sent_counts = np.bincount(sent.astype(np.int64), minlength=n)
        kinds: list[Counter] = [Counter() for _ in range(n)]
        for s in self.series:
            for t, kind in zip(s.err_at, s.err_kind, strict=True):
                kinds[int(t)][kind] += 1
        out = []
        for idx in range(n):
            values = lat_sorted[bounds[idx] : bounds[idx + 1]]
            w: dict[str, Any] = {
                "t": idx,
                "due": self.due[idx] if idx < len(self.due) else None,
                "sent": int(sent_counts[idx]),
                "ok": int(len(values)) - kinds[idx].get("timeout", 0),
                "errors": int(err_counts[idx]),
            }
            w.update(_window_percentiles(values))
            if kinds[idx]:
                w["error_kinds"] = dict(kinds[idx])
            out.append(w)
        return out


def _ms(us: float) -> float:
    return round(float(us) / 1000.0, 3)


def _window_percentiles(values: np.ndarray) -> dict[str, float | None]:
    if not len(values):
        return {"p50": None, "p90": None, "p99": None, "max": None}
    p50, p90, p99 = np.percentile(values, [50, 90, 99], method="inverted_cdf")
    return {"p50": _ms(p50), "p90": _ms(p90), "p99": _ms(p99), "max": _ms(values.max())}


def latency_figures(values: np.ndarray) -> dict[str, float] | None:
    """min, mean, p50, p90, p99, p99.9, max in ms (None without samples)."""
    if not len(values):
        return None
    ps = np.percentile(values, PERCENTILES, method="inverted_cdf")
    return {
        "min": _ms(values.min()),
        "mean": _ms(values.mean()),
        **{pname(p): _ms(v) for p, v in zip(PERCENTILES, ps, strict=True)},
        "max": _ms(values.max()),
    }


def summarise(
    lat: np.ndarray, ok: int, timeouts: int, errors: Counter, elapsed: float
) -> dict[str, Any]:
    n_err = sum(errors.values())
    count = ok + n_err
    return {
        "count": count,
        "ok": ok,
        "errors": dict(sorted(errors.items())),
        "error_count": n_err,
        "error_rate": round(n_err / count, 6) if count else 0.0,
        "timeouts": timeouts,
        "throughput_rps": round(ok / elapsed, 3) if elapsed > 0 else 0.0,
        "latency_ms": latency_figures(lat),
        "latency_samples": int(len(lat)),
    }


def percentile(values: np.ndarray, p: float) -> float | None:
    """One exact percentile in ms (None without samples)."""
    if not len(values):
        return None
    return _ms(np.percentile(values, p, method="inverted_cdf"))


def percentile_curve(values: np.ndarray, points: int = 48) -> list[list[float]]:
    """``[percentile, latency_ms]`` pairs spaced evenly in log(1 / (1 - p)), HDR-plot style."""
    n = len(values)
    if not n:
        return []
    top = min(max(np.log10(n), 1.0), 5.0)  # no point resolving beyond 1 / count
    ps = 100.0 * (1.0 - 10.0 ** (-np.linspace(0.0, top, points)))
    vs = np.percentile(values, ps, method="inverted_cdf")
    curve = [[round(float(p), 5), _ms(v)] for p, v in zip(ps, vs, strict=True)]
    curve.append([100.0, _ms(values.max())])
    return curve


def encode_hdr(values: np.ndarray) -> str:
    """The samples as a base64 HdrHistogram (3 significant digits), loadable with ``hdrh``.

    Values are first rounded to the histogram's own precision so that only a few thousand
    distinct values are recorded, however long the run.
    """
    hist = HdrHistogram(1, HIGHEST_US, SIG_FIGS)
    if len(values):
        v = values.astype(np.int64)
        shift = np.maximum(np.floor(np.log2(np.maximum(v, 1))).astype(np.int64) - 10, 0)
        v = (v >> shift) << shift
        uniq, counts = np.unique(v, return_counts=True)
        for value, c in zip(uniq.tolist(), counts.tolist(), strict=True):
            hist.record_value(max(value, 1), c)
    return hist.encode().decode("ascii")
