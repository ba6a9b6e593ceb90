"""summary.md and results.csv of a failure map, generated from its raw records only."""

from __future__ import annotations

from collections.abc import Sequence
from statistics import median
from typing import Any

from harness.domain.axes import Onset, Verdict, Workload
from harness.domain.occupancy import Timeline
from harness.domain.plan import MapLine, MapPlan
from harness.domain.result import CellResult, PgbenchResult
from harness.domain.rules import (
    NO_ANSWER,
    STEADY_TREND,
    agreement,
    is_collapse,
    probe_counts,
    queue_model,
)
from harness.domain.search import Threshold, bracket_counts
from harness.report import ceilings, evidence
from harness.report.summary import details_table, header
from harness.report.table import md_table

PREDICTION = (
    "**Prediction.** For sync `dependency`, a collapse becomes possible at about "
    "**workers × (T + C)** connections, where T is the AnyIO default thread limiter's tokens "
    "and C = `pool_size + max_overflow`. Each sync request takes a threadpool token to run the "
    "endpoint, whose first query checks a connection out of the pool (waiting up to "
    "`pool_timeout` if none is free), and, with the connection still checked out, a second "
    "token to validate the return value against the response model; the dependency's exit, "
    "which returns the connection, comes after. Once T requests hold tokens while waiting for "
    "a connection and the C requests holding connections wait for a token, nothing moves "
    "until `pool_timeout` fires. Below T + C requests in flight per process that cannot "
    "happen. Sources: FastAPI issue 3205, PRs 5122 and 12066. `context` (session closed "
    "inside the endpoint), `limited` (`Depends(max_concurrency=C)`) and async are predicted "
    "not to collapse."
)


EVIDENCE_TEXT = (
    "The lower bound is workers × (T + C); the queue model, workers × (T + 3C), is where the "
    "stall becomes certain if each request's three passes through the token queue share it "
    "evenly (harness/domain/rules.py says why). *Busiest moment*: each worker at the sample of "
    "the last probe that held that came closest to a freeze (most threads blocked on the pool, "
    "then most tokens in use); *at the freeze*: each worker as last sampled in the first probe "
    "that froze (tokens in use/total + tasks waiting for a token, connections checked "
    "out/capacity and threads blocked on the pool, requests in flight); *threads*: `py-spy "
    "dump` right after that probe."
)


def threshold_of(
    line: MapLine, records: Sequence[CellResult], ceiling: int, onset: Onset = Onset.fresh
) -> Threshold:
    """The collapse point the probes of `line` with `onset` show, with every level's count."""
    variant = line.variant_of(onset)
    return bracket_counts(probe_counts([r for r in records if r.cell.variant == variant]), ceiling)


def _probe_trail(line: MapLine, records: Sequence[CellResult], onset: Onset) -> str:
    """Every probe in the order measured; a warm line's, ramp by ramp."""
    variant = line.variant_of(onset)
    probes = sorted((r for r in records if r.cell.variant == variant), key=lambda r: r.started_at)
    mark = {Verdict.unknown: "?", Verdict.partly_collapsed: "½✗"}

    def shown(rs: Sequence[CellResult]) -> str:
        return " ".join(
            f"{r.cell.connections}{mark.get(r.verdict, '✗' if is_collapse(r) else '')}" for r in rs
        )

    if onset is not Onset.warm:
        return shown(probes)
    ramps: dict[int, list[CellResult]] = {}
    for r in probes:
        ramps.setdefault(r.repeat, []).append(r)
    return "; ".join(f"ramp {n}: {shown(rs)}" for n, rs in sorted(ramps.items()))


def _onsets(plan: MapPlan) -> list[tuple[Onset, list[str]]]:
    """Each onset of the map, with the column it adds to a table (none for an older map)."""
    shown = plan.onsets != (Onset.fresh,)
    return [(o, [str(o)] if shown else []) for o in plan.onsets]


