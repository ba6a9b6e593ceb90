"""The opening of a run's summary: what its records say about the project's question (sync or
async, and where does sync freeze), and the caveats that apply to this run. Generated from the
records only, so a user's own run concludes, not only the reference page."""

from __future__ import annotations

from collections.abc import Sequence

from harness.domain.axes import Mode, Workload
from harness.domain.latency import Kind
from harness.domain.result import CellResult
from harness.report import comparisons
from harness.report.stats import CellStats, Ratio, by_cell

SLOW_P99_MS = 1000.0  # a p99 a reader should not miss, although no verdict looks at latency


def _levels(levels: Sequence[float]) -> str:
    text = [f"{c:g}" for c in levels]
    return text[0] if len(text) == 1 else ", ".join(text[:-1]) + " and " + text[-1]


def _span(ratios: Sequence[float]) -> str:
    if len(ratios) == 1:
        return f"{ratios[0]:.2f}×"
    return f"{min(ratios):.2f}× to {max(ratios):.2f}×"


def _mode_comparisons(records: Sequence[CellResult]) -> list[str]:
    out = []
    for comparison in comparisons.comparisons(records):
        if comparison.factor != "mode" or comparison.a.workload is Workload.health:
            continue
        if parts := _mode_findings(comparison, records):
            context = f" ({comparison.context})" if comparison.context else ""
            out.append(f"- **Async or sync{context}**: " + "; ".join(parts) + ".")
    return out


def _mode_findings(comparison: comparisons.Comparison, records: Sequence[CellResult]) -> list[str]:
    """What async against sync showed, level by level: which side served more where its
    interval says so, the levels without an interval, and where a side collapsed."""
    faster: dict[str, list[tuple[int, Ratio]]] = {"async": [], "sync": [], "~": []}
    unsure, notes = [], []
    unit = "connections"
    for level in sorted({r.cell.connections for r in records if r.cell.rate is None}):
        value = comparisons.at_level(comparison, records, level)
        if value is None:
            continue
        if isinstance(value, str):
            notes.append(f"{level}: {value}")
        elif value.interval is None:
            unsure.append((level, value))
        else:
            side = "~" if not value.significant else "async" if value.value > 1 else "sync"
            faster[side].append((level, value))
    parts = []
    for side, found in faster.items():
        if not found:
            continue
        span = _span([r.value for _, r in found])
        what = (
            "no significant difference"
            if side == "~"
            else f"{side} served more ({span} async/sync)"
        )
        parts.append(f"{what} at {_levels([c for c, _ in found])} {unit}")
    if unsure:
        parts.append(
            f"async/sync {_span([r.value for _, r in unsure])} at "
            f"{_levels([c for c, _ in unsure])} {unit}, from one measurement each "
            "(no interval: REPEATS=5 or more to rank them)"
        )
    if notes:
        parts.append("where a side collapsed: " + "; ".join(notes))
    return parts


def _freezes(cells: Sequence[CellStats]) -> list[str]:
    out = []
    by_variant: dict[str, list[CellStats]] = {}
    for c in sorted(cells, key=lambda c: c.cell.level):
        if c.cell.workload is not Workload.health:
            by_variant.setdefault(c.cell.variant, []).append(c)
    for variant, line in by_variant.items():
        collapsed = [c for c in line if c.frozen]
        cell = line[0].cell
        name = cell.short_name
        if collapsed:
            first = collapsed[0]
            held = [c.cell.level for c in line if c.cell.level < first.cell.level]
            timeouts = f", {first.pool_timeouts} pool timeouts" if first.pool_timeouts else ""
            unit, at = ("connections", "") if cell.rate is None else ("req/s", " req/s")
            out.append(
                f"- **{name}** ({variant}): held up to {max(held, default=0):g} {unit}, "
                f"collapsed at {first.cell.level:g}{at} ({first.verdict}{timeouts})."
            )
        elif cell.mode is Mode.sync:
            top = line[-1].cell.level_text
            out.append(f"- **{name}** ({variant}): never collapsed, up to {top}.")
    return out


