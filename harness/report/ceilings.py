"""The ceilings measured beside the apps: each server's /health (HTTP alone, the async app's)
and pgbench running the /users query (the database alone), at each connection level."""

from __future__ import annotations

from collections.abc import Sequence

from harness.domain.axes import Workload
from harness.domain.result import CellResult, PgbenchResult
from harness.report.stats import by_cell
from harness.report.table import md_table

TEXT = (
    "What the machine allows without the sync/async question, measured in the same run: the "
    "async app's `/health` on each server (HTTP and the event loop, no database; the median of "
    "its measurements) and pgbench running the `/users` query straight against PostgreSQL (no "
    "HTTP, no Python), at the same connection counts."
)


def health(records: Sequence[CellResult]) -> dict[tuple[str, int], float]:
    """The HTTP ceiling: the median /health req/s per (server, connections)."""
    return {
        (str(c.cell.known("name")), c.cell.connections): c.median_rps
        for c in by_cell(r for r in records if r.cell.workload is Workload.health)
        if c.median_rps is not None
    }


def table(
    servers: Sequence[str],
    levels: Sequence[int],
    records: Sequence[CellResult],
    pg: Sequence[PgbenchResult],
) -> str:
    """The ceilings at each level: each server's /health (the median of its measurements) and
    pgbench."""
    head = [
        "connections",
        *(f"{s} /health req/s" for s in servers),
        "pgbench tps (the /users query)",
        "pgbench latency ms",
    ]
    http = health(records)
    by_pg = {p.connections: p for p in pg}
    rows = []
    for c in levels:
        cells = []
        for s in servers:
            rps = http.get((s, c))
            cells.append(f"{rps:,.1f}" if rps is not None else "-")
        p = by_pg.get(c)
        cells += [f"{p.tps:,.0f}" if p else "-", f"{p.latency_avg_ms:.2f}" if p else "-"]
        rows.append([str(c), *cells])
    return md_table(head, rows, ["---:"] * len(head))
