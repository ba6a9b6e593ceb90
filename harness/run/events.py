"""What a run tells whoever watches it (the CLI's console): the run itself prints nothing."""

from __future__ import annotations

from harness.domain.axes import Onset
from harness.domain.cell import Cell
from harness.domain.plan import MapLine
from harness.domain.result import CellResult, PgbenchResult
from harness.domain.search import Threshold


class Listener:
    """Subclass and override what you want to hear about; every event is a no-op here."""

    def cell_started(self, cell: Cell, position: str, remaining_s: float, repeat: int = 1) -> None:
        """A cell's measurement (its round `repeat`), or a map probe, is about to run."""

    def record_written(self, result: CellResult) -> None:
        """Its raw record is on disk."""

    def line_searched(self, line: MapLine, found: Threshold, onset: Onset) -> None:
        """A failure-map line's search (for one onset) has ended."""

    def ceiling_measured(self, result: PgbenchResult) -> None:
        """pgbench measured the database ceiling at one client count."""

    def notice(self, text: str) -> None:
        """Something the run did about a fault (a database replaced, ...)."""
