"""The experiment's CTR-per-arm-over-time charts, as inline SVG (the load tool's chart,
``services.platform.svg``: no script, no CDN, nothing the page's content policy must allow)."""

from __future__ import annotations

import time
from datetime import UTC, datetime

from markupsafe import Markup

from services.feedback.schemas import ArmPoint, ArmReport
from services.platform.svg import Series, line_chart

ARM_COLOURS = {"control": "#60a5fa", "candidate": "#f59e0b"}
MAX_TICKS = 6


def _label(minute: int) -> str:
    return datetime.fromtimestamp(minute * 60, UTC).strftime("%H:%M")


def _ticks(minutes: list[int]) -> list[tuple[float, str]]:
    if not minutes:
        return []
    lo, hi = min(minutes), max(minutes)
    step = max(1, -(-(hi - lo) // (MAX_TICKS - 1)))
    return [(float(m), _label(m)) for m in range(lo, hi + 1, step)]


def _per_minute(points: list[ArmPoint]) -> list[tuple[float, float | None]]:
    """CTR of each minute in percent; a minute without impressions breaks the line."""
    return [
        (float(p.minute), 100.0 * p.clicks / p.impressions if p.impressions else None)
        for p in points
    ]


def _cumulative(points: list[ArmPoint]) -> list[tuple[float, float | None]]:
    """CTR of everything up to each minute, in percent: what the table's estimate converges to."""
    out: list[tuple[float, float | None]] = []
    impressions = clicks = 0
    for p in points:
        impressions += p.impressions
        clicks += p.clicks
        out.append((float(p.minute), 100.0 * clicks / impressions if impressions else None))
    return out


def _percent(value: float) -> str:
    return f"{value:g}%"


def ctr_charts(arms: list[ArmReport], now: float | None = None) -> list[Markup]:
    """Two charts: CTR per minute, and cumulative CTR, one line per arm (the table beside them
    names each arm's version). ``line_chart`` builds the SVG and escapes every label."""
    minutes = sorted({p.minute for arm in arms for p in arm.series})
    if not minutes:  # no impressions yet: one empty chart saying so
        minutes = [int((now or time.time()) // 60)]
    ticks = _ticks(minutes)
    charts = []
    for title, points_of in (
        ("CTR per minute, by arm", _per_minute),
        ("Cumulative CTR, by arm", _cumulative),
    ):
        series = [
            Series(arm.arm, ARM_COLOURS.get(arm.arm, "#a3a8b5"), points_of(arm.series))
            for arm in arms
        ]
        svg = line_chart(
            series,
            title=title,
            x_label="time (UTC)",
            y_label="CTR",
            x_ticks=ticks,
            y_format=_percent,
        )
        charts.append(Markup(svg))  # noqa: S704 - built by line_chart, every label escaped
    return charts
