"""results/README.md: the reference presented, generated from its run directories only.

reference-runs.toml lists the runs (results/reference/<name>) and the section that presents
each; SECTIONS draws a section from its runs, and the page gives the sections in the list's
order. Regenerating from the same run files reproduces the page exactly.
"""

from __future__ import annotations

import json
import os
import shlex
import statistics
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from datetime import datetime
from pathlib import Path
from typing import Any

from harness.domain.axes import FROZEN, Layer, Mode, ServerName, SessionStyle, Verdict, Workload
from harness.domain.cell import Cell
from harness.domain.errors import HarnessError
from harness.domain.latency import MIN_TAIL, Kind
from harness.domain.plan import CapacityPlan, MapLine, MapPlan
from harness.domain.result import CellResult, generator_cost
from harness.domain.rules import agreement, queue_model
from harness.domain.search import Threshold
from harness.infra.histogram import measured_ms
from harness.report import (
    brackets,
    capacity,
    ceilings,
    comparisons,
    decision,
    evidence,
    files,
    generators,
    layers,
    map_summary,
    summary,
    waits,
)
from harness.report.map_summary import threshold_of
from harness.report.stats import Ratio, by_cell
from harness.report.table import md_table
from harness.store import runlist
from harness.store.rundir import RunDir
from harness.store.runlist import RunList


def _rel(path: Path, base: Path) -> str:
    return path.relative_to(base).as_posix()


DOCS = Path(__file__).resolve().parents[2] / "docs"
LATENCY_DOC = "method.md#latency-two-distributions-merged"
OPEN_LOOP_DOC = "method.md#open-loop-a-fixed-arrival-rate-loadopen"
REPRO_DOC = "failure-map.md#how-far-a-threshold-moves-between-two-runs"


def _docs(base: Path, page: str) -> str:
    """A page of docs/ (with its anchor), relative to the page that links it."""
    return Path(os.path.relpath(DOCS, base.resolve())).as_posix() + "/" + page


@dataclass(frozen=True)
class Page:
    """What a section is drawn from: the reference's folder, the page's (links are relative to
    it) and the run list, which says which runs each section presents."""

    root: Path
    base: Path
    runs: RunList

    def dirs(self, section: str) -> list[RunDir]:
        """The section's runs measured so far, in the list's order."""
        return [
            RunDir.open(self.root / r.name)
            for r in self.runs.of(section)
            if (self.root / r.name / "metadata.json").is_file()
        ]

    def dir(self, section: str) -> RunDir | None:
        return next(iter(self.dirs(section)), None)

    def by_server(self, section: str) -> dict[ServerName, RunDir]:
        """One run per server, as the benches and decisions are (the first where two are)."""
        runs: dict[ServerName, RunDir] = {}
        for run in self.dirs(section):
            served = {str(r.cell.known("name")) for r in run.records()}
            if len(served) == 1 and (server := served.pop()) in {str(s) for s in ServerName}:
                runs.setdefault(ServerName(server), run)
        return runs


def _first_session(run: RunDir) -> dict[str, Any]:
    """Where and with what the run was started (its first provenance entry)."""
    return dict(run.metadata()["provenance"][0])


@dataclass(frozen=True)
class Maps:
    """The failure map: the first run of the `map` section, and each later one of servers it
    does not have, planned with the same settings, read as one plan (its lines are per server)
    over all their probes."""

    plan: MapPlan
    records: list[CellResult]
    runs: dict[ServerName, RunDir]  # where each server's probes and charts are
    main: RunDir  # `map`: its pgbench ceilings
    left_out: list[str]  # extra maps planned otherwise


def _maps(page: Page) -> Maps | None:
    if not (found := page.dirs("map")):
        return None
    main, *extras = found
    plan = MapPlan.from_json(main.metadata()["plan"])
    records = main.records()
    runs = dict.fromkeys(plan.servers, main)
    left_out = []
    for extra in extras:
        other = MapPlan.from_json(extra.metadata()["plan"])
        if set(other.servers) & set(runs) or replace(other, servers=plan.servers) != plan:
            left_out.append(extra.path.name)
            continue
        plan = replace(plan, servers=(*plan.servers, *other.servers))
        records += extra.records()
        runs |= dict.fromkeys(other.servers, extra)
    return Maps(plan, records, runs, main, left_out)


def stacks_side_by_side(current: RunDir, old: RunDir) -> list[str]:
    """The collapse point of sync `dependency` at the baseline under both stacks."""
    plans = {
        s: MapPlan.from_json(r.metadata()["plan"]) for s, r in (("current", current), ("2021", old))
    }
    records = {"current": current.records(), "2021": old.records()}
    cpus = _first_session(old).get("machine", {}).get("cpu_count", "?")
    head = [
        "server",
        "2021: threads T",
        "2021: predicted",
        "2021: measured",
        "current: tokens T",
        "current: predicted",
        "current: measured",
    ]
    rows = []
    for server in plans["2021"].servers:
        cells = [str(server)]
        for name in ("2021", "current"):
            plan = plans[name]
            line = next(
                (x for x in plan.lines() if x.server == server and x.predicted is not None), None
            )
            if line is None or server not in plan.servers:
                cells += ["-", "-", "-"]
                continue
            found = threshold_of(line, records[name], plan.ceiling)
            cells += [line.server_config.tokens_label, f"~{line.predicted}", found.describe()]
        rows.append(cells)
    plan = plans["2021"]
    pool = plan.pools[0]
    return [
        f"Sync `dependency`, pool {pool} (C = {pool.capacity}), {plan.workers[0]} worker, "
        "GET /users, the same machine and settings. Under 2021 (FastAPI 0.63, Starlette 0.13.6) "
        "sync code ran on asyncio's default executor, min(32, CPUs + 4) threads: "
        f"{plan.tokens[0]} on this machine's {cpus} CPUs, and nothing to configure; today it "
        "runs on AnyIO's limiter, 40 tokens by default. The prediction is T + C in both cases.",
        "",
        md_table(head, rows, ["---"] * len(head)),
    ]


def _is(r: CellResult, mode: Mode, style: SessionStyle) -> bool:
    return _is_cell(r.cell, mode, style)


def _is_cell(cell: Cell, mode: Mode, style: SessionStyle) -> bool:
    return cell.mode is mode and cell.known("style") is style and cell.workload is Workload.list


