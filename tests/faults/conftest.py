"""Fixtures of the fault-injection suite: one microservices stack (real processes on loopback,
with a redis-server of its own) shared by every scenario, put back in order before each one, and
a recorder of each scenario's figures (test-artifacts/faults.json)."""

from __future__ import annotations

import json
import signal
import time
import urllib.request
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import aiohttp
import pytest
import redis.asyncio as aioredis

from recommender.redisconn import Namespace
from services.platform import auth
from services.platform.settings import Settings
from tests.support import (
    PROJECT_ROOT,
    PYTHON,
    Process,
    async_wait_until,
    free_port,
    port_open,
    start_redis,
)
from tests.web.conftest import STACK_COMMANDS, Stack, stack_env, start_stack

# the stack's MARQUEE_SECRET_KEY (tests/web/conftest.py stack_env)
SECRET = "test-secret-key-of-the-suite"
USER_ID = 42
ARTIFACT = PROJECT_ROOT / "test-artifacts" / "faults.json"
# seconds from a restarted service's readiness to the page using it again: ~0.5-1 s expected
# (the stack's breaker_reset is 0.5 s), bounded with 10x headroom so a busy machine never fails it
RECOVERY = 10.0


@dataclass
class FaultStack:
    """The shared stack plus its Redis; ``restart`` brings a killed service back with the same
    command line, environment and port."""

    stack: Stack
    redis: Process
    redis_port: int
    movie_ids: list[int]
    # (movie, k) pairs no load uses (k >= 95), each handed out once: a request for one is sure
    # to miss every cache, so its answer shows whether Redis is written again.
    fresh_pairs: Iterator[tuple[int, int]] = field(init=False)

    def __post_init__(self) -> None:
        self.fresh_pairs = iter([(m, k) for k in range(95, 101) for m in self.movie_ids])

    @property
    def web_url(self) -> str:
        return self.stack.web_url

    @property
    def redis_url(self) -> str:
        return f"redis://127.0.0.1:{self.redis_port}/0"

    @property
    def namespace(self) -> Namespace:
        """The Redis namespace of the stack's install (derived from its var dir)."""
        return Namespace.of(Settings(var_dir=Path(self.stack.env["MARQUEE_VAR_DIR"])))

    def process(self, name: str) -> Process:
        return self.redis if name == "redis" else self.stack.processes[name]

    def url(self, name: str) -> str:
        return {
            "web": self.stack.web_url,
            "catalog": self.stack.catalog_url,
            "subscription": self.stack.subscription_url,
            "recommender": self.stack.recommender_url,
        }[name]

    def kill(self, name: str, signum: int = signal.SIGKILL) -> None:
        process = self.process(name)
        process.signal(signum)
        process.proc.wait(10)

    async def restart(self, name: str, timeout: float = 30.0) -> float:
        """Start ``name`` again (same args, env, port); returns when (monotonic) it was ready."""
        old = self.process(name)
        old.kill()
        new = Process(old.args, old.env, old.log_path).start()
        if name == "redis":
            self.redis = new

            async def up() -> bool:
                return port_open(self.redis_port)
        else:
            self.stack.processes[name] = new

            async def up() -> bool:
                assert new.proc.poll() is None, f"{name} exited:\n{new.log_tail()}"
                return await http_ok(self.url(name) + "/readyz")

        await async_wait_until(up, timeout, f"{name} ready again")
        return time.monotonic()

    def alive(self, name: str) -> bool:
        process = self.process(name)
        return process.proc is not None and process.proc.poll() is None


async def http_ok(url: str, headers: dict | None = None) -> bool:
    try:
        async with aiohttp.ClientSession() as session:
            timeout = aiohttp.ClientTimeout(total=1)
            async with session.get(url, headers=headers, timeout=timeout) as resp:
                return resp.status == 200
    except (aiohttp.ClientError, TimeoutError, OSError):
        return False


def browser(user_id: int | None = None) -> aiohttp.ClientSession:
    """A client with a cookie jar for 127.0.0.1, logged in as ``user_id`` when given."""
    connector = aiohttp.TCPConnector(limit=64)
    session = aiohttp.ClientSession(connector=connector, cookie_jar=aiohttp.CookieJar(unsafe=True))
    if user_id is not None:
        session.cookie_jar.update_cookies({"marquee_session": auth.session_token(user_id, SECRET)})
    return session


def page_urls(web_url: str, movie_ids: list[int]) -> list[str]:
    """Movie pages, alternately as HTML and as the JSON page, over several movies."""
    urls = []
    for i, movie_id in enumerate(movie_ids):
        urls.append(f"{web_url}/api/pages/movies/{movie_id}")
        urls.append(f"{web_url}/movies/{movie_ids[(i + 7) % len(movie_ids)]}")
    return urls


def _popular_ids(catalog_url: str, limit: int = 40) -> list[int]:
    with urllib.request.urlopen(f"{catalog_url}/v1/movies/popular?limit={limit}", timeout=5) as r:
        return [m["id"] for m in json.loads(r.read())["items"]]


