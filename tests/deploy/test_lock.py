"""The supply chain: every dependency pinned with hashes in a lock file, runtime and development
apart, the image and `make` installing from the locks, and no runtime dependency unused."""

from __future__ import annotations

import ast
import re
import tomllib
from collections import defaultdict
from importlib.metadata import packages_distributions
from pathlib import Path

from packaging.requirements import Requirement

from tests.deploy.deployfiles import DOCKERFILE, ROOT, dockerfile_stages

RUNTIME_LOCK = ROOT / "requirements.lock"
DEV_LOCK = ROOT / "requirements-dev.lock"
RUNTIME_PACKAGES = ("web_server", "services", "recommender")
# Runtime dependencies nothing imports yet, each with the reason it stays.
PLANNED = {
    "scikit-learn": "the content model (genres, tags, title) is being built on it",
}
PIN = re.compile(r"^([A-Za-z0-9][A-Za-z0-9._-]*)==([^\s;\\]+)")


def normalise(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def pyproject() -> dict:
    return tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]


def runtime_requirements() -> list[Requirement]:
    return [Requirement(r) for r in pyproject()["dependencies"]]


def extra_requirements() -> list[Requirement]:
    return [Requirement(r) for deps in pyproject()["optional-dependencies"].values() for r in deps]


def pins(lock: Path) -> dict[str, set[str]]:
    """package -> the versions the lock pins (several when they differ by Python version)."""
    found: dict[str, set[str]] = defaultdict(set)
    for line in lock.read_text().splitlines():
        if match := PIN.match(line):
            found[normalise(match.group(1))].add(match.group(2))
    return found


def blocks(lock: Path) -> list[str]:
    """Each pinned requirement with its continuation lines (its hashes)."""
    text = lock.read_text()
    return [b for b in re.split(r"\n(?=[A-Za-z0-9])", text) if PIN.match(b)]


def test_every_dependency_is_pinned_within_its_range() -> None:
    runtime, dev = pins(RUNTIME_LOCK), pins(DEV_LOCK)
    for requirement in runtime_requirements():
        name = normalise(requirement.name)
        assert runtime.get(name), f"{name} is not in requirements.lock: run make lock"
        assert all(v in requirement.specifier for v in runtime[name]), (name, runtime[name])
    for requirement in [*runtime_requirements(), *extra_requirements()]:
        name = normalise(requirement.name)
        assert dev.get(name), f"{name} is not in requirements-dev.lock: run make lock"
        assert all(v in requirement.specifier for v in dev[name]), (name, dev[name])


def test_every_pin_carries_its_hashes() -> None:
    for lock in (RUNTIME_LOCK, DEV_LOCK):
        pinned = blocks(lock)
        assert len(pinned) >= 20, lock.name
        for block in pinned:
            assert "--hash=sha256:" in block, f"{lock.name}: {block.splitlines()[0]}"


def test_the_runtime_lock_holds_no_development_tool() -> None:
    runtime = set(pins(RUNTIME_LOCK))
    direct_runtime = {normalise(r.name) for r in runtime_requirements()}
    tools = {normalise(r.name) for r in extra_requirements()} - direct_runtime
    assert {"pytest", "playwright", "ruff", "honcho", "hdrhistogram"} <= tools
    assert not tools & runtime, sorted(tools & runtime)


def test_both_locks_pin_the_same_versions_of_what_they_share() -> None:
    runtime, dev = pins(RUNTIME_LOCK), pins(DEV_LOCK)
    differing = {name: (runtime[name], dev[name]) for name in runtime if runtime[name] != dev[name]}
    assert not differing, differing


def _imported_top_levels() -> set[str]:
    names: set[str] = set()
    for package in RUNTIME_PACKAGES:
        for path in (ROOT / package).rglob("*.py"):
            for node in ast.walk(ast.parse(path.read_text(), str(path))):
                if isinstance(node, ast.Import):
                    names |= {alias.name.split(".")[0] for alias in node.names}
                elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
                    names.add(node.module.split(".")[0])
    return names


def test_every_runtime_dependency_is_imported_by_the_services() -> None:
    distributions = packages_distributions()
    imported = {
        normalise(dist)
        for module in _imported_top_levels()
        for dist in distributions.get(module, [])
    }
    unused = {normalise(r.name) for r in runtime_requirements()} - imported - set(PLANNED)
    assert not unused, f"runtime dependencies nothing in {RUNTIME_PACKAGES} imports: {unused}"


def test_the_image_installs_the_runtime_lock_with_hashes() -> None:
    builder = dockerfile_stages()[0]
    copies = [i.value for i in builder if i.keyword == "COPY"]
    runs = " ".join(i.value for i in builder if i.keyword == "RUN")
    assert any(c.split()[0] == "requirements.lock" for c in copies), copies
    assert "--require-hashes -r requirements.lock" in runs
    assert "pyproject.toml" not in runs  # never the unpinned ranges
    assert "requirements-dev.lock" not in DOCKERFILE.read_text()


def _make_rule(makefile: str, target: str) -> str:
    match = re.search(rf"^{re.escape(target)}:(.*?)(?=^\S|\Z)", makefile, re.M | re.S)
    assert match, target
    return match.group(1)


def test_make_run_installs_the_runtime_lock_and_make_test_the_dev_lock() -> None:
    makefile = (ROOT / "Makefile").read_text()
    runtime = _make_rule(makefile, "$(RUNTIME_STAMP)")
    dev = _make_rule(makefile, "$(STAMP)")
    assert "-r requirements.lock" in runtime and "requirements-dev" not in runtime
    assert "-r requirements-dev.lock" in dev
    for rule in (runtime, dev):  # the project itself without re-resolving its ranges
        assert "--no-deps -e ." in rule
    run = _make_rule(makefile, "run").splitlines()[0]
    assert "$(RUNTIME_STAMP)" in run and "$(STAMP)" not in run.replace("$(RUNTIME_STAMP)", "")
    assert "$(STAMP)" in _make_rule(makefile, "test").splitlines()[0]
