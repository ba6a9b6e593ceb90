"""A bench run's tables, generated from its raw records only: summary.md and results.csv."""

from __future__ import annotations

import csv
import io
import re
from collections.abc import Sequence
from itertools import groupby
from typing import Any
from urllib.parse import urlsplit

from harness.domain import rules
from harness.domain.axes import (
    DIRECT,
    WORKLOAD_PATH,
    Driver,
    Latency,
    Layer,
    Mode,
    Onset,
    ServerName,
    SessionStyle,
    Stack,
    Verdict,
    Workload,
)
from harness.domain.cell import SEED_ROWS, Cell, shown
from harness.domain.latency import Kind
from harness.domain.parse import is_loopback
from harness.domain.result import CellResult, PgbenchResult, generator_cost
from harness.domain.slo import MIN_WINDOW_S, parse_slo
from harness.infra.histogram import measured_ms, slo_check
from harness.report import ceilings, comparisons, conclusions, evidence, layers, waits
from harness.report.stats import (
    THIN_TEXT,
    WRK_FIELD,
    CellStats,
    Warning_,
    by_cell,
    not_measured,
)
from harness.report.table import md_table

VARIANT_FIELDS = (
    "mode", "driver", "layer", "style", "pool", "pool_timeout_s", "tokens", "workers", "stack",
    "occupancy",
)  # fmt: skip


def _fmt(value: float | None, digits: int = 1) -> str:
    return "-" if value is None else f"{value:,.{digits}f}"


def _label(cell: Cell, varying: Sequence[str]) -> str:
    """The variant as a column title: its mode and driver always (each mode has its own default
    driver; a target's is unknown), its layer where layers vary, its style, then whatever else
    varies in the run."""
    parts = [str(cell.mode), *([str(cell.driver)] if cell.driver else [])]
    parts += [shown(cell.known("layer"))] if "layer" in varying else []
    # What is not known of a foreign service (its style, its pool) is left out, not "unknown".
    parts += [str(cell.known("style"))] if cell.known("style") is not None else []
    names = {
        "pool": "pool {}",
        "pool_timeout_s": "timeout {}s",
        "tokens": "{} tokens",
        "workers": "{} workers",
        "stack": "stack {}",
        "occupancy": "({})",
    }
    values = {f: shown(cell.known(f)) for f in varying} | {"tokens": cell.tokens_label}
    if "occupancy" in varying:
        values["occupancy"] = comparisons.VALUE_LABELS["occupancy"][cell.known("occupancy")]
    parts += [
        names[f].format(values[f]) for f in varying if f in names and cell.known(f) is not None
    ]
    return " ".join(parts)


def _rank(choices: Sequence[object], value: object) -> int:
    return list(choices).index(value) if value in choices else len(choices)


def _variant_order(cell: Cell) -> tuple[Any, ...]:
    """Sync before async, styles in their declared order, then pools, tokens, workers."""
    c = cell.config
    return (
        _rank(list(Mode), cell.mode),
        _rank(list(Driver), cell.driver),
        _rank(list(Layer), c.layer if c else None),
        _rank(list(SessionStyle), c.style if c else None),
        (c.pool.size, c.pool.overflow) if c else (0, 0),
        c.pool_timeout_s if c else 0.0,
        c.tokens if c else 0,
        c.workers if c else 0,
        not c.occupancy if c else False,
    )


def latency_text(latency: Latency | None) -> str:
    """The relay's delay as a title says it, '' where there is none."""
    if latency is None:
        return ""
    if latency.ms == 0:
        return "through the relay without delay, "
    return f"{latency.ms:g} ms each way to PostgreSQL, "


