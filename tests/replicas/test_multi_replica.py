"""Two subscription replicas on one PostgreSQL behind the web server: 1,000 concurrent plan
changes through the web form, one replica killed (``kill -9``) mid-run, every failed write
retried by the client with the same form (the same Idempotency-Key). Every acknowledged write is
in the database exactly once, and the retries (and a second copy of every write) duplicate
nothing. Figures go to test-artifacts/replicas.json."""

from __future__ import annotations

import asyncio
import json
import signal
import time
import uuid
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import aiohttp
import asyncpg
import pytest

from services.platform import auth
from tests.replicas.conftest import Replicas, http_ready, put_plan
from tests.support import (
    PROJECT_ROOT,
    PYTHON,
    TEST_SECRETS,
    Process,
    async_wait_until,
    free_port,
    marquee_env,
)

WRITES = 1000
CONCURRENCY = 50
KILL_AFTER = 300  # acknowledged writes before one replica is killed
MAX_ATTEMPTS = 40  # per write; a 503 is retried after its Retry-After (or 0.2 s)
ARTIFACT = PROJECT_ROOT / "test-artifacts" / "replicas.json"
SECRET = TEST_SECRETS["secret_key"]


@dataclass
class Write:
    user: int
    plan: str
    key: str  # the form's idempotency_key; the web server sends web-{user}-{key}
    attempts: int = 0
    acknowledged: bool = False

    @property
    def stored_key(self) -> str:
        return f"web-{self.user}-{self.key}"


@pytest.fixture
def web(
    tmp_path: Path, replicas: Replicas, redis_url: str, model_dir: Path
) -> Iterator[tuple[str, list[str]]]:
    """Two replicas and a microservices web server listing both (started in the test)."""
    port = free_port()
    holder: dict[str, Process] = {}

    async def start() -> tuple[str, list[str]]:
        urls = [await replicas.start(), await replicas.start()]
        env = marquee_env(
            mode="microservices",
            web_port=port,
            subscription_url=",".join(urls),
            catalog_url=f"http://127.0.0.1:{free_port()}",  # unused by plan changes
            recommender_urls=f"http://127.0.0.1:{free_port()}",
            subscription_timeout=2.0,
            breaker_reset=0.5,
            redis_url=redis_url,
            model_dir=model_dir,
            var_dir=tmp_path,
            log_level="WARNING",
        )
        process = Process([PYTHON, "-m", "web_server"], env, tmp_path / "web.log").start()
        holder["web"] = process
        url = f"http://127.0.0.1:{port}"

        async def ready() -> bool:
            assert process.proc is not None and process.proc.poll() is None, process.log_tail()
            return await http_ready(url)

        await async_wait_until(ready, 60, "the web server")
        return url, urls

    yield start  # type: ignore[misc]
    if "web" in holder:
        holder["web"].stop()


async def submit(session: aiohttp.ClientSession, web_url: str, write: Write) -> int:
    """POST the plan form as the logged-in user; the status (303 = done), 0 if no answer."""
    form = {
        "action": "subscribe",
        "plan": write.plan,
        "idempotency_key": write.key,
        "csrf_token": auth.sign(f"user:{write.user}", SECRET, purpose="csrf"),
    }
    cookie = {"Cookie": f"marquee_session={auth.session_token(write.user, SECRET)}"}
    try:
        async with session.post(
            f"{web_url}/subscription",
            data=form,
            headers=cookie,
            allow_redirects=False,
            timeout=aiohttp.ClientTimeout(total=15),
        ) as resp:
            await resp.read()
            return resp.status
    except (aiohttp.ClientError, TimeoutError, OSError):
        return 0


async def drive(
    web_url: str, writes: list[Write], on_ack: asyncio.Event, statuses: Counter[int]
) -> None:
    """Send every write, CONCURRENCY at a time; a write that is not acknowledged is sent again
    (same form) until it is, as a browser user pressing the button again would."""
    gate = asyncio.Semaphore(CONCURRENCY)
    acked = 0
    connector = aiohttp.TCPConnector(limit=CONCURRENCY)
    async with aiohttp.ClientSession(
        connector=connector, cookie_jar=aiohttp.DummyCookieJar()
    ) as session:

        async def one(write: Write) -> None:
            nonlocal acked
            async with gate:
                while write.attempts < MAX_ATTEMPTS:
                    write.attempts += 1
                    status = await submit(session, web_url, write)
                    statuses[status] += 1
                    if status == 303:
                        write.acknowledged = True
                        acked += 1
                        if acked >= KILL_AFTER:
                            on_ack.set()
                        return
                    assert status in (0, 502, 503, 504), f"unexpected {status} for {write}"
                    await asyncio.sleep(0.2)

        await asyncio.gather(*(one(w) for w in writes))


