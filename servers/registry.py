"""The one registry of servers: for a server, an app, a host, a port and a worker count, the argv.

The harness, `make serve` and the compose file all take their command lines from here. It imports
only the standard library, so it works wherever servers/ is copied (e.g. a Docker image).
"""

import sys
from collections.abc import Callable
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path

CONFIG_DIR = Path(__file__).resolve().parent
LOOPBACK = "127.0.0.1"


class Mode(StrEnum):
    sync = "sync"
    async_ = "async"


class ServerName(StrEnum):
    uvicorn = "uvicorn"
    gunicorn = "gunicorn"
    hypercorn = "hypercorn"
    granian = "granian"


class Stack(StrEnum):
    """Which versions run the apps (harness/stacks.py builds the environment for each)."""

    current = "current"  # requirements.lock
    y2021 = "2021"  # requirements-2021.lock: FastAPI 0.63, Starlette 0.13.6, SQLAlchemy 1.4


STACK_LOCKS = {Stack.current: "requirements.lock", Stack.y2021: "requirements-2021.lock"}
# Servers the 2021 stack has (requirements-2021.lock); the harness refuses the others there.
SERVERS_2021 = (ServerName.uvicorn, ServerName.gunicorn, ServerName.hypercorn)

# The seed's ports for `make serve` and compose: async on 8000, sync on 8001.
SEED_PORTS = {Mode.async_: 8000, Mode.sync: 8001}

# The load generator's image, for `WRK=docker` and the compose file's `wrk` service: the seed's.
WRK_IMAGE = "skandyla/wrk"

APP_FACTORY = {Mode.sync: "app.sync_app:create_app", Mode.async_: "app.async_app:create_app"}
# A user's app (APP=module:attr) is served through this module (servers/userapp/), which imports
# it and sizes the threadpool without editing it.
USER_APP = "syncasync_userapp:app"
USER_APP_DIR = CONFIG_DIR / "userapp"


@dataclass(frozen=True)
class Launch:
    """What a server needs to know to start: which app, where, how many processes."""

    mode: Mode
    port: int
    workers: int = 1
    host: str = LOOPBACK
    python: str = sys.executable  # an interpreter that has this stack's packages
    config_dir: Path = CONFIG_DIR  # where this machine (or container) has servers/
    stack: Stack = Stack.current
    # A user's app (its module:attr, given to servers/userapp/ in the environment): served with
    # the loop and HTTP parser its environment has, and gunicorn with this worker class.
    user: bool = False
    worker_class: str = ""

    def __post_init__(self) -> None:
        try:
            object.__setattr__(self, "stack", Stack(self.stack))
        except ValueError:
            choices = ", ".join(Stack)
            raise ValueError(f"unknown stack {self.stack!r}; choose from {choices}") from None
        if not 1 <= self.port <= 65535:
            raise ValueError(f"port must be 1-65535, got {self.port}")
        if self.workers < 1:
            raise ValueError(f"workers must be at least 1, got {self.workers}")


def _uvicorn(launch: Launch) -> list[str]:
    # The same for both stacks: uvicorn 0.13.4 (February 2021) already has --factory.
    app = [USER_APP] if launch.user else ["--factory", APP_FACTORY[launch.mode]]
    return [
        launch.python,
        "-m",
        "uvicorn",
        *app,
        "--host",
        launch.host,
        "--port",
        str(launch.port),
        "--workers",
        str(launch.workers),
        "--loop",
        "auto" if launch.user else "uvloop",
        "--http",
        "auto" if launch.user else "httptools",
        "--no-access-log",
        "--log-level",
        "warning",
    ]


def _gunicorn_user(launch: Launch) -> list[str]:
    # Not servers/gunicorn.conf.py, which checks the demo app's settings: its other settings,
    # as flags.
    return [
        launch.python,
        "-m",
        "gunicorn",
        "--worker-class",
        launch.worker_class or "uvicorn.workers.UvicornWorker",
        "--error-logfile",
        "-",
        "--log-level",
        "warning",
        "--timeout",
        "30",
        "--graceful-timeout",
        "5",
        "--bind",
        f"{launch.host}:{launch.port}",
        "--workers",
        str(launch.workers),
        USER_APP,
    ]


