"""What the settings ask to measure: the cells of `make bench` and `make decide`, the failure
map's plan, the capacity searches, the server `make serve` starts, and the options they all run
with, each checked (a refused setting is a UsageError naming it) before anything starts."""

from __future__ import annotations

import itertools
import json
import os
import re
import shlex
import sys
import tomllib
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from harness.cli.variables import BY_NAME, Given
from harness.domain.axes import (
    Layer,
    Load,
    Mode,
    Onset,
    SessionStyle,
    Stack,
    Workload,
    WrkRunner,
    driver_mode,
)
from harness.domain.cell import Cell, ServerConfig, Target, UserApp
from harness.domain.errors import UsageError
from harness.domain.parse import (
    parse_choices,
    parse_drivers,
    parse_duration,
    parse_latencies,
    parse_one,
    parse_pools,
    parse_positive_ints,
    parse_rates,
    parse_servers,
    parse_stacks,
    parse_target,
    parse_variants,
    parse_workers,
    parse_wrk_seconds,
    refuse_in_2021,
    refuse_sync_blocking,
)
from harness.domain.plan import (
    MAP_VARIANTS,
    CapacityPlan,
    MapPlan,
    Matrix,
    loads,
    side_by_side,
    target_cells,
)
from harness.domain.requests import PATH, Request, Requests, parse_requests
from harness.domain.slo import MIN_WINDOW_S, parse_slo
from harness.infra import stacks, userenv
from harness.infra.environment import cpu_count
from harness.infra.process import pid_running
from harness.run.capacity import WARMUP_S as CAPACITY_WARMUP_S
from harness.run.capacity import probe_s as capacity_probe_s
from harness.run.options import Options
from servers.registry import WRK_IMAGE

# Settings of a server the harness starts; a target's are unknown, so they cannot be given.
SERVER_SETTINGS = (
    "SERVER", "STYLES", "POOLS", "POOL_TIMEOUT", "TOKENS", "WORKERS", "ROWS", "STACK",
    "DATABASE_URL", "OCCUPANCY", "DB_LATENCY", "DRIVERS", "LAYERS", "WITH_CEILINGS",
)  # fmt: skip


def _choices(given: Given, name: str, kind: Any) -> list[Any]:
    return parse_choices(given[name], name, kind, [k.value for k in kind])


def _workloads(given: Given) -> tuple[Workload, ...]:
    """The demo app's endpoints (a foreign service's `requests` is never a choice)."""
    demo = [w.value for w in Workload if w is not Workload.requests]
    return tuple(parse_choices(given["WORKLOAD"], "WORKLOAD", Workload, demo))


def _rows(given: Given) -> list[int]:
    return parse_positive_ints(given["ROWS"], "ROWS", 100_000)


def _workers(given: Given, ordered: bool = False) -> list[int]:
    return parse_workers(given["WORKERS"], cpu_count(), ordered)


# A user's app's own settings, refused for the demo app and a target.
APP_SETTINGS = ("APP_DIR", "APP_PYTHON", "APP_ENV", "APP_PATH")


def _refuse_without_app(given: Given, names: Sequence[str]) -> None:
    for name in names:
        if name in given.explicit:
            raise UsageError(f"{name}: only with APP (module:attr, the app to measure)")


