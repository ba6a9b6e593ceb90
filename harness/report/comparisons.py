"""Within one run: every pair of variants that differ in one setting (async vs sync, context vs
dependency, one server vs another, ...), compared at each connection level as B/A over the
measurements of the same rounds."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from harness.domain.axes import (
    FROZEN,
    Driver,
    Layer,
    Mode,
    ServerName,
    SessionStyle,
    Stack,
)
from harness.domain.cell import Cell, shown
from harness.domain.result import CellResult
from harness.report.stats import Ratio, paired_ratio, served
from harness.report.table import md_table

# The settings a comparison may vary, each with the order that decides which side is A.
FACTORS: dict[str, Any] = {
    "mode": list(Mode),
    "driver": list(Driver),
    # The driver alone is A: each layer is stated as a multiple of what the driver alone served.
    "layer": [Layer.driver, Layer.core, Layer.orm],
    "style": list(SessionStyle),
    "name": list(ServerName),
    "pool": lambda p: (p.capacity, p.size),
    "tokens": int,
    "workers": int,
    "stack": list(Stack),
    "pool_timeout_s": float,
    "occupancy": int,  # not sampled (A) against sampled (B): what the side channel costs
    "rows": int,
    "db_latency": lambda latency: (latency.relay, latency.ms),
}
INTERVAL = (
    "B/A: the geometric mean of the ratios of measurements taken in the same round, with a 95% "
    "t interval on their logarithms"
)
# How a factor's values read in a comparison's label, where their own text says too little.
VALUE_LABELS: dict[str, dict[Any, str]] = {
    "occupancy": {True: "side channel sampled", False: "side channel off"}
}


def rank(factor: str, value: Any) -> Any:
    order = FACTORS[factor]
    return order.index(value) if isinstance(order, list) else order(value)


def _key(cell: Cell, factor: str) -> Any:
    """A setting as comparisons match it. Each mode has its own default driver (psycopg2,
    asyncpg): those count as one value, so sync and async on their default drivers differ in
    the mode only, as they always did; psycopg (both modes) is a value of its own."""
    if factor == "driver" and cell.default_driver:
        return "default"
    return cell.known(factor)


def signature(cell: Cell) -> tuple[Any, ...]:
    return (cell.target, cell.workload, *(_key(cell, f) for f in FACTORS))


def _context(a: Cell, b: Cell, factor: str) -> str:
    """A setting the two share, as words (the default drivers: each side's, B's first)."""
    names = VALUE_LABELS.get(factor, {})
    x, y = (names.get(v, shown(v)) for v in (a.known(factor), b.known(factor)))
    return x if x == y else f"{y}/{x}"


@dataclass(frozen=True)
class Comparison:
    factor: str
    a: Cell  # any cell of the A variant (its connection count is not used)
    b: Cell
    context: str  # what the two share, among the settings that vary in the run

    @property
    def label(self) -> str:
        names = VALUE_LABELS.get(self.factor, {})
        a, b = (
            names.get(v, shown(v)) for v in (self.a.known(self.factor), self.b.known(self.factor))
        )
        return f"{b} / {a}" + (f" · {self.context}" if self.context else "")


def comparisons(records: Sequence[CellResult]) -> list[Comparison]:
    """Every pair of variants in the records that differ in exactly one setting, under wrk's
    closed loop: an open loop's throughput is the rate it was given, not the variant's."""
    variants: dict[tuple[Any, ...], Cell] = {}
    for r in (r for r in records if r.cell.rate is None):
        variants.setdefault(signature(r.cell), r.cell)
    cells = list(variants.values())
    varying = [f for f in FACTORS if len({_key(c, f) for c in cells}) > 1]
    out = []
    for i, x in enumerate(cells):
        for y in cells[i + 1 :]:
            if (x.target, x.workload) != (y.target, y.workload):
                continue
            differ = [f for f in FACTORS if _key(x, f) != _key(y, f)]
            if len(differ) != 1:
                continue
            (factor,) = differ
            a, b = sorted((x, y), key=lambda c: rank(factor, c.known(factor)))
            context = " ".join(_context(a, b, f) for f in varying if f != factor) + (
                "" if len({c.workload for c in cells}) == 1 else f" {a.workload}"
            )
            out.append(Comparison(factor, a, b, context.strip()))
    return sorted(out, key=lambda c: (list(FACTORS).index(c.factor), c.label))


def _side(records: Sequence[CellResult], cell: Cell, connections: int) -> list[CellResult]:
    return [
        r
        for r in records
        if signature(r.cell) == signature(cell)
        and r.cell.rate is None
        and r.cell.connections == connections
    ]


def at_level(
    comparison: Comparison, records: Sequence[CellResult], connections: int
) -> Ratio | str | None:
    """B/A at one level, or why there is none (a side collapsed); None if not measured."""
    a = {r.repeat: r for r in _side(records, comparison.a, connections)}
    b = {r.repeat: r for r in _side(records, comparison.b, connections)}
    if not a or not b:
        return None
    collapsed = [
        f"{shown(side.known(comparison.factor))} collapsed {n}/{len(rs)}"
        for side, rs in ((comparison.a, a), (comparison.b, b))
        if (n := sum(r.verdict in FROZEN for r in rs.values()))
    ]
    pairs = [
        (sa, sb)
        for k in sorted(set(a) & set(b))
        if (sa := served(a[k])) is not None and (sb := served(b[k])) is not None
    ]
    if not pairs:
        return "; ".join(collapsed) or "no pair served"
    ratio = paired_ratio([x for x, _ in pairs], [y for _, y in pairs])
    return (
        ratio if not collapsed else f"{ratio.describe() if ratio else ''} ({'; '.join(collapsed)})"
    )


def json_data(records: Sequence[CellResult]) -> list[dict[str, Any]]:
    """The comparisons table as JSON (comparisons.json beside summary.md): each comparison at
    each level, B/A with its 95% interval, or why there is none."""
    out = []
    for comparison in comparisons(records):
        levels = []
        for level in sorted({r.cell.connections for r in records if r.cell.rate is None}):
            value = at_level(comparison, records, level)
            if value is None:
                continue
            ratio = value if isinstance(value, Ratio) else None
            interval = ratio.interval if ratio else None
            levels.append(
                {
                    "connections": level,
                    "b_over_a": ratio.value if ratio else None,
                    "low": interval.low if interval else None,
                    "high": interval.high if interval else None,
                    "pairs": ratio.n if ratio else 0,
                    "significant": ratio.significant if ratio else False,
                    "text": value if isinstance(value, str) else value.describe(),
                }
            )
        out.append(
            {
                "label": comparison.label,
                "factor": comparison.factor,
                "a": comparison.a.variant,
                "b": comparison.b.variant,
                "levels": levels,
            }
        )
    return out


def table(records: Sequence[CellResult]) -> str:
    """One row per comparison, one column per connection level; '' when there is none."""
    found = comparisons(records)
    if not found:
        return ""
    levels = sorted({r.cell.connections for r in records if r.cell.rate is None})
    rows = []
    for comparison in found:
        row = [comparison.label]
        for level in levels:
            value = at_level(comparison, records, level)
            row.append(
                "" if value is None else value if isinstance(value, str) else value.describe()
            )
        rows.append(row)
    head = ["B / A", *(f"{c} conns" for c in levels)]
    return md_table(head, rows, ["---"] * len(head))