def _details_variant(c: Cell) -> str:
    if c.requests:  # a foreign service: only what is known of it (the table says its requests)
        app = c.user_app
        return f"{c.mode}" + (f" {app.tokens} tokens {app.workers} workers" if app else "")
    k = c.known
    rows = "" if k("rows") in (None, SEED_ROWS) else f" {k('rows')} rows"
    return (
        f"{c.mode} {shown(c.driver)} {shown(k('layer'))} {shown(k('style'))} "
        f"pool {shown(k('pool'))} timeout {shown(k('pool_timeout_s'))}s {c.tokens_label} tokens "
        f"{shown(k('workers'))} workers"
        + ("" if c.stack is Stack.current else f" stack {c.stack}")
        + rows
        + ("" if c.db_latency is None else f" latency {c.db_latency}")
        + ("" if c.rate is None else f" open loop, at most {c.connections} connections")
    )


def _remote(records: Sequence[CellResult]) -> list[str]:
    """A line for targets off this machine (ALLOW_REMOTE=1): their figures hold the network."""
    hosts = sorted({h for r in records if r.cell.target and not is_loopback(h := _host(r))})
    if not hosts:
        return []
    return [
        f"- Remote target ({', '.join(hosts)}): every latency includes the network between this "
        "machine and it, and its load crossed that network."
    ]


def _apps(records: Sequence[CellResult]) -> list[str]:
    """A line naming the user's apps (APP) the run started, and what they were given."""
    apps = {r.cell.user_app.app: (r.cell.mode, r.cell.user_app) for r in records if r.cell.user_app}
    if not apps:
        return []
    (_, first), *_ = apps.values()
    names = ", ".join(f"`{spec}` ({mode})" for spec, (mode, _) in apps.items())
    env = ", ".join(name for name, _ in first.env) or "none"
    return [
        f"- Your app{'s' if len(apps) > 1 else ''}: {names}, imported from {first.directory}, "
        f"sent {first.requests.label}; APP_ENV gave {env}."
    ]


def _host(r: CellResult) -> str:
    return urlsplit(r.cell.target or "").hostname or ""


def _record_order(r: CellResult) -> tuple[Any, ...]:
    c = r.cell
    return (
        _rank(list(ServerName), c.known("name")),
        c.target or "",
        c.variant,
        c.level_key,
        r.repeat,
    )


def _varying(cells: Sequence[Cell]) -> list[str]:
    return [f for f in VARIANT_FIELDS if len({c.known(f) for c in cells}) > 1]


def _group_key(r: CellResult) -> tuple[Any, ...]:
    c = r.cell
    return (
        _rank(list(ServerName), c.known("name")),
        c.target or (c.user_app.app if c.user_app else ""),
        _rank(list(Workload), c.workload),
        c.known("rows") or 0,
        c.db_latency or DIRECT,
        c.rate is not None,
    )


def table_groups(records: Sequence[CellResult]) -> list[list[CellResult]]:
    """The records of each seed-shaped table: one server (or target), workload, data set,
    database latency and load (wrk's closed loop, or the open loop)."""
    return [list(g) for _, g in groupby(sorted(records, key=_group_key), key=_group_key)]


def variant_labels(rows: Sequence[CellResult]) -> dict[str, str]:
    """Each variant of a table and its column label, in the tables' order."""
    varying = _varying([r.cell for r in rows])
    labels: dict[str, str] = {}
    for r in sorted(rows, key=lambda r: _variant_order(r.cell)):
        labels.setdefault(r.cell.variant, _label(r.cell, varying))
    return labels


def group_slug(cell: Cell) -> str:
    """A table's name in its charts' file names."""
    parts = [cell.server_label, str(cell.workload), f"r{shown(cell.known('rows'))}"]
    if cell.requests:  # a foreign service: what it was sent, not rows it has
        parts = [cell.server_label, f"q{cell.requests.digest}"]
    if cell.db_latency:
        parts.append(f"db{cell.db_latency}")
    if cell.rate is not None:
        parts.append("open")
    return re.sub(r"[^A-Za-z0-9.+-]+", "_", "-".join(parts)).strip("_")


def charted(rows: Sequence[CellResult]) -> bool:
    """Whether a table's latency charts can be drawn: some record kept its histograms."""
    return any(r.wrk and r.wrk.histograms for r in rows)


