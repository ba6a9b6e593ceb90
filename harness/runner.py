"""Runs cells, always the same way, and a whole run of them with its metadata and tables.

One cell: reset the data set; start the server fresh; wait until ready (bounded); verify the
responses and the database; warm up; measure with wrk; stop the server and all its workers;
read its log; judge.
"""

from __future__ import annotations

import signal
import sys
import tempfile
import time
from collections.abc import Iterator, Sequence
from contextlib import ExitStack, contextmanager
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from types import FrameType
from typing import Any

from harness import postgres, report, stacks, wrk
from harness.errors import HarnessError, UsageError
from harness.metadata import git_commit, machine, now_iso, package_versions
from harness.model import (
    WORKLOAD_PATH,
    Cell,
    CellResult,
    Cpu,
    Integrity,
    Verdict,
    Workload,
    WrkResult,
)
from harness.process import free_port, kill_all_children, registered, tree_cpu_seconds
from harness.server import ServerProcess, get_json, read_log
from harness.store import RunDir
from harness.verdict import judge
from servers.registry import Launch, Stack

MAX_THROWAWAY_CONNECTIONS = 2000
RESERVED_CONNECTIONS = 10
POOL_TIMEOUT_GRACE_S = 5.0  # the harness's own checks, pgbench's setup, superuser slots


@dataclass(frozen=True)
class Options:
    """How cells are run (not what they measure: that is the Cell)."""

    warmup_s: float = 2.0
    wrk_timeout_s: float = 5.0
    start_timeout_s: float = 30.0
    wrk_runner: wrk.WrkRunner = wrk.WrkRunner.local
    wrk_image: str = wrk.DEFAULT_IMAGE
    database_url: str | None = None
    keep_logs: bool = False
    # After a collapse, wait (up to pool_timeout) for the QueuePool errors that explain it.
    await_pool_timeouts: bool = True

    def estimate_s(self, cell: Cell) -> float:
        overhead = 4.0  # start, verify, stop: measured at 2-4 s on 2 cores
        return overhead + self.warmup_s + cell.duration_s


class Interrupted(Exception):
    """SIGINT or SIGTERM arrived; everything started has been stopped."""


@dataclass
class Database:
    url: str
    pid: int | None  # of the throwaway cluster's postmaster, for CPU accounting


def required_connections(cells: Sequence[Cell]) -> int:
    """The most connections one cell's servers can open: workers x (pool_size + max_overflow)."""
    return max((c.workers * c.pool.capacity for c in cells if c.workers and c.pool), default=0)


def check_capacity(cells: Sequence[Cell], limit: int, where: str) -> None:
    needed = required_connections(cells)
    if needed + RESERVED_CONNECTIONS > limit:
        raise UsageError(
            f"the largest cell needs {needed} connections (workers x (pool_size + max_overflow)) "
            f"plus {RESERVED_CONNECTIONS} for the harness, but {where} allows "
            f"max_connections={limit}"
        )


@contextmanager
def database(
    cells: Sequence[Cell], options: Options, extra_connections: int = 0
) -> Iterator[Database | None]:
    """The database for a run, checked before any cell runs (none if every cell is a target).

    `extra_connections`: what the run itself opens besides the servers (pgbench's clients).
    """
    if all(c.target for c in cells):
        yield None
        return
    if options.database_url:
        db = postgres.check_reachable(options.database_url)
        limit = int(postgres.server_settings(db.url)["max_connections"])
        check_capacity(cells, limit - extra_connections, "the database")
        yield Database(db.url, None)
        return
    check_capacity(cells, MAX_THROWAWAY_CONNECTIONS, "the throwaway PostgreSQL (capped)")
    needed = max(required_connections(cells), extra_connections) + RESERVED_CONNECTIONS
    with postgres.throwaway_cluster(max_connections=max(needed, 100)) as db:
        yield Database(db.url, db.pid)


def _server_env(cell: Cell, url: str) -> dict[str, str]:
    env = {
        "DATABASE_URL": url,
        "POOL_SIZE": str(cell.pool.size),
        "MAX_OVERFLOW": str(cell.pool.overflow),
        "POOL_TIMEOUT": f"{cell.pool_timeout_s:g}",
        "THREADPOOL_TOKENS": str(cell.tokens),
        "SESSION_STYLE": str(cell.style),
    }
    if cell.stack is Stack.y2021:
        del env["THREADPOOL_TOKENS"]  # no limiter to size; the app refuses the setting there
    return env


def _verify_users(base_url: str, rows: int | None) -> str | None:
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


