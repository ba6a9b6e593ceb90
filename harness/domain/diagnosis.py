"""Why a service stalls, named from where its threads wait across a few thread dumps (py-spy's
JSON, frames innermost first), with the evidence and the fix.

It keys on what every Python service shares, never on an app's own names: the threadpool's
worker loop, a pool's checkout, the event loop's runner. Causes:

- `pool deadlock`: the threadpool's threads wait in a pool's checkout, dump after dump, and
  none is idle: the threadpool x connection-pool deadlock (FastAPI issue 3205) or a pool
  exhausted by slow holders.
- `blocked loop`: the event loop's thread is inside application code, not in the loop's own
  wait, dump after dump, without holding the GIL: blocking I/O (a sync driver, `time.sleep`)
  called from an `async def` endpoint, so every request of that process waits for it.
- `healthy`: neither, in a majority of the dumps.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

from harness.domain.occupancy import IDLE, POOL_WAITS, WORKER_LOOPS

# The event loop's own frames: where its thread waits for the next event (asyncio's selector;
# uvloop and the runner, whose waits are in C below them).
LOOP_RUNNERS = ("Runner.run", "run_until_complete", "BaseEventLoop.run_forever", "asyncio_run")
LOOP_WAITS = ("EpollSelector.select", "KqueueSelector.select", "select", "_run_once", *LOOP_RUNNERS)
# A cause is named when the dumps that show it are at least this share of all of them.
MAJORITY = 0.5


class Cause(StrEnum):
    pool_deadlock = "pool deadlock"
    blocked_loop = "blocked loop"
    healthy = "healthy"


@dataclass(frozen=True)
class Diagnosis:
    cause: Cause
    evidence: str
    fix: str = ""


def _names(thread: dict[str, Any]) -> list[str]:
    return [str(f.get("name", "")) for f in thread.get("frames", [])]


def _where(frame: dict[str, Any]) -> str:
    return f"{frame.get('name')} ({frame.get('short_filename')}:{frame.get('line')})"


def pool_waits(dump: Sequence[dict[str, Any]]) -> tuple[int, int, Counter[str]]:
    """(threadpool threads, idle ones, waits by pool frame) in one dump."""
    pool = idle = 0
    waits: Counter[str] = Counter()
    for thread in dump:
        names = _names(thread)
        if not any(n in WORKER_LOOPS for n in names):
            continue
        pool += 1
        inner = names[: next(i for i, n in enumerate(names) if n in WORKER_LOOPS)]
        if wait := next((n for n in inner if n in POOL_WAITS), None):
            waits[wait] += 1
        elif all(n.split(".")[-1] in {i.split(".")[-1] for i in IDLE} for n in inner):
            idle += 1
    return pool, idle, waits


def loop_blocked_in(dump: Sequence[dict[str, Any]]) -> dict[str, Any] | None:
    """The innermost frame of an event loop's thread that is in application code and not
    running (a blocking call), if one is."""
    for thread in dump:
        names = _names(thread)
        if not any(n in LOOP_RUNNERS for n in names) or not names:
            continue
        if names[0] in LOOP_WAITS or thread.get("owns_gil"):
            continue  # waiting for events, or running Python code (CPU, not a blocking call)
        return dict(thread["frames"][0])
    return None


def diagnose(dumps: Sequence[Sequence[dict[str, Any]]], tokens: int | None = None) -> Diagnosis:
    """The cause the dumps of one process show (`tokens`: its threadpool's size, if known)."""
    if not dumps:
        return Diagnosis(Cause.healthy, "no dump to read")
    deadlocked, waits, sizes = 0, Counter[str](), []
    for dump in dumps:
        pool, idle, found = pool_waits(dump)
        waiting = sum(found.values())
        if waiting >= 2 and (idle == 0 or waiting >= pool - 1):
            deadlocked += 1
            waits += found
            sizes.append(waiting)
    if deadlocked / len(dumps) >= MAJORITY:
        frame, _ = waits.most_common(1)[0]
        n = max(sizes)
        capacity = f" of {tokens} tokens" if tokens else ""
        return Diagnosis(
            Cause.pool_deadlock,
            f"{n} threadpool threads{capacity} wait for a connection in {frame} "
            f"({POOL_WAITS[frame]}) in {deadlocked} of {len(dumps)} dumps",
            "open the session inside the endpoint (`with Session() as s:`), not in a `yield` "
            "dependency, so that a request holds its connection only while it runs; or cap the "
            "process's concurrent requests at threadpool tokens + pool capacity",
        )
    blocked = [b for dump in dumps if (b := loop_blocked_in(dump)) is not None]
    if len(blocked) / len(dumps) >= MAJORITY:
        where, count = Counter(_where(b) for b in blocked).most_common(1)[0]
        return Diagnosis(
            Cause.blocked_loop,
            f"the event loop's thread waits inside {where} in {count} of {len(dumps)} dumps, "
            "not in the loop",
            "a blocking call runs in an `async def` endpoint: make the endpoint `def` (FastAPI "
            "runs it in the threadpool), or use an async driver, or `await "
            "anyio.to_thread.run_sync(...)` for the blocking part",
        )
    return Diagnosis(
        Cause.healthy, f"no pool wait and no blocked loop in a majority of {len(dumps)} dumps"
    )
