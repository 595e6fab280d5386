"""The batch API over a real socket: upload, status, results as JSON and CSV, errors, privacy."""

from __future__ import annotations

import asyncio
import csv
import io

import aiohttp
import pytest
from aiohttp.test_utils import TestServer

from recommender.batch_api import setup_batch_api
from recommender.batch_worker import batch_worker_ctx
from services.platform.app import create_base_app
from services.platform.auth import SESSION_HEADER, session_token
from services.platform.settings import Settings
from tests.conftest import replace
from tests.support import SERVICE, async_wait_until, free_port, get_json

CSV = {"Content-Type": "text/csv"}


async def serve(settings: Settings, *, worker: bool) -> TestServer:
    app = create_base_app(settings, "recommender")
    setup_batch_api(app)
    if worker:  # the monolith's way: a worker task inside the web process
        app.cleanup_ctx.append(batch_worker_ctx)
    server = TestServer(app, host="127.0.0.1")
    await server.start_server()
    return server


@pytest.fixture
async def api(batch_settings: Settings):
    server = await serve(
        replace(batch_settings, batch_max_bytes=2000, batch_max_rows=100), worker=True
    )
    yield str(server.make_url("")).rstrip("/")
    await server.close()


@pytest.fixture
async def api_no_worker(batch_settings: Settings):
    server = await serve(
        replace(batch_settings, batch_max_bytes=2000, batch_max_rows=100), worker=False
    )
    yield str(server.make_url("")).rstrip("/")
    await server.close()


async def wait_done(http: aiohttp.ClientSession, url: str, **kwargs) -> dict:
    body: dict = {}

    async def done() -> bool:
        nonlocal body
        status, body = await get_json(http, url, **kwargs)
        assert status == 200, body
        return body["status"] == "done"

    await async_wait_until(done, 20, f"{url} done")
    return body


async def test_upload_follow_and_download(api: str, http: aiohttp.ClientSession, loaded_model):
    model, manifest = loaded_model
    data = b"movie_id\n1\n2\n999999999\n"
    async with http.post(
        f"{api}/v1/batch", data=data, params={"k": "3"}, headers={**CSV, **SERVICE}
    ) as resp:
        assert resp.status == 202, await resp.text()
        created = await resp.json()
        assert resp.headers["Location"] == f"/v1/batch/{created['job_id']}"
    assert created["status"] == "queued" and created["kind"] == "movies" and created["k"] == 3
    job = await wait_done(http, f"{api}{created['links']['self']}")
    assert job["model_version"] == manifest.version
    assert job["warning_count"] == 1 and job["warnings"][0]["line"] == 4

    status, body = await get_json(http, f"{api}/v1/batch/{job['job_id']}/results")
    assert status == 200
    assert body["model_version"] == manifest.version and body["count"] == 6
    assert body["items"] == [
        {"row": row, "movie_id": m, "rank": rank, "similar_movie_id": s, "score": round(sc, 6)}
        for row, m in ((1, 1), (2, 2))
        for rank, (s, sc) in enumerate(model.similar(m, 3), 1)
    ]
    async with http.get(
        f"{api}/v1/batch/{job['job_id']}/results", params={"format": "csv"}
    ) as resp:
        assert resp.status == 200 and resp.content_type == "text/csv"
        assert "attachment" in resp.headers["Content-Disposition"]
        table = list(csv.DictReader(io.StringIO(await resp.text())))
    assert [int(r["similar_movie_id"]) for r in table] == [
        i["similar_movie_id"] for i in body["items"]
    ]
    assert {r["model_version"] for r in table} == {manifest.version}
    assert list(table[0]) == [
        "row",
        "movie_id",
        "rank",
        "similar_movie_id",
        "score",
        "model_version",
    ]


async def test_multipart_upload_with_k(api: str, http: aiohttp.ClientSession):
    form = aiohttp.FormData()
    form.add_field("k", "2")
    form.add_field("file", b"user_id\n1\n", filename="u.csv", content_type="text/csv")
    async with http.post(f"{api}/v1/batch", data=form, headers=SERVICE) as resp:
        assert resp.status == 202
        created = await resp.json()
    assert created["filename"] == "u.csv" and created["k"] == 2 and created["kind"] == "users"
    await wait_done(http, f"{api}/v1/batch/{created['job_id']}")
    status, body = await get_json(http, f"{api}/v1/batch/{created['job_id']}/results")
    assert status == 200 and [i["rank"] for i in body["items"]] == [1, 2]


