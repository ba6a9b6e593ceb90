"""The 2021 stack: its venv builds from requirements-2021.lock, every server of the registry
starts under it in both modes and answers, and what 2021 lacks is refused at start.

The venv is built once (ensure_venv, cached by its marker); a fresh clone pays for that once.
"""

from __future__ import annotations

import re
import time
from pathlib import Path

import pytest

from harness.domain.errors import HarnessError
from harness.infra import postgres, stacks
from harness.infra.process import free_port
from harness.infra.server import ServerProcess
from servers.registry import SERVERS_2021, Launch, Mode, ServerName, Stack

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def python_2021() -> str:
    return str(stacks.ensure_venv(Stack.y2021))


def server_2021(
    python: str, server: str, mode: Mode, env: dict[str, str], log: Path, workers: int = 2
) -> ServerProcess:
    launch = Launch(mode=mode, port=free_port(), workers=workers, python=python, stack=Stack.y2021)
    return ServerProcess(server, launch, env, log)


def test_the_venv_is_built_from_its_lock(python_2021: str) -> None:
    lock = stacks.lock_file(Stack.y2021)
    marker = stacks.venv_dir(Stack.y2021) / stacks.MARKER
    assert marker.read_text().strip() == stacks._sha256(lock)
    pinned = dict(
        line.lower().split("==")
        for line in lock.read_text().splitlines()
        if line and not line.startswith("#")
    )
    installed = stacks.package_versions(Stack.y2021)
    assert installed["fastapi"] == "0.63.0"
    assert installed["starlette"] == "0.13.6"
    assert installed["sqlalchemy"].startswith("1.4.")
    assert installed["pydantic"].startswith("1.")
    for name in stacks.PACKAGES:  # one list for both stacks: what 2021 lacks says so
        assert installed[name] == pinned.get(name, "not installed"), name
    assert stacks.python_version(Stack.y2021).startswith("3.11.")
    assert stacks.ensure_venv(Stack.y2021) == Path(python_2021)  # cached: no rebuild


def test_a_failed_build_says_which_venv_and_why(tmp_path: Path) -> None:
    (tmp_path / "requirements-2021.lock").write_text("--no-index\nno-such-package==0.0.1\n")
    with pytest.raises(
        HarnessError, match=r"(?s)could not build the 2021 stack's venv .*no-such-package"
    ):
        stacks.ensure_venv(Stack.y2021, root=tmp_path)
    assert not (tmp_path / ".venv-2021" / stacks.MARKER).exists()


# Every server of the stack with the seed's session style and layer; the other style, and the
# layers below the ORM (SQLAlchemy 1.4 Core, psycopg2's and asyncpg's pools), under one server.
STARTS = [(server, "dependency", "orm") for server in SERVERS_2021] + [
    (ServerName.uvicorn, "context", "orm"),
    (ServerName.uvicorn, "dependency", "core"),
    (ServerName.uvicorn, "dependency", "driver"),
]


@pytest.mark.parametrize(("server", "style", "layer"), STARTS, ids=lambda p: str(p))
@pytest.mark.parametrize("mode", list(Mode))
def test_server_starts_and_answers_under_2021(
    server: str, style: str, layer: str, mode: Mode, python_2021: str, db_url: str, tmp_path: Path
) -> None:
    log = tmp_path / "server.log"
    env = {"DATABASE_URL": db_url, "SESSION_STYLE": style, "LAYER": layer}
    with server_2021(python_2021, server, mode, env, log) as proc:
        assert proc.wait_ready(30), log.read_text()
        assert proc.get("/health") == (200, {"status": "ok"})
        driver = "psycopg2" if mode is Mode.sync else "asyncpg"
        title = proc.get("/openapi.json")[1]["info"]["title"]
        assert title == f"{mode} ({style}, {driver}, {layer})"
        # FastAPI 0.63 writes OpenAPI 3.0.2 (today's writes 3.1): the 2021 stack is serving.
        assert proc.get("/openapi.json")[1]["openapi"] == "3.0.2"
        status, body = proc.get("/users")
        assert status == 200
        assert len(body) == postgres.count_rows(db_url) == 10
        assert all(set(item) == {"email"} for item in body)
        status, inserted = proc.get("/users/insert-data-to-test")
        assert status == 200 and set(inserted) == {"id"}
        assert postgres.count_rows(db_url) == 11
        assert len(proc.get("/users")[1]) == 11
    assert not proc.alive
    assert "Traceback" not in log.read_text()


