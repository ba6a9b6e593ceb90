"""The decision of a `make decide` run. First, for each deployment shape, the open-loop rate
each variant sustains within the objective (SLO), with the probes that bracket it; then for
each database latency and payload, whether async serves more than sync under a closed loop, by
how much (a paired ratio with its 95% interval), the p99s, and how far sync `dependency` held;
then the rule those numbers support, in sentences generated from them (nothing here is typed by
hand): by capacity within the SLO where it was searched, by throughput otherwise. Written as
decision.md, decision.csv, decision.json.

Like is compared with like: async `context` against sync `context` (the session opened and
closed inside the endpoint), so the ratio is the mode's alone. Async `dependency` (FastAPI's
documented pattern, whose connection is held until after the response is sent) and sync
`dependency` (the 2021 write-up's style, which freezes) are shown beside them.
"""

from __future__ import annotations

import csv
import io
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from harness.domain.axes import DIRECT, Latency, Mode, SessionStyle, Verdict
from harness.domain.capacity import sustains
from harness.domain.cell import Cell, shown
from harness.domain.latency import MIN_TAIL
from harness.domain.plan import CapacityPlan
from harness.domain.result import CellResult
from harness.domain.search import Threshold
from harness.report import capacity
from harness.report.comparisons import Comparison, at_level
from harness.report.stats import CellStats, Ratio, by_cell
from harness.report.summary import header
from harness.report.table import md_table

# What a section of the table shares: everything but the variant, latency, rows and load.
SECTION_FIELDS = ("name", "workers", "pool", "tokens", "pool_timeout_s", "stack", "workload")
UP = (Verdict.ok, Verdict.errors)  # a measurement that served its load


@dataclass(frozen=True)
class Roles:
    """Which variant plays which part: async and the sync reference (the same style where
    both were measured), async `dependency` beside them, the seed's sync style."""

    async_: tuple[Mode, SessionStyle] | None
    sync: tuple[Mode, SessionStyle] | None
    dependency: tuple[Mode, SessionStyle] | None
    async_dependency: tuple[Mode, SessionStyle] | None = None

    @classmethod
    def of(cls, records: Sequence[CellResult]) -> Roles:
        found = list(dict.fromkeys((r.cell.mode, r.cell.known("style")) for r in records))
        asyncs = [v for v in found if v[0] is Mode.async_]
        syncs = [v for v in found if v[0] is Mode.sync]
        dep = (Mode.sync, SessionStyle.dependency)
        ctx = (Mode.sync, SessionStyle.context)
        async_ctx, async_dep = (
            (Mode.async_, SessionStyle.context),
            (Mode.async_, SessionStyle.dependency),
        )
        sync = ctx if ctx in syncs else next((v for v in syncs if v != dep), None)
        first = async_ctx if async_ctx in asyncs else (asyncs[0] if asyncs else None)
        return cls(
            first,
            sync or (dep if dep in syncs else None),
            dep if dep in syncs else None,
            async_dep if async_dep in asyncs and first != async_dep else None,
        )

    def parts(self) -> dict[str, tuple[Mode, SessionStyle] | None]:
        return {
            "async": self.async_,
            "sync": self.sync,
            "dependency": self.dependency,
            "async_dependency": self.async_dependency,
        }


def name(variant: tuple[Mode, SessionStyle] | None) -> str:
    if variant is None:
        return "-"
    # A user's app has no style the harness knows: it is the sync app or the async app.
    return f"{variant[0]} `{variant[1]}`" if variant[1] else f"{variant[0]} app"


def latency_label(latency: Latency) -> str:
    if not latency.relay:
        return "0"
    return "relay, no delay" if latency.ms == 0 else f"{latency.ms:g} ms"


