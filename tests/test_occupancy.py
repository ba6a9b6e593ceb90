"""The evidence of a freeze: the side channel's timeline and the py-spy thread dump.

Unit tests read dumps py-spy really produced (tests/fixtures/pyspy-*.json: a uvicorn sync app
with 3 tokens and a pool of 1+1, idle, then frozen under 16 connections); the integration tests
freeze a real server and look at what the harness kept.
"""

import json
import os
import re
import socket
import threading
from dataclasses import replace
from pathlib import Path

import pytest

from harness.domain.axes import Mode, Verdict
from harness.domain.occupancy import Sample, ThreadDump, Timeline, summarize
from harness.domain.result import CellResult
from harness.infra import occupancy as infra_occupancy
from harness.infra import postgres
from harness.infra.occupancy import DumpFailed, dump_threads
from harness.infra.server import get_json
from harness.report import evidence, waits
from harness.store.rundir import RunDir
from tests.cli import harness
from tests.test_dimensions import cell
from tests.test_target import hand_started

FIXTURES = Path(__file__).parent / "fixtures"


def fixture(name: str) -> list[dict[str, object]]:
    return json.loads((FIXTURES / f"pyspy-{name}-uvicorn.json").read_text())


def test_a_frozen_dump_counts_every_token_holder_waiting_for_a_connection() -> None:
    dump = summarize(fixture("frozen"), file="threads/x.json")
    assert (dump.processes, dump.threadpool, dump.waiting_for_connection, dump.idle) == (1, 3, 3, 0)
    assert dump.where == {"list_users > QueuePool._do_get": 3}
    assert dump.headline.startswith("3 of 3 threadpool threads waiting for a pooled connection")
    assert ThreadDump.from_json(dump.to_json()) == dump


def test_an_idle_dump_counts_idle_workers_and_no_waiters() -> None:
    dump = summarize(fixture("idle"))
    assert (dump.threadpool, dump.waiting_for_connection, dump.idle, dump.where) == (2, 0, 2, {})


def test_a_failed_dump_says_why_in_its_headline() -> None:
    assert ThreadDump(error="PID 1 is gone").headline == "no thread dump: PID 1 is gone"


def sample(t: float, pid: int, ok: int, tokens: int = 1, out: int = 1) -> Sample:
    return Sample(t, pid, tokens, 40, 0, out, 15, 2, ok, 0)


def test_seconds_count_each_process_responses_and_sum_the_occupancy() -> None:
    timeline = Timeline(
        hz=10,
        samples=(
            sample(0.0, 1, ok=100),
            sample(0.1, 2, ok=7),
            sample(0.9, 1, ok=150),
            sample(0.95, 2, ok=27, tokens=40, out=15),
            sample(1.5, 1, ok=190, tokens=40),
            sample(2.2, 2, ok=27, tokens=40, out=15),
        ),
        measured_from_s=1.0,
    )
    seconds = timeline.seconds()
    # Second 0: 50 + 20 since each process's first sample; second 1: process 1 only (+40);
    # second 2: process 2 answered nothing more.
    assert [s.ok for s in seconds] == [70, 40, 0]
    assert [s.tokens_in_use for s in seconds] == [41, 80, 80]
    assert [s.checked_out for s in seconds] == [16, 16, 16]
    assert Timeline.from_json(json.loads(json.dumps(timeline.to_json()))) == timeline
    assert [s.t_s for s in timeline.measured.samples] == [1.5, 2.2]
    assert evidence.busiest(timeline) == (
        "worker 1: tokens 40/40, conns 1/15, 2 in flight; "
        "worker 2: tokens 40/40, conns 15/15, 2 in flight"
    )


def test_a_process_that_is_not_running_cannot_be_dumped() -> None:
    with pytest.raises(DumpFailed, match=r"^PID \d+ is not running$"):
        dump_threads(2**22 + 1)


@pytest.mark.parametrize(
    ("binary", "message"),
    [("/nonexistent/py-spy", "py-spy could not be run"), ("/bin/echo", "is not JSON")],
)
def test_a_py_spy_that_fails_otherwise_is_a_failed_dump_too(
    monkeypatch: pytest.MonkeyPatch, binary: str, message: str
) -> None:
    monkeypatch.setattr(infra_occupancy, "py_spy", lambda: binary)
    with pytest.raises(DumpFailed, match=message):
        dump_threads(os.getpid())


