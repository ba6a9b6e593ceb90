"""What one cell's measurement produced: wrk's figures, CPU, integrity, the verdict."""

from __future__ import annotations

import statistics
from collections.abc import Sequence
from dataclasses import asdict, dataclass, fields
from typing import Any

from harness.domain.axes import Verdict
from harness.domain.cell import Cell
from harness.domain.latency import Histograms
from harness.domain.occupancy import ThreadDump, Timeline, Window

# Version of a record's and a run's JSON. 1: a cell's settings flat, targets with settings None,
# map lines stored as cells, metadata overwritten by a resume. 2: a cell names its server
# (`server` settings or a `target` URL), metadata keeps one provenance entry per invocation.
# 3: a record says which rule judged it (`judged_by`) and why (`judgement`); verdicts of records
# with samples come from every process's samples (partly-collapsed, unknown).
# 4: a cell names its onset (fresh, cold or warm); a record keeps its measured window's edges
# (`window`) and a warm probe its ramp (`ramp`).
# 5: wrk's figures keep both latency distributions (`wrk.histograms`); a record keeps the
# command that measures its cell again (`replay`).
# 6: a cell may be an open loop (`rate`), and its load's figures then keep its schedule
# (`wrk.schedule`: requests due, sent on time, sent late, dropped).
# harness/store/migrate.py reads 1 to 5 (re-judging the samples of 1 and 2); any other is refused.
FORMAT = 6


@dataclass(frozen=True)
class Schedule:
    """How an open loop kept its schedule: every request due was sent on time (within
    `tolerance_ms` of its due moment), sent late, or dropped (it waited for a free connection
    as long as the request timeout, or the run ended first)."""

    rate: float
    due: int
    on_time: int
    late: int
    dropped: int
    tolerance_ms: float
    lag_p50_ms: float  # how long after its due moment a request went out
    lag_p99_ms: float
    lag_max_ms: float
    connections_opened: int
    peak_in_flight: int

    @property
    def sent(self) -> int:
        return self.on_time + self.late

    def text(self) -> str:
        late = f"{self.late:,} late (p99 {self.lag_p99_ms:g} ms, max {self.lag_max_ms:g} ms)"
        return f"{self.on_time:,} on time, {late}, {self.dropped:,} dropped of {self.due:,} due"


@dataclass(frozen=True)
class WrkResult:
    """wrk's figures for one run; latencies in milliseconds."""

    requests: int
    duration_s: float
    bytes: int
    p50_ms: float
    p90_ms: float
    p99_ms: float
    p999_ms: float
    max_ms: float
    mean_ms: float
    connect_errors: int
    read_errors: int
    write_errors: int
    timeouts: int
    status_errors: int  # responses with HTTP status >= 400 (wrk's "Non-2xx or 3xx")
    # Both latency distributions (the percentiles above are wrk's, from the corrected one);
    # None in records of format 4 and older, or where wrk exported no histogram.
    histograms: Histograms | None = None
    # For an open loop the figures are loadgen/openloop.py's: percentiles from the moment each
    # request was due (`histograms.corrected`; `measured`: from the moment it was sent), and
    # how it kept its schedule. None for wrk.
    schedule: Schedule | None = None

    def to_json(self) -> dict[str, Any]:
        data = {f.name: getattr(self, f.name) for f in fields(self)}
        data["histograms"] = asdict(self.histograms) if self.histograms else None
        data["schedule"] = asdict(self.schedule) if self.schedule else None
        return data

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> WrkResult:
        found, kept = data.get("histograms"), data.get("schedule")
        return cls(
            **{
                **data,
                "histograms": Histograms(**found) if found else None,
                "schedule": Schedule(**kept) if kept else None,
            }
        )

    @property
    def ok_requests(self) -> int:
        return max(self.requests - self.status_errors, 0)

    @property
    def ok_rps(self) -> float:
        return self.ok_requests / self.duration_s if self.duration_s > 0 else 0.0

    @property
    def rps(self) -> float:
        return self.requests / self.duration_s if self.duration_s > 0 else 0.0

    @property
    def failed(self) -> int:
        """Requests that did not get a successful response: HTTP errors and socket errors.

        wrk counts a response with status >= 400 that also closed the socket twice (as a status
        error and a read error); read errors beyond the status errors are counted once here.
        The open loop counts each request once: its read errors are all failures.
        """
        socket = self.connect_errors + self.write_errors + self.timeouts
        if self.schedule is not None:
            return self.status_errors + socket + self.read_errors
        return self.status_errors + socket + max(self.read_errors - self.status_errors, 0)


@dataclass(frozen=True)
class Cpu:
    """CPU seconds each party used during the measured window (None: could not be measured)."""

    server_s: float | None
    postgres_s: float | None
    wrk_s: float | None
    relay_s: float | None = None  # the latency relay's, where the cell had one


@dataclass(frozen=True)
class Integrity:
    """For insert cells: acknowledged inserts against rows really added."""

    acknowledged: int  # 2xx responses wrk counted (warm-up and measured run)
    rows_added: int
    unacknowledged_bound: int  # requests whose response may have been lost

    @property
    def missing(self) -> int:
        return max(self.acknowledged - self.rows_added, 0)

    @property
    def surplus(self) -> int:
        return max(self.rows_added - self.acknowledged, 0)

    @property
    def ok(self) -> bool:
        return self.missing == 0 and self.surplus <= self.unacknowledged_bound


