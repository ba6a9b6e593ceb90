"""Tables are generated from raw records only; compared with golden files made from a real run."""

import csv
import json
import shutil
from pathlib import Path

from harness import report
from harness.model import CellResult, Verdict
from harness.store import RunDir

FIXTURES = Path(__file__).parent / "fixtures"


def test_summary_matches_the_golden_file() -> None:
    run = RunDir.open(FIXTURES / "run")
    text = report.summary(run.metadata(), run.records(), "fixture-run")
    assert text == (FIXTURES / "golden_summary.md").read_text()


def test_csv_matches_the_golden_file() -> None:
    run = RunDir.open(FIXTURES / "run")
    assert report.csv_text(run.records()) == (FIXTURES / "golden_results.csv").read_text()


def test_seed_shaped_table_has_a_row_per_connection_and_columns_per_variant() -> None:
    records = RunDir.open(FIXTURES / "run").records()
    table = report.seed_tables([r for r in records if r.cell.workload == "list"])
    lines = [line for line in table.splitlines() if line.startswith("|")]
    assert lines[0].startswith("| connections | sync dependency req/s | p99 ms | failed | verdict")
    assert [line.split("|")[1].strip() for line in lines[2:]] == ["1", "100"]
    assert "**collapsed (30 pool timeouts)**" in lines[3]


def test_regenerating_from_records_reproduces_the_files(tmp_path: Path) -> None:
    shutil.copytree(FIXTURES / "run", tmp_path / "run")
    run = RunDir.open(tmp_path / "run")
    report.write(run)
    first = (tmp_path / "run" / "summary.md").read_text()
    report.write(run)
    assert (tmp_path / "run" / "summary.md").read_text() == first
    rows = list(csv.DictReader((tmp_path / "run" / "results.csv").open()))
    assert len(rows) == len(run.records()) == 16
    assert {r["verdict"] for r in rows} == {"ok", "collapsed"}


def test_records_round_trip_through_json() -> None:
    for path in sorted((FIXTURES / "run" / "cells").glob("*.json")):
        data = json.loads(path.read_text())
        result = CellResult.from_json(data)
        assert CellResult.from_json(result.to_json()) == result
        again = json.loads(json.dumps(result.to_json()))
        # fields newer than these records, with the values they mean for them
        assert again["cell"].pop("target") is None
        assert again["cell"].pop("stack") == "current"
        assert again == data
        assert path.stem == result.cell.id
        assert result.verdict in set(Verdict)
