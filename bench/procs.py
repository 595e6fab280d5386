"""Child processes, for the benchmarks and the test suite alike (one harness): servers on free
loopback ports, optionally pinned to CPUs, stopped by PID; a private redis-server; waiting on
readiness by polling (never sleeping blindly)."""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

PROJECT_ROOT = Path(__file__).resolve().parents[1]
PYTHON = sys.executable


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
    raise TimeoutError(f"timed out after {timeout:g}s waiting for {what}")


def port_open(port: int, host: str = "127.0.0.1") -> bool:
    with socket.socket() as sock:
        sock.settimeout(0.2)
        return sock.connect_ex((host, port)) == 0


def http_status(url: str, timeout: float = 2.0) -> int | None:
    try:
        with urllib.request.urlopen(url, timeout=timeout) as resp:
            return resp.status
    except urllib.error.HTTPError as exc:
        return exc.code
    except (urllib.error.URLError, OSError):
        return None


def http_ready(url: str) -> bool:
    return http_status(url, timeout=1.0) == 200


@dataclass(frozen=True)
class Cpus:
    """Which CPUs the servers and the load generator get. On a machine with one usable CPU
    nothing is pinned (both lists empty)."""

    server: tuple[int, ...]
    load: tuple[int, ...]

    @classmethod
    def split(cls) -> Cpus:
        usable = sorted(os.sched_getaffinity(0))
        if len(usable) < 2 or shutil.which("taskset") is None:
            return cls((), ())
        half = len(usable) // 2
        return cls(tuple(usable[:half]), tuple(usable[half:]))

    @property
    def pinned(self) -> bool:
        return bool(self.server)

    def describe(self) -> str:
        if not self.pinned:
            return "not pinned"
        return (
            f"servers on CPU {_cpu_list(self.server)}, load generator on CPU {_cpu_list(self.load)}"
        )


def _cpu_list(cpus: tuple[int, ...]) -> str:
    return ",".join(str(c) for c in cpus)


def pinned(args: list[str], cpus: tuple[int, ...]) -> list[str]:
    """``args`` prefixed with ``taskset -c`` when ``cpus`` is not empty."""
    return ["taskset", "-c", _cpu_list(cpus), *args] if cpus else list(args)


def cpu_seconds(pid: int) -> float:
    """User + system CPU time a process has used so far (``/proc/<pid>/stat``)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


@dataclass
class Server:
    """One child process (a service, a stub, redis), stopped by its PID."""

    name: str
    args: list[str]
    env: dict[str, str]
    log_path: Path
    port: int | None = None
    ready_url: str | None = None
    proc: subprocess.Popen | None = field(default=None, repr=False)

    def start(self, timeout: float = 60.0) -> Server:
        with open(self.log_path, "ab") as log:
            self.proc = subprocess.Popen(
                self.args,
                env=self.env,
                stdout=log,
                stderr=subprocess.STDOUT,
                cwd=PROJECT_ROOT,
                start_new_session=True,
            )
        try:
            self.wait_ready(timeout)
        except BaseException:
            self.stop()
            raise
        return self

    def _ready(self) -> bool:
        if self.ready_url is None and self.port is None:
            return True  # nothing to wait for: the caller checks what it needs
        if self.proc is not None and self.proc.poll() is not None:
            raise RuntimeError(
                f"{self.name} exited with {self.proc.returncode}:\n{self.log_tail()}"
            )
        if self.ready_url:
            return http_status(self.ready_url) == 200
        return self.port is None or port_open(self.port)

    def wait_ready(self, timeout: float) -> None:
        try:
            wait_until(self._ready, timeout, f"{self.name} to be ready")
        except TimeoutError as exc:
            raise TimeoutError(f"{exc}\n{self.log_tail()}") from None

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    def signal(self, signum: int) -> None:
        if self.proc is not None and self.proc.poll() is None:
            os.kill(self.proc.pid, signum)

    def kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()

    def stop(self, timeout: float = 15.0) -> int | None:
        """SIGTERM (after SIGCONT, should it be frozen), SIGKILL when it outstays ``timeout``."""
        if self.proc is None:
            return None
        if self.proc.poll() is None:
            os.kill(self.proc.pid, signal.SIGCONT)
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        return self.proc.returncode

    def log_tail(self, lines: int = 30) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except FileNotFoundError:
            return ""


def python_server(
    name: str,
    module_args: list[str],
    *,
    env: dict[str, str],
    port: int,
    logs: Path,
    cpus: tuple[int, ...] = (),
    ready_path: str | None = "/healthz",
) -> Server:
    """A ``python -m ...`` server (not yet started)."""
    return Server(
        name=name,
        args=pinned([PYTHON, "-m", *module_args], cpus),
        env=env,
        log_path=logs / f"{name}-{port}.log",
        port=port,
        ready_url=f"http://127.0.0.1:{port}{ready_path}" if ready_path else None,
    )


def redis_server(
    workdir: Path, *options: str, port: int | None = None, cpus: tuple[int, ...] = ()
) -> Server:
    """A private redis-server (on a free port unless given), started and ready. No persistence
    unless ``options`` say otherwise (e.g. ``"--appendonly", "yes"``; later options win)."""
    exe = shutil.which("redis-server")
    if exe is None:
        raise RuntimeError("redis-server is not installed (apt-get install redis-server)")
    port = port or free_port()
    args = [
        exe,
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
    ]
    return Server(
        "redis", pinned(args, cpus), dict(os.environ), workdir / f"redis-{port}.log", port=port
    ).start(15)


def service_env(settings: Mapping[str, object] | None = None) -> dict[str, str]:
    """A child's environment: ours without any ``MARQUEE_*``, plus ``MARQUEE_<NAME>`` for each
    settings field given (booleans as ``true``/``false``)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("MARQUEE_")}
    env["PYTHONUNBUFFERED"] = "1"
    for key, value in (settings or {}).items():
        env[f"MARQUEE_{key.upper()}"] = (
            str(value).lower() if isinstance(value, bool) else str(value)
        )
    return env