APP_TEXT = (
    "**Your app.** Its pool, session style and database are its own, so no line has a "
    "prediction: the map measures where it collapses under each server, and how that moves "
    "with the threadpool's tokens and the number of workers. A probe's app is started fresh "
    "(or ramped) and verified by its answers' status and shape. Its log is read for "
    "SQLAlchemy's pool timeouts and the servers' errors, but a probe that froze is stopped at "
    "once: a pool timeout shows only where it came within the probe. A probe that collapsed has "
    "a thread dump of every process (py-spy), taken while it was frozen."
)

MAP_HEAD = (
    "variant",
    "onset",
    "pool",
    "C",
    "tokens T",
    "workers",
    "predicted",
    "measured",
    "probes (✗ collapsed, ½✗ partly, ? unknown)",
    "prediction vs measurement",
)


def _head(plan: MapPlan, head: Sequence[str]) -> list[str]:
    return [h for h in head if h != "onset" or plan.onsets != (Onset.fresh,)]


APP_HEAD = (
    "app",
    "onset",
    "tokens T",
    "workers",
    "measured",
    "probes (✗ collapsed, ½✗ partly, ? unknown)",
    "threads at the first freeze",
)


def app_table(plan: MapPlan, server: str, records: Sequence[CellResult]) -> str:
    """A user's app's lines: no pool and no prediction (both are the app's own), and where its
    threads stood when it first froze at the threshold."""
    rows = []
    for line, (onset, column) in ((x, o) for x in plan.lines() for o in _onsets(plan)):
        if str(line.server) != server:
            continue
        found = threshold_of(line, records, plan.ceiling, onset)
        froze = _first_collapse(line, records, onset, found.upper)
        dump = froze.threads if froze else None
        rows.append(
            [
                line.label,
                *column,
                line.tokens_label,
                str(line.config.workers),
                found.describe(),
                _probe_trail(line, records, onset),
                dump.headline if dump else "-",
            ]
        )
    head = _head(plan, APP_HEAD)
    return md_table(head, rows, ["---"] * len(head))


def map_table(plan: MapPlan, server: str, records: Sequence[CellResult]) -> str:
    if plan.app is not None:
        return app_table(plan, server, records)
    rows = []
    for line, (onset, column) in ((x, o) for x in plan.lines() for o in _onsets(plan)):
        if str(line.server) != server:
            continue
        found = threshold_of(line, records, plan.ceiling, onset)
        guess = line.predicted
        rows.append(
            [
                line.label,
                *column,
                str(line.demo.pool) if line.demo else "its own",
                str(line.demo.pool.capacity) if line.demo else "-",
                line.tokens_label,
                str(line.config.workers),
                f"~{guess}" if guess else "none",
                found.describe(),
                _probe_trail(line, records, onset),
                agreement(guess, found),
            ]
        )
    head = _head(plan, MAP_HEAD)
    return md_table(head, rows, ["---"] * len(head))


VARIANTS_HEAD = (
    "server",
    "variant",
    "onset",
    "measured",
    "probes (✗ collapsed, ½✗ partly, ? unknown)",
    "prediction vs measurement",
)


def variants_table(plan: MapPlan, records: Sequence[CellResult]) -> str:
    """Every line of a map in one table, for a map of the variants at one baseline."""
    rows = []
    for line, (onset, column) in ((x, o) for x in plan.lines() for o in _onsets(plan)):
        found = threshold_of(line, records, plan.ceiling, onset)
        trail = _probe_trail(line, records, onset)
        guess = agreement(line.predicted, found)
        rows.append([line.server, line.label, *column, found.describe(), trail, guess])
    head = _head(plan, VARIANTS_HEAD)
    return md_table(head, rows, ["---"] * len(head))


EVIDENCE_HEAD = (
    "onset",
    "pool",
    "T",
    "workers",
    "lower bound",
    "queue model",
    "measured",
    "busiest moment of the last probe that held",
    "at the freeze",
    "threads at the freeze",
)


