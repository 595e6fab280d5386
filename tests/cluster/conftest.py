"""A real 3-node Redis Cluster of the tests' own: three ``redis-server --cluster-enabled yes`` on
free ports, joined by ``redis-cli --cluster create``, stopped by PID at the end."""

from __future__ import annotations

import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import redis

from tests.support import Process, free_port, start_redis, wait_until


@dataclass(frozen=True)
class Cluster:
    ports: list[int]

    @property
    def url(self) -> str:
        """What a Marquee setting names: any one node, with the cluster scheme."""
        return f"redis+cluster://127.0.0.1:{self.ports[0]}/0"

    def node(self, i: int) -> redis.Redis:
        return redis.Redis(host="127.0.0.1", port=self.ports[i])

    def keys_per_node(self) -> list[int]:
        counts = []
        for i in range(len(self.ports)):
            client = self.node(i)
            counts.append(int(client.dbsize()))
            client.close()
        return counts

    def flush(self) -> None:
        for i in range(len(self.ports)):
            client = self.node(i)
            client.flushall()
            client.close()


def _cluster_ok(port: int) -> bool:
    client = redis.Redis(host="127.0.0.1", port=port, socket_timeout=1)
    try:
        info = client.cluster("INFO")
    except redis.RedisError:
        return False
    finally:
        client.close()
    return info.get("cluster_state") == "ok" and str(info.get("cluster_slots_assigned")) == "16384"


@pytest.fixture(scope="session")
def redis_cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    workdir = tmp_path_factory.mktemp("redis-cluster")
    chosen: set[int] = set()
    while len(chosen) < 6:  # three client ports and three cluster-bus ports, all different
        chosen.add(free_port())
    ports, bus_ports = sorted(chosen)[:3], sorted(chosen)[3:]
    nodes: list[Process] = []
    try:
        for port, bus_port in zip(ports, bus_ports, strict=True):
            node_dir = workdir / str(port)
            node_dir.mkdir()
            nodes.append(
                start_redis(
                    port,
                    node_dir,
                    "--cluster-enabled",
                    "yes",
                    "--cluster-config-file",
                    str(Path(node_dir) / "nodes.conf"),
                    "--cluster-port",
                    str(bus_port),
                    "--cluster-node-timeout",
                    "5000",
                )
            )
        created = subprocess.run(
            ["redis-cli", "--cluster", "create"]
            + [f"127.0.0.1:{p}" for p in ports]
            + ["--cluster-replicas", "0", "--cluster-yes"],
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
        assert created.returncode == 0, created.stdout + created.stderr
        for port in ports:
            wait_until(lambda port=port: _cluster_ok(port), 60, f"cluster state ok on {port}")
        yield Cluster(ports)
    finally:
        for node in nodes:
            node.stop()


@pytest.fixture
def cluster(redis_cluster: Cluster) -> Cluster:
    """The session's cluster, emptied so no test sees another's keys."""
    redis_cluster.flush()
    return redis_cluster