def test_a_body_cut_short_is_an_unanswered_sample() -> None:
    """The side channel's reader raises OSError, which the sampler counts, for any failure of
    the connection: here a response that promises more than it sends."""
    with socket.create_server(("127.0.0.1", 0)) as listener:

        def answer_short() -> None:
            conn, _ = listener.accept()
            with conn:
                conn.recv(4096)
                conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\n{}")

        server = threading.Thread(target=answer_short)
        server.start()
        port = listener.getsockname()[1]
        with pytest.raises(OSError):
            get_json(f"http://127.0.0.1:{port}/_occupancy", timeout=5)
        server.join()


def test_old_records_without_evidence_still_load() -> None:
    record = next(iter(RunDir.open(FIXTURES / "run").records()))
    assert record.occupancy is None and record.threads is None
    again = CellResult.from_json(json.loads(json.dumps(record.to_json())))
    assert again == record


FREEZE = [
    "--modes", "sync", "--styles", "dependency", "--pools", "1+1", "--tokens", "3",
    "--pool-timeout", "5s", "--repeats", "1", "--duration", "2s", "--warmup", "0",
]  # fmt: skip


@pytest.mark.integration
def test_a_small_real_freeze_keeps_a_dump_and_a_timeline_of_every_token_in_use(
    tmp_path: Path,
) -> None:
    out = tmp_path / "run"
    done = harness("run", *FREEZE, "--connections", "16", "--out", str(out))
    assert done.returncode == 0, done.stderr
    (record,) = RunDir.open(out).records()
    assert record.verdict is Verdict.collapsed
    dump = record.threads
    assert dump is not None and not dump.error, dump
    # FastAPI runs a dependency's exit under a limiter of its own, so a 4th worker thread may
    # exist (idle): every busy threadpool thread must be one of the 3 waiting on the pool.
    assert dump.waiting_for_connection == dump.threadpool - dump.idle == 3, dump
    assert dump.threadpool in (3, 4), dump
    assert dump.where == {"Orm.list_users > QueuePool._do_get": 3}
    assert dump.file.endswith(".json.gz")
    raw = RunDir.open(out).read_threads(dump.file)
    assert summarize(raw, dump.file) == dump
    timeline = record.occupancy
    assert timeline is not None and len(timeline.samples) >= 10  # 10 Hz over 2 s
    for last in timeline.samples[-5:]:
        assert (last.tokens_in_use, last.tokens_total) == (3, 3)
        assert (last.checked_out, last.capacity, last.pool_waiting) == (2, 2, 3)
        assert last.in_flight == 16
    assert timeline.seconds()[-1].ok == 0
    summary = (out / "summary.md").read_text()
    assert "## Why cells collapsed" in summary
    assert re.search(r"3 of [34] threadpool threads waiting for a pooled connection", summary)
    assert (out / "charts" / evidence.chart_name(record)).stat().st_size > 10_000


@pytest.mark.integration
def test_side_channel_off_is_neither_sampled_nor_served(tmp_path: Path) -> None:
    out = tmp_path / "run"
    done = harness("run", *FREEZE, "--connections", "1", "--occupancy", "off", "--out", str(out))
    assert done.returncode == 0, done.stderr
    (record,) = RunDir.open(out).records()
    assert record.verdict is Verdict.ok and record.occupancy is None and record.threads is None
    assert record.cell.id.endswith("-occoff-c1") and "side channel off" in record.cell.variant