def _verify(server: ServerProcess, cell: Cell, url: str) -> str | None:
    """None if the server answers as it should and the database saw it; else what was wrong."""
    if problem := _verify_users(server.url(""), cell.rows):
        return problem
    assert cell.rows is not None  # a cell the harness starts always has a known data set
    status, body = server.get(WORKLOAD_PATH[Workload.insert])
    if status != 200 or not isinstance(body, dict) or not isinstance(body.get("id"), int):
        return f"GET {WORKLOAD_PATH[Workload.insert]} answered {status} {body!r}"
    if (count := postgres.count_rows(url)) != cell.rows + 1:
        return f"the insert endpoint left {count} rows, expected {cell.rows + 1}"
    postgres.delete_row(url, body["id"])  # back to the recorded data set
    return None


def _cpu_now(server: ServerProcess, db: Database) -> tuple[float, float | None]:
    return server.cpu_seconds(), (tree_cpu_seconds(db.pid) if db.pid else None)


def _await_pool_timeouts(server: ServerProcess, log: Path, deadline: float) -> float:
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


PORT_IN_USE = ("address already in use", "Address already in use")


@contextmanager
def _start(cell: Cell, url: str, options: Options, log: Path) -> Iterator[ServerProcess]:
    """Start the cell's server and wait until it answers; another port if the one picked was
    taken in the meantime (a port in use must never fail a cell)."""
    env = _server_env(cell, url)
    for attempt in range(3):
        launch = Launch(
            mode=cell.mode,
            port=free_port(),
            workers=cell.workers,
            stack=cell.stack,
            python=str(stacks.venv_python(cell.stack)),
        )
        server = ServerProcess(cell.server, launch, env, log)
        with server:
            server.ready = server.wait_ready(options.start_timeout_s)
            text = "" if server.ready else log.read_text(errors="replace")
            if not any(m in text for m in PORT_IN_USE) or attempt == 2:
                yield server
                return


def _wrk_command(cell: Cell, base_url: str, options: Options) -> wrk.WrkCommand:
    return wrk.WrkCommand(
        url=base_url + WORKLOAD_PATH[cell.workload],
        connections=cell.connections,
        duration_s=options.warmup_s,
        threads=wrk.threads_for(cell.connections),
        timeout_s=options.wrk_timeout_s,
        runner=options.wrk_runner,
        image=options.wrk_image,
    )


def run_target_cell(cell: Cell, options: Options, best_lower_ok_rps: float | None) -> CellResult:
    """Measure a server the harness did not start: no reset, no log, its settings unknown."""
    assert cell.target is not None
    started, t0 = now_iso(), time.monotonic()
    base = CellResult(
        cell=cell, verdict=Verdict.ok, pool_timeouts=None, server_errors=None, started_at=started
    )
    if problem := _verify_users(cell.target, None):
        return replace(base, verdict=Verdict.failed_verification, note=problem)
    command = _wrk_command(cell, cell.target, options)
    if options.warmup_s > 0:
        wrk.run(command)
    measured = wrk.run(replace(command, duration_s=cell.duration_s))
    local = options.wrk_runner is wrk.WrkRunner.local
    return replace(
        base,
        verdict=judge(measured.result, best_lower_ok_rps),
        wrk=measured.result,
        cpu=Cpu(server_s=None, postgres_s=None, wrk_s=round(measured.cpu_s, 2) if local else None),
        elapsed_s=round(time.monotonic() - t0, 2),
        note="target mode: the server's settings, log and CPU are unknown to the harness",
    )


