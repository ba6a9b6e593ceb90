"""The command line in-process: every mistaken input is one line and exit code 2, every variable
applies where it is given or is refused, resume keeps provenance. Nothing is started here."""

from __future__ import annotations

import importlib.metadata
import json
import os
import shutil
import subprocess
from pathlib import Path

import pytest

from harness.cli.main import main, parser
from harness.cli.plans import map_plan, options_from
from harness.cli.variables import COMMANDS, VARIABLES, markdown_table, resolve
from harness.domain.axes import WrkRunner
from harness.infra.process import free_port

FIXTURES = Path(__file__).parent / "fixtures"


def cli(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, str]:
    code = main(list(args))
    out, err = capsys.readouterr()
    return code, out, err


def refused(capsys: pytest.CaptureFixture[str], *args: str) -> str:
    code, _, err = cli(capsys, *args)
    assert code == 2, err
    assert err.startswith("error: ") and err.count("\n") == 1 and "Traceback" not in err
    return err


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--server", "nginx"], "SERVER: unknown value 'nginx'; choose from uvicorn, gunicorn"),
        (["--pools", "5+x"], "POOLS: pool '5+x' is not SIZE+OVERFLOW"),
        (["--connections", "0"], "CONNECTIONS: '0' is not a whole number from 1"),
        (["--duration", "10"], "DURATION: '10' needs a unit"),
        (["--modes", "threads"], "MODES: unknown value 'threads'; choose from sync, async"),
        (["--out", "/etc/hostname/run"], "OUT: cannot write results to /etc/hostname/run"),
        (["--target", "http://10.0.0.5:8001"], "is not a loopback address"),
        (["--target", "http://127.0.0.1"], "needs a port"),
        (["--target", "http://127.0.0.1:8001", "--pools", "5+10"], "POOLS (--pools) cannot be"),
        (["--target", "http://127.0.0.1:8001"], "MODE: say which app"),
        (["--mode", "sync", "--modes", "async"], "MODE and MODES are the same setting"),
        (["--stack", "2021", "--tokens", "40"], "TOKENS: the 2021 stack has no thread limiter"),
        (["--db-latency", "-1ms"], "DB_LATENCY: '-1ms' is not a one-way latency; give 0"),
        (["--db-latency", "x"], "DB_LATENCY: 'x' is not a one-way latency; give 0 (direct)"),
        (["--rows", "0,x"], "ROWS: '0' is not a whole number from 1 to 100000"),
        (["--rows", "10,x"], "ROWS: 'x' is not a whole number from 1 to 100000"),
        (["--duration", "500ms"], "DURATION: '500ms' is not a whole number of seconds"),
        (["--workers", "all"], "WORKERS: 'all' is not a whole number from 1 to 64, or cpus"),
        (["--bogus", "1"], "unrecognized arguments: --bogus 1"),
        (["--stack", "2021", "--server", "granian"], "SERVER: granian is not part of the 2021"),
        (["--stack", "current,2021", "--driver", "psycopg"], "psycopg (3) is not part of the 2021"),
        (["--drivers", "psycopg3"], "DRIVERS: unknown value 'psycopg3'; choose from psycopg2,"),
        (["--driver", "asyncpg", "--mode", "sync"], "asyncpg drives only the async app, and MODES"),
        (["--driver", "psycopg2"], "psycopg2 names no driver of the async app; add asyncpg or"),
        (["--layer", "raw"], "LAYERS: unknown value 'raw'; choose from orm, core, driver"),
        (["--target", "http://127.0.0.1:8001", "--mode", "sync", "--layer", "core"], "LAYERS"),
    ],
)
def test_bad_input_to_run_is_one_line_and_exit_code_2(
    capsys: pytest.CaptureFixture[str], args: list[str], message: str
) -> None:
    assert message in refused(capsys, "run", "--dry-run", *args)


