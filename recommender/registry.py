"""Versioned model store on a plain directory: register, publish, roll back, verify, load.

Layout::

    <model_dir>/versions/<version>/model.joblib    uncompressed joblib (arrays memory-map)
    <model_dir>/versions/<version>/manifest.json   Manifest (sha256, hmac, params, algorithm...)
    <model_dir>/current                             the published version's name (one line)
    <model_dir>/published.json                      publish history, oldest first (for rollback)
    <model_dir>/.lock                               flock serialising publish/rollback

Why it is shaped like this:

* Pickle executes code when loaded, so ``load`` hashes the artifact bytes first (sha256, plus
  HMAC-SHA256 when a signing key is configured) and only then calls ``joblib.load``. With a
  signing key set, an artifact without an HMAC is refused: the manifest sits next to the
  artifact, so anyone able to swap the artifact can also rewrite its sha256 - only the HMAC
  proves the bytes came from a holder of the key.
* The verified bytes are the loaded bytes: the file is opened once, hashed through that
  descriptor, and loaded through ``/proc/self/fd`` (Linux), so a rename-swap in between cannot
  slip different bytes in. Artifacts are written read-only.
* ``current`` is replaced atomically (temp file + ``os.replace``): a reader sees the old or the
  new version, never a torn name. A version directory appears atomically too (built under a
  hidden temp name, then renamed).
* Publishing does not need Redis; notifying running boxes is the service's job.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import hmac
import json
import os
import tempfile
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import joblib

from recommender.model import SimilarityModel
from recommender.schemas import Manifest

ARTIFACT = "model.joblib"
MANIFEST = "manifest.json"
_CHUNK = 1 << 20


class IntegrityError(Exception):
    """The artifact's bytes do not match its manifest (or cannot be authenticated)."""


class RegistryError(Exception):
    """Unknown version, nothing published, nothing to roll back to, ..."""


def file_digests(fh, key: bytes | None) -> tuple[str, str | None, int]:
    """sha256 (and HMAC-SHA256 with ``key``) of an open binary file, streamed."""
    sha = hashlib.sha256()
    mac = hmac.new(key, digestmod=hashlib.sha256) if key else None
    size = 0
    for chunk in iter(lambda: fh.read(_CHUNK), b""):
        sha.update(chunk)
        if mac is not None:
            mac.update(chunk)
        size += len(chunk)
    return sha.hexdigest(), (mac.hexdigest() if mac is not None else None), size


def _atomic_write(path: Path, text: str) -> None:
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w") as fh:
            fh.write(text)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


