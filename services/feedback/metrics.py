"""The experiment in ``/metrics``: per arm and version the impressions, clicks and CTR (with its
95 % interval), the difference between the arms, and how far the aggregators are behind.

Every value is read at scrape time from where the counts live (Redis or the local file), so any
replica's /metrics shows the install's totals, and CTR is computed from the same counts as
``GET /v1/experiments/current``. Gauges, not counters: the truth is elsewhere and is set here
(``livemostrecent`` across the workers of one server: the latest reading wins)."""

from __future__ import annotations

from typing import Final

from prometheus_client import CollectorRegistry, Gauge

from services.feedback.aggregate import Backlog
from services.feedback.schemas import ExperimentReport

BOUNDS = ("estimate", "low", "high")


class FeedbackMetrics:
    def __init__(self, registry: CollectorRegistry) -> None:
        mode: Final = "livemostrecent"
        self.impressions = Gauge(
            "marquee_experiment_impressions",
            "Similar rows shown in the current experiment, per arm and model version",
            ["arm", "version"],
            registry=registry,
            multiprocess_mode=mode,
        )
        self.clicks = Gauge(
            "marquee_experiment_clicks",
            "Clicks on those rows (at most one per row shown), per arm and model version",
            ["arm", "version"],
            registry=registry,
            multiprocess_mode=mode,
        )
        self.ctr = Gauge(
            "marquee_experiment_ctr",
            "Click-through rate per arm: estimate and 95 % Wilson interval (bound)",
            ["arm", "version", "bound"],
            registry=registry,
            multiprocess_mode=mode,
        )
        self.difference = Gauge(
            "marquee_experiment_ctr_difference",
            "Candidate CTR minus control CTR: estimate and 95 % Newcombe interval (bound)",
            ["bound"],
            registry=registry,
            multiprocess_mode=mode,
        )
        self.running = Gauge(
            "marquee_experiment_running",
            "1 while an experiment runs, else 0",
            registry=registry,
            multiprocess_mode=mode,
        )
        self.backlog = Gauge(
            "marquee_feedback_backlog",
            "Feedback stream entries not counted yet: pending (delivered, unacknowledged) and "
            "lag (not delivered yet)",
            ["kind"],
            registry=registry,
            multiprocess_mode=mode,
        )
        self.malformed = Gauge(
            "marquee_feedback_malformed",
            "Feedback stream entries dropped as malformed (total, every aggregator)",
            registry=registry,
            multiprocess_mode=mode,
        )
        self._labels: set[tuple[str, str]] = set()

    def show(self, report: ExperimentReport | None) -> None:
        """Set the per-arm gauges from a report (None: no experiment); the labels of a former
        experiment's versions are zeroed, then removed (a multiprocess file keeps values)."""
        current: set[tuple[str, str]] = set()
        if report is not None:
            current = {(a.arm, a.version) for a in report.arms}
        for arm, version in self._labels - current:
            self.impressions.labels(arm, version).set(0)
            self.clicks.labels(arm, version).set(0)
            for bound in BOUNDS:
                self.ctr.labels(arm, version, bound).set(0)
            self.impressions.remove(arm, version)
            self.clicks.remove(arm, version)
            for bound in BOUNDS:
                self.ctr.remove(arm, version, bound)
        self._labels = current
        running = report is not None and report.experiment.stopped is None
        self.running.set(1 if running else 0)
        if report is None:
            for bound in BOUNDS:
                self.difference.labels(bound).set(0)
            return
        for a in report.arms:
            self.impressions.labels(a.arm, a.version).set(a.impressions)
            self.clicks.labels(a.arm, a.version).set(a.clicks)
            for bound, value in zip(BOUNDS, (a.ctr.estimate, a.ctr.low, a.ctr.high), strict=True):
                self.ctr.labels(a.arm, a.version, bound).set(value)
        d = report.difference
        for bound, value in zip(BOUNDS, (d.estimate, d.low, d.high), strict=True):
            self.difference.labels(bound).set(value)

    def show_backlog(self, backlog: Backlog, malformed: int) -> None:
        self.backlog.labels("pending").set(backlog.pending)
        self.backlog.labels("lag").set(backlog.lag if backlog.lag is not None else 0)
        self.malformed.set(malformed)
