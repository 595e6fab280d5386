"""Settings: every knob of every service, parsed once from ``MARQUEE_*`` environment variables.

One frozen dataclass serves all services so that the monolith and the microservices read the same
names; each service reads the fields it needs. Every field carries its one-line description
(``docs/operations.md``'s table is printed from them: ``python -m services.platform.settings
table``), values are parsed by the field's type and checked, and a bad value is refused with the
variable's name and what is wrong.

Secrets are never made up while parsing. A production process needs them set; a development one
(``MARQUEE_DEVELOPMENT=true``, what ``make run`` sets) reads the ones ``python -m
services.platform.settings secrets`` (``make secrets``) wrote into ``var/secrets.json``.
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import logging
import os
import secrets
import sys
import types
import typing
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlsplit

import orjson

PROJECT_ROOT = Path(__file__).resolve().parents[2]
PREFIX = "MARQUEE_"
AUTO = "auto"
MODES = ("monolith", "microservices")
SECRETS = ("secret_key", "service_token", "admin_token")
# Values copied from an example file instead of made: refused outside development.
PLACEHOLDER_MARKS = ("replace-me", "replace_me", "changeme", "change-me", "example", "placeholder")
MIN_SECRET_LENGTH = 16
# The default of a path that follows var_dir (replaced by var_dir/... when the settings are made).
DERIVED = Path("<var_dir>")


class SettingsError(ValueError):
    """A setting that cannot be used; the message names its environment variable."""


def _doc(default: object, description: str) -> typing.Any:  # noqa: ANN401 - a dataclass field
    return field(default=default, metadata={"doc": description})


@dataclass(frozen=True)
class Settings:
    # ---- deployment ---------------------------------------------------------------------------
    mode: str = _doc(
        "monolith",
        "How the web server reaches its backends: monolith (in-process) or microservices (HTTP)",
    )
    development: bool = _doc(
        False,
        "Development conveniences (secrets from var/secrets.json, demo logins, placeholder "
        "secrets); never in production",
    )
    host: str = _doc("127.0.0.1", "Address every server listens on")
    web_port: int = _doc(8080, "Port of the web server (and, in the monolith, every /v1 API)")
    catalog_port: int = _doc(8081, "Port of the catalog service")
    subscription_port: int = _doc(8082, "Port of the subscription service")
    recommender_port: int = _doc(8083, "Port of the recommender service")
    catalog_url: str = _doc("http://127.0.0.1:8081", "The catalog's base URL (microservices)")
    subscription_url: str = _doc(
        "http://127.0.0.1:8082",
        "The subscription service's base URL; several, comma-separated, are balanced by health",
    )
    recommender_urls: tuple[str, ...] = _doc(
        ("http://127.0.0.1:8083",),
        "Recommender base URLs, comma-separated: replicas balanced client-side by health",
    )
    backend_dns_refresh: float = _doc(
        0.0,
        "Seconds between re-resolving backend host names into one endpoint (and breaker) per "
        "address, e.g. the pods of a headless Service; 0 = connect by name",
    )
    workers: int = _doc(1, "Processes per service sharing its port (SO_REUSEPORT)")
    # ---- state --------------------------------------------------------------------------------
    redis_url: str = _doc(
        AUTO,
        'The cache\'s Redis; "auto" = redis://127.0.0.1:6379 when it answers, else in-process; '
        '"" = none; redis+cluster://host:port = a Redis Cluster',
    )
    state_redis_url: str | None = _doc(
        None,
        "Durable state (batch queue and jobs, model notices): a Redis with noeviction and AOF; "
        'unset = the cache\'s Redis (development); "" = none',
    )
    redis_namespace: str = _doc(
        "", "Prefix of this install's Redis keys and streams; empty = derived from var_dir"
    )
    database_url: str = _doc(
        "", "postgresql://... : stores every replica shares; empty = SQLite files in var_dir"
    )
    data_dir: Path = _doc(
        PROJECT_ROOT / "data" / "ml-latest-small", "The MovieLens files the catalog is built from"
    )
    var_dir: Path = _doc(PROJECT_ROOT / "var", "Where this install keeps its files")
    catalog_db: Path = _doc(DERIVED, "The catalog's SQLite file; default var_dir/catalog.sqlite3")
    subscription_db: Path = _doc(
        DERIVED, "The subscriptions' SQLite file; default var_dir/subscriptions.sqlite3"
    )
    model_dir: Path = _doc(
        DERIVED, "The model registry (versions, current, previous); default var_dir/models"
    )
    templates_dir: Path = _doc(PROJECT_ROOT / "templates", "The Jinja2 templates and static files")
    # ---- secrets ------------------------------------------------------------------------------
    secret_key: str = _doc("", "Signs sessions and CSRF tokens; the same on web and subscription")
    service_token: str = _doc("", "Bearer token for service-to-service writes")
    admin_token: str = _doc(
        "", "Bearer token for model reload, rollback and experiments; the /admin dashboard's login"
    )
    model_signing_key: str = _doc("", "HMAC key over model artifacts; empty = sha256 only")
    secure_cookies: bool = _doc(
        False, "Mark cookies Secure on plain-HTTP requests too: TLS ends at a proxy in front"
    )
    session_max_age: int = _doc(30 * 24 * 3600, "Seconds a session (and a CSRF token) is valid")
    session_recheck: float = _doc(
        10.0,
        "Seconds the web server trusts its last check that a user has not logged out, then checks "
        "again (a logout through another process ends that user's cookies there within this)",
    )
    admin_session_max_age: int = _doc(
        8 * 3600, "Seconds an operator's /admin session lasts (rotating admin_token ends all)"
    )
    admin_probe_timeout: float = _doc(
        0.5, "Seconds /admin waits for each backend's health, readiness, model and metrics"
    )
    forwarded_hops: int = _doc(
        0,
        "Proxies in front of the web server that append to X-Forwarded-For: the visitor's "
        "address (log-in limits) is that many entries from its end; 0 = the connection's peer",
    )
    # ---- the composer and its clients ---------------------------------------------------------
    catalog_timeout: float = _doc(0.5, "Seconds a catalog call may take")
    subscription_timeout: float = _doc(0.3, "Seconds a subscription call may take")
    recommender_timeout: float = _doc(0.3, "Seconds a recommender call may take")
    page_budget: float = _doc(1.0, "Seconds a whole movie page may take; calls are cut to it")
    backend_connections: int = _doc(100, "Connections per backend endpoint (the bulkhead)")
    breaker_failures: int = _doc(5, "Consecutive failures that open a backend's circuit")
    breaker_reset: float = _doc(5.0, "Seconds an open circuit waits before one probe")
    retry_budget_ratio: float = _doc(0.2, "Retries allowed per call made (Envoy-style budget)")
    max_inflight: int = _doc(
        256, "Requests in progress per process before new ones are shed with 503 + Retry-After"
    )
    # ---- the recommender ----------------------------------------------------------------------
    cache_ttl: int = _doc(3600, "Seconds a cached recommendation lives in Redis")
    cache_timeout: float = _doc(
        0.05, "Seconds a Redis cache call may take before the box computes the answer instead"
    )
    model_poll_interval: float = _doc(
        30.0, "Seconds between registry checks for a new model (besides Redis notices)"
    )
    model_verify_interval: float = _doc(
        300.0, "Seconds between re-checks of the served model's bytes against its manifest"
    )
    # ---- limits and batch ---------------------------------------------------------------------
    max_body_bytes: int = _doc(1 << 20, "Largest request body accepted")
    batch_max_bytes: int = _doc(5 << 20, "Largest batch upload accepted")
    batch_max_rows: int = _doc(100_000, "Most rows in one batch upload")
    batch_ttl: int = _doc(7 * 24 * 3600, "Seconds a batch job and its results are kept")
    batch_chunk_size: int = _doc(200, "Rows per batch chunk (results are written per chunk)")
    batch_claim_idle: float = _doc(
        30.0, "Seconds before a job whose worker went silent is reclaimed by another"
    )
    batch_chunk_pause: float = _doc(
        0.0, "Pause between chunks (lets an in-process worker yield the CPU to web traffic)"
    )
    batch_max_attempts: int = _doc(5, "Deliveries of a batch job before it is failed")
    # ---- feedback and experiments -------------------------------------------------------------
    feedback_stream_max: int = _doc(
        20_000,
        "Feedback stream bound (XADD MAXLEN ~): batches kept for the aggregators; when they are "
        "down longer than this holds, the oldest are dropped instead of memory growing",
    )
    feedback_claim_idle: float = _doc(
        30.0,
        "Seconds a feedback batch may sit read but unacknowledged (its aggregator died or froze) "
        "before another aggregator claims and counts it",
    )
    feedback_token_ttl: int = _doc(
        3600, "Seconds a similar row's tracked links count a click; older ones answer 410"
    )
    feedback_flush_interval: float = _doc(
        0.1, "Seconds between flushes of the buffered feedback events (one stream entry each)"
    )
    feedback_buffer_max: int = _doc(
        10000, "Feedback events a process buffers before dropping the oldest (counted)"
    )
    # ---- operations ---------------------------------------------------------------------------
    log_level: str = _doc("INFO", "DEBUG, INFO, WARNING or ERROR")
    access_log: bool = _doc(True, "JSON lines of the requests served (the access log)")
    access_log_sample: int = _doc(
        100,
        "Log 1 in this many of the quick, successful reads (chosen by request id, so a page view "
        "is logged by every service or none); errors, writes and slow requests always; 1 = all",
    )
    access_log_slow: float = _doc(
        0.25, "Seconds from which a request counts as slow (always logged)"
    )
    shutdown_timeout: float = _doc(10.0, "Seconds in-flight requests get to finish on SIGTERM")

    def __post_init__(self) -> None:
        defaults = {
            "catalog_db": self.var_dir / "catalog.sqlite3",
            "subscription_db": self.var_dir / "subscriptions.sqlite3",
            "model_dir": self.var_dir / "models",
        }
        for name, default in defaults.items():
            if getattr(self, name) in (DERIVED, None):
                object.__setattr__(self, name, default)
        if not self.redis_namespace:
            digest = hashlib.sha256(str(self.var_dir.resolve()).encode()).hexdigest()
            object.__setattr__(self, "redis_namespace", digest[:10])
        _check(self)

    @classmethod
    def from_env(
        cls,
        env: Mapping[str, str] | None = None,
        *,
        need_secrets: bool = True,
        **overrides: object,
    ) -> Settings:
        """Parse ``MARQUEE_<FIELD>`` variables (``overrides`` win). Raises ``SettingsError``
        naming the variable for a value that cannot be used or a secret that is missing
        (``need_secrets=False``: a command that signs and checks nothing, e.g. a publish
        notice)."""
        env = os.environ if env is None else env
        hints = typing.get_type_hints(cls)
        values: dict[str, object] = {}
        for f in dataclasses.fields(cls):
            raw = env.get(PREFIX + f.name.upper())
            if raw is not None:
                values[f.name] = _parse(f.name, raw, hints[f.name])
        values.update(overrides)
        missing = [n for n in SECRETS if not values.get(n)] if need_secrets else []
        if missing and values.get("development"):
            stored = read_dev_secrets(Path(str(values.get("var_dir", cls.var_dir))))
            values.update({n: stored[n] for n in missing if n in stored})
            missing = [n for n in SECRETS if not values.get(n)]
        if missing:
            names = ", ".join(variable(n) for n in missing)
            hint = (
                "; for development run `make secrets` (services.platform.settings secrets)"
                if values.get("development")
                else "; set them, or MARQUEE_DEVELOPMENT=true with `make secrets` for development"
            )
            raise SettingsError(f"{names} not set{hint}")
        settings = cls(**values)  # type: ignore[arg-type]
        if need_secrets:
            _check_secrets(settings)
        return settings

    def redis_candidates(self) -> str | None:
        """The Redis URL to try: explicit, the local default for "auto", or None for "off"."""
        if self.redis_url == AUTO:
            return "redis://127.0.0.1:6379/0"
        return self.redis_url or None

    def state_redis_candidates(self) -> str | None:
        """The state Redis URL: its own, or the cache's (same rules) when unset."""
        if self.state_redis_url is None:
            return self.redis_candidates()
        if self.state_redis_url == AUTO:
            return "redis://127.0.0.1:6379/0"
        return self.state_redis_url or None