REFUSED = {
    "limited": (
        {"SESSION_STYLE": "limited"},
        "invalid settings: SESSION_STYLE: 'limited' needs Depends(max_concurrency=...), "
        "which FastAPI 0.63.0 does not have",
    ),
    "tokens": (
        {"THREADPOOL_TOKENS": "40"},  # even the current stack's default, when given
        "invalid settings: THREADPOOL_TOKENS: cannot be set with Starlette 0.13.6",
    ),
    "psycopg": (
        {"SYNC_DRIVER": "psycopg"},
        "invalid settings: SYNC_DRIVER: psycopg (3) needs SQLAlchemy 2's postgresql+psycopg "
        "dialect, and SQLAlchemy 1.4.54 (the 2021 stack) has none",
    ),
}


@pytest.mark.parametrize("server", SERVERS_2021)
@pytest.mark.parametrize("refused", list(REFUSED))
def test_what_2021_lacks_is_refused_at_start(
    server: str, refused: str, python_2021: str, db_url: str, tmp_path: Path
) -> None:
    settings, message = REFUSED[refused]
    log = tmp_path / "server.log"
    # One worker: uvicorn 0.13's multi-process supervisor does not notice its workers exiting.
    env = {"DATABASE_URL": db_url, **settings}
    with server_2021(python_2021, server, Mode.sync, env, log, workers=1) as proc:
        deadline = time.monotonic() + 30
        while proc.alive and time.monotonic() < deadline:
            time.sleep(0.05)
        assert not proc.alive, f"{server} still runs with {settings}:\n{log.read_text()}"
    text = log.read_text()
    assert message in text
    assert "Traceback" not in text
    assert re.search(r"threads here|choose dependency or context|choose psycopg2$", text, re.M)


def test_the_2021_stack_collapses_at_fewer_connections_than_current(tmp_path: Path) -> None:
    """Same machine, same settings (pool 1+1, pool_timeout 2 s), one run: under 2021 sync work
    has the default executor's min(32, CPUs + 4) threads, under current AnyIO's 40 tokens."""
    from harness.domain.axes import Verdict
    from harness.store.rundir import RunDir
    from tests.cli import harness

    threads = stacks.executor_threads()
    if not threads + 2 < 24 < 40 + 2:
        pytest.skip(f"{threads} executor threads here: 24 connections cannot tell the stacks apart")
    out = tmp_path / "run"
    done = harness(
        "run",
        "--repeats",
        "1",
        "--stack",
        "current,2021",
        "--modes",
        "sync",
        "--styles",
        "dependency",
        "--pools",
        "1+1",
        "--pool-timeout",
        "2s",
        "--connections",
        "4,24",
        "--duration",
        "2s",
        "--warmup",
        "1s",
        "--out",
        str(out),
    )
    assert done.returncode == 0, done.stderr
    by = {(r.cell.stack, r.cell.connections): r for r in RunDir.open(out).records()}
    assert by[(Stack.y2021, 4)].verdict is Verdict.ok
    assert by[(Stack.y2021, 24)].verdict is Verdict.collapsed
    assert by[(Stack.y2021, 24)].pool_timeouts > 0
    assert by[(Stack.current, 24)].verdict is Verdict.ok
    # The side channel counts the executor's busy threads: never below 0 nor above its size, and
    # all of them at the freeze.
    for connections in (4, 24):
        timeline = by[(Stack.y2021, connections)].occupancy
        assert timeline is not None and timeline.samples
        for sample in timeline.samples:
            assert sample.tokens_total == threads, sample
            assert sample.tokens_in_use is not None and 0 <= sample.tokens_in_use <= threads
    assert timeline.samples[-1].tokens_in_use == threads
    summary = (out / "summary.md").read_text()
    assert f"| sync psycopg2 dependency {threads} (executor) tokens stack 2021 req/s |" in summary
    assert "fastapi 0.63.0" in summary  # the 2021 stack's versions are in the header
