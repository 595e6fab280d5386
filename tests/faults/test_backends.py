"""Faults in the backends of the composed page, for real: a service is killed or stalled by
signal while a bounded stream of page requests runs, then brought back."""

from __future__ import annotations

import signal
import time

from tests.faults.conftest import (
    RECOVERY,
    USER_ID,
    FaultStack,
    browser,
    metric_values,
    page_urls,
)
from tests.faults.load import Load, Sample, failures, figures
from tests.support import async_wait_until

FALLBACK_NOTE = "recommendations are unavailable right now"
PLAN_NOTE = "Your plan cannot be shown right now."
PHASE = 250  # at least this many page requests per fault phase...
PHASE_S = 2.0  # ...over at least this many seconds


def outcome_counts(samples: list[Sample], backend: str) -> dict[str, int]:
    """How the web's calls to ``backend`` ended, per the ``Server-Timing`` header of the JSON
    pages (the streamed HTML page's header leaves before the slower fragments are done)."""
    counts: dict[str, int] = {}
    for sample in (s for s in samples if s.is_json):
        outcome = sample.outcomes().get(backend, "absent")
        counts[outcome] = counts.get(outcome, 0) + 1
    return counts


def similar_source(sample: Sample) -> str | None:
    """The similar row's source ("fallback", "model", "cache") of a 200 page, else None."""
    if sample.status != 200:
        return None
    if sample.is_json:
        return sample.json()["similar"]["source"]
    return "fallback" if FALLBACK_NOTE in sample.body else "recommender"


def recommended(sample: Sample) -> bool:
    """A 200 page whose similar row came from the recommender (not the fallback)."""
    return similar_source(sample) not in (None, "fallback")


def fallback_page_ok(sample: Sample) -> bool:
    """200, and a fallback row is a full row of popular movies marked degraded."""
    if sample.status != 200:
        return False
    if not sample.is_json:
        return similar_source(sample) != "fallback" or "Popular " in sample.body
    data = sample.json()
    if data["similar"]["source"] == "fallback":
        return "similar" in data["degraded"] and len(data["similar"]["items"]) >= 8
    return data["degraded"] == []


async def test_recommender_killed(stack: FaultStack, record):
    """SIGKILL: pages stay 200 with the fallback row, fast; a restart is picked up in seconds."""
    urls = page_urls(stack.web_url, stack.movie_ids)
    async with browser() as session, Load(session, urls) as load:
        await load.wait_for(40)
        fault = time.monotonic()
        stack.kill("recommender", signal.SIGKILL)
        killed = time.monotonic()
        await load.wait_for(PHASE, since=killed, seconds=PHASE_S)
        restarting = time.monotonic()
        ready = await stack.restart("recommender")
        recovered = await load.wait_for_sample(
            recommended,
            ready,
            2 * RECOVERY,
            "recovered page",
        )
    during = load.since(fault, recovered)
    outage = load.since(killed, restarting)
    numbers = figures(during, fallback_page_ok)
    numbers |= {
        "fallback_pages": sum(similar_source(s) == "fallback" for s in outage),
        "recommender_outcomes": outcome_counts(outage, "recommender"),
        "restart_s": round(ready - restarting, 2),
        "recovered_after_ready_s": round(recovered - ready, 2),
    }
    line = record("recommender killed (SIGKILL)", numbers)
    assert set(numbers["recommender_outcomes"]) <= {"connection", "circuit_open"}, line
    assert numbers["errors"] == 0, f"{line}: {failures(during, fallback_page_ok)}"
    odd = [s for s in outage if similar_source(s) != "fallback"]
    assert not odd, f"{line}: {[(s.url, s.started - killed, s.body[:300]) for s in odd[:3]]}"
    assert recovered - ready < RECOVERY, line


async def test_recommender_stalls(stack: FaultStack, record):
    """SIGSTOP: pages stay 200 within the page budget, the web's circuit for the recommender
    opens (calls stop going out), and SIGCONT is picked up within seconds."""
    urls = page_urls(stack.web_url, stack.movie_ids)
    async with browser() as session, Load(session, urls) as load:
        await load.wait_for(40)
        fault = time.monotonic()
        stack.process("recommender").signal(signal.SIGSTOP)
        opened: list[bool] = []

        async def circuit_open() -> bool:
            states = await metric_values(stack.web_url, "marquee_circuit_state")
            opened.append(any('backend="recommender"' in k and v == 2 for k, v in states))
            return opened[-1]

        await async_wait_until(circuit_open, 10, "the recommender's circuit to open")
        await load.wait_for(PHASE, since=fault, seconds=PHASE_S)
        calls_before = await _short_circuited(stack.web_url)
        await load.wait_for(60, since=time.monotonic())
        calls_after = await _short_circuited(stack.web_url)
        stack.process("recommender").signal(signal.SIGCONT)
        resumed = time.monotonic()
        recovered = await load.wait_for_sample(
            recommended,
            resumed,
            2 * RECOVERY,
            "recovered page",
        )
    during = load.since(fault, recovered)
    numbers = figures(during, fallback_page_ok)
    numbers |= {
        "fallback_pages": sum(similar_source(s) == "fallback" for s in during),
        "short_circuited_calls": calls_after,
        "recommender_outcomes": outcome_counts(load.since(fault, resumed), "recommender"),
        "recovered_after_sigcont_s": round(recovered - resumed, 2),
    }
    line = record("recommender stalls (SIGSTOP)", numbers)
    assert set(numbers["recommender_outcomes"]) <= {"ok", "timeout", "circuit_open"}, line
    assert numbers["recommender_outcomes"].get("circuit_open", 0) > 0, line
    assert numbers["errors"] == 0, f"{line}: {failures(during, fallback_page_ok)}"
    assert calls_after > calls_before, f"{line}: calls still went out to a stalled recommender"
    assert recovered - resumed < RECOVERY, line


