"""Marquee's benchmark suite: ``python -m bench`` (``make bench``).

Each benchmark is one module with ``run(ctx) -> BenchResult``: servers run as separate processes
on free loopback ports, load comes from wrk (closed loop, maximum throughput) or
``python -m loadtest --paths`` (the project's one load generator: constant rate, latency at a
given load; :func:`bench.loadgen.open_loop`), and every figure that is a ratio
is measured against its baseline in the same run.
"""
