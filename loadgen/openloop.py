"""An open-loop HTTP/1.1 load generator: request i is due at start + i / rate, whatever the
server does, and its latency counts from that moment.

Due requests wait in one queue, oldest first. One goes out (its write on an idle keep-alive
connection, or the opening of a new one while fewer than --connections are open) at its due
moment if it can; otherwise it is sent late when a connection frees, or dropped once it has
waited --timeout (it would have timed out anyway). Every due request is thus sent on time,
sent late or dropped; every sent one is answered (2xx or another status), fails (connect or
read error) or times out (--timeout after its write, or to connect). The result is one JSON
object on stdout, with the latency histograms HdrHistogram-encoded (µs, 3 significant digits).
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import json
import resource
import sys
import time
from typing import Any
from urllib.parse import urlsplit

import httptools
import uvloop
from hdrh.histogram import HdrHistogram

MAX_US = 3_600_000_000  # an hour: anything longer is clipped, and no run is that long
SWEEP_S = 0.05  # how often in-flight requests are checked against the timeout
now_s = time.monotonic  # not the loop's clock: uvloop's counts whole milliseconds


def histogram() -> HdrHistogram:
    return HdrHistogram(1, MAX_US, 3)


class Connection(asyncio.Protocol):
    def __init__(self, run: Run) -> None:
        self.run = run
        self.transport: asyncio.Transport | None = None
        self.parser = httptools.HttpResponseParser(self)
        self.due = 0.0  # of the request in flight, 0 when idle
        self.sent = 0.0
        self.keep_alive = True

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]  # uvloop's is no subclass

    def data_received(self, data: bytes) -> None:
        self.run.bytes += len(data)
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserError:
            self.run.failed(self, "read")

    def on_message_complete(self) -> None:
        self.keep_alive = self.parser.should_keep_alive()
        self.run.answered(self, self.parser.get_status_code())

    def connection_lost(self, exc: Exception | None) -> None:
        self.run.lost(self)

    def send(self, due: float, now: float) -> None:
        self.due, self.sent = due, now
        assert self.transport is not None
        self.transport.write(self.run.next_request())


def encode(request: dict[str, Any], host: str) -> bytes:
    """One HTTP/1.1 request of the mix, whole, as it goes on the wire."""
    body = request["body"].encode()
    lines = [f"{request['method']} {request['path']} HTTP/1.1", f"Host: {host}"]
    lines += ["User-Agent: openloop", *(f"{k}: {v}" for k, v in request["headers"])]
    if body or request["method"] in ("POST", "PUT", "PATCH"):
        lines.append(f"Content-Length: {len(body)}")
    return ("\r\n".join(lines) + "\r\n\r\n").encode() + body


class Run:
    def __init__(self, args: argparse.Namespace) -> None:
        url = urlsplit(args.url)
        self.host, self.port = url.hostname or "127.0.0.1", url.port or 80
        path = url.path or "/"
        if url.query:
            path += "?" + url.query
        items: list[dict[str, Any]] = [{"method": "GET", "path": path, "headers": [], "body": ""}]
        order = [0]
        if args.requests:
            with open(args.requests) as file:
                given = json.load(file)
            items, order = given["items"], given["order"]
        self.requests = [encode(r, url.netloc) for r in items]
        self.order, self.sent_count = order, 0
        self.rate, self.timeout, self.limit = args.rate, args.timeout, args.connections
        self.due_count = max(1, round(args.rate * args.duration))
        self.tolerance = args.tolerance / 1000
        self.loop = asyncio.get_running_loop()
        self.idle: list[Connection] = []
        self.busy: set[Connection] = set()
        self.connecting = 0
        self.backlog: collections.deque[float] = collections.deque()
        self.from_due, self.from_send, self.lag = histogram(), histogram(), histogram()
        self.on_time = self.late = self.dropped = 0
        self.statuses: collections.Counter[str] = collections.Counter()
        self.errors: collections.Counter[str] = collections.Counter()
        self.opened = self.peak_in_flight = self.bytes = 0
        self.done = asyncio.Event()
        self.scheduled_all = False
        self.start = 0.0

    def next_request(self) -> bytes:
        """The mix's next request: one weighted cycle, over and over, across connections."""
        index = self.order[self.sent_count % len(self.order)]
        self.sent_count += 1
        return self.requests[index]

    # -- sending -----------------------------------------------------------------------------
    def pump(self) -> None:
        """Start the waiting requests, oldest first, while a connection is idle or may be
        opened; drop those that have waited the timeout. Called whenever that may change."""
        now = now_s()
        while self.backlog and now - self.backlog[0] > self.timeout:
            self.backlog.popleft()
            self.dropped += 1
        while self.backlog:
            if self.idle:
                due = self.backlog.popleft()
                self.count_sent(due, now)
                self.send(self.idle.pop(), due)
            elif len(self.busy) + len(self.idle) + self.connecting < self.limit:
                due = self.backlog.popleft()
                self.count_sent(due, now)  # sent: its connection is being opened
                self.connecting += 1
                self.loop.create_task(self.connect(due))
            else:
                break
            now = now_s()
        self.check_done()

    async def connect(self, due: float) -> None:
        try:
            _, conn = await asyncio.wait_for(
                self.loop.create_connection(lambda: Connection(self), self.host, self.port),
                self.timeout,
            )
        except (OSError, TimeoutError):
            self.connecting -= 1
            self.errors["connect"] += 1
            self.pump()
            return
        self.connecting -= 1
        self.opened += 1
        if conn.transport is None or conn.transport.is_closing():  # lost before it was used
            self.errors["read"] += 1
            self.pump()
            return
        self.send(conn, due)

    def send(self, conn: Connection, due: float) -> None:
        self.busy.add(conn)
        self.peak_in_flight = max(self.peak_in_flight, len(self.busy))
        conn.send(due, now_s())

    def count_sent(self, due: float, now: float) -> None:
        lag = now - due
        if lag > self.tolerance:
            self.late += 1
        else:
            self.on_time += 1
        self.lag.record_value(max(1, min(MAX_US, round(lag * 1e6))))

    # -- answers -----------------------------------------------------------------------------
    def answered(self, conn: Connection, status: int) -> None:
        if conn not in self.busy:
            return
        now = now_s()
        self.busy.discard(conn)
        self.statuses[str(status)] += 1
        self.from_due.record_value(max(1, min(MAX_US, round((now - conn.due) * 1e6))))
        self.from_send.record_value(max(1, min(MAX_US, round((now - conn.sent) * 1e6))))
        conn.parser = httptools.HttpResponseParser(conn)
        if conn.keep_alive:
            self.idle.append(conn)
        elif conn.transport is not None:
            conn.transport.close()
        self.pump()

    def failed(self, conn: Connection, kind: str) -> None:
        if conn in self.busy:
            self.busy.discard(conn)
            self.errors[kind] += 1
        if conn.transport is not None:
            conn.transport.abort()
        self.pump()

    def lost(self, conn: Connection) -> None:
        if conn in self.busy:
            self.busy.discard(conn)
            self.errors["read"] += 1
        if conn in self.idle:
            self.idle.remove(conn)
        self.pump()

    async def sweep(self) -> None:
        while not self.done.is_set():
            await asyncio.sleep(SWEEP_S)
            now = now_s()
            for conn in [c for c in self.busy if now - c.sent > self.timeout]:
                self.failed(conn, "timeout")
            self.pump()  # drops, on time, what waited too long

    def check_done(self) -> None:
        if self.scheduled_all and not (self.busy or self.connecting or self.backlog):
            self.done.set()

    # -- the schedule ------------------------------------------------------------------------
    async def schedule(self) -> None:
        start = self.start = now_s() + 0.01
        period = 1 / self.rate
        i = 0
        while i < self.due_count:
            now = now_s()
            while i < self.due_count and start + i * period <= now:
                self.backlog.append(start + i * period)  # behind any still waiting
                i += 1
            self.pump()
            if i < self.due_count:
                # timers fire in whole milliseconds: a shorter sleep would spin
                await asyncio.sleep(max(0.001, start + i * period - now_s()))
        self.scheduled_all = True
        self.pump()

    async def main(self) -> dict[str, Any]:
        cpu0 = resource.getrusage(resource.RUSAGE_SELF)
        sweeper = self.loop.create_task(self.sweep())
        await self.schedule()
        await self.done.wait()
        sweeper.cancel()
        for conn in self.idle:
            if conn.transport is not None:
                conn.transport.close()
        cpu1 = resource.getrusage(resource.RUSAGE_SELF)
        return {
            "rate": self.rate,
            "due": self.due_count,
            "on_time": self.on_time,
            "late": self.late,
            "dropped": self.dropped,
            "tolerance_ms": self.tolerance * 1000,
            "statuses": dict(self.statuses),
            "errors": dict(self.errors),
            "bytes": self.bytes,
            "connections_opened": self.opened,
            "peak_in_flight": self.peak_in_flight,
            "elapsed_s": now_s() - self.start,  # from the first due moment to the last answer
            "cpu_s": (cpu1.ru_utime - cpu0.ru_utime) + (cpu1.ru_stime - cpu0.ru_stime),
            "histograms": {
                "from_due": self.from_due.encode().decode(),
                "from_send": self.from_send.encode().decode(),
                "lag": self.lag.encode().decode(),
            },
        }


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="openloop", description=__doc__.splitlines()[0])
    p.add_argument("url")
    p.add_argument("--rate", type=float, required=True, help="requests per second")
    p.add_argument("--duration", type=float, required=True, help="seconds")
    p.add_argument("--connections", type=int, default=1000, help="open at most, then queue")
    p.add_argument("--timeout", type=float, default=2.0, help="seconds, as wrk's default")
    # Timers wake in whole milliseconds, so a request sent up to TOLERANCE after it was due is
    # on time; its latency counts from the moment it was due all the same.
    p.add_argument("--tolerance", type=float, default=2.0, help="ms after due still on time")
    p.add_argument(
        "--requests", help="JSON file: {items: [{method, path, headers, body}], order: [index]}"
    )
    args = p.parse_args(argv)
    # A socket per connection: a soft limit of 1,024 descriptors would end the run early.
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft != resource.RLIM_INFINITY and soft < args.connections + 64:
        wanted = args.connections + 64
        resource.setrlimit(
            resource.RLIMIT_NOFILE,
            (wanted if hard == resource.RLIM_INFINITY else min(wanted, hard), hard),
        )

    async def go() -> dict[str, Any]:
        return await Run(args).main()

    # uvloop: a third less CPU per request than asyncio's own loop, and timers as punctual
    json.dump(uvloop.run(go()), sys.stdout)
    sys.stdout.write("\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
