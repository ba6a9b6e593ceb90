"""The closed sets a cell is made of, and the pool value type."""

from __future__ import annotations

import re
from dataclasses import dataclass
from enum import StrEnum

from app.styles import ASYNC_DRIVERS, SYNC_DRIVERS, Driver, Layer, SessionStyle
from servers.registry import SERVERS_2021, Mode, ServerName, Stack

__all__ = [
    "DEFAULT_DRIVER",
    "DIRECT",
    "DRIVERS_FOR",
    "SERVERS_2021",
    "WORKLOAD_PATH",
    "Driver",
    "Latency",
    "Layer",
    "Mode",
    "Onset",
    "Pool",
    "ServerName",
    "SessionStyle",
    "Stack",
    "Verdict",
    "Workload",
    "WrkRunner",
]


# Which drivers each mode's app takes, and the one it takes when none is named (the seed's).
DRIVERS_FOR = {Mode.sync: SYNC_DRIVERS, Mode.async_: ASYNC_DRIVERS}
DEFAULT_DRIVER = {mode: drivers[0] for mode, drivers in DRIVERS_FOR.items()}


def driver_mode(mode: Mode, style: SessionStyle) -> Mode:
    """The mode whose driver a variant's app uses: the sync one for `blocking`, the async
    app's mistake of calling the sync session."""
    return Mode.sync if style is SessionStyle.blocking else mode


class Workload(StrEnum):
    list = "list"  # GET /users
    insert = "insert"  # GET /users/insert-data-to-test
    health = "health"  # GET /health: no database, the HTTP ceiling
    # A foreign service's own requests (TARGET's path, or REQUESTS): never a WORKLOAD choice.
    requests = "requests"


WORKLOAD_PATH = {
    Workload.list: "/users",
    Workload.insert: "/users/insert-data-to-test",
    Workload.health: "/health",
}


class Load(StrEnum):
    """How requests are sent: wrk's connections each waiting for its answer, or a schedule."""

    closed = "closed"  # wrk: N connections, each sends its next request once answered
    open = "open"  # loadgen/openloop.py: requests due at a fixed rate whatever the server does


class Onset(StrEnum):
    """How the load reaches the server when its measured window opens: two incidents, and the
    way `make bench` measures."""

    fresh = "fresh"  # a fresh server warmed up at N for WARMUP, then measured (make bench)
    cold = "cold"  # a fresh server, pool empty, no warm-up: a step to N (a deploy under load)
    warm = "warm"  # a server already serving, load raised to N level by level (growing traffic)


class Verdict(StrEnum):
    ok = "ok"
    errors = "errors"  # some requests failed, throughput held
    collapsed = "collapsed"  # every process stalled, or throughput fell far below the best
    partly_collapsed = "partly-collapsed"  # some of the server's processes stalled, not all
    unknown = "unknown"  # a process went unsampled too long to say it did not stall
    crashed = "crashed"  # the server died during the cell
    failed_to_start = "failed-to-start"  # never answered /health within the bound
    failed_verification = "failed-verification"  # answered, but not with the expected rows
    database_lost = "database-lost"  # PostgreSQL stopped answering during the cell
    load_failed = "load-failed"  # wrk died or gave no report
    # A target that froze earlier in the run stays frozen (the harness cannot restart it): its
    # later measurements are recorded, not taken, and count for no verdict.
    not_measured = "not-measured"


# Verdicts that count as a freeze in the map's search, the decisions and the conclusions.
FROZEN = (Verdict.collapsed, Verdict.partly_collapsed)


class WrkRunner(StrEnum):
    local = "local"  # the wrk binary on PATH
    docker = "docker"  # the wrk image, on the host network


@dataclass(frozen=True, order=True)
class Pool:
    size: int
    overflow: int

    def __post_init__(self) -> None:
        if self.size < 1 or self.overflow < 0:
            raise ValueError(
                f"pool needs size >= 1 and overflow >= 0, got {self.size}+{self.overflow}"
            )

    @property
    def capacity(self) -> int:
        return self.size + self.overflow

    @classmethod
    def parse(cls, text: str) -> Pool:
        match = re.fullmatch(r"\s*(\d+)\s*\+\s*(\d+)\s*", text)
        if not match:
            raise ValueError(f"pool {text!r} is not SIZE+OVERFLOW, e.g. 5+10")
        return cls(int(match[1]), int(match[2]))

    def __str__(self) -> str:
        return f"{self.size}+{self.overflow}"


@dataclass(frozen=True, order=True)
class Latency:
    """The one-way delay the relay (servers/relay.py) adds between an app and PostgreSQL.

    Without `relay` the app talks to PostgreSQL directly (latency 0, the default); with it and
    0 ms the relay forwards without delay, which measures what the relay itself costs.
    """

    ms: float = 0.0
    relay: bool = False

    MAX_MS = 1000.0

    def __post_init__(self) -> None:
        if not 0 <= self.ms <= self.MAX_MS or (self.ms > 0 and not self.relay):
            raise ValueError(f"latency {self.ms!r} ms is not from 0 to {self.MAX_MS:g} ms")

    @classmethod
    def parse(cls, text: str) -> Latency:
        """'0' (direct), 'relay' (the relay, no delay), or a delay with a unit: 1ms, 0.5ms, 1s."""
        text = text.strip()
        if text == "relay":
            return cls(0.0, relay=True)
        match = re.fullmatch(r"(\d+(?:\.\d+)?)\s*(us|ms|s)?", text)
        if not match or (match[2] is None and float(match[1]) != 0):
            raise ValueError(f"latency {text!r} is not 0, relay, or a delay with a unit")
        ms = float(match[1]) * {"us": 0.001, "ms": 1.0, "s": 1000.0}[match[2] or "ms"]
        return cls(ms, relay=ms > 0)

    def __str__(self) -> str:
        if not self.relay:
            return "0"
        return "relay" if self.ms == 0 else f"{self.ms:g}ms"


DIRECT = Latency()  # no relay: the app reaches PostgreSQL over loopback
