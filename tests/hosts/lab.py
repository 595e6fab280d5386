"""A page served across hosts: catalog, subscription, recommender and the data host (Redis and a
PostgreSQL of its own) each in a network namespace, the web server in another, all joined by veth
links to a router namespace; the links get 2 ms ± 1 ms delay and 1 % loss, then the recommender
host is cut off for 10 s and healed. ``python -m tests.hosts`` (``make run-hosts``) runs it and
prints the figures; ``tests/hosts/test_hosts.py`` runs it and asserts on the outcome.

Addresses: link N is 10.213.N.0/24, the router .1 and the host .2; they exist only inside the
namespaces, and every packet between hosts crosses the router, where the links are shaped:
``tc qdisc ... netem delay 2ms 1ms loss 1%`` on the router's side of each link, or, where the
kernel lacks ``sch_netem`` (CONFIG_NET_SCH_NETEM unset, as on this project's CI machine), the
same delay, jitter and loss from ``tests.hosts.delayer`` behind an iptables NFQUEUE rule on the
router's forward hook. The partition is iptables DROP rules for the host's link on the router
(silent loss, as a real partition: callers time out, nothing answers "refused").
Everything is created under a per-run prefix and removed at the end, on failure too.
"""

from __future__ import annotations

import ctypes
import json
import os
import shutil
import subprocess
import tempfile
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TypeVar

from services.platform import auth
from tests.pg import PostgresInstance, pg_bindir
from tests.support import PYTHON, Process, marquee_env

SUBNET = "10.213"
HOSTS = ("web", "catalog", "subscription", "recommender", "data")
DELAY_MS, JITTER_MS, LOSS = 2.0, 1.0, 0.01
PARTITION_S = 10.0
SECRET = "hosts-lab-secret"
USER_ID = 42
PORTS = {  # inside the namespaces: each host is alone on its address
    "web": 18080,
    "catalog": 18081,
    "subscription": 18082,
    "recommender": 18083,
    "redis": 16379,
    "postgres": 15432,
}
CLONE_NEWNET = 0x40000000
T = TypeVar("T")


def run(*args: str, check: bool = True) -> subprocess.CompletedProcess:
    result = subprocess.run(args, capture_output=True, text=True, timeout=60, check=False)
    if check and result.returncode != 0:
        raise RuntimeError(f"{' '.join(args)}: {result.stderr.strip()}")
    return result


def unavailable_reason() -> str | None:
    """Why the lab cannot run here, or None: root, iproute2, iptables, namespaces, servers."""
    if os.geteuid() != 0:
        return "network namespaces and veth links need root (CAP_SYS_ADMIN, CAP_NET_ADMIN)"
    for tool in ("ip", "tc", "iptables", "redis-server"):
        if shutil.which(tool) is None:
            return f"{tool} is not installed (make system-deps installs it)"
    if pg_bindir() is None:
        return "no PostgreSQL server binaries (make system-deps installs postgresql)"
    probe = f"mqprobe{os.getpid()}"
    made = run("ip", "netns", "add", probe, check=False)
    if made.returncode != 0:
        return f"ip netns add is not permitted here: {made.stderr.strip()}"
    run("ip", "netns", "del", probe, check=False)
    return None


def netem_available(namespace: str) -> bool:
    """Whether the kernel has sch_netem (tried on the namespace's loopback, then removed)."""
    added = run("ip", "netns", "exec", namespace, "tc", "qdisc", "add", "dev", "lo", "root",
                "netem", "delay", "1ms", check=False)  # fmt: skip
    if added.returncode != 0:
        return False
    run("ip", "netns", "exec", namespace, "tc", "qdisc", "del", "dev", "lo", "root", check=False)
    return True


def in_namespace(namespace: str, fn: Callable[[], T]) -> T:
    """Call ``fn`` on a thread switched into ``namespace`` (sockets it opens live there)."""
    libc = ctypes.CDLL(None, use_errno=True)
    result: dict[str, object] = {}

    def target() -> None:
        with open(f"/var/run/netns/{namespace}") as handle:
            if libc.setns(handle.fileno(), CLONE_NEWNET) != 0:
                result["error"] = OSError(ctypes.get_errno(), "setns failed")
                return
        try:
            result["value"] = fn()
        except BaseException as exc:  # noqa: BLE001 - handed to the caller
            result["error"] = exc

    thread = threading.Thread(target=target)
    thread.start()
    thread.join()
    if "error" in result:
        raise result["error"]  # type: ignore[misc]
    return result["value"]  # type: ignore[return-value]


