"""Render docker-compose.yml from the server registry, so the two cannot drift apart.

    python -m servers.compose > docker-compose.yml    # write it
    python -m servers.compose --check                  # exit 1 with a diff if the file differs

Every app service's `command` is `server_argv(...)` for its server and mode, with the container's
paths (`python`, /app/servers) and host 0.0.0.0: inside a container the server must listen on
all of the container's interfaces for the published port to reach it, and the host side is
published on 127.0.0.1 only. The environment defaults are read from app.settings.Settings.
"""

from __future__ import annotations

import argparse
import dataclasses
import difflib
import sys
import textwrap
from enum import Enum
from pathlib import Path
from typing import Any

import yaml

from app.settings import NAMES, OLD_NAMES, Settings
from servers.registry import SEED_PORTS, WRK_IMAGE, Launch, Mode, ServerName, server_argv
from servers.seed_db import DEFAULT_ROWS

PROJECT_ROOT = Path(__file__).resolve().parent.parent
COMPOSE_FILE = PROJECT_ROOT / "docker-compose.yml"

IMAGE = "syncasync-bench:local"
CONTAINER_PYTHON = "python"
CONTAINER_CONFIG_DIR = Path("/app/servers")  # the Dockerfile's WORKDIR is /app
CONTAINER_HOST = "0.0.0.0"  # published as 127.0.0.1:PORT:PORT, see PUBLISH_HOST
PUBLISH_HOST = "127.0.0.1"

DB_SERVICE = "db"
DB_IMAGE = "postgres:15"
PYTHON_IMAGE = "python:3.11-slim"  # the Dockerfile's default for its PYTHON_IMAGE build argument
DB_USER = DB_PASSWORD = DB_NAME = "bench"
DATABASE_URL = f"postgresql://{DB_USER}:{DB_PASSWORD}@{DB_SERVICE}:5432/{DB_NAME}"

# Servers in port order: uvicorn keeps the seed's ports (async 8000, sync 8001), gunicorn takes
# 8002/8003, hypercorn 8004/8005, granian 8006/8007. The container listens on the same port it
# is published on.
SERVER_ORDER = (ServerName.uvicorn, ServerName.gunicorn, ServerName.hypercorn, ServerName.granian)
PORTS: dict[tuple[ServerName, Mode], int] = {
    (server, mode): SEED_PORTS[mode] + 2 * i
    for i, server in enumerate(SERVER_ORDER)
    for mode in (Mode.async_, Mode.sync)
}


def variable(name: str, default: object) -> str:
    """`${NAME:-default}`: the host's NAME if set and not empty, else the default."""
    return f"${{{name}:-{default}}}"


# WORKERS: the registry takes an int and validates it, so `${WORKERS:-1}` cannot go through it.
# Instead the argv is rendered with an improbable worker count, and the one argv element equal to
# it is replaced by the compose variable; rendering fails unless exactly one element matches.
# `WORKERS=4 docker compose up` then starts every server with 4 workers, and
# tests/test_compose.py checks that substituting a count N gives server_argv(workers=N).
# (The other way, rendering workers=1 and documenting an override file, would leave a second,
# hand-written copy of every command to drift.) The default is the registry's own.
_WORKERS_SENTINEL = 987_654_321
WORKERS_VARIABLE = variable(
    "WORKERS", next(f.default for f in dataclasses.fields(Launch) if f.name == "workers")
)


# For users behind a mirror or registry proxy: every public image can be renamed, and the
# apps' base image is a build argument of the Dockerfile (ARG before FROM).
BUILD = {"context": ".", "args": {"PYTHON_IMAGE": variable("PYTHON_IMAGE", PYTHON_IMAGE)}}

