"""The latency relay against a real PostgreSQL: a round trip through it costs twice its latency,
it costs little at latency 0, it keeps order without limiting bandwidth, and it never outlives
what started it."""

from __future__ import annotations

import signal
import statistics
import subprocess
import time
from collections.abc import Iterator
from contextlib import ExitStack
from pathlib import Path

import psutil
import pytest

from harness.domain.axes import DIRECT, Latency, Verdict
from harness.infra import postgres
from harness.infra.relay import Relay, relayed
from harness.store.rundir import RunDir
from tests.cli import harness, start_harness
from tests.test_robustness import QUICK, alive, descendants, named, wait_for

pytestmark = pytest.mark.integration

ROUND_TRIPS = 300  # per connection; the median of these is compared
TOLERANCE = 0.10  # the bound: twice the latency within 10%
# What the relay without delay may add to a round trip: two more hops on loopback, each a
# process wake-up. Measured at 0.03-0.2 ms on a shared 2-core machine; a quarter of the
# smallest latency worth simulating (1 ms each way) is the bound.
RELAY_HOP_MS = 0.5


def medians(urls: dict[str, str], n: int = ROUND_TRIPS) -> dict[str, float]:
    """The median `SELECT 1` round trip (ms) on one connection per URL, the connections taking
    turns so that the machine's drift hits each alike."""
    with ExitStack() as stack:
        cursors = {}
        for name, url in urls.items():
            conn = postgres.connect(url)
            stack.callback(conn.close)
            conn.autocommit = True
            cursors[name] = conn.cursor()
        samples: dict[str, list[float]] = {name: [] for name in urls}
        for i in range(n + 20):
            for name, cur in cursors.items():
                t0 = time.perf_counter()
                cur.execute("select 1")
                cur.fetchone()
                if i >= 20:  # the first ones warm up the connection and the relay
                    samples[name].append((time.perf_counter() - t0) * 1000)
        return {name: statistics.median(values) for name, values in samples.items()}


@pytest.fixture
def relays(pg: postgres.Database) -> Iterator[dict[str, Relay]]:
    """A relay with no delay and one each at 1, 2 and 5 ms, to the test cluster."""
    with ExitStack() as stack:
        yield {
            text: relay
            for text in ("relay", "1ms", "2ms", "5ms")
            if (relay := stack.enter_context(relayed(pg.url, Latency.parse(text))))
        }


@pytest.mark.parametrize("latency", ["1ms", "2ms", "5ms"])
def test_a_round_trip_through_the_relay_costs_twice_its_latency(
    pg: postgres.Database, relays: dict[str, Relay], latency: str
) -> None:
    rt = medians({"direct": pg.url, "relay": relays["relay"].url, latency: relays[latency].url})
    expected = 2 * Latency.parse(latency).ms
    added = rt[latency] - rt["relay"]  # the delay alone: the relay's own hops cancel out
    print(
        f"{latency}: round trip {rt[latency]:.3f} ms, direct {rt['direct']:.3f}, relay at 0 "
        f"{rt['relay']:.3f}; added by the delay {added:.3f} ms, expected {expected:g}"
    )
    assert abs(added - expected) <= TOLERANCE * expected, rt
    # Against no relay at all, the relay's hop comes on top, within the same bound.
    assert abs(rt[latency] - rt["direct"] - expected) <= TOLERANCE * expected + RELAY_HOP_MS, rt


def test_the_relay_without_delay_adds_little_to_a_round_trip(
    pg: postgres.Database, relays: dict[str, Relay]
) -> None:
    rt = medians({"direct": pg.url, "relay": relays["relay"].url})
    print(f"round trip direct {rt['direct']:.3f} ms, through the relay {rt['relay']:.3f} ms")
    assert rt["relay"] - rt["direct"] < RELAY_HOP_MS, rt


