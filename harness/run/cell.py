"""The lifecycle of one cell, always the same, in named phases:

reset the data set -> start the server fresh -> wait until ready (bounded) -> verify the
responses and the database -> warm up -> measure with wrk -> settle (keep a stalled server up
until its pool timeouts are logged) -> stop the server and all its workers -> account (leftover
connections, inserted rows, CPU) -> judge, from the measurement and the server's log.

A target (a server the harness did not start) has only: verify -> warm up -> measure -> judge.
"""

from __future__ import annotations

import os
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, replace
from functools import partial
from pathlib import Path
from typing import Any, TypedDict, Unpack

import psycopg2
from sqlalchemy import exc as sqlalchemy_errors

from harness.domain.axes import (
    DEFAULT_DRIVER,
    FROZEN,
    WORKLOAD_PATH,
    Mode,
    Onset,
    Stack,
    Verdict,
    Workload,
    WrkRunner,
    driver_mode,
)
from harness.domain.cell import Cell, ServerConfig, Target, UserApp
from harness.domain.occupancy import ThreadDump, Timeline, Window, summarize, window_of
from harness.domain.result import CellResult, Checks, Cpu, Integrity, Ramp, WrkResult
from harness.domain.rules import STEADY_TREND, Judgement, Rule, by_answers, judge
from harness.infra import answers, openloop, postgres, stacks, userenv, wrk
from harness.infra.environment import now_iso
from harness.infra.occupancy import DumpFailed, Sampler, await_registered, dump_threads
from harness.infra.process import cpu_split, free_port, tree_cpu_seconds
from harness.infra.relay import Relay, relayed
from harness.infra.server import LogCounts, ServerProcess, get_json, read_log
from harness.run.options import POOL_TIMEOUT_GRACE_S, Options
from servers.registry import USER_APP_DIR, Launch

# The longest wait, after a warm-up (or a ramp's previous level), for the requests still in the
# server to finish before the measured window opens; a window opened after it is not clean.
EMPTY_WAIT_S = 5.0
# A foreign service's answers are sampled this often under load (harness/infra/answers.py): a
# request every half second is a connection's worth of load at most, beside the run's.
CHECK_EVERY_S = 0.5
PORT_IN_USE = ("address already in use", "Address already in use")


def server_env(
    config: ServerConfig, mode: Mode, url: str, occupancy_dir: Path | None = None
) -> dict[str, str]:
    # The names `make bench` gives them (app/settings.py reads them).
    env = {
        "DRIVERS": str(config.driver or DEFAULT_DRIVER[driver_mode(mode, config.style)]),
        "LAYER": str(config.layer),
        "DATABASE_URL": url,
        "POOLS": str(config.pool),
        "POOL_TIMEOUT": f"{config.pool_timeout_s:g}s",
        "TOKENS": str(config.tokens),
        "STYLE": str(config.style),
        "OCCUPANCY": "true" if config.occupancy else "false",
    }
    if config.stack is Stack.y2021:
        del env["TOKENS"]  # no limiter to size; the app refuses the setting there
    if config.occupancy and occupancy_dir is not None:
        env["OCCUPANCY_DIR"] = str(occupancy_dir)
    return env


def verify_users(base_url: str, rows: int | None, timeout_s: float = 10.0) -> str | None:
    """None if GET /users answers `rows` {email} objects (any number if rows is unknown)."""
    try:
        status, body = get_json(base_url + WORKLOAD_PATH[Workload.list], timeout_s)
    except OSError as exc:
        return f"GET /users failed: {exc}"
    if status != 200 or not isinstance(body, list):
        return f"GET /users answered {status}, not a JSON list"
    if rows is not None and len(body) != rows:
        return f"GET /users returned {len(body)} rows, expected {rows}"
    if any(not isinstance(item, dict) or set(item) != {"email"} for item in body):
        return "GET /users items are not {email} objects"
    return None


def _verify(server: ServerProcess, config: ServerConfig, url: str) -> str | None:
    """None if the server answers as it should and the database saw it; else what was wrong."""
    if problem := verify_users(server.url(""), config.rows):
        return problem
    status, body = server.get(WORKLOAD_PATH[Workload.insert])
    if status != 200 or not isinstance(body, dict) or not isinstance(body.get("id"), int):
        return f"GET {WORKLOAD_PATH[Workload.insert]} answered {status} {body!r}"
    if (count := postgres.count_rows(url)) != config.rows + 1:
        return f"the insert endpoint left {count} rows, expected {config.rows + 1}"
    postgres.delete_row(url, body["id"])  # back to the recorded data set
    return None


