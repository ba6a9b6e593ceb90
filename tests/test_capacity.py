"""Capacity at an SLO: the objective, a measurement against it, the search over rates."""

from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path

import pytest

from harness.domain.axes import Mode, Verdict, Workload
from harness.domain.capacity import bracket, describe, tally
from harness.domain.cell import Cell, Target
from harness.domain.errors import UsageError
from harness.domain.plan import CapacityPlan
from harness.domain.result import CellResult
from harness.domain.search import confirm, find_threshold
from harness.domain.slo import Check, Slo, parse_slo
from harness.infra import openloop
from harness.infra.histogram import probe_missed, slo_check
from harness.report import summary
from harness.run.capacity import search_line
from harness.run.generators import serving
from harness.store.rundir import RunDir
from tests.cli import harness
from tests.test_open_loop import FIXTURES

P99 = Slo(99, 250)


def test_an_objective_reads_like_p99_under_a_limit() -> None:
    assert parse_slo("p99<250ms") == P99
    assert parse_slo(" p99.9 < 1s ") == Slo(99.9, 1000)
    assert P99.allowed == pytest.approx(0.01) and P99.text() == "p99 < 250 ms"
    for bad in ("p100<1s", "p0<1s", "99<250ms", "p99<0ms", "p99>250ms", "p99<250"):
        with pytest.raises(UsageError, match="SLO"):
            parse_slo(bad)


def test_failed_dropped_and_collapsed_requests_miss_it() -> None:
    fine = Check(P99, answered=1000, slow=10, status_errors=0, socket_errors=0, dropped=0)
    assert fine.met and fine.misses == 10
    assert not replace(fine, dropped=1).met  # 11 of 1,001
    assert not replace(fine, socket_errors=1).met
    assert not replace(fine, status_errors=1).met
    assert not replace(fine, slow=0, collapsed=True).met  # fast answers, then a freeze
    assert not Check(P99, 0, 0, 0, 0, 0).met  # nothing measured meets nothing
    assert replace(fine, slow=0, collapsed=True).text() == "missed (collapsed)"


def _record(result_path: Path = FIXTURES / "openloop-stalling.json") -> CellResult:
    cell = Cell(Target("http://127.0.0.1:1"), Mode.async_, Workload.list, 1000, 2.5, rate=100)
    return CellResult(cell, Verdict.ok, wrk=openloop.parse(result_path.read_text()))


def test_a_stalled_second_misses_a_p99_and_meets_a_median() -> None:
    """The stalling server's recorded run: 40% of its requests waited for the stall."""
    record = _record()
    check = slo_check([record], P99)
    assert check is not None and not check.met and check.total == 250
    assert 0.3 < check.share < 0.5
    assert probe_missed(record, P99) is True
    assert probe_missed(record, Slo(50, 250)) is False
    assert probe_missed(replace(record, verdict=Verdict.collapsed), Slo(50, 250)) is True
    assert probe_missed(replace(record, verdict=Verdict.load_failed), P99) is None


def test_a_bracket_over_rates_keeps_every_count() -> None:
    answers = [(100.0, False), (200.0, False), (400.0, True), (300.0, True), (250.0, False)]
    answers += [(300.0, False), (250.0, None)]
    assert tally(answers) == {100: (0, 1), 200: (0, 1), 250: (0, 1), 300: (1, 2), 400: (1, 1)}
    found = bracket(answers, 3200)
    assert (found.fine_at, found.collapsed_at) == (250, 400)
    assert describe(found, P99) == (
        "sustains 250 req/s within p99 < 250 ms, not 400 "
        "(missed 0/1 at 100, 0/1 at 200, 0/1 at 250, 1/2 at 300, 1/1 at 400)"
    )
    assert describe(bracket([(100.0, False)], 100), P99).startswith(
        "sustains at least 100 req/s within p99 < 250 ms, the highest probed"
    )
    assert describe(bracket([(100.0, True)], 800), P99).startswith("sustains less than 100")


@pytest.fixture
def paced() -> Iterator[str]:
    """loadgen.targets:paced at 200 req/s: it serves exactly that many, whatever it is sent."""
    with serving("paced", {"PACED_RATE": "200"}) as url:
        yield url + "/"


