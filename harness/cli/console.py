"""What a person watching a run sees on stderr: a line per measurement, the searches' results,
and on a terminal a live line under them (rich) with the measurement running, the run's
progress, the time elapsed and the time left at the pace measured so far."""

from __future__ import annotations

import re
import sys
import time
from collections.abc import Callable
from typing import TextIO

from rich.console import Console as RichConsole
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn
from rich.table import Column

from harness.domain.axes import Onset
from harness.domain.cell import Cell
from harness.domain.plan import MapLine
from harness.domain.result import CellResult, PgbenchResult
from harness.domain.search import Threshold
from harness.infra.histogram import measured_ms
from harness.run.events import Listener


def say(text: str) -> None:
    """A line to the person running the harness, on stderr (stdout is for what a dry run lists
    and what a command prints for scripts)."""
    print(text, file=sys.stderr, flush=True)


def clock(seconds: float) -> str:
    seconds = int(seconds)
    return f"{seconds // 60}:{seconds % 60:02d}"


def connections(n: int) -> str:
    return f"{n} connection{'' if n == 1 else 's'}"


def _level(cell: Cell) -> str:
    return connections(cell.connections) if cell.rate is None else f"{cell.rate:g} req/s due"


class Pace:
    """Time left: the plan's estimate of what is left, scaled by how long the work done so far
    took against its own estimate (so the waits after collapses, a slow machine, ... count)."""

    def __init__(self, now: Callable[[], float] = time.monotonic) -> None:
        self.now, self.start = now, now()
        self.first: float | None = None  # when the first measurement started
        self.planned: float | None = None  # the estimate of everything, at the first cell

    def elapsed(self) -> float:
        return self.now() - self.start

    def left(self, estimate_left_s: float) -> float:
        # The pace counts from the first measurement: starting PostgreSQL is not in the plan.
        if self.first is None:
            self.first = self.now()
        if self.planned is None or estimate_left_s > self.planned:
            self.planned = estimate_left_s  # the first cell, or a map's longer line
        done = self.planned - estimate_left_s
        return estimate_left_s * ((self.now() - self.first) / done if done > 0 else 1.0)


class Console(Listener):
    """Position, elapsed and remaining time, the cell, then its result on the same line; on a
    terminal (`live`), the result lines alone, with the live line beneath them."""

    def __init__(self, stream: TextIO = sys.stderr, live: bool | None = None) -> None:
        self.stream, self.pace = stream, Pace()
        self.live = stream.isatty() if live is None else live
        self.rich = RichConsole(file=stream, force_terminal=self.live, highlight=False)
        self.progress: Progress | None = None
        self.current = ""  # the measurement running, for its result line on a terminal
        self.pending = False  # off a terminal: a measurement's line is started, not ended

    def _write(self, text: str) -> None:
        self.stream.write(text)
        self.stream.flush()

    def _line(self, text: str) -> None:
        """A finished line: above the live line on a terminal, else where the cell's began."""
        if self.progress is not None:
            self.progress.stop()
            self.progress = None
            self.rich.print(text, markup=False, soft_wrap=True)
        else:
            self._write(text + "\n")
            self.pending = False

    def cell_started(self, cell: Cell, position: str, remaining_s: float, repeat: int = 1) -> None:
        elapsed, left = self.pace.elapsed(), self.pace.left(remaining_s)
        round_ = f" (round {repeat})" if repeat > 1 else ""
        self.current = f"{cell.variant} | {_level(cell)}{round_}"
        if not self.live:
            self._write(
                f"[{position}] {clock(elapsed)} elapsed, ~{clock(left)} left | {self.current} ... "
            )
            self.pending = True
            return
        counted = re.search(r"(\d+)/(\d+)$", position)
        done, total = (int(counted[1]) - 1, int(counted[2])) if counted else (0, None)
        # The position, bar and times keep their width; the measurement's name is cut short.
        fixed = Column(no_wrap=True)
        self.progress = Progress(
            TextColumn(f"[{position}]", table_column=fixed),
            BarColumn(bar_width=16),
            MofNCompleteColumn(table_column=fixed),
            TextColumn(f"{clock(elapsed)} elapsed, ~{clock(left)} left", table_column=fixed),
            TextColumn(  # the load first: a narrow terminal cuts the variant's tail
                f"{_level(cell)}{round_} | {cell.variant}",
                table_column=Column(ratio=1, no_wrap=True, overflow="ellipsis", min_width=8),
            ),
            console=self.rich,
            transient=True,
            expand=True,
        )
        self.progress.add_task("", total=total, completed=done)
        self.progress.start()

    def close(self) -> None:
        """Take the live line down (the run ended, or was interrupted mid-measurement)."""
        if self.progress is not None:
            self.progress.stop()
            self.progress = None
        if self.pending:
            self._write("\n")  # end the line of a measurement that never ended
            self.pending = False

    def record_written(self, result: CellResult) -> None:
        w = result.wrk
        measured = measured_ms(w, 99)
        p99 = f"{measured:.1f} ms" if measured is not None else "-"
        figures = f"{w.ok_rps:.1f} req/s, p99 {p99}, {w.failed} failed, " if w else ""
        pool = f", {result.pool_timeouts} pool timeouts" if result.pool_timeouts else ""
        outcome = f"{figures}{result.verdict}{pool}"
        # A ramp's later levels have no start line of their own: name their connections.
        level = result.ramp is not None and result.cell.connections != result.ramp.ladder[0]
        if level:
            self._line(f"    {_level(result.cell)} ... {outcome}")
        elif self.live:
            self._line(f"{self.current} ... {outcome}")
        else:
            self._line(outcome)

    def line_searched(self, line: MapLine, found: Threshold, onset: Onset) -> None:
        self._line(f"    {line.variant_of(onset)}: {found.describe()}")

    def notice(self, text: str) -> None:
        self._line(f"    {text}")

    def ceiling_measured(self, result: PgbenchResult) -> None:
        self._line(f"    pgbench {result.connections} clients: {result.tps:.0f} tps")