@contextmanager
def _start(
    config: ServerConfig, mode: Mode, url: str, options: Options, log: Path
) -> Iterator[tuple[ServerProcess, Path | None]]:
    """Start the server and wait until it answers; another port if the one picked was taken
    in the meantime (a port in use must never fail a cell). With the side channel on, also the
    directory where its processes register their own channels (OCCUPANCY_DIR): new for each
    start, so no process of an earlier one is listed, and removed once the server has stopped."""
    for attempt in range(3):
        launch = Launch(
            mode=mode,
            port=free_port(),
            workers=config.workers,
            stack=config.stack,
            python=str(stacks.venv_python(config.stack)),
        )
        with tempfile.TemporaryDirectory(prefix="occupancy-") as directory:
            registry = Path(directory) if config.occupancy else None
            env = server_env(config, mode, url, registry)
            with ServerProcess(config.name, launch, env, log) as server:
                server.ready = server.wait_ready(options.start_timeout_s)
                if server.ready and registry is not None:
                    # Fewer is no failure: the sampler and the verdict say which went unsampled.
                    await_registered(registry, config.workers, options.start_timeout_s)
                text = "" if server.ready else log.read_text(errors="replace")
                if not any(m in text for m in PORT_IN_USE) or attempt == 2:
                    yield server, registry
                    return


def _settle(server: ServerProcess, log: Path, deadline: float, logged: int = 0) -> float:
    """Keep a stalled server up until its first pool timeout is logged (or `deadline`).

    A stall lasts `pool_timeout` from when requests began to wait; a cell is usually shorter,
    so without this wait the QueuePool errors that explain the stall would never be seen.
    """
    t0 = time.monotonic()
    while time.monotonic() < deadline and server.alive:
        if read_log(log).pool_timeouts > logged:  # more than the `logged` before the stall
            break
        time.sleep(0.25)
    return time.monotonic() - t0


LoadCommand = wrk.WrkCommand | openloop.OpenLoopCommand


def _load_command(cell: Cell, base_url: str, options: Options) -> LoadCommand:
    """The measured run's load: wrk, or the open loop at the cell's rate (a warm-up is the
    same with its own duration)."""
    cpus = cpu_split()[1] if options.pin else frozenset()
    requests = cell.requests
    url = base_url + (requests.items[0].path if requests else WORKLOAD_PATH[cell.workload])
    if cell.rate is not None:
        return openloop.OpenLoopCommand(
            url=url,
            rate=cell.rate,
            connections=cell.connections,
            duration_s=cell.duration_s,
            timeout_s=options.wrk_timeout_s,
            cpus=cpus,
            requests=requests,
        )
    return wrk.WrkCommand(
        cpus=cpus,
        url=url,
        requests=requests,
        connections=cell.connections,
        duration_s=cell.duration_s,
        threads=wrk.threads_for(cell.connections),
        timeout_s=options.wrk_timeout_s,
        runner=options.wrk_runner,
        image=options.wrk_image,
    )


def _generate(command: LoadCommand) -> wrk.WrkRun:
    if isinstance(command, openloop.OpenLoopCommand):
        return openloop.run(command)
    return wrk.run(command)


def _local(command: LoadCommand, options: Options) -> bool:
    """Whether the load ran here, so that its CPU was measured (not wrk in a container)."""
    return isinstance(command, openloop.OpenLoopCommand) or options.wrk_runner is WrkRunner.local


def _integrity(config: ServerConfig, cell: Cell, url: str, runs: Sequence[WrkResult]) -> Integrity:
    """Rows the insert endpoint really added (read after the server stopped) against 2xx counted."""
    return Integrity(
        acknowledged=sum(r.ok_requests for r in runs),
        rows_added=postgres.count_rows(url) - config.rows,
        # Each run can end with one request in flight per connection, and a late or broken
        # response may still have committed its row.
        unacknowledged_bound=sum(
            cell.connections + r.timeouts + r.read_errors + r.write_errors for r in runs
        ),
    )


# Stores a raw thread dump beside the record it explains; answers where, for the record.
KeepDump = Callable[[list[dict[str, object]]], str]


def take_dump(pid: int, keep: KeepDump) -> ThreadDump:
    """Where every thread of `pid` (and its workers) stands now; a failure is recorded, not
    raised: a run must not stop because a dump could not be taken."""
    try:
        threads = dump_threads(pid)
    except DumpFailed as exc:
        return ThreadDump(error=str(exc))
    return summarize(threads, file=keep(threads))


