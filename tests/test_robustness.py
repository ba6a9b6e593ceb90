"""Faults made to happen for real: interruption, resume, a crashing, a failing and a frozen
server, an unreachable or too small database, bad input, a port in use."""

import json
import signal
import socket
import subprocess
import time
from collections.abc import Callable
from pathlib import Path

import psutil
import pytest

from app.settings import SessionStyle
from harness import postgres, runner
from harness.model import Cell, Pool, Verdict, Workload
from harness.process import free_port
from harness.runner import Database, Options, execute, new_metadata, run_cell
from harness.store import RunDir
from servers.registry import Mode, ServerName
from tests.cli import ROOT, harness, start_harness

pytestmark = pytest.mark.integration
QUICK = ["--modes", "sync", "--styles", "context", "--duration", "2s", "--warmup", "0"]


def wait_for(condition: Callable[[], object], timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "condition not reached in time"
        time.sleep(0.05)


def descendants(pid: int) -> set[psutil.Process]:
    try:
        return set(psutil.Process(pid).children(recursive=True))
    except psutil.Error:
        return set()


def alive(procs: set[psutil.Process]) -> list[psutil.Process]:
    def running(p: psutil.Process) -> bool:
        try:
            return p.is_running() and p.status() != psutil.STATUS_ZOMBIE
        except psutil.NoSuchProcess:
            return False

    return [p for p in procs if running(p)]


def named(procs: set[psutil.Process], word: str) -> list[psutil.Process]:
    """Processes whose name or command line has `word` (read while they live, then cached)."""
    found = []
    for p in procs:
        try:
            if word in p.name() or word in " ".join(p.cmdline()):
                found.append(p)
        except psutil.Error:
            pass
    return found


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM])
def test_interruption_stops_everything_keeps_cells_and_resume_finishes(
    sig: signal.Signals, tmp_path: Path
) -> None:
    out = tmp_path / "run"
    proc = start_harness("run", *QUICK, "--connections", "1,2,3", "--out", str(out))
    seen: set[psutil.Process] = set()

    def first_cell_done_and_second_measuring() -> bool:
        seen.update(descendants(proc.pid))
        records = list((out / "cells").glob("*.json")) if (out / "cells").exists() else []
        return len(records) == 1 and bool(named(set(alive(seen)), "wrk"))

    wait_for(first_cell_done_and_second_measuring)
    seen.update(descendants(proc.pid))
    assert named(seen, "postgres") and named(seen, "wrk") and named(seen, "uvicorn")
    proc.send_signal(sig)
    t0 = time.monotonic()
    _, err = proc.communicate(timeout=30)
    assert time.monotonic() - t0 < 10
    assert proc.returncode == 130
    assert alive(seen) == []
    assert f"resume with: python -m harness run --resume {out}" in err
    meta = json.loads((out / "metadata.json").read_text())
    assert meta["complete"] is False and meta["interrupted_by"] == sig.name
    kept = list((out / "cells").glob("*.json"))
    assert len(kept) == 1
    first = kept[0].read_text()

    if sig is signal.SIGINT:
        done = harness("run", "--resume", str(out))
        assert done.returncode == 0, done.stderr
        assert "3 cells" in done.stderr and "[1/2]" in done.stderr and "[3/" not in done.stderr
        assert kept[0].read_text() == first  # the finished cell was not run again
        assert len(RunDir.open(out).records()) == 3
        assert json.loads((out / "metadata.json").read_text())["complete"] is True
        assert "| 3 |" in (out / "summary.md").read_text()


def test_a_server_killed_mid_cell_is_crashed_and_the_run_goes_on(tmp_path: Path) -> None:
    out = tmp_path / "run"
    proc = start_harness(
        "run", *QUICK, "--duration", "3s", "--connections", "2,4", "--out", str(out)
    )
    seen: set[psutil.Process] = set()

    def server_under_load() -> psutil.Process | None:
        seen.update(descendants(proc.pid))
        live = set(alive(seen))
        servers = named(live, "uvicorn")
        return servers[0] if servers and named(live, "wrk") else None

    wait_for(server_under_load)
    victim = server_under_load()
    assert victim is not None
    victim.kill()
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 0, err
    by = {r.cell.connections: r for r in RunDir.open(out).records()}
    assert by[2].verdict is Verdict.crashed
    assert "was killed by SIGKILL" in by[2].note
    assert by[4].verdict is Verdict.ok


