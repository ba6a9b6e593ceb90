"""The lifecycle of one cell, always the same, in named phases:

reset the data set -> start the server fresh -> wait until ready (bounded) -> verify the
responses and the database -> warm up -> measure with wrk -> settle (keep a stalled server up
until its pool timeouts are logged) -> stop the server and all its workers -> account (leftover
connections, inserted rows, CPU) -> judge, from the measurement and the server's log.

A target (a server the harness did not start) has only: verify -> warm up -> measure -> judge.
"""

from __future__ import annotations

import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import ExitStack, contextmanager
from dataclasses import replace
from pathlib import Path

import psycopg2
from sqlalchemy import exc as sqlalchemy_errors

from harness.domain.axes import (
    DEFAULT_DRIVER,
    FROZEN,
    WORKLOAD_PATH,
    Mode,
    Stack,
    Verdict,
    Workload,
    WrkRunner,
)
from harness.domain.cell import Cell, ServerConfig, Target
from harness.domain.occupancy import ThreadDump, summarize
from harness.domain.result import CellResult, Cpu, Integrity, WrkResult
from harness.domain.rules import Judgement, Rule, judge
from harness.infra import postgres, stacks, wrk
from harness.infra.environment import now_iso
from harness.infra.occupancy import DumpFailed, Sampler, await_registered, dump_threads
from harness.infra.process import cpu_split, free_port, tree_cpu_seconds
from harness.infra.relay import relayed
from harness.infra.server import ServerProcess, get_json, read_log
from harness.run.options import Options
from servers.registry import Launch

POOL_TIMEOUT_GRACE_S = 5.0
PORT_IN_USE = ("address already in use", "Address already in use")


def server_env(
    config: ServerConfig, mode: Mode, url: str, occupancy_dir: Path | None = None
) -> dict[str, str]:
    driver = config.driver or DEFAULT_DRIVER[mode]
    env = {
        "SYNC_DRIVER" if mode is Mode.sync else "ASYNC_DRIVER": str(driver),
        "LAYER": str(config.layer),
        "DATABASE_URL": url,
        "POOL_SIZE": str(config.pool.size),
        "MAX_OVERFLOW": str(config.pool.overflow),
        "POOL_TIMEOUT": f"{config.pool_timeout_s:g}",
        "THREADPOOL_TOKENS": str(config.tokens),
        "SESSION_STYLE": str(config.style),
        "OCCUPANCY": "true" if config.occupancy else "false",
    }
    if config.stack is Stack.y2021:
        del env["THREADPOOL_TOKENS"]  # no limiter to size; the app refuses the setting there
    if config.occupancy and occupancy_dir is not None:
        env["OCCUPANCY_DIR"] = str(occupancy_dir)
    return env


def verify_users(base_url: str, rows: int | None) -> str | None:
    """None if GET /users answers `rows` {email} objects (any number if rows is unknown)."""
    try:
        status, body = get_json(base_url + WORKLOAD_PATH[Workload.list])
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


def _settle(server: ServerProcess, log: Path, deadline: float) -> float:
    """Keep a stalled server up until its first pool timeout is logged (or `deadline`).

    A stall lasts `pool_timeout` from when requests began to wait; a cell is usually shorter,
    so without this wait the QueuePool errors that explain the stall would never be seen.
    """
    t0 = time.monotonic()
    while time.monotonic() < deadline and server.alive:
        if read_log(log).pool_timeouts:
            break
        time.sleep(0.25)
    return time.monotonic() - t0