def bench_cells(given: Given) -> list[Cell]:
    """The cells `make bench` or `make decide` asked for: the matrix of its axes, or the
    target's levels."""
    duration = parse_wrk_seconds(given["DURATION"], "DURATION")
    workloads = _workloads(given)
    connections = tuple(parse_positive_ints(given["CONNECTIONS"], "CONNECTIONS", 10_000))
    load_kinds, rates, cap = _loads(given)
    remote = given.values.get("ALLOW_REMOTE", "") not in ("", "0")
    if remote and not given.values.get("TARGET"):
        raise UsageError("ALLOW_REMOTE: only with TARGET (what the harness starts is on 127.0.0.1)")
    load = loads(load_kinds, connections, rates, cap)
    if given.values.get("APP"):
        return app_cells(given, duration, connections, load)
    if given.command == "decide" and "MODES" in given.explicit:
        raise UsageError("MODE: only with APP; make decide's modes are its VARIANTS")
    _refuse_without_app(given, APP_SETTINGS)
    if given.values.get("REQUESTS") and not given.values.get("TARGET"):
        raise UsageError(
            "REQUESTS: only with TARGET or APP (the demo app's requests are its WORKLOAD)"
        )
    if given.values.get("TARGET"):
        return _target_bench_cells(given, workloads, connections, duration, load, remote)
    variants, styles_name = _bench_variants(given)
    chosen = parse_stacks(
        given["STACK"], "TOKENS" in given.explicit, [s for _, s in variants], styles_name
    )
    in_use = tuple(dict.fromkeys(driver_mode(m, s) for m, s in variants))
    # A row of the decision table sets one async variant against one sync one.
    deciding = given.command == "decide"
    one = "a decision table is for one {} (run one decision for each)"
    drivers = parse_drivers(
        given["DRIVERS"],
        in_use,
        "DRIVERS" in given.explicit,
        one_each=one.format("driver per mode") if deciding else "",
    )
    refuse_in_2021(chosen, drivers)
    layers = _choices(given, "LAYERS", Layer)
    occupancy = parse_choices(given["OCCUPANCY"], "OCCUPANCY", "on".__eq__, ["on", "off"])
    if deciding:
        parse_one(layers, "LAYERS", one.format("layer"))
        parse_one(occupancy, "OCCUPANCY", one.format("OCCUPANCY setting"))
    return Matrix(
        servers=tuple(parse_servers(given["SERVER"], chosen)),
        workloads=workloads,
        variants=variants,
        pools=tuple(parse_pools(given["POOLS"])),
        tokens=tuple(parse_positive_ints(given["TOKENS"], "TOKENS", 10_000)),
        workers=tuple(_workers(given)),
        connections=connections,
        duration_s=duration,
        rows=tuple(_rows(given)),
        pool_timeout_s=parse_duration(given["POOL_TIMEOUT"], "POOL_TIMEOUT"),
        stacks=tuple(chosen),
        executor_threads=stacks.executor_threads() if Stack.y2021 in chosen else 0,
        occupancy=tuple(occupancy),
        db_latencies=tuple(parse_latencies(given["DB_LATENCY"])),
        drivers=tuple(drivers),
        layers=tuple(layers),
        ceilings=given.values.get("WITH_CEILINGS", "") not in ("", "0"),
        loads=load_kinds,
        rates=rates,
        open_connections=cap,
    ).cells()


def _target_bench_cells(
    given: Given,
    workloads: tuple[Workload, ...],
    connections: tuple[int, ...],
    duration: float,
    load: Sequence[tuple[int, float | None]],
    remote: bool,
) -> list[Cell]:
    """A running service's levels (TARGET): its one mode, sent TARGET's path or REQUESTS, or
    the demo app's WORKLOAD where it is the demo app; its server's settings are not ours."""
    modes = tuple(_choices(given, "MODES", Mode))
    base, path = parse_target(given["TARGET"], remote)
    target = Target(base, requests_to_send(given, path))
    if target.requests:
        if "WORKLOAD" in given.explicit:
            raise UsageError(
                "WORKLOAD: names the demo app's endpoints; a service's own requests are "
                "TARGET's path or REQUESTS"
            )
        workloads = (Workload.requests,)
    if refused := [n for n in SERVER_SETTINGS if n in given.explicit]:
        named = ", ".join(f"{n} ({BY_NAME[n].flag})" for n in refused)
        raise UsageError(
            f"TARGET: {named} cannot be used with a target: the harness does not start that "
            "server, so its settings are recorded as unknown"
        )
    if len(modes) != 1 or "MODES" not in given.explicit:
        raise UsageError("MODE: say which app the target serves: sync or async")
    return target_cells(target, modes[0], workloads, connections, duration, load)


def _bench_variants(given: Given) -> tuple[tuple[tuple[Mode, SessionStyle], ...], str]:
    """The demo app's variants, and the setting that named them: make decide's VARIANTS, make
    bench's MODES x STYLES."""
    if given.command == "decide":
        variants = tuple(parse_variants(given["VARIANTS"]))
        if any(style is SessionStyle.blocking for _, style in variants):
            raise UsageError(
                "VARIANTS: async-blocking is a mistake kept for make diagnose and the map; a "
                "decision sets sync against async done right"
            )
        return variants, "VARIANTS"
    modes = tuple(_choices(given, "MODES", Mode))
    styles = tuple(_choices(given, "STYLES", SessionStyle))
    variants = tuple(itertools.product(modes, styles))
    refuse_sync_blocking(variants, "STYLES")
    return variants, "STYLES"