@pytest.mark.parametrize(
    "args",
    [["--db-latency", "-1ms"], ["--db-latency=x"], ["--rows", "0,x"], ["--variants", "sync"],
     ["--modes", "sync"], ["--target", "http://127.0.0.1:8001"]],
)  # fmt: skip
def test_bad_input_to_decide_is_one_line_and_exit_code_2(
    capsys: pytest.CaptureFixture[str], args: list[str]
) -> None:
    refused(capsys, "decide", "--dry-run", *args)


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--layers", "orm,driver"], "LAYERS: a decision table is for one layer"),
        (["--occupancy", "on,off"], "OCCUPANCY: a decision table is for one OCCUPANCY setting"),
        (["--drivers", "psycopg2,psycopg,asyncpg"], "give one sync driver, not psycopg2, psycopg"),
    ],
)
def test_a_decision_is_for_one_driver_per_mode_one_layer_and_one_occupancy(
    capsys: pytest.CaptureFixture[str], args: list[str], message: str
) -> None:
    # Its rows set one async variant against one sync one: a second would overwrite the first.
    assert message in refused(capsys, "decide", "--dry-run", *args)
    code, _, _ = cli(capsys, "run", "--dry-run", *args)
    assert code == 0  # a bench run compares them


def test_the_decide_preset_crosses_latency_rows_variants_and_workers(
    capsys: pytest.CaptureFixture[str],
) -> None:
    code, out, _ = cli(capsys, "decide", "--dry-run")
    assert code == 0
    keys = [k for k in out.splitlines()[:-1] if not k.startswith("capacity: ")]
    cpus = os.cpu_count() or 1
    workers = sorted({1, cpus})
    cells = 2 * 2 * 4 * len(workers) * 3  # latencies x rows x variants x workers x levels
    # Then a capacity search for each shape and variant but sync `dependency`.
    lines = 2 * 2 * 3 * len(workers)
    assert out.splitlines()[-1].startswith(
        f"{cells * 3} of {cells * 3} measurements ({cells} cells x 3 rounds), then a capacity "
        f"search of {lines} lines within p99 < 250 ms"
    )
    searched = [k for k in out.splitlines() if k.startswith("capacity: ")]
    assert len(searched) == lines and not any("sync/psycopg2/dependency" in k for k in searched)
    assert all(k.endswith("open loop, at most 1000 connections") for k in searched)
    firsts = [k for k in keys if "@" not in k]
    assert {k.rsplit("-c", 1)[1] for k in firsts} == {"8", "32", "100"}
    assert {w for w in workers if any(f"-w{w}-" in k for k in firsts)} == set(workers)
    for part in ("-r10-", "-r100-", "-d2-c", "-d2-lat5ms-c"):
        assert any(part in k for k in firsts), part
    styles = {k.split("-")[1] + "-" + k.split("-")[2] for k in firsts}
    assert styles == {"sync-dependency", "sync-context", "async-dependency", "async-context"}
    # BUDGET=0: no capacity search.
    code, out, _ = cli(capsys, "decide", "--dry-run", "--budget", "0")
    assert code == 0 and "capacity" not in out
    # Every preset value is a variable.
    code, out, _ = cli(
        capsys, "decide", "--dry-run", "--db-latency", "2ms", "--rows", "50", "--workers", "1",
        "--connections", "4", "--repeats", "2", "--variants", "sync-context,async-dependency",
    )  # fmt: skip
    assert code == 0 and out.splitlines()[-1].startswith("4 of 4 measurements (2 cells x 2")


def test_the_server_error_names_all_as_a_choice(capsys: pytest.CaptureFixture[str]) -> None:
    assert "choose from uvicorn, gunicorn, hypercorn, granian, all" in refused(
        capsys, "run", "--server", "nginx"
    )
    assert "uvicorn, gunicorn, hypercorn, granian, or all" in parser().format_help() + "".join(
        a.format_help() for a in parser()._subparsers._group_actions[0].choices.values()
    )


def test_a_variable_a_command_does_not_take_is_refused_with_what_it_takes(
    capsys: pytest.CaptureFixture[str],
) -> None:
    err = refused(capsys, "map", "--connections", "5")
    assert "CONNECTIONS: not a setting of `make failure-map`" in err and "POOLS" in err
    err = refused(capsys, "serve", "--duration", "3s")
    assert "DURATION: not a setting of `make serve`" in err


def test_the_make_targets_names_are_the_commands_names_too() -> None:
    assert parser().parse_args(["bench", "--connections", "4"]).command == "run"
    assert parser().parse_args(["failure-map"]).command == "map"
    given = resolve(parser().parse_args(["bench", "--connections", "4"]), "run")
    assert given["CONNECTIONS"] == "4"


def test_fail_on_is_checked_before_anything_runs(capsys: pytest.CaptureFixture[str]) -> None:
    err = refused(capsys, "run", "--fail-on", "regression", "--dry-run")
    assert "FAIL_ON: regression compares two runs (make compare" in err
    err = refused(capsys, "decide", "--fail-on", "colapse", "--dry-run")
    assert "FAIL_ON: unknown value 'colapse'; choose from collapse" in err
    err = refused(capsys, "map", "--fail-on", "collapse")
    assert "FAIL_ON: not a setting of `make failure-map`" in err