def _gunicorn(launch: Launch) -> list[str]:
    if launch.user:
        return _gunicorn_user(launch)
    # gunicorn.conf.py names uvicorn-worker's class; in 2021 that package did not exist and the
    # worker came with uvicorn itself. A command-line flag overrides the config file.
    worker_class = (
        ["--worker-class", "uvicorn.workers.UvicornWorker"] if launch.stack is Stack.y2021 else []
    )
    return [
        launch.python,
        "-m",
        "gunicorn",
        "--config",
        str(launch.config_dir / "gunicorn.conf.py"),
        *worker_class,
        "--bind",
        f"{launch.host}:{launch.port}",
        "--workers",
        str(launch.workers),
        f"{APP_FACTORY[launch.mode]}()",
    ]


def _hypercorn(launch: Launch) -> list[str]:
    # Hypercorn 0.11 (2021) sets the log level from its command line, default INFO, over the
    # config file's; repeat the file's level there (a user's environment may be that old).
    log_level = ["--log-level", "WARNING"] if launch.stack is Stack.y2021 or launch.user else []
    return [
        launch.python,
        "-m",
        "hypercorn",
        "--config",
        str(launch.config_dir / "hypercorn.toml"),
        *log_level,
        "--bind",
        f"{launch.host}:{launch.port}",
        "--workers",
        str(launch.workers),
        USER_APP if launch.user else f"{APP_FACTORY[launch.mode]}()",
    ]


def _granian(launch: Launch) -> list[str]:
    # FastAPI's sync endpoints run in AnyIO's threadpool (THREADPOOL_TOKENS), as under the other
    # servers, not in granian's threads: under ASGI granian runs one event loop per worker on a
    # single blocking thread (it refuses more) and does its network I/O on runtime threads. Both
    # are written out at 1, the defaults, so a change of granian's defaults cannot change what is
    # measured; uvloop and HTTP/1 as with uvicorn. Its --backpressure is left at its default
    # (backlog / workers): docs/stacks.md (granian) says what setting it at the pool's capacity
    # does.
    if launch.stack is not Stack.current:
        raise ValueError(
            f"granian is not part of the {launch.stack} stack ({STACK_LOCKS[launch.stack]}); "
            "choose uvicorn, gunicorn or hypercorn"
        )
    return [
        launch.python,
        "-m",
        "granian",
        "--interface",
        "asgi",
        *([USER_APP] if launch.user else ["--factory", APP_FACTORY[launch.mode]]),
        "--host",
        launch.host,
        "--port",
        str(launch.port),
        "--workers",
        str(launch.workers),
        "--blocking-threads",
        "1",
        "--runtime-threads",
        "1",
        "--loop",
        "auto" if launch.user else "uvloop",
        "--http",
        "1",
        "--no-ws",
        "--log-level",
        "warning",
    ]


@dataclass(frozen=True)
class Server:
    name: ServerName
    describe: str
    argv: Callable[[Launch], list[str]]


REGISTRY: dict[ServerName, Server] = {
    s.name: s
    for s in (
        Server(ServerName.uvicorn, "uvicorn (uvloop, httptools)", _uvicorn),
        Server(ServerName.gunicorn, "gunicorn with uvicorn workers", _gunicorn),
        Server(ServerName.hypercorn, "hypercorn (asyncio workers)", _hypercorn),
        Server(ServerName.granian, "granian (Rust HTTP, ASGI, uvloop)", _granian),
    )
}


def server_argv(name: str, launch: Launch) -> list[str]:
    """The argv that starts `name` for `launch`; the working directory must be the project root."""
    try:
        server = REGISTRY[ServerName(name)]
    except ValueError:
        raise ValueError(f"unknown server {name!r}; choose from {', '.join(REGISTRY)}") from None
    return server.argv(launch)
