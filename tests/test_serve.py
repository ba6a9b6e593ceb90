"""`make serve` for real: the server a cell would start, on the seed's port, stopped cleanly by
SIGINT even when a script started it in the background (where SIGINT arrives ignored)."""

from __future__ import annotations

import signal
import subprocess
import sys
import time

import psutil
import pytest

from harness.infra.process import port_in_use
from harness.infra.server import get_json
from servers.registry import SEED_PORTS, Mode
from tests.cli import ROOT, _env
from tests.test_robustness import named

pytestmark = pytest.mark.integration


@pytest.mark.parametrize("latency", ["0", "2ms"])
def test_serve_answers_with_its_rows_and_stops_on_sigint_even_if_ignored(latency: str) -> None:
    port = SEED_PORTS[Mode.sync]
    if port_in_use(port):
        pytest.skip(f"port {port} is taken by something else here")
    argv = ["serve", "--rows", "3", "--style", "context", "--db-latency", latency]
    proc = subprocess.Popen(
        [sys.executable, "-m", "harness", *argv],
        cwd=ROOT,
        env=_env(),
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
        # As `cmd &` in a non-interactive shell leaves it: SIGINT ignored from the start.
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_IGN),
    )
    started: set[psutil.Process] = set()
    try:
        deadline = time.monotonic() + 60
        body = None
        while time.monotonic() < deadline and proc.poll() is None:
            started |= set(psutil.Process(proc.pid).children(recursive=True))
            try:
                status, body = get_json(f"http://127.0.0.1:{port}/users", 1)
                if status == 200:
                    break
            except OSError:
                time.sleep(0.2)
        assert body == [{"email": f"user{i}@example.com"} for i in (1, 2, 3)], body
        started |= set(psutil.Process(proc.pid).children(recursive=True))
        assert bool(named(started, "servers.relay")) == (latency == "2ms")
        proc.send_signal(signal.SIGINT)
        _, err = proc.communicate(timeout=20)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 0, err
    assert "stopping" in err and "3 rows" in err
    assert ("2 ms each way to PostgreSQL through the relay" in err) == (latency == "2ms")
    assert not [p for p in started if p.is_running() and p.status() != psutil.STATUS_ZOMBIE]
    assert not port_in_use(port)
