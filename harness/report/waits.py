"""Where a cell's requests waited, from the side channel's samples of its measured windows: for
a connection (threads or tasks queued at the pool), for the event loop (its lag), or holding a
connection after their response had started (a `yield` dependency's exit runs after the
response is sent). The figures behind "why is this variant's tail long?"."""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Sequence
from statistics import median

from harness.domain.occupancy import Sample, total
from harness.domain.result import CellResult
from harness.report.stats import by_cell
from harness.report.table import md_table

TEXT = (
    "From the side channel's samples (10 per second, every process) of the measured windows, "
    "the rounds together. **In flight**: requests inside the app. "
    "**Past their response**: of those, requests whose response had started while the app still "
    "ran (a `yield` dependency's exit, which FastAPI runs after the response is sent). **Out**: "
    "connections the pools had lent, of what they can lend. **Queued for a connection**: threads "
    "(sync) or tasks (async) waiting at the pool. **Loop lag**: how much later than asked a "
    "10 ms timer on the event loop fired, the largest in each sample's 100 ms. Medians of the "
    "ticks; the lag's 99th percentile too. Where every process answered on a side channel "
    "of its own, a tick sums them; through a server's one port (a target), a tick is whichever "
    "process answered."
)


def _ticks(samples: Sequence[Sample]) -> list[list[Sample]]:
    by_tick: dict[float, list[Sample]] = defaultdict(list)
    for s in samples:
        by_tick[s.t_s].append(s)
    return list(by_tick.values())


def _median(values: Sequence[float | None]) -> str:
    known = [v for v in values if v is not None]
    return f"{median(known):g}" if known else "-"


def row(records: Sequence[CellResult]) -> list[str] | None:
    """One cell's figures; None where its app reported no lag (an app from before it did)."""
    ticks = [
        tick
        for r in records
        if r.occupancy is not None
        for tick in _ticks(r.occupancy.measured.samples)
    ]
    if not any(s.loop_lag_ms is not None for tick in ticks for s in tick):
        return None
    in_flight = [sum(s.in_flight for s in t) for t in ticks]
    past = [
        total([s.in_flight - s.awaiting if s.awaiting is not None else None for s in t])
        for t in ticks
    ]
    out = [total([s.checked_out for s in t]) for t in ticks]
    capacity = {total([s.capacity for s in t]) for t in ticks}
    queued = [
        total([s.pool_waiting if s.pool_waiting is not None else s.pool_tasks_waiting for s in t])
        for t in ticks
    ]
    lags = sorted(s.loop_lag_ms for t in ticks for s in t if s.loop_lag_ms is not None)
    cap = max((c for c in capacity if c is not None), default=None)
    return [
        _median(in_flight),
        _median(past),
        f"{_median(out)} / {cap}" if cap is not None else _median(out),
        _median(queued),
        f"{median(lags):.1f} / {lags[max(0, math.ceil(0.99 * len(lags)) - 1)]:.1f}",
    ]


def section(records: Sequence[CellResult]) -> str:
    """The table, or "" where no cell has the figures."""
    rows = []
    for c in sorted(by_cell(records), key=lambda c: (c.cell.variant, c.cell.level_key)):
        if (figures := row(c.records)) is not None:
            rows.append([c.cell.variant, c.cell.level_text, *figures])
    if not rows:
        return ""
    head = [
        "variant",
        "load",
        "in flight",
        "past their response",
        "out / can lend",
        "queued for a connection",
        "loop lag ms, median / p99",
    ]
    table = md_table(head, rows, ["---", "---:", "---:", "---:", "---:", "---:", "---:"])
    return "\n".join(["## Where requests waited\n", TEXT + "\n", table])
