"""The stacks of versions the apps run under, each in its own virtual environment.

`current` is requirements.lock in .venv (the harness's own environment, which `make setup`
builds); `2021` is requirements-2021.lock in .venv-2021: FastAPI 0.63, Starlette 0.13.6 and
SQLAlchemy 1.4, the seed's era. The apps run under either (app/compat.py); the harness itself
always runs under `current`, and starts a server with the python of the cell's stack.

A venv is built on demand from its lock and carries a marker holding the lock's sha256, so an
unchanged lock costs nothing and a changed one rebuilds.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import os
import subprocess
import sys
from importlib import metadata as importlib_metadata
from pathlib import Path
from typing import Any

from app.compat import default_executor_threads
from harness.domain.axes import Stack
from harness.domain.errors import HarnessError
from harness.infra.environment import PROJECT_ROOT
from servers.registry import STACK_LOCKS

__all__ = [
    "PACKAGES",
    "Stack",
    "ensure_venv",
    "executor_threads",
    "installed_versions",
    "lock_file",
    "package_versions",
    "python_version",
    "venv_dir",
    "venv_python",
]

LOCKS = STACK_LOCKS
VENVS = {Stack.current: ".venv", Stack.y2021: ".venv-2021"}
MARKER = ".lock-sha256"
# What a run records of a stack (distribution names, as pip knows them).
PACKAGES = (
    "fastapi",
    "starlette",
    "anyio",
    "pydantic",
    "uvicorn",
    "uvloop",
    "httptools",
    "gunicorn",
    "uvicorn-worker",
    "hypercorn",
    "granian",
    "sqlalchemy",
    "asyncpg",
    "psycopg2-binary",
    "psycopg",
    "psycopg-binary",
    "psycopg-pool",
    "greenlet",
)
BUILD_TIMEOUT = 1800.0  # seconds; a cold build of the 2021 venv takes well under a minute


def lock_file(stack: Stack | str, root: Path = PROJECT_ROOT) -> Path:
    return root / LOCKS[Stack(stack)]


def venv_dir(stack: Stack | str, root: Path = PROJECT_ROOT) -> Path:
    return root / VENVS[Stack(stack)]


def venv_python(stack: Stack | str, root: Path = PROJECT_ROOT) -> Path:
    return venv_dir(stack, root) / "bin" / "python"


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _is_current(venv: Path, lock: Path) -> bool:
    marker = venv / MARKER
    try:
        return (venv / "bin" / "python").exists() and marker.read_text().strip() == _sha256(lock)
    except OSError:
        return False


def ensure_venv(
    stack: Stack | str, root: Path = PROJECT_ROOT, base_python: str = sys.executable
) -> Path:
    """The python of `stack`'s venv, built from its lock first if missing or out of date.

    `base_python` makes the venv (the locks are for CPython 3.11). The venv is rebuilt from
    scratch, except when it is the one running this code (the `current` stack's .venv under the
    harness): that one is only brought up to its lock. Raises HarnessError if the build fails.
    """
    stack = Stack(stack)
    lock, venv = lock_file(stack, root), venv_dir(stack, root)
    python = venv / "bin" / "python"
    if not lock.is_file():
        raise HarnessError(f"the {stack} stack's lock file {lock} is missing")
    if _is_current(venv, lock):
        return python
    # Two builders (e.g. parallel test sessions) take turns; the lock file itself is the mutex.
    with open(lock, "rb") as mutex:
        fcntl.flock(mutex, fcntl.LOCK_EX)
        try:
            if not _is_current(venv, lock):
                _build(stack, lock, venv, base_python)
        finally:
            fcntl.flock(mutex, fcntl.LOCK_UN)
    return python


def _build(stack: Stack, lock: Path, venv: Path, base_python: str) -> None:
    running_here = Path(sys.prefix).resolve() == venv.resolve()
    (venv / MARKER).unlink(missing_ok=True)
    steps = [
        *([] if running_here else [[base_python, "-m", "venv", "--clear", str(venv)]]),
        [
            str(venv / "bin" / "python"),
            "-m",
            "pip",
            "install",
            "--quiet",
            "--disable-pip-version-check",
            "--no-input",
            "-r",
            str(lock),
        ],
    ]
    # The build must not pick up the caller's virtualenv or a PYTHONPATH that shadows packages.
    env = {k: v for k, v in os.environ.items() if k not in ("VIRTUAL_ENV", "PYTHONPATH")}
    for argv in steps:
        try:
            out = subprocess.run(
                argv, capture_output=True, text=True, env=env, timeout=BUILD_TIMEOUT, check=False
            )
        except (OSError, subprocess.TimeoutExpired) as exc:
            raise HarnessError(
                f"could not build the {stack} stack's venv {venv} from {lock.name}: {exc}"
            ) from None
        if out.returncode != 0:
            tail = "\n".join((out.stdout + out.stderr).strip().splitlines()[-15:])
            raise HarnessError(
                f"could not build the {stack} stack's venv {venv} from {lock.name} "
                f"(`{' '.join(argv[:4])} ...` exited {out.returncode}):\n{tail}"
            )
    (venv / MARKER).write_text(_sha256(lock) + "\n")


_PROBE = """
import json, platform, sys
from importlib import metadata
versions = {}
for name in sys.argv[1:]:
    try:
        versions[name] = metadata.version(name)
    except metadata.PackageNotFoundError:
        versions[name] = "not installed"
print(json.dumps({"python": platform.python_version(), "packages": versions}))
"""


def _probe(stack: Stack | str, root: Path, packages: tuple[str, ...]) -> dict[str, Any]:
    python = venv_python(stack, root)
    if not python.exists():
        raise HarnessError(f"the {Stack(stack)} stack has no venv at {python.parent.parent}")
    try:
        out = subprocess.run(
            [str(python), "-c", _PROBE, *packages],
            capture_output=True,
            text=True,
            timeout=60,
            check=True,
        )
        return dict(json.loads(out.stdout))
    except (OSError, subprocess.SubprocessError, ValueError) as exc:
        raise HarnessError(f"could not read the {Stack(stack)} stack's versions: {exc}") from None


def package_versions(
    stack: Stack | str, root: Path = PROJECT_ROOT, packages: tuple[str, ...] = PACKAGES
) -> dict[str, str]:
    """Installed versions of `packages` in `stack`'s venv ("not installed" for a missing one)."""
    return dict(_probe(stack, root, packages)["packages"])


def python_version(stack: Stack | str, root: Path = PROJECT_ROOT) -> str:
    """The Python version of `stack`'s venv, e.g. "3.11.7"."""
    return str(_probe(stack, root, ())["python"])


def executor_threads() -> int:
    """Threads of asyncio's default executor here: what sync code runs on under `2021`, where
    there is no token limiter (the app's own rule, app/compat.py, so it is written once)."""
    return default_executor_threads()


def installed_versions(packages: tuple[str, ...] = PACKAGES) -> dict[str, str]:
    """Versions of `packages` in the running interpreter (the `current` stack's venv)."""
    versions = {}
    for name in packages:
        try:
            versions[name] = importlib_metadata.version(name)
        except importlib_metadata.PackageNotFoundError:
            versions[name] = "not installed"
    return versions
