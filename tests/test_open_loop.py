"""The open loop: requests due at a fixed rate whatever the server does, latency from due."""

import json
import shutil
import socket
import socketserver
import statistics
import threading
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path

import pytest

from harness.cli.main import main
from harness.domain.axes import Load, Mode, Verdict, Workload
from harness.domain.cell import Cell, Target
from harness.domain.errors import UsageError
from harness.domain.latency import Kind
from harness.domain.parse import parse_rates
from harness.domain.plan import loads, schedule, target_cells
from harness.domain.result import CellResult, Cpu, WrkResult, generator_cost
from harness.domain.rules import by_throughput
from harness.infra import openloop, wrk
from harness.infra.histogram import Distribution, distribution
from harness.infra.process import free_port
from harness.report import reference, summary
from harness.report.generators import page as generators_page
from harness.run.generators import serving
from harness.store.rundir import RunDir
from loadgen import targets
from tests.cli import ROOT, harness

FIXTURES = Path(__file__).parent / "fixtures"


def test_a_recorded_run_against_the_stalling_server_reads_as_wrk_figures() -> None:
    """tests/fixtures/openloop-stalling.json: 100 req/s for 2.5 s, one whole 1 s stall."""
    result = openloop.parse((FIXTURES / "openloop-stalling.json").read_text())
    s = result.schedule
    assert s is not None and s.due == 250 and s.on_time + s.late + s.dropped == s.due
    assert result.requests == 250 and result.failed == 0
    assert 2.5 < result.duration_s < 2.6  # the schedule, then the last answer
    # A user's wait counts from the moment the request was due: 40% of them were due in the
    # stall and waited up to a second, so the p90 is most of a second.
    assert 600 < result.p90_ms < 1000 and result.p50_ms < 20
    from_due, from_sent = (distribution(result, k) for k in (Kind.corrected, Kind.measured))
    assert from_due is not None and from_sent is not None
    assert from_due.count == from_sent.count == 250
    assert 0.3 < from_due.above(100) / 250 < 0.5


def test_an_open_cell_is_its_rate_and_reads_back() -> None:
    cell = Cell(Target("http://127.0.0.1:8000"), Mode.async_, Workload.list, 500, 2.0, rate=300)
    assert (cell.load, cell.level, cell.level_text) == (Load.open, 300, "300 req/s")
    assert cell.id.endswith("-c500-open300") and "open loop, at most 500" in cell.variant
    assert Cell.from_json(json.loads(json.dumps(cell.to_json()))) == cell
    closed = Cell(Target("http://127.0.0.1:8000"), Mode.async_, Workload.list, 500, 2.0)
    assert closed.load is Load.closed and closed.variant != cell.variant
    assert "open" not in closed.id  # a closed cell's id is what it always was


def test_loads_put_wrk_levels_first_and_a_run_of_both_keeps_them_apart() -> None:
    both = loads([Load.closed, Load.open], [4, 8], [100, 300], 1000)
    assert both == [(4, None), (8, None), (1000, 100), (1000, 300)]
    cells = target_cells("http://127.0.0.1:1", Mode.sync, (Workload.list,), (4,), 1.0, both)
    order = [c.level_key for c, _ in schedule(cells, 1, 0)]
    assert order == [(False, 4), (False, 8), (True, 100), (True, 300)]


def test_rates_are_positive_numbers() -> None:
    assert parse_rates("300,100,100,2.5") == [2.5, 100, 300]
    for bad in ("0", "-1", "fast", "nan", "1e9"):
        with pytest.raises(UsageError, match="RATE"):
            parse_rates(bad)


def test_rate_without_the_open_loop_is_refused(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["run", "--rate", "100", "--dry-run"]) == 2
    assert "RATE: only with LOAD=open" in capsys.readouterr().err
    assert main(["run", "--load", "ajar", "--dry-run"]) == 2
    assert "closed, open" in capsys.readouterr().err


def test_the_generator_cost_is_the_median_per_thousand_due() -> None:
    fixture = openloop.parse((FIXTURES / "openloop-stalling.json").read_text())
    cell = Cell(Target("http://127.0.0.1:1"), Mode.sync, Workload.list, 10, 2.5, rate=100)

    def record(cpu: float | None) -> CellResult:
        return CellResult(cell, Verdict.ok, wrk=fixture, cpu=Cpu(None, None, cpu))

    assert generator_cost([record(0.1), record(0.2), record(None)]) == (0.6, 2)
    closed = WrkResult(1, 1.0, 1, *[1.0] * 6, 0, 0, 0, 0, 0)
    assert generator_cost([CellResult(cell, Verdict.ok, wrk=closed, cpu=Cpu(1, 1, 1))]) is None