def test_the_map_takes_rows_warmup_pool_timeout_and_wrk() -> None:
    """Once silently dropped by `make failure-map`."""
    argv = ["map", "--rows", "20", "--warmup", "2s", "--pool-timeout", "5s", "--wrk", "docker"]
    given = resolve(parser().parse_args(argv), "map")
    plan, options = map_plan(given), options_from(given)
    assert (plan.rows, plan.pool_timeout_s) == (20, 5.0)
    assert (options.warmup_s, options.wrk_runner) == (2.0, WrkRunner.docker)
    assert all(line.cell(8).id.endswith("-r20-d3-c8") for line in plan.lines())


def test_map_blames_variants_for_limited_under_2021(capsys: pytest.CaptureFixture[str]) -> None:
    err = refused(capsys, "map", "--stack", "2021", "--variants", "sync-limited")
    assert err.startswith("error: VARIANTS: 'limited' needs")


def test_the_singular_mode_and_style_work_everywhere(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = cli(capsys, "run", "--dry-run", "--mode", "async", "--style", "context")
    assert code == 0
    ids = out.splitlines()[:-1]
    assert ids and all("-async-context-" in i for i in ids)
    assert "STYLES: `make serve` starts one server" in refused(
        capsys, "serve", "--styles", "context,dependency"
    )


USERS = "http://127.0.0.1:8000/users"


@pytest.mark.parametrize(
    ("args", "message"),
    [
        ([], "TARGET: name the service and the path to load"),
        (["--target", "http://127.0.0.1:8000"], "has no path: give the path each request takes"),
        (["--target", "http://10.0.0.9:8000/users"], "so the service runs on this machine"),
        (["--target", USERS, "--allow-remote"], "ALLOW_REMOTE: not a setting of `make diagnose`"),
        (["--target", USERS, "--connections", "0"], "CONNECTIONS: '0' is not a whole number"),
        (["--target", USERS, "--duration", "2s"], "DURATION: 2s: at least 3s"),
        (["--target", USERS, "--repeats", "1,2"], "REPEATS: 1,2: one number, the ramps to run"),
        (["--target", USERS, "--pid", "1", "--target-pid", "1"], "PID and TARGET_PID are the same"),
        (["--target", USERS, "--workers", "2"], "WORKERS: not a setting of `make diagnose`"),
    ],
)
def test_bad_input_to_diagnose_is_one_line_and_exit_code_2(
    capsys: pytest.CaptureFixture[str], args: list[str], message: str
) -> None:
    # With DRY_RUN: were a check lost, nothing would be loaded.
    assert message in refused(capsys, "diagnose", "--dry-run", *args)


def test_a_diagnose_dry_run_says_the_ramp_and_its_longest_time(
    capsys: pytest.CaptureFixture[str],
) -> None:
    code, _, err = cli(capsys, "diagnose", "--target", USERS, "--dry-run")
    assert code == 0, err
    assert err.strip() == (
        "2 rounds of levels 1, 2, 4, 8, 16, 32, 64, 128, 256 connections against "
        f"{USERS}, 5 s each: at most about 1.8 minutes (a round ends at its first level that "
        "stalls), and up to 180 s before each later round for a stalled service to answer again"
    )


def test_the_blocking_mistake_is_a_variant_of_the_async_app_only(
    capsys: pytest.CaptureFixture[str],
) -> None:
    assert "use MODES=async" in refused(capsys, "run", "--dry-run", "--styles", "blocking")
    assert "use async-blocking" in refused(
        capsys, "map", "--dry-run", "--variants", "sync-blocking"
    )
    assert "use MODES=async" in refused(capsys, "serve", "--mode", "sync", "--style", "blocking")
    assert "a decision sets sync against async done right" in refused(
        capsys, "decide", "--dry-run", "--variants", "sync-context,async-blocking"
    )
    code, out, _ = cli(capsys, "run", "--dry-run", "--mode", "async", "--style", "blocking")
    assert code == 0 and "-async-blocking-" in out


def test_serve_validates_its_settings(capsys: pytest.CaptureFixture[str]) -> None:
    assert "STYLES: unknown value 'bogus'" in refused(capsys, "serve", "--style", "bogus")


def test_every_command_lists_its_settings_with_defaults(
    capsys: pytest.CaptureFixture[str],
) -> None:
    for command in COMMANDS:
        with pytest.raises(SystemExit):
            main([command, "--help"])
        text = capsys.readouterr().out
        for v in VARIABLES:
            assert (v.flag in text) == (command in v.defaults), (command, v.name)
        assert "(default: " in text
    with pytest.raises(SystemExit):
        main(["--help"])
    text = capsys.readouterr().out
    assert all(c in text for c in ("run", "map", "serve", "report", "reference"))


def test_report_and_reference_say_what_they_need(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    assert "RUN: name a run directory" in refused(capsys, "report")
    (tmp_path / "ref").mkdir()
    err = refused(capsys, "reference", str(tmp_path / "ref"), "--readme", "/tmp/elsewhere/x.md")
    assert "README: /tmp/elsewhere/x.md must be in a folder that holds" in err


def incomplete_copy(tmp_path: Path) -> Path:
    run = tmp_path / "run"
    shutil.copytree(FIXTURES / "run", run)
    next((run / "cells").glob("*-c100.json")).unlink()
    return run


def test_resume_keeps_the_runs_settings(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    run = incomplete_copy(tmp_path)
    err = refused(capsys, "run", "--resume", str(run), "--connections", "1,500")
    assert "RESUME: CONNECTIONS=1,500 (the run has 1,100): a resumed run keeps" in err
    code, _, _ = cli(capsys, "run", "--resume", str(run), "--connections", "1,100", "--dry-run")
    assert code == 0  # the run's own settings, given again, are fine
    code, out, _ = cli(capsys, "run", "--resume", str(run), "--dry-run")
    assert code == 0
    assert out.splitlines()[-1].startswith("1 of 16 measurements (16 cells x 1 rounds) to run")


def test_resume_refuses_another_package_set(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    run = incomplete_copy(tmp_path)
    before = (run / "metadata.json").read_text()
    meta = json.loads(before)
    meta["packages"]["fastapi"] = "0.99.0"
    (run / "metadata.json").write_text(json.dumps(meta))
    err = refused(capsys, "run", "--resume", str(run))
    now = importlib.metadata.version("fastapi")
    assert f"packages fastapi: 0.99.0 then, {now} now" in err and "FORCE=1" in err
    assert json.loads((run / "metadata.json").read_text()) == meta  # provenance untouched


def test_resume_of_a_complete_run_runs_nothing(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    shutil.copytree(FIXTURES / "run", tmp_path / "run")
    before = (tmp_path / "run" / "metadata.json").read_text()
    code, _, err = cli(capsys, "run", "--resume", str(tmp_path / "run"))
    assert code == 0 and "nothing to resume" in err
    assert (tmp_path / "run" / "metadata.json").read_text() == before
    code, out, _ = cli(capsys, "run", "--resume", str(tmp_path / "run"), "--dry-run")
    assert out.splitlines() == [
        "0 of 16 measurements (16 cells x 1 rounds) to run, about 0.0 minutes"
    ]


def test_a_run_whose_every_record_is_there_is_marked_complete_on_resume(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    """A run that ended between its last record and closing its session would otherwise stay
    incomplete for good (make reference would resume it again and again)."""
    shutil.copytree(FIXTURES / "run", tmp_path / "run")
    meta = tmp_path / "run" / "metadata.json"
    meta.write_text(meta.read_text().replace('"complete": true', '"complete": false'))
    assert json.loads(meta.read_text())["complete"] is False
    code, _, err = cli(capsys, "run", "--resume", str(tmp_path / "run"))
    assert code == 0 and "nothing to resume" in err
    assert json.loads(meta.read_text())["complete"] is True


def test_a_map_is_resumed_as_a_map(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    shutil.copytree(FIXTURES / "map", tmp_path / "map")
    err = refused(capsys, "run", "--resume", str(tmp_path / "map"))
    assert "is a map run; resume it with make failure-map RESUME=" in err


def test_the_docs_table_is_the_variables_table() -> None:
    # docs/variables.md holds the table verbatim: from its header row to the next blank line.
    page = (Path(__file__).parent.parent / "docs" / "variables.md").read_text()
    start = page.index("| variable | meaning |")
    end = page.find("\n\n", start)
    table = page[start:] if end < 0 else page[start:end]
    assert table.rstrip("\n") == markdown_table().rstrip("\n")


def test_resume_of_a_complete_map_touches_nothing(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    shutil.copytree(FIXTURES / "map", tmp_path / "map")
    before = sorted(p.relative_to(tmp_path) for p in (tmp_path / "map").rglob("*"))
    meta = (tmp_path / "map" / "metadata.json").read_text()
    code, _, err = cli(capsys, "map", "--resume", str(tmp_path / "map"))
    assert code == 0 and "nothing to resume" in err
    assert (tmp_path / "map" / "metadata.json").read_text() == meta
    assert sorted(p.relative_to(tmp_path) for p in (tmp_path / "map").rglob("*")) == before


def test_the_makefile_passes_each_variable_as_its_flag() -> None:
    root = Path(__file__).parent.parent
    # Alone, not as a sub-make of `make test` (which would hand down its flags and chatter).
    env = {k: v for k, v in os.environ.items() if k not in ("MAKEFLAGS", "MAKELEVEL", "MFLAGS")}
    done = subprocess.run(
        ["make", "-n", "bench", "POOL_TIMEOUT=5s", "MODE=sync", "OUT=/tmp/it's", "DRY_RUN=1"],
        cwd=root,
        capture_output=True,
        text=True,
        timeout=60,
        env=env,
    )
    assert "apt-get" not in done.stdout  # a dry run installs no system package
    line = next(x for x in done.stdout.splitlines() if "-m harness run " in x)
    assert "--pool-timeout='5s'" in line and "--mode='sync'" in line and "--dry-run" in line
    assert "--out='/tmp/it'\\''s'" in line
    for goal in ("bench", "decide", "failure-map"):
        plan = subprocess.run(
            ["make", "-n", goal], cwd=root, capture_output=True, text=True, env=env
        ).stdout
        dry = subprocess.run(
            ["make", "-n", goal, "DRY_RUN=1"], cwd=root, capture_output=True, text=True, env=env
        ).stdout
        assert "apt-get" in plan and "apt-get" not in dry, goal  # setup's, only when measuring
    for args, message in [
        (["bench", "SERVERS=gunicorn"], "unknown variable SERVERS"),
        (["reference", "DURATION=3s"], "DURATION: settings of make bench, decide"),
    ]:
        done = subprocess.run(
            ["make", "-n", *args], cwd=root, capture_output=True, text=True, env=env
        )
        assert done.returncode != 0 and message in done.stderr
    # PG_BINARIES is the harness's environment variable: make takes it, and hands it on.
    shown = subprocess.run(
        ["make", "-n", "bench", "PG_BINARIES=pypi", "DRY_RUN=1"],
        cwd=root, capture_output=True, text=True, env=env,
    )  # fmt: skip
    assert shown.returncode == 0 and "--dry-run" in shown.stdout, shown.stderr
    # make compare takes FAIL_ON and JSON of its own; the other settings it refuses.
    compare = subprocess.run(
        ["make", "-n", "compare", "A=a", "B=b", "FAIL_ON=regression", "JSON=c.json"],
        cwd=root, capture_output=True, text=True, env=env,
    ).stdout  # fmt: skip
    assert "--fail-on='regression' --json='c.json'" in compare


def test_a_dead_target_is_refused_before_a_run_exists(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    url = f"http://127.0.0.1:{free_port()}"
    err = refused(capsys, "run", "--target", url, "--mode", "sync", "--out", str(tmp_path / "r"))
    assert f"TARGET: {url} cannot be measured: GET /users failed" in err
    assert not (tmp_path / "r").exists()


def test_an_out_in_a_folder_that_does_not_exist_is_refused(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    err = refused(capsys, "run", "--dry-run", "--out", str(tmp_path / "typo" / "run"))
    assert f"OUT: {tmp_path / 'typo'} does not exist" in err
    assert not (tmp_path / "typo").exists()


@pytest.mark.parametrize(
    ("command", "args", "message"),
    [
        ("map", ["--drivers", "psycopg2,psycopg"], "give one sync driver, not psycopg2, psycopg"),
        ("map", ["--layers", "orm,core"], "LAYERS: a failure map is for one driver per mode and"),
        ("map", ["--stack", "2021", "--server", "granian"], "granian is not part of the 2021"),
        ("serve", ["--layer", "core,driver"], "LAYERS: `make serve` starts one server"),
        ("serve", ["--mode", "sync", "--driver", "asyncpg"], "asyncpg drives only the async app"),
    ],
)
def test_drivers_layers_and_granian_are_checked_by_map_and_serve(
    capsys: pytest.CaptureFixture[str], command: str, args: list[str], message: str
) -> None:
    assert (
        message in refused(capsys, command, "--dry-run", *args)
        if command == "map"
        else (message in refused(capsys, command, *args))
    )


def test_a_sync_map_without_the_http_ceiling_needs_no_async_driver(
    capsys: pytest.CaptureFixture[str],
) -> None:
    sync_only = ["map", "--dry-run", "--variants", "sync-dependency", "--drivers", "psycopg2"]
    code, out, _ = cli(capsys, *sync_only, "--ceiling-levels", "none")
    assert code == 0 and "uvicorn/sync/psycopg2/dependency" in out
    err = refused(capsys, *sync_only)  # the HTTP ceiling runs the async app
    assert "add asyncpg or psycopg, or leave async out of VARIANTS and the HTTP ceiling" in err


def test_drivers_fit_each_mode_and_psycopg_serves_both(capsys: pytest.CaptureFixture[str]) -> None:
    """DRIVER=psycopg: both apps on psycopg 3, named in the ids; the default drivers keep the ids
    records had before drivers were a setting; SERVER=all under 2021 leaves granian out."""
    code, out, _ = cli(capsys, "run", "--dry-run", "--driver", "psycopg", "--connections", "24")
    assert code == 0
    assert "uvicorn-sync-dependency-p5+10-pt30-t40-w1-list-r10-d3-drpsycopg-c24" in out
    assert "uvicorn-async-context-p5+10-pt30-t40-w1-list-r10-d3-drpsycopg-c24" in out
    code, out, _ = cli(
        capsys, "run", "--dry-run", "--drivers", "psycopg2,asyncpg,psycopg", "--layers",
        "orm,driver", "--styles", "dependency", "--connections", "24",
    )  # fmt: skip
    ids = {line.split("@")[0] for line in out.splitlines() if line.startswith("uvicorn-")}
    assert "uvicorn-sync-dependency-p5+10-pt30-t40-w1-list-r10-d3-c24" in ids
    assert "uvicorn-async-dependency-p5+10-pt30-t40-w1-list-r10-d3-ldriver-c24" in ids
    assert "uvicorn-sync-dependency-p5+10-pt30-t40-w1-list-r10-d3-drpsycopg-ldriver-c24" in ids
    assert len(ids) == 2 * 2 * 2  # modes x drivers per mode x layers
    code, out, _ = cli(capsys, "run", "--dry-run", "--server", "all", "--stack", "current,2021")
    assert (
        code == 0
        and "granian-sync" in out
        and "granian-sync-" not in [line for line in out.splitlines() if line.endswith("-s2021-c1")]
    )
    assert not [
        line for line in out.splitlines() if line.startswith("granian") and "-s2021" in line
    ]


def test_with_ceilings_adds_health_per_server_and_plans_pgbench(
    capsys: pytest.CaptureFixture[str],
) -> None:
    code, out, _ = cli(
        capsys, "run", "--dry-run", "--server", "uvicorn,granian", "--with-ceilings",
        "--connections", "1,24", "--repeats", "1",
    )  # fmt: skip
    assert code == 0
    health = [line for line in out.splitlines() if "-health-" in line]
    assert sorted(health) == sorted(
        f"{s}-async-dependency-p5+10-pt30-t40-w1-health-r10-d3-c{c}"
        for s in ("uvicorn", "granian")
        for c in (1, 24)
    )


def test_the_makefile_accepts_exactly_the_variables_of_the_one_table() -> None:
    """The Makefile's VARIABLES and SWITCHES lists (what it passes on, and refuses the rest)
    against harness/cli/variables.py: a name added to one and not the other fails here."""
    root = Path(__file__).parent.parent
    env = {k: v for k, v in os.environ.items() if k not in ("MAKEFLAGS", "MAKELEVEL", "MFLAGS")}
    printed = {}
    for name in ("VARIABLES", "SWITCHES"):
        done = subprocess.run(
            [
                "make",
                "-s",
                "--no-print-directory",
                f"--eval=print-it: ; @echo $({name})",
                "print-it",
            ],
            cwd=root,
            capture_output=True,
            text=True,
            env=env,
            check=True,
        )
        printed[name] = set(done.stdout.split())
    table = {v.name for v in VARIABLES if not v.switch} | {v.alias for v in VARIABLES if v.alias}
    assert printed["VARIABLES"] == table
    assert printed["SWITCHES"] == {v.name for v in VARIABLES if v.switch}
