"""What a capacity search found: per rate, how many probes missed the objective, and the
bracket those counts make (harness/domain/search.py's, over rates)."""

from __future__ import annotations

from collections.abc import Iterable

from harness.domain.search import Count, Threshold, bracket_counts
from harness.domain.slo import Slo


def tally(answers: Iterable[tuple[float, bool | None]]) -> dict[int, Count]:
    """(rate, missed?) of each probe -> rate: (probes that missed, probes that answered);
    a probe that could not say (None) counts neither way."""
    out: dict[int, Count] = {}
    for rate, missed in answers:
        if missed is None:
            continue
        level = round(rate)
        misses, n = out.get(level, (0, 0))
        out[level] = (misses + missed, n + 1)
    return out


def bracket(answers: Iterable[tuple[float, bool | None]], ceiling: int) -> Threshold:
    """`fine_at`: the highest rate below every miss that met the objective every time;
    `collapsed_at`: the lowest that always missed."""
    return bracket_counts(tally(answers), ceiling)


def sustains(found: Threshold) -> int | None:
    """The highest rate that met the objective every time, below every rate that missed it
    (where none ever did: the highest probed); None where none met it so."""
    if found.fine_at is not None:
        return found.fine_at
    if found.counts and not any(missed for missed, _ in found.counts.values()):
        return max(found.counts)
    return None


def describe(found: Threshold, slo: Slo) -> str:
    """'sustains 600 req/s within p99 < 250 ms, not 720 (missed 0/3 at 600, 2/3 at 660, ...)'."""
    if not found.counts:
        return "no probe answered"
    missed = ", ".join(f"{m}/{n} at {r}" for r, (m, n) in sorted(found.counts.items()))
    rate = sustains(found)
    if rate is None:
        return f"sustains less than {found.upper} req/s within {slo.text()} (missed {missed})"
    if found.upper is None:
        top = f"at least {rate} req/s within {slo.text()}, the highest probed"
        return f"sustains {top} (missed {missed})"
    return f"sustains {rate} req/s within {slo.text()}, not {found.upper} (missed {missed})"
