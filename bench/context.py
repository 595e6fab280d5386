"""What every benchmark shares within one run: a scratch directory, the CPU split, a private
Redis, a model trained on the bundled data, the catalog store, and the test secrets. Built lazily
(a benchmark that needs no Redis starts none) and torn down by PID at the end of the run."""

from __future__ import annotations

import contextlib
import os
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import orjson

from bench.procs import PROJECT_ROOT, PYTHON, Cpus, Server, pinned, redis_server, service_env

DATA_DIR = PROJECT_ROOT / "data" / "ml-latest-small"
SECRET = "bench-secret-key-of-the-run"
SERVICE_TOKEN = "bench-service-token"
ADMIN_TOKEN = "bench-admin-token"


@dataclass
class ChildResult:
    output: dict
    wall_s: float
    maxrss_mb: float  # the child's own peak resident set size, from wait4


def run_child(
    args: list[str], *, log: Path, cpus: tuple[int, ...] = (), timeout: float = 900.0
) -> ChildResult:
    """Run ``python -m ...`` to completion; its JSON line and its own peak memory.

    ``os.wait4`` returns the rusage of exactly that child (``RUSAGE_CHILDREN`` would give the
    maximum over every child the run has waited for so far).
    """
    started = time.perf_counter()
    out_path = log.with_suffix(".out")
    with open(log, "ab") as err, open(out_path, "wb") as out:
        proc = subprocess.Popen(
            pinned([PYTHON, "-m", *args], cpus),
            stdout=out,
            stderr=err,
            cwd=PROJECT_ROOT,
            env=service_env(),
        )
    deadline = time.monotonic() + timeout
    try:
        while True:
            pid, status, usage = os.wait4(proc.pid, os.WNOHANG)
            if pid:
                break
            if time.monotonic() > deadline:
                raise TimeoutError(f"{' '.join(args)} took more than {timeout:g}s")
            time.sleep(0.05)
    except BaseException:
        with contextlib.suppress(ProcessLookupError):
            proc.kill()
        with contextlib.suppress(ChildProcessError):
            os.wait4(proc.pid, 0)
        raise
    proc.returncode = os.waitstatus_to_exitcode(status)
    wall = time.perf_counter() - started
    if proc.returncode != 0:
        tail = "\n".join(log.read_text(errors="replace").splitlines()[-20:])
        raise RuntimeError(f"{' '.join(args)} exited {proc.returncode}:\n{tail}")
    lines = [line for line in out_path.read_text().splitlines() if line.startswith("{")]
    return ChildResult(orjson.loads(lines[-1]), wall, usage.ru_maxrss / 1024.0)


@dataclass
class Context:
    workdir: Path
    quick: bool = False
    cpus: Cpus = field(default_factory=Cpus.split)
    cache_dir: Path = PROJECT_ROOT / "var" / "bench" / "cache"
    _stack: contextlib.ExitStack = field(default_factory=contextlib.ExitStack)
    _redis: Server | None = None
    _model_dir: Path | None = None
    _catalog_db: Path | None = None

    def __post_init__(self) -> None:
        self.logs = self.workdir / "logs"
        self.logs.mkdir(parents=True, exist_ok=True)

    def duration(self, full: float) -> float:
        """Seconds of load per measurement: ``full``, or a third of it (>= 2 s) when quick."""
        return float(max(2, round(full / 3))) if self.quick else full

    @property
    def redis_url(self) -> str:
        if self._redis is None:
            self._redis = redis_server(self.workdir, cpus=self.cpus.server)
            self._stack.callback(self._redis.stop)
        return f"redis://127.0.0.1:{self._redis.port}/0"

    def flush_redis(self) -> None:
        import redis

        client = redis.Redis.from_url(self.redis_url)
        try:
            client.flushall()
        finally:
            client.close()

    @property
    def model_dir(self) -> Path:
        """A model trained on the bundled ml-latest-small and published (once per run)."""
        if self._model_dir is None:
            directory = self.workdir / "models"
            run_child(
                [
                    "bench.train_child",
                    "fit",
                    "--ratings",
                    str(DATA_DIR / "ratings.csv"),
                    "--model-dir",
                    str(directory),
                ],
                log=self.logs / "train-small.log",
            )
            self._model_dir = directory
        return self._model_dir

    @property
    def catalog_db(self) -> Path:
        if self._catalog_db is None:
            from services.catalog.store import build_catalog_db

            path = self.workdir / "catalog.sqlite3"
            build_catalog_db(DATA_DIR, path)
            self._catalog_db = path
        return self._catalog_db

    def settings_env(self, var_name: str, **overrides: object) -> dict[str, str]:
        """MARQUEE_* for a service of this run: its own var dir, shared data, and otherwise the
        shipped defaults (the access log and metrics on), so the figures are the system's."""
        var_dir = self.workdir / var_name
        var_dir.mkdir(parents=True, exist_ok=True)
        values: dict[str, object] = {
            "var_dir": var_dir,
            "data_dir": DATA_DIR,
            "model_dir": self.model_dir,
            "catalog_db": self.catalog_db,
            "subscription_db": var_dir / "subscriptions.sqlite3",
            "secret_key": SECRET,
            "service_token": SERVICE_TOKEN,
            "admin_token": ADMIN_TOKEN,
            "model_poll_interval": 3600,
        }
        values.update(overrides)
        return service_env(values)

    def close(self) -> None:
        self._stack.close()


def ranked_movies(model_dir: Path) -> np.ndarray:
    """The model's movie ids, most popular first: the ids every request may ask for."""

    from recommender.registry import ModelRegistry

    model, _ = ModelRegistry(model_dir).load()
    popularity = np.asarray(model.item_popularity)
    ids = np.asarray(model.item_ids)
    return ids[np.lexsort((ids, -popularity))]