@dataclass(frozen=True)
class Level:
    """One connection level of a row: the figures of each role."""

    connections: int
    ratio: Ratio | str | None  # async / sync reference (a string says why there is none)
    ratio_dependency: Ratio | str | None  # async / sync `dependency`
    rps: dict[str, float | None]  # role -> median successful req/s
    # role -> p99 of the merged histograms (records without any: the median of wrk's p99s)
    p99_ms: dict[str, float | None]
    p99_above: dict[str, int | None]  # role -> measured responses above it (None: no histograms)
    verdicts: dict[str, str]  # role -> verdicts over the rounds


@dataclass(frozen=True)
class Row:
    """One latency and payload in one section."""

    section: tuple[Any, ...]
    latency: Latency
    rows: int
    levels: tuple[Level, ...]
    held: int | None  # highest level sync `dependency` served at every round, below a collapse
    collapsed_at: int | None  # the first level it did not
    roles: Roles
    # role -> its capacity search's bracket in this shape (none where none was searched)
    capacity: dict[str, Threshold] = field(default_factory=dict)
    slo: str = ""  # the objective the capacities are within

    @property
    def rule(self) -> str:
        return " ".join(sentences(self))


def _section(cell: Cell) -> tuple[Any, ...]:
    return tuple(cell.known(f) for f in SECTION_FIELDS)


def section_title(section: tuple[Any, ...], varying: Sequence[str]) -> str:
    values = dict(zip(SECTION_FIELDS, section, strict=True))
    workers = values["workers"]
    text = f"{values['name']}, {workers} worker{'s' if workers != 1 else ''}"
    extra = {
        "pool": f"pool {values['pool']}",
        "tokens": f"{values['tokens']} tokens",
        "pool_timeout_s": f"pool timeout {shown(values['pool_timeout_s'])} s",
        "stack": f"stack {values['stack']}",
        "workload": f"{values['workload']}",
    }
    return text + "".join(f", {extra[f]}" for f in varying if f in extra)


def section_slug(section: tuple[Any, ...], varying: Sequence[str]) -> str:
    values = dict(zip(SECTION_FIELDS, section, strict=True))
    parts = [str(values["name"]), f"w{values['workers']}"]
    parts += [shown(values[f]) for f in varying if f not in ("name", "workers")]
    return "-".join("".join(c if c.isalnum() else "_" for c in p) for p in parts)


def varying_fields(records: Sequence[CellResult]) -> list[str]:
    return [f for f in SECTION_FIELDS if len({r.cell.known(f) for r in records}) > 1]


def _held(stats: Sequence[CellStats]) -> tuple[int | None, int | None]:
    """(highest level held below the first that did not, that first level) for one variant; a
    level with an `unknown` measurement (and no failure) neither held nor failed."""
    held = None
    for c in sorted(stats, key=lambda c: c.cell.connections):
        verdicts = {r.verdict for r in c.records}
        if verdicts - {*UP, Verdict.unknown}:
            return held, c.cell.connections
        if Verdict.unknown not in verdicts:
            held = c.cell.connections
    return held, None


def _ratio(
    a: CellStats | None, b: CellStats | None, records: Sequence[CellResult], level: int
) -> Ratio | str | None:
    """b / a over the rounds both measured at `level` (or why there is none)."""
    if a is None or b is None:
        return None
    return at_level(Comparison("mode", a.cell, b.cell, ""), records, level)


def _level(level: int, cells: dict[str, CellStats | None], records: Sequence[CellResult]) -> Level:
    """One level's figures; `cells` maps each role to its cell's measurements."""
    p99 = {k: (c.percentile(99) if c else None) for k, c in cells.items()}
    return Level(
        connections=level,
        ratio=_ratio(cells["sync"], cells["async"], records, level),
        ratio_dependency=_ratio(cells["dependency"], cells["async"], records, level),
        rps={k: c.median_rps if c else None for k, c in cells.items()},
        p99_ms={k: v.ms if v else None for k, v in p99.items()},
        p99_above={k: v.above if v else None for k, v in p99.items()},
        verdicts={k: c.verdict for k, c in cells.items() if c},
    )


