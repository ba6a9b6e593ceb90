"""What a server was doing while it was measured: its occupancy over time (sampled from the
apps' side channel) and, at a freeze, where every one of its threads stood (a thread dump).

Both are evidence for a verdict, kept with the record of the measurement they explain.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass, fields, replace
from itertools import combinations, pairwise
from statistics import median
from typing import Any

SAMPLE_HZ = 10.0


@dataclass(frozen=True)
class Sample:
    """One answer of `GET /_occupancy`: one process at one moment (t_s after the load began).
    The counters `ok` and `errors` are cumulative from the process's start."""

    t_s: float
    pid: int
    tokens_in_use: int | None  # threadpool tokens borrowed (2021: busy executor threads)
    tokens_total: int | None
    waiting: int | None  # tasks waiting for a token (2021: work queued for a thread)
    checked_out: int | None  # pooled connections lent out
    capacity: int | None  # the most the pool lends
    in_flight: int
    ok: int
    errors: int
    pool_waiting: int | None = None  # threads blocked waiting for a connection (sync pools)
    # Of the requests in flight, those with no response started yet (None: an app from before
    # the count). A `yield` dependency's exit runs after the response started.
    awaiting: int | None = None
    # Tasks waiting for a connection (asyncio pools), and the event loop's largest lag since the
    # process's previous sample (None: an app from before these were reported).
    pool_tasks_waiting: int | None = None
    loop_lag_ms: float | None = None

    @property
    def blocked_on_pool(self) -> bool:
        """The deadlock's signature: every token held by a thread blocked on the pool, and
        every connection out (the C holders then wait for a token no one returns)."""
        return (
            bool(self.pool_waiting)
            and self.pool_waiting == self.tokens_total
            and self.checked_out == self.capacity
        )


SAMPLE_FIELDS = tuple(f.name for f in fields(Sample))


@dataclass(frozen=True)
class Second:
    """The whole server (all its processes) over one second of the load."""

    t_s: int  # the second's start
    ok: int  # successful responses that second
    errors: int
    tokens_in_use: int | None  # at the second's last sample, summed over processes
    waiting: int | None
    checked_out: int | None
    in_flight: int
    pool_waiting: int | None = None


@dataclass(frozen=True)
class Timeline:
    """The samples of one measurement from the warm-up's start (t_s = 0), and how many the
    side channel left unanswered."""

    hz: float
    samples: tuple[Sample, ...]
    unanswered: int = 0
    measured_from_s: float = 0.0  # where the measured run began (before it: the warm-up)
    # The server's worker processes, where the harness knows how many it started (None: a target).
    processes: int | None = None
    # Each process answered on a side channel of its own (every one sampled at every tick); else
    # all samples came through the server's port, from whichever process accepted the request.
    per_process: bool = False

    def to_json(self) -> dict[str, Any]:
        # One row per sample, the field names once: a 120 s cell keeps 1,200 samples.
        return {
            "hz": self.hz,
            "unanswered": self.unanswered,
            "measured_from_s": self.measured_from_s,
            "processes": self.processes,
            "per_process": self.per_process,
            "fields": list(SAMPLE_FIELDS),
            "rows": [[getattr(s, f) for f in SAMPLE_FIELDS] for s in self.samples],
        }

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Timeline:
        names = data["fields"]
        return cls(
            hz=float(data["hz"]),
            samples=tuple(Sample(**dict(zip(names, row, strict=True))) for row in data["rows"]),
            unanswered=int(data.get("unanswered", 0)),
            measured_from_s=float(data.get("measured_from_s", 0.0)),
            processes=data.get("processes"),
            per_process=bool(data.get("per_process", False)),
        )

    @property
    def measured(self) -> Timeline:
        """The samples of the measured run only."""
        kept = tuple(s for s in self.samples if s.t_s >= self.measured_from_s)
        return replace(self, samples=kept)

    def last(self, before_s: float | None = None) -> dict[int, Sample]:
        """Each process's last sample (taken before `before_s`, if given)."""
        out: dict[int, Sample] = {}
        for s in self.samples:
            if before_s is None or s.t_s < before_s:
                out[s.pid] = s
        return out

    def seconds(self) -> list[Second]:
        """Per second of the load: responses counted by the apps (the difference of each
        process's counters between its last samples of consecutive seconds) and the occupancy
        at the second's end, summed over processes (each at its own latest sample)."""
        if not self.samples:
            return []
        first: dict[int, Sample] = {}
        for s in self.samples:
            first.setdefault(s.pid, s)
        out = []
        previous: dict[int, Sample] = {}
        for second in range(int(max(s.t_s for s in self.samples)) + 1):
            now = {**previous, **self.last(before_s=second + 1)}
            if not now:
                continue
            base = {pid: previous.get(pid, first[pid]) for pid in now}
            out.append(
                Second(
                    t_s=second,
                    ok=sum(s.ok - base[pid].ok for pid, s in now.items()),
                    errors=sum(s.errors - base[pid].errors for pid, s in now.items()),
                    tokens_in_use=total(s.tokens_in_use for s in now.values()),
                    waiting=total(s.waiting for s in now.values()),
                    checked_out=total(s.checked_out for s in now.values()),
                    in_flight=sum(s.in_flight for s in now.values()),
                    pool_waiting=total(s.pool_waiting for s in now.values()),
                )
            )
            previous = now
        return out


