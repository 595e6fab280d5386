"""What tracking the similar row adds to a movie page's CPU, per page: ``python -m
bench.feedback_row [--pages N]``.

Measured in one process, no I/O: the part of the page the tracking changed, before and after.
Before: the cached row's HTML handed out as is. After: the viewer's arm (the experiment store's
cached read, the visitor cookie, the hash), a random view id, the signed token of the shown
row, the buffered impression, and the token joined into the cached row's links. Both with and
without a running experiment. The figure is the difference, in µs per page (best of 5 runs).
"""

from __future__ import annotations

import argparse
import asyncio
import time
from pathlib import Path

from aiohttp.test_utils import make_mocked_request

from services.catalog.schemas import Movie
from services.feedback.buffer import EventBuffer
from services.feedback.schemas import EventBatch, Experiment, FeedbackKeys
from services.feedback.state import ExperimentStore
from services.platform.settings import PROJECT_ROOT, Settings
from web_server.feedback import WebFeedback
from web_server.fragments import MovieFragments
from web_server.render import environment
from web_server.schemas import PageItem, SimilarRow

ROW = 12
FLUSH_EVERY = 500  # pages per flush: a busy process's ~100 ms
VERSION = "20261207T000000Z-0123456789ab"


async def _nothing(batch: EventBatch) -> None:
    return None


def _row() -> SimilarRow:
    items = tuple(
        PageItem(1000 + i, f"A movie title number {i}", 1990 + i, ("Drama", "Comedy"), 0.9)
        for i in range(ROW)
    )
    return SimilarRow(items, "model", VERSION)


async def _measure(pages: int, running: Experiment | None) -> tuple[float, float]:
    settings = Settings(var_dir=Path("/nonexistent"), secret_key="k" * 32, redis_url="")
    keys = FeedbackKeys("bench")
    store = ExperimentStore(None, keys, Path("/nonexistent/experiment.json"), refresh=3600.0)
    store._known, store._read_at = running, time.monotonic()  # as if just read
    buffer = EventBuffer(_nothing, capacity=pages, interval=3600.0)
    feedback = WebFeedback(settings, keys, store, buffer, None)
    fragments = MovieFragments(environment(PROJECT_ROOT / "templates"))
    movie = Movie(1, "The movie", 1999, ("Drama",), None, None, 0, None, ())
    row = _row()
    request = make_mocked_request(
        "GET", "/movies/1", headers={"Cookie": "marquee_visitor=abcdefghijklmnopqrstuv"}
    )

    started = time.perf_counter()
    for _ in range(pages):
        fragments.similar_row(row, movie, False).html()
    before = time.perf_counter() - started

    started = time.perf_counter()
    for n in range(pages):
        arm = await feedback.page_arm(request)
        fragment = fragments.similar_row(row, movie, False)
        feedback.tracked_html(fragment, VERSION, arm)
        if n % FLUSH_EVERY == 0:  # as the flusher empties the buffer every 100 ms
            await buffer.flush()
    after = time.perf_counter() - started
    assert buffer.sink is _nothing and len(buffer) < FLUSH_EVERY
    return before / pages * 1e6, after / pages * 1e6


def measure(pages: int = 20_000, runs: int = 5) -> dict[str, float]:
    """µs per page: the untracked row, the tracked one, the difference; without and with an
    experiment running."""
    running = Experiment("exp", "v1", "v2", 0.5, "salt", "2026-12-07T00:00:00Z")
    out: dict[str, float] = {}
    for name, experiment in (("no_experiment", None), ("experiment", running)):
        results = [asyncio.run(_measure(pages, experiment)) for _ in range(runs)]
        before = min(r[0] for r in results)
        after = min(r[1] for r in results)
        out[f"{name}_before_us"] = round(before, 2)
        out[f"{name}_after_us"] = round(after, 2)
        out[f"{name}_added_us"] = round(after - before, 2)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.feedback_row", description=__doc__)
    parser.add_argument("--pages", type=int, default=20_000)
    args = parser.parse_args()
    for name, value in measure(args.pages).items():
        print(f"{name:28} {value:8.2f}")


if __name__ == "__main__":
    main()
