"""Every file a run directory's report consists of, (re)written from its records."""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

from harness.domain.plan import MapPlan
from harness.domain.result import CellResult
from harness.report import (
    capacity,
    charts,
    comparisons,
    decision,
    evidence,
    map_summary,
    summary,
)
from harness.report.stats import by_cell
from harness.store.rundir import RunDir


def timelines(run: RunDir, records: list[CellResult]) -> None:
    """A timeline chart for every collapsed cell that was sampled, which its summary links (a
    map's summary states each freeze in its evidence table and draws no timeline)."""
    folder = run.path / "charts"
    for record in evidence.explained(records):
        if record.occupancy and record.occupancy.samples:
            folder.mkdir(exist_ok=True)
            charts.timeline_chart(folder / evidence.chart_name(record), record)


def latency_charts(run: RunDir, records: list[CellResult]) -> None:
    """Each seed-shaped table's latency charts, where its records kept histograms."""
    folder = run.path / "charts"
    for rows in summary.table_groups(records):
        if not summary.charted(rows):
            continue
        folder.mkdir(exist_ok=True)
        cells, cell0 = by_cell(rows), rows[0].cell
        slug, labels = summary.group_slug(cell0), summary.variant_labels(rows)
        title = f"{cell0.server_label} · {cell0.workload}"
        charts.percentile_chart(folder / f"percentiles-{slug}.png", title, cells, labels)
        charts.p99_throughput_chart(folder / f"p99-{slug}.png", title, cells, labels)


def write(run: RunDir) -> None:
    meta, records = run.metadata(), run.records()
    if meta["kind"] != "map":
        timelines(run, records)
        latency_charts(run, records)
        text = summary.summary(meta, records, run.path.name, run.pgbench())
        (run.path / "summary.md").write_text(text)
        (run.path / "results.csv").write_text(summary.csv_text(records))
        data = {"interval": comparisons.INTERVAL, "comparisons": comparisons.json_data(records)}
        (run.path / "comparisons.json").write_text(json.dumps(data, indent=2) + "\n")
        if meta["kind"] == "decide":
            write_decision(run, meta, records)
        if meta["kind"] == "capacity":
            (run.path / "capacity.md").write_text(capacity.markdown(meta, records, run.path.name))
        return
    plan = MapPlan.from_json(meta["plan"])
    pg = run.pgbench()
    text = map_summary.summary(meta, records, run.path.name, plan, pg)
    (run.path / "summary.md").write_text(text)
    (run.path / "results.csv").write_text(summary.csv_text(records))
    folder = run.path / "charts"
    folder.mkdir(exist_ok=True)
    lines = plan.lines()
    for server in plan.servers:
        mine = [line for line in lines if line.server == server]
        if not any(r.cell.known("name") == server for r in records):
            continue
        if plan.app is None:  # a user's app has no prediction to draw its collapses against
            charts.collapse_chart(folder / f"collapse-{server}.png", server, plan, mine, records)
        charts.throughput_chart(
            folder / f"throughput-{server}.png", server, mine, records, pg, plan.onsets[0]
        )


def write_decision(run: RunDir, meta: dict[str, Any], records: Sequence[CellResult]) -> None:
    """decision.md, .csv and .json, and the charts of each section."""
    plan = decision.plan_of(meta)
    (run.path / "decision.md").write_text(decision.markdown(meta, records, run.path.name))
    (run.path / "decision.csv").write_text(decision.csv_text(records, plan))
    data = decision.json_data(records, plan)
    (run.path / "decision.json").write_text(json.dumps(data, indent=2) + "\n")
    rows = decision.decision_rows(records, plan)
    if not rows:
        return
    folder = run.path / "charts"
    folder.mkdir(exist_ok=True)
    varying = decision.varying_fields(records)
    for section in dict.fromkeys(r.section for r in rows if r.rows is not None):
        mine = [r for r in rows if r.section == section]
        slug = decision.section_slug(section, varying)
        title = decision.section_title(section, varying)
        charts.latency_chart(folder / f"latency-{slug}.png", title, mine)
        charts.ratio_chart(folder / f"ratio-{slug}.png", title, mine)