async def test_results_wait_for_the_job(api_no_worker: str, http: aiohttp.ClientSession):
    async with http.post(
        f"{api_no_worker}/v1/batch", data=b"movie_id\n1\n", headers=SERVICE
    ) as resp:
        job_id = (await resp.json())["job_id"]
    status, body = await get_json(http, f"{api_no_worker}/v1/batch/{job_id}/results")
    assert status == 409 and body["error"]["code"] == "job_not_finished"
    status, body = await get_json(http, f"{api_no_worker}/v1/batch/{job_id}")
    assert status == 200 and body["status"] == "queued" and body["progress"] == 0.0


@pytest.mark.parametrize(
    ("data", "status", "code", "line"),
    [
        (b"", 400, "empty_file", 1),
        (b"movie_id\n", 400, "no_rows", 2),
        (b"film\n1\n", 400, "invalid_header", 1),
        (b"movie_id\n1\nx\n", 400, "invalid_rows", 3),
        (b"movie_id\n1\n\x00\n", 400, "invalid_encoding", 3),
        (b"movie_id\n1\n\xe9\n", 400, "invalid_encoding", 3),
        (b"movie_id\n" + b"1\n" * 101, 400, "too_many_rows", 102),
        (b"movie_id\n" + b"123456\n" * 300, 413, "too_large", None),
    ],
)
async def test_bad_uploads(
    batch_keys,
    api_no_worker: str,
    http: aiohttp.ClientSession,
    redis_client,
    data: bytes,
    status: int,
    code: str,
    line: int | None,
):
    before = await redis_client.xlen(batch_keys.stream)
    async with http.post(
        f"{api_no_worker}/v1/batch", data=data, headers={**CSV, **SERVICE}
    ) as resp:
        body = await resp.json()
        assert resp.status == status, body
    assert body["error"]["code"] == code
    if line is not None:
        assert body["error"]["message"].startswith(f"line {line}: ")
        assert body["error"]["details"]["errors"][0]["line"] == line
    assert await redis_client.xlen(batch_keys.stream) == before


async def test_oversize_is_refused_without_a_content_length(
    batch_keys, api_no_worker: str, http: aiohttp.ClientSession, redis_client
):
    async def chunks():
        yield b"movie_id\n"
        for _ in range(100):
            yield b"1234567890\n" * 10

    async with http.post(f"{api_no_worker}/v1/batch", data=chunks(), headers=SERVICE) as resp:
        assert resp.status == 413
        assert (await resp.json())["error"]["code"] == "too_large"
    assert await redis_client.xlen(batch_keys.stream) == 0


async def test_bad_requests(api_no_worker: str, http: aiohttp.ClientSession):
    async with http.post(
        f"{api_no_worker}/v1/batch", data=b"movie_id\n1\n", params={"k": "500"}, headers=SERVICE
    ) as resp:
        assert resp.status == 400 and (await resp.json())["error"]["code"] == "invalid_param"
    async with http.post(f"{api_no_worker}/v1/batch", json={"ids": [1]}, headers=SERVICE) as resp:
        assert resp.status == 415
    for job_id in ("0" * 32, "nope", "../x"):
        status, body = await get_json(http, f"{api_no_worker}/v1/batch/{job_id}")
        assert status == 404 and body["error"]["code"] in ("unknown_job", "not_found")
    async with http.post(
        f"{api_no_worker}/v1/batch", data=b"movie_id\n1\n", headers=SERVICE
    ) as resp:
        job_id = (await resp.json())["job_id"]
    status, body = await get_json(
        http, f"{api_no_worker}/v1/batch/{job_id}/results", params={"format": "xml"}
    )
    assert status == 400 and body["error"]["code"] == "invalid_param"


async def test_a_users_job_is_private(
    api_no_worker: str, http: aiohttp.ClientSession, batch_settings: Settings
):
    mine = {SESSION_HEADER: session_token(7, batch_settings.secret_key)}
    theirs = {SESSION_HEADER: session_token(8, batch_settings.secret_key)}
    async with http.post(f"{api_no_worker}/v1/batch", data=b"movie_id\n1\n", headers=mine) as resp:
        job = await resp.json()
    assert job["owner"] == 7
    url = f"{api_no_worker}/v1/batch/{job['job_id']}"
    assert (await get_json(http, url, headers=mine))[0] == 200
    assert (await get_json(http, url, headers=theirs))[0] == 403
    assert (await get_json(http, url))[0] == 403
    service = {"Authorization": f"Bearer {batch_settings.service_token}"}
    assert (await get_json(http, url, headers=service))[0] == 200