# The demo app's settings: a user's app has its own, which the harness does not set.
DEMO_SETTINGS = tuple(n for n in SERVER_SETTINGS if n not in ("SERVER", "TOKENS", "WORKERS"))
APP_SPEC = re.compile(r"^[A-Za-z_][\w.]*(:[A-Za-z_][\w.]*)?$")


def user_apps(given: Given) -> list[tuple[UserApp, Mode]]:
    """The user's apps (APP, a comma list: a sync and an async version of a service, say), each
    with its mode (MODES: one for all, or one each, in order); their server, tokens and workers
    are placeholders that each cell or line sets."""
    specs = _app_specs(given)
    demo = (*DEMO_SETTINGS, "WORKLOAD", "TARGET", "TARGET_PID", "VARIANTS", "CEILING_LEVELS")
    if given_demo := [n for n in demo if n in given.explicit]:
        raise UsageError(
            f"APP: {given_demo[0]} is the demo app's setting; your app has its own (give them "
            "in APP_ENV)"
        )
    modes = _app_modes(given, len(specs))
    directory = Path(given["APP_DIR"]).resolve()
    if not directory.is_dir():
        raise UsageError(f"APP_DIR: {given['APP_DIR']!r} is not a folder")
    python = given["APP_PYTHON"] or sys.executable
    if not Path(python).is_file() or not os.access(python, os.X_OK):
        raise UsageError(f"APP_PYTHON: {python!r} is not an executable file (a venv's bin/python)")
    requests = _app_requests(given)
    servers = parse_servers(given["SERVER"])
    found = userenv.check_servers(python, servers)
    env = _app_env(given["APP_ENV"])
    return [
        (
            UserApp(
                app=spec,
                name=servers[0],
                tokens=1,
                workers=1,
                requests=requests,
                directory=str(directory),
                python=str(Path(python).absolute()),
                env=env,
                executor=userenv.runs_on_executor(found),
            ),
            mode,
        )
        for spec, mode in zip(specs, modes, strict=True)
    ]


def _app_specs(given: Given) -> list[str]:
    """APP's module:attr items, each named once."""
    specs = [t.strip() for t in given["APP"].split(",") if t.strip()]
    for spec in specs:
        if not APP_SPEC.match(spec):
            raise UsageError(f"APP: {spec!r} is not module:attr, e.g. main:app or service.api:app")
    if len(set(specs)) != len(specs):
        raise UsageError(f"APP: {given['APP']!r} names an app twice")
    return specs


def _app_modes(given: Given, apps: int) -> list[Mode]:
    """Each app's mode: MODES given once for all `apps`, or once for each in APP's order."""
    modes = [m.strip() for m in given["MODES"].split(",")] if "MODES" in given.explicit else []
    if not modes:
        raise UsageError("MODE: say how your app reaches its database: sync or async")
    if len(modes) == 1:
        modes *= apps
    if len(modes) != apps or any(m not in {x.value for x in Mode} for m in modes):
        raise UsageError(
            f"MODES: {given['MODES']!r}: give sync or async, once for every app or once for "
            f"each of the {apps} apps, in APP's order"
        )
    return [Mode(m) for m in modes]


def _app_requests(given: Given) -> Requests:
    """What the user's app is sent: APP_PATH, or the REQUESTS file."""
    path = given["APP_PATH"]
    if path and not PATH.match(path):
        raise UsageError(
            f"APP_PATH: {path!r} must start with / and be printable ASCII without spaces"
        )
    if not path and not given["REQUESTS"]:
        raise UsageError("APP: say what to send it: APP_PATH=/items, or REQUESTS=file.toml")
    requests = requests_to_send(given, path)
    assert requests is not None
    return requests


