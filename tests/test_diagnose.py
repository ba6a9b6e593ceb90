"""`make diagnose` against real servers started by hand, as a user's would be: the demo app's
mistakes (the threadpool x pool deadlock; the sync session in `async def`, which blocks the
loop) and a healthy variant, each named by where its threads wait; the service's processes
found from its port (gunicorn's workers too)."""

from __future__ import annotations

import json
import os
import subprocess
from contextlib import AbstractContextManager
from pathlib import Path
from typing import Any

import pytest

from harness.domain.axes import Latency
from harness.infra import postgres
from harness.infra.process import free_port
from harness.infra.relay import relayed
from servers.registry import Mode
from tests.cli import harness
from tests.test_target import hand_started


def may_ptrace() -> bool:
    """Whether py-spy may read another process of this user (root may; YAMA may forbid it)."""
    scope = Path("/proc/sys/kernel/yama/ptrace_scope")
    return os.geteuid() == 0 or not scope.exists() or scope.read_text().strip() == "0"


pytestmark = [
    pytest.mark.integration,
    pytest.mark.skipif(not may_ptrace(), reason="py-spy may not read another process here"),
]


def started(
    server: str, mode: Mode, db_url: str, workers: int = 1, **env: str
) -> AbstractContextManager[tuple[int, subprocess.Popen[bytes]]]:
    """The demo app as a user starts it; a user's service has no side channel."""
    return hand_started(server, db_url, mode=mode, workers=workers, OCCUPANCY="false", **env)


def diagnose(port: int, out: Path, *settings: str) -> dict[str, Any]:
    done = harness(
        "diagnose",
        f"--target=http://127.0.0.1:{port}/users",
        "--duration=3s",
        "--pause=0.5s",
        f"--out={out}",
        *settings,
        timeout=180,
    )
    assert done.returncode == 0, done.stderr
    assert f"report: {out / 'diagnosis.md'}" in done.stderr
    return dict(json.loads((out / "diagnosis.json").read_text()))


def test_the_seed_deadlock_is_named_with_its_threads_and_connections(
    pg: postgres.Database, tmp_path: Path
) -> None:
    postgres.reset_dataset(pg.url, 10)
    env = {"STYLE": "dependency", "TOKENS": "4", "POOLS": "2+0", "POOL_TIMEOUT": "5s"}
    with started("uvicorn", Mode.sync, pg.url, **env) as (port, _):
        found = diagnose(port, tmp_path / "d", "--connections=2,16", "--repeats=2")
    assert found["cause"] == "pool deadlock", found["sentence"]
    assert "4 of 4 busy threadpool threads wait for 2 connections" in found["sentence"]
    assert "QueuePool._do_get" in found["sentence"]
    assert "under T + C = 4 + 2 = 6 requests at once (at most 5)" in found["fix"]
    assert "inside the endpoint" in found["fix"]
    # Round 2 waits until the pool's timeout (5 s) has freed the threads, then stalls again.
    assert found["rounds"][1]["waited_s"] >= 1 and len(found["rounds"][1]["levels"]) == 2
    assert found["rounds_seen"][1].startswith("round 2: after ")
    (low, high) = found["rounds"][0]["levels"]
    assert low["verdict"] == "held" and all(n > 0 for n in low["ok"])
    assert high["verdict"] == "stalled" and 0 in high["ok"]
    (process,) = high["processes"]
    assert process["out"] and max(process["out"].values()) == 2  # the pool's two, held
    assert process["clients"] == 16
    page = (tmp_path / "d" / "diagnosis.md").read_text()
    assert page.index("**Cause: pool deadlock.**") < page.index("|")
    assert "QueuePool._do_get (sqlalchemy/pool/impl.py" in page  # the stacks behind it