@dataclass(frozen=True)
class InFlight:
    """Requests in one process: in flight (not finished) and, of those, awaiting a response."""

    in_flight: int
    awaiting: int | None

    def to_json(self) -> list[int | None]:
        return [self.in_flight, self.awaiting]

    def __str__(self) -> str:
        awaiting = "?" if self.awaiting is None else str(self.awaiting)
        return f"{self.in_flight} ({awaiting} awaiting a response)"


def _pids(data: dict[str, list[int | None]]) -> dict[int, InFlight]:
    return {int(pid): InFlight(int(v[0] or 0), v[1]) for pid, v in data.items()}


@dataclass(frozen=True)
class Window:
    """The edges of a measured window, from the side channel: what was still in each process
    when it opened (the harness waits for the warm-up's requests to finish first), the most in
    flight in each during it, and whether its throughput held steady across it."""

    waited_s: float | None  # how long the harness waited for the server to empty (None: no wait)
    at_start: dict[int, InFlight]  # each process at its last sample before the window opened
    peak: dict[int, InFlight]  # each process's most (in flight, awaiting) over the window
    # The answered requests per second's change across the window after its first half-second,
    # relative to their mean: the slope of a Theil-Sen line through half-second bins times that
    # span. None: a window under 2.5 s, or nothing answered.
    trend: float | None
    steady: bool | None  # |trend| within the rule's bound (harness/domain/rules.py)
    # Every process the server runs had a sample before the window opened (False: `at_start`
    # may leave one out, and the window cannot be called clean).
    seen_all: bool = True
    # The first half-second's answered rate against the rest's mean: wrk opening its
    # connections (and a cold server its pool) shows there, so the trend leaves it out.
    start_up: float | None = None

    @property
    def clean(self) -> bool | None:
        """No request from before the window was in the server when it opened; None: unknown."""
        if any(v.in_flight for v in self.at_start.values()):
            return False
        if not self.at_start or not self.seen_all:
            return None
        return True

    @property
    def most_in_flight(self) -> int:
        return max((v.in_flight for v in self.peak.values()), default=0)

    def to_json(self) -> dict[str, Any]:
        return {
            "waited_s": self.waited_s,
            "at_start": {str(p): v.to_json() for p, v in self.at_start.items()},
            "peak": {str(p): v.to_json() for p, v in self.peak.items()},
            "trend": self.trend,
            "steady": self.steady,
            "seen_all": self.seen_all,
            "start_up": self.start_up,
            "clean": self.clean,
        }

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Window:
        return cls(
            waited_s=data.get("waited_s"),
            at_start=_pids(data.get("at_start", {})),
            peak=_pids(data.get("peak", {})),
            trend=data.get("trend"),
            steady=data.get("steady"),
            seen_all=bool(data.get("seen_all", True)),
            start_up=data.get("start_up"),
        )


