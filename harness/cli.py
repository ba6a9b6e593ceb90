"""Command line: `python -m harness run|report|serve`. All user input is validated here."""

from __future__ import annotations

import argparse
import itertools
import os
import sys
from collections.abc import Sequence
from dataclasses import replace
from datetime import datetime
from pathlib import Path

from app.settings import SessionStyle
from harness import stacks
from harness.errors import HarnessError, UsageError
from harness.model import Cell, Workload
from harness.parse import (
    parse_choices,
    parse_duration,
    parse_nonnegative_int,
    parse_pools,
    parse_positive_ints,
    parse_servers,
    parse_target,
)
from harness.runner import Interrupted, Options, execute, new_metadata, order, preflight
from harness.store import RunDir
from harness.wrk import DEFAULT_IMAGE, WrkRunner
from servers.registry import Mode, Stack

RESULTS = Path(__file__).resolve().parent.parent / "results" / "runs"
DEFAULT_CONNECTIONS = "1,12,24,48,100,200"


# Settings of a server the harness starts; in target mode they cannot be set, only unknown.
SERVER_DEFAULTS = {
    "server": "uvicorn",
    "styles": "dependency,context",
    "pools": "5+10",
    "pool_timeout": "30s",
    "tokens": "40",
    "workers": "1",
    "rows": "10",
    "database_url": "",
}


def build_cells(args: argparse.Namespace) -> list[Cell]:
    """The matrix: every combination of the axes, in a stable order."""
    duration = parse_duration(args.duration)
    workloads = parse_choices(args.workload, "WORKLOAD", Workload, [w.value for w in Workload])
    modes = parse_choices(args.modes, "MODES", Mode, [m.value for m in Mode])
    connections = parse_positive_ints(args.connections, "CONNECTIONS", 10_000)
    if args.target:
        return _target_cells(args, duration, workloads, modes, connections)
    given = {k: getattr(args, k) or default for k, default in SERVER_DEFAULTS.items()}
    pool_timeout = parse_duration(given["pool_timeout"], "POOL_TIMEOUT")
    rows = parse_nonnegative_int(given["rows"], "ROWS")
    styles = parse_choices(given["styles"], "STYLES", SessionStyle, [s.value for s in SessionStyle])
    tokens = parse_positive_ints(given["tokens"], "TOKENS", 10_000)
    cells = []
    for stack in parse_stacks(args.stack, bool(args.tokens), styles):
        axes = itertools.product(
            parse_servers(given["server"]),
            workloads,
            modes,
            styles,
            parse_pools(given["pools"]),
            [stacks.sync_threads(stack, 0)] if stack is Stack.y2021 else tokens,
            parse_positive_ints(given["workers"], "WORKERS", 64),
            connections,
        )
        cells += [
            Cell(
                server=s,
                mode=m,
                style=st,
                pool=p,
                tokens=t,
                workers=w,
                connections=c,
                workload=wl,
                duration_s=duration,
                rows=rows,
                pool_timeout_s=pool_timeout,
                stack=stack,
            )
            for s, wl, m, st, p, t, w, c in axes
        ]
    return order(cells)


def parse_stacks(text: str, tokens_given: bool, styles: Sequence[SessionStyle]) -> list[Stack]:
    """STACK, and what the 2021 stack cannot honour (refused, not ignored)."""
    chosen = parse_choices(text, "STACK", Stack, [s.value for s in Stack])
    if Stack.y2021 in chosen:
        if tokens_given:
            raise UsageError(
                "TOKENS: the 2021 stack has no thread limiter to size: sync code runs on "
                "asyncio's default executor, of min(32, CPUs + 4) threads; leave TOKENS unset"
            )
        if SessionStyle.limited in styles:
            raise UsageError(
                "STYLES: 'limited' needs Depends(max_concurrency=...), which FastAPI 0.63 (the "
                "2021 stack) does not have; choose dependency or context"
            )
    return chosen