@pytest.mark.integration
def test_a_target_that_freezes_is_dumped_by_its_pid(pg: postgres.Database, tmp_path: Path) -> None:
    postgres.reset_dataset(pg.url, 10)
    tight = {"POOL_SIZE": "1", "MAX_OVERFLOW": "0", "THREADPOOL_TOKENS": "2", "POOL_TIMEOUT": "5"}
    with hand_started("uvicorn", pg.url, **tight) as (port, server):
        out = tmp_path / "run"
        done = harness(
            "run", "--repeats", "1", "--target", f"http://127.0.0.1:{port}", "--modes", "sync",
            "--target-pid", str(server.pid), "--connections", "1,12", "--duration", "2s",
            "--warmup", "0", "--out", str(out),
        )  # fmt: skip
        assert done.returncode == 0, done.stderr
    fine, frozen = sorted(RunDir.open(out).records(), key=lambda r: r.cell.connections)
    assert fine.verdict is Verdict.ok and fine.threads is None and fine.occupancy is not None
    assert frozen.verdict is Verdict.collapsed
    assert frozen.threads is not None and frozen.threads.waiting_for_connection == 2
    assert frozen.occupancy is not None and frozen.occupancy.samples[-1].tokens_in_use == 2


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--target-pid", "12"], "TARGET_PID: only with TARGET"),
        (
            ["--target", "http://127.0.0.1:9", "--modes", "sync", "--target-pid", "x"],
            "TARGET_PID",
        ),
        (["--occupancy", "maybe"], "OCCUPANCY: unknown value 'maybe'; choose from on, off"),
    ],
)
def test_bad_evidence_settings_are_one_line_and_exit_2(args: list[str], message: str) -> None:
    done = harness("run", "--dry-run", *args)
    assert done.returncode == 2, done.stderr
    assert message in done.stderr and len(done.stderr.strip().splitlines()) == 1


@pytest.mark.integration
def test_a_map_explains_its_sync_dependency_line_with_the_evidence(tmp_path: Path) -> None:
    out = tmp_path / "map"
    done = harness(
        "map", "--variants", "sync-dependency", "--pools", "1+1", "--tokens", "3",
        "--start", "4", "--ceiling", "8", "--duration", "1s", "--warmup", "0",
        "--ceiling-levels", "none", "--onsets", "cold", "--boundary-probes", "1",
        "--out", str(out),
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    summary = (out / "summary.md").read_text()
    section = summary.split("### Why each sync `dependency` line of uvicorn froze")[1]
    start = "| cold | 1+1 | 3 | 1 | 5 |"
    row = next(line for line in section.splitlines() if line.startswith(start))
    assert "collapsed at" in row and "waiting for a pooled connection" in row
    assert "tokens 3/3" in row and "conns 2/2" in row
    # A map states each freeze in that table: no timeline its summary would not link.
    assert not list((out / "charts").glob("timeline-*.png"))


def test_where_requests_waited_sums_a_tick_over_its_processes() -> None:
    def at(t: float, pid: int, in_flight: int, awaiting: int, queued: int, lag: float) -> Sample:
        return Sample(t, pid, 0, 40, 0, 15, 15, in_flight, 0, 0, None, awaiting, queued, lag)

    samples = (
        at(1.0, 1, 60, 50, 40, 10.0),
        at(1.0, 2, 50, 40, 30, 20.0),
        at(1.1, 1, 70, 60, 50, 30.0),
        at(1.1, 2, 40, 40, 20, 40.0),
    )
    record = CellResult(
        cell(Mode.async_), Verdict.ok, occupancy=Timeline(10, samples, measured_from_s=1.0)
    )
    figures = waits.row([record])
    # Ticks: in flight 110 and 110, past their response 20 and 10, queued 70 and 70.
    assert figures == ["110", "15", "30 / 30", "70", "25.0 / 40.0"]
    assert waits.row([replace(record, occupancy=Timeline(10, (sample(1.0, 1, ok=1),)))]) is None


@pytest.mark.integration
def test_an_async_apps_pool_queue_and_loop_lag_are_sampled(
    tmp_path: Path,
) -> None:
    out = tmp_path / "run"
    done = harness(
        "run", "--server", "uvicorn", "--modes", "async", "--styles", "dependency",
        "--pools", "2+0", "--connections", "24", "--duration", "2s", "--repeats", "1",
        "--out", str(out),
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    (record,) = RunDir.open(out).records()
    assert record.occupancy is not None
    measured = record.occupancy.measured.samples
    # 24 connections share 2 pooled connections: tasks queue at the async pool, and the loop
    # reports its lag in every sample.
    assert max(s.pool_tasks_waiting or 0 for s in measured) >= 10
    assert all(s.loop_lag_ms is not None and s.pool_waiting is None for s in measured)
    assert "## Where requests waited" in (out / "summary.md").read_text()
