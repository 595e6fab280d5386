"""The generator's own health: send lag measured apart, an overrun run flagged invalid.

Lag is forced, not hoped for: a million arrivals per second is beyond any Python process on any
machine, so the generator falls behind whatever else the machine is doing.
"""

from __future__ import annotations

from loadtest.runner import run_load

ABSURD_RATE = 1_000_000.0


async def test_a_generator_that_cannot_keep_up_marks_the_run_invalid(
    fake_marquee, config, workload
):
    url, _ = await fake_marquee()
    cfg = config(base_url=url, rate=ABSURD_RATE, duration=0.3, timeout=1.0, mix={"home": 1})
    res = await run_load(cfg, workload=workload)
    gen = res["generator"]
    assert res["valid"] is False
    assert any("fell behind" in r for r in res["invalid_reasons"])
    assert gen["send_lag_ms"]["p99"] > gen["max_send_lag_ms"]
    assert gen["unsent"] > 0 and gen["sent"] + gen["unsent"] == gen["due"] == 300_000
    assert res["total"]["errors"]["unsent"] == gen["unsent"]
    first = res["windows"][0]
    assert first["due"] == 300_000 and first["sent"] < first["due"]  # the shortfall, visible


async def test_a_run_that_keeps_up_is_valid_and_reports_its_lag(fake_marquee, config, workload):
    url, _ = await fake_marquee()
    # a generous limit: on a busy test machine a short stall of this process is not the point
    cfg = config(base_url=url, rate=100.0, duration=0.5, mix={"home": 1}, max_send_lag=5.0)
    res = await run_load(cfg, workload=workload)
    gen = res["generator"]
    assert res["valid"] is True and res["invalid_reasons"] == []
    assert gen["due"] == gen["sent"] == 50 and gen["unsent"] == 0
    assert gen["send_lag_ms"]["p50"] <= gen["send_lag_ms"]["p99"] <= gen["send_lag_ms"]["max"]
    assert gen["http_requests"] == 50 and gen["cpu_us_per_request"] > 0


async def test_cli_says_invalid_loudly_and_exits_4(fake_marquee, cli, tmp_path):
    url, _ = await fake_marquee()
    html = tmp_path / "r.html"
    code, out, err = await cli(
        "--base-url", url, "--rate", str(int(ABSURD_RATE)), "--duration", "0.3s",
        "--timeout", "1s", "--mix", "home=1", "--html", str(html), "--no-progress",
    )  # fmt: skip
    assert code == 4, err
    assert "INVALID RUN" in out and "INVALID RUN" in err
    assert "send lag" in out
    page = html.read_text()
    assert "class=invalid" in page and "INVALID RUN" in page
