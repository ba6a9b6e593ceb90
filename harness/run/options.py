"""How cells are run (not what they measure: that is the Cell)."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

from harness.domain.axes import WrkRunner
from harness.domain.cell import Cell
from harness.domain.rules import predicted
from servers.registry import WRK_IMAGE

RELAY_START_S = 0.2  # the latency relay's start and stop
# What more than one worker adds to a start and stop (reference map, 2 cores: uvicorn's
# supervisor 2.7 s against 1.0 s for one process; gunicorn and hypercorn about the same).
MORE_WORKERS_S = {"uvicorn": 1.7}
# After a collapse, the server is kept up until pool_timeout and this much more from the load's
# start, for the QueuePool errors that explain it (first round only).
POOL_TIMEOUT_GRACE_S = 5.0


@dataclass(frozen=True)
class Options:
    warmup_s: float = 2.0
    wrk_timeout_s: float = 5.0
    start_timeout_s: float = 30.0
    wrk_runner: WrkRunner = WrkRunner.local
    wrk_image: str = WRK_IMAGE
    database_url: str | None = None
    keep_logs: bool = False
    # After a collapse, wait (up to pool_timeout) for the QueuePool errors that explain it.
    await_pool_timeouts: bool = True
    # wrk on one CPU, the servers and PostgreSQL on the others, so they do not trade places.
    pin: bool = False
    # A pause before each measurement's warm-up, for the machine to come to rest.
    settle_s: float = 0.0
    # A target's process, for a thread dump when it collapses (PIDs do not outlive a resume).
    target_pid: int | None = None

    def estimate_s(self, cell: Cell, repeat: int = 1) -> float:
        """The time one measurement should take; in its first round, a cell that can collapse
        (sync `dependency` at workers x (T + C) or more) counts the wait for its pool timeouts."""
        overhead = 1.0  # reset, start, verify, stop: measured at 0.6-1 s on 2 cores
        relay = RELAY_START_S if cell.db_latency else 0.0
        workers = cell.known("workers") or 1
        extra = (workers > 1) * MORE_WORKERS_S.get(str(cell.known("name")), 0.0)
        load = self.warmup_s + cell.duration_s
        config = cell.config
        bound = predicted(cell.mode, config) if config else None
        if repeat == 1 and self.await_pool_timeouts and bound and cell.connections >= bound:
            assert config is not None
            extra += max(0.0, config.pool_timeout_s + POOL_TIMEOUT_GRACE_S - load)
        return overhead + relay + extra + self.settle_s + load

    @classmethod
    def from_json(cls, data: dict[str, Any], database_url: str | None) -> Options:
        """The options a run was started with (a resume measures the same way)."""
        return cls(
            warmup_s=float(data["warmup_s"]),
            wrk_timeout_s=float(data["wrk_timeout_s"]),
            start_timeout_s=float(data["start_timeout_s"]),
            wrk_runner=WrkRunner(data["wrk_runner"]),
            wrk_image=str(data["wrk_image"]),
            database_url=database_url,
            keep_logs=bool(data["keep_logs"]),
            await_pool_timeouts=bool(data.get("await_pool_timeouts", True)),
            pin=bool(data.get("pin", False)),
            settle_s=float(data.get("settle_s", 0.0)),
        )

    def to_json(self) -> dict[str, Any]:
        """As the run records them; the database URL may hold a password and is left out."""
        return {
            k: str(v) if not isinstance(v, (int, float, bool, type(None))) else v
            for k, v in asdict(self).items()
            if k not in ("database_url", "target_pid")
        }
