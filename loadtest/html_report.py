"""The self-contained HTML report: inline CSS and inline SVG, nothing fetched from anywhere."""

from __future__ import annotations

import json
import math
from html import escape
from typing import Any

from loadtest.report import COLUMNS, change_text
from services.platform.svg import Series, line_chart

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
.invalid{background:#fde8e6;border:2px solid #b3261e;color:#7a1610;padding:12px 16px;
margin:12px 0;font-size:15px}
.tile i{display:block;color:#5b6474;font-size:11px;font-style:normal}
td.l,th.l{text-align:left}td ul{margin:0;padding-left:16px}code{font-size:12px}
"""

COLORS = {"p50": "#2f6fdf", "p90": "#1b9e77", "p99": "#e6892e", "max": "#c0392b"}


def _v(x: float | None, unit: str = "") -> str:
    return "-" if x is None else f"{x:,.2f}{unit}"


def _tiles(results: dict[str, Any]) -> str:
    t = results["total"]
    lat = t.get("latency_ms") or {}
    lag = (results.get("generator") or {}).get("send_lag_ms") or {}
    items = [
        ("throughput", _v(t["throughput_rps"], " req/s"), ""),
        ("requests", f"{t['count']:,}", ""),
        ("p50", _v(lat.get("p50"), " ms"), ""),
        ("p99", _v(lat.get("p99"), " ms"), ""),
        ("p99.9", _v(lat.get("p99_9"), " ms"), ""),
        ("max", _v(lat.get("max"), " ms"), ""),
        ("send lag p99", _v(lag.get("p99"), " ms"), "generator's own lateness"),
        ("error rate", f"{t['error_rate'] * 100:.2f} %", ""),
    ]
    return (
        '<div class="tiles">'
        + "".join(
            f'<div class="tile"><span>{escape(k)}</span><b>{escape(v)}</b>'
            + (f"<i>{escape(note)}</i>" if note else "")
            + "</div>"
            for k, v, note in items
        )
        + "</div>"
        + f"<p class=sub>{escape(_latency_note(t))}</p>"
    )


def _latency_note(total: dict[str, Any]) -> str:
    n = total.get("timeouts") or 0
    return (
        "Latency counts successful responses and timed-out requests"
        + (f" ({n:,} timeouts, each at its full wait: at least the timeout)" if n else "")
        + "; other failures are counted by kind below, not in the latency."
    )


def _charts(results: dict[str, Any]) -> str:
    windows = results.get("windows", [])
    lat_series = [
        Series(k, COLORS[k], [(w["t"] + 1, w.get(k)) for w in windows])
        for k in ("p50", "p90", "p99", "max")
    ]
    tput = [
        *(
            [Series("due/s", "#d5d9e0", [(w["t"] + 1, w.get("due")) for w in windows])]
            if any(w.get("due") is not None for w in windows)
            else []
        ),
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
    groups = results.get("error_details") or []
    if not groups:
        return "<p>No errors.</p>"
    rows = []
    for g in groups:
        samples = "".join(
            f"<li><code>{escape(x['url'])}</code> {escape(x['message'])}</li>"
            for x in g.get("samples", [])
        )
        where = f"{g['method']} {g['template']}".strip() or "-"
        rows.append(
            f"<tr><td>{escape(g['scenario'])}</td><td>{escape(g['kind'])}</td>"
            f"<td>{escape(where)}</td><td>{g['status'] if g['status'] else '-'}</td>"
            f"<td>{g['count']:,}</td><td class=l><ul>{samples}</ul></td></tr>"
        )
    return (
        "<table><thead><tr><th>scenario</th><th>kind</th><th>endpoint</th><th>status</th>"
        "<th>count</th><th class=l>examples (URL, message)</th></tr></thead>"
        f"<tbody>{''.join(rows)}</tbody></table>"
    )


def _thresholds(results: dict[str, Any]) -> str:
    checks = results.get("thresholds") or []
    if not checks:
        return ""
    failed = sum(1 for c in checks if not c["passed"])
    rows = "".join(
        f"<tr><td>{escape(c['threshold'])}</td><td>{escape(c['shown'])}</td>"
        + ('<td class="good">✓ passed</td>' if c["passed"] else '<td class="bad">✗ failed</td>')
        + "</tr>"
        for c in checks
    )
    return (
        f"<h2>Thresholds: {len(checks) - failed} passed, {failed} failed</h2><div class=card>"
        "<table><thead><tr><th>threshold</th><th>actual</th><th>result</th></tr></thead>"
        f"<tbody>{rows}</tbody></table></div>"
    )


def _compare_table(cmp: dict[str, Any]) -> str:
    def cell(metric: str, ch: dict[str, Any]) -> str:
        text = change_text(metric, ch).rstrip("!+")
        cls = {"worse": ' class="bad"', "better": ' class="good"'}.get(ch["verdict"] or "", "")
        iv = ch.get("interval")
        if iv is not None:
            scale = "pp" if metric == "error_rate" else "%"
            factor = 100.0
            tip = f"95 % interval {iv[0] * factor:+.1f} to {iv[1] * factor:+.1f} {scale}"
        else:
            tip = "single sample: no interval" if metric == "max" else "no interval"
        title = escape(f"{ch['old']} → {ch['new']}; {tip}")
        return f'<td{cls} title="{title}">{escape(text)}</td>'

    metrics = ("throughput_rps", "error_rate", *COLUMNS)
    head = "".join(
        f"<th>{h}</th>"
        for h in ("scenario", "ok/s", "error rate", *(c.replace("_", ".") for c in COLUMNS))
    )
    body = []
    for name, row in cmp["rows"].items():
        cls = ' class="total"' if name == "total" else ""
        body.append(
            f"<tr{cls}><td>{escape(name)}</td>"
            + "".join(cell(m, row[m]) for m in metrics)
            + "</tr>"
        )
    intro = f"Change vs the run started {escape(str(cmp.get('old_started_at')))}."
    if cmp["comparable"]:
        intro += (
            " Coloured only when the change is beyond the run-to-run spread (its 95 % "
            "block-bootstrap interval excludes zero): red worse, green better. The max is a "
            "single sample and is never coloured."
        )
    banner = ""
    if not cmp["comparable"]:
        banner = (
            "<div class=warn><b>Not comparable:</b> the runs offered different load ("
            + escape("; ".join(cmp["differences"]))
            + "). The figures are shown for reference only; nothing is judged.</div>"
        )
    notes = "".join(f"<p class=sub>{escape(n)}</p>" for n in cmp.get("notes", []))
    return (
        f"{banner}<p class=sub>{intro}</p>{notes}"
        f"<table><thead><tr>{head}</tr></thead><tbody>{''.join(body)}</tbody></table>"
    )


def _metric(x: float | None) -> str:
    return "-" if x is None else f"{x:.4f}"


def _replay(results: dict[str, Any]) -> str:
    """Replayed users: what they did, then online CTR per arm beside offline metrics."""
    section = results.get("replay")
    if not section:
        return ""
    tool = section["tool"]
    out = [
        "<h2>Replayed users: online vs offline</h2><div class=card>",
        f"<p>{tool['users']:,} held-out users of {escape(str(section['holdout']))} "
        f"({tool['logged_in']:,} logged in), up to {section['pages_per_user']} pages each: "
        f"{tool['pages']:,} pages, {tool['rows']:,} similar rows with tracked links, "
        f"{tool['clicks']:,} clicks followed.</p>",
    ]
    if section.get("experiment_error"):
        out.append(f"<p class=warn>No online figures: {escape(section['experiment_error'])}</p>")
        return "".join(out) + "</div>"
    out.append(
        "<table><tr><th>arm</th><th>version</th><th>impressions</th><th>clicks</th>"
        "<th>CTR [95 % interval]</th><th>tool rows / clicks</th><th>Recall@20</th>"
        "<th>NDCG@20</th></tr>"
    )
    for a in section["arms"]:
        ctr, off = a["ctr"], a["offline"]
        out.append(
            f"<tr><td>{escape(a['arm'])}</td><td>{escape(a['version'])}</td>"
            f"<td>{a['impressions']:,}</td><td>{a['clicks']:,}</td>"
            f"<td>{ctr['estimate'] * 100:.2f} % [{ctr['low'] * 100:.2f}, "
            f"{ctr['high'] * 100:.2f}]</td><td>{a['tool']['rows']:,} / {a['tool']['clicks']:,}"
            f"</td><td>{_metric(off.get('recall@20'))}</td><td>{_metric(off.get('ndcg@20'))}</td>"
            "</tr>"
        )
    out.append("</table>")
    diff = section.get("difference")
    if diff:
        out.append(
            f"<p>CTR difference, candidate − control: {diff['estimate'] * 100:.2f} % "
            f"[{diff['low'] * 100:.2f}, {diff['high'] * 100:.2f}] (95 %). Offline metrics "
            f"from {escape(str(section.get('offline_source', '-')))}.</p>"
        )
    return "".join(out) + "</div>"


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
    wait = gen.get("connection_wait") or {}
    warnings = list(results.get("warnings", []))
    if gen.get("unsent"):
        warnings.append(
            f"{gen['unsent']:,} arrivals were due but never sent (counted as errors of kind "
            "'unsent')."
        )
    invalid = ""
    if not results.get("valid", True):
        invalid = (
            "<div class=invalid><b>INVALID RUN — the latency figures cannot be trusted.</b><ul>"
            + "".join(f"<li>{escape(r)}</li>" for r in results.get("invalid_reasons", []))
            + "</ul></div>"
        )
    cpu = gen.get("cpu_us_per_request")
    parts = [
        "<!doctype html><html lang=en><head><meta charset=utf-8>",
        "<meta name=viewport content='width=device-width,initial-scale=1'>",
        f"<title>Marquee load test — {escape(str(results.get('started_at')))}</title>",
        f"<style>{CSS}</style></head><body><main>",
        "<h1>Marquee load test</h1>",
        f"<div class=sub>{escape(str(results.get('started_at')))} · "
        f"{escape(str(cfg.get('base_url')))} · {escape(load)} · {escape(span)}"
        f" (ramp-up {cfg.get('ramp_up')} s) · mix {escape(mix)}</div>",
        invalid,
        "".join(f"<div class=warn>{escape(w)}</div>" for w in warnings),
        _tiles(results),
        _thresholds(results),
    ]
    if comparison:
        parts += [
            "<h2>Compared with an earlier run</h2><div class=card>",
            _compare_table(comparison),
            "</div>",
        ]
    parts.append(_replay(results))
    parts += [
        "<h2>Over time</h2>",
        _charts(results),
        "<p class=sub>Latency is measured from the <em>intended</em> send time in the open model"
        " (waiting for a connection counts), from the actual send in the closed model. "
        "In the throughput chart, <em>due</em> is the offered load and <em>sent</em> what the "
        "generator actually sent: a gap means the generator fell behind.</p>",
        "<h2>Per scenario</h2><div class=card>",
        _scenario_table(results),
        "</div>",
        "<h2>Errors</h2><div class=card>",
        _error_table(results),
        "</div>",
        "<h2>The generator</h2><div class=card>",
        f"<p>Sent {gen.get('sent', 0):,} of {gen.get('due') or gen.get('sent', 0):,} due"
        f" ({_v(gen.get('sent_rate'), '/s')} sent, {_v(gen.get('offered_rate'), '/s')} offered)."
        f" Send lag p50 {_v(lag.get('p50'), ' ms')}, p99 {_v(lag.get('p99'), ' ms')}, max "
        f"{_v(lag.get('max'), ' ms')}; allowed p99 {_v(gen.get('max_send_lag_ms'), ' ms')}. "
        "Send lag is the generator's own lateness (short of CPU), measured apart from the "
        "server's latency. "
        f"{wait.get('requests', 0):,} requests waited for a free connection "
        f"(max {_v(wait.get('max_ms'), ' ms')}). "
        + (f"CPU: {cpu:.1f} µs per HTTP request. " if cpu is not None else "")
        + "</p>",
        f"<p>Workload: {escape(str(wl.get('source')))}, {wl.get('movies')} movies "
        f"(most popular gets {float(wl.get('top_movie_share') or 0) * 100:.1f} % of views), "
        f"{wl.get('search_words')} search words.</p>",
        f"<details><summary>Configuration</summary><pre>{escape(json.dumps(cfg, indent=2))}"
        "</pre></details></div>",
        "</main></body></html>",
    ]
    return "\n".join(parts)
