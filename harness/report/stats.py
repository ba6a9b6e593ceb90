"""Statistics of repeated measurements, with numpy and scipy (no hand-written distributions):

- a cell: the median of its measurements' successful req/s, a distribution-free interval of
  that median from the order statistics, labelled with the coverage it has at the rounds taken
  (95% needs 6 rounds: at 5 the widest interval, from the lowest to the highest, covers 93.75%,
  at 3 it covers 75%), the spread (coefficient of variation, min and max), latency percentiles
  from the merged histograms of its measurements (harness/domain/latency.py) with how many measured
  responses lie above each, and how many measurements ended in each verdict;
- a ratio of two variants measured in the same rounds: the geometric mean of the paired ratios,
  with a 95% t interval on their logarithms; an interval that contains 1 is "no significant
  difference";
- a ratio of the same cell in two runs (unpaired): the ratio of geometric means, with a 95%
  Welch t interval on the difference of the logarithms;
- instability warnings, a closed set, each with a hint.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from enum import StrEnum
from itertools import groupby

import numpy as np
from scipy import stats

from harness.domain.axes import FROZEN, Verdict
from harness.domain.cell import Cell
from harness.domain.latency import MIN_TAIL, Kind
from harness.domain.result import CellResult
from harness.domain.rules import NEAR_ZERO_RPS
from harness.infra.histogram import Distribution, decoded

CONFIDENCE = 0.95
UNSTABLE_CV = 0.10  # pyperf warns above 10% of the mean
OUTLIER_FRACTION = 0.25  # a measurement this far from the median is flagged
# Verdicts from the worst to the best, for the order a mixed verdict is written in.
SEVERITY = (
    Verdict.database_lost,
    Verdict.load_failed,
    Verdict.failed_to_start,
    Verdict.failed_verification,
    Verdict.crashed,
    Verdict.collapsed,
    Verdict.partly_collapsed,
    Verdict.unknown,
    Verdict.errors,
    Verdict.ok,
)


class Warning_(StrEnum):
    unstable = "unstable"
    outlier = "outlier"
    single = "single"


HINTS = {
    Warning_.unstable: "more REPEATS, a longer DURATION, or a quieter machine",
    Warning_.outlier: "look at that measurement's record; more REPEATS make the median robust",
    Warning_.single: "REPEATS=3 or more gives an interval; 6 or more one of 95%",
}


@dataclass(frozen=True)
class Flag:
    kind: Warning_
    detail: str

    def __str__(self) -> str:
        return f"{self.kind}: {self.detail} ({HINTS[self.kind]})"


@dataclass(frozen=True)
class Interval:
    low: float
    high: float
    # The probability it holds the true value, at least (ties between values only add to it).
    coverage: float = CONFIDENCE

    def contains(self, value: float) -> bool:
        return self.low <= value <= self.high


@dataclass(frozen=True)
class Percentile:
    """A latency percentile of a cell: from its merged histograms (with the measured responses
    above it), or, for records that kept none, the median of its runs' wrk-corrected ones."""

    ms: float
    above: int | None  # measured responses above it; None: a median of wrk's percentiles
    kind: Kind

    @property
    def thin(self) -> bool:
        return self.above is not None and self.above < MIN_TAIL

    def text(self, digits: int = 1) -> str:
        return f"{self.ms:,.{digits}f}" + ("†" if self.thin else "")


# The percentiles wrk reported per run, for records without histograms.
WRK_FIELD = {50.0: "p50_ms", 90.0: "p90_ms", 99.0: "p99_ms", 99.9: "p999_ms"}
THIN_TEXT = (
    f"† rests on fewer than {MIN_TAIL} measured responses above it: a handful of requests "
    "decides it."
)