@pytest.mark.integration
def test_the_search_finds_the_capacity_of_a_server_that_serves_200_a_second(paced: str) -> None:
    """Below 200 req/s every answer takes 5 ms or so; above, the queue grows by the excess,
    and within a second most requests wait more than 50 ms."""
    slo = Slo(99, 50)
    cell = Cell(Target(paced), Mode.async_, Workload.list, 1000, 1.0)

    def missed(rate: int) -> bool | None:
        result = openloop.run(openloop.OpenLoopCommand(paced, rate, 1000, 1.0, 5.0)).result
        return probe_missed(CellResult(replace(cell, rate=rate), Verdict.ok, wrk=result), slo)

    found = find_threshold(lambda r: missed(r) is not False, start=50, ceiling=800)
    found = confirm(found, missed, repeats=1)
    assert found.fine_at is not None and found.upper is not None, found
    assert 150 <= found.fine_at <= 210 and 190 <= found.upper <= 300, found


@pytest.mark.integration
def test_make_capacity_end_to_end(tmp_path: Path) -> None:
    out = tmp_path / "capacity"
    done = harness(
        "capacity",
        "--variants", "async-context",
        "--db-latency", "0",
        "--start", "100",
        "--ceiling", "200",
        "--duration", "1s",
        "--warmup", "0",
        "--boundary-probes", "1",
        "--budget", "2m",
        "--out", str(out),
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    records = RunDir.open(out).records()
    assert sorted(r.cell.rate for r in records) == [100, 200]
    assert all(r.wrk and r.wrk.schedule and r.wrk.schedule.due for r in records)
    text = (out / "capacity.md").read_text()
    assert "## Capacity within p99 < 250 ms" in text
    assert "async `context` sustains at least 200 req/s within p99 < 250 ms" in text
    assert (out / "summary.md").is_file()


def test_a_bench_summary_judges_the_objective_on_warm_windows_of_10_s_only() -> None:
    """tests/fixtures/run-open: 1 s windows without a warm-up, then the same records as if
    they had been warm 10 s windows."""
    run = RunDir.open(FIXTURES / "run-open")
    meta, records = run.metadata(), run.records()
    assert summary.slo_section(meta, records) == ""  # measured before SLO was a setting
    meta = {**meta, "parameters": {**meta["parameters"], "slo": "p99<250ms"}}
    text = summary.slo_section(meta, records)
    assert "Not judged: windows of 1 s, without a warm-up." in text
    warm = {**meta, "options": {**meta["options"], "warmup_s": 2.0}}
    longer = [replace(r, cell=replace(r.cell, duration_s=10.0)) for r in records]
    text = summary.slo_section(warm, longer)
    assert "| variant | load | objective |" in text
    assert text.count("| met (") == 4 and "300 req/s" in text
    tight = {**warm, "parameters": {**warm["parameters"], "slo": "p50<1ms"}}
    assert summary.slo_section(tight, longer).count("| missed (") == 4


def test_an_unsampled_probe_counts_only_when_it_missed() -> None:
    record = replace(_record(), verdict=Verdict.unknown)
    assert probe_missed(record, P99) is True  # its latencies missed whatever went unseen
    assert probe_missed(record, Slo(50, 250)) is None  # it met, but a stall may hide
    assert parse_slo(Slo(99.99, 1234.5).flag()) == Slo(99.99, 1234.5)


def test_capacity_refuses_what_its_page_could_not_tell_apart(
    capsys: pytest.CaptureFixture[str],
) -> None:
    from harness.cli.main import main

    assert main(["capacity", "--pools", "5+10,20+0", "--dry-run"]) == 2
    assert "POOLS" in capsys.readouterr().err
    assert main(["capacity", "--budget", "5s", "--dry-run"]) == 2
    assert "BUDGET: 5s is shorter than one probe" in capsys.readouterr().err
    assert main(["capacity", "--slo", "p99>250ms", "--dry-run"]) == 2
    assert "SLO: 'p99>250ms'" in capsys.readouterr().err
    assert main(["capacity", "--dry-run"]) == 0
    assert "6 lines" in capsys.readouterr().out


class Model:
    """A server near its capacity: a probe misses above 430 req/s, and between 380 and 430
    only on some repeats (fixed per rate and repeat, so a replay must give the same answers).
    Each probe takes `seconds` on a clock of its own."""

    def __init__(self, seconds: float = 17.0) -> None:
        self.now = 0.0
        self.seconds = seconds
        self.measured: list[tuple[int, int]] = []  # (rate, repeat) in order

    def clock(self) -> float:
        return self.now

    def run_probe(self, cell: Cell, repeat: int) -> CellResult:
        rate = round(cell.rate or 0)
        self.now += self.seconds
        self.measured.append((rate, repeat))
        missed = rate > 430 or (rate > 380 and (rate + repeat) % 3 == 0)
        verdict = Verdict.collapsed if missed else Verdict.ok
        return CellResult(cell, verdict, repeat=repeat, elapsed_s=self.seconds)


LINE = Cell(Target("http://127.0.0.1:1"), Mode.async_, Workload.list, 1000, 10.0, rate=100)


@pytest.fixture
def by_verdict(monkeypatch: pytest.MonkeyPatch) -> None:
    """A probe missed where it collapsed: the search's logic, without histograms to merge."""
    monkeypatch.setattr(
        "harness.run.capacity.probe_missed", lambda r, slo: r.verdict is Verdict.collapsed
    )


def plan_of(budget_s: float) -> CapacityPlan:
    return CapacityPlan((LINE,), Slo(50, 250), 100, 3200, 3, budget_s)


@pytest.mark.parametrize("budget_s", [1000.0, 200.0])
def test_a_resumed_search_replays_its_records_and_measures_only_what_is_left(
    budget_s: float, by_verdict: None
) -> None:
    """Interrupted after each of its probes in turn, a search resumed over the records so far
    measures exactly what the uninterrupted search measured after them: no probe twice, none
    skipped, the same end (searched, or out of its budget at the same probe)."""
    plan = plan_of(budget_s)
    whole = Model()
    records: list[CellResult] = []

    def keep(cell: Cell, repeat: int) -> CellResult:
        records.append(whole.run_probe(cell, repeat))
        return records[-1]

    finished = search_line(plan, LINE, [], keep, 17.0, whole.clock)
    assert finished is (budget_s == 1000.0) and len(records) >= 5
    for cut in range(len(records) + 1):
        resumed = Model()
        again = search_line(plan, LINE, records[:cut], resumed.run_probe, 17.0, resumed.clock)
        assert again is finished
        assert resumed.measured == whole.measured[cut:], cut


def test_a_replayed_probe_counts_the_time_it_took(by_verdict: None) -> None:
    """Probes that took 25 s each, against an estimate of 17 s: a resume charges what they
    took, so a search that ran out of its budget measures nothing more when resumed."""
    plan = plan_of(200.0)
    slow = Model(seconds=25.0)
    records: list[CellResult] = []

    def keep(cell: Cell, repeat: int) -> CellResult:
        records.append(slow.run_probe(cell, repeat))
        return records[-1]

    assert search_line(plan, LINE, [], keep, 17.0, slow.clock) is False
    resumed = Model(seconds=25.0)
    assert search_line(plan, LINE, records, resumed.run_probe, 17.0, resumed.clock) is False
    assert resumed.measured == []


def test_the_variants_of_a_shape_are_searched_one_after_another() -> None:
    from harness.domain.axes import DIRECT, Latency, Pool, ServerName, SessionStyle
    from harness.domain.cell import ServerConfig
    from harness.domain.plan import side_by_side

    def line(mode: Mode, style: SessionStyle, ms: float | None) -> Cell:
        latency = Latency(ms, True) if ms is not None else DIRECT
        config = ServerConfig(ServerName.uvicorn, style, Pool(5, 10), 40, 1, 10, db_latency=latency)
        return Cell(config, mode, Workload.list, 1000, 10.0, rate=100)

    a, b, c = (
        (Mode.sync, SessionStyle.context),
        (Mode.async_, SessionStyle.dependency),
        (
            Mode.async_,
            SessionStyle.context,
        ),
    )
    by_variant = [line(*v, ms) for v in (a, b, c) for ms in (None, 5.0)]  # as the matrix gives
    searched = [(x.mode, x.known("style"), x.db_latency) for x in side_by_side(by_variant)]
    five = by_variant[1].db_latency
    assert searched == [
        (*a, None), (*b, None), (*c, None), (*c, five), (*b, five), (*a, five),
    ]  # fmt: skip
