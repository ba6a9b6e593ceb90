"""What the reports say from the evidence: the queue model, a long freeze second by second
(tests/fixtures/freeze-cycle: a real 120 s collapsed cell on uvicorn), the side channel's
cost."""

from dataclasses import replace
from pathlib import Path

from harness.domain.axes import Mode, Pool, ServerName, SessionStyle
from harness.domain.cell import ServerConfig
from harness.domain.plan import MapPlan
from harness.domain.result import CellResult
from harness.domain.rules import queue_model
from harness.report import evidence, map_summary
from harness.store.rundir import RunDir

FIXTURES = Path(__file__).parent / "fixtures"


def config(workers: int = 1, style: SessionStyle = SessionStyle.dependency) -> ServerConfig:
    return ServerConfig(ServerName.uvicorn, style, Pool(5, 10), 40, workers, 10)


def test_the_queue_model_is_t_plus_three_c_per_worker_for_sync_dependency_only() -> None:
    assert queue_model(Mode.sync, config()) == 40 + 3 * 15
    assert queue_model(Mode.sync, config(workers=2)) == 2 * 85
    assert queue_model(Mode.sync, config(style=SessionStyle.context)) is None
    assert queue_model(Mode.async_, config()) is None


def test_a_long_freeze_is_told_second_by_second_from_its_timeline() -> None:
    said = " ".join(evidence.cycle_findings(RunDir.open(FIXTURES / "freeze-cycle").records()))
    assert "at 100 connections for 120 s (pool_timeout 30 s)" in said
    assert "answered 115 requests successfully and 156 with an error" in said
    assert "it was frozen from second 1 on" in said
    assert "4 bursts, at 30 s (39), 60 s (37), 90 s (40), 120 s (40), 30 s apart" in said
    assert "Three seconds after 3 of the 4 bursts the server was frozen again" in said
    assert "wrk counted 144 responses in its 120 s window: 96 with an error status" in said


def _rounds(base: CellResult, sampled: bool, rates: list[float]) -> list[CellResult]:
    assert base.wrk is not None and base.cell.config is not None
    cell = replace(base.cell, server=replace(base.cell.config, occupancy=sampled))
    return [
        replace(
            base,
            cell=cell,
            repeat=n,
            wrk=replace(base.wrk, requests=int(rps * base.wrk.duration_s), status_errors=0),
        )
        for n, rps in enumerate(rates, 1)
    ]


def test_the_cost_of_the_side_channel_is_a_paired_ratio_with_its_interval() -> None:
    base = next(
        r
        for r in RunDir.open(FIXTURES / "run").records()
        if r.cell.id == "uvicorn-sync-context-p5+10-pt5-t40-w1-list-r10-d2-c1"
    )
    off = [500.0, 520.0, 480.0, 510.0, 490.0]
    same = _rounds(base, False, off) + _rounds(base, True, [x * 1.01 for x in off])
    said = " ".join(evidence.cost_findings(same))
    assert "sync `context` at 1 connections 1.01× [1.01–1.01]" in said
    assert "1 of 1 intervals exclude 1" in said
    noisy = _rounds(base, False, off) + _rounds(base, True, [520.0, 470.0, 500.0, 480.0, 515.0])
    said = " ".join(evidence.cost_findings(noisy))
    assert "no significant difference" in said and "No interval excludes 1" in said
    assert evidence.cost_findings(_rounds(base, True, off)) == []


def test_each_frozen_map_line_is_explained_from_its_probes() -> None:
    """tests/fixtures/map-evidence: a real small map of hypercorn (pool 1+1, 3 tokens) with one
    and two workers, recorded before the side channel counted threads blocked on the pool."""
    run = RunDir.open(FIXTURES / "map-evidence")
    plan = MapPlan.from_json(run.metadata()["plan"])
    said = map_summary.line_findings(plan, run.records())
    assert said[0].startswith("In 0 of the 2 frozen lines")  # no pool_waiting in these samples
    one, two = said[1], said[2]
    assert one.startswith(
        "hypercorn, pool 1+1, 3 tokens: froze at 6 connections (lower bound 5, queue model 9); "
        "at 4 it held with at most 6 requests in flight; up to 12 requests were in flight in one "
        "process (2.0× its connections"
    )
    # At 6 the throughput held, but one of the two workers completed nothing for 1.6 s with 9
    # requests in it: a partial freeze, so the line froze at 6 (before format 3: at 8).
    assert two.startswith(
        "hypercorn, 2 workers: froze at 6 connections (lower bound 10, queue model 18); at 4 it "
        "held with at most 5 + 0 requests in flight per worker; it froze at or below its lower "
        "bound, which counts requests in flight, not connections: at 4 connections up to 5 "
        "requests were in flight"
    )
    assert "; up to 9 requests were in flight in one process (1.5× its connections" in two
    table = map_summary.evidence_table(plan, "hypercorn", run.records())
    assert "| 1+1 | 3 | 2 | 10 | 18 | fine at 4, collapsed at 6 |" in table
