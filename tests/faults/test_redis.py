"""Redis under the recommender, killed or stalled for real: Redis is an optimisation, so the
recommender keeps answering (from the model, and saying so) and picks Redis up again by itself."""

from __future__ import annotations

import itertools
import signal
import time

import aiohttp

from recommender.cache import cache_key, redis_key
from tests.faults.conftest import (
    RECOVERY,
    FaultStack,
    browser,
    page_urls,
    redis_has,
)
from tests.faults.load import Load, Sample, failures, figures
from tests.support import async_wait_until

PHASE = 300  # at least this many requests per fault phase...
PHASE_S = 2.0  # ...over at least this many seconds


def mixed_urls(stack: FaultStack, ks: range) -> list[str]:
    """Pages through the web, interleaved with direct recommender calls over many (movie, k)
    pairs no other scenario uses, so they miss the recommender's in-process cache and keep
    going to Redis while the pages exercise the whole path."""
    pages = page_urls(stack.web_url, stack.movie_ids)
    pairs = [(m, k) for k in ks for m in stack.movie_ids]
    direct = [f"{stack.url('recommender')}/v1/similar/{m}?k={k}" for m, k in pairs]
    mixed = []
    for page, call in zip(itertools.cycle(pages), direct, strict=False):
        mixed += [page, call]
    return mixed


def answered(sample: Sample) -> bool:
    """200 and whole: a page with nothing degraded, a recommender answer from cache or model."""
    if sample.status != 200:
        return False
    if "/v1/similar/" in sample.url:
        return sample.json()["source"] in ("cache", "collaborative", "blend", "content")
    if sample.is_json:
        return sample.json()["degraded"] == []
    return "recommendations are unavailable" not in sample.body


async def redis_used_again(stack: FaultStack, since_ready: float, timeout: float) -> float:
    """Seconds until a fresh answer is written to Redis again (a (movie, k) no load used)."""
    async with aiohttp.ClientSession() as session:

        async def written() -> bool:
            movie, k = next(stack.fresh_pairs)
            url = f"{stack.url('recommender')}/v1/similar/{movie}?k={k}"
            async with session.get(url) as resp:
                data = await resp.json()
            key = cache_key(data["model_version"], "similar", f"{movie}:{k}")
            return await redis_has(stack.redis_url, redis_key(stack.namespace, key))

        await async_wait_until(written, timeout, "the recommender writing to Redis again")
    return time.monotonic() - since_ready


async def _redis_fault(stack: FaultStack, record, scenario: str, stall: bool, ks: range) -> None:
    async with browser() as session, Load(session, mixed_urls(stack, ks)) as load:
        await load.wait_for(40)
        fault = time.monotonic()
        if stall:
            stack.process("redis").signal(signal.SIGSTOP)
        else:
            stack.kill("redis")
        await load.wait_for(PHASE, since=fault, seconds=PHASE_S)
        ending = time.monotonic()
        if stall:
            stack.process("redis").signal(signal.SIGCONT)
            back = time.monotonic()
        else:
            back = await stack.restart("redis")
        reused_after = await redis_used_again(stack, back, 2 * RECOVERY)
        end = time.monotonic()
    during = load.since(fault, end)
    outage = load.since(fault, ending)
    direct = [s for s in outage if "/v1/similar/" in s.url and s.status == 200]
    numbers = figures(during, answered)
    numbers |= {
        "recommender_calls": len([s for s in during if "/v1/similar/" in s.url]),
        "answered_from_model": sum(s.json()["source"] != "cache" for s in direct),
        "redis_used_again_after_s": round(reused_after, 2),
    }
    line = record(scenario, numbers)
    assert numbers["errors"] == 0, f"{line}: {failures(during, answered)}"
    assert numbers["answered_from_model"] > 0, line
    assert reused_after < RECOVERY, line


async def test_redis_killed_then_restarted(stack: FaultStack, record):
    """SIGKILL Redis: zero errors, answers from the model; after a restart Redis is used again."""
    await _redis_fault(stack, record, "redis killed, then restarted", stall=False, ks=range(5, 50))


async def test_redis_stalls(stack: FaultStack, record):
    """SIGSTOP Redis (slow, not refused): short timeouts keep answers fast; SIGCONT reuses it."""
    await _redis_fault(stack, record, "redis stalls (SIGSTOP)", stall=True, ks=range(50, 95))
