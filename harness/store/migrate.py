"""Older run directories, read as the current format (harness.domain.result.FORMAT).

Files on disk are never rewritten here: an older run is upgraded in memory when it is read, and
its metadata is written in the current format only when a new invocation (a resume) adds its own
provenance entry to it, or `python -m harness migrate` writes the upgraded run back whole.

Formats 4 to 6 only added fields (a cell's onset, a record's window and ramp; wrk's latency
histograms; an open loop's rate and schedule): a format-3, 4 or 5 record reads as it is, its
onset `fresh`, its load wrk's, with no histograms where it kept none.
Format 3 judges a record from every process's samples: the records of formats 1 and 2 are
judged again from the samples they stored (harness/domain/rules.py, `by_evidence`), starting
from the verdict the throughput rule gave them when they were measured.
"""

from __future__ import annotations

from typing import Any

from harness.domain.axes import Verdict
from harness.domain.errors import HarnessError
from harness.domain.occupancy import Timeline
from harness.domain.plan import MAP_VARIANTS
from harness.domain.result import FORMAT
from harness.domain.rules import Judgement, Rule, by_evidence

READABLE = (1, 2, 3, 4, 5, FORMAT)
# What the throughput rule could say of a measurement; any other verdict was its lifecycle's.
MEASURED = (Verdict.ok, Verdict.errors, Verdict.collapsed)
# What a format-1 run kept at the top level of its metadata, one invocation's worth (a resume
# overwrote them): they become that run's first provenance entry.
_SESSION_KEYS = ("git", "machine", "packages", "stacks", "database", "wrk_version")


def check_format(found: object, what: str) -> int:
    if found not in READABLE:
        readable = ", ".join(str(f) for f in READABLE)
        raise HarnessError(
            f"{what} has format {found!r}, which this harness cannot read (it reads {readable}); "
            "use the harness version that wrote it"
        )
    return int(found)


def cell_v1(cell: dict[str, Any]) -> dict[str, Any]:
    """A format-1 cell (settings flat, None in target mode) as a format-2 one."""
    load = {k: cell[k] for k in ("mode", "workload", "connections", "duration_s")}
    if cell.get("target"):
        return {"target": cell["target"], **load}
    server = {
        "name": cell["server"],
        "style": cell["style"],
        "pool": cell["pool"],
        "tokens": cell["tokens"],
        "workers": cell["workers"],
        "rows": cell["rows"],
        "pool_timeout_s": cell["pool_timeout_s"],
        "stack": cell.get("stack", "current"),
    }
    return {"server": server, **load}


def record(data: dict[str, Any], what: str) -> dict[str, Any]:
    found = check_format(data.get("format", 1), what)
    if found == FORMAT:
        return data
    if found in (3, 4, 5):  # formats 4 to 6 added fields; their absence is what the harness kept
        return {**data, "format": FORMAT}
    if found == 1:
        data = {**data, "cell": cell_v1(data["cell"])}
    return {**data, **rejudged(data), "format": FORMAT}


def rejudged(data: dict[str, Any]) -> dict[str, str]:
    """The verdict, rule and reason of a record measured before format 3, from its samples."""
    verdict = Verdict(data["verdict"])
    if verdict not in MEASURED or data.get("wrk") is None:
        return {"judged_by": str(Rule.lifecycle), "judgement": data.get("note", "")}
    occupancy = Timeline.from_json(data["occupancy"]) if data.get("occupancy") else None
    workers = (data["cell"].get("server") or {}).get("workers")
    measured = Judgement(verdict, Rule.throughput, "judged by throughput when it was measured")
    found = by_evidence(measured, occupancy, workers)
    reason = found.reason
    if found.verdict is not verdict:
        reason += f" (re-judged from its stored samples: it was {verdict})"
    return {"verdict": str(found.verdict), "judged_by": str(found.rule), "judgement": reason}


def metadata(data: dict[str, Any], what: str) -> dict[str, Any]:
    found = check_format(data.get("format"), what)
    if found == FORMAT:
        return data
    if found in (2, 3, 4, 5):  # the records changed, not the metadata
        return {**data, "format": FORMAT}
    kind = data.get("kind", "run")
    if data.get("complete"):
        outcome = "complete"
    elif data.get("interrupted_by"):
        outcome = f"interrupted ({data['interrupted_by']})"
    else:
        outcome = "incomplete"
    session = {
        "command": kind,
        "started_at": data.get("started_at"),
        "finished_at": data.get("finished_at") or data.get("interrupted_at"),
        "outcome": outcome,
        **{k: data[k] for k in _SESSION_KEYS if k in data},
    }
    targets_only = kind == "run" and all(c.get("target") for c in data.get("cells", []))
    if targets_only:
        # Format 1 described the harness's own packages and database in target mode.
        session |= {"packages": None, "database": None}
    out: dict[str, Any] = {
        "format": FORMAT,
        "kind": kind,
        "complete": bool(data.get("complete")),
        "parameters": data.get("parameters", {}),
        # A failure map never waited for pool timeouts after a collapsed probe.
        "options": {"await_pool_timeouts": kind != "map", **data.get("options", {})},
    }
    if kind == "map":
        # A format-1 map kept its lines as cells; they follow from the plan.
        plan = {"variants": [f"{m}-{s}" for m, s in MAP_VARIANTS], "stack": "current"}
        out["plan"] = {**plan, **data["plan"]}
    else:
        out["cells"] = [cell_v1(c) for c in data["cells"]]
        out["schedule"] = {"repeats": 1, "seed": 0}
    return {**out, "provenance": [session]}
