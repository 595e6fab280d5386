"""Password hashing off the event loop, a bounded few at a time: a flood is shed, not queued."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Iterator

import pytest

from services.subscription.passwords import HashingBusy, Passwords


def hold(passwords: Passwords) -> tuple[asyncio.Future, threading.Event, threading.Event]:
    """Occupy the pool's one thread until ``release`` is set; ``started`` once it runs there."""
    started, release = threading.Event(), threading.Event()

    def work() -> bool:
        started.set()
        return release.wait()

    return asyncio.ensure_future(passwords._run(work)), started, release


@pytest.fixture
def passwords() -> Iterator[Passwords]:
    found = Passwords(workers=1, max_waiting=1)
    yield found
    found.close()


async def test_a_hash_verifies_its_password_only(passwords: Passwords) -> None:
    stored = await passwords.hash("correct horse battery")
    assert stored.startswith("$argon2id$v=19$m=19456,t=2,p=1$")
    assert await passwords.verify(stored, "correct horse battery") == (True, False)
    assert await passwords.verify(stored, "Correct horse battery") == (False, False)
    assert await passwords.verify(None, "correct horse battery") == (False, False)
    assert await passwords.verify("not a hash", "anything") == (False, False)


async def test_a_hash_made_with_weaker_parameters_asks_to_be_made_again() -> None:
    weak = Passwords(time_cost=1, memory_cost=8 * 1024)
    try:
        stored = await weak.hash("correct horse battery")
    finally:
        weak.close()
    today = Passwords()
    try:
        assert await today.verify(stored, "correct horse battery") == (True, True)
    finally:
        today.close()


async def test_hashing_leaves_the_event_loop_free(passwords: Passwords) -> None:
    """While a hash is held on the pool's thread, the loop still runs other work."""
    held, started, release = hold(passwords)
    await asyncio.to_thread(started.wait)  # the loop ran this: it was never blocked
    assert not held.done()
    release.set()
    assert await held is True


async def test_past_the_bound_a_log_in_is_shed_with_503(passwords: Passwords) -> None:
    running, _, release = hold(passwords)  # the one worker
    waiting = asyncio.ensure_future(passwords.hash("queued behind it"))  # the one waiting place
    await asyncio.sleep(0)
    with pytest.raises(HashingBusy) as shed:
        await passwords.hash("one too many")
    assert (shed.value.status, shed.value.retry_after) == (503, 1)
    release.set()
    await running
    assert (await waiting).startswith("$argon2id$")
    assert passwords.pending == 0


async def test_a_caller_that_gives_up_still_counts_until_its_hash_is_done(
    passwords: Passwords,
) -> None:
    """Cancelling the caller does not free a place while the thread still hashes: the bound on
    the CPU that hashing takes holds however many visitors leave."""
    running, started, release = hold(passwords)
    await asyncio.to_thread(started.wait)
    running.cancel()
    with pytest.raises(asyncio.CancelledError):
        await running
    assert passwords.pending == 1  # still running on the pool's thread
    queued = asyncio.ensure_future(passwords.hash("next"))
    await asyncio.sleep(0)
    with pytest.raises(HashingBusy):
        await passwords.hash("one too many")
    release.set()
    assert (await queued).startswith("$argon2id$")
