"""Thresholds with their uncertainty: the bracket with every level's count, the edges probed
again, warm ramps, clean and steady measured windows, and two maps' brackets compared."""

import json
import shutil
from dataclasses import replace
from pathlib import Path

import pytest

from harness.domain.axes import Onset, Verdict
from harness.domain.occupancy import Sample, Timeline, window_of
from harness.domain.plan import MapPlan
from harness.domain.rules import STEADY_TREND
from harness.domain.rules import agreement as rule_agreement
from harness.domain.search import bracket_counts, confirm
from harness.report.brackets import agreement, compare_maps
from harness.report.map_summary import threshold_of
from harness.store.rundir import RunDir
from tests.cli import harness

FIXTURE = Path(__file__).parent / "fixtures" / "map-onsets"


def test_a_bracket_keeps_every_level_count_between_its_edges() -> None:
    found = bracket_counts({32: (0, 1), 64: (0, 3), 72: (2, 3), 80: (3, 3), 128: (1, 1)}, 400)
    assert (found.fine_at, found.collapsed_at) == (64, 80)
    assert found.describe() == "froze 0/3 at 64, 2/3 at 72, 3/3 at 80"
    assert found.uncertain == {72: (2, 3)}
    # A level that froze once below one that always held: the bracket widens to include it.
    found = bracket_counts({48: (0, 1), 56: (1, 3), 64: (0, 3), 72: (3, 3)}, 400)
    assert (found.fine_at, found.collapsed_at) == (48, 72)
    assert found.describe() == "froze 0/1 at 48, 1/3 at 56, 0/3 at 64, 3/3 at 72"
    # One probe per level reads as maps always read.
    assert bracket_counts({64: (0, 1), 72: (1, 1)}, 400).describe() == "fine at 64, collapsed at 72"
    assert (
        bracket_counts({400: (0, 3)}, 400).describe() == "no collapse up to 400 (froze 0/3 at 400)"
    )
    sometimes = bracket_counts({200: (1, 3), 400: (2, 3)}, 400)
    assert sometimes.collapsed_at is None
    assert sometimes.describe() == (
        "no level collapsed every time up to 400 (froze 1/3 at 200, 2/3 at 400)"
    )


def test_confirm_probes_the_edges_again_and_follows_an_edge_that_disagrees() -> None:
    # Each level's answers in the order they will be given.
    answers = {64: [True, False, False, False], 56: [False, False], 72: [True, True]}
    asked: list[int] = []

    def again(level: int) -> bool | None:
        asked.append(level)
        return answers[level].pop(0)

    start = bracket_counts({32: (0, 1), 56: (0, 1), 64: (0, 1), 72: (1, 1)}, 400)
    found = confirm(start, again, repeats=3, disputed=5)
    # 64 froze once: it is disputed, probed to 5; 56 became the edge that held, probed to 3.
    assert found.counts[64] == (1, 5) and found.counts[56] == (0, 3) and found.counts[72] == (3, 3)
    assert found.describe() == "froze 0/3 at 56, 1/5 at 64, 3/3 at 72"
    assert sorted(asked) == [56, 56, 64, 64, 64, 64, 72, 72]


def test_confirm_stops_at_its_budget_and_an_unanswered_probe_counts_against_it() -> None:
    asked: list[int] = []

    def again(level: int) -> bool | None:
        asked.append(level)
        return None  # every probe `unknown`

    start = bracket_counts({64: (0, 1), 72: (1, 1)}, 400)
    found = confirm(start, again, repeats=3, budget=4)
    assert len(asked) == 4 and found.counts == start.counts


def timeline(rates: list[int], in_flight_at_start: int = 0) -> Timeline:
    """One process sampled at 10 Hz for 0.5 s of warm-up and len(rates) half-seconds measured,
    answering rates[i] requests per half-second."""
    samples, answered = [], 0
    for tick in range(5):
        samples.append(Sample(tick / 10, 7, 2, 4, 0, 1, 2, in_flight_at_start, 0, 0, 0, 0))
    for i, rate in enumerate(rates):
        for tick in range(5):
            answered += rate // 5
            t = 0.5 + i * 0.5 + (tick + 1) / 10
            samples.append(Sample(round(t, 2), 7, 2, 4, 0, 1, 2, 9, answered, 0, 0, 6))
    return Timeline(10.0, tuple(samples), measured_from_s=0.5, processes=1, per_process=True)


