"""What a run will measure: the matrix of a bench run, and the lines of a failure map.

A matrix is declared once, as typed axes, and expanded into every combination. A failure map is
a set of lines (a server configuration and a mode, without a connection count) along which a
search looks for the collapse; a line is not a cell, its probes are.
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from dataclasses import dataclass, replace
from typing import Any

from harness.domain.axes import (
    DEFAULT_DRIVER,
    DIRECT,
    SERVERS_2021,
    Driver,
    Latency,
    Layer,
    Load,
    Mode,
    Onset,
    Pool,
    ServerName,
    SessionStyle,
    Stack,
    Workload,
    driver_mode,
)
from harness.domain.cell import Cell, ServerConfig, Target, UserApp
from harness.domain.rules import order, predicted
from harness.domain.search import resolution
from harness.domain.slo import Slo, parse_slo

CEILING_LEVELS = (1, 12, 24, 48, 100, 200)


MAP_VARIANTS = (
    (Mode.sync, SessionStyle.dependency),
    (Mode.sync, SessionStyle.context),
    (Mode.sync, SessionStyle.limited),
    (Mode.async_, SessionStyle.dependency),
)


@dataclass(frozen=True)
class Matrix:
    """The axes of a bench run; every combination is a cell."""

    servers: tuple[ServerName, ...]
    workloads: tuple[Workload, ...]
    variants: tuple[tuple[Mode, SessionStyle], ...]  # (mode, session style) pairs
    pools: tuple[Pool, ...]
    tokens: tuple[int, ...]
    workers: tuple[int, ...]
    connections: tuple[int, ...]
    duration_s: float
    rows: tuple[int, ...]
    pool_timeout_s: float
    stacks: tuple[Stack, ...] = (Stack.current,)
    # Under 2021 sync code runs on asyncio's default executor: its size stands where T would.
    executor_threads: int = 0
    occupancy: tuple[bool, ...] = (True,)  # the side channel on, off, or both
    db_latencies: tuple[Latency, ...] = (DIRECT,)
    # Per mode, the drivers its app is measured with (parse_drivers matched them to the modes).
    drivers: tuple[tuple[Mode, Driver], ...] = tuple(DEFAULT_DRIVER.items())
    layers: tuple[Layer, ...] = (Layer.orm,)
    # The HTTP ceiling in the same rounds: each server's async app on /health (WITH_CEILINGS).
    ceilings: bool = False
    # Closed loop (wrk at `connections`), open loop (at `rates`, at most `open_connections`
    # connections), or both.
    loads: tuple[Load, ...] = (Load.closed,)
    rates: tuple[float, ...] = ()
    open_connections: int = 1000

    def cells(self) -> list[Cell]:
        cells = self.ceiling_cells()
        for stack in self.stacks:
            tokens = (self.executor_threads,) if stack is Stack.y2021 else self.tokens
            # SERVER=all under 2021 means the servers that stack has (granian came later).
            servers = [s for s in self.servers if stack is Stack.current or s in SERVERS_2021]
            variants = [
                (m, st, d)
                for m, st in self.variants
                for mode, d in self.drivers
                if mode is driver_mode(m, st)
            ]
            levels = loads(self.loads, self.connections, self.rates, self.open_connections)
            # Every combination, the last axis varying fastest.
            cells += [
                Cell(
                    server=ServerConfig(
                        name=s,
                        style=st,
                        pool=p,
                        tokens=t,
                        workers=w,
                        rows=r,
                        pool_timeout_s=self.pool_timeout_s,
                        stack=stack,
                        occupancy=o,
                        db_latency=lat,
                        driver=d,
                        layer=la,
                    ),
                    mode=m,
                    workload=wl,
                    connections=c,
                    duration_s=self.duration_s,
                    rate=rate,
                )
                for s in servers
                for wl in self.workloads
                for m, st, d in variants
                for la in self.layers
                for p in self.pools
                for t in tokens
                for w in self.workers
                for r in self.rows
                for lat in self.db_latencies
                for c, rate in levels
                for o in self.occupancy
            ]
        return order(list(dict.fromkeys(cells)))

    def ceiling_cells(self) -> list[Cell]:
        """/health of the async app, on its default driver and the ORM (neither is used by
        /health), at the first of every other setting, on every server, at every level."""
        if not self.ceilings:
            return []
        return [
            Cell(
                ServerConfig(
                    name=s,
                    style=self.variants[0][1],
                    pool=self.pools[0],
                    tokens=self.tokens[0],
                    workers=self.workers[0],
                    rows=self.rows[0],
                    pool_timeout_s=self.pool_timeout_s,
                ),
                Mode.async_,
                Workload.health,
                c,
                self.duration_s,
            )
            for s in self.servers
            for c in self.connections
        ]


def loads(
    kinds: Sequence[Load], connections: Sequence[int], rates: Sequence[float], cap: int
) -> list[tuple[int, float | None]]:
    """(connections, rate) of each load asked for: wrk at every level of `connections`, an open
    loop at every rate of `rates` with at most `cap` connections."""
    closed = [(c, None) for c in connections] if Load.closed in kinds else []
    return closed + ([(cap, r) for r in rates] if Load.open in kinds else [])


def schedule(cells: Sequence[Cell], repeats: int, seed: int) -> list[tuple[Cell, int]]:
    """Every (cell, round) in the order they run: connection levels rising (a verdict compares
    with the variant's lower levels); at each level `repeats` rounds, each measuring every cell
    of the level once in an order shuffled by `seed`, so that slow drift of the machine hits
    every variant alike and the measurements compared with each other sit side by side."""
    if repeats < 1:
        raise ValueError(f"repeats must be at least 1, got {repeats}")
    rng = random.Random(seed)
    out = []
    for level in sorted({c.level_key for c in cells}):
        here = [c for c in order(cells) if c.level_key == level]
        for round_ in range(1, repeats + 1):
            shuffled = list(here)
            rng.shuffle(shuffled)
            out += [(c, round_) for c in shuffled]
    return out


def target_cells(
    target: Target,
    mode: Mode,
    workloads: tuple[Workload, ...],
    connections: tuple[int, ...],
    duration_s: float,
    load: Sequence[tuple[int, float | None]] = (),
) -> list[Cell]:
    """The cells of a run against a server the harness did not start; `load`: (connections,
    rate) of each load (`loads`), else wrk at each of `connections`."""
    levels = load or [(c, None) for c in connections]
    return [
        Cell(target, mode, workload, c, duration_s, rate=rate)
        for workload in workloads
        for c, rate in levels
    ]


@dataclass(frozen=True)
class MapLine:
    """A server configuration (the demo app's, or a user's app, APP) and a mode, along which the
    collapse point is searched."""

    config: ServerConfig | UserApp
    mode: Mode
    duration_s: float

    def __post_init__(self) -> None:
        # The line's driver, as its cells name it (the mode's default unless given).
        object.__setattr__(self, "config", self.cell(1).server)

    def cell(self, connections: int, onset: Onset = Onset.fresh) -> Cell:
        workload = Workload.requests if isinstance(self.config, UserApp) else Workload.list
        return Cell(self.config, self.mode, workload, connections, self.duration_s, onset)

    @property
    def server_config(self) -> ServerConfig:
        """The demo app's settings, where only a demo line can be meant (its pool, a prediction)."""
        assert isinstance(self.config, ServerConfig), "a line of the demo app"
        return self.config

    @property
    def demo(self) -> ServerConfig | None:
        """The demo app's settings; None for a user's app, whose pool and style are its own."""
        return self.config if isinstance(self.config, ServerConfig) else None

    @property
    def variant(self) -> str:
        """The `variant` of every probe of this line measured the way `make bench` measures."""
        return self.cell(1).variant

    def variant_of(self, onset: Onset) -> str:
        """The `variant` of this line's probes with `onset`: each onset has its own threshold."""
        return self.cell(1, onset).variant

    @property
    def label(self) -> str:
        """'sync psycopg2 dependency': mode, driver (layer if not the ORM) and style; a user's
        app: its mode and module."""
        if self.demo is None:
            return f"{self.mode} {self.config.app if isinstance(self.config, UserApp) else ''}"
        layer = "" if self.demo.layer is Layer.orm else f" {self.demo.layer}"
        return f"{self.mode} {self.demo.driver}{layer} {self.demo.style}"

    @property
    def server(self) -> ServerName:
        return self.config.name

    @property
    def style(self) -> SessionStyle | None:
        return self.demo.style if self.demo else None

    @property
    def tokens_label(self) -> str:
        return self.config.tokens_label

    @property
    def predicted(self) -> int | None:
        """The mechanism's lower bound; none for a user's app (its pool is unknown)."""
        return predicted(self.mode, self.demo) if self.demo else None


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
    variants: tuple[tuple[Mode, SessionStyle], ...] = MAP_VARIANTS
    stack: Stack = Stack.current
    # One driver per mode and one layer for every line (the defaults: the seed's).
    drivers: tuple[tuple[Mode, Driver], ...] = tuple(DEFAULT_DRIVER.items())
    layer: Layer = Layer.orm
    # How the load meets each probe's server (one threshold per onset), and how often each edge
    # of a threshold's bracket is probed. Maps planned before onsets: fresh, once.
    onsets: tuple[Onset, ...] = (Onset.cold, Onset.warm)
    boundary_probes: int = 3
    pause_s: float = 0.5  # a warm ramp's least pause between two levels
    # A user's app (APP) mapped instead of the demo's variants: its lines are each server at
    # the first tokens and workers, then each other token count and worker count; `app_mode`
    # is the mode its user gave. The app's own name, tokens and workers are the baseline's.
    app: UserApp | None = None
    app_mode: Mode | None = None
    # Between every line's app and PostgreSQL (a blocked loop shows where queries take time).
    db_latency: Latency = DIRECT

    def to_json(self) -> dict[str, Any]:
        return {
            **({"db_latency": str(self.db_latency)} if self.db_latency.relay else {}),
            **(
                {"app": self.app.to_json(), "app_mode": str(self.app_mode)}
                if self.app is not None
                else {}
            ),
            "onsets": [str(o) for o in self.onsets],
            "boundary_probes": self.boundary_probes,
            "pause_s": self.pause_s,
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
            "drivers": {str(m): str(d) for m, d in self.drivers},
            "layer": str(self.layer),
        }

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> MapPlan:
        def variant(text: str) -> tuple[Mode, SessionStyle]:
            mode, _, style = text.partition("-")
            return Mode(mode), SessionStyle(style)

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
            variants=tuple(variant(v) for v in data["variants"]),
            stack=Stack(data["stack"]),
            # Maps planned before drivers and layers were settings ran the defaults.
            drivers=tuple(
                (Mode(m), Driver(d))
                for m, d in data.get(
                    "drivers", {str(m): str(d) for m, d in DEFAULT_DRIVER.items()}
                ).items()
            ),
            layer=Layer(data.get("layer", Layer.orm)),
            onsets=tuple(Onset(o) for o in data.get("onsets", [Onset.fresh])),
            boundary_probes=int(data.get("boundary_probes", 1)),
            pause_s=float(data.get("pause_s", 0.5)),
            app=UserApp.from_json(data["app"]) if data.get("app") else None,
            app_mode=Mode(data["app_mode"]) if data.get("app_mode") else None,
            db_latency=Latency.parse(data.get("db_latency", "0")),
        )

    def coarse_ladder(self) -> tuple[int, ...]:
        """A warm line's first ramp: doubling from `start` to the ceiling."""
        levels = [self.start]
        while levels[-1] < self.ceiling:
            levels.append(min(levels[-1] * 2, self.ceiling))
        return tuple(levels)

    def fine_ladder(self, held: int | None, froze: int | None = None) -> tuple[int, ...]:
        """A warm line's other ramps: doubling to `held` (the last level the first ramp held),
        up by one step (10% of `held`, the search's resolution) to `froze` (where the first
        ramp collapsed; twice `held` if not given), then doubling again to the ceiling."""
        if held is None:
            return self.coarse_ladder()
        levels = [c for c in self.coarse_ladder() if c < held] + [held]
        top = min(froze or 2 * held, self.ceiling)
        while levels[-1] < top:
            levels.append(min(levels[-1] + resolution(held), top))
        while levels[-1] < self.ceiling:
            levels.append(min(levels[-1] * 2, self.ceiling))
        return tuple(levels)

    def driver(self, mode: Mode) -> Driver:
        return dict(self.drivers)[mode]

    def baseline(self, server: ServerName) -> ServerConfig:
        """The first pool, token count and worker count given: what each line varies from."""
        return ServerConfig(
            name=server,
            style=SessionStyle.dependency,
            pool=self.pools[0],
            tokens=self.tokens[0],
            workers=self.workers[0],
            rows=self.rows,
            pool_timeout_s=self.pool_timeout_s,
            stack=self.stack,
            layer=self.layer,
            db_latency=self.db_latency,
        )

    def app_lines(self, app: UserApp, mode: Mode) -> list[MapLine]:
        """Per server: the app at the first token and worker counts, then at each other."""
        out = []
        for server in self.servers:
            base = replace(app, name=server, tokens=self.tokens[0], workers=self.workers[0])
            configs = [
                base,
                *(replace(base, tokens=t) for t in self.tokens[1:]),
                *(replace(base, workers=w) for w in self.workers[1:]),
            ]
            out += [MapLine(c, mode, self.duration_s) for c in configs]
        return out

    def lines(self) -> list[MapLine]:
        """Per server: every variant at the baseline; sync `dependency` also at each other pool,
        token count and worker count (one factor at a time)."""
        if self.app is not None and self.app_mode is not None:
            return self.app_lines(self.app, self.app_mode)
        out = []
        for server in self.servers:
            base = self.baseline(server)
            out += [
                MapLine(
                    replace(base, style=style, driver=self.driver(driver_mode(mode, style))),
                    mode,
                    self.duration_s,
                )
                for mode, style in self.variants
            ]
            if (Mode.sync, SessionStyle.dependency) in self.variants:
                others = [
                    *(replace(base, pool=p) for p in self.pools[1:]),
                    *(replace(base, tokens=t) for t in self.tokens[1:]),
                    *(replace(base, workers=w) for w in self.workers[1:]),
                ]
                sync = self.driver(Mode.sync)
                out += [
                    MapLine(replace(c, driver=sync), Mode.sync, self.duration_s) for c in others
                ]
        return out

    def http_ceiling_cells(self) -> list[Cell]:
        """/health of the async app on each server: what HTTP alone allows. (Its style, unused
        by /health, is the first variant's: it is part of the cells' ids.)"""
        if self.app is not None:
            return []  # a user's app has no /health of the demo's
        style = self.variants[0][1]
        return [
            Cell(
                replace(self.baseline(server), style=style, driver=self.driver(Mode.async_)),
                Mode.async_,
                Workload.health,
                c,
                self.duration_s,
            )
            for server in self.servers
            for c in self.ceiling_levels
        ]

    def change(self, line: MapLine) -> str:
        """What a line changes from its server's baseline, in words."""
        if line.demo is None:
            return f"{line.config.tokens} tokens, {line.config.workers} workers"
        base = self.baseline(line.server)
        if line.demo.pool != base.pool:
            return f"pool {line.demo.pool}"
        if line.demo.tokens != base.tokens:
            return f"{line.demo.tokens} tokens"
        if line.demo.workers != base.workers:
            return f"{line.demo.workers} workers"
        return f"pool {line.demo.pool}, {line.demo.tokens} tokens"


