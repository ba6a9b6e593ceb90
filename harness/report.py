"""Tables generated from a run's raw records only: summary.md and results.csv."""

from __future__ import annotations

import csv
import io
from collections.abc import Sequence
from itertools import groupby
from typing import Any

from app.settings import SessionStyle
from harness import verdict as rules
from harness.model import WORKLOAD_PATH, Cell, CellResult, Workload, shown, tokens_label
from harness.store import RunDir
from servers.registry import Mode, ServerName, Stack

VARIANT_FIELDS = ("mode", "style", "pool", "pool_timeout_s", "tokens", "workers", "stack")


def _fmt(value: float | None, digits: int = 1) -> str:
    return "-" if value is None else f"{value:,.{digits}f}"


def _label(cell: Cell, varying: Sequence[str]) -> str:
    parts = [str(cell.mode), shown(cell.style)]
    names = {
        "pool": "pool {}",
        "pool_timeout_s": "timeout {}s",
        "tokens": "{} tokens",
        "workers": "{} workers",
        "stack": "stack {}",
    }
    values = {f: shown(getattr(cell, f)) for f in varying} | {"tokens": tokens_label(cell)}
    parts += [names[f].format(values[f]) for f in varying if f in names]
    return " ".join(parts)


def _rank(choices: Sequence[object], value: object) -> int:
    return list(choices).index(value) if value in choices else len(choices)


def _variant_order(cell: Cell) -> tuple:
    """Sync before async, styles in their declared order, then pools, tokens, workers."""
    return (
        _rank(list(Mode), cell.mode),
        _rank(list(SessionStyle), cell.style),
        (cell.pool.size, cell.pool.overflow) if cell.pool else (0, 0),
        cell.pool_timeout_s or 0.0,
        cell.tokens or 0,
        cell.workers or 0,
    )


def _details_variant(c: Cell) -> str:
    return (
        f"{c.mode} {shown(c.style)} pool {shown(c.pool)} timeout {shown(c.pool_timeout_s)}s "
        f"{tokens_label(c)} tokens {shown(c.workers)} workers"
        + ("" if c.stack is Stack.current else f" stack {c.stack}")
    )


def _record_order(r: CellResult) -> tuple:
    c = r.cell
    return _rank(list(ServerName), c.server), c.target or "", c.variant, c.connections


def _varying(cells: Sequence[Cell]) -> list[str]:
    return [f for f in VARIANT_FIELDS if len({getattr(c, f) for c in cells}) > 1]


def seed_tables(records: Sequence[CellResult]) -> str:
    """One table per server and workload: rows are connections, columns each variant's figures."""
    out = []

    def key(r: CellResult) -> tuple[int, str, int]:
        c = r.cell
        return _rank(list(ServerName), c.server), c.target or "", _rank(list(Workload), c.workload)

    for _, group in groupby(sorted(records, key=key), key=key):
        rows = list(group)
        varying = _varying([r.cell for r in rows])
        labels: dict[str, str] = {}
        for r in sorted(rows, key=lambda r: _variant_order(r.cell)):
            labels.setdefault(r.cell.variant, _label(r.cell, varying))
        by = {(r.cell.variant, r.cell.connections): r for r in rows}
        cell0 = rows[0].cell
        out.append(
            f"## {cell0.server_label} · {cell0.workload} (`GET {WORKLOAD_PATH[cell0.workload]}`, "
            f"{shown(cell0.rows)} rows, {cell0.duration_s:g} s per cell)\n"
        )
        header = ["connections"]
        for label in labels.values():
            header += [f"{label} req/s", "p99 ms", "failed", "verdict"]
        out.append("| " + " | ".join(header) + " |")
        out.append("|" + "|".join(["---:"] + ["---:", "---:", "---:", "---"] * len(labels)) + "|")
        for conns in sorted({r.cell.connections for r in rows}):
            line = [str(conns)]
            for variant in labels:
                r = by.get((variant, conns))
                if r is None:
                    line += ["", "", "", "not run"]
                    continue
                w = r.wrk
                verdict = str(r.verdict)
                if r.pool_timeouts:
                    verdict += f" ({r.pool_timeouts} pool timeouts)"
                line += [
                    _fmt(w.ok_rps if w else None),
                    _fmt(w.p99_ms if w and w.requests else None),
                    str(w.failed) if w else "-",
                    f"**{verdict}**" if r.verdict != "ok" else verdict,
                ]
            out.append("| " + " | ".join(line) + " |")
        out.append("")
    return "\n".join(out)


