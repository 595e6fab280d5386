"""Fixtures for the observability tests: any app on a real loopback socket, and one service run as
a child process with its JSON logs captured."""

from __future__ import annotations

import shutil
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from services.platform.settings import Settings
from tests.support import PYTHON, Process, free_port, http_ready, marquee_env, wait_until
from tests.web.conftest import (
    Stack,
    stack_env,
    start_stack,
    stub_backends,  # noqa: F401 - the web suite's fixture, reused
)


def service_env(settings: Settings, **changes: object) -> dict[str, str]:
    """The environment of a service process reading the same paths as ``settings``, access log
    on for every request; ``changes`` are settings fields (e.g. ``mode="monolith"``)."""
    fields = {
        "var_dir": settings.var_dir,
        "catalog_db": settings.catalog_db,
        "model_dir": settings.model_dir,
        "redis_url": settings.redis_url,
        "access_log": True,
        "access_log_sample": 1,
    }
    return marquee_env(**{**fields, **changes})


@pytest.fixture
def run_service(tmp_path: Path) -> Iterator[Callable[..., tuple[str, Process]]]:
    """Run ``python -m <module>`` as a child process (stdout and stderr to a log file) until its
    /readyz answers; returns (base URL, Process). Stopped by PID afterwards."""
    started: list[Process] = []

    def start(args: list[str], env: dict[str, str], port_var: str) -> tuple[str, Process]:
        port = free_port()
        env = {**env, port_var: str(port)}
        name = args[-1] if len(args) > 2 else args[1]
        process = Process([PYTHON, *args], env, tmp_path / f"{name}-{port}.log").start()
        started.append(process)
        base = f"http://127.0.0.1:{port}"
        wait_until(
            lambda: http_ready(base + "/readyz") or process.proc.poll() is not None,
            60,
            f"{args} /readyz",
        )
        assert process.proc.poll() is None, process.log_tail()
        return base, process

    yield start
    for process in reversed(started):
        process.stop()


def copy_model_dir(source: Path, target: Path) -> Path:
    """A throwaway copy of a model registry: admin calls (reload, rollback) may change it."""
    shutil.copytree(source, target, symlinks=True)
    return target


@pytest.fixture(scope="package")
def logged_stack(
    tmp_path_factory: pytest.TempPathFactory, redis_server: str, model_dir: Path, catalog_db: Path
) -> Iterator[Stack]:
    """catalog, subscription, recommender and web (microservices mode) as real processes, with
    access logs on and their own copy of the model registry; shared by this folder's tests."""
    tmp = tmp_path_factory.mktemp("obs-stack")
    models = copy_model_dir(model_dir, tmp / "models")
    env = stack_env(tmp, redis_server, models, catalog_db)
    env["MARQUEE_ACCESS_LOG"] = "true"
    env["MARQUEE_ACCESS_LOG_SAMPLE"] = "1"  # every request: the tests follow chosen ids
    stack = start_stack(tmp, env)
    yield stack
    stack.stop()
