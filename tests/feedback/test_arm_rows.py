"""Which experiment a row is counted in: only a row its arm's version made counts for the arm."""

from __future__ import annotations

from pathlib import Path

from aiohttp.test_utils import make_mocked_request

from services.catalog.schemas import Movie
from services.feedback.assignment import arm_for
from services.feedback.buffer import EventBuffer
from services.feedback.schemas import EventBatch, Experiment, FeedbackKeys, Impression
from services.feedback.state import ExperimentStore
from services.platform.settings import PROJECT_ROOT, Settings
from web_server.feedback import WebFeedback
from web_server.fragments import MovieFragments
from web_server.render import environment
from web_server.schemas import PageItem, SimilarRow

VISITOR = "the-visitor-of-this-test"  # a valid cookie id: the arm is fixed by it
EXPERIMENT = Experiment("e1", "v-control", "v-candidate", 0.5, "salt", "2026-12-07T00:00:00Z")


async def _nowhere(batch: EventBatch) -> None:
    return None


async def _shown(tmp_path: Path, served_by: str) -> Impression:
    """One visitor's page while EXPERIMENT runs, its row made by ``served_by``."""
    keys = FeedbackKeys("t")
    store = ExperimentStore(None, keys, tmp_path / "experiment.json")
    await store.save(EXPERIMENT)
    buffer = EventBuffer(_nowhere, capacity=10, interval=3600.0)
    settings = Settings(var_dir=tmp_path, secret_key="k" * 32, redis_url="")
    feedback = WebFeedback(settings, keys, store, buffer, None)
    request = make_mocked_request(
        "GET", "/movies/1", headers={"Cookie": f"marquee_visitor={VISITOR}"}
    )
    arm = await feedback.page_arm(request)
    assert arm.new_visitor is None  # the cookie was taken, not replaced by a random one
    assert arm.arm is not None and arm.version == EXPERIMENT.version(arm.arm)
    items = tuple(PageItem(10 + i, f"Movie {i}", 1990, ("Drama",), 0.5) for i in range(3))
    row = SimilarRow(items, "model", served_by)
    movie = Movie(1, "The movie", 1999, ("Drama",), None, None, 0, None, ())
    fragment = MovieFragments(environment(PROJECT_ROOT / "templates")).similar_row(
        row, movie, False
    )
    feedback.tracked_html(fragment, served_by, arm)
    (event,) = list(buffer._events)
    assert isinstance(event, Impression)
    return event


async def test_a_row_made_by_the_arms_version_counts_for_the_arm(tmp_path: Path) -> None:
    arm = arm_for(EXPERIMENT, f"visitor:{VISITOR}")
    event = await _shown(tmp_path, EXPERIMENT.version(arm))
    assert (event.experiment, event.arm, event.version) == ("e1", arm, EXPERIMENT.version(arm))


async def test_a_row_the_published_version_made_in_the_arms_place_counts_outside(
    tmp_path: Path,
) -> None:
    """The box fell back (the arm's version still loading, or broken): the row says nothing
    about the arm, so it must not be counted as the arm's."""
    event = await _shown(tmp_path, "v-published-fallback")
    assert (event.experiment, event.arm, event.version) == (None, None, "v-published-fallback")
