"""The latency relay (servers/relay.py) as a child process: started for a cell or `make serve`
between the server and PostgreSQL, its port read from its first line, its CPU time measured
like a server's, and always stopped with its process group."""

from __future__ import annotations

import os
import select
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

from sqlalchemy.engine import make_url

from harness.domain.axes import Latency, Stack
from harness.domain.errors import HarnessError, UsageError
from harness.infra import stacks
from harness.infra.environment import PROJECT_ROOT
from harness.infra.process import die_with_parent, kill_group, register_child, tree_cpu_seconds

START_TIMEOUT_S = 10.0
READY = "listening on "


def upstream_of(url: str) -> tuple[str, int]:
    """The TCP address a database URL points at; a Unix socket cannot be relayed."""
    parsed = make_url(url)
    host = parsed.host or ""
    if not host or host.startswith("/"):
        raise UsageError(
            "DB_LATENCY: the relay needs a database reached over TCP, but DATABASE_URL names "
            f"{'a Unix socket' if host else 'no host'}; give its host and port"
        )
    return host, parsed.port or 5432


@dataclass(frozen=True)
class Relay:
    proc: subprocess.Popen[bytes]
    port: int
    url: str  # the database URL through the relay

    def cpu_seconds(self) -> float:
        return tree_cpu_seconds(self.proc.pid)


def _first_line(proc: subprocess.Popen[bytes], timeout: float) -> str:
    assert proc.stdout is not None
    deadline, text = time.monotonic() + timeout, b""
    while b"\n" not in text and time.monotonic() < deadline:
        ready, _, _ = select.select([proc.stdout], [], [], 0.1)
        if ready:
            chunk = os.read(proc.stdout.fileno(), 4096)
            if not chunk:
                break
            text += chunk
    return text.decode(errors="replace")


@contextmanager
def relayed(url: str, latency: Latency) -> Iterator[Relay | None]:
    """A relay to the database at `url` for `latency` (None when the latency is direct)."""
    if not latency.relay:
        yield None
        return
    host, port = upstream_of(url)
    argv = [
        str(stacks.venv_python(Stack.current)),
        "-m",
        "servers.relay",
        "--upstream",
        f"{host}:{port}",
        "--latency-ms",
        f"{latency.ms:g}",
    ]
    proc = subprocess.Popen(
        argv,
        cwd=PROJECT_ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        stdin=subprocess.DEVNULL,
        start_new_session=True,
        preexec_fn=die_with_parent(),
    )
    register_child(proc)
    try:
        line = _first_line(proc, START_TIMEOUT_S)
        if not line.startswith(READY):
            why = "exited" if proc.poll() is not None else f"gave no port in {START_TIMEOUT_S:g} s"
            said = " ".join(line.split())[-300:] or "nothing"
            raise HarnessError(f"the latency relay {why}; it said: {said}")
        bound = int(line[len(READY) :].strip().rsplit(":", 1)[1])
        through = make_url(url).set(host="127.0.0.1", port=bound)
        yield Relay(proc, bound, through.render_as_string(hide_password=False))
    finally:
        kill_group(proc, grace=2.0)
        if proc.stdout is not None:
            proc.stdout.close()
