"""PNG charts of a failure map and of a decision run, drawn from their raw records only."""

from __future__ import annotations

import io
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # files only, no display
import matplotlib.pyplot as plt
from matplotlib.figure import Figure
from PIL import Image

from harness.domain.axes import Latency, Mode, Onset, ServerName, Workload
from harness.domain.cell import ServerConfig
from harness.domain.latency import Kind
from harness.domain.plan import MapLine, MapPlan
from harness.domain.result import CellResult, PgbenchResult
from harness.infra.histogram import measured_ms
from harness.report import decision
from harness.report.map_summary import first_probes, threshold_of
from harness.report.stats import CellStats, Ratio

# A chart's flat colours fit a palette of 256: a third of the bytes of matplotlib's RGBA PNG,
# the same picture (no dithering, so lines stay solid), the same bytes from the same figure.
PALETTE = 256


def _save(fig: Figure, path: Path, dpi: int) -> None:
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=dpi)
    image = Image.open(buffer).convert("RGB")
    quantized = image.quantize(PALETTE, method=Image.Quantize.MEDIANCUT, dither=Image.Dither.NONE)
    quantized.save(path, format="PNG", optimize=True)


def collapse_chart(
    path: Path,
    server: ServerName,
    plan: MapPlan,
    lines: Sequence[MapLine],
    records: Sequence[CellResult],
) -> None:
    """Measured collapse point of sync `dependency` against C, with the predicted line."""
    fig, ax = plt.subplots(figsize=(7, 4.5))
    base = lines[0].server_config
    capacities = [p.capacity for p in plan.pools]
    xs = range(0, max(capacities) + 10)
    ax.plot(
        xs,
        [base.workers * (base.tokens + c) for c in xs],
        "--",
        color="grey",
        label=f"predicted: workers × (T + C), T={base.tokens}, workers={base.workers}",
    )
    styles = {"pool": ("o", "C0"), "tokens": ("s", "C1"), "workers": ("D", "C2")}
    for line in lines:
        if line.predicted is None:
            continue
        config = line.server_config
        kind = (
            "tokens"
            if config.tokens != base.tokens
            else "workers"
            if config.workers != base.workers
            else "pool"
        )
        marker, color = styles[kind]
        found = threshold_of(line, records, plan.ceiling, plan.onsets[0])
        x = config.pool.capacity
        label = {
            "pool": "measured (fine at → collapsed at)",
            "tokens": f"measured, T={config.tokens}",
            "workers": f"measured, {config.workers} workers",
        }[kind]
        if kind != "pool":
            ax.plot(
                x,
                line.predicted,
                marker,
                mfc="none",
                color=color,
                label=f"predicted, {label.split(', ')[1]}",
            )
        if found.collapsed_at is None:
            ax.plot(x, plan.ceiling, "^", color=color, label=f"{label}: none up to ceiling")
            continue
        low = found.fine_at or 0
        ax.errorbar(
            x,
            found.collapsed_at,
            yerr=[[found.collapsed_at - low], [0]],
            fmt=marker,
            color=color,
            capsize=4,
            label=label,
        )
    handles, labels = ax.get_legend_handles_labels()
    unique = dict(zip(labels, handles, strict=True))
    ax.legend(unique.values(), unique.keys(), fontsize=8, loc="upper left")
    ax.set_xlabel("C = pool_size + max_overflow (per worker)")
    ax.set_ylabel("connections (wrk -c)")
    onset = "" if plan.onsets[0] is Onset.fresh else f" ({plan.onsets[0]})"
    ax.set_title(f"{server}: where sync `dependency` collapses{onset}")
    ax.set_ylim(0, plan.ceiling * 1.05)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    _save(fig, path, dpi=110)
    plt.close(fig)


