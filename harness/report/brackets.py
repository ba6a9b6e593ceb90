"""Two failure maps side by side (`make compare A=<map> B=<map>`): each line's threshold, for
each onset, as each map bracketed it, and how often the brackets agree. Two independent maps of
the same lines on one machine say how far a threshold moves from one run to the next."""

from __future__ import annotations

from typing import Any

from harness.domain.axes import Onset
from harness.domain.errors import UsageError
from harness.domain.plan import MapLine, MapPlan
from harness.domain.search import Threshold
from harness.report.compare import Compared
from harness.report.map_summary import threshold_of
from harness.report.table import md_table
from harness.store.rundir import RunDir

HEAD = ("line", "onset", "A", "B", "agreement")


def _span(t: Threshold) -> tuple[float, float]:
    """Where the threshold lies: above the last level that always held, at or below the first
    that always collapsed (or, where none did, the first that sometimes did; no collapse at
    all: above the highest level probed)."""
    if t.upper is None:
        return float(max(t.counts, default=t.ceiling)), float("inf")
    return float(t.fine_at or 0), float(t.upper)


def agreement(a: Threshold, b: Threshold) -> str:
    """`same`: the same edges; `overlap`: the spans intersect; `apart`: they do not."""
    if (a.fine_at, a.collapsed_at) == (b.fine_at, b.collapsed_at):
        return "same"
    (la, ha), (lb, hb) = _span(a), _span(b)
    return "overlap" if max(la, lb) < min(ha, hb) else "apart"


def compare_maps(a: RunDir, b: RunDir) -> Compared:
    plan_a = MapPlan.from_json(a.metadata()["plan"])
    plan_b = MapPlan.from_json(b.metadata()["plan"])
    if plan_a.ceiling != plan_b.ceiling:
        raise UsageError(
            f"COMPARE: the maps' ceilings differ ({plan_a.ceiling}, {plan_b.ceiling}); "
            "compare maps searched up to the same count"
        )
    onsets = [o for o in plan_a.onsets if o in plan_b.onsets]
    lines_b = {x.variant: x for x in plan_b.lines()}
    shared: list[MapLine] = [x for x in plan_a.lines() if x.variant in lines_b]
    if not shared or not onsets:
        raise UsageError("COMPARE: the maps share no line and onset; nothing to compare")
    ra, rb = a.records(), b.records()
    rows, tally, found, regressions = [], {"same": 0, "overlap": 0, "apart": 0}, [], []
    for line in shared:
        for onset in onsets:
            ta = threshold_of(line, ra, plan_a.ceiling, onset)
            tb = threshold_of(line, rb, plan_b.ceiling, onset)
            said = agreement(ta, tb)
            tally[said] += 1
            label = f"{line.server} {line.label}, {plan_a.change(line)}"
            rows.append([label, str(onset), ta.describe(), tb.describe(), said])
            found.append(
                {
                    "line": line.variant,
                    "onset": str(onset),
                    "a": _threshold_json(ta),
                    "b": _threshold_json(tb),
                    "agreement": said,
                }
            )
            if said == "apart" and _span(tb)[1] <= _span(ta)[0]:
                regressions.append(f"{label} ({onset}): {tb.describe()} in B, below A's")
    n = sum(tally.values())
    by_onset = _by_onset(rows, onsets)
    data = {"kind": "map", "a": str(a.path), "b": str(b.path), "thresholds": found}
    text = "\n".join(
        [
            f"# Thresholds of two failure maps: A = {a.path}, B = {b.path}\n",
            f"- A: {_provenance(a)}",
            f"- B: {_provenance(b)}",
            "",
            f"Of {n} thresholds (line and onset) both maps measured: the same bracket in both "
            f"{tally['same']}, overlapping brackets {tally['overlap']}, brackets apart (the two "
            f"ranges where the threshold can be do not intersect) {tally['apart']}. {by_onset}",
            "",
            md_table(HEAD, rows, ["---"] * len(HEAD)),
        ]
    )
    return Compared(text, data, tuple(regressions))


def _threshold_json(t: Threshold) -> dict[str, Any]:
    """A bracket's edges: the last level that held and the first that collapsed (None: none up
    to the ceiling), as the page describes them."""
    return {
        "fine_at": t.fine_at,
        "collapsed_at": t.collapsed_at,
        "upper": t.upper,
        "described": t.describe(),
    }


def _by_onset(rows: list[list[str]], onsets: list[Onset]) -> str:
    parts = []
    for onset in onsets:
        mine = [r[-1] for r in rows if r[1] == str(onset)]
        same = sum(x == "same" for x in mine)
        apart = sum(x == "apart" for x in mine)
        parts.append(f"`{onset}`: {same} the same, {apart} apart, of {len(mine)}")
    return "By onset: " + "; ".join(parts) + "."


def _provenance(run: RunDir) -> str:
    first = run.metadata()["provenance"][0]
    m, git = first.get("machine", {}), first.get("git", {})
    dirty = " (uncommitted changes)" if git.get("dirty") else ""
    return (
        f"started {first.get('started_at', '?')} at git {git.get('sha', '?')[:12]}{dirty}, "
        f"{m.get('cpu_model', '?')}, {m.get('cpu_count', '?')} CPUs"
    )
