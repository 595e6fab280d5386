"""``Accounts`` called in-process (as the monolith does), on SQLite and on PostgreSQL: passwords
kept only as Argon2id hashes, log-in limits, revocable sessions, demo logins in development only."""

from __future__ import annotations

import dataclasses

import pytest

from services.platform import auth
from services.platform.errors import BadRequest, Conflict, Forbidden, TooManyRequests, Unauthorized
from services.platform.settings import Settings
from services.subscription.accounts import Accounts
from services.subscription.store import FIRST_ACCOUNT_ID
from services.subscription.subscriptions import Subscriptions
from tests.services.helpers import SECRET, query

PASSWORD = "correct horse battery"
HERE = "192.0.2.1"


async def test_a_registered_user_logs_in_with_their_password(
    accounts: Accounts, settings: Settings
) -> None:
    made = await accounts.register("Ada", PASSWORD, HERE)
    grant = await accounts.log_in("Ada", PASSWORD, HERE)
    assert (grant.user_id, grant.name, grant.generation) == (made.user_id, "Ada", 0)
    # the session's own lifetime: a token signed in the last minute may be handed out again
    claims = auth.session_claims(grant.token, SECRET, settings.session_max_age)
    assert claims == (made.user_id, 0)
    assert await accounts.check_session(grant.token) == (made.user_id, 0)


async def test_a_wrong_password_and_an_unknown_name_get_the_same_401(accounts: Accounts) -> None:
    await accounts.register("ada", PASSWORD, HERE)
    answers = []
    for name, password in (("ada", "wrong password"), ("nobody", PASSWORD)):
        with pytest.raises(Unauthorized) as refused:
            await accounts.log_in(name, password, HERE)
        answers.append((refused.value.code, refused.value.message))
    assert answers[0] == answers[1] == ("wrong_credentials", "wrong name or password")


async def test_names_are_one_account_whatever_their_case(accounts: Accounts) -> None:
    first = await accounts.register("Grace", PASSWORD, HERE)
    with pytest.raises(Conflict) as taken:
        await accounts.register("GRACE", "another password", HERE)
    assert taken.value.code == "name_taken"
    assert (await accounts.log_in("grace", PASSWORD, HERE)).user_id == first.user_id


async def test_account_ids_start_above_every_movielens_user(accounts: Accounts) -> None:
    ids = [(await accounts.register(f"user{i}", PASSWORD, f"192.0.2.{i}")).user_id for i in (1, 2)]
    assert ids == [FIRST_ACCOUNT_ID, FIRST_ACCOUNT_ID + 1]


async def test_a_password_is_kept_only_as_an_argon2id_hash(
    accounts: Accounts, settings: Settings
) -> None:
    await accounts.register("alan", PASSWORD, HERE)
    [(stored,)] = await query(settings, "SELECT password_hash FROM accounts")
    assert stored.startswith("$argon2id$") and PASSWORD not in stored


@pytest.mark.parametrize(
    ("name", "password", "code"),
    [
        ("ab", PASSWORD, "invalid_name"),
        ("a" * 33, PASSWORD, "invalid_name"),
        ("-dash-first", PASSWORD, "invalid_name"),
        ("white space", PASSWORD, "invalid_name"),
        ("ünïcode", PASSWORD, "invalid_name"),
        ("fine", "short", "invalid_password"),
        ("fine", "x" * 257, "invalid_password"),
    ],
)
async def test_bad_names_and_passwords_are_400_and_make_nothing(
    accounts: Accounts, settings: Settings, name: str, password: str, code: str
) -> None:
    with pytest.raises(BadRequest) as refused:
        await accounts.register(name, password, HERE)
    assert refused.value.code == code
    assert await query(settings, "SELECT COUNT(*) FROM accounts") == [(0,)]


async def test_logging_out_ends_every_session_of_the_user(accounts: Accounts) -> None:
    await accounts.register("ada", PASSWORD, HERE)
    phone = await accounts.log_in("ada", PASSWORD, HERE)
    laptop = await accounts.log_in("ada", PASSWORD, HERE)
    ended = await accounts.log_out(phone.token)
    assert (ended.user_id, ended.generation) == (phone.user_id, 1)
    assert await accounts.check_session(phone.token) is None
    assert await accounts.check_session(laptop.token) is None
    again = await accounts.log_in("ada", PASSWORD, HERE)
    assert again.generation == 1 and await accounts.check_session(again.token) is not None


