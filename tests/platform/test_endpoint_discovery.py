"""A backend named by a host that stands for several replicas (a Kubernetes headless Service): every
address is an endpoint with its own breaker, and the set follows the name as replicas come and go.

The replicas are real servers on 127.0.0.2, 127.0.0.3 and 127.0.0.4 (one port); the "DNS" is a
resolver function the test changes, as the cluster's DNS would when pods are added or removed.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import AsyncIterator

import msgspec
import pytest
from aiohttp import web

from services.platform.circuit import State
from services.platform.http_client import BackendClient, resolve_addresses
from services.platform.metrics import Metrics
from tests.observability.helpers import value
from tests.support import async_wait_until, free_port

ADDRESSES = ("127.0.0.2", "127.0.0.3", "127.0.0.4")
NAME = "recommender-pods.marquee.test"


class Who(msgspec.Struct):
    address: str


class Replicas:
    """One small server per address, all on one port; each says who it is, or fails on demand."""

    def __init__(self, port: int) -> None:
        self.port = port
        self.hits: Counter[str] = Counter()
        self.failing: set[str] = set()
        self.runners: list[web.AppRunner] = []

    async def start(self) -> None:
        for address in ADDRESSES:
            app = web.Application()
            app.router.add_get("/who", self._handler(address))
            runner = web.AppRunner(app)
            await runner.setup()
            await web.TCPSite(runner, address, self.port).start()
            self.runners.append(runner)

    def _handler(self, address: str):
        async def who(_request: web.Request) -> web.Response:
            self.hits[address] += 1
            if address in self.failing:
                return web.json_response({"error": {"code": "x", "message": "x"}}, status=500)
            return web.json_response({"address": address})

        return who

    async def stop(self) -> None:
        for runner in self.runners:
            await runner.cleanup()


class FakeDns:
    """The answer the test wants the name to have now (an exception to raise, if set)."""

    def __init__(self, *addresses: str) -> None:
        self.addresses = list(addresses)
        self.error: OSError | None = None
        self.asked = 0

    async def __call__(self, host: str, port: int) -> list[str]:
        assert host == NAME
        self.asked += 1
        if self.error is not None:
            raise self.error
        return list(self.addresses)


@pytest.fixture
async def replicas() -> AsyncIterator[Replicas]:
    servers = Replicas(free_port())
    await servers.start()
    yield servers
    await servers.stop()


@pytest.fixture
async def client_for(replicas: Replicas):
    made: list[BackendClient] = []

    def make(dns: FakeDns, **kwargs) -> BackendClient:
        client = BackendClient(
            "recommender",
            f"http://{NAME}:{replicas.port}",
            timeout=2.0,
            refresh_interval=0.05,
            resolve=dns,
            **kwargs,
        )
        made.append(client)
        return client

    yield make
    for client in made:
        await client.close()


def endpoint(replicas: Replicas, address: str) -> str:
    return f"http://{address}:{replicas.port}"


async def answers(client: BackendClient, n: int) -> Counter[str]:
    got: Counter[str] = Counter()
    for _ in range(n):
        got[(await client.get("/who", Who)).address] += 1
    return got


async def endpoints_become(client: BackendClient, expected: list[str]) -> None:
    async def settled() -> bool:
        await client.get("/who", Who)  # discovery starts on first use, in the event loop
        return sorted(client.urls) == sorted(expected)

    await async_wait_until(settled, 10, f"the endpoints to become {expected}")


async def test_each_address_is_an_endpoint_and_new_replicas_get_traffic(replicas, client_for):
    dns = FakeDns(ADDRESSES[0])
    client = client_for(dns)
    await endpoints_become(client, [endpoint(replicas, ADDRESSES[0])])
    assert set(await answers(client, 6)) == {ADDRESSES[0]}

    dns.addresses = list(ADDRESSES)  # the autoscaler added two pods
    await endpoints_become(client, [endpoint(replicas, a) for a in ADDRESSES])
    assert set(await answers(client, 12)) == set(ADDRESSES)  # each one, in rotation
    assert set(client.breakers) == set(client.urls)


async def test_a_removed_replica_leaves_the_rotation_and_its_breaker_goes(replicas, client_for):
    metrics = Metrics("web")
    dns = FakeDns(*ADDRESSES[:2])
    client = client_for(dns, metrics=metrics)
    await endpoints_become(client, [endpoint(replicas, a) for a in ADDRESSES[:2]])
    dns.addresses = [ADDRESSES[1]]  # a pod was scaled in
    await endpoints_become(client, [endpoint(replicas, ADDRESSES[1])])
    before = replicas.hits[ADDRESSES[0]]
    assert set(await answers(client, 6)) == {ADDRESSES[1]}
    assert replicas.hits[ADDRESSES[0]] == before
    assert list(client.breakers) == [endpoint(replicas, ADDRESSES[1])]
    exposition = metrics.exposition().decode()
    assert endpoint(replicas, ADDRESSES[0]) not in exposition


async def test_each_replica_has_its_own_breaker(replicas, client_for):
    dns = FakeDns(*ADDRESSES[:2])
    client = client_for(dns, failure_threshold=2, reset_after=60.0, metrics=Metrics("web"))
    await endpoints_become(client, [endpoint(replicas, a) for a in ADDRESSES[:2]])
    replicas.failing.add(ADDRESSES[0])
    # every read succeeds: a failure on the sick replica is retried on the healthy one
    got = await answers(client, 20)
    assert set(got) == {ADDRESSES[1]} and sum(got.values()) == 20
    assert client.breakers[endpoint(replicas, ADDRESSES[0])].state is State.OPEN
    assert client.breakers[endpoint(replicas, ADDRESSES[1])].state is State.CLOSED
    text = client.metrics.exposition().decode()  # type: ignore[union-attr]
    assert value(text, "marquee_circuit_state", endpoint=endpoint(replicas, ADDRESSES[0])) == 2
    # once open, the sick replica is not called at all
    sick = replicas.hits[ADDRESSES[0]]
    await answers(client, 10)
    assert replicas.hits[ADDRESSES[0]] == sick


async def test_a_failed_or_empty_lookup_keeps_the_endpoints_it_had(replicas, client_for):
    dns = FakeDns(*ADDRESSES[:2])
    client = client_for(dns)
    expected = [endpoint(replicas, a) for a in ADDRESSES[:2]]
    await endpoints_become(client, expected)
    dns.error = OSError("temporary failure in name resolution")
    asked = dns.asked
    await client.refresh()
    assert dns.asked > asked and sorted(client.urls) == expected
    dns.error, dns.addresses = None, []
    await client.refresh()
    assert sorted(client.urls) == expected
    assert set(await answers(client, 4)) == set(ADDRESSES[:2])


async def test_without_refresh_the_client_connects_by_name():
    client = BackendClient("catalog", "http://catalog.marquee.test:8081", timeout=1.0)
    assert client.urls == ["http://catalog.marquee.test:8081"]
    await client.close()


async def test_the_real_resolver_answers_for_localhost():
    assert "127.0.0.1" in await resolve_addresses("localhost", 80)
