"""Latency histograms: wrk's correction undone exactly, repeats merged, percentiles by hand; and
a real wrk against a server that is slow in a known fraction of requests."""

from __future__ import annotations

import asyncio
import json
import random
import threading
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path

import pytest

from harness.domain.latency import (
    MIN_TAIL,
    Kind,
    correct,
    uncorrect,
    wrk_interval,
    wrk_percentile,
    wrk_rank,
)
from harness.domain.result import CellResult
from harness.infra import wrk
from harness.infra.histogram import Distribution, distribution
from harness.report import charts, reference
from harness.report import summary as report
from harness.report.stats import by_cell
from harness.store import runlist
from harness.store.rundir import RunDir

FIXTURES = Path(__file__).parent / "fixtures"


def test_correct_is_wrks_loop_by_hand() -> None:
    # e = 1000: a 3500 µs sample also counts at 2500 and 1500 (not at 500, which is <= e);
    # 1999 is below 2e and adds nothing; 2000 would add at 1000, which is not above e.
    measured = {100: 5, 1999: 1, 2000: 1, 3500: 2}
    assert correct(measured, 1000) == {100: 5, 1999: 1, 2000: 1, 3500: 2, 2500: 2, 1500: 2}
    assert correct(measured, 0) == measured  # fewer requests than connections: no correction


def test_uncorrect_inverts_correct_exactly() -> None:
    rng = random.Random(7)
    for _ in range(300):
        interval = rng.randint(1, 400)
        measured: dict[int, int] = {}
        for _ in range(rng.randint(0, 200)):
            value = rng.randint(0, 6000)
            measured[value] = measured.get(value, 0) + rng.randint(1, 4)
        assert uncorrect(correct(measured, interval), interval) == dict(sorted(measured.items()))


def test_uncorrect_refuses_a_histogram_wrk_could_not_have_made() -> None:
    # 3500 with e = 1000 would have put one at 2500: a bucket there that is empty is impossible.
    with pytest.raises(ValueError, match="not a histogram wrk corrected"):
        uncorrect({3500: 1, 1500: 1}, 1000)


def test_wrk_integer_arithmetic() -> None:
    assert wrk_interval(10_000_123, 4_999, 48) == 10_000_123 // (4_999 // 48) == 96_155
    assert wrk_interval(10_000_000, 47, 48) == 0
    assert wrk_rank(99, 1000) == 991  # C's round(990 + 0.5)
    ten = {v: 1 for v in range(1, 1001)}
    assert wrk_percentile(ten, 99) == 991 and wrk_percentile(ten, 50) == 501


def report_line(measured: dict[int, int], runtime_us: int, connections: int) -> str:
    """The line wrk_report.lua prints for a run whose responses took `measured`: wrk corrects
    first, then done() exports the corrected buckets and wrk's own percentiles."""
    complete = sum(measured.values())
    corrected = correct(measured, wrk_interval(runtime_us, complete, connections))
    latency = {k: wrk_percentile(corrected, p) for k, p in (("p50", 50), ("p90", 90),
               ("p99", 99), ("p999", 99.9))}  # fmt: skip
    data = {
        "requests": complete, "duration_us": runtime_us, "bytes": 0,
        "latency_us": {**latency, "max": max(corrected), "mean": 0.0},
        "errors": {"connect": 0, "read": 0, "write": 0, "timeout": 0, "status": 0},
        "histogram": {"count": sum(corrected.values()),
                      "buckets": [[v, c] for v, c in sorted(corrected.items())]},
    }  # fmt: skip
    return "Running 2s test\nWRK_JSON " + json.dumps(data) + "\n"


