"""The demo app's mistakes, each served by a real server as a user would start it, for
`make diagnose` to name: the reference's diagnosis reports (`make diagnose-examples`)."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from pathlib import Path

from harness.domain.axes import Latency, Mode, Pool, SessionStyle
from harness.domain.cell import ServerConfig
from harness.domain.errors import HarnessError
from harness.infra import postgres, stacks
from harness.infra.process import free_port
from harness.infra.relay import relayed
from harness.infra.server import ServerProcess
from harness.run.cell import server_env
from servers.registry import Launch, ServerName

START_S = 60.0


@dataclass(frozen=True)
class Example:
    name: str
    about: str  # what it is, for the page
    server: ServerName
    mode: Mode
    style: SessionStyle
    workers: int = 1
    latency: str = "0"

    def config(self) -> ServerConfig:
        return ServerConfig(
            name=self.server,
            style=self.style,
            pool=Pool(5, 10),
            tokens=40,
            workers=self.workers,
            rows=10,
            pool_timeout_s=30.0,
            occupancy=False,  # a user's service has no side channel
            db_latency=Latency.parse(self.latency),
        )


EXAMPLES = (
    Example(
        "deadlock-uvicorn",
        "the seed's app: sync, a `yield` dependency's session, 40 tokens, pool 5+10",
        ServerName.uvicorn,
        Mode.sync,
        SessionStyle.dependency,
    ),
    Example(
        "deadlock-gunicorn",
        "the same app under gunicorn with 2 uvicorn workers",
        ServerName.gunicorn,
        Mode.sync,
        SessionStyle.dependency,
        workers=2,
    ),
    Example(
        "blocked-loop",
        "`async def` endpoints calling the sync session (style `blocking`), 5 ms each way to "
        "PostgreSQL",
        ServerName.uvicorn,
        Mode.async_,
        SessionStyle.blocking,
        latency="5ms",
    ),
    Example(
        "healthy",
        "the fix of the deadlock: the session opened inside the endpoint (style `context`), "
        "gunicorn with 2 uvicorn workers",
        ServerName.gunicorn,
        Mode.sync,
        SessionStyle.context,
        workers=2,
    ),
)
BY_NAME = {e.name: e for e in EXAMPLES}


@contextmanager
def database() -> Iterator[str]:
    with postgres.throwaway_cluster(max_connections=300) as db:
        yield db.url


@contextmanager
def serving(example: Example, db_url: str, log: Path) -> Iterator[int]:
    """The example's server, answering, on a free port of 127.0.0.1 (its port)."""
    config = example.config()
    postgres.reset_dataset(db_url, config.rows)
    with ExitStack() as stack:
        relay = stack.enter_context(relayed(db_url, config.db_latency))
        launch = Launch(
            mode=example.mode,
            port=free_port(),
            workers=config.workers,
            stack=config.stack,
            python=str(stacks.venv_python(config.stack)),
        )
        env = server_env(config, example.mode, relay.url if relay else db_url)
        server = stack.enter_context(ServerProcess(config.name, launch, env, log))
        if not server.wait_ready(START_S):
            raise HarnessError(f"the {example.name} example's server did not start; see {log}")
        yield launch.port
