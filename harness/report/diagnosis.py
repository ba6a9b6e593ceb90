"""`make diagnose`'s report: diagnosis.md (the cause and its fix first, then the ramp second by
second, each process, and the stacks behind the cause) and diagnosis.json (all of it)."""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from harness.domain.diagnosis import (
    PACE,
    Cause,
    Conclusion,
    Level,
    ProcessLevel,
    Round,
    first_cause,
    plural,
)
from harness.report.table import md_table

FIX_HEAD = {
    Cause.healthy: "nothing to fix at these levels",
    Cause.unknown: "none proposed: the evidence below is what there is",
}


def to_json(
    conclusion: Conclusion, rounds: Sequence[Round], about: dict[str, Any]
) -> dict[str, Any]:
    def level(lv: Level) -> dict[str, Any]:
        return {
            **dataclasses.asdict(lv),
            "verdict": str(lv.verdict),
            "stalled_from_s": lv.stalled_from_s,
            "processes": [{**dataclasses.asdict(p), "cause": str(p.cause)} for p in lv.processes],
        }

    return {
        **about,
        "cause": str(conclusion.cause),
        "sentence": conclusion.sentence,
        "fix": conclusion.fix,
        "rounds_seen": list(conclusion.rounds),
        "rounds": [
            {
                "number": r.number,
                "skipped": r.skipped,
                "waited_s": r.waited_s,
                "levels": [level(lv) for lv in r.levels],
            }
            for r in rounds
        ],
    }


def markdown(conclusion: Conclusion, rounds: Sequence[Round], about: dict[str, Any]) -> str:
    plan, svc, run = about["plan"], about["service"], about["run"]
    git = run["git"]
    out = [
        f"# Diagnosis of {plan['url']}",
        "",
        f"**Cause: {conclusion.cause}.** {conclusion.sentence}.",
        "",
        f"**Fix:** {conclusion.fix or FIX_HEAD[conclusion.cause]}.",
        "",
        *(
            []
            if run.get("complete", True)
            else [
                "**Incomplete:** the diagnosis was interrupted; what it says holds for the "
                "levels measured only.",
                "",
            ]
        ),
        "What each round saw:",
        "",
        *(f"- {line}" for line in conclusion.rounds),
        "",
        f"Service: {svc['described']}; root process {svc['root']}: `{svc['command'] or '?'}`.",
        f"Ramp: {', '.join(map(str, plan['levels']))} connections, {plan['duration_s']:g} s "
        f"each, {plan['pause_s']:g} s apart, {plural(plan['rounds'], 'round')}; wrk's timeout "
        f"{plan['timeout_s']:g} s. Dumps: `py-spy dump --nonblocking` of every process every "
        f"{plan['dump_every_s']:g} s while the load ran (the service is never paused).",
        f"Measured {run['started']} to {run['finished']} on {run['machine']['cpu_model']} "
        f"({run['machine']['cpu_count']} CPUs), at commit {git['sha'][:12]}"
        f"{' (with uncommitted changes)' if git['dirty'] else ''}; wrk {run['wrk']}, "
        f"{run['py-spy']}. Command: `{run['command']}`.",
        "",
        "## The ramp, second by second",
        "",
        "A level is `stalled` from its first whole second without an answer (once the service "
        f"had answered {PACE} in a second), `failing` from its first whole second of errors "
        "only (status 400 or more), `impaired` where answers kept coming but a process's "
        "dumps name a cause, else `held`. Errors: wrk's timeouts, socket errors and error "
        "statuses over the whole level.",
        "",
        _ramp_table(rounds),
        "## Each process at each level",
        "",
        "Client connections and connections out: the most the kernel's socket table showed at "
        "one sample (clients below the level's connections: connections not yet accepted, "
        "waiting in the listen backlog). CPU: of one CPU, over the level.",
        "",
        _process_table(rounds),
    ]
    evidence = _evidence(rounds)
    if evidence:
        out += ["## The stacks behind the cause", "", *evidence]
    return "\n".join(out) + "\n"


