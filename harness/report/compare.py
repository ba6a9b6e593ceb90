"""Two runs side by side (`make compare A=... B=...`): for every cell they share, B/A of the
successful req/s with its 95% interval and a verdict, like pyperf's compare_to or benchstat.

Cells are matched on every setting except the one setting the two runs were made to differ in
(for example POOLS=5+10 against POOLS=20+0): a setting with one value in each run and a
different value in each. What would make a comparison meaningless is refused, with the reason.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from harness.domain.cell import Cell, shown
from harness.domain.errors import UsageError
from harness.domain.result import CellResult
from harness.report.comparisons import FACTORS
from harness.report.stats import CellStats, Ratio, by_cell, served, unpaired_ratio
from harness.report.table import md_table
from harness.store.rundir import RunDir

# Settings two runs must share for their cells to be comparable at all.
SAME_OPTIONS = ("warmup_s", "wrk_timeout_s", "wrk_runner")
SAME_MACHINE = ("cpu_model", "cpu_count")


FIELDS = ("target", "app", "sent", "workload", "duration_s", *FACTORS, "connections", "rate")
MUST_MATCH = ("duration_s", "rows")
LABELS = {
    "name": "server",
    "style": "session style",
    "pool_timeout_s": "pool timeout (s)",
    "db_latency": "database latency",
}


@dataclass(frozen=True)
class Compared:
    """Two runs compared: the page, the same rows as JSON, and what FAIL_ON=regression fails on
    (B significantly slower than A in a cell, or collapsed where A served; for two maps, a
    threshold whose bracket in B lies wholly below A's)."""

    markdown: str
    data: dict[str, Any]
    regressions: tuple[str, ...]
    unjudged: tuple[str, ...] = ()  # cells with one measurement a side: no interval to judge


def _ratio_json(ratio: Ratio | None) -> dict[str, Any] | None:
    if ratio is None:
        return None
    low, high = (ratio.interval.low, ratio.interval.high) if ratio.interval else (None, None)
    return {"value": ratio.value, "low": low, "high": high, "n": ratio.n}


def _side_json(c: CellStats, values: list[float]) -> dict[str, Any]:
    return {"median_rps": c.median_rps, "verdict": c.verdict, "served_rps": values}


def _refusals(a: RunDir, b: RunDir) -> list[str]:
    out = []
    ma, mb = a.metadata(), b.metadata()
    for key in SAME_OPTIONS:
        if ma["options"].get(key) != mb["options"].get(key):
            out.append(f"{key}: {ma['options'].get(key)} in A, {mb['options'].get(key)} in B")
    machine_a = ma["provenance"][0].get("machine", {}) if ma["provenance"] else {}
    machine_b = mb["provenance"][0].get("machine", {}) if mb["provenance"] else {}
    for key in SAME_MACHINE:
        if machine_a.get(key) != machine_b.get(key):
            out.append(f"machine {key}: {machine_a.get(key)} in A, {machine_b.get(key)} in B")
    return out


def compared_factors(ra: Sequence[CellResult], rb: Sequence[CellResult]) -> list[str]:
    """Settings with one value in each run, different between the runs."""
    out = []
    for field in FIELDS:
        va = {r.cell.known(field) for r in ra}
        vb = {r.cell.known(field) for r in rb}
        if len(va) == len(vb) == 1 and va != vb:
            out.append(field)
    return out


def _verdict(ratio: Ratio) -> str:
    if ratio.interval is None:
        return "no interval (one measurement)"
    if not ratio.significant:
        return "no significant difference"
    return "B faster" if ratio.value > 1 else "B slower"


def _side(c: CellStats) -> tuple[str, list[float]]:
    values = [v for r in c.records if (v := served(r)) is not None]
    text = f"{c.median_rps:,.1f}" if c.median_rps is not None else "-"
    return f"{text} ({c.verdict})", values


@dataclass(frozen=True)
class _Pair:
    """One cell both runs measured: its table row, its JSON, and what FAIL_ON judges in it."""

    row: list[str]
    data: dict[str, Any]
    regressions: list[str]
    unjudged: str | None  # the cell, where its ratio has no interval
    log: float | None  # the logarithm of a significant B/A


def _pair(ca: CellStats, cb: CellStats) -> _Pair:
    text_a, values_a = _side(ca)
    text_b, values_b = _side(cb)
    ratio = unpaired_ratio(values_a, values_b)
    cell = ca.cell
    where = f"{cell.variant} at {cell.level_text}"
    regressions = []
    if cb.frozen and not ca.frozen and values_a:
        regressions.append(f"{where}: collapsed in {cb.frozen} of {cb.n} rounds in B, in none in A")
    if ratio is None:
        verdict, shown_ratio = "a side did not serve (collapsed or failed)", "-"
        if values_a and not values_b and not cb.frozen:
            regressions.append(f"{where}: failed in B, served in A")
    else:
        verdict, shown_ratio = _verdict(ratio), ratio.describe().removeprefix("~ ")
        shown_ratio = shown_ratio.removesuffix(", no significant difference")
        if verdict == "B slower":
            regressions.append(f"{where}: B / A {ratio.describe()}")
    return _Pair(
        row=[cell.variant, cell.level_short, text_a, text_b, shown_ratio, verdict],
        data={
            "variant": cell.variant,
            "connections": cell.connections,
            "rate": cell.rate,
            "a": _side_json(ca, values_a),
            "b": _side_json(cb, values_b),
            "b_over_a": _ratio_json(ratio),
            "verdict": verdict,
        },
        regressions=regressions,
        unjudged=where if ratio is not None and ratio.interval is None else None,
        log=math.log(ratio.value) if ratio is not None and ratio.significant else None,
    )


def compare(a: RunDir, b: RunDir) -> Compared:
    if a.kind == "map" and b.kind == "map":
        from harness.report.brackets import compare_maps  # two maps compare their thresholds

        return compare_maps(a, b)
    if refused := _refusals(a, b):
        raise UsageError("COMPARE: the runs were not measured alike: " + "; ".join(refused))
    ra, rb = a.records(), b.records()
    factors = compared_factors(ra, rb)
    if bad := [f for f in factors if f in MUST_MATCH]:
        raise UsageError(
            "COMPARE: the runs differ in "
            + ", ".join(bad)
            + ", which changes what one request costs; compare runs that share it"
        )
    key_fields = [f for f in FIELDS if f not in factors]

    def key(c: Cell) -> tuple[Any, ...]:
        return tuple(c.known(f) for f in key_fields)

    cells_a = {key(c.cell): c for c in by_cell(ra)}
    cells_b = {key(c.cell): c for c in by_cell(rb)}
    shared = [k for k in cells_a if k in cells_b]
    if not shared:
        raise UsageError("COMPARE: the runs share no cell (same settings but the one compared)")
    in_order = sorted(shared, key=lambda k: (cells_a[k].cell.variant, cells_a[k].cell.level_key))
    pairs = [_pair(cells_a[k], cells_b[k]) for k in in_order]
    rows = [p.row for p in pairs]
    logs = [p.log for p in pairs if p.log is not None]
    regressions = [line for p in pairs for line in p.regressions]
    unjudged = [p.unjudged for p in pairs if p.unjudged is not None]
    described = ", ".join(
        f"{LABELS.get(f, f)} {shown(ra[0].cell.known(f))} (A) against "
        f"{shown(rb[0].cell.known(f))} (B)"
        for f in factors
    )
    head = ["cell (A's settings)", "conns", "A req/s", "B req/s", "B / A [95% CI]", "verdict"]
    lines = [
        f"# B / A: `{b.path.name}` over `{a.path.name}`",
        "",
        f"Compared: {described or 'the same settings (two runs of one matrix)'}. "
        f"{len(shared)} cells in both runs; successful req/s, median of each cell's measurements "
        "(verdicts in brackets); B/A is the ratio of geometric means of the measurements that "
        "did not collapse, with a 95% Welch t interval on their logarithms.",
        "",
        md_table(head, rows, ["---", "---:", "---:", "---:", "---:", "---"]),
    ]
    faster = sum(v > 0 for v in logs)
    lines.append(
        f"{faster} cells significantly faster in B, {len(logs) - faster} slower, "
        f"{len(shared) - len(logs)} without a significant difference or not served."
    )
    data = {
        "kind": "run",
        "a": str(a.path),
        "b": str(b.path),
        "compared": {f: [shown(ra[0].cell.known(f)), shown(rb[0].cell.known(f))] for f in factors},
        "interval": "95% Welch t on the logarithms of successful req/s",
        "cells": [p.data for p in pairs],
    }
    return Compared("\n".join(lines) + "\n", data, tuple(regressions), tuple(unjudged))
