"""Text output: the end-of-run summary, thresholds, error details, the comparison; JSON files."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from loadtest.config import ConfigError

COLUMNS = ("p50", "p90", "p99", "p99_9", "max")
LATENCY_NOTE = (
    "latency: from the intended send time (open model) or the send (closed); successes and "
    "timeouts, a timeout counted at its full wait"
)


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


def lag_line(results: dict[str, Any]) -> str | None:
    """The generator's own lateness, to read beside the latency."""
    gen = results.get("generator") or {}
    lag = gen.get("send_lag_ms")
    if not lag:
        return None
    return (
        f"send lag (generator's own lateness, not in the server's favour): p50 {lag['p50']:.2f}"
        f" p99 {lag['p99']:.2f} max {lag['max']:.2f} ms (allowed p99 {gen['max_send_lag_ms']:g} ms)"
        f"; offered {gen['offered_rate']:g}/s, sent {gen['sent_rate']:,.1f}/s"
    )


def summary_table(results: dict[str, Any]) -> str:
    """A fixed-width table (one row per scenario and the total), then the generator's health,
    errors with details, and the warnings."""
    lines = []
    if not results.get("valid", True):
        lines += ["!" * 78, "INVALID RUN: " + "; ".join(results["invalid_reasons"]), "!" * 78]
    head = f"{'scenario':<14}{'count':>8}{'ok/s':>10}{'errors':>8}" + "".join(
        f"{c.replace('_', '.') + ' ms':>12}" for c in COLUMNS
    )
    lines += [head, "-" * len(head)]
    for name, s in _rows(results):
        lat = s.get("latency_ms") or {}
        lines.append(
            f"{name:<14}{s['count']:>8}{s['throughput_rps']:>10.1f}{s['error_count']:>8}"
            + "".join(f"{_fmt(lat.get(c)):>12}" for c in COLUMNS)
        )
    timeouts = results["total"].get("timeouts") or 0
    lines.append(
        LATENCY_NOTE + (f" ({timeouts} timeouts included, each >= the timeout)" if timeouts else "")
    )
    lag = lag_line(results)
    if lag:
        lines.append(lag)
    gen = results.get("generator") or {}
    wait = gen.get("connection_wait") or {}
    if wait.get("requests"):
        lines.append(
            f"{wait['requests']} requests waited for a free connection (--connections): "
            f"p99 {_fmt(wait['p99_ms'])} ms, max {_fmt(wait['max_ms'])} ms (counted as latency)"
        )
    if gen.get("cpu_us_per_request") is not None:
        lines.append(
            f"generator CPU: {gen['cpu_s']:.2f} s, {gen['cpu_us_per_request']:.1f} µs per "
            f"HTTP request ({gen['http_requests']} requests)"
        )
    errors = results["total"].get("errors") or {}
    if errors:
        lines.append("errors by kind: " + ", ".join(f"{k}={v}" for k, v in errors.items()))
        for g in results.get("error_details", [])[:20]:
            where = f"{g['method']} {g['template']}".strip() or "-"
            sample = g["samples"][0] if g["samples"] else {"url": "", "message": ""}
            lines.append(
                f"  {g['count']:>6} x {g['kind']:<14} {g['scenario']:<12} {where}"
                + (f"  e.g. {sample['url']}" if sample["url"] else "")
                + (f"  {sample['message'][:100]}" if sample["message"] else "")
            )
    for w in results.get("warnings", []):
        lines.append(f"warning: {w}")
    return "\n".join(lines)


def thresholds_table(results: dict[str, Any]) -> str | None:
    checks = results.get("thresholds") or []
    if not checks:
        return None
    failed = sum(1 for c in checks if not c["passed"])
    lines = [f"thresholds: {len(checks) - failed} passed, {failed} failed"]
    for c in checks:
        lines.append(
            f"  {'PASS' if c['passed'] else 'FAIL'}  {c['threshold']:<24} actual {c['shown']}"
        )
    return "\n".join(lines)


def change_text(metric: str, ch: dict[str, Any]) -> str:
    """One comparison cell: the change, its interval, and whether it is beyond the spread."""
    if ch["new"] is None or ch["old"] is None:
        return "-"
    if metric == "error_rate":
        text = f"{ch['old'] * 100:.2f}->{ch['new'] * 100:.2f}%"
    elif ch["pct"] is None:
        return "=" if ch["new"] == ch["old"] else f"{ch['old']:g}->{ch['new']:g}"
    else:
        text = f"{ch['pct']:+.1f}%"
    if ch["verdict"]:
        text += "!" if ch["verdict"] == "worse" else "+"
    return text


def compare_header(cmp: dict[str, Any]) -> list[str]:
    lines = [f"change vs run started {cmp.get('old_started_at')}"]
    if not cmp["comparable"]:
        lines.append(
            "NOT COMPARABLE (different load: " + "; ".join(cmp["differences"]) + "); "
            "figures shown for reference, nothing is judged"
        )
    lines += cmp.get("notes", [])
    return lines


def compare_table(cmp: dict[str, Any]) -> str:
    """Change per cell; '!' marks a change beyond the run-to-run spread for the worse, '+' for
    the better (95 % block-bootstrap interval excludes zero); unmarked changes are noise."""
    metrics = ("throughput_rps", "error_rate", *COLUMNS)
    head = f"{'vs old run':<14}{'ok/s':>10}{'err rate':>16}" + "".join(
        f"{c.replace('_', '.'):>10}" for c in COLUMNS
    )
    lines = [*compare_header(cmp), head, "-" * len(head)]
    for name, row in cmp["rows"].items():
        widths = [10, 16, *([10] * len(COLUMNS))]
        lines.append(
            f"{name:<14}"
            + "".join(
                f"{change_text(m, row[m]):>{w}}" for m, w in zip(metrics, widths, strict=True)
            )
        )
    lines.append("'!' worse, '+' better beyond the run-to-run spread; unmarked: within the noise")
    return "\n".join(lines)
