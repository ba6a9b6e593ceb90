"""results/README.md is generated from run directories only, and reproducibly."""

import json
import os
import shutil
import subprocess
from dataclasses import fields, is_dataclass, replace
from pathlib import Path
from typing import Any

import pytest

from harness.cli import main as cli_main
from harness.cli import plans
from harness.cli import reference as reference_runs
from harness.cli.main import main, parser, with_dashed_values
from harness.cli.variables import Given, resolve
from harness.domain.cell import Cell, UserApp
from harness.domain.errors import HarnessError, UsageError
from harness.domain.plan import CapacityPlan, MapPlan
from harness.report import reference
from harness.store import runlist
from harness.store.rundir import RunDir
from harness.store.runlist import ReferenceRun
from tests.cli import ROOT

FIXTURES = Path(__file__).parent / "fixtures"
# The reference's runs, and a second map of a server the first lacks, in the map's section.
WITH_GRANIAN_MAP = replace(
    runlist.load(),
    runs=(*runlist.load().runs, ReferenceRun("map-granian", "map", ("map", "--server", "granian"))),
)


def test_reference_page_from_run_directories(tmp_path: Path) -> None:
    root = tmp_path / "reference"
    shutil.copytree(FIXTURES / "run", root / "bench-uvicorn")
    shutil.copytree(FIXTURES / "map", root / "map")
    page = tmp_path / "README.md"
    reference.write(root, page)
    text = page.read_text()
    assert (
        "The failure map puts the collapse of sync `dependency` with pool 1+1 and 4 tokens "
        "at: fine at 4, collapsed at 6 (predicted ~6)."
    ) in text
    assert (
        "In the run of the 2021 write-up's tables, sync `dependency` held up to 1 connections "
        "and collapsed at "
        "100 (collapsed, 30 QueuePool timeouts in the server's log)."
    ) in text
    assert "freeze (connections: ratio [95% interval]): 1: 1.70× (no interval from one" in text
    assert "| sync psycopg2 dependency | 1+1 | 2 | 4 | 1 | ~6 | fine at 4, collapsed at 6 |" in text
    assert "](reference/map/charts/collapse-uvicorn.png)" in text
    assert (root / "map" / "charts" / "collapse-uvicorn.png").is_file()
    assert "## The 2021 write-up's tables" in text and "### uvicorn · list" in text
    reference.write(root, page)
    assert page.read_text() == text


def test_speed_is_stated_as_ratios_with_intervals_once_repeated(tmp_path: Path) -> None:
    """Three rounds of the fixture's cells (the same records, scaled per round): the page states
    async over sync with a 95% interval and draws the comparisons table."""
    root = tmp_path / "reference"
    shutil.copytree(FIXTURES / "run", root / "bench-uvicorn")
    run = RunDir.open(root / "bench-uvicorn")
    for r in run.records():
        for round_, scale in ((2, 1.1), (3, 0.9)):
            wrk = replace(r.wrk, requests=int(r.wrk.requests * scale)) if r.wrk else None
            run.write_record(replace(r, wrk=wrk, repeat=round_))
    page = tmp_path / "README.md"
    reference.write(root, page)
    text = page.read_text()
    assert "Async `dependency` over sync `dependency`" in text and " [" in text
    assert "1: 1.70× (no interval" not in text
    assert "Comparisons (B / A, 95% intervals):" in text and "| async / sync" in text


def test_a_decision_run_gets_its_findings_and_tables(tmp_path: Path) -> None:
    from harness.domain.axes import Verdict
    from harness.run.options import Options
    from tests.test_decision import ASYNC, CONTEXT, DEPENDENCY, measured

    root = tmp_path / "reference"
    shutil.copytree(FIXTURES / "run", root / "bench-uvicorn")
    run = RunDir.create(root / "decide-uvicorn", "decide", {}, Options().to_json(), {"cells": []})
    records = measured(
        {ASYNC: {8: 150.0, 100: 300.0}, CONTEXT: {8: 100.0, 100: 150.0}, DEPENDENCY: {8: 100.0}},
        rounds=3,
    ) + measured({DEPENDENCY: {100: 1.0}}, rounds=3, collapsed=((DEPENDENCY, 100),))
    for r in records:
        run.write_record(r)
    assert {r.verdict for r in records} == {Verdict.ok, Verdict.collapsed}
    page = tmp_path / "README.md"
    reference.write(root, page)
    text = page.read_text()
    assert (
        "In the decision run, async `dependency` against sync `context` over 2 latency × payload "
        "× load comparisons (1 row with their connection levels): 2 async ahead."
    ) in text
    assert "Where async was ahead, by 1.50× to 2.00×." in text
    assert (
        "Sync `dependency` collapsed within the levels measured in 1 of 1 rows, holding at " in text
    )
    assert "## When does async win? The decision table, uvicorn ([decision.md](reference/" in text
    assert "### uvicorn, 1 worker" in text and "| 0 | 10 | **1.50× [" in text
    assert "](reference/decide-uvicorn/charts/ratio-uvicorn-w1.png)" in text
    assert (root / "decide-uvicorn" / "decision.md").is_file()
    reference.write(root, page)
    assert page.read_text() == text