def evidence_table(plan: MapPlan, server: str, records: Sequence[CellResult]) -> str:
    """For each sync `dependency` line: where it froze against its lower bound, and what the
    server held at the last probe that held and at the first that froze."""
    if not any(r.occupancy or r.threads for r in records if str(r.cell.known("name")) == server):
        return ""  # a map measured before the side channel existed
    rows = []
    for line, (onset, column) in ((x, o) for x in plan.lines() for o in _onsets(plan)):
        if str(line.server) != server or line.predicted is None:
            continue
        found = threshold_of(line, records, plan.ceiling, onset)
        probe = _first_probes(line, records, onset)
        fine = probe.get(found.fine_at) if found.fine_at else None
        froze = _first_collapse(line, records, onset, found.upper)
        rows.append(
            [
                *column,
                str(line.demo.pool if line.demo else "-"),
                line.tokens_label,
                str(line.config.workers),
                str(line.predicted),
                str(queue_model(line.mode, line.demo) if line.demo else "-"),
                found.describe(),
                f"{found.fine_at}: {evidence.busiest(fine.occupancy)}" if fine else "-",
                evidence.at_end(froze.occupancy) if froze else "-",
                froze.threads.headline if froze and froze.threads else "-",
            ]
        )
    if not rows:
        return ""
    head = _head(plan, EVIDENCE_HEAD)
    return md_table(head, rows, ["---"] * len(head))


def _first_probes(
    line: MapLine, records: Sequence[CellResult], onset: Onset
) -> dict[int, CellResult]:
    """Each level's first probe of `line` with `onset` that answered (the one its search
    read), else its first."""
    return first_probes([r for r in records if r.cell.variant == line.variant_of(onset)])


def _first_collapse(
    line: MapLine, records: Sequence[CellResult], onset: Onset, level: int | None
) -> CellResult | None:
    """The first probe of `line` with `onset` that collapsed at `level`."""
    variant = line.variant_of(onset)
    mine = [r for r in records if r.cell.variant == variant and r.cell.connections == level]
    return next(
        (
            r
            for r in sorted(mine, key=lambda r: r.repeat)
            if is_collapse(r) and r.verdict not in NO_ANSWER
        ),
        None,
    )


def first_probes(records: Sequence[CellResult]) -> dict[int, CellResult]:
    """Per connection count, the first record that answered (held or froze), else the first."""
    out: dict[int, CellResult] = {}
    for r in sorted(records, key=lambda r: (r.verdict not in NO_ANSWER, -r.repeat)):
        out[r.cell.connections] = r
    return out


def ceilings_table(
    plan: MapPlan, records: Sequence[CellResult], pg: Sequence[PgbenchResult]
) -> str:
    return ceilings.table([str(s) for s in plan.servers], plan.ceiling_levels, records, pg)


ONSET_TEXT = {
    Onset.fresh: "a fresh server, a warm-up at the probe's connections, then the measured run "
    "(as maps measured before onsets)",
    Onset.cold: "a fresh server, its pool holding only the connection its verification used, "
    "stepped straight to the probe's connections with no warm-up: a deploy or a restart under "
    "load",
    Onset.warm: "a server already serving, its load raised level by level: traffic that grows",
}


def _probed(plan: MapPlan) -> str:
    """What each probe sends."""
    if plan.app is not None:
        return f"{plan.app.requests.label} to {plan.app.app}"
    return f"GET /users ({plan.rows} rows)"


def _lines_text(plan: MapPlan) -> str:
    if plan.app is not None:
        return (
            "Lines: the app under each server at the first token and worker count, then at "
            "each other token count and worker count."
        )
    return (
        "Lines: every variant at the baseline (the first pool, token count and worker count); "
        "sync `dependency` also at each other pool, token count and worker count."
    )


APP_ONSET_TEXT = {
    **ONSET_TEXT,
    Onset.cold: "a fresh server, verified, then stepped straight to the probe's connections with "
    "no warm-up: a deploy or a restart under load",
}


