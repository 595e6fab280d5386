"""Model published as data: running boxes pick up a newly published version without a restart.

Training (or ``publish`` / ``rollback``) writes the registry, then PUBLISHes the version on the
channel ``marquee:<namespace>:model:published`` of the state Redis (``MARQUEE_STATE_REDIS_URL``,
the cache's Redis when unset; on a Redis Cluster over a plain connection to the seed node, since
pub/sub messages reach every node). Every box's :class:`ModelWatcher` listens on that
channel and reloads at once; it also asks the registry every ``model_poll_interval`` seconds, so a
box that missed a notice (Redis down, no Redis at all) still converges. The registry is the truth;
a notice is only a wake-up call.

The watcher never takes the service down: Redis failures are retried with a capped backoff and
logged once per outage, and a failed reload leaves the old model serving.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
from typing import TYPE_CHECKING

from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff

from recommender import redisconn
from recommender.redisconn import Namespace
from services.platform.settings import Settings

if TYPE_CHECKING:  # the CLI imports this module and must not pull in the web stack
    from recommender.box import RecommenderBox

log = logging.getLogger("marquee.recommender.reload")

BACKOFF_START = 0.2
BACKOFF_MAX = 5.0
LISTEN_TICK = 1.0  # get_message timeout: how often the listener looks at its stop flag


async def notify_published(redis_url: str, version: str, namespace: Namespace) -> int:
    """Tell every listening box that ``version`` is published; returns how many listened."""
    client = redisconn.connect_node(redis_url, socket_timeout=1.0, socket_connect_timeout=1.0)
    try:
        return int(await client.publish(namespace.model_channel, version))
    finally:
        await client.aclose()


def publish_notice(redis_url: str | None, version: str, namespace: Namespace) -> int | None:
    """The CLI's notice after train/publish/rollback: the number of boxes that heard it, or None
    when there is no Redis (the boxes' periodic registry check picks the version up anyway)."""
    if not redis_url:
        return None
    client = redisconn.connect_node_sync(redis_url, timeout=1.0)
    try:
        return int(client.publish(namespace.model_channel, version))
    except redisconn.FAILURES as exc:
        log.warning(
            "model notice not sent: Redis unreachable; boxes will find the new version "
            "on their next registry check",
            extra={"redis": redisconn.describe(redis_url), "error": str(exc)},
        )
        return None
    finally:
        client.close()


class ModelWatcher:
    """Reloads the box on a pub/sub notice, and on a periodic registry check as a backup."""

    def __init__(
        self,
        box: RecommenderBox,
        redis_url: str | None,
        poll_interval: float,
        namespace: Namespace,
        verify_interval: float = 300.0,
    ) -> None:
        self.box = box
        self.redis_url = redis_url
        self.poll_interval = poll_interval
        self.verify_interval = verify_interval
        self.channel = namespace.model_channel
        self.notices = 0  # notices received (observability, tests)
        self.subscribed = asyncio.Event()
        self._tasks: list[asyncio.Task] = []
        self._stopping = False

    def start(self) -> None:
        self._tasks.append(asyncio.create_task(self._poll(), name="model-poll"))
        self._tasks.append(asyncio.create_task(self._verify(), name="model-verify"))
        if self.redis_url:
            self._tasks.append(asyncio.create_task(self._listen(), name="model-listen"))

    async def stop(self) -> None:
        """Cancel both loops. redis-py's pub/sub read can swallow a cancellation (seen with
        redis 8.1 on Python 3.11), so the listener also checks a stop flag every LISTEN_TICK."""
        self._stopping = True
        for task in self._tasks:
            task.cancel()
        if self._tasks:
            await asyncio.wait(self._tasks, timeout=LISTEN_TICK + 1.0)
        for task in self._tasks:
            if not task.done():
                log.warning("watcher: a task did not stop in time", extra={"task": task.get_name()})
            elif not task.cancelled() and task.exception() is not None:
                log.error("watcher: task failed", exc_info=task.exception())
        self._tasks.clear()

    async def _poll(self) -> None:
        while True:
            await asyncio.sleep(self.poll_interval)
            try:
                await self.box.refresh()
            except Exception:  # never let the backup path die
                log.exception("watcher: registry check failed")

    async def _verify(self) -> None:
        while True:
            await asyncio.sleep(self.verify_interval)
            try:
                await self.box.verify()
            except Exception:
                log.exception("watcher: integrity check failed")

    async def _listen(self) -> None:
        assert self.redis_url is not None
        delay = BACKOFF_START
        outage = False
        while not self._stopping:
            client = redisconn.connect_node(
                self.redis_url,
                socket_connect_timeout=1.0,
                socket_keepalive=True,
                health_check_interval=15,
                retry=Retry(NoBackoff(), 0),
            )
            try:
                async with client.pubsub(ignore_subscribe_messages=True) as pubsub:
                    await pubsub.subscribe(self.channel)
                    self.subscribed.set()
                    if outage:
                        log.warning("watcher: subscribed again", extra={"channel": self.channel})
                    else:
                        log.info("watcher: subscribed", extra={"channel": self.channel})
                    outage, delay = False, BACKOFF_START
                    await self.box.refresh()  # anything published while we were not listening
                    while not self._stopping:
                        message = await pubsub.get_message(
                            ignore_subscribe_messages=True, timeout=LISTEN_TICK
                        )
                        if message is not None and message.get("type") == "message":
                            await self._on_notice(message.get("data"))
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                self.subscribed.clear()
                if not outage:
                    outage = True
                    log.warning(
                        "watcher: pub/sub unavailable; retrying with backoff (registry "
                        "checks continue)",
                        extra={"error": f"{type(exc).__name__}: {exc}"},
                    )
            finally:
                with contextlib.suppress(Exception):
                    await client.aclose()
            if not self._stopping:
                await asyncio.sleep(delay)
                delay = min(delay * 2, BACKOFF_MAX)

    async def _on_notice(self, data: object) -> None:
        self.notices += 1
        version = data.decode(errors="replace") if isinstance(data, bytes) else str(data)
        log.info("watcher: model published notice", extra={"version": version})
        try:
            await self.box.refresh()
        except Exception:
            log.exception("watcher: reload after notice failed")


def notify_from_env(version: str, environ: dict[str, str] | None = None) -> int | None:
    """``publish_notice`` to this install's channel on the state Redis the environment names
    (MARQUEE_STATE_REDIS_URL, else MARQUEE_REDIS_URL; "auto" = the local default). The CLI must
    not need secrets to publish a model, so none are read or made here."""
    env = os.environ if environ is None else environ
    settings = Settings.from_env(env, need_secrets=False)
    return publish_notice(settings.state_redis_candidates(), version, Namespace.of(settings))
