"""Settings: every knob of every service, parsed once from ``MARQUEE_*`` environment variables.

One frozen dataclass serves all services so that the monolith and the microservices read the same
names; each service reads the fields it needs.
"""

from __future__ import annotations

import dataclasses
import hashlib
import os
import secrets
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

import orjson

PROJECT_ROOT = Path(__file__).resolve().parents[2]
PREFIX = "MARQUEE_"
AUTO = "auto"


@dataclass(frozen=True)
class Settings:
    mode: str = "monolith"  # monolith | microservices (how the web server reaches its backends)
    host: str = "127.0.0.1"
    web_port: int = 8080
    catalog_port: int = 8081
    subscription_port: int = 8082
    recommender_port: int = 8083
    catalog_url: str = "http://127.0.0.1:8081"
    subscription_url: str = "http://127.0.0.1:8082"
    # Several URLs = several recommender replicas, balanced client-side by health.
    recommender_urls: tuple[str, ...] = ("http://127.0.0.1:8083",)
    # Seconds between re-resolving backend host names into one endpoint (and breaker) per
    # address, e.g. every ready pod behind a headless Service; 0 = connect by name.
    backend_dns_refresh: float = 0.0
    # The cache's Redis. "auto": redis://127.0.0.1:6379 when reachable, else an in-process
    # cache; "" = never. redis+cluster://host:port = a Redis Cluster (any one node).
    redis_url: str = AUTO
    # Durable state (batch queue and jobs, model-publish notices): a Redis with noeviction and
    # AOF. Unset = the cache's Redis (development); "" = none.
    state_redis_url: str | None = None
    # Prefix of this install's Redis keys, streams and channels; "" = derived from var_dir.
    redis_namespace: str = ""
    data_dir: Path = PROJECT_ROOT / "data" / "ml-latest-small"
    var_dir: Path = PROJECT_ROOT / "var"
    catalog_db: Path | None = None  # default: var_dir / "catalog.sqlite3"
    subscription_db: Path | None = None  # default: var_dir / "subscriptions.sqlite3"
    database_url: str = ""  # postgresql://... : stores every replica shares; "" = SQLite in var_dir
    model_dir: Path | None = None  # default: var_dir / "models"
    templates_dir: Path = PROJECT_ROOT / "templates"
    secret_key: str = ""  # signs sessions and CSRF tokens; shared by web and subscription
    service_token: str = ""  # service-to-service writes
    admin_token: str = ""  # model reload / rollback
    model_signing_key: str = ""  # HMAC over model artifacts, when set
    # Composer deadlines, seconds.
    catalog_timeout: float = 0.5
    subscription_timeout: float = 0.3
    recommender_timeout: float = 0.3
    page_budget: float = 1.0
    backend_connections: int = 100
    breaker_failures: int = 5
    breaker_reset: float = 5.0
    retry_budget_ratio: float = 0.2
    cache_ttl: int = 3600
    model_poll_interval: float = 30.0
    workers: int = 1
    log_level: str = "INFO"
    access_log: bool = True
    # Requests in progress per worker process before new ones are shed with 503 + Retry-After.
    max_inflight: int = 256
    max_body_bytes: int = 1 << 20
    batch_max_bytes: int = 5 << 20
    batch_max_rows: int = 100_000
    batch_ttl: int = 7 * 24 * 3600
    # Batch worker: rows per chunk (results are written per chunk), seconds before a job whose
    # worker went silent is reclaimed by another, an optional pause between chunks (lets the
    # monolith's in-process worker yield the CPU to web traffic), and deliveries before giving up.
    batch_chunk_size: int = 200
    batch_claim_idle: float = 30.0
    batch_chunk_pause: float = 0.0
    batch_max_attempts: int = 5
    session_max_age: int = 30 * 24 * 3600
    # Mark cookies Secure even on plain-HTTP requests: TLS ends at a proxy in front of us.
    secure_cookies: bool = False
    shutdown_timeout: float = 10.0
    extra: Mapping[str, str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        defaults = {
            "catalog_db": self.var_dir / "catalog.sqlite3",
            "subscription_db": self.var_dir / "subscriptions.sqlite3",
            "model_dir": self.var_dir / "models",
        }
        for name, default in defaults.items():
            if getattr(self, name) is None:
                object.__setattr__(self, name, default)
        if not self.redis_namespace:
            digest = hashlib.sha256(str(self.var_dir.resolve()).encode()).hexdigest()
            object.__setattr__(self, "redis_namespace", digest[:10])

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None, **overrides: object) -> Settings:
        """Parse ``MARQUEE_<FIELD>`` variables; unset secrets come from ``var/secrets.json``."""
        env = os.environ if env is None else env
        values: dict[str, object] = {}
        for f in dataclasses.fields(cls):
            if f.name == "extra":
                continue
            raw = env.get(PREFIX + f.name.upper())
            if raw is not None:
                values[f.name] = _parse(f.name, raw, f.type)
        values.update(overrides)
        settings = cls(**values)
        missing = [n for n in ("secret_key", "service_token", "admin_token") if not values.get(n)]
        if missing:
            dev = _dev_secrets(settings.var_dir)
            settings = dataclasses.replace(settings, **{n: dev[n] for n in missing})
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


def _parse(name: str, raw: str, type_: object) -> object:
    kind = str(type_)
    try:
        if "tuple" in kind:
            return tuple(u.strip() for u in raw.split(",") if u.strip())
        if "Path" in kind:
            return Path(raw)
        if kind == "bool":
            return raw.strip().lower() in {"1", "true", "yes", "on"}
        if kind == "int":
            return int(raw)
        if kind == "float":
            return float(raw)
    except ValueError as exc:
        raise ValueError(f"{PREFIX}{name.upper()}={raw!r}: {exc}") from None
    return raw


def _dev_secrets(var_dir: Path) -> dict[str, str]:
    """Development secrets, made once and kept in var/ so every process of one install agrees."""
    path = var_dir / "secrets.json"
    if path.exists():
        return orjson.loads(path.read_bytes())
    var_dir.mkdir(parents=True, exist_ok=True)
    made = {n: secrets.token_urlsafe(32) for n in ("secret_key", "service_token", "admin_token")}
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
    return orjson.loads(path.read_bytes())
