"""Run-to-run spread: block-bootstrap intervals, so ``--compare`` colours only real changes.

A single run's p99 is one draw: run the same load again and it moves. How far it moves is
estimated from the run itself. The run is cut into time blocks (20 to 60 of them, at least one
second long once the run is 20 s or longer); resampling whole blocks with replacement keeps the
bursts and stalls that make neighbouring latencies alike, which an i.i.d. resample of single
requests would break apart (and so claim far too much certainty). Each block keeps a histogram
on 1 %-wide logarithmic buckets, so the JSON stays small; the headline figures themselves are
exact, the buckets are only for the intervals.

The interval of a change is the 2.5-97.5 % range of ``new_b / old_b - 1`` over paired
resamples of both runs. A change is "significant" when that interval excludes zero. The max
is one sample and has no interval: it is never coloured.
"""

from __future__ import annotations

import base64
import math
import zlib
from dataclasses import dataclass
from typing import Any

import numpy as np

BUCKET_RATIO = 1.01
MIN_BLOCKS, MAX_BLOCKS = 20, 60
RESAMPLES = 400
SEED = 20240601
_LOG_RATIO = math.log(BUCKET_RATIO)


@dataclass(frozen=True)
class Samples:
    """One scenario's raw outcomes, as the recorder holds them."""

    lat_us: np.ndarray  # successes and timeouts
    lat_at: np.ndarray  # completion times (s since start)
    err_at: np.ndarray
    ok: int
    timeouts: int


def block_layout(elapsed: float) -> tuple[int, float]:
    """How many blocks, and how long each is."""
    n = int(min(max(round(elapsed), MIN_BLOCKS), MAX_BLOCKS))
    return n, max(elapsed, 1e-6) / n


def _b64(a: np.ndarray) -> str:
    return base64.b64encode(zlib.compress(a.astype("<i4").tobytes(), 6)).decode("ascii")


def _unb64(text: str) -> np.ndarray:
    return np.frombuffer(zlib.decompress(base64.b64decode(text)), dtype="<i4")


def _block_of(at: np.ndarray, block_s: float, n: int) -> np.ndarray:
    return np.minimum((at.astype(np.float64) / block_s).astype(np.int64), n - 1)