def app_cells(
    given: Given,
    duration: float,
    connections: Sequence[int],
    load: Sequence[tuple[int, float | None]],
) -> list[Cell]:
    """The cells of a run of the user's apps: each app x server x tokens x workers, at each
    level (make decide: one sync app and one async app, set against each other)."""
    apps = user_apps(given)
    if given.command == "decide" and sorted(m for _, m in apps) != sorted(Mode):
        raise UsageError(
            "APP: a decision sets a sync app against an async one: give both, e.g. "
            "APP=shop.sync_api:app,shop.async_api:app MODES=sync,async"
        )
    return [
        Cell(
            replace(app, name=server, tokens=tokens, workers=workers),
            mode,
            Workload.requests,
            c,
            duration,
            rate=rate,
        )
        for app, mode in apps
        for server in parse_servers(given["SERVER"])
        for tokens in parse_positive_ints(given["TOKENS"], "TOKENS", 10_000)
        for workers in _workers(given)
        for c, rate in load
    ]


def _app_env(text: str) -> tuple[tuple[str, str], ...]:
    out = []
    try:
        items = shlex.split(text)
    except ValueError as exc:
        raise UsageError(
            f"APP_ENV: {text!r} cannot be split into NAME=value items: {exc}"
        ) from None
    for item in items:
        name, eq, value = item.partition("=")
        if not eq or not re.match(r"^[A-Za-z_][A-Za-z0-9_]*$", name):
            raise UsageError(f"APP_ENV: {item!r} is not NAME=value")
        if name.startswith("SYNCASYNC_") or name == "PYTHONPATH":
            raise UsageError(f"APP_ENV: {name} is the harness's to set (APP, APP_DIR, TOKENS)")
        out.append((name, value))
    return tuple(out)


def requests_to_send(given: Given, path: str) -> Requests | None:
    """What a foreign target is sent: TARGET's path, or the REQUESTS file; None for the demo."""
    source = given.values.get("REQUESTS", "")
    if source and path:
        raise UsageError(f"REQUESTS: TARGET has a path ({path}): give the path or REQUESTS")
    if path:
        return Requests((Request(path=path),))
    return load_requests(Path(source)) if source else None


def load_requests(path: Path) -> Requests:
    """A REQUESTS file, TOML (by its suffix .toml) or JSON, read and checked."""
    try:
        text = path.read_text()
    except OSError as exc:
        raise UsageError(f"REQUESTS: cannot read {path}: {exc.strerror}") from None
    try:
        data = tomllib.loads(text) if path.suffix == ".toml" else json.loads(text)
    except (ValueError, tomllib.TOMLDecodeError) as exc:
        kind = "TOML" if path.suffix == ".toml" else "JSON"
        raise UsageError(f"REQUESTS: {path} is not valid {kind}: {exc}") from None
    return parse_requests(data, str(path))


def _loads(given: Given) -> tuple[tuple[Load, ...], tuple[float, ...], int]:
    """LOAD, and the open loop's RATE and OPEN_CONNECTIONS (refused where it does not run)."""
    if given.command != "run":
        return (Load.closed,), (), 0
    kinds = tuple(_choices(given, "LOAD", Load))
    if Load.open not in kinds:
        if given_open := [n for n in ("RATE", "OPEN_CONNECTIONS") if n in given.explicit]:
            raise UsageError(f"{given_open[0]}: only with LOAD=open (or LOAD=closed,open)")
        return kinds, (), 0
    cap = parse_positive_ints(given["OPEN_CONNECTIONS"], "OPEN_CONNECTIONS", 10_000)
    parse_one(cap, "OPEN_CONNECTIONS", "one limit per run")
    return kinds, tuple(parse_rates(given["RATE"])), cap[0]


