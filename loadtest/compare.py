"""``--compare OLD.json``: is the change real, and are the two runs comparable at all?

Two runs compare only when they offered the same load: same model, rate or users, arrival
spacing, think time, ramp-up, duration or request count, timeout and mix. Otherwise a 200/s
run "loses 50 % throughput" against a 100/s run. The CLI checks this before sending anything
and refuses (exit 2) unless ``--compare-anyway``; then the comparison is labelled as not
comparable and nothing is coloured.

A change is coloured only when it is larger than the run-to-run spread: its 95 % block-bootstrap
interval (``loadtest.spread``) excludes zero. The max is a single sample and is never coloured.
"""

from __future__ import annotations

import math
from typing import Any

from loadtest import spread

LOAD_SHAPE = (
    "model",
    "rate",
    "users",
    "arrival",
    "think_time",
    "ramp_up",
    "duration",
    "requests",
    "timeout",
    "mix",
    "paths",
)
METRICS = ("throughput_rps", "error_rate", "p50", "p90", "p99", "p99_9", "max")
HIGHER_IS_WORSE = {m: m != "throughput_rps" for m in METRICS}


def _proportions(mix: Any) -> dict[str, float]:
    if not isinstance(mix, dict) or not mix:
        return {}
    total = sum(float(v) for v in mix.values()) or 1.0
    return {k: round(float(v) / total, 6) for k, v in sorted(mix.items()) if v}


def _show(key: str, value: Any) -> str:
    if key == "mix":
        return ",".join(f"{k}={v:g}" for k, v in (value or {}).items()) or "-"
    if value is None:
        return "-"
    return f"{value:g}" if isinstance(value, float) else str(value)


def differences(new_cfg: dict[str, Any], old_cfg: dict[str, Any]) -> list[str]:
    """What differs in the offered load, as ``name old -> new`` strings (empty: comparable)."""
    out = []
    for key in LOAD_SHAPE:
        a, b = old_cfg.get(key), new_cfg.get(key)
        if key == "mix":
            same = _proportions(a) == _proportions(b)
        elif isinstance(a, int | float) and isinstance(b, int | float):
            same = math.isclose(float(a), float(b), rel_tol=1e-9)
        else:
            same = a == b
        if not same:
            out.append(f"{key} {_show(key, a)} -> {_show(key, b)}")
    return out


def _rows(results: dict[str, Any]) -> list[tuple[str, dict[str, Any]]]:
    return [*results.get("scenarios", {}).items(), ("total", results["total"])]


def _value(row: dict[str, Any], metric: str) -> float | None:
    if metric in ("throughput_rps", "error_rate"):
        return row.get(metric)
    return (row.get("latency_ms") or {}).get(metric)


def _cell(
    metric: str,
    new: float | None,
    old: float | None,
    interval: tuple[float, float] | None,
    comparable: bool,
) -> dict[str, Any]:
    pct = None
    if new is not None and old is not None and old != 0:
        pct = round((new - old) / old * 100.0, 2)
    significant = bool(comparable and interval is not None and (interval[0] > 0 or interval[1] < 0))
    verdict = None
    if significant and interval is not None:
        up = interval[0] > 0
        verdict = "worse" if up == HIGHER_IS_WORSE[metric] else "better"
    return {
        "old": old,
        "new": new,
        "pct": pct,
        # relative change (error rate: absolute difference), as a 95 % interval
        "interval": None if interval is None else [round(interval[0], 6), round(interval[1], 6)],
        "significant": significant,
        "verdict": verdict,
    }


def compare(new: dict[str, Any], old: dict[str, Any], *, forced: bool = False) -> dict[str, Any]:
    """Per scenario (present in both) and total: each metric's change and whether it is real."""
    diffs = differences(new.get("config", {}), old.get("config", {}))
    comparable = not diffs
    new_spread, old_spread = new.get("spread"), old.get("spread")
    notes = []
    if not diffs and not (new_spread and old_spread):
        notes.append("the old run has no spread data (an older format): nothing is coloured")
    old_rows = dict(_rows(old))
    rows: dict[str, Any] = {}
    for name, row in _rows(new):
        o = old_rows.get(name)
        if o is None:
            continue
        nb = ob = None
        if new_spread and old_spread:
            nb = spread.decode(new_spread, name, float(new.get("elapsed_s", 0) or 0))
            ob = spread.decode(old_spread, name, float(old.get("elapsed_s", 0) or 0))
        cells = {}
        for metric in METRICS:
            interval = None
            if nb is not None and ob is not None and metric != "max":
                interval = spread.change_interval(nb, ob, metric)
            cells[metric] = _cell(
                metric, _value(row, metric), _value(o, metric), interval, comparable
            )
        rows[name] = cells
    return {
        "old_started_at": old.get("started_at"),
        "comparable": comparable,
        "forced": forced,
        "differences": diffs,
        "notes": notes,
        "rows": rows,
    }
