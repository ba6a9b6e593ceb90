"""One server process for one cell: started from the registry, waited for, stopped, its log read."""

from __future__ import annotations

import http.client
import json
import os
import re
import signal
import subprocess
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from app.styles import NAMES, OLD_NAMES
from harness.infra.environment import PROJECT_ROOT
from harness.infra.process import die_with_parent, kill_group, register_child, tree_cpu_seconds
from servers.registry import Launch, server_argv

# The last line of a pool timeout's traceback, once per failed request: SQLAlchemy's QueuePool
# (the ORM and Core layers), or app.common.PoolExhausted, which the driver layer raises for every
# driver pool. uvicorn, gunicorn and hypercorn print the exception's module, granian does not.
POOL_TIMEOUT_LINE = re.compile(
    r"^(?:sqlalchemy\.exc\.)?TimeoutError: QueuePool limit of size \d+ overflow \d+ reached"
    r"|^(?:app\.common\.)?PoolExhausted: "
)
# uvicorn (also under gunicorn), hypercorn and granian say this once per failed request.
SERVER_ERROR_LINE = re.compile(
    r"Exception in ASGI application|Error in ASGI Framework"
    r"|Application callable raised an exception"
)


@dataclass(frozen=True)
class LogCounts:
    pool_timeouts: int
    server_errors: int
    tail: str
    size: int = 0  # the bytes read: what is logged later starts there


def read_log(path: Path, tail_lines: int = 30) -> LogCounts:
    data = path.read_bytes()
    lines = data.decode(errors="replace").splitlines()
    pool_timeouts = sum(1 for line in lines if POOL_TIMEOUT_LINE.match(line))
    server_errors = sum(1 for line in lines if SERVER_ERROR_LINE.search(line))
    return LogCounts(pool_timeouts, server_errors, "\n".join(lines[-tail_lines:]), len(data))


def inherited() -> dict[str, str]:
    """The harness's environment for a server it starts, without any of the apps' settings
    (new names or old): a POOL_SIZE left in the user's shell must not reach, or clash with,
    the settings the harness gives each server. DEPENDENCY_SCOPE, an app setting for experiments
    that no cell records, is dropped too: a measured app is what its record says."""
    dropped = {*NAMES, *OLD_NAMES, "DEPENDENCY_SCOPE"}
    return {k: v for k, v in os.environ.items() if k not in dropped}


class ServerProcess:
    """A server started fresh for one cell; use as a context manager so it always stops."""

    def __init__(
        self,
        server: str,
        launch: Launch,
        env: dict[str, str],
        log: Path,
        cwd: Path = PROJECT_ROOT,
    ) -> None:
        self.argv = server_argv(server, launch)
        self.cwd = cwd
        self.port = launch.port
        self.log = log
        self.env = {**inherited(), **env, "PYTHONUNBUFFERED": "1"}
        self.proc: subprocess.Popen[bytes] | None = None
        self.ready = False

    def __enter__(self) -> ServerProcess:
        with open(self.log, "wb") as log:
            # Own session: the whole group (arbiter and workers) can be signalled at once.
            self.proc = subprocess.Popen(
                self.argv,
                cwd=self.cwd,
                env=self.env,
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                start_new_session=True,
                preexec_fn=die_with_parent(),
            )
        register_child(self.proc)
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    @property
    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def exit_status(self) -> str:
        code = self.proc.poll() if self.proc else None
        if code is None:
            return "is running"
        if code < 0:
            return f"was killed by {signal.Signals(-code).name}"
        return f"exited with code {code}"

    def stop(self, grace: float = 3.0) -> None:
        if self.proc is not None:
            kill_group(self.proc, grace=grace)

    @property
    def pid(self) -> int:
        assert self.proc is not None, "the server was started"
        return self.proc.pid

    def cpu_seconds(self) -> float:
        return tree_cpu_seconds(self.proc.pid) if self.proc else 0.0

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.port}{path}"

    def wait_ready(self, timeout: float) -> bool:
        """Poll /health until it answers 200, the process dies, or `timeout` passes."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if not self.alive:
                return False
            try:
                status, _ = self.get("/health", timeout=1.0)
                if status == 200:
                    return True
            except OSError:
                pass
            time.sleep(0.05)
        return False

    def wait_answering(self, timeout: float) -> bool:
        """Poll GET / until any HTTP answer comes (a user's app has no /health: a 404 says the
        server is up as well as a 200), the process dies, or `timeout` passes."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if not self.alive:
                return False
            try:
                get_json(self.url("/"), timeout=1.0)
                return True
            except OSError:
                time.sleep(0.05)
        return False

    def get(self, path: str, timeout: float = 10.0) -> tuple[int, Any]:
        return get_json(self.url(path), timeout)


def get_json(url: str, timeout: float = 10.0) -> tuple[int, Any]:
    """(status, parsed JSON body or None); connection failures raise OSError."""
    try:
        with urllib.request.urlopen(url, timeout=timeout) as response:
            return response.status, json.loads(response.read() or b"null")
    except urllib.error.HTTPError as exc:
        return exc.code, None
    except http.client.HTTPException as exc:  # e.g. a body cut short: a connection failure too
        raise OSError(f"{url}: {exc!r}") from exc
    except ValueError:
        return 200, None
