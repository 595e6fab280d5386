"""Accounts and sessions: who a visitor is, proven by a password, ended by logging out.

Why here: an account is user data like the plan, so it lives in the subscription service's
database (the same SQLite file or PostgreSQL database, the ``accounts`` and
``session_generations`` tables), and this class is its one home. The HTTP routes
(``accounts_api``) and the monolith's in-process client both call it, like ``Subscriptions``.

- **Registering** takes a name (3-32 letters, digits, ``_ . -``; unique whatever its case) and a
  password (8-256 characters); the password is kept only as an Argon2id hash
  (``passwords.Passwords``). Accounts get user ids from 1,000,000 up, so an account never shares
  an id, a plan or a history with a MovieLens user.
- **Logging in** checks the password and hands out a signed session token
  (``auth.session_token``) carrying the user's current *session generation*.
- **Logging out** moves the user to the next generation (``end_sessions``): every token of the
  earlier one is dead, on every device. ``check_session`` is how a token is judged: signed by us,
  not expired, and of the current generation. The subscription service asks it on every call;
  the web server remembers the answer for a few seconds (``web_server.session``).
- **Demo logins** (a MovieLens user id alone, below 1,000,000) exist only with
  ``settings.development``: without it they are refused with 403, whatever the caller.

Failed log-ins are limited with token buckets (``throttle``), per account name and per client
address: ``NAME_LIMIT`` failures at once, then one a minute per name; ``ADDRESS_LIMIT`` at once,
then one every 6 s per address; registrations ``REGISTER_LIMIT`` at once, then one a minute per
address (a taken name counts: its 409 tells that the name exists). Past a limit the answer is
429 with Retry-After, and the password is not even checked. At log-in, a name that has no
account is limited (and costs a hash) exactly like one that has, so neither the limits nor the
timing tell which names exist. The buckets are per process: with N processes
serving log-ins an attacker gets at most N times the rate, which is still a handful of guesses a
minute per name; a shared bucket would cost a database write on the very path an attacker floods.
The per-name limit can lock the owner out too while someone guesses (for a minute per failure):
the price of slowing a guesser down, and why the per-name burst is not smaller.
"""

from __future__ import annotations

import re
import time
from collections.abc import Callable

from services.platform.auth import SessionClaims, session_claims, session_token
from services.platform.errors import BadRequest, Conflict, Forbidden, TooManyRequests, Unauthorized
from services.platform.settings import Settings
from services.subscription.passwords import Passwords
from services.subscription.schemas import SessionEnded, SessionGrant, SessionState
from services.subscription.store import FIRST_ACCOUNT_ID, Store
from services.subscription.throttle import TokenBuckets, retry_after_header

NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{2,31}$")
MIN_PASSWORD, MAX_PASSWORD = 8, 256
NAME_LIMIT = (5, 1 / 60)  # failures at once, then per second: per account name
ADDRESS_LIMIT = (20, 1 / 6)  # per client address (many names tried from one place)
REGISTER_LIMIT = (5, 1 / 60)  # registrations per client address
MAX_CLIENT = 64  # characters of a client address kept as a bucket key


def check_name(name: object) -> str:
    if not isinstance(name, str) or not NAME_RE.match(name):
        raise BadRequest(
            "a name is 3 to 32 letters, digits, '_', '.' or '-', starting with a letter or digit",
            code="invalid_name",
        )
    return name


def check_password(password: object) -> str:
    if not isinstance(password, str) or not MIN_PASSWORD <= len(password) <= MAX_PASSWORD:
        raise BadRequest(
            f"a password is {MIN_PASSWORD} to {MAX_PASSWORD} characters long",
            code="invalid_password",
        )
    return password


def name_key(name: str) -> str:
    """What makes two names the same account: case does not."""
    return name.casefold()


def client_key(client: str | None) -> str:
    """A bucket key for a client address (anything odd is one shared "unknown" bucket)."""
    if client and len(client) <= MAX_CLIENT and client.isascii() and client.isprintable():
        return client
    return "unknown"


