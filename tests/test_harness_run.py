"""The harness end to end: real PostgreSQL, real servers, real wrk, 1-3 s cells."""

import csv
import json
import os
import shlex
import subprocess
from pathlib import Path

import pytest

from harness.cli.main import EXIT_COLLAPSE
from harness.domain.axes import Verdict
from harness.domain.latency import Kind
from harness.domain.result import FORMAT
from harness.infra.histogram import distribution
from harness.store.rundir import RunDir
from tests.cli import ROOT, harness

pytestmark = pytest.mark.integration


def test_two_cell_run_writes_records_metadata_and_tables(tmp_path: Path) -> None:
    out = tmp_path / "run"
    done = harness(
        "run",
        "--repeats",
        "1",
        "--modes",
        "sync,async",
        "--styles",
        "context",
        "--connections",
        "4",
        "--duration",
        "1s",
        "--warmup",
        "0",
        "--rows",
        "5",
        "--workload",
        "insert",
        "--out",
        str(out),
    )
    assert done.returncode == 0, done.stderr
    assert "[2/2]" in done.stderr
    # The console's last lines: the summary's conclusions in brief.
    assert "Async or sync: async/sync " in done.stderr and "at 4 connections" in done.stderr
    run = RunDir.open(out)
    records = run.records()
    assert len(records) == 2
    for r in records:
        assert r.verdict is Verdict.ok, r
        assert r.judged_by == "side channel" and "none stalled" in r.judgement, r.judgement
        assert r.wrk is not None and r.wrk.ok_requests > 0
        assert r.cpu is not None and r.cpu.server_s is not None and r.cpu.postgres_s is not None
        assert r.integrity is not None and r.integrity.ok and r.integrity.missing == 0
        assert r.integrity.acknowledged == r.wrk.ok_requests  # no warm-up in this run
        # Both latency distributions, the measured one a value per response (wrk records no
        # latency beyond its timeout).
        measured = distribution(r.wrk, Kind.measured)
        assert r.wrk.histograms is not None and measured is not None
        assert r.wrk.requests - r.wrk.timeouts <= measured.count <= r.wrk.requests
    meta = json.loads((out / "metadata.json").read_text())
    assert meta["complete"] is True and meta["format"] == FORMAT
    (entry,) = meta["provenance"]
    assert entry["command"] == "run" and entry["outcome"] == "complete" and entry["measured"] == 2
    assert entry["machine"]["cpu_count"] >= 1 and entry["machine"]["cpu_model"]
    assert entry["packages"]["fastapi"] and entry["database"]["server_version"].startswith("1")
    assert entry["wrk_version"].startswith("wrk")
    assert len(entry["git"]["sha"]) == 40 or entry["git"]["sha"] == "unknown"
    assert entry["started_at"] <= entry["finished_at"]
    assert meta["parameters"]["connections"] == "4"
    summary = (out / "summary.md").read_text()
    assert "| connections | sync psycopg2 context req/s |" in summary
    assert "async asyncpg context req/s" in summary
    assert "p99 ms measured / corrected" in summary and "- /" not in summary
    for chart in ("percentiles", "p99"):
        assert f"charts/{chart}-uvicorn-insert-r5.png" in summary
        assert (out / "charts" / f"{chart}-uvicorn-insert-r5.png").stat().st_size > 10_000
    rows = list(csv.DictReader((out / "results.csv").open()))
    assert [r["mode"] for r in rows] == ["async", "sync"]
    assert all(int(r["rows_added"]) >= int(r["ok_requests"]) for r in rows)
    # Each record says how to measure its cell alone again; doing so measures the same cell.
    sync = next(r for r in records if r.cell.mode == "sync")
    assert sync.replay is not None and sync.replay.command.startswith("make bench SERVER=uvicorn")
    again = tmp_path / "again"
    argv = [*shlex.split(sync.replay.command), f"OUT={again}"]
    env = {k: v for k, v in os.environ.items() if k != "DATABASE_URL"}
    done = subprocess.run(argv, cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    (replayed,) = RunDir.open(again).records()
    assert replayed.cell == sync.cell and replayed.replay == sync.replay


def test_small_reproduction_of_the_sync_failure(tmp_path: Path) -> None:
    """4 threadpool tokens, pool 1+1, pool_timeout 2 s, 16 connections: the mechanism in small."""
    out = tmp_path / "repro"
    done = harness(
        "run",
        "--repeats",
        "1",
        "--modes",
        "sync",
        "--styles",
        "dependency,context",
        "--pools",
        "1+1",
        "--tokens",
        "4",
        "--pool-timeout",
        "2s",
        "--connections",
        "1,16",
        "--duration",
        "2s",
        "--warmup",
        "1s",
        "--fail-on",
        "collapse",
        "--out",
        str(out),
    )
    # Every cell measured and reported, then the exit code a CI job gates on.
    assert done.returncode == EXIT_COLLAPSE == 3, done.stderr
    said = "FAIL_ON=collapse: 1 of 4 measurements collapsed (uvicorn-sync-dependency-"
    assert said in done.stderr
    assert (out / "summary.md").is_file() and (out / "comparisons.json").is_file()
    by = {(r.cell.known("style"), r.cell.connections): r for r in RunDir.open(out).records()}
    dependency, context = by[("dependency", 16)], by[("context", 16)]
    assert dependency.verdict is Verdict.collapsed, dependency
    # Its one process sampled throughout; with a 2 s pool timeout the stall can be cut into
    # spans under a second by the few responses each timeout lets through, and the throughput
    # rule then says it: either way, a collapse.
    assert dependency.judged_by == "side channel", dependency.judgement
    assert dependency.occupancy is not None and dependency.occupancy.per_process
    assert dependency.pool_timeouts > 0
    assert "QueuePool limit of size 1 overflow 1 reached" in dependency.log_tail
    # The frozen cell ends on time: warm-up, run, and at most pool_timeout + 5 s of waiting for
    # the pool timeouts, plus start and stop; its server is killed and leaves no connection.
    assert dependency.elapsed_s < 1 + 2 + 2 + 5 + 10
    assert "outlived" not in dependency.note
    assert context.verdict is Verdict.ok, context
    assert context.pool_timeouts == 0
    assert context.wrk is not None and context.wrk.ok_rps > 50


def test_the_freeze_needs_a_blocking_pool_not_sqlalchemy_and_granian_is_stopped(
    tmp_path: Path,
) -> None:
    """The same small reproduction under granian, through the ORM and through psycopg2 alone
    (its pool behind a semaphore that blocks the thread): both freeze, granian's log (which
    names exceptions without their module) counts the pool timeouts, and the frozen server and
    its worker are killed on time, leaving no connection behind."""
    out = tmp_path / "layers"
    done = harness(
        "run", "--server", "granian", "--repeats", "1", "--modes", "sync",
        "--styles", "dependency", "--layers", "orm,driver", "--pools", "1+1", "--tokens", "4",
        "--pool-timeout", "2s", "--connections", "1,16", "--duration", "2s", "--warmup", "1s",
        "--out", str(out),
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    by = {(r.cell.known("layer"), r.cell.connections): r for r in RunDir.open(out).records()}
    for layer, timeout_line in (
        ("orm", "TimeoutError: QueuePool limit of size 1 overflow 1 reached"),
        ("driver", "PoolExhausted: psycopg2 pool limit of size 1 overflow 1 reached"),
    ):
        fine, frozen = by[(layer, 1)], by[(layer, 16)]
        assert fine.verdict is Verdict.ok, fine
        assert frozen.verdict is Verdict.collapsed, frozen
        assert frozen.pool_timeouts and frozen.pool_timeouts > 0, frozen
        assert timeout_line in frozen.log_tail
        assert frozen.elapsed_s < 1 + 2 + 2 + 5 + 10
        assert "outlived" not in frozen.note
    summary = (out / "summary.md").read_text()
    assert "| sync psycopg2 driver dependency req/s |" in summary
