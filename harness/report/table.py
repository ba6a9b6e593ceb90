"""The one way a markdown table is written in this project."""

from __future__ import annotations

from collections.abc import Sequence


def cell_text(value: object) -> str:
    """A value as a table cell: one line, with `|` escaped so it cannot end the cell."""
    return " ".join(str(value).split("\n")).replace("|", "\\|")


def md_table(head: Sequence[str], rows: Sequence[Sequence[object]], align: Sequence[str]) -> str:
    """A markdown table; `align` is one `---` (left) or `---:` (right) per column."""
    if len(align) != len(head) or any(len(r) != len(head) for r in rows):
        raise ValueError("every row and the alignment need one entry per column")
    lines = [
        "| " + " | ".join(cell_text(h) for h in head) + " |",
        "|" + "|".join(align) + "|",
        *("| " + " | ".join(cell_text(v) for v in row) + " |" for row in rows),
    ]
    return "\n".join(lines) + "\n"
