"""`make compare`: B/A for the cells two runs share, matched on all but the compared setting."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import pytest

from harness.cli.main import EXIT_REGRESSION, main
from harness.domain.axes import Pool, Verdict
from harness.domain.errors import UsageError
from harness.domain.result import CellResult
from harness.report.compare import compare
from harness.store.rundir import RunDir
from tests.test_stats import measured

MACHINE = {"cpu_model": "Test CPU", "cpu_count": 2, "python": "3.11.7"}
OPTIONS = {"warmup_s": 2.0, "wrk_timeout_s": 5.0, "wrk_runner": "local"}


def a_run(path: Path, records: list[CellResult], **options: object) -> RunDir:
    cells = {"cells": [records[0].cell.to_json()], "schedule": {"repeats": 3, "seed": 0}}
    run = RunDir.create(path, "run", {}, {**OPTIONS, **options}, cells)
    run.begin({"command": "run", "machine": MACHINE, "outcome": "complete"})
    for r in records:
        run.write_record(r)
    return run


def pool_20(records: list[CellResult]) -> list[CellResult]:
    config = records[0].cell.config
    assert config is not None
    cell = replace(records[0].cell, server=replace(config, pool=Pool(20, 0)))
    return [replace(r, cell=cell) for r in records]


def test_b_over_a_for_the_one_setting_the_runs_differ_in(tmp_path: Path) -> None:
    a = a_run(tmp_path / "a", measured([500.0, 510.0, 490.0]))
    b = a_run(tmp_path / "b", pool_20(measured([600.0, 612.0, 588.0])))
    text = compare(a, b).markdown
    assert "Compared: pool 5+10 (A) against 20+0 (B)." in text
    assert "| 1.20× [" in text and "| B faster |" in text
    assert "1 cells significantly faster in B, 0 slower, 0 without" in text
    same = a_run(tmp_path / "c", pool_20(measured([505.0, 495.0, 512.0])))
    assert "| no significant difference |" in compare(a, same).markdown


def test_runs_measured_differently_are_refused(tmp_path: Path) -> None:
    a = a_run(tmp_path / "a", measured([500.0, 510.0, 490.0]))
    b = a_run(tmp_path / "b", measured([500.0, 510.0, 490.0]), warmup_s=0.0)
    with pytest.raises(UsageError, match=r"warmup_s: 2\.0 in A, 0\.0 in B"):
        compare(a, b)
    config = measured([1.0])[0].cell.config
    assert config is not None
    rows = [
        replace(r, cell=replace(r.cell, server=replace(config, rows=100))) for r in measured([5.0])
    ]
    c = a_run(tmp_path / "c", rows)
    with pytest.raises(UsageError, match="differ in rows"):
        compare(a, c)


def test_the_cli_prints_the_comparison(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    a_run(tmp_path / "a", measured([500.0, 510.0, 490.0]))
    a_run(tmp_path / "b", pool_20(measured([400.0, 410.0, 390.0])))
    assert main(["compare", str(tmp_path / "a"), str(tmp_path / "b")]) == 0
    assert "| B slower |" in capsys.readouterr().out
    assert main(["compare", str(tmp_path / "a")]) == 2
    assert "A, B: name two run directories" in capsys.readouterr().err


def test_fail_on_regression_and_the_json_beside_the_markdown(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    a_run(tmp_path / "a", measured([500.0, 510.0, 490.0]))
    a_run(tmp_path / "slower", pool_20(measured([400.0, 410.0, 390.0])))
    a_run(tmp_path / "same", pool_20(measured([505.0, 495.0, 512.0])))
    out = tmp_path / "compare.json"
    argv = ["compare", str(tmp_path / "a"), str(tmp_path / "slower"), "--fail-on", "regression"]
    assert main([*argv, "--json", str(out)]) == EXIT_REGRESSION == 4
    streams = capsys.readouterr()
    assert "| B slower |" in streams.out
    assert "regression: " in streams.err and "B / A 0.80× [" in streams.err
    data = json.loads(out.read_text())
    (cell,) = data["cells"]
    assert data["compared"] == {"pool": ["5+10", "20+0"]} and cell["verdict"] == "B slower"
    assert cell["b_over_a"]["value"] == pytest.approx(0.8, rel=0.01)
    assert cell["b_over_a"]["high"] < 1 and cell["a"]["served_rps"] == [500.0, 510.0, 490.0]
    # No regression: exit 0; without FAIL_ON a slower B is reported, not failed on.
    assert (
        main(["compare", str(tmp_path / "a"), str(tmp_path / "same"), "--fail-on", "regression"])
        == 0
    )
    assert main(argv[:3]) == 0
    capsys.readouterr()
    assert main([*argv[:3], "--fail-on", "collapse"]) == 2
    assert "FAIL_ON: unknown value 'collapse'; choose from regression" in capsys.readouterr().err
    assert main([*argv[:3], "--json", str(tmp_path / "no" / "such.json")]) == 2


def test_a_collapse_in_b_where_a_served_is_a_regression(tmp_path: Path) -> None:
    a = a_run(tmp_path / "a", measured([500.0, 510.0, 490.0]))
    collapsed = measured([0.0, 0.0, 0.0], [Verdict.collapsed] * 3)
    b = a_run(tmp_path / "b", pool_20(collapsed))
    found = compare(a, b)
    assert len(found.regressions) == 1 and "collapsed in 3 of 3 rounds in B" in found.regressions[0]
    assert compare(b, a).regressions == ()  # served in B where A collapsed: no regression
    some = measured([500.0, 0.0, 505.0], [Verdict.ok, Verdict.collapsed, Verdict.ok])
    found = compare(a, a_run(tmp_path / "c", pool_20(some)))
    assert ["collapsed in 1 of 3 rounds in B, in none in A" in r for r in found.regressions] == [
        True
    ]


def test_one_measurement_a_side_is_said_not_judged(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    a_run(tmp_path / "a", measured([500.0]))
    a_run(tmp_path / "b", pool_20(measured([400.0])))
    argv = ["compare", str(tmp_path / "a"), str(tmp_path / "b"), "--fail-on", "regression"]
    assert main(argv) == 0
    assert "1 cells have one measurement on a side" in capsys.readouterr().err
