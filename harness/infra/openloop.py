"""The open loop: loadgen/openloop.py run as a program of its own, its JSON read into the same
figures wrk's runs give, with the schedule it kept."""

from __future__ import annotations

import hashlib
import json
import os
import platform
import sys
from dataclasses import dataclass
from importlib import metadata
from typing import Any

from harness.domain.latency import Histograms
from harness.domain.requests import Requests
from harness.domain.result import Schedule, WrkResult
from harness.infra.environment import PROJECT_ROOT
from harness.infra.histogram import Distribution
from harness.infra.process import run_measured
from harness.infra.wrk import LoadFailed, WrkRun, mix_file, plain

PROGRAM = "loadgen.openloop"


def identity() -> dict[str, Any]:
    """What generated an open loop's load, for a run's metadata."""
    source = PROJECT_ROOT / "loadgen" / "openloop.py"
    return {
        "program": "loadgen/openloop.py",
        "sha256": hashlib.sha256(source.read_bytes()).hexdigest(),
        "python": platform.python_version(),
        **{name: metadata.version(name) for name in ("uvloop", "httptools", "hdrhistogram")},
    }


@dataclass(frozen=True)
class OpenLoopCommand:
    url: str
    rate: float
    connections: int  # open at most; past it due requests wait for one
    duration_s: float
    timeout_s: float
    cpus: frozenset[int] = frozenset()  # pin the generator to these CPUs (empty: anywhere)
    requests: Requests | None = None  # a foreign service's, where more than a GET of the URL

    def argv(self) -> list[str]:
        mix = (
            []
            if self.requests is None or plain(self.requests)
            else ["--requests", str(mix_file(self.requests))]
        )
        return [
            sys.executable,
            "-m",
            PROGRAM,
            self.url,
            "--rate",
            f"{self.rate:g}",
            "--duration",
            f"{self.duration_s:g}",
            "--connections",
            str(self.connections),
            "--timeout",
            f"{self.timeout_s:g}",
            *mix,
        ]


def _ms(distribution: Distribution, p: float) -> float:
    return round(distribution.percentile_ms(p), 3) if distribution.count else 0.0


def parse(stdout: str) -> WrkResult:
    """The generator's figures as wrk's: its percentiles are from each request's due moment."""
    data: dict[str, Any] = json.loads(stdout)
    encoded = data["histograms"]
    from_due, lag = Distribution.decode(encoded["from_due"]), Distribution.decode(encoded["lag"])
    statuses = {int(code): int(n) for code, n in data["statuses"].items()}
    errors = {kind: int(n) for kind, n in data["errors"].items()}
    return WrkResult(
        requests=sum(statuses.values()),
        # From the schedule's start to the last answer: a server that fell behind answered its
        # requests over longer than the schedule took, and its throughput says so.
        duration_s=round(float(data["elapsed_s"]), 3),
        bytes=int(data["bytes"]),
        p50_ms=_ms(from_due, 50),
        p90_ms=_ms(from_due, 90),
        p99_ms=_ms(from_due, 99),
        p999_ms=_ms(from_due, 99.9),
        max_ms=_ms(from_due, 100),
        mean_ms=round(from_due.mean_ms, 3),
        connect_errors=errors.get("connect", 0),
        read_errors=errors.get("read", 0),
        write_errors=0,
        timeouts=errors.get("timeout", 0),
        status_errors=sum(n for code, n in statuses.items() if code >= 400),
        histograms=Histograms(
            measured=encoded["from_send"], corrected=encoded["from_due"], interval_us=0
        ),
        schedule=Schedule(
            rate=float(data["rate"]),
            due=int(data["due"]),
            on_time=int(data["on_time"]),
            late=int(data["late"]),
            dropped=int(data["dropped"]),
            tolerance_ms=float(data["tolerance_ms"]),
            lag_p50_ms=_ms(lag, 50),
            lag_p99_ms=_ms(lag, 99),
            lag_max_ms=_ms(lag, 100),
            connections_opened=int(data["connections_opened"]),
            peak_in_flight=int(data["peak_in_flight"]),
        ),
    )


def run(command: OpenLoopCommand, grace_s: float = 15.0) -> WrkRun:
    """Run the open loop to completion (killed if it overruns `grace_s` beyond the longest a
    last request may take: waiting the timeout for a connection, then the timeout answering)."""
    limit = command.duration_s + 2 * command.timeout_s + grace_s
    affinity = (lambda: os.sched_setaffinity(0, command.cpus)) if command.cpus else None
    done = run_measured(command.argv(), limit, cwd=PROJECT_ROOT, then=affinity)
    if done.code is None:
        raise LoadFailed(f"the open loop did not finish within {limit:g}s")
    try:
        return WrkRun(parse(done.stdout), done.cpu_s)
    except (ValueError, KeyError) as exc:
        raise LoadFailed(
            f"the open loop exited {done.code} without a report ({exc}): "
            f"{done.stderr.strip()[-300:]}"
        ) from None