START_UP_S = 0.5  # the window's first part, when wrk connects: left out of the trend
MIN_TICKS = 10  # the fewest sampler ticks after it that a trend is computed from
TREND_Z = 1.96  # Mann-Kendall's z beyond which a trend is more than the ticks' noise (5%)


def window_of(timeline: Timeline, waited_s: float | None, steady_within: float) -> Window:
    """The measured window of `timeline`: its edges and its throughput's trend."""
    start = timeline.measured_from_s
    at_start = {
        pid: InFlight(s.in_flight, s.awaiting) for pid, s in timeline.last(before_s=start).items()
    }
    peak: dict[int, InFlight] = {}
    for s in timeline.measured.samples:
        was = peak.get(s.pid, InFlight(0, None if s.awaiting is None else 0))
        awaiting = None if s.awaiting is None else max(s.awaiting, was.awaiting or 0)
        peak[s.pid] = InFlight(max(s.in_flight, was.in_flight), awaiting)
    trend, significant, start_up = _trend(timeline)
    steady = None if trend is None else abs(trend) <= steady_within or not significant
    # Through the server's port, each sample came from whichever process accepted it
    # (a server known to run one process is seen whole that way; a target, never).
    seen_all = len(at_start) >= (timeline.processes or 1) and (
        timeline.per_process or timeline.processes == 1
    )
    peaks = dict(sorted(peak.items()))
    return Window(waited_s, at_start, peaks, trend, steady, seen_all, start_up)


def _trend(timeline: Timeline) -> tuple[float | None, bool, float | None]:
    """(trend, whether it is significant, start-up) of the measured window (see Window): the
    answered rate between consecutive sampler ticks after START_UP_S, its Theil-Sen slope (the
    median of the slopes between every two ticks: an odd tick moves it little) times that span
    over the mean, and Mann-Kendall's test of whether the ticks rise or fall at all."""
    start = timeline.measured_from_s
    # Each process counts from its last sample before the window (or its first in it), so one
    # first sampled in the window adds no burst of everything it answered before.
    base = {pid: s.ok + s.errors for pid, s in timeline.last(before_s=start).items()}
    for s in timeline.samples:
        base.setdefault(s.pid, s.ok + s.errors)
    ticks = sorted({s.t_s for s in timeline.samples if s.t_s >= start + START_UP_S})
    if len(ticks) < 2:
        return None, False, None
    answered = [_answered(timeline, t, base) for t in ticks]
    first = (answered[0] - _answered(timeline, start, base)) / (ticks[0] - start)
    rates = [
        (b - a) / (tb - ta) for (ta, a), (tb, b) in pairwise(zip(ticks, answered, strict=True))
    ]
    times = ticks[1:]
    mean = sum(rates) / len(rates)
    if mean <= 0:
        return None, False, None
    start_up = round(first / mean, 3)
    if len(rates) < MIN_TICKS:
        return None, False, start_up
    pairs = list(combinations(range(len(rates)), 2))
    slope = median((rates[j] - rates[i]) / (times[j] - times[i]) for i, j in pairs)
    trend = round(slope * (times[-1] - times[0]) / mean, 3)
    n = len(rates)
    signs = sum((rates[j] > rates[i]) - (rates[j] < rates[i]) for i, j in pairs)
    z = (signs - (signs > 0) + (signs < 0)) / (n * (n - 1) * (2 * n + 5) / 18) ** 0.5
    return trend, abs(z) > TREND_Z, start_up


def _answered(timeline: Timeline, at_s: float, base: dict[int, int]) -> int:
    """Responses the processes started between their `base` and `at_s` (each at its latest
    sample until then)."""
    latest = timeline.last(before_s=at_s + 1e-9).values()
    return sum(s.ok + s.errors - base[s.pid] for s in latest)


