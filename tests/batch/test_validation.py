"""Every bad upload gets a clear error naming its line, and nothing is queued for it."""

from __future__ import annotations

import pytest
import redis.asyncio as aioredis

from recommender.batch import BatchJobs, parse_k, parse_upload
from services.platform.errors import ApiError, BadRequest, PayloadTooLarge
from tests.conftest import replace

LIMITS = {"max_bytes": 10_000, "max_rows": 50}


def reject(data: bytes, **limits: int) -> ApiError:
    with pytest.raises(ApiError) as info:
        parse_upload(data, **{**LIMITS, **limits})
    return info.value


def lines_of(error: ApiError) -> list[int]:
    return [e["line"] for e in error.details["errors"]]


def test_movies_and_users_are_told_apart_by_the_header() -> None:
    movies = parse_upload(b"movie_id\n1\n2\n", **LIMITS)
    assert (movies.kind, movies.ids, movies.lines) == ("movies", [1, 2], [2, 3])
    users = parse_upload(b"user_id\r\n7\r\n", **LIMITS)
    assert (users.kind, users.ids) == ("users", [7])


def test_a_ratings_file_is_a_histories_upload() -> None:
    data = b"userId,movieId,rating,timestamp\r\n1,2,4.5,100\r\n1,3,2,101\r\n\r\n2,2,5,99\r\n"
    parsed = parse_upload(data, **LIMITS)
    assert (parsed.kind, parsed.ids, parsed.movies) == ("histories", [1, 1, 2], [2, 3, 2])
    assert (parsed.ratings, parsed.timestamps) == ([4.5, 2.0, 5.0], [100, 101, 99])
    assert parsed.lines == [2, 3, 5]
    bare = parse_upload(b"movie_id,user_id\n5,1\n", **LIMITS)
    assert (bare.kind, bare.ids, bare.movies, bare.ratings) == ("histories", [1], [5], [])


def test_every_bad_history_row_is_reported() -> None:
    data = b"user_id,movie_id,rating,timestamp\n1,2,4,100\n1,x,4,100\n1,2,good,100\n1,2,4,-5\n1\n"
    error = reject(data)
    assert error.code == "invalid_rows" and lines_of(error) == [3, 4, 5, 6]
    messages = [e["message"] for e in error.details["errors"]]
    assert "'x' is not a valid movie_id" in messages[0]
    assert "'good' is not a valid rating" in messages[1]
    assert "'-5' is not a valid timestamp" in messages[2]
    assert "missing the movie_id column" in messages[3]


def test_friendly_variants_are_accepted() -> None:
    # a UTF-8 BOM, CRLF, MovieLens spelling, extra columns, blank lines, spaces, quotes
    data = '\ufeffmovieId,title\r\n1,Toy Story\r\n\r\n "2" ,"Jumanji, 1995"\r\n\r\n'.encode()
    parsed = parse_upload(data, **LIMITS)
    assert (parsed.kind, parsed.ids, parsed.lines) == ("movies", [1, 2], [2, 4])


@pytest.mark.parametrize(
    ("data", "code", "line"),
    [
        (b"", "empty_file", 1),
        (b"\n  \r\n", "empty_file", 1),
        (b"movie_id\n", "no_rows", 2),
        (b"movie_id\r\n\r\n", "no_rows", 2),
        (b"title\nToy Story\n", "invalid_header", 1),
        (b"movie_id,movieId\n1,2\n", "invalid_header", 1),
        (b"movie_id\n1\n2\x003\n", "invalid_encoding", 3),
        (b"\x89PNG\r\n\x1a\n\x00\x00", "invalid_encoding", 3),
        ("movie_id\n1\nCaf\u00e9\n".encode("latin-1"), "invalid_encoding", 3),
        (b'movie_id\n1\n"2\n3\n', "invalid_rows", 3),  # an unclosed quote
    ],
)
def test_bad_files_are_rejected_with_their_line(data: bytes, code: str, line: int) -> None:
    error = reject(data)
    assert isinstance(error, BadRequest)
    assert error.code == code
    assert lines_of(error)[0] == line
    assert error.message.startswith(f"line {line}: ")


