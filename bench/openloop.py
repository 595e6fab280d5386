"""An open-loop (constant arrival rate) HTTP/1.1 load generator, for "p99 at a given load".

wrk is closed-loop: when the server stalls, wrk stops sending, so its percentiles hide the stall
(coordinated omission). Here request ``i`` is *due* at ``start + i / rate`` whatever happens, and
its latency is measured from that due time, so time spent waiting for a free connection counts.

It speaks raw HTTP/1.1 over asyncio protocols (keep-alive, one request in flight per connection,
Content-Length bodies) instead of using an HTTP client library: a client library costs the
generator more CPU per request than the servers under test spend, which would make the
generator the bottleneck. Runs on uvloop when installed.
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import contextlib
import sys
import time
from dataclasses import dataclass

import numpy as np
import orjson


class _Conn(asyncio.Protocol):
    """One keep-alive connection; calls ``on_done(conn, status, error)`` per response."""

    def __init__(self, on_done) -> None:
        self.on_done = on_done
        self.transport: asyncio.Transport | None = None
        self.buf = bytearray()
        self.busy = False
        self.due = 0.0
        self.closed = asyncio.get_running_loop().create_future()

    def connection_made(self, transport) -> None:
        self.transport = transport

    def send(self, data: bytes, due: float) -> None:
        self.busy = True
        self.due = due
        self.transport.write(data)

    def data_received(self, data: bytes) -> None:
        self.buf += data
        while self.busy:
            end = self.buf.find(b"\r\n\r\n")
            if end < 0:
                return
            head = bytes(self.buf[:end]).lower()
            try:
                status = int(head[9:12])
                at = head.index(b"content-length:")
                eol = head.find(b"\r\n", at)
                length = int(head[at + 15 : eol if eol >= 0 else None])
            except ValueError:
                self.busy = False
                self.on_done(self, 0, "unparsable response")
                self.transport.close()
                return
            total = end + 4 + length
            if len(self.buf) < total:
                return
            del self.buf[:total]
            self.busy = False
            self.on_done(self, status, None)

    def connection_lost(self, exc) -> None:
        if self.busy:
            self.busy = False
            self.on_done(self, 0, "connection lost")
        if not self.closed.done():
            self.closed.set_result(None)


@dataclass(frozen=True)
class OpenLoopResult:
    rate: float
    sent: int
    ok: int
    errors: int
    seconds: float
    latency_ms: dict  # p50, p90, p99, p999, max, mean

    @property
    def achieved_rps(self) -> float:
        return self.ok / self.seconds if self.seconds else 0.0

    def row(self) -> dict:
        return {
            "rate": self.rate,
            "rps": round(self.achieved_rps, 1),
            "p50_ms": self.latency_ms["p50"],
            "p90_ms": self.latency_ms["p90"],
            "p99_ms": self.latency_ms["p99"],
            "errors": self.errors,
        }


def summarise(latencies_s: np.ndarray) -> dict:
    if len(latencies_s) == 0:
        return {k: float("nan") for k in ("mean", "max", "p50", "p90", "p99", "p999")}
    ms = latencies_s * 1000.0
    p50, p90, p99, p999 = np.percentile(ms, [50, 90, 99, 99.9])
    return {
        "mean": round(float(ms.mean()), 3),
        "max": round(float(ms.max()), 3),
        "p50": round(float(p50), 3),
        "p90": round(float(p90), 3),
        "p99": round(float(p99), 3),
        "p999": round(float(p999), 3),
    }


async def open_loop(
    host: str,
    port: int,
    paths: list[str],
    *,
    rate: float,
    duration: float,
    connections: int = 32,
    warmup: float = 0.5,
    headers: dict[str, str] | None = None,
) -> OpenLoopResult:
    """Send ``rate`` requests per second for ``duration`` seconds (after ``warmup`` seconds at
    the same rate that are not recorded); latency is from each request's due time."""
    if rate <= 0 or duration <= 0 or not paths:
        raise ValueError("rate, duration and paths must be positive / non-empty")
    loop = asyncio.get_running_loop()
    clock = time.perf_counter  # uvloop's loop.time() has only millisecond resolution
    extra = "".join(f"{k}: {v}\r\n" for k, v in (headers or {}).items())
    requests = [f"GET {p} HTTP/1.1\r\nHost: {host}:{port}\r\n{extra}\r\n".encode() for p in paths]
    backlog: collections.deque[tuple[int, float]] = collections.deque()
    idle: list[_Conn] = []
    latencies = np.empty(int(rate * (duration + warmup)) + 16, dtype=np.float64)
    state = {"n": 0, "errors": 0, "ok": 0, "recording_from": 0.0}
    done = asyncio.Event()
    outstanding = {"count": 0}
    sending_over = {"flag": False}

    def finish(conn: _Conn, status: int, error: str | None) -> None:
        now = clock()
        outstanding["count"] -= 1
        if conn.due >= state["recording_from"]:
            if error is None and 200 <= status < 400:
                n = state["n"]
                if n < len(latencies):
                    latencies[n] = now - conn.due
                    state["n"] = n + 1
                state["ok"] += 1
            else:
                state["errors"] += 1
        if error is not None:
            return
        if backlog:
            index, due = backlog.popleft()
            conn.send(requests[index % len(requests)], due)
        else:
            idle.append(conn)
        if sending_over["flag"] and outstanding["count"] == 0 and not backlog:
            done.set()

    conns: list[_Conn] = []
    for _ in range(connections):
        _, conn = await loop.create_connection(lambda: _Conn(finish), host, port)
        conns.append(conn)
        idle.append(conn)

    start = clock() + 0.01
    state["recording_from"] = start + warmup
    total = int(rate * (warmup + duration))
    index = 0
    try:
        while index < total:
            now = clock()
            due_count = min(total, int((now - start) * rate) + 1)
            while index < due_count:
                due = start + index / rate
                outstanding["count"] += 1
                if idle:
                    idle.pop().send(requests[index % len(requests)], due)
                else:
                    backlog.append((index, due))
                index += 1
            next_due = start + index / rate
            await asyncio.sleep(max(0.0, next_due - clock()))
        sending_over["flag"] = True
        if outstanding["count"] > 0 or backlog:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(done.wait(), timeout=10.0)
        ended = start + warmup + duration
    finally:
        for conn in conns:
            if conn.transport is not None:
                conn.transport.close()
    lost = outstanding["count"]  # never answered within 10 s after the end
    return OpenLoopResult(
        rate=rate,
        sent=total,
        ok=state["ok"],
        errors=state["errors"] + lost,
        seconds=max(ended - state["recording_from"], 1e-9),
        latency_ms=summarise(latencies[: state["n"]]),
    )


