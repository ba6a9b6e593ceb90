"""The failure map: for each server and variant, the connection count where it collapses,
found by a search (harness/search.py), next to the mechanism's prediction, with the HTTP and
database ceilings measured in the same run.

Lines searched per server, one factor at a time around a baseline (the first pool, token count
and worker count given): every variant at the baseline; sync `dependency`, the one the mechanism
says collapses, also at each other pool, token count and worker count.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Sequence
from dataclasses import dataclass, replace
from typing import Any

from app.settings import SessionStyle
from harness import pgbench
from harness.errors import UsageError
from harness.model import Cell, CellResult, Pool, Verdict, Workload
from harness.runner import Options, session
from harness.search import Threshold, bracket, find_threshold
from harness.store import RunDir
from servers.registry import Mode, ServerName, Stack

VARIANTS = (
    (Mode.sync, SessionStyle.dependency),
    (Mode.sync, SessionStyle.context),
    (Mode.sync, SessionStyle.limited),
    (Mode.async_, SessionStyle.dependency),
)
DEFAULT_VARIANTS = [f"{m}-{s}" for m, s in VARIANTS]
CEILING_LEVELS = (1, 12, 24, 48, 100, 200)


def parse_variant(text: str) -> tuple[Mode, SessionStyle]:
    """'sync-dependency' -> (Mode.sync, SessionStyle.dependency)."""
    mode, _, style = text.partition("-")
    if mode not in {m.value for m in Mode} or style not in {s.value for s in SessionStyle}:
        raise UsageError(
            f"VARIANTS: unknown variant {text!r}; choose from {', '.join(DEFAULT_VARIANTS)}"
        )
    return Mode(mode), SessionStyle(style)


CEILINGS_DIR = "ceilings"


@dataclass(frozen=True)
class MapPlan:
    servers: tuple[ServerName, ...]
    pools: tuple[Pool, ...]
    tokens: tuple[int, ...]
    workers: tuple[int, ...]
    start: int = 8
    ceiling: int = 400
    duration_s: float = 3.0
    rows: int = 10
    pool_timeout_s: float = 30.0
    ceiling_levels: tuple[int, ...] = CEILING_LEVELS
    variants: tuple[tuple[Mode, SessionStyle], ...] = VARIANTS
    stack: Stack = Stack.current

    def to_json(self) -> dict[str, Any]:
        return {
            "servers": [str(s) for s in self.servers],
            "pools": [str(p) for p in self.pools],
            "tokens": list(self.tokens),
            "workers": list(self.workers),
            "start": self.start,
            "ceiling": self.ceiling,
            "duration_s": self.duration_s,
            "rows": self.rows,
            "pool_timeout_s": self.pool_timeout_s,
            "ceiling_levels": list(self.ceiling_levels),
            "variants": [f"{m}-{s}" for m, s in self.variants],
            "stack": str(self.stack),
        }

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> MapPlan:
        return cls(
            servers=tuple(ServerName(s) for s in data["servers"]),
            pools=tuple(Pool.parse(p) for p in data["pools"]),
            tokens=tuple(data["tokens"]),
            workers=tuple(data["workers"]),
            start=data["start"],
            ceiling=data["ceiling"],
            duration_s=data["duration_s"],
            rows=data["rows"],
            pool_timeout_s=data["pool_timeout_s"],
            ceiling_levels=tuple(data["ceiling_levels"]),
            variants=tuple(parse_variant(v) for v in data.get("variants", DEFAULT_VARIANTS)),
            stack=Stack(data.get("stack", Stack.current)),
        )

    def lines(self) -> list[Cell]:
        """Each searched line as a cell whose connection count the search will set."""
        out = []
        for server in self.servers:
            base = Cell(
                server=server,
                mode=Mode.sync,
                style=SessionStyle.dependency,
                pool=self.pools[0],
                tokens=self.tokens[0],
                workers=self.workers[0],
                connections=self.ceiling,
                workload=Workload.list,
                duration_s=self.duration_s,
                rows=self.rows,
                pool_timeout_s=self.pool_timeout_s,
                stack=self.stack,
            )
            out += [replace(base, mode=m, style=s) for m, s in self.variants]
            if (Mode.sync, SessionStyle.dependency) in self.variants:
                out += [replace(base, pool=p) for p in self.pools[1:]]
                out += [replace(base, tokens=t) for t in self.tokens[1:]]
                out += [replace(base, workers=w) for w in self.workers[1:]]
        return out

    def http_ceiling_cells(self) -> list[Cell]:
        """/health of the async app on each server: what HTTP alone allows."""
        cells = []
        for server in self.servers:
            base = replace(self.lines()[0], server=server, mode=Mode.async_)
            cells += [
                replace(base, workload=Workload.health, connections=c) for c in self.ceiling_levels
            ]
        return cells


def predicted(cell: Cell) -> int | None:
    """workers x (T + C): where the sync `dependency` style can stall (FastAPI issue 3205).

    T threadpool tokens, C = pool_size + max_overflow. Below it, T threads can never all wait
    for a connection while the C holders wait for a token. Other variants: no collapse.
    """
    if (cell.mode, cell.style) != (Mode.sync, SessionStyle.dependency):
        return None
    assert cell.workers and cell.tokens and cell.pool
    return cell.workers * (cell.tokens + cell.pool.capacity)


def agreement(prediction: int | None, found: Threshold) -> str:
    """Whether measurement and prediction agree within one search step, in plain words."""
    if prediction is None:
        if found.collapsed_at is None:
            return "agrees: none expected"
        return f"DISAGREES: no collapse expected, collapsed at {found.collapsed_at}"
    if found.collapsed_at is None:
        if prediction > found.ceiling:
            return "agrees: predicted beyond the ceiling"
        return f"DISAGREES: predicted ~{prediction}, no collapse up to {found.ceiling}"
    low, high = found.fine_at or 0, found.collapsed_at
    step = high - low
    if low - step <= prediction <= high + step:
        return "agrees"
    side = "earlier" if high < prediction else "later"
    return f"DISAGREES: collapsed {side} than ~{prediction}"


def is_collapse(result: CellResult) -> bool:
    """A probe counts as collapsed for the search unless the variant served its load."""
    return result.verdict is not Verdict.ok and result.verdict is not Verdict.errors


def threshold_of(line: Cell, records: Sequence[CellResult], ceiling: int) -> Threshold:
    probes = {r.cell.connections: is_collapse(r) for r in records if r.cell.variant == line.variant}
    return bracket(probes, ceiling)


def ceilings_path(run: RunDir, connections: int) -> Any:
    return run.path / CEILINGS_DIR / f"pgbench-c{connections}.json"


def load_pgbench(run: RunDir) -> list[pgbench.PgbenchResult]:
    folder = run.path / CEILINGS_DIR
    if not folder.is_dir():
        return []
    results = [
        pgbench.PgbenchResult(**json.loads(p.read_text())) for p in folder.glob("pgbench-*.json")
    ]
    return sorted(results, key=lambda r: r.connections)


PROBE_ESTIMATE_S = 9.0  # start, verify, warm-up, 3 s run, stop; measured on 2 cores
PROBES_PER_LINE = 7


def execute_map(run: RunDir, options: Options, stream: Any = sys.stderr) -> None:
    """Search every line; probes already on record (an earlier, interrupted run) are reused."""
    plan = MapPlan.from_json(run.metadata()["plan"])
    lines = plan.lines()
    ceiling_cells = plan.http_ceiling_cells()
    done = run.records()
    by_id = {r.cell.id: r for r in done}
    pgbench_max = max(plan.ceiling_levels, default=0)
    with session(run, options, [*lines, *ceiling_cells], stream, pgbench_max) as s:
        for i, line in enumerate(lines):
            position = f"line {i + 1}/{len(lines)}"
            left_s = (len(lines) - i) * PROBES_PER_LINE * PROBE_ESTIMATE_S

            def collapses(
                connections: int, line: Cell = line, pos: str = position, left: float = left_s
            ) -> bool:
                cell = replace(line, connections=connections)
                if cell.id not in by_id:
                    s.progress.begin(cell, pos, left)
                    by_id[cell.id] = s.measure(cell, done)
                    done.append(by_id[cell.id])
                return is_collapse(by_id[cell.id])

            found = find_threshold(collapses, plan.start, plan.ceiling)
            stream.write(f"    {line.variant}: {found.describe()}\n")
        for j, cell in enumerate(ceiling_cells):
            if cell.id not in by_id:
                s.progress.begin(cell, f"ceiling {j + 1}/{len(ceiling_cells)}", 0)
                done.append(s.measure(cell, done))
        if s.db is not None:
            (run.path / CEILINGS_DIR).mkdir(exist_ok=True)
            for connections in plan.ceiling_levels:
                path = ceilings_path(run, connections)
                if not path.exists():
                    result = pgbench.run(s.db.url, connections, plan.duration_s)
                    path.write_text(json.dumps(result.to_json(), indent=2) + "\n")
                    stream.write(f"    pgbench {connections} clients: {result.tps:.0f} tps\n")