def run_target_cell(
    cell: Cell,
    target: Target,
    options: Options,
    best_lower_ok_rps: float | None,
    keep_dump: KeepDump,
    known: list[Any] | None = None,
) -> tuple[CellResult, list[Any] | None]:
    """Measure a server the harness did not start: no reset, no log, its settings unknown.
    A foreign service's answers are held to the shapes `known` (learnt now where None); with
    the record come the shapes (None for the demo app, or where none could be learnt)."""
    started, t0 = now_iso(), time.monotonic()
    base = CellResult(
        cell=cell, verdict=Verdict.ok, pool_timeouts=None, server_errors=None, started_at=started
    )
    shapes: list[Any] | None = None
    if target.requests:
        shapes, problem = answers.verify(target.url, target.requests, known)
    else:
        problem = verify_users(target.url, None)
    if problem:
        return replace(base, verdict=Verdict.failed_verification, note=problem), known
    record = _measure_target(cell, target, options, best_lower_ok_rps, keep_dump, shapes or [])
    return replace(record, started_at=started, elapsed_s=round(time.monotonic() - t0, 2)), shapes


def _measure_target(
    cell: Cell,
    target: Target,
    options: Options,
    best_lower_ok_rps: float | None,
    keep_dump: KeepDump,
    shapes: list[Any],
) -> CellResult:
    base = CellResult(cell=cell, verdict=Verdict.ok, pool_timeouts=None, server_errors=None)
    command = _load_command(cell, target.url, options)
    checker: answers.Checker | None = None
    try:
        # The side channel is the demo app's: a foreign service has none.
        with Sampler(target.url, enabled=target.requests is None) as sampler:
            if options.warmup_s > 0 and cell.onset is not Onset.cold:
                _generate(replace(command, duration_s=options.warmup_s))
            waited = sampler.wait_empty(EMPTY_WAIT_S)
            sampler.mark_measured()
            with ExitStack() as checking:
                if target.requests:
                    checker = checking.enter_context(
                        answers.Checker(
                            target.url,
                            target.requests,
                            shapes,
                            CHECK_EVERY_S,
                            options.wrk_timeout_s,
                        )
                    )
                measured = _generate(command)
    except wrk.LoadFailed as exc:
        return replace(base, verdict=Verdict.load_failed, note=str(exc))
    local = _local(command, options)
    occupancy = sampler.timeline()
    checks = checker.checks() if checker else None
    judgement = by_answers(judge(measured.result, best_lower_ok_rps, occupancy=occupancy), checks)
    dump = None
    if options.target_pid is not None and judgement.verdict in FROZEN:
        dump = take_dump(options.target_pid, keep_dump)
    return replace(
        base,
        verdict=judgement.verdict,
        judged_by=str(judgement.rule),
        judgement=judgement.reason,
        wrk=measured.result,
        occupancy=occupancy,
        threads=dump,
        checks=checks,
        cpu=Cpu(server_s=None, postgres_s=None, wrk_s=round(measured.cpu_s, 2) if local else None),
        window=(window := _window(occupancy, waited)),
        note="; ".join(
            [
                "target mode: the server's settings, log and CPU are unknown to the harness",
                *window_notes(window),
            ]
        ),
    )


@contextmanager
def _start_app(
    app: UserApp, mode: Mode, options: Options, log: Path, database_url: str | None
) -> Iterator[ServerProcess]:
    """The user's app under its server, from its directory, in its interpreter, with its
    environment; waited for until it answers (another port if the one picked was taken)."""
    found = userenv.inspect(app.python)
    for attempt in range(3):
        launch = Launch(
            mode=mode,
            port=free_port(),
            workers=app.workers,
            python=app.python,
            user=True,
            worker_class=userenv.worker_class(found),
        )
        env = {
            **app.environment(database_url),
            "SYNCASYNC_APP": app.app,
            "SYNCASYNC_TOKENS": str(app.tokens),
            # The user's directory first: their modules, not the project's, are found.
            "PYTHONPATH": os.pathsep.join([app.directory, str(USER_APP_DIR)]),
        }
        with ServerProcess(app.name, launch, env, log, cwd=Path(app.directory)) as server:
            server.ready = server.wait_answering(options.start_timeout_s)
            text = "" if server.ready else log.read_text(errors="replace")
            if not any(m in text for m in PORT_IN_USE) or attempt == 2:
                yield server
                return


