"""A run directory: metadata.json, one raw record per cell in cells/, and the generated tables."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from harness.errors import HarnessError, UsageError
from harness.model import CellResult

METADATA = "metadata.json"
CELLS = "cells"


def _write_json(path: Path, data: Any) -> None:
    # Written to a temporary name and renamed, so a crash never leaves half a record.
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(data, indent=2, sort_keys=False) + "\n")
    os.replace(tmp, path)


class RunDir:
    def __init__(self, path: Path) -> None:
        self.path = path

    @classmethod
    def create(cls, path: Path) -> RunDir:
        if path.exists() and any(path.iterdir()):
            raise UsageError(f"OUT: {path} already holds a run; use --resume {path} or another OUT")
        try:
            (path / CELLS).mkdir(parents=True, exist_ok=True)
            probe = path / ".write-test"
            probe.write_text("")
            probe.unlink()
        except OSError as exc:
            raise UsageError(f"OUT: cannot write results to {path}: {exc.strerror}") from None
        return cls(path)

    @classmethod
    def open(cls, path: Path) -> RunDir:
        if not (path / METADATA).is_file():
            raise HarnessError(f"{path} is not a run directory (no {METADATA})")
        return cls(path)

    def metadata(self) -> dict[str, Any]:
        return json.loads((self.path / METADATA).read_text())

    def write_metadata(self, data: dict[str, Any]) -> None:
        _write_json(self.path / METADATA, data)

    def update_metadata(self, **changes: Any) -> None:
        self.write_metadata({**self.metadata(), **changes})

    def write_record(self, result: CellResult) -> Path:
        path = self.path / CELLS / f"{result.cell.id}.json"
        _write_json(path, result.to_json())
        return path

    def records(self) -> list[CellResult]:
        return [
            CellResult.from_json(json.loads(p.read_text()))
            for p in sorted((self.path / CELLS).glob("*.json"))
        ]