def seed_tables(records: Sequence[CellResult], level: int = 2, charts: str = "charts") -> str:
    """One table per server and workload: rows are connections, columns each variant's figures,
    followed by links to its latency charts where its records kept histograms.

    `level`: the markdown heading level of each table's title; `charts`: the charts' folder as
    the page that shows the tables links it.
    """
    out = []
    for rows in table_groups(records):
        by = {(c.cell.variant, c.cell.level): c for c in by_cell(rows)}
        cell0 = rows[0].cell
        is_open = cell0.rate is not None
        out.append(_table_title(cell0, level))
        out.append(_seed_table(rows, by, is_open))
        if any("†" in _p99_text(c) for c in by.values()):
            out.append(THIN_TEXT + "\n")
        if is_open:
            out.append(SCHEDULE_TEXT + "\n")
        if charted(rows):
            slug = group_slug(cell0)
            out.append(
                "![latency by percentile at each connection level]"
                f"({charts}/percentiles-{slug}.png)"
                f"\n\n![p99 against throughput]({charts}/p99-{slug}.png)\n"
            )
    return "\n".join(out)


def _table_title(cell0: Cell, level: int) -> str:
    load = f", open loop, at most {cell0.connections} connections" if cell0.rate is not None else ""
    if cell0.requests:  # a foreign service: what it was sent, nothing of its data
        return (
            f"{'#' * level} {cell0.server_label} · `{cell0.requests.label}` "
            f"({cell0.duration_s:g} s per cell{load})\n"
        )
    return (
        f"{'#' * level} {cell0.server_label} · {cell0.workload} "
        f"(`GET {WORKLOAD_PATH[cell0.workload]}`, {shown(cell0.known('rows'))} rows, "
        f"{latency_text(cell0.db_latency)}{cell0.duration_s:g} s per cell{load})\n"
    )


def _seed_table(
    rows: Sequence[CellResult], by: dict[tuple[str, float], CellStats], is_open: bool
) -> str:
    """The table: a line per level, each variant's figures side by side."""
    labels = variant_labels(rows)
    repeated = any(c.n > 1 for c in by.values())
    columns = (
        ["req/s (median)", "interval of the median (coverage)", "CV", P99_HEAD, "failed", "verdict"]
        if repeated
        else ["req/s", P99_HEAD, "failed", "verdict"]
    )
    if is_open:
        columns = [*columns[:-1], SCHEDULE_HEAD, columns[-1]]
        columns = [c.replace(P99_HEAD, P99_OPEN_HEAD) for c in columns]
    head = ["req/s due" if is_open else "connections"]
    for label in labels.values():
        head += [f"{label} {columns[0]}", *columns[1:]]
    lines = []
    for value in sorted({r.cell.level for r in rows}):
        line = [f"{value:g}"]
        for variant in labels:
            c = by.get((variant, value))
            own = len(columns) - is_open  # _figures gives all but the schedule's
            figures = _figures(c, repeated) if c else [*[""] * (own - 1), "not run"]
            if is_open:
                figures.insert(-1, _schedule_text(c) if c else "")
            line += figures
        lines.append(line)
    align = ["---:"] * (len(columns) - 1) + ["---"]
    return md_table(head, lines, ["---:"] + align * len(labels))


P99_HEAD = "p99 ms measured / corrected (responses above)"
P99_OPEN_HEAD = "p99 ms from sent / from due (responses above)"
SCHEDULE_HEAD = "sent late / dropped"
SCHEDULE_TEXT = (
    "In open-loop tables, requests were due at the row's rate whatever the server did "
    "(loadgen/openloop.py): the p99 counts *from sent* (the request went out) and *from due* "
    "(the moment it was due, which is what a user waiting would see); *sent late / dropped* are "
    "the requests that went out more than the tolerance after their moment (no free connection "
    "under the limit) and those never sent (they waited the request timeout for a connection), "
    "out of all that were due."
)