def cell(**changes: object) -> Cell:
    base = {
        "server": ServerName.uvicorn,
        "mode": Mode.sync,
        "style": SessionStyle.context,
        "pool": Pool(5, 10),
        "tokens": 40,
        "workers": 1,
        "connections": 2,
        "workload": Workload.list,
        "duration_s": 1.0,
        "rows": 5,
        "pool_timeout_s": 30.0,
    }
    return Cell(**{**base, **changes})  # type: ignore[arg-type]


def test_a_server_that_never_starts_is_failed_to_start_and_the_run_goes_on(
    tmp_path: Path,
) -> None:
    # The CLI refuses this value; the app's own validation is what stops the server here.
    bad, good = cell(pool_timeout_s=99_999.0), cell(connections=3)
    options = Options(warmup_s=0, start_timeout_s=20)
    run = RunDir.create(tmp_path / "run")
    run.write_metadata(new_metadata([bad, good], options, {}))
    execute(run, options)
    by = {r.cell.connections: r for r in run.records()}
    assert by[2].verdict is Verdict.failed_to_start
    assert "invalid settings: POOL_TIMEOUT" in by[2].log_tail
    assert "exited" in by[2].note
    assert by[3].verdict is Verdict.ok


def test_a_port_taken_between_picking_and_binding_does_not_fail_the_cell(
    pg: postgres.Database, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        ports = iter([taken.getsockname()[1]])
        monkeypatch.setattr(runner, "free_port", lambda: next(ports, None) or free_port())
        result = run_cell(cell(), Database(pg.url, pg.pid), Options(warmup_s=0), None, tmp_path)
    assert result.verdict is Verdict.ok, result


def test_unreachable_database_is_reported_before_anything_runs(tmp_path: Path) -> None:
    url = f"postgresql://bench@127.0.0.1:{free_port()}/bench"
    done = harness("run", *QUICK, "--database-url", url, "--out", str(tmp_path / "run"))
    assert done.returncode == 1
    assert "is unreachable" in done.stderr and "Traceback" not in done.stderr
    assert not (tmp_path / "run").exists()


def test_pools_larger_than_max_connections_are_refused_with_the_numbers(
    pg: postgres.Database, tmp_path: Path
) -> None:
    done = harness(
        "run",
        *QUICK,
        "--pools",
        "100+100",
        "--workers",
        "2",
        "--database-url",
        pg.url,
        "--out",
        str(tmp_path / "run"),
    )
    assert done.returncode == 2
    assert "needs 400 connections (workers x (pool_size + max_overflow))" in done.stderr
    assert "max_connections=300" in done.stderr
    assert not (tmp_path / "run").exists()


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--server", "nginx"], "SERVER: unknown value 'nginx'; choose from uvicorn"),
        (["--pools", "5+x"], "POOLS: pool '5+x' is not SIZE+OVERFLOW"),
        (["--connections", "0"], "CONNECTIONS: '0' is not a whole number from 1"),
        (["--connections", "12,-4"], "CONNECTIONS: '-4' is not a whole number from 1"),
        (["--duration", "10"], "DURATION: '10' needs a unit"),
        (["--modes", "threads"], "MODES: unknown value 'threads'; choose from sync, async"),
        (["--out", "/etc/hostname/run"], "OUT: cannot write results to /etc/hostname/run"),
    ],
)
def test_bad_input_is_one_clear_line_and_exit_code_2(args: list[str], message: str) -> None:
    done = harness("run", *args)
    assert done.returncode == 2
    assert done.stderr.startswith(f"error: {message}")
    assert done.stderr.count("\n") == 1 and "Traceback" not in done.stderr


def test_bad_input_through_the_makefile() -> None:
    done = subprocess.run(
        ["make", "-s", "bench", "SERVER=nginx"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
        stdin=subprocess.DEVNULL,
    )
    assert done.returncode != 0
    assert "error: SERVER: unknown value 'nginx'" in done.stderr
    assert "Traceback" not in done.stderr
