"""The evidence of a collapse, as a reader meets it: where the threads stood (the dump), what
the server held (its occupancy) at the freeze and at the last load it carried, and a timeline."""

from __future__ import annotations

from collections.abc import Sequence

from harness.domain.occupancy import Sample, Timeline
from harness.domain.result import CellResult
from harness.domain.rules import is_collapse
from harness.report.table import md_table


def _of(used: int | None, total: int | None) -> str:
    return "?" if used is None else f"{used}/{total}" if total is not None else str(used)


def describe(sample: Sample) -> str:
    """One process at one moment, e.g. `tokens 40/40 +38 waiting, conns 15/15 (40 threads
    waiting), 93 in flight`."""
    waiting = f" +{sample.waiting} waiting" if sample.waiting else ""
    blocked = f" ({sample.pool_waiting} threads waiting)" if sample.pool_waiting else ""
    return (
        f"tokens {_of(sample.tokens_in_use, sample.tokens_total)}{waiting}, "
        f"conns {_of(sample.checked_out, sample.capacity)}{blocked}, "
        f"{sample.in_flight} in flight"
    )


def _per_process(samples: dict[int, Sample]) -> str:
    if len(samples) == 1:
        return describe(next(iter(samples.values())))
    return "; ".join(f"worker {i}: {describe(s)}" for i, s in enumerate(samples.values(), 1))


def at_end(timeline: Timeline | None) -> str:
    """Each process as last sampled: for a collapsed run, the freeze."""
    if timeline is None or not timeline.samples:
        return "not sampled"
    return _per_process(timeline.last())


def busiest(timeline: Timeline | None) -> str:
    """Each process at its sample of the measured run closest to a freeze: the closest a run
    that held came to freezing."""
    if timeline is None or not timeline.samples:
        return "not sampled"
    top: dict[int, Sample] = {}
    for s in timeline.measured.samples:
        best = top.get(s.pid)
        if best is None or _closeness(s) > _closeness(best):
            top[s.pid] = s
    return _per_process(dict(sorted(top.items())))


def _closeness(s: Sample) -> tuple[int, ...]:
    """How near a freeze a moment is: threads blocked on the pool first (T of them is a
    freeze), then tokens in use, connections out, requests in flight."""
    return (s.pool_waiting or 0, s.tokens_in_use or 0, s.checked_out or 0, s.in_flight)


def chart_name(record: CellResult) -> str:
    return f"timeline-{record.key}.png"


def explained(records: Sequence[CellResult]) -> list[CellResult]:
    """The collapsed measurements worth a timeline: per cell, its first collapsed round."""
    seen: dict[str, CellResult] = {}
    for r in sorted(records, key=lambda r: r.repeat):
        if is_collapse(r) and (r.occupancy or r.threads) and r.cell.id not in seen:
            seen[r.cell.id] = r
    return sorted(seen.values(), key=lambda r: (r.cell.variant, r.cell.connections))


def freeze_table(records: Sequence[CellResult], charts: str = "charts") -> str:
    """One row per collapsed cell: threads, occupancy at the freeze, the timeline chart."""
    rows = []
    for r in explained(records):
        threads = r.threads.headline if r.threads else "no dump taken"
        dump = f" ([dump]({r.threads.file}))" if r.threads and r.threads.file else ""
        chart = f"[timeline]({charts}/{chart_name(r)})" if r.occupancy else "-"
        rows.append(
            [
                r.cell.variant,
                str(r.cell.connections),
                threads + dump,
                at_end(r.occupancy),
                chart,
            ]
        )
    if not rows:
        return ""
    head = ("variant", "connections", "threads at the freeze", "occupancy at the freeze", "chart")
    return md_table(head, rows, ["---", "---:", "---", "---", "---"])


FREEZE_TEXT = (
    "Taken when a cell collapsed. *Threads*: `py-spy dump` of the server and its workers right "
    "after the measured run, while the stalled requests still wait (they do until "
    "`pool_timeout`); threadpool threads are counted by where they stand. *Occupancy*: the "
    "apps' side channel (`GET /_occupancy`, answered on the event loop) as last sampled: "
    "threadpool tokens in use / total (+ tasks waiting for one), pooled connections checked "
    "out / capacity, and requests in flight, per worker process."
)