def _schedule_text(c: CellStats) -> str:
    kept = [r.wrk.schedule for r in c.records if r.wrk and r.wrk.schedule]
    if not kept:
        return "-"
    late, dropped = sum(s.late for s in kept), sum(s.dropped for s in kept)
    return f"{late:,} / {dropped:,} of {sum(s.due for s in kept):,}"


LATENCY_TEXT = (
    "of the cell's measurements merged: *measured* counts each response once; *corrected* is "
    "wrk's, which adds synthetic samples for the requests a stalled connection did not send, "
    "assuming a steady rate (coordinated omission); the table of every cell gives the measured "
    "p50, p90 and p99 of each measurement and wrk's corrected p99;"
)


def _p99_text(c: CellStats) -> str:
    """The cell's p99 from its merged histograms, measured then wrk-corrected; for records
    that kept no histograms, wrk's corrected p99 alone (the median of its runs')."""
    measured, corrected = c.percentile(99), c.percentile(99, Kind.corrected)
    if measured is None or corrected is None:
        return "-"
    if measured.above is None:
        return f"- / {corrected.text()}"
    return f"{measured.text()} / {corrected.text()} ({measured.above:,})"


def _figures(c: CellStats, repeated: bool) -> list[str]:
    """A cell's columns in the seed-shaped table: its one measurement, or its median and spread."""
    verdict = c.verdict
    if c.pool_timeouts:
        verdict += f" ({c.pool_timeouts} pool timeouts)"
    if c.flags and repeated:
        verdict += " ⚠"
    figures = [
        _fmt(c.median_rps),
        _p99_text(c),
        str(c.failed) if c.served else "-",
        f"**{verdict}**" if c.worst is not Verdict.ok or "⚠" in verdict else verdict,
    ]
    if not repeated:
        return figures
    cv = c.cv
    spread = [_median_interval_text(c), f"{cv:.0%}" if cv is not None else "-"]
    return [figures[0], *spread, *figures[1:]]


def _median_interval_text(c: CellStats) -> str:
    """The interval of the median with the coverage it has at least; none below 3 rounds, nor
    where every value is the same (a collapse's zeros)."""
    ci = c.interval
    if ci is None:
        return f"n={c.n}"
    if ci.low == ci.high:
        return "-"
    return f"{ci.low:,.1f}–{ci.high:,.1f} (≥{ci.coverage:.0%})"


def warnings_section(records: Sequence[CellResult]) -> str:
    """Cells whose measurements spread too much to be read alone, with what to do."""
    flagged = [
        (c, f)
        for c in sorted(by_cell(records), key=lambda c: _record_order(c.records[0]))
        for f in c.flags
        if f.kind is not Warning_.single
    ]
    if not flagged:
        return ""
    lines = [f"- {c.cell.variant}, {c.cell.level_text}: {f}" for c, f in flagged]
    return "## Warnings\n\n" + "\n".join(lines) + "\n"


COMPARISONS_TEXT = (
    "Each row compares two variants that differ in one setting, B over A, at each connection "
    "level: the geometric mean of the ratios of successful req/s measured in the same round "
    "(the rounds interleave the variants), with its 95% confidence interval (t interval on the "
    "logarithms). **~ ... no significant difference** where the interval contains 1. Measurements "
    "that collapsed are left out of the ratio and named."
)


DETAILS_HEAD = (
    "server",
    "workload",
    "variant",
    "conns",
    "ok req/s",
    "all req/s",
    "p50 ms",
    "p90 ms",
    "p99 ms",
    "p99 ms corrected",
    "max ms",
    "connect/read/write/timeout/status errors",
    "pool timeouts",
    "server errors",
    "CPU s server/postgres/wrk",
    "inserts acked/added",
    "verdict",
    "note",
)