def search_text(plan: MapPlan) -> str:
    """How the map's thresholds were found, from its plan."""
    if plan.onsets == (Onset.fresh,) and plan.boundary_probes == 1:
        return (  # a map planned before onsets and repeated edges
            f"**Search.** Each line doubles the connections from {plan.start} until the variant "
            f"collapses or the ceiling ({plan.ceiling}) is reached, then bisects between the "
            "last count that held and the first that collapsed, to 10% of the count. Each probe "
            f"is a fresh server, a warm-up, and a {plan.duration_s:g} s wrk run on GET /users "
            f"({plan.rows} rows). A probe counts as collapsed when its verdict is neither `ok` "
            'nor `errors`. "fine at A, collapsed at B": both were probed; one search step is '
            "B - A. Lines: every variant at the baseline (the first pool, token count and worker "
            "count); sync `dependency` also at each other pool, token count and worker count."
        )
    texts = APP_ONSET_TEXT if plan.app is not None else ONSET_TEXT
    onsets = "; ".join(f"`{o}`: {texts[o]}" for o in plan.onsets)
    opened = (
        "right after what came before it (no side channel tells when your app is empty)"
        if plan.app is not None
        else "once no request from before it was in the server"
    )
    out = [
        f"**Search.** Each line has a threshold per onset ({onsets}). Each probe measures "
        f"{plan.duration_s:g} s of wrk on {_probed(plan)}, its window opened {opened}; it "
        "counts as collapsed when its verdict is neither `ok` nor `errors` (`unknown` probes "
        "count neither way)."
    ]
    if any(o is not Onset.warm for o in plan.onsets):
        out.append(
            f"A `{'`/`'.join(str(o) for o in plan.onsets if o is not Onset.warm)}` threshold is "
            f"searched with fresh servers: doubling from {plan.start} until a probe collapses or "
            f"the ceiling ({plan.ceiling}) is reached, then bisecting to 10% of the count"
            + (
                f"; then the last level that held and the first that collapsed are probed until "
                f"each has {plan.boundary_probes} answers (a level whose answers disagree up to "
                "5, and an edge that disagrees moves the bracket to the next level)."
                if plan.boundary_probes > 1
                else "."
            )
        )
    if Onset.warm in plan.onsets:
        out.append(
            "A `warm` threshold comes from ramps: one server each, verified, then each level "
            "measured in turn, "
            + (
                f"{plan.pause_s:g} s after the previous one"
                if plan.app is not None
                else f"at least {plan.pause_s:g} s and until the server is empty after the "
                "previous one"
            )
            + f"; a ramp ends at the first level that does not hold (`unknown` "
            f"does not end it). The first ramp doubles from {plan.start} to {plan.ceiling}; "
            f"{plan.boundary_probes} more double to the last level it held, then rise by 10% "
            "of that level to where it collapsed (then double); where it never collapsed, or "
            "collapsed at the start, they repeat its ladder and it counts as one of them."
        )
    out.append(
        '"froze 0/3 at 64, 2/3 at 72, 3/3 at 80": at each level from the last that always '
        "held to the first that always collapsed, the probes that collapsed of those that "
        'answered; "fine at A, collapsed at B": one probe at each. ' + _lines_text(plan)
    )
    return " ".join(out)