def variable(name: str) -> str:
    return f"{PREFIX}{name.upper()}"


def settings_or_exit() -> Settings:
    """A server's or a command's settings from its environment, or one clear line and exit 2."""
    try:
        return Settings.from_env()
    except SettingsError as exc:
        print(f"marquee: {exc}", file=sys.stderr)
        raise SystemExit(2) from None


# ---- parsing and checking ---------------------------------------------------------------------
_TRUE = {"1", "true", "yes", "on"}
_FALSE = {"0", "false", "no", "off", ""}


def _parse(name: str, raw: str, hint: object) -> object:
    """``raw`` as the field's type (``hint``), or a SettingsError naming the variable."""
    args = typing.get_args(hint)
    if isinstance(hint, types.UnionType) and type(None) in args:  # X | None: "" is None
        inner = next(a for a in args if a is not type(None))
        return raw if inner is str else (_parse(name, raw, inner) if raw else None)
    text = raw.strip()
    try:
        if hint is bool:
            if text.lower() in _TRUE | _FALSE:
                return text.lower() in _TRUE
            raise ValueError("expected true or false")
        if hint is int:
            return int(text)
        if hint is float:
            return float(text)
        if hint is Path:
            return Path(text)
        if typing.get_origin(hint) is tuple:
            return tuple(part.strip() for part in raw.split(",") if part.strip())
    except ValueError as exc:
        raise SettingsError(f"{variable(name)}={raw!r}: {exc}") from None
    return raw