@dataclass(frozen=True)
class CellStats:
    """Every measurement of one cell, summarised."""

    cell: Cell
    records: tuple[CellResult, ...]
    # Rounds not taken (a target frozen earlier): no figure, no verdict, but told.
    skipped: tuple[CellResult, ...] = ()

    @property
    def n(self) -> int:
        return len(self.records)

    @property
    def served(self) -> list[CellResult]:
        """Measurements with a wrk report (a server that never started has none)."""
        return [r for r in self.records if r.wrk]

    @property
    def rps(self) -> np.ndarray:
        return np.array([r.wrk.ok_rps for r in self.served if r.wrk], dtype=float)

    @property
    def median_rps(self) -> float | None:
        return float(np.median(self.rps)) if len(self.rps) else None

    @property
    def interval(self) -> Interval | None:
        """The interval of the median req/s; None below 3 values (see median_interval)."""
        values = self.rps
        return median_interval(values) if len(values) >= 3 else None

    @property
    def cv(self) -> float | None:
        """Coefficient of variation of req/s (sample standard deviation over the mean)."""
        values = self.rps
        if len(values) < 2 or values.mean() == 0:
            return None
        return float(stats.variation(values, ddof=1))

    def latency(self, field: str) -> tuple[float, float, float] | None:
        """(median, min, max) of a latency percentile over measurements that completed any."""
        values = [getattr(r.wrk, field) for r in self.served if r.wrk and r.wrk.requests]
        if not values:
            return None
        return float(np.median(values)), min(values), max(values)

    @functools.cached_property
    def _answered(self) -> list[CellResult]:
        return [r for r in self.served if r.wrk and r.wrk.requests]

    def distribution(self, kind: Kind = Kind.measured) -> Distribution | None:
        """Every measurement's histogram merged; None where one of them kept none (a record of
        format 4 or older)."""
        return self._distributions.get(kind)

    @functools.cached_property
    def _distributions(self) -> dict[Kind, Distribution]:
        found = [r.wrk.histograms for r in self._answered if r.wrk]
        if not found or any(h is None for h in found):
            return {}
        return {k: Distribution.merged(decoded(h, k) for h in found if h) for k in Kind}

    def percentile(self, p: float, kind: Kind = Kind.measured) -> Percentile | None:
        """The cell's p-th percentile latency: from its merged histograms where every
        measurement kept them; else (older records) the median of wrk's corrected ones."""
        merged = self.distribution(kind)
        if merged is not None:
            ms = merged.percentile_ms(p)
            return Percentile(ms, self._measured_above(ms), kind)
        if (field := WRK_FIELD.get(p)) is None or (found := self.latency(field)) is None:
            return None
        return Percentile(found[0], None, Kind.corrected)

    def _measured_above(self, ms: float) -> int | None:
        measured = self.distribution(Kind.measured)
        return measured.above(ms) if measured is not None else None

    def count(self, verdict: Verdict) -> int:
        return sum(r.verdict is verdict for r in self.records)

    @property
    def frozen(self) -> int:
        """Measurements in which every process, or some, stalled."""
        return sum(r.verdict in FROZEN for r in self.records)

    @property
    def verdict(self) -> str:
        """'ok' when every measurement was; else each verdict with its count ('collapsed 3/3')."""
        if self.n == 1:
            text = str(self.records[0].verdict)
        elif self.count(Verdict.ok) == self.n:
            text = "ok"
        else:
            text = ", ".join(f"{v} {self.count(v)}/{self.n}" for v in SEVERITY if self.count(v))
        if self.skipped:
            text += f"; {len(self.skipped)} not measured ({self.skipped[0].judgement})"
        return text

    @property
    def worst(self) -> Verdict:
        return next(v for v in SEVERITY if self.count(v))

    @property
    def pool_timeouts(self) -> int:
        return sum(r.pool_timeouts or 0 for r in self.records)

    @property
    def failed(self) -> int:
        return sum(r.wrk.failed for r in self.served if r.wrk)

    @property
    def flags(self) -> list[Flag]:
        if self.frozen or not len(self.rps):
            return []  # a collapse is its own verdict, not noise
        if self.n == 1:
            return [Flag(Warning_.single, "one measurement")]
        out = []
        if (cv := self.cv) is not None and cv > UNSTABLE_CV:
            out.append(Flag(Warning_.unstable, f"CV {cv:.0%} > {UNSTABLE_CV:.0%}"))
        median = self.median_rps or 0.0
        if median > 0:
            far = [v for v in self.rps if abs(v - median) / median > OUTLIER_FRACTION]
            if far:
                worst = max(far, key=lambda v: abs(v - median))
                out.append(
                    Flag(
                        Warning_.outlier,
                        f"{worst:,.1f} req/s is {abs(worst - median) / median:.0%} from the "
                        f"median {median:,.1f}",
                    )
                )
        return out


