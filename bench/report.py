"""Benchmark results: one :class:`BenchResult` per benchmark, printed as an aligned text table and
as one JSON line (so runs can be diffed and compared by machines), and saved together in
``var/bench/latest.json``."""

from __future__ import annotations

import math
import platform
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import orjson


@dataclass(frozen=True)
class Column:
    key: str
    header: str
    fmt: str = "{:.1f}"  # applied to numbers; text is shown as is


@dataclass(frozen=True)
class Target:
    """A goal from the issue, checked against a measured value."""

    name: str
    value: float | None
    limit: float
    op: str  # "<=" | ">="

    @property
    def met(self) -> bool | None:
        if self.value is None or (isinstance(self.value, float) and math.isnan(self.value)):
            return None
        return self.value <= self.limit if self.op == "<=" else self.value >= self.limit

    def to_dict(self) -> dict:
        return {**asdict(self), "met": self.met}

    def describe(self) -> str:
        verdict = {True: "MET", False: "MISSED", None: "n/a"}[self.met]
        shown = "n/a" if self.value is None else f"{self.value:.4g}"
        return f"{verdict:6} {self.name}: {shown} (target {self.op} {self.limit:g})"


@dataclass
class BenchResult:
    bench: str
    title: str
    columns: list[Column]
    rows: list[dict[str, Any]] = field(default_factory=list)
    targets: list[Target] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    extra: dict[str, Any] = field(default_factory=dict)
    seconds: float = 0.0

    def to_dict(self) -> dict:
        return {
            "bench": self.bench,
            "title": self.title,
            "rows": self.rows,
            "targets": [t.to_dict() for t in self.targets],
            "notes": self.notes,
            "seconds": round(self.seconds, 2),
            **self.extra,
        }


def _cell(value: Any, fmt: str) -> str:
    if value is None:
        return "-"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, int | float):
        if isinstance(value, float) and math.isnan(value):
            return "-"
        return fmt.format(value)
    return str(value)


def table(result: BenchResult) -> str:
    """The result as aligned text: a title, a header row, one line per case, targets, notes."""
    if not result.columns:
        lines = [f"== {result.title} ({result.bench}) =="]
        return "\n".join([*lines, *(f"  note: {n}" for n in result.notes)])
    headers = [c.header for c in result.columns]
    body = [[_cell(row.get(c.key), c.fmt) for c in result.columns] for row in result.rows]
    widths = [
        max(len(h), *(len(r[i]) for r in body)) if body else len(h) for i, h in enumerate(headers)
    ]

    def line(cells: list[str]) -> str:
        first = cells[0].ljust(widths[0])
        rest = [c.rjust(w) for c, w in zip(cells[1:], widths[1:], strict=True)]
        return "  ".join([first, *rest]).rstrip()

    out = [f"== {result.title} ({result.bench}, {result.seconds:.0f} s) ==", line(headers)]
    out.append("  ".join("-" * w for w in widths))
    out.extend(line(r) for r in body)
    out.extend(f"  target {t.describe()}" for t in result.targets)
    out.extend(f"  note: {n}" for n in result.notes)
    return "\n".join(out)


def json_line(result: BenchResult) -> str:
    return orjson.dumps(result.to_dict(), option=orjson.OPT_SERIALIZE_NUMPY).decode()


def environment() -> dict:
    import os

    return {
        "python": platform.python_version(),
        "machine": platform.machine(),
        "cpus": os.cpu_count(),
        "cpus_usable": len(os.sched_getaffinity(0)),
        "kernel": platform.release(),
        "when": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }


def write_results(results: list[BenchResult], path: Path, meta: dict) -> None:
    """All results of a run in one JSON document (the previous file is replaced atomically)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    doc = {"meta": meta, "results": [r.to_dict() for r in results]}
    tmp = path.with_suffix(".tmp")
    tmp.write_bytes(orjson.dumps(doc, option=orjson.OPT_INDENT_2 | orjson.OPT_SERIALIZE_NUMPY))
    tmp.replace(path)