def _group(cell: Cell) -> tuple[Any, ...]:
    return (_section(cell), cell.known("db_latency") or DIRECT, cell.known("rows"))


def _capacities(
    records: Sequence[CellResult], plan: CapacityPlan | None, roles: Roles
) -> dict[tuple[Any, ...], dict[str, Threshold]]:
    """group -> role -> the bracket its capacity search found."""
    out: dict[tuple[Any, ...], dict[str, Threshold]] = {}
    if plan is None:
        return out
    for line in plan.lines:
        variant = (line.mode, line.known("style"))
        role = next((k for k, v in roles.parts().items() if v == variant), None)
        if role is not None:
            out.setdefault(_group(line), {})[role] = capacity.line_result(line, records, plan)
    return out


def decision_rows(records: Sequence[CellResult], plan: CapacityPlan | None = None) -> list[Row]:
    """Every (section, latency, rows) of the run with its levels, in a stable order; with
    `plan`, each row's capacities within its objective."""
    records = [r for r in records if r.cell.config is not None or r.cell.user_app]
    closed = [r for r in records if r.cell.rate is None]
    roles = Roles.of(closed)
    parts = roles.parts()
    found_capacity = _capacities(records, plan, roles)
    records = closed
    by_key: dict[tuple[Any, ...], CellStats] = {}
    for c in by_cell(records):
        cell = c.cell
        group = _group(cell)
        by_key[(*group, (cell.mode, cell.known("style")), cell.connections)] = c
    groups = sorted(
        {k[:3] for k in by_key}, key=lambda k: (tuple(shown(v) for v in k[0]), k[1], k[2])
    )
    levels = sorted({r.cell.connections for r in records})
    out = []
    for group in groups:
        found = []
        for level in levels:
            cells = {
                role: by_key.get((*group, variant, level)) if variant else None
                for role, variant in parts.items()
            }
            if any(cells.values()):
                found.append(_level(level, cells, records))
        dep = [s for lv in levels if (s := by_key.get((*group, roles.dependency, lv)))]
        held, collapsed_at = _held(dep) if dep else (None, None)
        section, latency, payload = group
        row = Row(
            section,
            latency,
            payload,
            tuple(found),
            held,
            collapsed_at,
            roles,
            capacity=found_capacity.get(group, {}),
            slo=plan.slo.text() if plan else "",
        )
        out.append(row)
    return out


# --- the sentences -----------------------------------------------------------------------------


def _levels(levels: Sequence[int]) -> str:
    text = [str(c) for c in levels]
    return text[0] if len(text) == 1 else ", ".join(text[:-1]) + " and " + text[-1]


def _span(ratios: Sequence[float]) -> str:
    low, high = min(ratios), max(ratios)
    return f"{low:.2f}×" if f"{low:.2f}" == f"{high:.2f}" else f"{low:.2f}× to {high:.2f}×"


def classify(value: Ratio | str | None) -> str:
    """async | sync | same | single | collapsed | none: what one level's ratio says."""
    if value is None:
        return "none"
    if isinstance(value, str):
        return "collapsed"
    if value.interval is None:
        return "single"
    if not value.significant:
        return "same"
    return "async" if value.value > 1 else "sync"


Kinds = dict[str, list[Level]]  # what each level's ratio says (classify) -> those levels


def _conns(kinds: Kinds, kind: str) -> list[int]:
    return [lv.connections for lv in kinds.get(kind, [])]


def _ratios(kinds: Kinds, kind: str) -> list[float]:
    return [lv.ratio.value for lv in kinds.get(kind, []) if isinstance(lv.ratio, Ratio)]