def windows_text(probes: Sequence[CellResult]) -> str:
    """What the measured windows were: clean, steady, and the most in flight against the load."""
    windows = [(r, r.window) for r in probes if r.window is not None]
    if not windows:
        return ""
    dirty = [r.key for r, w in windows if w.clean is False]
    unseen = [r.key for r, w in windows if w.clean is None]
    held = [(r, w) for r, w in windows if not is_collapse(r) and w.trend is not None]
    unsteady = [f"{r.key} ({w.trend:+.0%})" for r, w in held if w.steady is False]
    ratio = max(windows, key=lambda rw: rw[1].most_in_flight / rw[0].cell.connections)
    most = ratio[1].most_in_flight / ratio[0].cell.connections
    awaiting = max(
        (max((v.awaiting or 0 for v in w.peak.values()), default=0) / r.cell.connections)
        for r, w in windows
    )
    clean = len(windows) - len(dirty) - len(unseen)
    text = (
        f"**Windows.** {clean} of the {len(windows)} probes with the side channel opened their "
        "window with no request from before it in flight in any process"
        + (f" ({len(dirty)} did not: {', '.join(dirty)})" if dirty else "")
        + (
            f" ({len(unseen)} could not tell, a process unsampled: {', '.join(unseen)})"
            if unseen
            else ""
        )
        + f". The most requests in flight in one process during a window was {most:.2f}× the "
        f"probe's connections ({ratio[0].key}), the most awaiting a response {awaiting:.2f}× "
        "(a connection carries one request at a time; a `yield` dependency's exit runs after "
        "the response has started, so a finished response can still be in flight)."
    )
    starts = [w.start_up for r, w in windows if not is_collapse(r) and w.start_up is not None]
    if starts:
        text += (
            f" In the windows that held, the first half-second served a median "
            f"{median(starts):.0%} of the rate of the rest (wrk opening its connections; a cold "
            "server also filling its pool): the trend leaves it out."
        )
    if not held:
        return text + " No window that held was long enough (1.5 s) to show a trend."
    text += (
        f" {len(held) - len(unsteady)} of the {len(held)} windows that held were steady (their "
        f"throughput after the first half-second moved less than {STEADY_TREND:.0%} across it, "
        "or not significantly)"
    )
    return text + (f"; not: {', '.join(unsteady)}." if unsteady else ".")


def summary(
    meta: dict[str, Any],
    records: Sequence[CellResult],
    name: str,
    plan: MapPlan,
    pg: Sequence[PgbenchResult],
) -> str:
    probes = [r for r in records if r.cell.workload is not Workload.health]
    parts = [
        header(meta, records, name, title="failure map"),
        APP_TEXT if plan.app is not None else PREDICTION,
        "",
        search_text(plan),
        "",
    ]
    if said := windows_text(probes):
        parts += [said, ""]
    for server in plan.servers:
        parts += [
            f"## {server}\n",
            map_table(plan, str(server), records),
            *(
                []
                if plan.app is not None
                else [f"![where sync dependency collapses](charts/collapse-{server}.png)\n"]
            ),
            f"![requests/s and p99 against connections](charts/throughput-{server}.png)\n",
        ]
        if table := evidence_table(plan, str(server), records):
            parts += [
                f"### Why each sync `dependency` line of {server} froze where it did\n",
                EVIDENCE_TEXT + "\n",
                table,
            ]
    if findings := line_findings(plan, records):
        parts += ["## What the occupancy of each frozen line shows\n"]
        parts += [*(f"- {x}" for x in findings), ""]
    if plan.app is not None:
        return "\n".join([*parts, "## Every probe\n", details_table(probes)])
    parts += [
        "## Ceilings\n",
        "What the machine allows without the sync/async question: the async app's `/health` "
        "(HTTP and the event loop, no database) on each server, and pgbench running the "
        "`/users` query straight against PostgreSQL (no HTTP, no Python), at the same "
        "connection counts.\n",
        ceilings_table(plan, records, pg),
        "## Every probe\n",
        details_table(probes),
    ]
    return "\n".join(parts)


def _peak_in_flight(timeline: Timeline | None, measured_only: bool) -> dict[int, int]:
    """Each worker's most requests in flight over a probe (its measured run, or from the
    warm-up on)."""
    if timeline is None:
        return {}
    samples = timeline.measured.samples if measured_only else timeline.samples
    out: dict[int, int] = {}
    for s in samples:
        out[s.pid] = max(out.get(s.pid, 0), s.in_flight)
    return dict(sorted(out.items()))


