"""Run configuration: one frozen dataclass, built from defaults < TOML file < CLI flags.

Validation lives here (not in argparse) so the TOML path and the CLI path reject the same
mistakes with the same messages; the CLI turns a ``ConfigError`` into exit code 2.
"""

from __future__ import annotations

import math
import re
import tomllib
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from loadtest import thresholds as thresholds_module

SCENARIOS: tuple[str, ...] = (
    "page",
    "page_json",
    "similar",
    "user_recs",
    "batch_similar",
    "history_recs",
    "session",
    "search",
    "home",
)

DEFAULT_MIX: dict[str, float] = {
    "page": 47,
    "page_json": 10,
    "similar": 10,
    "user_recs": 5,
    "batch_similar": 5,
    "history_recs": 3,
    "search": 10,
    "home": 5,
    "session": 5,
}

DEFAULT_DATA_DIR = Path(__file__).resolve().parent.parent / "data" / "ml-latest-small"


class ConfigError(ValueError):
    """A user mistake in flags or the TOML file (reported with exit code 2)."""


@dataclass(frozen=True)
class RunConfig:
    """Everything one run needs; serialised into the results JSON so a run is reproducible."""

    base_url: str = "http://127.0.0.1:8080"
    recommender_url: str | None = None  # defaults to base_url (monolith serves /v1 too)
    catalog_url: str | None = None  # defaults to base_url
    mix: dict[str, float] = field(default_factory=lambda: dict(DEFAULT_MIX))
    rate: float | None = None  # open model: arrivals per second
    users: int | None = None  # closed model: concurrent users
    arrival: str = "constant"  # open model spacing: constant | poisson
    think_time: float = 0.0  # closed model: mean seconds between a user's scenarios
    ramp_up: float = 0.0
    duration: float | None = None
    requests: int | None = None
    timeout: float = 10.0  # per request
    connections: int = 100  # TCPConnector limit (and open-model in-flight cap)
    popularity: str = "counts"  # counts | zipf
    zipf_s: float = 1.0
    movies: int = 2000  # how many popular movies to sample from
    user_ids: tuple[int, int] = (1, 610)
    seed: int | None = None
    data_dir: str = str(DEFAULT_DATA_DIR)
    progress: bool | None = None  # None: only when stderr is a tty
    uvloop: bool = True
    out: str | None = None
    html: str | None = None
    compare: str | None = None
    compare_anyway: bool = False  # compare even when the two runs' load shapes differ
    paths: str | None = None  # replay these request targets (one per line) instead of the mix
    # replayed users (--scenario replay): the hold-out file, how many of its users, pages each
    holdout: str | None = None
    replay_users: int | None = None  # a seeded sample; None = every user in the file
    pages_per_user: int = 10
    admin_token: str | None = None  # reads GET /v1/experiments/current; never written out
    model_dir: str | None = None  # registry to read each arm's offline metrics from
    report_wait: float = 15.0  # seconds to wait for the server to count the replay's clicks
    thresholds: tuple[str, ...] = ()  # pass/fail rules, e.g. "p99<50ms", "errors<0.1%"
    max_send_lag: float = 0.010  # seconds: p99 send lag above this marks the run invalid

    @property
    def model(self) -> str:
        return "open" if self.rate is not None else "closed"

    @property
    def recommender_base(self) -> str:
        return (self.recommender_url or self.base_url).rstrip("/")

    @property
    def catalog_base(self) -> str:
        return (self.catalog_url or self.base_url).rstrip("/")

    @property
    def web_base(self) -> str:
        return self.base_url.rstrip("/")

    @property
    def hard_deadline(self) -> float:
        """Seconds after which the run is stopped whatever the server does."""
        if self.duration is not None:
            work = self.duration
        elif self.rate is not None and self.requests is not None:
            work = self.requests / self.rate
        else:
            work = 3600.0  # closed model with --requests only: still bounded
        return self.ramp_up + work + self.timeout + 5.0

    def to_json(self) -> dict[str, Any]:
        data = asdict(self)
        data["user_ids"] = list(self.user_ids)
        data["model"] = self.model
        if self.admin_token:
            data["admin_token"] = "(set)"  # a secret: never in a results file
        return data


def parse_mix(text: str) -> dict[str, float]:
    """Parse ``page=70,similar=20,search=10`` into weights (any non-negative numbers)."""
    mix: dict[str, float] = {}
    for part in text.split(","):
        part = part.strip()
        if not part:
            continue
        name, sep, value = part.partition("=")
        name = name.strip()
        if not sep:
            raise ConfigError(f"mix entry {part!r} is not NAME=WEIGHT")
        try:
            weight = float(value)
        except ValueError:
            raise ConfigError(f"mix weight for {name!r} is not a number: {value!r}") from None
        mix[name] = weight
    return validate_mix(mix)