def side_by_side(lines: Sequence[Cell]) -> tuple[Cell, ...]:
    """Capacity lines in the order they are searched: the variants of one deployment shape one
    after another, so the lines a page compares are measured close in time (the machine drifts
    between runs by more than a search resolves), in turn forwards and backwards from one shape
    to the next, so no variant is always searched first."""
    shapes: dict[tuple[Any, ...], list[Cell]] = {}
    for line in lines:
        # A user's app's label names its module: the apps of one shape are its server's.
        where = line.known("name") if line.user_app else line.server_label
        shape = (where, line.known("workers"), line.known("tokens") if line.user_app else
                 line.known("rows"), line.db_latency)  # fmt: skip
        shapes.setdefault(shape, []).append(line)
    out: list[Cell] = []
    for i, group in enumerate(shapes.values()):
        out += group if i % 2 == 0 else group[::-1]
    return tuple(out)


@dataclass(frozen=True)
class CapacityPlan:
    """What `make capacity` searches: for each line (a variant in a deployment shape), the
    highest open-loop rate that meets `slo` (a dropped request is a miss), probing from `start` by
    doubling up to `ceiling`, then bisecting, then probing the bracket's edges until each has
    `probes` answers; each line within `budget_s`."""

    lines: tuple[Cell, ...]  # each line's cells but for the rate (a probe gives it one)
    slo: Slo
    start: int
    ceiling: int
    probes: int
    budget_s: float
    # A probe's warm-up where it is not the run's WARMUP (make decide's closed loop has none).
    warmup_s: float | None = None

    def probe(self, line: Cell, rate: int) -> Cell:
        return replace(line, rate=float(rate))

    def to_json(self) -> dict[str, Any]:
        return {
            "lines": [line.to_json() for line in self.lines],
            "slo": self.slo.flag(),
            "start": self.start,
            "ceiling": self.ceiling,
            "probes": self.probes,
            "budget_s": self.budget_s,
            "warmup_s": self.warmup_s,
        }

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> CapacityPlan:
        return cls(
            lines=tuple(Cell.from_json(c) for c in data["lines"]),
            slo=parse_slo(data["slo"]),
            start=int(data["start"]),
            ceiling=int(data["ceiling"]),
            probes=int(data["probes"]),
            budget_s=float(data["budget_s"]),
            warmup_s=data.get("warmup_s"),
        )
