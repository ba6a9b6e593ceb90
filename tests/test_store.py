"""The run directory: format versions, upgrades, provenance that is appended, never overwritten."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from harness.cli.main import main
from harness.domain.errors import UsageError
from harness.domain.occupancy import Timeline
from harness.domain.result import FORMAT
from harness.store.provenance import differences
from harness.store.rundir import RunDir

FIXTURES = Path(__file__).parent / "fixtures"


def test_a_format_1_map_is_upgraded_when_a_session_begins(tmp_path: Path) -> None:
    shutil.copytree(FIXTURES / "map", tmp_path / "map")
    run = RunDir.open(tmp_path / "map")
    probes = run.records()
    assert run.records_dir.name == "cells" and len(probes) > 20
    entry = {"command": "resume", "started_at": "now", "outcome": "running"}
    run.begin(entry)
    raw = json.loads((tmp_path / "map" / "metadata.json").read_text())
    assert raw["format"] == FORMAT and "cells" not in raw  # map lines follow from the plan
    assert raw["provenance"][1] == entry and raw["provenance"][0]["outcome"] == "complete"
    assert run.records_dir.name == "probes" and not (tmp_path / "map" / "cells").exists()
    assert run.records() == probes
    run.update_session(outcome="complete", measured=0)
    first, last = RunDir.open(tmp_path / "map").metadata()["provenance"]
    assert first == raw["provenance"][0] and last == {**entry, "outcome": "complete", "measured": 0}


def test_differences_name_what_changed() -> None:
    then = {
        "machine": {"cpu_model": "A", "cpu_count": 2, "python": "3.11.7", "kernel": "x"},
        "packages": {"fastapi": "1", "anyio": "2"},
        "stacks": {"2021": {"packages": {"fastapi": "0.63.0"}}},
    }
    assert differences(then, then) == []
    newer = {**then, "packages": {**then["packages"], "uvloop": "0.23.0"}}
    assert differences(then, newer) == []  # a package the old entry did not record is not news
    now = {
        "machine": {**then["machine"], "cpu_count": 4, "kernel": "y"},  # kernel: not compared
        "packages": {"fastapi": "1", "anyio": "3"},
        "stacks": {"2021": {"packages": {"fastapi": "0.64.0"}}},
    }
    assert differences(then, now) == [
        "machine cpu_count: 2 then, 4 now",
        "packages anyio: 2 then, 3 now",
        "stacks.2021 fastapi: 0.63.0 then, 0.64.0 now",
    ]


def test_resume_is_refused_elsewhere_unless_forced(tmp_path: Path) -> None:
    shutil.copytree(FIXTURES / "run", tmp_path / "run")
    run = RunDir.open(tmp_path / "run")
    (first,) = run.metadata()["provenance"]
    elsewhere = {**first, "machine": {**first["machine"], "cpu_model": "Other CPU"}}
    with pytest.raises(UsageError, match=r"machine cpu_model: .* then, Other CPU now"):
        run.check_resumable(elsewhere, force=False)
    assert run.check_resumable(elsewhere, force=True) == [
        f"machine cpu_model: {first['machine']['cpu_model']} then, Other CPU now"
    ]
    later = {**first, "git": {"sha": "0" * 40, "dirty": False}}
    (note,) = run.check_resumable(later, force=False)  # a new commit is said, not refused
    assert note.startswith("git commit: ")


def test_out_is_checked_before_anything_is_made(tmp_path: Path) -> None:
    shutil.copytree(FIXTURES / "run", tmp_path / "run")
    with pytest.raises(UsageError, match="already holds a run; use RESUME="):
        RunDir.check_creatable(tmp_path / "run")
    RunDir.check_creatable(tmp_path / "new" / "deeper")
    assert not (tmp_path / "new").exists()


def test_migrate_writes_an_older_run_back_judged_from_its_samples(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """tests/fixtures/map-evidence (format 2): at 6 connections one of hypercorn's two workers
    completed nothing for 1.6 s with 9 requests in it, and throughput held (`ok` then)."""
    shutil.copytree(FIXTURES / "map-evidence", tmp_path / "map")
    probe = (
        tmp_path
        / "map"
        / "probes"
        / "hypercorn-sync-dependency-p1+1-pt30-t3-w2-list-r10-d2-c6.json"
    )
    before = json.loads(probe.read_text())
    assert (before["format"], before["verdict"]) == (2, "ok")
    assert main(["migrate", str(tmp_path / "map")]) == 0
    assert "1 ok -> partly-collapsed" in capsys.readouterr().out
    after = json.loads(probe.read_text())
    assert (after["format"], after["verdict"], after["judged_by"]) == (
        FORMAT,
        "partly-collapsed",
        "side channel",
    )
    samples = Timeline.from_json(before["occupancy"]).samples
    assert Timeline.from_json(after["occupancy"]).samples == samples
    # formats 5 and 6 added them
    assert after["wrk"] == {**before["wrk"], "histograms": None, "schedule": None}
    meta = json.loads((tmp_path / "map" / "metadata.json").read_text())
    first, step = meta["provenance"]
    assert (
        first
        == json.loads((FIXTURES / "map-evidence" / "metadata.json").read_text())["provenance"][0]
    )  # never overwritten
    assert (step["command"], step["from_format"]) == ("migrate", 2)
    assert step["verdicts_changed"] == {"ok -> partly-collapsed": 1} and step["git"]
    assert main(["migrate", str(tmp_path / "map")]) == 0  # a current run is left as it is
    assert "no verdict changed" in capsys.readouterr().out
    assert len(json.loads((tmp_path / "map" / "metadata.json").read_text())["provenance"]) == 2


def test_migrate_compresses_an_older_runs_thread_dumps(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A dump kept plain (as runs before compression kept them) is gzip-compressed, its record
    points at it, nothing else in the record changes, and the provenance says so."""
    shutil.copytree(FIXTURES / "map-evidence", tmp_path / "map")
    run = RunDir.open(tmp_path / "map")
    assert main(["migrate", str(run.path)]) == 0  # to the current format first
    record_path = sorted(run.records_dir.glob("*.json"))[0]
    record = json.loads(record_path.read_text())
    key = record_path.stem
    dump = [{"pid": 1, "thread_name": "MainThread", "frames": [{"name": "wait"}] * 50}]
    (run.path / "threads").mkdir()
    (run.path / "threads" / f"{key}.json").write_text(json.dumps(dump, indent=2))
    record["threads"] = {"threads": 1, "file": f"threads/{key}.json"}
    record_path.write_text(json.dumps(record))
    capsys.readouterr()
    assert main(["migrate", str(run.path)]) == 0
    assert "1 thread dumps compressed" in capsys.readouterr().out
    after = json.loads(record_path.read_text())
    assert after == {**record, "threads": {"threads": 1, "file": f"threads/{key}.json.gz"}}
    assert not (run.path / "threads" / f"{key}.json").exists()
    assert run.read_threads(after["threads"]["file"]) == dump
    step = run.metadata()["provenance"][-1]
    assert (step["command"], step["dumps_compressed"]) == ("compact", 1)
    assert main(["migrate", str(run.path)]) == 0  # nothing left to compress
    assert "compressed" not in capsys.readouterr().out


