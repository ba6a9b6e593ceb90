"""`make diagnose TARGET=... [PID=...]`: the plan from the settings, the service found, the ramp
run, and the report written (also when interrupted: what was measured is kept)."""

from __future__ import annotations

import json
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from harness.cli.variables import BY_NAME, Given
from harness.domain.diagnosis import Round, conclude
from harness.domain.errors import HarnessError, UsageError
from harness.domain.parse import parse_duration, parse_positive_ints, parse_wrk_seconds
from harness.domain.requests import Request, Requests
from harness.infra import service, wrk
from harness.infra.environment import git_commit, machine, now_iso
from harness.infra.occupancy import DumpFailed, py_spy_version
from harness.report import diagnosis as report
from harness.run.diagnose import DiagnosePlan, answers, check_dumpable, execute
from harness.run.diagnose_examples import BY_NAME as EXAMPLES
from harness.run.diagnose_examples import database, serving

# The service's first answer, before any load: time for one still recovering from a stall.
FIRST_ANSWER_S = 15.0


def plan_from(given: Given, base: str, requests: Requests, pid: int | None) -> DiagnosePlan:
    levels = tuple(parse_positive_ints(given["CONNECTIONS"], "CONNECTIONS", 10_000))  # rising
    rounds = parse_positive_ints(given["REPEATS"], "REPEATS", 100)
    if len(rounds) != 1:
        raise UsageError(f"REPEATS: {given['REPEATS']}: one number, the ramps to run")
    duration = parse_wrk_seconds(given["DURATION"], "DURATION")
    if duration < 3:
        raise UsageError(
            f"DURATION: {given['DURATION']}: at least 3s, so a level has whole seconds"
        )
    path = requests.items[0].path if wrk.plain(requests) else ""  # else wrk sends the mix
    port = urlsplit(base).port
    assert port is not None, "parse_target requires a port"
    return DiagnosePlan(
        url=base + path,
        port=port,
        pid=pid,
        levels=levels,
        rounds=rounds[0],
        duration_s=duration,
        pause_s=0.0 if given["PAUSE"] in ("0", "0s") else parse_duration(given["PAUSE"], "PAUSE"),
        timeout_s=parse_wrk_seconds(given["TIMEOUT"], "TIMEOUT"),
        requests=None if path else requests,
    )


def run(
    plan: DiagnosePlan,
    out: Path,
    say: Callable[[str], None],
    command: str,
    alongside: dict[str, Any] | None = None,
) -> int:
    found = service.find(plan.port, plan.pid)
    try:
        check_dumpable(found)
    except DumpFailed as exc:
        raise HarnessError(
            f"{exc}; make diagnose reads the service's threads with py-spy"
        ) from None
    status = answers(plan.url, FIRST_ANSWER_S)
    if status is None:
        raise HarnessError(f"{plan.url} gave no answer in {FIRST_ANSWER_S:g} s; is it up?")
    if status >= 400:
        raise UsageError(
            f"TARGET: {plan.url} answers {status}: diagnose a request the service serves "
            "(a path that answers 2xx, or REQUESTS with its headers)"
        )
    out.mkdir(parents=True, exist_ok=True)  # an empty one is allowed (RunDir.check_creatable)
    say(f"diagnosing {plan.url}: {found.describe()}; about {plan.estimate_s() / 60:.1f} minutes")
    about: dict[str, Any] = {
        "plan": plan.to_json(),
        "service": {
            "described": found.describe(),
            "root": found.root,
            "processes": list(found.processes),
            "command": service.command_line(found.root),
        },
        "run": {
            "command": command,
            "started": now_iso(),
            "machine": machine(),
            "git": git_commit(),
            "wrk": wrk.version().split(" Copyright")[0],
            "py-spy": py_spy_version(),
            **(alongside or {}),
        },
    }
    rounds: list[Round] = []
    about["run"]["complete"] = False
    try:
        execute(plan, out / "dumps", say, rounds)
        about["run"]["complete"] = True
    finally:  # also when interrupted, with the rounds measured so far
        about["run"]["finished"] = now_iso()
        conclusion = conclude(rounds)
        report.write(out, conclusion, rounds, about)
        say(f"cause: {conclusion.cause}: {conclusion.sentence}")
        if conclusion.fix:
            say(f"fix: {conclusion.fix}")
        say(f"report: {out / 'diagnosis.md'}")
    return 0


def defaults() -> Given:
    """make diagnose's own defaults, as a user who gives only TARGET gets them."""
    values = {v.name: v.defaults["diagnose"] for v in BY_NAME.values() if "diagnose" in v.defaults}
    return Given("diagnose", {}, values)


def complete(folder: Path) -> bool:
    try:
        data = json.loads((folder / "diagnosis.json").read_text())
    except (OSError, ValueError):
        return False
    return bool(data["run"].get("complete"))


def examples(root: Path, names: list[str], say: Callable[[str], None]) -> int:
    """Each named example served fresh and diagnosed with make diagnose's defaults, into
    root/<name>; one whose report exists is kept (delete the folder to measure it again)."""
    unknown = [n for n in names if n not in EXAMPLES]
    if unknown:
        raise UsageError(f"{unknown[0]}: not an example; choose from {', '.join(EXAMPLES)}")
    todo = [n for n in names or EXAMPLES if not complete(root / n)]
    if not todo:
        say(f"every example has its report in {root}")
        return 0
    root.mkdir(parents=True, exist_ok=True)
    given = defaults()
    with database() as url:
        for name in todo:
            example = EXAMPLES[name]
            say(f"{name}: {example.about}")
            shutil.rmtree(root / name, ignore_errors=True)  # an interrupted one's, incomplete
            log = root / f"{name}.log"
            with serving(example, url, log) as port:  # a server that fails keeps its log
                try:
                    requests = Requests((Request(path="/users"),))
                    plan = plan_from(given, f"http://127.0.0.1:{port}", requests, None)
                    run(plan, root / name, say, f"python -m harness diagnose-examples {name}")
                finally:
                    log.unlink(missing_ok=True)
    return 0