def _refuse(name: str, value: object, reason: str) -> SettingsError:
    return SettingsError(f"{variable(name)}={value!r}: {reason}")


def _check(s: Settings) -> None:
    if s.mode not in MODES:
        raise _refuse("mode", s.mode, f"must be one of {', '.join(MODES)}")
    for name in ("web_port", "catalog_port", "subscription_port", "recommender_port"):
        if not 1 <= getattr(s, name) <= 65535:
            raise _refuse(name, getattr(s, name), "a port is between 1 and 65535")
    for name in ("catalog_url", "subscription_url", "recommender_urls"):
        urls = getattr(s, name)
        for url in urls.split(",") if isinstance(urls, str) else urls:
            parts = urlsplit(url.strip())
            if parts.scheme not in ("http", "https") or not parts.hostname:
                raise _refuse(name, urls, f"{url!r} is not an http(s) URL")
    if not s.recommender_urls:
        raise _refuse("recommender_urls", "", "name at least one recommender")
    positive = (
        "catalog_timeout",
        "subscription_timeout",
        "recommender_timeout",
        "cache_timeout",
        "page_budget",
        "breaker_reset",
        "session_recheck",
        "model_poll_interval",
        "model_verify_interval",
        "shutdown_timeout",
        "batch_claim_idle",
        "admin_probe_timeout",
        "feedback_claim_idle",
        "access_log_slow",
    )
    for name in positive:
        if not getattr(s, name) > 0:
            raise _refuse(name, getattr(s, name), "must be more than 0")
    at_least_one = (
        "workers",
        "backend_connections",
        "breaker_failures",
        "max_inflight",
        "cache_ttl",
        "session_max_age",
        "admin_session_max_age",
        "max_body_bytes",
        "batch_max_bytes",
        "batch_max_rows",
        "batch_ttl",
        "batch_chunk_size",
        "batch_max_attempts",
        "feedback_stream_max",
        "access_log_sample",
    )
    for name in at_least_one:
        if getattr(s, name) < 1:
            raise _refuse(name, getattr(s, name), "must be at least 1")
    for name in ("backend_dns_refresh", "batch_chunk_pause", "forwarded_hops"):
        if getattr(s, name) < 0:
            raise _refuse(name, getattr(s, name), "cannot be negative")
    if not 0 <= s.retry_budget_ratio <= 1:
        raise _refuse("retry_budget_ratio", s.retry_budget_ratio, "a share between 0 and 1")
    if not isinstance(logging.getLevelName(s.log_level.upper()), int):
        raise _refuse("log_level", s.log_level, "one of DEBUG, INFO, WARNING, ERROR")