def details_table(records: Sequence[CellResult]) -> str:
    head = [
        "server",
        "workload",
        "variant",
        "conns",
        "ok req/s",
        "all req/s",
        "p50 ms",
        "p90 ms",
        "p99 ms",
        "max ms",
        "connect/read/write/timeout/status errors",
        "pool timeouts",
        "server errors",
        "CPU s server/postgres/wrk",
        "inserts acked/added",
        "verdict",
        "note",
    ]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r in sorted(records, key=_record_order):
        w, c, cpu, i = r.wrk, r.cell, r.cpu, r.integrity
        variant = _details_variant(c)
        errors = (
            (f"{w.connect_errors}/{w.read_errors}/{w.write_errors}/{w.timeouts}/{w.status_errors}")
            if w
            else "-"
        )
        cpus = (
            "/".join(_fmt(v, 2) for v in (cpu.server_s, cpu.postgres_s, cpu.wrk_s)) if cpu else "-"
        )
        lines.append(
            "| "
            + " | ".join(
                [
                    c.server_label,
                    str(c.workload),
                    variant,
                    str(c.connections),
                    _fmt(w.ok_rps if w else None),
                    _fmt(w.rps if w else None),
                    *(
                        _fmt(getattr(w, f) if w and w.requests else None)
                        for f in ("p50_ms", "p90_ms", "p99_ms", "max_ms")
                    ),
                    errors,
                    shown(r.pool_timeouts),
                    shown(r.server_errors),
                    cpus,
                    (f"{i.acknowledged}/{i.rows_added}" + ("" if i.ok else " MISMATCH"))
                    if i
                    else "-",
                    str(r.verdict),
                    r.note.replace("|", "/"),
                ]
            )
            + " |"
        )
    return "\n".join(lines) + "\n"


def header(meta: dict[str, Any], records: Sequence[CellResult], name: str) -> str:
    m, db, git = meta.get("machine", {}), meta.get("database", {}), meta.get("git", {})
    opts, packages = meta.get("options", {}), meta.get("packages", {})
    total = len(meta.get("cells", []))
    state = "complete" if meta.get("complete") else f"incomplete: {len(records)} of {total} cells"
    dirty = " (uncommitted changes)" if git.get("dirty") else ""
    pkgs = ", ".join(f"{k} {v}" for k, v in packages.items())
    for name, stack in meta.get("stacks", {}).items():
        versions = ", ".join(f"{k} {v}" for k, v in stack.get("packages", {}).items())
        pkgs += f". Stack {name} (Python {stack.get('python', '?')}): {versions}"
    return "\n".join(
        [
            f"# syncasync-bench run `{name}`",
            "",
            f"- Started {meta.get('started_at', '?')}, "
            f"finished {meta.get('finished_at', '-')} ({state}).",
            f"- Machine: {m.get('cpu_model', '?')}, {m.get('cpu_count', '?')} CPUs, "
            f"{m.get('kernel', '?')}, Python {m.get('python', '?')}.",
            f"- Code: git {git.get('sha', '?')[:12]}{dirty}.",
            f"- PostgreSQL: {db.get('server_version', '?')}, max_connections "
            f"{db.get('max_connections', '?')}, "
            f"{'throwaway cluster' if db.get('managed') else 'existing database'}.",
            f"- wrk: {meta.get('wrk_version', '?')} ({opts.get('wrk_runner', '?')}), threads = "
            f"min(connections, CPUs), warm-up {opts.get('warmup_s', '?')} s, request timeout "
            f"{opts.get('wrk_timeout_s', '?')} s.",
            f"- Packages: {pkgs}.",
            "",
            "Figures: **req/s** counts successful (2xx) responses per second; **p99** is wrk's "
            "99th-percentile latency; **failed** is requests with an HTTP error status or a socket "
            "error (connect, read, write, timeout). Verdicts: **collapsed** when successful "
            f"throughput is below {rules.COLLAPSE_FRACTION:.0%} of the same variant's best at "
            f"fewer connections, or below {rules.NEAR_ZERO_RPS:g} req/s; **errors** when some "
            "requests failed or the server logged errors but throughput held; **ok** otherwise. "
            "*Pool timeouts* are `QueuePool limit ... reached` errors counted in the server's log.",
            "",
        ]
    )