# On `docker compose down`, `stop` or Ctrl-C, each container gets SIGTERM, and SIGKILL only
# after the grace period (10 s by default). Two things made services wait that long:
# - PID 1 in a container gets no default signal action, so a process without a SIGTERM handler
#   ignores it: the seed (plain Python) and wrk (which handles only SIGINT) waited 10 s.
#   `init: true` puts Docker's init as PID 1, which forwards the signal to the real process.
# - A collapsed sync server answers SIGTERM with a graceful shutdown that waits for requests
#   stuck in the threadpool until their pool timeout (uvicorn and hypercorn waited 10 s).
#   Such a server is killed after 3 s, as the harness does (Server.stop's grace); a healthy one
#   stops in under a second.
APP_STOP_GRACE = "3s"


def service_name(server: ServerName, mode: Mode) -> str:
    return f"{server.value}-{mode.value}"


def settings_defaults() -> dict[str, str]:
    """Each name a user sets (app.settings.NAMES, the names of `make bench`) with the apps'
    default, as a shell user would write it."""
    fields = {name: field.default for name, field in Settings.model_fields.items()}

    def text(value: object) -> str:
        if isinstance(value, bool):
            return str(value).lower()
        return str(value.value if isinstance(value, Enum) else value)

    return {
        "POOLS": f"{fields['POOL_SIZE']}+{fields['MAX_OVERFLOW']}",
        "POOL_TIMEOUT": f"{fields['POOL_TIMEOUT']:g}s",
        "TOKENS": text(fields["THREADPOOL_TOKENS"]),
        "STYLE": text(fields["SESSION_STYLE"]),
        "DRIVERS": f"{text(fields['SYNC_DRIVER'])},{text(fields['ASYNC_DRIVER'])}",
        "LAYER": text(fields["LAYER"]),
        "OCCUPANCY": text(fields["OCCUPANCY"]),
    }


def app_environment() -> dict[str, str]:
    """Every name a user may set, new and old, passed through as given; unset, it is empty and
    the app takes its default (a default here would clash with an old name set in .env)."""
    names = [*NAMES, *OLD_NAMES]
    return {"DATABASE_URL": DATABASE_URL, **{name: variable(name, "") for name in names}}


def app_command(server: ServerName, mode: Mode) -> list[str]:
    launch = Launch(
        mode=mode,
        port=PORTS[server, mode],
        workers=_WORKERS_SENTINEL,
        host=CONTAINER_HOST,
        python=CONTAINER_PYTHON,
        config_dir=CONTAINER_CONFIG_DIR,
    )
    argv = server_argv(server, launch)
    if any("$" in arg for arg in argv):  # compose would interpolate it
        raise ValueError(f"{server} argv contains '$', which compose would interpolate: {argv}")
    hits = [i for i, arg in enumerate(argv) if arg == str(_WORKERS_SENTINEL)]
    if len(hits) != 1:
        raise ValueError(f"{server} argv must carry the worker count as one argument: {argv}")
    argv[hits[0]] = WORKERS_VARIABLE
    return argv


class _Flow(list[Any]):
    """A list rendered on one line ([a, b]) in the YAML."""


class _Dumper(yaml.SafeDumper):
    def ignore_aliases(self, data: Any) -> bool:
        return True  # never &anchors: each service is written out in full


_Dumper.add_representer(
    _Flow, lambda dumper, data: dumper.represent_sequence("tag:yaml.org,2002:seq", data, True)
)


def _depends_on_db_and_seed() -> dict[str, Any]:
    return {
        DB_SERVICE: {"condition": "service_healthy"},
        "seed": {"condition": "service_completed_successfully"},
    }