def sentences(row: Row) -> list[str]:
    """What the row's numbers show, then the rule they support (one or two sentences)."""
    if row.roles.async_ is None or row.roles.sync is None:
        return [f"Needs an async and a sync variant to compare; measured: {name(row.roles.sync)}."]
    kinds: Kinds = {}
    for level in row.levels:
        kinds.setdefault(classify(level.ratio), []).append(level)
    out = [_measured_sentence(row, kinds)]
    if row.capacity:
        out.insert(0, _capacity_sentence(row))
    rule = _throughput_rule(row, kinds)
    if by_capacity := _capacity_rule(row):
        rule = f"{by_capacity}; by throughput alone: {rule.removeprefix('Rule: ')}"
    rule += _dependency_clause(row)
    return [*out, rule + "."]


def _measured_sentence(row: Row, kinds: Kinds) -> str:
    """The sentence of what the levels showed: async/sync where each kind of ratio was found,
    and both p99s at the highest level that has them."""
    parts = []
    if "async" in kinds:
        parts.append(
            f"async served more than sync at {_levels(_conns(kinds, 'async'))} connections "
            f"({_span(_ratios(kinds, 'async'))}, interval above 1)"
        )
    if "sync" in kinds:
        parts.append(
            f"sync served more at {_levels(_conns(kinds, 'sync'))} (async/sync "
            f"{_span(_ratios(kinds, 'sync'))}, interval below 1)"
        )
    if "same" in kinds:
        parts.append(
            f"no significant difference at {_levels(_conns(kinds, 'same'))} "
            f"({_span(_ratios(kinds, 'same'))})"
        )
    if "single" in kinds:
        parts.append(
            f"async/sync {_span(_ratios(kinds, 'single'))} at {_levels(_conns(kinds, 'single'))} "
            "from one measurement each (no interval)"
        )
    if "collapsed" in kinds:
        said = "; ".join(f"{lv.connections}: {lv.ratio}" for lv in kinds["collapsed"])
        parts.append(f"no ratio where a side collapsed ({said})")
    sync = name(row.roles.sync)
    first = f"Against sync {sync.split(' ', 1)[1]}: " + "; ".join(parts) if parts else ""
    top = next(
        (
            lv
            for lv in reversed(row.levels)
            if lv.p99_ms.get("async") is not None and lv.p99_ms.get("sync") is not None
        ),
        None,
    )
    if top is not None:
        a, s = top.p99_ms["async"], top.p99_ms["sync"]
        first += f"; p99 at {top.connections}: {a:,.0f} ms async, {s:,.0f} ms sync"
    return first + "." if first else "No level was measured for both sides."


def _throughput_rule(row: Row, kinds: Kinds) -> str:
    """The rule by throughput: a side that served more at some levels and less at none, or
    why there is none."""
    wins, losses = _conns(kinds, "async"), _conns(kinds, "sync")
    if wins and not losses:
        return _async_rule(row, kinds["async"])
    if losses and not wins:
        return (
            "Rule: sync with the session inside the endpoint, at least as fast here"
            if row.roles.sync and row.roles.sync[1]
            else "Rule: the sync app, at least as fast here"  # its session style is its own
        )
    if wins and losses:
        return (
            f"Rule: it depends on the load: async ahead at {_levels(wins)}, sync at "
            f"{_levels(losses)} connections"
        )
    if "same" in kinds:
        return "Rule: either, as far as throughput goes at these levels"
    if silent := [r for r in ("async", "sync") if not any(lv.rps.get(r) for lv in row.levels)]:
        verdicts = "; ".join(
            f"{name(row.roles.parts()[r])}: "
            + ", ".join(dict.fromkeys(v for lv in row.levels if (v := lv.verdicts.get(r))))
            for r in silent
        )
        return f"Rule: none: {' and '.join(silent)} never served ({verdicts})"
    return "Rule: none from these measurements (REPEATS=5 or more gives intervals)"