def test_a_window_records_what_was_in_flight_and_whether_its_throughput_held_steady() -> None:
    steady = window_of(timeline([500, 520, 490, 510, 505, 495]), 0.3, STEADY_TREND)
    assert steady.clean is True and steady.at_start[7].in_flight == 0 and steady.waited_s == 0.3
    assert steady.peak[7].in_flight == 9 and steady.peak[7].awaiting == 6
    assert steady.steady is True and abs(steady.trend or 1) < 0.1
    falling = window_of(timeline([600, 500, 400, 300, 200, 100], 3), None, STEADY_TREND)
    assert falling.clean is False and falling.steady is False and (falling.trend or 0) < -1
    short = window_of(timeline([500, 500]), 0.1, STEADY_TREND)
    assert short.trend is None and short.steady is None and short.start_up == 1.0
    # wrk's first half-second (connecting) is its start-up, not a trend.
    slow_start = window_of(timeline([300, 600, 600, 600, 600, 600]), 0.1, STEADY_TREND)
    assert slow_start.start_up == 0.5 and slow_start.trend == 0 and slow_start.steady is True


def test_a_recorded_map_gives_each_onset_its_bracket_and_each_ramp_its_levels() -> None:
    run = RunDir.open(FIXTURE)
    plan = MapPlan.from_json(run.metadata()["plan"])
    dependency = plan.lines()[0]
    records = run.records()
    cold = threshold_of(dependency, records, plan.ceiling, Onset.cold)
    warm = threshold_of(dependency, records, plan.ceiling, Onset.warm)
    assert cold.describe() == "froze 0/3 at 4, 3/5 at 6, 3/3 at 8"
    assert warm.describe() == "froze 0/4 at 4, 1/3 at 6, 3/3 at 8"
    ramps: dict[int, list] = {}
    for r in records:
        if r.cell.onset is Onset.warm:
            assert r.ramp is not None and r.cell.connections in r.ramp.ladder
            ramps.setdefault(r.repeat, []).append(r)
    assert sorted(ramps) == [1, 2, 3, 4]
    for levels in ramps.values():
        levels.sort(key=lambda r: r.started_at)
        # A ramp climbs its ladder in order, and ends at its first level that did not hold.
        assert [r.cell.connections for r in levels] == list(levels[0].ramp.ladder[: len(levels)])
        assert [r.verdict is Verdict.ok for r in levels] == [True] * (len(levels) - 1) + [False]
    for r in records:
        assert r.window is not None and r.window.clean is True, r.key


def test_two_maps_brackets_are_compared_line_by_line(tmp_path: Path) -> None:
    a, b = tmp_path / "a", tmp_path / "b"
    shutil.copytree(FIXTURE, a)
    shutil.copytree(FIXTURE, b)
    # In B, the cold line's repeated probes at 4 froze: its bracket moves down.
    for path in (b / "probes").glob("*ocold-c4@*.json"):
        data = json.loads(path.read_text())
        path.write_text(json.dumps({**data, "verdict": "collapsed"}))
    text = compare_maps(RunDir.open(a), RunDir.open(b)).markdown
    assert (
        "Of 4 thresholds (line and onset) both maps measured: the same bracket in both 3," in text
    )
    assert "| uvicorn sync psycopg2 dependency, pool 1+1, 4 tokens | cold |" in text
    assert "froze 0/1 at 2, 2/3 at 4, 3/5 at 6, 3/3 at 8 | overlap |" in text
    moved = bracket_counts({2: (0, 1), 4: (2, 3), 8: (3, 3)}, 16)
    assert agreement(moved, bracket_counts({16: (1, 1), 8: (0, 1)}, 16)) == "apart"


