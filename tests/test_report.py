"""Tables are generated from raw records only; compared with golden files made from a real run."""

import csv
import json
import shutil
from dataclasses import replace
from pathlib import Path

import pytest

from harness.domain.axes import Verdict
from harness.domain.errors import HarnessError
from harness.domain.result import FORMAT, CellResult
from harness.report import files
from harness.report import summary as report
from harness.report.table import md_table
from harness.store import migrate
from harness.store.rundir import RunDir

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
    assert lines[0].startswith(
        "| connections | sync psycopg2 dependency req/s | p99 ms measured / corrected (responses "
        "above) | failed | verdict"
    )
    assert [line.split("|")[1].strip() for line in lines[2:]] == ["1", "100"]
    assert "**collapsed (30 pool timeouts)**" in lines[3]


def test_a_column_sampled_and_one_not_are_told_apart() -> None:
    records = [r for r in RunDir.open(FIXTURES / "run").records() if r.cell.workload == "list"]
    off = [
        replace(r, cell=replace(r.cell, server=replace(r.cell.config, occupancy=False)))
        for r in records
        if r.cell.config is not None
    ]
    head = report.seed_tables([*records, *off]).splitlines()[2]
    titles = [t.strip() for t in head.split("|") if t.strip().endswith("req/s")]
    assert len(titles) == len(set(titles)) == 2 * len({r.cell.variant for r in records})
    assert titles[:2] == [
        "sync psycopg2 dependency (side channel sampled) req/s",
        "sync psycopg2 dependency (side channel off) req/s",
    ]


def test_regenerating_from_records_reproduces_the_files(tmp_path: Path) -> None:
    shutil.copytree(FIXTURES / "run", tmp_path / "run")
    run = RunDir.open(tmp_path / "run")
    files.write(run)
    first = (tmp_path / "run" / "summary.md").read_text()
    files.write(run)
    assert (tmp_path / "run" / "summary.md").read_text() == first
    rows = list(csv.DictReader((tmp_path / "run" / "results.csv").open()))
    assert len(rows) == len(run.records()) == 16
    assert {r["verdict"] for r in rows} == {"ok", "collapsed"}


def test_format_1_records_are_read_as_the_current_format_with_the_same_ids() -> None:
    for path in sorted((FIXTURES / "run" / "cells").glob("*.json")):
        data = json.loads(path.read_text())
        assert data.get("format", 1) == 1
        result = CellResult.from_json(migrate.record(data, str(path)))
        assert path.stem == result.cell.id == data["id"]
        assert result.verdict in set(Verdict)
        config = result.cell.config
        assert config is not None and result.cell.target is None
        flat = data["cell"]
        assert (config.name, config.style, config.tokens, config.workers, config.rows) == (
            flat["server"],
            flat["style"],
            flat["tokens"],
            flat["workers"],
            flat["rows"],
        )
        again = json.loads(json.dumps(result.to_json()))
        assert again["format"] == FORMAT and CellResult.from_json(again) == result


def test_an_unknown_format_is_refused_with_a_clear_message(tmp_path: Path) -> None:
    shutil.copytree(FIXTURES / "run", tmp_path / "run")
    meta = json.loads((tmp_path / "run" / "metadata.json").read_text())
    (tmp_path / "run" / "metadata.json").write_text(json.dumps({**meta, "format": 7}))
    with pytest.raises(HarnessError, match="has format 7, which this harness cannot read"):
        RunDir.open(tmp_path / "run")
    record = next((FIXTURES / "run" / "cells").glob("*.json"))
    with pytest.raises(HarnessError, match=f"has format {FORMAT + 1}"):
        migrate.record({**json.loads(record.read_text()), "format": FORMAT + 1}, "a record")


def test_format_1_metadata_becomes_one_provenance_entry() -> None:
    meta = RunDir.open(FIXTURES / "run").metadata()
    assert meta["format"] == FORMAT and meta["kind"] == "run"
    (entry,) = meta["provenance"]
    assert entry["outcome"] == "complete" and entry["git"]["sha"]
    assert entry["machine"]["cpu_count"] and entry["database"]["managed"] is True
    assert {"started_at", "finished_at", "packages", "wrk_version"} <= set(entry)


def test_the_title_names_the_run_whatever_stacks_it_used() -> None:
    """The 2021 summaries once took the stack's name as their title (a shadowed variable)."""
    run = RunDir.open(FIXTURES / "run")
    meta = run.metadata()
    (entry,) = meta["provenance"]
    stacks = {"2021": {"python": "3.11.7", "packages": {"fastapi": "0.63.0"}}}
    meta = {**meta, "provenance": [{**entry, "stacks": stacks}]}
    text = report.summary(meta, run.records(), "my-run")
    assert text.startswith("# syncasync-bench run `my-run`\n")
    assert "Stack 2021 (Python 3.11.7): fastapi 0.63.0." in text


def test_a_target_runs_header_says_what_the_harness_does_not_know() -> None:
    run = RunDir.open(FIXTURES / "run")
    meta = run.metadata()
    (entry,) = meta["provenance"]
    meta = {**meta, "provenance": [{**entry, "packages": None, "database": None}]}
    text = report.header(meta, run.records(), "t")
    assert "- PostgreSQL: unknown (target mode" in text
    assert "- Packages: unknown (target mode" in text
    assert "throwaway cluster" not in text and "fastapi" not in text


def test_a_resumed_runs_header_lists_each_session() -> None:
    run = RunDir.open(FIXTURES / "run")
    meta = run.metadata()
    (entry,) = meta["provenance"]
    later = {**entry, "command": "resume", "git": {"sha": "f" * 40, "dirty": False}}
    text = report.header({**meta, "provenance": [entry, later]}, run.records(), "r")
    assert "- Sessions (each invocation that measured into this run): 1. `run`" in text
    assert "2. `resume`" in text and "git ffffffffffff" in text
    assert "later sessions ran other commits" in text


def test_tables_escape_a_pipe_in_any_cell() -> None:
    text = md_table(["a", "b|c"], [["x|y", 1]], ["---", "---:"])
    assert text == "| a | b\\|c |\n|---|---:|\n| x\\|y | 1 |\n"
    with pytest.raises(ValueError):
        md_table(["a"], [["x", "y"]], ["---"])


def test_the_summary_opens_with_conclusions_and_caveats() -> None:
    run = RunDir.open(FIXTURES / "run")
    text = report.summary(run.metadata(), run.records(), "r")
    head = text[: text.index("## uvicorn")]
    assert "## Conclusions" in head
    assert "**Async or sync (dependency list)**: async/sync 1.70× at 1 connections" in head
    assert "held up to 1 connections, collapsed at 100 (collapsed, 30 pool timeouts)" in head
    assert "wrk counts a request that never got an answer as missing throughput" in head
    assert "Verdicts look at throughput and errors, not at latency." in head
    assert "One measurement per cell" in head


def test_an_incomplete_run_counts_measurements() -> None:
    run = RunDir.open(FIXTURES / "run")
    meta = {**run.metadata(), "complete": False, "schedule": {"repeats": 3, "seed": 0}}
    assert "(incomplete: 16 of 48 measurements)" in report.header(meta, run.records(), "r")
