"""A session closes its provenance entry with what happened, whatever happens."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from harness.domain.errors import HarnessError
from harness.run.events import Listener
from harness.run.options import Options
from harness.run.session import Interrupted, session
from harness.store.rundir import RunDir

FIXTURES = Path(__file__).parent / "fixtures"

pytestmark = pytest.mark.skipif(shutil.which("wrk") is None, reason="wrk is not installed")


def a_run(tmp_path: Path) -> RunDir:
    return RunDir.create(tmp_path / "run", "run", {}, Options().to_json(), {"cells": []})


@pytest.mark.parametrize(
    ("error", "outcome"),
    [
        (HarnessError("wrk exited -9 without a report"), "stopped: wrk exited -9 without a report"),
        (Interrupted("SIGHUP"), "interrupted (SIGHUP)"),
    ],
)
def test_the_entry_says_how_the_session_ended(
    tmp_path: Path, error: Exception, outcome: str
) -> None:
    run = a_run(tmp_path)
    # No cell needs a server here, so the session starts nothing but asks wrk its version.
    with pytest.raises(type(error)), session(run, Options(), [], {"command": "run"}, Listener()):
        raise error
    meta = run.metadata()
    (entry,) = meta["provenance"]
    assert entry["outcome"] == outcome and entry["measured"] == 0
    assert meta["complete"] is False and entry["finished_at"]
    assert entry["database"] is None and entry["wrk_version"].startswith("wrk")


def test_a_session_that_ends_well_completes_the_run(tmp_path: Path) -> None:
    run = a_run(tmp_path)
    with session(run, Options(), [], {"command": "run"}, Listener()):
        pass
    assert run.metadata()["complete"] is True
    assert run.metadata()["provenance"][0]["outcome"] == "complete"


def test_three_load_failures_in_a_row_stop_the_run(tmp_path: Path) -> None:
    from harness.run.session import Session

    s = Session(a_run(tmp_path), Options(), None, tmp_path, Listener())
    s.load_failed(True, "wrk exited -9")
    s.load_failed(False, "")  # a cell in between that worked resets the count
    s.load_failed(True, "wrk exited -9")
    s.load_failed(True, "wrk exited -9")
    with pytest.raises(HarnessError, match=r"wrk failed 3 times in a row \(last: wrk exited -9\)"):
        s.load_failed(True, "wrk exited -9")
