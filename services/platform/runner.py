"""Running a service: uvloop, graceful shutdown on SIGTERM, and N worker processes sharing one
port through SO_REUSEPORT (the kernel spreads connections over them).

With several workers the metrics of all of them are merged at every scrape (prometheus-client's
multiprocess mode, files under ``<var_dir>/metrics/<service>-<port>``, emptied at start); the
runner marks each worker that exits as dead so its live gauges stop counting.
"""

from __future__ import annotations

import asyncio
import gc
import logging
import multiprocessing
import os
import signal
from collections.abc import Callable
from multiprocessing.connection import wait
from multiprocessing.process import BaseProcess
from typing import cast

from aiohttp import web

from services.platform.logs import configure_logging
from services.platform.metrics import enable_multiprocess, worker_exited
from services.platform.settings import Settings

log = logging.getLogger("marquee.runner")

AppFactory = Callable[[Settings], web.Application]


def _event_loop_policy() -> None:
    try:
        import uvloop
    except ImportError:
        return
    asyncio.set_event_loop_policy(uvloop.EventLoopPolicy())


async def freeze_startup_heap(_app: web.Application) -> None:
    """Move everything alive after startup (modules, compiled templates, the loaded model's
    objects: ~50-80k objects) out of the cyclic GC's reach.

    A full collection walks every tracked object: 15-25 ms for that heap, and it came round
    every second or so under load, so one request in a few hundred paid for it as a stall (the
    p99 of the page composition bench). Objects created later are still collected as usual."""
    gc.collect()
    gc.freeze()


def _serve(factory: AppFactory, settings: Settings, service: str, port: int, reuse: bool) -> None:
    configure_logging(service, settings.log_level)
    _event_loop_policy()
    log.info("listening", extra={"url": f"http://{settings.host}:{port}", "pid": os.getpid()})
    app = factory(settings)
    app.on_startup.append(freeze_startup_heap)  # after every cleanup_ctx: they were added first
    web.run_app(
        app,
        host=settings.host,
        port=port,
        reuse_port=reuse,
        access_log=None,
        print=None,
        shutdown_timeout=settings.shutdown_timeout,
    )


def run_service(factory: AppFactory, settings: Settings, service: str, port: int) -> None:
    """Serve until SIGTERM/SIGINT: in-flight requests finish, then the process exits."""
    if settings.workers <= 1:
        _serve(factory, settings, service, port, reuse=False)
        return
    configure_logging(service, settings.log_level)
    metrics_dir = settings.var_dir / "metrics" / f"{service}-{port}"
    enable_multiprocess(metrics_dir)
    ctx = multiprocessing.get_context("fork")
    workers = [
        ctx.Process(target=_serve, args=(factory, settings, service, port, True), daemon=False)
        for _ in range(settings.workers)
    ]
    for worker in workers:
        worker.start()
    log.info(
        "workers started",
        extra={"pids": [w.pid for w in workers], "port": port, "metrics_dir": str(metrics_dir)},
    )

    def forward(signum: int, _frame: object) -> None:
        for worker in workers:
            if worker.is_alive() and worker.pid is not None:
                os.kill(worker.pid, signal.SIGTERM)

    signal.signal(signal.SIGTERM, forward)
    signal.signal(signal.SIGINT, forward)
    running: dict[int, BaseProcess] = {w.sentinel: w for w in workers}
    while running:
        for sentinel in wait(list(running)):
            exited = running.pop(cast(int, sentinel))
            exited.join()
            assert exited.pid is not None
            worker_exited(metrics_dir, exited.pid)
            if exited.exitcode:
                log.warning("worker exited", extra={"pid": exited.pid, "code": exited.exitcode})
