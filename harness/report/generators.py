"""The generators' comparison as a page: how exactly each held each rate, its CPU, the stall."""

from __future__ import annotations

import statistics
from collections.abc import Sequence
from typing import Any

from harness.report.table import md_table


def _median(values: Sequence[float | None]) -> float | None:
    found = [v for v in values if v is not None]
    return statistics.median(found) if found else None


def _fmt(value: float | None, spec: str) -> str:
    return "-" if value is None else format(value, spec)


def table(data: dict[str, Any]) -> str:
    """Each generator's row: how it keeps the rate, each rate's figures, the stall."""
    records = data["records"]
    params = data["parameters"]
    names = list(data["versions"])
    rates = params["rates"]
    head = ["generator", "keeps the rate by", "latency from due"]
    for rate in rates:
        head += [f"{rate:g}/s held", f"{rate:g}/s CV per {params['bin_s']:g} s", f"{rate:g}/s CPU"]
    stall = params["stall"]
    head += [f"stall: sent of {round(stall['rate'] * stall['duration_s'])} due"]
    rows = []
    for name in names:
        row = [name, data["how"][name], "yes" if data["from_due"][name] else "no"]
        for rate in rates:
            mine = [r for r in records if r["generator"] == name and r["rate"] == rate]
            mine = [r for r in mine if not r.get("stalling")]
            row += [
                _fmt(_median([r["held"] for r in mine]), ".1%"),
                _fmt(_median([r["cv_per_bin"] for r in mine]), ".2f"),
                _fmt(_median([r["cpu_s_per_1000"] for r in mine]), ".3f"),
            ]
        stalled = [r for r in records if r["generator"] == name and r.get("stalling")]
        row.append(
            ", ".join(f"{r['arrived']} ({r['held']:.0%})" for r in stalled) if stalled else "-"
        )
        rows.append(row)
    return md_table(head, rows, ["---"] * 3 + ["---:"] * (len(head) - 3))


EXPLAINED = (
    "Each generator was asked for each rate of `GET /` on an app that answers at once "
    "(loadgen/targets.py `minimal`, one uvicorn process on the same 2 CPUs). **held**: the "
    "requests that reached the server over those due (rate × duration); **CV**: how unevenly "
    "they arrived, per {bin:g} s bin (0: perfectly even); **CPU**: the generator's own CPU "
    "seconds (start-up included) per 1,000 requests that arrived. Medians over the rounds. "
    "**stall**: one run at {rate:g}/s for {duration:g} s against `stalling`, which blocks for "
    "{stall:g} s every {every:g} s: an open loop sends what falls due meanwhile, a closed one "
    "waits."
)


def explained(data: dict[str, Any]) -> str:
    params, stall = data["parameters"], data["parameters"]["stall"]
    return EXPLAINED.format(
        bin=params["bin_s"],
        rate=stall["rate"],
        duration=stall["duration_s"],
        stall=stall["stall_s"],
        every=stall["every_s"],
    )


def page(data: dict[str, Any], command: str) -> str:
    params = data["parameters"]
    m, git = data["machine"], data["git"]
    versions = "\n".join(f"- {name}: {v}" for name, v in data["versions"].items())
    return "\n".join(
        [
            "# Which generator drives the open loop",
            "",
            f"- Machine: {m.get('cpu_model', '?')}, {m.get('cpu_count', '?')} CPUs, "
            f"{m.get('kernel', '?')}; git {git.get('sha', '?')[:12]}"
            + (" (uncommitted changes)" if git.get("dirty") else "")
            + ".",
            f"- Regenerate: `{command}` ({params['rounds']} rounds of every generator at every "
            f"rate, {params['duration_s']:g} s each, in a shuffled order; seed {params['seed']}).",
            "",
            explained(data),
            "",
            table(data),
            "",
            "Versions:",
            "",
            versions,
            "",
        ]
    )
