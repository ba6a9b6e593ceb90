"""`make decide` for real, with tiny settings: every preset value overridden by its variable,
every cell through the relay where it has a latency, and the decision table written."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import pytest

from harness.infra import postgres
from harness.store.rundir import RunDir
from tests.cli import ROOT, _env, harness

pytestmark = pytest.mark.integration


def test_make_decide_with_tiny_settings_writes_the_decision_table(tmp_path: Path) -> None:
    out = tmp_path / "decide"
    settings = [
        "SERVER=uvicorn", "REPEATS=2", "DURATION=1s", "WARMUP=0", "CONNECTIONS=4",
        "ROWS=10,50", "DB_LATENCY=0,1ms", "WORKERS=1",
        "VARIANTS=sync-context,async-dependency", "BUDGET=0", f"OUT={out}",
    ]  # fmt: skip
    done = subprocess.run(
        ["make", "-s", "decide", *settings],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
        stdin=subprocess.DEVNULL,
        env={k: v for k, v in _env().items() if k not in ("MAKEFLAGS", "MAKELEVEL", "MFLAGS")},
    )
    assert done.returncode == 0, done.stderr
    assert "16 of 16 measurements (8 cells x 2 rounds), about" in done.stderr
    run = RunDir.open(out)
    assert "capacity" not in run.metadata()
    assert run.kind == "decide" and run.metadata()["complete"] is True
    records = run.records()
    assert len(records) == 16
    assert {r.cell.known("rows") for r in records} == {10, 50}
    relayed = [r for r in records if r.cell.db_latency]
    assert len(relayed) == 8 and all(r.cpu and r.cpu.relay_s for r in relayed)
    rows = json.loads((out / "decision.json").read_text())["rows"]
    assert [(r["db_latency"], r["rows"]) for r in rows] == [
        ("0", 10), ("0", 50), ("1ms", 10), ("1ms", 50),
    ]  # fmt: skip
    for row in rows:
        (level,) = row["levels"]
        assert level["async_over_sync"]["n"] == 2 and level["async_over_sync"]["low"] is not None
        assert row["rule"].startswith("Against sync `context`: ") and "Rule: " in row["rule"]
        assert row["dependency_held_up_to"] is None  # not measured: VARIANTS left it out
    text = (out / "decision.md").read_text()
    assert "## uvicorn, 1 worker" in text and text.count("| 1 ms |") == 2
    assert (out / "decision.csv").read_text().count("\n") == 5
    assert (out / "charts" / "latency-uvicorn-w1.png").is_file()
    assert (out / "charts" / "ratio-uvicorn-w1.png").is_file()
    assert f"decision: {out / 'decision.md'}" in done.stderr
    assert "uvicorn, 1 worker, DB latency 1 ms, 50 rows: Against sync context" in done.stderr


def test_make_decide_leads_with_capacity_within_the_slo_and_resumes_by_replaying(
    tmp_path: Path,
) -> None:
    """One probe per line (BUDGET fits one): the page leads with the capacity section, the rule
    reads it, and a resume measures nothing again (the search replays its records)."""
    out = tmp_path / "decide"
    done = harness(
        "decide", "--server", "uvicorn", "--repeats", "1", "--duration", "1s", "--warmup", "0",
        "--connections", "4", "--rows", "10", "--db-latency", "0", "--workers", "1",
        "--variants", "sync-context,async-context", "--budget", "20s", "--start", "50",
        "--out", str(out),
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert "then a capacity search of 2 lines within p99 < 250 ms" in done.stderr
    run = RunDir.open(out)
    probes = [r for r in run.records() if r.cell.rate is not None]
    assert sorted((r.cell.mode.value, r.cell.rate, r.cell.duration_s) for r in probes) == [
        ("async", 50.0, 10.0), ("sync", 50.0, 10.0),
    ]  # fmt: skip
    assert all(r.cell.connections == 1000 for r in probes)
    text = (out / "decision.md").read_text()
    assert text.index("## Capacity within p99 < 250 ms") < text.index("| DB latency")
    (row,) = json.loads((out / "decision.json").read_text())["rows"]
    assert row["slo"] == "p99 < 250 ms" and set(row["capacity"]) == {
        "async context",
        "sync context",
    }
    for found in row["capacity"].values():
        # One probe at 50 req/s that met the objective: at least 50, nothing above it probed.
        assert (found["sustains"], found["not"], found["missed"]) == (50, None, {"50": [0, 1]})
    assert row["rule"].startswith("Within p99 < 250 ms, in warm 10 s open-loop probes: ")
    assert "Rule: either, by capacity within p99 < 250 ms" in row["rule"]
    assert "by throughput alone: " in row["rule"]
    again = harness("decide", "--resume", str(out))
    assert again.returncode == 0, again.stderr
    assert len(RunDir.open(out).records()) == len(run.records())


def test_decide_checks_the_workers_connections_against_max_connections(
    pg: postgres.Database, tmp_path: Path
) -> None:
    """Workers as deployed multiply the pools: an external database too small is refused in
    one line with the numbers, before anything runs."""
    done = harness(
        "decide", "--workers", "1,cpus", "--pools", "200+100", "--database-url", pg.url,
        "--out", str(tmp_path / "run"),
    )  # fmt: skip
    needed = (os.cpu_count() or 1) * 300  # the most workers times the pool
    assert done.returncode == 2, done.stderr
    assert done.stderr == (
        f"error: the largest cell needs {needed} connections (workers x (pool_size + "
        "max_overflow)) plus 10 for the harness, but the database allows max_connections=300\n"
    )
    assert not (tmp_path / "run").exists()