def test_every_bad_row_is_reported_at_once() -> None:
    data = b"movie_id\n1\nabc\n3\n-4\n0\n1.5\n99999999999\n\n7\n,\n"
    error = reject(data)
    assert error.code == "invalid_rows"
    assert lines_of(error) == [3, 5, 6, 7, 8]
    assert error.details["error_count"] == 5
    assert "'abc' is not a valid movie_id" in error.message
    assert "(5 lines have errors)" in error.message


def test_a_missing_column_is_reported() -> None:
    error = reject(b"title,movie_id\nToy Story,1\nJumanji\n")
    assert error.code == "invalid_rows"
    assert error.details["errors"][0] == {
        "line": 3,
        "message": "missing the movie_id column",
        "value": None,
    }


def test_errors_are_capped_but_counted() -> None:
    data = b"user_id\n" + b"x\n" * 30
    error = reject(data)
    assert len(error.details["errors"]) == 20
    assert error.details["error_count"] == 30


def test_size_and_row_limits() -> None:
    too_big = reject(b"movie_id\n" + b"1\n" * 6000)
    assert isinstance(too_big, PayloadTooLarge) and too_big.status == 413
    assert too_big.code == "too_large"
    too_many = reject(b"movie_id\n" + b"1\n" * 51)
    assert too_many.status == 400 and too_many.code == "too_many_rows"
    assert lines_of(too_many) == [52]
    assert parse_upload(b"movie_id\n" + b"1\n" * 50, **LIMITS).ids == [1] * 50


@pytest.mark.parametrize("raw", ["0", "101", "-1", "ten", "1.0"])
def test_k_is_checked(raw: str) -> None:
    with pytest.raises(BadRequest) as info:
        parse_k(raw)
    assert info.value.code == "invalid_param"


def test_k_defaults() -> None:
    assert parse_k(None) == 10 and parse_k("") == 10 and parse_k(" 25 ") == 25


BAD_UPLOADS = [
    b"",
    b"movie_id\n",
    b"name\nx\n",
    b"movie_id\nabc\n",
    b"movie_id\n\x00\n",
    b"movie_id\n\xff\xfe\n",
    b"movie_id\n" + b"1\n" * 20,  # over the row limit below
    b"movie_id\n" + b"12345\n" * 200,  # over the byte limit below
]


async def test_nothing_is_queued_for_a_rejected_file(
    batch_keys, redis_client: aioredis.Redis, batch_settings
) -> None:
    jobs = BatchJobs(redis_client, replace(batch_settings, batch_max_rows=10, batch_max_bytes=1000))
    accepted = await jobs.submit(b"movie_id\n1\n", "ok.csv", owner=3)
    keys_before = sorted(await redis_client.keys("*"))
    assert await redis_client.xlen(batch_keys.stream) == 1
    for data in BAD_UPLOADS:
        with pytest.raises(ApiError):
            await jobs.submit(data, "bad.csv", owner=3)
    assert await redis_client.xlen(batch_keys.stream) == 1
    assert sorted(await redis_client.keys("*")) == keys_before
    assert [j["job_id"] for j in await jobs.recent(3)] == [accepted["job_id"]]


async def test_a_submitted_job_is_stored_queued_and_expires(
    batch_keys, redis_client: aioredis.Redis, jobs: BatchJobs
) -> None:
    job = await jobs.submit(b"user_id\n1\n2\n", "users.csv", owner=9, k=5)
    assert job["status"] == "queued" and job["kind"] == "users" and job["k"] == 5
    assert job["total_rows"] == 2 and job["owner"] == 9
    status = await jobs.status(job["job_id"])
    assert status["status"] == "queued" and status["filename"] == "users.csv"
    assert 0 < status["expires_in"] <= 600
    for key in await redis_client.keys(batch_keys.prefix + ":*"):
        if key != batch_keys.stream:
            assert 0 < await redis_client.ttl(key) <= 600, key
    entries = await redis_client.xrange(batch_keys.stream)
    assert [fields["job"] for _id, fields in entries] == [job["job_id"]]


def test_an_id_of_thousands_of_digits_is_a_row_error_not_a_crash() -> None:
    """Issue 18.8: Python refuses to parse integers of over 4,300 digits; such an id is simply
    not a valid id (it was a 500)."""
    error = reject(b"movie_id\n1\n" + b"9" * 5000 + b"\n")
    assert isinstance(error, BadRequest) and lines_of(error) == [3]