def _target_cells(
    args: argparse.Namespace,
    duration: float,
    workloads: list[Workload],
    modes: list[Mode],
    connections: list[int],
) -> list[Cell]:
    target = parse_target(args.target)
    set_anyway = [k for k in SERVER_DEFAULTS if getattr(args, k)]
    if set_anyway:
        flags = ", ".join("--" + k.replace("_", "-") for k in set_anyway)
        raise UsageError(
            f"TARGET: {flags} cannot be used with a target: the harness does not start that "
            "server, so its settings are recorded as unknown"
        )
    if len(modes) != 1:
        raise UsageError("MODE: say which app the target serves: sync or async")
    return [
        Cell(
            server=None,
            mode=modes[0],
            style=None,
            pool=None,
            tokens=None,
            workers=None,
            connections=c,
            workload=wl,
            duration_s=duration,
            rows=None,
            pool_timeout_s=None,
            target=target,
        )
        for wl in workloads
        for c in connections
    ]


def options_from(args: argparse.Namespace) -> Options:
    return Options(
        warmup_s=parse_duration(args.warmup, "WARMUP") if args.warmup not in ("0", "0s") else 0.0,
        wrk_timeout_s=parse_duration(args.timeout, "TIMEOUT"),
        wrk_runner=parse_choices(args.wrk, "WRK", WrkRunner, [w.value for w in WrkRunner])[0],
        wrk_image=args.wrk_image,
        database_url=args.database_url or None,
        keep_logs=args.keep_logs,
    )


def _run(args: argparse.Namespace) -> int:
    options = options_from(args)
    if args.resume:
        run = RunDir.open(Path(args.resume))
        cells = [Cell.from_json(c) for c in run.metadata()["cells"]]
    else:
        cells = build_cells(args)
    total = sum(options.estimate_s(c) for c in cells)
    if args.dry_run:
        for cell in cells:
            print(cell.id)
        print(f"{len(cells)} cells, about {total / 60:.1f} minutes")
        return 0
    preflight(cells, options)
    if not args.resume:
        name = args.target or args.server or SERVER_DEFAULTS["server"]
        run = _new_run(args, new_metadata(cells, options, _parameters(args)), name)
    _announce(f"{len(cells)} cells", total, run)
    execute(run, options)
    print(f"summary: {run.path / 'summary.md'}", file=sys.stderr)
    return 0


def _parameters(args: argparse.Namespace) -> dict[str, object]:
    """What the user asked for, as given (the database URL may hold a password: left out)."""
    return {k: v for k, v in vars(args).items() if k not in ("func", "database_url")}


def _new_run(args: argparse.Namespace, metadata: dict, name: str) -> RunDir:
    stamp = datetime.now().strftime("%Y%m%d-%H%M%S")
    slug = "".join(c if c.isalnum() or c in "-_" else "-" for c in name)
    run = RunDir.create(Path(args.out) if args.out else RESULTS / f"{stamp}-{slug}")
    run.write_metadata(metadata)
    return run


def _announce(what: str, estimate_s: float, run: RunDir) -> None:
    print(f"{what}, about {estimate_s / 60:.1f} minutes; results in {run.path}", file=sys.stderr)


