"""The one table of variables: each Makefile variable, its flag, its default per command, and
which commands take it. A variable given to a command that does not take it is refused."""

from __future__ import annotations

import argparse
import os
from dataclasses import dataclass, field

from harness.domain.errors import UsageError
from harness.report.table import md_table
from servers.registry import WRK_IMAGE, ServerName

# What each command is called where users meet it.
MAKE_TARGET = {
    "run": "make bench",
    "decide": "make decide",
    "capacity": "make capacity",
    "map": "make failure-map",
    "serve": "make serve",
    "diagnose": "make diagnose",
}
COMMANDS = tuple(MAKE_TARGET)


@dataclass(frozen=True)
class Variable:
    name: str  # as the Makefile spells it; the flag is its lower-case, dashed form
    help: str
    defaults: dict[str, str]  # command -> default; a command not here does not take it
    switch: bool = False  # DRY_RUN=1 / --dry-run
    alias: str | None = None  # MODE for MODES: one value, the same variable
    from_env: bool = False  # the default comes from the environment variable of that name

    @property
    def flag(self) -> str:
        return "--" + self.name.lower().replace("_", "-")

    @property
    def alias_flags(self) -> tuple[str, ...]:
        return (f"--{self.alias.lower()}",) if self.alias else ()

    @property
    def dest(self) -> str:
        return self.name.lower()

    def default(self, command: str) -> str:
        if self.from_env and os.environ.get(self.name):
            return os.environ[self.name]
        return self.defaults[command]