def _async_rule(row: Row, ahead: Sequence[Level]) -> str:
    """Async, where it served more at the levels `ahead` and less at none."""
    wins = [lv.connections for lv in ahead]
    measured = [lv.connections for lv in row.levels]
    best = max(ahead, key=lambda lv: lv.ratio.value if isinstance(lv.ratio, Ratio) else 0)
    assert isinstance(best.ratio, Ratio)
    if wins == measured:
        where = "at every level measured"
    elif wins == measured[measured.index(wins[0]) :]:
        where = f"from {wins[0]} connections on"
    else:
        where = f"at {_levels(wins)} connections"
    return f"Rule: async, {where} (by up to {best.ratio.value - 1:.0%}, at {best.connections})"


def capacity_text(found: Threshold | None) -> str:
    """'400 req/s, not 850' / 'less than 100 req/s' / 'at least 3200 req/s'."""
    if found is None or not found.counts:
        return "not searched" if found is None else "no probe answered"
    rate = sustains(found)
    if rate is None:
        return f"less than {found.upper} req/s"
    if found.upper is None:
        return f"at least {rate} req/s (the highest probed)"
    return f"{rate} req/s, not {found.upper}"


def _capacity_sentence(row: Row) -> str:
    said = [
        f"{name(variant)} sustains {capacity_text(row.capacity.get(role))}"
        for role, variant in row.roles.parts().items()
        if variant is not None and role in row.capacity
    ]
    return f"Within {row.slo}, in warm 10 s open-loop probes: " + "; ".join(said) + "."


def _capacity_rule(row: Row) -> str:
    """The rule by capacity within the objective, where both sides were searched: a side wins
    where it met the objective at a rate the other missed at."""
    a, s = row.capacity.get("async"), row.capacity.get("sync")
    if a is None or s is None or not a.counts or not s.counts:
        return ""
    a_rate, s_rate = sustains(a), sustains(s)
    a_name, s_name = name(row.roles.async_), name(row.roles.sync)
    if a_rate is not None and s.upper is not None and a_rate >= s.upper:
        return (
            f"Rule: async, by capacity within {row.slo}: {a_name} met it at {a_rate} req/s, "
            f"where {s_name} missed it at {s.upper}"
        )
    if s_rate is not None and a.upper is not None and s_rate >= a.upper:
        return (
            f"Rule: sync, by capacity within {row.slo}: {s_name} met it at {s_rate} req/s, "
            f"where {a_name} missed it at {a.upper}"
        )
    return (
        f"Rule: either, by capacity within {row.slo}: the brackets overlap ({a_name} "
        f"{capacity_text(a)}; {s_name} {capacity_text(s)})"
    )


def _dependency_clause(row: Row) -> str:
    if row.roles.dependency is None:
        return ""
    top = max((lv.connections for lv in row.levels), default=0)
    if row.collapsed_at is None:
        return f"; sync `dependency` held at every level, up to {top} connections"
    if row.held is None:
        return f"; sync `dependency` collapsed already at {row.collapsed_at} connections"
    return (
        f"; sync `dependency` held up to {row.held} connections and collapsed at {row.collapsed_at}"
    )


# --- the files ---------------------------------------------------------------------------------


def _ratio_text(value: Ratio | str | None) -> str:
    if value is None:
        return "-"
    if isinstance(value, str):
        return value
    return value.describe().removeprefix("~ ").removesuffix(", no significant difference")


def _p99_text(level: Level) -> str:
    a, s = level.p99_ms.get("async"), level.p99_ms.get("sync")
    if a is None and s is None:
        return ""
    fmt = [
        f"{v:,.0f}{'†' if _thin(level, role) else ''}" if v is not None else "-"
        for role, v in (("async", a), ("sync", s))
    ]
    text = f"p99 {fmt[0]} / {fmt[1]} ms"
    if (d := level.p99_ms.get("async_dependency")) is not None:
        thin = "†" if _thin(level, "async_dependency") else ""
        text += f"<br>async `dependency`: p99 {d:,.0f}{thin} ms"
    return text


def _thin(level: Level, role: str) -> bool:
    above = level.p99_above.get(role)
    return above is not None and above < MIN_TAIL


