"""`make reference`: every run of reference-runs.toml measured, or resumed where it stopped, each
as the command a user would type, so that its provenance records that command's own run."""

from __future__ import annotations

import json
import shlex
import signal
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

from harness.cli import diagnose
from harness.domain.errors import HarnessError
from harness.run.diagnose_examples import EXAMPLES
from harness.store.runlist import ReferenceRun, RunList

# The commands that continue a run from its metadata; the others start over or keep what is done.
RESUMABLE = {"run", "decide", "map"}
USAGE = 2  # a command's exit code where it refused its settings


def state(run: ReferenceRun, folder: Path) -> str:
    """`complete`, `incomplete` or `missing`, from what the folder holds."""
    if (folder / "metadata.json").is_file():
        meta = json.loads((folder / "metadata.json").read_text())
        return "complete" if meta.get("complete") else "incomplete"
    if run.command[0] == "diagnose-examples":
        done = [diagnose.complete(folder / e.name) for e in EXAMPLES]
        return "complete" if all(done) else "incomplete" if any(done) else "missing"
    if run.command[0] == "generators":
        return "complete" if (folder / "records.json").is_file() else "missing"
    return "incomplete" if folder.exists() and any(folder.iterdir()) else "missing"


def resume_argv(run: ReferenceRun, folder: Path) -> list[str] | None:
    """The command that measures what is left of it (None: nothing is)."""
    now = state(run, folder)
    if now == "complete":
        return None
    if now == "missing" or run.command[0] == "diagnose-examples":
        return run.argv(folder)  # diagnose-examples keeps the examples already complete
    if run.command[0] in RESUMABLE:
        return [run.command[0], "--resume", str(folder)]
    raise HarnessError(
        f"{folder}: an interrupted `{run.command[0]}` cannot be resumed; remove the folder to "
        "measure it again"
    )


def measure(runs: RunList, root: Path, say: Callable[[str], None]) -> int:
    """Each run in the list's order; the first that fails or is interrupted ends it, with its
    exit code (what the others measured stays, and resumes next time)."""
    for run in runs.runs:
        folder = root / run.name
        if run.measured_by:
            if state(run, folder) != "complete":
                say(f"{run.name}: not measured here; `{run.measured_by}` measures it")
            continue
        argv = resume_argv(run, folder)
        if argv is None:
            continue
        say(f"{run.name}: python -m harness {shlex.join(argv)}")
        code = _wait(subprocess.Popen([sys.executable, "-m", "harness", *argv]))
        if code == USAGE:  # refused (a resume with other settings, a folder not a run's)
            say(f"{run.name}: refused (exit {code}); resolve what it says, then make reference")
            return code
        if code:
            say(f"{run.name}: stopped (exit {code}); `make reference` resumes it")
            return code
    return 0


def _wait(child: subprocess.Popen[bytes]) -> int:
    """The child's exit code. Ctrl-C reaches the child too (one process group): it writes
    what it measured and exits, so every interrupt here only waits on for it; SIGTERM is
    passed on."""
    previous = signal.signal(signal.SIGTERM, lambda *_: child.terminate())
    try:
        while True:
            try:
                return child.wait()
            except KeyboardInterrupt:
                continue
    finally:
        signal.signal(signal.SIGTERM, previous)


def unfinished(runs: RunList, root: Path) -> list[str]:
    """The listed runs not complete, each with its state (a run measured by a make target of
    its own may be missing: its section is then left out)."""
    out = []
    for run in runs.runs:
        now = state(run, root / run.name)
        if now != "complete" and not (run.measured_by and now == "missing"):
            out.append(f"{run.name} ({now})")
    return out


def unlisted(runs: RunList, root: Path) -> list[str]:
    """What the reference's folder holds that the list does not name."""
    return sorted(p.name for p in root.iterdir() if p.name not in runs.names)
