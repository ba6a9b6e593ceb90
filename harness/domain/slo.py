"""A service-level objective on tail latency, and whether a measurement met it.

`SLO=p99<250ms` reads: at most 1% of the requests may miss 250 ms. A request misses when it
was answered slower than the limit, or not answered well at all: an HTTP error, a socket error,
a timeout, or (in an open loop) dropped before it was sent. So a variant that collapsed, or
one that sheds load, can never meet an objective by answering a few requests fast.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from harness.domain.errors import UsageError

DEFAULT = "p99<250ms"
# A latency verdict needs a window this long, after a warm-up: a shorter or cold one says more
# about start-up (connections opening, caches filling) than about the load.
MIN_WINDOW_S = 10.0


@dataclass(frozen=True)
class Slo:
    percentile: float  # of the requests that must meet the limit, e.g. 99
    limit_ms: float

    @property
    def allowed(self) -> float:
        """The fraction of requests that may miss."""
        return 1 - self.percentile / 100

    def text(self) -> str:
        return f"p{self.percentile:g} < {self.limit_ms:g} ms"

    def flag(self) -> str:
        """As SLO= takes it (parse_slo reads it back)."""
        return f"p{self.percentile:.12g}<{self.limit_ms:.12g}ms"


def parse_slo(text: str) -> Slo:
    """`p99<250ms`, `p99.9<1s`: a percentile above 0 and below 100, a limit in ms or s."""
    found = re.fullmatch(r"\s*p(\d+(?:\.\d+)?)\s*<\s*(\d+(?:\.\d+)?)\s*(ms|s)\s*", text)
    if not found or not 0 < float(found[1]) < 100 or float(found[2]) <= 0:
        raise UsageError(
            f"SLO: {text!r} is not an objective like p99<250ms (a percentile above 0 and below "
            "100, a limit in ms or s)"
        )
    limit = float(found[2]) * (1000 if found[3] == "s" else 1)
    return Slo(float(found[1]), limit)


@dataclass(frozen=True)
class Check:
    """One measurement (or a cell's rounds together) against an objective. `answered` and
    `slow` count responses (an HTTP error status among them), `failed` the HTTP errors and
    the socket errors and timeouts: a slow error response counts twice, which can only turn a
    check toward a miss."""

    slo: Slo
    answered: int  # responses timed, whatever their status
    slow: int  # of those, slower than the limit
    status_errors: int  # responses with an HTTP error status
    socket_errors: int  # connect, read and write errors, timeouts: no response
    dropped: int  # an open loop's requests never sent
    collapsed: bool = False  # a measurement froze: what it answered says nothing of the rest

    @property
    def total(self) -> int:
        """Every request the measurement sent or was due to send."""
        return self.answered + self.socket_errors + self.dropped

    @property
    def misses(self) -> int:
        return min(self.total, self.slow + self.status_errors + self.socket_errors + self.dropped)

    @property
    def share(self) -> float:
        return self.misses / self.total if self.total else 1.0

    @property
    def met(self) -> bool:
        """At most the allowed fraction missed, and nothing froze; nothing measured meets
        nothing."""
        return (
            not self.collapsed and self.total > 0 and self.misses <= self.slo.allowed * self.total
        )

    def text(self) -> str:
        if self.collapsed:
            return "missed (collapsed)"
        return f"{'met' if self.met else 'missed'} ({self.share:.2%} of {self.total:,} missed)"