async def test_writes_through_two_replicas_apply_once_when_one_is_killed_mid_run(
    web, replicas: Replicas
) -> None:
    web_url, urls = await web()
    plans = ("basic", "standard", "premium")
    writes = [Write(u, plans[u % 3], uuid.uuid4().hex) for u in range(1, WRITES + 1)]
    statuses: Counter[int] = Counter()
    kill_point = asyncio.Event()
    started = time.monotonic()
    run = asyncio.create_task(drive(web_url, writes, kill_point, statuses))

    async def reached() -> bool:
        return kill_point.is_set() or run.done()

    await async_wait_until(reached, 120, f"{KILL_AFTER} acknowledged writes")
    killed_at = time.monotonic()
    replicas.processes[0].signal(signal.SIGKILL)
    await run
    elapsed = time.monotonic() - started

    # A second copy of every write (a double submit of each form): nothing may change.
    duplicates: Counter[int] = Counter()
    copies = [Write(w.user, w.plan, w.key) for w in writes]
    await drive(web_url, copies, asyncio.Event(), duplicates)

    conn = await asyncpg.connect(replicas.database_url)
    try:
        events = await conn.fetch(
            "SELECT user_id, idempotency_key, plan_id FROM subscription_events ORDER BY id"
        )
        current = dict(await conn.fetch("SELECT user_id, plan_id FROM subscriptions"))
    finally:
        await conn.close()

    figures = {
        "writes": WRITES,
        "concurrency": CONCURRENCY,
        "replicas": len(urls),
        "killed_after_acknowledged": KILL_AFTER,
        "killed_at_s": round(killed_at - started, 2),
        "seconds": round(elapsed, 2),
        "acknowledged": sum(w.acknowledged for w in writes),
        "attempts": sum(w.attempts for w in writes),
        "statuses": {str(k): v for k, v in sorted(statuses.items())},
        "duplicate_statuses": {str(k): v for k, v in sorted(duplicates.items())},
        "events_in_database": len(events),
    }
    ARTIFACT.parent.mkdir(exist_ok=True)
    ARTIFACT.write_text(json.dumps(figures, indent=2) + "\n")
    print("multi-replica figures:", json.dumps(figures))

    assert all(w.acknowledged for w in writes + copies), figures
    by_key = Counter((e["user_id"], e["idempotency_key"]) for e in events)
    expected = {(w.user, w.stored_key) for w in writes}
    assert set(by_key) == expected  # every acknowledged write is there, nothing else is
    assert set(by_key.values()) == {1}  # exactly once, whatever the retries and duplicates
    assert current == {w.user: w.plan for w in writes}


async def test_same_key_sent_to_both_replicas_at_once_has_one_effect(
    replicas: Replicas, http: aiohttp.ClientSession
) -> None:
    """The race the database settles: each user's write goes to both replicas at the same
    moment; one applies it, the other answers the stored response; a different body is 409."""
    urls = [await replicas.start(), await replicas.start()]
    users = range(1, 101)
    answers = await asyncio.gather(
        *(put_plan(http, url, u, "standard", f"same-{u}") for u in users for url in urls)
    )
    assert {status for status, _, _ in answers} == {200}
    for first, second in zip(answers[::2], answers[1::2], strict=True):
        assert first[1] == second[1]  # the same response, updated_at included
    status, body, _ = await put_plan(http, urls[1], 1, "premium", "same-1")
    assert (status, body["error"]["code"]) == (409, "idempotency_key_reused")
    conn = await asyncpg.connect(replicas.database_url)
    try:
        rows = await conn.fetch("SELECT user_id, count(*) FROM subscription_events GROUP BY 1")
    finally:
        await conn.close()
    assert {r[0]: r[1] for r in rows} == {u: 1 for u in users}
