"""The verdict rules, and their thresholds, in one place (documented in README.md)."""

from __future__ import annotations

from harness.model import Verdict, WrkResult

# Collapsed: successful throughput below this fraction of the same variant's best successful
# throughput at a lower connection count in the same run...
COLLAPSE_FRACTION = 0.25
# ...or fewer successful responses per second than this, whatever came before.
NEAR_ZERO_RPS = 1.0


def judge(wrk: WrkResult, best_lower_ok_rps: float | None, server_errors: int = 0) -> Verdict:
    """ok / errors / collapsed for a cell whose server started, answered and survived."""
    if wrk.ok_rps < NEAR_ZERO_RPS:
        return Verdict.collapsed
    if best_lower_ok_rps is not None and wrk.ok_rps < COLLAPSE_FRACTION * best_lower_ok_rps:
        return Verdict.collapsed
    if wrk.failed or server_errors:
        return Verdict.errors
    return Verdict.ok
