"""The command line: outputs, the HTML report, --compare, config files and bad arguments."""

from __future__ import annotations

import ast
import asyncio
import json
import re
import sys
from pathlib import Path

import pytest

from loadtest.cli import main, resolve
from loadtest.config import ConfigError, load_toml, parse_mix
from loadtest.html_report import render_html
from loadtest.report import compare

ROOT = Path(__file__).resolve().parents[2]


async def run_cli(*args: str, cwd: Path) -> tuple[int, str, str]:
    """Run ``python -m loadtest`` as a user would, while this loop keeps serving."""
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "loadtest",
        *args,
        cwd=cwd,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await asyncio.wait_for(proc.communicate(), timeout=30)
    return proc.returncode, out.decode(), err.decode()


async def test_cli_writes_json_and_self_contained_html_and_compares(fake_marquee, tmp_path):
    url, _ = await fake_marquee(delay=0.002)
    old_json, new_json, html = tmp_path / "old.json", tmp_path / "new.json", tmp_path / "r.html"
    common = [
        "--base-url",
        url,
        "--rate",
        "40",
        "--duration",
        "1s",
        "--seed",
        "1",
        "--mix",
        "page=3,similar=1,session=1,search=1",
        "--progress",
    ]
    code, out, err = await run_cli(*common, "--out", str(old_json), cwd=ROOT)
    assert code == 0, err
    assert "total" in out and "p99.9 ms" in out
    assert re.search(r"\[\s*1\.\ds\] done \d+ err 0 \| second \d: \d+ ok", err)  # progress
    old = json.loads(old_json.read_text())
    assert old["tool"] == "marquee-loadtest" and old["total"]["error_count"] == 0
    assert old["total"]["ok"] == old["total"]["count"] == 40
    assert set(old["scenarios"]) == {"page", "similar", "session", "search"}
    assert old["workload"]["source"].startswith("catalog")
    assert old["windows"] and old["percentile_curve"]
    assert old["config"]["model"] == "open" and old["config"]["rate"] == 40.0

    code, out, err = await run_cli(
        *common, "--out", str(new_json), "--html", str(html), "--compare", str(old_json), cwd=ROOT
    )
    assert code == 0, err
    assert "change vs run started" in out
    new = json.loads(new_json.read_text())
    assert set(new["comparison"]["rows"]) == {"page", "similar", "session", "search", "total"}
    page = html.read_text()
    assert page.startswith("<!doctype html>") and page.count("<svg") == 3
    assert "Compared with an earlier run" in page
    assert not re.search(r"""(src|href)\s*=\s*["']?\s*(https?:)?//""", page)
    assert "<script" not in page and "<link" not in page


async def test_cli_exit_code_1_when_nothing_succeeds(tmp_path, closed_port):
    code, out, err = await run_cli(
        "--base-url",
        f"http://127.0.0.1:{closed_port}",
        "--requests",
        "3",
        "--rate",
        "50",
        "--mix",
        "home=1",
        "--data-dir",
        str(ROOT / "data" / "ml-latest-small"),
        cwd=tmp_path,
    )
    assert code == 1
    assert "connection=3" in out
    assert "catalog popular list unavailable" in err


def test_compare_reports_percent_change():
    def result(p99: float, rps: float) -> dict:
        s = {
            "count": 10,
            "ok": 10,
            "errors": {},
            "error_count": 0,
            "error_rate": 0.0,
            "throughput_rps": rps,
            "latency_ms": {"p50": 1.0, "p90": 2.0, "p99": p99, "p99_9": p99, "max": p99},
        }
        return {"tool": "marquee-loadtest", "total": s, "scenarios": {"page": s}}

    cmp = compare(result(30.0, 50.0), result(20.0, 100.0))
    assert cmp["rows"]["total"]["p99"]["pct"] == 50.0
    assert cmp["rows"]["page"]["throughput_rps"]["pct"] == -50.0
    assert cmp["rows"]["page"]["p50"]["pct"] == 0.0
    html = render_html({**result(30.0, 50.0), "windows": [], "percentile_curve": []}, cmp)
    assert 'class="bad"' in html and "+50.0%" in html


def test_mix_parsing():
    assert parse_mix("page=70, similar=20,search=10") == {"page": 70, "similar": 20, "search": 10}
    assert parse_mix("page=1,home=0") == {"page": 1}
    for bad in ("page", "nope=1", "page=x", "page=-1", "page=0", ""):
        with pytest.raises(ConfigError):
            parse_mix(bad)


def test_toml_config_and_cli_override(tmp_path):
    cfg_file = tmp_path / "load.toml"
    cfg_file.write_text(
        'base-url = "http://127.0.0.1:18080"\nusers = 5\nduration = 3\nthink_time = "200ms"\n'
        "[mix]\npage = 3\nsimilar = 1\n"
    )
    assert load_toml(str(cfg_file))["mix"] == {"page": 3.0, "similar": 1.0}
    cfg, old = resolve(["--config", str(cfg_file), "--duration", "2m"])
    assert old is None
    assert cfg.base_url == "http://127.0.0.1:18080" and cfg.model == "closed"
    assert cfg.users == 5 and cfg.duration == 120.0 and cfg.think_time == 0.2
    assert cfg.mix == {"page": 3.0, "similar": 1.0}
    cfg, _ = resolve(["--config", str(cfg_file), "--mix", "home=1"])
    assert cfg.mix == {"home": 1.0}


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--rate", "10", "--users", "5"], "not both"),
        (["--mix", "nope=1"], "unknown scenario"),
        (["--mix", "page=x"], "not a number"),
        (["--duration", "soon"], "not a duration"),
        (["--rate", "0"], "rate must be > 0"),
        (["--users", "0"], "users must be a positive integer"),
        (["--base-url", "localhost:8080"], "http(s) URL"),
        (["--user-ids", "10-1"], "user id range"),
        (["--compare", "/nonexistent/old.json"], "cannot read"),
        (["--bogus"], "unrecognized arguments"),
    ],
)
def test_bad_arguments_exit_2_with_a_clear_message(args, message, capsys):
    with pytest.raises(SystemExit) as exc:
        main(args)
    assert exc.value.code == 2
    assert message in capsys.readouterr().err


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("rate = [1", "invalid TOML"),
        ("speed = 3", "unknown key"),
        ("[mix]\nnope = 1", "unknown scenario"),
        ("mix = 3", "mix must be"),
        ("out = 5", "out must be a string"),
        ('users = "many"', "users must be a positive integer"),
        ('duration = "soon"', "not a duration"),
        ("user_ids = [5, 1]", "user id range"),
    ],
)
def test_bad_toml_exits_2(text, message, tmp_path, capsys):
    path = tmp_path / "bad.toml"
    path.write_text(text)
    with pytest.raises(SystemExit) as exc:
        main(["--config", str(path)])
    assert exc.value.code == 2
    assert message in capsys.readouterr().err


def test_locustfile_is_valid_python_with_every_scenario():
    """locust is not installed (nor a dependency): check the file parses and covers the tool's
    scenarios, without importing it."""
    tree = ast.parse((ROOT / "locustfile.py").read_text())
    functions = {n.name for n in ast.walk(tree) if isinstance(n, ast.FunctionDef)}
    from loadtest.config import SCENARIOS

    assert set(SCENARIOS) <= functions