async def _short_circuited(web_url: str) -> float:
    """Calls the web answered itself because the recommender's circuit was open."""
    values = await metric_values(web_url, "marquee_backend_calls_total")
    return sum(
        v for k, v in values if 'backend="recommender"' in k and 'outcome="circuit_open"' in k
    )


def plan_fallback_ok(sample: Sample) -> bool:
    """200 with the anonymous "Join" box, marked degraded."""
    if sample.status != 200:
        return False
    if sample.is_json:
        data = sample.json()
        return "plan" in data["degraded"] and data["plan"]["status"] == "unavailable"
    return "Join Marquee" in sample.body and PLAN_NOTE in sample.body


async def test_subscription_killed(stack: FaultStack, record):
    """A logged-in viewer's pages stay 200 with the "Join" box marked degraded."""
    urls = page_urls(stack.web_url, stack.movie_ids)
    async with browser(USER_ID) as session, Load(session, urls) as load:
        await load.wait_for(40)
        fault = time.monotonic()
        stack.kill("subscription")
        killed = time.monotonic()
        await load.wait_for(PHASE, since=killed, seconds=PHASE_S)
        restarting = time.monotonic()
        ready = await stack.restart("subscription")
        recovered = await load.wait_for_sample(
            lambda s: s.status == 200 and s.is_json and "plan" not in s.json()["degraded"],
            ready,
            10,
            "the plan back on the page",
        )
    during = load.since(fault, recovered)
    outage = load.since(killed, restarting)
    numbers = figures(during)
    numbers |= {
        "degraded_pages": sum(plan_fallback_ok(s) for s in outage),
        "subscription_outcomes": outcome_counts(outage, "subscription"),
        "restart_s": round(ready - restarting, 2),
        "recovered_after_ready_s": round(recovered - ready, 2),
    }
    line = record("subscription killed (SIGKILL)", numbers)
    assert set(numbers["subscription_outcomes"]) <= {"connection", "circuit_open"}, line
    assert numbers["errors"] == 0, f"{line}: {failures(during, lambda s: s.status == 200)}"
    assert all(plan_fallback_ok(s) for s in outage), f"{line}: {failures(outage, plan_fallback_ok)}"
    assert recovered - ready < RECOVERY, line


def catalog_down_ok(sample: Sample) -> bool:
    """A clear 503: an HTML error page or a JSON error, never a traceback or a 500."""
    if sample.status != 503:
        return False
    if sample.is_json:
        return sample.json()["error"]["code"] == "catalog_unavailable"
    return "unavailable" in sample.body and "Traceback" not in sample.body


async def test_catalog_killed(stack: FaultStack, record):
    """The primary fragment is gone: a clear, fast 503 page; a restart is picked up."""
    urls = page_urls(stack.web_url, stack.movie_ids)
    async with browser() as session, Load(session, urls) as load:
        await load.wait_for(40)
        fault = time.monotonic()
        stack.kill("catalog")
        killed = time.monotonic()
        await load.wait_for(PHASE, since=killed, seconds=PHASE_S)
        restarting = time.monotonic()
        ready = await stack.restart("catalog")
        recovered = await load.wait_for_sample(
            lambda s: s.status == 200, ready, 10, "a 200 page again"
        )
    during = load.since(fault, recovered)
    outage = load.since(killed, restarting)
    numbers = figures(during)  # errors: the 503s, expected here
    numbers |= {
        "unclear_errors": sum(not catalog_down_ok(s) for s in outage),
        "catalog_outcomes": outcome_counts(outage, "catalog"),
        "restart_s": round(ready - restarting, 2),
        "recovered_after_ready_s": round(recovered - ready, 2),
    }
    line = record("catalog killed (SIGKILL)", numbers)
    assert set(numbers["catalog_outcomes"]) <= {"connection", "circuit_open"}, line
    assert numbers["unclear_errors"] == 0, f"{line}: {failures(outage, catalog_down_ok)}"
    unexpected = [s for s in during if s.status not in (200, 503)]
    assert not unexpected, failures(unexpected, lambda s: False)
    assert recovered - ready < RECOVERY, line
