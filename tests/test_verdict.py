import pytest

from harness.domain.axes import Verdict
from harness.domain.result import WrkResult
from harness.domain.rules import COLLAPSE_FRACTION, NEAR_ZERO_RPS, judge


def result(requests: int, seconds: float = 10.0, status: int = 0, read: int = 0) -> WrkResult:
    return WrkResult(requests, seconds, 0, 1, 2, 3, 4, 5, 1.5, 0, read, 0, 0, status)


def test_clean_run_is_ok() -> None:
    assert judge(result(6000), best_lower_ok_rps=None).verdict is Verdict.ok


def test_nothing_completed_is_collapsed_even_without_a_baseline() -> None:
    assert judge(result(0), None).verdict is Verdict.collapsed
    assert judge(result(int(NEAR_ZERO_RPS * 10) - 1), None).verdict is Verdict.collapsed


def test_only_error_responses_is_collapsed() -> None:
    assert judge(result(5000, status=5000), None).verdict is Verdict.collapsed


@pytest.mark.parametrize(
    ("ok_rps", "best", "expected"),
    [
        (COLLAPSE_FRACTION * 600 - 1, 600, Verdict.collapsed),
        (COLLAPSE_FRACTION * 600 + 1, 600, Verdict.ok),
        (50, 60, Verdict.ok),
    ],
)
def test_collapse_is_relative_to_the_variants_best_at_lower_load(
    ok_rps: float, best: float, expected: Verdict
) -> None:
    assert judge(result(int(ok_rps * 10)), best).verdict is expected


def test_some_failures_with_held_throughput_are_errors() -> None:
    assert judge(result(6000, status=3), 600).verdict is Verdict.errors
    assert judge(result(6000, read=1), 600).verdict is Verdict.errors


def test_server_side_errors_alone_are_errors() -> None:
    assert judge(result(6000), 600, server_errors=2).verdict is Verdict.errors
