"""Capacity at an objective: for each line, the highest open-loop rate whose measured window
met the SLO (docs/decision.md, Capacity at an SLO).

A probe is a cell of the line at one rate: a fresh server, a warm-up at that rate, a measured
window (DURATION, 10 s unless asked otherwise); it misses when more than the SLO allows of its
requests were slow, failed, timed out or dropped, or when it collapsed. The search is the
failure map's (harness/domain/search.py) over rates: doubling from START, bisecting to 10%,
then the bracket's edges probed again until each has BOUNDARY_PROBES answers. A line stops
where its BUDGET runs out, and its bracket is what its probes showed by then.

A line's search that ended (searched, or out of its budget) is recorded in the metadata and
not run again. One that was interrupted is resumed by searching again: the search is
deterministic given its answers, so a probe already on record gives its recorded answer (and
counts the time it took against the line's budget) instead of being measured again.
"""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Callable
from dataclasses import replace
from typing import Any

from harness.domain.capacity import bracket, describe
from harness.domain.cell import Cell
from harness.domain.plan import CapacityPlan
from harness.domain.result import CellResult
from harness.domain.search import Threshold, confirm, find_threshold
from harness.infra.histogram import probe_missed
from harness.run.events import Listener
from harness.run.measure import measure
from harness.run.options import Options
from harness.run.session import session
from harness.store.rundir import RunDir

PROBE_OVERHEAD_S = 5.0  # a server's start, verification and stop around its window, 2 cores
CONFIRM_BUDGET = 12  # probes more, at most, to bring a bracket's edges to their answers
WARMUP_S = 2.0  # make decide's probes: make capacity's default WARMUP
SEARCH_ATTEMPTS = 2  # measurements of one level before it counts as missed without an answer


class OutOfTime(Exception):
    """A line's budget ran out: its bracket is what its probes showed so far."""


def probe_options(plan: CapacityPlan, options: Options) -> Options:
    """The run's options, with the plan's warm-up where it has one."""
    return options if plan.warmup_s is None else replace(options, warmup_s=plan.warmup_s)


def probe_s(plan: CapacityPlan, options: Options) -> float:
    """One probe: its warm-up, settling, window, and the server's start and stop."""
    if not plan.lines:
        return 0.0
    options = probe_options(plan, options)
    return plan.lines[0].duration_s + options.warmup_s + options.settle_s + PROBE_OVERHEAD_S


def estimate_s(plan: CapacityPlan, options: Options) -> float:
    """Each line's budget, or the probes a search takes if fewer fit in it."""
    per_line = min(plan.budget_s, (8 + 2 * plan.probes) * probe_s(plan, options))
    return len(plan.lines) * per_line


def probes_of(line: Cell, records: list[CellResult]) -> list[CellResult]:
    return [r for r in records if r.cell.rate is not None and r.cell.variant == line.variant]


def bracket_of(line: Cell, records: list[CellResult], plan: CapacityPlan) -> Threshold:
    """The line's bracket from every probe on record."""
    answers = [(r.cell.rate or 0.0, probe_missed(r, plan.slo)) for r in probes_of(line, records)]
    return bracket(answers, plan.ceiling)


def search_line(
    plan: CapacityPlan,
    line: Cell,
    recorded: list[CellResult],
    run_probe: Callable[[Cell, int], CellResult],
    each_s: float,
    clock: Callable[[], float] = time.monotonic,
) -> bool:
    """One line's search: find the bracket, then probe its edges again. `recorded`: the line's
    probes on record (a resumed search replays them in order); `run_probe(cell, repeat)`
    measures one more. True where it ran to its end, False where its budget ran out."""
    deadline = clock() + plan.budget_s
    answers: list[tuple[float, bool | None]] = []  # what this search has seen, in order
    used: Counter[int] = Counter()  # probes of each rate this search has had, on record or new
    mine = sorted(recorded, key=lambda r: r.repeat)

    def probe(rate: int) -> bool | None:
        nonlocal deadline
        kept = [r for r in mine if round(r.cell.rate or 0) == rate]
        if used[rate] < len(kept):  # resumed: this probe is on record
            record = kept[used[rate]]
            deadline -= max(record.elapsed_s, each_s)
        else:
            if clock() + each_s > deadline:
                raise OutOfTime
            record = run_probe(plan.probe(line, rate), 1 + len(kept))
            mine.append(record)
        used[rate] += 1
        missed = probe_missed(record, plan.slo)
        answers.append((float(rate), missed))
        return missed

    def answer(rate: int) -> bool:
        """Missed?, asked again where a probe could not say; a level that never answered
        counts as missed while searching (and neither way in the bracket)."""
        for _ in range(SEARCH_ATTEMPTS):
            if (missed := probe(rate)) is not None:
                return missed
        return True

    try:
        find_threshold(answer, plan.start, plan.ceiling)
        # The edges of what the search saw (answers only), probed again.
        confirm(bracket(answers, plan.ceiling), probe, plan.probes, budget=CONFIRM_BUDGET)
    except OutOfTime:
        return False
    return True


def execute_capacity(
    run: RunDir, options: Options, entry: dict[str, Any], listener: Listener | None = None
) -> None:
    listener = listener or Listener()
    meta = run.metadata()
    plan = CapacityPlan.from_json(meta["capacity"])
    ended: dict[str, str] = dict(meta.get("capacity_ended", {}))
    todo = [line for line in plan.lines if line.variant not in ended]
    if not todo:
        return
    each_s = probe_s(plan, options)
    options = probe_options(plan, options)
    done = run.records()
    cells = [plan.probe(line, plan.ceiling) for line in todo]
    with session(run, options, cells, entry, listener) as s:
        for i, line in enumerate(todo):
            where = f"line {i + 1}/{len(todo)}"
            left_s = (len(todo) - i) * plan.budget_s

            def run_probe(
                cell: Cell, repeat: int, where: str = where, left_s: float = left_s
            ) -> CellResult:
                listener.cell_started(cell, where, left_s, repeat)
                record = measure(s, cell, done, repeat)
                done.append(record)
                return record

            finished = search_line(plan, line, probes_of(line, done), run_probe, each_s)
            if not finished:
                listener.notice(f"{line.variant}: its budget of {plan.budget_s:g} s ran out")
            ended[line.variant] = "searched" if finished else "out of time"
            run.update_metadata(capacity_ended=ended)
            listener.notice(f"{line.variant}: {describe(bracket_of(line, done, plan), plan.slo)}")
