"""Text output: the end-of-run summary table, JSON results, and the comparison with an old run."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from loadtest.config import ConfigError

COLUMNS = ("p50", "p90", "p99", "p99_9", "max")


def write_json(results: dict[str, Any], path: str) -> None:
    Path(path).write_text(json.dumps(results, indent=2) + "\n", encoding="utf-8")


def load_results(path: str) -> dict[str, Any]:
    """Read an earlier run's JSON (a ConfigError if it is not one)."""
    try:
        data = json.loads(Path(path).read_text(encoding="utf-8"))
    except OSError as exc:
        raise ConfigError(f"cannot read {path}: {exc.strerror or exc}") from None
    except json.JSONDecodeError as exc:
        raise ConfigError(f"{path} is not JSON: {exc}") from None
    if not isinstance(data, dict) or data.get("tool") != "marquee-loadtest":
        raise ConfigError(f"{path} is not a marquee-loadtest results file")
    return data


def _rows(results: dict[str, Any]) -> list[tuple[str, dict[str, Any]]]:
    return [*results.get("scenarios", {}).items(), ("total", results["total"])]


def _fmt(v: float | None) -> str:
    return "-" if v is None else f"{v:.2f}"


def summary_table(results: dict[str, Any]) -> str:
    """A fixed-width table: one row per scenario and the total."""
    head = f"{'scenario':<14}{'count':>8}{'ok/s':>10}{'errors':>8}" + "".join(
        f"{c.replace('_', '.') + ' ms':>12}" for c in COLUMNS
    )
    lines = [head, "-" * len(head)]
    for name, s in _rows(results):
        lat = s.get("latency_ms") or {}
        lines.append(
            f"{name:<14}{s['count']:>8}{s['throughput_rps']:>10.1f}{s['error_count']:>8}"
            + "".join(f"{_fmt(lat.get(c)):>12}" for c in COLUMNS)
        )
    errors = results["total"].get("errors") or {}
    if errors:
        lines.append("errors by kind: " + ", ".join(f"{k}={v}" for k, v in errors.items()))
    gen = results.get("generator") or {}
    if gen.get("unsent"):
        lines.append(f"unsent (due but never sent before the drain deadline): {gen['unsent']}")
    for w in results.get("warnings", []):
        lines.append(f"warning: {w}")
    return "\n".join(lines)


def _change(new: float | None, old: float | None) -> dict[str, Any]:
    if new is None or old is None:
        return {"old": old, "new": new, "pct": None}
    pct = None if old == 0 else round((new - old) / old * 100.0, 2)
    return {"old": old, "new": new, "pct": pct}


def compare(new: dict[str, Any], old: dict[str, Any]) -> dict[str, Any]:
    """Per scenario (present in both runs) and total: throughput, error rate, percentiles."""
    out: dict[str, Any] = {}
    old_rows = dict(_rows(old))
    for name, s in _rows(new):
        o = old_rows.get(name)
        if o is None:
            continue
        lat_n, lat_o = s.get("latency_ms") or {}, o.get("latency_ms") or {}
        out[name] = {
            "throughput_rps": _change(s["throughput_rps"], o["throughput_rps"]),
            "error_rate": _change(s["error_rate"], o["error_rate"]),
            **{c: _change(lat_n.get(c), lat_o.get(c)) for c in COLUMNS},
        }
    return {"old_started_at": old.get("started_at"), "rows": out}


def compare_table(cmp: dict[str, Any]) -> str:
    """Percent change per cell; latency up or throughput down is the bad direction."""

    def cell(ch: dict[str, Any]) -> str:
        if ch["pct"] is None:
            if ch["new"] is None or ch["old"] is None:
                return "-"
            return "=" if ch["new"] == ch["old"] else f"{ch['old']:g}->{ch['new']:g}"
        return f"{ch['pct']:+.1f}%"

    head = f"{'vs old run':<14}{'ok/s':>10}{'err rate':>12}" + "".join(
        f"{c.replace('_', '.'):>10}" for c in COLUMNS
    )
    lines = [f"change vs run started {cmp.get('old_started_at')}", head, "-" * len(head)]
    for name, row in cmp["rows"].items():
        lines.append(
            f"{name:<14}{cell(row['throughput_rps']):>10}{cell(row['error_rate']):>12}"
            + "".join(f"{cell(row[c]):>10}" for c in COLUMNS)
        )
    return "\n".join(lines)