def test_a_known_histogram_through_the_export_the_undo_and_the_merge() -> None:
    # Two rounds of one cell. A: 980 responses in 1 ms, 20 in 48 ms, 10 connections, so wrk's
    # interval is 2 s / (1000 // 10) = 20 ms and each 48 ms sample adds one at 28 ms.
    # B: 991 in 2 ms, 9 in 96 ms, 8 connections: interval 16 ms, each 96 ms sample adds one
    # at 80, 64, 48 and 32 ms. Every value is exact at 3 significant digits.
    a = wrk.parse(report_line({1000: 980, 48_000: 20}, 2_000_000, 10), 10)
    b = wrk.parse(report_line({2000: 991, 96_000: 9}, 2_000_000, 8), 8)
    assert a.histograms is not None and b.histograms is not None
    assert (a.histograms.interval_us, b.histograms.interval_us) == (20_000, 16_000)
    assert (a.p99_ms, b.p99_ms) == (48.0, 80.0)  # wrk's own p99s, from the corrected buckets
    run_a, run_b = distribution(a), distribution(b)
    assert run_a is not None and run_b is not None
    assert (run_a.count, run_b.count) == (1000, 1000)  # the undo left one value per response
    assert (run_a.percentile_ms(99), run_b.percentile_ms(99)) == (48.0, 2.0)

    base = RunDir.open(FIXTURES / "run").records()[0]
    (cell,) = by_cell([replace(base, wrk=a), replace(base, wrk=b, repeat=2)])
    # Merged measured, 2000 responses: 980 × 1 ms, 991 × 2 ms, 20 × 48 ms, 9 × 96 ms.
    # p50 is the 1000th (2 ms), p99 the 1980th (48 ms, 9 above it), p99.9 the 1998th (96 ms).
    p50, p99, p999 = (cell.percentile(p) for p in (50, 99, 99.9))
    assert p50 is not None and p99 is not None and p999 is not None
    assert (p50.ms, p99.ms, p999.ms) == (2.0, 48.0, 96.0)
    assert p99.above == 9 < MIN_TAIL and p99.thin and p99.text() == "48.0†"
    assert p50.above == 29 and not p50.thin
    # The median of the rounds' p99s (48 and 2) would have said 25 ms.
    # Merged corrected, 2056 values: ... 28 ms × 20 (to 1991), 32 × 9 (2000), 48 × 29 (2029),
    # 64 × 9 (2038), 80 × 9, 96 × 9; the 99th percentile is the 2035th: 64 ms.
    corrected = cell.percentile(99, Kind.corrected)
    assert corrected is not None and corrected.ms == 64.0
    merged = cell.distribution(Kind.corrected)
    assert merged is not None and merged.count == 2056


def test_a_histogram_that_disagrees_with_wrks_percentiles_is_not_kept() -> None:
    line = report_line({1000: 980, 48_000: 20}, 2_000_000, 10).replace('"p99": 48000', '"p99": 7')
    with pytest.raises(ValueError, match="exported histogram gives p99 48000 µs, wrk printed 7"):
        wrk._histograms(json.loads(line.split("WRK_JSON ", 1)[1]), 10)
    result = wrk.parse(line, 10)  # the run stands, without the histograms it cannot vouch for
    assert result.requests == 1000 and result.p99_ms == 0.007 and result.histograms is None


def test_a_record_keeps_both_distributions_through_json() -> None:
    base = RunDir.open(FIXTURES / "run").records()[0]
    result = replace(base, wrk=wrk.parse(report_line({1000: 5, 9000: 1}, 1_000_000, 2), 2))
    again = CellResult.from_json(json.loads(json.dumps(result.to_json())))
    assert again == result and again.wrk and again.wrk.histograms
    assert Distribution.decode(again.wrk.histograms.measured).count == 6


def test_charts_mark_a_collapsed_cell_instead_of_drawing_it(tmp_path: Path) -> None:
    base = RunDir.open(FIXTURES / "run").records()[0]
    fast = wrk.parse(report_line({1000: 900, 3000: 100}, 1_000_000, 2), 2)
    few = wrk.parse(report_line({500: 3}, 1_000_000, 2), 2)
    records = [
        replace(base, wrk=fast),
        replace(base, wrk=few, verdict=base.verdict.collapsed,
                cell=replace(base.cell, connections=100)),
    ]  # fmt: skip
    cells = by_cell(records)
    labels = {base.cell.variant: "the variant"}
    assert charts._unusable(cells[0]) == "" and "collapsed" in charts._unusable(cells[1])
    charts.percentile_chart(tmp_path / "p.png", "t", cells, labels)
    charts.p99_throughput_chart(tmp_path / "q.png", "t", cells, labels)
    assert (tmp_path / "p.png").stat().st_size > 10_000 and (tmp_path / "q.png").exists()


