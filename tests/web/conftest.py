"""Fixtures for the web server's tests: stub backends, a web app on a real socket, and the whole
microservices stack as real processes (``microservices_stack``, reusable by other suites)."""

from __future__ import annotations

import dataclasses
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from aiohttp.test_utils import TestServer

from services.feedback.schemas import Experiment
from services.platform.settings import Settings
from tests.conftest import Versions
from tests.support import (
    GENEROUS,
    PYTHON,
    Process,
    free_port,
    http_ready,
    marquee_env,
    wait_until,
)
from tests.web import stubs


@dataclass
class Stubs:
    catalog: stubs.Behaviour
    subscription: stubs.Behaviour
    recommender: stubs.Behaviour
    catalog_url: str
    subscription_url: str
    recommender_url: str


@pytest.fixture
async def stub_backends() -> AsyncIterator[Stubs]:
    """The three backends as contract-following stubs on free loopback ports."""
    behaviours = [stubs.Behaviour() for _ in range(3)]
    apps = [
        stubs.catalog_app(behaviours[0]),
        stubs.subscription_app(behaviours[1]),
        stubs.recommender_app(behaviours[2]),
    ]
    servers = [TestServer(app, host="127.0.0.1") for app in apps]
    for server in servers:
        await server.start_server()
    urls = [str(server.make_url("")).rstrip("/") for server in servers]
    yield Stubs(*behaviours, *urls)
    for behaviour in behaviours:
        behaviour.release.set()
    for server in servers:
        await server.close()


# What a test of the deadlines themselves gives the backend it stalls (the shipped default).
SHORT = 0.3


def stub_settings(tmp_path: Path, backends: Stubs, **changes: object) -> Settings:
    """A microservices-mode web server pointed at the stubs (no Redis needed: no recommender).

    The deadlines are GENEROUS: the stubs answer at once, but a starved machine can stall any
    call for a while, and a test must not see a fallback it did not cause. A test of a deadline
    sets that one short."""
    base = Settings(
        mode="microservices",
        var_dir=tmp_path,
        redis_url="",
        secret_key=stubs.SECRET,
        service_token="test-service-token",
        admin_token="test-admin-token",
        access_log=False,
        catalog_url=backends.catalog_url,
        subscription_url=backends.subscription_url,
        recommender_urls=(backends.recommender_url,),
        breaker_reset=0.5,
        **GENEROUS,
    )
    return dataclasses.replace(base, **changes)


@pytest.fixture
def serve(serve_app) -> Callable[[Settings], Awaitable[str]]:
    """Start ``web_server.app.create_app(settings)`` on a real socket; returns its base URL."""
    from web_server.app import create_app

    return lambda settings: serve_app(create_app(settings))


# ---- the real microservices stack -------------------------------------------------------------
@dataclass
class Stack:
    web_url: str
    catalog_url: str
    subscription_url: str
    recommender_url: str
    processes: dict[str, Process]
    env: dict[str, str] = field(repr=False, default_factory=dict)

    def stop(self) -> None:
        for process in reversed(list(self.processes.values())):
            process.stop()


STACK_COMMANDS = {
    "catalog": ["-m", "services.catalog"],
    "subscription": ["-m", "services.subscription"],
    "recommender": ["-m", "recommender", "serve"],
    "web": ["-m", "web_server"],
}


def stack_env(
    tmp_path: Path,
    redis_url: str,
    model_dir: Path,
    catalog_db: Path,
    deadlines: Mapping[str, float] = GENEROUS,
) -> dict:
    """The stack's environment; ``deadlines`` GENEROUS unless a test is about them (the fault
    suite passes ``{}``: the shipped ones)."""
    ports = {name: free_port() for name in STACK_COMMANDS}
    url = {name: f"http://127.0.0.1:{port}" for name, port in ports.items()}
    return marquee_env(
        development=True,  # demo logins (MovieLens user ids) for the tests that log in
        mode="microservices",
        web_port=ports["web"],
        catalog_port=ports["catalog"],
        subscription_port=ports["subscription"],
        recommender_port=ports["recommender"],
        catalog_url=url["catalog"],
        subscription_url=url["subscription"],
        recommender_urls=url["recommender"],
        var_dir=tmp_path,
        catalog_db=catalog_db,
        model_dir=model_dir,
        redis_url=redis_url,
        breaker_reset=0.5,
        **deadlines,
    )


def start_stack(tmp_path: Path, env: dict[str, str], timeout: float = 60.0) -> Stack:
    """Start every service as a child process and wait until each answers /readyz."""
    processes: dict[str, Process] = {}
    urls = {
        "web": f"http://127.0.0.1:{env['MARQUEE_WEB_PORT']}",
        "catalog": env["MARQUEE_CATALOG_URL"],
        "subscription": env["MARQUEE_SUBSCRIPTION_URL"],
        "recommender": env["MARQUEE_RECOMMENDER_URLS"],
    }
    stack = Stack(
        urls["web"], urls["catalog"], urls["subscription"], urls["recommender"], processes, env
    )
    try:
        for name, args in STACK_COMMANDS.items():
            processes[name] = Process([PYTHON, *args], env, tmp_path / f"{name}.log").start()
        for name, process in processes.items():
            wait_until(
                lambda url=urls[name], p=process: (
                    http_ready(url + "/readyz") or p.proc.poll() is not None
                ),
                timeout,
                f"{name} /readyz",
            )
            if process.proc.poll() is not None:
                raise RuntimeError(f"{name} exited early:\n{process.log_tail()}")
    except BaseException:
        stack.stop()
        raise
    return stack


@pytest.fixture
def microservices_stack(
    tmp_path: Path, redis_url: str, model_dir: Path, catalog_db: Path
) -> Iterator[Stack]:
    """catalog, subscription, recommender and web (microservices mode) as real processes on free
    ports; yields their base URLs and Process handles, and stops them by PID afterwards."""
    stack = start_stack(tmp_path, stack_env(tmp_path, redis_url, model_dir, catalog_db))
    yield stack
    stack.stop()


# ---- the operator dashboard -------------------------------------------------------------------
@pytest.fixture
async def monolith_base(serve, settings) -> str:
    """The monolith (real model, real Redis) on a real socket."""
    return await serve(settings)


@pytest.fixture
async def dead_catalog_base(serve, tmp_path, stub_backends) -> str:
    """A microservices web server whose catalog URL has nothing listening (a dead backend);
    the other backends are the stubs."""
    dead = f"http://127.0.0.1:{free_port()}"
    return await serve(stub_settings(tmp_path, stub_backends, catalog_url=dead))


@pytest.fixture
async def dead_recommender_base(serve, tmp_path, stub_backends) -> str:
    """A microservices web server whose only recommender has nothing listening."""
    dead = f"http://127.0.0.1:{free_port()}"
    return await serve(stub_settings(tmp_path, stub_backends, recommender_urls=(dead,)))


@dataclass(frozen=True)
class RunningExperiment:
    """A monolith serving an experiment between two versions of a private registry."""

    base: str
    settings: Settings
    experiment: Experiment


@pytest.fixture
async def experiment_monolith(serve, settings, versions: Versions) -> RunningExperiment:
    """The trained version (control, published) and a copy of it registered beside it
    (candidate), an experiment between them started the way the CLI starts one, and the
    monolith serving it."""
    from recommender.experiment_cli import start

    own = dataclasses.replace(settings, model_dir=versions.models)
    experiment = await start(own, versions.registry, versions.control, versions.candidate, 0.5)
    return RunningExperiment(await serve(own), own, experiment)
