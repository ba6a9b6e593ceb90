"""The rules a run applies, with their thresholds, in one place (documented in docs/method.md,
Verdicts): the verdict of a cell (from the side channel's samples of every process where it was
on, else from throughput), the mechanism's prediction of where sync `dependency` collapses, and
what a failure-map probe counts as."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from enum import StrEnum

from harness.domain.axes import Mode, SessionStyle, Verdict
from harness.domain.cell import Cell, ServerConfig
from harness.domain.occupancy import Timeline, health
from harness.domain.result import CellResult, Checks, WrkResult
from harness.domain.search import Threshold

# Collapsed: successful throughput below this fraction of the same variant's best successful
# throughput at a lower connection count in the same run...
COLLAPSE_FRACTION = 0.25
# ...or fewer successful responses per second than this, whatever came before.
NEAR_ZERO_RPS = 1.0


# A process stalled: it completed no successful response for this long while requests were in
# flight in it. A second is 10 samples at 10 Hz and long beside the demo app's responses (a few
# milliseconds each); an app whose requests take a second or more by design would need longer.
STALL_S = 1.0
# A process of a cell with the side channel unsampled this long might have stalled unseen: the
# cell is `unknown`, never `ok`.
UNSAMPLED_S = 1.0


# A measured window is steady unless its answered requests per second, after its first half
# second, rose or fell by more than this fraction of their mean across it, and significantly so
# (harness/domain/occupancy.py, `window_of`); a window that is not is flagged in its record, not
# judged otherwise: a freeze is the verdict's business.
STEADY_TREND = 0.25


class Rule(StrEnum):
    """Which rule judged a measurement, kept in its record."""

    throughput = "throughput"  # no side channel: successful req/s against the variant's best
    side_channel = "side channel"  # every process's samples, then throughput
    lifecycle = "lifecycle"  # it never got as far as a measurement that could be judged
    answers = "answers"  # a foreign service's sampled answers changed status or shape


@dataclass(frozen=True)
class Judgement:
    verdict: Verdict
    rule: Rule
    reason: str = ""


def by_throughput(
    wrk: WrkResult, best_lower_ok_rps: float | None, server_errors: int = 0
) -> Judgement:
    """ok / errors / collapsed from wrk's figures alone."""
    if wrk.ok_rps < NEAR_ZERO_RPS:
        return Judgement(Verdict.collapsed, Rule.throughput, f"{wrk.ok_rps:.1f} successful req/s")
    if best_lower_ok_rps is not None and wrk.ok_rps < COLLAPSE_FRACTION * best_lower_ok_rps:
        why = (
            f"{wrk.ok_rps:.0f} successful req/s, under {COLLAPSE_FRACTION:.0%} of the "
            f"{best_lower_ok_rps:.0f} it served at a lower load"
        )
        return Judgement(Verdict.collapsed, Rule.throughput, why)
    dropped = wrk.schedule.dropped if wrk.schedule else 0
    if wrk.failed or server_errors or dropped:
        why = f"{wrk.failed} failed requests, {server_errors} errors in the server's log"
        if wrk.schedule:  # an open loop's users also go without when their request never left
            why += f", {dropped} requests dropped (no connection free for the request timeout)"
        return Judgement(Verdict.errors, Rule.throughput, why)
    return Judgement(Verdict.ok, Rule.throughput)


def by_answers(judgement: Judgement, checks: Checks | None) -> Judgement:
    """A foreign service that held its throughput but answered some sampled requests with
    another status or shape than before the run did not serve them: `errors`."""
    if checks is None or checks.ok or judgement.verdict is not Verdict.ok:
        return judgement
    why = (
        f"{checks.mismatched} of {checks.answered} answers sampled under load differed from "
        f"those before the run ({checks.first})"
    )
    return Judgement(Verdict.errors, Rule.answers, "; ".join(filter(None, [judgement.reason, why])))


def by_evidence(
    throughput: Judgement, occupancy: Timeline | None, processes: int | None
) -> Judgement:
    """The throughput rule's judgement, made stricter by the side channel where it was on.

    Every process stalled: `collapsed`. Some: `partly-collapsed` (behind a load balancer, a share
    of the users is sent to a dead process, whatever the throughput of the others). A process
    unsampled for UNSAMPLED_S, or never: `unknown`. A throughput collapse stays a collapse.
    """
    if occupancy is None or not occupancy.samples:
        return throughput
    found = health(occupancy, STALL_S, UNSAMPLED_S, occupancy.processes or processes)
    rule = Rule.side_channel
    stalled = "; ".join(s.describe() for s in found.stalls)
    if found.stalls and len(found.stalls) == found.processes:
        n = found.processes
        what = "the process stalled" if n == 1 else f"all {n} processes stalled"
        return Judgement(Verdict.collapsed, rule, f"{what}: {stalled}")
    if throughput.verdict is Verdict.collapsed:
        some = f"; {len(found.stalls)} of {found.processes} stalled: {stalled}" if stalled else ""
        return Judgement(Verdict.collapsed, rule, throughput.reason + some)
    if found.stalls:
        why = f"{len(found.stalls)} of {found.processes} processes stalled: {stalled}"
        return Judgement(Verdict.partly_collapsed, rule, why)
    if found.missing or found.unsampled:
        gaps = [f"PID {pid} unsampled for {gap:g} s" for pid, gap in found.unsampled.items()]
        if found.missing:
            gaps.insert(0, f"{found.missing} of {found.processes} processes never sampled")
        why = "; ".join(gaps) + " of the " + f"{found.window_s:g} s window"
        if throughput.reason:
            why += f"; {throughput.reason}"
        return Judgement(Verdict.unknown, rule, why)
    n = found.processes
    why = f"{'the process' if n == 1 else f'all {n} processes'} sampled throughout, none stalled"
    return Judgement(throughput.verdict, rule, "; ".join(filter(None, [why, throughput.reason])))