def validate_mix(mix: dict[str, Any]) -> dict[str, float]:
    """Reject unknown scenarios, negative weights and an all-zero mix."""
    out: dict[str, float] = {}
    for name, weight in mix.items():
        if name not in SCENARIOS:
            raise ConfigError(f"unknown scenario {name!r} in mix (known: {', '.join(SCENARIOS)})")
        if isinstance(weight, bool) or not isinstance(weight, int | float):
            raise ConfigError(f"mix weight for {name!r} must be a number")
        if not math.isfinite(weight) or weight < 0:
            raise ConfigError(f"mix weight for {name!r} must be >= 0")
        if weight > 0:
            out[name] = float(weight)
    if not out:
        raise ConfigError("mix has no scenario with a positive weight")
    return out


def parse_user_ids(text: str) -> tuple[int, int]:
    """Parse ``1-610``."""
    lo, sep, hi = text.partition("-")
    try:
        pair = (int(lo), int(hi)) if sep else (int(lo), int(lo))
    except ValueError:
        raise ConfigError(f"user id range {text!r} is not LOW-HIGH") from None
    if pair[0] < 1 or pair[1] < pair[0]:
        raise ConfigError(f"user id range {text!r} is empty or not positive")
    return pair


def load_toml(path: str) -> dict[str, Any]:
    """Read a TOML config: top-level keys are RunConfig fields, ``[mix]`` a table of weights."""
    try:
        with open(path, "rb") as fh:
            data = tomllib.load(fh)
    except OSError as exc:
        raise ConfigError(f"cannot read config {path}: {exc.strerror or exc}") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"invalid TOML in {path}: {exc}") from None
    known = {f.name for f in fields(RunConfig)} | {"scenario"}
    values: dict[str, Any] = {}
    for key, value in data.items():
        norm = key.replace("-", "_")
        if norm not in known:
            raise ConfigError(f"unknown key {key!r} in {path}")
        if norm == "mix":
            if isinstance(value, str):
                value = parse_mix(value)
            elif isinstance(value, dict):
                value = validate_mix(value)
            else:
                raise ConfigError("mix must be a table or a 'name=weight,...' string")
        elif norm == "thresholds" and isinstance(value, str):
            value = [value]
        elif norm == "user_ids":
            if isinstance(value, list) and len(value) == 2:
                value = parse_user_ids(f"{value[0]}-{value[1]}")
            else:
                value = parse_user_ids(str(value))
        values[norm] = value
    return values


def _check_url(name: str, url: str | None) -> None:
    if url is None:
        return
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ConfigError(f"{name} must be an http(s) URL, got {url!r}")


def _positive(name: str, value: float | None, *, allow_zero: bool = False) -> None:
    if value is None:
        return
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ConfigError(f"{name} must be a number")
    if not math.isfinite(value) or value < 0 or (value == 0 and not allow_zero):
        raise ConfigError(f"{name} must be {'>= 0' if allow_zero else '> 0'}, got {value}")


_STRINGS = (
    "base_url",
    "recommender_url",
    "catalog_url",
    "data_dir",
    "out",
    "html",
    "compare",
    "paths",
    "holdout",
    "admin_token",
    "model_dir",
    "arrival",
    "popularity",
)
_SECONDS = ("duration", "ramp_up", "think_time", "timeout", "max_send_lag", "report_wait")
_DURATION = re.compile(r"^\s*([-+]?)\s*(\d+(?:\.\d+)?)\s*(ms|s|m|h)?\s*$")


def parse_duration(text: str) -> float:
    """Seconds from ``30``, ``30s``, ``1.5m``, ``500ms`` or ``1h`` (never negative)."""
    match = _DURATION.match(text)
    if not match:
        raise ConfigError(f"not a duration: {text!r} (e.g. 30s, 2m, 500ms)")
    if match.group(1) == "-":
        raise ConfigError(f"a duration cannot be negative: {text!r} (e.g. 30s, 2m, 500ms)")
    scale = {"ms": 0.001, "s": 1, "m": 60, "h": 3600, None: 1}[match.group(3)]
    return float(match.group(2)) * scale


def _check_types(v: dict[str, Any]) -> None:
    for name in _STRINGS:
        if v.get(name) is not None and not isinstance(v[name], str):
            raise ConfigError(f"{name} must be a string")
    if v.get("scenario") is not None and not isinstance(v["scenario"], str):
        raise ConfigError("scenario must be a string")
    for name in ("progress", "uvloop", "compare_anyway"):
        if v.get(name) is not None and not isinstance(v[name], bool):
            raise ConfigError(f"{name} must be true or false")
    seed = v.get("seed")
    if seed is not None and (isinstance(seed, bool) or not isinstance(seed, int)):
        raise ConfigError("seed must be an integer")
    for name in _SECONDS:
        if isinstance(v.get(name), str):
            v[name] = parse_duration(v[name])