# --- against real servers ----------------------------------------------------------------------


@pytest.fixture
def stalling() -> Iterator[str]:
    """uvicorn serving loadgen.targets:stalling (fresh: its first stall is 1.5 s after its
    first request)."""
    with serving("stalling") as url:
        yield url + "/"


@pytest.mark.integration
def test_the_open_loop_sees_the_stall_that_a_closed_loop_hides(stalling: str) -> None:
    """A server that blocks 1 s every 2.5 s: in 2.5 s at 200 req/s, 40% of the requests are due
    while it is blocked. The open loop sends them all the same and counts their wait."""
    assert targets.EVERY_S == 2.5 and targets.STALL_S == 1.0
    command = openloop.OpenLoopCommand(stalling, 200, 1000, targets.EVERY_S, 5.0)
    done = openloop.run(command)
    result, s = done.result, done.result.schedule
    assert s is not None
    assert s.on_time + s.late + s.dropped == s.due == 500  # the rate times the duration
    assert s.dropped == 0 and result.requests == 500 and result.failed == 0
    assert 500 < result.p90_ms < 1100, result  # several hundred milliseconds, from due
    from_due, from_sent = (distribution(result, k) for k in (Kind.corrected, Kind.measured))
    assert from_due is not None and 0.3 < from_due.above(50) / 500 < 0.5
    # Sent on time (a new connection each), they also waited out the stall once sent.
    assert from_sent is not None and 500 < from_sent.percentile_ms(90) < 1100
    assert s.peak_in_flight >= 150  # a connection each for the requests that waited
    assert done.cpu_s > 0


@pytest.mark.integration
def test_wrk_on_the_same_stall_reports_most_requests_fast(stalling: str) -> None:
    """The contrast: wrk's 10 connections each wait out the stall once and send nothing
    meanwhile, so its measured p90 stays a few milliseconds."""
    command = wrk.WrkCommand(stalling, 10, 3, 2, 5.0)  # wrk takes whole seconds
    result = wrk.run(command).result
    measured = distribution(result, Kind.measured)
    assert measured is not None and measured.percentile_ms(90) < 50
    assert measured.above(500) <= 10


@pytest.mark.integration
def test_refused_connections_and_silent_servers_count_as_failures() -> None:
    closed_port = free_port()
    refused = openloop.run(
        openloop.OpenLoopCommand(f"http://127.0.0.1:{closed_port}/", 50, 10, 1.0, 1.0)
    ).result
    assert refused.schedule is not None and refused.schedule.due == 50
    assert refused.connect_errors == 50 and refused.requests == 0 and refused.failed == 50
    with socket.socket() as silent:  # accepts (the kernel does) and never answers
        silent.bind(("127.0.0.1", 0))
        silent.listen(100)
        port = silent.getsockname()[1]
        late = openloop.run(
            openloop.OpenLoopCommand(f"http://127.0.0.1:{port}/", 20, 1000, 1.0, 0.5)
        ).result
    assert late.timeouts == 20 and late.requests == 0
    assert Distribution.decode(late.histograms.corrected).count == 0  # type: ignore[union-attr]


class _Closing(socketserver.BaseRequestHandler):
    """Answers one request per connection, then closes it (Connection: close)."""

    def handle(self) -> None:
        if self.request.recv(4096):
            self.request.sendall(
                b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nConnection: close\r\n\r\nok"
            )


@pytest.mark.integration
def test_requests_waiting_for_a_connection_take_the_next_one_free() -> None:
    """Two connections at most, each closed after one answer: every due request still goes
    out, in order, on the next connection opened; none is dropped."""
    with socketserver.ThreadingTCPServer(("127.0.0.1", 0), _Closing) as server:
        threading.Thread(target=server.serve_forever, daemon=True).start()
        port = server.server_address[1]
        command = openloop.OpenLoopCommand(f"http://127.0.0.1:{port}/", 200, 2, 1.0, 2.0)
        result = openloop.run(command).result
        server.shutdown()
    s = result.schedule
    assert s is not None and (s.due, s.dropped) == (200, 0)
    assert result.requests == 200 and result.failed == 0 and s.connections_opened == 200