def test_a_new_thread_dump_is_written_compressed(tmp_path: Path) -> None:
    run = RunDir.open(shutil.copytree(FIXTURES / "map-evidence", tmp_path / "map"))
    dump = [{"pid": 7, "frames": [{"name": "QueuePool._do_get"}] * 200}]
    file = run.write_threads("cell@1", dump)
    assert file == "threads/cell@1.json.gz"
    assert run.read_threads(file) == dump
    assert (run.path / file).stat().st_size < len(json.dumps(dump)) / 10


def test_compact_writes_indented_records_on_one_line_and_nothing_else(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Records written indented (as runs before one-line records were) are written again on
    one line with the same content; the provenance counts them; a second pass finds none."""
    shutil.copytree(FIXTURES / "map-evidence", tmp_path / "map")
    run = RunDir.open(tmp_path / "map")
    assert main(["migrate", str(run.path)]) == 0
    paths = sorted(run.records_dir.glob("*.json"))
    before = {p: json.loads(p.read_text()) for p in paths}
    for p, data in before.items():
        p.write_text(json.dumps(data, indent=2))
    size = sum(p.stat().st_size for p in paths)
    capsys.readouterr()
    assert main(["compact", str(run.path)]) == 0
    assert f"0 thread dumps compressed, {len(paths)} records on one line" in capsys.readouterr().out
    assert {p: json.loads(p.read_text()) for p in paths} == before
    assert all(p.read_text().count("\n") == 1 for p in paths)
    assert sum(p.stat().st_size for p in paths) < size
    step = run.metadata()["provenance"][-1]
    assert (step["command"], step["records_compacted"]) == ("compact", len(paths))
    assert main(["compact", str(run.path)]) == 0
    assert "0 thread dumps compressed, 0 records on one line" in capsys.readouterr().out
    assert run.metadata()["provenance"][-1] == step