@pytest.mark.integration
def test_the_window_opens_only_once_the_warm_up_has_left_every_process(tmp_path: Path) -> None:
    """A warm-up that stalls (pool 1+1, 4 tokens, 16 connections over 2 workers) leaves its
    requests in both processes until their pool timeouts; the window waits for them."""
    out = tmp_path / "run"
    done = harness(
        "run", "--server", "uvicorn", "--workers", "2", "--modes", "sync", "--styles",
        "dependency", "--pools", "1+1", "--tokens", "4", "--pool-timeout", "2s",
        "--connections", "16", "--repeats", "1", "--duration", "1s", "--warmup", "1s",
        "--out", str(out),
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    (record,) = RunDir.open(out).records()
    timeline, window = record.occupancy, record.window
    assert timeline is not None and window is not None, record.note
    assert len(window.at_start) == 2 and window.clean is True, window
    assert all(v.in_flight == 0 and v.awaiting == 0 for v in window.at_start.values())
    # The warm-up did leave requests behind: the window waited for them.
    warm_up = [s for s in timeline.samples if s.t_s < 1.0]
    assert max(s.in_flight for s in warm_up) > 0
    assert window.waited_s is not None and window.waited_s > 0
    assert set(window.peak) == set(window.at_start)


def test_a_ramp_cut_short_keeps_its_levels_and_another_ramp_replaces_it() -> None:
    from harness.run import fmap

    run = RunDir.open(FIXTURE)
    plan = MapPlan.from_json(run.metadata()["plan"])
    line = plan.lines()[0]
    records = run.records()
    fine = next(r.ramp.ladder for r in records if r.repeat == 2 and r.ramp is not None)
    assert fmap._finished_ramp(line, records, plan.coarse_ladder()) is not None
    assert fmap._finished_ramps(line, records, fine) == 3
    # Ramp 4 interrupted after its first two levels (it froze at 6): it no longer counts as
    # finished, its levels still count in the bracket, and the next ramp is number 5.
    cut = [r for r in records if not (r.repeat == 4 and r.cell.connections > 4)]
    assert fmap._finished_ramps(line, cut, fine) == 2
    warm = threshold_of(line, cut, plan.ceiling, Onset.warm)
    assert warm.counts[4] == (0, 4) and warm.counts[6] == (0, 2)
    # A ramp that wrk failed in is cut short too; one that ended `unknown` on its last level ran.
    failed = [
        replace(r, verdict=Verdict.load_failed) if r.repeat == 3 and r.cell.connections == 8 else r
        for r in cut
    ]
    assert fmap._finished_ramps(line, failed, fine) == 1


def test_where_nothing_always_collapsed_confirm_probes_the_next_level_up() -> None:
    answers = {8: [False, True, True, True], 16: [True, True, True], 6: [False, False]}

    def again(level: int) -> bool | None:
        return answers[level].pop(0)

    start = bracket_counts({4: (0, 1), 6: (0, 1), 8: (1, 1)}, 400)
    found = confirm(start, again, repeats=3, disputed=5)
    # 8 held once in five: not where it always collapses; 16 is, so the bracket reaches it.
    assert found.describe() == "froze 0/3 at 6, 4/5 at 8, 3/3 at 16"
    assert (found.fine_at, found.collapsed_at, found.upper) == (6, 16, 16)
    # Were 16 never probed, the first level that sometimes collapsed bounds the threshold: no
    # "no collapse up to the ceiling" for a level that froze four times in five.
    partial = bracket_counts({6: (0, 3), 8: (4, 5)}, 400)
    assert partial.collapsed_at is None and partial.upper == 8
    assert partial.describe() == "no level collapsed every time up to 8 (froze 4/5 at 8)"
    assert rule_agreement(9, partial) == "agrees"
    assert rule_agreement(30, partial) == "DISAGREES: collapsed earlier than ~30"
    assert agreement(partial, bracket_counts({6: (0, 1), 8: (1, 1)}, 400)) == "overlap"


@pytest.mark.integration
def test_a_resumed_map_keeps_every_probe_and_measures_only_what_is_missing(
    tmp_path: Path,
) -> None:
    """The recorded map, interrupted: its cold line's last re-probes and its last warm ramp's
    last level gone. The resume replays the search from the records, re-probes only the edges
    still short of their answers, runs one more ramp, and rewrites no record it had."""
    run = tmp_path / "map"
    shutil.copytree(FIXTURE, run)
    meta = json.loads((run / "metadata.json").read_text())
    meta["complete"] = False
    meta["plan"]["variants"] = ["sync-dependency"]  # the fixture keeps only this line's probes
    (run / "metadata.json").write_text(json.dumps(meta))
    probes = run / "probes"
    # Ramp 4 cut short after two levels: its levels stay, and a fifth ramp replaces it.
    for name in ("ocold-c6@5", "ocold-c8@3", "owarm-c6@4"):
        next(probes.glob(f"*-{name}.json")).unlink()
    kept = {p.name: p.read_bytes() for p in probes.iterdir()}
    done = harness("map", "--resume", str(run))
    assert done.returncode == 0, done.stderr
    after = {p.name: p.read_bytes() for p in probes.iterdir()}
    assert all(after[name] == data for name, data in kept.items())  # none rewritten
    added = sorted(set(after) - set(kept))
    cold = [n for n in added if "-ocold-" in n]
    warm = [n for n in added if "-owarm-" in n]
    # The cold edges: 8 back to three answers, 6 (disputed) back to five.
    assert sorted(n.split("-ocold-")[1] for n in cold) == ["c6@5.json", "c8@3.json"]
    # One warm ramp more, numbered after every ramp on record, climbing the fine ladder.
    assert warm and all(n.endswith("@5.json") for n in warm), warm
    assert "-ocold-c2" not in " ".join(added) and "-ocold-c4" not in " ".join(added)


def test_confirm_with_no_answer_has_nothing_to_probe_and_a_held_level_above_is_probed_in_full() -> (
    None
):
    assert confirm(bracket_counts({}, 400), lambda c: None).describe() == "no probe answered"
    asked: list[int] = []

    def again(level: int) -> bool | None:
        asked.append(level)
        return {8: True, 16: False}.get(level)

    # 8 sometimes froze; 16, above it, held: three answers at 16 before anything higher.
    found = confirm(bracket_counts({6: (0, 3), 8: (4, 5)}, 400), again, budget=3)
    assert asked == [16, 16, 16] and found.counts[16] == (0, 3)
    assert found.describe() == "no level collapsed every time up to 16 (froze 4/5 at 8, 0/3 at 16)"


def test_a_search_whose_higher_levels_never_answered_claims_nothing_above_them() -> None:
    found = bracket_counts({8: (0, 1), 12: (0, 1), 14: (0, 1)}, 400)
    assert found.describe() == "no collapse up to 14"
    assert rule_agreement(10, found) == "DISAGREES: predicted ~10, no collapse up to 14"
    assert (
        rule_agreement(55, found) == "agrees: predicted beyond 14, the highest level that answered"
    )


def test_the_fine_ladder_steps_up_to_where_the_first_ramp_froze() -> None:
    plan = MapPlan.from_json({**RunDir.open(FIXTURE).metadata()["plan"], "ceiling": 400})
    assert plan.fine_ladder(16, 64)[:4] == (2, 4, 8, 16)
    assert plan.fine_ladder(16, 64)[4:] == (18, 20, 22, 24, 26, 28, 30, 32, 34, 36, 38, 40, 42,
                                            44, 46, 48, 50, 52, 54, 56, 58, 60, 62, 64, 128, 256,
                                            400)  # fmt: skip
    assert plan.fine_ladder(None) == plan.coarse_ladder()


def test_a_window_seen_through_the_servers_port_is_clean_only_for_a_one_process_server() -> None:
    one = replace(timeline([500] * 6), per_process=False)
    assert window_of(one, 0.1, STEADY_TREND).clean is True
    target = replace(one, processes=None)
    assert window_of(target, 0.1, STEADY_TREND).clean is None
    two = replace(one, processes=2)
    assert window_of(two, 0.1, STEADY_TREND).seen_all is False


def test_a_ramp_levels_log_is_read_from_where_its_window_opened(tmp_path: Path) -> None:
    from harness.infra.server import read_log
    from harness.run.cell import _tail_since

    log = tmp_path / "server.log"
    log.write_text("sqlalchemy.exc.TimeoutError: QueuePool limit of size 1 overflow 1 reached\n")
    before = read_log(log)
    with log.open("a") as f:
        f.write("level two\nException in ASGI application\n")
    after = read_log(log)
    assert (before.pool_timeouts, after.server_errors, after.size > before.size) == (1, 1, True)
    assert _tail_since(log, before) == "level two\nException in ASGI application"