def run_app_cell(
    cell: Cell,
    app: UserApp,
    options: Options,
    best_lower_ok_rps: float | None,
    log_dir: Path,
    keep_dump: KeepDump,
    database_url: str | None = None,
) -> CellResult:
    """A user's app, started fresh under the cell's server: start -> wait until it answers ->
    verify its answers (status, shape) -> warm up -> measure, its answers sampled -> stop ->
    judge, with what its log says (SQLAlchemy's pool timeouts, the servers' ASGI errors)."""
    started, t0 = now_iso(), time.monotonic()
    log_path = log_dir / f"{cell.id}.log"
    figures: Figures = {}
    judgement: Judgement | None = None
    with _start_app(app, cell.mode, options, log_path, database_url) as server:
        if not server.ready:
            judgement = _not_started(server, options)
        elif (learnt := answers.learn(server.url(""), app.requests))[1]:
            judgement = Judgement(Verdict.failed_verification, Rule.lifecycle, learnt[1] or "")
        else:
            judgement, figures = _measure_app(cell, app, server, learnt[0], options)
            errors = read_log(log_path).server_errors
            if judgement is None:
                throughput = judge(figures["wrk"], best_lower_ok_rps, errors, None, app.workers)
                judgement = by_answers(throughput, figures["checks"])
                if judgement.verdict in FROZEN:
                    figures["threads"] = take_dump(server.pid, keep_dump)
    counts = read_log(log_path)
    if not options.keep_logs:
        log_path.unlink(missing_ok=True)
    lifecycle = judgement.rule is Rule.lifecycle
    return CellResult(
        cell=cell,
        verdict=judgement.verdict,
        judged_by=str(judgement.rule),
        judgement=judgement.reason,
        pool_timeouts=counts.pool_timeouts,
        server_errors=counts.server_errors,
        started_at=started,
        elapsed_s=round(time.monotonic() - t0, 2),
        note=judgement.reason if lifecycle else "",
        log_tail="" if judgement.verdict is Verdict.ok else counts.tail,
        **figures,
    )


def _measure_app(
    cell: Cell, app: UserApp, server: ServerProcess, shapes: list[object], options: Options
) -> tuple[Judgement | None, Figures]:
    """Warm up, then the measured window with the answers sampled; (a lifecycle judgement where
    it went wrong, else None, and the figures)."""
    time.sleep(options.settle_s)
    command = _load_command(cell, server.url(""), options)
    try:
        if options.warmup_s > 0 and cell.onset is not Onset.cold:
            _generate(replace(command, duration_s=options.warmup_s))
        cpu0 = server.cpu_seconds()
        every, timeout = CHECK_EVERY_S, options.wrk_timeout_s
        with answers.Checker(server.url(""), app.requests, shapes, every, timeout) as checker:
            measured = _generate(command)
            cpu1 = server.cpu_seconds()  # before the checker's last sample is waited for
    except wrk.LoadFailed as exc:
        verdict = Verdict.load_failed if server.alive else Verdict.crashed
        return Judgement(verdict, Rule.lifecycle, str(exc)), {}
    local = _local(command, options)
    figures: Figures = {
        "wrk": measured.result,
        "checks": checker.checks(),
        "cpu": Cpu(
            server_s=round(cpu1 - cpu0, 2),
            postgres_s=None,
            wrk_s=round(measured.cpu_s, 2) if local else None,
        ),
    }
    if not server.alive:
        why = f"server {server.exit_status()} during the measured run"
        return Judgement(Verdict.crashed, Rule.lifecycle, why), figures
    return None, figures


def _not_started(server: ServerProcess, options: Options) -> Judgement:
    """A server that exited, or never answered, before its first request."""
    why = "exited" if not server.alive else f"gave no answer in {options.start_timeout_s:g}s"
    return Judgement(Verdict.failed_to_start, Rule.lifecycle, f"server {why}")


def _level_record(
    log_path: Path,
    ramp: Ramp,
    cell: Cell,
    judgement: Judgement,
    since: LogCounts,
    started: str,
    t0: float,
    **figures: Unpack[Figures],
) -> CellResult:
    """A ramp's level's record: what its server logged from its window's opening on."""
    counts = read_log(log_path)
    lifecycle = judgement.rule is Rule.lifecycle
    return CellResult(
        cell=cell,
        verdict=judgement.verdict,
        judged_by=str(judgement.rule),
        judgement=judgement.reason,
        pool_timeouts=counts.pool_timeouts - since.pool_timeouts,
        server_errors=counts.server_errors - since.server_errors,
        started_at=started,
        elapsed_s=round(time.monotonic() - t0, 2),
        note=judgement.reason if lifecycle else "",
        log_tail="" if judgement.verdict is Verdict.ok else _tail_since(log_path, since),
        ramp=ramp,
        **figures,
    )


