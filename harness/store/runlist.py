"""The reference's runs as data: reference-runs.toml, read and checked in one place.

`make reference` measures what it lists and results/README.md presents it, section by
section, in the order it gives; neither keeps a list of its own.
"""

from __future__ import annotations

import tomllib
from dataclasses import dataclass
from pathlib import Path

from harness.domain.errors import UsageError

RUN_LIST = Path(__file__).resolve().parents[2] / "reference-runs.toml"
# The commands a reference run may be (by their own names, not make's aliases): what the
# runner knows how to resume or keep.
COMMANDS = frozenset({"run", "decide", "map", "capacity", "diagnose-examples", "generators"})


@dataclass(frozen=True)
class ReferenceRun:
    name: str  # its folder under the reference's root
    section: str  # the page section that presents it
    command: tuple[str, ...]  # `python -m harness` arguments, without --out
    measured_by: str | None = None  # a make target of its own, where it needs other tools

    def argv(self, out: Path) -> list[str]:
        return [*self.command, "--out", str(out)]


@dataclass(frozen=True)
class RunList:
    sections: tuple[str, ...]  # the page's order
    runs: tuple[ReferenceRun, ...]  # the order they are measured in

    def of(self, section: str) -> list[ReferenceRun]:
        return [r for r in self.runs if r.section == section]

    @property
    def names(self) -> list[str]:
        return [r.name for r in self.runs]


def load(path: Path = RUN_LIST) -> RunList:
    """The list, refused in one line where an entry is malformed or names an unknown section."""
    try:
        data = tomllib.loads(path.read_text())
    except (OSError, tomllib.TOMLDecodeError) as exc:
        raise UsageError(f"{path}: {exc}") from exc
    sections = tuple(data.get("sections", ()))
    if twice := sorted({s for s in sections if sections.count(s) > 1}):
        raise UsageError(f"{path}: a section listed twice: {', '.join(twice)}")
    runs = []
    for entry in data.get("run", ()):
        name, section, command = entry.get("name"), entry.get("section"), entry.get("command")
        if not name or not isinstance(command, list) or not command:
            raise UsageError(f"{path}: a run needs a name and a command (a list): {entry}")
        if section not in sections:
            raise UsageError(
                f"{path}: run {name}: section {section!r} is not one of {', '.join(sections)}"
            )
        if command[0] not in COMMANDS:
            raise UsageError(
                f"{path}: run {name}: {command[0]!r} is not one of {', '.join(sorted(COMMANDS))}"
            )
        if not isinstance(entry.get("measured_by", ""), str):
            raise UsageError(f"{path}: run {name}: measured_by is a make command, as a string")
        extra = set(entry) - {"name", "section", "command", "measured_by"}
        if extra:
            raise UsageError(f"{path}: run {name}: unknown key {', '.join(sorted(extra))}")
        runs.append(ReferenceRun(name, section, tuple(map(str, command)), entry.get("measured_by")))
    names = [r.name for r in runs]
    if twice := sorted({n for n in names if names.count(n) > 1}):
        raise UsageError(f"{path}: listed twice: {', '.join(twice)}")
    return RunList(sections, tuple(runs))
