"""Closed-loop load with ``wrk`` (C, epoll): the most throughput one core of load generator can
push, so the server is what saturates. A Lua script replays a list of paths (Zipf-distributed ids,
written by the caller), each wrk thread from its own offset, and prints its figures as one JSON
line so nothing is scraped from wrk's human output."""

from __future__ import annotations

import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

import orjson

from bench.procs import pinned

MARK = "WRK_JSON "

LUA = r"""
local paths_file = "%(paths)s"
local headers = %(headers)s
local threads = {}
local counter = 0

function setup(thread)
  thread:set("tid", counter)
  counter = counter + 1
  table.insert(threads, thread)
end

function init(args)
  reqs = {}
  for line in io.lines(paths_file) do
    reqs[#reqs + 1] = wrk.format("GET", line, headers)
  end
  n = #reqs
  i = (tid * 7919) %% n
end

function request()
  i = i + 1
  if i > n then i = 1 end
  return reqs[i]
end

shed = 0
function response(status, headers, body)
  if status == 503 then shed = shed + 1 end
end

function done(summary, latency, requests)
  local e = summary.errors
  local shed_total = 0
  for _, thread in ipairs(threads) do shed_total = shed_total + thread:get("shed") end
  io.write(string.format(
    '%(mark)s{"requests":%%d,"duration_us":%%d,"bytes":%%d,"shed":%%d,' ..
    '"errors":{"connect":%%d,"read":%%d,"write":%%d,"status":%%d,"timeout":%%d},' ..
    '"latency_us":{"mean":%%.1f,"max":%%d,"p50":%%d,"p90":%%d,"p99":%%d,"p999":%%d}}\n',
    summary.requests, summary.duration, summary.bytes, shed_total,
    e.connect, e.read, e.write, e.status, e.timeout,
    latency.mean, latency.max, latency:percentile(50), latency:percentile(90),
    latency:percentile(99), latency:percentile(99.9)))
end
"""


@dataclass(frozen=True)
class WrkResult:
    requests: int
    seconds: float
    errors: dict  # wrk's: connect, read, write, status (any non-2xx/3xx answer), timeout
    latency_ms: dict  # mean, max, p50, p90, p99, p999
    bytes: int = 0
    shed: int = 0  # 503 answers (load shed on purpose), also counted in errors["status"]

    @property
    def rps(self) -> float:
        return self.requests / self.seconds if self.seconds else 0.0

    @property
    def error_count(self) -> int:
        return int(sum(self.errors.values()))

    @property
    def failures(self) -> int:
        """Errors that are not deliberate load shedding."""
        return self.error_count - self.shed

    def row(self) -> dict:
        return {
            "rps": round(self.rps, 1),
            "p50_ms": self.latency_ms["p50"],
            "p90_ms": self.latency_ms["p90"],
            "p99_ms": self.latency_ms["p99"],
            "errors": self.error_count,
        }


def available() -> bool:
    return shutil.which("wrk") is not None


def write_script(
    workdir: Path, name: str, paths: list[str], headers: dict[str, str] | None = None
) -> Path:
    """A Lua script that replays ``paths`` (one per line in a side file)."""
    paths_file = workdir / f"{name}.paths"
    paths_file.write_text("\n".join(paths) + "\n")
    lua_headers = "{" + ", ".join(f'["{k}"] = "{v}"' for k, v in (headers or {}).items()) + "}"
    script = workdir / f"{name}.lua"
    script.write_text(LUA % {"paths": paths_file, "headers": lua_headers, "mark": MARK})
    return script


def command(
    url: str,
    script: Path,
    *,
    connections: int,
    duration: float,
    threads: int = 1,
    cpus: tuple[int, ...] = (),
    timeout: float = 2.0,
) -> list[str]:
    """The wrk command line (``timeout``: wrk's own default, 2 s, counts as an error)."""
    threads = max(1, min(threads, connections))
    return pinned(
        [
            "wrk",
            "-t",
            str(threads),
            "-c",
            str(connections),
            "-d",
            f"{max(1, round(duration))}s",
            "--timeout",
            f"{timeout:g}s",
            "-s",
            str(script),
            url,
        ],
        cpus,
    )


def parse(stdout: str) -> WrkResult:
    for line in stdout.splitlines():
        if line.startswith(MARK):
            data = orjson.loads(line[len(MARK) :])
            lat = {k: round(v / 1000.0, 3) for k, v in data["latency_us"].items()}
            return WrkResult(
                requests=int(data["requests"]),
                seconds=data["duration_us"] / 1e6,
                errors=data["errors"],
                latency_ms=lat,
                bytes=int(data["bytes"]),
                shed=int(data["shed"]),
            )
    raise RuntimeError(f"wrk gave no result: {stdout[-500:]}")


def run_wrk(
    url: str,
    script: Path,
    *,
    connections: int,
    duration: float,
    threads: int = 1,
    cpus: tuple[int, ...] = (),
    timeout: float = 2.0,
) -> WrkResult:
    """One wrk run against ``url`` (scheme://host:port); returns its parsed figures."""
    args = command(
        url,
        script,
        connections=connections,
        duration=duration,
        threads=threads,
        cpus=cpus,
        timeout=timeout,
    )
    proc = subprocess.run(args, capture_output=True, text=True, timeout=duration + 60)
    try:
        return parse(proc.stdout)
    except RuntimeError:
        raise RuntimeError(f"wrk failed (exit {proc.returncode}): {proc.stderr}") from None