def details_table(records: Sequence[CellResult]) -> str:
    """One row per measurement; a `round` column once a cell was measured more than once."""
    repeated = any(r.repeat > 1 for r in records)
    relayed = any(r.cpu and r.cpu.relay_s is not None for r in records)
    rows = []
    for r in sorted(records, key=_record_order):
        w, c, cpu, i = r.wrk, r.cell, r.cpu, r.integrity
        errors = (
            f"{w.connect_errors}/{w.read_errors}/{w.write_errors}/{w.timeouts}/{w.status_errors}"
            if w
            else "-"
        )
        parties = (cpu.server_s, cpu.postgres_s, cpu.wrk_s, cpu.relay_s) if cpu else ()
        cpus = "/".join(_fmt(v, 2) for v in parties[: 4 if relayed else 3]) if cpu else "-"
        rows.append(
            [
                c.server_label,
                c.workload_label,
                _details_variant(c),
                c.level_short,
                _fmt(w.ok_rps if w else None),
                _fmt(w.rps if w else None),
                *(_fmt(measured_ms(w, p)) for p in (50, 90, 99)),
                _fmt(w.p99_ms if w and w.requests else None),
                _fmt(w.max_ms if w and w.requests else None),
                errors,
                shown(r.pool_timeouts),
                shown(r.server_errors),
                cpus,
                (f"{i.acknowledged}/{i.rows_added}" + ("" if i.ok else " MISMATCH")) if i else "-",
                str(r.verdict),
                r.note,
            ]
        )
        if repeated:
            rows[-1].insert(4, str(r.repeat))
    head = [*DETAILS_HEAD[:4], "round", *DETAILS_HEAD[4:]] if repeated else list(DETAILS_HEAD)
    if relayed:
        head = [h + "/relay" if h.startswith("CPU s") else h for h in head]
    return md_table(head, rows, ["---"] * len(head))


def _sessions(entries: Sequence[dict[str, Any]]) -> list[str]:
    """One line per invocation that measured into the run, when there was more than one."""
    if len(entries) < 2:
        return []
    parts = []
    for n, e in enumerate(entries, 1):
        git = e.get("git") or {}
        dirty = " (uncommitted changes)" if git.get("dirty") else ""
        parts.append(
            f"{n}. `{e.get('command', '?')}` {e.get('started_at', '?')} to "
            f"{e.get('finished_at') or '-'}, {e.get('outcome', '?')}, "
            f"{e.get('measured', '?')} measured, git {str(git.get('sha', '?'))[:12]}{dirty}"
        )
    return ["- Sessions (each invocation that measured into this run): " + "; ".join(parts) + "."]


REWRITES = ("migrate", "compact")