def judge(
    wrk: WrkResult,
    best_lower_ok_rps: float | None,
    server_errors: int = 0,
    occupancy: Timeline | None = None,
    processes: int | None = None,
) -> Judgement:
    """The verdict of a cell whose server started, answered and survived its measurement."""
    return by_evidence(by_throughput(wrk, best_lower_ok_rps, server_errors), occupancy, processes)


def best_lower(cell: Cell, done: Sequence[CellResult]) -> float | None:
    """The variant's best successful req/s at a lower level (fewer connections, or a lower
    rate), among the results so far."""
    rates = [
        r.wrk.ok_rps
        for r in done
        if r.wrk and r.cell.variant == cell.variant and r.cell.level < cell.level
    ]
    return max(rates, default=None)


def order(cells: Sequence[Cell]) -> list[Cell]:
    """Each variant's cells by rising level, so verdicts can compare with lower loads."""
    first_seen = {c.variant: i for i, c in reversed(list(enumerate(cells)))}
    return sorted(cells, key=lambda c: (first_seen[c.variant], c.level))


def connections_needed(configs: Sequence[ServerConfig]) -> int:
    """The most database connections one cell's servers can open: workers x pool capacity."""
    return max((c.workers * c.pool.capacity for c in configs), default=0)


def predicted(mode: Mode, config: ServerConfig) -> int | None:
    """workers x (T + C): where the sync `dependency` style can stall (FastAPI issue 3205).

    T threadpool tokens, C = pool_size + max_overflow. Below it, T threads can never all wait
    for a connection while the C holders wait for a token. Other variants: no collapse.
    """
    if (mode, config.style) != (Mode.sync, SessionStyle.dependency):
        return None
    return config.workers * (config.tokens + config.pool.capacity)


def queue_model(mode: Mode, config: ServerConfig) -> int | None:
    """workers x (T + 3C): where the sync `dependency` stall becomes certain, by a queue model.

    A request takes a token from AnyIO's FIFO limiter three times: to enter the dependency, to
    run the endpoint (whose query checks a connection out), and to validate the response (the
    connection still out). In a saturated process the N - T requests queued for a token are
    spread evenly over the three passes (each request joins the queue once per pass), and the
    ones queued for validation hold connections, at most C. Past (N - T) / 3 = C, requests
    reach the pool faster than holders reach validation, so the threads blocked on the pool
    only grow until all T are: the stall. Between T + C and T + 3C it is possible, not certain.
    """
    if (mode, config.style) != (Mode.sync, SessionStyle.dependency):
        return None
    return config.workers * (config.tokens + 3 * config.pool.capacity)


def agreement(prediction: int | None, found: Threshold) -> str:
    """Whether measurement and prediction agree within one search step, in plain words. Where
    no level always collapsed but some sometimes did, the first of those is the upper edge."""
    high = found.upper
    if not found.counts and high is None and found.fine_at is None:
        return "no probe answered"
    if prediction is None:
        if high is None:
            return "agrees: none expected"
        return f"DISAGREES: no collapse expected, collapsed at {high}"
    if high is None:
        if prediction > found.highest == found.ceiling:
            return "agrees: predicted beyond the ceiling"
        if prediction > found.highest:
            return f"agrees: predicted beyond {found.highest}, the highest level that answered"
        return f"DISAGREES: predicted ~{prediction}, no collapse up to {found.highest}"
    low = found.fine_at or 0
    step = high - low
    if low - step <= prediction <= high + step:
        return "agrees"
    side = "earlier" if high < prediction else "later"
    return f"DISAGREES: collapsed {side} than ~{prediction}"


def is_collapse(result: CellResult) -> bool:
    """A probe counts as collapsed for the search unless the variant served its load: a
    partly-collapsed probe is a freeze, and an `unknown` one cannot count as having held."""
    return result.verdict is not Verdict.ok and result.verdict is not Verdict.errors


# Probes that neither held nor froze: the side channel could not see every process, or the
# probe failed before or beside the load, not the variant under it (wrk, the database, a server
# that did not start or answered wrongly before any load). A map measures them once more.
NO_ANSWER = (
    Verdict.unknown,
    Verdict.load_failed,
    Verdict.database_lost,
    Verdict.failed_to_start,
    Verdict.failed_verification,
)


def probe_counts(results: Sequence[CellResult]) -> dict[int, tuple[int, int]]:
    """Connections -> (probes that collapsed, probes that answered)."""
    counts: dict[int, tuple[int, int]] = {}
    for r in results:
        if r.verdict not in NO_ANSWER:
            froze, probes = counts.get(r.cell.connections, (0, 0))
            counts[r.cell.connections] = (froze + is_collapse(r), probes + 1)
    return counts