def _stalled_workers(timeline: Timeline | None, before_s: float | None = None) -> set[int]:
    """The workers that were stalled at some sample (taken before `before_s`, if given)."""
    if timeline is None:
        return set()
    return {
        s.pid
        for s in timeline.samples
        if s.blocked_on_pool and (before_s is None or s.t_s < before_s)
    }


def line_findings(plan: MapPlan, records: Sequence[CellResult]) -> list[str]:
    """What the occupancy of each sync `dependency` line's probes says about where it froze:
    all generated from the probes' own samples."""
    out = []
    stalled_lines, frozen_lines = 0, 0
    for line, (onset, column) in ((x, o) for x in plan.lines() for o in _onsets(plan)):
        if line.predicted is None:
            continue
        found = threshold_of(line, records, plan.ceiling, onset)
        probe = _first_probes(line, records, onset)
        froze = _first_collapse(line, records, onset, found.upper)
        fine = probe.get(found.fine_at) if found.fine_at else None
        if froze is None or froze.occupancy is None or not froze.occupancy.samples:
            continue
        config, timeline = line.demo, froze.occupancy
        assert config is not None, "only the demo app's lines have a prediction"
        frozen_lines += 1
        stalled_lines += any(s.blocked_on_pool for s in timeline.last().values())
        parts = [
            f"{line.server}, {plan.change(line)}{''.join(f' ({c})' for c in column)}: froze at "
            f"{found.upper} connections "
            f"(lower bound {line.predicted}, queue model {queue_model(line.mode, config)})"
        ]
        if fine and fine.occupancy and (held := _peak_in_flight(fine.occupancy, True)):
            stalled = _stalled_workers(fine.occupancy)
            parts.append(
                f"at {found.fine_at} it held with at most "
                + " + ".join(str(n) for n in held.values())
                + " requests in flight"
                + (" per worker" if len(held) > 1 else "")
                + (
                    f", though {len(stalled)} of its {len(held)} workers was already stalled "
                    "(every token blocked on the pool) while the other kept the throughput up"
                    if stalled and len(held) > 1
                    else ""
                )
            )
        held_total = sum(_peak_in_flight(fine.occupancy, True).values()) if fine else 0
        high = froze.cell.connections
        if fine and high <= line.predicted and held_total > (found.fine_at or 0):
            parts.append(
                f"it froze at or below its lower bound, which counts requests in flight, not "
                f"connections: at {found.fine_at} connections up to {held_total} requests were "
                "in flight (a connection can carry two: a request's dependency exit, which "
                "returns its pooled connection, runs after its response was sent, while the "
                "client's next request is already in the app"
                + (
                    "; and the warm-up's last requests were still served when the measured run "
                    "opened its own)"
                    if fine.window is None
                    else ")"
                )
            )
        clean = froze.window is not None and froze.window.clean is True
        peak = max(_peak_in_flight(timeline, measured_only=clean).values(), default=0)
        why = (
            "a request's dependency exit runs after its response was sent"
            if clean
            else "a stalled warm-up's requests stay in the server while the measured run opens "
            "its own"
        )
        over = f" ({peak / high:.1f}× its connections: {why})" if peak > high else ""
        if any(s.pool_waiting is not None for s in timeline.samples):
            stalled_early = _stalled_workers(timeline, before_s=timeline.measured_from_s)
            when = "the warm-up already stalled it" if stalled_early else "it stalled in the run"
            parts.append(f"{when}, and up to {peak} requests were in flight in one process{over}")
        else:
            parts.append(f"up to {peak} requests were in flight in one process{over}")
        tokens_seen = sorted({s.tokens_total for s in timeline.samples if s.tokens_total})
        if tokens_seen and tokens_seen != [config.tokens]:
            parts.append(f"its workers reported {', '.join(map(str, tokens_seen))} tokens")
        out.append("; ".join(parts) + ".")
    if frozen_lines:
        out.insert(
            0,
            f"In {stalled_lines} of the {frozen_lines} frozen lines, the last samples show a "
            "worker with every token held by a thread blocked on the pool and every "
            "connection out: the stall the lower bound describes.",
        )
    return out