def _map(args: argparse.Namespace) -> int:
    from harness.failure_map import (
        DEFAULT_VARIANTS,
        PROBE_ESTIMATE_S,
        PROBES_PER_LINE,
        MapPlan,
        execute_map,
        parse_variant,
    )

    options = replace(
        options_from(args), await_pool_timeouts=False, database_url=args.database_url or None
    )
    if args.resume:
        run = RunDir.open(Path(args.resume))
        plan = MapPlan.from_json(run.metadata()["plan"])
    else:
        variants = args.variants or ",".join(
            v for v in DEFAULT_VARIANTS if args.stack != "2021" or "limited" not in v
        )
        parsed = tuple(dict.fromkeys(parse_variant(v) for v in variants.split(",") if v.strip()))
        stack = parse_stacks(args.stack, bool(args.tokens), [s for _, s in parsed])
        if len(stack) != 1:
            raise UsageError("STACK: a failure map is for one stack; run one map per stack")
        tokens = (
            [stacks.sync_threads(stack[0], 0)]
            if stack[0] is Stack.y2021
            else parse_positive_ints(args.tokens or "40,80", "TOKENS", 10_000, ordered=True)
        )
        levels = args.ceiling_levels
        plan = MapPlan(
            servers=tuple(parse_servers(args.server)),
            pools=tuple(parse_pools(args.pools)),
            tokens=tuple(tokens),
            workers=tuple(parse_positive_ints(args.workers, "WORKERS", 64, ordered=True)),
            start=parse_positive_ints(args.start, "START", 10_000)[0],
            ceiling=parse_positive_ints(args.ceiling, "CEILING", 10_000)[0],
            duration_s=parse_duration(args.duration),
            rows=parse_nonnegative_int(args.rows, "ROWS"),
            pool_timeout_s=parse_duration(args.pool_timeout, "POOL_TIMEOUT"),
            ceiling_levels=()
            if levels == "none"
            else tuple(parse_positive_ints(levels, "CEILING_LEVELS")),
            variants=parsed,
            stack=stack[0],
        )
        if not plan.variants:
            raise UsageError("VARIANTS: empty list")
        if plan.start > plan.ceiling:
            raise UsageError(f"START: {plan.start} is above the ceiling {plan.ceiling}")
    lines = plan.lines()
    estimate = len(lines) * PROBES_PER_LINE * PROBE_ESTIMATE_S + len(plan.servers) * 60
    if args.dry_run:
        for line in lines:
            print(line.variant)
        print(f"{len(lines)} lines, about {estimate / 60:.0f} minutes")
        return 0
    preflight([*lines, *plan.http_ceiling_cells()], options)
    if not args.resume:
        meta = new_metadata(lines, options, _parameters(args), kind="map")
        name = "map-" + "-".join(str(s) for s in plan.servers)
        run = _new_run(args, {**meta, "plan": plan.to_json()}, name)
    _announce(f"{len(lines)} lines", estimate, run)
    execute_map(run, options)
    print(f"summary: {run.path / 'summary.md'}", file=sys.stderr)
    return 0


def _reference(args: argparse.Namespace) -> int:
    from harness import reference

    root, page = Path(args.root), Path(args.readme)
    if not root.is_dir():
        raise UsageError(f"{root} is not a directory of reference runs")
    reference.write(root, page)
    print(page)
    return 0


def _report(args: argparse.Namespace) -> int:
    from harness import report

    run = RunDir.open(Path(args.run_dir))
    report.write(run)
    print(run.path / "summary.md")
    return 0


def _serve(args: argparse.Namespace) -> int:
    from harness.serve import serve

    return serve(args)


