"""Thresholds decide the exit code, from the command line or the TOML file, and the report shows
each one passed or failed."""

from __future__ import annotations

import json

import pytest

from loadtest.thresholds import ThresholdError, evaluate, parse

# a generous send-lag limit: these tests are about thresholds, not a busy machine's stalls
STEADY = ["--rate", "50", "--duration", "0.6s", "--mix", "home=1", "--max-send-lag", "1h"]


@pytest.mark.parametrize(
    ("text", "scope", "metric", "op", "limit"),
    [
        ("p99<50ms", None, "p99", "<", 50.0),
        ("p99.9 <= 0.2s", None, "p99.9", "<=", 200.0),
        ("page:p50<800us", "page", "p50", "<", 0.8),
        ("errors<0.1%", None, "errors", "<", 0.001),
        ("errors<0.02", None, "errors", "<", 0.02),
        ("rps>=190", None, "rps", ">=", 190.0),
        ("max<3", None, "max", "<", 3.0),
    ],
)
def test_threshold_syntax(text, scope, metric, op, limit):
    t = parse(text, ("page", "home"))
    assert (t.scope, t.metric, t.op) == (scope, metric, op)
    assert t.limit == pytest.approx(limit)


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("p99", "is not .SCENARIO:.METRIC<VALUE"),
        ("p99<50%", "a latency takes"),
        ("errors<2ms", "errors take a %"),
        ("errors<200%", "at most 100 %"),
        ("rps>10ms", "rps takes a plain number"),
        ("p200<1ms", "between 0 and 100"),
        ("nope:p99<1ms", "unknown scenario 'nope'"),
    ],
)
def test_bad_threshold_says_why(text, message):
    with pytest.raises(ThresholdError, match=message):
        parse(text, ("page", "home"))


def test_a_metric_without_data_fails():
    (check,) = evaluate([parse("p99<1s")], lambda scope, name: None)
    assert check["passed"] is False and check["shown"] == "no data"


async def test_passing_thresholds_exit_0(fake_marquee, cli, tmp_path):
    url, _ = await fake_marquee()
    out = tmp_path / "r.json"
    code, stdout, err = await cli(
        "--base-url", url, *STEADY, "--threshold", "p99<10s", "--threshold", "errors<1%",
        "--threshold", "home:rps>1", "--out", str(out),
    )  # fmt: skip
    assert code == 0, err
    assert "thresholds: 3 passed, 0 failed" in stdout
    checks = json.loads(out.read_text())["thresholds"]
    assert [c["passed"] for c in checks] == [True, True, True]


async def test_a_failed_latency_threshold_exits_1_and_the_report_says_so(
    fake_marquee, cli, tmp_path
):
    url, _ = await fake_marquee(delay=0.02)
    html = tmp_path / "r.html"
    code, stdout, err = await cli(
        "--base-url", url, *STEADY, "--threshold", "p99<1ms", "--threshold", "errors<1%",
        "--html", str(html),
    )  # fmt: skip
    assert code == 1, err
    assert "thresholds: 1 passed, 1 failed" in stdout
    assert "FAIL  p99<1ms" in stdout and "PASS  errors<1%" in stdout
    page = html.read_text()
    assert "Thresholds: 1 passed, 1 failed" in page
    assert "✗ failed" in page and "✓ passed" in page


async def test_an_error_threshold_from_the_toml_file_fails_a_run_with_errors(
    fake_marquee, cli, tmp_path
):
    url, _ = await fake_marquee(status=503)
    conf = tmp_path / "load.toml"
    conf.write_text(f'base_url = "{url}"\nthresholds = ["errors<0.1%"]\n')
    code, stdout, err = await cli("--config", str(conf), *STEADY)
    assert code == 1, err
    assert "FAIL  errors<0.1%" in stdout and "actual 100 %" in stdout


async def test_a_bad_threshold_stops_before_any_load(fake_marquee, cli):
    url, hits = await fake_marquee()
    code, stdout, err = await cli("--base-url", url, *STEADY, "--threshold", "p99<<5")
    assert code == 2
    assert err.count("\n") == 1 and "threshold 'p99<<5'" in err
    assert sum(hits.values()) == 0