def test_a_later_servers_map_is_read_as_part_of_the_map(tmp_path: Path) -> None:
    """`map-granian`, planned as `map` was (a real run of granian with the fixture map's plan),
    joins the page's map: its lines, its charts' links, its /health ceiling."""
    root = tmp_path / "reference"
    shutil.copytree(FIXTURES / "map", root / "map")
    shutil.copytree(FIXTURES / "map-granian", root / "map-granian")
    page = tmp_path / "README.md"
    reference.write(root, page, WITH_GRANIAN_MAP)
    text = page.read_text()
    assert "### granian (from [`map-granian`](reference/map-granian/summary.md))" in text
    assert "](reference/map-granian/charts/collapse-granian.png)" in text
    assert (root / "map-granian" / "charts" / "collapse-granian.png").is_file()
    assert "- **granian**: The failure map puts the collapse of sync `dependency`" in text
    assert "| connections | uvicorn /health req/s | granian /health req/s |" in text
    assert "Left out" not in text


def test_the_other_variants_get_their_findings_and_tables(tmp_path: Path) -> None:
    """`map-variants`: the fixture map's probes, planned with sync `context` and async only."""
    root = tmp_path / "reference"
    shutil.copytree(FIXTURES / "map", root / "map-variants")
    meta = root / "map-variants" / "metadata.json"
    data = json.loads(meta.read_text())
    data["plan"]["variants"] = ["sync-context", "async-dependency"]
    meta.write_text(json.dumps(data))
    page = tmp_path / "README.md"
    reference.write(root, page)
    text = page.read_text()
    assert (
        "- **uvicorn**: The other variants, with the same pool (1+1), 4 tokens and 1 worker: "
        "sync `context` no collapse up to 32; async `dependency` no collapse up to 32."
    ) in text
    assert "## The other variants ([full report](reference/map-variants/summary.md))" in text
    assert "| uvicorn | sync psycopg2 context | no collapse up to 32 | 2 4 8 16 32 |" in text
    assert "## The failure map" not in text


def test_the_2021_map_is_set_beside_the_current_one_with_its_evidence(tmp_path: Path) -> None:
    """`map-2021`: the reference's own 2021 map (its probes and their occupancy), beside the
    fixture map."""
    root = tmp_path / "reference"
    shutil.copytree(FIXTURES / "map", root / "map")
    shutil.copytree(FIXTURES / "map-2021", root / "map-2021")
    page = tmp_path / "README.md"
    reference.write(root, page)
    text = page.read_text()
    assert "## 2021 beside today ([2021 map](reference/map-2021/summary.md))" in text
    assert (
        "| uvicorn | 6 (executor) | ~21 | fine at 20, collapsed at 22 | 4 | ~6 | "
        "fine at 4, collapsed at 6 |"
    ) in text
    assert "What the 2021 map's occupancy and threads show:" in text
    assert (
        "- In 3 of the 3 frozen lines, the last samples show a worker with every token held by "
        "a thread blocked on the pool and every connection out"
    ) in text


def test_a_map_planned_otherwise_is_left_out_and_said_so(tmp_path: Path) -> None:
    root = tmp_path / "reference"
    shutil.copytree(FIXTURES / "map", root / "map")
    shutil.copytree(FIXTURES / "map-granian", root / "map-granian")
    meta = root / "map-granian" / "metadata.json"
    meta.write_text(meta.read_text().replace('"ceiling": 32', '"ceiling": 64'))
    page = tmp_path / "README.md"
    reference.write(root, page, WITH_GRANIAN_MAP)
    text = page.read_text()
    assert (
        "Left out, planned with other settings than `map`: "
        "[`map-granian`](reference/map-granian/summary.md)."
    ) in text
    assert "### granian" not in text


