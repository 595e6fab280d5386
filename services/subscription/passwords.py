"""Password hashes: Argon2id (argon2-cffi), computed off the event loop, a bounded few at a time.

Why these parameters: OWASP's recommendation for Argon2id, 19 MiB of memory, 2 passes, 1 lane
(``TIME_COST``, ``MEMORY_COST``, ``PARALLELISM``): about 30 ms of one core per hash on the
machines Marquee runs on, so a guess is expensive and a log-in is not. One lane keeps a hash on
one core.

Why a pool of its own: a hash is CPU work that would stall every other request if it ran on the
event loop, so it runs on a thread (argon2-cffi releases the GIL while hashing). The pool has
``workers`` threads (default one), so however many log-ins arrive, hashing takes at most that many
cores of the process and page serving keeps the rest. Work waiting for the pool is counted; past
``max_waiting`` a new log-in is shed at once with 503 + Retry-After rather than queued behind a
flood. The bound holds under cancellation too: a caller that gives up while its hash runs leaves
it running on the pool's thread, where it still counts until it finishes (one not yet started
is dropped).

Verifying a name that has no account still costs one hash (against a dummy hash made at start),
so the time an answer takes does not tell whether the name exists.
"""

from __future__ import annotations

import asyncio
import secrets
import threading
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from typing import TypeVar

import argon2
from argon2.exceptions import InvalidHashError, VerificationError, VerifyMismatchError

from services.platform.errors import NotReady

T = TypeVar("T")

TIME_COST, MEMORY_COST, PARALLELISM = 2, 19 * 1024, 1  # passes, KiB, lanes (OWASP)
RETRY_AFTER_BUSY = 1


class HashingBusy(NotReady):
    code = "busy"
    retry_after = RETRY_AFTER_BUSY


class Passwords:
    """Hash and verify passwords on ``workers`` threads of their own; ``close`` stops them."""

    def __init__(
        self,
        *,
        workers: int = 1,
        max_waiting: int = 16,
        time_cost: int = TIME_COST,
        memory_cost: int = MEMORY_COST,
        parallelism: int = PARALLELISM,
    ) -> None:
        self.hasher = argon2.PasswordHasher(
            time_cost=time_cost, memory_cost=memory_cost, parallelism=parallelism
        )
        self.max_pending = workers + max_waiting
        self.pending = 0  # hashes queued or running (the shedding bound)
        self._pending_lock = threading.Lock()  # decremented on the pool's threads
        self._pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="argon2")
        self._dummy = self.hasher.hash(secrets.token_urlsafe(16))  # what unknown names cost

    def close(self) -> None:
        self._pool.shutdown(wait=False, cancel_futures=True)

    async def _run(self, fn: Callable[[], T]) -> T:
        if self.pending >= self.max_pending:
            raise HashingBusy("too many log-ins at once; please try again in a moment")
        with self._pending_lock:
            self.pending += 1
        future: Future[T] = self._pool.submit(fn)
        future.add_done_callback(self._finished)
        return await asyncio.wrap_future(future)

    def _finished(self, _: Future) -> None:
        with self._pending_lock:
            self.pending -= 1

    async def hash(self, password: str) -> str:
        return await self._run(lambda: self.hasher.hash(password))

    async def verify(self, password_hash: str | None, password: str) -> tuple[bool, bool]:
        """(whether ``password`` matches, whether the hash should be made again with today's
        parameters). ``None`` (no such account) is checked against a dummy hash: same cost."""

        def check() -> tuple[bool, bool]:
            try:
                self.hasher.verify(password_hash or self._dummy, password)
            except (VerifyMismatchError, VerificationError, InvalidHashError):
                return False, False
            if password_hash is None:
                return False, False
            return True, self.hasher.check_needs_rehash(password_hash)

        return await self._run(check)
