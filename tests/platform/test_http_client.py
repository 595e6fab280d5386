import asyncio

import msgspec
import pytest

from services.platform.circuit import State
from services.platform.http_client import BackendClient, BackendError, BackendRejected
from services.platform.logs import request_id_var
from tests.support import async_wait_until, free_port


class Thing(msgspec.Struct):
    ok: bool


@pytest.fixture
async def make_client():
    clients: list[BackendClient] = []

    def make(urls, **kwargs) -> BackendClient:
        kwargs.setdefault("timeout", 1.0)
        client = BackendClient("backend", urls, **kwargs)
        clients.append(client)
        return client

    yield make
    for client in clients:
        await client.close()


async def test_get_returns_the_decoded_json(backend, make_client):
    url, _ = backend
    assert await make_client(url).get("/thing", Thing) == Thing(ok=True)


async def test_the_request_id_goes_out_with_every_call(backend, make_client):
    url, behaviour = backend
    token = request_id_var.set("req-123")
    try:
        await make_client(url).get("/thing", Thing)
    finally:
        request_id_var.reset(token)
    assert behaviour.request_ids == ["req-123"]


async def test_a_4xx_is_a_rejection_with_the_backends_code(backend, make_client):
    url, behaviour = backend
    behaviour.status = 404
    behaviour.body = b'{"error": {"code": "unknown_movie", "message": "no movie 5"}}'
    with pytest.raises(BackendRejected) as info:
        await make_client(url).get("/thing", Thing)
    assert (info.value.status, info.value.code) == (404, "unknown_movie")


async def test_a_slow_backend_costs_at_most_the_deadline(backend, make_client):
    url, behaviour = backend
    behaviour.delay = 3600  # until the test ends: only the deadline can end the call
    with pytest.raises(BackendError) as info:
        await make_client(url, timeout=0.1).get("/thing", Thing)
    assert info.value.reason == "timeout"


async def test_garbage_is_an_error_not_an_answer(backend, make_client):
    url, behaviour = backend
    behaviour.body = b"<html>oops"
    with pytest.raises(BackendError) as info:
        await make_client(url).get("/thing", Thing)
    assert info.value.reason == "invalid"


async def test_a_200_that_breaks_the_contract_is_a_failure_for_the_breaker(backend, make_client):
    """Issue 18.5: valid JSON of the wrong shape is no answer: the call fails as "invalid" and
    the breaker counts it, instead of the garbage reaching a page as data."""
    url, behaviour = backend
    behaviour.body = b'{"ok": "not-a-bool"}'
    client = make_client(url, failure_threshold=1)
    with pytest.raises(BackendError) as info:
        await client.get("/thing", Thing)
    assert info.value.reason == "invalid" and "ok" in str(info.value)
    assert client.breakers[url].state is State.OPEN


async def test_reads_are_retried_on_another_endpoint_when_one_is_down(backend, make_client):
    url, behaviour = backend
    dead = f"http://127.0.0.1:{free_port()}"
    client = make_client([dead, url])
    for _ in range(4):
        assert await client.get("/thing", Thing) == Thing(ok=True)
    assert behaviour.hits == 4


async def test_writes_are_never_retried(backend, make_client):
    url, behaviour = backend
    behaviour.status = 500
    with pytest.raises(BackendError):
        await make_client(url).send("PUT", "/thing", Thing, body={"a": 1})
    assert behaviour.hits == 1


async def test_retries_stop_when_the_budget_is_spent(backend, make_client):
    url, behaviour = backend
    behaviour.status = 503
    client = make_client(url, failure_threshold=1000, retry_ratio=0.0)
    client.budget.tokens = 2.0
    for _ in range(5):
        with pytest.raises(BackendError):
            await client.get("/thing", Thing)
    assert behaviour.hits == 5 + 2, "five calls plus the two retries the budget allowed"


async def test_the_circuit_opens_and_then_fails_fast_without_calling(backend, make_client):
    url, behaviour = backend
    behaviour.status = 500
    client = make_client(url, failure_threshold=3, reset_after=60, retry_ratio=0.0)
    client.budget.tokens = 0
    for _ in range(3):
        with pytest.raises(BackendError):
            await client.get("/thing", Thing)
    assert client.breakers[url].state is State.OPEN
    hits = behaviour.hits
    with pytest.raises(BackendError) as info:
        await client.get("/thing", Thing)
    assert info.value.reason == "circuit_open"
    assert behaviour.hits == hits


async def test_the_circuit_closes_after_a_successful_probe(backend, make_client):
    url, behaviour = backend
    behaviour.status = 500
    client = make_client(url, failure_threshold=1, reset_after=0.05, retry_ratio=0.0)
    client.budget.tokens = 0
    with pytest.raises(BackendError):
        await client.get("/thing", Thing)
    breaker = client.breakers[url]
    breaker.opened_at -= 1.0  # the reset time has passed
    behaviour.status = 200
    assert await client.get("/thing", Thing) == Thing(ok=True)
    assert breaker.state is State.CLOSED


async def test_calls_are_spread_over_healthy_replicas(replicas, make_client):
    (first, a), (second, b) = replicas
    client = make_client([first, second])
    for _ in range(10):
        await client.get("/thing", Thing)
    assert (a.hits, b.hits) == (5, 5)


async def test_a_failing_replica_is_taken_out_and_callers_see_no_error(replicas, make_client):
    (first, broken), (second, healthy) = replicas
    broken.status = 500
    client = make_client([first, second], failure_threshold=2, reset_after=60)
    for _ in range(20):
        assert await client.get("/thing", Thing) == Thing(ok=True)
    assert broken.hits == 2, "after two failures its circuit opens and calls skip it"
    assert healthy.hits == 20


async def test_a_cancelled_probe_does_not_leave_the_circuit_half_open(backend, make_client):
    """A caller cancelled while it carried the half-open probe (a page that failed on another
    backend cancels its similar-row call) must not stop every later call from probing."""
    url, behaviour = backend
    client = make_client(url, timeout=0.1, failure_threshold=1, reset_after=0.0)
    behaviour.delay = 3600  # stalled
    with pytest.raises(BackendError):
        await client.get("/thing", Thing)
    probe = asyncio.create_task(client.get("/thing", Thing))  # half-open: this call probes
    await async_wait_until(lambda: _hits_reached(behaviour, 2), 10, "the probe to arrive")
    probe.cancel()
    with pytest.raises(asyncio.CancelledError):
        await probe
    behaviour.delay = 0.0  # the backend is back
    assert await client.get("/thing", Thing, timeout=5.0) == Thing(ok=True)
    assert client.breakers[url].state is State.CLOSED


async def _hits_reached(behaviour, hits: int) -> bool:
    return behaviour.hits >= hits