def run_app_ramp(
    cells: Sequence[Cell],
    ramp: Ramp,
    number: int,
    options: Options,
    best_lower_ok_rps: Callable[[Cell], float | None],
    log_dir: Path,
    keep_dump: KeepDump,
    database_url: str | None = None,
) -> Iterator[CellResult]:
    """One warm ramp (its `number`) of a user's app: started once and verified, then each of
    `cells` (one line's levels, rising) measured in turn after `ramp.pause_s`; it ends at the
    first level that did not hold (an `unknown` one neither held nor froze)."""
    app = cells[0].user_app
    assert app is not None, "a user's app's ramp"
    log_path = log_dir / f"{cells[0].id}@{number}-ramp.log"
    record = partial(_level_record, log_path, ramp)
    nothing = LogCounts(0, 0, "")
    levels = replace(options, warmup_s=0.0, settle_s=0.0)  # the level before is its warm-up
    started, t0 = now_iso(), time.monotonic()
    try:
        with _start_app(app, cells[0].mode, options, log_path, database_url) as server:
            if not server.ready:
                yield record(cells[0], _not_started(server, options), nothing, started, t0)
                return
            shapes, problem = answers.learn(server.url(""), app.requests)
            if problem:
                failed = Judgement(Verdict.failed_verification, Rule.lifecycle, problem)
                yield record(cells[0], failed, nothing, started, t0)
                return
            best = 0.0
            for i, cell in enumerate(cells):
                time.sleep(ramp.pause_s * (i > 0))
                started, t0, since = now_iso(), time.monotonic(), read_log(log_path)
                lifecycle, figures = _measure_app(cell, app, server, shapes, levels)
                if lifecycle is not None:
                    yield record(cell, lifecycle, since, started, t0, **figures)
                    return
                measured, checks = figures["wrk"], figures["checks"]
                lower = max(filter(None, [best_lower_ok_rps(cell), best]), default=None)
                errors = read_log(log_path).server_errors - since.server_errors
                judgement = by_answers(judge(measured, lower, errors, None, app.workers), checks)
                best = max(best, measured.ok_rps)
                if judgement.verdict in FROZEN:
                    figures["threads"] = take_dump(server.pid, keep_dump)
                yield record(cell, judgement, since, started, t0, **figures)
                if judgement.verdict not in (Verdict.ok, Verdict.errors, Verdict.unknown):
                    break
    finally:  # every way out, once the server has stopped
        if not options.keep_logs:
            log_path.unlink(missing_ok=True)


def _window(occupancy: Timeline | None, waited_s: float | None) -> Window | None:
    return window_of(occupancy, waited_s, STEADY_TREND) if occupancy else None


def window_notes(window: Window | None) -> list[str]:
    """What a reader of the record must know about its window, where it was not as it should."""
    if window is None:
        return []
    out = []
    if window.clean is False:
        left = ", ".join(f"PID {p}: {v}" for p, v in window.at_start.items() if v.in_flight)
        out.append(
            f"window not clean: requests still in flight when it opened, {EMPTY_WAIT_S:g} s "
            f"after the load before it ended ({left})"
        )
    if window.steady is False and window.trend is not None:
        out.append(f"window not steady: throughput changed {window.trend:+.0%} across it")
    return out


# Connection-level errors only: a failed query of the harness's own would be a bug, not a loss.
DATABASE_ERRORS = (
    psycopg2.OperationalError,
    psycopg2.InterfaceError,
    sqlalchemy_errors.OperationalError,
    sqlalchemy_errors.InterfaceError,
)


def run_cell(
    cell: Cell,
    config: ServerConfig,
    db: postgres.Database,
    options: Options,
    best_lower_ok_rps: float | None,
    log_dir: Path,
    keep_dump: KeepDump,
) -> CellResult:
    """Run one cell on a server the harness starts, through every phase; a database that stops
    answering in any phase gives the verdict `database-lost` (the server is stopped first)."""
    started = now_iso()
    try:
        return _run_cell(cell, config, db, options, best_lower_ok_rps, log_dir, keep_dump, started)
    except DATABASE_ERRORS as exc:
        return CellResult(
            cell=cell,
            verdict=Verdict.database_lost,
            pool_timeouts=None,
            server_errors=None,
            started_at=started,
            note=f"the database stopped answering: {first_line(exc)}",
        )


def first_line(exc: BaseException) -> str:
    """An exception in one line: its message's first line, or its type."""
    return (str(exc).strip().splitlines() or [type(exc).__name__])[0]