def header(
    meta: dict[str, Any], records: Sequence[CellResult], name: str, title: str = "run"
) -> str:
    everything = meta.get("provenance") or [{}]
    # `migrate` and `compact` rewrote files, they measured nothing: they are said apart.
    entries = [e for e in everything if e.get("command") not in REWRITES] or everything
    rewrites = [e for e in everything if e.get("command") in REWRITES]
    first, last = entries[0], entries[-1]
    m, git = first.get("machine", {}), first.get("git", {})
    # A session stopped before the database was up has no `database`; a target's is None.
    db: dict[str, Any] | None = next(
        (e["database"] for e in reversed(entries) if "database" in e), {}
    )
    wrk = next((e["wrk_version"] for e in reversed(entries) if "wrk_version" in e), "?")
    # make capacity runs no wrk: its sessions record none
    open_only = wrk == "?" and any("open_loop" in e for e in entries)
    packages = first.get("packages", {})
    opts = meta.get("options", {})
    if meta.get("complete"):
        state = "complete"
    elif meta.get("kind") == "map":
        state = f"incomplete: {len(records)} probes so far"
    else:
        planned = len(meta.get("cells", [])) * meta.get("schedule", {}).get("repeats", 1)
        # make decide's capacity probes are not among its planned measurements
        searched = [r for r in records if r.cell.rate is not None] if "capacity" in meta else []
        state = f"incomplete: {len(records) - len(searched)} of {planned} measurements"
        if searched:
            state += f", {len(searched)} capacity probes"
    shas = {(e.get("git") or {}).get("sha") for e in entries}
    dirty = " (uncommitted changes)" if git.get("dirty") else ""
    code = f"git {git.get('sha', '?')[:12]}{dirty}" + (
        "; later sessions ran other commits (see Sessions)" if len(shas) > 1 else ""
    )
    apps = first.get("app_environments")
    if apps:
        pkgs = "; ".join(
            f"your app's environment {python} (Python {env.get('python', '?')}): "
            + ", ".join(f"{k} {v}" for k, v in env.get("packages", {}).items() if v)
            for python, env in apps.items()
        )
    elif packages is None:
        pkgs = "unknown (target mode: the harness did not start the server)"
    else:
        pkgs = ", ".join(f"{k} {v}" for k, v in packages.items())
    for stack_name, stack in (first.get("stacks") or {}).items():
        versions = ", ".join(f"{k} {v}" for k, v in stack.get("packages", {}).items())
        pkgs += f". Stack {stack_name} (Python {stack.get('python', '?')}): {versions}"
    if db is None and apps:
        database = "your app's own (the harness started none)"
    elif db is None:
        database = "unknown (target mode: the harness did not start the server or its database)"
    else:
        database = (
            f"{db.get('server_version', '?')}, max_connections {db.get('max_connections', '?')}, "
            f"{'throwaway cluster' if db.get('managed') else 'existing database'}"
        )
    return "\n".join(
        [
            f"# syncasync-bench {title} `{name}`",
            "",
            f"- Started {first.get('started_at', '?')}, "
            f"finished {last.get('finished_at') or '-'} ({state}).",
            f"- Machine: {m.get('cpu_model', '?')}, {m.get('cpu_count', '?')} CPUs, "
            f"{m.get('kernel', '?')}, Python {m.get('python', '?')}.",
            f"- Code: {code}.",
            *_sessions(entries),
            *(
                [
                    "- Rewritten (nothing measured): "
                    + "; ".join(
                        f"`{e.get('command')}` {e.get('started_at', '?')}, git "
                        f"{str((e.get('git') or {}).get('sha', '?'))[:12]}"
                        for e in rewrites
                    )
                    + "."
                ]
                if rewrites
                else []
            ),
            f"- PostgreSQL: {database}.",
            *_remote(records),
            *_apps(records),
            *(
                [
                    f"- wrk: {wrk} ({opts.get('wrk_runner', '?')}), threads = "
                    f"min(connections, CPUs), warm-up {opts.get('warmup_s', '?')} s, request "
                    f"timeout {opts.get('wrk_timeout_s', '?')} s."
                ]
                if not open_only
                else [
                    f"- Load: the open loop alone, warm-up {opts.get('warmup_s', '?')} s, "
                    f"request timeout {opts.get('wrk_timeout_s', '?')} s."
                ]
            ),
            *_open_loop(entries, records),
            f"- Packages: {pkgs}.",
            "",
            "Figures: **req/s** counts successful (2xx) responses per second; **p99** is the "
            f"99th-percentile latency {LATENCY_TEXT} **failed** is requests with an HTTP error "
            "status or a socket error (connect, read, write, timeout). Verdicts: a process "
            f"*stalled* when it completed no successful response for {rules.STALL_S:g} s or more "
            "with requests in flight (from the side channel's samples of every process); "
            "**collapsed** when every process stalled, or successful throughput is below "
            f"{rules.COLLAPSE_FRACTION:.0%} of "
            f"the same variant's best at fewer connections, or below {rules.NEAR_ZERO_RPS:g} "
            "req/s; **partly-collapsed** when some processes stalled, not all; **unknown** when a "
            f"process went unsampled for over {rules.UNSAMPLED_S:g} s; **errors** when some "
            "requests failed or the server logged errors but throughput held; **ok** otherwise. "
            "*Pool timeouts* are `QueuePool limit ... reached` errors counted in the server's log.",
            "",
        ]
    )


