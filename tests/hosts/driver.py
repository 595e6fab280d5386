"""The page load of the hosts lab, run inside the web server's namespace:
``python -m tests.hosts.driver --url http://127.0.0.1:PORT --rate 20 --duration 38 --out F``.

Open loop: one composed page (``/api/pages/movies/{id}``, logged in, so every fragment is
asked for) every 1/rate seconds whatever the answers do, so a slow phase cannot hide itself by
slowing the load. Each page is recorded with its wall-clock send time (the lab's phases are
wall-clock times too): status, latency, degraded fragments, where the similar row came from.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import time
from pathlib import Path

import aiohttp

CLIENT_TIMEOUT = 10.0  # a page not answered in this long counts as lost


async def one(session: aiohttp.ClientSession, url: str, cookie: str) -> dict:
    sent = time.time()
    started = time.perf_counter()
    sample: dict = {"sent": sent, "status": 0, "degraded": [], "source": None}
    try:
        async with session.get(
            url,
            headers={"Cookie": cookie},
            timeout=aiohttp.ClientTimeout(total=CLIENT_TIMEOUT),
        ) as resp:
            sample["status"] = resp.status
            if resp.status == 200:
                page = await resp.json()
                sample["degraded"] = page.get("degraded", [])
                sample["source"] = (page.get("similar") or {}).get("source")
            else:
                await resp.read()
    except (aiohttp.ClientError, TimeoutError, OSError) as exc:
        sample["error"] = type(exc).__name__
    sample["ms"] = (time.perf_counter() - started) * 1000
    return sample


async def drive(url: str, rate: float, duration: float, movies: list[int], cookie: str) -> list:
    interval = 1.0 / rate
    tasks = []
    connector = aiohttp.TCPConnector(limit=200)
    async with aiohttp.ClientSession(connector=connector) as session:
        start = time.perf_counter()
        count = int(duration * rate)
        for i in range(count):
            delay = start + i * interval - time.perf_counter()
            if delay > 0:
                await asyncio.sleep(delay)
            page = f"{url}/api/pages/movies/{movies[i % len(movies)]}"
            tasks.append(asyncio.create_task(one(session, page, cookie)))
        return list(await asyncio.gather(*tasks))


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--url", required=True)
    parser.add_argument("--rate", type=float, default=20.0)
    parser.add_argument("--duration", type=float, required=True)
    parser.add_argument("--movies", required=True, help="comma-separated movie ids")
    parser.add_argument("--cookie", required=True, help="the Cookie header (a logged-in user)")
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args(argv)
    movies = [int(m) for m in args.movies.split(",")]
    print(json.dumps({"started": time.time()}), flush=True)
    samples = asyncio.run(drive(args.url, args.rate, args.duration, movies, args.cookie))
    args.out.write_text(json.dumps(samples))


if __name__ == "__main__":
    main()