def throughput_chart(
    path: Path,
    server: ServerName,
    lines: Sequence[MapLine],
    records: Sequence[CellResult],
    pg: Sequence[PgbenchResult],
    onset: Onset = Onset.fresh,
) -> None:
    """req/s and p99 against connections for each variant at the baseline, with ceilings."""
    fig, (rps_ax, p99_ax) = plt.subplots(1, 2, figsize=(11, 4.5))

    def factors(line: MapLine) -> tuple[object, ...]:
        return line.demo.pool if line.demo else None, line.config.tokens, line.config.workers

    # The demo's variants at the baseline; a user's app: every line (its tokens, its workers).
    baseline = [line for line in lines if line.demo is None or factors(line) == factors(lines[0])]
    floor = 10.0  # where a collapsed probe (0 req/s) is drawn on the log scale
    for i, line in enumerate(baseline):
        # One probe per level (the first that answered), of the map's first onset.
        variant = line.variant_of(onset)
        mine = first_probes([r for r in records if r.cell.variant == variant and r.wrk])
        probes = sorted(mine.values(), key=lambda r: r.cell.connections)
        served = [r for r in probes if r.wrk and r.wrk.ok_rps >= 1]
        stalled = [r.cell.connections for r in probes if r.wrk and r.wrk.ok_rps < 1]
        color = f"C{i}"
        name = line.label if line.demo else f"T={line.tokens_label}, {line.config.workers} workers"
        rps_ax.plot(
            [r.cell.connections for r in served],
            [r.wrk.ok_rps for r in served if r.wrk],
            "o-",
            color=color,
            label=name,
        )
        if stalled:
            rps_ax.plot(
                stalled,
                [floor] * len(stalled),
                "x",
                color=color,
                markersize=9,
                label=f"{name}: collapsed (0 req/s)",
            )
        p99_ax.plot(
            [r.cell.connections for r in served],
            [_p99(r) for r in served],
            "o-",
            color=color,
            label=name,
        )
    health = sorted(
        (
            r
            for r in records
            if r.cell.workload is Workload.health
            and r.cell.known("name") == server
            and r.cell.mode is Mode.async_
            and r.wrk
        ),
        key=lambda r: r.cell.connections,
    )
    if health:
        rps_ax.plot(
            [r.cell.connections for r in health],
            [r.wrk.ok_rps for r in health if r.wrk],
            "k--",
            label="HTTP ceiling (/health, async)",
        )
    if pg:
        rps_ax.plot(
            [p.connections for p in pg],
            [p.tps for p in pg],
            ":",
            color="purple",
            label="database ceiling (pgbench, /users query)",
        )
    rps_ax.set_yscale("log")
    rps_ax.set_ylim(bottom=floor / 1.5)
    rps_ax.set_ylabel("successful requests/s (log)")
    p99_ax.set_yscale("log")
    p99_ax.set_ylabel("p99 latency, ms, measured (log)")
    for ax in (rps_ax, p99_ax):
        ax.set_xlabel("connections (wrk -c)")
        ax.grid(alpha=0.3, which="both")
        ax.legend(fontsize=8)
    base = lines[0].config
    what = (
        f"GET /users, pool {base.pool}"
        if isinstance(base, ServerConfig)
        else f"{base.requests.label} to {base.app}"
    )
    fig.suptitle(
        f"{server}: {what}, {base.tokens} tokens, {base.workers} worker(s)"
        " — × marks a probe that collapsed"
    )
    fig.tight_layout()
    _save(fig, path, dpi=110)
    plt.close(fig)


def _p99(record: CellResult) -> float:
    """A probe's measured p99; wrk's corrected one for a record that kept no histogram."""
    assert record.wrk is not None
    measured = measured_ms(record.wrk, 99)
    return measured if measured is not None else record.wrk.p99_ms


def timeline_chart(path: Path, record: CellResult) -> None:
    """One measured run second by second, from the load's start: successful responses, the
    threadpool's tokens in use (and tasks waiting for one), connections checked out."""
    timeline = record.occupancy
    assert timeline is not None, "a timeline chart needs the run's samples"
    seconds = timeline.seconds()
    xs = [s.t_s for s in seconds]
    fig, (top, mid, low) = plt.subplots(3, 1, figsize=(7.5, 6.5), sharex=True)
    top.step(xs, [s.ok for s in seconds], where="post", color="C2", label="2xx/3xx per second")
    top.step(xs, [s.errors for s in seconds], where="post", color="C3", label="errors per second")
    top.set_ylabel("responses/s")
    top.legend(fontsize=8, loc="upper right")
    last = timeline.last()
    tokens_total = sum(s.tokens_total or 0 for s in last.values())
    capacity = sum(s.capacity or 0 for s in last.values())
    mid.step(xs, [s.tokens_in_use or 0 for s in seconds], where="post", label="tokens in use")
    mid.step(xs, [s.waiting or 0 for s in seconds], where="post", color="C1", label="waiting")
    mid.step(
        xs,
        [s.pool_waiting or 0 for s in seconds],
        where="post",
        color="C3",
        ls="-.",
        label="threads blocked on the pool",
    )
    mid.axhline(tokens_total, ls="--", color="grey", label=f"tokens: {tokens_total}")
    mid.set_ylabel("threadpool")
    mid.legend(fontsize=8, loc="upper right")
    low.step(xs, [s.checked_out or 0 for s in seconds], where="post", color="C4", label="out")
    low.axhline(capacity, ls="--", color="grey", label=f"capacity: {capacity}")
    low.set_ylabel("connections")
    low.set_xlabel("seconds since the warm-up began (all worker processes summed)")
    for ax in (top, mid, low):
        ax.set_ylim(bottom=0, top=max(ax.get_ylim()[1], 1))
        ax.axvline(timeline.measured_from_s, color="black", lw=0.8, ls=":")
    top.annotate(
        "measured run →",
        (timeline.measured_from_s, 0.95),
        xycoords=("data", "axes fraction"),
        fontsize=8,
        ha="left",
        va="top",
    )
    low.legend(fontsize=8, loc="upper right")
    c = record.cell
    fig.suptitle(f"{c.variant}, {c.level_text}: {record.verdict}", fontsize=9)
    fig.tight_layout()
    _save(fig, path, dpi=100)
    plt.close(fig)