def total(values: Iterable[int | None]) -> int | None:
    """The sum over processes; None where any of them did not say."""
    given = list(values)
    known = [v for v in given if v is not None]
    return sum(known) if len(known) == len(given) else None


@dataclass(frozen=True)
class Stall:
    """A process that completed no successful response for a while with requests in flight in
    it: to its users, a dead server. Times are from the measured run's start."""

    pid: int
    start_s: float  # 0.0 and `from_warmup`: it was already stalled when the run began
    end_s: float
    in_flight: int  # the most requests in flight in it meanwhile
    # At its last sample in the window, every token was held by a thread blocked on the pool
    # with every connection out (harness/domain/rules.py's mechanism); None: the app does not
    # report threads waiting on its pool (async pools, the 2021 stack's executor).
    pool_wait: bool | None
    from_warmup: bool = False
    to_end: bool = False  # still stalled at the window's end

    def describe(self) -> str:
        start = f"from {self.start_s:.1f} s"
        if self.from_warmup:
            start = "from the start (stalled in the warm-up)"
        end = "to the end" if self.to_end else f"to {self.end_s:.1f} s"
        cause = {
            True: ", every thread waiting for a pooled connection",
            False: ", not (only) waiting for a pooled connection",
            None: "",
        }[self.pool_wait]
        return f"PID {self.pid} {start} {end}, {self.in_flight} requests in flight{cause}"


@dataclass(frozen=True)
class Health:
    """What the side channel shows of every process over the measured window."""

    window_s: float
    sampled: tuple[int, ...]  # PIDs with samples in the window
    expected: int | None  # processes the server runs (None: unknown, a target)
    stalls: tuple[Stall, ...]  # the longest stall of each process that stalled
    unsampled: dict[int, float]  # PID -> its longest time without a sample, where too long

    @property
    def missing(self) -> int:
        """Processes the server runs that answered no sample in the window."""
        return max((self.expected or 0) - len(self.sampled), 0)

    @property
    def processes(self) -> int:
        return max(self.expected or 0, len(self.sampled))


def health(timeline: Timeline, stall_s: float, unsampled_s: float, expected: int | None) -> Health:
    """Each process's stalls and sampling gaps over the measured window, which runs from the
    measured run's start to the last sample (the sampler stops when the run ends).

    A stall is a span of a process's samples, each with requests in flight, over which its
    count of successful responses did not move, lasting `stall_s` or more inside the window
    (a stall that began in the warm-up counts from the window's start).
    """
    start = timeline.measured_from_s
    end = max((s.t_s for s in timeline.samples), default=start)
    by_pid: dict[int, list[Sample]] = {}
    for s in sorted(timeline.samples, key=lambda s: s.t_s):
        by_pid.setdefault(s.pid, []).append(s)
    sampled = tuple(pid for pid, ss in by_pid.items() if any(s.t_s >= start for s in ss))
    stalls, unsampled = [], {}
    for pid in sampled:
        series = by_pid[pid]
        if (found := _longest_stall(series, start, end, stall_s)) is not None:
            stalls.append(found)
        times = [s.t_s for s in series if s.t_s < start][-1:] or [start]
        times += [s.t_s for s in series if s.t_s >= start] + [end]
        gap = max(b - a for a, b in pairwise(times))
        if gap > unsampled_s:
            unsampled[pid] = round(gap, 2)
    return Health(round(end - start, 2), sampled, expected, tuple(stalls), unsampled)


def _longest_stall(series: list[Sample], start: float, end: float, stall_s: float) -> Stall | None:
    spans: list[list[Sample]] = []
    run: list[Sample] = []
    for s in series:
        if s.in_flight > 0 and run and s.ok == run[0].ok:
            run.append(s)
            continue
        if len(run) > 1:
            spans.append(run)
        run = [s] if s.in_flight > 0 else []
    if len(run) > 1:
        spans.append(run)
    best: Stall | None = None
    for span in spans:
        first, last = max(span[0].t_s, start), min(span[-1].t_s, end)
        if last - first < stall_s:
            continue
        inside = [s for s in span if start <= s.t_s <= end] or span[-1:]
        known = [s for s in inside if s.pool_waiting is not None]
        stall = Stall(
            pid=span[0].pid,
            start_s=round(first - start, 2),
            end_s=round(last - start, 2),
            in_flight=max(s.in_flight for s in inside),
            pool_wait=known[-1].blocked_on_pool if known else None,
            from_warmup=span[0].t_s < start,
            to_end=span[-1].t_s >= end,
        )
        if best is None or stall.end_s - stall.start_s > best.end_s - best.start_s:
            best = stall
    return best