@pytest.fixture(scope="package")
def fault_stack(
    tmp_path_factory: pytest.TempPathFactory, model_dir: Path, catalog_db: Path
) -> Iterator[FaultStack]:
    """catalog, subscription, recommender, web (microservices) and a redis-server, all real
    processes on free loopback ports, for the whole suite; stopped by PID at the end."""
    tmp = tmp_path_factory.mktemp("faults")
    redis_port = free_port()
    redis_proc = start_redis(redis_port, tmp)
    try:
        # the shipped deadlines: these scenarios are about them
        env = stack_env(tmp, f"redis://127.0.0.1:{redis_port}/0", model_dir, catalog_db, {})
        env["MARQUEE_LOG_LEVEL"] = "WARNING"
        stack = start_stack(tmp, env)
    except BaseException:
        redis_proc.stop()
        raise
    faults = FaultStack(stack, redis_proc, redis_port, _popular_ids(stack.catalog_url))
    try:
        yield faults
    finally:
        faults.stack.stop()
        faults.redis.stop()


async def page_is_whole(web_url: str, movie_id: int) -> bool:
    """A logged-in page with no degraded fragment and the recommender's own similar movies."""
    cookie = {"Cookie": f"marquee_session={auth.session_token(USER_ID, SECRET)}"}
    try:
        async with aiohttp.ClientSession() as session:
            timeout = aiohttp.ClientTimeout(total=2)
            url = f"{web_url}/api/pages/movies/{movie_id}"
            async with session.get(url, headers=cookie, timeout=timeout) as resp:
                if resp.status != 200:
                    return False
                data = await resp.json()
    except (aiohttp.ClientError, TimeoutError, OSError):
        return False
    return data["degraded"] == [] and data["similar"]["source"] != "fallback"


@pytest.fixture
async def stack(fault_stack: FaultStack) -> AsyncIterator[FaultStack]:
    """The shared stack, whole: anything a previous scenario stopped, stalled or killed is
    continued or restarted, and the composed page is whole again before the scenario starts."""
    for name in ("redis", "catalog", "subscription", "recommender", "web"):
        if fault_stack.alive(name):
            fault_stack.process(name).signal(signal.SIGCONT)
        else:
            await fault_stack.restart(name)
    await async_wait_until(
        lambda: page_is_whole(fault_stack.web_url, fault_stack.movie_ids[0]),
        20,
        "a whole page from the restored stack",
    )
    yield fault_stack


async def redis_has(url: str, key: str) -> bool:
    client = aioredis.Redis.from_url(url, socket_timeout=0.5, socket_connect_timeout=0.5)
    try:
        return bool(await client.exists(key))
    except (OSError, TimeoutError, aioredis.RedisError):
        return False
    finally:
        await client.aclose()


async def metric_values(url: str, name: str) -> list[tuple[str, float]]:
    """The samples of one Prometheus metric from ``url/metrics``: (labels text, value)."""
    timeout = aiohttp.ClientTimeout(total=2)
    async with (
        aiohttp.ClientSession() as session,
        session.get(f"{url}/metrics", timeout=timeout) as resp,
    ):
        text = await resp.text()
    values = []
    for line in text.splitlines():
        if line.startswith(name + "{") or line.startswith(name + " "):
            labels, _, value = line.rpartition(" ")
            values.append((labels, float(value)))
    return values


@pytest.fixture(scope="session")
def record() -> Callable[[str, dict], str]:
    """Keep one scenario's figures in test-artifacts/faults.json (merged across runs of single
    tests) and print them; returns a one-line summary for assertion messages."""

    def keep(scenario: str, figures: dict) -> str:
        ARTIFACT.parent.mkdir(exist_ok=True)
        try:
            data = json.loads(ARTIFACT.read_text())
        except (FileNotFoundError, ValueError):
            data = {}
        data[scenario] = figures
        ARTIFACT.write_text(json.dumps(data, indent=2, sort_keys=True) + "\n")
        line = (
            f"[fault] {scenario}: requests={figures['requests']} errors={figures['errors']} "
            f"p99={figures['p99_ms']} ms"
        )
        extra = {k: v for k, v in figures.items() if k not in ("requests", "errors", "p99_ms")}
        print(f"{line} {extra}")
        return line

    return keep


PORT_VARIABLES = {
    "web": "MARQUEE_WEB_PORT",
    "catalog": "MARQUEE_CATALOG_PORT",
    "subscription": "MARQUEE_SUBSCRIPTION_PORT",
    "recommender": "MARQUEE_RECOMMENDER_PORT",
}


@pytest.fixture
async def spawn(
    fault_stack: FaultStack, tmp_path: Path
) -> AsyncIterator[Callable[..., Awaitable[tuple[str, Process]]]]:
    """Start one more service process (``spawn("web", recommender_urls=...)``): the stack's
    environment with some settings changed, e.g. a web server pointed at a misbehaving backend.
    Returns its URL and Process once ready; stopped by PID afterwards."""
    started: list[Process] = []

    async def start(service: str, **changes: str) -> tuple[str, Process]:
        port = free_port()
        env = {**fault_stack.stack.env, PORT_VARIABLES[service]: str(port)}
        env["MARQUEE_VAR_DIR"] = str(tmp_path)
        env |= {f"MARQUEE_{k.upper()}": v for k, v in changes.items()}
        args = [PYTHON, *STACK_COMMANDS[service]]
        process = Process(args, env, tmp_path / f"{service}-{port}.log").start()
        started.append(process)
        url = f"http://127.0.0.1:{port}"

        async def ready() -> bool:
            assert process.proc.poll() is None, f"{service} exited:\n{process.log_tail()}"
            return await http_ok(url + "/readyz")

        await async_wait_until(ready, 30, f"the extra {service}")
        return url, process

    yield start
    for process in started:
        process.stop()