def document() -> dict[str, Any]:
    services: dict[str, Any] = {
        DB_SERVICE: {
            "image": variable("POSTGRES_IMAGE", DB_IMAGE),
            "command": _Flow(
                ["postgres", "-c", f"max_connections={variable('PG_MAX_CONNECTIONS', 300)}"]
            ),
            "environment": {
                "POSTGRES_USER": DB_USER,
                "POSTGRES_PASSWORD": DB_PASSWORD,
                "POSTGRES_DB": DB_NAME,
            },
            # Over TCP: during its first start the image runs a temporary server on the Unix
            # socket only, which pg_isready over the socket would report as ready.
            "healthcheck": {
                "test": _Flow(
                    ["CMD", "pg_isready", "-h", "127.0.0.1", "-U", DB_USER, "-d", DB_NAME]
                ),
                "interval": "2s",
                "timeout": "5s",
                "retries": 30,
            },
            "volumes": ["pgdata:/var/lib/postgresql/data"],
        },
        "seed": {
            "build": BUILD,
            "image": IMAGE,
            "init": True,
            "command": _Flow([CONTAINER_PYTHON, "-m", "servers.seed_db"]),
            "environment": {"DATABASE_URL": DATABASE_URL, "ROWS": variable("ROWS", DEFAULT_ROWS)},
            "depends_on": {DB_SERVICE: {"condition": "service_healthy"}},
        },
    }
    for server in SERVER_ORDER:
        for mode in (Mode.async_, Mode.sync):
            port = PORTS[server, mode]
            services[service_name(server, mode)] = {
                "build": BUILD,
                "image": IMAGE,
                "init": True,
                "stop_grace_period": APP_STOP_GRACE,
                "command": app_command(server, mode),
                "environment": app_environment(),
                "ports": [f"{PUBLISH_HOST}:{port}:{port}"],
                "depends_on": _depends_on_db_and_seed(),
            }
    services["wrk"] = {
        "image": variable("WRK_IMAGE", WRK_IMAGE),
        "init": True,
        "profiles": ["tools"],
        # Host networking: 127.0.0.1 inside is the host's loopback, where the ports are published.
        "network_mode": "host",
        "volumes": ["./harness:/scripts:ro"],
    }
    return {"services": services, "volumes": {"pgdata": {}}}


HEADER = """\
# Generated by `python -m servers.compose > docker-compose.yml` from servers/registry.py and
# app/settings.py; do not edit by hand (tests/test_compose.py fails if this file differs).
#
#   docker compose up --build        db, seed (resets `users` to ROWS rows), eight app services
#   docker compose run --rm wrk -t2 -c48 -d10s -s /scripts/wrk_report.lua \\
#       http://127.0.0.1:8001/users
#
{ports}
"""


def render() -> str:
    body = yaml.dump(document(), Dumper=_Dumper, sort_keys=False, width=1000)
    settings = ", ".join(f"{k}={v}" for k, v in settings_defaults().items())
    ports = (
        "Ports (host 127.0.0.1 only): uvicorn async 8000 / sync 8001, gunicorn 8002 / 8003, "
        "hypercorn 8004 / 8005, granian 8006 / 8007. In the shell or in .env, set the apps' "
        f"settings by the names make bench gives them (defaults: {settings}), and WORKERS, "
        "ROWS or PG_MAX_CONNECTIONS; POSTGRES_IMAGE, PYTHON_IMAGE or WRK_IMAGE take the images "
        "from a mirror. One stack serves one pool (POOLS=20+0 docker compose up; a list is "
        f"refused). The apps' older names ({', '.join(OLD_NAMES)}) are still read, with a note "
        "at start."
    )
    wrapped = textwrap.fill(ports, width=98, initial_indent="# ", subsequent_indent="# ")
    return HEADER.format(ports=wrapped) + "\n" + body


def check(path: Path = COMPOSE_FILE) -> int:
    expected = render()
    try:
        actual = path.read_text()
    except FileNotFoundError:
        actual = ""
    if actual == expected:
        return 0
    sys.stdout.writelines(
        difflib.unified_diff(
            actual.splitlines(keepends=True),
            expected.splitlines(keepends=True),
            fromfile=f"{path.name} (committed)",
            tofile=f"{path.name} (rendered)",
        )
    )
    print(
        f"{path} differs from the rendering; run: python -m servers.compose > {path.name}",
        file=sys.stderr,
    )
    return 1


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m servers.compose",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument(
        "--check", action="store_true", help="compare with the committed docker-compose.yml"
    )
    args = parser.parse_args(argv)
    if args.check:
        return check()
    sys.stdout.write(render())
    return 0


if __name__ == "__main__":
    sys.exit(main())
