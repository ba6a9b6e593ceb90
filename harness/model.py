"""The one model of a benchmark cell and its result. Everything else reads or writes these."""

from __future__ import annotations

import re
from dataclasses import asdict, dataclass, field, fields
from enum import StrEnum
from typing import Any

from app.settings import SessionStyle
from servers.registry import Mode, ServerName, Stack

RECORD_FORMAT = 1


class Workload(StrEnum):
    list = "list"  # GET /users
    insert = "insert"  # GET /users/insert-data-to-test
    health = "health"  # GET /health: no database, the HTTP ceiling


WORKLOAD_PATH = {
    Workload.list: "/users",
    Workload.insert: "/users/insert-data-to-test",
    Workload.health: "/health",
}


class Verdict(StrEnum):
    ok = "ok"
    errors = "errors"  # some requests failed, throughput held
    collapsed = "collapsed"  # throughput fell far below the variant's best, or ~nothing completed
    crashed = "crashed"  # the server died during the cell
    failed_to_start = "failed-to-start"  # never answered /health within the bound
    failed_verification = "failed-verification"  # answered, but not with the expected rows


@dataclass(frozen=True, order=True)
class Pool:
    size: int
    overflow: int

    def __post_init__(self) -> None:
        if self.size < 1 or self.overflow < 0:
            raise ValueError(
                f"pool needs size >= 1 and overflow >= 0, got {self.size}+{self.overflow}"
            )

    @property
    def capacity(self) -> int:
        return self.size + self.overflow

    @classmethod
    def parse(cls, text: str) -> Pool:
        match = re.fullmatch(r"\s*(\d+)\s*\+\s*(\d+)\s*", text)
        if not match:
            raise ValueError(f"pool {text!r} is not SIZE+OVERFLOW, e.g. 5+10")
        return cls(int(match[1]), int(match[2]))

    def __str__(self) -> str:
        return f"{self.size}+{self.overflow}"


def tokens_label(cell: Cell) -> str:
    """T as a reader should take it: tokens of AnyIO's limiter, or 2021's executor threads."""
    if cell.stack is Stack.y2021 and cell.tokens is not None:
        return f"{cell.tokens} (executor)"
    return shown(cell.tokens)


def shown(value: object) -> str:
    """A parameter as text; None means the harness could not know it (target mode)."""
    return "unknown" if value is None else f"{value:g}" if isinstance(value, float) else str(value)


@dataclass(frozen=True)
class Cell:
    """One measurement: every parameter that can change its outcome.

    In target mode (`target` set) the harness measures a server it did not start, so the
    server's own settings are None: unknown, and recorded as such.
    """

    server: ServerName | None
    mode: Mode
    style: SessionStyle | None
    pool: Pool | None
    tokens: int | None
    workers: int | None
    connections: int
    workload: Workload
    duration_s: float
    rows: int | None
    pool_timeout_s: float | None = 30.0
    target: str | None = None
    # Which versions run the app. Under `2021` there is no token limiter: `tokens` then holds
    # the size of asyncio's default executor on the machine that planned the run, not a setting.
    stack: Stack = Stack.current

    @property
    def server_label(self) -> str:
        return f"target {self.target}" if self.target else shown(self.server)

    @property
    def variant(self) -> str:
        """The cell without its connection count: the line a threshold is looked for along."""
        stack = "" if self.stack is Stack.current else f"/stack {self.stack}"
        return (
            f"{self.server_label}/{self.mode}/{shown(self.style)}/pool {shown(self.pool)}/"
            f"tokens {shown(self.tokens)}/workers {shown(self.workers)}/{self.workload}{stack}"
        )

    @property
    def id(self) -> str:
        """Stable across runs, so records can be resumed and compared."""
        where = (
            "target-" + re.sub(r"[^A-Za-z0-9]+", "_", self.target.split("//", 1)[-1]).strip("_")
            if self.target
            else str(self.server)
        )
        pool = f"{self.pool.size}+{self.pool.overflow}" if self.pool else "unknown"
        return (
            f"{where}-{self.mode}-{shown(self.style)}-p{pool}-pt{shown(self.pool_timeout_s)}"
            f"-t{shown(self.tokens)}-w{shown(self.workers)}-{self.workload}-r{shown(self.rows)}"
            f"-d{self.duration_s:g}{'' if self.stack is Stack.current else '-s' + self.stack}"
            f"-c{self.connections}"
        )

    def to_json(self) -> dict[str, Any]:
        data = asdict(self)
        data["pool"] = asdict(self.pool) if self.pool else None
        return data

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Cell:
        def opt(kind: Any, key: str) -> Any:
            value = data.get(key)
            return None if value is None else kind(value)

        return cls(
            server=opt(ServerName, "server"),
            mode=Mode(data["mode"]),
            style=opt(SessionStyle, "style"),
            pool=Pool(**data["pool"]) if data.get("pool") else None,
            tokens=opt(int, "tokens"),
            workers=opt(int, "workers"),
            connections=int(data["connections"]),
            workload=Workload(data["workload"]),
            duration_s=float(data["duration_s"]),
            rows=opt(int, "rows"),
            pool_timeout_s=opt(float, "pool_timeout_s"),
            target=data.get("target"),
            stack=Stack(data.get("stack", Stack.current)),
        )


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
        """
        socket = self.connect_errors + self.write_errors + self.timeouts
        return self.status_errors + socket + max(self.read_errors - self.status_errors, 0)


@dataclass(frozen=True)
class Cpu:
    """CPU seconds each party used during the measured window (None: could not be measured)."""

    server_s: float | None
    postgres_s: float | None
    wrk_s: float | None


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
class CellResult:
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
    format: int = field(default=RECORD_FORMAT)

    def to_json(self) -> dict[str, Any]:
        data = {f.name: getattr(self, f.name) for f in fields(self)}
        data["cell"] = self.cell.to_json()
        data["id"] = self.cell.id
        for name in ("wrk", "cpu", "integrity"):
            value = getattr(self, name)
            data[name] = asdict(value) if value is not None else None
        data["verdict"] = str(self.verdict)
        return data

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> CellResult:
        def opt(kind: type, key: str) -> Any:
            return kind(**data[key]) if data.get(key) is not None else None

        return cls(
            cell=Cell.from_json(data["cell"]),
            verdict=Verdict(data["verdict"]),
            wrk=opt(WrkResult, "wrk"),
            pool_timeouts=data.get("pool_timeouts"),
            server_errors=data.get("server_errors"),
            cpu=opt(Cpu, "cpu"),
            integrity=opt(Integrity, "integrity"),
            started_at=data.get("started_at", ""),
            elapsed_s=float(data.get("elapsed_s", 0.0)),
            note=data.get("note", ""),
            log_tail=data.get("log_tail", ""),
            format=int(data.get("format", RECORD_FORMAT)),
        )