def _open_loop(entries: Sequence[dict[str, Any]], records: Sequence[CellResult]) -> list[str]:
    """The open loop's line in a summary's header: what generated it, and its CPU."""
    found = next((e["open_loop"] for e in reversed(entries) if "open_loop" in e), None)
    if found is None:
        return []
    own = ("program", "records", "cpu_s_per_1000", "sha256")
    versions = ", ".join(f"{k} {v}" for k, v in found.items() if k not in own)
    versions = f"sha256 {found.get('sha256', '?')[:12]}, {versions}"
    cost = generator_cost(records)
    used = (
        f"; it used {cost[0]:g} CPU-s per 1,000 requests due, start-up included (median of "
        f"{cost[1]} measurements)"
        if cost
        else ""
    )
    program = found.get("program", "?")
    return [f"- Open loop: {program} ({versions}){used}."]


def slo_section(meta: dict[str, Any], records: Sequence[CellResult]) -> str:
    """Each cell against the run's objective (SLO), where its windows were warm and long
    enough for a latency verdict; a sentence saying why not, where none was."""
    given = (meta.get("parameters") or {}).get("slo")
    if not given or meta.get("kind") == "capacity":  # runs from before SLO; capacity.md has it
        return ""
    slo = parse_slo(given)
    warm = float((meta.get("options") or {}).get("warmup_s") or 0) > 0
    cells = by_cell(records)
    judged = [
        c
        for c in cells
        if warm and c.cell.onset is Onset.fresh and c.cell.duration_s >= MIN_WINDOW_S
    ]
    title = f"## Latency objective ({slo.text()})\n"
    if not judged:
        windows = ", ".join(f"{d:g} s" for d in sorted({c.cell.duration_s for c in cells}))
        why = f"windows of {windows}" + ("" if warm else ", without a warm-up")
        return (
            f"{title}\nNot judged: {why}. A latency verdict needs a warm window of at least "
            f"{MIN_WINDOW_S:g} s (DURATION=10s, WARMUP above 0); a shorter one says more about "
            "start-up than about the load.\n"
        )
    rows = []
    for c in sorted(judged, key=lambda c: (c.cell.variant, c.cell.level_key)):
        check = slo_check(c.records, slo)
        rows.append(
            [c.cell.variant, c.cell.level_text, check.text() if check else "no measurement"]
        )
    explained = (
        f"A cell meets the objective when at most {slo.allowed:.1%} of its requests (its rounds "
        "together) were slower than the limit, from the moment they were due in an open loop "
        "and as measured under wrk, failed, timed out or were dropped, and none of its rounds "
        "collapsed."
    )
    table = md_table(["variant", "load", "objective"], rows, ["---", "---:", "---"])
    return "\n".join([title, explained, "", table])


def summary(
    meta: dict[str, Any],
    records: Sequence[CellResult],
    name: str,
    pg: Sequence[PgbenchResult] = (),
) -> str:
    parts = [header(meta, records, name), conclusions.conclusions(records), seed_tables(records)]
    if skipped := not_measured(records):
        parts.append(
            "Not measured at all (a target that froze stays frozen; the harness does not restart "
            "it): "
            + "; ".join(f"{r.cell.variant} at {r.cell.level_text} ({r.judgement})" for r in skipped)
            + ".\n"
        )
    if text := slo_section(meta, records):
        parts.append(text)
    if any(r.repeat > 1 for r in records):
        parts += ["## Comparisons\n", COMPARISONS_TEXT + "\n", comparisons.table(records)]
        if text := warnings_section(records):
            parts.append(text)
    if text := waits.section(records):
        parts.append(text)
    if table := evidence.freeze_table(records):
        parts += ["## Why cells collapsed\n", evidence.FREEZE_TEXT + "\n", table]
    if text := layers.section(records, pg):
        parts.append(text)
    if pg:
        servers = sorted(
            {str(r.cell.known("name")) for r in records if r.cell.workload is Workload.health},
            key=lambda s: _rank(list(ServerName), s),
        )
        levels = sorted({r.cell.connections for r in records if r.cell.rate is None})
        parts += [
            "## Ceilings\n",
            ceilings.TEXT + "\n",
            ceilings.table(servers, levels, records, pg),
        ]
    return "\n".join([*parts, "## Every cell\n", details_table(records)])


