"""``python -m loadtest``: parse flags (over an optional TOML file), run, report.

Exit codes (a CI can act on them):

- 0: the run is valid, every threshold passed and at least one request succeeded;
- 1: a threshold failed, or not one request succeeded;
- 2: bad arguments or config, or ``--compare`` with a run of a different load shape
  (one line on stderr, nothing sent);
- 3: a base URL is unreachable (checked before any load; one line on stderr);
- 4: the run is invalid: the generator could not keep to its schedule (its own lateness would
  be in the latencies). This wins over 1: a failed threshold of an invalid run means nothing.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import sys
from collections.abc import Coroutine, Sequence
from pathlib import Path
from typing import Any, NoReturn

from loadtest.compare import compare, differences
from loadtest.config import (
    SCENARIOS,
    ConfigError,
    RunConfig,
    build_config,
    load_toml,
    parse_duration,
    parse_mix,
    parse_user_ids,
)
from loadtest.html_report import render_html
from loadtest.online import replay_table
from loadtest.report import (
    compare_table,
    load_results,
    summary_table,
    thresholds_table,
    write_json,
)
from loadtest.runner import TargetUnreachable, run_load

EXIT_OK, EXIT_FAILED, EXIT_USAGE, EXIT_UNREACHABLE, EXIT_INVALID = 0, 1, 2, 3, 4

EPILOG = f"""\
scenarios: {", ".join(SCENARIOS)}

examples:
  python -m loadtest --rate 200 --duration 30s --html report.html
  python -m loadtest --users 50 --think-time 0.5 --duration 1m --mix page=70,similar=20,search=10
  python -m loadtest --config load.toml --out new.json --compare old.json --html report.html
  python -m loadtest --rate 200 --threshold 'p99<50ms' --threshold 'errors<0.1%'
  python -m loadtest --paths targets.txt --rate 3000 --duration 20s   # replay a list of URLs
  python -m loadtest --scenario replay --holdout var/holdout/holdout.csv --replay-users 150 \
      --seed 1 --html replay.html   # held-out users during an experiment: online vs offline

exit codes: 0 pass; 1 a threshold failed or nothing succeeded; 2 bad arguments;
  3 target unreachable; 4 invalid run (the generator fell behind its schedule)