async def test_a_dead_token_cannot_end_the_sessions_made_after_it(accounts: Accounts) -> None:
    await accounts.register("ada", PASSWORD, HERE)
    old = await accounts.log_in("ada", PASSWORD, HERE)
    await accounts.log_out(old.token)
    new = await accounts.log_in("ada", PASSWORD, HERE)
    assert (await accounts.log_out(old.token)).generation == 1  # replayed: nothing moves
    assert await accounts.check_session(new.token) is not None


async def test_logging_out_a_forged_token_is_401(accounts: Accounts) -> None:
    with pytest.raises(Unauthorized):
        await accounts.log_out(auth.session_token(FIRST_ACCOUNT_ID, "not-the-secret"))


async def test_failed_log_ins_are_limited_per_name(accounts: Accounts) -> None:
    await accounts.register("ada", PASSWORD, HERE)
    for i in range(3):  # the name's burst, each from another address
        with pytest.raises(Unauthorized):
            await accounts.log_in("ada", "guess", f"198.51.100.{i}")
    with pytest.raises(TooManyRequests) as limited:
        await accounts.log_in("ADA", PASSWORD, "198.51.100.9")  # even the right password
    assert limited.value.code == "too_many_attempts"
    assert 3000 < limited.value.retry_after <= 3600
    assert limited.value.details == {"retry_after": limited.value.retry_after}


async def test_failed_log_ins_are_limited_per_address(accounts: Accounts) -> None:
    for i in range(6):  # the address's burst, each on another name
        with pytest.raises(Unauthorized):
            await accounts.log_in(f"name{i}", "guess", HERE)
    with pytest.raises(TooManyRequests):
        await accounts.log_in("name-untried", "guess", HERE)
    with pytest.raises(Unauthorized):  # another address is not limited
        await accounts.log_in("name-untried", "guess", "203.0.113.5")


async def test_a_right_password_is_not_counted_as_a_failure(accounts: Accounts) -> None:
    await accounts.register("ada", PASSWORD, HERE)
    for _ in range(10):
        await accounts.log_in("ada", PASSWORD, HERE)
    for _ in range(3):
        with pytest.raises(Unauthorized):
            await accounts.log_in("ada", "guess", HERE)


async def test_registrations_are_limited_per_address(accounts: Accounts) -> None:
    for i in range(4):
        await accounts.register(f"user{i}", PASSWORD, HERE)
    with pytest.raises(TooManyRequests) as limited:
        await accounts.register("user-too-many", PASSWORD, HERE)
    assert limited.value.code == "too_many_registrations"


async def test_demo_logins_are_refused_outside_development(accounts: Accounts) -> None:
    assert not accounts.settings.development
    with pytest.raises(Forbidden) as refused:
        await accounts.demo_log_in(5)
    assert refused.value.code == "demo_logins_off"


async def test_demo_logins_in_development_are_movielens_users_only(settings: Settings) -> None:
    development = dataclasses.replace(settings, development=True)
    subscriptions = await Subscriptions.open(development)
    accounts = Accounts(subscriptions.store, development)
    try:
        grant = await accounts.demo_log_in(5)
        assert (grant.user_id, grant.name, grant.generation) == (5, None, 0)
        assert await accounts.check_session(grant.token) == (5, 0)
        for user_id in (0, FIRST_ACCOUNT_ID, FIRST_ACCOUNT_ID + 7):  # never an account's id
            with pytest.raises(BadRequest):
                await accounts.demo_log_in(user_id)
    finally:
        accounts.close()
        await subscriptions.close()


async def test_the_session_state_names_the_account(accounts: Accounts) -> None:
    made = await accounts.register("ada", PASSWORD, HERE)
    await accounts.log_out(made.token)
    state = await accounts.session_state(made.user_id)
    assert (state.user_id, state.generation, state.name) == (made.user_id, 1, "ada")
    demo = await accounts.session_state(5)
    assert (demo.generation, demo.name) == (0, None)


async def test_asking_for_taken_names_is_limited_like_registering(accounts: Accounts) -> None:
    """A 409 tells that a name exists: probing names that way is limited per address too."""
    await accounts.register("ada", PASSWORD, "198.51.100.1")
    for _ in range(4):
        with pytest.raises(Conflict):
            await accounts.register("ada", PASSWORD, HERE)
    with pytest.raises(TooManyRequests):
        await accounts.register("ada", PASSWORD, HERE)
