"""The recommender box: the one home of serving behaviour, called by the HTTP routes and by the
monolith's in-process client alike.

The loaded model and its manifest live in ONE attribute (a frozen :class:`Loaded`) that a reload
replaces in a single assignment. Every request reads that attribute once, so each answer is
computed by exactly one model version and labelled with it, and a swap never needs a lock on the
request path or a cache flush (cache keys carry the version).

Each query has two forms: ``*_json`` returns the response body as bytes (what the HTTP routes send,
and what the cache stores), the plain name returns the same body as its payload Struct.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import math
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TypeGuard

import msgspec
import orjson

from recommender.cache import Cache, LocalCache, ResponseMemo, SingleFlight, cache_key
from recommender.model import SimilarityModel
from recommender.registry import IntegrityError, ModelRegistry, RegistryError
from recommender.schemas import (
    MAX_HISTORY,
    MAX_K,
    Manifest,
    ModelChange,
    ModelInfo,
    Recommendations,
    ScoredMovie,
    Similar,
    UserRecommendations,
)
from services.feedback.schemas import ARMS, Arm, Experiment
from services.feedback.state import ExperimentStore
from services.platform.errors import ApiError, BadRequest, Conflict, NotFound, NotReady
from services.platform.metrics import Metrics
from services.platform.params import MAX_ID
from services.platform.settings import Settings

log = logging.getLogger("marquee.recommender")

_decode_similar = msgspec.json.Decoder(Similar).decode
_decode_recommendations = msgspec.json.Decoder(Recommendations).decode
_decode_user = msgspec.json.Decoder(UserRecommendations).decode

MAX_BATCH_IDS = 100
POPULAR_KEPT = MAX_K
THREAD_THRESHOLD = 256  # histories longer than this are aggregated off the event loop
MEMO_BYTES = 64 * 2**20  # per loaded version: ~140k default answers of ~460 bytes


@dataclass(frozen=True)
class Loaded:
    """One model version, ready to serve: swapped in and out as a whole."""

    model: SimilarityModel
    manifest: Manifest
    version: str
    info: ModelInfo
    popular: list[ScoredMovie]  # the top POPULAR_KEPT movies, the fallback answer
    known: frozenset[int]  # the model's movie ids (a set lookup, not a binary search per call)
    memo: ResponseMemo  # this version's similar/{id} bodies by (movie_id, k); dies with it


def _items(pairs: list[tuple[int, float]]) -> list[ScoredMovie]:
    """Model output as payload items; a non-finite score (a corrupt artifact, a numeric bug) is
    never served: such a list is an error, not an answer."""
    items = []
    for m, score in pairs:
        value = float(score)
        if not math.isfinite(value):
            raise ModelFault(f"the model gave movie {int(m)} a score of {value}")
        items.append(ScoredMovie(int(m), round(value, 6)))
    return items


class ModelFault(NotReady):
    """The loaded model produced garbage; the box answers 503 rather than serve it."""

    code = "model_fault"


def _is_int(value: object) -> TypeGuard[int]:
    return isinstance(value, int) and not isinstance(value, bool)


def check_k(k: object) -> int:
    if not _is_int(k) or not 1 <= k <= MAX_K:
        raise BadRequest(
            f"k must be an integer between 1 and {MAX_K}, got {k!r}", code="invalid_param"
        )
    return k


def check_id(value: object, name: str) -> int:
    if not _is_int(value) or not 0 < value <= MAX_ID:
        raise BadRequest(f"{name} must be a positive integer, got {value!r}", code="invalid_id")
    return value


def check_history(history: object) -> list[int]:
    if not isinstance(history, list):
        raise BadRequest("history must be a JSON array of movie ids", code="invalid_history")
    if len(history) > MAX_HISTORY:
        raise BadRequest(
            f"history lists {len(history)} movies; at most {MAX_HISTORY}", code="invalid_history"
        )
    for value in history:
        if not _is_int(value) or not 0 < value <= MAX_ID:
            raise BadRequest(
                f"history must list positive integer movie ids, got {value!r}",
                code="invalid_history",
            )
    return history


def _tag(body: Similar | Recommendations | UserRecommendations) -> tuple[bytes, bytes]:
    """The body as sent now (with the model's ``source``: "collaborative", "blend" or "content")
    and as stored (source "cache": an answer computed before)."""
    return _encode(body), _encode(msgspec.structs.replace(body, source="cache"))


_encode = msgspec.json.encode


def _similar_body(loaded: Loaded, movie_id: int, k: int) -> Similar:
    return Similar(
        movie_id=movie_id,
        model_version=loaded.version,
        items=_items(loaded.model.similar(movie_id, k)),
        source=loaded.model.similar_source_of(movie_id),
    )


class RecommenderBox:
    def __init__(
        self,
        settings: Settings,
        metrics: Metrics,
        *,
        cache: Cache | None = None,
        registry: ModelRegistry | None = None,
    ) -> None:
        self.settings = settings
        self.metrics = metrics
        self.cache: Cache = cache or LocalCache(ttl=settings.cache_ttl, metrics=metrics)
        key = settings.model_signing_key.encode() if settings.model_signing_key else None
        self.registry = registry or ModelRegistry(settings.model_dir, key)
        self.computed: Counter[str] = Counter()  # computations by kind (what the cache saved)
        self._current: Loaded | None = None
        self._flights = SingleFlight()
        self._reload_lock = asyncio.Lock()
        self._rejected: str | None = None  # a version that failed integrity; not retried by polls
        # The running experiment's arms: their versions loaded beside the published one (an arm
        # whose version is the published one shares it). Set by the app when it has a store.
        self.experiments: ExperimentStore | None = None
        self._arms: dict[str, Loaded] = {}  # version -> loaded, other than the published one
        self._arm_refused: set[str] = set()  # arm versions that failed to load or verify
        self._arms_lock = asyncio.Lock()
        self._experiment: Experiment | None = None  # as of the last sync_arms

    # ---- state ------------------------------------------------------------------------------
    @property
    def ready(self) -> bool:
        return self._current is not None

    @property
    def current(self) -> Loaded | None:
        """The version being served (model, manifest, info), or None before the first load."""
        return self._current

    @property
    def version(self) -> str | None:
        current = self._current
        return current.version if current else None

    @property
    def arm_versions(self) -> list[str]:
        """The experiment versions loaded beside the published one (the dashboard, tests)."""
        return sorted(self._arms)

    @property
    def arm_refused(self) -> list[str]:
        """Experiment versions refused (failed to load or verify); their arms get the published."""
        return sorted(self._arm_refused)

    def _loaded(self) -> Loaded:
        current = self._current
        if current is None:
            raise NotReady(
                "no model is loaded yet; train and publish one (python -m recommender train)",
                code="model_not_loaded",
            )
        return current

    # ---- cache-aside with single-flight ---------------------------------------------------------
    async def _cached(
        self,
        key: str,
        kind: str,
        compute: Callable[[], Recommendations | UserRecommendations],
        *,
        offload: bool = False,
    ) -> bytes:
        async def fetch() -> bytes:
            hit = await self.cache.get(key)
            if hit is not None:
                return hit
            self.computed[kind] += 1
            body = await asyncio.to_thread(compute) if offload else compute()
            sent, stored = _tag(body)
            await self.cache.set(key, stored)
            return sent

        return await self._flights.run(key, fetch)

    # ---- queries ----------------------------------------------------------------------------
    def memoised_similar(self, movie_id: int, k: int) -> bytes | None:
        """The served version's memoised body for ``(movie_id, k)``, or None; no await, so an
        in-process caller answers a hit without creating a coroutine. Only valid arguments are ever
        stored, so a hit needs no validation (callers pass ints: ``True`` hashes like ``1``)."""
        loaded = self._current
        return None if loaded is None else loaded.memo.get((movie_id, k))

    def memoised_alias(self, alias: str) -> bytes | None:
        """The served version's memoised body stored under ``alias`` by ``similar_json``."""
        loaded = self._current
        return None if loaded is None else loaded.memo.get_alias(alias)

    async def similar_json(
        self, movie_id: int, k: int = 10, arm: Arm | None = None, *, alias: str | None = None
    ) -> bytes:
        """The hot path. A memo hit (this version's bytes for ``(movie_id, k)``, already
        answered once, so ``"source": "cache"``) costs one dict lookup; a miss validates and
        goes through single-flight and the cache tiers, then fills the memo.

        ``arm``: the experiment arm the viewer is in; the answer comes from that arm's version
        (``model_version`` says which served: the published one when no experiment runs or the
        arm's version is not loaded, e.g. it failed its integrity check).

        ``alias``: another name the published version's answer is remembered by
        (``memoised_alias``): the HTTP route's request target. Never with ``arm``: which version
        answers an arm changes with the experiment, the published memo would outlive that."""
        if arm is not None:
            loaded = self.for_arm(arm)
            alias = None
        else:
            loaded = self._loaded()
        if type(movie_id) is int and type(k) is int:
            body = loaded.memo.get((movie_id, k))
            if body is not None:
                if alias is not None:
                    loaded.memo.put(alias, body)
                return body
        return await self._similar_past_memo(loaded, movie_id, k, alias)

    async def _similar_past_memo(
        self, loaded: Loaded, movie_id: int, k: int, alias: str | None
    ) -> bytes:
        """``similar_json`` for a memo miss: validate, then single-flight and the cache tiers."""
        check_id(movie_id, "movie_id")
        check_k(k)
        if movie_id not in loaded.known:
            raise NotFound(
                f"movie {movie_id} is not known to model {loaded.version}", code="unknown_movie"
            )
        key = cache_key(loaded.version, "similar", f"{movie_id}:{k}")

        def remember(stored: bytes) -> None:
            loaded.memo.put((movie_id, k), stored)
            if alias is not None:
                loaded.memo.put(alias, stored)

        async def fetch() -> bytes:
            stored = await self.cache.get(key)
            if stored is not None:
                remember(stored)
                return stored
            self.computed["similar"] += 1
            sent, stored = _tag(_similar_body(loaded, movie_id, k))
            await self.cache.set(key, stored)
            remember(stored)
            return sent

        return await self._flights.run(key, fetch)

    async def similar(self, movie_id: int, k: int = 10, arm: Arm | None = None) -> Similar:
        return _decode_similar(await self.similar_json(movie_id, k, arm))

    async def similar_many_json(self, movie_ids: list[int], k: int = 10) -> bytes:
        """Several movies at once: one MGET and one pipelined SET, each result being the very
        cache entry ``similar`` uses. No single-flight here (a batch is one request's work)."""
        loaded = self._loaded()
        if not isinstance(movie_ids, list) or not 1 <= len(movie_ids) <= MAX_BATCH_IDS:
            raise BadRequest(f"ids must list 1 to {MAX_BATCH_IDS} movie ids", code="invalid_param")
        for movie_id in movie_ids:
            check_id(movie_id, "ids")
        check_k(k)
        known = list(dict.fromkeys(m for m in movie_ids if m in loaded.known))
        missing = list(dict.fromkeys(m for m in movie_ids if m not in loaded.known))
        keys = [cache_key(loaded.version, "similar", f"{m}:{k}") for m in known]
        cached = await self.cache.get_many(keys)
        bodies: list[bytes] = []
        to_store = []
        for i, movie_id in enumerate(known):
            body = cached[i]
            if body is None:
                self.computed["similar"] += 1
                body, stored = _tag(_similar_body(loaded, movie_id, k))
                to_store.append((keys[i], stored))
            bodies.append(body)
        await self.cache.set_many(to_store)
        return b"".join(
            [
                b'{"model_version":',
                orjson.dumps(loaded.version),
                b',"results":[',
                b",".join(bodies),
                b'],"missing":',
                orjson.dumps(missing),
                b"}",
            ]
        )

    async def user_recommendations_json(self, user_id: int, k: int = 10) -> bytes:
        loaded = self._loaded()
        check_id(user_id, "user_id")
        check_k(k)
        if not loaded.model.has_user(user_id):
            raise NotFound(
                f"user {user_id} is not known to model {loaded.version}", code="unknown_user"
            )

        def compute() -> UserRecommendations:
            items = _items(loaded.model.recommend_user(user_id, k))
            return UserRecommendations(user_id, loaded.version, items, "collaborative")

        key = cache_key(loaded.version, "user", f"{user_id}:{k}")
        return await self._cached(key, "user", compute, offload=True)

    async def user_recommendations(self, user_id: int, k: int = 10) -> UserRecommendations:
        return _decode_user(await self.user_recommendations_json(user_id, k))

    async def recommend_json(self, history: list[int], k: int = 10) -> bytes:
        """From a list of movie ids (oldest first). Ids the model does not know are listed in
        ``ignored``; when none is known the answer is the most popular movies, marked
        ``source: "fallback"``. Scores are on one scale throughout (the model's, whose
        popularity prior is what ranks a fallback)."""
        loaded = self._loaded()
        check_history(history)
        check_k(k)
        known = [m for m in history if m in loaded.known]
        ignored = list(dict.fromkeys(m for m in history if m not in loaded.known))
        if not known:
            fallback = Recommendations(
                loaded.version, loaded.popular[:k], "fallback", ignored=ignored
            )
            return _encode(fallback)

        def compute() -> Recommendations:
            answer = loaded.model.recommend_history(known, k=k)
            return Recommendations(loaded.version, _items(answer.items), answer.source)

        digest = hashlib.blake2b(orjson.dumps(known), digest_size=16).hexdigest()
        key = cache_key(loaded.version, "history", f"{digest}:{k}")
        body = await self._cached(key, "history", compute, offload=len(known) > THREAD_THRESHOLD)
        if not ignored:
            return body
        # the cached answer is for the known ids; which ids were left out is this request's
        return _encode(msgspec.structs.replace(_decode_recommendations(body), ignored=ignored))

    async def recommend(self, history: list[int], k: int = 10) -> Recommendations:
        return _decode_recommendations(await self.recommend_json(history, k))

    def model_info(self) -> ModelInfo:
        return self._loaded().info

    # ---- experiment arms --------------------------------------------------------------------
    def for_arm(self, arm: Arm) -> Loaded:
        """The loaded version that serves ``arm`` now: the running experiment's version for it
        when that is loaded, else the published one (never an error while one is served). No
        I/O: the experiment is the one the last ``sync_arms`` read (every 2 s, off the request
        path), so a slow state Redis never slows a request."""
        if arm not in ARMS:
            raise BadRequest(
                f"arm must be one of {', '.join(ARMS)}, got {arm!r}", code="invalid_arm"
            )
        published = self._loaded()
        experiment = self._experiment
        if experiment is None or experiment.stopped is not None:
            return published
        version = experiment.version(arm)
        if version == published.version:
            return published
        return self._arms.get(version) or published

    async def sync_arms(self) -> list[str]:
        """Load the running experiment's versions (verified, memory-mapped, in a thread) and
        drop those of a stopped or replaced experiment. A version that fails to load or verify
        is refused until the experiment changes; its arm is served by the published version.
        Returns the arm versions loaded."""
        async with self._arms_lock:
            experiment = await self.experiments.current() if self.experiments else None
            wanted: set[str] = set()
            self._experiment = experiment
            if experiment is not None and experiment.stopped is None:
                wanted = {experiment.control, experiment.candidate}
            for version in [v for v in self._arms if v not in wanted]:
                del self._arms[version]
                log.info("model: experiment version unloaded", extra={"version": version})
            self._arm_refused &= wanted
            published = self.version
            for version in sorted(wanted - set(self._arms) - self._arm_refused - {published}):
                try:
                    model, manifest = await asyncio.to_thread(self.registry.load, version)
                except (IntegrityError, RegistryError, OSError, ValueError) as exc:
                    self._arm_refused.add(version)
                    log.error(
                        "model: an experiment version was refused; its arm gets the published one",
                        extra={"version": version, "serving": published, "error": str(exc)},
                    )
                    continue
                self._arms[version] = self._make(model, manifest)
                log.info("model: experiment version loaded", extra={"version": version})
            return sorted(self._arms)

    async def _verify_arms(self) -> None:
        """The scheduled re-check, for the arms: a version whose bytes changed is dropped."""
        async with self._arms_lock:
            for version in list(self._arms):
                try:
                    await asyncio.to_thread(self.registry.verify, version)
                except (IntegrityError, RegistryError, OSError) as exc:
                    del self._arms[version]
                    self._arm_refused.add(version)
                    log.error(
                        "model: an experiment version no longer matches its manifest; its arm "
                        "gets the published one",
                        extra={"version": version, "error": str(exc)},
                    )

    # ---- versions ---------------------------------------------------------------------------
    def _make(self, model: SimilarityModel, manifest: Manifest) -> Loaded:
        info = ModelInfo(
            **manifest.to_dict(), loaded_at=datetime.now(UTC).isoformat(timespec="seconds")
        )
        loaded = Loaded(
            model=model,
            manifest=manifest,
            version=str(manifest.version),
            info=info,
            popular=_items(model.popular(POPULAR_KEPT)),
            known=frozenset(model.item_ids.tolist()),
            memo=ResponseMemo(MEMO_BYTES, self.metrics),
        )
        return loaded

    def _swap(self, model: SimilarityModel, manifest: Manifest) -> Loaded:
        return self._swap_in(self._make(model, manifest))

    def _swap_in(self, loaded: Loaded) -> Loaded:
        self._current = loaded  # the swap: one assignment
        self.metrics.set_model_version(loaded.version)
        return loaded

    async def reload(self) -> ModelChange:
        """Load the registry's current version if it is not the one being served.

        Loading (integrity check + memory-mapped joblib load) runs in a thread, so serving goes
        on meanwhile. A version that fails its integrity check is refused and the old model keeps
        serving: the caller gets a 409 ``integrity_error``.
        """
        async with self._reload_lock:
            previous = self.version
            try:
                version = await asyncio.to_thread(self.registry.current_version)
            except Exception as exc:
                raise Conflict(
                    f"cannot read the model registry: {exc}", code="registry_error"
                ) from exc
            if version is None:
                raise Conflict(
                    f"no model version is published in {self.settings.model_dir}", code="no_model"
                )
            if version == previous:
                if await self._still_intact():  # a reload re-checks the served bytes too
                    return ModelChange(version, previous, changed=False)
                return ModelChange(self.version or "", previous, changed=True)
            try:
                arm = self._arms.get(version)
                if arm is not None:  # promoted: the arm's copy, re-verified, with its memo
                    await asyncio.to_thread(self.registry.verify, version)
                    model, manifest = arm.model, arm.manifest
                else:
                    model, manifest = await asyncio.to_thread(self.registry.load, version)
            except IntegrityError as exc:
                self._rejected = version
                log.error(
                    "model: refused a version that failed its integrity check",
                    extra={"version": version, "serving": previous, "error": str(exc)},
                )
                if previous is None:  # nothing to keep serving: the last version that verifies
                    await self._fall_back({version})
                raise Conflict(
                    f"model {version} failed its integrity check ({exc}); "
                    f"serving {self.version or 'no model'}",
                    code="integrity_error",
                ) from exc
            except Exception as exc:
                self._rejected = version
                log.exception("model: loading failed", extra={"version": version})
                raise Conflict(
                    f"model {version} could not be loaded: {exc}", code="load_failed"
                ) from exc
            arm = self._arms.get(version)
            loaded = (
                self._swap_in(arm) if arm and arm.model is model else self._swap(model, manifest)
            )
            self._rejected = None
            log.info(
                "model: loaded",
                extra={
                    "version": loaded.version,
                    "previous": previous,
                    "items": int(model.n_items),
                },
            )
            return ModelChange(loaded.version, previous, changed=True)

    async def verify(self) -> bool:
        """Re-check the served version's bytes against its manifest (the watcher does every
        ``model_verify_interval`` seconds): memory-mapped, a file changed in place is served
        at once. On a mismatch the box falls back to the last version that verifies."""
        async with self._reload_lock:
            intact = await self._still_intact()
        await self._verify_arms()
        return intact

    async def _still_intact(self) -> bool:
        loaded = self._current
        if loaded is None:
            return True
        try:
            await asyncio.to_thread(self.registry.verify, loaded.version)
        except (IntegrityError, RegistryError, OSError) as exc:
            self._rejected = loaded.version
            log.error(
                "model: the served version no longer matches its manifest; falling back",
                extra={"version": loaded.version, "error": str(exc)},
            )
            await self._fall_back({loaded.version})
            return False
        return True

    async def _fall_back(self, bad: set[str]) -> None:
        """Serve the most recently published version that verifies (then any registered one,
        newest first); with none, serve nothing (503) rather than bytes nobody vouches for."""
        published = await asyncio.to_thread(self.registry.history)
        registered = [m.version for m in await asyncio.to_thread(self.registry.manifests)]
        for version in dict.fromkeys([*reversed(published), *reversed(registered)]):
            if version in bad:
                continue
            try:
                model, manifest = await asyncio.to_thread(self.registry.load, version)
            except (IntegrityError, RegistryError, OSError, ValueError):
                continue
            self._swap(model, manifest)
            log.warning("model: serving the last good version", extra={"version": version})
            return
        self._current = None
        log.error("model: no version verifies; serving none until one is published")

    async def refresh(self) -> bool:
        """The watcher's reload: quiet when nothing changed, and it does not retry (or re-log) a
        version already refused until someone publishes another or an admin asks for it."""
        try:
            version = await asyncio.to_thread(self.registry.current_version)
        except Exception as exc:
            log.warning("model: cannot read the registry", extra={"error": str(exc)})
            return False
        if version is None or version == self.version or version == self._rejected:
            return False
        try:
            return (await self.reload()).changed
        except ApiError:
            return False  # reload() logged why

    async def rollback(self) -> ModelChange:
        """Make the registry's previous version current, then serve it."""
        try:
            manifest = await asyncio.to_thread(self.registry.rollback)
        except RegistryError as exc:
            raise Conflict(f"cannot roll back: {exc}", code="no_previous_version") from exc
        except IntegrityError as exc:
            raise Conflict(f"cannot roll back: {exc}", code="integrity_error") from exc
        log.info("model: rolled back in the registry", extra={"version": manifest.version})
        return await self.reload()
