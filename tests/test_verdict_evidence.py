"""Verdicts from every process's samples (harness/domain/rules.py `by_evidence`): recorded
measurements replayed through the rule, and its edges on samples built here.

The recorded ones are copies of reference records measured before format 3, judged then by
throughput alone (all four `ok`):
- half-frozen: uvicorn, 2 workers, 128 connections: one worker stuck at 317 responses with 82
  requests in flight and all 40 threads waiting on the pool, the other serving;
- saturated: uvicorn, 2 workers, 100 connections, 5 ms to the database: every token and every
  connection busy in most samples, yet responses completing all along;
- never-sampled: 2 workers, only one of which answered the side channel;
- unsampled-gap: 2 workers, one unanswered for 1.1 s of a 3 s window.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from harness.domain.axes import Verdict
from harness.domain.occupancy import Sample, Timeline, health
from harness.domain.result import CellResult, WrkResult
from harness.domain.rules import STALL_S, UNSAMPLED_S, Judgement, Rule, by_evidence, judge
from harness.store import migrate

FIXTURES = Path(__file__).parent / "fixtures" / "verdicts"


def replayed(name: str) -> tuple[dict, CellResult]:
    raw = json.loads((FIXTURES / f"{name}.json").read_text())
    return raw, CellResult.from_json(migrate.record(raw, name))


def test_a_half_frozen_two_worker_cell_is_partly_collapsed() -> None:
    raw, record = replayed("half-frozen")
    assert raw["verdict"] == "ok" and record.wrk and record.wrk.ok_rps > 100  # throughput held
    assert record.verdict is Verdict.partly_collapsed
    assert record.judged_by == Rule.side_channel
    assert record.judgement.startswith("1 of 2 processes stalled: PID 1121 from 0.3 s to the end")
    assert "every thread waiting for a pooled connection" in record.judgement
    assert "it was ok" in record.judgement


def test_a_saturated_cell_still_completing_responses_is_ok() -> None:
    _, record = replayed("saturated")
    assert record.occupancy is not None
    samples = record.occupancy.measured.samples
    busy = [s for s in samples if s.tokens_in_use == s.tokens_total and s.checked_out == s.capacity]
    assert len(busy) >= 0.8 * len(samples)  # every token and connection busy...
    assert record.verdict is Verdict.ok  # ...but responses kept completing in both workers
    assert record.judgement.startswith("all 2 processes sampled throughout, none stalled")


@pytest.mark.parametrize(
    ("name", "why"),
    [
        ("never-sampled", "1 of 2 processes never sampled"),
        ("unsampled-gap", "PID 7392 unsampled for 1.11 s of the 3.06 s window"),
    ],
)
def test_a_worker_without_samples_makes_the_cell_unknown(name: str, why: str) -> None:
    raw, record = replayed(name)
    assert raw["verdict"] == "ok"
    assert record.verdict is Verdict.unknown
    assert record.judgement.startswith(why)


def test_a_migrated_record_reads_back_unchanged() -> None:
    _, record = replayed("half-frozen")
    again = json.loads(json.dumps(record.to_json()))
    assert migrate.record(again, "again") == again
    assert CellResult.from_json(again) == record


# --- the rule's edges, on samples built here --------------------------------------------------


def sample(
    t: float, pid: int = 1, ok: int = 0, in_flight: int = 5, blocked: bool = False
) -> Sample:
    return Sample(
        t_s=t,
        pid=pid,
        tokens_in_use=4 if blocked else 1,
        tokens_total=4,
        waiting=0,
        checked_out=2 if blocked else 1,
        capacity=2,
        in_flight=in_flight,
        ok=ok,
        errors=0,
        pool_waiting=4 if blocked else 0,
    )


def timeline(*samples: Sample, processes: int | None = None, start: float = 0.0) -> Timeline:
    return Timeline(10.0, samples, measured_from_s=start, processes=processes, per_process=True)


def serving(pid: int, until: float, start: float = 0.0) -> list[Sample]:
    n = round((until - start) * 10)
    return [sample(start + i / 10, pid, ok=10 * i) for i in range(n + 1)]


def frozen(pid: int, since: float, until: float, ok: int = 7) -> list[Sample]:
    n = round((until - since) * 10)
    return [sample(since + i / 10, pid, ok=ok, blocked=True) for i in range(n + 1)]


def wrk(requests: int = 3000) -> WrkResult:
    return WrkResult(requests, 3.0, 0, 1, 2, 3, 4, 5, 1.5, 0, 0, 0, 0, 0)


def test_a_stall_needs_a_full_second_without_a_response() -> None:
    short = timeline(*frozen(1, 0.0, STALL_S - 0.1), sample(STALL_S, ok=8), processes=1)
    assert health(short, STALL_S, UNSAMPLED_S, 1).stalls == ()
    long = timeline(*frozen(1, 0.0, STALL_S), sample(STALL_S + 0.1, ok=8), processes=1)
    (stall,) = health(long, STALL_S, UNSAMPLED_S, 1).stalls
    assert (stall.start_s, stall.end_s, stall.pool_wait, stall.to_end) == (0.0, 1.0, True, False)


def test_no_requests_in_flight_is_idle_not_stalled() -> None:
    idle = timeline(*[sample(i / 10, ok=3, in_flight=0) for i in range(30)], processes=1)
    assert judge(wrk(), None, occupancy=idle).verdict is Verdict.ok


def test_a_stall_begun_in_the_warm_up_counts_inside_the_window() -> None:
    samples = frozen(1, 0.5, 2.5)
    (stall,) = health(timeline(*samples, start=1.2), STALL_S, UNSAMPLED_S, 1).stalls
    assert stall.from_warmup and stall.start_s == 0.0 and stall.end_s == 1.3 and stall.to_end
    # 0.5 s of it in the window is not enough.
    assert health(timeline(*samples, start=2.0), STALL_S, UNSAMPLED_S, 1).stalls == ()


def test_every_process_stalled_is_collapsed_whatever_the_throughput() -> None:
    both = timeline(*frozen(1, 0, 2), *frozen(2, 0, 2), processes=2)
    found = judge(wrk(), None, occupancy=both)
    assert found.verdict is Verdict.collapsed and found.reason.startswith("all 2 processes stalled")


def test_one_of_two_stalled_is_partly_collapsed() -> None:
    half = timeline(*serving(1, 2.0), *frozen(2, 0, 2), processes=2)
    found = judge(wrk(), None, occupancy=half)
    assert found.verdict is Verdict.partly_collapsed and found.rule is Rule.side_channel


def test_a_throughput_collapse_stays_a_collapse() -> None:
    fine = timeline(*serving(1, 2.0), processes=1)
    found = judge(wrk(requests=10), 1000.0, occupancy=fine)
    assert found.verdict is Verdict.collapsed and "under 25%" in found.reason


def test_a_process_never_or_too_rarely_sampled_is_unknown() -> None:
    one_of_two = timeline(*serving(1, 2.0), processes=2)
    assert judge(wrk(), None, occupancy=one_of_two).verdict is Verdict.unknown
    gap = [s for s in serving(1, 3.0) if not 1.0 < s.t_s < 2.2]
    assert judge(wrk(), None, occupancy=timeline(*gap, processes=1)).verdict is Verdict.unknown


def test_without_samples_the_throughput_rule_judges_alone() -> None:
    found = judge(wrk(), None, occupancy=None)
    assert found == Judgement(Verdict.ok, Rule.throughput)
    errors = Judgement(Verdict.errors, Rule.throughput, "3 failed")
    assert by_evidence(errors, timeline(), 2) is errors
