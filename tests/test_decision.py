"""The decision table from records made to order: its ratios are the paired ratios of the stats
module, its sentences follow the numbers (who wins, where, by how much, how far sync
`dependency` held), and its CSV, JSON and charts hold the same rows."""

from __future__ import annotations

import csv
import io
import json
import math
from dataclasses import replace
from pathlib import Path

import pytest

from harness.domain.axes import (
    DIRECT,
    Latency,
    Mode,
    Pool,
    ServerName,
    SessionStyle,
    Verdict,
    Workload,
)
from harness.domain.cell import Cell, ServerConfig
from harness.domain.plan import CapacityPlan
from harness.domain.result import CellResult, WrkResult
from harness.domain.slo import parse_slo
from harness.infra import openloop
from harness.report import decision, files
from harness.report.stats import paired_ratio
from harness.run.options import Options
from harness.store.rundir import RunDir

ASYNC = (Mode.async_, SessionStyle.dependency)
CONTEXT = (Mode.sync, SessionStyle.context)
DEPENDENCY = (Mode.sync, SessionStyle.dependency)
FIXTURES = Path(__file__).parent / "fixtures"
NOISE = (1.0, 1.02, 0.98, 1.01, 0.99)  # per round, the same for every variant: drift


def record(
    variant: tuple[Mode, SessionStyle],
    connections: int,
    repeat: int,
    rps: float,
    latency: Latency = DIRECT,
    rows: int = 10,
    verdict: Verdict = Verdict.ok,
    p99_ms: float = 20.0,
) -> CellResult:
    mode, style = variant
    config = ServerConfig(
        ServerName.uvicorn, style, Pool(5, 10), 40, 1, rows, 30.0, db_latency=latency
    )
    cell = Cell(config, mode, Workload.list, connections, 1.0)
    wrk = WrkResult(
        requests=round(rps), duration_s=1.0, bytes=0, p50_ms=p99_ms / 2, p90_ms=p99_ms,
        p99_ms=p99_ms, p999_ms=p99_ms, max_ms=p99_ms, mean_ms=p99_ms / 2, connect_errors=0,
        read_errors=0, write_errors=0, timeouts=0, status_errors=0,
    )  # fmt: skip
    return CellResult(cell, verdict, wrk, repeat=repeat)


def measured(
    rates: dict[tuple[Mode, SessionStyle], dict[int, float]],
    rounds: int = 5,
    latency: Latency = DIRECT,
    collapsed: tuple[tuple[tuple[Mode, SessionStyle], int], ...] = (),
) -> list[CellResult]:
    """Every variant at every level, `rounds` times, its rate scaled by the round's drift."""
    out = []
    for variant, levels in rates.items():
        for connections, rps in levels.items():
            for n in range(1, rounds + 1):
                down = (variant, connections) in collapsed
                out.append(
                    record(
                        variant, connections, n, 0.0 if down else rps * NOISE[n - 1], latency,
                        verdict=Verdict.collapsed if down else Verdict.ok,
                        p99_ms=100.0 if variant == ASYNC else 200.0,
                    )
                )  # fmt: skip
    return out


def only_row(records: list[CellResult]) -> decision.Row:
    (row,) = decision.decision_rows(records)
    return row