def _run_cell(
    cell: Cell,
    config: ServerConfig,
    db: postgres.Database,
    options: Options,
    best_lower_ok_rps: float | None,
    log_dir: Path,
    keep_dump: KeepDump,
    started: str,
) -> CellResult:
    t0 = time.monotonic()
    postgres.reset_dataset(db.url, config.rows)
    log_path = log_dir / f"{cell.id}.log"
    notes: list[str] = []

    def finish(verdict: Verdict | None, note: str = "", **figures: Unpack[Figures]) -> CellResult:
        """The record; `verdict` None means judge the measured run, with the log's errors and
        every process's samples."""
        counts = read_log(log_path)
        if not options.keep_logs:
            log_path.unlink(missing_ok=True)
        if verdict is None:
            judgement = judge(
                figures["wrk"],
                best_lower_ok_rps,
                counts.server_errors,
                figures.get("occupancy"),
                config.workers,
            )
        else:
            judgement = Judgement(verdict, Rule.lifecycle, note)
        verdict = judgement.verdict
        return CellResult(
            cell=cell,
            verdict=verdict,
            judged_by=str(judgement.rule),
            judgement=judgement.reason,
            pool_timeouts=counts.pool_timeouts,
            server_errors=counts.server_errors,
            started_at=started,
            elapsed_s=round(time.monotonic() - t0, 2),
            note="; ".join(n for n in [*notes, note] if n),
            log_tail="" if verdict is Verdict.ok else counts.tail,
            **figures,
        )

    with ExitStack() as stack:
        # The relay outlives the server (stopped after it): the server's connections close first.
        relay = stack.enter_context(relayed(db.url, config.db_latency))
        app_url = relay.url if relay else db.url
        server, registry = stack.enter_context(
            _start(config, cell.mode, app_url, options, log_path)
        )
        if failed := _start_problem(server, config, db.url, options):
            return finish(failed.verdict, failed.reason)
        time.sleep(options.settle_s)
        load_start = time.monotonic()
        warmup_s = 0.0 if cell.onset is Onset.cold else options.warmup_s
        try:
            load = _load(server, cell, config, registry, options, db.pid, relay, warmup_s)
        except wrk.LoadFailed as exc:
            if server.alive:
                return finish(Verdict.load_failed, str(exc))
            return finish(Verdict.crashed, f"server {server.exit_status()}: {exc}")
        warm, measured, occupancy, cpu = load.warm, load.measured, load.occupancy, load.cpu
        window = _window(occupancy, load.waited_s)
        notes += window_notes(window)
        if crash := _crashed(server, relay):
            return finish(
                Verdict.crashed, crash, wrk=measured.result, occupancy=occupancy, window=window
            )
        frozen = (
            judge(measured.result, best_lower_ok_rps, 0, occupancy, config.workers).verdict
            in FROZEN
        )
        # At once, while the frozen threads still wait (they do until pool_timeout).
        threads = take_dump(server.pid, keep_dump) if frozen else None
        if frozen and options.await_pool_timeouts:
            waited = _settle(
                server, log_path, load_start + config.pool_timeout_s + POOL_TIMEOUT_GRACE_S
            )
            notes.append(f"kept the stalled server up {waited:.0f} s after the run")
    integrity, said = _after_stop(cell, config, db.url, [warm, measured])
    notes += said
    return finish(
        None,
        wrk=measured.result,
        cpu=cpu,
        integrity=integrity,
        occupancy=occupancy,
        threads=threads,
        window=window,
    )


def _start_problem(
    server: ServerProcess, config: ServerConfig, db_url: str, options: Options
) -> Judgement | None:
    """Why a server the harness started cannot be measured (it did not start, or does not answer
    as it should); None if it can."""
    if not server.ready:
        return _not_started(server, options)
    if problem := _verify(server, config, db_url):
        return Judgement(Verdict.failed_verification, Rule.lifecycle, problem)
    return None


def _crashed(server: ServerProcess, relay: Relay | None) -> str:
    """What exited during the measured run, the server or the latency relay ('' if neither)."""
    if not server.alive:
        return f"server {server.exit_status()} during the measured run"
    if relay and relay.proc.poll() is not None:
        return f"the latency relay exited ({relay.proc.returncode}) during the measured run"
    return ""


