"""Where does a variant collapse? Doubling, then bisection between the last fine and the first
collapsed connection count, up to a ceiling.

The search only ever reports what it observed: `fine_at` is a count that was probed and did not
collapse, `collapsed_at` one that was probed and did. Near the threshold answers are noisy (the
stall needs enough requests to arrive at once), so `confirm` probes the bracket's edges again
until each has been probed `repeats` times (more where its answers disagree), and a threshold
keeps every level's count: "froze 0/3 at 64, 2/3 at 72, 3/3 at 80".
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

Count = tuple[int, int]  # (probes that collapsed, probes that answered) at one level


@dataclass(frozen=True)
class Threshold:
    # The largest level below every collapse seen that held in every probe.
    fine_at: int | None
    # The smallest level that collapsed in every probe; None: none did.
    collapsed_at: int | None
    ceiling: int
    probes: dict[int, bool] = field(default_factory=dict)  # connections -> collapsed (any)?
    counts: dict[int, Count] = field(default_factory=dict)  # connections -> (collapsed, probes)

    @property
    def step(self) -> int | None:
        """The search's resolution where it stopped: the width of the final bracket."""
        if self.collapsed_at is None:
            return None
        return self.collapsed_at - (self.fine_at or 0)

    @property
    def upper(self) -> int | None:
        """Where the threshold is at most: the first level that always collapsed, else the
        first that ever did (its probes disagreed); None: nothing collapsed."""
        if self.collapsed_at is not None:
            return self.collapsed_at
        return min((c for c, (f, _) in self.counts.items() if f), default=None)

    @property
    def highest(self) -> int:
        """The highest level that answered (the ceiling where none is known): where a search
        whose higher levels gave no answer can say nothing above it."""
        return max(self.counts, default=self.ceiling)

    @property
    def repeated(self) -> bool:
        """Some level was probed more than once."""
        return any(n > 1 for _, n in self.counts.values())

    @property
    def uncertain(self) -> dict[int, Count]:
        """The levels between the edges (where nothing always collapsed: those whose probes
        disagreed)."""
        if self.collapsed_at is None:
            return {c: (f, n) for c, (f, n) in sorted(self.counts.items()) if 0 < f < n}
        low = self.fine_at if self.fine_at is not None else 0
        return {c: v for c, v in sorted(self.counts.items()) if low < c < self.collapsed_at}

    def tally(self) -> str:
        """'froze 0/3 at 64, 2/3 at 72, 3/3 at 80': every level from the last that always held
        to the first that always collapsed (where none did, the levels that sometimes did and
        the highest level probed)."""
        if self.collapsed_at is None:
            top = max(self.counts, default=self.ceiling)
            shown = {**self.uncertain, **{top: self.counts[top]}} if self.counts else {}
        else:
            low = self.fine_at if self.fine_at is not None else 0
            high = self.collapsed_at
            shown = {c: v for c, v in self.counts.items() if low <= c <= high}
        return "froze " + ", ".join(f"{f}/{n} at {c}" for c, (f, n) in sorted(shown.items()))

    def describe(self) -> str:
        if not self.counts and self.collapsed_at is None and self.fine_at is None:
            return "no probe answered"
        if self.repeated:
            if self.collapsed_at is None and self.uncertain:
                top = max(self.counts)
                return f"no level collapsed every time up to {top} ({self.tally()})"
            if self.collapsed_at is None:
                return f"no collapse up to {self.highest} ({self.tally()})"
            return self.tally()
        if self.collapsed_at is None:
            return f"no collapse up to {self.highest}"
        if self.fine_at is None:
            return f"collapsed already at {self.collapsed_at}"
        return f"fine at {self.fine_at}, collapsed at {self.collapsed_at}"


def bracket(probes: dict[int, bool], ceiling: int) -> Threshold:
    """The threshold that a set of probe answers, one per level, shows."""
    return bracket_counts({c: (int(bad), 1) for c, bad in probes.items()}, ceiling)


def bracket_counts(counts: dict[int, Count], ceiling: int) -> Threshold:
    """The threshold that probe counts show (used by the search and by reports): collapsed at
    the smallest level where every probe collapsed, fine at the largest level below any
    collapse where none did."""
    counts = {c: (f, n) for c, (f, n) in sorted(counts.items()) if n > 0}
    probes = {c: f > 0 for c, (f, n) in counts.items()}
    always = [c for c, (f, n) in counts.items() if f == n]
    if not any(probes.values()):
        return Threshold(None, None, ceiling, probes, counts)
    first = min(c for c, bad in probes.items() if bad)
    fine = max((c for c, (f, _) in counts.items() if f == 0 and c < first), default=None)
    return Threshold(fine, min(always, default=None), ceiling, probes, counts)


def confirm(
    found: Threshold,
    again: Callable[[int], bool | None],
    repeats: int = 3,
    disputed: int = 5,
    budget: int = 12,
) -> Threshold:
    """Probe `found`'s edges (the last level that held, the first that collapsed; the ceiling
    where nothing collapsed) until each has `repeats` answers, and each level between them
    whose answers disagree `disputed`; at most `budget` probes more. `again(c)` measures once
    more: collapsed?, or None where the probe could not say (it still counts against the
    budget). An edge that disagrees moves the bracket outwards, and the new edge is probed."""
    counts = dict(found.counts)
    if not counts:
        return found  # no level answered: there is no edge to probe again
    for _ in range(budget):
        now = bracket_counts(counts, found.ceiling)
        edges = [c for c in (now.fine_at, now.collapsed_at) if c is not None]
        if now.collapsed_at is None:
            # Nothing always collapsed: the highest level that answered is an edge, and where
            # some level sometimes collapsed, the next level up (twice it) is probed too.
            top = max(counts)
            edges.append(top)
            if now.uncertain and top < found.ceiling:
                edges.append(min(2 * top, found.ceiling))
        wanted = [c for c in edges if counts.get(c, (0, 0))[1] < repeats]
        wanted += [c for c, (f, n) in now.uncertain.items() if 0 < f < n and n < disputed]
        if not wanted:
            return now
        level = wanted[0]
        answer = again(level)
        if answer is not None:
            froze, probes = counts.get(level, (0, 0))
            counts[level] = (froze + answer, probes + 1)
    return bracket_counts(counts, found.ceiling)


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
