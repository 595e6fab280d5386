"""``--compare``: refuses (or labels) runs that offered a different load, and colours only
changes beyond the run-to-run spread."""

from __future__ import annotations

import json

import numpy as np

from loadtest.compare import compare, differences
from loadtest.html_report import render_html
from loadtest.report import compare_table
from loadtest.stats import Recorder

STEADY = ["--duration", "0.6s", "--mix", "home=1", "--max-send-lag", "1h", "--no-progress"]
CONFIG = {"model": "open", "rate": 200.0, "duration": 30.0, "mix": {"page": 60, "similar": 40}}


def synthetic_run(latency_ms: np.ndarray, seconds: float = 30.0, **config: object) -> dict:
    """A results payload whose samples are ``latency_ms``, completing evenly over ``seconds``."""
    rec = Recorder(0.0, ["page"])
    for i, ms in enumerate(latency_ms):
        rec.ok(0, float(ms) / 1000.0, seconds * i / len(latency_ms))
    return {
        "tool": "marquee-loadtest",
        "config": {**CONFIG, **config},
        **rec.summary(seconds),
    }


def lognormal(seed: int, scale: float = 1.0, n: int = 6000) -> np.ndarray:
    return np.random.default_rng(seed).lognormal(np.log(5.0 * scale), 0.6, n)


def test_configurations_that_differ_are_named():
    assert differences(CONFIG, dict(CONFIG)) == []
    assert differences(CONFIG, {**CONFIG, "mix": {"page": 6, "similar": 4}}) == []  # same shares
    diffs = differences({**CONFIG, "rate": 100.0, "mix": {"page": 1}}, CONFIG)
    assert diffs == ["rate 200 -> 100", "mix page=60,similar=40 -> page=1"]


def test_a_second_draw_from_the_same_distribution_is_not_coloured():
    cmp = compare(synthetic_run(lognormal(2)), synthetic_run(lognormal(1)))
    assert cmp["comparable"] is True
    cells = [c for row in cmp["rows"].values() for c in row.values()]
    assert not any(c["significant"] for c in cells)
    html = render_html({**synthetic_run(lognormal(2)), "windows": []}, cmp)
    assert 'class="bad"' not in html and 'class="good"' not in html


def test_a_real_slowdown_is_coloured_worse():
    cmp = compare(synthetic_run(lognormal(2, scale=1.5)), synthetic_run(lognormal(1)))
    p99 = cmp["rows"]["total"]["p99"]
    assert p99["significant"] and p99["verdict"] == "worse" and p99["pct"] > 30
    lo, hi = p99["interval"]
    assert 0 < lo < hi
    assert cmp["rows"]["total"]["max"]["significant"] is False  # one sample: never judged
    assert "!" in compare_table(cmp)
    html = render_html({**synthetic_run(lognormal(2, scale=1.5)), "windows": []}, cmp)
    assert 'class="bad"' in html


def test_a_forced_comparison_of_different_loads_is_labelled_and_never_coloured():
    new = synthetic_run(lognormal(2, scale=1.5), rate=100.0)
    cmp = compare(new, synthetic_run(lognormal(1)), forced=True)
    assert cmp["comparable"] is False and cmp["differences"] == ["rate 200 -> 100"]
    assert not any(c["significant"] for row in cmp["rows"].values() for c in row.values())
    assert "NOT COMPARABLE" in compare_table(cmp)
    html = render_html({**new, "windows": []}, cmp)
    assert "Not comparable" in html and 'class="bad"' not in html


async def test_cli_refuses_to_compare_a_different_load_before_sending(fake_marquee, cli, tmp_path):
    url, hits = await fake_marquee()
    old = tmp_path / "old.json"
    code, _, err = await cli("--base-url", url, "--rate", "100", *STEADY, "--out", str(old))
    assert code == 0, err
    sent = sum(hits.values())
    code, out, err = await cli("--base-url", url, "--rate", "50", *STEADY, "--compare", str(old))
    assert code == 2
    assert err.count("\n") == 1 and "rate 100 -> 50" in err and "--compare-anyway" in err
    assert sum(hits.values()) == sent  # nothing was sent

    new = tmp_path / "new.json"
    code, out, err = await cli(
        "--base-url", url, "--rate", "50", *STEADY, "--compare", str(old), "--compare-anyway",
        "--out", str(new),
    )  # fmt: skip
    assert code == 0, err
    assert "NOT COMPARABLE" in out
    assert json.loads(new.read_text())["comparison"]["comparable"] is False
