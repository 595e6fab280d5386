"""A tiny inline-SVG line chart, so a page or a report needs no JS, CSS or CDN.

Shared by the load tool's HTML report and the operator
dashboard, which ships in the image where the load tool does not."""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from html import escape

Point = tuple[float, float | None]


@dataclass(frozen=True)
class Series:
    label: str
    color: str
    points: Sequence[Point]  # a None y breaks the line (e.g. a second with no completions)


def nice_ticks(lo: float, hi: float, target: int = 5) -> list[float]:
    """Round tick values (1, 2, 2.5, 5 x 10^k) covering [lo, hi]."""
    if hi <= lo:
        hi = lo + 1.0
    raw = (hi - lo) / target
    mag = 10 ** math.floor(math.log10(raw))
    step = next(m * mag for m in (1, 2, 2.5, 5, 10) if m * mag >= raw)
    first = math.floor(lo / step) * step
    ticks = []
    v = first
    while v <= hi + step * 1e-9:
        ticks.append(round(v, 10))
        v += step
    if ticks[-1] < hi:
        ticks.append(round(ticks[-1] + step, 10))
    return ticks


def _num(v: float) -> str:
    return f"{v:g}" if abs(v) < 1e6 else f"{v:.3g}"


def line_chart(
    series: Sequence[Series],
    *,
    title: str,
    x_label: str,
    y_label: str,
    width: int = 760,
    height: int = 300,
    x_ticks: Sequence[tuple[float, str]] | None = None,
    y_format: Callable[[float], str] = _num,
) -> str:
    """An SVG line chart with axes, grid, ticks and a legend; y starts at 0."""
    left, right, top, bottom = 64, 30, 34, 46
    pw, ph = width - left - right, height - top - bottom
    xs = [x for s in series for x, y in s.points if y is not None]
    ys = [y for s in series for _, y in s.points if y is not None]
    parts = [
        f'<svg viewBox="0 0 {width} {height}" '
        f'width="{width}" height="{height}" role="img" aria-label="{escape(title)}">',
        f'<text x="{left}" y="20" class="t">{escape(title)}</text>',
    ]
    if not xs:
        parts.append(f'<text x="{width / 2}" y="{height / 2}" text-anchor="middle">no data</text>')
        parts.append("</svg>")
        return "".join(parts)
    x_lo, x_hi = min(xs), max(xs)
    if x_ticks:
        x_lo, x_hi = min(x_lo, x_ticks[0][0]), max(x_hi, x_ticks[-1][0])
    if x_hi == x_lo:
        x_hi = x_lo + 1
    yt = nice_ticks(0.0, max(ys) if max(ys) > 0 else 1.0)
    y_hi = yt[-1]

    def px(x: float) -> float:
        return left + (x - x_lo) / (x_hi - x_lo) * pw

    def py(y: float) -> float:
        return top + ph - (y / y_hi) * ph

    for v in yt:
        y = py(v)
        parts.append(f'<line x1="{left}" y1="{y:.1f}" x2="{left + pw}" y2="{y:.1f}" class="g"/>')
        parts.append(
            f'<text x="{left - 6}" y="{y + 4:.1f}" text-anchor="end">{escape(y_format(v))}</text>'
        )
    ticks = x_ticks or [(v, _num(v)) for v in nice_ticks(x_lo, x_hi) if x_lo <= v <= x_hi]
    for v, label in ticks:
        x = px(v)
        parts.append(f'<line x1="{x:.1f}" y1="{top}" x2="{x:.1f}" y2="{top + ph}" class="g"/>')
        parts.append(
            f'<text x="{x:.1f}" y="{top + ph + 16}" text-anchor="middle">{escape(label)}</text>'
        )
    parts.append(
        f'<rect x="{left}" y="{top}" width="{pw}" height="{ph}" class="frame"/>'
        f'<text x="{left + pw / 2}" y="{height - 6}" text-anchor="middle">{escape(x_label)}</text>'
        f'<text transform="translate(14 {top + ph / 2}) rotate(-90)" text-anchor="middle">'
        f"{escape(y_label)}</text>"
    )
    for s in series:
        segment: list[str] = []
        segments: list[list[str]] = [segment]
        for x, value in s.points:
            if value is None:
                segment = []
                segments.append(segment)
                continue
            segment.append(f"{px(x):.1f},{py(value):.1f}")
        for seg in segments:
            if len(seg) == 1:
                cx, cy = seg[0].split(",")
                parts.append(f'<circle cx="{cx}" cy="{cy}" r="2.5" fill="{s.color}"/>')
            elif seg:
                parts.append(
                    f'<polyline fill="none" stroke="{s.color}" stroke-width="1.8" '
                    f'points="{" ".join(seg)}"/>'
                )
    lx = left + pw
    for s in reversed(series):
        label_w = 10 + 7 * len(s.label)
        lx -= label_w + 14
        parts.append(
            f'<rect x="{lx}" y="{top - 14}" width="10" height="10" fill="{s.color}"/>'
            f'<text x="{lx + 14}" y="{top - 5}">{escape(s.label)}</text>'
        )
    parts.append("</svg>")
    return "".join(parts)
