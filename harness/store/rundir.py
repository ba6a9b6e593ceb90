"""A run directory: metadata.json, one raw record per cell (cells/) or per map probe (probes/),
the map's database ceilings (ceilings/), and the tables generated from them."""

from __future__ import annotations

import gzip
import json
import os
import shutil
from collections import Counter
from contextlib import suppress
from pathlib import Path
from typing import Any

from harness.domain.errors import HarnessError, UsageError
from harness.domain.result import FORMAT, CellResult, PgbenchResult
from harness.store import migrate
from harness.store.provenance import differences

METADATA = "metadata.json"
CEILINGS = "ceilings"
THREADS = "threads"  # raw thread dumps, one per collapsed measurement


def _write_json(path: Path, data: Any, what: str = "", compact: bool = False) -> None:
    """Written to a temporary name and renamed, so a crash or a full disk never leaves half a
    file; a write that fails is one HarnessError naming the file (and `what` it holds).
    `compact`: on one line, for records (their samples are most of a run's bytes; a reader
    indents them with `python -m json.tool`)."""
    tmp = path.with_name(path.name + ".tmp")
    text = json.dumps(data, separators=(",", ":")) if compact else json.dumps(data, indent=2)
    try:
        tmp.write_text(text + "\n")
        os.replace(tmp, path)
    except OSError as exc:
        with suppress(OSError):
            tmp.unlink(missing_ok=True)
        raise HarnessError(f"cannot write {what or path.name} to {path}: {exc.strerror}") from None


def _write_gzip(path: Path, data: bytes, what: str = "") -> None:
    """gzip-compressed (no time in its header, so the same dump gives the same bytes), written
    as _write_json writes."""
    tmp = path.with_name(path.name + ".tmp")
    try:
        tmp.write_bytes(gzip.compress(data, mtime=0))
        os.replace(tmp, path)
    except OSError as exc:
        with suppress(OSError):
            tmp.unlink(missing_ok=True)
        raise HarnessError(f"cannot write {what or path.name} to {path}: {exc.strerror}") from None


def records_folder(kind: str, format_on_disk: int) -> str:
    """Where the raw records are: a map's are probes (format 1 kept them in cells/)."""
    return "probes" if kind == "map" and format_on_disk >= 2 else "cells"


