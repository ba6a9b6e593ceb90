"""One harness measures at a time on a machine: a second is refused in one line naming the
first's run, unless FORCE=1, which the run's provenance then records."""

from __future__ import annotations

import json
import os
import subprocess
from collections.abc import Iterator
from pathlib import Path

import psutil
import pytest

from harness.cli.main import main
from harness.infra import process
from harness.infra.server import inherited
from harness.store.rundir import RunDir
from tests.cli import harness


@pytest.fixture
def another_harness() -> Iterator[dict[str, object]]:
    """The lock of a harness measuring in another process (a live one, so it holds)."""
    other = subprocess.Popen(["sleep", "120"])
    held = {
        "pid": other.pid,
        "started": psutil.Process(other.pid).create_time(),
        "command": "make bench",
        "run": "results/runs/the-other-run",
        "since": "2026-12-01T20:00:00+00:00",
    }
    process.live_dir().mkdir(exist_ok=True)
    (process.live_dir() / process.LOCK).write_text(json.dumps(held))
    yield held
    other.kill()
    other.wait()
    (process.live_dir() / process.LOCK).unlink(missing_ok=True)


def test_the_suite_keeps_its_own_records_and_lock() -> None:
    assert os.environ[process.LIVE_ENV] == str(process.live_dir())
    assert not process.live_dir().is_relative_to("/tmp/syncasync-bench-live")


def test_a_second_harness_is_refused_naming_the_first(
    another_harness: dict[str, object], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "run"
    assert main(["run", "--connections", "1", "--repeats", "1", "--out", str(out)]) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("error: another harness is measuring")
    assert "`make bench` into results/runs/the-other-run" in err and "FORCE=1" in err
    assert not out.exists()  # refused before anything was made
    # A dry run measures nothing: the lock does not stop it.
    assert main(["run", "--connections", "1", "--dry-run"]) == 0
    capsys.readouterr()


def test_a_stale_lock_holds_nothing(tmp_path: Path) -> None:
    gone = subprocess.Popen(["true"])
    gone.wait()
    lock = process.live_dir() / process.LOCK
    lock.parent.mkdir(exist_ok=True)
    lock.write_text(json.dumps({"pid": gone.pid, "started": 0.0, "run": "x"}))
    try:
        assert process.measuring_now() is None
    finally:
        lock.unlink()


@pytest.mark.integration
def test_force_measures_anyway_and_the_provenance_says_beside_what(
    another_harness: dict[str, object], tmp_path: Path
) -> None:
    out = tmp_path / "forced"
    done = harness(
        *("run", "--modes", "async", "--styles", "context", "--connections", "1"),
        *("--duration", "1s", "--warmup", "0", "--repeats", "1", "--force", "--out", str(out)),
    )
    assert done.returncode == 0, done.stderr
    assert "measuring anyway (FORCE=1)" in done.stderr
    (entry,) = RunDir.open(out).metadata()["provenance"]
    assert entry["measured_alongside"]["run"] == "results/runs/the-other-run"
    # The other's lock is left as it was: a third harness is still refused.
    assert process.measuring_now() == another_harness


def test_the_lock_is_taken_in_one_step(another_harness: dict[str, object]) -> None:
    assert process.take_lock(run="mine") == another_harness  # held: nothing taken
    (process.live_dir() / process.LOCK).unlink()  # the other has ended
    assert process.take_lock(run="mine") is None
    assert json.loads((process.live_dir() / process.LOCK).read_text())["run"] == "mine"
    process.release_lock()
    assert not (process.live_dir() / process.LOCK).exists()


def test_servers_inherit_no_app_setting_from_the_shell(monkeypatch: pytest.MonkeyPatch) -> None:
    """An old name left in the user's shell would clash with the names the harness gives."""
    shell = {"POOL_SIZE": "20", "TOKENS": "3", "SESSION_STYLE": "context", "DEPENDENCY_SCOPE": "x"}
    for name, value in shell.items():
        monkeypatch.setenv(name, value)
    env = inherited()
    assert not set(shell) & set(env) and "PATH" in env