class ModelRegistry:
    """A model directory; cheap to construct, holds no open resources."""

    def __init__(self, model_dir: str | Path, signing_key: bytes | None = None) -> None:
        self.model_dir = Path(model_dir)
        self.signing_key = signing_key or None
        self.versions_dir = self.model_dir / "versions"
        self.current_path = self.model_dir / "current"
        self.history_path = self.model_dir / "published.json"

    # ---- writing -------------------------------------------------------------------------
    def register(
        self,
        model: SimilarityModel,
        *,
        data_hash: str,
        metrics: dict,
        trained_seconds: float,
        publish: bool = True,
        training: dict | None = None,
    ) -> Manifest:
        """Store ``model`` as a new version (and publish it unless ``publish=False``)."""
        self.versions_dir.mkdir(parents=True, exist_ok=True)
        staging = Path(tempfile.mkdtemp(dir=self.versions_dir, prefix=".staging-"))
        try:
            artifact = staging / ARTIFACT
            joblib.dump(model, artifact, compress=0)  # uncompressed: arrays can be mmapped
            os.chmod(artifact, 0o444)
            with open(artifact, "rb") as fh:
                sha, mac, size = file_digests(fh, self.signing_key)
            created = datetime.now(UTC)
            version = self._new_version(created, sha)
            manifest = Manifest(
                version=version,
                created=created.isoformat(timespec="seconds").replace("+00:00", "Z"),
                sha256=sha,
                hmac=mac,
                data_hash=data_hash,
                params=model.params.to_dict(),
                metrics=metrics,
                n_items=model.n_items,
                n_users=model.n_users,
                trained_seconds=float(trained_seconds),
                size_bytes=size,
                algorithm=model.algorithm,
                training={**model.timings, **(training or {})},
            )
            (staging / MANIFEST).write_text(json.dumps(manifest.to_dict(), indent=2) + "\n")
            os.rename(staging, self.versions_dir / version)
        except BaseException:
            _remove_tree(staging)
            raise
        if publish:
            self.publish(version)
        return manifest

    def _new_version(self, created: datetime, sha: str) -> str:
        base = f"{created.strftime('%Y%m%dT%H%M%SZ')}-{sha[:8]}"
        version, n = base, 1
        while (self.versions_dir / version).exists():
            n += 1
            version = f"{base}-{n}"
        return version

    def publish(self, version: str) -> Manifest:
        """Make ``version`` current (verified first) and record it in the publish history."""
        manifest = self.manifest(version)
        self.verify(version)
        with self._locked():
            history = self._history()
            history.append({"version": version, "published": _now_iso()})
            _atomic_write(self.history_path, json.dumps(history, indent=2) + "\n")
            _atomic_write(self.current_path, version + "\n")
        return manifest

    def rollback(self) -> Manifest:
        """Go back to the version published before the current one."""
        with self._locked():
            current = self.current_version()
            history = self._history()
            if current is None or not history:
                raise RegistryError("nothing is published; nothing to roll back")
            # drop the trailing entries for the current version, then the previous one is next
            while history and history[-1]["version"] == current:
                history.pop()
            if not history:
                raise RegistryError(f"no version was published before {current}")
            target = history[-1]["version"]
            manifest = self.manifest(target)
            self.verify(target)
            _atomic_write(self.history_path, json.dumps(history, indent=2) + "\n")
            _atomic_write(self.current_path, target + "\n")
        return manifest

    # ---- reading -------------------------------------------------------------------------
    def current_version(self) -> str | None:
        try:
            name = self.current_path.read_text().strip()
        except FileNotFoundError:
            return None
        return name or None

    def manifest(self, version: str) -> Manifest:
        path = self._version_dir(version) / MANIFEST
        try:
            return Manifest.from_dict(json.loads(path.read_text()))
        except FileNotFoundError:
            raise RegistryError(f"unknown model version {version!r}") from None
        except (ValueError, TypeError) as exc:
            raise IntegrityError(f"manifest of {version} is unreadable: {exc}") from None

    def manifests(self) -> list[Manifest]:
        """Every registered version, oldest first."""
        if not self.versions_dir.is_dir():
            return []
        out = []
        for entry in sorted(self.versions_dir.iterdir()):
            if entry.name.startswith(".") or not (entry / MANIFEST).is_file():
                continue
            out.append(self.manifest(entry.name))
        return out

    def history(self) -> list[str]:
        """Published versions, oldest first (the rollback path)."""
        return [h["version"] for h in self._history()]

    def verify(self, version: str) -> Manifest:
        """Check the artifact bytes against the manifest without unpickling anything."""
        manifest = self.manifest(version)
        with open(self._version_dir(version) / ARTIFACT, "rb") as fh:
            self._check(manifest, fh)
        return manifest

    def load(self, version: str | None = None) -> tuple[SimilarityModel, Manifest]:
        """Verify, then load memory-mapped. Raises IntegrityError before any unpickling."""
        if version is None:
            version = self.current_version()
            if version is None:
                raise RegistryError(f"no published model in {self.model_dir}")
        manifest = self.manifest(version)
        path = self._version_dir(version) / ARTIFACT
        with open(path, "rb") as fh:
            self._check(manifest, fh)
            # load the very inode we hashed (a rename-swap after hashing cannot take effect)
            fd_path = Path(f"/proc/self/fd/{fh.fileno()}")
            model = joblib.load(fd_path if fd_path.exists() else path, mmap_mode="r")
        if not isinstance(model, SimilarityModel):
            raise IntegrityError(f"{path} does not hold a SimilarityModel")
        return model, manifest

    # ---- internals -----------------------------------------------------------------------
    def _check(self, manifest: Manifest, fh) -> None:
        if self.signing_key and not manifest.hmac:
            raise IntegrityError(
                f"model {manifest.version} is not signed but a signing key is configured; "
                "refusing to load it"
            )
        sha, mac, _ = file_digests(fh, self.signing_key)
        fh.seek(0)
        if not hmac.compare_digest(sha, manifest.sha256):
            raise IntegrityError(
                f"model {manifest.version}: artifact sha256 {sha[:16]}... does not match the "
                f"manifest's {manifest.sha256[:16]}...; refusing to load it"
            )
        if self.signing_key and not hmac.compare_digest(mac or "", manifest.hmac or ""):
            raise IntegrityError(
                f"model {manifest.version}: HMAC does not match (wrong signing key or forged "
                "artifact); refusing to load it"
            )

    def _version_dir(self, version: str) -> Path:
        if not version or "/" in version or version.startswith(".") or "\\" in version:
            raise RegistryError(f"invalid model version {version!r}")
        return self.versions_dir / version

    def _history(self) -> list[dict]:
        try:
            data = json.loads(self.history_path.read_text())
        except FileNotFoundError:
            return []
        if not isinstance(data, list):
            raise RegistryError(f"{self.history_path} is not a list")
        return [h for h in data if isinstance(h, dict) and "version" in h]

    @contextlib.contextmanager
    def _locked(self) -> Iterator[None]:
        self.model_dir.mkdir(parents=True, exist_ok=True)
        with open(self.model_dir / ".lock", "a+") as lock:
            fcntl.flock(lock.fileno(), fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(lock.fileno(), fcntl.LOCK_UN)


def _now_iso() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds").replace("+00:00", "Z")


def _remove_tree(path: Path) -> None:
    if not path.exists():
        return
    for child in path.iterdir():
        with contextlib.suppress(OSError):
            os.chmod(child, 0o644)
            child.unlink()
    with contextlib.suppress(OSError):
        path.rmdir()


__all__ = [
    "IntegrityError",
    "Manifest",
    "ModelRegistry",
    "RegistryError",
    "file_digests",
]