def summary(meta: dict[str, Any], records: Sequence[CellResult], name: str) -> str:
    return "\n".join(
        [
            header(meta, records, name),
            seed_tables(records),
            "## Every cell\n",
            details_table(records),
        ]
    )


WRK_FIELDS = (
    "requests", "ok_requests", "p50_ms", "p90_ms", "p99_ms", "p999_ms", "max_ms", "mean_ms",
    "connect_errors", "read_errors", "write_errors", "timeouts", "status_errors", "failed",
)  # fmt: skip
CSV_FIELDS = [
    "id",
    "server",
    "target",
    "stack",
    "mode",
    "style",
    "pool_size",
    "max_overflow",
    "pool_timeout_s",
    "tokens",
    "workers",
    "workload",
    "rows",
    "duration_s",
    "connections",
    "verdict",
    "ok_rps",
    "rps",
    *WRK_FIELDS,
    "pool_timeouts",
    "server_errors",
    "cpu_server_s",
    "cpu_postgres_s",
    "cpu_wrk_s",
    "inserts_acknowledged",
    "rows_added",
    "integrity_ok",
    "started_at",
    "note",
]


def csv_text(records: Sequence[CellResult]) -> str:
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=CSV_FIELDS, lineterminator="\n")
    writer.writeheader()
    for r in sorted(records, key=_record_order):
        c, w, cpu, i = r.cell, r.wrk, r.cpu, r.integrity
        row: dict[str, Any] = {
            "id": c.id,
            "server": c.server,
            "mode": c.mode,
            "style": c.style,
            "target": c.target,
            "stack": c.stack,
            "pool_size": c.pool.size if c.pool else None,
            "max_overflow": c.pool.overflow if c.pool else None,
            "pool_timeout_s": c.pool_timeout_s,
            "tokens": c.tokens,
            "workers": c.workers,
            "workload": c.workload,
            "rows": c.rows,
            "duration_s": c.duration_s,
            "connections": c.connections,
            "verdict": r.verdict,
            "pool_timeouts": r.pool_timeouts,
            "server_errors": r.server_errors,
            "started_at": r.started_at,
            "note": r.note,
        }
        if w:
            row |= {k: getattr(w, k) for k in WRK_FIELDS}
            row |= {"ok_rps": round(w.ok_rps, 2), "rps": round(w.rps, 2)}
        if cpu:
            row |= {
                "cpu_server_s": cpu.server_s,
                "cpu_postgres_s": cpu.postgres_s,
                "cpu_wrk_s": cpu.wrk_s,
            }
        if i:
            row |= {
                "inserts_acknowledged": i.acknowledged,
                "rows_added": i.rows_added,
                "integrity_ok": i.ok,
            }
        writer.writerow(row)
    return buf.getvalue()


def write(run: RunDir) -> None:
    meta = run.metadata()
    if meta.get("kind") == "map":
        from harness import map_report  # it builds on this module

        map_report.write(run)
        return
    records = run.records()
    (run.path / "summary.md").write_text(summary(meta, records, run.path.name))
    (run.path / "results.csv").write_text(csv_text(records))
