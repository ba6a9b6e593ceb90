"""One measurement inside a session: run the cell, write its record at once, tell the listener."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace

from harness.domain.axes import FROZEN, Verdict
from harness.domain.cell import Cell, Target, UserApp
from harness.domain.result import CellResult, Ramp, record_key
from harness.domain.rules import Rule, best_lower
from harness.infra.answers import answering
from harness.infra.environment import now_iso
from harness.run.cell import (
    run_app_cell,
    run_app_ramp,
    run_cell,
    run_ramp,
    run_target_cell,
    verify_users,
)
from harness.run.replay import replay
from harness.run.session import Session


def measure(s: Session, cell: Cell, done: Sequence[CellResult], repeat: int = 1) -> CellResult:
    """Measure `cell` (its round `repeat`), write the record at once, tell the listener."""
    best = best_lower(cell, done)

    def keep_dump(threads: list[dict[str, object]]) -> str:
        return s.run.write_threads(record_key(cell, repeat), threads)

    if isinstance(cell.server, UserApp):
        url = s.db.url if s.db else None  # APP_ENV's `{database}`
        result = run_app_cell(cell, cell.server, s.options, best, s.log_dir, keep_dump, url)
    elif isinstance(cell.server, Target):
        frozen = frozen_target(cell.server, done)
        if frozen and (still := still_frozen(cell.server)):
            result = not_measured(cell, frozen, still)
        else:
            known = s.shapes.get(cell.server)
            result, shapes = run_target_cell(cell, cell.server, s.options, best, keep_dump, known)
            if shapes is not None:
                s.shapes[cell.server] = shapes
    else:
        assert s.db is not None, "a session with servers to start has a database"
        # The pool timeouts that explain a collapse are counted once: later rounds of the
        # same cell would wait up to pool_timeout each to show the same thing.
        options = replace(
            s.options, await_pool_timeouts=s.options.await_pool_timeouts and repeat == 1
        )
        result = run_cell(cell, cell.server, s.db, options, best, s.log_dir, keep_dump)
    return _written(s, replace(result, repeat=repeat))


def frozen_target(target: Target, done: Sequence[CellResult]) -> CellResult | None:
    """The first measurement in which `target` froze, if one did: a server the harness did not
    start is not restarted, so it is measured again only if it answers (`still_frozen`)."""
    frozen = [r for r in done if r.cell.server == target and r.verdict in FROZEN and r.started_at]
    return min(frozen, key=lambda r: r.started_at, default=None)


# How long a target that froze has to answer before the harness takes it as frozen still.
ALIVE_TIMEOUT_S = 3.0


def still_frozen(target: Target) -> str:
    """Why `target` is taken as frozen still ('' if it answers again: a collapse by throughput
    alone can be a saturation it has recovered from)."""
    if target.requests:
        return answering(target.url, target.requests, ALIVE_TIMEOUT_S) or ""
    return verify_users(target.url, None, ALIVE_TIMEOUT_S) or ""


def not_measured(cell: Cell, frozen: CellResult, still: str) -> CellResult:
    since = f"frozen since round {frozen.repeat} at {frozen.cell.level_text}"
    return CellResult(
        cell=cell,
        verdict=Verdict.not_measured,
        pool_timeouts=None,
        server_errors=None,
        started_at=now_iso(),
        judged_by=str(Rule.lifecycle),
        judgement=since,
        note=f"not measured: the target {since} ({frozen.verdict}: {frozen.judgement}) and "
        f"still did not answer ({still}); a server the harness did not start is not restarted, "
        "so it would only be measured frozen",
    )


def measure_ramp(
    s: Session, cells: Sequence[Cell], ramp: Ramp, number: int, done: list[CellResult]
) -> list[CellResult]:
    """Run one warm ramp over `cells` (its ramp `number` is each record's `repeat`); each
    level's record is written as the ramp goes on, and added to `done`."""
    level = cells[0]

    def keep_dump(threads: list[dict[str, object]]) -> str:
        return s.run.write_threads(record_key(level, number), threads)

    options = replace(s.options, await_pool_timeouts=s.options.await_pool_timeouts and number == 1)
    out = []
    if cells[0].user_app:
        url = s.db.url if s.db else None
        levels = run_app_ramp(
            cells, ramp, number, options, lambda c: best_lower(c, done), s.log_dir, keep_dump, url
        )
    else:
        assert s.db is not None, "a ramp of the demo app has a database"
        levels = run_ramp(
            cells,
            ramp,
            number,
            s.db,
            options,
            lambda c: best_lower(c, done),
            s.log_dir,
            keep_dump,
            s.database_lost,
        )
    for result in levels:
        out.append(_written(s, replace(result, repeat=number)))
        done.append(out[-1])
        if len(out) < len(cells):
            level = cells[len(out)]
    return out


def _written(s: Session, result: CellResult) -> CellResult:
    result = replace(result, replay=replay(result.cell, s.options))
    s.run.write_record(result)
    s.measured += 1
    s.listener.record_written(result)
    if result.verdict is Verdict.database_lost:
        s.database_lost(result.note)
    s.load_failed(result.verdict is Verdict.load_failed, result.note)
    return result
