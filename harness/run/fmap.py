"""A failure map: for each line and each onset, the connection count where it collapses, with
its uncertainty, then the HTTP and database ceilings measured in the same run.

`cold` (and `fresh`, the way maps were measured before onsets): a search over fresh servers
(harness/domain/search.py), doubling then bisecting, then the bracket's edges probed again
(`confirm`). `warm`: ramps, each one server whose load is raised level by level: a first ramp
doubling from the start, then `boundary_probes` ramps in steps of 10% through the first one's
bracket. Every probe's record is written as it is measured; a resumed map reuses them all (an
interrupted ramp's levels count, and a new ramp replaces it).
"""

from __future__ import annotations

from functools import partial
from typing import Any

from harness.domain.axes import Onset, Verdict
from harness.domain.plan import MapLine, MapPlan
from harness.domain.result import CellResult, Ramp
from harness.domain.rules import NO_ANSWER, is_collapse, probe_counts
from harness.domain.search import (
    Threshold,
    bracket_counts,
    confirm,
    find_threshold,
    resolution,
)
from harness.infra import pgbench
from harness.run.events import Listener
from harness.run.measure import measure, measure_ramp
from harness.run.options import Options
from harness.run.session import Session, session
from harness.store.rundir import RunDir

PROBE_ESTIMATE_S = 9.0  # start, verify, warm-up, 3 s run, stop; measured on 2 cores
PROBES_PER_LINE = 7  # a search's probes, before its edges are probed again
# A warm level: the pause, the wait for the server to empty, a 3 s run; measured on 2 cores.
LEVEL_ESTIMATE_S = 4.5
LEVELS_PER_RAMP = 7
# A search's measurements of one level before it counts as not holding without an answer.
SEARCH_ATTEMPTS = 2
# Probes more, at most, to bring a bracket's edges to their answers (harness/domain/search.py).
CONFIRM_BUDGET = 12
# Ramps started for one ladder before its line is given up on: some are cut short (wrk or the
# database failed, the server did not start) and replaced, but not forever.
SPARE_RAMPS = 2


def line_estimate_s(plan: MapPlan) -> float:
    """One line, every onset: the search and its edges probed again, or the ramps."""
    out = 0.0
    for onset in plan.onsets:
        if onset is Onset.warm:
            out += (1 + plan.boundary_probes) * (LEVELS_PER_RAMP * LEVEL_ESTIMATE_S + 3)
        else:
            out += (PROBES_PER_LINE + 2 * (plan.boundary_probes - 1)) * PROBE_ESTIMATE_S
    return out


def estimate_s(plan: MapPlan) -> float:
    return len(plan.lines()) * line_estimate_s(plan) + len(plan.servers) * 60


def execute_map(
    run: RunDir, options: Options, entry: dict[str, Any], listener: Listener | None = None
) -> None:
    """Search every line; probes already on record (an earlier, interrupted run) are reused."""
    listener = listener or Listener()
    plan = MapPlan.from_json(run.metadata()["plan"])
    lines = plan.lines()
    ceiling_cells = plan.http_ceiling_cells()
    done = run.records()
    cells = [
        *(line.cell(plan.ceiling, onset) for line in lines for onset in plan.onsets),
        *ceiling_cells,
    ]
    pgbench_max = max(plan.ceiling_levels, default=0)
    with session(run, options, cells, entry, listener, pgbench_max) as s:
        for i, line in enumerate(lines):
            left_s = (len(lines) - i) * line_estimate_s(plan)
            for onset in plan.onsets:
                position = f"line {i + 1}/{len(lines)}, {onset}"
                if onset is Onset.warm:
                    found = _ramps(s, plan, line, done, position, left_s)
                else:
                    found = _search(s, plan, line, onset, done, position, left_s)
                listener.line_searched(line, found, onset)
        by_id = {r.cell.id for r in done}
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


def _of(line: MapLine, onset: Onset, done: list[CellResult]) -> list[CellResult]:
    variant = line.variant_of(onset)
    return [r for r in done if r.cell.variant == variant]