def _after_stop(
    cell: Cell, config: ServerConfig, db_url: str, runs: Sequence[wrk.WrkRun | None]
) -> tuple[Integrity | None, list[str]]:
    """Once the server has stopped: no connection of it left for the next cell, and an insert
    cell's rows counted against the inserts acknowledged; (that count, notes on what was not
    as it should be)."""
    notes = []
    if left := postgres.drop_client_connections(db_url):
        notes.append(f"{left} connections outlived the server and were terminated")
    if cell.workload is not Workload.insert:
        return None, notes
    integrity = _integrity(config, cell, db_url, [r.result for r in runs if r is not None])
    if not integrity.ok:
        notes.append(
            f"integrity: {integrity.acknowledged} acknowledged, {integrity.rows_added} added"
        )
    return integrity, notes


class Figures(TypedDict, total=False):
    """What a measurement adds to its record: the CellResult fields of the same names."""

    wrk: WrkResult
    cpu: Cpu
    checks: Checks | None
    integrity: Integrity | None
    occupancy: Timeline | None
    threads: ThreadDump | None
    window: Window | None


@dataclass(frozen=True)
class Load:
    """One measured window: the warm-up before it (if any), wrk's run, the samples, the CPU."""

    warm: wrk.WrkRun | None
    measured: wrk.WrkRun
    occupancy: Timeline | None
    waited_s: float | None  # how long the server took to empty before the window opened
    cpu: Cpu
    log_at_open: LogCounts | None = None  # the server's log as the window opened, if asked


def _load(
    server: ServerProcess,
    cell: Cell,
    config: ServerConfig,
    registry: Path | None,
    options: Options,
    db_pid: int | None,
    relay: Relay | None,
    warmup_s: float,
    least_s: float = 0.0,
    log: Path | None = None,
) -> Load:
    """Warm up (for `warmup_s`), wait (at least `least_s`) until no request is in flight in any
    process, then measure `cell` for its duration, sampling every process from the start."""
    command = _load_command(cell, server.url(""), options)
    with Sampler(
        server.url(""), enabled=config.occupancy, registry=registry, processes=config.workers
    ) as sampler:
        # From the warm-up's start: a freeze often begins there.
        warm = _generate(replace(command, duration_s=warmup_s)) if warmup_s > 0 else None
        waited = sampler.wait_empty(EMPTY_WAIT_S, least_s)
        log_at_open = read_log(log) if log is not None else None
        sampler.mark_measured()
        server0, pg0 = server.cpu_seconds(), tree_cpu_seconds(db_pid) if db_pid else None
        relay0 = relay.cpu_seconds() if relay else None
        measured = _generate(command)
    server1, pg1 = server.cpu_seconds(), tree_cpu_seconds(db_pid) if db_pid else None
    relay1 = relay.cpu_seconds() if relay else None
    cpu = Cpu(
        server_s=round(server1 - server0, 2),
        postgres_s=round(pg1 - pg0, 2) if pg0 is not None and pg1 else None,
        wrk_s=round(measured.cpu_s, 2) if _local(command, options) else None,
        relay_s=round(relay1 - relay0, 2) if relay0 is not None and relay1 is not None else None,
    )
    return Load(warm, measured, sampler.timeline(), waited, cpu, log_at_open)


def run_ramp(
    cells: Sequence[Cell],
    ramp: Ramp,
    number: int,
    db: postgres.Database,
    options: Options,
    best_lower_ok_rps: Callable[[Cell], float | None],
    log_dir: Path,
    keep_dump: KeepDump,
    database_lost: Callable[[str], None],
) -> Iterator[CellResult]:
    """One warm ramp: a server started once and verified, then each of `cells` (one line's
    levels, rising) measured in turn once the server has emptied and `ramp.pause_s` has passed.
    Yields each level's record; the ramp ends at the first level that did not hold (its record
    once the server has stopped, with what its log showed after the stall); an `unknown` level
    neither held nor froze, and the ramp goes on."""
    done = 0
    try:
        ramp_levels = _ramp(
            cells, ramp, number, db, options, best_lower_ok_rps, log_dir, keep_dump, database_lost
        )
        for result in ramp_levels:
            done += 1
            yield result
    except DATABASE_ERRORS as exc:
        # The level that was being measured (a record never replaces one already written).
        yield CellResult(
            cell=cells[min(done, len(cells) - 1)],
            verdict=Verdict.database_lost,
            pool_timeouts=None,
            server_errors=None,
            started_at=now_iso(),
            note=f"the database stopped answering: {first_line(exc)}",
            ramp=ramp,
        )


