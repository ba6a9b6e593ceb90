"""Child processes: free ports, start and stop in their own process group, CPU accounting.

Every child the harness starts is registered here, so an interrupted run can end them all; and
in a file under the system's temporary folder, with the temporary folders it made, so that if
the harness itself is killed the next invocation finds and removes what it left. Each child
is also started to die with the harness (Linux's parent-death signal). In the same folder, the
lock a measuring harness holds, so that a second one is refused instead of disturbing it.
"""

from __future__ import annotations

import ctypes
import json
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psutil

_children: dict[int, subprocess.Popen[bytes]] = {}
_dirs: list[str] = []
# The test suite keeps its own (tests/conftest.py), so `make test` runs beside a user's bench.
LIVE_ENV = "SYNCASYNC_LIVE_DIR"


def live_dir() -> Path:
    """Where this machine's harnesses keep their children's records and the measuring lock."""
    return Path(os.environ.get(LIVE_ENV) or Path(tempfile.gettempdir()) / "syncasync-bench-live")


PR_SET_PDEATHSIG = 1


def die_with_parent(then: Callable[[], None] | None = None) -> Callable[[], None]:
    """A preexec_fn: the child gets SIGKILL when the harness dies, however it dies. Set after
    any change of user (which clears it), since preexec_fn runs after Popen's setuid."""
    parent = os.getpid()

    def preexec() -> None:
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
        if os.getppid() != parent:  # the harness died before the signal was armed
            os._exit(1)
        if then is not None:
            then()

    return preexec


def _record() -> None:
    """This invocation's children and temporary folders, for whoever comes after a kill -9."""
    me = psutil.Process()
    children = []
    for pid in _children:
        with suppress(psutil.Error, ProcessLookupError):
            children.append(
                {"pid": pid, "pgid": os.getpgid(pid), "started": psutil.Process(pid).create_time()}
            )
    live_dir().mkdir(exist_ok=True)
    path = live_dir() / f"{me.pid}.json"
    if not children and not _dirs:
        path.unlink(missing_ok=True)
        return
    data = {"harness": {"pid": me.pid, "started": me.create_time()}, "children": children}
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps({**data, "dirs": _dirs}))
    os.replace(tmp, path)


def register_child(proc: subprocess.Popen[bytes]) -> None:
    _children[proc.pid] = proc
    _record()


def unregister_child(proc: subprocess.Popen[bytes]) -> None:
    _children.pop(proc.pid, None)
    _record()


def register_dir(path: str) -> None:
    _dirs.append(path)
    _record()


def unregister_dir(path: str) -> None:
    with suppress(ValueError):
        _dirs.remove(path)
    _record()


def _same(pid: int, started: float) -> bool:
    """The process `pid` is the one recorded (not another that reused its number)."""
    try:
        return abs(psutil.Process(pid).create_time() - started) < 1.0
    except psutil.Error:
        return False


def _group_left(pgid: int, started: float) -> list[psutil.Process]:
    """What lives on of the process group a recorded child (`pgid`, started at `started`) led.

    The kernel keeps a group's number from new processes while any member lives, so members
    alive now are the recorded group's, unless its number went to a new process after the
    whole group ended: then that new leader (alive, and not the one recorded) says so.
    """
    if pgid == os.getpgrp() or (not _same(pgid, started) and psutil.pid_exists(pgid)):
        return []  # ours, or the number leads someone else's group now
    found = []
    for proc in psutil.process_iter():
        with suppress(psutil.Error, ProcessLookupError):
            if os.getpgid(proc.pid) == pgid and proc.status() != psutil.STATUS_ZOMBIE:
                found.append(proc)
    return found


def clean_leftovers() -> list[str]:
    """End what a killed harness left (its records say what), and say what was removed."""
    said = []
    for path in sorted(live_dir().glob("[0-9]*.json")) if live_dir().is_dir() else []:
        try:
            data = json.loads(path.read_text())
        except (OSError, ValueError):
            path.unlink(missing_ok=True)
            continue
        owner = data["harness"]
        if _same(owner["pid"], owner["started"]):
            continue  # still running: not ours to touch
        for child in data["children"]:
            # The recorded child died with the harness, but what it forked may not have: a
            # gunicorn worker outlives its master. Its group is ended all the same.
            # (Every child is started as the leader of a session, and so of a group, of its own.)
            for member in _group_left(child["pgid"], child["started"]):
                with suppress(psutil.Error):
                    member.kill()
                said.append(f"process {member.pid}")
        for folder in data["dirs"]:
            if Path(folder).exists():
                shutil.rmtree(folder, ignore_errors=True)
                said.append(folder)
        path.unlink(missing_ok=True)
    return said


LOCK = "measuring.json"


def measuring_now() -> dict[str, Any] | None:
    """The other harness measuring on this machine, as its lock says; None if none is (a lock
    whose process has ended, or this process's own, holds nothing)."""
    path = live_dir() / LOCK
    try:
        held = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    if held.get("pid") == os.getpid() or not _same(held["pid"], held["started"]):
        return None
    return dict(held)