"""


class OneLineParser(argparse.ArgumentParser):
    """Errors are one line (no usage dump): what was wrong and where to read more."""

    def error(self, message: str) -> NoReturn:
        self.exit(EXIT_USAGE, f"{self.prog}: error: {message} (see --help)\n")


def attach_dash_values(parser: argparse.ArgumentParser, argv: Sequence[str]) -> list[str]:
    """``--duration -1s`` -> ``--duration=-1s``: argparse would take ``-1s`` for an option and
    say "expected one argument"; joined, the value reaches its validator and gets a real
    message."""
    takes_value = {o for a in parser._actions for o in a.option_strings if a.nargs is None}
    known = {o for a in parser._actions for o in a.option_strings}
    out: list[str] = []
    i = 0
    while i < len(argv):
        token = argv[i]
        nxt = argv[i + 1] if i + 1 < len(argv) else None
        if token in takes_value and nxt is not None and nxt.startswith("-") and nxt not in known:
            out.append(f"{token}={nxt}")
            i += 2
            continue
        out.append(token)
        i += 1
    return out


def duration(text: str) -> float:
    """Seconds from ``30``, ``30s``, ``1.5m``, ``500ms`` or ``1h``."""
    try:
        return parse_duration(text)
    except ConfigError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def _mix(text: str) -> dict[str, float]:
    try:
        return parse_mix(text)
    except ConfigError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def _user_ids(text: str) -> tuple[int, int]:
    try:
        return parse_user_ids(text)
    except ConfigError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def build_parser() -> argparse.ArgumentParser:
    """Flags default to SUPPRESS so only what the user typed overrides the TOML file."""
    p = OneLineParser(
        prog="python -m loadtest",
        description="Load-test Marquee with realistic traffic and honest percentiles.",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
        argument_default=argparse.SUPPRESS,
    )
    p.add_argument("--config", metavar="FILE.toml", help="TOML file with any of these settings")
    t = p.add_argument_group("target")
    t.add_argument("--base-url", help="web server (default http://127.0.0.1:8080)")
    t.add_argument("--recommender-url", help="recommender API base (default: --base-url)")
    t.add_argument(
        "--catalog-url", help="catalog API base for the popular list (default: --base-url)"
    )
    m = p.add_argument_group("load model (choose one; default --rate 50)")
    m.add_argument("--rate", type=float, help="open model: arrivals per second")
    m.add_argument("--users", type=int, help="closed model: concurrent users")
    m.add_argument(
        "--arrival",
        choices=("constant", "poisson"),
        help="open model arrival spacing (default constant)",
    )
    m.add_argument(
        "--think-time",
        type=duration,
        help="closed model: mean pause between a user's scenarios (default 0)",
    )
    m.add_argument("--ramp-up", type=duration, help="grow the load linearly over this long")
    m.add_argument("--duration", type=duration, help="how long to send (default 10s)")
    m.add_argument("--requests", type=int, help="stop after this many scenarios")
    m.add_argument(
        "--timeout",
        type=duration,
        help="give up on a request this long after it was due (open) or sent (closed); default 10s",
    )
    m.add_argument(
        "--connections",
        type=int,
        help="connection pool size and open-model in-flight cap (default 100)",
    )
    w = p.add_argument_group("workload")
    w.add_argument("--mix", type=_mix, help="weighted scenarios, e.g. page=70,similar=20,search=10")
    w.add_argument(
        "--scenario",
        metavar="NAME",
        help="one scenario alone (same as --mix NAME=1); 'replay' replays held-out users "
        "(needs --holdout)",
    )
    w.add_argument(
        "--popularity",
        choices=("counts", "zipf"),
        help="movie weights: rating counts (default) or Zipf over rank",
    )
    w.add_argument("--zipf-s", type=float, help="Zipf exponent for --popularity zipf (default 1)")
    w.add_argument("--movies", type=int, help="how many popular movies to sample (default 2000)")
    w.add_argument("--user-ids", type=_user_ids, help="logged-in user id range (default 1-610)")
    w.add_argument("--seed", type=int, help="random seed for a repeatable request sequence")
    w.add_argument("--data-dir", help="MovieLens dir used when the catalog is unreachable")
    w.add_argument(
        "--paths",
        metavar="FILE",
        help="replay these request targets (one per line, GET against --base-url) instead "
        "of the scenario mix",
    )
    r = p.add_argument_group("replayed users (--scenario replay)")
    r.add_argument(
        "--holdout",
        metavar="FILE",
        help="the held-out users (python -m recommender holdout --out-dir DIR: DIR/holdout.csv); "
        "each logs in, opens pages of their history and follows a similar movie only if they "
        "went on to like it",
    )
    r.add_argument(
        "--replay-users",
        type=int,
        help="replay this many of the file's users (a seeded sample; default all). --users is "
        "how many at a time (default 8)",
    )
    r.add_argument(
        "--pages-per-user",
        type=int,
        help="history movie pages each user opens, most recent likes first (default 10)",
    )
    r.add_argument(
        "--admin-token",
        help="reads GET /v1/experiments/current for the online CTR per arm "
        "(default: env MARQUEE_ADMIN_TOKEN)",
    )
    r.add_argument(
        "--model-dir",
        help="model registry to read each arm's offline metrics from (default: the server's "
        "GET /v1/models, else /v1/model)",
    )
    r.add_argument(
        "--report-wait",
        type=duration,
        help="how long to wait for the server to count the replay's clicks (default 15s)",
    )
    c = p.add_argument_group("pass/fail")
    c.add_argument(
        "--threshold",
        dest="thresholds",
        action="append",
        metavar="RULE",
        help="e.g. 'p99<50ms', 'errors<0.1%%', 'page:p99.9<200ms', 'rps>=190' (repeatable); "
        "a failed one exits 1",
    )
    c.add_argument(
        "--max-send-lag",
        type=duration,
        help="p99 of the generator's own lateness above which the run is invalid, exit 4 "
        "(default 10ms)",
    )
    o = p.add_argument_group("output")
    o.add_argument("--out", metavar="FILE.json", help="write the results as JSON")
    o.add_argument("--html", metavar="FILE.html", help="write a self-contained HTML report")
    o.add_argument("--compare", metavar="OLD.json", help="show the change vs an earlier run")
    o.add_argument(
        "--compare-anyway",
        action="store_true",
        help="compare even when the old run offered a different load (labelled, not judged)",
    )
    o.add_argument(
        "--progress",
        action=argparse.BooleanOptionalAction,
        help="live progress line on stderr (default: when stderr is a terminal)",
    )
    o.add_argument(
        "--uvloop",
        action=argparse.BooleanOptionalAction,
        help="use uvloop when installed (default yes)",
    )
    return p


def resolve(argv: Sequence[str] | None) -> tuple[RunConfig, dict[str, Any] | None]:
    """Parse and validate; exits with status 2 and one line on any mistake."""
    parser = build_parser()
    raw = list(sys.argv[1:] if argv is None else argv)
    args = vars(parser.parse_args(attach_dash_values(parser, raw)))
    try:
        values = load_toml(args.pop("config")) if "config" in args else {}
        values.update(args)
        if values.get("holdout") and not values.get("admin_token"):
            values["admin_token"] = os.environ.get("MARQUEE_ADMIN_TOKEN") or None
        cfg = build_config(values)
        old = load_results(cfg.compare) if cfg.compare else None
        if old is not None and not cfg.compare_anyway:
            diffs = differences(cfg.to_json(), old.get("config", {}))
            if diffs:
                raise ConfigError(
                    f"--compare {cfg.compare}: that run offered a different load ("
                    + "; ".join(diffs)
                    + "); match it, or add --compare-anyway for a labelled, unjudged comparison"
                )
        for path in (cfg.out, cfg.html):
            if path:
                check_writable(path)
    except ConfigError as exc:
        parser.error(str(exc))
    return cfg, old


def check_writable(path: str) -> None:
    """Fail before the run, not after it, when a result could not be written (a missing folder
    is made)."""
    target = Path(path)
    folder = target.parent
    if target.is_dir():
        raise ConfigError(f"{path} is a directory")
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise ConfigError(f"cannot write {path}: {exc.strerror or exc}") from None
    if not os.access(folder, os.W_OK) or (target.exists() and not os.access(target, os.W_OK)):
        raise ConfigError(f"cannot write {path}: permission denied")


def _run(coro: Coroutine[Any, Any, dict[str, Any]], use_uvloop: bool) -> dict[str, Any]:
    factory = None
    if use_uvloop:
        with contextlib.suppress(ImportError):
            import uvloop

            factory = uvloop.new_event_loop
    with asyncio.Runner(loop_factory=factory) as runner:
        return runner.run(coro)


def exit_code(results: dict[str, Any]) -> int:
    if not results.get("valid", True):
        return EXIT_INVALID
    if results["total"]["ok"] == 0 or any(not t["passed"] for t in results.get("thresholds", [])):
        return EXIT_FAILED
    return EXIT_OK


def main(argv: Sequence[str] | None = None) -> int:
    cfg, old = resolve(argv)
    show_progress = cfg.progress if cfg.progress is not None else sys.stderr.isatty()
    try:
        results = _run(
            run_load(cfg, progress=sys.stderr if show_progress else None, handle_sigint=True),
            cfg.uvloop,
        )
    except TargetUnreachable as exc:
        print(f"loadtest: {exc}", file=sys.stderr)
        return EXIT_UNREACHABLE
    comparison = compare(results, old, forced=cfg.compare_anyway) if old is not None else None
    if comparison is not None:
        results["comparison"] = comparison
    print(summary_table(results))
    checks = thresholds_table(results)
    if checks:
        print()
        print(checks)
    if comparison is not None:
        print()
        print(compare_table(comparison))
    if "replay" in results:
        print()
        print(replay_table(results["replay"]))
    if cfg.out:
        write_json(results, cfg.out)
        print(f"results: {cfg.out}")
    if cfg.html:
        Path(cfg.html).write_text(render_html(results, comparison), encoding="utf-8")
        print(f"report: {cfg.html}")
    if not results["valid"]:
        print("loadtest: INVALID RUN: " + "; ".join(results["invalid_reasons"]), file=sys.stderr)
    return exit_code(results)