def _ramp(
    cells: Sequence[Cell],
    ramp: Ramp,
    number: int,
    db: postgres.Database,
    options: Options,
    best_lower_ok_rps: Callable[[Cell], float | None],
    log_dir: Path,
    keep_dump: KeepDump,
    database_lost: Callable[[str], None],
) -> Iterator[CellResult]:
    config = cells[0].config
    assert config is not None, "a ramp runs on a server the harness starts"
    postgres.reset_dataset(db.url, config.rows)
    log_path = log_dir / f"{cells[0].id}@{number}-ramp.log"
    pending: CellResult | None = None  # the latest level's record: the last one waits for the stop
    best = 0.0
    record = partial(_level_record, log_path, ramp)

    with ExitStack() as stack:
        relay = stack.enter_context(relayed(db.url, config.db_latency))
        app_url = relay.url if relay else db.url
        server, registry = stack.enter_context(
            _start(config, cells[0].mode, app_url, options, log_path)
        )
        start, t0, nothing = now_iso(), time.monotonic(), LogCounts(0, 0, "")
        if failed := _start_problem(server, config, db.url, options):
            pending = record(cells[0], failed, nothing, start, t0)
        for i, cell in enumerate(cells if pending is None else []):
            if pending is not None:
                yield pending
            started, t0, since = now_iso(), time.monotonic(), read_log(log_path)
            try:
                load = _load(
                    server,
                    cell,
                    config,
                    registry,
                    options,
                    db.pid,
                    relay,
                    0.0,
                    ramp.pause_s * (i > 0),
                    log_path,
                )
            except wrk.LoadFailed as exc:
                verdict = Verdict.load_failed if server.alive else Verdict.crashed
                pending = record(
                    cell, Judgement(verdict, Rule.lifecycle, str(exc)), since, started, t0
                )
                break
            # What the server logged before the window (the previous level's late timeouts) is
            # not this level's.
            since = load.log_at_open or since
            window = _window(load.occupancy, load.waited_s)
            figures: Figures = {
                "wrk": load.measured.result,
                "occupancy": load.occupancy,
                "window": window,
            }
            if not server.alive:
                why = f"server {server.exit_status()} during the measured run"
                judgement = Judgement(Verdict.crashed, Rule.lifecycle, why)
                pending = record(cell, judgement, since, started, t0, **figures)
                break
            lower = max(filter(None, [best_lower_ok_rps(cell), best]), default=None)
            errors = read_log(log_path).server_errors - since.server_errors
            judgement = judge(load.measured.result, lower, errors, load.occupancy, config.workers)
            best = max(best, load.measured.result.ok_rps)
            threads = None
            if judgement.verdict in FROZEN:
                settle_until = t0 + ramp.pause_s + config.pool_timeout_s + POOL_TIMEOUT_GRACE_S
                threads = _stalled(server, keep_dump, options, log_path, settle_until, since)
            figures["cpu"], figures["threads"] = load.cpu, threads
            pending = record(cell, judgement, since, started, t0, **figures)
            pending = replace(pending, note="; ".join(window_notes(window)))
            if judgement.verdict not in (Verdict.ok, Verdict.errors, Verdict.unknown):
                break
    if not options.keep_logs:
        log_path.unlink(missing_ok=True)
    assert pending is not None, "a ramp has at least one level"
    note, lost = _after_ramp(db.url)
    yield replace(pending, note="; ".join(filter(None, [pending.note, note])))
    if lost:
        database_lost(lost)


def _stalled(
    server: ServerProcess,
    keep_dump: KeepDump,
    options: Options,
    log_path: Path,
    settle_until: float,
    since: LogCounts,
) -> ThreadDump:
    """A stalled level's threads, dumped at once while they still wait; then, if asked, the
    server kept up until the stall's first pool timeout is logged (or `settle_until`)."""
    threads = take_dump(server.pid, keep_dump)
    if options.await_pool_timeouts:
        _settle(server, log_path, settle_until, since.pool_timeouts)
    return threads


def _after_ramp(db_url: str) -> tuple[str, str]:
    """Once a ramp's server has stopped, its connections left over terminated: (the note on
    them, and the database's loss if it stopped answering: the last record is kept, the loss
    reported)."""
    try:
        left = postgres.drop_client_connections(db_url)
    except DATABASE_ERRORS as exc:
        lost = first_line(exc)
        return f"the database stopped answering after the ramp: {lost}", lost
    return (f"{left} connections outlived the server and were terminated" if left else ""), ""


def _tail_since(path: Path, since: LogCounts, lines: int = 30) -> str:
    """The last `lines` of what was logged after `since` was read."""
    try:
        with path.open("rb") as log:
            log.seek(since.size)
            text = log.read().decode(errors="replace")
    except OSError:
        return ""
    return "\n".join(text.splitlines()[-lines:])