def take_lock(**about: Any) -> dict[str, Any] | None:
    """Say, for any harness started after this one, that this one is measuring, and what; or,
    where another live harness already says so, take nothing and return what it says. The lock
    is a hard link made from a complete file, so checking and taking it are one step."""
    me = psutil.Process()
    live_dir().mkdir(exist_ok=True)
    path = live_dir() / LOCK
    tmp = path.with_name(f"{LOCK}.{me.pid}.tmp")
    tmp.write_text(json.dumps({"pid": me.pid, "started": me.create_time(), **about}))
    try:
        for _ in range(3):
            try:
                os.link(tmp, path)
                return None
            except FileExistsError:
                if (held := measuring_now()) is not None:
                    return held
                path.unlink(missing_ok=True)  # its harness has ended (or it is this one's)
        raise OSError(f"could not take the measuring lock {path}")
    finally:
        tmp.unlink(missing_ok=True)


def release_lock() -> None:
    """Drop the lock if it is this process's (a forced harness leaves the other's alone)."""
    path = live_dir() / LOCK
    with suppress(OSError, ValueError):
        if json.loads(path.read_text()).get("pid") == os.getpid():
            path.unlink()


def cpu_split() -> tuple[frozenset[int], frozenset[int]]:
    """(CPUs for the servers and PostgreSQL, CPUs for wrk): wrk alone on the last usable CPU."""
    cpus = sorted(os.sched_getaffinity(0))
    if len(cpus) < 2:
        return frozenset(cpus), frozenset(cpus)
    return frozenset(cpus[:-1]), frozenset(cpus[-1:])


@contextmanager
def pinned(cpus: frozenset[int]) -> Iterator[None]:
    """Run this process, and every child it starts meanwhile, on `cpus` only."""
    before = os.sched_getaffinity(0)
    os.sched_setaffinity(0, cpus)
    try:
        yield
    finally:
        os.sched_setaffinity(0, before)


def free_port() -> int:
    """A port free on 127.0.0.1 right now (a race remains; callers retry on 'in use')."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def kill_group(proc: subprocess.Popen[bytes], grace: float = 5.0) -> None:
    """SIGTERM the child's process group, then SIGKILL whatever is left after `grace` seconds."""
    members = group_members(proc.pid)
    with suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGTERM)
    with suppress(subprocess.TimeoutExpired):
        proc.wait(grace)
    with suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGKILL)
    # Workers that re-parented (e.g. a supervisor killed first) are still in `members`.
    for member in members:
        with suppress(psutil.Error):
            member.kill()
    with suppress(subprocess.TimeoutExpired):
        proc.wait(grace)
    psutil.wait_procs(members, timeout=grace)
    unregister_child(proc)


def kill_all_children(keep: frozenset[int] = frozenset()) -> None:
    """End every registered child but those in `keep` (started before, by someone else)."""
    for pid, proc in list(_children.items()):
        if pid not in keep:
            kill_group(proc, grace=3.0)


def registered() -> frozenset[int]:
    return frozenset(_children)


def group_members(pid: int) -> list[psutil.Process]:
    try:
        root = psutil.Process(pid)
        return [root, *root.children(recursive=True)]
    except psutil.Error:
        return []


def tree_cpu_seconds(pid: int) -> float:
    """CPU time (user + system) of a process, its live descendants and its reaped children.

    Children that exited and were reaped count through their parent's `children_*` times,
    so a PostgreSQL backend that ended inside the window is not lost.
    """
    total = 0.0
    for proc in group_members(pid):
        with suppress(psutil.Error):
            t = proc.cpu_times()
            total += t.user + t.system + t.children_user + t.children_system
    return total


def wait_with_rusage(proc: subprocess.Popen[bytes], timeout: float) -> tuple[int | None, float]:
    """Wait for `proc` up to `timeout`; return (exit code or None if killed, its CPU seconds)."""
    deadline = time.monotonic() + timeout
    while True:
        pid, status, usage = os.wait4(proc.pid, os.WNOHANG)
        if pid:
            proc.returncode = os.waitstatus_to_exitcode(status)
            unregister_child(proc)
            return proc.returncode, usage.ru_utime + usage.ru_stime
        if time.monotonic() > deadline:
            with suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
            _, status, usage = os.wait4(proc.pid, 0)
            proc.returncode = os.waitstatus_to_exitcode(status)
            unregister_child(proc)
            return None, usage.ru_utime + usage.ru_stime
        time.sleep(0.05)


@dataclass(frozen=True)
class Finished:
    code: int | None  # None: killed at the timeout
    cpu_s: float  # its CPU seconds (wait4), start-up included
    wall_s: float
    stdout: str
    stderr: str


def run_measured(
    argv: list[str],
    timeout: float,
    cwd: Path | None = None,
    then: Callable[[], None] | None = None,
) -> Finished:
    """Run a load generator to completion in a session of its own (killed past `timeout`,
    and with the harness), its output and CPU kept; `then` runs in the child before exec."""
    with tempfile.TemporaryFile() as out, tempfile.TemporaryFile() as err:
        t0 = time.monotonic()
        proc = subprocess.Popen(
            argv,
            stdout=out,
            stderr=err,
            cwd=cwd,
            start_new_session=True,
            preexec_fn=die_with_parent(then),
        )
        register_child(proc)
        code, cpu = wait_with_rusage(proc, timeout)
        wall = time.monotonic() - t0
        out.seek(0)
        err.seek(0)
        return Finished(
            code,
            cpu,
            wall,
            out.read().decode(errors="replace"),
            err.read().decode(errors="replace"),
        )


def port_in_use(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        return sock.connect_ex(("127.0.0.1", port)) == 0


def pid_running(pid: int) -> bool:
    return psutil.pid_exists(pid)
