"""summary.md, results.csv and charts/ of a failure map, generated from its raw records only."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from harness import charts, report
from harness.failure_map import (
    MapPlan,
    agreement,
    is_collapse,
    load_pgbench,
    predicted,
    threshold_of,
)
from harness.model import CellResult, Workload, shown, tokens_label
from harness.pgbench import PgbenchResult
from harness.store import RunDir

PREDICTION = (
    "**Prediction.** For sync `dependency`, a collapse becomes possible at about "
    "**workers × (T + C)** connections, where T is the AnyIO default thread limiter's tokens "
    "and C = `pool_size + max_overflow`. Each sync request takes a threadpool token to run the "
    "endpoint, whose first query checks a connection out of the pool (waiting up to "
    "`pool_timeout` if none is free), and, with the connection still checked out, a second "
    "token to validate the return value against the response model; the dependency's exit, "
    "which returns the connection, comes after. Once T requests hold tokens while waiting for "
    "a connection and the C requests holding connections wait for a token, nothing moves "
    "until `pool_timeout` fires. Below T + C requests in flight per process that cannot "
    "happen. Sources: FastAPI issue 3205, PRs 5122 and 12066. `context` (session closed "
    "inside the endpoint), `limited` (`Depends(max_concurrency=C)`) and async are predicted "
    "not to collapse."
)


def _probe_trail(line_variant: str, records: Sequence[CellResult]) -> str:
    probes = sorted(
        (r for r in records if r.cell.variant == line_variant), key=lambda r: r.started_at
    )
    return " ".join(f"{r.cell.connections}{'✗' if is_collapse(r) else ''}" for r in probes)


def map_table(plan: MapPlan, server: str, records: Sequence[CellResult]) -> str:
    head = [
        "variant",
        "pool",
        "C",
        "tokens T",
        "workers",
        "predicted",
        "measured",
        "probes (✗ collapsed)",
        "prediction vs measurement",
    ]
    rows = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for line in plan.lines():
        if str(line.server) != server:
            continue
        assert line.pool
        found = threshold_of(line, records, plan.ceiling)
        guess = predicted(line)
        rows.append(
            "| "
            + " | ".join(
                [
                    f"{line.mode} {line.style}",
                    str(line.pool),
                    str(line.pool.capacity),
                    tokens_label(line),
                    shown(line.workers),
                    f"~{guess}" if guess else "none",
                    found.describe(),
                    _probe_trail(line.variant, records),
                    agreement(guess, found),
                ]
            )
            + " |"
        )
    return "\n".join(rows) + "\n"


def ceilings_table(
    plan: MapPlan, records: Sequence[CellResult], pg: Sequence[PgbenchResult]
) -> str:
    servers = [str(s) for s in plan.servers]
    head = [
        "connections",
        *(f"{s} /health req/s" for s in servers),
        "pgbench tps (the /users query)",
        "pgbench latency ms",
    ]
    health = {
        (str(r.cell.server), r.cell.connections): r
        for r in records
        if r.cell.workload is Workload.health
    }
    by_pg = {p.connections: p for p in pg}
    rows = ["| " + " | ".join(head) + " |", "|" + "---:|" * len(head)]
    for c in plan.ceiling_levels:
        cells = []
        for s in servers:
            r = health.get((s, c))
            cells.append(f"{r.wrk.ok_rps:,.1f}" if r and r.wrk else "-")
        p = by_pg.get(c)
        cells += [f"{p.tps:,.0f}" if p else "-", f"{p.latency_avg_ms:.2f}" if p else "-"]
        rows.append("| " + " | ".join([str(c), *cells]) + " |")
    return "\n".join(rows) + "\n"


def summary(
    meta: dict[str, Any],
    records: Sequence[CellResult],
    name: str,
    plan: MapPlan,
    pg: Sequence[PgbenchResult],
) -> str:
    probes = [r for r in records if r.cell.workload is not Workload.health]
    parts = [
        report.header(meta, records, name).replace("run `", "failure map `", 1),
        PREDICTION,
        "",
        f"**Search.** Each line doubles the connections from {plan.start} until the variant "
        f"collapses or the ceiling ({plan.ceiling}) is reached, then bisects between the last "
        "count that held and the first that collapsed, to 10% of the count. Each probe is a "
        f"fresh server, a warm-up, and a {plan.duration_s:g} s wrk run on GET /users "
        f"({plan.rows} rows). A probe counts as collapsed when its verdict is neither `ok` nor "
        '`errors`. "fine at A, collapsed at B": both were probed; one search step is B - A. '
        "Lines: every variant at the baseline (the first pool, token count and worker count); "
        "sync `dependency` also at each other pool, token count and worker count.",
        "",
    ]
    for server in plan.servers:
        parts += [
            f"## {server}\n",
            map_table(plan, str(server), records),
            f"![where sync dependency collapses](charts/collapse-{server}.png)\n",
            f"![requests/s and p99 against connections](charts/throughput-{server}.png)\n",
        ]
    parts += [
        "## Ceilings\n",
        "What the machine allows without the sync/async question: the async app's `/health` "
        "(HTTP and the event loop, no database) on each server, and pgbench running the "
        "`/users` query straight against PostgreSQL (no HTTP, no Python), at the same "
        "connection counts.\n",
        ceilings_table(plan, records, pg),
        "## Every probe\n",
        report.details_table(probes),
    ]
    return "\n".join(parts)


def write(run: RunDir) -> None:
    meta, records = run.metadata(), run.records()
    plan = MapPlan.from_json(meta["plan"])
    pg = load_pgbench(run)
    (run.path / "summary.md").write_text(summary(meta, records, run.path.name, plan, pg))
    (run.path / "results.csv").write_text(report.csv_text(records))
    folder = run.path / "charts"
    folder.mkdir(exist_ok=True)
    lines = plan.lines()
    for server in plan.servers:
        mine = [line for line in lines if line.server == server]
        if not any(r.cell.server == server for r in records):
            continue
        charts.collapse_chart(folder / f"collapse-{server}.png", server, plan, mine, records)
        charts.throughput_chart(folder / f"throughput-{server}.png", server, mine, records, pg)
