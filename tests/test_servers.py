"""Each server really starts from the registry and answers, in both modes (real processes)."""

import subprocess
import sys
from pathlib import Path

import psutil
import pytest

from harness.domain.axes import DRIVERS_FOR, Driver, Layer, Pool, SessionStyle
from harness.domain.cell import ServerConfig
from harness.infra import postgres
from harness.infra.process import free_port
from harness.infra.server import ServerProcess
from harness.run.cell import server_env
from servers.registry import Launch, Mode, ServerName

pytestmark = pytest.mark.integration


@pytest.mark.parametrize("server", list(ServerName))
@pytest.mark.parametrize("mode", list(Mode))
def test_server_starts_and_answers(server: str, mode: Mode, db_url: str, tmp_path: Path) -> None:
    env = {"DATABASE_URL": db_url}
    launch = Launch(mode=mode, port=free_port(), workers=2)
    proc = ServerProcess(server, launch, env, tmp_path / "server.log")
    with proc:
        assert proc.wait_ready(30), (tmp_path / "server.log").read_text()
        assert proc.get("/health") == (200, {"status": "ok"})
        status, body = proc.get("/users")
        assert status == 200 and len(body) == 10
        status, inserted = proc.get("/users/insert-data-to-test")
        assert status == 200 and isinstance(inserted["id"], int)
        assert proc.proc is not None
        members = psutil.Process(proc.proc.pid).children(recursive=True)
        listening = {
            c.laddr
            for p in [psutil.Process(proc.proc.pid), *members]
            for c in p.net_connections("tcp")
            if c.status == psutil.CONN_LISTEN
        }
        assert listening and all(addr.ip == "127.0.0.1" for addr in listening)
    assert not proc.alive
    assert all(not m.is_running() or m.status() == psutil.STATUS_ZOMBIE for m in members)


@pytest.mark.parametrize("layer", list(Layer))
@pytest.mark.parametrize(
    ("mode", "driver"), [(m, d) for m in Mode for d in DRIVERS_FOR[m]], ids=lambda p: str(p)
)
def test_every_driver_and_layer_answers_both_endpoints(
    mode: Mode, driver: Driver, layer: Layer, db_url: str, tmp_path: Path
) -> None:
    """Started from the registry as a cell starts it (uvicorn, the environment the harness
    sets): the rows, one inserted row, and the side channel's pool."""
    config = ServerConfig(
        ServerName.uvicorn, SessionStyle.dependency, Pool(5, 10), 40, 1, 10,
        driver=driver, layer=layer,
    )  # fmt: skip
    launch = Launch(mode=mode, port=free_port())
    proc = ServerProcess("uvicorn", launch, server_env(config, mode, db_url), tmp_path / "log")
    with proc:
        assert proc.wait_ready(30), (tmp_path / "log").read_text()
        title = proc.get("/openapi.json")[1]["info"]["title"]
        assert title == f"{mode} (dependency, {driver}, {layer})"
        status, body = proc.get("/users")
        assert status == 200 and len(body) == 10 and body[0] == {"email": "user1@example.com"}
        status, inserted = proc.get("/users/insert-data-to-test")
        assert status == 200 and isinstance(inserted["id"], int)
        assert postgres.count_rows(db_url) == 11
        status, occupancy = proc.get("/_occupancy")
        assert (occupancy["checked_out"], occupancy["capacity"]) == (0, 15)
    assert not proc.alive


def test_bad_setting_stops_the_server_with_a_clear_message(db_url: str) -> None:
    env = {"DATABASE_URL": db_url, "POOL_SIZE": "zero", "PATH": ""}
    out = subprocess.run(
        [sys.executable, "-c", "from app.sync_app import create_app; create_app()"],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert out.returncode == 1
    assert "invalid settings: POOL_SIZE: Input should be a valid integer" in out.stderr
    assert "Traceback" not in out.stderr
