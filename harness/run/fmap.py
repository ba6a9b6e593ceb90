"""A failure map: for each line, the connection count where it collapses, found by a search
(harness/domain/search.py), then the HTTP and database ceilings measured in the same run."""

from __future__ import annotations

from typing import Any

from harness.domain.axes import Verdict
from harness.domain.plan import MapLine, MapPlan
from harness.domain.rules import is_collapse
from harness.domain.search import find_threshold
from harness.infra import pgbench
from harness.run.events import Listener
from harness.run.measure import measure
from harness.run.options import Options
from harness.run.session import session
from harness.store.rundir import RunDir

# Measured once more: the probe failed, not the variant; or a worker went unsampled, so the probe
# can say neither that the variant held nor that it froze.
AGAIN = (Verdict.database_lost, Verdict.load_failed, Verdict.unknown)
PROBE_ESTIMATE_S = 9.0  # start, verify, warm-up, 3 s run, stop; measured on 2 cores
PROBES_PER_LINE = 7


def estimate_s(plan: MapPlan) -> float:
    return len(plan.lines()) * PROBES_PER_LINE * PROBE_ESTIMATE_S + len(plan.servers) * 60


def execute_map(
    run: RunDir, options: Options, entry: dict[str, Any], listener: Listener | None = None
) -> None:
    """Search every line; probes already on record (an earlier, interrupted run) are reused."""
    listener = listener or Listener()
    plan = MapPlan.from_json(run.metadata()["plan"])
    lines = plan.lines()
    ceiling_cells = plan.http_ceiling_cells()
    done = run.records()
    by_id = {r.cell.id: r for r in done}
    cells = [*(line.cell(plan.ceiling) for line in lines), *ceiling_cells]
    pgbench_max = max(plan.ceiling_levels, default=0)
    with session(run, options, cells, entry, listener, pgbench_max) as s:
        for i, line in enumerate(lines):
            position = f"line {i + 1}/{len(lines)}"
            left_s = (len(lines) - i) * PROBES_PER_LINE * PROBE_ESTIMATE_S

            def collapses(
                connections: int, line: MapLine = line, pos: str = position, left: float = left_s
            ) -> bool:
                cell = line.cell(connections)
                if cell.id not in by_id:
                    listener.cell_started(cell, pos, left)
                    by_id[cell.id] = measure(s, cell, done)
                    done.append(by_id[cell.id])
                    if by_id[cell.id].verdict in AGAIN:
                        by_id[cell.id] = measure(s, cell, done, repeat=2)
                        done.append(by_id[cell.id])
                return is_collapse(by_id[cell.id])

            listener.line_searched(line, find_threshold(collapses, plan.start, plan.ceiling))
        for j, cell in enumerate(ceiling_cells):
            if cell.id not in by_id:
                listener.cell_started(cell, f"ceiling {j + 1}/{len(ceiling_cells)}", 0)
                done.append(measure(s, cell, done))
        if s.db is not None:
            for connections in plan.ceiling_levels:
                if not run.ceiling_path(connections).exists():
                    result = pgbench.run(s.db.url, connections, plan.duration_s)
                    run.write_pgbench(result)
                    listener.ceiling_measured(result)