def _ready(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=2) as resp:
            return resp.status == 200
    except (urllib.error.URLError, OSError):
        return False


@dataclass
class Lab:
    model_dir: Path
    catalog_db: Path
    workdir: Path = field(default_factory=lambda: Path(tempfile.mkdtemp(prefix="marquee-hosts-")))
    prefix: str = field(default_factory=lambda: f"mq{os.getpid() % 100000}")
    shaping: str = ""
    namespaces: list[str] = field(default_factory=list)
    processes: dict[str, Process] = field(default_factory=dict)
    postgres: PostgresInstance | None = None

    # ---- topology ----------------------------------------------------------------------------
    @property
    def router(self) -> str:
        return f"{self.prefix}-router"

    def ns(self, host: str) -> str:
        return f"{self.prefix}-{host}"

    def address(self, host: str) -> str:
        return f"{SUBNET}.{HOSTS.index(host) + 1}.2"

    def link(self, host: str) -> str:
        return f"link{HOSTS.index(host) + 1}"

    def url(self, host: str) -> str:
        return f"http://{self.address(host)}:{PORTS[host]}"

    def create(self) -> None:
        for namespace in (self.router, *(self.ns(h) for h in HOSTS)):
            run("ip", "netns", "add", namespace)
            self.namespaces.append(namespace)
            run("ip", "-n", namespace, "link", "set", "lo", "up")
        run("ip", "netns", "exec", self.router, "sysctl", "-qw", "net.ipv4.ip_forward=1")
        for index, host in enumerate(HOSTS, 1):
            link, namespace = self.link(host), self.ns(host)
            run("ip", "-n", self.router, "link", "add", link, "type", "veth",
                "peer", "name", "eth0", "netns", namespace)  # fmt: skip
            run("ip", "-n", self.router, "addr", "add", f"{SUBNET}.{index}.1/24", "dev", link)
            run("ip", "-n", self.router, "link", "set", link, "up")
            run("ip", "-n", namespace, "addr", "add", f"{self.address(host)}/24", "dev", "eth0")
            run("ip", "-n", namespace, "link", "set", "eth0", "up")
            run("ip", "-n", namespace, "route", "add", "default", "via", f"{SUBNET}.{index}.1")

    def shape(self) -> None:
        """2 ms ± 1 ms and 1 % loss on every link, with netem where the kernel has it."""
        if netem_available(self.router):
            self.shaping = "tc netem"
            for host in HOSTS:
                run("ip", "netns", "exec", self.router, "tc", "qdisc", "add", "dev",
                    self.link(host), "root", "netem", "delay", f"{DELAY_MS:g}ms",
                    f"{JITTER_MS:g}ms", "loss", f"{LOSS * 100:g}%")  # fmt: skip
            return
        self.shaping = "nfqueue delayer (this kernel has no sch_netem)"
        delayer = self.spawn(
            "delayer",
            self.router,
            [
                "-m",
                "tests.hosts.delayer",
                "--queue",
                "0",
                "--delay-ms",
                str(DELAY_MS),
                "--jitter-ms",
                str(JITTER_MS),
                "--loss",
                str(LOSS),
            ],  # fmt: skip
            os.environ.copy(),
        )
        deadline = time.monotonic() + 30
        while "ready" not in delayer.log_path.read_text():
            if (
                delayer.proc is None
                or delayer.proc.poll() is not None
                or time.monotonic() > deadline
            ):
                raise RuntimeError(f"the delayer did not start:\n{delayer.log_tail()}")
            time.sleep(0.05)
        run("ip", "netns", "exec", self.router, "iptables", "-A", "FORWARD", "-j", "NFQUEUE",
            "--queue-num", "0")  # fmt: skip

    def _partition_rules(self, action: str, host: str) -> None:
        for direction in ("-i", "-o"):
            args = [direction, self.link(host), "-j", "DROP"]
            if action == "-I":
                args = ["1", *args]  # before the shaping queue
            run("ip", "netns", "exec", self.router, "iptables", action, "FORWARD", *args)

    def partition(self, host: str) -> None:
        self._partition_rules("-I", host)

    def heal(self, host: str) -> None:
        self._partition_rules("-D", host)

    # ---- services ----------------------------------------------------------------------------
    def spawn(self, name: str, namespace: str, args: list[str], env: dict[str, str]) -> Process:
        command = [
            "ip",
            "netns",
            "exec",
            namespace,
            *([PYTHON, *args] if args[0] == "-m" else args),
        ]
        process = Process(command, env, self.workdir / f"{name}.log").start()
        self.processes[name] = process
        return process

    def start_services(self) -> None:
        data = self.address("data")
        self.spawn(
            "redis",
            self.ns("data"),
            [
                "redis-server",
                "--bind",
                data,
                "--port",
                str(PORTS["redis"]),
                "--save",
                "",
                "--appendonly",
                "no",
                "--protected-mode",
                "no",
                "--dir",
                str(self.workdir),
            ],  # fmt: skip
            os.environ.copy(),
        )
        self.postgres = PostgresInstance.create(
            PORTS["postgres"], data, self.ns("data"), trusted=(f"{SUBNET}.0.0/16",)
        ).start()
        common = {
            "secret_key": SECRET,
            "service_token": "hosts-lab-service-token",
            "admin_token": "hosts-lab-admin-token",
            "var_dir": self.workdir,
            "log_level": "WARNING",
            "redis_url": f"redis://{data}:{PORTS['redis']}/0",
        }
        services = {
            "catalog": (["-m", "services.catalog"], {"catalog_db": self.catalog_db}),
            "subscription": (
                ["-m", "services.subscription"],
                {"database_url": f"postgresql://postgres@{data}:{PORTS['postgres']}/postgres"},
            ),
            "recommender": (["-m", "recommender", "serve"], {"model_dir": self.model_dir}),
        }
        for host, (args, extra) in services.items():
            env = marquee_env(
                **common, **extra, host=self.address(host), **{f"{host}_port": PORTS[host]}
            )
            self.spawn(host, self.ns(host), args, env)
        web_env = marquee_env(
            **common,
            mode="microservices",
            host="127.0.0.1",
            web_port=PORTS["web"],
            catalog_url=self.url("catalog"),
            subscription_url=self.url("subscription"),
            recommender_urls=self.url("recommender"),
            model_dir=self.model_dir,
        )
        self.spawn("web", self.ns("web"), ["-m", "web_server"], web_env)
        urls = {h: self.url(h) for h in ("catalog", "subscription", "recommender")}
        urls["web"] = f"http://127.0.0.1:{PORTS['web']}"
        for host, url in urls.items():
            self.wait(host, url + "/readyz")

    def wait(self, name: str, url: str, timeout: float = 90.0) -> None:
        """Until ``url`` answers 200 from inside the web host (across the links)."""
        deadline = time.monotonic() + timeout
        process = self.processes[name]
        while not in_namespace(self.ns("web"), lambda: _ready(url)):
            if process.proc is None or process.proc.poll() is not None:
                raise RuntimeError(f"{name} exited:\n{process.log_tail()}")
            if time.monotonic() > deadline:
                raise TimeoutError(f"{name} not ready at {url}:\n{process.log_tail()}")
            time.sleep(0.2)

    def destroy(self) -> None:
        """Stop every process (by PID), the database, and delete the namespaces."""
        for name, process in reversed(list(self.processes.items())):
            try:
                process.stop(timeout=10)
            except OSError as exc:
                print(f"stopping {name}: {exc}")
        if self.postgres is not None:
            try:
                self.postgres.remove()
            except (RuntimeError, OSError, subprocess.TimeoutExpired) as exc:
                print(f"stopping postgres: {exc}")
        for namespace in reversed(self.namespaces):
            run("ip", "netns", "del", namespace, check=False)
        self.namespaces.clear()
        shutil.rmtree(self.workdir, ignore_errors=True)

    # ---- the scenario ------------------------------------------------------------------------
    def scenario(self, movies: list[int], baseline: float = 8.0, after: float = 20.0) -> dict:
        """Pages at 20/s: ``baseline`` s on the shaped links, the recommender cut off for
        PARTITION_S s, then ``after`` s healed. Returns the figures."""
        out = self.workdir / "samples.json"
        cookie = f"marquee_session={auth.session_token(USER_ID, SECRET)}"
        driver = self.spawn(
            "driver",
            self.ns("web"),
            ["-m", "tests.hosts.driver", "--url", f"http://127.0.0.1:{PORTS['web']}",
             "--rate", "20", "--duration", str(baseline + PARTITION_S + after),
             "--movies", ",".join(map(str, movies)), "--cookie", cookie, "--out", str(out)],
            os.environ.copy(),
        )  # fmt: skip
        deadline = time.monotonic() + 30
        while '"started"' not in driver.log_path.read_text():
            if time.monotonic() > deadline or (driver.proc and driver.proc.poll() is not None):
                raise RuntimeError(f"the driver did not start:\n{driver.log_tail()}")
            time.sleep(0.02)
        started = json.loads(driver.log_path.read_text().splitlines()[0])["started"]
        time.sleep(max(0.0, started + baseline - time.time()))  # the scenario's own clock
        cut = time.time()
        self.partition("recommender")
        time.sleep(PARTITION_S)
        self.heal("recommender")
        healed = time.time()
        assert driver.proc is not None
        driver.proc.wait(timeout=baseline + PARTITION_S + after + 60)
        samples = json.loads(out.read_text())
        return figures(samples, cut, healed, self.shaping)


