"""Faults made to happen for real: interruption, resume, a crashing, a failing and a frozen
server, an unreachable or too small database, bad input, a port in use."""

import json
import signal
import socket
import subprocess
import time
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path

import psutil
import pytest

from harness.domain.axes import Mode, Pool, ServerName, SessionStyle, Verdict, Workload
from harness.domain.cell import Cell, ServerConfig
from harness.infra import postgres
from harness.infra.process import free_port
from harness.run import cell as lifecycle
from harness.run.bench import execute
from harness.run.options import Options
from harness.run.session import provenance_entry
from harness.store.rundir import RunDir
from tests.cli import ROOT, harness, start_harness

pytestmark = pytest.mark.integration
QUICK = ["--modes", "sync", "--styles", "context", "--duration", "2s", "--warmup", "0"]
QUICK += ["--repeats", "1"]


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


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM, signal.SIGHUP])
def test_interruption_stops_everything_keeps_cells_and_resume_finishes(
    sig: signal.Signals, tmp_path: Path
) -> None:
    out = tmp_path / "run"
    proc = start_harness("run", *QUICK, "--connections", "1,2,3", "--out", str(out))
    seen: set[psutil.Process] = set()

    def first_cell_done_and_second_measuring() -> bool:
        seen.update(descendants(proc.pid))
        records = list((out / "cells").glob("*.json")) if (out / "cells").exists() else []
        return len(records) == 1 and bool(named(set(alive(seen)), "wrk_report.lua"))

    wait_for(first_cell_done_and_second_measuring)
    seen.update(descendants(proc.pid))
    assert named(seen, "postgres") and named(seen, "wrk") and named(seen, "uvicorn")
    proc.send_signal(sig)
    t0 = time.monotonic()
    _, err = proc.communicate(timeout=30)
    assert time.monotonic() - t0 < 10
    assert proc.returncode == 130
    assert alive(seen) == []
    assert f"resume with: make bench RESUME={out}" in err
    meta = json.loads((out / "metadata.json").read_text())
    assert meta["complete"] is False
    (entry,) = meta["provenance"]
    assert entry["outcome"] == f"interrupted ({sig.name})" and entry["measured"] == 1
    kept = list((out / "cells").glob("*.json"))
    assert len(kept) == 1
    first = kept[0].read_text()

    if sig is signal.SIGINT:
        done = harness("run", "--resume", str(out))
        assert done.returncode == 0, done.stderr
        assert "2 of 3 measurements" in done.stderr and "[1/2]" in done.stderr
        assert "[3/" not in done.stderr
        assert kept[0].read_text() == first  # the finished cell was not run again
        assert len(RunDir.open(out).records()) == 3
        meta = json.loads((out / "metadata.json").read_text())
        assert meta["complete"] is True
        first_entry, second = meta["provenance"]  # the resume added its own entry
        assert first_entry == entry
        assert (second["command"], second["outcome"], second["measured"]) == (
            "resume",
            "complete",
            2,
        )
        summary = (out / "summary.md").read_text()
        assert "| 3 |" in summary and "2. `resume`" in summary


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


CONFIG = ServerConfig(
    name=ServerName.uvicorn,
    style=SessionStyle.context,
    pool=Pool(5, 10),
    tokens=40,
    workers=1,
    rows=5,
    pool_timeout_s=30.0,
)


def cell(connections: int = 2, config: ServerConfig = CONFIG) -> Cell:
    return Cell(config, Mode.sync, Workload.list, connections, duration_s=1.0)


def test_a_server_that_never_starts_is_failed_to_start_and_the_run_goes_on(
    tmp_path: Path,
) -> None:
    # The CLI refuses this value; the app's own validation is what stops the server here.
    bad = cell(config=replace(CONFIG, pool_timeout_s=99_999.0))
    good = cell(connections=3)
    options = Options(warmup_s=0, start_timeout_s=20)
    cells = {"cells": [bad.to_json(), good.to_json()], "schedule": {"repeats": 1, "seed": 0}}
    run = RunDir.create(tmp_path / "run", "run", {}, options.to_json(), cells)
    execute(run, options, provenance_entry("run", [bad, good]))
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
        monkeypatch.setattr(lifecycle, "free_port", lambda: next(ports, None) or free_port())
        result = lifecycle.run_cell(
            cell(), CONFIG, pg, Options(warmup_s=0), None, tmp_path, keep_dump=lambda _: ""
        )
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
