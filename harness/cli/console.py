"""What a person watching a run sees on stderr: one line per cell, the searches' results."""

from __future__ import annotations

import sys
import time
from typing import TextIO

from harness.domain.axes import Onset
from harness.domain.cell import Cell
from harness.domain.plan import MapLine
from harness.domain.result import CellResult, PgbenchResult
from harness.domain.search import Threshold
from harness.infra.histogram import measured_ms
from harness.run.events import Listener


def clock(seconds: float) -> str:
    seconds = int(seconds)
    return f"{seconds // 60}:{seconds % 60:02d}"


class Console(Listener):
    """Position, elapsed and remaining time, the cell, then its result on the same line."""

    def __init__(self, stream: TextIO = sys.stderr) -> None:
        self.start, self.stream = time.monotonic(), stream

    def _write(self, text: str) -> None:
        self.stream.write(text)
        self.stream.flush()

    def cell_started(self, cell: Cell, position: str, remaining_s: float, repeat: int = 1) -> None:
        elapsed = time.monotonic() - self.start
        round_ = f" (round {repeat})" if repeat > 1 else ""
        self._write(
            f"[{position}] {clock(elapsed)} elapsed, ~{clock(remaining_s)} left"
            f" | {cell.variant} | {cell.connections} connections{round_} ... "
        )

    def record_written(self, result: CellResult) -> None:
        w = result.wrk
        measured = measured_ms(w, 99)
        p99 = f"{measured:.1f} ms" if measured is not None else "-"
        figures = f"{w.ok_rps:.1f} req/s, p99 {p99}, {w.failed} failed, " if w else ""
        pool = f", {result.pool_timeouts} pool timeouts" if result.pool_timeouts else ""
        # A ramp's later levels have no start line of their own: name their connections.
        level = result.ramp is not None and result.cell.connections != result.ramp.ladder[0]
        at = f"    {result.cell.connections} connections ... " if level else ""
        self._write(f"{at}{figures}{result.verdict}{pool}\n")

    def line_searched(self, line: MapLine, found: Threshold, onset: Onset) -> None:
        self._write(f"    {line.variant_of(onset)}: {found.describe()}\n")

    def notice(self, text: str) -> None:
        self._write(f"    {text}\n")

    def ceiling_measured(self, result: PgbenchResult) -> None:
        self._write(f"    pgbench {result.connections} clients: {result.tps:.0f} tps\n")