def bench_findings(server: ServerName, records: Sequence[CellResult]) -> list[str]:
    """Plain sentences from one server's run of the 2021 write-up's tables; speed stated as
    ratios with intervals."""
    out = []
    dep = sorted(
        (c for c in by_cell(records) if _is(c.records[0], Mode.sync, SessionStyle.dependency)),
        key=lambda c: c.cell.connections,
    )
    collapsed = [c for c in dep if c.frozen]
    if collapsed:
        first = collapsed[0]
        held = [c.cell.connections for c in dep if c.cell.connections < first.cell.connections]
        out.append(
            "In the run of the 2021 write-up's tables, sync `dependency` held up to "
            f"{max(held, default=0)} connections and collapsed at {first.cell.connections} "
            f"({first.verdict}, "
            f"{first.pool_timeouts} QueuePool timeouts in the server's log)."
        )
    else:
        top = max((c.cell.connections for c in dep), default=0)
        out.append(
            "In the run of the 2021 write-up's tables, sync `dependency` did not collapse up to "
            f"{top}."
        )
    below = [c.cell.connections for c in dep if not c.frozen]
    for comparison in comparisons.comparisons(records):
        if comparison.factor != "mode" or not _is_cell(
            comparison.a, Mode.sync, SessionStyle.dependency
        ):
            continue
        stated = []
        for level in below:
            value = comparisons.at_level(comparison, records, level)
            if value is not None:
                text = value if isinstance(value, str) else value.describe()
                stated.append(f"{level}: {text}")
        if stated:
            out.append(
                "Async `dependency` over sync `dependency`, successful requests/s below the "
                "freeze (connections: ratio [95% interval]): " + "; ".join(stated) + "."
            )
    ctx = [r for r in records if _is(r, Mode.sync, SessionStyle.context) and r.wrk]
    if ctx:
        bad = [r.cell.connections for r in ctx if r.verdict in FROZEN]
        top = max(r.cell.connections for r in ctx)
        out.append(
            "Sync `context` (the same query, session closed inside the endpoint) "
            + (f"collapsed at {bad[0]}." if bad else f"never collapsed, up to {top} connections.")
        )
    heavy = [
        r
        for r in records
        if r.cpu
        and r.cpu.server_s
        and r.cpu.postgres_s is not None
        and r.cell.connections >= 12
        and r.verdict not in FROZEN
    ]
    if heavy:
        server_cpu = sum(r.cpu.server_s or 0 for r in heavy if r.cpu)
        pg_cpu = sum(r.cpu.postgres_s or 0 for r in heavy if r.cpu)
        wrk_cpu = sum(r.cpu.wrk_s or 0 for r in heavy if r.cpu)
        total = server_cpu + pg_cpu + wrk_cpu
        out.append(
            f"Of the CPU time used during the measured runs at 12 connections and more (cells "
            f"that did not collapse), the server processes took {server_cpu / total:.0%}, "
            f"PostgreSQL {pg_cpu / total:.0%} and wrk {wrk_cpu / total:.0%}."
        )
    return out


def map_findings(server: ServerName, plan: MapPlan, records: Sequence[CellResult]) -> list[str]:
    out = []
    lines = [line for line in plan.lines() if line.server == server]
    base = lines[0]
    moved = []
    for line in lines:
        found = threshold_of(line, records, plan.ceiling)
        guess = line.predicted
        if line is base:
            out.append(
                f"The failure map puts the collapse of sync `dependency` with pool "
                f"{line.server_config.pool} and {line.server_config.tokens} tokens at: "
                f"{found.describe()} (predicted ~{guess})."
            )
        elif guess is not None:
            moved.append(f"{plan.change(line)}: {found.describe()} (predicted ~{guess})")
        else:
            out.append(f"{line.mode} `{line.style}`: {found.describe()}.")
    if moved:
        out.insert(1, "What moved it: " + "; ".join(moved) + ".")
    return out


def variant_findings(server: ServerName, plan: MapPlan, records: Sequence[CellResult]) -> list[str]:
    """Where each variant of `map-variants` froze, at the baseline."""
    said = [
        f"{line.mode} `{line.style}` {threshold_of(line, records, plan.ceiling).describe()}"
        for line in plan.lines()
        if line.server == server
    ]
    if not said:
        return []
    base = plan.baseline(server)
    return [
        f"The other variants, with the same pool ({base.pool}), {base.tokens} tokens and "
        f"{base.workers} worker{'s' if base.workers > 1 else ''}: " + "; ".join(said) + "."
    ]


def stack_findings(server: ServerName, old: RunDir) -> list[str]:
    plan = MapPlan.from_json(old.metadata()["plan"])
    line = next((x for x in plan.lines() if x.server == server and x.predicted), None)
    if line is None:
        return []
    found = threshold_of(line, old.records(), plan.ceiling)
    return [
        f"Under the 2021 stack ({line.server_config.tokens} executor threads, pool "
        f"{line.server_config.pool}) the same endpoint: {found.describe()} (predicted "
        f"~{line.predicted})."
    ]


def prediction_findings(plan: MapPlan, records: Sequence[CellResult]) -> list[str]:
    """How the rule of thumb fared over every sync `dependency` line of the map."""
    pairs: list[tuple[MapLine, int, Threshold]] = []
    for line in plan.lines():
        guess = line.predicted
        found = threshold_of(line, records, plan.ceiling)
        if guess is not None and found.collapsed_at is not None:
            pairs.append((line, guess, found))
    if not pairs:
        return []
    below = [(g, f) for _, g, f in pairs if f.collapsed_at is not None and f.collapsed_at < g]
    off = [(line, g, f) for line, g, f in pairs if agreement(g, f) != "agrees"]
    ratios = [f.collapsed_at / g for _, g, f in pairs if f.collapsed_at]
    out = [
        f"Over the {len(pairs)} sync `dependency` lines that collapsed, the measured collapse "
        f"point was below the prediction workers × (T + C) in {len(below)}, and more than one "
        f"search step away from it in {len(off)}; measured / predicted ranged from "
        f"{min(ratios):.2f} to {max(ratios):.2f}."
    ]
    if below:
        named = "; ".join(
            f"{line.server} with {plan.change(line)}: collapsed at {f.collapsed_at}, predicted ~{g}"
            for line, g, f in pairs
            if f.collapsed_at is not None and f.collapsed_at < g
        )
        out.append(f"Below the prediction: {named}.")
    if off:
        trends = []
        for server in plan.servers:
            by_c = sorted(
                (line.server_config.pool.capacity, f.collapsed_at / g)
                for line, g, f in off
                if line.server == server
                and f.collapsed_at
                and f.collapsed_at > g
                and line.server_config.tokens == plan.tokens[0]
                and line.server_config.workers == plan.workers[0]
            )
            if by_c:
                trends.append(f"{server} " + ", ".join(f"C={c}: {r:.2f}" for c, r in by_c))
        trend = "; ".join(trends)
        out.append(
            "Where the measurement was above the prediction, the rule named where a stall "
            "becomes possible rather than where a short probe met it"
            + (f" (measured / predicted at the baseline T and workers: {trend})" if trend else "")
            + ". Reaching the stall needs T requests blocked on the pool while all C holders "
            "queue for a token at the same moment, which more requests in flight make more "
            "likely (the occupancy of each frozen line, below, shows what the probes met)."
        )
    out += model_findings(pairs)
    out += at_the_bound_findings(plan, records)
    return out