class Accounts:
    """Registration, log-in, log-out and the session check over the subscription store."""

    def __init__(
        self,
        store: Store,
        settings: Settings,
        *,
        passwords: Passwords | None = None,
        clock: Callable[[], float] = time.time,
        name_limit: tuple[int, float] = NAME_LIMIT,
        address_limit: tuple[int, float] = ADDRESS_LIMIT,
        register_limit: tuple[int, float] = REGISTER_LIMIT,
    ) -> None:
        self.store = store
        self.settings = settings
        self.passwords = passwords or Passwords()
        self.clock = clock
        self.by_name = TokenBuckets(*name_limit)
        self.by_address = TokenBuckets(*address_limit)
        self.registrations = TokenBuckets(*register_limit)

    def close(self) -> None:
        self.passwords.close()

    # ---- registering and logging in -----------------------------------------------------------
    async def register(self, name: str, password: str, client: str | None) -> SessionGrant:
        """A new account, logged in. 409 when the name is taken (in any case)."""
        check_name(name)
        check_password(password)
        key = name_key(name)
        wait = self.registrations.take(client_key(client))  # a taken name counts too: it
        if wait:  # tells that the name exists, so asking is limited like making one
            raise TooManyRequests(
                "too many accounts made from this address; try again later",
                retry_after=retry_after_header(wait),
                code="too_many_registrations",
            )
        if await self.store.find_account(key) is not None:
            raise self._taken(name)
        password_hash = await self.passwords.hash(password)
        user_id = await self.store.create_account(name, key, password_hash, self.clock())
        if user_id is None:  # registered by someone else in the meantime
            raise self._taken(name)
        return self._grant(user_id, name, 0)

    @staticmethod
    def _taken(name: str) -> Conflict:
        return Conflict(f"the name {name!r} is taken; choose another", code="name_taken")

    async def log_in(self, name: str, password: str, client: str | None) -> SessionGrant:
        """A session for the account ``name`` if ``password`` is its password: 401 if not (the
        same answer for a name without an account), 429 past the limits."""
        if not isinstance(name, str) or not isinstance(password, str):
            raise BadRequest("send a name and a password", code="invalid_body")
        if len(name) > 64 or len(password) > MAX_PASSWORD:
            raise Unauthorized("wrong name or password", code="wrong_credentials")
        key, address = name_key(name), client_key(client)
        self._take(key, address)
        account = await self.store.find_account(key)
        matches, rehash = await self.passwords.verify(
            account.password_hash if account else None, password
        )
        if not matches or account is None:
            raise Unauthorized("wrong name or password", code="wrong_credentials")
        self.by_name.give_back(key)  # a right password is not a failure
        self.by_address.give_back(address)
        if rehash:  # made with weaker parameters than today's: upgrade it now we know it
            await self.store.set_password_hash(account.user_id, await self.passwords.hash(password))
        generation = await self.store.session_generation(account.user_id)
        return self._grant(account.user_id, account.name, generation)

    def _take(self, key: str, address: str) -> None:
        """A token from the name's and the address's buckets, or 429 (neither is taken then)."""
        wait = self.by_address.take(address)
        if wait:
            raise TooManyRequests(
                "too many failed log-ins from this address; try again in "
                f"{retry_after_header(wait)} s",
                retry_after=retry_after_header(wait),
                code="too_many_attempts",
            )
        wait = self.by_name.take(key)
        if wait:
            self.by_address.give_back(address)
            raise TooManyRequests(
                f"too many failed log-ins for this name; try again in {retry_after_header(wait)} s",
                retry_after=retry_after_header(wait),
                code="too_many_attempts",
            )

    async def demo_log_in(self, user_id: int) -> SessionGrant:
        """A session for a MovieLens user by id alone: development only."""
        if not self.settings.development:
            raise Forbidden(
                "demo logins are off (MARQUEE_DEVELOPMENT is not set); log in with a name and "
                "password",
                code="demo_logins_off",
            )
        if isinstance(user_id, bool) or not isinstance(user_id, int):
            raise BadRequest("user_id must be an integer", code="invalid_id")
        if not 0 < user_id < FIRST_ACCOUNT_ID:
            raise BadRequest(
                f"a demo login is a MovieLens user id, 1 to {FIRST_ACCOUNT_ID - 1}",
                code="invalid_id",
            )
        generation = await self.store.session_generation(user_id)
        return self._grant(user_id, None, generation)

    def _grant(self, user_id: int, name: str | None, generation: int) -> SessionGrant:
        settings = self.settings
        token = session_token(user_id, settings.secret_key, generation)
        return SessionGrant(user_id, name, generation, token, settings.session_max_age)

    # ---- checking and ending sessions ---------------------------------------------------------
    def claims(self, token: str | None) -> SessionClaims | None:
        """Whose token this is, if we signed it and it has not expired (generation unchecked)."""
        settings = self.settings
        return session_claims(token, settings.secret_key, settings.session_max_age)

    async def is_current(self, claims: SessionClaims) -> bool:
        """Whether the session is of the user's current generation (not logged out since)."""
        return await self.store.session_generation(claims.user_id) == claims.generation

    async def check_session(self, token: str | None) -> SessionClaims | None:
        """The claims of a live session token: signed, unexpired, of the current generation."""
        claims = self.claims(token)
        return claims if claims is not None and await self.is_current(claims) else None

    async def session_state(self, user_id: int) -> SessionState:
        generation, name = await self.store.session_state(user_id)
        return SessionState(user_id, generation, name)

    async def log_out(self, token: str | None) -> SessionEnded:
        """End every session of the token's user (a revoked token ends nothing newer)."""
        claims = self.claims(token)
        if claims is None:
            raise Unauthorized("not a session of ours (or it has expired)", code="no_session")
        generation = await self.store.end_sessions(claims.user_id, claims.generation)
        return SessionEnded(claims.user_id, generation)
