"""What each layer costs (a run with LAYERS=orm,core,driver): every variant against the same
variant through the driver alone (paired ratios with 95% intervals, as the comparisons give
them), and against the ceilings measured in the same run (WITH_CEILINGS): the async app's
/health on the same server, and pgbench running the /users query."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from harness.domain.axes import Layer, Workload
from harness.domain.cell import Cell, shown
from harness.domain.result import CellResult, PgbenchResult
from harness.report import ceilings, comparisons
from harness.report.stats import CellStats, Ratio, by_cell
from harness.report.table import md_table


def varies(records: Sequence[CellResult]) -> bool:
    return (
        len({r.cell.known("layer") for r in records if r.cell.workload is not Workload.health}) > 1
    )


def _label(cell: Cell) -> str:
    return (
        f"{cell.server_label} {cell.mode} {shown(cell.driver)} {shown(cell.known('layer'))} "
        f"{shown(cell.known('style'))} {cell.workload}"
    )


@dataclass(frozen=True)
class Row:
    cell: CellStats
    ratio: Ratio | str | None  # over the driver alone; None for the driver alone itself
    http: float | None  # the HTTP ceiling at this level, req/s
    pg: float | None  # pgbench at this level, tps


def rows(records: Sequence[CellResult], pg: Sequence[PgbenchResult]) -> list[Row]:
    """Every measured variant at every level, with its ratio to the driver alone."""
    cells = by_cell(records)
    http = ceilings.health(records)
    by_pg = {p.connections: p.tps for p in pg}
    against = {
        comparisons.signature(c.b): c
        for c in comparisons.comparisons(records)
        if c.factor == "layer" and c.a.known("layer") is Layer.driver
    }
    out = []
    for c in sorted(cells, key=lambda c: (_order(c.cell), c.cell.level_key)):
        if c.cell.workload is Workload.health or c.cell.rate is not None:
            continue  # an open loop's throughput is its rate: nothing to set beside a ceiling
        found = against.get(comparisons.signature(c.cell))
        ratio = comparisons.at_level(found, records, c.cell.connections) if found else None
        level = c.cell.connections
        out.append(Row(c, ratio, http.get((str(c.cell.known("name")), level)), by_pg.get(level)))
    return out


def _order(cell: Cell) -> tuple[object, ...]:
    """A variant's layers together, the driver alone first."""
    k = cell.known
    same = (shown(k("name")), cell.mode, shown(cell.driver), shown(k("style")), cell.workload)
    return (*same, comparisons.rank("layer", k("layer")))


def _share(rps: float | None, ceiling: float | None) -> str:
    return f"{rps / ceiling:.0%}" if rps and ceiling else "-"


def table(records: Sequence[CellResult], pg: Sequence[PgbenchResult]) -> str:
    head = [
        "variant",
        "connections",
        "req/s (median)",
        "× the driver alone [95% CI]",
        "% of /health",
        "% of pgbench",
        "verdict",
    ]
    lines = []
    for row in rows(records, pg):
        ratio = row.ratio
        text = "-" if ratio is None else ratio if isinstance(ratio, str) else ratio.describe()
        median = row.cell.median_rps
        lines.append(
            [
                _label(row.cell.cell),
                str(row.cell.cell.connections),
                f"{median:,.1f}" if median is not None else "-",
                "1 (itself)" if row.cell.cell.known("layer") is Layer.driver else text,
                _share(median, row.http),
                _share(median, row.pg),
                row.cell.verdict,
            ]
        )
    return md_table(head, lines, ["---", "---:", "---:", "---", "---:", "---:", "---"])


TEXT = (
    "Each variant beside the same variant through the driver alone (its own pool, no "
    "SQLAlchemy): B / A of successful req/s measured in the same rounds, with a 95% interval "
    "(a ratio below 1: the layer served less); and its median as a share of the ceilings "
    "measured in this run (WITH_CEILINGS): the async app's `/health` on the same server (HTTP "
    "alone) and pgbench running the same `/users` query (the database alone)."
)


def section(records: Sequence[CellResult], pg: Sequence[PgbenchResult]) -> str:
    if not varies(records):
        return ""
    return "## Layers\n\n" + TEXT + "\n\n" + table(records, pg)
