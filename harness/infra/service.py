"""A running service seen from outside: its processes (found from the port it listens on), the
TCP connections each holds (the kernel's socket table) and the CPU each uses."""

from __future__ import annotations

from collections import Counter
from contextlib import suppress
from dataclasses import dataclass, field

import psutil

from harness.domain.errors import HarnessError, UsageError


@dataclass(frozen=True)
class Service:
    port: int
    root: int  # the process that owns the others (gunicorn's arbiter, uvicorn's supervisor)
    processes: tuple[int, ...]  # every process of it that may serve: the root and descendants
    found_from: str  # "port 8000" or "PID 4417"

    def describe(self) -> str:
        n = len(self.processes)
        return f"{n} process{'es' if n != 1 else ''} ({self.found_from})"


@dataclass(frozen=True)
class Sockets:
    """One process's established TCP connections: from clients to the service's port, and out,
    counted by the remote address (a database's port shows how many connections it holds)."""

    clients: int
    out: dict[str, int] = field(default_factory=dict)


def listening(port: int) -> list[int]:
    """The PIDs with a TCP socket listening on `port` (every address)."""
    try:
        found = psutil.net_connections(kind="tcp")
    except psutil.AccessDenied:
        raise HarnessError(
            "the socket table may not be read here; give the service's PID (PID=...)"
        ) from None
    return sorted(
        {c.pid for c in found if c.status == psutil.CONN_LISTEN and c.laddr.port == port and c.pid}
    )


def find(port: int, pid: int | None = None) -> Service:
    """The service on `port`: from `pid` where given, else from a process listening there. The
    root is the highest ancestor that listens too (gunicorn's arbiter: its workers share its
    socket, and the kernel's table names one holder of a socket only); its descendants are the
    processes that may serve."""
    if pid is not None:
        if not psutil.pid_exists(pid):
            raise UsageError(f"PID: no process {pid} is running on this machine")
        tree = _tree(pid)
        if not any(_listens(p, port) for p in tree):
            raise UsageError(
                f"PID: neither process {pid} nor a process under it listens on port {port} "
                "(TARGET's); name the service's own process"
            )
        return Service(port, pid, tree, f"PID {pid}")
    pids = listening(port)
    if not pids:
        raise UsageError(
            f"TARGET: nothing listens on port {port} that this user may see; start the service, "
            "or give its PID (PID=...)"
        )
    roots = sorted({_root(p, port) for p in pids})
    if len(roots) != 1:
        named = ", ".join(map(str, roots))
        raise UsageError(f"PID: processes {named} listen on port {port} apart; name one (PID=...)")
    return Service(port, roots[0], _tree(roots[0]), f"port {port}")


def _listens(pid: int, port: int) -> bool:
    try:
        conns = psutil.Process(pid).net_connections(kind="tcp")
    except psutil.Error:
        return False
    return any(c.status == psutil.CONN_LISTEN and c.laddr.port == port for c in conns)


def _root(pid: int, port: int) -> int:
    while (parent := _parent(pid)) is not None and _listens(parent, port):
        pid = parent
    return pid


def _parent(pid: int) -> int | None:
    try:
        return psutil.Process(pid).ppid()
    except psutil.Error:
        return None


def _tree(pid: int) -> tuple[int, ...]:
    try:
        root = psutil.Process(pid)
        return (pid, *(c.pid for c in root.children(recursive=True)))
    except psutil.Error:
        return (pid,)


def sockets(pid: int, port: int) -> Sockets | None:
    """`pid`'s established TCP connections now, or None where it is gone or may not be read."""
    try:
        conns = psutil.Process(pid).net_connections(kind="tcp")
    except psutil.Error:
        return None
    established = [c for c in conns if c.status == psutil.CONN_ESTABLISHED and c.raddr]
    clients = sum(1 for c in established if c.laddr.port == port)
    out = Counter(f"{c.raddr.ip}:{c.raddr.port}" for c in established if c.laddr.port != port)
    return Sockets(clients, dict(out.most_common()))


def cpu_seconds(pid: int) -> float | None:
    with suppress(psutil.Error):
        t = psutil.Process(pid).cpu_times()
        return t.user + t.system
    return None


def command_line(pid: int) -> str:
    with suppress(psutil.Error):
        return " ".join(psutil.Process(pid).cmdline())[:200]
    return ""
