"""The recommender's side of experiments: it reads the running experiment (the arms' versions
it serves, see ``RecommenderBox.for_arm``), reports it (``GET /v1/experiments/current``, admin)
and shows it in ``/metrics``.

``experiments_ctx`` opens the feedback resources (state Redis, else var-dir files), hands the
experiment's store to the box and keeps the arms' versions loaded: every ``ARMS_EVERY`` seconds
it asks the box to load the versions of a newly started experiment and drop those of a stopped
one, so an arm is served by its own version within seconds of ``experiment start``.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator

from aiohttp import web

from recommender import redisconn
from recommender.box import RecommenderBox
from services.feedback.aggregate import RedisAggregator, stats_key
from services.feedback.backend import Feedback, open_feedback
from services.feedback.metrics import FeedbackMetrics
from services.feedback.report import experiment_report
from services.feedback.schemas import ExperimentReport
from services.platform.app import SETTINGS, add_metrics_refresher, add_route
from services.platform.errors import NotFound, NotReady
from services.platform.jsonutil import json_response
from services.platform.middleware import METRICS
from services.platform.settings import Settings

log = logging.getLogger("marquee.experiments")

ARMS_EVERY = 2.0  # seconds between looks at the experiment (the store re-reads as often)


class Experiments:
    """One per app: the feedback resources once opened (None before start and after close)."""

    def __init__(self, settings: Settings, box: RecommenderBox, metrics: FeedbackMetrics) -> None:
        self.settings = settings
        self.box = box
        self.metrics = metrics
        self.feedback: Feedback | None = None

    def _opened(self) -> Feedback:
        if self.feedback is None:
            raise NotReady("the experiment store is not open yet", code="not_ready")
        return self.feedback

    async def report(self) -> ExperimentReport | None:
        """The current (or last) experiment's report; None when none was ever started."""
        feedback = self._opened()
        try:
            experiment = await feedback.store.current()
            if experiment is None:
                return None
            return await experiment_report(experiment, feedback.counts.read, feedback.keys)
        except redisconn.FAILURES as exc:
            raise NotReady(
                f"the feedback counts cannot be read now: {type(exc).__name__}",
                code="feedback_unavailable",
            ) from exc

    async def refresh_metrics(self) -> None:
        """Before a scrape: the report's numbers and the aggregators' backlog."""
        if self.feedback is None:
            return
        self.metrics.show(await self.report())
        counts = self.feedback.counts
        if isinstance(counts, RedisAggregator):
            stats = await counts.read(stats_key(self.feedback.keys))
            self.metrics.show_backlog(await counts.backlog(), stats.get("malformed", 0))

    async def follow_arms(self) -> None:
        while True:
            try:
                await self.box.sync_arms()
            except Exception:  # the published version keeps serving every arm meanwhile
                log.exception("experiments: loading the arms' versions failed")
            await asyncio.sleep(ARMS_EVERY)


EXPERIMENTS = web.AppKey("experiments", Experiments)


async def experiments_ctx(app: web.Application) -> AsyncIterator[None]:
    experiments = app[EXPERIMENTS]
    feedback = await open_feedback(app[SETTINGS])
    experiments.feedback = feedback
    experiments.box.experiments = feedback.store
    log.info("experiments: store opened", extra={"where": feedback.where})
    follower = asyncio.create_task(experiments.follow_arms(), name="experiment-arms-follower")
    try:
        yield
    finally:
        follower.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await follower
        experiments.box.experiments = None
        experiments.feedback = None
        await feedback.close()


async def current_experiment(request: web.Request) -> web.Response:
    from recommender.app import require_admin  # the app imports this module

    require_admin(request)
    report = await request.app[EXPERIMENTS].report()
    if report is None:
        raise NotFound(
            "no experiment has been started (python -m recommender experiment start)",
            code="no_experiment",
        )
    return json_response(report)


def setup_experiments(app: web.Application, box: RecommenderBox) -> None:
    metrics = FeedbackMetrics(app[METRICS].registry)
    experiments = Experiments(app[SETTINGS], box, metrics)
    app[EXPERIMENTS] = experiments
    app.cleanup_ctx.append(experiments_ctx)
    add_metrics_refresher(app, experiments.refresh_metrics)
    add_route(app, "GET", "/v1/experiments/current", current_experiment)
