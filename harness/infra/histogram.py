"""HdrHistograms (the `hdrhistogram` package) of a run's latencies: made from wrk's exported
buckets, encoded into records, decoded and merged for reports."""

from __future__ import annotations

import functools
from collections.abc import Iterable, Sequence

from hdrh.histogram import HdrHistogram

from harness.domain.axes import FROZEN, Verdict
from harness.domain.latency import Buckets, Histograms, Kind, uncorrect
from harness.domain.result import CellResult, WrkResult
from harness.domain.rules import NO_ANSWER
from harness.domain.slo import Check, Slo

SIGNIFICANT_DIGITS = 3
HIGHEST_US = 3_600_000_000  # an hour: above any request timeout wrk is given


class Distribution:
    """A latency distribution in µs at 3 significant digits, to merge and read percentiles."""

    def __init__(self, histogram: HdrHistogram) -> None:
        self._h = histogram

    @classmethod
    def empty(cls) -> Distribution:
        return cls(HdrHistogram(1, HIGHEST_US, SIGNIFICANT_DIGITS))

    @classmethod
    def of(cls, buckets: Buckets) -> Distribution:
        out = cls.empty()
        for value, count in buckets.items():
            if count:
                out._h.record_value(min(max(value, 1), HIGHEST_US), count)
        return out

    @classmethod
    def decode(cls, text: str) -> Distribution:
        return cls(_decoded(text))

    @classmethod
    def merged(cls, parts: Iterable[Distribution]) -> Distribution:
        out = cls.empty()
        for part in parts:
            out._h.add(part._h)
        return out

    def encode(self) -> str:
        return self._h.encode().decode("ascii")

    @property
    def count(self) -> int:
        return int(self._h.get_total_count())

    @property
    def mean_ms(self) -> float:
        return float(self._h.get_mean_value()) / 1e3 if self.count else 0.0

    def percentile_ms(self, p: float) -> float:
        """The value of the response at rank p% of the count (rounded; HdrHistogram's rule), as
        the lowest value its 0.1% bucket holds."""
        if not self.count:
            return 0.0
        value = self._h.get_value_at_percentile(p)
        return self._h.get_lowest_equivalent_value(value) / 1e3

    def above(self, ms: float) -> int:
        """Responses in buckets above the one holding `ms`."""
        edge = self._h.get_highest_equivalent_value(round(ms * 1e3))
        return sum(
            int(item.count_at_value_iterated_to)
            for item in self._h.get_recorded_iterator()
            if item.value_iterated_to > edge
        )


@functools.lru_cache(maxsize=256)  # a decoded histogram is about 190 KB
def _decoded(text: str) -> HdrHistogram:
    # Reports read the same record's histogram many times; decoding is the slow part.
    return HdrHistogram.decode(text.encode("ascii"))


def histograms(corrected: Buckets, interval_us: int) -> Histograms:
    """Both distributions of a run from wrk's (corrected) buckets and its interval."""
    return Histograms(
        Distribution.of(uncorrect(corrected, interval_us)).encode(),
        Distribution.of(corrected).encode(),
        interval_us,
    )


def decoded(histograms: Histograms, kind: Kind) -> Distribution:
    return Distribution.decode(histograms.encoded(kind))


def distribution(wrk: WrkResult, kind: Kind = Kind.measured) -> Distribution | None:
    return decoded(wrk.histograms, kind) if wrk.histograms else None


def measured_ms(wrk: WrkResult | None, p: float) -> float | None:
    """A percentile of a run's measured distribution; None without histograms or responses."""
    found = distribution(wrk) if wrk and wrk.requests else None
    return found.percentile_ms(p) if found is not None and found.count else None


def waited(wrk: WrkResult) -> Kind:
    """The distribution of what a user waited: from due in an open loop, else each response
    as measured (wrk's corrected one assumes a rate it did not keep)."""
    return Kind.corrected if wrk.schedule is not None else Kind.measured


def slo_check(records: Sequence[CellResult], slo: Slo) -> Check | None:
    """Measurements of one cell together against `slo`; None where one that served kept no
    histogram (records of format 4 and older)."""
    served = [r.wrk for r in records if r.wrk is not None]
    found = [distribution(w, waited(w)) for w in served if w.requests]
    if not served or any(d is None for d in found):
        return None  # nothing measured (the server never started), or no histograms
    slow = sum(d.above(slo.limit_ms) for d in found if d is not None)
    return Check(
        slo,
        answered=sum(w.requests for w in served),
        slow=slow,
        status_errors=sum(w.status_errors for w in served),
        socket_errors=sum(w.failed - w.status_errors for w in served),
        dropped=sum(w.schedule.dropped for w in served if w.schedule),
        collapsed=any(r.verdict in FROZEN for r in records),
    )


def probe_missed(record: CellResult, slo: Slo) -> bool | None:
    """Whether one measurement missed `slo`; None where it could not say: the server did not
    start or answered wrongly, the load or the database failed, or it kept no histogram. A
    measurement whose side channel went unsampled (`unknown`) still has its latencies: a miss
    counts, a meeting does not (a process may have stalled unseen)."""
    if record.verdict in NO_ANSWER and record.verdict is not Verdict.unknown:
        return None
    check = slo_check([record], slo)
    if check is None:
        return None
    if record.verdict is Verdict.unknown:
        return True if not check.met else None
    return not check.met
