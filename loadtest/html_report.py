"""The self-contained HTML report: inline CSS and inline SVG, nothing fetched from anywhere."""

from __future__ import annotations

import json
import math
from html import escape
from typing import Any

from loadtest.report import COLUMNS
from loadtest.svg import Series, line_chart

CSS = """
body{font:14px/1.45 system-ui,-apple-system,Segoe UI,Roboto,sans-serif;margin:0;color:#1d2330;
background:#f5f6f8}
main{max-width:1000px;margin:0 auto;padding:24px}
h1{font-size:22px;margin:0 0 4px}h2{font-size:17px;margin:28px 0 10px}
.sub{color:#5b6474}
.tiles{display:flex;flex-wrap:wrap;gap:10px;margin:18px 0}
.tile{background:#fff;border-radius:8px;padding:10px 14px;min-width:120px;
box-shadow:0 1px 2px rgba(0,0,0,.08)}
.tile b{display:block;font-size:20px}.tile span{color:#5b6474;font-size:12px}
.card{background:#fff;border-radius:8px;padding:12px;margin:12px 0;
box-shadow:0 1px 2px rgba(0,0,0,.08);overflow-x:auto}
table{border-collapse:collapse;width:100%;font-variant-numeric:tabular-nums}
th,td{padding:5px 8px;text-align:right;border-bottom:1px solid #e6e8ec}
th:first-child,td:first-child{text-align:left}
tr.total td{font-weight:600;border-top:2px solid #c9ced6}
.bad{color:#b3261e}.good{color:#1b7f3b}
svg{max-width:100%;height:auto;font-size:11px;fill:#3b4250}
svg .t{font-size:13px;font-weight:600}svg .g{stroke:#e6e8ec}
svg .frame{fill:none;stroke:#c9ced6}
pre{white-space:pre-wrap;font-size:12px}
.warn{background:#fff4e5;border-left:4px solid #f29d38;padding:8px 12px;margin:8px 0}
"""

COLORS = {"p50": "#2f6fdf", "p90": "#1b9e77", "p99": "#e6892e", "max": "#c0392b"}


def _v(x: float | None, unit: str = "") -> str:
    return "-" if x is None else f"{x:,.2f}{unit}"


def _tiles(results: dict[str, Any]) -> str:
    t = results["total"]
    lat = t.get("latency_ms") or {}
    items = [
        ("throughput", _v(t["throughput_rps"], " req/s")),
        ("requests", f"{t['count']:,}"),
        ("p50", _v(lat.get("p50"), " ms")),
        ("p99", _v(lat.get("p99"), " ms")),
        ("p99.9", _v(lat.get("p99_9"), " ms")),
        ("max", _v(lat.get("max"), " ms")),
        ("error rate", f"{t['error_rate'] * 100:.2f} %"),
    ]
    return (
        '<div class="tiles">'
        + "".join(
            f'<div class="tile"><span>{escape(k)}</span><b>{escape(v)}</b></div>' for k, v in items
        )
        + "</div>"
    )


def _charts(results: dict[str, Any]) -> str:
    windows = results.get("windows", [])
    lat_series = [
        Series(k, COLORS[k], [(w["t"] + 1, w.get(k)) for w in windows])
        for k in ("p50", "p90", "p99", "max")
    ]
    tput = [
        Series("sent/s", "#9aa3b2", [(w["t"] + 1, w.get("sent", 0)) for w in windows]),
        Series("ok/s", "#2f6fdf", [(w["t"] + 1, w["ok"]) for w in windows]),
        Series("errors/s", "#c0392b", [(w["t"] + 1, w["errors"]) for w in windows]),
    ]
    curve = results.get("percentile_curve", [])

    def nines(p: float) -> float:
        return math.log10(1.0 / max(1.0 - p / 100.0, 1e-6))

    top = max((nines(p) for p, _ in curve), default=1.0)
    labels = [
        (0.0, "0%"),
        (1.0, "90%"),
        (2.0, "99%"),
        (3.0, "99.9%"),
        (4.0, "99.99%"),
        (5.0, "99.999%"),
    ]
    ticks = [(x, lbl) for x, lbl in labels if x <= top + 0.05]
    dist = [Series("latency", "#2f6fdf", [(nines(p), v) for p, v in curve if p < 100.0])]
    charts = [
        line_chart(
            lat_series, title="Latency percentiles per second", x_label="seconds", y_label="ms"
        ),
        line_chart(tput, title="Throughput per second", x_label="seconds", y_label="responses/s"),
        line_chart(
            dist,
            title="Latency by percentile (whole run)",
            x_label="percentile",
            y_label="ms",
            x_ticks=ticks,
        ),
    ]
    return "".join(f'<div class="card">{c}</div>' for c in charts)


def _scenario_table(results: dict[str, Any]) -> str:
    head = "".join(
        f"<th>{h}</th>"
        for h in (
            "scenario",
            "requests",
            "ok/s",
            "errors",
            "error rate",
            *(c.replace("_", ".") + " ms" for c in COLUMNS),
        )
    )
    rows = [*results.get("scenarios", {}).items(), ("total", results["total"])]
    body = []
    for name, s in rows:
        lat = s.get("latency_ms") or {}
        cls = ' class="total"' if name == "total" else ""
        err_cls = ' class="bad"' if s["error_count"] else ""
        body.append(
            f"<tr{cls}><td>{escape(name)}</td><td>{s['count']:,}</td>"
            f"<td>{s['throughput_rps']:,.1f}</td><td{err_cls}>{s['error_count']:,}</td>"
            f"<td{err_cls}>{s['error_rate'] * 100:.2f}%</td>"
            + "".join(f"<td>{_v(lat.get(c))}</td>" for c in COLUMNS)
            + "</tr>"
        )
    return f"<table><thead><tr>{head}</tr></thead><tbody>{''.join(body)}</tbody></table>"


