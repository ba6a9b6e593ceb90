"""The statistics of repeated measurements, checked against values computed by hand (with the
t table's critical values), and the interleaved schedule."""

from __future__ import annotations

import math
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

from harness.domain.axes import Verdict
from harness.domain.plan import schedule
from harness.domain.result import CellResult, WrkResult
from harness.report import comparisons
from harness.report.stats import by_cell, median_interval, paired_ratio, unpaired_ratio
from harness.store.rundir import RunDir

FIXTURES = Path(__file__).parent / "fixtures"
T_975 = {2: 4.302653, 3: 3.182446, 4: 2.776445}  # Student's t, two-sided 95%, by degrees of freedom


def hand_interval(logs: list[float], df: int, se: float) -> tuple[float, float, float]:
    mean = sum(logs) / len(logs)
    half = T_975[df] * se
    return math.exp(mean), math.exp(mean - half), math.exp(mean + half)


def sample_sd(values: list[float]) -> float:
    m = sum(values) / len(values)
    return math.sqrt(sum((v - m) ** 2 for v in values) / (len(values) - 1))


@pytest.mark.parametrize(
    ("b", "significant"),
    [([110.0, 120.0, 130.0], False), ([120.0, 125.0, 130.0, 135.0], True)],
)
def test_paired_ratio_is_a_geometric_mean_with_a_t_interval(
    b: list[float], significant: bool
) -> None:
    a = [100.0] * len(b)
    logs = [math.log(y / x) for x, y in zip(a, b, strict=True)]
    value, low, high = hand_interval(logs, len(b) - 1, sample_sd(logs) / math.sqrt(len(b)))
    ratio = paired_ratio(a, b)
    assert ratio is not None and ratio.interval is not None and ratio.n == len(b)
    assert ratio.value == pytest.approx(value, rel=1e-6)
    assert (ratio.interval.low, ratio.interval.high) == pytest.approx((low, high), rel=1e-5)
    assert ratio.significant is significant
    assert ("no significant difference" in ratio.describe()) is not significant


def test_first_sample_by_hand() -> None:
    """1.1, 1.2, 1.3: geometric mean 1.197, interval 0.973-1.473 (contains 1)."""
    ratio = paired_ratio([100.0] * 3, [110.0, 120.0, 130.0])
    assert ratio is not None and ratio.interval is not None
    assert round(ratio.value, 3) == 1.197
    assert (round(ratio.interval.low, 3), round(ratio.interval.high, 3)) == (0.973, 1.473)
    assert ratio.describe() == "~ 1.20× [0.97–1.47], no significant difference"


def test_unpaired_ratio_is_welch_on_logarithms() -> None:
    """b = 1.5 a: equal log variances, so Welch's df is 2 (n - 1) = 4."""
    a, b = [100.0, 110.0, 120.0], [150.0, 165.0, 180.0]
    la = [math.log(x) for x in a]
    se = math.sqrt(2 * sample_sd(la) ** 2 / 3)
    diff = math.log(1.5)
    low, high = math.exp(diff - T_975[4] * se), math.exp(diff + T_975[4] * se)
    ratio = unpaired_ratio(a, b)
    assert ratio is not None and ratio.interval is not None
    assert ratio.value == pytest.approx(1.5)
    assert (ratio.interval.low, ratio.interval.high) == pytest.approx((low, high), rel=1e-5)
    assert (round(ratio.interval.low, 3), round(ratio.interval.high, 3)) == (1.220, 1.844)
    assert unpaired_ratio([100.0], [150.0]).interval is None  # type: ignore[union-attr]


def wrk(rps: float) -> WrkResult:
    return WrkResult(
        requests=int(rps * 10), duration_s=10.0, bytes=0, p50_ms=1.0, p90_ms=2.0,
        p99_ms=rps / 100, p999_ms=5.0, max_ms=6.0, mean_ms=1.0, connect_errors=0,
        read_errors=0, write_errors=0, timeouts=0, status_errors=0,
    )  # fmt: skip


def measured(values: list[float], verdicts: list[Verdict] | None = None) -> list[CellResult]:
    base = RunDir.open(FIXTURES / "run").records()[0]
    verdicts = verdicts or [Verdict.ok] * len(values)
    return [
        replace(base, wrk=wrk(v), verdict=verdict, repeat=i + 1)
        for i, (v, verdict) in enumerate(zip(values, verdicts, strict=True))
    ]