def test_the_layers_run_states_each_layer_against_the_driver_alone(tmp_path: Path) -> None:
    """A real small layers run (pool 1+1, 4 tokens, 1 and 16 connections, two rounds,
    WITH_CEILINGS): the ratios with intervals, the ceilings, and the freeze on every layer."""
    root = tmp_path / "reference"
    shutil.copytree(FIXTURES / "layers", root / "layers")
    page = tmp_path / "README.md"
    reference.write(root, page)
    text = page.read_text()
    assert "- **Layers**: Each layer over the same variant through the driver alone" in text
    assert (
        "at 16 connections, B / A [95% interval]: async asyncpg `dependency` core: ~ 0.66×" in text
    )
    assert "The driver-alone async app (asyncpg, `dependency`) served at best 1,845 req/s" in text
    assert "23% of the HTTP ceiling (8,147 req/s on `/health`)" in text
    assert (
        "Sync `dependency` collapsed on psycopg2 orm at 16 connections; psycopg2 core at 16 "
        "connections; psycopg2 driver at 16 connections: the freeze needs a pool that blocks a "
        "thread, not SQLAlchemy."
    ) in text
    assert "| uvicorn sync psycopg2 orm dependency list | 1 | 559.2 | ~ 0.59× [" in text
    assert "| 16 | 8,147.1 | 36,853 | 0.43 |" in text
    summary = (root / "layers" / "summary.md").read_text()
    assert "## Layers" in summary and "## Ceilings" in summary
    assert "| orm / driver · async list |" in summary


def test_the_two_worker_map_gets_its_section_with_its_verdicts(tmp_path: Path) -> None:
    """`map-workers`: here the small hypercorn map of tests/fixtures/map-evidence, whose 2-worker
    probe at 6 connections had one worker stalled while the throughput held."""
    root = tmp_path / "reference"
    shutil.copytree(FIXTURES / "map-evidence", root / "map-workers")
    page = tmp_path / "README.md"
    reference.write(root, page)
    text = page.read_text()
    assert (
        "## Two workers, every worker sampled ([full report](reference/map-workers/summary.md))"
    ) in text
    assert "8 probes: 4 ok, 3 collapsed, 1 partly-collapsed." in text
    assert (
        "| hypercorn | sync psycopg2 dependency | fine at 4, collapsed at 6 | 2 4 8✗ 6½✗ |" in text
    )
    # Measured before the per-process channel: no share of ticks to state.
    assert "every worker answered at" not in text


def test_make_reference_refuses_a_tree_with_uncommitted_changes(tmp_path: Path) -> None:
    """Checked before anything is set up: a clone with one file changed is refused in one line."""
    clone = tmp_path / "clone"
    subprocess.run(["git", "clone", "-q", str(ROOT), str(clone)], check=True)
    (clone / "README.md").write_text("changed\n")
    done = subprocess.run(
        ["make", "-s", "reference"], cwd=clone, capture_output=True, text=True, timeout=60,
        env={k: v for k, v in os.environ.items() if k not in ("MAKEFLAGS", "MAKELEVEL", "MFLAGS")},
    )  # fmt: skip
    assert done.returncode == 2
    assert "make reference: the tree has uncommitted changes" in done.stderr
    assert not (clone / ".venv").exists()  # refused before the set-up
    # What the runs' provenance would not call dirty is not refused: an untracked file, and
    # results/ (where the reference is written). `-n`: only say what would run.
    subprocess.run(["git", "checkout", "-q", "README.md"], cwd=clone, check=True)
    (clone / "notes.txt").write_text("mine\n")
    (clone / "results" / "README.md").write_text("regenerated\n")
    dry = subprocess.run(
        ["make", "-s", "-n", "reference"], cwd=clone, capture_output=True, text=True, timeout=60,
        env={k: v for k, v in os.environ.items() if k not in ("MAKEFLAGS", "MAKELEVEL", "MFLAGS")},
    )  # fmt: skip
    assert dry.returncode == 0, dry.stderr


REFERENCE = ROOT / "results" / "reference"


def test_every_reference_folder_is_a_listed_run_and_every_section_presents_runs() -> None:
    """reference-runs.toml is the one list: a folder it does not name, a section the page
    cannot draw, a section that presents no run, or a run the page does not link fails."""
    runs = runlist.load()
    assert sorted(p.name for p in REFERENCE.iterdir()) == sorted(runs.names)
    assert set(runs.sections) == set(reference.SECTIONS)
    presenting = {r.section for r in runs.runs}
    assert presenting == set(reference.SECTIONS) - reference.ACROSS
    # The committed page links every run from the section that presents it, not only from
    # the table of runs.
    page = (ROOT / "results" / "README.md").read_text()
    body = page.split("## The runs", 1)[1].split("\n## ", 1)[1]
    unlinked = [n for n in runs.names if f"](reference/{n}/" not in body]
    assert not unlinked, f"listed runs the page's sections do not link: {unlinked}"


