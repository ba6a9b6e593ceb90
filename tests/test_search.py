import random

import pytest

from harness.domain.search import Threshold, bracket, find_threshold, resolution


def counting(threshold: int) -> tuple[list[int], object]:
    calls: list[int] = []

    def collapses(connections: int) -> bool:
        calls.append(connections)
        return connections >= threshold

    return calls, collapses


@pytest.mark.parametrize("threshold", [9, 21, 55, 56, 60, 95, 110, 120, 399])
def test_brackets_a_sharp_threshold_within_the_resolution(threshold: int) -> None:
    calls, collapses = counting(threshold)
    found = find_threshold(collapses, start=8, ceiling=400)
    assert found.collapsed_at is not None and found.fine_at is not None
    assert found.fine_at < threshold <= found.collapsed_at
    assert found.collapsed_at - found.fine_at <= max(resolution(found.collapsed_at), 1)
    assert len(calls) == len(set(calls)) <= 14  # each count probed once, few probes


def test_no_collapse_up_to_the_ceiling() -> None:
    calls, collapses = counting(10_000)
    found = find_threshold(collapses, start=8, ceiling=400)
    assert found.collapsed_at is None and found.describe() == "no collapse up to 400"
    assert calls == [8, 16, 32, 64, 128, 256, 400]


def test_collapse_at_the_first_probe() -> None:
    _, collapses = counting(1)
    found = find_threshold(collapses, start=8, ceiling=400)
    assert found.fine_at is None and found.collapsed_at is not None
    assert found.collapsed_at <= 8 and found.describe().startswith("collapsed already at")


@pytest.mark.parametrize("seed", range(20))
def test_noisy_answers_near_the_threshold_still_give_a_consistent_nearby_bracket(
    seed: int,
) -> None:
    rng = random.Random(seed)
    threshold, band = 60, 8  # within 8 of the threshold, each answer is a coin toss

    def collapses(connections: int) -> bool:
        if abs(connections - threshold) <= band:
            return rng.random() < 0.5
        return connections > threshold

    found = find_threshold(collapses, start=8, ceiling=400)
    assert found.collapsed_at is not None
    assert found.probes[found.collapsed_at] is True
    assert found.fine_at is None or found.probes[found.fine_at] is False
    assert threshold - band - 8 <= found.collapsed_at <= threshold + band + 8
    assert len(found.probes) <= 14


def test_bracket_reads_only_observations() -> None:
    t = bracket({8: False, 16: False, 32: True, 24: False, 20: True}, 400)
    assert (t.fine_at, t.collapsed_at, t.step) == (16, 20, 4)
    assert bracket({}, 400) == Threshold(None, None, 400, {})


def test_bad_bounds() -> None:
    with pytest.raises(ValueError):
        find_threshold(lambda c: False, start=500, ceiling=400)