def _held_text(row: Row) -> str:
    if row.roles.dependency is None:
        return "not measured"
    top = max((lv.connections for lv in row.levels), default=0)
    if row.collapsed_at is None:
        return f"all levels (up to {top})"
    if row.held is None:
        return f"none (collapsed at {row.collapsed_at})"
    return f"{row.held} (collapsed at {row.collapsed_at})"


def table(rows: Sequence[Row]) -> str:
    levels = sorted({lv.connections for r in rows for lv in r.levels})
    head = [
        "DB latency (one way)",
        "rows",
        *(f"{c} conns: async / sync [95% CI], p99 async / sync" for c in levels),
        "sync `dependency` held up to (conns)",
        "rule",
    ]
    searched = any(r.capacity for r in rows)
    if searched:
        head.insert(2, f"sustains within {rows[0].slo}")
    body = []
    for row in rows:
        by_level = {lv.connections: lv for lv in row.levels}
        cells = []
        for c in levels:
            lv = by_level.get(c)
            if lv is None:
                cells.append("not run")
                continue
            text = _ratio_text(lv.ratio)
            if classify(lv.ratio) in ("async", "sync"):
                text = f"**{text}**"
            p99 = _p99_text(lv)
            cells.append(f"{text}<br>{p99}" if p99 else text)
        found = [
            f"{name(v)}: {capacity_text(row.capacity.get(role))}"
            for role, v in row.roles.parts().items()
            if v is not None and role in row.capacity
        ]
        known = row.rows is not None  # a user's app: its database and data are its own
        body.append(
            [
                latency_label(row.latency) if known else "-",
                str(row.rows) if known else "-",
                *(["<br>".join(found) or "not searched"] if searched else []),
                *cells,
                _held_text(row),
                row.rule,
            ]
        )
    align = ["---:", "---:", *(["---"] if searched else []), *["---:"] * len(levels), "---", "---"]
    return md_table(head, body, align)


EXPLAINED = (
    "Each row is one database latency (one way, added by the relay between the app and "
    "PostgreSQL; 0 is loopback without the relay) and one data set (rows returned by `GET "
    "/users`). For each connection level: **async / sync**, successful requests/s of {async_} "
    "over {sync}, the geometric mean of the ratios of measurements taken in the same round, "
    "with its 95% confidence interval (t on the logarithms; **bold** where it excludes 1); "
    "then the p99 latency of each, of the measured responses of its rounds merged († where "
    f"fewer than {MIN_TAIL} responses lie above it)."
)
DEPENDENCY_EXPLAINED = (
    " **Sync `dependency` held up to** is the highest level at which the seed's sync style "
    "served in every round, below the first level where it did not."
)


PAIRS_EXPLAINED = (
    " Like is compared with like: the two sides share their session style, so the ratio is "
    "the mode's alone; async `dependency` keeps its pooled connection until after the response "
    "is sent, which lengthens its tail (results/README.md, The async tail), and is shown beside "
    "them."
)


APP_EXPLAINED = (
    "Your two apps, under the same server, workers and tokens, sent the same requests "
    "(their database latency and data are their own: `-`). For each connection level: "
    "**async / sync**, successful requests/s of the async app over the sync app, the geometric "
    "mean of the ratios of measurements taken in the same round, with its 95% confidence "
    "interval (t on the logarithms; **bold** where it excludes 1); then the p99 latency of "
    f"each, of the measured responses of its rounds merged († where fewer than {MIN_TAIL} "
    "responses lie above it)."
)


def explained(roles: Roles) -> str:
    if roles.async_ and roles.async_[1] is None:
        return APP_EXPLAINED + " The rules are generated from these numbers."
    text = EXPLAINED.format(async_=name(roles.async_), sync=name(roles.sync))
    if roles.async_ and roles.sync and roles.async_[1] == roles.sync[1] and roles.async_dependency:
        text += PAIRS_EXPLAINED
    if roles.dependency:
        text += DEPENDENCY_EXPLAINED
    return text + " The rules are generated from these numbers."