WRK_FIELDS = (
    "requests", "ok_requests", "p50_ms", "p90_ms", "p99_ms", "p999_ms", "max_ms", "mean_ms",
    "connect_errors", "read_errors", "write_errors", "timeouts", "status_errors", "failed",
)  # fmt: skip
CSV_FIELDS = [
    "id",
    "server",
    "target",
    "app",
    "sent",
    "stack",
    "mode",
    "driver",
    "layer",
    "style",
    "pool_size",
    "max_overflow",
    "pool_timeout_s",
    "tokens",
    "workers",
    "workload",
    "rows",
    "db_latency",
    "duration_s",
    "connections",
    "repeat",
    "verdict",
    "ok_rps",
    "rps",
    *WRK_FIELDS,
    *(f"measured_{k}" for k in WRK_FIELD.values()),
    "pool_timeouts",
    "server_errors",
    "answers_sampled",
    "answers_answered",
    "answers_mismatched",
    "cpu_server_s",
    "cpu_postgres_s",
    "cpu_wrk_s",
    "cpu_relay_s",
    "inserts_acknowledged",
    "rows_added",
    "integrity_ok",
    "started_at",
    "note",
    "rate",
    "due",
    "sent_late",
    "dropped",
]


def csv_text(records: Sequence[CellResult]) -> str:
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=CSV_FIELDS, lineterminator="\n")
    writer.writeheader()
    for r in sorted(records, key=_record_order):
        c, w, cpu, i = r.cell, r.wrk, r.cpu, r.integrity
        known = c.known
        pool = known("pool")
        row: dict[str, Any] = {
            "id": c.id,
            "server": known("name"),
            "mode": c.mode,
            "driver": c.driver,
            "layer": known("layer"),
            "style": known("style"),
            "target": c.target,
            "app": c.user_app.app if c.user_app else None,
            "sent": c.requests.label if c.requests else None,
            "stack": c.stack if c.config else None,  # a foreign service's is its own
            "pool_size": pool.size if pool else None,
            "max_overflow": pool.overflow if pool else None,
            "pool_timeout_s": known("pool_timeout_s"),
            "tokens": known("tokens"),
            "workers": known("workers"),
            "workload": c.workload,
            "rows": known("rows"),
            "db_latency": known("db_latency"),
            "duration_s": c.duration_s,
            "connections": c.connections,
            "rate": c.rate,
            "repeat": r.repeat,
            "verdict": r.verdict,
            "pool_timeouts": r.pool_timeouts,
            "answers_sampled": r.checks.sampled if r.checks else None,
            "answers_answered": r.checks.answered if r.checks else None,
            "answers_mismatched": r.checks.mismatched if r.checks else None,
            "server_errors": r.server_errors,
            "started_at": r.started_at,
            "note": r.note,
        }
        if w:
            row |= {k: getattr(w, k) for k in WRK_FIELDS}
            row |= {"ok_rps": round(w.ok_rps, 2), "rps": round(w.rps, 2)}
            row |= {f"measured_{k}": measured_ms(w, p) for p, k in WRK_FIELD.items()}
        if w and w.schedule:
            row |= {"due": w.schedule.due, "sent_late": w.schedule.late}
            row |= {"dropped": w.schedule.dropped}
        if cpu:
            row |= {
                "cpu_server_s": cpu.server_s,
                "cpu_postgres_s": cpu.postgres_s,
                "cpu_wrk_s": cpu.wrk_s,
                "cpu_relay_s": cpu.relay_s,
            }
        if i:
            row |= {
                "inserts_acknowledged": i.acknowledged,
                "rows_added": i.rows_added,
                "integrity_ok": i.ok,
            }
        writer.writerow(row)
    return buf.getvalue()
