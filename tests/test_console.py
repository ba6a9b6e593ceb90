"""What a person watching a run sees: plain lines off a terminal, a live line on one, and the
time left at the pace measured so far."""

from __future__ import annotations

import io
from pathlib import Path

from harness.cli.console import Console, Pace
from harness.store.rundir import RunDir

FIXTURES = Path(__file__).parent / "fixtures"


def test_time_left_follows_the_measured_pace() -> None:
    now = [0.0]
    pace = Pace(lambda: now[0])
    assert pace.left(100.0) == 100.0  # nothing done yet: the plan's estimate
    now[0] = 30.0  # 20 s of planned work took 30 s (a collapse's wait, say)
    assert pace.left(80.0) == 120.0
    now[0] = 50.0  # then on plan: 40 s of it in 50 s
    assert pace.left(60.0) == 75.0


def test_off_a_terminal_one_plain_line_per_measurement() -> None:
    record = RunDir.open(FIXTURES / "run").records()[0]
    out = io.StringIO()
    console = Console(out)  # a StringIO is not a terminal
    assert not console.live
    console.cell_started(record.cell, "1/2", 10.0)
    console.record_written(record)
    (line,) = out.getvalue().splitlines()
    assert line.startswith("[1/2] 0:00 elapsed, ~0:10 left | uvicorn/async/")
    assert "| 1 connection ... " in line and line.endswith(" req/s, p99 -, 0 failed, ok")


def test_on_a_terminal_a_live_line_and_the_results_above_it() -> None:
    record = RunDir.open(FIXTURES / "run").records()[0]
    out = io.StringIO()
    console = Console(out, live=True)
    console.cell_started(record.cell, "3/8", 60.0, repeat=2)
    assert console.progress is not None  # drawn while the measurement runs
    console.record_written(record)
    assert console.progress is None
    text = out.getvalue()
    assert "1 connection (round 2) ... " in text and "req/s, p99 -, 0 failed, ok" in text


def test_an_interrupted_measurement_leaves_neither_a_live_line_nor_an_open_one() -> None:
    record = RunDir.open(FIXTURES / "run").records()[0]
    live, plain = Console(io.StringIO(), live=True), Console(out := io.StringIO())
    for console in (live, plain):
        console.cell_started(record.cell, "1/2", 10.0)
        console.close()
    assert live.progress is None
    assert out.getvalue().endswith(" ... \n") and not plain.pending
