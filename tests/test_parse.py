"""Every user-given value is parsed in harness/parse.py; bad ones get one clear UsageError."""

import pytest
from hypothesis import given
from hypothesis import strategies as st

from harness.domain.axes import Pool
from harness.domain.errors import UsageError
from harness.domain.parse import (
    parse_choices,
    parse_duration,
    parse_latencies,
    parse_pools,
    parse_positive_ints,
    parse_servers,
    parse_workers,
    parse_wrk_seconds,
)
from servers.registry import ServerName


@given(st.lists(st.integers(1, 10_000), min_size=1))
def test_connection_lists_round_trip(values: list[int]) -> None:
    assert parse_positive_ints(",".join(map(str, values)), "CONNECTIONS") == sorted(set(values))


@given(st.text())
def test_connections_either_parse_or_name_the_value(text: str) -> None:
    try:
        values = parse_positive_ints(text, "CONNECTIONS")
    except UsageError as exc:
        assert str(exc).startswith("CONNECTIONS: ")
        assert "\n" not in str(exc)
    else:
        assert values and all(1 <= v <= 100_000 for v in values)


@pytest.mark.parametrize("text", ["0", "-1", "12,0", "1.5", "ten", ",", ""])
def test_bad_connections(text: str) -> None:
    with pytest.raises(UsageError, match="CONNECTIONS"):
        parse_positive_ints(text, "CONNECTIONS")


@given(st.integers(1, 500), st.integers(0, 500))
def test_pools_round_trip(size: int, overflow: int) -> None:
    assert parse_pools(f"{size}+{overflow}") == [Pool(size, overflow)]
    assert str(Pool(size, overflow)) == f"{size}+{overflow}"


@given(st.text())
def test_pools_either_parse_or_name_the_value(text: str) -> None:
    try:
        pools = parse_pools(text)
    except UsageError as exc:
        assert str(exc).startswith("POOLS: ")
    else:
        assert all(p.size >= 1 and p.overflow >= 0 for p in pools)


@pytest.mark.parametrize("text", ["5+x", "5", "0+10", "+", "5-10", "5+10+1"])
def test_bad_pools(text: str) -> None:
    with pytest.raises(UsageError, match="POOLS"):
        parse_pools(text)


@pytest.mark.parametrize(
    ("text", "seconds"), [("10s", 10.0), ("500ms", 0.5), ("2m", 120.0), ("1.5s", 1.5)]
)
def test_durations(text: str, seconds: float) -> None:
    assert parse_duration(text) == seconds


@pytest.mark.parametrize("text", ["10", "0s", "-1s", "10 seconds", "2h", ""])
def test_bad_durations_need_a_unit_and_a_positive_value(text: str) -> None:
    with pytest.raises(UsageError, match="DURATION"):
        parse_duration(text)


def test_wrk_takes_whole_seconds_only() -> None:
    assert parse_wrk_seconds("2s", "DURATION") == 2.0 and parse_wrk_seconds("1m", "WARMUP") == 60
    for text in ("500ms", "1.5s"):
        with pytest.raises(UsageError, match=f"DURATION: '{text}' is not a whole number of sec"):
            parse_wrk_seconds(text, "DURATION")


@given(st.integers(1, 4_000_000), st.sampled_from(["ms", "s", "m"]))
def test_durations_are_accepted_exactly_up_to_one_hour(value: int, unit: str) -> None:
    seconds = value * {"ms": 0.001, "s": 1.0, "m": 60.0}[unit]
    if seconds <= 3600:
        assert parse_duration(f"{value}{unit}") == pytest.approx(seconds)
    else:
        with pytest.raises(UsageError, match="at most 1 hour"):
            parse_duration(f"{value}{unit}")


def test_servers() -> None:
    assert parse_servers("all") == list(ServerName)
    assert parse_servers("hypercorn,uvicorn") == [ServerName.hypercorn, ServerName.uvicorn]
    with pytest.raises(UsageError, match="SERVER: unknown value 'nginx'; choose from uvicorn"):
        parse_servers("nginx")


def test_choices_deduplicate_and_name_the_valid_ones() -> None:
    assert parse_choices("a,b,a", "X", str, ["a", "b"]) == ["a", "b"]
    with pytest.raises(UsageError, match="X: unknown value 'c'; choose from a, b"):
        parse_choices("a,c", "X", str, ["a", "b"])


def test_rows_are_whole_numbers_from_1() -> None:
    assert parse_positive_ints("1000,10", "ROWS") == [10, 1000]
    for bad in ("0", "0,x", "-3"):
        with pytest.raises(UsageError, match=r"ROWS: '(0|-3)' is not a whole number from 1"):
            parse_positive_ints(bad, "ROWS")


@pytest.mark.parametrize(
    ("text", "expected"),
    [("0", ["0"]), ("5ms,0,1ms", ["0", "1ms", "5ms"]), ("relay,0", ["0", "relay"]),
     ("0.5ms", ["0.5ms"]), ("250us", ["0.25ms"]), ("1s", ["1000ms"])],
)  # fmt: skip
def test_latencies_sorted_direct_first(text: str, expected: list[str]) -> None:
    assert [str(v) for v in parse_latencies(text)] == expected


@pytest.mark.parametrize("bad", ["-1ms", "x", "2", "1.5", "2s", "1 ms s", ""])
def test_bad_latencies_name_the_value_and_the_choices(bad: str) -> None:
    with pytest.raises(UsageError, match=r"DB_LATENCY: .*(0 \(direct\)|empty list)"):
        parse_latencies(bad)


def test_workers_take_cpus() -> None:
    assert parse_workers("1,cpus", cpus=4) == [1, 4]
    assert parse_workers("cpus,1", cpus=2, ordered=True) == [2, 1]
    with pytest.raises(UsageError, match=r"WORKERS: 'cpu' .* or cpus"):
        parse_workers("cpu", cpus=2)