def build_config(values: dict[str, Any]) -> RunConfig:
    """Validate merged values and fill the defaults the modes imply."""
    known = {f.name for f in fields(RunConfig)} | {"scenario"}  # scenario: one-scenario mix
    unknown = set(values) - known
    if unknown:
        raise ConfigError(f"unknown settings: {', '.join(sorted(unknown))}")
    v = dict(values)
    _check_types(v)
    scenario = v.pop("scenario", None)
    if scenario is not None:
        if "mix" in v:
            raise ConfigError("give --scenario or --mix, not both")
        if scenario == REPLAY:
            if v.get("holdout") is None:
                raise ConfigError("--scenario replay needs --holdout FILE (recommender holdout)")
        elif scenario not in SCENARIOS:
            names = ", ".join((*SCENARIOS, REPLAY))
            raise ConfigError(f"unknown scenario {scenario!r} (known: {names})")
        else:
            v["mix"] = {scenario: 1.0}
    if v.get("holdout") is not None:
        _check_replay(v)
    if v.get("rate") is not None and v.get("users") is not None:
        raise ConfigError("choose one model: --rate (open) or --users (closed), not both")
    if v.get("rate") is None and v.get("users") is None:
        v["rate"] = 50.0
    if v.get("duration") is None and v.get("requests") is None and v.get("holdout") is None:
        v["duration"] = 10.0  # a replay ends when its users are done
    for name in ("rate", "duration", "timeout"):
        _positive(name, v.get(name))
    for name in ("ramp_up", "think_time"):
        _positive(name, v.get(name), allow_zero=True)
    for name in ("users", "requests", "connections", "movies", "replay_users", "pages_per_user"):
        value = v.get(name)
        if value is not None and (
            isinstance(value, bool) or not isinstance(value, int) or value < 1
        ):
            raise ConfigError(f"{name} must be a positive integer, got {value!r}")
    _positive("zipf_s", v.get("zipf_s"), allow_zero=True)
    if v.get("arrival", "constant") not in ("constant", "poisson"):
        raise ConfigError("arrival must be 'constant' or 'poisson'")
    if v.get("popularity", "counts") not in ("counts", "zipf"):
        raise ConfigError("popularity must be 'counts' or 'zipf'")
    for name in ("base_url", "recommender_url", "catalog_url"):
        _check_url(name, v.get(name))
    if "user_ids" in v:
        lo, hi = v["user_ids"]
        v["user_ids"] = parse_user_ids(f"{lo}-{hi}")
    if "mix" in v and v.get("holdout") is None:
        v["mix"] = validate_mix(v["mix"])
    if v.get("paths") is not None:
        if "mix" in v:
            raise ConfigError("give --paths (replay a list of targets) or --mix, not both")
        v["mix"] = {"replay": 1.0}
    _positive("max_send_lag", v.get("max_send_lag"))
    if "thresholds" in v:
        v["thresholds"] = check_thresholds(v["thresholds"], v.get("mix") or DEFAULT_MIX)
    if v.get("rate") is not None:
        v["rate"] = float(v["rate"])
    return RunConfig(**v)


REPLAY = "replay"  # the replayed-users scenario (and the name --paths runs report under)


def _check_replay(v: dict[str, Any]) -> None:
    """``--holdout``: replayed users are the whole load (one visit per user)."""
    if v.get("paths") is not None:
        raise ConfigError("give --holdout (replayed users) or --paths, not both")
    if "mix" in v:
        raise ConfigError("--holdout replays users on its own: leave out --mix")
    if not Path(v["holdout"]).is_file():
        raise ConfigError(f"--holdout {v['holdout']}: no such file")
    if v.get("rate") is None and v.get("users") is None:
        v["users"] = 8  # replayed users at a time
    v["mix"] = {REPLAY: 1.0}
    _positive("report_wait", v.get("report_wait"), allow_zero=True)


def check_thresholds(value: Any, mix: dict[str, float]) -> tuple[str, ...]:
    """A list of threshold strings, each parsed once here so a typo stops the run at once."""
    if isinstance(value, str):
        value = [value]
    if not isinstance(value, list | tuple) or not all(isinstance(t, str) for t in value):
        raise ConfigError('thresholds must be a list of strings like "p99<50ms"')
    for text in value:
        try:
            thresholds_module.parse(text, tuple(mix))
        except thresholds_module.ThresholdError as exc:
            raise ConfigError(str(exc)) from None
    return tuple(value)
