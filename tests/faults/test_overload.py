"""Overload, then recovery: far more concurrent visitors than a web server takes in at once are
shed at the door (503 + Retry-After, at once, no timeouts, no file-descriptor pile-up), and once
the crowd leaves the very next pages are whole again: nothing (a breaker, a pool) is left stuck."""

from __future__ import annotations

import os
import time

from tests.faults.conftest import RECOVERY, FaultStack, browser, page_is_whole, page_urls
from tests.faults.load import Load, Sample, figures
from tests.support import async_wait_until

MAX_INFLIGHT = 8  # the spawned web server's bound on pages in flight
CROWD = 64  # concurrent visitors: 8x the bound


def open_fds(pid: int) -> int:
    return len(os.listdir(f"/proc/{pid}/fd"))


def shed(sample: Sample) -> bool:
    return sample.status == 503


async def test_overload_is_shed_and_pages_are_whole_right_after(stack: FaultStack, spawn, record):
    web_url, web = await spawn("web", max_inflight=str(MAX_INFLIGHT))
    urls = page_urls(web_url, stack.movie_ids)
    fds_before = open_fds(web.pid)
    async with browser() as session, Load(session, urls, concurrency=CROWD) as load:
        await load.wait_for(1500, seconds=3.0)
        fds_during = open_fds(web.pid)
    left = time.monotonic()
    await async_wait_until(
        lambda: page_is_whole(web_url, stack.movie_ids[0]), RECOVERY, "a whole page after the crowd"
    )
    whole_after_s = time.monotonic() - left
    served = [s for s in load.samples if s.status == 200]
    shed_answers = [s for s in load.samples if shed(s)]
    others = [s for s in load.samples if s.status not in (200, 503)]
    offered = len(load.samples) / (max(s.started for s in load.samples) - load.samples[0].started)
    numbers = figures(load.samples, lambda s: s.status in (200, 503)) | {
        "concurrency": CROWD,
        "max_inflight": MAX_INFLIGHT,
        "offered_per_s": round(offered),
        "served": len(served),
        "shed_503": len(shed_answers),
        "served_p99_ms": figures(served)["p99_ms"] if served else None,
        "shed_p99_ms": figures(shed_answers)["p99_ms"] if shed_answers else None,
        "fds_before": fds_before,
        "fds_during": fds_during,
        "fds_after": open_fds(web.pid),
        "whole_after_s": round(whole_after_s, 2),
    }
    line = record("overload: 64 visitors on a web server taking 8 pages at once", numbers)
    assert shed_answers, f"nothing was shed: {line}"
    assert served, f"nothing was served: {line}"
    assert not others, f"{line}: {[(s.status, s.error, s.body[:200]) for s in others[:3]]}"
    assert all(s.retry_after and int(s.retry_after) >= 1 for s in shed_answers), line
    # a socket per visitor, and per backend call of the pages in flight (up to 4 a page), at
    # most: no pile-up of waiting connections (the defect: 27 -> 2,103 descriptors)
    assert numbers["fds_during"] <= fds_before + CROWD + 4 * MAX_INFLIGHT + 8, line
    assert whole_after_s < RECOVERY, line