def _ramp_table(rounds: Sequence[Round]) -> str:
    rows = []
    for r in rounds:
        for lv in r.levels:
            since = lv.stalled_from_s if lv.stalled_from_s is not None else lv.failing_from_s
            verdict = f"{lv.verdict} from {since:g} s" if since is not None else lv.verdict
            errors = lv.timeouts + lv.socket_errors + lv.status_errors
            seconds = [
                f"{k}" + (f" ({o})" if o else "") for k, o in zip(lv.ok, lv.other, strict=True)
            ]
            rows.append(
                [
                    r.number,
                    lv.connections,
                    verdict,
                    f"{lv.ok_rps:,.0f}",
                    f"{lv.p50_ms:,.1f}",
                    f"{lv.p99_ms:,.1f}",
                    errors,
                    " ".join(seconds) or "-",
                ]
            )
    head = ["round", "connections", "verdict", "req/s", "p50 ms", "p99 ms", "errors"]
    head.append("answers in each whole second (errors)")
    return md_table(head, rows, ["---:", "---:", "---", "---:", "---:", "---:", "---:", "---"])


def _out(p: ProcessLevel) -> str:
    return ", ".join(f"{n} to {remote}" for remote, n in p.out.items()) or "none"


def _process_table(rounds: Sequence[Round]) -> str:
    rows = []
    for r in rounds:
        for lv in r.levels:
            for p in lv.processes:
                cause = str(p.cause) if p.cause is not Cause.healthy else "-"
                rows.append(
                    [
                        r.number,
                        lv.connections,
                        p.pid,
                        "-" if p.clients is None else p.clients,
                        _out(p),
                        "-" if p.cpu_percent is None else f"{p.cpu_percent:.0f}%",
                        f"{p.threads} ({p.busy} of {p.threadpool})",
                        f"{p.dumps}" + (f" ({len(p.dump_errors)} failed)" if p.dump_errors else ""),
                        cause,
                    ]
                )
    head = ["round", "connections", "process", "clients", "connections out", "CPU"]
    head += ["threads (threadpool: busy of all)", "dumps", "cause"]
    align = ["---:", "---:", "---:", "---:", "---", "---:", "---:", "---:", "---"]
    return md_table(head, rows, align)


def _evidence(rounds: Sequence[Round]) -> list[str]:
    """For each round's first level that named a cause (the conclusion's): that process's
    threads where they stood in the first dump that showed it."""
    out: list[str] = []
    for r in rounds:
        found = first_cause(r)
        if found is None:
            continue
        lv, p = found
        seen = (
            f"the dump taken {p.first_seen_s:g} s into the level"
            if p.first_seen_s is not None
            else "its last dump of the level"
        )
        out += [
            f"### Round {r.number}: process {p.pid} at {plural(lv.connections, 'connection')} "
            f"({p.cause})",
            "",
            f"{p.evidence[:1].upper()}{p.evidence[1:]}. Its {plural(p.threads, 'thread')}, "
            f"grouped by their innermost frames, in {seen} (all its dumps: `{p.file}`):",
            "",
            "```",
            *(line for n, frames in p.stacks for line in _stack(n, frames)),
            "```",
            "",
        ]
    return out


def _stack(n: int, frames: Sequence[str]) -> list[str]:
    return [
        f"{n} thread{'s' if n != 1 else ''}, innermost first:",
        *(f"    {f}" for f in frames or ["(no Python frame)"]),
    ]


def write(
    folder: Path, conclusion: Conclusion, rounds: Sequence[Round], about: dict[str, Any]
) -> None:
    data = to_json(conclusion, rounds, about)
    (folder / "diagnosis.json").write_text(json.dumps(data, indent=2) + "\n")
    (folder / "diagnosis.md").write_text(markdown(conclusion, rounds, about))
