"""The dashboard's reading of a Prometheus exposition: percentiles from histogram buckets (as
PromQL's ``histogram_quantile``), cache hit ratios and a gauge."""

from __future__ import annotations

import math

import pytest

from web_server.admin_metrics import cache_ratios, gauge, quantile, route_latencies, samples

EXPOSITION = """# TYPE marquee_http_request_duration_seconds histogram
marquee_http_request_duration_seconds_bucket{route="/movies/{id}",method="GET",le="0.01"} 50.0
marquee_http_request_duration_seconds_bucket{route="/movies/{id}",method="GET",le="0.1"} 99.0
marquee_http_request_duration_seconds_bucket{route="/movies/{id}",method="GET",le="+Inf"} 100.0
marquee_http_request_duration_seconds_count{route="/movies/{id}",method="GET"} 100.0
marquee_http_request_duration_seconds_sum{route="/movies/{id}",method="GET"} 1.5
marquee_http_request_duration_seconds_bucket{route="/healthz",method="GET",le="+Inf"} 7.0
marquee_http_request_duration_seconds_count{route="/healthz",method="GET"} 7.0
# TYPE marquee_cache_requests counter
marquee_cache_requests_total{cache="l1",result="hit"} 3.0
marquee_cache_requests_total{cache="l1",result="miss"} 1.0
marquee_cache_requests_total{cache="redis",result="error"} 2.0
# TYPE marquee_batch_queue_depth gauge
marquee_batch_queue_depth 4.0
"""


def test_a_quantile_is_interpolated_within_its_bucket():
    buckets = [(0.01, 50.0), (0.1, 99.0), (math.inf, 100.0)]
    assert quantile(0.5, buckets) == pytest.approx(0.01)
    assert quantile(0.99, buckets) == pytest.approx(0.1)
    assert quantile(0.75, buckets) == pytest.approx(0.01 + 0.09 * 25 / 49)


def test_a_rank_past_the_last_bound_is_the_last_finite_bound():
    assert quantile(0.99, [(0.01, 1.0), (math.inf, 100.0)]) == pytest.approx(0.01)


def test_no_observations_is_no_quantile():
    assert quantile(0.5, [(0.01, 0.0), (math.inf, 0.0)]) is None


def test_routes_leave_the_machinery_out():
    rows = route_latencies(samples(EXPOSITION))
    assert [(r.route, r.count) for r in rows] == [("/movies/{id}", 100)]
    assert rows[0].p50 == pytest.approx(0.01) and rows[0].p99 == pytest.approx(0.1)


def test_cache_ratios_are_hits_over_hits_and_misses():
    ratios = {r.cache: r for r in cache_ratios(samples(EXPOSITION), "here")}
    assert ratios["l1"].ratio == pytest.approx(0.75) and ratios["l1"].other == 0
    assert ratios["redis"].ratio is None and ratios["redis"].other == 2


def test_a_gauge_is_read_and_a_missing_one_is_none():
    found = samples(EXPOSITION)
    assert gauge(found, "marquee_batch_queue_depth") == 4.0
    assert gauge(found, "marquee_nothing") is None