class RunDir:
    def __init__(self, path: Path) -> None:
        self.path = path

    @staticmethod
    def check_creatable(path: Path, parent_must_exist: bool = False) -> None:
        """Refuse, before anything starts, an OUT that holds a run or cannot be written; with
        `parent_must_exist`, one whose folder does not exist yet (most likely a typo)."""
        if path.exists() and (not path.is_dir() or any(path.iterdir())):
            raise UsageError(f"OUT: {path} already holds a run; use RESUME={path} or another OUT")
        if parent_must_exist and not path.parent.exists():
            raise UsageError(
                f"OUT: {path.parent} does not exist; create it first, or choose another OUT"
            )
        parent = next(p for p in (path, *path.parents) if p.exists())
        why = (
            "is not a directory"
            if not parent.is_dir()
            else "is not writable"
            if not os.access(parent, os.W_OK | os.X_OK)
            else ""
        )
        if why:
            raise UsageError(f"OUT: cannot write results to {path}: {parent} {why}")

    @classmethod
    def create(
        cls,
        path: Path,
        kind: str,
        parameters: dict[str, Any],
        options: dict[str, Any],
        plan: dict[str, Any],
    ) -> RunDir:
        """A new run directory, or a clear refusal. `plan`: the run's `cells` or the map's
        `plan`; every invocation that measures into it appends a provenance entry."""
        cls.check_creatable(path)
        try:
            path.mkdir(parents=True, exist_ok=True)
            probe = path / ".write-test"
            probe.write_text("")
            probe.unlink()
        except OSError as exc:
            raise UsageError(f"OUT: cannot write results to {path}: {exc.strerror}") from None
        run = cls(path)
        run.write_metadata(
            {
                "format": FORMAT,
                "kind": kind,
                "complete": False,
                "parameters": parameters,
                "options": options,
                **plan,
                "provenance": [],
            }
        )
        return run

    @classmethod
    def open(cls, path: Path) -> RunDir:
        if not (path / METADATA).is_file():
            raise UsageError(f"{path} is not a run directory (no {METADATA})")
        run = cls(path)
        run.metadata()  # refuses an unknown format now, not halfway through a command
        return run

    def _raw_metadata(self) -> dict[str, Any]:
        return dict(json.loads((self.path / METADATA).read_text()))

    def metadata(self) -> dict[str, Any]:
        """The metadata in the current format, whatever format is on disk."""
        return migrate.metadata(self._raw_metadata(), str(self.path / METADATA))

    @property
    def kind(self) -> str:
        return str(self.metadata()["kind"])

    @property
    def records_dir(self) -> Path:
        on_disk = migrate.check_format(self._raw_metadata().get("format"), str(self.path))
        return self.path / records_folder(self.kind, on_disk)

    def write_metadata(self, data: dict[str, Any]) -> None:
        _write_json(self.path / METADATA, data)

    def update_metadata(self, **changes: Any) -> None:
        self.write_metadata({**self.metadata(), **changes})

    # --- provenance --------------------------------------------------------------------------

    def check_resumable(self, entry: dict[str, Any], force: bool) -> list[str]:
        """What differs from the run's first session; raises unless `force`. Returns notes."""
        first = self.metadata()["provenance"][0]
        found = differences(first, entry)
        if found and not force:
            raise UsageError(
                f"RESUME: {self.path} was measured elsewhere or with other versions ("
                + "; ".join(found)
                + "); its cells would not be comparable. Start a new run, or add FORCE=1 "
                "(--force) to resume anyway"
            )
        sha = (first.get("git") or {}).get("sha")
        if sha and sha != (entry.get("git") or {}).get("sha"):
            found.append(f"git commit: {sha[:12]} then, {entry['git']['sha'][:12]} now")
        return found

    def begin(self, entry: dict[str, Any]) -> None:
        """Append this invocation's provenance entry, upgrading an older directory first."""
        upgrade = self._raw_metadata().get("format") != FORMAT
        meta = self.metadata()
        self.write_metadata({**meta, "provenance": [*meta["provenance"], entry]})
        if upgrade and meta["kind"] == "map":
            self._move_records(self.path / "cells", self.path / records_folder("map", FORMAT))

    def update_session(self, **fields: Any) -> None:
        """Add to this invocation's (the last) provenance entry."""
        meta = self.metadata()
        entries = meta["provenance"]
        self.write_metadata({**meta, "provenance": [*entries[:-1], {**entries[-1], **fields}]})

    def _move_records(self, source: Path, dest: Path) -> None:
        dest.mkdir(exist_ok=True)
        if source.is_dir():
            for path in source.glob("*.json"):
                shutil.move(path, dest / path.name)
            source.rmdir()

    def migrate(self, entry: dict[str, Any]) -> dict[str, int]:
        """Write an older run back in the current format: every record as it now reads (older
        verdicts judged again from their samples, harness/store/migrate.py), then the metadata
        with `entry` (what did it, and the verdicts it changed) appended to its provenance.
        Returns the changes, "old -> new" with their counts; a current run is left as it is."""
        raw = self._raw_metadata()
        if raw.get("format") == FORMAT:
            return {}
        changes: Counter[str] = Counter()
        for path in sorted(self.records_dir.glob("*.json")):
            before = json.loads(path.read_text())
            after = CellResult.from_json(migrate.record(before, str(path))).to_json()
            if (old := before.get("verdict")) != after["verdict"]:
                changes[f"{old} -> {after['verdict']}"] += 1
            _write_json(path, after, f"the record {path.name}", compact=True)
        meta = self.metadata()
        step = {**entry, "from_format": raw.get("format"), "verdicts_changed": dict(changes)}
        self.write_metadata({**meta, "provenance": [*meta["provenance"], step]})
        if meta["kind"] == "map":
            self._move_records(self.path / "cells", self.path / records_folder("map", FORMAT))
        return dict(changes)

    # --- records -----------------------------------------------------------------------------

    def write_record(self, result: CellResult) -> Path:
        folder = self.records_dir
        path = folder / f"{result.key}.json"
        with suppress(OSError):
            folder.mkdir(exist_ok=True)
        _write_json(path, result.to_json(), f"the record of {result.key}", compact=True)
        return path

    def records(self) -> list[CellResult]:
        # Both folders: an upgrade stopped between its two steps must lose no probe.
        folders = dict.fromkeys([self.records_dir, self.path / "probes", self.path / "cells"])
        if self.kind != "map":
            folders = {self.records_dir: None}
        paths = sorted(p for folder in folders for p in folder.glob("*.json"))
        return [
            CellResult.from_json(migrate.record(json.loads(p.read_text()), str(p))) for p in paths
        ]

    def write_threads(self, key: str, threads: list[dict[str, Any]]) -> str:
        """A raw thread dump beside the record `key`, gzip-compressed (py-spy's JSON repeats
        every frame of every thread: a dump shrinks about 60 times); its path relative to the
        run. The record keeps the dump's summary."""
        path = self.path / THREADS / f"{key}.json.gz"
        with suppress(OSError):
            path.parent.mkdir(exist_ok=True)
        _write_gzip(path, json.dumps(threads).encode(), f"the thread dump of {key}")
        return str(path.relative_to(self.path))

    def read_threads(self, file: str) -> list[dict[str, Any]]:
        """A raw thread dump by the path its record names, compressed or (older runs) not."""
        path = self.path / file
        data = gzip.decompress(path.read_bytes()) if path.suffix == ".gz" else path.read_bytes()
        found: list[dict[str, Any]] = json.loads(data)
        return found

    def compact(self, entry: dict[str, Any]) -> tuple[int, int]:
        """Compress the raw thread dumps an older run kept plain, point their records at the
        compressed files, and write indented records on one line (nothing else in a record
        changes); `entry` (what did it, and how many) is appended to the provenance. Returns
        how many dumps it compressed and how many records it wrote again."""
        done = rewritten = 0
        # The folders records() reads: a map's upgrade stopped between its steps has both.
        folders = [self.records_dir]
        if self.kind == "map":
            folders = list(
                dict.fromkeys([self.records_dir, self.path / "probes", self.path / "cells"])
            )
        for path in sorted(p for folder in folders for p in folder.glob("*.json")):
            text = path.read_text()
            data = json.loads(text)
            file = (data.get("threads") or {}).get("file") or ""
            plain = self.path / file
            if file.endswith(".json") and plain.is_file():
                _write_gzip(plain.with_name(plain.name + ".gz"), plain.read_bytes(), file)
                data["threads"]["file"] = file + ".gz"
                done += 1
            elif text.count("\n") <= 1:
                continue
            _write_json(path, data, f"the record {path.name}", compact=True)
            rewritten += 1
            if plain.is_file() and file.endswith(".json"):
                plain.unlink()
        if rewritten:
            meta = self._raw_metadata()
            step = {**entry, "dumps_compressed": done, "records_compacted": rewritten}
            self.write_metadata({**meta, "provenance": [*meta["provenance"], step]})
        return done, rewritten

    def ceiling_path(self, connections: int) -> Path:
        return self.path / CEILINGS / f"pgbench-c{connections}.json"

    def write_pgbench(self, result: PgbenchResult) -> None:
        (self.path / CEILINGS).mkdir(exist_ok=True)
        _write_json(self.ceiling_path(result.connections), result.to_json())

    def pgbench(self) -> list[PgbenchResult]:
        folder = self.path / CEILINGS
        if not folder.is_dir():
            return []
        found = [PgbenchResult(**json.loads(p.read_text())) for p in folder.glob("pgbench-*.json")]
        return sorted(found, key=lambda r: r.connections)