def map_plan(given: Given) -> MapPlan:
    """The failure map `make failure-map` asked for."""
    if given.values.get("APP"):
        return _app_map_plan(given)
    _refuse_without_app(given, (*APP_SETTINGS, "REQUESTS"))
    if "MODES" in given.explicit:
        raise UsageError("MODE: only with APP; the demo map's modes are its VARIANTS")
    default = ",".join(
        f"{m}-{s}"
        for m, s in MAP_VARIANTS
        if given["STACK"] != "2021" or s is not SessionStyle.limited
    )
    variants = tuple(parse_variants(given["VARIANTS"] or default))
    stack = parse_one(
        parse_stacks(
            given["STACK"], "TOKENS" in given.explicit, [s for _, s in variants], "VARIANTS"
        ),
        "STACK",
        "a failure map is for one stack; run one map per stack",
    )
    tokens = (
        [stacks.executor_threads()]
        if stack is Stack.y2021
        else parse_positive_ints(given["TOKENS"], "TOKENS", 10_000, ordered=True)
    )
    levels = given["CEILING_LEVELS"]
    # Every mode the map meets: its lines', and async for the HTTP ceiling, if it has one.
    ceiling = levels != "none"
    modes = [
        m
        for m in Mode
        if (m is Mode.async_ and ceiling) or any(driver_mode(v, s) is m for v, s in variants)
    ]
    one = "a failure map is for one driver per mode and one layer; run one map for each"
    drivers = parse_drivers(
        given["DRIVERS"],
        modes,
        "DRIVERS" in given.explicit,
        one_each=one,
        modes_from="VARIANTS and the HTTP ceiling (none with CEILING_LEVELS=none)"
        if ceiling
        else "VARIANTS",
    )
    refuse_in_2021([stack], drivers)
    plan = MapPlan(
        servers=tuple(parse_servers(given["SERVER"], [stack])),
        pools=tuple(parse_pools(given["POOLS"])),
        tokens=tuple(tokens),
        workers=tuple(_workers(given, ordered=True)),
        start=parse_positive_ints(given["START"], "START", 10_000)[0],
        ceiling=parse_positive_ints(given["CEILING"], "CEILING", 10_000)[0],
        duration_s=parse_wrk_seconds(given["DURATION"], "DURATION"),
        rows=parse_one(_rows(given), "ROWS", "a failure map is for one data set"),
        pool_timeout_s=parse_duration(given["POOL_TIMEOUT"], "POOL_TIMEOUT"),
        ceiling_levels=()
        if levels == "none"
        else tuple(parse_positive_ints(levels, "CEILING_LEVELS")),
        variants=variants,
        stack=stack,
        drivers=tuple(drivers),
        layer=parse_one(_choices(given, "LAYERS", Layer), "LAYERS", one),
        onsets=tuple(dict.fromkeys(_choices(given, "ONSETS", Onset))),
        boundary_probes=parse_positive_ints(given["BOUNDARY_PROBES"], "BOUNDARY_PROBES", 10)[0],
        pause_s=0.0 if given["PAUSE"] in ("0", "0s") else parse_duration(given["PAUSE"], "PAUSE"),
        db_latency=parse_one(
            parse_latencies(given["DB_LATENCY"]), "DB_LATENCY", "a failure map is for one latency"
        ),
    )
    if plan.start > plan.ceiling:
        raise UsageError(f"START: {plan.start} is above the ceiling {plan.ceiling}")
    return plan


def _app_map_plan(given: Given) -> MapPlan:
    """A failure map of the user's app: each server, at each token and worker count in turn."""
    apps = user_apps(given)
    if len(apps) != 1:
        raise UsageError("APP: a failure map is for one app; run one map for each")
    ((app, mode),) = apps
    plan = MapPlan(
        servers=tuple(parse_servers(given["SERVER"])),
        pools=tuple(parse_pools(given["POOLS"])),  # the demo's; unused by the app's lines
        tokens=tuple(parse_positive_ints(given["TOKENS"], "TOKENS", 10_000, ordered=True)),
        workers=tuple(_workers(given, ordered=True)),
        start=parse_positive_ints(given["START"], "START", 10_000)[0],
        ceiling=parse_positive_ints(given["CEILING"], "CEILING", 10_000)[0],
        duration_s=parse_wrk_seconds(given["DURATION"], "DURATION"),
        ceiling_levels=(),
        onsets=tuple(dict.fromkeys(_choices(given, "ONSETS", Onset))),
        boundary_probes=parse_positive_ints(given["BOUNDARY_PROBES"], "BOUNDARY_PROBES", 10)[0],
        pause_s=0.0 if given["PAUSE"] in ("0", "0s") else parse_duration(given["PAUSE"], "PAUSE"),
        app=app,
        app_mode=mode,
    )
    if plan.start > plan.ceiling:
        raise UsageError(f"START: {plan.start} is above the ceiling {plan.ceiling}")
    return plan


