"""The side channel: what this process is doing right now, for the harness to sample.

`GET /_occupancy` is an `async def` endpoint, so it answers on the event loop even while every
threadpool thread is blocked: a frozen sync app can still say why it is frozen. It reports the
threadpool (AnyIO's limiter; under the 2021 stack, asyncio's default executor), the connection
pool (what each app's lifespan puts in `app.state.pool_stats`), and the requests this process
has in flight and has answered, counted by a pure ASGI wrapper that leaves the side channel out.
"""

import os
from collections.abc import Awaitable, Callable, MutableMapping
from dataclasses import dataclass
from typing import Any

from fastapi import FastAPI, Request

from app import compat

PATH = "/_occupancy"
Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]


@dataclass
class Counts:
    in_flight: int = 0
    ok: int = 0  # answered with a status below 400
    errors: int = 0  # answered with 400 or more


class Requests:
    """Counts requests in flight and answered around `app` into `counts`."""

    def __init__(self, app: ASGIApp, counts: Counts) -> None:
        self.app = app
        self.counts = counts

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["path"] == PATH:
            await self.app(scope, receive, send)
            return

        started = False

        async def counting_send(message: Message) -> None:
            nonlocal started
            if message["type"] == "http.response.start":
                started = True
                if message["status"] < 400:
                    self.counts.ok += 1
                else:
                    self.counts.errors += 1
            await send(message)

        self.counts.in_flight += 1
        try:
            await self.app(scope, receive, counting_send)
        except BaseException:
            # An unhandled error (a pool timeout) leaves the app without a response; the server
            # answers it with a 500 outside this wrapper.
            if not started:
                self.counts.errors += 1
            raise
        finally:
            self.counts.in_flight -= 1


def threadpool() -> dict[str, int | None]:
    """Tokens in use and total, and tasks waiting for one; for the 2021 stack, the default
    executor's busy threads, its size and the work items queued behind them."""
    if compat.ANYIO_THREADPOOL:
        import anyio.to_thread

        stats = anyio.to_thread.current_default_thread_limiter().statistics()
        return {
            "tokens_in_use": stats.borrowed_tokens,
            "tokens_total": int(stats.total_tokens),
            "waiting": stats.tasks_waiting,
        }
    executor = compat.default_executor
    if executor is None:  # before the lifespan ran
        return {"tokens_in_use": None, "tokens_total": None, "waiting": None}
    # The queue (a private field: ThreadPoolExecutor has no public statistics) holds the work no
    # thread has taken yet.
    return {
        "tokens_in_use": executor.running,
        "tokens_total": executor._max_workers,
        "waiting": executor._work_queue.qsize(),
    }


def install_occupancy(app: FastAPI) -> None:
    """Add `GET /_occupancy` and the request counters it reports; each app's lifespan sets
    `app.state.pool_stats` (a callable: {"checked_out": ..., "capacity": ...})."""
    counts = Counts()
    app.add_middleware(Requests, counts=counts)

    @app.get(PATH, include_in_schema=False)
    async def occupancy(request: Request) -> dict[str, Any]:
        pool = getattr(request.app.state, "pool_stats", None)
        return {
            "pid": os.getpid(),
            **threadpool(),
            **(pool() if pool else {"checked_out": None, "capacity": None, "pool_waiting": None}),
            "in_flight": counts.in_flight,
            "ok": counts.ok,
            "errors": counts.errors,
        }


def sqlalchemy_pool_stats(engine: Any, capacity: int) -> Callable[[], dict[str, int | None]]:
    """What `/_occupancy` reports of an engine's pool (sync or async engine): connections lent
    out, the most it can lend (pool_size + max_overflow), and threads blocked waiting for one."""
    pool = getattr(engine, "sync_engine", engine).pool
    # A thread waiting in QueuePool._do_get waits on its queue's condition; the count of those
    # waiters is private to the queue. An async pool's waiters are tasks, not threads: None.
    condition = getattr(getattr(pool, "_pool", None), "not_empty", None)
    waiters = getattr(condition, "_waiters", None)
    return lambda: {
        "checked_out": pool.checkedout(),
        "capacity": capacity,
        "pool_waiting": len(waiters) if waiters is not None else None,
    }