def test_a_cells_median_interval_spread_and_flags() -> None:
    (steady,) = by_cell(measured([500.0, 505.0, 510.0, 495.0, 502.0]))
    assert steady.n == 5 and steady.median_rps == 502.0
    assert steady.interval is not None
    assert 495.0 <= steady.interval.low <= 502.0 <= steady.interval.high <= 510.0
    assert steady.interval == by_cell(measured([500.0, 505.0, 510.0, 495.0, 502.0]))[0].interval
    assert steady.cv == pytest.approx(sample_sd([500, 505, 510, 495, 502]) / 502.4)
    assert steady.flags == [] and steady.verdict == "ok"
    assert steady.latency("p99_ms") == (5.02, 4.95, 5.1)
    (noisy,) = by_cell(measured([400.0, 500.0, 800.0]))
    assert [f.kind for f in noisy.flags] == ["unstable", "outlier"]
    assert "800.0 req/s is 60% from the median 500.0" in str(noisy.flags[1])
    assert "more REPEATS" in str(noisy.flags[0])


def test_the_median_interval_says_the_coverage_it_has() -> None:
    """Order statistics: 5 rounds give the lowest to the highest at 1 - 2/32 = 93.75%, 3 rounds
    75%; from 6 rounds an interval reaches 95%, the narrowest that does is taken."""
    five = median_interval([510.0, 495.0, 502.0, 500.0, 505.0])
    assert (five.low, five.high, five.coverage) == (495.0, 510.0, 0.9375)
    assert median_interval([3.0, 1.0, 2.0]).coverage == 0.75
    nine = median_interval([float(x) for x in range(1, 10)])
    assert (nine.low, nine.high) == (2.0, 8.0) and nine.coverage == pytest.approx(1 - 20 / 512)
    twenty = median_interval([float(x) for x in range(1, 21)])
    assert (twenty.low, twenty.high) == (6.0, 15.0) and twenty.coverage >= 0.95


@pytest.mark.parametrize("n", [3, 5, 9])
def test_the_stated_coverage_is_the_coverage_measured_by_simulation(n: int) -> None:
    """Skewed samples (log-normal, like req/s under noise) of a known median: the share of
    intervals that hold it is the coverage the interval states, within sampling error."""
    rng = np.random.default_rng(1)
    trials = 4000
    samples = rng.lognormal(mean=math.log(500.0), sigma=0.2, size=(trials, n))
    held = [(i := median_interval(row)).low <= 500.0 <= i.high for row in samples]
    stated = median_interval(samples[0]).coverage
    assert abs(sum(held) / trials - stated) < 3 * math.sqrt(stated * (1 - stated) / trials) + 1e-9


def test_verdicts_count_the_measurements() -> None:
    (cell,) = by_cell(measured([0.0, 0.0, 0.0], [Verdict.collapsed] * 3))
    assert cell.verdict == "collapsed 3/3" and cell.flags == []
    (mixed,) = by_cell(measured([500.0, 0.0, 480.0], [Verdict.ok, Verdict.collapsed, Verdict.ok]))
    assert mixed.verdict == "collapsed 1/3, ok 2/3" and mixed.worst is Verdict.collapsed


def test_comparisons_pair_the_rounds_of_variants_that_differ_in_one_setting() -> None:
    records = RunDir.open(FIXTURES / "run").records()
    labels = [c.label for c in comparisons.comparisons(records)]
    assert (
        "async / sync · dependency list" in labels and "context / dependency · sync list" in labels
    )
    assert len(labels) == 8  # 2 workloads x (2 mode pairs + 2 style pairs)


def test_the_schedule_interleaves_rounds_level_by_level() -> None:
    cells = [r.cell for r in RunDir.open(FIXTURES / "run").records()]
    order = schedule(cells, repeats=3, seed=7)
    assert len(order) == 3 * len(cells)
    levels = [c.connections for c, _ in order]
    assert levels == sorted(levels)  # a verdict can compare with the lower levels
    for level in set(levels):
        here = [(c, n) for c, n in order if c.connections == level]
        rounds = [n for _, n in here]
        assert rounds == sorted(rounds)  # round by round...
        for n in (1, 2, 3):  # ...each round measures every cell of the level once
            assert sorted(c.id for c, k in here if k == n) == sorted(
                c.id for c in cells if c.connections == level
            )
    assert schedule(cells, 3, seed=7) == order  # the recorded seed gives the same order
    assert schedule(cells, 3, seed=8) != order