def test_async_ahead_at_every_level_and_dependency_collapsing_at_the_top() -> None:
    records = measured(
        {
            ASYNC: {8: 150.0, 32: 300.0, 100: 310.0},
            CONTEXT: {8: 100.0, 32: 150.0, 100: 155.0},
            DEPENDENCY: {8: 100.0, 32: 150.0, 100: 1.0},
        },
        collapsed=((DEPENDENCY, 100),),
    )
    row = only_row(records)
    assert (row.held, row.collapsed_at) == (32, 100)
    at_32 = next(lv for lv in row.levels if lv.connections == 32)

    def rates(variant: tuple[Mode, SessionStyle]) -> list[float]:
        mine = [r for r in records if (r.cell.mode, r.cell.known("style")) == variant]
        return [
            r.wrk.ok_rps
            for r in sorted(mine, key=lambda r: r.repeat)
            if r.wrk and r.cell.connections == 32
        ]

    expected = paired_ratio(rates(CONTEXT), rates(ASYNC))
    assert expected is not None and at_32.ratio == expected
    assert at_32.ratio_dependency == expected
    below = next(lv for lv in row.levels if lv.connections == 100)
    assert isinstance(below.ratio_dependency, str) and "collapsed 5/5" in below.ratio_dependency
    first, rule = decision.sentences(row)
    assert first.startswith("Against sync `context`: async served more than sync at 8, 32 and ")
    assert "(1.50× to 2.00×, interval above 1)" in first
    assert "p99 at 100: 100 ms async, 200 ms sync" in first
    assert rule == (
        "Rule: async, at every level measured (by up to 100%, at 32); sync `dependency` held up "
        "to 32 connections and collapsed at 100."
    )


def test_no_difference_below_and_async_above_reads_from_that_level_on() -> None:
    records = measured(
        {ASYNC: {8: 100.0, 32: 200.0}, CONTEXT: {8: 100.0, 32: 100.0}, DEPENDENCY: {8: 100.0}}
    )
    # At 8 the two differ by noise only: async's own drift runs the other way.
    records = [
        r
        if not (r.cell.mode is Mode.async_ and r.cell.connections == 8)
        else record(ASYNC, 8, r.repeat, 100.0 / NOISE[r.repeat - 1] ** 2)
        for r in records
    ]
    row = only_row(records)
    assert [decision.classify(lv.ratio) for lv in row.levels] == ["same", "async"]
    first, rule = decision.sentences(row)
    assert "no significant difference at 8" in first
    assert rule.startswith("Rule: async, from 32 connections on (by up to 100%, at 32)")
    assert rule.endswith("sync `dependency` held at every level, up to 32 connections.")


def test_sync_ahead_gives_the_sync_rule_and_one_round_gives_none() -> None:
    records = measured({ASYNC: {8: 80.0}, CONTEXT: {8: 100.0}})
    first, rule = decision.sentences(only_row(records))
    assert "sync served more at 8 (async/sync 0.80×, interval below 1)" in first
    assert rule == "Rule: sync with the session inside the endpoint, at least as fast here."
    single = decision.sentences(only_row(measured({ASYNC: {8: 80.0}, CONTEXT: {8: 100.0}}, 1)))
    assert "from one measurement each (no interval)" in single[0]
    assert single[1].startswith("Rule: none from these measurements")


def test_rows_by_latency_and_payload_in_the_files(tmp_path: Path) -> None:
    records = []
    for latency in (DIRECT, Latency.parse("5ms")):
        for rows in (10, 1000):
            slower = 1.0 if latency == DIRECT else 0.5
            for variant, rps in ((ASYNC, 200.0), (CONTEXT, 100.0), (DEPENDENCY, 100.0)):
                for n in range(1, 4):
                    records.append(
                        record(variant, 8, n, rps * slower * NOISE[n - 1], latency, rows)
                    )
    rows = decision.decision_rows(records)
    assert [(str(r.latency), r.rows) for r in rows] == [
        ("0", 10), ("0", 1000), ("5ms", 10), ("5ms", 1000),
    ]  # fmt: skip
    run = RunDir.create(tmp_path / "run", "decide", {}, Options().to_json(), {"cells": []})
    for r in records:
        run.write_record(r)
    files.write(run)
    text = (run.path / "decision.md").read_text()
    assert "## uvicorn, 1 worker" in text
    assert (
        "| 5 ms | 1000 | **2.00× [2.00–2.00]**<br>p99 20 / 20 ms | all levels (up to 8) |" in text
    )
    table = list(csv.DictReader(io.StringIO((run.path / "decision.csv").read_text())))
    assert len(table) == 4
    assert {(t["db_latency"], t["rows"]) for t in table} == {
        ("0", "10"), ("0", "1000"), ("5ms", "10"), ("5ms", "1000"),
    }  # fmt: skip
    assert all(math.isclose(float(t["async_over_sync"]), 2.0) for t in table)
    assert all(t["rule"].startswith("Against sync `context`") for t in table)
    data = json.loads((run.path / "decision.json").read_text())
    assert [r["rule"] for r in data["rows"]] == [r.rule for r in rows]
    for chart in ("latency-uvicorn-w1.png", "ratio-uvicorn-w1.png"):
        assert (run.path / "charts" / chart).stat().st_size > 10_000
    assert (run.path / "summary.md").is_file()


