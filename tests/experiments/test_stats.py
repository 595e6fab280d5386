"""Wilson's and Newcombe's intervals against the published worked examples.

Newcombe, R. G. (1998). Two-sided confidence intervals for the single proportion: comparison of
seven methods (Stat Med 17:857-872), Table I, method 3 (Wilson score); and Interval estimation
for the difference between independent proportions: comparison of eleven methods (Stat Med
17:873-890), Table II, method 10 (hybrid score). The same figures are the expected values of
the R package propint's tests."""

from __future__ import annotations

import pytest

from services.feedback.stats import newcombe, wilson


@pytest.mark.parametrize(
    ("clicks", "n", "low", "high"),
    [
        (81, 263, 0.2553, 0.3662),
        (15, 148, 0.0624, 0.1605),
        (0, 20, 0.0, 0.1611),
        (1, 29, 0.0061, 0.1718),
    ],
)
def test_wilson_matches_newcombe_1998_table_1(clicks: int, n: int, low: float, high: float) -> None:
    interval = wilson(clicks, n)
    assert interval.estimate == pytest.approx(clicks / n)
    assert interval.low == pytest.approx(low, abs=5e-5)
    assert interval.high == pytest.approx(high, abs=5e-5)


@pytest.mark.parametrize(
    ("a", "m", "b", "n", "low", "high"),
    [
        (56, 70, 48, 80, 0.0524, 0.3339),
        (9, 10, 3, 10, 0.1705, 0.8090),
        (6, 7, 2, 7, 0.0582, 0.8062),
        (5, 56, 0, 29, -0.0381, 0.1926),
        (0, 10, 0, 20, -0.1611, 0.2775),
        (0, 10, 0, 10, -0.2775, 0.2775),
        (10, 10, 0, 20, 0.6791, 1.0),
        (10, 10, 0, 10, 0.6075, 1.0),
    ],
)
def test_newcombe_matches_newcombe_1998_table_2(
    a: int, m: int, b: int, n: int, low: float, high: float
) -> None:
    # the paper's difference is the first proportion minus the second: candidate a/m, control b/n
    interval = newcombe(b, n, a, m)
    assert interval.estimate == pytest.approx(a / m - b / n)
    assert interval.low == pytest.approx(low, abs=5e-5)
    assert interval.high == pytest.approx(high, abs=5e-5)


def test_wilson_of_no_impressions_is_the_whole_range() -> None:
    interval = wilson(0, 0)
    assert (interval.estimate, interval.low, interval.high) == (0.0, 0.0, 1.0)


def test_newcombe_with_an_arm_without_impressions_is_defined() -> None:
    interval = newcombe(0, 0, 5, 50)
    assert -1.0 <= interval.low < interval.estimate < interval.high <= 1.0
    assert newcombe(0, 0, 0, 0).low == -1.0 and newcombe(0, 0, 0, 0).high == 1.0


def test_wilson_clamps_more_clicks_than_impressions() -> None:
    interval = wilson(12, 10)
    assert interval.estimate == 1.0 and interval.high == 1.0 and interval.low < 1.0


def test_newcombe_is_antisymmetric() -> None:
    forward, backward = newcombe(48, 80, 56, 70), newcombe(56, 70, 48, 80)
    assert forward.low == pytest.approx(-backward.high)
    assert forward.high == pytest.approx(-backward.low)