def median_interval(values: Sequence[float] | np.ndarray) -> Interval:
    """The interval of a median from the order statistics, [x(k), x(n+1-k)]: it holds the true
    median unless at least n+1-k of the n values fall on one side of it, so its coverage is
    1 - 2 P(Binomial(n, 1/2) <= k-1) whatever the distribution. The narrowest whose coverage
    reaches 95%; below 6 values none does, and the widest (the lowest to the highest) is given
    with the coverage it has. (A percentile bootstrap of a median from 5 values gave the same
    bounds and called them 95%.)"""
    ordered = np.sort(np.asarray(values, dtype=float))
    n = len(ordered)
    k = 1
    while k < (n + 1) // 2 and _median_coverage(n, k + 1) >= CONFIDENCE:
        k += 1
    return Interval(float(ordered[k - 1]), float(ordered[n - k]), _median_coverage(n, k))


def _median_coverage(n: int, k: int) -> float:
    return float(1 - 2 * stats.binom.cdf(k - 1, n, 0.5))


def by_cell(records: Iterable[CellResult]) -> list[CellStats]:
    """The measurements of each cell, in round order (a cell none of whose rounds was taken is
    left out: `not_measured` lists it)."""
    ordered = sorted(records, key=lambda r: (r.cell.id, r.repeat))
    out = []
    for group in (list(g) for _, g in groupby(ordered, key=lambda r: r.cell.id)):
        taken = tuple(r for r in group if r.verdict is not Verdict.not_measured)
        skipped = tuple(r for r in group if r.verdict is Verdict.not_measured)
        if taken:
            out.append(CellStats(taken[0].cell, taken, skipped))
    return out


def not_measured(records: Iterable[CellResult]) -> list[CellResult]:
    """One record of each cell none of whose rounds was taken."""
    taken = {r.cell.id for r in records if r.verdict is not Verdict.not_measured}
    first: dict[str, CellResult] = {}
    for r in records:
        if r.verdict is Verdict.not_measured and r.cell.id not in taken:
            first.setdefault(r.cell.id, r)
    return list(first.values())


@dataclass(frozen=True)
class Ratio:
    """B over A: a geometric mean, with its 95% interval (None from one pair only)."""

    value: float
    interval: Interval | None
    n: int

    @property
    def significant(self) -> bool:
        return self.interval is not None and not self.interval.contains(1.0)

    def describe(self) -> str:
        text = f"{self.value:.2f}×"
        if self.interval is None:
            return f"{text} (no interval from one measurement)"
        text += f" [{self.interval.low:.2f}–{self.interval.high:.2f}]"
        return text if self.significant else f"~ {text}, no significant difference"


def paired_ratio(a: Sequence[float], b: Sequence[float]) -> Ratio | None:
    """B/A from measurements paired by round: geometric mean of b_i/a_i, t interval on logs."""
    if len(a) != len(b):
        raise ValueError("paired samples need the same length")
    pairs = [(x, y) for x, y in zip(a, b, strict=True) if x > 0 and y > 0]
    if not pairs:
        return None
    logs = np.log([y / x for x, y in pairs])
    return _log_ratio(float(logs.mean()), _t_interval(logs), len(pairs))


def unpaired_ratio(a: Sequence[float], b: Sequence[float]) -> Ratio | None:
    """B/A for two independent samples: ratio of geometric means, Welch t interval on logs."""
    la = np.log([x for x in a if x > 0])
    lb = np.log([y for y in b if y > 0])
    if not len(la) or not len(lb):
        return None
    diff = float(lb.mean() - la.mean())
    interval = None
    if len(la) >= 2 and len(lb) >= 2:
        if np.ptp(la) == 0 and np.ptp(lb) == 0:
            interval = Interval(diff, diff)
        else:
            ci = stats.ttest_ind(lb, la, equal_var=False).confidence_interval(CONFIDENCE)
            interval = Interval(float(ci.low), float(ci.high))
    return _log_ratio(diff, interval, min(len(la), len(lb)))


def _t_interval(logs: np.ndarray) -> Interval | None:
    if len(logs) < 2:
        return None
    sem = float(stats.sem(logs))
    mean = float(logs.mean())
    if sem == 0:
        return Interval(mean, mean)
    low, high = stats.t.interval(CONFIDENCE, len(logs) - 1, loc=mean, scale=sem)
    return Interval(float(low), float(high))


def _log_ratio(log_value: float, log_interval: Interval | None, n: int) -> Ratio:
    interval = (
        Interval(math.exp(log_interval.low), math.exp(log_interval.high)) if log_interval else None
    )
    return Ratio(math.exp(log_value), interval, n)


def served(record: CellResult) -> float | None:
    """Successful req/s of a measurement that did not collapse; None otherwise."""
    if record.wrk is None or record.verdict in FROZEN:
        return None
    rps = record.wrk.ok_rps
    return rps if rps >= NEAR_ZERO_RPS else None