@pytest.mark.parametrize(
    ("latency", "label"), [(DIRECT, "0"), (Latency.parse("relay"), "relay, no delay")]
)
def test_latency_labels(latency: Latency, label: str) -> None:
    assert decision.latency_label(latency) == label


def probe(variant: tuple[Mode, SessionStyle], rate: float, missed: bool) -> CellResult:
    """An open-loop probe as make decide's capacity search plans it, with a recorded open loop's
    latencies (40% of its requests waited for a stall: it meets p50 < 250 ms); a miss is that
    probe collapsed."""
    closed = record(variant, 8, 1, rate)
    cell = replace(closed.cell, connections=1000, duration_s=10.0, rate=rate)
    wrk = openloop.parse((FIXTURES / "openloop-stalling.json").read_text())
    return CellResult(cell, Verdict.collapsed if missed else Verdict.ok, wrk)


ASYNC_CONTEXT = (Mode.async_, SessionStyle.context)


@pytest.mark.parametrize(
    ("async_missed", "sync_missed", "rule"),
    [
        # async met 400 where sync missed: async, whatever the closed loop's throughput said.
        (
            {200: False, 400: False, 800: True},
            {200: False, 400: True, 800: True},
            "Rule: async, by capacity within p50 < 250 ms: async `context` met it at 400 req/s, "
            "where sync `context` missed it at 400; by throughput alone: sync with the session "
            "inside the endpoint, at least as fast here.",
        ),
        # Both met 400 and missed 800: the brackets overlap.
        (
            {200: False, 400: False, 800: True},
            {200: False, 400: False, 800: True},
            "Rule: either, by capacity within p50 < 250 ms: the brackets overlap (async "
            "`context` 400 req/s, not 800; sync `context` 400 req/s, not 800); by throughput "
            "alone: sync with the session inside the endpoint, at least as fast here.",
        ),
    ],
)
def test_the_rule_reads_capacity_first_and_compares_like_with_like(
    async_missed: dict[int, bool], sync_missed: dict[int, bool], rule: str
) -> None:
    # Closed loop: sync ahead (the throughput rule says sync); async dependency measured too.
    closed = measured({ASYNC_CONTEXT: {8: 100.0}, CONTEXT: {8: 150.0}, ASYNC: {8: 120.0}})
    probes = [
        probe(variant, rate, missed)
        for variant, answers in ((ASYNC_CONTEXT, async_missed), (CONTEXT, sync_missed))
        for rate, missed in answers.items()
    ]
    lines = tuple(dict.fromkeys(replace(p.cell, rate=200.0) for p in probes))
    plan = CapacityPlan(lines, parse_slo("p50<250ms"), 200, 3200, 1, 240.0, warmup_s=2.0)
    (row,) = decision.decision_rows([*closed, *probes], plan)
    # Like with like: async `context` against sync `context`; async `dependency` beside them.
    assert (row.roles.async_, row.roles.sync, row.roles.async_dependency) == (
        ASYNC_CONTEXT, CONTEXT, ASYNC,
    )  # fmt: skip
    assert [lv.connections for lv in row.levels] == [8]  # the probes are not closed-loop levels
    capacity_sentence, _, last = decision.sentences(row)
    assert capacity_sentence.startswith("Within p50 < 250 ms, in warm 10 s open-loop probes: ")
    assert last == rule
    table = decision.table([row])
    assert "async `dependency`: p99" in table
    assert "sustains within p50 < 250 ms" in table.splitlines()[0]
