"""The rules a run applies, with their thresholds, in one place (documented in README.md): the
verdict of a cell, the mechanism's prediction of where sync `dependency` collapses, and what a
failure-map probe counts as."""

from __future__ import annotations

from collections.abc import Sequence

from harness.domain.axes import Mode, SessionStyle, Verdict
from harness.domain.cell import Cell, ServerConfig
from harness.domain.result import CellResult, WrkResult
from harness.domain.search import Threshold

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


def best_lower(cell: Cell, done: Sequence[CellResult]) -> float | None:
    """The variant's best successful req/s at fewer connections, among the results so far."""
    rates = [
        r.wrk.ok_rps
        for r in done
        if r.wrk and r.cell.variant == cell.variant and r.cell.connections < cell.connections
    ]
    return max(rates, default=None)


def order(cells: Sequence[Cell]) -> list[Cell]:
    """Each variant's cells by rising connections, so verdicts can compare with lower loads."""
    first_seen = {c.variant: i for i, c in reversed(list(enumerate(cells)))}
    return sorted(cells, key=lambda c: (first_seen[c.variant], c.connections))


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
    """Whether measurement and prediction agree within one search step, in plain words."""
    if prediction is None:
        if found.collapsed_at is None:
            return "agrees: none expected"
        return f"DISAGREES: no collapse expected, collapsed at {found.collapsed_at}"
    if found.collapsed_at is None:
        if prediction > found.ceiling:
            return "agrees: predicted beyond the ceiling"
        return f"DISAGREES: predicted ~{prediction}, no collapse up to {found.ceiling}"
    low, high = found.fine_at or 0, found.collapsed_at
    step = high - low
    if low - step <= prediction <= high + step:
        return "agrees"
    side = "earlier" if high < prediction else "later"
    return f"DISAGREES: collapsed {side} than ~{prediction}"


def is_collapse(result: CellResult) -> bool:
    """A probe counts as collapsed for the search unless the variant served its load."""
    return result.verdict is not Verdict.ok and result.verdict is not Verdict.errors
