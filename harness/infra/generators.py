"""Load generators that could drive an open loop, run the same way so they can be compared: the
argv each needs to send `rate` requests per second for `duration_s` at a URL, the count it
reports, and its version. Their CPU is the child's own (wait4), start-up included."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from harness.domain.errors import HarnessError
from harness.infra.environment import PROJECT_ROOT
from harness.infra.process import Finished, run_measured

K6_SCRIPT = PROJECT_ROOT / "loadgen" / "k6_arrival.js"
WRK_PACED = PROJECT_ROOT / "loadgen" / "wrk_paced.lua"
CLIENTS = 10  # hey's workers, h2load's clients and wrk's connections: each sends rate / CLIENTS


@dataclass(frozen=True)
class Candidate:
    name: str
    how: str  # how it keeps the rate, in a few words
    argv: Callable[[str, float, float], list[str]]  # (url, rate, duration_s) -> argv
    sent: Callable[[str], int]  # its stdout -> requests it reports answered
    version: Callable[[], str]
    # Whether it counts each request's latency from the moment it was due.
    from_due: bool = False
    binary: str = ""  # what must be on PATH (or in the venv) for it to run


def _first_line(argv: list[str]) -> str:
    done = subprocess.run(argv, capture_output=True, text=True, timeout=60)
    return (done.stdout + done.stderr).strip().splitlines()[0]


def _venv_binary(name: str) -> str:
    return str(Path(sys.executable).parent / name)


def _openloop_argv(url: str, rate: float, duration_s: float) -> list[str]:
    return [
        sys.executable, "-m", "loadgen.openloop", url, "--rate", f"{rate:g}",
        "--duration", f"{duration_s:g}", "--connections", "1000", "--timeout", "5",
    ]  # fmt: skip


def _openloop_sent(stdout: str) -> int:
    return sum(int(n) for n in json.loads(stdout)["statuses"].values())


def _k6_argv(url: str, rate: float, duration_s: float) -> list[str]:
    # One VU per request due in a second: enough to ride out a 1 s stall without dropping.
    vus = max(1, round(rate))
    env = {"URL": url, "RATE": f"{rate:g}", "DURATION": f"{duration_s:g}s", "VUS": str(vus)}
    return [
        _venv_binary("k6"), "run", "--quiet", "--log-format", "raw",
        *[a for k, v in env.items() for a in ("-e", f"{k}={v}")], str(K6_SCRIPT),
    ]  # fmt: skip


def _k6_sent(stdout: str) -> int:
    line = next(x for x in stdout.splitlines() if x.startswith("{"))
    return int(json.loads(line)["answered"])


def _hey_argv(url: str, rate: float, duration_s: float) -> list[str]:
    return [
        "hey", "-z", f"{duration_s:g}s", "-c", str(CLIENTS), "-q", f"{rate / CLIENTS:g}", url,
    ]  # fmt: skip


def _hey_sent(stdout: str) -> int:
    return sum(int(n) for n in re.findall(r"\[\d+\]\s+(\d+) responses", stdout))


def _h2load_argv(url: str, rate: float, duration_s: float) -> list[str]:
    return [
        "h2load", "--h1", "-c", str(CLIENTS), "-D", f"{duration_s:g}",
        "--rps", f"{rate / CLIENTS:g}", url,
    ]  # fmt: skip


def _h2load_sent(stdout: str) -> int:
    found = re.search(r"(\d+) succeeded", stdout)
    if not found:
        raise ValueError("no 'succeeded' count in h2load's output")
    return int(found[1])


def _wrk_argv(url: str, rate: float, duration_s: float) -> list[str]:
    # wrk's delay() is the pause after each response, in whole milliseconds.
    pause_ms = round(CLIENTS * 1000 / rate)
    return [
        "wrk", "-t", "1", "-c", str(CLIENTS), "-d", f"{round(duration_s)}s",
        "-s", str(WRK_PACED), url, "--", str(pause_ms),
    ]  # fmt: skip


def _wrk_sent(stdout: str) -> int:
    found = re.search(r"(\d+) requests in", stdout)
    if not found:
        raise ValueError("no request count in wrk's output")
    return int(found[1])


def _openloop_version() -> str:
    from harness.infra.openloop import identity

    return " ".join(f"{k} {v}" for k, v in identity().items())


CANDIDATES = (
    Candidate(
        "openloop",
        "one schedule; a due request takes an idle connection or opens one (at most 1,000)",
        _openloop_argv,
        _openloop_sent,
        _openloop_version,
        from_due=True,
    ),
    Candidate(
        "k6",
        "constant-arrival-rate; a due iteration takes a free VU (one per request due in a "
        "second here) or is dropped",
        _k6_argv,
        _k6_sent,
        lambda: _first_line([_venv_binary("k6"), "version"]),
        binary="k6",
    ),
    Candidate(
        "hey",
        f"-q per worker, {CLIENTS} workers: each waits for its answer (closed)",
        _hey_argv,
        _hey_sent,
        lambda: "hey (Debian " + _debian_version("hey") + ")",
        binary="hey",
    ),
    Candidate(
        "h2load",
        f"--rps per client, {CLIENTS} clients over HTTP/1.1: one request in flight each (closed)",
        _h2load_argv,
        _h2load_sent,
        lambda: _first_line(["h2load", "--version"]),
        binary="h2load",
    ),
    Candidate(
        "wrk+lua",
        f"delay() after each answer, {CLIENTS} connections: each waits for its answer (closed)",
        _wrk_argv,
        _wrk_sent,
        lambda: _first_line(["wrk", "-v"]),
        binary="wrk",
    ),
)


def _debian_version(package: str) -> str:
    done = subprocess.run(
        ["dpkg-query", "-W", "-f", "${Version}", package], capture_output=True, text=True
    )
    return done.stdout.strip() or "?"


def missing(candidates: tuple[Candidate, ...] = CANDIDATES) -> list[str]:
    """The candidates' programs that are not installed."""
    out = []
    for c in candidates:
        if c.binary == "k6":
            if not Path(_venv_binary("k6")).exists():
                out.append("k6")
        elif c.binary and not shutil.which(c.binary):
            out.append(c.binary)
    return out


def run(argv: list[str], limit_s: float) -> Finished:
    """Run one generator to completion, its CPU measured (killed past `limit_s`)."""
    done = run_measured(argv, limit_s, cwd=PROJECT_ROOT)
    if done.code != 0:
        said = (done.stderr or done.stdout).strip()[-300:]
        raise HarnessError(f"{argv[0]} exited {done.code}: {said}")
    return done