def _wrk_command(cell: Cell, base_url: str, options: Options) -> wrk.WrkCommand:
    return wrk.WrkCommand(
        cpus=cpu_split()[1] if options.pin else frozenset(),
        url=base_url + WORKLOAD_PATH[cell.workload],
        connections=cell.connections,
        duration_s=options.warmup_s,
        threads=wrk.threads_for(cell.connections),
        timeout_s=options.wrk_timeout_s,
        runner=options.wrk_runner,
        image=options.wrk_image,
    )


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
) -> CellResult:
    """Measure a server the harness did not start: no reset, no log, its settings unknown."""
    started, t0 = now_iso(), time.monotonic()
    base = CellResult(
        cell=cell, verdict=Verdict.ok, pool_timeouts=None, server_errors=None, started_at=started
    )
    if problem := verify_users(target.url, None):
        return replace(base, verdict=Verdict.failed_verification, note=problem)
    command = _wrk_command(cell, target.url, options)
    try:
        with Sampler(target.url) as sampler:
            if options.warmup_s > 0:
                wrk.run(command)
            sampler.mark_measured()
            measured = wrk.run(replace(command, duration_s=cell.duration_s))
    except wrk.LoadFailed as exc:
        return replace(base, verdict=Verdict.load_failed, note=str(exc))
    local = options.wrk_runner is WrkRunner.local
    occupancy = sampler.timeline()
    judgement = judge(measured.result, best_lower_ok_rps, occupancy=occupancy)
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
        cpu=Cpu(server_s=None, postgres_s=None, wrk_s=round(measured.cpu_s, 2) if local else None),
        elapsed_s=round(time.monotonic() - t0, 2),
        note="target mode: the server's settings, log and CPU are unknown to the harness",
    )


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
        reason = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
        return CellResult(
            cell=cell,
            verdict=Verdict.database_lost,
            pool_timeouts=None,
            server_errors=None,
            started_at=started,
            note=f"the database stopped answering: {reason}",
        )


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

    def finish(verdict: Verdict | None, note: str = "", **figures: object) -> CellResult:
        """The record; `verdict` None means judge the measured run, with the log's errors and
        every process's samples."""
        counts = read_log(log_path)
        if not options.keep_logs:
            log_path.unlink(missing_ok=True)
        if verdict is None:
            judgement = judge(
                figures["wrk"],  # type: ignore[arg-type]
                best_lower_ok_rps,
                counts.server_errors,
                figures.get("occupancy"),  # type: ignore[arg-type]
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
            **figures,  # type: ignore[arg-type]
        )

    with ExitStack() as stack:
        # The relay outlives the server (stopped after it): the server's connections close first.
        relay = stack.enter_context(relayed(db.url, config.db_latency))
        app_url = relay.url if relay else db.url
        server, registry = stack.enter_context(
            _start(config, cell.mode, app_url, options, log_path)
        )
        if not server.ready:
            why = (
                "exited" if not server.alive else f"gave no answer in {options.start_timeout_s:g}s"
            )
            return finish(Verdict.failed_to_start, f"server {why}")
        if problem := _verify(server, config, db.url):
            return finish(Verdict.failed_verification, problem)
        command = _wrk_command(cell, server.url(""), options)
        time.sleep(options.settle_s)
        load_start = time.monotonic()
        try:
            # From the warm-up's start: a freeze often begins there.
            with Sampler(
                server.url(""),
                enabled=config.occupancy,
                registry=registry,
                processes=config.workers,
            ) as sampler:
                warm = wrk.run(command) if options.warmup_s > 0 else None
                sampler.mark_measured()
                server_cpu0 = server.cpu_seconds()
                pg_cpu0 = tree_cpu_seconds(db.pid) if db.pid else None
                relay_cpu0 = relay.cpu_seconds() if relay else None
                measured = wrk.run(replace(command, duration_s=cell.duration_s))
            occupancy = sampler.timeline()
            server_cpu1 = server.cpu_seconds()
            pg_cpu1 = tree_cpu_seconds(db.pid) if db.pid else None
            relay_cpu1 = relay.cpu_seconds() if relay else None
        except wrk.LoadFailed as exc:
            if server.alive:
                return finish(Verdict.load_failed, str(exc))
            return finish(Verdict.crashed, f"server {server.exit_status()}: {exc}")
        if not server.alive:
            return finish(
                Verdict.crashed,
                f"server {server.exit_status()} during the measured run",
                wrk=measured.result,
                occupancy=occupancy,
            )
        if relay and relay.proc.poll() is not None:
            return finish(
                Verdict.crashed,
                f"the latency relay exited ({relay.proc.returncode}) during the measured run",
                wrk=measured.result,
                occupancy=occupancy,
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
    # A stopped server must leave no connection behind for the next cell.
    if left := postgres.drop_client_connections(db.url):
        notes.append(f"{left} connections outlived the server and were terminated")
    integrity = None
    if cell.workload is Workload.insert:
        runs = [r.result for r in (warm, measured) if r is not None]
        integrity = _integrity(config, cell, db.url, runs)
        if not integrity.ok:
            notes.append(
                f"integrity: {integrity.acknowledged} acknowledged, {integrity.rows_added} added"
            )
    cpu = Cpu(
        server_s=round(server_cpu1 - server_cpu0, 2),
        postgres_s=round(pg_cpu1 - pg_cpu0, 2) if pg_cpu0 is not None and pg_cpu1 else None,
        wrk_s=round(measured.cpu_s, 2) if options.wrk_runner is WrkRunner.local else None,
        relay_s=round(relay_cpu1 - relay_cpu0, 2)
        if relay_cpu0 is not None and relay_cpu1 is not None
        else None,
    )
    return finish(
        None,
        wrk=measured.result,
        cpu=cpu,
        integrity=integrity,
        occupancy=occupancy,
        threads=threads,
    )