@pytest.mark.parametrize("redis_url", ["", "unreachable"])
async def test_no_redis_is_a_503(
    batch_settings: Settings, http: aiohttp.ClientSession, redis_url: str
):
    url = f"redis://127.0.0.1:{free_port()}/0" if redis_url else ""
    server = await serve(replace(batch_settings, redis_url=url), worker=False)
    base = str(server.make_url("")).rstrip("/")
    try:
        async with http.post(f"{base}/v1/batch", data=b"movie_id\n1\n", headers=SERVICE) as resp:
            assert resp.status == 503
            assert (await resp.json())["error"]["code"] == "batch_unavailable"
        status, body = await get_json(http, f"{base}/v1/batch/{'a' * 32}")
        assert status == 503 and body["error"]["code"] == "batch_unavailable"
    finally:
        await server.close()


async def test_openapi_lists_the_batch_routes(api_no_worker: str, http: aiohttp.ClientSession):
    status, spec = await get_json(http, f"{api_no_worker}/openapi.json")
    assert status == 200
    assert {"/v1/batch", "/v1/batch/{job_id}", "/v1/batch/{job_id}/results"} <= set(spec["paths"])
    assert "202" in spec["paths"]["/v1/batch"]["post"]["responses"]


async def test_an_anonymous_upload_is_refused_and_queues_nothing(
    api_no_worker: str, http: aiohttp.ClientSession, redis_client, batch_keys
):
    """A job costs compute: only a user (their session) or a service may queue one."""
    async with http.post(f"{api_no_worker}/v1/batch", data=b"movie_id\n1\n", headers=CSV) as resp:
        assert resp.status == 401
        assert (await resp.json())["error"]["code"] == "unauthorized"
    assert await redis_client.xlen(batch_keys.stream) == 0


async def test_results_come_a_page_at_a_time_with_a_cursor(
    batch_settings: Settings, http: aiohttp.ClientSession, loaded_model
):
    """Paging (what the web server's batch client reads) gives every row of the streamed
    download, in order, once: 200 movies (50 similar each) in chunks of 10 make two pages."""
    server = await serve(replace(batch_settings, batch_chunk_size=10), worker=True)
    api = str(server.make_url("")).rstrip("/")
    try:
        model, _ = loaded_model
        data = ("movie_id\n" + "\n".join(str(int(m)) for m in model.item_ids[:200]) + "\n").encode()
        async with http.post(
            f"{api}/v1/batch", data=data, params={"k": "100"}, headers={**CSV, **SERVICE}
        ) as resp:
            job_id = (await resp.json())["job_id"]

        async def done() -> bool:
            _, job = await get_json(http, f"{api}/v1/batch/{job_id}", headers=SERVICE)
            return job["status"] == "done"

        await async_wait_until(done, 60, "the job to finish")
        url = f"{api}/v1/batch/{job_id}/results"
        status, whole = await get_json(http, url, headers=SERVICE)
        assert status == 200 and len(whole["items"]) == whole["count"] == 200 * 50
        paged, cursor, pages = [], 0, 0
        while cursor is not None:
            status, page = await get_json(http, f"{url}?cursor={cursor}", headers=SERVICE)
            assert status == 200 and page["count"] == whole["count"]
            paged += page["items"]
            cursor, pages = page["next_cursor"], pages + 1
        assert pages == 2 and paged == whole["items"]
    finally:
        await server.close()


async def test_checking_a_large_upload_leaves_the_server_answering(
    batch_settings: Settings, http: aiohttp.ClientSession
):
    """Issue 18.4: checking a 5 MB upload takes a second or two of CPU; it runs off the event
    loop, so the server answers other requests meanwhile (it froze them all before)."""
    settings = replace(batch_settings, batch_max_bytes=6 << 20, batch_max_rows=3_000_000)
    server = await serve(settings, worker=False)
    try:
        body = b"movie_id\n" + b"oops\n" * 1_000_000  # 5 MB, every line wrong: a full scan
        reader, writer = await asyncio.open_connection(server.host, server.port)
        auth = SERVICE["Authorization"]
        head = (
            f"POST /v1/batch HTTP/1.1\r\nHost: x\r\nContent-Type: text/csv\r\n"
            f"Authorization: {auth}\r\nContent-Length: {len(body)}\r\n\r\n"
        )
        writer.write(head.encode() + body)
        await writer.drain()  # the whole upload is out: from here on the server checks it
        answer = asyncio.create_task(reader.readuntil(b"\r\n\r\n"))
        answered_meanwhile = 0
        while not answer.done():
            async with http.get(server.make_url("/healthz")) as resp:
                assert resp.status == 200
            if not answer.done():
                answered_meanwhile += 1
        assert (await answer).startswith(b"HTTP/1.1 400"), await answer
        writer.close()
    finally:
        await server.close()
    # ~2,000 here while the check runs in a thread; 3 when it ran on the event loop
    assert answered_meanwhile >= 50, answered_meanwhile