def run(host: str, port: int, paths: list[str], **kwargs) -> OpenLoopResult:
    """``open_loop`` on a fresh (uv)loop: the entry point for a separate, pinned process."""
    factory = None
    with contextlib.suppress(ImportError):
        import uvloop

        factory = uvloop.new_event_loop
    with asyncio.Runner(loop_factory=factory) as runner:
        return runner.run(open_loop(host, port, paths, **kwargs))


def main(argv: list[str] | None = None) -> int:
    """``python -m bench.openloop --port P --rate R --duration D --paths FILE``: one JSON line."""
    p = argparse.ArgumentParser(prog="python -m bench.openloop")
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, required=True)
    p.add_argument("--rate", type=float, required=True)
    p.add_argument("--duration", type=float, default=5.0)
    p.add_argument("--warmup", type=float, default=0.5)
    p.add_argument("--connections", type=int, default=32)
    p.add_argument("--paths", required=True, help="file with one path per line")
    p.add_argument("--header", action="append", default=[], help="Name: value")
    args = p.parse_args(argv)
    with open(args.paths) as fh:
        paths = [line.strip() for line in fh if line.strip()]
    headers = dict(h.split(": ", 1) for h in args.header)
    result = run(
        args.host,
        args.port,
        paths,
        rate=args.rate,
        duration=args.duration,
        connections=args.connections,
        warmup=args.warmup,
        headers=headers,
    )
    sys.stdout.write(
        orjson.dumps(
            {**result.row(), "sent": result.sent, "ok": result.ok, "latency_ms": result.latency_ms}
        ).decode()
        + "\n"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
