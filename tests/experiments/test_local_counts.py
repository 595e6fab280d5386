"""The no-Redis counts: applied in-process, kept in a file, counted once per batch."""

from __future__ import annotations

from pathlib import Path

from services.feedback.aggregate import LocalCounts
from services.feedback.schemas import FeedbackKeys
from tests.experiments.conftest import MINUTE, MakeBatch

KEYS = FeedbackKeys("ns")


async def test_local_counts_add_impressions_and_clicks_per_minute(
    tmp_path: Path, make_batch: MakeBatch
) -> None:
    counts = LocalCounts(tmp_path / "counts.json", KEYS)
    await counts.add(make_batch(impressions=3, clicks=1))
    await counts.add(make_batch(impressions=2, clicks=0))
    assert await counts.read(KEYS.counts("e1", "control", "v1")) == {
        "impressions": 5,
        "clicks": 1,
        f"i:{MINUTE}": 5,
        f"c:{MINUTE}": 1,
    }


async def test_local_counts_count_a_batch_added_twice_once(
    tmp_path: Path, make_batch: MakeBatch
) -> None:
    counts = LocalCounts(tmp_path / "counts.json", KEYS)
    batch = make_batch(impressions=4, clicks=2)
    await counts.add(batch)
    await counts.add(batch)
    assert (await counts.read(KEYS.counts("e1", "control", "v1")))["impressions"] == 4


async def test_local_counts_survive_a_restart(tmp_path: Path, make_batch: MakeBatch) -> None:
    path = tmp_path / "counts.json"
    batch = make_batch(impressions=2, clicks=1, arm="candidate", version="v2")
    await LocalCounts(path, KEYS).add(batch)
    again = LocalCounts(path, KEYS)
    await again.add(batch)  # the restarted process still knows the batch was counted
    assert (await again.read(KEYS.counts("e1", "candidate", "v2")))["clicks"] == 1
    assert (await again.read(KEYS.counts("e1", "candidate", "v2")))["impressions"] == 2


async def test_local_counts_read_any_namespace_and_nothing_as_empty(
    tmp_path: Path, make_batch: MakeBatch
) -> None:
    counts = LocalCounts(tmp_path / "counts.json")
    await counts.add(make_batch(impressions=1))
    assert (await counts.read(FeedbackKeys("other").counts("e1", "control", "v1")))[
        "impressions"
    ] == 1
    assert await counts.read(KEYS.counts("e1", "candidate", "v1")) == {}


async def test_another_process_reads_what_the_writer_added(
    tmp_path: Path, make_batch: MakeBatch
) -> None:
    path = tmp_path / "counts.json"
    reader = LocalCounts(path, KEYS)
    assert await reader.read(KEYS.counts("e1", "control", "v1")) == {}
    await LocalCounts(path, KEYS).add(make_batch(impressions=3))
    assert (await reader.read(KEYS.counts("e1", "control", "v1")))["impressions"] == 3


async def test_an_unreadable_counts_file_starts_from_zero(
    tmp_path: Path, make_batch: MakeBatch
) -> None:
    path = tmp_path / "counts.json"
    path.write_text("{not json")
    counts = LocalCounts(path, KEYS)
    await counts.add(make_batch(impressions=1))
    assert (await counts.read(KEYS.counts("e1", "control", "v1")))["impressions"] == 1