def _latency(cells: Sequence[CellStats]) -> list[str]:
    slow = []
    for c in cells:
        p99 = c.percentile(99)
        if p99 and p99.ms >= SLOW_P99_MS and not c.frozen:
            slow.append((c, p99.ms))
    if not slow:
        return []
    named = "; ".join(
        f"{c.cell.short_name}{'' if c.cell.requests else f' {c.cell.workload}'} at "
        f"{c.cell.level_text}: "
        f"{p99 / 1000:.1f} s"
        for c, p99 in sorted(slow, key=lambda x: -x[1])[:4]
    )
    # Records from before format 5 kept wrk's corrected percentiles only.
    measured = all(p.above is not None for c, _ in slow if (p := c.percentile(99)))
    which = "measured p99" if measured else "p99"
    return [f"- **Latency** (not part of any verdict): {which} of a second or more: {named}."]


def _open_loop(cells: Sequence[CellStats]) -> list[str]:
    """Each variant's p99 from due at each rate: an open loop's throughput is its rate, so its
    variants differ in how long their users waited, and in what was never sent."""
    found = [c for c in cells if c.cell.rate is not None and c.cell.workload is not Workload.health]
    if not found:
        return []
    rates = sorted({c.cell.level for c in found})
    by_variant: dict[str, list[CellStats]] = {}
    for c in sorted(found, key=lambda c: c.cell.level):
        by_variant.setdefault(c.cell.variant, []).append(c)
    said = []
    for line in by_variant.values():
        texts = []
        for c in line:
            p99 = c.percentile(99, Kind.corrected)
            unsent = sum(
                r.wrk.schedule.late + r.wrk.schedule.dropped
                for r in c.records
                if r.wrk and r.wrk.schedule
            )
            text = str(c.verdict) if c.frozen else f"{p99.ms:,.1f} ms" if p99 else "-"
            texts.append(text + (f" ({unsent:,} late or dropped)" if unsent else ""))
        cell = line[0].cell
        said.append(f"{cell.short_name} {' / '.join(texts)}")
    at = " / ".join(f"{r:g}" for r in rates)
    return [f"- **Open loop**, p99 from due at {at} req/s: " + "; ".join(said) + "."]


def caveats(records: Sequence[CellResult], cells: Sequence[CellStats]) -> list[str]:
    out = []
    if any(c.frozen for c in cells):
        out.append(
            "A collapsed cell shows few or no *failed* requests: wrk counts a request that "
            "never got an answer as missing throughput, not as a failure."
        )
    if any(r.pool_timeouts for r in records):
        out.append(
            "Pool timeouts are counted in the server's log, including while a stalled server "
            "was kept up after the measured window (first round only) to let them show."
        )
    out.append("Verdicts look at throughput and errors, not at latency.")
    if all(c.n == 1 for c in cells):
        out.append(
            "One measurement per cell: differences below about 25% may be noise here "
            "(REPEATS=5 or more gives intervals)."
        )
    else:
        out.append("Intervals cover the noise within this run; runs made at other times vary more.")
    return out


def findings(records: Sequence[CellResult]) -> list[str]:
    """The conclusions as markdown bullets: async or sync, where each variant froze, latency."""
    cells = by_cell(records)
    return [*_mode_comparisons(records), *_open_loop(cells), *_freezes(cells), *_latency(cells)]


def conclusions(records: Sequence[CellResult]) -> str:
    """## Conclusions: sentences, then the caveats that apply."""
    if not records:
        return ""
    cells = by_cell(records)
    lines = findings(records)
    text = (
        "## Conclusions\n\n"
        + "\n".join(lines)
        + "\n\nCaveats: "
        + " ".join(caveats(records, cells))
    )
    return text + "\n"