ALL = {"run": "", "map": "", "serve": "", "decide": "", "capacity": ""}
VARIABLES: tuple[Variable, ...] = (
    Variable(
        "SERVER",
        f"{', '.join(ServerName)}, or all (comma list)",
        {
            "run": "uvicorn",
            "map": "uvicorn",
            "serve": "uvicorn",
            "decide": "uvicorn",
            "capacity": "uvicorn",
        },
    ),
    Variable(
        "MODES",
        "sync, async (comma list; MODE is the same). With TARGET or APP: the one kind of app it is",
        {"run": "sync,async", "serve": "sync", "map": "", "capacity": "", "decide": ""},
        alias="MODE",
    ),
    Variable(
        "STYLES",
        "session styles: dependency (the seed's Depends generator), context (`with` inside the "
        "endpoint), limited (Depends(max_concurrency=pool capacity)), blocking (async only: "
        "the mistake of calling the sync session from async def); STYLE is the same",
        {"run": "dependency,context", "serve": "dependency"},
        alias="STYLE",
    ),
    Variable(
        "DRIVERS",
        "psycopg2 (sync), asyncpg (async), psycopg (psycopg 3, both; comma list): each mode "
        "takes those that fit it (map and serve: one per mode); DRIVER is the same",
        {
            "run": "psycopg2,asyncpg",
            "map": "psycopg2,asyncpg",
            "serve": "psycopg2,asyncpg",
            "decide": "psycopg2,asyncpg",
            "capacity": "psycopg2,asyncpg",
        },
        alias="DRIVER",
    ),
    Variable(
        "LAYERS",
        "orm (SQLAlchemy ORM), core (SQLAlchemy Core, rows mapped by hand), driver (the "
        "driver and its own pool, no SQLAlchemy); comma list for run; LAYER is the same",
        {"run": "orm", "map": "orm", "serve": "orm", "decide": "orm", "capacity": "orm"},
        alias="LAYER",
    ),
    Variable(
        "POOLS",
        "SIZE+OVERFLOW, SQLAlchemy's pool_size+max_overflow (comma list; compose serves one); "
        "for the map the first is the baseline",
        {
            "run": "5+10",
            "map": "5+10,20+0,40+0,80+0",
            "serve": "5+10",
            "decide": "5+10",
            "capacity": "5+10",
        },
    ),
    Variable(
        "POOL_TIMEOUT",
        "SQLAlchemy pool_timeout",
        {"run": "30s", "map": "30s", "serve": "30s", "decide": "30s", "capacity": "30s"},
    ),
    Variable(
        "TOKENS",
        "AnyIO default thread limiter tokens (comma list; map: first = baseline)",
        {"run": "40", "map": "40,80", "serve": "40", "decide": "40", "capacity": "40"},
    ),
    Variable(
        "WORKERS",
        "server worker processes (comma list; `cpus`: this machine's CPU count; map: first = "
        "baseline)",
        {"run": "1", "map": "1,2", "serve": "1", "decide": "1,cpus", "capacity": "1"},
    ),
    Variable(
        "STACK",
        "current (requirements.lock) or 2021 (requirements-2021.lock); run: both with a comma",
        {"run": "current", "map": "current", "serve": "current", "decide": "current"},
    ),
    Variable(
        "CONNECTIONS",
        "wrk -c levels (comma list; diagnose: the ramp's levels, rising)",
        {"run": "1,12,24,48,100,200", "decide": "8,32,100", "diagnose": "1,2,4,8,16,32,64,128,256"},
    ),
    Variable(
        "LOAD",
        "closed (wrk at CONNECTIONS: each connection sends once answered), open (requests due "
        "at each RATE whatever the server does), or both with a comma",
        {"run": "closed"},
    ),
    Variable(
        "RATE",
        "LOAD=open: requests per second (comma list)",
        {"run": "100,300,600"},
    ),
    Variable(
        "OPEN_CONNECTIONS",
        "LOAD=open: the most connections it opens; past it due requests wait, sent late or dropped",
        {"run": "1000", "decide": "1000", "capacity": "1000"},
    ),
    Variable(
        "REPEATS",
        "measurements of each cell, in rounds: at each connection level every cell once per "
        "round, in a shuffled order (diagnose: ramps, each from the first level)",
        {"run": "5", "decide": "3", "diagnose": "2"},
    ),
    Variable(
        "DURATION",
        "measured window of each measurement (map, capacity: of each probe; diagnose: of each "
        "level)",
        {"run": "3s", "map": "3s", "decide": "2s", "capacity": "10s", "diagnose": "5s"},
    ),
    Variable(
        "WARMUP",
        "wrk warm-up before each measured run (0 for none)",
        {"run": "2s", "map": "1s", "decide": "0", "capacity": "2s"},
    ),
    Variable(
        "TIMEOUT",
        "request timeout (wrk's, and the open loop's)",
        {"run": "5s", "map": "5s", "decide": "5s", "capacity": "5s", "diagnose": "5s"},
    ),
    Variable(
        "SETTLE",
        "a pause before each measurement's warm-up (0: none)",
        {"run": "0", "map": "0", "decide": "0", "capacity": "0"},
    ),
    Variable(
        "WORKLOAD",
        "list (GET /users), insert (GET /users/insert-data-to-test), health (GET /health, no "
        "database)",
        {"run": "list", "decide": "list", "capacity": "list"},
    ),
    Variable(
        "ROWS",
        "rows in `users` before each cell (comma list; map and serve: one)",
        {"run": "10", "map": "10", "serve": "10", "decide": "10,100", "capacity": "10"},
    ),
    Variable(
        "DB_LATENCY",
        "one-way delay a relay on 127.0.0.1 adds between the apps and PostgreSQL, each way "
        "(comma list; 0: no relay; `relay`: the relay without delay)",
        {"run": "0", "map": "0", "serve": "0", "decide": "0,5ms", "capacity": "0,5ms"},
    ),
    Variable(
        "WRK",
        "local (the wrk binary) or docker (WRK_IMAGE)",
        {"run": "local", "map": "local", "decide": "local"},
    ),
    Variable(
        "WRK_IMAGE",
        "wrk's image for WRK=docker",
        {"run": WRK_IMAGE, "map": WRK_IMAGE, "decide": WRK_IMAGE},
        from_env=True,
    ),
    Variable(
        "DATABASE_URL",
        "use this PostgreSQL instead of a throwaway one",
        dict(ALL),
        from_env=True,
    ),
    Variable(
        "TARGET",
        "measure this running server instead of starting one: http://127.0.0.1:PORT (the demo "
        "app's endpoints) or http://127.0.0.1:PORT/PATH (any service, sent GET PATH); diagnose: "
        "the service to diagnose, with its path",
        {"run": "", "diagnose": ""},
    ),
    Variable(
        "APP",
        "measure your own ASGI app (module:attr) instead of the demo: the harness starts it "
        "under each SERVER with TOKENS and WORKERS, from APP_DIR, in APP_PYTHON",
        {"run": "", "map": "", "capacity": "", "decide": ""},
    ),
    Variable(
        "APP_DIR",
        "with APP: the folder its module is imported from",
        {"run": ".", "map": ".", "capacity": ".", "decide": "."},
    ),
    Variable(
        "APP_PYTHON",
        "with APP: the interpreter whose environment has the app and the servers "
        "(default: the harness's own)",
        {"run": "", "map": "", "capacity": "", "decide": ""},
    ),
    Variable(
        "APP_ENV",
        "with APP: environment variables for it, NAME=value separated by spaces (recorded with "
        "every cell); {database} in a value: a throwaway PostgreSQL's URL",
        {"run": "", "map": "", "capacity": "", "decide": ""},
    ),
    Variable(
        "APP_PATH",
        "with APP: the path each request GETs, e.g. /items",
        {"run": "", "map": "", "capacity": "", "decide": ""},
    ),
    Variable(
        "REQUESTS",
        "with TARGET or APP: a TOML or JSON file of [[request]] tables (method, path, headers, "
        "body, weight), sent in turn by every connection",
        {"run": "", "map": "", "capacity": "", "decide": "", "diagnose": ""},
    ),
    Variable(
        "TARGET_PID",
        "with TARGET: the target server's PID, so that a collapse gets a thread dump (py-spy); "
        "diagnose: the service's (default: the process listening on TARGET's port); PID is the "
        "same",
        {"run": "", "diagnose": ""},
        alias="PID",
    ),
    Variable(
        "OCCUPANCY",
        "the apps' side channel, sampled at 10 Hz in every measured run: on, off, or on,off "
        "(both, to measure what the sampling costs)",
        {"run": "on", "decide": "on", "capacity": "on"},
    ),
    Variable(
        "VARIANTS",
        "MODE-STYLE variants (comma list); the map's default: sync-dependency, sync-context, "
        "sync-limited (not under 2021), async-dependency, at the baseline",
        {
            "map": "",
            "decide": "sync-dependency,sync-context,async-dependency,async-context",
            "capacity": "sync-context,async-dependency,async-context",
        },
    ),
    Variable(
        "CEILING_LEVELS", "connections for the ceilings, or none", {"map": "1,12,24,48,100,200"}
    ),
    Variable(
        "ONSETS",
        "how the load meets each probe's server (comma list): cold (a fresh server stepped to N, "
        "no warm-up), warm (one server, the load raised level by level), fresh (a warm-up at N "
        "on a fresh server, as maps measured before onsets)",
        {"map": "cold,warm"},
    ),
    Variable(
        "BOUNDARY_PROBES",
        "probes at each edge of a threshold's bracket (cold), and ramps through it (warm)",
        {"map": "3", "decide": "3", "capacity": "3"},
    ),
    Variable(
        "PAUSE", "a warm ramp's least pause between two levels", {"map": "0.5s", "diagnose": "1s"}
    ),
    Variable(
        "START",
        "first connection count probed (capacity, decide: first rate, req/s)",
        {"map": "8", "decide": "100", "capacity": "100"},
    ),
    Variable(
        "CEILING",
        "highest connection count probed (capacity, decide: highest rate, req/s)",
        {"map": "400", "decide": "3200", "capacity": "3200"},
    ),
    Variable(
        "SLO",
        "latency objective, pN<LIMIT (ms or s): slow, failed, timed-out and dropped requests "
        "all miss it; judged on warm windows of 10 s or more; capacity and decide: the one "
        "searched at",
        {"run": "p99<250ms", "decide": "p99<250ms", "capacity": "p99<250ms"},
    ),
    Variable(
        "BUDGET",
        "capacity: the most time one line's search may take (its bracket is what it found by "
        "then); decide: the same for each line of its capacity search (0: no capacity search)",
        {"decide": "4m", "capacity": "4m"},
    ),
    Variable(
        "OUT",
        "run directory (default results/runs/<time>-<server>; diagnose: <time>-diagnose-<port>)",
        {"run": "", "map": "", "decide": "", "capacity": "", "diagnose": ""},
    ),
    Variable(
        "RESUME",
        "a run directory: run only what it has no record of, with its own settings",
        {"run": "", "map": "", "decide": ""},
    ),
    Variable(
        "FAIL_ON",
        "collapse: exit 3 once the run is done if any measurement collapsed, wholly or partly "
        "(make compare takes regression: exit 4 where B is significantly slower than A)",
        {"run": "", "decide": ""},
    ),
    Variable(
        "DRY_RUN",
        "list what would run and the time, run nothing",
        {"run": "", "map": "", "decide": "", "capacity": "", "diagnose": ""},
        True,
    ),
    Variable(
        "KEEP_LOGS",
        "keep server logs in RUN_DIR/logs",
        {"run": "", "map": "", "decide": "", "capacity": ""},
        True,
    ),
    Variable(
        "WITH_CEILINGS",
        "also measure, in the same rounds, the async app's /health on each server (HTTP alone) "
        "and pgbench running the /users query (the database alone) at each connection level",
        {"run": ""},
        True,
    ),
    Variable(
        "ALLOW_REMOTE",
        "with TARGET: allow an address that is not this machine's loopback (only a service you "
        "own and may load; the network's own latency is then in every figure)",
        {"run": ""},
        True,
    ),
    Variable(
        "PIN",
        "wrk on the last CPU, the servers and PostgreSQL on the others",
        {"run": "", "map": "", "decide": "", "capacity": ""},
        True,
    ),
    Variable(
        "FORCE",
        "resume even where the machine or package versions differ from the run's; measure "
        "even while another harness is measuring on this machine (the provenance says so)",
        {"run": "", "map": "", "decide": "", "capacity": "", "diagnose": ""},
        True,
    ),
)
BY_NAME = {v.name: v for v in VARIABLES}
# What may accompany RESUME: everything else is the run's own, recorded setting.
WITH_RESUME = ("RESUME", "FORCE", "DRY_RUN", "DATABASE_URL", "FAIL_ON")


