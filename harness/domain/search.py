"""Where does a variant collapse? Doubling, then bisection between the last fine and the first
collapsed connection count, up to a ceiling.

The search only ever reports what it observed: `fine_at` is a count that was probed and did not
collapse, `collapsed_at` one that was probed and did. Near the threshold answers are noisy (the
stall needs enough requests to arrive at once); the bracket stays consistent with the probes.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field


@dataclass(frozen=True)
class Threshold:
    fine_at: int | None  # the largest probed count below collapsed_at that did not collapse
    collapsed_at: int | None  # the smallest probed count that collapsed; None: none did
    ceiling: int
    probes: dict[int, bool] = field(default_factory=dict)  # connections -> collapsed?

    @property
    def step(self) -> int | None:
        """The search's resolution where it stopped: the width of the final bracket."""
        if self.collapsed_at is None:
            return None
        return self.collapsed_at - (self.fine_at or 0)

    def describe(self) -> str:
        if self.collapsed_at is None:
            return f"no collapse up to {self.ceiling}"
        if self.fine_at is None:
            return f"collapsed already at {self.collapsed_at}"
        return f"fine at {self.fine_at}, collapsed at {self.collapsed_at}"


def bracket(probes: dict[int, bool], ceiling: int) -> Threshold:
    """The threshold that a set of probe answers shows (used by the search and by reports)."""
    collapsed = sorted(c for c, bad in probes.items() if bad)
    if not collapsed:
        return Threshold(None, None, ceiling, dict(probes))
    first = collapsed[0]
    fine = [c for c, bad in probes.items() if not bad and c < first]
    return Threshold(max(fine, default=None), first, ceiling, dict(probes))


def resolution(at: int) -> int:
    """Stop bisecting when the bracket is this narrow: 10% of the count, at least 2."""
    return max(2, at // 10)


def find_threshold(
    collapses: Callable[[int], bool], start: int = 8, ceiling: int = 400
) -> Threshold:
    """Probe `collapses(connections)` as few times as it takes to bracket the threshold."""
    if not 1 <= start <= ceiling:
        raise ValueError(f"need 1 <= start <= ceiling, got start={start}, ceiling={ceiling}")
    probes: dict[int, bool] = {}

    def probe(connections: int) -> bool:
        if connections not in probes:
            probes[connections] = collapses(connections)
        return probes[connections]

    at = start
    while not probe(at):
        if at == ceiling:
            return bracket(probes, ceiling)
        at = min(at * 2, ceiling)
    while True:
        found = bracket(probes, ceiling)
        low, high = found.fine_at or 0, found.collapsed_at
        assert high is not None
        if high - low <= resolution(high) or high - low <= 1:
            return found
        probe((low + high) // 2)
