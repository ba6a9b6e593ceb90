"""A bench run: every cell of the run's matrix that has no record yet, in order."""

from __future__ import annotations

from typing import Any

from harness.domain.cell import Cell
from harness.domain.result import CellResult
from harness.domain.rules import order
from harness.run.events import Listener
from harness.run.measure import measure
from harness.run.options import Options
from harness.run.session import session
from harness.store.rundir import RunDir


def planned(run: RunDir) -> list[Cell]:
    return order([Cell.from_json(c) for c in run.metadata()["cells"]])


def remaining(run: RunDir) -> list[Cell]:
    done = {r.cell.id for r in run.records()}
    return [c for c in planned(run) if c.id not in done]


def execute(
    run: RunDir, options: Options, entry: dict[str, Any], listener: Listener | None = None
) -> list[CellResult]:
    """Run every cell of `run` that has no record yet; write each record the moment it exists."""
    listener = listener or Listener()
    cells = planned(run)
    done = run.records()
    todo = remaining(run)
    with session(run, options, cells, entry, listener) as s:
        for i, cell in enumerate(todo):
            left = sum(options.estimate_s(c) for c in todo[i:])
            listener.cell_started(cell, f"{i + 1}/{len(todo)}", left)
            done.append(measure(s, cell, done))
    return done
