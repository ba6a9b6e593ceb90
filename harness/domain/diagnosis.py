"""Why a service stalls, named from where its threads wait across a few thread dumps (py-spy's
JSON, frames innermost first), with the evidence and the fix.

It keys on what every Python service shares, never on an app's own names: the threadpool's
worker loop, a pool's checkout, the event loop's runner. Causes:

- `pool deadlock`: every busy threadpool thread waits in a pool's checkout, dump after dump, so
  none runs a query: the connections are held by requests waiting for a token, the threadpool x
  connection-pool deadlock (FastAPI issue 3205).
- `blocked loop`: the event loop's thread waits in one library or module outside the servers'
  and frameworks' own code (a driver, the app) without holding the GIL, in at least a third of
  the dumps (and two): blocking I/O (a sync driver, `time.sleep`) called from an `async def`
  endpoint, so every request of that process waits for it. A blocking call shows in
  proportion to the time it takes; a loop thread only waiting for the GIL waits inside the
  frameworks' code (routing, serialization), which is not counted.
- `threadpool saturated` (only where the service stalled): every threadpool thread busy, none in
  a pool's checkout, in a majority of the dumps: slow calls hold every token.
- `unknown` (only where the service stalled): none of these; the places threads wait are shown.
- `healthy`: no cause, and no stall.
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
# What a thread waiting in a pool's checkout is blocked in, below it (the last part of each name):
# SQLAlchemy's Queue.get and its Condition.wait, psycopg_pool's WaitingClient.wait, a lock.
WAIT_CALLS = frozenset(("wait", "get", "acquire", "_wait"))
# A cause is named when the dumps that show it are at least this share of all of them.
MAJORITY = 0.5
# A blocked loop: at least this share of the dumps, and at least BLOCKED_LEAST of them.
BLOCKED_SHARE, BLOCKED_LEAST = 1 / 3, 2
# Where a loop thread's own work runs (the top package of py-spy's short file name): servers,
# frameworks, the standard library's loop. A GIL wait lands in these; a blocking call does not.
LOOP_LIBRARIES = frozenset(
    (
        *("asyncio", "selectors", "uvloop", "concurrent", "threading", "queue", "_weakrefset"),
        *("weakref", "contextlib", "functools", "inspect", "enum", "logging", "typing", "abc"),
        *("collections", "dataclasses", "copy", "re", "json"),
        *("uvicorn", "hypercorn", "granian", "gunicorn", "uvicorn_worker", "h11", "h2"),
        *("httptools", "wsproto", "starlette", "fastapi", "anyio", "sniffio"),
        *("pydantic", "pydantic_core"),
    )
)
# ASGI servers: a process's main thread with their frames (and no threadpool's) runs the loop,
# also where uvloop runs it from C with no runner frame of Python's (uvicorn 0.13, granian).
SERVER_PACKAGES = frozenset(("uvicorn", "hypercorn", "granian", "uvicorn_worker"))


class Cause(StrEnum):
    pool_deadlock = "pool deadlock"
    blocked_loop = "blocked loop"
    threadpool_saturated = "threadpool saturated"
    unknown = "unknown"
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


def _package(frame: dict[str, Any]) -> str:
    short = str(frame.get("short_filename") or "")
    return short.split("/", 1)[0].removesuffix(".py")


def waits(dump: Sequence[dict[str, Any]]) -> Counter[str]:
    """The threads of one dump counted by where each stands: its innermost frame."""
    return Counter(_where(t["frames"][0]) if t.get("frames") else "(no Python frame)" for t in dump)


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
        at = next((i for i, n in enumerate(inner) if n in POOL_WAITS), None)
        # Waiting for a connection: blocked in a wait below the checkout. A thread inside the
        # checkout that opens a new connection (an overflow one) is working, not waiting.
        if at is not None and all(n.split(".")[-1] in WAIT_CALLS for n in inner[:at]):
            waits[inner[at]] += 1
        elif all(n.split(".")[-1] in {i.split(".")[-1] for i in IDLE} for n in inner):
            idle += 1
    return pool, idle, waits


def _is_loop_thread(thread: dict[str, Any]) -> bool:
    names = _names(thread)
    if any(n in LOOP_RUNNERS for n in names):
        return True
    if any(n in WORKER_LOOPS for n in names) or thread.get("thread_name") != "MainThread":
        return False
    return any(_package(f) in SERVER_PACKAGES for f in thread.get("frames", []))


def loop_blocked_in(dump: Sequence[dict[str, Any]]) -> dict[str, Any] | None:
    """The innermost frame of an event loop's thread that is outside the loop's own work and
    not running (a blocking call), if one is."""
    for thread in dump:
        names = _names(thread)
        if not names or not _is_loop_thread(thread):
            continue
        if names[0] in LOOP_WAITS or thread.get("owns_gil"):
            continue  # waiting for events, or running Python code (CPU, not a blocking call)
        if _package(thread["frames"][0]) in LOOP_LIBRARIES:
            continue  # the loop's own work, waiting for the GIL
        return dict(thread["frames"][0])
    return None


def _saturated(dump: Sequence[dict[str, Any]]) -> bool:
    pool, idle, found = pool_waits(dump)
    return pool > 0 and idle == 0 and not found


def diagnose(dumps: Sequence[Sequence[dict[str, Any]]], stalled: bool = False) -> Diagnosis:
    """The cause the dumps of one process show (`stalled`: whether the service stopped
    answering while they were taken)."""
    if not dumps:
        if stalled:
            return Diagnosis(Cause.unknown, "no thread dump could be read")
        return Diagnosis(Cause.healthy, "no dump to read")
    deadlocked, in_pool, sizes = 0, Counter[str](), []
    for dump in dumps:
        if shows(Cause.pool_deadlock, dump):
            _, _, found = pool_waits(dump)
            deadlocked += 1
            in_pool += found
            sizes.append(sum(found.values()))
    if deadlocked / len(dumps) >= MAJORITY:
        frame, _ = in_pool.most_common(1)[0]
        n = max(sizes)
        return Diagnosis(
            Cause.pool_deadlock,
            f"{n} threadpool threads wait for a connection in {frame} "
            f"({POOL_WAITS[frame]}) in {deadlocked} of {len(dumps)} dumps",
            "open the session inside the endpoint (`with Session() as s:`), not in a `yield` "
            "dependency, so that a request holds its connection only while it runs; or keep the "
            "process's concurrent requests under threadpool tokens + pool capacity",
        )
    blocked = [b for dump in dumps if (b := loop_blocked_in(dump)) is not None]
    # In one library or module, dump after dump: a GIL wait lands anywhere, a blocking call
    # where it is made (a driver's execute, commit or connect; the app's `time.sleep`).
    by_package = Counter(_package(b) for b in blocked)
    package, in_package = by_package.most_common(1)[0] if blocked else ("", 0)
    if in_package >= max(BLOCKED_LEAST, BLOCKED_SHARE * len(dumps)):
        places = Counter(_where(b) for b in blocked if _package(b) == package)
        where, count = places.most_common(1)[0]
        also = f" (and elsewhere in {package} in {in_package - count})" if len(places) > 1 else ""
        return Diagnosis(
            Cause.blocked_loop,
            f"the event loop's thread waits inside {where} in {count} of {len(dumps)} dumps"
            f"{also}, not in the loop",
            "a blocking call runs in an `async def` endpoint: make the endpoint `def` (FastAPI "
            "runs it in the threadpool), or use an async driver, or `await "
            "anyio.to_thread.run_sync(...)` for the blocking part",
        )
    if not stalled:
        return Diagnosis(
            Cause.healthy, f"no pool wait and no blocked loop in a majority of {len(dumps)} dumps"
        )
    saturated = sum(_saturated(dump) for dump in dumps)
    if saturated / len(dumps) >= MAJORITY:
        pool, _, _ = pool_waits(dumps[-1])
        busy = sum((waits([t for t in d if _in_threadpool(t)]) for d in dumps), Counter[str]())
        top = ", ".join(f"{n}x {w}" for w, n in busy.most_common(3))
        return Diagnosis(
            Cause.threadpool_saturated,
            f"all {pool} threadpool threads busy, none waiting for a connection, in {saturated} "
            f"of {len(dumps)} dumps; where they stand: {top}",
            "the threadpool's threads are all held by slow calls: make those calls async, give "
            "them a timeout, or raise the threadpool's size (AnyIO's default limiter)",
        )
    everywhere = sum((waits(d) for d in dumps), Counter[str]())
    top = ", ".join(f"{n}x {w}" for w, n in everywhere.most_common(4))
    return Diagnosis(
        Cause.unknown,
        f"no pool wait, no blocked loop, no saturated threadpool in {len(dumps)} dumps; where "
        f"threads stand: {top}",
    )


def _in_threadpool(thread: dict[str, Any]) -> bool:
    return any(n in WORKER_LOOPS for n in _names(thread))


def shows(cause: Cause, dump: Sequence[dict[str, Any]]) -> bool:
    """Whether one dump shows `cause` (for when it was first seen)."""
    if cause is Cause.pool_deadlock:
        # Every busy threadpool thread waits for a connection: none runs a query, so the
        # connections are held by requests outside the threadpool, waiting for a token. (Idle
        # threads may linger: AnyIO keeps a worker a while after its last job.)
        pool, idle, found = pool_waits(dump)
        waiting = sum(found.values())
        return waiting >= 2 and waiting == pool - idle
    if cause is Cause.blocked_loop:
        return loop_blocked_in(dump) is not None
    if cause is Cause.threadpool_saturated:
        return _saturated(dump)
    return False


def stacks(dump: Sequence[dict[str, Any]], depth: int = 10) -> list[tuple[int, list[str]]]:
    """The threads of one dump grouped by their innermost `depth` frames, commonest first."""
    grouped = Counter(tuple(_where(f) for f in t.get("frames", [])[:depth]) for t in dump)
    return [(n, list(frames)) for frames, n in grouped.most_common()]


# --- a ramp, second by second ------------------------------------------------------------------


class LevelVerdict(StrEnum):
    held = "held"  # answers every second, no cause in any process's dumps
    impaired = "impaired"  # answers every second, but a process's dumps name a cause
    failing = "failing"  # a whole second whose answers were all errors (status 400 or more)
    stalled = "stalled"  # a whole second without an answer, from a service that had a pace


# An empty second is a stall only once the service has answered this many in one second: below
# it, an empty second may be its pace (one slow request at a time), not a stall.
PACE = 5


@dataclass(frozen=True)
class ProcessLevel:
    """One process of the service during one level."""

    pid: int
    dumps: int  # read
    dump_errors: tuple[str, ...]
    clients: int | None  # the most client connections it held at one sample
    out: dict[str, int]  # the most connections it held out, by remote address
    cpu_percent: float | None  # of one CPU, over the level
    threads: int  # in the dump that shows the cause (else its last)
    threadpool: int  # threadpool threads in that dump
    busy: int  # of them, not idle
    in_pool: dict[str, int]  # of them, waiting in a pool's checkout, by the pool's frame
    waits: dict[str, int]  # its threads by where they stand, in that dump
    cause: Cause
    evidence: str
    fix: str
    first_seen_s: float | None  # into the level, the first dump that showed the cause
    stacks: tuple[tuple[int, tuple[str, ...]], ...]  # grouped, from that dump
    file: str  # its dumps, beside the report

    def busiest_out(self) -> tuple[str, int] | None:
        return max(self.out.items(), key=lambda kv: kv[1]) if self.out else None


@dataclass(frozen=True)
class Level:
    connections: int
    ok: tuple[int, ...]  # successful answers in each whole second of the level
    other: tuple[int, ...]  # answers of status 400 or more, each second
    first_second_s: float  # where the first whole second starts, into the level
    ok_rps: float
    p50_ms: float
    p99_ms: float
    timeouts: int
    socket_errors: int
    status_errors: int  # answers of status 400 or more, over the whole level (wrk's count)
    processes: tuple[ProcessLevel, ...]
    paced_before: int = 0  # the most answers in one second earlier in the round

    def _from(self, second: int | None) -> float | None:
        return None if second is None else round(self.first_second_s + second, 2)

    @property
    def stalled_from_s(self) -> float | None:
        """The first whole second with no answer at all, once the service had a pace."""
        pace = self.paced_before
        for i, (ok, other) in enumerate(zip(self.ok, self.other, strict=True)):
            if ok + other == 0 and pace >= PACE:
                return self._from(i)
            pace = max(pace, ok + other)
        return None

    @property
    def failing_from_s(self) -> float | None:
        """The first whole second whose answers were all errors."""
        pairs = zip(self.ok, self.other, strict=True)
        return self._from(
            next((i for i, (ok, other) in enumerate(pairs) if other and not ok), None)
        )

    @property
    def verdict(self) -> LevelVerdict:
        if self.stalled_from_s is not None:
            return LevelVerdict.stalled
        if self.failing_from_s is not None:
            return LevelVerdict.failing
        if any(p.cause is not Cause.healthy for p in self.processes):
            return LevelVerdict.impaired
        return LevelVerdict.held

    def named(self) -> ProcessLevel | None:
        """The process whose dumps name a cause, if one does: a known cause before `unknown`,
        then the first seen."""

        def order(p: ProcessLevel) -> tuple[bool, float]:
            seen = p.first_seen_s if p.first_seen_s is not None else float("inf")
            return (p.cause is Cause.unknown, seen)

        found = [p for p in self.processes if p.cause is not Cause.healthy]
        return min(found, key=order) if found else None


@dataclass(frozen=True)
class Round:
    number: int
    levels: tuple[Level, ...]
    skipped: str = ""  # why it was not run (the service never recovered)
    waited_s: float = 0.0  # before it, for every process to be free of the last round's stall


def headline(process: ProcessLevel, level: Level) -> str:
    """The cause in one sentence, with where and when it was seen."""
    seen = f"{process.first_seen_s:g} s" if process.first_seen_s is not None else "the level"
    where = f"process {process.pid}, from {seen} at {plural(level.connections, 'connection')}"
    if process.cause is Cause.pool_deadlock:
        frame, waiting = max(process.in_pool.items(), key=lambda kv: kv[1], default=("?", 0))
        busiest = process.busiest_out()
        held = f" for {busiest[1]} connections (to {busiest[0]})" if busiest else ""
        return (
            f"{waiting} of {process.busy} busy threadpool threads wait{held} in `{frame}`, "
            f"none running a query ({where})"
        )
    return f"{process.evidence[:1].upper()}{process.evidence[1:]} ({where})"


def fix_for(process: ProcessLevel) -> str:
    if process.cause is Cause.pool_deadlock:
        busiest = process.busiest_out()
        if busiest and process.busy:
            t, c = process.busy, busiest[1]
            # It takes T + C requests at once: T threads waiting on C connections whose
            # requests wait for a thread.
            return (
                f"{process.fix.split('; or keep')[0]}; or keep this process under T + C = {t} + "
                f"{c} = {t + c} requests at once (at most {t + c - 1}), with the server's "
                "concurrency limit"
            )
    return process.fix


@dataclass(frozen=True)
class Conclusion:
    cause: Cause
    sentence: str
    fix: str
    rounds: tuple[str, ...]  # what each round saw, in one line each


def plural(n: int, word: str) -> str:
    return f"{n} {word}{'' if n == 1 else 's'}"


def first_cause(r: Round) -> tuple[Level, ProcessLevel] | None:
    """The first level of a round whose dumps name a cause, and the process that shows it;
    a known cause before `unknown` (which only a stall without one gives)."""
    named = [(lv, p) for lv in r.levels if (p := lv.named()) is not None]
    known = [(lv, p) for lv, p in named if p.cause is not Cause.unknown]
    return (known or named)[0] if named else None


STOPS = (LevelVerdict.stalled, LevelVerdict.failing)  # a round ends at such a level


def stall(r: Round) -> Level | None:
    """The level where the round stopped: stalled, or answering only errors."""
    return next((lv for lv in r.levels if lv.verdict in STOPS), None)


def _what(level: Level) -> str:
    """'stalled from 1.6 s at 80 connections', or 'only errors from ...'."""
    at = plural(level.connections, "connection")
    if level.verdict is LevelVerdict.stalled:
        return f"stalled from {level.stalled_from_s:g} s at {at}"
    return f"answered only errors (status 400 or more) from {level.failing_from_s:g} s at {at}"


def _round_line(r: Round) -> str:
    if r.skipped:
        return f"round {r.number}: not run: {r.skipped}"
    if not r.levels:
        return f"round {r.number}: no level measured"
    found, stalled = first_cause(r), stall(r)
    parts = [f"after {r.waited_s:g} s for every process to recover"] if r.waited_s >= 1 else []
    if found is not None and found[1].cause is not Cause.unknown:
        lv, p = found
        parts.append(f"{p.cause} in process {p.pid} from {plural(lv.connections, 'connection')}")
    if stalled is not None:
        parts.append(_what(stalled))
        if found is None or found[1].cause is Cause.unknown:
            parts.append("no known cause in the dumps")
    else:
        last = r.levels[-1].connections
        parts.append(f"answers every second up to {plural(last, 'connection')}")
    return f"round {r.number}: " + "; ".join(parts)


def conclude(rounds: Sequence[Round]) -> Conclusion:
    """The cause of the whole diagnosis: the commonest the rounds named (the first round that
    named it gives the evidence), a known cause before `unknown`; else healthy up to the most
    connections measured."""
    lines = tuple(_round_line(r) for r in rounds)
    named = [(r, *found) for r in rounds if (found := first_cause(r)) is not None]
    known = [x for x in named if x[2].cause is not Cause.unknown] or named
    if known:
        commonest, _ = Counter(p.cause for _, _, p in known).most_common(1)[0]
        r, level, p = next(x for x in known if x[2].cause is commonest)
        if commonest is Cause.unknown:
            return Conclusion(
                Cause.unknown,
                f"The service {_what(level)} (round {r.number}), and its threads show no cause "
                f"this tool knows: {p.evidence}",
                "",
                lines,
            )
        return Conclusion(commonest, headline(p, level), fix_for(p), lines)
    stalled = [(r, lv) for r in rounds if (lv := stall(r)) is not None]
    if stalled:
        r, level = stalled[0]
        return Conclusion(
            Cause.unknown,
            f"The service {_what(level)} (round {r.number}), and no process's dumps show a cause",
            "",
            lines,
        )
    levels = [level for r in rounds for level in r.levels]
    if not levels:
        return Conclusion(Cause.unknown, "No level was measured", "", lines)
    best = max(levels, key=lambda lv: lv.ok_rps)
    top = max(lv.connections for lv in levels)
    return Conclusion(
        Cause.healthy,
        f"Healthy up to {plural(top, 'connection')}: every second of every level had answers "
        "and no process's dumps showed a pool wait or a blocked loop (at most "
        f"{best.ok_rps:,.0f} req/s, at {plural(best.connections, 'connection')})",
        "",
        lines,
    )