def test_an_open_loop_counts_each_failure_once_and_a_drop_is_an_error() -> None:
    result = openloop.parse((FIXTURES / "openloop-stalling.json").read_text())
    assert result.schedule is not None
    broken = replace(result, status_errors=10, read_errors=10)
    assert broken.failed == 20  # wrk's double count of a status error is not the open loop's
    dropped = replace(result, schedule=replace(result.schedule, dropped=5))
    judged = by_throughput(dropped, None)
    assert judged.verdict is Verdict.errors and "5 requests dropped" in judged.reason
    assert by_throughput(result, None).verdict is Verdict.ok


@pytest.mark.integration
def test_an_open_loop_run_end_to_end(tmp_path: Path) -> None:
    out = tmp_path / "open"
    done = harness(
        "run",
        "--load",
        "open",
        "--rate",
        "150",
        "--repeats",
        "1",
        "--modes",
        "async",
        "--styles",
        "dependency",
        "--duration",
        "1s",
        "--warmup",
        "0",
        "--out",
        str(out),
    )
    assert done.returncode == 0, done.stderr
    assert "150 req/s due" in done.stderr
    (record,) = RunDir.open(out).records()
    assert record.cell.rate == 150 and record.cell.id.endswith("-c1000-open150")
    s = record.wrk.schedule if record.wrk else None
    assert s is not None and s.due == 150 and s.on_time + s.late + s.dropped == 150
    assert record.cpu is not None and record.cpu.wrk_s is not None and record.cpu.wrk_s > 0
    assert record.replay is not None and "LOAD=open RATE=150 OPEN_CONNECTIONS=1000" in (
        record.replay.command
    )
    meta = json.loads((out / "metadata.json").read_text())
    generator = meta["provenance"][-1]["open_loop"]
    assert generator["program"] == "loadgen/openloop.py" and generator["cpu_s_per_1000"] > 0
    summary = (out / "summary.md").read_text()
    assert "open loop, at most 1000 connections)" in summary
    assert "| req/s due |" in summary and "sent late / dropped" in summary
    assert "- Open loop: loadgen/openloop.py (" in summary and "CPU-s per 1,000" in summary


# --- reports -----------------------------------------------------------------------------------


def test_the_committed_generators_page_is_what_its_records_give() -> None:
    found = ROOT / "results" / "reference" / "generators"
    data = json.loads((found / "records.json").read_text())
    assert generators_page(data, "make generators") == (found / "README.md").read_text()
    # What docs/method.md says of them: the open loop sent everything due into the stalling
    # server, the closed loops 61-81% of it; k6 held it too, at a higher CPU cost.
    stall = {r["generator"]: r["held"] for r in data["records"] if r.get("stalling")}
    assert stall["openloop"] == 1.0 and stall["k6"] >= 0.99
    assert max(stall[g] for g in ("hey", "h2load", "wrk+lua")) <= 0.81
    cost = {
        g: statistics.median(r["cpu_s_per_1000"] for r in data["records"] if r["generator"] == g)
        for g in stall
    }
    assert cost["k6"] > 2 * cost["openloop"]


def test_open_loop_tables_have_a_row_per_rate_and_the_schedule(tmp_path: Path) -> None:
    """tests/fixtures/run-open: sync and async dependency at 100 and 300 req/s, 2 rounds."""
    run = RunDir.open(FIXTURES / "run-open")
    records = run.records()
    assert {r.cell.rate for r in records} == {100, 300} and len(records) == 8
    table = summary.seed_tables(records)
    lines = [line for line in table.splitlines() if line.startswith("|")]
    assert lines[0].startswith("| req/s due | sync psycopg2 dependency req/s (median) |")
    assert "p99 ms from sent / from due (responses above)" in lines[0]
    assert "sent late / dropped" in lines[0]
    assert [line.split("|")[1].strip() for line in lines[2:]] == ["100", "300"]
    assert " of 200 |" in lines[2] and " of 600 |" in lines[3]  # two rounds' due
    assert "charts/percentiles-uvicorn-list-r10-open.png" in table
    head = summary.header(run.metadata(), records, "run-open")
    assert "- Open loop: loadgen/openloop.py (sha256 " in head and "CPU-s per 1,000" in head
    root = tmp_path / "reference"
    shutil.copytree(FIXTURES / "run-open", root / "bench-open")
    shutil.copytree(ROOT / "results" / "reference" / "generators", root / "generators")
    page = tmp_path / "README.md"
    reference.write(root, page)
    text = page.read_text()
    assert "## Open loop: latency at a fixed arrival rate" in text
    assert "| 300 | uvicorn/async/asyncpg/dependency/" in text
    assert "## Which generator drives the open loop ([page](reference/generators/README.md))" in (
        text
    )
