"""Helpers the tests share: free ports, waiting on a condition, real processes and servers."""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Awaitable, Callable
from pathlib import Path

import aiohttp

PROJECT_ROOT = Path(__file__).resolve().parents[1]
PYTHON = sys.executable


# The secrets every test's settings and child processes share.
TEST_SECRETS = {
    "secret_key": "test-secret-key-of-the-suite",
    "service_token": "test-service-token",
    "admin_token": "test-admin-token",
}


# Deadlines far above any wait a test causes: a starved machine can stall any call for a while,
# and a test must not see a fallback it did not cause (an outcome, never a race). A test of the
# deadlines themselves sets them short.
GENEROUS = {
    "catalog_timeout": 5.0,
    "subscription_timeout": 5.0,
    "recommender_timeout": 5.0,
    "page_budget": 6.0,
}


def marquee_env(**settings: object) -> dict[str, str]:
    """A child process's environment: ours without any ``MARQUEE_*``, plus the test secrets, one
    worker, no access log, and ``MARQUEE_<NAME>`` for each keyword (which win)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("MARQUEE_")}
    merged = {**TEST_SECRETS, "workers": 1, "access_log": False, **settings}
    for name, value in merged.items():
        env[f"MARQUEE_{name.upper()}"] = (
            str(value).lower() if isinstance(value, bool) else str(value)
        )
    return env


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def wait_until(
    condition: Callable[[], bool], timeout: float = 10.0, what: str = "condition"
) -> None:
    """Poll ``condition`` until true; fail with ``what`` after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return
        time.sleep(0.02)
    raise TimeoutError(f"timed out after {timeout}s waiting for {what}")


async def async_wait_until(
    condition: Callable[[], Awaitable[bool]], timeout: float = 10.0, what: str = "condition"
) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if await condition():
            return
        await asyncio.sleep(0.02)
    raise TimeoutError(f"timed out after {timeout}s waiting for {what}")


def port_open(port: int, host: str = "127.0.0.1") -> bool:
    with socket.socket() as sock:
        sock.settimeout(0.2)
        return sock.connect_ex((host, port)) == 0


def http_ready(url: str) -> bool:
    import urllib.error
    import urllib.request

    try:
        with urllib.request.urlopen(url, timeout=1) as resp:
            return resp.status == 200
    except (urllib.error.URLError, OSError):
        return False


class Process:
    """A child process of the test, started and stopped by its PID."""

    def __init__(self, args: list[str], env: dict[str, str], log_path: Path) -> None:
        self.args = args
        self.env = env
        self.log_path = log_path
        self.proc: subprocess.Popen | None = None

    def start(self) -> Process:
        log = open(self.log_path, "ab")  # noqa: SIM115 - the child owns it
        self.proc = subprocess.Popen(
            self.args, env=self.env, stdout=log, stderr=subprocess.STDOUT, cwd=PROJECT_ROOT
        )
        log.close()
        return self

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    def signal(self, signum: int) -> None:
        if self.proc and self.proc.poll() is None:
            os.kill(self.proc.pid, signum)

    def stop(self, timeout: float = 10.0) -> int | None:
        if self.proc is None:
            return None
        if self.proc.poll() is None:
            os.kill(self.proc.pid, signal.SIGCONT)
            self.proc.terminate()
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        return self.proc.returncode

    def kill(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()

    def log_tail(self, lines: int = 40) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except FileNotFoundError:
            return ""


def start_redis(port: int, workdir: Path, *options: str) -> Process:
    """A redis-server of the test's own (no persistence unless ``options`` say otherwise, e.g.
    ``"--appendonly", "yes"``; later options win)."""
    proc = Process(
        [
            "redis-server",
            "--port",
            str(port),
            "--bind",
            "127.0.0.1",
            "--save",
            "",
            "--appendonly",
            "no",
            "--dir",
            str(workdir),
            "--daemonize",
            "no",
            *options,
        ],
        env=dict(os.environ),
        log_path=workdir / f"redis-{port}.log",
    ).start()
    wait_until(lambda: port_open(port), 10, f"redis-server on {port}")
    return proc


async def get_json(session: aiohttp.ClientSession, url: str, **kwargs) -> tuple[int, dict]:
    async with session.get(url, **kwargs) as resp:
        return resp.status, await resp.json(content_type=None)
