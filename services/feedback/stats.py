"""The intervals an experiment is judged by: Wilson's score interval for one arm's CTR and
Newcombe's hybrid score interval for the difference between the arms.

Why these two: CTRs are small proportions over modest counts, where the textbook Wald interval
(p +/- z*sqrt(p(1-p)/n)) collapses to a point at 0 clicks and covers far less than 95 %.
Wilson's interval keeps its coverage near the nominal level down to a handful of impressions,
and Newcombe (1998, "Interval estimation for the difference between independent proportions",
method 10) combines the two arms' Wilson limits into an interval for the difference that also
needs no iteration. Both are closed forms: cheap enough to compute at every /metrics scrape.
"""

from __future__ import annotations

import math

from services.feedback.schemas import Interval

Z95 = 1.959963984540054  # the standard normal's 97.5th percentile: two-sided 95 %


def wilson(clicks: int, impressions: int, z: float = Z95) -> Interval:
    """95 % Wilson score interval for ``clicks / impressions``. No impressions means nothing is
    known: the estimate 0 and the whole range [0, 1] (defined, so a report of an arm nobody has
    seen yet still renders)."""
    if impressions <= 0:
        return Interval(0.0, 0.0, 1.0)
    n = float(impressions)
    x = float(min(max(clicks, 0), impressions))  # a click count can never exceed the views
    p = x / n
    z2 = z * z
    centre = p + z2 / (2 * n)
    half = z * math.sqrt(p * (1 - p) / n + z2 / (4 * n * n))
    scale = 1 + z2 / n
    low = 0.0 if x == 0 else (centre - half) / scale  # exact at the ends, not 1e-17 off
    high = 1.0 if x == n else (centre + half) / scale
    return Interval(p, max(0.0, low), min(1.0, high))


def newcombe(c_clicks: int, c_n: int, t_clicks: int, t_n: int, z: float = Z95) -> Interval:
    """95 % interval for the candidate's CTR minus the control's (``t`` minus ``c``), Newcombe's
    hybrid score method: the difference's distance to each limit is the root sum of squares of
    the two arms' Wilson distances on the matching sides. An arm without impressions has the
    Wilson range [0, 1], so the interval widens accordingly instead of failing."""
    control = wilson(c_clicks, c_n, z)
    candidate = wilson(t_clicks, t_n, z)
    d = candidate.estimate - control.estimate
    low = d - math.hypot(candidate.estimate - candidate.low, control.high - control.estimate)
    high = d + math.hypot(candidate.high - candidate.estimate, control.estimate - control.low)
    return Interval(d, max(-1.0, low), min(1.0, high))
