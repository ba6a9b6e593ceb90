"""capacity.md: for each deployment shape, the open-loop rate each variant sustains within the
objective, with the probes that bracket it; the answer first, in sentences made from them."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from harness.domain.capacity import bracket, describe, sustains
from harness.domain.cell import Cell, shown
from harness.domain.plan import CapacityPlan
from harness.domain.result import CellResult
from harness.domain.search import Threshold
from harness.infra.histogram import probe_missed, slo_check
from harness.report.summary import header
from harness.report.table import md_table

EXPLAINED = (
    "Each probe is a fresh server, warmed up at its rate for {warmup:g} s, then measured for "
    "{window:g} s with requests due at that rate whatever it did (docs/method.md, Open loop). It "
    "**missed** the objective when more of its requests than the objective allows were slower "
    "than the limit from the moment they were due, failed, timed out or were dropped, or when "
    "it collapsed. A variant **sustains** the highest rate that met it in every probe, below "
    "every rate that missed; *not* is the lowest rate that always missed (where none always "
    "did, the lowest that ever did). The search doubles from START, bisects to 10%, then "
    "probes both edges again until each has BOUNDARY_PROBES answers, within BUDGET per line."
)


def _shape(cell: Cell) -> tuple[str, ...]:
    k = cell.known
    if cell.user_app:  # its rows and database latency are its own: the tokens are known
        return (  # the apps of a decision side by side: the shape leaves out which app
            str(k("name")),
            f"workers {k('workers')}",
            f"tokens {cell.tokens_label}",
            f"sent {cell.workload_label}",
        )
    latency = "0" if cell.db_latency is None else str(cell.db_latency)
    return (
        cell.server_label,
        f"workers {shown(k('workers'))}",
        f"rows {shown(k('rows'))}",
        f"database latency {latency}",
    )


def _name(cell: Cell) -> str:
    return cell.short_name


def line_result(line: Cell, records: Sequence[CellResult], plan: CapacityPlan) -> Threshold:
    probes = [r for r in records if r.cell.rate is not None and r.cell.variant == line.variant]
    answers = [(r.cell.rate or 0.0, probe_missed(r, plan.slo)) for r in probes]
    return bracket(answers, plan.ceiling)


def _worst_miss(line: Cell, records: Sequence[CellResult], plan: CapacityPlan) -> str:
    """At the lowest rate that missed: what share of its requests missed, and why."""
    found = line_result(line, records, plan)
    if found.upper is None:
        return "-"
    probes = [
        r
        for r in records
        if r.cell.variant == line.variant and r.cell.rate is not None
        and round(r.cell.rate) == found.upper
    ]  # fmt: skip
    check = slo_check(probes, plan.slo)
    return check.text() if check else "-"


def markdown(meta: dict[str, Any], records: Sequence[CellResult], name: str) -> str:
    plan = CapacityPlan.from_json(meta["capacity"])
    head = header(meta, records, name).replace("syncasync-bench run", "syncasync-bench capacity", 1)
    return "\n".join([head, "", f"## Capacity within {plan.slo.text()}", "", *body(meta, records)])


def body(meta: dict[str, Any], records: Sequence[CellResult]) -> list[str]:
    """The answer per shape in sentences, what the words mean, the table."""
    plan = CapacityPlan.from_json(meta["capacity"])
    shapes: dict[tuple[str, ...], list[Cell]] = {}
    for line in plan.lines:
        shapes.setdefault(_shape(line), []).append(line)
    # The variants in one order in every shape, whatever order they were searched in.
    order = {_name(line): i for i, line in enumerate(next(iter(shapes.values()), []))}
    for lines in shapes.values():
        lines.sort(key=lambda line: order.get(_name(line), len(order)))
    parts: list[str] = []
    for shape, lines in shapes.items():
        said = []
        for line in lines:
            found = line_result(line, records, plan)
            said.append(f"{_name(line)} {describe(found, plan.slo)}")
        parts += [f"- **{', '.join(shape)}**: " + "; ".join(said) + ".", ""]
    rows = []
    for shape, lines in shapes.items():
        for line in lines:
            found = line_result(line, records, plan)
            probes = sum(n for _, n in found.counts.values())
            rows.append(
                [
                    *shape,
                    _name(line),
                    shown(sustains(found)) if sustains(found) is not None else "-",
                    str(found.upper) if found.upper is not None else "-",
                    ", ".join(f"{m}/{n} at {r}" for r, (m, n) in sorted(found.counts.items())),
                    str(probes),
                    _worst_miss(line, records, plan),
                ]
            )
    head = [
        "server", "workers", "rows", "database", "variant", "sustains (req/s)", "not (req/s)",
        "missed, per rate probed", "probes", "at the lowest rate that missed",
    ]  # fmt: skip
    if plan.lines and plan.lines[0].user_app:
        head[2:4] = ["tokens", "requests"]
    warmup = plan.warmup_s
    if warmup is None:
        warmup = float((meta.get("options") or {}).get("warmup_s") or 0)
    window = plan.lines[0].duration_s if plan.lines else 0.0
    parts += [
        EXPLAINED.format(warmup=warmup, window=window),
        "",
        md_table(head, rows, ["---"] * 5 + ["---:", "---:", "---", "---:", "---"]),
        "",
        f"START {plan.start} req/s, CEILING {plan.ceiling}, BOUNDARY_PROBES {plan.probes}, "
        f"BUDGET {plan.budget_s:g} s per line; every probe's figures are in the run's "
        "summary.md, their records in `cells/`.",
        "",
    ]
    return parts