def _check_secrets(s: Settings) -> None:
    """Outside development, refuse secrets copied from an example or too short to be secret."""
    if s.development:
        return
    for name in (*SECRETS, "model_signing_key"):
        value = getattr(s, name)
        if not value:
            continue
        if any(mark in value.lower() for mark in PLACEHOLDER_MARKS):
            raise SettingsError(f"{variable(name)} is a placeholder; put a real random value in it")
        if len(value) < MIN_SECRET_LENGTH:
            raise SettingsError(
                f"{variable(name)} is shorter than {MIN_SECRET_LENGTH} characters; "
                "use a long random value (e.g. python -c 'import secrets; "
                "print(secrets.token_urlsafe(32))')"
            )


# ---- development secrets and the documentation table ------------------------------------------
def dev_secrets_path(var_dir: Path) -> Path:
    return var_dir / "secrets.json"


def read_dev_secrets(var_dir: Path) -> dict[str, str]:
    path = dev_secrets_path(var_dir)
    return orjson.loads(path.read_bytes()) if path.exists() else {}


def make_dev_secrets(var_dir: Path) -> Path:
    """Development secrets, made once (0600) so every process of one install agrees."""
    path = dev_secrets_path(var_dir)
    if path.exists():
        return path
    var_dir.mkdir(parents=True, exist_ok=True)
    made = {n: secrets.token_urlsafe(32) for n in SECRETS}
    tmp = path.with_suffix(f".{os.getpid()}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as fh:
        fh.write(orjson.dumps(made))
    try:
        os.link(tmp, path)  # first writer wins when several processes start at once
    except FileExistsError:
        pass
    finally:
        tmp.unlink()
    return path


def _shown_default(f: dataclasses.Field[object]) -> str:
    value = f.default
    if isinstance(value, Path):
        with contextlib.suppress(ValueError):  # a path outside the project: shown whole
            value = value.relative_to(PROJECT_ROOT)
    if isinstance(value, tuple):
        value = ",".join(value)
    if value == DERIVED:
        return "(in var_dir)"
    if value is None or value == "":
        return "(unset)"
    if isinstance(value, bool):
        return str(value).lower()
    return f"`{value}`"


def table() -> str:
    """The settings as a Markdown table (docs/operations.md)."""
    rows = ["| variable | default | what it is |", "|---|---|---|"]
    for f in dataclasses.fields(Settings):
        rows.append(f"| `{variable(f.name)}` | {_shown_default(f)} | {f.metadata['doc']} |")
    return "\n".join(rows) + "\n"


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    if args == ["table"]:
        sys.stdout.write(table())
        return 0
    if args == ["secrets"]:
        var_dir = Path(os.environ.get(variable("var_dir"), str(Settings.var_dir)))
        print(f"development secrets: {make_dev_secrets(var_dir)}")
        return 0
    print("usage: python -m services.platform.settings table | secrets", file=sys.stderr)
    return 2


if __name__ == "__main__":
    raise SystemExit(main())