def test_a_sync_session_in_async_def_is_a_blocked_loop(
    pg: postgres.Database, tmp_path: Path
) -> None:
    postgres.reset_dataset(pg.url, 10)
    # 5 ms each way to PostgreSQL, as a database on another machine: the loop waits on it.
    with (
        relayed(pg.url, Latency.parse("5ms")) as relay,
        started("uvicorn", Mode.async_, relay.url if relay else pg.url, STYLE="blocking") as (
            port,
            _,
        ),
    ):
        found = diagnose(port, tmp_path / "b", "--connections=1,8", "--repeats=1")
    assert found["cause"] == "blocked loop", found["sentence"]
    assert "The event loop's thread waits inside" in found["sentence"]
    assert "sqlalchemy/" in found["sentence"]  # in the sync driver's call, under the endpoint
    assert "async def" in found["fix"]
    levels = found["rounds"][0]["levels"]
    # Answers at every level, one by one: never stalled. The cause needs two dumps that catch
    # the loop's thread in the driver; at 1 connection on a loaded machine a level's few dumps
    # may miss it (a CI run did), at 8 they do not.
    assert {lv["verdict"] for lv in levels} <= {"held", "impaired"}
    assert levels[-1]["verdict"] == "impaired"
    assert levels[1]["p50_ms"] > 3 * levels[0]["p50_ms"]  # 8 requests queue behind the loop


def test_a_healthy_service_gets_no_cause_and_gunicorns_workers_are_each_read(
    pg: postgres.Database, tmp_path: Path
) -> None:
    postgres.reset_dataset(pg.url, 10)
    with started("gunicorn", Mode.async_, pg.url, workers=2, STYLE="context") as (port, proc):
        found = diagnose(port, tmp_path / "h", "--connections=1,16", "--repeats=2")
        typo = harness("diagnose", f"--target=http://127.0.0.1:{port}/user", timeout=60)
    assert typo.returncode == 2 and f"127.0.0.1:{port}/user answers 404" in typo.stderr
    assert found["cause"] == "healthy", found["sentence"]
    assert found["sentence"].startswith("Healthy up to 16 connections")
    assert found["fix"] == ""
    assert found["run"]["command"] == (  # in the variables table's order
        f"make diagnose CONNECTIONS=1,16 REPEATS=2 DURATION=3s "
        f"TARGET=http://127.0.0.1:{port}/users PAUSE=0.5s OUT={tmp_path / 'h'}"
    )
    assert found["service"]["root"] == proc.pid  # the arbiter, found from the port
    assert len(found["service"]["processes"]) == 3  # it and its two workers
    rounds = found["rounds"]
    assert [len(r["levels"]) for r in rounds] == [2, 2]
    top = rounds[0]["levels"][1]
    assert all(n > 0 for n in top["ok"])
    # The workers hold wrk's 16 connections between them (the arbiter none).
    assert sum(p["clients"] or 0 for p in top["processes"]) >= 16
    assert all(p["dumps"] >= 2 and p["cause"] == "healthy" for p in top["processes"])


def test_a_port_nobody_listens_on_or_a_pid_that_is_not_the_service_is_one_line(
    tmp_path: Path,
) -> None:
    port = free_port()
    done = harness("diagnose", f"--target=http://127.0.0.1:{port}/users", timeout=60)
    assert done.returncode == 2
    assert done.stderr.strip() == (
        f"error: TARGET: nothing listens on port {port} that this user may see; start the "
        "service, or give its PID (PID=...)"
    )
    sleeper = subprocess.Popen(["sleep", "60"])
    try:
        done = harness(
            "diagnose",
            f"--target=http://127.0.0.1:{port}/users",
            f"--pid={sleeper.pid}",
            f"--out={tmp_path / 'x'}",
            timeout=60,
        )
    finally:
        sleeper.kill()
    assert done.returncode == 2
    assert done.stderr.strip() == (
        f"error: PID: neither process {sleeper.pid} nor a process under it listens on port "
        f"{port} (TARGET's); name the service's own process"
    )
    assert not (tmp_path / "x").exists()
