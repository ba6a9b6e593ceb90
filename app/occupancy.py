"""The side channel: what this process is doing right now, for the harness to sample.

`GET /_occupancy` is an `async def` endpoint, so it answers on the event loop even while every
threadpool thread is blocked: a frozen sync app can still say why it is frozen. It reports the
threadpool (AnyIO's limiter; under the 2021 stack, asyncio's default executor), the connection
pool (what each app's lifespan puts in `app.state.pool_stats`), and the requests this process
has in flight (and, of those, how many have no response started yet) and has answered, counted
by a pure ASGI wrapper that leaves the side channel out. The two in-flight counts differ where
code runs after the response has started: a `yield` dependency's exit, a background task.

It also reports how late the event loop runs: `loop_lag_ms`, the most a 10 ms timer overslept
since the previous report (a loop busy with other requests, or blocked, answers late), and, for
an asyncio pool, how many tasks wait for a connection (`pool_tasks_waiting`).

Behind the server's one port, each request reaches whichever worker process accepts it, so with
several workers one may go unsampled for seconds. Where OCCUPANCY_DIR is set, each process also
serves the same report on a loopback port of its own and registers that port in the directory
under its pid (`own_channel`), so the harness can ask every process at every tick.
"""

import asyncio
import json
import os
from collections.abc import AsyncIterator, Awaitable, Callable, MutableMapping
from contextlib import asynccontextmanager, suppress
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any

from fastapi import FastAPI, Request

from app import compat
from app.settings import Settings

PATH = "/_occupancy"
# The own channel listens on loopback only: it is for the harness on the same machine.
LOOPBACK = "127.0.0.1"
# A client that has not sent its request head by then is dropped, so none can pile up tasks.
HEAD_TIMEOUT_S = 2.0
Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]


@dataclass
class Counts:
    in_flight: int = 0  # entered the app, not finished
    awaiting: int = 0  # of those, no response started yet
    ok: int = 0  # answered with a status below 400
    errors: int = 0  # answered with 400 or more
    lag_s: float | None = None  # the loop's largest lag since the last report (None: not probed)


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
            if message["type"] == "http.response.start" and not started:
                started = True
                self.counts.awaiting -= 1
                if message["status"] < 400:
                    self.counts.ok += 1
                else:
                    self.counts.errors += 1
            await send(message)

        self.counts.in_flight += 1
        self.counts.awaiting += 1
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
            if not started:
                self.counts.awaiting -= 1


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
    app.state.occupancy_counts = counts
    app.add_middleware(Requests, counts=counts)

    @app.get(PATH, include_in_schema=False)
    async def occupancy(request: Request) -> dict[str, Any]:
        return report(request.app)


def report(app: FastAPI) -> dict[str, Any]:
    """What this process is doing now: the body of `GET /_occupancy` and of the own channel."""
    counts: Counts = app.state.occupancy_counts
    pool = getattr(app.state, "pool_stats", None)
    return {
        "pid": os.getpid(),
        **threadpool(),
        **(pool() if pool else {"checked_out": None, "capacity": None, "pool_waiting": None}),
        "in_flight": counts.in_flight,
        "awaiting": counts.awaiting,
        "ok": counts.ok,
        "errors": counts.errors,
        "loop_lag_ms": _read_lag(counts),
    }


def _read_lag(counts: Counts) -> float | None:
    """The largest lag since the previous report, and start the next interval (the harness is
    the one reader: it samples each process at 10 Hz)."""
    lag, counts.lag_s = counts.lag_s, (0.0 if counts.lag_s is not None else None)
    return None if lag is None else round(lag * 1000, 2)


LAG_TICK_S = 0.01


@asynccontextmanager
async def side_channel(app: FastAPI, settings: Settings) -> AsyncIterator[None]:
    """What the side channel needs on the app's loop while the lifespan runs: the lag probe,
    and this process's own channel (`own_channel`)."""
    counts: Counts | None = getattr(app.state, "occupancy_counts", None)
    probe = asyncio.ensure_future(_probe_lag(counts)) if counts is not None else None
    try:
        async with own_channel(app, settings):
            yield
    finally:
        if probe is not None:
            probe.cancel()
            with suppress(asyncio.CancelledError):
                await probe


async def _probe_lag(counts: Counts) -> None:
    """Sleep LAG_TICK_S again and again; how much later than asked each sleep ends is time the
    loop spent on other work before it could run this task."""
    loop = asyncio.get_running_loop()
    counts.lag_s = 0.0
    while True:
        asked = loop.time()
        await asyncio.sleep(LAG_TICK_S)
        counts.lag_s = max(counts.lag_s or 0.0, loop.time() - asked - LAG_TICK_S)


@asynccontextmanager
async def own_channel(app: FastAPI, settings: Settings) -> AsyncIterator[None]:
    """This process's own side channel, registered in OCCUPANCY_DIR while the lifespan runs.

    Entered from the lifespan, so it serves on the loop that runs the app: its answers read that
    loop's limiter, and come even while every threadpool thread is blocked.
    """
    if not (settings.OCCUPANCY and settings.OCCUPANCY_DIR):
        yield
        return
    server = await asyncio.start_server(partial(_answer, app), host=LOOPBACK, port=0)
    entry = Path(settings.OCCUPANCY_DIR) / str(os.getpid())
    # Written whole under another name first: the harness may list the directory at any moment.
    temporary = entry.with_name(f".{entry.name}.tmp")
    temporary.write_text(str(server.sockets[0].getsockname()[1]))
    os.replace(temporary, entry)
    try:
        yield
    finally:
        entry.unlink(missing_ok=True)
        server.close()
        await server.wait_closed()


async def _answer(app: FastAPI, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    """Answer one request with the report and close: HTTP/1.1 just enough for any client."""
    try:
        request = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), HEAD_TIMEOUT_S)
        if request.startswith(b"GET "):
            status, body = "200 OK", json.dumps(report(app)).encode()
        else:
            status, body = "405 Method Not Allowed", b'{"detail":"GET only"}'
        head = (
            f"HTTP/1.1 {status}\r\nContent-Type: application/json\r\n"
            f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n"
        )
        writer.write(head.encode() + body)
        await writer.drain()
    except (TimeoutError, ConnectionError, asyncio.IncompleteReadError, asyncio.LimitOverrunError):
        pass  # no head in time, or the client went away: there is no one to answer
    finally:
        writer.close()


def sqlalchemy_pool_stats(engine: Any, capacity: int) -> Callable[[], dict[str, int | None]]:
    """What `/_occupancy` reports of an engine's pool (sync or async engine): connections lent
    out, the most it can lend (pool_size + max_overflow), and threads (sync) or tasks (async)
    waiting for one."""
    pool = getattr(engine, "sync_engine", engine).pool
    queue = getattr(pool, "_pool", None)
    # A thread waiting in QueuePool._do_get waits on its queue's condition; the count of those
    # waiters is private to the queue.
    condition = getattr(queue, "not_empty", None)
    waiters = getattr(condition, "_waiters", None)

    def tasks_waiting() -> int | None:
        # An async pool's queue is an asyncio.Queue, made at its first use; its getters (private)
        # are the futures of the tasks waiting for a connection.
        if condition is not None or queue is None:
            return None
        inner = vars(queue).get("_queue")
        getters = getattr(inner, "_getters", None) if inner is not None else ()
        return None if getters is None else sum(not f.done() for f in getters)

    return lambda: {
        "checked_out": pool.checkedout(),
        "capacity": capacity,
        "pool_waiting": len(waiters) if waiters is not None else None,
        "pool_tasks_waiting": tasks_waiting(),
    }
