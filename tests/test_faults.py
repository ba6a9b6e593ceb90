"""Faults in the middle of a run, injected for real: the database dies, wrk dies, the harness is
killed outright, OUT fills up. Each costs one cell at most, never a traceback or a process."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from contextlib import suppress
from pathlib import Path

import psutil
import pytest

from harness.domain.axes import Verdict
from harness.infra.process import live_dir
from harness.store.rundir import RunDir
from tests.cli import harness, start_harness
from tests.test_robustness import QUICK, alive, descendants, named, wait_for

pytestmark = pytest.mark.integration
# A wrk sending load runs the report script; `wrk -v` (the version, for the provenance) does not.
LOAD = "wrk_report.lua"


def records_in(out: Path) -> list[Path]:
    return list((out / "cells").glob("*.json")) if (out / "cells").exists() else []


def measuring(proc: subprocess.Popen[str], seen: set[psutil.Process], after: int, out: Path):
    def ready() -> bool:
        seen.update(descendants(proc.pid))
        return len(records_in(out)) == after and bool(named(set(alive(seen)), LOAD))

    return ready


def test_a_killed_postmaster_costs_one_cell_and_a_fresh_cluster_takes_over(tmp_path: Path) -> None:
    out = tmp_path / "run"
    proc = start_harness("run", *QUICK, "--connections", "1,2,3", "--out", str(out))
    seen: set[psutil.Process] = set()
    wait_for(measuring(proc, seen, 1, out))
    (postmaster,) = [p for p in named(set(alive(seen)), "postgres -D") if p.ppid() == proc.pid]
    postmaster.kill()
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 0, err
    assert "Traceback" not in err and "a fresh cluster replaces it" in err
    verdicts = {r.cell.connections: r.verdict for r in RunDir.open(out).records()}
    assert verdicts[1] is Verdict.ok and verdicts[3] is Verdict.ok
    assert verdicts[2] is Verdict.database_lost
    lost = next(r for r in RunDir.open(out).records() if r.cell.connections == 2)
    assert lost.note.startswith("the database stopped answering")
    assert alive(seen | set(descendants(proc.pid))) == []


def test_a_killed_wrk_gives_load_failed_and_the_run_goes_on(tmp_path: Path) -> None:
    out = tmp_path / "run"
    proc = start_harness(
        "run", *QUICK, "--duration", "3s", "--connections", "2,3", "--out", str(out)
    )
    seen: set[psutil.Process] = set()
    wait_for(measuring(proc, seen, 0, out))
    named(set(alive(seen)), LOAD)[0].kill()
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 0, err
    by = {r.cell.connections: r for r in RunDir.open(out).records()}
    assert by[2].verdict is Verdict.load_failed and "wrk exited -9" in by[2].note
    assert by[3].verdict is Verdict.ok


def test_a_harness_killed_outright_leaves_nothing_running_and_resume_cleans_up(
    tmp_path: Path,
) -> None:
    out = tmp_path / "run"
    proc = start_harness("run", *QUICK, "--connections", "1,2,3", "--out", str(out))
    seen: set[psutil.Process] = set()
    wait_for(measuring(proc, seen, 1, out))
    live = json.loads((live_dir() / f"{proc.pid}.json").read_text())
    folders = [Path(d) for d in live["dirs"]]
    assert folders and all(f.exists() for f in folders)
    proc.kill()  # as the OOM killer would: no handler runs
    proc.communicate(timeout=30)
    wait_for(lambda: alive(seen) == [], timeout=15)  # each child dies with its parent
    done = harness("run", "--resume", str(out))
    assert done.returncode == 0, done.stderr
    assert "removed what a killed run left" in done.stderr
    assert not any(f.exists() for f in folders)
    assert not (live_dir() / f"{proc.pid}.json").exists()
    assert len(RunDir.open(out).records()) == 3


def test_what_outlives_a_killed_harness_is_ended_by_the_next_one(tmp_path: Path) -> None:
    # A gunicorn worker is forked by its master, so no parent-death signal is armed in it: when
    # the harness is killed the master dies with it, and the workers would live on.
    out = tmp_path / "run"
    args = ["--server", "gunicorn", "--workers", "2", "--duration", "3s"]
    proc = start_harness("run", *QUICK, *args, "--connections", "2,3", "--out", str(out))
    seen: set[psutil.Process] = set()
    wait_for(measuring(proc, seen, 0, out))
    gunicorn = named(set(alive(seen)), "gunicorn")
    (master,) = [p for p in gunicorn if p.ppid() == proc.pid]
    workers = {p for p in gunicorn if p.ppid() == master.pid}
    assert len(workers) == 2, workers
    proc.kill()
    proc.communicate(timeout=30)
    wait_for(lambda: alive({master}) == [], timeout=15)
    assert set(alive(workers)) == workers, "the workers are expected to outlive their master"
    done = harness("run", "--resume", str(out))
    assert done.returncode == 0, done.stderr
    for worker in workers:
        assert f"removed what a killed run left: process {worker.pid}" in done.stderr
    assert alive(seen) == []
    assert len(RunDir.open(out).records()) == 2


@pytest.fixture
def small_disk(tmp_path: Path):
    mount = tmp_path / "small"
    mount.mkdir()
    if os.geteuid() != 0 or shutil.which("mount") is None:
        pytest.skip("mounting a small tmpfs needs root")
    made = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", str(mount)], capture_output=True
    )
    if made.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {made.stderr.decode().strip()}")
    try:
        yield mount
    finally:
        subprocess.run(["umount", "-l", str(mount)], capture_output=True)


def test_a_full_out_stops_with_one_line_and_resumes_once_there_is_room(small_disk: Path) -> None:
    out = small_disk / "run"
    proc = start_harness("run", *QUICK, "--connections", "1,2", "--out", str(out))
    wait_for(lambda: len(records_in(out)) == 1)  # then fill the disk: the second record fails
    filler = small_disk / "filler"
    with open(filler, "wb", buffering=0) as f, suppress(OSError):  # to its last byte
        while f.write(b"\0" * 4096):
            pass
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 1, err
    assert "Traceback" not in err
    assert "cannot write the record of" in err and "No space left on device" in err
    assert f"resume with: make bench RESUME={out}" in err
    for path in records_in(out):  # nothing half written
        json.loads(path.read_text())
    assert not list(out.rglob("*.tmp"))
    filler.unlink()
    done = harness("run", "--resume", str(out))
    assert done.returncode == 0, done.stderr
    assert len(RunDir.open(out).records()) == 2
