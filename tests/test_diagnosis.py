"""The cause of a stall named from recorded thread dumps (py-spy's JSON of real servers): the
pool deadlock, the blocked event loop, a healthy service; and the same answers once the apps'
own modules and functions are renamed, so that it keys on where threads wait."""

from __future__ import annotations

import copy
import json
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest

from harness.domain.diagnosis import (
    Cause,
    Level,
    LevelVerdict,
    ProcessLevel,
    Round,
    conclude,
    diagnose,
    shows,
)
from harness.infra import wrk
from harness.report import diagnosis as report

FIXTURES = Path(__file__).parent / "fixtures"
# uvicorn serving the demo's sync `dependency` app, frozen; the same server idle; an `async def`
# endpoint calling `time.sleep` under wrk (recorded from a real uvicorn, 8 connections).
FROZEN, IDLE, BLOCKED = (
    json.loads((FIXTURES / f"pyspy-{name}-uvicorn.json").read_text())
    for name in ("frozen", "idle", "blocked-loop")
)


def renamed(dump: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The dump as another team's service would give it: every frame outside the libraries
    (the app's own modules and functions) under other names."""
    out = copy.deepcopy(dump)
    libraries = ("sqlalchemy/", "fastapi/", "starlette/", "anyio/", "uvicorn/", "asyncio/")
    for thread in out:
        for i, frame in enumerate(thread["frames"]):
            where = str(frame.get("filename"))
            own = "/app/" in where or "shop_api" in where or where.startswith("app/")
            if own and not any(lib in where for lib in libraries):
                frame["name"] = f"orders_handler_{i}"
                frame["filename"] = f"/srv/shop/orders/views_{i}.py"
                frame["short_filename"] = f"orders/views_{i}.py"
    return out


@pytest.mark.parametrize("rename", [False, True])
def test_threads_waiting_in_the_pool_checkout_are_the_deadlock(rename: bool) -> None:
    dumps = [renamed(FROZEN) if rename else FROZEN] * 3
    found = diagnose(dumps)
    assert found.cause is Cause.pool_deadlock
    assert "3 threadpool threads wait for a connection in QueuePool._do_get" in found.evidence
    assert "in 3 of 3 dumps" in found.evidence and "inside the endpoint" in found.fix


@pytest.mark.parametrize("rename", [False, True])
def test_the_loop_thread_inside_app_code_is_a_blocked_loop(rename: bool) -> None:
    dump = renamed(BLOCKED) if rename else BLOCKED
    found = diagnose([dump, dump, IDLE])
    assert found.cause is Cause.blocked_loop
    name = "orders_handler_0 (orders/views_0.py:8)" if rename else "load_basket (shop_api.py:8)"
    assert f"the event loop's thread waits inside {name} in 2 of 3 dumps" in found.evidence
    assert "async def" in found.fix


def test_an_idle_server_is_healthy_and_one_dump_of_a_stall_is_not_a_cause() -> None:
    assert diagnose([IDLE] * 3).cause is Cause.healthy
    assert diagnose([IDLE, IDLE, FROZEN]).cause is Cause.healthy
    assert diagnose([IDLE, BLOCKED, IDLE]).cause is Cause.healthy
    assert diagnose([]).cause is Cause.healthy


def test_a_loop_thread_running_python_is_not_blocked() -> None:
    busy = copy.deepcopy(BLOCKED)
    for thread in busy:
        thread["owns_gil"] = True  # computing, not waiting in a blocking call
    assert diagnose([busy] * 3).cause is Cause.healthy


def test_the_renamed_dumps_keep_no_name_of_the_apps() -> None:
    for dump, names in ((FROZEN, ("sync_app.py", "app/")), (BLOCKED, ("shop_api", "load_basket"))):
        before, after = json.dumps(dump), json.dumps(renamed(dump))
        assert all(n in before for n in names)
        assert not any(n in after for n in names) and "orders/views_" in after


def worker(*frames: tuple[str, str]) -> dict[str, Any]:
    """A threadpool thread standing in `frames` (innermost first), as py-spy writes one."""
    stack = [*frames, ("WorkerThread.run", "anyio/_backends/_asyncio.py")]
    return {
        "owns_gil": False,
        "frames": [
            {"name": n, "short_filename": f, "filename": f"/venv/{f}", "line": 1} for n, f in stack
        ],
    }


IDLE_WORKER = worker(("Condition.wait", "threading.py"), ("Queue.get", "queue.py"))


def test_threads_that_linger_idle_beside_the_deadlocked_ones_do_not_hide_it() -> None:
    # AnyIO keeps a worker thread a while after its last job: 2 idle beside the 3 that wait.
    dump = [*FROZEN, IDLE_WORKER, IDLE_WORKER]
    assert shows(Cause.pool_deadlock, dump)
    assert diagnose([dump] * 3).cause is Cause.pool_deadlock


def test_threads_opening_overflow_connections_inside_the_checkout_are_not_waiting() -> None:
    # QueuePool opens an overflow connection inside _do_get: a healthy `context` service under
    # load showed 2 busy threads there, both connecting, which read as a deadlock of 2.
    connecting = worker(
        ("connect", "psycopg2/__init__.py"),
        ("_ConnectionRecord.__connect", "sqlalchemy/pool/base.py"),
        ("Pool._create_connection", "sqlalchemy/pool/base.py"),
        ("QueuePool._do_get", "sqlalchemy/pool/impl.py"),
    )
    dump = [connecting, connecting, *[IDLE_WORKER] * 38]
    assert not shows(Cause.pool_deadlock, dump)
    assert diagnose([dump] * 3).cause is Cause.healthy


def test_a_pool_with_a_thread_running_its_query_is_busy_not_deadlocked() -> None:
    querying = worker(("DefaultDialect.do_execute", "sqlalchemy/engine/default.py"))
    assert not shows(Cause.pool_deadlock, [*FROZEN, querying])
    assert diagnose([[*FROZEN, querying]] * 3).cause is Cause.healthy


def test_a_stall_with_every_token_in_slow_io_is_a_saturated_threadpool_else_unknown() -> None:
    slow = [worker(("SSLSocket.recv_into", "ssl.py"), ("fetch", "shop/client.py"))] * 4
    assert diagnose([slow] * 3).cause is Cause.healthy  # answers kept coming: busy, not a fault
    found = diagnose([slow] * 3, stalled=True)
    assert found.cause is Cause.threadpool_saturated
    assert (
        "all 4 threadpool threads busy" in found.evidence
        and "SSLSocket.recv_into" in found.evidence
    )
    unknown = diagnose([IDLE] * 3, stalled=True)
    assert unknown.cause is Cause.unknown and "where threads stand" in unknown.evidence
    assert diagnose([], stalled=True).cause is Cause.unknown


def test_a_loop_thread_waiting_for_the_gil_in_many_places_is_not_blocked() -> None:
    def at(name: str, file: str) -> list[dict[str, Any]]:
        dump = copy.deepcopy(BLOCKED)
        for thread in dump:
            if thread["frames"] and "shop_api" in thread["frames"][0]["short_filename"]:
                thread["frames"][0].update(name=name, short_filename=file)
        return dump

    scattered = [at("handler", "shop/a.py"), at("render", "pricing/b.py"), IDLE, IDLE, IDLE]
    assert diagnose(scattered).cause is Cause.healthy  # 2 of 5, in two modules
    driver = [at("execute", "psycopg/cursor.py"), at("commit", "psycopg/connection.py"), IDLE]
    found = diagnose(driver)  # 2 of 3, in one library: a blocking driver
    assert found.cause is Cause.blocked_loop and "(and elsewhere in psycopg in 1)" in found.evidence


def test_a_loop_run_by_uvloop_from_c_is_found_by_its_servers_frames() -> None:
    # uvicorn 0.13 calls uvloop's run_until_complete: no Python runner frame below the app.
    dump = copy.deepcopy(BLOCKED)
    for thread in dump:
        names = [f["name"] for f in thread["frames"]]
        if "Runner.run" in names:
            thread["frames"] = [
                f for f in thread["frames"] if f["name"] not in ("Runner.run", "asyncio_run")
            ]
            thread["thread_name"] = "MainThread"
    assert diagnose([dump, dump, IDLE]).cause is Cause.blocked_loop


def test_a_loop_thread_waiting_for_the_gil_in_the_frameworks_is_not_blocked() -> None:
    waiting = copy.deepcopy(BLOCKED)
    for thread in waiting:
        if thread["frames"] and "shop_api" in thread["frames"][0]["short_filename"]:
            thread["frames"][0].update(
                name="serialize_response", short_filename="fastapi/routing.py"
            )
    assert diagnose([waiting] * 3).cause is Cause.healthy


def process(cause: Cause = Cause.healthy, **changes: Any) -> ProcessLevel:
    base = ProcessLevel(
        pid=4417,
        dumps=3,
        dump_errors=(),
        clients=80,
        out={"127.0.0.1:5432": 15, "10.0.0.9:6379": 1},
        cpu_percent=3.0,
        threads=42,
        threadpool=40,
        busy=40,
        in_pool={"QueuePool._do_get": 40},
        waits={"Condition.wait (threading.py:331)": 40},
        cause=cause,
        evidence="40 threadpool threads wait for a connection in QueuePool._do_get",
        fix="open the session inside the endpoint; or cap it",
        first_seen_s=0.4 if cause is not Cause.healthy else None,
        stacks=((40, ("Condition.wait (threading.py:331)", "QueuePool._do_get (impl.py:1)")),),
        file="dumps/r1-c80-p4417.json.gz",
    )
    return replace(base, **changes)


def level(
    connections: int,
    ok: tuple[int, ...],
    *processes: ProcessLevel,
    other: tuple[int, ...] | None = None,
    pace: int = 0,
) -> Level:
    return Level(
        connections=connections,
        ok=ok,
        other=other or (0,) * len(ok),
        first_second_s=0.6,
        ok_rps=sum(ok) / max(1, len(ok)),
        p50_ms=2.0,
        p99_ms=9.0,
        timeouts=0,
        socket_errors=0,
        status_errors=sum(other or ()),
        processes=processes or (process(),),
        paced_before=pace,
    )


def test_a_level_is_judged_second_by_second() -> None:
    assert level(8, (500, 480, 510)).verdict is LevelVerdict.held
    stalled = level(80, (300, 0, 0))
    assert stalled.verdict is LevelVerdict.stalled and stalled.stalled_from_s == 1.6
    assert level(80, (0, 0, 0), pace=400).stalled_from_s == 0.6  # its pace, from the level before
    impaired = level(8, (30, 30, 30), process(Cause.blocked_loop))
    assert impaired.verdict is LevelVerdict.impaired and impaired.stalled_from_s is None


def test_an_empty_second_of_a_slow_service_is_its_pace_and_errors_are_answers() -> None:
    # One request of 1.5 s at a time: some seconds have none, and it never had a pace of 5.
    slow = level(1, (1, 0, 1, 1, 0), pace=1)
    assert slow.verdict is LevelVerdict.held and slow.stalled_from_s is None
    # Load shed with 503: answers, all errors, from the second whole second.
    shed = level(64, (200, 0, 0), other=(10, 900, 880))
    assert shed.stalled_from_s is None and shed.failing_from_s == 1.6
    assert shed.verdict is LevelVerdict.failing
    found = conclude([Round(1, (shed,))])
    assert found.cause is Cause.unknown
    assert "answered only errors (status 400 or more) from 1.6 s at 64 connections" in (
        found.sentence
    )


def test_a_supervisor_with_no_cause_does_not_hide_the_worker_that_has_one() -> None:
    arbiter = process(Cause.unknown, pid=1, first_seen_s=None, clients=None)
    worker = process(Cause.pool_deadlock, pid=2, first_seen_s=2.5)
    assert level(80, (300, 0, 0), arbiter, worker).named() is worker
    first, later = process(Cause.pool_deadlock, pid=3, first_seen_s=0.5), worker
    assert level(80, (300, 0, 0), later, first).named() is first


def test_the_deadlock_is_told_with_its_threads_connections_and_cap() -> None:
    rounds = [
        Round(1, (level(40, (900, 910)), level(80, (400, 0), process(Cause.pool_deadlock)))),
        Round(2, (level(40, (900, 905)), level(80, (880, 870)))),  # near the edge: it held
    ]
    found = conclude(rounds)
    assert found.cause is Cause.pool_deadlock
    assert found.sentence == (
        "40 of 40 busy threadpool threads wait for 15 connections (to 127.0.0.1:5432) in "
        "`QueuePool._do_get`, none running a query (process 4417, from 0.4 s at 80 connections)"
    )
    assert found.fix.endswith(
        "or keep this process under T + C = 40 + 15 = 55 requests at once (at most 54), with "
        "the server's concurrency limit"
    )
    assert found.rounds == (
        "round 1: pool deadlock in process 4417 from 80 connections; stalled from 1.6 s at 80 "
        "connections",
        "round 2: answers every second up to 80 connections",
    )


def test_healthy_only_without_cause_or_stall_and_unknown_for_a_stall_without_cause() -> None:
    held = conclude([Round(1, (level(1, (600, 610)), level(16, (900, 950))))])
    assert held.cause is Cause.healthy and held.fix == ""
    assert held.sentence.startswith("Healthy up to 16 connections") and "925 req/s" in held.sentence
    stalled = conclude([Round(1, (level(16, (900, 0), process(Cause.unknown)),))])
    assert stalled.cause is Cause.unknown
    assert "stalled from 1.6 s at 16 connections" in stalled.sentence
    skipped = conclude([Round(1, (level(16, (5, 0), process(Cause.unknown)),)), Round(2, (), "x")])
    assert skipped.rounds[1] == "round 2: not run: x"


def test_the_page_opens_with_the_cause_and_its_fix_then_the_tables_and_stacks() -> None:
    rounds = [Round(1, (level(80, (400, 0), process(Cause.pool_deadlock)),))]
    about = {
        "plan": {
            "url": "http://127.0.0.1:8000/users",
            "levels": [80],
            "duration_s": 5.0,
            "pause_s": 1.0,
            "rounds": 1,
            "timeout_s": 5.0,
            "dump_every_s": 1.0,
        },
        "service": {"described": "1 process (port 8000)", "root": 4417, "command": "uvicorn"},
        "run": {
            "started": "s",
            "finished": "f",
            "machine": {"cpu_model": "AMD EPYC", "cpu_count": 2},
            "git": {"sha": "0" * 40, "dirty": False},
            "wrk": "wrk 4.1.0",
            "py-spy": "py-spy 0.4.3",
            "command": "make diagnose TARGET=http://127.0.0.1:8000/users",
            "complete": False,
        },
    }
    page = report.markdown(conclude(rounds), rounds, about)
    assert page.index("**Cause: pool deadlock.**") < page.index("**Fix:**") < page.index("|")
    assert "**Incomplete:** the diagnosis was interrupted" in page
    assert "Command: `make diagnose TARGET=http://127.0.0.1:8000/users`" in page
    assert "| 1 | 80 | stalled from 1.6 s | 200 |" in page and "| 400 0 |" in page
    assert "15 to 127.0.0.1:5432, 1 to 10.0.0.9:6379" in page
    assert "40 threads, innermost first:\n    Condition.wait (threading.py:331)" in page
    data = report.to_json(conclude(rounds), rounds, about)
    assert json.loads(json.dumps(data))["rounds"][0]["levels"][0]["stalled_from_s"] == 1.6


def test_wrk_counts_answers_per_second_of_the_monotonic_clock() -> None:
    out = (FIXTURES / "wrk_seconds.txt").read_text()  # a real wrk run of wrk_seconds.lua
    seconds = wrk.parse_seconds(out)
    assert seconds["other"] == {} and len(seconds["ok"]) == 4
    assert sum(seconds["ok"].values()) == wrk.parse(out, 2).requests
    command = wrk.WrkCommand("http://127.0.0.1:1/x", 2, 3.0, 2, 2.0, per_second=True)
    script = command.script.read_text()
    assert "response = function" in script and "WRK_JSON" in script and "request =" not in script
    assert wrk.WrkCommand("http://127.0.0.1:1/x", 2, 3.0, 2, 2.0).script == wrk.SCRIPT