# --- a real wrk against a server whose slow requests are known ----------------------------------

SLOW_EVERY = 5  # every 5th request, server-wide, waits SLOW_S before it answers: 20%
SLOW_S = 0.020


@pytest.fixture
def slow_fifth() -> Iterator[str]:
    """An HTTP/1.1 keep-alive server on 127.0.0.1 that answers at once, except every 5th."""
    count = 0
    loop = asyncio.new_event_loop()

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        nonlocal count
        try:
            while await reader.readuntil(b"\r\n\r\n"):
                count += 1
                if count % SLOW_EVERY == 0:
                    await asyncio.sleep(SLOW_S)
                writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
                await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            writer.close()

    server = loop.run_until_complete(asyncio.start_server(handle, "127.0.0.1", 0))
    thread = threading.Thread(target=loop.run_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.sockets[0].getsockname()[1]}/"
    server.close()
    loop.call_soon_threadsafe(loop.stop)
    thread.join(10)
    loop.close()


@pytest.mark.integration
def test_real_wrk_measures_the_known_slow_fraction(slow_fifth: str) -> None:
    command = wrk.WrkCommand(slow_fifth, connections=4, duration_s=2, threads=1, timeout_s=5)
    result = wrk.run(command).result  # parse checks the buckets against wrk's percentiles
    measured = distribution(result, Kind.measured)
    corrected = distribution(result, Kind.corrected)
    assert measured is not None and corrected is not None and result.histograms
    slow = measured.above(SLOW_S * 1000 * 0.95)
    # One response in five waited 20 ms; the rest took a fraction of a millisecond or so.
    assert measured.count == result.requests  # one value per response: the undo is exact
    assert 0.17 <= slow / measured.count <= 0.23, slow / measured.count
    assert measured.percentile_ms(50) < SLOW_S * 1000 / 4
    assert SLOW_S * 1000 <= measured.percentile_ms(90) <= SLOW_S * 1000 * 2
    # wrk's correction added samples below the slow ones: its p50 is not the measured one.
    assert result.histograms.interval_us > 0 and corrected.count > measured.count


# --- a real bench's records (tests/fixtures/bench-latency: 2 rounds, 1 and 48 connections) -----


def test_a_real_bench_merges_its_rounds_and_shows_both_p99s(tmp_path: Path) -> None:
    run = RunDir.open(FIXTURES / "bench-latency")
    records = run.records()
    for c in by_cell(records):
        merged = c.distribution(Kind.measured)
        rounds = [distribution(r.wrk) for r in c.records if r.wrk]
        assert merged is not None and c.n == len(rounds) == 2
        assert merged.count == sum(d.count for d in rounds if d) > 0
        p99 = c.percentile(99)
        assert p99 is not None and p99.above is not None
        # About 1% of the merged responses lie above the p99 (ties in a 0.1% bucket aside).
        assert p99.above <= merged.count * 0.01 + 1
    text = report.summary(run.metadata(), records, "bench-latency")
    table = text.split("## uvicorn · list", 1)[1].split("##", 1)[0]
    assert "p99 ms measured / corrected" in table and " - / " not in table
    assert "(charts/percentiles-uvicorn-list-r10.png)" in table
    (tmp_path / "bench-latency").symlink_to(FIXTURES / "bench-latency")
    page = reference.Page(tmp_path, tmp_path, runlist.load())
    section = "\n".join(reference.latency_section(page))
    assert "| 48 | uvicorn/sync/psycopg2/context" in section
    assert "median of the rounds' measured p99s (range)" in section