# --- the decision run ------------------------------------------------------------------------

ROLE_COLORS = {"async": "C0", "sync": "C1", "dependency": "C3", "async_dependency": "C2"}
PAYLOAD_STYLES = ("o-", "s--", "D:", "^-.")


def _latency_axis(rows: Sequence[decision.Row]) -> list[Latency]:
    return sorted({r.latency for r in rows})


def _level_at(
    rows: Sequence[decision.Row], latency: Latency, payload: int, level: int
) -> decision.Level | None:
    """The figures at one database latency, payload and connection level, where measured."""
    row = next((r for r in rows if r.latency == latency and r.rows == payload), None)
    return next((v for v in row.levels if v.connections == level), None) if row else None


@dataclass
class _Series:
    """One role's line at one payload and connection level, across the latencies (by index)."""

    xs: list[int] = field(default_factory=list)
    rps: list[float] = field(default_factory=list)
    p99: list[float | None] = field(default_factory=list)
    collapsed: list[tuple[int, float]] = field(default_factory=list)  # × marks


def _series(
    rows: Sequence[decision.Row], latencies: Sequence[Latency], payload: int, level: int, role: str
) -> _Series:
    out = _Series()
    for x, latency in enumerate(latencies):
        lv = _level_at(rows, latency, payload, level)
        served = lv.rps.get(role) if lv else None
        if lv is None or served is None:
            continue
        if "collapsed" in lv.verdicts.get(role, ""):
            out.collapsed.append((x, max(served, 1.0)))  # drawn at 1 req/s if at none
        if served < 1.0:  # nothing to draw on a log scale
            continue
        out.xs.append(x)
        out.rps.append(served)
        out.p99.append(lv.p99_ms.get(role))
    return out


def latency_chart(path: Path, title: str, rows: Sequence[decision.Row]) -> None:
    """req/s and p99 against the database latency, for each variant and payload, one column
    per connection level; × marks a median over rounds of which some collapsed."""
    latencies = _latency_axis(rows)
    levels = sorted({lv.connections for r in rows for lv in r.levels})
    payloads = sorted({r.rows for r in rows})
    roles = rows[0].roles
    names = roles.parts()
    fig, axes = plt.subplots(
        2, len(levels), figsize=(4 * len(levels) + 1, 7), squeeze=False, sharex=True
    )
    for col, level in enumerate(levels):
        rps_ax, p99_ax = axes[0][col], axes[1][col]
        for role, variant in names.items():
            if variant is None or (role == "dependency" and variant == roles.sync):
                continue
            for p, payload in enumerate(payloads):
                line = _series(rows, latencies, payload, level, role)
                label = f"{decision.name(variant).replace('`', '')}, {payload} rows"
                style = PAYLOAD_STYLES[p % len(PAYLOAD_STYLES)]
                rps_ax.plot(line.xs, line.rps, style, color=ROLE_COLORS[role], label=label)
                shown_p99 = [
                    (x, v) for x, v in zip(line.xs, line.p99, strict=True) if v is not None
                ]
                p99_ax.plot(
                    [x for x, _ in shown_p99], [v for _, v in shown_p99], style,
                    color=ROLE_COLORS[role],
                )  # fmt: skip
                if line.collapsed:
                    rps_ax.plot(
                        *zip(*line.collapsed, strict=True), "x", color="black", markersize=10
                    )
        rps_ax.set_title(f"{level} connections")
        rps_ax.set_yscale("log")
        p99_ax.set_yscale("log")
        p99_ax.set_xlabel("database latency, one way")
        for ax in (rps_ax, p99_ax):
            ax.set_xticks(range(len(latencies)), [decision.latency_label(v) for v in latencies])
            ax.grid(alpha=0.3, which="both")
    axes[0][0].set_ylabel("successful requests/s (median, log)")
    axes[1][0].set_ylabel("p99 latency, ms (median, log)")
    axes[0][-1].legend(fontsize=7)
    fig.suptitle(f"{title}: throughput and p99 against database latency (× some rounds collapsed)")
    fig.tight_layout()
    _save(fig, path, dpi=110)
    plt.close(fig)