# Frames where a thread waits for a pooled database connection, by pool.
POOL_WAITS = {
    "QueuePool._do_get": "SQLAlchemy QueuePool",
    "ConnectionPool.getconn": "psycopg_pool",
    "BlockingPool.getconn": "a blocking psycopg2 pool",
}
# The loop of a threadpool's worker thread: AnyIO's, and concurrent.futures' (the 2021 stack).
WORKER_LOOPS = ("WorkerThread.run", "_worker")
# What an idle worker is blocked in: waiting for its next job.
IDLE = ("Queue.get", "SimpleQueue.get", "Condition.wait", "wait", "get")


@dataclass(frozen=True)
class ThreadDump:
    """Where a server's threads stood at one moment, summarised from `py-spy dump`."""

    processes: int = 0
    threads: int = 0
    threadpool: int = 0  # worker threads of the threadpool (busy or idle)
    waiting_for_connection: int = 0  # threads inside a pool's wait for a connection
    idle: int = 0  # threadpool threads waiting for work
    where: dict[str, int] | None = None  # busy threadpool threads by "app frame > frame"
    file: str = ""  # the raw dump, relative to the run directory
    error: str = ""  # why there is no dump (could not attach, timed out...)

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> ThreadDump:
        return cls(**data)

    @property
    def headline(self) -> str:
        if self.error:
            return f"no thread dump: {self.error}"
        busy = ", ".join(f"{n} in {w}" for w, n in (self.where or {}).items())
        return (
            f"{self.waiting_for_connection} of {self.threadpool} threadpool threads waiting for "
            f"a pooled connection, {self.idle} idle ({self.processes} process"
            f"{'es' if self.processes != 1 else ''}, {self.threads} threads)"
            + (f"; busy: {busy}" if busy else "")
        )


def _names(thread: dict[str, Any]) -> list[str]:
    return [str(f.get("name", "")) for f in thread.get("frames", [])]


def _app_frame(thread: dict[str, Any]) -> str | None:
    """The innermost frame of the project's own app code (app/...)."""
    for frame in thread.get("frames", []):
        where = str(frame.get("short_filename") or frame.get("filename") or "")
        if where.startswith("app/") or "/app/" in where:
            return str(frame.get("name"))
    return None


def summarize(threads: Sequence[dict[str, Any]], file: str = "") -> ThreadDump:
    """Count a dump's threads (py-spy's JSON: frames innermost first) by what they wait for."""
    processes = {t.get("pid") for t in threads}
    pool = idle = waiting = 0
    where: Counter[str] = Counter()
    for thread in threads:
        names = _names(thread)
        if not any(n in WORKER_LOOPS for n in names):
            if any(n in POOL_WAITS for n in names):
                waiting += 1  # a thread of its own (not the threadpool's) waiting on the pool
            continue
        pool += 1
        inner = names[: next(i for i, n in enumerate(names) if n in WORKER_LOOPS)]
        if all(n.split(".")[-1] in {i.split(".")[-1] for i in IDLE} for n in inner):
            idle += 1
            continue
        wait = next((n for n in inner if n in POOL_WAITS), None)
        waiting += wait is not None
        app = _app_frame(thread)
        frame = wait or (inner[0] if inner else "?")
        where[f"{app} > {frame}" if app else frame] += 1
    return ThreadDump(
        processes=len(processes),
        threads=len(threads),
        threadpool=pool,
        waiting_for_connection=waiting,
        idle=idle,
        where=dict(where.most_common()),
        file=file,
    )