def add_arguments(parser: argparse.ArgumentParser, command: str) -> None:
    """Every variable's flag; those the command does not take are hidden, and refused later."""
    for v in VARIABLES:
        takes = command in v.defaults
        shown = f"{v.help} (default: {v.defaults[command] or 'none'})" if takes else None
        help_text = shown if takes else argparse.SUPPRESS
        if v.switch:
            parser.add_argument(
                v.flag, dest=v.dest, action="store_const", const="1", help=help_text
            )
            continue
        parser.add_argument(v.flag, dest=v.dest, default=None, metavar=v.name, help=help_text)
        if v.alias:
            parser.add_argument(
                f"--{v.alias.lower()}",
                dest=v.alias.lower(),
                default=None,
                metavar=v.alias,
                help=f"the same as {v.flag}" if takes else argparse.SUPPRESS,
            )


@dataclass(frozen=True)
class Given:
    """The values for one command: what the user gave, and the defaults for the rest."""

    command: str
    explicit: dict[str, str] = field(default_factory=dict)
    values: dict[str, str] = field(default_factory=dict)

    def __getitem__(self, name: str) -> str:
        return self.values[name]

    def on(self, name: str) -> bool:
        return self.values[name] not in ("", "0")


def resolve(args: argparse.Namespace, command: str) -> Given:
    explicit = {
        v.name: getattr(args, v.dest) for v in VARIABLES if getattr(args, v.dest) is not None
    }
    spelt = {name: name for name in explicit}  # as the user wrote it, for messages
    for v in VARIABLES:
        singular = getattr(args, v.alias.lower(), None) if v.alias else None
        if singular is not None:
            if v.name in explicit:
                raise UsageError(f"{v.alias} and {v.name} are the same setting; give one of them")
            explicit[v.name], spelt[v.name] = singular, str(v.alias)
    misplaced = [spelt[n] for n in explicit if command not in BY_NAME[n].defaults]
    if misplaced:
        takes = ", ".join(v.name for v in VARIABLES if command in v.defaults)
        raise UsageError(
            f"{', '.join(misplaced)}: not a setting of `{MAKE_TARGET[command]}` "
            f"(python -m harness {command}); it takes {takes}"
        )
    values = {v.name: v.default(command) for v in VARIABLES if command in v.defaults}
    return Given(command, explicit, {**values, **explicit})


def markdown_table() -> str:
    """The variables table of docs/variables.md (tests/test_cli.py checks that the two agree)."""
    head = ["variable", "meaning", *(f"`{MAKE_TARGET[c]}`" for c in COMMANDS)]
    rows = []
    for v in VARIABLES:
        name = f"`{v.name}=1`" if v.switch else f"`{v.name}`"
        name += f" (or `{v.alias}`)" if v.alias else ""
        cells = []
        for command in COMMANDS:
            default = v.defaults.get(command)
            if default is None:
                cells.append("—")
            elif v.switch:
                cells.append("off")
            else:
                cells.append(f"`{default}`" if default else "unset")
        rows.append([name, v.help, *cells])
    return md_table(head, rows, ["---"] * len(head))
