"""The command line: outputs, the HTML report, config files, exit codes and bad arguments."""

from __future__ import annotations

import asyncio
import json
import re

import pytest

from loadtest.cli import main, resolve
from loadtest.config import ConfigError, load_toml, parse_mix
from tests.loadtest.conftest import ROOT


async def test_cli_writes_json_and_self_contained_html_and_compares(fake_marquee, cli, tmp_path):
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
        "--max-send-lag",
        "1h",
    ]
    code, out, err = await cli(*common, "--out", str(old_json))
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

    code, out, err = await cli(
        *common, "--out", str(new_json), "--html", str(html), "--compare", str(old_json)
    )
    assert code == 0, err
    assert "change vs run started" in out
    new = json.loads(new_json.read_text())
    assert new["comparison"]["comparable"] is True and new["valid"] is True
    assert set(new["comparison"]["rows"]) == {"page", "similar", "session", "search", "total"}
    page = html.read_text()
    assert page.startswith("<!doctype html>") and page.count("<svg") == 3
    assert "Compared with an earlier run" in page
    assert not re.search(r"""(src|href)\s*=\s*["']?\s*(https?:)?//""", page)
    assert "<script" not in page and "<link" not in page


async def test_cli_fails_at_once_with_one_line_when_the_target_is_unreachable(
    cli, tmp_path, closed_port
):
    loop = asyncio.get_running_loop()
    started = loop.time()
    code, out, err = await cli(
        "--base-url", f"http://127.0.0.1:{closed_port}", "--duration", "5m", cwd=tmp_path
    )  # fmt: skip
    assert code == 3
    assert loop.time() - started < 30  # not the 5 minutes asked for
    assert err.strip().count("\n") == 0
    assert f"cannot reach http://127.0.0.1:{closed_port}: connection to" in err
    assert "refused" in err and "is the server running?" in err
    assert out == ""


async def test_make_loadtest_without_a_server_says_so(closed_port):
    proc = await asyncio.create_subprocess_exec(
        "make", "-s", "-o", ".venv/.installed", "loadtest", f"PORT={closed_port}",
        cwd=ROOT, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    out, err = await asyncio.wait_for(proc.communicate(), timeout=60)
    assert proc.returncode != 0
    assert f"cannot reach http://127.0.0.1:{closed_port}" in err.decode()


async def test_cli_exit_code_1_when_nothing_succeeds(fake_marquee, cli, tmp_path):
    url, _ = await fake_marquee(status=500)
    code, out, err = await cli(
        "--base-url", url, "--requests", "3", "--rate", "50", "--mix", "home=1",
        "--max-send-lag", "1h", cwd=tmp_path,
    )  # fmt: skip
    assert code == 1
    assert "http_500=3" in out and "GET /" in out


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
        (["--duration", "-1s"], "a duration cannot be negative: '-1s'"),
        (["--timeout", "-5"], "a duration cannot be negative"),
        (["--rate", "-3"], "rate must be > 0"),
        (["--rate"], "expected one argument"),
        (["--threshold", "p99"], "threshold 'p99' is not"),
        (["--max-send-lag", "0"], "max_send_lag must be > 0"),
        (["--paths", "x.txt", "--mix", "page=1"], "--paths (replay a list of targets) or --mix"),
        (["--out", "/proc/nope/r.json"], "cannot write /proc/nope/r.json"),
    ],
)
def test_bad_arguments_exit_2_with_one_clear_line(args, message, capsys):
    with pytest.raises(SystemExit) as exc:
        main(args)
    assert exc.value.code == 2
    err = capsys.readouterr().err
    assert message in err
    assert err.count("\n") == 1 and "usage:" not in err  # one line, no usage dump


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("rate = [1", "invalid TOML"),
        ("speed = 3", "unknown key"),
        ("[mix]\nnope = 1", "unknown scenario"),
        ("mix = 3", "mix must be"),
        ("out = 5", "out must be a string"),
        ('users = "many"', "users must be a positive integer"),
        ('thresholds = ["p99 < fast"]', "threshold 'p99 < fast' is not"),
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
    err = capsys.readouterr().err
    assert message in err and err.count("\n") == 1