def ratio_chart(path: Path, title: str, rows: Sequence[decision.Row]) -> None:
    """async / sync with its 95% interval against the database latency, per connection level."""
    latencies = _latency_axis(rows)
    levels = sorted({lv.connections for r in rows for lv in r.levels})
    payloads = sorted({r.rows for r in rows})
    roles = rows[0].roles
    fig, axes = plt.subplots(1, len(levels), figsize=(4 * len(levels) + 1, 4), squeeze=False)
    width = 0.15
    for col, level in enumerate(levels):
        ax = axes[0][col]
        for p, payload in enumerate(payloads):
            offset = (p - (len(payloads) - 1) / 2) * width
            label: str | None = f"{payload} rows"  # on the first point drawn only
            for x, latency in enumerate(latencies):
                lv = _level_at(rows, latency, payload, level)
                if lv is None or not isinstance(lv.ratio, Ratio):
                    continue
                ratio = lv.ratio
                err = (
                    [[ratio.value - ratio.interval.low], [ratio.interval.high - ratio.value]]
                    if ratio.interval
                    else None
                )
                ax.errorbar(
                    x + offset, ratio.value, yerr=err, fmt=PAYLOAD_STYLES[p][0], capsize=4,
                    color=f"C{p}", label=label,
                )  # fmt: skip
                label = None
        ax.axhline(1.0, color="grey", linestyle="--", linewidth=1)
        if not ax.lines[:-1]:
            ax.text(0.5, 0.5, "no ratio: a side collapsed", ha="center", transform=ax.transAxes)
        ax.set_title(f"{level} connections")
        ax.set_xticks(range(len(latencies)), [decision.latency_label(v) for v in latencies])
        ax.set_xlabel("database latency, one way")
        ax.grid(alpha=0.3)
    axes[0][0].set_ylabel(
        f"{decision.name(roles.async_)} / {decision.name(roles.sync)}".replace("`", "")
    )
    axes[0][0].legend(fontsize=8)
    fig.suptitle(f"{title}: async / sync req/s, 95% intervals (above 1: async served more)")
    fig.tight_layout()
    _save(fig, path, dpi=110)
    plt.close(fig)


# --- latency distributions of a bench --------------------------------------------------------

CURVE_PERCENTILES = (50, 75, 90, 95, 98, 99, 99.5, 99.8, 99.9)


def _nines(p: float) -> float:
    """Where a percentile sits on the x axis: 1 / (1 - p), so 90, 99 and 99.9 are evenly
    spaced on a log scale (as HdrHistogram plots them)."""
    return 1 / (1 - p / 100)


def _unusable(c: CellStats) -> str:
    """Why a cell's latencies are not drawn as a curve ('' when they are): a collapsed cell's
    few answered requests would look fast."""
    if c.frozen:
        return f"{c.verdict}, not drawn"
    if c.distribution() is None:
        return "no histogram"
    return ""