def test_the_reference_stays_small() -> None:
    """Raw dumps gzipped, records on one line, no chart a page does not link: under 25 MB."""
    size = sum(p.stat().st_size for p in REFERENCE.rglob("*") if p.is_file())
    assert size < 25_000_000, f"results/reference holds {size / 1e6:.1f} MB"
    assert not list(REFERENCE.rglob("threads/*.json")), "a raw thread dump kept uncompressed"


def test_the_run_list_refuses_what_it_cannot_read(tmp_path: Path) -> None:
    bad = tmp_path / "runs.toml"
    bad.write_text(
        'sections = ["bench"]\n[[run]]\nname = "x"\nsection = "map"\ncommand = ["run"]\n'
    )
    with pytest.raises(UsageError, match="section 'map' is not one of bench"):
        runlist.load(bad)
    bad.write_text(
        'sections = ["bench"]\n[[run]]\nname = "x"\nsection = "bench"\ncommand = "run"\n'
    )
    with pytest.raises(UsageError, match="a run needs a name and a command"):
        runlist.load(bad)
    twice = '[[run]]\nname = "x"\nsection = "bench"\ncommand = ["run"]\n'
    bad.write_text('sections = ["bench"]\n' + twice * 2)
    with pytest.raises(UsageError, match="listed twice: x"):
        runlist.load(bad)