def _search(
    s: Session,
    plan: MapPlan,
    line: MapLine,
    onset: Onset,
    done: list[CellResult],
    position: str,
    left_s: float,
) -> Threshold:
    """Bracket the threshold with one probe per level, then probe its edges again."""

    def at(connections: int) -> list[CellResult]:
        return [r for r in _of(line, onset, done) if r.cell.connections == connections]

    def probe(connections: int) -> CellResult:
        repeat = 1 + max((r.repeat for r in at(connections)), default=0)
        cell = line.cell(connections, onset)
        s.listener.cell_started(cell, position, left_s, repeat)
        done.append(measure(s, cell, done, repeat))
        return done[-1]

    def collapses(connections: int) -> bool:
        """The search's answer at a level: its first probe that answered (a resumed search
        replays it); a level measured twice without an answer counts as not holding."""
        while True:
            mine = sorted(at(connections), key=lambda r: r.repeat)
            answered = [r for r in mine if r.verdict not in NO_ANSWER]
            if answered:
                return is_collapse(answered[0])
            if len(mine) >= SEARCH_ATTEMPTS:
                return True
            probe(connections)

    find_threshold(collapses, plan.start, plan.ceiling)

    def again(connections: int) -> bool | None:
        result = probe(connections)
        return None if result.verdict in NO_ANSWER else is_collapse(result)

    mine = _of(line, onset, done)
    found = bracket_counts(probe_counts(mine), plan.ceiling)
    if plan.boundary_probes <= 1:
        return found
    # What an interrupted confirmation already spent (every probe after a level's first).
    spent = len(mine) - len({r.cell.connections for r in mine})
    return confirm(
        found, again, repeats=plan.boundary_probes, budget=max(0, CONFIRM_BUDGET - spent)
    )


def _ramps(
    s: Session, plan: MapPlan, line: MapLine, done: list[CellResult], position: str, left_s: float
) -> Threshold:
    """A first ramp doubling from the start, then `boundary_probes` ramps through its bracket;
    the threshold is read from every level of every ramp."""
    coarse = plan.coarse_ladder()
    ramp = partial(_ramp, s, plan, line, done=done, position=position, left_s=left_s)
    while (first := _finished_ramp(line, done, coarse)) is None:
        if len(_ramps_of(line, done, coarse)) >= 1 + SPARE_RAMPS:
            s.listener.notice(f"{line.variant_of(Onset.warm)}: no ramp ran to its end; given up")
            return _warm_threshold(plan, line, done)
        ramp(coarse, step=0)
    # Its last level that held below its first that collapsed (levels without an answer are
    # neither); the other ramps step through the bracket above it.
    answered = [r for r in first if r.verdict not in NO_ANSWER]
    froze = min((r.cell.connections for r in answered if is_collapse(r)), default=None)
    held = [r.cell.connections for r in answered if not is_collapse(r)]
    top = max((c for c in held if froze and c < froze), default=None)
    fine = plan.fine_ladder(top, froze)
    while _finished_ramps(line, done, fine) < plan.boundary_probes:
        if len(_ramps_of(line, done, fine)) >= plan.boundary_probes + SPARE_RAMPS:
            s.listener.notice(f"{line.variant_of(Onset.warm)}: too many ramps cut short; given up")
            break
        ramp(fine, step=resolution(top) if top else 0)
    return _warm_threshold(plan, line, done)


def _warm_threshold(plan: MapPlan, line: MapLine, done: list[CellResult]) -> Threshold:
    return bracket_counts(probe_counts(_of(line, Onset.warm, done)), plan.ceiling)


def _ramp(
    s: Session,
    plan: MapPlan,
    line: MapLine,
    ladder: tuple[int, ...],
    step: int,
    done: list[CellResult],
    position: str,
    left_s: float,
) -> list[CellResult]:
    number = 1 + max((r.repeat for r in _of(line, Onset.warm, done)), default=0)
    cells = [line.cell(c, Onset.warm) for c in ladder]
    s.listener.cell_started(cells[0], f"{position} ramp {number}", left_s, number)
    return measure_ramp(s, cells, Ramp(ladder, step, plan.pause_s), number, done)


def _ramps_of(
    line: MapLine, done: list[CellResult], ladder: tuple[int, ...]
) -> list[list[CellResult]]:
    by_number: dict[int, list[CellResult]] = {}
    for r in _of(line, Onset.warm, done):
        if r.ramp is not None and r.ramp.ladder == ladder:
            by_number.setdefault(r.repeat, []).append(r)
    return [sorted(rs, key=lambda r: r.cell.connections) for _, rs in sorted(by_number.items())]


def _ended(ramp: list[CellResult]) -> bool:
    """The ramp ran to its end: a level that did not hold, or the ladder's last level. One that
    ended where wrk or the database failed, or whose server did not start, was cut short, and
    another ramp replaces it; an `unknown` level neither held nor froze, and the ramp went on."""
    last = ramp[-1]
    assert last.ramp is not None
    if last.verdict in NO_ANSWER:
        return last.verdict is Verdict.unknown and last.cell.connections == last.ramp.ladder[-1]
    return is_collapse(last) or last.cell.connections == last.ramp.ladder[-1]


def _finished_ramp(
    line: MapLine, done: list[CellResult], ladder: tuple[int, ...]
) -> list[CellResult] | None:
    return next((r for r in _ramps_of(line, done, ladder) if _ended(r)), None)


def _finished_ramps(line: MapLine, done: list[CellResult], ladder: tuple[int, ...]) -> int:
    return sum(_ended(r) for r in _ramps_of(line, done, ladder))
