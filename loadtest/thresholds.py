"""Pass/fail thresholds, k6 style: ``p99<50ms``, ``errors<0.1%``, ``page:p99.9<200ms``.

A threshold is ``[SCENARIO:]METRIC OP VALUE[UNIT]``:

- latency metrics ``pNN`` (any percentile: ``p50``, ``p99.9``), ``mean``, ``min``, ``max``;
  units ``us``, ``ms`` (the default) or ``s``; timeouts count at their full wait, as in the
  headline figures;
- ``errors``: the error rate, as a percentage (``0.1%``) or a fraction (``0.001``);
- ``rps``: successful responses per second.

Any failed threshold makes the run exit with status 1; the report shows each one.
"""

from __future__ import annotations

import operator
import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

_SPEC = re.compile(
    r"^\s*(?:(?P<scope>[a-z_]+)\s*:\s*)?(?P<metric>p\d+(?:\.\d+)?|mean|min|max|errors|rps)"
    r"\s*(?P<op><=|>=|<|>)\s*(?P<value>\d+(?:\.\d+)?)\s*(?P<unit>us|µs|ms|s|%)?\s*$"
)
OPS: dict[str, Callable[[float, float], bool]] = {
    "<": operator.lt,
    "<=": operator.le,
    ">": operator.gt,
    ">=": operator.ge,
}
_LATENCY_SCALE = {"us": 0.001, "µs": 0.001, "ms": 1.0, "s": 1000.0, None: 1.0}


class ThresholdError(ValueError):
    """A threshold that cannot be parsed."""


@dataclass(frozen=True)
class Threshold:
    text: str
    scope: str | None  # a scenario name, or None for the whole run
    metric: str  # "p99.9", "mean", "errors", "rps", ...
    op: str
    limit: float  # ms for latency, a fraction for errors, req/s for rps

    @property
    def unit(self) -> str:
        return {"errors": "%", "rps": "req/s"}.get(self.metric, "ms")

    def shown(self, value: float) -> str:
        if self.metric == "errors":
            return f"{value * 100:.3g} %"
        if self.metric == "rps":
            return f"{value:,.1f} req/s"
        return f"{value:,.2f} ms"


def parse(text: str, scenarios: tuple[str, ...] | None = None) -> Threshold:
    """Parse one threshold; ``scenarios`` (when given) are the names a scope may use."""
    m = _SPEC.match(text)
    if not m:
        raise ThresholdError(
            f"threshold {text!r} is not [SCENARIO:]METRIC<VALUE, e.g. 'p99<50ms', "
            "'errors<0.1%', 'page:p99.9<200ms', 'rps>=190'"
        )
    metric, unit = m.group("metric"), m.group("unit")
    value = float(m.group("value"))
    if metric == "errors":
        if unit not in (None, "%"):
            raise ThresholdError(f"threshold {text!r}: errors take a % or a fraction")
        limit = value / 100.0 if unit == "%" else value
        if limit > 1:
            raise ThresholdError(f"threshold {text!r}: an error rate is at most 100 %")
    elif metric == "rps":
        if unit is not None:
            raise ThresholdError(f"threshold {text!r}: rps takes a plain number")
        limit = value
    else:
        if unit == "%":
            raise ThresholdError(f"threshold {text!r}: a latency takes us, ms or s")
        if metric.startswith("p") and not 0 < float(metric[1:]) <= 100:
            raise ThresholdError(f"threshold {text!r}: a percentile is between 0 and 100")
        limit = value * _LATENCY_SCALE[unit]
    scope = m.group("scope")
    if scope is not None and scenarios is not None and scope not in scenarios:
        raise ThresholdError(
            f"threshold {text!r}: unknown scenario {scope!r} (known: {', '.join(scenarios)})"
        )
    return Threshold(text.strip(), scope, metric, m.group("op"), limit)


Metric = Callable[[str | None, str], float | None]


def evaluate(thresholds: list[Threshold], metric: Metric) -> list[dict[str, Any]]:
    """Each threshold with its actual value and verdict; a metric without data fails."""
    out = []
    for t in thresholds:
        actual = metric(t.scope, t.metric)
        passed = actual is not None and OPS[t.op](actual, t.limit)
        out.append(
            {
                "threshold": t.text,
                "scope": t.scope,
                "metric": t.metric,
                "op": t.op,
                "limit": t.limit,
                "unit": t.unit,
                "actual": actual,
                "shown": "no data" if actual is None else t.shown(actual),
                "passed": passed,
            }
        )
    return out
