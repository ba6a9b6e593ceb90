"""The evidence of a collapse, as a reader meets it: where the threads stood (the dump), what
the server held (its occupancy) at the freeze and at the last load it carried, and a timeline."""

from __future__ import annotations

import itertools
from collections.abc import Sequence

from harness.domain.axes import FROZEN
from harness.domain.occupancy import Sample, Second, Timeline
from harness.domain.result import CellResult
from harness.report import comparisons
from harness.report.stats import Ratio, by_cell
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
        if r.verdict in FROZEN and (r.occupancy or r.threads) and r.cell.id not in seen:
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
                r.cell.level_short,
                r.judgement or str(r.verdict),
                threads + dump,
                at_end(r.occupancy),
                chart,
            ]
        )
    if not rows:
        return ""
    head = (
        "variant",
        "connections",
        "verdict, why",
        "threads at the freeze",
        "occupancy at the freeze",
        "chart",
    )
    return md_table(head, rows, ["---", "---:", "---", "---", "---", "---"])


FREEZE_TEXT = (
    "Taken when a cell collapsed. *Threads*: `py-spy dump` of the server and its workers right "
    "after the measured run, while the stalled requests still wait (they do until "
    "`pool_timeout`); threadpool threads are counted by where they stand. *Occupancy*: the "
    "apps' side channel (`GET /_occupancy`, answered on the event loop) as last sampled: "
    "threadpool tokens in use / total (+ tasks waiting for one), pooled connections checked "
    "out / capacity, and requests in flight, per worker process."
)


def _bursts(seconds: Sequence[Second]) -> list[tuple[int, int]]:
    """(first second, errors) of each run of seconds with errors, quiet gaps of <= 2 s joined."""
    out: list[tuple[int, int]] = []
    last = -10
    for s in seconds:
        if not s.errors:
            continue
        if out and s.t_s - last <= 2:
            out[-1] = (out[-1][0], out[-1][1] + s.errors)
        else:
            out.append((s.t_s, s.errors))
        last = s.t_s
    return out


def _frozen(s: Second) -> bool:
    """No successful answer, and every token held by a thread blocked on the pool."""
    return s.ok == 0 and bool(s.pool_waiting) and s.pool_waiting == s.tokens_in_use


def cycle_findings(records: Sequence[CellResult]) -> list[str]:
    """The longest collapsed cell, second by second: when it froze, when its waits timed out,
    and whether it froze again. Every number comes from the record's timeline and wrk."""
    long = [r for r in records if r.verdict in FROZEN and r.occupancy and r.occupancy.samples]
    if not long:
        return []
    r = max(long, key=lambda r: r.cell.duration_s)
    assert r.occupancy is not None
    seconds = r.occupancy.seconds()
    by_t = {s.t_s: s for s in seconds}
    first = next((s.t_s for s in seconds if _frozen(s)), None)
    c = r.cell
    out = [
        f"{c.variant} at {c.level_text} for {c.duration_s:g} s "
        f"(pool_timeout {c.known('pool_timeout_s'):g} s): from the warm-up's start to the end "
        f"of the run the server answered {sum(s.ok for s in seconds)} requests successfully "
        f"and {sum(s.errors for s in seconds)} with an error"
        + (f"; it was frozen from second {first} on" if first is not None else "")
        + "."
    ]
    bursts = _bursts(seconds)
    if bursts:
        gaps = sorted({b[0] - a[0] for a, b in itertools.pairwise(bursts)})
        again = [t for t, _ in bursts if (after := by_t.get(t + 3)) and _frozen(after)]
        out.append(
            f"The errors came in {len(bursts)} bursts, at "
            + ", ".join(f"{t} s ({n})" for t, n in bursts)
            + (f", {' or '.join(str(g) for g in gaps)} s apart" if gaps else "")
            + ": each time, the waits of the threads blocked on the pool timed out together. "
            + (
                f"Three seconds after {len(again)} of the {len(bursts)} bursts the server was "
                "frozen again: the requests queued behind the failed ones took the freed tokens "
                "and blocked on the pool in turn."
                if again
                else "It did not freeze again after them."
            )
        )
    if r.wrk:
        out.append(
            f"{'wrk' if r.wrk.schedule is None else 'The open loop'} counted {r.wrk.requests} "
            f"responses in its {r.wrk.duration_s:.0f} s window: "
            f"{r.wrk.status_errors} with an error status, {r.wrk.timeouts} after its timeout."
        )
    return out


def cost_findings(records: Sequence[CellResult]) -> list[str]:
    """What serving and sampling the side channel costs: sampled / not sampled for each pair of
    cells that differ only in OCCUPANCY, with its interval, beside the run-to-run noise."""
    found = [c for c in comparisons.comparisons(records) if c.factor == "occupancy"]
    levels = sorted({r.cell.connections for r in records if r.cell.rate is None})
    said, ratios = [], []
    for comparison in found:
        for level in levels:
            ratio = comparisons.at_level(comparison, records, level)
            if isinstance(ratio, Ratio):
                ratios.append(ratio)
                said.append(
                    f"{comparison.a.mode} `{comparison.a.known('style')}` at {level} "
                    f"connections {ratio.describe()}"
                )
    if not ratios:
        return []
    cvs = [cv for s in by_cell(records) if (cv := s.cv) is not None]
    significant = [r for r in ratios if r.significant]
    return [
        "Sampled / not sampled (the side channel served and sampled at 10 Hz, against an app "
        "without it, interleaved round by round): " + "; ".join(said) + ".",
        (
            f"No interval excludes 1: the sampling changed throughput by less than this run "
            f"could resolve, while single measurements of one cell varied by a CV of "
            f"{min(cvs):.0%}-{max(cvs):.0%}."
            if not significant
            else f"{len(significant)} of {len(ratios)} intervals exclude 1: there the evidence "
            f"had a measurable cost (single measurements varied by a CV of "
            f"{min(cvs):.0%}-{max(cvs):.0%}; of {len(ratios)} intervals at 95%, "
            f"{len(ratios) * 0.05:.1f} would exclude 1 by chance alone on average)."
        ),
    ]
