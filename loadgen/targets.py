"""ASGI apps to point a load generator at: one that answers at once, one that stalls.

`stalling` blocks its event loop for STALL_S every EVERY_S, as a server does in a
stop-the-world pause: nothing is read or answered meanwhile, so an open loop's requests due
then wait, and a closed loop's connections stop sending. Its first stall starts
EVERY_S - STALL_S after its first request, so that a run of EVERY_S meets exactly one, whole.
"""

from __future__ import annotations

import asyncio
import json
import os
import time
from collections.abc import Awaitable, Callable
from typing import Any

STALL_S = 1.0
EVERY_S = 2.5

Scope = dict[str, Any]
Receive = Callable[[], Awaitable[dict[str, Any]]]
Send = Callable[[dict[str, Any]], Awaitable[None]]


async def _answer(send: Send) -> None:
    headers = [(b"content-length", b"2")]
    await send({"type": "http.response.start", "status": 200, "headers": headers})
    await send({"type": "http.response.body", "body": b"ok"})


# When each request arrived (time.monotonic), for GET /_arrivals to hand over and forget: how
# evenly a generator sent, seen from the server.
_arrivals: list[float] = []


async def _arrived(scope: Scope, send: Send) -> bool:
    """Note a request's arrival; answer GET /_arrivals (True) with those so far."""
    if scope["path"] != "/_arrivals":
        _arrivals.append(time.monotonic())
        return False
    body = json.dumps(_arrivals).encode()
    _arrivals.clear()
    headers = [(b"content-length", str(len(body)).encode())]
    await send({"type": "http.response.start", "status": 200, "headers": headers})
    await send({"type": "http.response.body", "body": body})
    return True


async def minimal(scope: Scope, receive: Receive, send: Send) -> None:
    if scope["type"] == "http" and not await _arrived(scope, send):
        await _answer(send)


def _stall() -> None:
    time.sleep(STALL_S)  # the point: the whole loop stops
    asyncio.get_running_loop().call_later(EVERY_S - STALL_S, _stall)


_started: list[bool] = []


async def stalling(scope: Scope, receive: Receive, send: Send) -> None:
    if scope["type"] != "http" or await _arrived(scope, send):
        return
    if not _started:
        _started.append(True)
        asyncio.get_running_loop().call_later(EVERY_S - STALL_S, _stall)
    await _answer(send)


# `paced` answers requests in turn, the next 1 / PACED_RATE s after the last (or after it
# arrived, if later): it serves exactly PACED_RATE requests a second, whatever it is sent, and
# a timer that wakes late delays one answer, not the rate. A capacity search has a known answer.
PACED_RATE = float(os.environ.get("PACED_RATE", "200"))
_next_free = [0.0]


async def paced(scope: Scope, receive: Receive, send: Send) -> None:
    if scope["type"] != "http" or await _arrived(scope, send):
        return
    now = time.monotonic()
    _next_free[0] = done_at = max(now, _next_free[0]) + 1 / PACED_RATE
    await asyncio.sleep(done_at - now)
    await _answer(send)