def _encode_one(
    lat: np.ndarray, lat_at: np.ndarray, err_at: np.ndarray, block_s: float, n: int
) -> dict[str, Any]:
    blocks = _block_of(lat_at, block_s, n)
    buckets = np.floor(np.log(np.maximum(lat.astype(np.float64), 1.0)) / _LOG_RATIO)
    buckets = buckets.astype(np.int64)
    key = blocks * 100_000 + buckets
    uniq, counts = np.unique(key, return_counts=True)
    triples = np.stack([uniq // 100_000, uniq % 100_000, counts], axis=1).ravel()
    errors = np.bincount(_block_of(err_at, block_s, n), minlength=n)
    return {"lat": _b64(triples), "errors": errors.astype(int).tolist()}


def encode(samples: dict[str, Samples], elapsed: float) -> dict[str, Any]:
    """Per scenario and in total: block histograms of latency and errors per block."""
    n, block_s = block_layout(elapsed)
    out: dict[str, Any] = {
        "blocks": n,
        "block_s": round(block_s, 6),
        "bucket_ratio": BUCKET_RATIO,
        "scenarios": {},
    }
    for name, s in samples.items():
        out["scenarios"][name] = _encode_one(s.lat_us, s.lat_at, s.err_at, block_s, n)
    if samples:
        cat = [
            np.concatenate([getattr(s, f) for s in samples.values()])
            for f in ("lat_us", "lat_at", "err_at")
        ]
        out["total"] = _encode_one(cat[0], cat[1], cat[2], block_s, n)
    return out


@dataclass(frozen=True)
class Blocks:
    """A decoded row: per block, a latency histogram (dense over the used buckets) and errors.

    ``lat`` counts successes and timeouts; timeouts are also errors, so requests per block are
    ``lat - timeouts + errors``; the difference is not needed for the statistics used here,
    which are percentiles (from ``lat``), error rate (errors over requests) and throughput.
    """

    values_us: np.ndarray  # bucket representative values, ascending
    lat: np.ndarray  # blocks x buckets
    errors: np.ndarray  # blocks
    elapsed: float


def decode(data: dict[str, Any], row: str, elapsed: float) -> Blocks | None:
    """One row (a scenario name or ``total``) of a results file's ``spread``; None if absent."""
    enc = data.get("total") if row == "total" else data.get("scenarios", {}).get(row)
    if not enc:
        return None
    n = int(data["blocks"])
    ratio_log = math.log(float(data.get("bucket_ratio", BUCKET_RATIO)))
    triples = _unb64(enc["lat"]).reshape(-1, 3).astype(np.int64)
    buckets = np.unique(triples[:, 1]) if len(triples) else np.empty(0, np.int64)
    lat = np.zeros((n, len(buckets)), dtype=np.float64)
    if len(triples):
        col = np.searchsorted(buckets, triples[:, 1])
        np.add.at(lat, (triples[:, 0], col), triples[:, 2])
    values = np.exp((buckets + 0.5) * ratio_log)
    errors = np.asarray(enc["errors"], dtype=np.float64)
    return Blocks(values, lat, errors, elapsed)


def _weights(n_blocks: int, rng: np.random.Generator) -> np.ndarray:
    """RESAMPLES x blocks: how often each block is drawn in each resample."""
    return rng.multinomial(n_blocks, np.full(n_blocks, 1.0 / n_blocks), size=RESAMPLES).astype(
        np.float64
    )


def _percentiles(counts: np.ndarray, values: np.ndarray, p: float) -> np.ndarray:
    """Per resample (row of bucket counts), the value at percentile ``p`` (NaN if empty)."""
    cum = np.cumsum(counts, axis=1)
    total = cum[:, -1] if cum.shape[1] else np.zeros(len(counts))
    target = np.ceil(total * p / 100.0)
    idx = (cum >= np.maximum(target, 1.0)[:, None]).argmax(axis=1) if cum.shape[1] else None
    out = np.full(len(counts), np.nan)
    if idx is not None:
        ok = total > 0
        out[ok] = values[idx[ok]]
    return out


def resample(b: Blocks, metric: str, rng: np.random.Generator) -> np.ndarray:
    """RESAMPLES bootstrap values of one metric: ``pNN`` (µs), ``error_rate``, ``throughput``."""
    w = _weights(len(b.errors), rng)
    if metric.startswith("p"):
        p = float(metric[1:].replace("_", "."))
        return _percentiles(w @ b.lat, b.values_us, p)
    lat_n = w @ b.lat.sum(axis=1)
    errors = w @ b.errors
    if metric == "error_rate":
        # requests ~ latency samples + errors (timeouts are in both; they are few)
        with np.errstate(invalid="ignore", divide="ignore"):
            return errors / np.maximum(lat_n + errors, 1.0)
    if metric == "throughput_rps":
        return (lat_n) / max(b.elapsed, 1e-9)
    raise ValueError(f"no bootstrap for {metric}")


def change_interval(new: Blocks, old: Blocks, metric: str) -> tuple[float, float] | None:
    """95 % interval of the relative change ``new / old - 1`` (None if not estimable)."""
    rng = np.random.default_rng(SEED)
    a = resample(new, metric, rng)
    b = resample(old, metric, rng)
    with np.errstate(invalid="ignore", divide="ignore"):
        # error rate: an absolute difference (rates are often zero)
        rel = a - b if metric == "error_rate" else a / b - 1.0
    rel = rel[np.isfinite(rel)]
    if len(rel) < RESAMPLES // 2:
        return None
    lo, hi = np.percentile(rel, [2.5, 97.5])
    return float(lo), float(hi)
