import os
from pathlib import Path

import pytest

from harness.domain.errors import HarnessError
from harness.infra import process, wrk

FIXTURES = Path(__file__).parent / "fixtures"


def test_parse_a_recorded_run() -> None:
    r = wrk.parse((FIXTURES / "wrk_ok.txt").read_text(), 2)
    assert r.requests == 451
    assert r.duration_s == pytest.approx(1.003248)
    assert (r.p50_ms, r.p90_ms, r.p99_ms, r.max_ms) == (3.555, 8.333, 16.932, 25.848)
    assert r.failed == 0
    assert r.ok_rps == pytest.approx(451 / 1.003248)


def test_parse_a_recorded_frozen_run() -> None:
    r = wrk.parse((FIXTURES / "wrk_frozen.txt").read_text(), 48)
    assert r.requests == 0 and r.ok_rps == 0.0
    assert r.p99_ms == 0 and r.failed == 0


def test_parse_errors_counts_a_broken_response_once() -> None:
    r = wrk.parse((FIXTURES / "wrk_errors.txt").read_text(), 2)
    assert (r.status_errors, r.read_errors) == (171, 170)
    assert r.ok_requests == 0
    assert r.failed == 171


@pytest.mark.parametrize("text", ["", "Running 1s test\n", "WRK_JSON {}\n", "WRK_JSON {\n"])
def test_parse_refuses_output_without_one_report(text: str) -> None:
    with pytest.raises((ValueError, KeyError)):
        wrk.parse(text, 1)


def test_local_argv(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(wrk.shutil, "which", lambda name: "/usr/bin/wrk")
    cmd = wrk.WrkCommand("http://127.0.0.1:8001/users", 48, 10, wrk.threads_for(48, 2), 5)
    assert cmd.argv() == [
        "/usr/bin/wrk", "-t", "2", "-c", "48", "-d", "10s", "--timeout", "5s",
        "-s", str(wrk.SCRIPT), "http://127.0.0.1:8001/users",
    ]  # fmt: skip


def test_docker_argv_runs_the_same_script_on_the_host_network() -> None:
    cmd = wrk.WrkCommand(
        "http://127.0.0.1:8000/users", 12, 2.5, 2, 5, runner=wrk.WrkRunner.docker, image="my/wrk"
    )
    assert cmd.argv() == [
        "docker", "run", "--rm", "--network", "host",
        "-v", f"{wrk.SCRIPT.parent}:/scripts:ro", "my/wrk",
        "-t", "2", "-c", "12", "-d", "2.5s", "--timeout", "5s",
        "-s", "/scripts/wrk_report.lua", "http://127.0.0.1:8000/users",
    ]  # fmt: skip


@pytest.mark.parametrize(("connections", "cores", "threads"), [(1, 2, 1), (12, 2, 2), (200, 8, 8)])
def test_threads_are_min_of_connections_and_cores(
    connections: int, cores: int, threads: int
) -> None:
    assert wrk.threads_for(connections, cores) == threads


def test_missing_wrk_says_how_to_install(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(wrk.shutil, "which", lambda name: None)
    with pytest.raises(HarnessError, match="apt-get install -y wrk"):
        wrk.WrkCommand("http://127.0.0.1:1/", 1, 1, 1, 1).argv()


def test_pinning_gives_wrk_the_last_cpu_and_the_rest_to_the_servers() -> None:
    servers, load = process.cpu_split()
    usable = os.sched_getaffinity(0)
    if len(usable) < 2:
        pytest.skip("one CPU: nothing to split")
    assert load == {max(usable)} and servers == usable - load
    command = wrk.WrkCommand(
        "http://127.0.0.1:1/users", 2, 1.0, 1, 5.0, wrk.WrkRunner.docker, cpus=load
    )
    argv = command.argv()
    assert argv[argv.index("--cpuset-cpus") + 1] == str(max(usable))