def percentile_chart(
    path: Path, title: str, cells: Sequence[CellStats], labels: dict[str, str]
) -> None:
    """Latency against percentile (p50 to p99.9, log scales), one panel per connection level,
    one colour per variant: measured solid, wrk-corrected dashed, each from the merged
    histograms of the cell's rounds. A collapsed cell is named in the legend, not drawn."""
    levels = sorted({c.cell.level for c in cells})
    is_open = any(c.cell.rate is not None for c in cells)  # a table is one load or the other
    columns = min(3, len(levels))
    rows = -(-len(levels) // columns)
    fig, axes = plt.subplots(rows, columns, figsize=(4.6 * columns, 3.6 * rows), squeeze=False)
    colors = {variant: f"C{i}" for i, variant in enumerate(labels)}
    xs = [_nines(p) for p in CURVE_PERCENTILES]
    for ax, level in zip(axes.flat, levels, strict=False):
        drawn = False
        here = [c for c in cells if c.cell.level == level]
        for c in here:
            color, label = colors[c.cell.variant], labels[c.cell.variant]
            if why := _unusable(c):
                ax.plot([], [], "x", color=color, label=f"{label}: {why}")
                continue
            drawn = True
            for kind, style in ((Kind.measured, "-"), (Kind.corrected, "--")):
                found = c.distribution(kind)
                assert found is not None
                ys = [found.percentile_ms(p) for p in CURVE_PERCENTILES]
                ax.plot(
                    xs,
                    ys,
                    style,
                    color=color,
                    marker="." if kind is Kind.measured else "",
                    label=label if kind is Kind.measured else None,
                )
        ax.set_title(here[0].cell.level_text, fontsize=9)
        ax.legend(fontsize=7)
        if not drawn:  # a log scale with nothing on it cannot be laid out
            ax.set_xticks([])
            ax.set_yticks([])
            continue
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.set_xticks([_nines(p) for p in (50, 90, 99, 99.9)], ["p50", "p90", "p99", "p99.9"])
        ax.minorticks_off()
        ax.set_ylabel("latency, ms (log)")
        ax.grid(alpha=0.3, which="both")
    for ax in list(axes.flat)[len(levels) :]:
        ax.set_visible(False)
    kinds = (
        "solid from sent, dashed from due" if is_open else "solid measured, dashed wrk-corrected"
    )
    fig.suptitle(f"{title}: latency by percentile ({kinds})", fontsize=10)
    fig.tight_layout()
    _save(fig, path, dpi=100)
    plt.close(fig)


def p99_throughput_chart(
    path: Path, title: str, cells: Sequence[CellStats], labels: dict[str, str]
) -> None:
    """Measured p99 against successful req/s across connection levels, one line per variant,
    each point labelled with its connections. A collapsed cell is an × at the top edge: slow
    beyond the chart, never a fast point from its few answered requests."""
    fig, ax = plt.subplots(figsize=(7.5, 4.8))
    drawn: list[float] = []
    stalled: list[tuple[str, float, str]] = []
    # An open loop's p99 that counts is from each request's due moment: what its user waited.
    is_open = any(c.cell.rate is not None for c in cells)
    kind = Kind.corrected if is_open else Kind.measured
    for i, variant in enumerate(labels):
        mine = sorted((c for c in cells if c.cell.variant == variant), key=lambda c: c.cell.level)
        points = []
        for c in mine:
            p99 = c.percentile(99, kind)
            if c.frozen or p99 is None or c.median_rps is None:
                stalled.append((variant, c.median_rps or 0.0, f"{c.cell.level:g}"))
                continue
            points.append((c.median_rps, p99.ms, f"{c.cell.level:g}"))
        color = f"C{i}"
        if points:
            ax.plot(
                [x for x, _, _ in points],
                [y for _, y, _ in points],
                "o-",
                color=color,
                label=labels[variant],
            )
            for x, y, conns in points:
                ax.annotate(conns, (x, y), fontsize=7, xytext=(3, 3), textcoords="offset points")
            drawn += [y for _, y, _ in points]
    top = max(drawn, default=1.0) * 3
    for i, variant in enumerate(labels):
        marks = [(x, conns) for v, x, conns in stalled if v == variant]
        if marks:
            ax.plot(
                [x for x, _ in marks],
                [top] * len(marks),
                "x",
                color=f"C{i}",
                markersize=9,
                label=f"{labels[variant]}: collapsed or no p99 at {', '.join(n for _, n in marks)}",
            )
    ax.set_yscale("log")
    ax.set_ylim(top=top * 1.5)
    ax.set_xlabel("successful requests/s (median of rounds)")
    ax.set_ylabel(f"p99 latency, ms, {'from due' if is_open else 'measured'} (log)")
    ax.grid(alpha=0.3, which="both")
    ax.legend(fontsize=7)
    levels = "req/s due" if is_open else "connections"
    ax.set_title(f"{title}: p99 against throughput (labels: {levels})", fontsize=10)
    fig.tight_layout()
    _save(fig, path, dpi=100)
    plt.close(fig)