@dataclass(frozen=True)
class Ramp:
    """The ramp a warm probe was part of: one server, the load raised level by level, each
    level measured for the cell's duration once the server had emptied after the last."""

    ladder: tuple[int, ...]  # the connection levels it was to climb, in order
    # The step between levels through the first ramp's bracket (below and above it, the load
    # doubles); 0: a ladder that doubles all the way.
    step: int
    pause_s: float  # the least time between two levels (then until no request is in flight)

    def to_json(self) -> dict[str, Any]:
        return {"ladder": list(self.ladder), "step": self.step, "pause_s": self.pause_s}

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Ramp:
        return cls(tuple(data["ladder"]), int(data["step"]), float(data["pause_s"]))


@dataclass(frozen=True)
class Replay:
    """What measures the record's cell again: a `make bench` of that one cell (append OUT=...),
    run with these environment variables (a DATABASE_URL without its password)."""

    command: str
    environment: dict[str, str]

    def to_json(self) -> dict[str, Any]:
        return {"command": self.command, "environment": dict(self.environment)}

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Replay:
        return cls(str(data["command"]), dict(data["environment"]))


def generator_cost(records: Sequence[CellResult]) -> tuple[float, int] | None:
    """The open loop's CPU seconds per 1,000 requests due (the median over the records that
    measured it), and how many did; None where no open-loop record has its CPU."""
    costs = sorted(
        1000 * r.cpu.wrk_s / r.wrk.schedule.due
        for r in records
        if r.wrk and r.wrk.schedule and r.wrk.schedule.due and r.cpu and r.cpu.wrk_s is not None
    )
    return (round(statistics.median(costs), 3), len(costs)) if costs else None


def record_key(cell: Cell, repeat: int) -> str:
    """Unique in a run: the cell's id, and the round for every round after the first (so a
    run of one round names its records as runs always did)."""
    return cell.id if repeat == 1 else f"{cell.id}@{repeat}"


@dataclass(frozen=True)
class Checks:
    """A foreign service's answers sampled during the measured window, held to the status and
    shape its verification saw (the demo app is checked by its schema instead)."""

    sampled: int  # requests sent by the checker, one at a time
    answered: int  # of them, those that got an answer (no error, no timeout)
    mismatched: int  # answers with another status class or another shape
    first: str = ""  # the first mismatch, described

    @property
    def ok(self) -> bool:
        return self.mismatched == 0


@dataclass(frozen=True)
class CellResult:
    """The raw record of one measurement of a cell (or one probe of a failure map)."""

    cell: Cell
    verdict: Verdict
    wrk: WrkResult | None = None
    pool_timeouts: int | None = 0  # "QueuePool limit ... reached" in the server's log
    server_errors: int | None = 0  # "Exception in ASGI application" lines in the server's log
    cpu: Cpu | None = None
    integrity: Integrity | None = None
    started_at: str = ""
    elapsed_s: float = 0.0
    note: str = ""
    log_tail: str = ""
    repeat: int = 1  # which of the cell's measurements (rounds) this is, from 1
    occupancy: Timeline | None = None  # the side channel sampled during the measured run
    threads: ThreadDump | None = None  # where the server's threads stood when it collapsed
    judged_by: str = ""  # the rule that gave the verdict (harness.domain.rules.Rule)
    judgement: str = ""  # why, in one line
    window: Window | None = None  # the measured window's edges, where the side channel was on
    ramp: Ramp | None = None  # a warm probe's ramp (its `repeat` is the ramp's number)
    replay: Replay | None = None  # how to measure this cell alone again (not a warm probe)
    checks: Checks | None = None  # a foreign service's answers sampled under load

    @property
    def key(self) -> str:
        return record_key(self.cell, self.repeat)

    def to_json(self) -> dict[str, Any]:
        data: dict[str, Any] = {f.name: getattr(self, f.name) for f in fields(self)}
        data["cell"] = self.cell.to_json()
        data["wrk"] = self.wrk.to_json() if self.wrk else None
        for name in ("cpu", "integrity", "checks"):
            value = getattr(self, name)
            data[name] = asdict(value) if value is not None else None
        for name in ("occupancy", "threads", "window", "ramp", "replay"):
            value = getattr(self, name)
            data[name] = value.to_json() if value is not None else None
        data["verdict"] = str(self.verdict)
        return {**data, "format": FORMAT, "id": self.cell.id}

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> CellResult:
        """A record of the current format (harness/store/migrate.py upgrades older ones)."""

        def opt(kind: type, key: str) -> Any:
            return kind(**data[key]) if data.get(key) is not None else None

        return cls(
            cell=Cell.from_json(data["cell"]),
            verdict=Verdict(data["verdict"]),
            wrk=WrkResult.from_json(data["wrk"]) if data.get("wrk") else None,
            pool_timeouts=data.get("pool_timeouts"),
            server_errors=data.get("server_errors"),
            cpu=opt(Cpu, "cpu"),
            integrity=opt(Integrity, "integrity"),
            checks=opt(Checks, "checks"),
            started_at=data.get("started_at", ""),
            elapsed_s=float(data.get("elapsed_s", 0.0)),
            note=data.get("note", ""),
            log_tail=data.get("log_tail", ""),
            repeat=int(data.get("repeat", 1)),
            occupancy=Timeline.from_json(data["occupancy"]) if data.get("occupancy") else None,
            threads=ThreadDump.from_json(data["threads"]) if data.get("threads") else None,
            judged_by=data.get("judged_by", ""),
            judgement=data.get("judgement", ""),
            window=Window.from_json(data["window"]) if data.get("window") else None,
            ramp=Ramp.from_json(data["ramp"]) if data.get("ramp") else None,
            replay=Replay.from_json(data["replay"]) if data.get("replay") else None,
        )


@dataclass(frozen=True)
class PgbenchResult:
    """The database ceiling at one client count: pgbench running the `/users` query."""

    connections: int
    duration_s: float
    transactions: int
    failed: int
    tps: float
    latency_avg_ms: float

    def to_json(self) -> dict[str, Any]:
        return asdict(self)
