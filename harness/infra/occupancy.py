"""Evidence taken from a live server: its side channel sampled during a run, and its threads
dumped with py-spy."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from functools import partial
from pathlib import Path
from types import TracebackType
from typing import Any

import psutil

from harness.domain.occupancy import SAMPLE_FIELDS, SAMPLE_HZ, Sample, Timeline
from harness.infra.process import group_members
from harness.infra.server import get_json

PATH = "/_occupancy"
DUMP_TIMEOUT_S = 30.0
# How long an empty registry is waited for before the server's port is sampled instead: the
# server answered before the sampler started, so a process with an own channel has registered.
REGISTRY_GRACE_S = 1.0
# Requests of one tick in parallel: each process at (nearly) the same moment, and one that does
# not answer delays the tick by one timeout, not one per process.
REGISTRY_THREADS = 8


class Sampler:
    """Samples `base_url`'s side channel at `hz` on a thread of its own, from entry to exit.

    The harness is idle while wrk runs (wrk is another process), so the sampler costs the
    measured server one small request per sample; a sample that takes longer than its slot
    skips the slots it overran rather than catching up in a burst.

    With a `registry` (the server's OCCUPANCY_DIR: files named by pid, each holding the port of
    that process's own side channel), every registered process is asked at every tick, each on
    its own port; through the server's port, only whichever process accepts would answer. An
    app that registers nothing within REGISTRY_GRACE_S is sampled through the server's port.
    """

    def __init__(
        self,
        base_url: str,
        hz: float = SAMPLE_HZ,
        enabled: bool = True,
        registry: Path | None = None,
        processes: int | None = None,
    ) -> None:
        self.url = base_url.rstrip("/") + PATH
        self.hz = hz
        self.enabled = enabled
        self.registry = registry
        self.processes = processes
        self.per_process = False  # some tick found the registry filled
        self.measured_from_s = 0.0
        self.samples: list[Sample] = []
        self.latest: dict[int, Sample] = {}  # each process's last sample
        self.unanswered = 0
        self.absent = False  # the server has no side channel (404): stop asking
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="occupancy-sampler", daemon=True)

    def __enter__(self) -> Sampler:
        self.t0 = time.monotonic()
        if self.enabled:
            self._thread.start()
        return self

    def mark_measured(self) -> None:
        """The measured run starts now (what came before was the warm-up)."""
        self.measured_from_s = round(time.monotonic() - self.t0, 3)

    def wait_empty(self, timeout_s: float, least_s: float = 0.0) -> float | None:
        """Wait (at least `least_s`) until a sample taken since this call of every process
        shows no request in flight: so the measured window opens on a server where no request
        of the warm-up is still being served. Seconds waited; None if it did not empty within
        `timeout_s`, or cannot be seen (no side channel)."""
        t_call = time.monotonic()
        since = t_call - self.t0
        deadline = t_call + max(timeout_s, least_s)
        while self.enabled and not self.absent:
            now = time.monotonic()
            # Each process sampled since the call (one that died and was not replaced leaves
            # too few: the wait then runs to its timeout).
            fresh = [s for s in list(self.latest.values()) if s.t_s >= since]
            seen = len(fresh) >= (self.processes or 1)
            if seen and now - t_call >= least_s and all(s.in_flight == 0 for s in fresh):
                return round(now - t_call, 2)
            if now >= deadline:
                return None
            time.sleep(0.02)
        time.sleep(max(0.0, t_call + least_s - time.monotonic()))
        return None

    def __exit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join()

    def _run(self) -> None:
        period = 1.0 / self.hz
        slot = 0
        with ThreadPoolExecutor(REGISTRY_THREADS, thread_name_prefix="occupancy") as pool:
            while not self._stop.is_set():
                self._tick(pool, timeout=period * 5)
                if self.absent:
                    return
                slot = max(slot + 1, int((time.monotonic() - self.t0) / period))
                self._stop.wait(max(0.0, self.t0 + slot * period - time.monotonic()))

    def _tick(self, pool: ThreadPoolExecutor, timeout: float) -> None:
        at = round(time.monotonic() - self.t0, 3)
        ports = registered(self.registry) if self.registry else {}
        if ports:
            self.per_process = True
            urls = [f"http://127.0.0.1:{port}{PATH}" for port in ports.values()]
            for answer in pool.map(partial(_ask, timeout=timeout), urls):
                self._keep(at, answer)
            return
        if self.registry and not self.per_process and at > REGISTRY_GRACE_S:
            self.registry = None  # an app without own channels: its server's port, as before
        if self.registry is None:
            self._keep(at, _ask(self.url, timeout))

    def _keep(self, at: float, answer: tuple[int, Any] | None) -> None:
        status, body = answer or (None, None)
        if status == 404:
            self.absent = True
        elif status == 200 and isinstance(body, dict):
            # JSON as the app sent it: a field it does not report is None.
            values: dict[str, Any] = {
                name: body.get(name) for name in SAMPLE_FIELDS if name != "t_s"
            }
            sample = Sample(t_s=at, **values)
            self.samples.append(sample)
            self.latest[sample.pid] = sample
        else:
            self.unanswered += 1

    def timeline(self) -> Timeline | None:
        """The samples taken; None if sampling was off or the server has no side channel."""
        if self.absent or not self.enabled:
            return None
        return Timeline(
            hz=self.hz,
            samples=tuple(self.samples),
            unanswered=self.unanswered,
            measured_from_s=self.measured_from_s,
            processes=self.processes,
            per_process=self.per_process,
        )


def _ask(url: str, timeout: float) -> tuple[int, Any] | None:
    """(status, body), or None where the side channel gave no answer."""
    try:
        return get_json(url, timeout=timeout)
    except OSError:
        return None


def registered(registry: Path) -> dict[int, int]:
    """{pid: port} of the processes registered now; a process gone with its file is not."""
    ports: dict[int, int] = {}
    try:
        entries = list(registry.iterdir())
    except OSError:
        return {}
    for entry in entries:
        if not entry.name.isdigit():
            continue  # a registration being written (a temporary name)
        try:
            ports[int(entry.name)] = int(entry.read_text())
        except (OSError, ValueError):
            continue  # removed between the listing and the read
    return ports


def await_registered(registry: Path, processes: int, timeout_s: float) -> int:
    """Wait until `processes` have registered (a server answers once its first worker is up,
    and the load must not start before every worker can be sampled); how many did."""
    deadline = time.monotonic() + timeout_s
    while (found := len(registered(registry))) < processes and time.monotonic() < deadline:
        time.sleep(0.05)
    return found


class DumpFailed(Exception):
    """py-spy could not dump the process; the message says why in one line."""


def py_spy() -> str | None:
    """The py-spy installed beside this Python (the venv's), or one on PATH."""
    beside = Path(sys.executable).parent / "py-spy"
    return str(beside) if beside.exists() else shutil.which("py-spy")


def py_spy_version() -> str:
    binary = py_spy()
    if binary is None:
        return "not installed"
    try:
        done = subprocess.run([binary, "--version"], capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.TimeoutExpired):
        return "unknown"
    return done.stdout.strip() or "unknown"


def dump_threads(pid: int, timeout_s: float = DUMP_TIMEOUT_S) -> list[dict[str, Any]]:
    """Every thread of `pid` and of its descendants (server workers), as py-spy's JSON.

    Each process is dumped by itself: `py-spy dump --subprocesses --json` prints the first
    process only. A descendant that is gone or not Python is skipped; the server itself must dump.
    """
    members = [p.pid for p in group_members(pid)] or [pid]
    threads: list[dict[str, Any]] = []
    for member in members:
        try:
            threads += dump_one(member, timeout_s=timeout_s)
        except DumpFailed:
            if member == pid:
                raise
    return threads


def dump_one(
    pid: int, nonblocking: bool = False, timeout_s: float = DUMP_TIMEOUT_S
) -> list[dict[str, Any]]:
    """The threads of one process, as py-spy's JSON. `nonblocking`: read it without pausing it
    (a stack may then be torn, caught while it changed)."""
    binary = py_spy()
    if binary is None:
        raise DumpFailed("py-spy is not installed (make setup installs it)")
    argv = [binary, "dump", "--pid", str(pid), "--json", *(["--nonblocking"] * nonblocking)]
    try:
        done = subprocess.run(argv, capture_output=True, text=True, timeout=timeout_s)
    except subprocess.TimeoutExpired:
        raise DumpFailed(f"py-spy gave no dump of PID {pid} in {timeout_s:g}s") from None
    except OSError as exc:
        raise DumpFailed(f"py-spy could not be run: {exc}") from None
    if done.returncode != 0:
        raise DumpFailed(_why(pid, done.stderr))
    try:
        return list(json.loads(done.stdout))
    except ValueError:
        raise DumpFailed(f"py-spy's dump of PID {pid} is not JSON") from None


def _why(pid: int, stderr: str) -> str:
    lines = [line.strip() for line in stderr.splitlines() if line.strip()]
    text = " ".join(lines)
    first = next((line for line in lines if line.startswith("Error:")), lines[0] if lines else "")
    if "Permission denied" in text or "Operation not permitted" in text:
        hint = "as root, or with CAP_SYS_PTRACE" if os.geteuid() != 0 else "with CAP_SYS_PTRACE"
        return f"py-spy may not attach to PID {pid} (no permission to ptrace; run {hint})"
    if not psutil.pid_exists(pid):
        return f"PID {pid} is not running"
    return f"py-spy could not dump PID {pid}: {first.removeprefix('Error:').strip() or 'no reason'}"