def test_make_reference_measures_what_is_missing_and_resumes_what_stopped(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Each run's state from its folder, and the command that measures what is left."""
    runs = {r.name: r for r in runlist.load().runs}
    bench, capacity, examples = runs["bench-uvicorn"], runs["capacity-uvicorn"], runs["diagnose"]
    root = tmp_path / "reference"
    shutil.copytree(FIXTURES / "run", root / "bench-uvicorn")
    assert reference_runs.state(bench, root / "bench-uvicorn") == "complete"
    assert reference_runs.state(capacity, root / "capacity-uvicorn") == "missing"
    assert reference_runs.state(examples, root / "diagnose") == "missing"
    meta = root / "bench-uvicorn" / "metadata.json"
    meta.write_text(meta.read_text().replace('"complete": true', '"complete": false'))
    assert reference_runs.state(bench, root / "bench-uvicorn") == "incomplete"
    assert reference_runs.resume_argv(bench, root / "bench-uvicorn") == [
        "run", "--resume", str(root / "bench-uvicorn"),
    ]  # fmt: skip
    assert reference_runs.resume_argv(capacity, root / "capacity-uvicorn") == [
        "capacity", "--server", "uvicorn", "--out", str(root / "capacity-uvicorn"),
    ]  # fmt: skip
    (root / "capacity-uvicorn").mkdir()
    (root / "capacity-uvicorn" / "metadata.json").write_text('{"complete": false}')
    with pytest.raises(HarnessError, match="cannot be resumed; remove the folder"):
        reference_runs.resume_argv(capacity, root / "capacity-uvicorn")
    # The page waits for every run: none is regenerated from a reference half measured.
    left = reference_runs.unfinished(runlist.load(), root)
    assert "bench-uvicorn (incomplete)" in left and "map (missing)" in left
    assert not any(x.startswith("generators") for x in left)  # measured by its own target
    page = tmp_path / "README.md"
    assert main(["reference", str(root), "--readme", str(page)]) == 1
    err = capsys.readouterr().err
    assert "not regenerated: not complete: bench-uvicorn (incomplete), bench-gunicorn" in err
    assert not page.exists()


def _given(command: tuple[str, ...]) -> Given:
    args = parser().parse_args(with_dashed_values([*command, "--out", "unused"]))
    return resolve(args, args.command)


def _portable(found: Any) -> Any:
    """A plan without the checkout's own path: a user's app's folder by its last two parts
    (examples/items) and its interpreter by name, so that a run measured in one clone plans
    the same in another."""
    if isinstance(found, UserApp):
        folder = "/".join(Path(found.directory).parts[-2:])
        return replace(found, directory=folder, python=Path(found.python).name)
    if is_dataclass(found) and not isinstance(found, type):
        return replace(found, **{f.name: _portable(getattr(found, f.name)) for f in fields(found)})
    if isinstance(found, tuple | list):
        return type(found)(_portable(x) for x in found)
    return found


def _plan_of(command: tuple[str, ...]) -> tuple[str, Any]:
    """What a run-list command would measure today, as the CLI plans it (nothing runs)."""
    given = _given(command)
    if given.command == "map":
        return "map", plans.map_plan(given)
    if given.command == "capacity":
        return "capacity", plans.capacity_plan(given)
    return given.command, cli_main._new_bench(given)


@pytest.mark.parametrize(
    "run",
    [r for r in runlist.load().runs if (REFERENCE / r.name / "metadata.json").is_file()],
    ids=lambda r: r.name,
)
def test_each_listed_command_plans_what_its_committed_run_measured(run: ReferenceRun) -> None:
    """A default that changed after a run was measured would make `make reference` from
    nothing measure something else than the page shows: the list pins what the run used."""
    meta = json.loads((REFERENCE / run.name / "metadata.json").read_text())
    kind, planned = _plan_of(run.command)
    planned = _portable(planned)
    assert kind == meta["kind"]
    if kind == "map":
        recorded = _portable(MapPlan.from_json(meta["plan"]))
        # `drivers` of a mode no variant uses plans nothing (older maps listed both modes').
        assert _portable(recorded.lines()) == _portable(planned.lines())
        assert replace(recorded, drivers=planned.drivers) == planned
    elif kind == "capacity":
        recorded = _portable(CapacityPlan.from_json(meta["capacity"]))
        assert set(recorded.lines) == set(planned.lines)
        assert replace(recorded, lines=planned.lines) == planned
    else:
        assert {Cell.from_json(c).id for c in meta["cells"]} == {c.id for c in planned.cells}
        assert meta["schedule"]["repeats"] == planned.repeats
        assert meta.get("pgbench_levels", []) == planned.pgbench_levels
        search = planned.search
        if "capacity" in meta:
            recorded = _portable(CapacityPlan.from_json(meta["capacity"]))
            assert search is not None and set(recorded.lines) == set(search.lines)
            assert replace(recorded, lines=search.lines) == search
        else:
            assert search is None
    # The options each measurement ran with (warm-up, settle, wrk's timeout, pinning...).
    options = plans.options_from(_given(run.command)).to_json()
    assert {k: options.get(k) for k in meta["options"]} == meta["options"]


def test_a_section_that_drops_a_measured_run_stops_the_page(tmp_path: Path) -> None:
    """The 2021 map with no current map to set it beside: its section would say nothing, so
    the page is refused, naming the run, rather than leaving it out silently."""
    root = tmp_path / "reference"
    shutil.copytree(FIXTURES / "map-2021", root / "map-2021")
    with pytest.raises(HarnessError, match="section stacks does not present map-2021"):
        reference.readme(root, tmp_path / "README.md")


class _Child:
    """A command's process, as the runner sees it: only its exit code."""

    def __init__(self, argv: list[str], codes: dict[str, int], seen: list[list[str]]) -> None:
        seen.append(argv[3:])  # after `python -m harness`
        self.code = codes.get(argv[3], 0)

    def wait(self) -> int:
        return self.code

    def terminate(self) -> None:
        pass


def test_the_runner_goes_in_order_skips_what_is_done_and_stops_at_the_first_failure(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    root = tmp_path / "reference"
    shutil.copytree(FIXTURES / "run", root / "bench-uvicorn")  # complete: not run again
    runs = replace(
        runlist.load(),
        runs=tuple(
            r for r in runlist.load().runs if r.name in ("bench-uvicorn", "bench-gunicorn",
                                                         "capacity-uvicorn", "decide-uvicorn",
                                                         "generators")
        ),
    )  # fmt: skip
    seen: list[list[str]] = []
    said: list[str] = []
    codes = {"capacity": 1}
    monkeypatch.setattr(reference_runs.subprocess, "Popen", lambda argv: _Child(argv, codes, seen))
    assert reference_runs.measure(runs, root, said.append) == 1
    assert [a[0] for a in seen] == ["run", "capacity"]  # gunicorn, then the search failed
    assert seen[0][-2:] == ["--out", str(root / "bench-gunicorn")]
    assert said[-1] == "capacity-uvicorn: stopped (exit 1); `make reference` resumes it"
    # A refusal is not resumed by running again: said so.
    seen.clear()
    codes.update(capacity=0, decide=2)
    assert reference_runs.measure(runs, root, said.append) == 2
    assert "decide-uvicorn: refused (exit 2)" in said[-1]
    codes.update(decide=0)
    said.clear()
    assert reference_runs.measure(runs, root, said.append) == 0
    assert "generators: not measured here; `make generators` measures it" in said
