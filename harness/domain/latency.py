"""Latency distributions: wrk's histogram with its coordinated-omission correction undone.

wrk 4.1 keeps every latency in a 1 µs bucket and, before its Lua `done()` hook reads them, runs
`stats_correct` (src/stats.c): each sample n >= 2e, e the run's mean interval per connection,
adds its count at n - e, n - 2e, ... down to the first value above e. `correct` is that loop,
`uncorrect` its exact inverse, so each record keeps the distribution measured (one value per
response) and the one wrk reports (with the synthetic samples), labelled.

Records keep them as HdrHistograms at 3 significant digits (harness/infra/histogram.py): a
value is stored to within 0.1%, and repeats merge by adding their buckets. A percentile is read
from the merged buckets, never as a median of the repeats' percentiles.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from enum import StrEnum

# A percentile with fewer measured requests above it than this is flagged as thin: a handful
# of requests decides it, and another run may well move it.
MIN_TAIL = 10

Buckets = Mapping[int, int]  # latency in µs -> how many responses took exactly that long


class Kind(StrEnum):
    measured = "measured"  # one value per response wrk received
    corrected = "corrected"  # what wrk reports: measured plus stats_correct's synthetic samples


def wrk_interval(runtime_us: int, complete: int, connections: int) -> int:
    """The interval wrk corrects with (src/wrk.c, integer arithmetic as there); 0: wrk added
    nothing, having completed fewer requests than it had connections."""
    per_connection = complete // connections
    return runtime_us // per_connection if per_connection > 0 else 0


def correct(measured: Buckets, interval: int) -> dict[int, int]:
    """wrk's stats_correct: every sample n >= 2e also counts at n - e, n - 2e, ... while > e."""
    out = {n: c for n, c in measured.items() if c}
    if interval <= 0:
        return out
    for n, count in measured.items():
        if n >= 2 * interval and count:
            for m in range(n - interval, interval, -interval):
                out[m] = out.get(m, 0) + count
    return out


def uncorrect(corrected: Buckets, interval: int) -> dict[int, int]:
    """The exact inverse of `correct`: a bucket m > e holds its own count plus those of every
    m + ke (k >= 1), so from the top down each bucket's own count is what the larger ones of
    its residue class have not already put there."""
    if interval <= 0:
        return {n: c for n, c in corrected.items() if c}
    above: dict[int, int] = {}  # residue mod e -> counts measured above, in that class
    out: dict[int, int] = {}
    for n in sorted(corrected, reverse=True):
        added = above.get(n % interval, 0) if n > interval else 0
        own = corrected[n] - added
        if own < 0:
            raise ValueError(
                f"bucket {n} µs holds {corrected[n]}, fewer than the {added} wrk's correction "
                f"with interval {interval} µs puts there: not a histogram wrk corrected"
            )
        if own:
            out[n] = own
            above[n % interval] = above.get(n % interval, 0) + own
    if correct(out, interval) != {n: c for n, c in corrected.items() if c}:
        raise ValueError(
            f"correcting the undone histogram with interval {interval} µs does not give back "
            "the one exported: not a histogram wrk corrected"
        )
    return dict(sorted(out.items()))


def wrk_rank(p: float, total: int) -> int:
    """The rank stats_percentile looks for: C's round(p / 100 * count + 0.5)."""
    return math.floor(p / 100 * total + 0.5 + 0.5)


def wrk_percentile(buckets: Buckets, p: float, rank: int | None = None) -> int:
    """wrk's stats_percentile (or the value at `rank`), to check an exported histogram against
    what wrk printed."""
    rank = wrk_rank(p, sum(buckets.values())) if rank is None else rank
    seen = 0
    for value in sorted(buckets):
        seen += buckets[value]
        if seen >= rank:
            return value
    return 0


@dataclass(frozen=True)
class Histograms:
    """One wrk run's latency distributions, each an HdrHistogram encoded as text (µs, 3
    significant digits; harness/infra/histogram.py writes and reads them)."""

    measured: str
    corrected: str
    interval_us: int  # wrk's correction interval; 0: it corrected nothing

    def encoded(self, kind: Kind) -> str:
        return self.measured if kind is Kind.measured else self.corrected