def _error_table(results: dict[str, Any]) -> str:
    rows = []
    for name, s in results.get("scenarios", {}).items():
        for kind, n in (s.get("errors") or {}).items():
            rows.append(f"<tr><td>{escape(name)}</td><td>{escape(kind)}</td><td>{n:,}</td></tr>")
    if not rows:
        return "<p>No errors.</p>"
    return (
        "<table><thead><tr><th>scenario</th><th>kind</th><th>count</th></tr></thead>"
        f"<tbody>{''.join(rows)}</tbody></table>"
    )


def _compare_table(cmp: dict[str, Any]) -> str:
    def cell(ch: dict[str, Any], higher_is_bad: bool) -> str:
        if ch["pct"] is None:
            same = ch["new"] is not None and ch["new"] == ch["old"]
            return "<td>=</td>" if same else f"<td>{ch['old']} → {ch['new']}</td>"
        bad = (ch["pct"] > 5) if higher_is_bad else (ch["pct"] < -5)
        good = (ch["pct"] < -5) if higher_is_bad else (ch["pct"] > 5)
        cls = ' class="bad"' if bad else (' class="good"' if good else "")
        return f'<td{cls} title="{ch["old"]} → {ch["new"]}">{ch["pct"]:+.1f}%</td>'

    head = "".join(
        f"<th>{h}</th>"
        for h in ("scenario", "ok/s", "error rate", *(c.replace("_", ".") for c in COLUMNS))
    )
    body = []
    for name, row in cmp["rows"].items():
        cls = ' class="total"' if name == "total" else ""
        body.append(
            f"<tr{cls}><td>{escape(name)}</td>"
            + cell(row["throughput_rps"], False)
            + cell(row["error_rate"], True)
            + "".join(cell(row[c], True) for c in COLUMNS)
            + "</tr>"
        )
    return (
        f"<p class=sub>Change vs the run started {escape(str(cmp.get('old_started_at')))} "
        "(red: worse by more than 5 %, green: better).</p>"
        f"<table><thead><tr>{head}</tr></thead><tbody>{''.join(body)}</tbody></table>"
    )


def render_html(results: dict[str, Any], comparison: dict[str, Any] | None = None) -> str:
    """The whole report as one HTML string."""
    cfg = results.get("config", {})
    if cfg.get("model") == "open":
        load = f"open model, {cfg.get('rate')} req/s ({cfg.get('arrival')} arrivals)"
    else:
        load = f"closed model, {cfg.get('users')} users, think time {cfg.get('think_time')} s"
    span = (
        f"{cfg.get('duration')} s"
        if cfg.get("duration") is not None
        else f"{cfg.get('requests')} requests"
    )
    mix = ", ".join(f"{k}={v:g}" for k, v in (cfg.get("mix") or {}).items())
    wl = results.get("workload", {})
    gen = results.get("generator", {})
    lag = gen.get("send_lag_ms") or {}
    warnings = list(results.get("warnings", []))
    if gen.get("unsent"):
        warnings.append(
            f"{gen['unsent']} requests were due but never sent before the drain "
            "deadline (counted as errors of kind 'unsent')."
        )
    parts = [
        "<!doctype html><html lang=en><head><meta charset=utf-8>",
        "<meta name=viewport content='width=device-width,initial-scale=1'>",
        f"<title>Marquee load test — {escape(str(results.get('started_at')))}</title>",
        f"<style>{CSS}</style></head><body><main>",
        "<h1>Marquee load test</h1>",
        f"<div class=sub>{escape(str(results.get('started_at')))} · "
        f"{escape(str(cfg.get('base_url')))} · {escape(load)} · {escape(span)}"
        f" (ramp-up {cfg.get('ramp_up')} s) · mix {escape(mix)}</div>",
        "".join(f"<div class=warn>{escape(w)}</div>" for w in warnings),
        _tiles(results),
    ]
    if comparison:
        parts += [
            "<h2>Compared with an earlier run</h2><div class=card>",
            _compare_table(comparison),
            "</div>",
        ]
    parts += [
        "<h2>Over time</h2>",
        _charts(results),
        "<p class=sub>Latency is measured from the <em>intended</em> send time in the open model"
        " (queueing in the client counts), from the actual send in the closed model. Only"
        " successful responses are in the latency figures; failures are counted by kind.</p>",
        "<h2>Per scenario</h2><div class=card>",
        _scenario_table(results),
        "</div>",
        "<h2>Errors by kind</h2><div class=card>",
        _error_table(results),
        "</div>",
        "<h2>Run details</h2><div class=card>",
        f"<p>Workload: {escape(str(wl.get('source')))}, {wl.get('movies')} movies "
        f"(most popular gets {float(wl.get('top_movie_share') or 0) * 100:.1f} % of views), "
        f"{wl.get('search_words')} search words. Generator: {gen.get('sent')} sent, "
        f"send lag p99 {_v(lag.get('p99'), ' ms')}, max {_v(lag.get('max'), ' ms')}"
        " (high lag means the load generator itself was short of CPU).</p>",
        f"<details><summary>Configuration</summary><pre>{escape(json.dumps(cfg, indent=2))}"
        "</pre></details></div>",
        "</main></body></html>",
    ]
    return "\n".join(parts)
