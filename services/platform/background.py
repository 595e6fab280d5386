"""A loop that runs beside a server for the server's life (the batch worker and the feedback
aggregator in the monolith): started with the app, asked to stop by an event at shutdown, given
the shutdown timeout to finish what it holds, then cancelled."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Callable, Coroutine

log = logging.getLogger("marquee.background")


@contextlib.asynccontextmanager
async def running(
    loop: Callable[[asyncio.Event], Coroutine[object, None, None]], name: str, timeout: float
) -> AsyncIterator[None]:
    """``loop(stop)`` as a task for the block's duration. A loop that fails is logged, never
    raised into the server's shutdown."""
    stop = asyncio.Event()
    task = asyncio.create_task(loop(stop), name=name)
    try:
        yield
    finally:
        stop.set()
        try:
            await asyncio.wait_for(task, timeout)
        except TimeoutError:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        except Exception:
            log.exception("%s ended with an error", name)