def options_from(given: Given) -> Options:
    warmup, settle = given["WARMUP"], given["SETTLE"]
    return Options(
        warmup_s=0.0 if warmup in ("0", "0s") else parse_wrk_seconds(warmup, "WARMUP"),
        settle_s=0.0 if settle in ("0", "0s") else parse_duration(settle, "SETTLE"),
        pin=given.on("PIN"),
        wrk_timeout_s=parse_wrk_seconds(given["TIMEOUT"], "TIMEOUT"),
        # make capacity drives its load with the open loop alone: no wrk to choose.
        wrk_runner=_choices(given, "WRK", WrkRunner)[0]
        if "WRK" in given.values
        else WrkRunner.local,
        wrk_image=given.values.get("WRK_IMAGE", WRK_IMAGE),
        database_url=given["DATABASE_URL"] or None,
        keep_logs=given.on("KEEP_LOGS"),
        # A map's probe and a decision's cell only need to know that it collapsed, not how many
        # requests timed out (waiting for that costs up to pool_timeout per collapse).
        await_pool_timeouts=given.command == "run",
        target_pid=target_pid(given),
    )


def target_pid(given: Given) -> int | None:
    text = given.values.get("TARGET_PID", "")
    if not text:
        return None
    if not given["TARGET"]:
        raise UsageError("TARGET_PID: only with TARGET (the harness knows the PIDs it starts)")
    pid = parse_positive_ints(text, "TARGET_PID", 2**22)[0]
    if not pid_running(pid):
        raise UsageError(f"TARGET_PID: no process {pid} is running on this machine")
    return pid


def parameters(given: Given) -> dict[str, Any]:
    """The effective settings (the database URL may hold a password: left out; a target's
    server settings are not the harness's to know)."""
    left_out = {"DATABASE_URL", *(SERVER_SETTINGS if given.values.get("TARGET") else ())}
    if given.values.get("APP"):  # the demo app's settings, and its endpoints, are not used
        left_out |= {*DEMO_SETTINGS, "WORKLOAD", "OCCUPANCY", "VARIANTS", "CEILING_LEVELS"}
    if given.values.get("REQUESTS") or urlsplit(given.values.get("TARGET", "")).path.strip("/"):
        left_out |= {"WORKLOAD", "OCCUPANCY"}
    values = {k.lower(): v for k, v in given.values.items() if k not in left_out}
    return {"command": given.command, **values}


def _search(given: Given, lines: Sequence[Cell], warmup_s: float | None = None) -> CapacityPlan:
    """The capacity search's settings (SLO, START, CEILING, BOUNDARY_PROBES, BUDGET) over
    `lines`; a BUDGET shorter than one probe is refused."""
    start, ceiling = _rates(given)
    plan = CapacityPlan(
        lines=tuple(lines),
        slo=parse_slo(given["SLO"]),
        start=start,
        ceiling=ceiling,
        probes=parse_positive_ints(given["BOUNDARY_PROBES"], "BOUNDARY_PROBES", 20)[0],
        budget_s=parse_duration(given["BUDGET"], "BUDGET"),
        warmup_s=warmup_s,
    )
    if plan.budget_s < (least := capacity_probe_s(plan, options_from(given))):
        raise UsageError(
            f"BUDGET: {given['BUDGET']} is shorter than one probe (about {least:g} s: "
            "warm-up, window, the server's start and stop)"
        )
    return plan


def _rates(given: Given) -> tuple[int, int]:
    start = parse_positive_ints(given["START"], "START", 100_000)[0]
    ceiling = parse_positive_ints(given["CEILING"], "CEILING", 100_000)[0]
    if start > ceiling:
        raise UsageError(f"START: {start} is above CEILING ({ceiling})")
    return start, ceiling


def _open_cap(given: Given) -> int:
    cap = parse_positive_ints(given["OPEN_CONNECTIONS"], "OPEN_CONNECTIONS", 10_000)
    return parse_one(cap, "OPEN_CONNECTIONS", "one limit per run")


def decide_capacity(given: Given, cells: Sequence[Cell]) -> CapacityPlan | None:
    """make decide's capacity search: a line per variant and shape of its cells, but sync
    `dependency` (whose freeze its own column answers for); warm 10 s probes whatever the
    closed loop's DURATION and WARMUP. None where BUDGET=0."""
    if given["BUDGET"].strip() in ("0", ""):
        return None
    start, _ = _rates(given)
    cap = _open_cap(given)
    seed_style = (Mode.sync, SessionStyle.dependency)
    lines = dict.fromkeys(
        replace(c, connections=cap, duration_s=MIN_WINDOW_S, rate=float(start))
        for c in cells
        if (c.mode, c.known("style")) != seed_style
    )
    return _search(given, side_by_side(list(lines)), warmup_s=CAPACITY_WARMUP_S) if lines else None


