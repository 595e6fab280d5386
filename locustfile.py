"""Locust version of Marquee's load-test scenarios (``python -m loadtest`` is the main tool).

Needs Locust and nothing else (not Marquee's dependencies):

    pip install locust
    locust -f locustfile.py --host http://127.0.0.1:8080

The scenarios are the tool's own (``loadtest/scenarios.py``: requests described as data, standard
library only), so Locust sends exactly what ``python -m loadtest`` sends; this file only drives
them with Locust's client. The popular-movie list is fetched once per process (paged, 100 at a
time, as the catalog allows), before the users start, and shared by all of them.

Environment: ``MARQUEE_RECOMMENDER_URL`` (recommender API base, default: the host),
``MARQUEE_CATALOG_URL`` (for the popular list, default: the host) and ``LOADTEST_MIX``
(``page=70,similar=20,search=10``; default: the tool's default mix). Locust is a closed-model
generator: under overload it under-reports latency (see docs/loadtest.md).
"""

from __future__ import annotations

import logging
import os
import random
import sys
import threading
from collections.abc import Callable
from pathlib import Path

from locust import HttpUser, between, events

sys.path.insert(0, str(Path(__file__).resolve().parent))  # the repository: loadtest/ is here

from loadtest.config import DEFAULT_DATA_DIR, DEFAULT_MIX, parse_mix  # noqa: E402
from loadtest.scenarios import (  # noqa: E402
    REC,
    REGISTRY,
    WEB,
    BadResponse,
    Flow,
    Request,
    Response,
)
from loadtest.workload import Workload, load_workload  # noqa: E402

_workloads: dict[str, Workload] = {}
_lock = threading.Lock()  # a gevent lock once Locust has patched threading


def bases(host: str | None) -> dict[str, str]:
    web = (host or "http://127.0.0.1:8080").rstrip("/")
    return {
        WEB: web,
        REC: os.environ.get("MARQUEE_RECOMMENDER_URL", web).rstrip("/"),
        "catalog": os.environ.get("MARQUEE_CATALOG_URL", web).rstrip("/"),
    }


def shared_workload(host: str | None) -> Workload:
    """The popular movies, loaded once per process however many users start at once."""
    urls = bases(host)
    with _lock:
        wl = _workloads.get(urls["catalog"])
        if wl is None:
            wl, warning = load_workload(
                catalog_base=urls["catalog"],
                limit=2000,
                popularity="counts",
                zipf_s=1.0,
                user_ids=(1, 610),
                data_dir=DEFAULT_DATA_DIR,
                recommender_base=urls[REC],
            )
            if warning:
                logging.warning("marquee: %s", warning)
            _workloads[urls["catalog"]] = wl
    return wl


@events.test_start.add_listener
def _load_once(environment, **_kwargs) -> None:  # noqa: ANN001 - Locust's signature
    shared_workload(environment.host)


def _task(name: str) -> Callable[[MarqueeUser], None]:
    def run(user: MarqueeUser) -> None:
        user.visit(name)

    run.__name__ = name
    return run


def task_weights() -> dict[Callable[[MarqueeUser], None], int]:
    mix = parse_mix(os.environ["LOADTEST_MIX"]) if "LOADTEST_MIX" in os.environ else DEFAULT_MIX
    return {_task(name): max(1, round(w)) for name, w in mix.items() if w > 0}


class MarqueeUser(HttpUser):
    """One simulated visitor; anonymous except inside the ``session`` scenario."""

    wait_time = between(0.5, 2.0)
    tasks = task_weights()

    def on_start(self) -> None:
        self.urls = bases(self.host)
        self.wl = shared_workload(self.host)
        self.rng = random.Random()

    def visit(self, name: str) -> None:
        item = REGISTRY[name](self.wl, self.rng)
        if isinstance(item, Request):
            self.send(item, None)
        else:
            self.client.cookies.clear()  # each logged-in visit is a new simulated user
            self.send(next(item), item)

    def send(self, req: Request, flow: Flow | None) -> None:
        """One request; for a flow, feed the response back and go on to its next request."""
        while True:
            with self.client.request(
                req.method,
                self.urls[req.origin] + req.target,
                data=req.body or None,
                headers={"Content-Type": req.content_type} if req.content_type else None,
                name=req.template,
                allow_redirects=False,
                catch_response=True,
            ) as resp:
                if resp.status_code == 0 or resp.status_code >= 400:
                    resp.failure(f"HTTP {resp.status_code}")
                    if flow is not None:
                        flow.close()
                    return
                if flow is None:
                    resp.success()
                    return
                try:
                    req = flow.send(Response(resp.status_code, resp.content))
                except StopIteration:
                    resp.success()
                    return
                except BadResponse as exc:
                    resp.failure(str(exc))
                    return
                resp.success()
