"""A run's directory: where a new one goes, a resumed one reopened with its settings checked,
the machine's lock taken, and the measurement run with its report drawn (also when
interrupted) and the way to resume it said."""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime
from pathlib import Path
from typing import Any

from harness.cli.console import Console, say
from harness.cli.variables import MAKE_TARGET, WITH_RESUME, Given
from harness.domain.errors import HarnessError, UsageError
from harness.infra import process
from harness.infra.environment import PROJECT_ROOT, now_iso
from harness.report import conclusions, decision, files
from harness.run.options import Options
from harness.run.session import Interrupted
from harness.store.rundir import RunDir

RESULTS = PROJECT_ROOT / "results"


def new_run_path(given: Given, name: str) -> Path:
    """Where a new run goes, checked before anything starts."""
    stamp = datetime.now().strftime("%Y%m%d-%H%M%S")
    slug = "".join(c if c.isalnum() or c in "-_" else "-" for c in name)
    if given["OUT"]:
        path = Path(given["OUT"])
        RunDir.check_creatable(path, parent_must_exist=True)
        return path
    path = RESULTS / "runs" / f"{stamp}-{slug}"
    RunDir.check_creatable(path)
    return path


def resume(given: Given) -> tuple[RunDir, Options]:
    run = RunDir.open(Path(given["RESUME"]))
    if run.kind != given.command:
        raise UsageError(
            f"RESUME: {run.path} is a {run.kind} run; resume it with "
            f"{MAKE_TARGET[run.kind]} RESUME={run.path}"
        )
    meta = run.metadata()
    recorded = meta["parameters"]
    differ = [
        f"{name}={value} (the run has {recorded.get(name.lower()) or 'it unset'})"
        for name, value in given.explicit.items()
        if name not in WITH_RESUME and recorded.get(name.lower()) != value
    ]
    if differ:
        raise UsageError(
            f"RESUME: {', '.join(differ)}: a resumed run keeps the settings it was started "
            "with; leave them out, or start a new run"
        )
    return run, Options.from_json(meta["options"], given["DATABASE_URL"] or None)


def check_resume(run: RunDir, entry: dict[str, Any], given: Given) -> None:
    for note in run.check_resumable(entry, force=given.on("FORCE")):
        say(f"note: resuming with a difference: {note}")


class Busy(HarnessError):
    """Another harness is measuring on this machine."""


def lock(given: Given, out: Path) -> dict[str, Any]:
    """Refuse to measure beside another harness (their numbers would disturb each other),
    unless FORCE=1: then say so, and return what the other was doing for the provenance."""
    other = process.take_lock(command=MAKE_TARGET[given.command], run=str(out), since=now_iso())
    if other is None:
        return {}
    said = (
        f"another harness is measuring on this machine: `{other.get('command')}` into "
        f"{other.get('run')} (pid {other['pid']}, since {other.get('since')})"
    )
    if not given.on("FORCE"):
        raise Busy(
            f"{said}; two at once disturb each other's numbers: wait for it to end, or add "
            "FORCE=1 to measure anyway (the run's provenance will say so)"
        )
    say(f"note: {said}; measuring anyway (FORCE=1), as this run's provenance records")
    return {"measured_alongside": other}


def measure(run: RunDir, given: Given, work: Callable[[], None], console: Console) -> int:
    """Run `work`, then draw the report, also when interrupted; say how to resume."""
    how_to_resume = (
        f"resume with: {MAKE_TARGET[given.command]} RESUME={run.path}"
        if given.command != "capacity"  # a search is measured whole: run it again
        else f"{MAKE_TARGET[given.command]} takes no RESUME: measure again into another OUT"
    )
    try:
        try:
            work()
        finally:
            console.close()  # before anything else is said
    except (Interrupted, KeyboardInterrupt) as exc:
        say(f"interrupted ({exc}); {len(run.records())} records kept in {run.path}")
        say(how_to_resume)
        raise
    except HarnessError as exc:
        say(f"error: {exc}; {len(run.records())} records kept in {run.path}")
        say(how_to_resume)
        return 1
    finally:
        try:
            files.write(run)
        except OSError as exc:
            say(f"the report could not be written to {run.path}: {exc.strerror}")
    plan = decision.plan_of(run.metadata())
    brief = {
        "run": conclusions.findings,
        "decide": lambda records: decision.findings(records, plan),
    }.get(run.kind)
    if brief:  # the summary's conclusions, or the decision's rules, in brief
        for line in brief(run.records()):
            say(line.removeprefix("- ").replace("**", "").replace("`", ""))
    say(f"summary: {run.path / 'summary.md'}")
    if run.kind == "capacity":
        say(f"capacity: {run.path / 'capacity.md'}")
    if run.kind == "decide":
        say(f"decision: {run.path / 'decision.md'}")
    return 0


def announce(what: str, estimate: float, run: RunDir) -> None:
    """The effective settings, as the run recorded them (a resume's are the run's own)."""
    recorded = run.metadata()["parameters"]
    settings = " ".join(
        f"{k.upper()}={v}" for k, v in recorded.items() if v and k not in ("command", "out")
    )
    say(f"settings: {settings}")
    say(f"{what}, about {estimate / 60:.1f} minutes; results in {run.path}")