def plan_of(meta: dict[str, Any]) -> CapacityPlan | None:
    """The run's capacity search, where it had one."""
    found = meta.get("capacity")
    return CapacityPlan.from_json(found) if found else None


def sections(
    records: Sequence[CellResult],
    charts: str = "charts",
    level: int = 2,
    plan: CapacityPlan | None = None,
) -> list[str]:
    """Each section's table and charts (`charts`: the charts folder, relative to the page)."""
    rows = decision_rows(records, plan)
    varying = varying_fields(records)
    out = []
    for section in dict.fromkeys(r.section for r in rows):
        slug = section_slug(section, varying)
        mine = [r for r in rows if r.section == section]
        out += [f"{'#' * level} {section_title(section, varying)}\n", table(mine)]
        if any(r.rows is not None for r in mine):  # a user's apps: one unknown latency, no chart
            out += [
                f"![throughput and p99 against latency]({charts}/latency-{slug}.png)\n",
                f"![async / sync with 95% intervals]({charts}/ratio-{slug}.png)\n",
            ]
    return out


def markdown(meta: dict[str, Any], records: Sequence[CellResult], run_name: str) -> str:
    plan = plan_of(meta)
    rows = decision_rows(records, plan)
    parts = [header(meta, records, run_name, title="decision")]
    if not rows:
        return "\n".join([*parts, "No measurement yet.\n"])
    if plan is not None:
        parts += [f"## Capacity within {plan.slo.text()}\n", *capacity.body(meta, records), ""]
        parts.append("## Throughput and tail under a closed loop, and the rule\n")
    parts += [
        explained(rows[0].roles) + "\n",
        *sections(records, plan=plan, level=3 if plan else 2),
    ]
    parts.append(
        "Every comparison between variants (async / sync `dependency`, context / dependency, "
        "one latency over another, ...) is in [summary.md](summary.md), with every "
        "measurement.\n"
    )
    return "\n".join(parts)


def findings(records: Sequence[CellResult], plan: CapacityPlan | None = None) -> list[str]:
    """The rules, one bullet per row, for the console."""
    rows = decision_rows(records, plan)
    varying = varying_fields(records)
    return [
        f"- **{section_title(r.section, varying)}"
        + (f", DB latency {latency_label(r.latency)}, {r.rows} rows" if r.rows is not None else "")
        + f"**: {r.rule}"
        for r in rows
    ]


CSV_FIELDS = (
    "server", "workers", "pool", "tokens", "pool_timeout_s", "stack", "workload", "db_latency",
    "db_latency_ms", "rows", "connections", "async_variant", "sync_variant", "async_rps",
    "sync_rps", "dependency_rps", "async_over_sync", "async_over_sync_low",
    "async_over_sync_high", "async_over_sync_n", "async_over_dependency",
    "async_over_dependency_low", "async_over_dependency_high", "async_p99_ms", "sync_p99_ms",
    "dependency_p99_ms", "async_verdict", "sync_verdict", "dependency_verdict",
    "dependency_held_up_to", "dependency_collapsed_at", "async_dependency_rps",
    "async_dependency_p99_ms", "async_dependency_verdict", "slo", "async_sustains", "async_not",
    "sync_sustains", "sync_not", "async_dependency_sustains", "async_dependency_not", "rule",
)  # fmt: skip
ROLES = ("async", "sync", "dependency", "async_dependency")


def _ratio_json(value: Ratio | str | None) -> dict[str, Any] | str | None:
    if not isinstance(value, Ratio):
        return value
    low, high = (value.interval.low, value.interval.high) if value.interval else (None, None)
    return {"value": value.value, "low": low, "high": high, "n": value.n}


def _capacity_json(found: Threshold) -> dict[str, Any]:
    return {
        "sustains": sustains(found),
        "not": found.upper,
        "missed": {str(rate): list(count) for rate, count in sorted(found.counts.items())},
    }