def model_findings(pairs: Sequence[tuple[MapLine, int, Threshold]]) -> list[str]:
    """The queue model, workers × (T + 3C), checked against every line that froze, beside the
    lower bound workers × (T + C): the median distance of each from the measured point."""
    rows: list[tuple[MapLine, float, float]] = []
    spans: dict[str, list[tuple[float, float]]] = {}
    for line, bound, found in pairs:
        model = queue_model(line.mode, line.server_config)
        if model is None or found.collapsed_at is None:
            continue
        measured = ((found.fine_at or 0) + found.collapsed_at) / 2
        rows.append((line, abs(measured / bound - 1), abs(measured / model - 1)))
        spans.setdefault(str(line.server), []).append((measured / bound, measured / model))
    if not rows:
        return []
    ranges = "; ".join(
        f"{server} {min(b for b, _ in r):.2f}–{max(b for b, _ in r):.2f} of the lower bound and "
        f"{min(m for _, m in r):.2f}–{max(m for _, m in r):.2f} of the queue model"
        for server, r in spans.items()
    )
    closer = [line for line, b, m in rows if m < b]
    off_bound = sorted(b for _, b, _ in rows)[len(rows) // 2]
    off_model = sorted(m for _, _, m in rows)[len(rows) // 2]
    servers = {
        str(s): f"{sum(1 for line in closer if line.server == s)}/"
        f"{sum(1 for line, _, _ in rows if line.server == s)}"
        for s in dict.fromkeys(line.server for line, _, _ in rows)
    }
    return [
        f"A queue model, workers × (T + 3C) (`harness/domain/rules.py`: a request passes the "
        f"FIFO token queue three times, and past (N − T)/3 = C connection holders the threads "
        f"blocked on the pool can only grow), was closer to the measured point than "
        f"workers × (T + C) on {len(closer)} of {len(rows)} lines ("
        + ", ".join(f"{s} {n}" for s, n in servers.items())
        + f"); the median distance from the measured point was {off_model:.0%} for the model "
        f"and {off_bound:.0%} for the lower bound. Measured (the middle of the last bracket) "
        f"against each: {ranges}."
    ]


def at_the_bound_findings(plan: MapPlan, records: Sequence[CellResult]) -> list[str]:
    """The servers whose every frozen sync `dependency` line froze within one search step of
    the lower bound or below it, with what their baseline's samples showed before the freeze."""
    at_bound, shown_at = [], []
    for server in plan.servers:
        lines = [x for x in plan.lines() if x.server == server and x.predicted]
        found = [(x, threshold_of(x, records, plan.ceiling)) for x in lines]
        frozen = [(x, f) for x, f in found if f.collapsed_at is not None]
        if not frozen or any("later" in agreement(x.predicted, f) for x, f in frozen):
            continue
        at_bound.append(str(server))
        line, bracket_ = frozen[0]
        probe = {r.cell.connections: r for r in records if r.cell.variant == line.variant}
        fine = probe.get(bracket_.fine_at) if bracket_.fine_at else None
        if fine is not None and fine.occupancy is not None:
            shown_at.append(
                f"{server} at {bracket_.fine_at} connections (T + C = {line.predicted}): "
                f"{evidence.busiest(fine.occupancy)}"
            )
    if not at_bound:
        return []
    return [
        f"{' and '.join(at_bound)} froze within one search step of the lower bound, or below "
        "it, on every sync `dependency` line, where the queue model is far too high: there the "
        "connection holders waited for their validation token behind new arrivals rather than "
        "among them. "
        "At the busiest moment of the last baseline probe that held: "
        + "; ".join(shown_at)
        + ". Why these servers differ from uvicorn's protocol (which gunicorn's workers also "
        "run) is not measured here; the candidate is when each lets a connection's next "
        "request into the app relative to the previous request's dependency exit."
    ]


def ceiling_findings(plan: MapPlan, records: Sequence[CellResult], root: RunDir) -> list[str]:
    pg = {p.connections: p for p in root.pgbench()}
    out = []
    for server in plan.servers:
        health = [
            r
            for r in records
            if r.cell.workload is Workload.health and r.cell.known("name") == server and r.wrk
        ]
        probes = [
            r
            for r in records
            if r.cell.known("name") == server and r.wrk and r.cell.workload is Workload.list
        ]
        if not health or not probes:
            continue
        http = max(r.wrk.ok_rps for r in health if r.wrk)
        best = max(probes, key=lambda r: r.wrk.ok_rps if r.wrk else 0)
        assert best.wrk
        out.append(
            f"{server}: the best GET /users probe ({best.cell.mode} `{best.cell.known('style')}`, "
            f"{best.cell.connections} connections) served {best.wrk.ok_rps:,.0f} req/s, "
            f"{best.wrk.ok_rps / http:.0%} of the HTTP ceiling ({http:,.0f} req/s on /health)."
        )
    if pg:
        top = max(pg.values(), key=lambda p: p.tps)
        served = max(
            (r.wrk.ok_rps for r in records if r.wrk and r.cell.workload is Workload.list),
            default=0.0,
        )
        verdict = (
            "so the database is far from what limits the apps here"
            if top.tps > 3 * served
            else "so the database is close to being a limit here too"
        )
        out.append(
            f"PostgreSQL alone answered the same query at up to {top.tps:,.0f} per second "
            f"(pgbench, {top.connections} clients), {top.tps / max(served, 1):.0f}× the best "
            f"app probe, {verdict}."
        )
    return out


def decision_findings(records: Sequence[CellResult]) -> list[str]:
    """What one server's decision run says, counted over its rows and levels."""
    rows = decision.decision_rows(records)
    if not rows:
        return []
    kinds: dict[str, list[str]] = {}
    for row in rows:
        for level in row.levels:
            kinds.setdefault(decision.classify(level.ratio), []).append(
                f"{decision.latency_label(row.latency)}/{row.rows} rows/{level.connections}"
            )
    counted = sum(len(v) for v in kinds.values())
    roles = rows[0].roles
    said = [
        f"{len(kinds[k])} {what}"
        for k, what in (
            ("async", "async ahead"),
            ("sync", "sync ahead"),
            ("same", "without a significant difference"),
            ("single", "from one measurement"),
            ("collapsed", "where a side collapsed"),
        )
        if k in kinds
    ]
    wins = [
        level.ratio.value
        for row in rows
        for level in row.levels
        if decision.classify(level.ratio) == "async" and isinstance(level.ratio, Ratio)
    ]
    out = [
        f"In the decision run, {decision.name(roles.async_)} against {decision.name(roles.sync)} "
        f"over {counted} latency × payload × load comparisons ({len(rows)} "
        f"row{'s' * (len(rows) != 1)} with their connection levels): " + ", ".join(said) + "."
    ]
    if wins:
        out.append(f"Where async was ahead, by {min(wins):.2f}× to {max(wins):.2f}×.")
    held = [r for r in rows if r.roles.dependency is not None and r.collapsed_at is not None]
    if roles.dependency is not None:
        out.append(
            f"Sync `dependency` collapsed within the levels measured in {len(held)} of "
            f"{len(rows)} rows"
            + (
                f", holding at most {max((r.held or 0) for r in held)} connections there."
                if held
                else "."
            )
        )
    return out


def freeze_section(page: Page) -> list[str]:
    """The long freeze second by second (`freeze-cycle`)."""
    cycle = page.dir("freeze")
    if not cycle or not (said := evidence.cycle_findings(cycle.records())):
        return []
    rel = _rel(cycle.path, page.base)
    chart = next(iter(sorted((cycle.path / "charts").glob("timeline-*.png"))), None)
    return [
        f"## A freeze, second by second ([run]({rel}/summary.md))",
        "",
        " ".join(said),
        "",
        *([f"![timeline]({rel}/charts/{chart.name})", ""] if chart else []),
    ]


def costs_section(page: Page) -> list[str]:
    """What the instruments cost: every run of the side channel's cost, each stated by itself
    (a later one re-measures), and the latency relay's against a direct connection."""
    parts: list[str] = []
    for run in page.dirs("costs"):
        records = run.records()
        if found := evidence.cost_findings(records):
            said = " ".join(found)
        elif table := comparisons.table(records):
            said = (
                "The latency relay without delay (`DB_LATENCY=relay`) against a direct "
                "connection (`0`), paired rounds (B / A, 95% intervals):\n\n" + table
            )
        else:
            continue
        parts += [f"Run [`{run.path.name}`]({_rel(run.path, page.base)}/summary.md): " + said, ""]
    return ["## What the instruments cost", "", *parts] if parts else []


LAYER_LEVEL = 24  # the level the layers are stated at (the issue's), or the nearest measured


def layer_findings(run: RunDir) -> list[str]:
    """How far each layer is from the driver alone (paired ratios, 95% intervals), the
    driver-alone async app against the ceilings, and on which layers sync `dependency` froze."""
    records = run.records()
    served = [r for r in records if r.cell.workload is Workload.list]
    if not layers.varies(served):
        return []
    levels = sorted({r.cell.connections for r in served})
    level = min(levels, key=lambda c: (abs(c - LAYER_LEVEL), c))
    stated, spans = [], []
    for comparison in comparisons.comparisons(served):
        if comparison.factor != "layer" or comparison.a.known("layer") is not Layer.driver:
            continue
        b = comparison.b
        name = f"{b.mode} {b.driver} `{b.known('style')}` {b.known('layer')}"
        value = comparisons.at_level(comparison, served, level)
        if value is not None:
            stated.append(f"{name}: {value if isinstance(value, str) else value.describe()}")
        ratios = [
            v.value
            for c in levels
            if (v := comparisons.at_level(comparison, served, c)) is not None
            and not isinstance(v, str)
        ]
        if len(ratios) > 1:
            spans.append(f"{name} {min(ratios):.2f}×–{max(ratios):.2f}×")
    out = []
    if stated:
        out.append(
            f"Each layer over the same variant through the driver alone (its own pool, no "
            f"SQLAlchemy), successful requests/s at {level} connections, B / A [95% interval]: "
            + "; ".join(stated)
            + "."
        )
    if spans:
        out.append(
            f"Over every level measured ({', '.join(map(str, levels))}): " + "; ".join(spans) + "."
        )
    out += _driver_alone_against_ceilings(run, records)
    out += _freeze_by_layer(served)
    return out


def _driver_alone_against_ceilings(run: RunDir, records: Sequence[CellResult]) -> list[str]:
    rows = [
        row
        for row in layers.rows(records, run.pgbench())
        if row.cell.cell.mode is Mode.async_
        and row.cell.cell.known("layer") is Layer.driver
        and row.cell.median_rps
    ]
    if not rows:
        return []
    best = max(rows, key=lambda row: row.cell.median_rps or 0.0)
    c = best.cell.cell
    rps = best.cell.median_rps or 0.0
    shares = [
        f"{rps / best.http:.0%} of the HTTP ceiling ({best.http:,.0f} req/s on `/health`)"
        if best.http
        else "",
        f"{rps / best.pg:.0%} of what PostgreSQL answered to pgbench ({best.pg:,.0f}/s)"
        if best.pg
        else "",
    ]
    against = " and ".join(x for x in shares if x) or "no ceiling measured in this run"
    return [
        f"The driver-alone async app ({c.driver}, `{c.known('style')}`) served at best "
        f"{rps:,.0f} req/s (median, {c.connections} connections): {against} at that level."
    ]


def _freeze_by_layer(records: Sequence[CellResult]) -> list[str]:
    """Where sync `dependency` first collapsed, per driver and layer (None: it held)."""
    first: dict[str, int | None] = {}
    for cell in sorted(by_cell(records), key=lambda c: c.cell.connections):
        k = cell.cell.known
        if cell.cell.mode is not Mode.sync or k("style") is not SessionStyle.dependency:
            continue
        key = f"{cell.cell.driver} {k('layer')}"
        first.setdefault(key, None)
        if cell.frozen and first[key] is None:
            first[key] = cell.cell.connections
    if not first:
        return []
    froze = {k: c for k, c in first.items() if c is not None}
    held = [k for k, c in first.items() if c is None]
    parts = []
    if froze:
        named = "; ".join(f"{k} at {c} connections" for k, c in froze.items())
        parts.append(f"collapsed on {named}")
    if held:
        top = max(r.cell.connections for r in records)
        parts.append(f"held up to {top} connections on {', '.join(held)}")
    alone = any(k.endswith(f" {Layer.driver}") for k in froze)
    why = ": the freeze needs a pool that blocks a thread, not SQLAlchemy" if alone else ""
    return ["Sync `dependency` " + "; it ".join(parts) + why + "."]


def _coverage(record: CellResult) -> float | None:
    """The share of a per-process record's ticks in the measured window at which every one of
    its processes answered; None for a record sampled through the server's port."""
    timeline = record.occupancy
    if timeline is None or not timeline.per_process or not timeline.processes:
        return None
    ticks: dict[float, int] = {}
    for sample in timeline.measured.samples:
        ticks[sample.t_s] = ticks.get(sample.t_s, 0) + 1
    if not ticks:
        return 0.0
    return sum(n >= timeline.processes for n in ticks.values()) / len(ticks)


def workers_section(run: RunDir, base: Path) -> list[str]:
    """The 2-worker map measured with every worker sampled (`map-workers`)."""
    plan = MapPlan.from_json(run.metadata()["plan"])
    records = run.records()
    session = _first_session(run)
    cpu = session.get("machine", {}).get("cpu_model", "?")
    sha = session.get("git", {}).get("sha", "?")[:12]
    covered = [c for r in records if (c := _coverage(r)) is not None]
    verdicts = ", ".join(f"{n} {v}" for v in Verdict if (n := sum(r.verdict is v for r in records)))
    parts = [
        f"## Two workers, every worker sampled ([full report]({_rel(run.path, base)}/summary.md))",
        "",
        f"The map's 2-worker line of sync `dependency` measured again with each worker answering "
        f"the side channel on a port of its own, and judged by the rule that counts a stalled "
        f"worker as a freeze (git {sha}, {cpu}; the other maps on this page were measured "
        f"before it and judged again from their samples). {len(records)} probes: {verdicts}."
        + (
            f" In the measured windows of the {len(covered)} probes, every worker answered at "
            + (
                f"{min(covered):.0%}"
                if f"{min(covered):.0%}" == f"{max(covered):.0%}"
                else f"{min(covered):.0%} to {max(covered):.0%}"
            )
            + " of the ticks."
            if covered
            else ""
        ),
        "",
        map_summary.variants_table(plan, records),
    ]
    for server in plan.servers:
        if table := map_summary.evidence_table(plan, str(server), records):
            parts += [f"{server}:", "", table]
    return [*parts, ""]


def repro_section(page: Page) -> list[str]:
    """Two independent maps of the same lines (`map-repro-a`, `map-repro-b`): their brackets
    side by side, as `make compare` gives them."""
    runs = page.dirs("repro")
    if len(runs) < 2:
        return []
    a, b, base = runs[0], runs[1], page.base
    text = brackets.compare_maps(a, b).markdown.split("\n", 1)[1].strip()
    return [
        "## How far a threshold moves between two runs",
        "",
        f"Two independent failure maps of the same lines, one after the other on this machine "
        f"([`{a.path.name}`]({_rel(a.path, base)}/summary.md), "
        f"[`{b.path.name}`]({_rel(b.path, base)}/summary.md)); each threshold is a bracket with "
        f"its counts ([docs]({_docs(base, REPRO_DOC)})). "
        "Regenerate with `make compare "
        f"A={a.path} B={b.path}`.",
        "",
        text,
        "",
    ]


def latency_section(page: Page) -> list[str]:
    """The latency bench (`bench-latency`): each cell's percentiles from its rounds' merged
    histograms, measured and wrk-corrected, beside the medians of the rounds' p99s that tables
    showed before format 5."""
    if (run := page.dir("latency")) is None:
        return []
    path, base = run.path, page.base
    cells = [c for c in by_cell(run.records()) if not c.frozen and c.distribution()]
    if not cells:
        return []
    rows, gaps = [], []
    for c in sorted(cells, key=lambda c: (c.cell.connections, c.cell.variant)):
        measured, corrected = c.distribution(Kind.measured), c.distribution(Kind.corrected)
        assert measured is not None and corrected is not None
        p99 = c.percentile(99)
        assert p99 is not None and p99.above is not None
        rounds = [m for r in c.served if (m := measured_ms(r.wrk, 99)) is not None]
        wrk_p99 = c.latency("p99_ms")
        gaps.append((corrected.percentile_ms(50) / max(measured.percentile_ms(50), 1e-3), c))
        rows.append(
            [
                str(c.cell.connections),
                c.cell.variant,
                f"{c.n}",
                f"{measured.count:,} / {corrected.count:,}",
                f"{measured.percentile_ms(50):,.1f} / {corrected.percentile_ms(50):,.1f}",
                f"{p99.text()} / {corrected.percentile_ms(99):,.1f}",
                f"{p99.above:,}",
                f"{statistics.median(rounds):,.1f} ({min(rounds):,.1f}–{max(rounds):,.1f})",
                f"{wrk_p99[0]:,.1f}" if wrk_p99 else "-",
            ]
        )
    ratio, widest = max(gaps, key=lambda g: g[0])
    thin = sum(1 for c in cells if (p := c.percentile(99)) is not None and p.thin)
    table = md_table(
        [
            "connections", "variant", "rounds", "responses measured / with wrk's samples",
            "p50 ms measured / corrected", "p99 ms measured / corrected",
            "measured responses above p99", "median of the rounds' measured p99s (range)",
            "median of the rounds' wrk p99s (tables before format 5)",
        ],
        rows,
        ["---:", "---", "---:", "---:", "---:", "---:", "---:", "---:", "---:"],
    )  # fmt: skip
    charts = sorted((path / "charts").glob("percentiles-*.png")) + sorted(
        (path / "charts").glob("p99-*.png")
    )
    return [
        "## Latency: measured and wrk-corrected, rounds merged",
        "",
        f"[`{path.name}`]({_rel(path, base)}/summary.md), every cell that did not collapse: its "
        "percentiles from the merged histograms of its rounds, the measured distribution (each "
        f"response once) and wrk's corrected one ([docs]({_docs(base, LATENCY_DOC)})). "
        f"The widest gap between them is at the median: {widest.cell.variant} at "
        f"{widest.cell.connections} connections, where wrk's p50 is {ratio:.1f}× the measured "
        f"one. {thin} of {len(cells)} p99s rest on fewer than {MIN_TAIL} measured responses "
        "above them (†).",
        "",
        table,
        "",
        *(f"![{p.stem}]({_rel(p, base)})\n" for p in charts),
    ]


def open_loop_section(page: Page) -> list[str]:
    """The open-loop bench (`bench-open`): each cell's latency from due and from sent, rounds
    merged, and how the generator kept its schedule."""
    out: list[str] = []
    if (run := page.dir("open-loop")) is not None:
        path, base = run.path, page.base
        cells = [c for c in by_cell(run.records()) if c.cell.rate is not None]
        rows = []
        for c in sorted(cells, key=lambda c: (c.cell.level, c.cell.variant)):
            due, sent = c.distribution(Kind.corrected), c.distribution(Kind.measured)
            kept = [r.wrk.schedule for r in c.records if r.wrk and r.wrk.schedule]
            late, dropped = sum(s.late for s in kept), sum(s.dropped for s in kept)
            figures = (
                [
                    *(f"{due.percentile_ms(p):,.1f}" for p in (50, 90, 99)),
                    f"{sent.percentile_ms(99):,.1f}",
                ]
                if due and sent and due.count
                else ["-"] * 4
            )
            rows.append(
                [
                    f"{c.cell.level:g}",
                    c.cell.variant,
                    str(c.n),
                    f"{c.median_rps:,.1f}" if c.median_rps is not None else "-",
                    *figures,
                    f"{late:,} / {dropped:,} of {sum(s.due for s in kept):,}",
                    c.verdict,
                ]
            )
        cost = generator_cost(run.records())
        used = (
            f" The generator used {cost[0]:g} CPU-s per 1,000 requests due (median)."
            if cost
            else ""
        )
        out += [
            "## Open loop: latency at a fixed arrival rate",
            "",
            f"[`{path.name}`]({_rel(path, base)}/summary.md): requests due at each rate whatever "
            f"the server did ([docs]({_docs(base, OPEN_LOOP_DOC)})), every cell's rounds merged. "
            "*From due* is "
            "what a user waited; *from sent* leaves out the wait for a connection." + used,
            "",
            md_table(
                [
                    "req/s due",
                    "variant",
                    "rounds",
                    "successful req/s (median)",
                    "p50 ms from due",
                    "p90 ms from due",
                    "p99 ms from due",
                    "p99 ms from sent",
                    "sent late / dropped",
                    "verdict",
                ],
                rows,
                ["---:", "---", "---:", "---:", "---:", "---:", "---:", "---:", "---:", "---"],
            ),
            "",
        ]
    return out


def capacity_section(page: Page) -> list[str]:
    """A capacity search by itself (`make capacity`)."""
    out: list[str] = []
    for run in page.dirs("capacity"):
        meta = run.metadata()
        slo = CapacityPlan.from_json(meta["capacity"]).slo.text()
        out += [
            f"## Capacity within {slo} ([capacity.md]({_rel(run.path, page.base)}/capacity.md))",
            "",
            *capacity.body(meta, run.records()),
        ]
    return out


def generators_section(page: Page) -> list[str]:
    """The comparison that chose the open loop's generator (`make generators`)."""
    out: list[str] = []
    for run in page.runs.of("generators"):
        found = page.root / run.name / "records.json"
        if not found.is_file():
            continue
        data = json.loads(found.read_text())
        sha, where = data["git"].get("sha", "?")[:12], _rel(found.parent, page.base)
        out += [
            f"## Which generator drives the open loop ([page]({where}/README.md))",
            "",
            f"`make generators`, at git {sha}. " + generators.explained(data),
            "",
            generators.table(data),
            "",
        ]
    return out


ASYNC_TAIL_TEXT = (
    "Why async `dependency`'s tail is long where async `context`'s is short: the same app and "
    "pool, the session opened by a `yield` dependency or inside the endpoint, 100 connections, "
    "warm 10 s windows, with the side channel's answer to *where did requests wait?* "
    '(summaries: "Where requests waited"). FastAPI runs a `yield` dependency\'s exit after the '
    "response is sent, so a `dependency` session keeps its pooled connection until the event "
    "loop comes back to the finished request: *past their response* counts the requests "
    "holding it so, and *in flight* can exceed the connections. Those connections are lost to "
    "the requests queued at the pool, whose wait is the tail. On a server that spends more of "
    "the loop on each request (hypercorn here), every request holds its connection longer and "
    "both styles queue at the pool alike."
)
ASYNC_TAIL_DECISION = (
    "**Which variants a decision compares.** The style of the session and the mode (sync or "
    "async) are two choices; `make decide` sets async `context` against sync `context`, so its "
    "ratio is the mode's alone, and shows async `dependency` (FastAPI's documented pattern) and "
    "sync `dependency` (the 2021 write-up's) beside them. What stays open: how much of the tail "
    "is the order in which the asyncio pool's queue serves its waiters (a woken waiter that "
    "loses the race to a newcomer goes back to the end); granian and gunicorn with several "
    'workers, not measured here; and `Depends(..., scope="function")` (FastAPI 0.121+, the '
    "app's DEPENDENCY_SCOPE=function), which ends the session with the endpoint, tried by hand "
    "only."
)


def decide_slo_section(page: Page) -> list[str]:
    """`make decide` with its capacity search: the capacities, then the decision table whose
    rule reads them."""
    if (run := page.dir("decide-slo")) is None:
        return []
    path = run.path
    meta, records = run.metadata(), run.records()
    plan = decision.plan_of(meta)
    rows = decision.decision_rows(records, plan)
    if plan is None or not rows:
        return []
    where = _rel(path, page.base)
    sha = str(_first_session(run).get("git", {}).get("sha", "?"))[:12]
    return [
        f"## The decision by capacity within {plan.slo.text()} "
        f"([decision.md]({where}/decision.md), at git {sha})",
        "",
        *capacity.body(meta, records),
        "",
        *_between_runs(page, plan, records),
        decision.explained(rows[0].roles),
        "",
        *decision.sections(records, charts=f"{where}/charts", level=3, plan=plan),
    ]


def _between_runs(page: Page, plan: CapacityPlan, records: Sequence[CellResult]) -> list[str]:
    """The same lines' capacity in the `capacity` section's run, another run of the same
    search: how far one run's brackets are from another's."""
    if (other := page.dir("capacity")) is None:
        return []
    other_path, name = other.path, other.path.name
    other_plan = CapacityPlan.from_json(other.metadata()["capacity"])
    theirs = {line.variant: line for line in other_plan.lines}
    other_records = other.records()
    rows = []
    for line in plan.lines:
        if (same := theirs.get(line.variant)) is None:
            continue
        here = capacity.line_result(line, records, plan)
        there = capacity.line_result(same, other_records, other_plan)
        latency = "0" if line.db_latency is None else str(line.db_latency)
        rows.append(
            [
                f"{line.mode} `{line.known('style')}`",
                latency,
                decision.capacity_text(here),
                decision.capacity_text(there),
            ]
        )
    if not rows:
        return []
    rows.sort(key=lambda row: (row[1], row[0]))  # by latency, then variant: as searched or not
    sha = str(_first_session(other).get("git", {}).get("sha", "?"))[:12]
    cpu = _first_session(other).get("machine", {}).get("cpu_model", "?")
    return [
        f"The same lines in [`{name}`]({_rel(other_path, page.base)}/capacity.md), another "
        f"run of the same search (git {sha}, {cpu}). Where two brackets do not overlap, "
        "the machine's state between the runs (other tenants, the hour) moved the capacity "
        "more than one search resolves: one run's bracket is not the whole answer.",
        "",
        md_table(
            ["variant", "database latency", "this run sustains", f"{name} sustains"],
            rows,
            ["---", "---:", "---:", "---:"],
        ),
        "",
    ]


def async_tail_section(page: Page) -> list[str]:
    """The async tail's investigation: each server's p99 of the two async styles, and where
    their requests waited."""
    if (run := page.dir("async-tail")) is None:
        return []
    path, base, records = run.path, page.base, run.records()
    rows = []
    for c in sorted(by_cell(records), key=lambda c: (c.cell.server_label, c.cell.variant)):
        p99 = c.percentile(99)
        figures = waits.row(c.records)
        if figures is None:
            continue
        rows.append(
            [
                c.cell.server_label,
                f"async `{c.cell.known('style')}`",
                f"{c.median_rps:,.0f}" if c.median_rps is not None else "-",
                f"{p99.ms:,.0f}" if p99 else "-",
                *figures,
            ]
        )
    head = [
        "server",
        "variant",
        "req/s (median)",
        "p99 ms",
        "in flight",
        "past their response",
        "out / can lend",
        "queued for a connection",
        "loop lag ms, median / p99",
    ]
    sha = str(_first_session(run).get("git", {}).get("sha", "?"))[:12]
    return [
        f"## The async tail ([summary.md]({_rel(path, base)}/summary.md), at git {sha})",
        "",
        ASYNC_TAIL_TEXT,
        "",
        md_table(head, rows, ["---", "---", *["---:"] * 7]),
        "",
        ASYNC_TAIL_DECISION,
        "",
    ]


def diagnose_section(page: Page) -> list[str]:
    """The demo app's mistakes diagnosed (`make diagnose-examples`): each report's cause."""
    base = page.base
    reports = sorted(
        p for r in page.runs.of("diagnose") for p in (page.root / r.name).glob("*/diagnosis.json")
    )
    if not reports:
        return []
    rows = []
    for path in reports:
        data = json.loads(path.read_text())
        run = data["run"]
        rows.append(
            [
                f"[`{path.parent.name}`]({_rel(path.parent, base)}/diagnosis.md)",
                data["service"]["described"],
                f"**{data['cause']}**: {data['sentence']}"
                + ("" if run.get("complete") else " (incomplete: interrupted)"),
                f"{run['git']['sha'][:7]}{' (dirty)' if run['git']['dirty'] else ''}, "
                f"{run['machine']['cpu_model']}",
            ]
        )
    return [
        "## Diagnoses (`make diagnose`)",
        "",
        "The demo app's mistakes, each served by a real server started the way a user would, "
        "and diagnosed with `make diagnose`'s defaults (`make diagnose-examples`): a ramp judged "
        "second by second, every process's threads dumped, the cause named from where they "
        "wait.",
        "",
        md_table(
            ["report", "service", "cause", "commit, CPU"],
            rows,
            ["---", "---", "---", "---"],
        ),
    ]


def rejudged_section(page: Page) -> list[str]:
    """What `python -m harness migrate` changed in each run, read from the runs' provenance."""
    said = []
    base = page.base
    for meta_path in (page.root / r.name / "metadata.json" for r in page.runs.runs):
        if not meta_path.is_file():
            continue
        run = RunDir.open(meta_path.parent)
        for entry in run.metadata()["provenance"]:
            if entry.get("command") != "migrate":
                continue
            changed = entry.get("verdicts_changed") or {}
            what = ", ".join(f"{n} {c}" for c, n in changed.items()) or "no verdict changed"
            sha = (entry.get("git") or {}).get("sha", "?")[:12]
            said.append(
                f"- [`{run.path.name}`]({_rel(run.path, base)}/summary.md), from format "
                f"{entry.get('from_format')} at git {sha}: {what}."
            )
    if not said:
        return []
    return [
        "## Verdicts judged again from the samples",
        "",
        "These runs were measured before a verdict used every worker's samples; their records "
        "were judged again from the samples they kept (`make migrate`), starting from the "
        "throughput verdict they had. What changed, from each run's provenance:",
        "",
        *said,
        "",
    ]


def runs_section(page: Page) -> list[str]:
    """Where and from what every run was measured, from its provenance: the commit (and
    whether the tree had uncommitted changes), the CPU model, when; and what rewrote it later."""
    rows = []
    for run in page.runs.runs:
        folder = page.root / run.name
        sessions, later = _sessions(folder)
        if not sessions:
            continue
        measured = sorted({f"{_sha(e)}{' (dirty)' if _dirty(e) else ''}" for e in sessions})
        cpus = sorted({str(e.get("machine", {}).get("cpu_model", "?")) for e in sessions})
        rows.append(
            [
                f"[`{run.name}`]({_rel(folder, page.base)})",
                f"`python -m harness {shlex.join(run.command)}`",
                ", ".join(measured),
                ", ".join(cpus),
                min(str(e.get("started_at", "?")) for e in sessions)[:16],
                _took(sessions),
                ", ".join(f"{e['command']} at {_sha(e)}" for e in later) or "-",
            ]
        )
    return [
        "## The runs",
        "",
        "Every run below, in the order of reference-runs.toml, the order `make reference` "
        "measures them in (a run with a make target of its own is measured by that: "
        "`make generators`); each command is given without its `--out`. *Measured at*: the "
        "commit of each session that measured it, *(dirty)* where the tree had uncommitted "
        "changes; *later*: commands that rewrote its records afterwards (`make migrate` judged "
        "them again, `compact` compressed their dumps or put their records on one line).",
        "",
        md_table(
            ["run", "command", "measured at", "CPU", "started (UTC)", "took", "later"],
            rows,
            ["---", "---", "---", "---", "---", "---:", "---"],
        ),
    ]


def _sessions(folder: Path) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """A run folder's measuring sessions and the later rewrites, from its provenance (the
    diagnosis reports of `diagnose-examples` carry theirs each)."""
    if (folder / "metadata.json").is_file():
        entries = RunDir.open(folder).metadata()["provenance"]
        measured = [e for e in entries if "machine" in e]
        return measured, [e for e in entries if "machine" not in e]
    if (folder / "records.json").is_file():  # make generators: no run directory of its own
        return [json.loads((folder / "records.json").read_text())], []
    found = sorted(folder.glob("*/diagnosis.json"))
    runs = [dict(json.loads(p.read_text())["run"]) for p in found]
    return [
        r | {"started_at": r.get("started"), "finished_at": r.get("finished")} for r in runs
    ], []


def _took(sessions: Sequence[dict[str, Any]]) -> str:
    """The time the measuring sessions spanned together (two sessions of one invocation, its
    matrix and its capacity search, overlap), where each recorded its end."""
    spans = sorted(
        (
            datetime.fromisoformat(str(e["started_at"])),
            datetime.fromisoformat(str(e["finished_at"])),
        )
        for e in sessions
        if e.get("finished_at") and e.get("started_at")
    )
    if not spans or len(spans) < len(sessions):
        return "?"
    seconds, reach = 0.0, spans[0][0]
    for start, end in spans:
        seconds += max((end - max(start, reach)).total_seconds(), 0.0)
        reach = max(reach, end)
    minutes = seconds / 60
    return f"{minutes:.0f} min" if minutes < 90 else f"{minutes / 60:.1f} h"


def _sha(entry: dict[str, Any]) -> str:
    return str(entry.get("git", {}).get("sha", "?"))[:7]


def _dirty(entry: dict[str, Any]) -> bool:
    return bool(entry.get("git", {}).get("dirty"))


def findings_section(page: Page) -> list[str]:
    """Plain sentences per server drawn across the runs, then the rule of thumb, the ceilings
    and the layers, then why."""
    benches, decides = page.by_server("bench"), page.by_server("decision")
    maps, map_2021, variants = _maps(page), page.dir("stacks"), page.dir("variants")
    variants_plan = MapPlan.from_json(variants.metadata()["plan"]) if variants else None
    variants_records = variants.records() if variants else []
    plan = maps.plan if maps else None
    map_records = maps.records if maps else []
    parts = ["## Findings", ""]
    for server in ServerName:
        sentences = []
        if plan and server in plan.servers:
            sentences += map_findings(server, plan, map_records)
        if variants_plan and server in variants_plan.servers:
            sentences += variant_findings(server, variants_plan, variants_records)
        if map_2021:
            sentences += stack_findings(server, map_2021)
        if server in benches:
            sentences += bench_findings(server, benches[server].records())
        if server in decides:
            sentences += decision_findings(decides[server].records())
        if sentences:
            parts += [f"- **{server}**: " + " ".join(sentences), ""]
    if maps and plan:
        parts += [
            "- **The rule of thumb**: " + " ".join(prediction_findings(plan, map_records)),
            "",
            "- **Ceilings**: " + " ".join(ceiling_findings(plan, map_records, maps.main)),
            "",
        ]
    if (layer_run := page.dir("layers")) and (sentences := layer_findings(layer_run)):
        parts += ["- **Layers**: " + " ".join(sentences), ""]
    return [*parts, WHY, ""]


WHY = (
    "Why: a sync `dependency` request holds its pooled connection until the dependency's "
    "exit, after the response model is validated in a second threadpool token; with T "
    "tokens and C connections per process, T + C requests in flight can leave every "
    "token waiting for a connection and every connection waiting for a token. Opening the "
    "session inside the endpoint (`context`) returns the connection before validation; "
    "`limited` lets at most C requests into the dependency; async endpoints take no "
    "threadpool token."
)


def map_section(page: Page) -> list[str]:
    """The failure map: each server's lines, charts and evidence, then the ceilings."""
    maps = _maps(page)
    if maps is None:
        return []
    plan, records, base = maps.plan, maps.records, page.base
    parts = [f"## The failure map ([full report]({_rel(maps.main.path, base)}/summary.md))", ""]
    parts += [
        f"Left out, planned with other settings than `{maps.main.path.name}`: "
        f"[`{n}`]({_rel(page.root / n, base)}/summary.md)."
        for n in maps.left_out
    ]
    for server in plan.servers:
        where = _rel(maps.runs[server].path, base)
        elsewhere = (
            f" (from [`{maps.runs[server].path.name}`]({where}/summary.md))"
            if maps.runs[server] is not maps.main
            else ""
        )
        parts += [
            f"### {server}{elsewhere}",
            "",
            map_summary.map_table(plan, str(server), records),
            f"![collapse]({where}/charts/collapse-{server}.png)",
            "",
            f"![throughput]({where}/charts/throughput-{server}.png)",
            "",
        ]
        if table := map_summary.evidence_table(plan, str(server), records):
            parts += [
                f"Why each sync `dependency` line of {server} froze where it did "
                "(occupancy and threads from the probes themselves):",
                "",
                table,
            ]
    if said := map_summary.line_findings(plan, records):
        parts += ["### What the occupancy of each frozen line shows", ""]
        parts += [*(f"- {x}" for x in said), ""]
    return [
        *parts,
        "### Ceilings",
        "",
        map_summary.ceilings_table(plan, records, maps.main.pgbench()),
    ]


def workers_page_section(page: Page) -> list[str]:
    return [x for run in page.dirs("workers") for x in workers_section(run, page.base)]


def variants_section(page: Page) -> list[str]:
    """The map's other variants at its baseline."""
    if (run := page.dir("variants")) is None:
        return []
    plan = MapPlan.from_json(run.metadata()["plan"])
    return [
        f"## The other variants ([full report]({_rel(run.path, page.base)}/summary.md))",
        "",
        f"Each variant at the map's baseline (pool {plan.pools[0]}, {plan.tokens[0]} tokens, "
        f"{plan.workers[0]} worker process{'es' if plan.workers[0] > 1 else ''}), "
        "searched the same way: sync `context` (the session closed inside the endpoint), "
        "sync `limited` (at most the pool's capacity of requests in the dependency at once) "
        "and async `dependency`.",
        "",
        map_summary.variants_table(plan, run.records()),
    ]


def blocking_section(page: Page) -> list[str]:
    """How async fails differently: the sync session inside `async def`, and its fix."""
    parts: list[str] = []
    for run in page.dirs("blocking"):
        plan = MapPlan.from_json(run.metadata()["plan"])
        parts += [
            f"## The async app's mistake ([full report]({_rel(run.path, page.base)}/summary.md))",
            "",
            "Async `blocking` opens the sync app's session (psycopg2) inside `async def` "
            "endpoints, so the event loop waits on every query; async `context` is the same "
            f"app done right. Database latency {plan.db_latency} each way; searched like the map.",
            "",
            map_summary.variants_table(plan, run.records()),
            "",
        ]
    return parts


def your_app_section(page: Page) -> list[str]:
    """The example service measured as a user measures their own: its map, then its sync
    version against its async one."""
    parts: list[str] = []
    for run in page.dirs("your-app"):
        rel = _rel(run.path, page.base)
        parts += _app_map(run, rel) if run.kind == "map" else _app_decision(run, rel)
    return parts


def _app_map(run: RunDir, rel: str) -> list[str]:
    plan, records = MapPlan.from_json(run.metadata()["plan"]), run.records()
    parts = [
        f"## Your own app: where the example service stalls ([full report]({rel}/summary.md))",
        "",
        f"`examples/items` served through `APP`, mapped under {', '.join(plan.servers)}:",
        "",
    ]
    for server in plan.servers:
        parts += [f"### {server}", "", map_summary.app_table(plan, str(server), records)]
        parts += [f"![throughput]({rel}/charts/throughput-{server}.png)", ""]
    return parts


def _app_decision(run: RunDir, rel: str) -> list[str]:
    plan, records = decision.plan_of(run.metadata()), run.records()
    if not (rows := decision.decision_rows(records, plan)):
        return []
    return [
        f"## Your own app: its sync version against its async one ([decision.md]({rel}/"
        "decision.md))",
        "",
        decision.explained(rows[0].roles),
        "",
        *decision.sections(records, charts=f"{rel}/charts", level=3, plan=plan),
    ]


def stacks_section(page: Page) -> list[str]:
    """The map's baseline under the 2021 stack beside today's."""
    maps, old = _maps(page), page.dir("stacks")
    if maps is None or old is None:
        return []
    parts = [
        f"## 2021 beside today ([2021 map]({_rel(old.path, page.base)}/summary.md))",
        "",
        *stacks_side_by_side(maps.main, old),
    ]
    plan_2021 = MapPlan.from_json(old.metadata()["plan"])
    if said := map_summary.line_findings(plan_2021, old.records()):
        parts += ["What the 2021 map's occupancy and threads show:", "", *(f"- {x}" for x in said)]
        parts += [""]
    return parts


def decision_section(page: Page) -> list[str]:
    """Each server's decision table."""
    parts: list[str] = []
    for server, run in page.by_server("decision").items():
        records = run.records()
        if not (rows := decision.decision_rows(records)):
            continue
        rel = _rel(run.path, page.base)
        parts += [
            f"## When does async win? The decision table, {server} "
            f"([decision.md]({rel}/decision.md), [every comparison]({rel}/summary.md))",
            "",
            decision.explained(rows[0].roles),
            "",
            *decision.sections(records, charts=f"{rel}/charts", level=3),
        ]
    return parts


def layers_section(page: Page) -> list[str]:
    """The drivers and the layers above them, with pgbench's ceilings."""
    if (run := page.dir("layers")) is None:
        return []
    records = run.records()
    parts = [
        f"## Layers ([`{run.path.name}`]({_rel(run.path, page.base)}/summary.md))",
        "",
        layers.TEXT,
        "",
        layers.table(records, run.pgbench()),
    ]
    if run.pgbench():
        servers = sorted({str(r.cell.known("name")) for r in records})
        levels = sorted({r.cell.connections for r in records})
        parts += ["", ceilings.table(servers, levels, records, run.pgbench()), ""]
    return parts


def _tables(title: str, runs: Sequence[RunDir], base: Path) -> list[str]:
    """The 2021 write-up's tables of each run, with their comparisons."""
    if not runs:
        return []
    parts = [f"## {title}", ""]
    for run in runs:
        records = run.records()
        table = comparisons.table(records) if any(r.repeat > 1 for r in records) else ""
        parts += [
            f"Run [`{run.path.name}`]({_rel(run.path, base)}/summary.md) "
            f"(every cell's figures, CPU split and notes are there).",
            "",
            summary.seed_tables(records, level=3, charts=f"{_rel(run.path, base)}/charts"),
            *(["Comparisons (B / A, 95% intervals):", "", table] if table else []),
        ]
    return parts


SECTIONS: dict[str, Callable[[Page], list[str]]] = {
    "runs": runs_section,
    "decide-slo": decide_slo_section,
    "rejudged": rejudged_section,
    "repro": repro_section,
    "latency": latency_section,
    "open-loop": open_loop_section,
    "capacity": capacity_section,
    "generators": generators_section,
    "async-tail": async_tail_section,
    "diagnose": diagnose_section,
    "your-app": your_app_section,
    "blocking": blocking_section,
    "findings": findings_section,
    "map": map_section,
    "workers": workers_page_section,
    "variants": variants_section,
    "freeze": freeze_section,
    "costs": costs_section,
    "stacks": stacks_section,
    "decision": decision_section,
    "layers": layers_section,
    "bench": lambda page: _tables("The 2021 write-up's tables", page.dirs("bench"), page.base),
    "bench-2021": lambda page: _tables(
        "The 2021 write-up's tables, 2021 stack", page.dirs("bench-2021"), page.base
    ),
}
# Sections drawn from every run rather than runs of their own.
ACROSS = frozenset({"runs", "rejudged", "findings"})


def _header(page: Page) -> list[str]:
    cpus = sorted(
        {str(e.get("machine", {}).get("cpu_model", "?")) for r in page.runs.runs
         for e in _sessions(page.root / r.name)[0]}
    )  # fmt: skip
    return [
        "# Reference results",
        "",
        "Everything on this page is generated by `python -m harness reference` from the run "
        "directories under `reference/`, which `make reference` measures from the list in "
        "reference-runs.toml; no number is typed by hand. Each run directory holds its raw "
        "records (`cells/`), its metadata (machine, versions, git commit, every parameter) and "
        "its own `summary.md` and `results.csv`. The commit and CPU of every run: "
        "[The runs](#the-runs).",
        "",
        f"Measured on {' and '.join(cpus) or '?'}: a figure holds on that CPU model; another "
        "machine, its load and the hour move it.",
        "",
    ]


def readme(root: Path, page_path: Path, runs: RunList | None = None) -> str:
    runs = runs or runlist.load()
    if unknown := [s for s in runs.sections if s not in SECTIONS]:
        raise HarnessError(f"reference-runs.toml: no such section: {', '.join(unknown)}")
    page = Page(root, page_path.parent, runs)
    parts = _header(page)
    for section in runs.sections:
        drawn = SECTIONS[section](page)
        if dropped := _not_linked(page, section, "\n".join(drawn)):
            raise HarnessError(
                f"results page: section {section} does not present {', '.join(dropped)} "
                "(a run measured but not shown)"
            )
        parts += drawn
    return "\n".join(parts).rstrip() + "\n"


def _not_linked(page: Page, section: str, text: str) -> list[str]:
    """The section's runs measured so far that its text does not link."""
    return [
        run.name
        for run in page.runs.of(section)
        if (page.root / run.name).is_dir()
        and any((page.root / run.name).iterdir())
        and f"]({_rel(page.root / run.name, page.base)}/" not in text
    ]


def write(root: Path, page: Path, runs: RunList | None = None) -> None:
    """Every listed run's own report, then the page."""
    runs = runs or runlist.load()
    for run in runs.runs:
        if (root / run.name / "metadata.json").is_file():
            files.write(RunDir.open(root / run.name))
    page.write_text(readme(root, page, runs))