def parser() -> argparse.ArgumentParser:
    env = os.environ.get
    p = argparse.ArgumentParser(prog="python -m harness", description=__doc__)
    sub = p.add_subparsers(dest="command", required=True)

    run = sub.add_parser(
        "run", help="run a matrix of benchmark cells and write a results directory"
    )
    run.add_argument("--server", default=None, help="uvicorn, gunicorn, hypercorn or all")
    run.add_argument("--modes", default="sync,async")
    run.add_argument(
        "--styles",
        default=None,
        help="dependency, context, limited (comma separated)",
    )
    run.add_argument("--pools", default=None, help="POOL_SIZE+MAX_OVERFLOW, comma separated")
    run.add_argument("--pool-timeout", default=None, help="SQLAlchemy pool_timeout")
    run.add_argument("--tokens", default=None, help="AnyIO default thread limiter tokens")
    run.add_argument("--workers", default=None, help="server worker processes")
    run.add_argument("--stack", default="current", help="current or 2021 (or current,2021)")
    run.add_argument("--connections", default=DEFAULT_CONNECTIONS, help="wrk -c levels")
    run.add_argument("--duration", default="10s", help="measured wrk run per cell")
    run.add_argument("--warmup", default="2s", help="wrk warm-up per cell (0 for none)")
    run.add_argument("--timeout", default="5s", help="wrk request timeout")
    run.add_argument("--workload", default="list", help="list or insert (or list,insert)")
    run.add_argument("--rows", default=None, help="rows in users before each cell")
    run.add_argument(
        "--target",
        default="",
        help="measure this running server (http://127.0.0.1:PORT) instead of starting one",
    )
    run.add_argument("--wrk", default="local", help="local (the wrk binary) or docker")
    run.add_argument("--wrk-image", default=env("WRK_IMAGE", DEFAULT_IMAGE))
    run.add_argument(
        "--database-url",
        default=env("DATABASE_URL", ""),
        help="use this PostgreSQL instead of starting a throwaway one",
    )
    run.add_argument(
        "--out", default="", help="run directory (default results/runs/<time>-<server>)"
    )
    run.add_argument(
        "--resume",
        default="",
        metavar="RUN_DIR",
        help="run only the cells of RUN_DIR that have no record yet",
    )
    run.add_argument(
        "--dry-run", action="store_true", help="list the cells and the time, run nothing"
    )
    run.add_argument("--keep-logs", action="store_true", help="keep server logs in RUN_DIR/logs")
    run.set_defaults(func=_run)

    fmap = sub.add_parser(
        "map", help="search where each variant collapses, with ceilings and charts"
    )
    fmap.add_argument("--server", default="uvicorn", help="uvicorn, gunicorn, hypercorn or all")
    fmap.add_argument("--pools", default="5+10,20+0,40+0,80+0", help="first = baseline")
    fmap.add_argument("--tokens", default=None, help="first = baseline (default 40,80)")
    fmap.add_argument("--stack", default="current", help="current or 2021")
    fmap.add_argument("--workers", default="1,2", help="first = baseline")
    fmap.add_argument(
        "--variants",
        default=None,
        help="MODE-STYLE list (default: sync-dependency, sync-context, sync-limited (not under "
        "2021), async-dependency)",
    )
    fmap.add_argument(
        "--ceiling-levels",
        default="1,12,24,48,100,200",
        help="connections for the ceilings, or none",
    )
    fmap.add_argument("--start", default="8", help="first connection count probed")
    fmap.add_argument("--ceiling", default="400", help="highest connection count probed")
    fmap.add_argument("--duration", default="3s", help="measured wrk run per probe")
    fmap.add_argument("--warmup", default="1s", help="wrk warm-up per probe")
    fmap.add_argument("--timeout", default="5s", help="wrk request timeout")
    fmap.add_argument("--pool-timeout", default="30s", help="SQLAlchemy pool_timeout")
    fmap.add_argument("--rows", default="10", help="rows in users before each probe")
    fmap.add_argument("--wrk", default="local", help="local or docker")
    fmap.add_argument("--wrk-image", default=env("WRK_IMAGE", DEFAULT_IMAGE))
    fmap.add_argument("--database-url", default=env("DATABASE_URL", ""))
    fmap.add_argument("--out", default="", help="run directory")
    fmap.add_argument("--resume", default="", metavar="RUN_DIR")
    fmap.add_argument("--dry-run", action="store_true")
    fmap.add_argument("--keep-logs", action="store_true")
    fmap.set_defaults(func=_map)

    rep = sub.add_parser("report", help="regenerate summary.md and results.csv from raw records")
    rep.add_argument("run_dir")
    rep.set_defaults(func=_report)

    ref = sub.add_parser("reference", help="regenerate results/README.md from the reference runs")
    ref.add_argument("root", nargs="?", default=str(RESULTS.parent / "reference"))
    ref.add_argument("--readme", default=str(RESULTS.parent / "README.md"))
    ref.set_defaults(func=_reference)

    srv = sub.add_parser("serve", help="a throwaway database and one server, until Ctrl-C")
    srv.add_argument("--server", default="uvicorn")
    srv.add_argument("--mode", default="sync")
    srv.add_argument("--style", default="dependency")
    srv.add_argument("--rows", default="100")
    srv.add_argument("--workers", default="1")
    srv.add_argument("--database-url", default=env("DATABASE_URL", ""))
    srv.set_defaults(func=_serve)
    return p


def main(argv: Sequence[str] | None = None) -> int:
    args = parser().parse_args(argv)
    try:
        return int(args.func(args))
    except UsageError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except HarnessError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    except (Interrupted, KeyboardInterrupt):
        return 130