def run_cell(
    cell: Cell,
    db: Database,
    options: Options,
    best_lower_ok_rps: float | None,
    log_dir: Path,
) -> CellResult:
    started, t0 = now_iso(), time.monotonic()
    postgres.reset_dataset(db.url, cell.rows)
    log_path = log_dir / f"{cell.id}.log"
    notes: list[str] = []

    def finish(verdict: Verdict | None, note: str = "", **figures: Any) -> CellResult:
        """The record; `verdict` None means judge the measured run, with the log's errors."""
        counts = read_log(log_path)
        if not options.keep_logs:
            log_path.unlink(missing_ok=True)
        if verdict is None:
            verdict = judge(figures["wrk"], best_lower_ok_rps, counts.server_errors)
        return CellResult(
            cell=cell,
            verdict=verdict,
            pool_timeouts=counts.pool_timeouts,
            server_errors=counts.server_errors,
            started_at=started,
            elapsed_s=round(time.monotonic() - t0, 2),
            note="; ".join(n for n in [*notes, note] if n),
            log_tail="" if verdict is Verdict.ok else counts.tail,
            **figures,
        )

    with _start(cell, db.url, options, log_path) as server:
        if not server.ready:
            why = (
                "exited" if not server.alive else f"gave no answer in {options.start_timeout_s:g}s"
            )
            return finish(Verdict.failed_to_start, f"server {why}")
        if problem := _verify(server, cell, db.url):
            return finish(Verdict.failed_verification, problem)
        command = _wrk_command(cell, server.url(""), options)
        load_start = time.monotonic()
        try:
            warm = wrk.run(command) if options.warmup_s > 0 else None
            server_cpu0, pg_cpu0 = _cpu_now(server, db)
            measured = wrk.run(replace(command, duration_s=cell.duration_s))
            server_cpu1, pg_cpu1 = _cpu_now(server, db)
        except HarnessError as exc:
            if server.alive:
                raise
            return finish(Verdict.crashed, f"server {server.exit_status()}: {exc}")
        if not server.alive:
            return finish(
                Verdict.crashed,
                f"server {server.exit_status()} during the measured run",
                wrk=measured.result,
            )
        collapsed = judge(measured.result, best_lower_ok_rps) is Verdict.collapsed
        if collapsed and options.await_pool_timeouts:
            waited = _await_pool_timeouts(
                server, log_path, load_start + cell.pool_timeout_s + POOL_TIMEOUT_GRACE_S
            )
            notes.append(f"kept the stalled server up {waited:.0f} s after the run")
    # A stopped server must leave no connection behind for the next cell.
    if left := postgres.drop_client_connections(db.url):
        notes.append(f"{left} connections outlived the server and were terminated")
    integrity = _integrity(cell, db.url, [r.result for r in (warm, measured) if r is not None])
    if integrity and not integrity.ok:
        notes.append(
            f"integrity: {integrity.acknowledged} acknowledged, {integrity.rows_added} added"
        )
    cpu = Cpu(
        server_s=round(server_cpu1 - server_cpu0, 2),
        postgres_s=round(pg_cpu1 - pg_cpu0, 2) if pg_cpu0 is not None and pg_cpu1 else None,
        wrk_s=round(measured.cpu_s, 2) if options.wrk_runner is wrk.WrkRunner.local else None,
    )
    return finish(None, wrk=measured.result, cpu=cpu, integrity=integrity)


def _integrity(cell: Cell, url: str, runs: Sequence[WrkResult]) -> Integrity | None:
    """Rows the insert endpoint really added (read after the server stopped) against 2xx counted."""
    if cell.workload is not Workload.insert:
        return None
    return Integrity(
        acknowledged=sum(r.ok_requests for r in runs),
        rows_added=postgres.count_rows(url) - cell.rows,
        # Each run can end with one request in flight per connection, and a late or broken
        # response may still have committed its row.
        unacknowledged_bound=sum(
            cell.connections + r.timeouts + r.read_errors + r.write_errors for r in runs
        ),
    )


def best_lower(cell: Cell, done: Sequence[CellResult]) -> float | None:
    """The variant's best successful req/s at fewer connections, among the results so far."""
    rates = [
        r.wrk.ok_rps
        for r in done
        if r.wrk and r.cell.variant == cell.variant and r.cell.connections < cell.connections
    ]
    return max(rates, default=None)


def order(cells: Sequence[Cell]) -> list[Cell]:
    """Each variant's cells by rising connections, so verdicts can compare with lower loads."""
    first_seen = {c.variant: i for i, c in reversed(list(enumerate(cells)))}
    return sorted(cells, key=lambda c: (first_seen[c.variant], c.connections))


class Progress:
    """One line per cell on stderr: position, elapsed and remaining time, the cell, its result."""

    def __init__(self, stream: Any = sys.stderr) -> None:
        self.start, self.stream = time.monotonic(), stream

    def begin(self, cell: Cell, position: str, remaining_s: float) -> None:
        elapsed = time.monotonic() - self.start
        self.stream.write(
            f"[{position}] {_clock(elapsed)} elapsed, ~{_clock(remaining_s)} left"
            f" | {cell.variant} | {cell.connections} connections ... "
        )
        self.stream.flush()

    def end(self, result: CellResult) -> None:
        w = result.wrk
        figures = f"{w.ok_rps:.1f} req/s, p99 {w.p99_ms:.1f} ms, {w.failed} failed, " if w else ""
        pool = f", {result.pool_timeouts} pool timeouts" if result.pool_timeouts else ""
        self.stream.write(f"{figures}{result.verdict}{pool}\n")
        self.stream.flush()


def _clock(seconds: float) -> str:
    seconds = int(seconds)
    return f"{seconds // 60}:{seconds % 60:02d}"