def capacity_plan(given: Given) -> CapacityPlan:
    """The searches `make capacity` asked for: a line per variant and deployment shape."""
    duration = parse_wrk_seconds(given["DURATION"], "DURATION")
    start, _ = _rates(given)
    if given.values.get("APP"):
        cap = _open_cap(given)
        lines = app_cells(given, duration, (), [(cap, float(start))])
        return _search(given, side_by_side(lines))
    _refuse_without_app(given, (*APP_SETTINGS, "REQUESTS"))
    if "MODES" in given.explicit:
        raise UsageError("MODE: only with APP; make capacity's modes are its VARIANTS")
    variants = tuple(parse_variants(given["VARIANTS"]))
    in_use = tuple(dict.fromkeys(driver_mode(m, s) for m, s in variants))
    # capacity.md names a line by its variant and shape (server, workers, rows, latency):
    # the other settings take one value each.
    one = "make capacity takes one (its lines are told apart by variant and shape only)"
    drivers = parse_drivers(given["DRIVERS"], in_use, "DRIVERS" in given.explicit, one_each=one)
    for name, values in (
        ("POOLS", parse_pools(given["POOLS"])),
        ("TOKENS", parse_positive_ints(given["TOKENS"], "TOKENS", 10_000)),
        ("LAYERS", _choices(given, "LAYERS", Layer)),
        ("WORKLOAD", _workloads(given)),
        ("OCCUPANCY", given["OCCUPANCY"].split(",")),
    ):
        parse_one(values, name, one)
    lines = Matrix(
        servers=tuple(parse_servers(given["SERVER"])),
        workloads=_workloads(given),
        variants=variants,
        pools=tuple(parse_pools(given["POOLS"])),
        tokens=tuple(parse_positive_ints(given["TOKENS"], "TOKENS", 10_000)),
        workers=tuple(_workers(given)),
        connections=(),
        duration_s=duration,
        rows=tuple(_rows(given)),
        pool_timeout_s=parse_duration(given["POOL_TIMEOUT"], "POOL_TIMEOUT"),
        occupancy=tuple(parse_choices(given["OCCUPANCY"], "OCCUPANCY", "on".__eq__, ["on", "off"])),
        db_latencies=tuple(parse_latencies(given["DB_LATENCY"])),
        drivers=tuple(drivers),
        layers=tuple(_choices(given, "LAYERS", Layer)),
        loads=(Load.open,),
        rates=(float(start),),
        open_connections=_open_cap(given),
    ).cells()
    return _search(given, side_by_side(lines))


def serve_config(given: Given) -> tuple[ServerConfig, Mode]:
    """The one server `make serve` starts, and the mode of its app."""
    why = "`make serve` starts one server"
    style = parse_one(_choices(given, "STYLES", SessionStyle), "STYLES", why)
    stack = parse_one(
        parse_stacks(given["STACK"], "TOKENS" in given.explicit, [style]), "STACK", why
    )
    tokens = parse_one(parse_positive_ints(given["TOKENS"], "TOKENS", 10_000), "TOKENS", why)
    mode = parse_one(_choices(given, "MODES", Mode), "MODES", why)
    refuse_sync_blocking([(mode, style)], "STYLES")
    drivers = parse_drivers(
        given["DRIVERS"], [driver_mode(mode, style)], "DRIVERS" in given.explicit, one_each=why
    )
    refuse_in_2021([stack], drivers)
    config = ServerConfig(
        name=parse_one(parse_servers(given["SERVER"], [stack]), "SERVER", why),
        style=style,
        pool=parse_one(parse_pools(given["POOLS"]), "POOLS", why),
        tokens=stacks.executor_threads() if stack is Stack.y2021 else tokens,
        workers=parse_one(_workers(given), "WORKERS", why),
        rows=parse_one(_rows(given), "ROWS", why),
        pool_timeout_s=parse_duration(given["POOL_TIMEOUT"], "POOL_TIMEOUT"),
        stack=stack,
        db_latency=parse_one(parse_latencies(given["DB_LATENCY"]), "DB_LATENCY", why),
        driver=drivers[0][1],
        layer=parse_one(_choices(given, "LAYERS", Layer), "LAYERS", why),
    )
    return config, mode