def test_order_is_kept_and_bandwidth_not_limited(pg: postgres.Database) -> None:
    """15 MB in many chunks: in order, and in about the latency plus the direct time. Were each
    chunk delayed after the one before, the hundreds of chunks would take seconds."""
    query = "select string_agg(i::text, ',') from generate_series(1, 2000000) as i"
    latency = Latency.parse("20ms")

    def fetch(url: str) -> tuple[float, str]:
        with postgres.connect(url) as conn, conn.cursor() as cur:
            cur.execute("select 1")
            t0 = time.perf_counter()
            cur.execute(query)
            (text,) = cur.fetchone()  # type: ignore[misc]
            elapsed = time.perf_counter() - t0
        conn.close()
        return elapsed, text

    with relayed(pg.url, latency) as relay:
        assert relay is not None
        through, text = fetch(relay.url)
    direct, expected = fetch(pg.url)
    assert text == expected  # every byte, in order
    print(f"15 MB: {through * 1000:.0f} ms through the relay at 20 ms, {direct * 1000:.0f} direct")
    assert through < direct + 2 * latency.ms / 1000 + 0.3


def test_a_direct_latency_starts_no_relay(pg: postgres.Database) -> None:
    with relayed(pg.url, DIRECT) as relay:
        assert relay is None


def test_the_relay_stops_with_its_context_and_refuses_a_unix_socket(pg: postgres.Database) -> None:
    with relayed(pg.url, Latency.parse("1ms")) as relay:
        assert relay is not None
        proc = psutil.Process(relay.proc.pid)
        with postgres.connect(relay.url) as conn, conn.cursor() as cur:
            cur.execute("select 1")
        conn.close()
        assert relay.cpu_seconds() > 0
    assert not alive({proc})
    socket_url = "postgresql://bench@/bench?host=/var/run/postgresql"
    done = harness("run", *QUICK, "--db-latency", "1ms", "--database-url", socket_url)
    assert done.returncode == 2 and "Traceback" not in done.stderr
    assert done.stderr.startswith("error: DB_LATENCY: the relay needs a database reached over TCP")
    assert done.stderr.count("\n") == 1


def test_a_run_through_the_relay_records_its_cpu_and_works_with_database_url(
    pg: postgres.Database, tmp_path: Path
) -> None:
    out = tmp_path / "run"
    done = harness(
        "run", *QUICK, "--connections", "4", "--db-latency", "0,2ms", "--database-url", pg.url,
        "--out", str(out),
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    by = {str(r.cell.known("db_latency")): r for r in RunDir.open(out).records()}
    assert set(by) == {"0", "2ms"}
    assert all(r.verdict is Verdict.ok for r in by.values())
    assert by["0"].cpu and by["0"].cpu.relay_s is None
    assert by["2ms"].cpu and by["2ms"].cpu.relay_s and by["2ms"].cpu.relay_s > 0
    assert by["2ms"].cell.id.endswith("-d2-lat2ms-c4") and by["0"].cell.id.endswith("-d2-c4")
    assert by["2ms"].wrk and by["0"].wrk
    # A request runs at least two round trips to PostgreSQL (the query, the transaction's end).
    assert by["2ms"].wrk.p50_ms >= 2 * 2 * 2 * 0.9


def measuring_through_a_relay(
    out: Path, duration: str, connections: str
) -> tuple[subprocess.Popen[str], set[psutil.Process]]:
    """A harness started at 1 ms, once wrk measures through the relay; and what it started."""
    proc = start_harness(
        "run", *QUICK, "--duration", duration, "--connections", connections,
        "--db-latency", "1ms", "--out", str(out),
    )  # fmt: skip
    seen: set[psutil.Process] = set()

    def measuring() -> bool:
        seen.update(descendants(proc.pid))
        return bool(named(set(alive(seen)), "servers.relay")) and bool(named(alive(seen), "wrk"))

    wait_for(measuring)
    return proc, seen


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGKILL])
def test_no_relay_outlives_the_harness(sig: signal.Signals, tmp_path: Path) -> None:
    proc, seen = measuring_through_a_relay(tmp_path / "run", "5s", "2")
    proc.send_signal(sig)
    proc.communicate(timeout=30)
    wait_for(lambda: alive(seen) == [], timeout=15)


def test_a_relay_that_dies_mid_run_is_a_crashed_cell(tmp_path: Path) -> None:
    out = tmp_path / "run"
    proc, seen = measuring_through_a_relay(out, "3s", "2,3")
    named(set(alive(seen)), "servers.relay")[0].kill()
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 0, err
    by = {r.cell.connections: r for r in RunDir.open(out).records()}
    assert by[2].verdict is Verdict.crashed and "the latency relay exited" in by[2].note
    assert by[3].verdict is Verdict.ok  # the next cell has a relay of its own
    assert alive(seen | descendants(proc.pid)) == []