def _apps(records: Sequence[CellResult]) -> dict[str, str]:
    """Each mode's user app (module:attr), for a decision between two of them."""
    return {str(r.cell.mode): r.cell.user_app.app for r in records if r.cell.user_app}


def json_data(records: Sequence[CellResult], plan: CapacityPlan | None = None) -> dict[str, Any]:
    rows = decision_rows(records, plan)
    out = []
    for row in rows:
        section = dict(zip(SECTION_FIELDS, (shown(v) for v in row.section), strict=True))
        known = row.rows is not None  # a user's apps: their database is their own
        out.append(
            {
                **section,
                "stack": section["stack"] if known else None,
                **({"apps": apps} if (apps := _apps(records)) else {}),
                "db_latency": str(row.latency) if known else None,
                "db_latency_ms": row.latency.ms if known else None,
                "rows": row.rows,
                "async_variant": name(row.roles.async_).replace("`", ""),
                "sync_variant": name(row.roles.sync).replace("`", ""),
                "async_dependency_variant": name(row.roles.async_dependency).replace("`", ""),
                "dependency_held_up_to": row.held,
                "dependency_collapsed_at": row.collapsed_at,
                "slo": row.slo or None,
                "capacity": {
                    name(row.roles.parts()[role]).replace("`", ""): _capacity_json(found)
                    for role, found in row.capacity.items()
                },
                "levels": [
                    {
                        "connections": lv.connections,
                        "async_over_sync": _ratio_json(lv.ratio),
                        "async_over_dependency": _ratio_json(lv.ratio_dependency),
                        "rps": lv.rps,
                        "p99_ms": lv.p99_ms,
                        "p99_above": lv.p99_above,
                        "verdicts": lv.verdicts,
                    }
                    for lv in row.levels
                ],
                "rule": row.rule,
            }
        )
    return {"rows": out}


def csv_text(records: Sequence[CellResult], plan: CapacityPlan | None = None) -> str:
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=CSV_FIELDS, lineterminator="\n")
    writer.writeheader()
    for row in json_data(records, plan)["rows"]:
        section = {k: row[k] for k in SECTION_FIELDS}
        section["server"] = section.pop("name")
        for lv in row["levels"]:
            ratio, dep = lv["async_over_sync"], lv["async_over_dependency"]
            writer.writerow(
                {
                    **section,
                    **{k: row[k] for k in ("db_latency", "db_latency_ms", "rows", "rule")},
                    **{k: row[k] for k in ("async_variant", "sync_variant")},
                    "dependency_held_up_to": row["dependency_held_up_to"],
                    "dependency_collapsed_at": row["dependency_collapsed_at"],
                    "connections": lv["connections"],
                    **{f"{k}_rps": lv["rps"].get(k) for k in ROLES},
                    **{f"{k}_p99_ms": lv["p99_ms"].get(k) for k in ROLES},
                    **{f"{k}_verdict": lv["verdicts"].get(k) for k in ROLES},
                    **{
                        f"{k}_{what}": row["capacity"].get(row[f"{k}_variant"], {}).get(what)
                        for k in ("async", "sync", "async_dependency")
                        for what in ("sustains", "not")
                    },
                    "slo": row["slo"],
                    **_ratio_columns("async_over_sync", ratio, with_n=True),
                    **_ratio_columns("async_over_dependency", dep),
                }
            )
    return buf.getvalue()


def _ratio_columns(prefix: str, value: Any, with_n: bool = False) -> dict[str, Any]:
    if not isinstance(value, dict):
        out = {prefix: value, f"{prefix}_low": None, f"{prefix}_high": None}
        return {**out, f"{prefix}_n": None} if with_n else out
    out = {prefix: value["value"], f"{prefix}_low": value["low"], f"{prefix}_high": value["high"]}
    return {**out, f"{prefix}_n": value["n"]} if with_n else out
