"""A TCP relay on 127.0.0.1 that delays every chunk by a fixed one-way latency, each direction.

The harness puts it between an app and PostgreSQL when DB_LATENCY is set: the network a
database in another rack or zone puts there, which loopback lacks (and the kernel's netem is
not available on the machines this runs on). A chunk read on one side is written to the other
at its arrival time + latency, not after the previous chunk's delay: order is kept and
bandwidth is not limited. The delays are timed by a timerfd (nanosecond resolution) that the
event loop watches, since uvloop's own timers count whole milliseconds, too coarse for 1 ms.

Standard library and uvloop only, like a server it is a process the harness starts:
`python -m servers.relay --upstream HOST:PORT --latency-ms 1`. It prints
`listening on 127.0.0.1:PORT` once it accepts connections and runs until SIGTERM or SIGINT.
Only the TCP handshake is not delayed: the client's connect completes at the relay.
"""

from __future__ import annotations

import argparse
import asyncio
import ctypes
import heapq
import itertools
import os
import signal
import socket
import sys
import time
from collections.abc import Callable
from contextlib import suppress
from typing import Any

import uvloop

LOOPBACK = "127.0.0.1"
CLOCK_MONOTONIC = 1  # time.monotonic() reads the same clock on Linux
TFD_NONBLOCK = os.O_NONBLOCK
TFD_CLOEXEC = os.O_CLOEXEC
TFD_TIMER_ABSTIME = 1
PR_SET_TIMERSLACK = 29
MAX_LEAD_S = 0.0003  # a learned lateness beyond this is the loop being busy, not waking up


class _Timespec(ctypes.Structure):
    _fields_ = (("tv_sec", ctypes.c_long), ("tv_nsec", ctypes.c_long))


class _Itimerspec(ctypes.Structure):
    _fields_ = (("it_interval", _Timespec), ("it_value", _Timespec))


class Clock:
    """Callbacks due at monotonic times, fired by one timerfd armed at the earliest of them.

    Ties keep the order they were scheduled in, so one direction's chunks stay in order. A
    process woken by a timer runs some tens of microseconds after it (the kernel's wake-up,
    the loop's turn): that lateness is learned as the relay runs, and the timer armed that much
    early, so that chunks leave on time on average rather than always late.
    """

    LEARN = 1 / 16  # weight of the newest lateness in the running estimate

    def __init__(self, loop: asyncio.AbstractEventLoop, max_lead_s: float) -> None:
        self._libc = ctypes.CDLL(None, use_errno=True)
        # Linux lets a timer fire up to 50 us late by default (timer slack); ask for 1 ns.
        self._libc.prctl(PR_SET_TIMERSLACK, 1, 0, 0, 0)
        self.fd = self._libc.timerfd_create(CLOCK_MONOTONIC, TFD_NONBLOCK | TFD_CLOEXEC)
        if self.fd < 0:
            raise OSError(ctypes.get_errno(), "timerfd_create failed")
        self._due: list[tuple[float, int, Callable[..., None], tuple[Any, ...]]] = []
        self._seq = itertools.count()
        self.lead = 0.0  # how early the timer is armed: the lateness learned so far
        self.max_lead_s = max_lead_s
        self._armed: float | None = None  # the time the timer is set to
        loop.add_reader(self.fd, self._fire)

    def at(self, when: float, callback: Callable[..., None], *args: Any) -> None:
        earliest = self._due[0][0] if self._due else None
        heapq.heappush(self._due, (when, next(self._seq), callback, args))
        if earliest is None or when < earliest:
            self._arm(when - self.lead)

    def _arm(self, when: float) -> None:
        self._armed = when
        sec = int(when)
        nsec = max(int((when - sec) * 1e9), 1)  # an all-zero value would disarm the timer
        spec = _Itimerspec(_Timespec(0, 0), _Timespec(sec, nsec))
        if self._libc.timerfd_settime(self.fd, TFD_TIMER_ABSTIME, ctypes.byref(spec), None):
            raise OSError(ctypes.get_errno(), "timerfd_settime failed")

    def _fire(self) -> None:
        with suppress(BlockingIOError):
            os.read(self.fd, 8)
        now = time.monotonic()
        if self._armed is not None and now >= self._armed:
            late = min(now - self._armed, self.max_lead_s)
            self.lead += (late - self.lead) * self.LEARN
        while self._due and self._due[0][0] - self.lead <= now:
            _, _, callback, args = heapq.heappop(self._due)
            callback(*args)
        if self._due:
            self._arm(self._due[0][0] - self.lead)
        else:
            self._armed = None


