"""A bench run: every (cell, round) of the run's schedule that has no record yet, in order."""

from __future__ import annotations

from typing import Any

from harness.domain.cell import Cell
from harness.domain.plan import schedule
from harness.domain.result import CellResult, record_key
from harness.domain.rules import order
from harness.infra import pgbench
from harness.run.events import Listener
from harness.run.measure import measure
from harness.run.options import Options
from harness.run.session import session
from harness.store.rundir import RunDir


def planned(run: RunDir) -> list[Cell]:
    return order([Cell.from_json(c) for c in run.metadata()["cells"]])


def measurements(run: RunDir) -> list[tuple[Cell, int]]:
    """Every measurement the run plans: each cell, REPEATS times, interleaved."""
    plan = run.metadata()["schedule"]
    return schedule(planned(run), plan["repeats"], plan["seed"])


def remaining(run: RunDir) -> list[tuple[Cell, int]]:
    done = {r.key for r in run.records()}
    return [(c, n) for c, n in measurements(run) if record_key(c, n) not in done]


def execute(
    run: RunDir, options: Options, entry: dict[str, Any], listener: Listener | None = None
) -> list[CellResult]:
    """Run every measurement of `run` that has no record yet; write each record at once."""
    listener = listener or Listener()
    done = run.records()
    todo = remaining(run)
    levels = run.metadata().get("pgbench_levels", [])  # WITH_CEILINGS: the database ceiling
    with session(run, options, planned(run), entry, listener, max(levels, default=0)) as s:
        for i, (cell, round_) in enumerate(todo):
            left = sum(options.estimate_s(c, r) for c, r in todo[i:])
            listener.cell_started(cell, f"{i + 1}/{len(todo)}", left, round_)
            done.append(measure(s, cell, done, round_))
        if s.db is not None:
            duration = planned(run)[0].duration_s
            for connections in levels:
                if not run.ceiling_path(connections).exists():
                    result = pgbench.run(s.db.url, connections, duration)
                    run.write_pgbench(result)
                    listener.ceiling_measured(result)
    return done
