"""A user's interpreter (APP_PYTHON): which packages its environment has, read by running it."""

from __future__ import annotations

import json
import subprocess
from typing import Any

from harness.domain.axes import ServerName
from harness.domain.errors import UsageError

# What a record says of the environment that ran the user's app, and what each server needs.
PACKAGES = (
    "fastapi", "starlette", "anyio", "sqlalchemy", "psycopg2", "psycopg2-binary", "psycopg",
    "asyncpg", "uvicorn", "uvicorn-worker", "gunicorn", "hypercorn", "granian", "uvloop",
    "httptools",
)  # fmt: skip
NEEDS = {
    ServerName.uvicorn: ("uvicorn",),
    ServerName.gunicorn: ("gunicorn", "uvicorn"),
    ServerName.hypercorn: ("hypercorn",),
    ServerName.granian: ("granian",),
}
_PROBE = """
import json, platform, sys
from importlib import metadata
found = {}
for name in json.loads(sys.argv[1]):
    try:
        found[name] = metadata.version(name)
    except metadata.PackageNotFoundError:
        found[name] = None
print(json.dumps({"python": platform.python_version(), "packages": found}))
"""


def inspect(python: str) -> dict[str, Any]:
    """{"python": version, "packages": {name: version or None}} of `python`'s environment."""
    try:
        done = subprocess.run(
            [python, "-c", _PROBE, json.dumps(PACKAGES)],
            capture_output=True,
            text=True,
            timeout=60,
            stdin=subprocess.DEVNULL,
        )
    except OSError as exc:
        raise UsageError(f"APP_PYTHON: {python} cannot be run: {exc.strerror}") from None
    if done.returncode != 0:
        raise UsageError(f"APP_PYTHON: {python} failed: {done.stderr.strip()[-200:]}")
    found: dict[str, Any] = json.loads(done.stdout)
    return found


def check_servers(python: str, servers: list[ServerName]) -> dict[str, Any]:
    """The environment, refused in one line if it lacks a package one of `servers` needs."""
    found = inspect(python)
    for server in servers:
        if missing := [p for p in NEEDS[server] if not found["packages"].get(p)]:
            raise UsageError(
                f"APP_PYTHON: {python} has no {', '.join(missing)}, which SERVER={server} needs: "
                f"install it there, or choose from "
                f"{', '.join(s for s in NEEDS if all(found['packages'].get(p) for p in NEEDS[s]))}"
            )
    return found


def worker_class(found: dict[str, Any]) -> str:
    """gunicorn's uvicorn worker in that environment: the uvicorn-worker package's, else the one
    uvicorn itself shipped (before 0.30)."""
    if found["packages"].get("uvicorn-worker"):
        return "uvicorn_worker.UvicornWorker"
    return "uvicorn.workers.UvicornWorker"


def runs_on_executor(found: dict[str, Any]) -> bool:
    """Whether the app's sync code runs on the loop's default executor, not AnyIO's threadpool:
    Starlette before 0.15, or no Starlette and no AnyIO (servers/userapp/ sizes what it runs on)."""
    packages = found["packages"]
    starlette = packages.get("starlette")
    if not starlette:
        return not packages.get("anyio")
    try:
        major, minor = (int(p) for p in starlette.split(".")[:2])
    except ValueError:
        return False
    return (major, minor) < (0, 15)