class Side(asyncio.Protocol):
    """One end of a relayed connection (the client's or the upstream's); what it reads goes to
    its peer, delayed."""

    def __init__(self, relay: Relay, peer: Side | None = None) -> None:
        self.relay = relay
        self.peer = peer
        self.early: list[tuple[float, bytes]] = []  # (arrival, chunk) read before the link
        self.transport: asyncio.Transport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]  # uvloop's are not subclasses
        sock = transport.get_extra_info("socket")
        if sock is not None:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

    def data_received(self, data: bytes) -> None:
        if self.peer is None:  # the upstream connection is still being opened
            self.early.append((time.monotonic(), data))
        else:
            self.relay.later(self.peer.send, data)

    def eof_received(self) -> bool:
        if self.peer is not None:
            self.relay.later(self.peer.send_eof)
        return True  # half-closed: the other direction may still carry data

    def connection_lost(self, exc: Exception | None) -> None:
        if self.peer is not None:
            self.relay.later(self.peer.close)

    # The receiving side's buffer is full: stop reading from the sender until it drains.
    def pause_writing(self) -> None:
        if self.peer is not None and self.peer.transport is not None:
            self.peer.transport.pause_reading()

    def resume_writing(self) -> None:
        if self.peer is not None and self.peer.transport is not None:
            self.peer.transport.resume_reading()

    def send(self, data: bytes) -> None:
        if self.transport is not None and not self.transport.is_closing():
            self.transport.write(data)

    def send_eof(self) -> None:
        t = self.transport
        if t is not None and not t.is_closing() and t.can_write_eof():
            t.write_eof()

    def close(self) -> None:
        if self.transport is not None:
            self.transport.close()


class Client(Side):
    """The app's end: opens the upstream connection; what arrives meanwhile waits for it."""

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        super().connection_made(transport)
        self.relay.connect_upstream(self)

    def link(self, upstream: Side) -> None:
        self.peer = upstream
        for arrived, data in self.early:
            self.relay.later(upstream.send, data, arrived=arrived)
        self.early.clear()


class Relay:
    def __init__(
        self, loop: asyncio.AbstractEventLoop, upstream: tuple[str, int], latency_s: float
    ):
        self.loop = loop
        self.upstream = upstream
        self.latency_s = latency_s
        self.clock = Clock(loop, min(MAX_LEAD_S, latency_s / 4)) if latency_s > 0 else None
        self._tasks: set[asyncio.Task[None]] = set()

    def later(self, callback: Callable[..., None], *args: Any, arrived: float = 0.0) -> None:
        """Run `callback` one latency after `arrived` (default: now); at once for latency 0."""
        if self.clock is None:
            callback(*args)
        else:
            self.clock.at((arrived or time.monotonic()) + self.latency_s, callback, *args)

    def connect_upstream(self, client: Client) -> None:
        task = self.loop.create_task(self._connect(client))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _connect(self, client: Client) -> None:
        try:
            # Linked to the client from the start: its first bytes may come before this resumes.
            _, upstream = await self.loop.create_connection(
                lambda: Side(self, client), *self.upstream
            )
        except OSError:
            client.close()  # the app sees its connection closed, as with a refused one
            return
        if client.transport is None or client.transport.is_closing():
            upstream.close()
            return
        client.link(upstream)


def parse_address(text: str) -> tuple[str, int]:
    host, sep, port = text.rpartition(":")
    if not sep or not host or not port.isdigit():
        raise argparse.ArgumentTypeError(f"{text!r} is not HOST:PORT")
    return host.strip("[]"), int(port)


async def serve(upstream: tuple[str, int], latency_s: float, port: int) -> None:
    loop = asyncio.get_running_loop()
    relay = Relay(loop, upstream, latency_s)
    server = await loop.create_server(lambda: Client(relay), LOOPBACK, port, backlog=1024)
    stop = loop.create_future()

    def stop_once() -> None:  # a second signal finds it stopping already
        if not stop.done():
            stop.set_result(None)

    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop_once)
    bound = server.sockets[0].getsockname()[1]
    print(f"listening on {LOOPBACK}:{bound}", flush=True)
    await stop
    server.close()


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m servers.relay", description=__doc__.split("\n")[0])
    p.add_argument("--upstream", type=parse_address, required=True, help="HOST:PORT to relay to")
    p.add_argument("--latency-ms", type=float, default=0.0, help="one-way delay, milliseconds")
    p.add_argument("--port", type=int, default=0, help="port on 127.0.0.1 (0: any free one)")
    args = p.parse_args(argv)
    if not 0 <= args.latency_ms <= 10_000:
        p.error(f"--latency-ms {args.latency_ms:g} must be from 0 to 10000")
    uvloop.run(serve(args.upstream, args.latency_ms / 1000, args.port))
    return 0


if __name__ == "__main__":
    sys.exit(main())
