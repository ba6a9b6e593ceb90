"""The cause of a stall named from recorded thread dumps (py-spy's JSON of real servers): the
pool deadlock, the blocked event loop, a healthy service; and the same answers once the apps'
own modules and functions are renamed, so that it keys on where threads wait."""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

import pytest

from harness.domain.diagnosis import Cause, diagnose

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
    found = diagnose(dumps, tokens=3)
    assert found.cause is Cause.pool_deadlock
    assert "3 threadpool threads of 3 tokens wait for a connection in QueuePool._do_get" in (
        found.evidence
    )
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