@contextmanager
def _signals_interrupt() -> Iterator[None]:
    def handler(signum: int, frame: FrameType | None) -> None:
        # Further signals are ignored so that the clean-up they interrupt runs to the end.
        for sig in (signal.SIGINT, signal.SIGTERM):
            signal.signal(sig, signal.SIG_IGN)
        raise Interrupted(signal.Signals(signum).name)

    previous = {s: signal.signal(s, handler) for s in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield
    finally:
        for sig, old in previous.items():
            signal.signal(sig, old)


def new_metadata(
    cells: Sequence[Cell], options: Options, parameters: dict[str, Any], kind: str = "run"
) -> dict:
    return {
        "format": 1,
        "kind": kind,
        "started_at": now_iso(),
        "complete": False,
        "git": git_commit(),
        "machine": machine(),
        "packages": package_versions(),
        "stacks": {
            str(stack): {
                "packages": stacks.package_versions(stack),
                "python": stacks.python_version(stack),
            }
            for stack in dict.fromkeys(c.stack for c in cells)
            if stack is not Stack.current
        },
        "parameters": parameters,
        "options": {
            k: str(v) if not isinstance(v, (int, float, bool, type(None))) else v
            for k, v in asdict(options).items()
            if k != "database_url"
        },
        "database": {"managed": options.database_url is None},
        "cells": [c.to_json() for c in cells],
    }


def preflight(cells: Sequence[Cell], options: Options) -> None:
    """What can be checked before a run directory is made or a cell runs."""
    if options.wrk_runner is wrk.WrkRunner.local:
        wrk.local_binary()
    for stack in dict.fromkeys(c.stack for c in cells if not c.target):
        stacks.ensure_venv(stack)
    if options.database_url or all(c.target for c in cells):
        with database(cells, options):
            pass
        return
    postgres.find_binary("initdb")
    postgres.find_binary("postgres")
    check_capacity(cells, MAX_THROWAWAY_CONNECTIONS, "the throwaway PostgreSQL (capped)")


@dataclass
class Session:
    """What cells of a run share: the database, where server logs go, the progress display."""

    run: RunDir
    options: Options
    db: Database | None
    log_dir: Path
    progress: Progress

    def measure(self, cell: Cell, done: Sequence[CellResult]) -> CellResult:
        """Run one cell and write its record at once."""
        best = best_lower(cell, done)
        if cell.target or self.db is None:
            result = run_target_cell(cell, self.options, best)
        else:
            result = run_cell(cell, self.db, self.options, best, self.log_dir)
        self.run.write_record(result)
        self.progress.end(result)
        report.write(self.run)
        return result


@contextmanager
def session(
    run: RunDir,
    options: Options,
    cells: Sequence[Cell],
    stream: Any = sys.stderr,
    extra_connections: int = 0,
) -> Iterator[Session]:
    """Everything a run needs, and on Ctrl-C or SIGTERM: every process ended, finished cells
    kept, the run marked incomplete, and how to resume printed."""
    # Only what this session starts is its to end (a caller may hold a database of its own).
    before = registered()
    try:
        with ExitStack() as stack:
            stack.enter_context(_signals_interrupt())
            log_dir = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="syncasync-")))
            if options.keep_logs:
                log_dir = run.path / "logs"
                log_dir.mkdir(exist_ok=True)
            db = stack.enter_context(database(cells, options, extra_connections))
            settings = postgres.server_settings(db.url) if db else {"server_version": "unknown"}
            run.update_metadata(
                database={**run.metadata().get("database", {}), **settings},
                wrk_version=wrk.version(options.wrk_runner, options.wrk_image),
            )
            yield Session(run, options, db, log_dir, Progress(stream))
    except (Interrupted, KeyboardInterrupt) as exc:
        kill_all_children(keep=before)
        run.update_metadata(complete=False, interrupted_at=now_iso(), interrupted_by=str(exc))
        report.write(run)
        stream.write(
            f"\ninterrupted ({exc}); {len(run.records())} cells kept in {run.path}\n"
            f"resume with: python -m harness {run.metadata().get('kind', 'run')} "
            f"--resume {run.path}\n"
        )
        raise
    finally:
        kill_all_children(keep=before)
    run.update_metadata(complete=True, finished_at=now_iso())
    report.write(run)


def execute(run: RunDir, options: Options, stream: Any = sys.stderr) -> list[CellResult]:
    """Run every cell of `run` that has no record yet; write each record the moment it exists."""
    cells = order([Cell.from_json(c) for c in run.metadata()["cells"]])
    done = run.records()
    done_ids = {r.cell.id for r in done}
    todo = [c for c in cells if c.id not in done_ids]
    with session(run, options, cells, stream) as s:
        for i, cell in enumerate(todo):
            remaining = sum(options.estimate_s(c) for c in todo[i:])
            s.progress.begin(cell, f"{i + 1}/{len(todo)}", remaining)
            done.append(s.measure(cell, done))
    return done
