"""Model registry: versions, atomic publish, rollback, integrity before unpickling."""

from __future__ import annotations

import json
import os
import pickle
import threading
from pathlib import Path

import joblib
import numpy as np
import pytest

from recommender.data import Interactions
from recommender.model import ModelParams, SimilarityModel, fit
from recommender.registry import IntegrityError, Manifest, ModelRegistry, RegistryError


@pytest.fixture(scope="module")
def small_model() -> SimilarityModel:
    rng = np.random.default_rng(7)
    users = rng.integers(0, 300, 4000)
    items = rng.integers(0, 200, 4000)
    return fit(Interactions.from_arrays(users, items, np.full(4000, 4.0)), ModelParams())


def _register(registry: ModelRegistry, model: SimilarityModel, publish: bool = True) -> Manifest:
    return registry.register(
        model, data_hash="d" * 64, metrics={"recall@10": 0.1}, trained_seconds=1.5, publish=publish
    )


class Boom:
    """Unpickling this writes a marker file: proof that pickle code ran."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (Path.write_text, (self.marker, "pwned"))


def _overwrite(path: Path, data: bytes) -> None:
    os.chmod(path, 0o644)
    path.write_bytes(data)


def test_register_publish_list_load(tmp_path: Path, small_model: SimilarityModel) -> None:
    registry = ModelRegistry(tmp_path)
    assert registry.current_version() is None and registry.manifests() == []
    first = _register(registry, small_model)
    assert registry.current_version() == first.version
    assert first.version[:8].isdigit() and first.version.split("-")[1] == first.sha256[:8]
    assert first.params == small_model.params.to_dict() and first.hmac is None
    assert first.n_items == small_model.n_items and first.trained_seconds == 1.5
    on_disk = json.loads((tmp_path / "versions" / first.version / "manifest.json").read_text())
    assert Manifest.from_dict(on_disk) == first

    model, manifest = registry.load()
    assert manifest == first
    assert model.algorithm == manifest.algorithm == small_model.algorithm == "ease+knn"
    for table in (model.knn, model.ease):
        assert isinstance(table.indices, np.memmap) and isinstance(table.weights, np.memmap)
    np.testing.assert_array_equal(model.ease.indices, small_model.ease.indices)
    assert model.similar(int(model.item_ids[0]), 5) == small_model.similar(
        int(small_model.item_ids[0]), 5
    )

    second = _register(registry, small_model, publish=False)
    assert registry.current_version() == first.version  # registered, not published
    assert [m.version for m in registry.manifests()] == sorted([first.version, second.version])
    assert second.version != first.version


def test_publish_and_rollback(tmp_path: Path, small_model: SimilarityModel) -> None:
    registry = ModelRegistry(tmp_path)
    with pytest.raises(RegistryError):
        registry.rollback()
    a = _register(registry, small_model)
    with pytest.raises(RegistryError, match="no version was published before"):
        registry.rollback()
    b = _register(registry, small_model)
    c = _register(registry, small_model)
    assert registry.current_version() == c.version
    assert registry.rollback().version == b.version
    assert registry.current_version() == b.version
    assert registry.rollback().version == a.version
    assert registry.publish(c.version).version == c.version
    assert registry.history() == [a.version, c.version]
    assert registry.rollback().version == a.version
    with pytest.raises(RegistryError, match="unknown model version"):
        registry.publish("20990101T000000Z-deadbeef")
    with pytest.raises(RegistryError, match="invalid"):
        registry.publish("../escape")


def test_current_switches_atomically(tmp_path: Path, small_model: SimilarityModel) -> None:
    registry = ModelRegistry(tmp_path)
    versions = {_register(registry, small_model).version for _ in range(3)}
    seen: set[str | None] = set()
    stop = threading.Event()

    def reader() -> None:
        while not stop.is_set():
            seen.add(registry.current_version())

    thread = threading.Thread(target=reader)
    thread.start()
    try:
        for _ in range(30):
            for version in sorted(versions):
                registry.publish(version)
    finally:
        stop.set()
        thread.join()
    assert seen <= versions  # never empty, never torn
    assert not [p for p in tmp_path.iterdir() if p.name.endswith(".tmp")]


def test_tampered_artifact_is_refused_before_unpickling(
    tmp_path: Path, small_model: SimilarityModel
) -> None:
    registry = ModelRegistry(tmp_path)
    manifest = _register(registry, small_model)
    artifact = tmp_path / "versions" / manifest.version / "model.joblib"
    marker = tmp_path / "marker"
    evil = pickle.dumps(Boom(marker))

    # control: the payload is live - joblib.load on it does run code
    probe = tmp_path / "probe.pkl"
    probe.write_bytes(evil)
    joblib.load(probe)
    assert marker.read_text() == "pwned"
    marker.unlink()

    _overwrite(artifact, evil)
    with pytest.raises(IntegrityError, match="sha256"):
        registry.load()
    with pytest.raises(IntegrityError):
        registry.publish(manifest.version)
    assert not marker.exists()  # joblib.load was never reached


def test_single_flipped_byte_is_refused(tmp_path: Path, small_model: SimilarityModel) -> None:
    registry = ModelRegistry(tmp_path)
    manifest = _register(registry, small_model)
    artifact = tmp_path / "versions" / manifest.version / "model.joblib"
    data = bytearray(artifact.read_bytes())
    data[len(data) // 2] ^= 0x01
    _overwrite(artifact, bytes(data))
    with pytest.raises(IntegrityError):
        registry.load(manifest.version)


def test_signing_key(tmp_path: Path, small_model: SimilarityModel) -> None:
    key = b"k" * 32
    signed = ModelRegistry(tmp_path, signing_key=key)
    manifest = _register(signed, small_model)
    assert manifest.hmac and len(manifest.hmac) == 64
    model, _ = signed.load()
    assert model.n_items == small_model.n_items

    with pytest.raises(IntegrityError, match="HMAC"):
        ModelRegistry(tmp_path, signing_key=b"wrong-key").load()

    # an attacker who rewrites artifact + sha256 (but has no key) is still refused
    marker = tmp_path / "marker"
    evil = pickle.dumps(Boom(marker))
    version_dir = tmp_path / "versions" / manifest.version
    _overwrite(version_dir / "model.joblib", evil)
    import hashlib

    forged = manifest.to_dict() | {"sha256": hashlib.sha256(evil).hexdigest()}
    (version_dir / "manifest.json").write_text(json.dumps(forged))
    with pytest.raises(IntegrityError, match="HMAC"):
        signed.load()
    assert not marker.exists()


def test_unsigned_model_refused_when_key_set(tmp_path: Path, small_model: SimilarityModel) -> None:
    manifest = _register(ModelRegistry(tmp_path), small_model)
    assert manifest.hmac is None
    with pytest.raises(IntegrityError, match="not signed"):
        ModelRegistry(tmp_path, signing_key=b"secret").load()
    with pytest.raises(RegistryError, match="no published model"):
        ModelRegistry(tmp_path / "empty").load()