def _percentile(values: list[float], q: float) -> float | None:
    if not values:
        return None
    ordered = sorted(values)
    return round(ordered[min(len(ordered) - 1, int(q * len(ordered)))], 1)


def _phase(samples: list[dict]) -> dict:
    answered = [s for s in samples if s["status"] == 200]
    return {
        "pages": len(samples),
        "p50_ms": _percentile([s["ms"] for s in answered], 0.50),
        "p99_ms": _percentile([s["ms"] for s in answered], 0.99),
        "errors": sum(1 for s in samples if s["status"] != 200),
        "lost": sum(1 for s in samples if s["status"] == 0),
        "degraded": sum(1 for s in answered if s["degraded"]),
        "similar_degraded": sum(1 for s in answered if "similar" in s["degraded"]),
    }


def figures(samples: list[dict], cut: float, healed: float, shaping: str) -> dict:
    """Page p50/p99, errors and degraded pages per phase, and the time from the heal to the
    first page whose similar row came from the recommender again."""
    phases = {
        "baseline": [s for s in samples if s["sent"] < cut],
        "partition": [s for s in samples if cut <= s["sent"] < healed],
        "after": [s for s in samples if s["sent"] >= healed],
    }
    recovered = next(
        (
            s["sent"]
            for s in sorted(phases["after"], key=lambda s: s["sent"])
            if s["status"] == 200 and "similar" not in s["degraded"]
        ),
        None,
    )
    later = [s for s in phases["after"] if recovered is not None and s["sent"] >= recovered]
    return {
        "shaping": shaping,
        "links": f"delay {DELAY_MS:g} ms ± {JITTER_MS:g} ms, loss {LOSS:.0%}",
        "partition_s": PARTITION_S,
        "all": _phase(samples),
        **{name: _phase(part) for name, part in phases.items()},
        "recovery_s": None if recovered is None else round(recovered - healed, 2),
        "after_recovery_whole_pct": round(
            100
            * sum(1 for s in later if s["status"] == 200 and not s["degraded"])
            / max(1, len(later)),
            1,
        ),
    }


def popular_movies(catalog_db: Path, limit: int = 40) -> list[int]:
    import sqlite3

    conn = sqlite3.connect(catalog_db)
    try:
        rows = conn.execute(
            "SELECT id FROM movies ORDER BY rating_count DESC, id LIMIT ?", (limit,)
        ).fetchall()
    finally:
        conn.close()
    return [r[0] for r in rows]


def run_lab(model_dir: Path, catalog_db: Path) -> dict:
    """Set up, run the scenario, tear down (always); the figures."""
    lab = Lab(model_dir, catalog_db)
    try:
        lab.create()
        lab.shape()
        lab.start_services()
        return lab.scenario(popular_movies(catalog_db))
    finally:
        lab.destroy()
