"""``python -m loadtest``: parse flags (over an optional TOML file), run, report.

Exit codes: 0 run completed; 1 run completed but not one request succeeded (e.g. the system
is down); 2 bad arguments or config.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import sys
from collections.abc import Sequence
from typing import Any

from loadtest.config import (
    SCENARIOS,
    ConfigError,
    build_config,
    load_toml,
    parse_duration,
    parse_mix,
    parse_user_ids,
)
from loadtest.html_report import render_html
from loadtest.report import compare, compare_table, load_results, summary_table, write_json
from loadtest.runner import run_load

EPILOG = f"""\
scenarios: {", ".join(SCENARIOS)}

examples:
  python -m loadtest --rate 200 --duration 30s --html report.html
  python -m loadtest --users 50 --think-time 0.5 --duration 1m --mix page=70,similar=20,search=10
  python -m loadtest --config load.toml --out new.json --compare old.json --html report.html
"""


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
    p = argparse.ArgumentParser(
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
    m.add_argument("--timeout", type=duration, help="per-request timeout (default 10s)")
    m.add_argument(
        "--connections",
        type=int,
        help="connection pool size and open-model in-flight cap (default 100)",
    )
    w = p.add_argument_group("workload")
    w.add_argument("--mix", type=_mix, help="weighted scenarios, e.g. page=70,similar=20,search=10")
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
    o = p.add_argument_group("output")
    o.add_argument("--out", metavar="FILE.json", help="write the results as JSON")
    o.add_argument("--html", metavar="FILE.html", help="write a self-contained HTML report")
    o.add_argument("--compare", metavar="OLD.json", help="show the change vs an earlier run")
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


def resolve(argv: Sequence[str] | None) -> tuple[Any, Any]:
    """Parse and validate; exits with status 2 (argparse style) on any mistake."""
    parser = build_parser()
    args = vars(parser.parse_args(argv))
    try:
        values = load_toml(args.pop("config")) if "config" in args else {}
        values.update(args)
        cfg = build_config(values)
        old = load_results(cfg.compare) if cfg.compare else None
    except ConfigError as exc:
        parser.error(str(exc))
    return cfg, old


def _run(coro: Any, use_uvloop: bool) -> Any:
    factory = None
    if use_uvloop:
        with contextlib.suppress(ImportError):
            import uvloop

            factory = uvloop.new_event_loop
    with asyncio.Runner(loop_factory=factory) as runner:
        return runner.run(coro)


def main(argv: Sequence[str] | None = None) -> int:
    cfg, old = resolve(argv)
    show_progress = cfg.progress if cfg.progress is not None else sys.stderr.isatty()
    results = _run(
        run_load(cfg, progress=sys.stderr if show_progress else None, handle_sigint=True),
        cfg.uvloop,
    )
    comparison = compare(results, old) if old is not None else None
    if comparison is not None:
        results["comparison"] = comparison
    print(summary_table(results))
    if comparison is not None:
        print()
        print(compare_table(comparison))
    if cfg.out:
        write_json(results, cfg.out)
        print(f"results: {cfg.out}")
    if cfg.html:
        with open(cfg.html, "w", encoding="utf-8") as fh:
            fh.write(render_html(results, comparison))
        print(f"report: {cfg.html}")
    return 0 if results["total"]["ok"] > 0 else 1
