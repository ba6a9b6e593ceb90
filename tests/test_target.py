"""Target mode: measure a server the test started itself; the harness starts and stops nothing."""

import csv
import os
import subprocess
from pathlib import Path

import pytest

from harness import postgres
from harness.model import Verdict
from harness.process import free_port, kill_group
from harness.server import get_json
from harness.store import RunDir
from servers.registry import Launch, Mode, server_argv
from tests.cli import ROOT, harness


@pytest.mark.integration
def test_target_mode_measures_a_hand_started_server(pg: postgres.Database, tmp_path: Path) -> None:
    postgres.reset_dataset(pg.url, 10)
    port = free_port()
    env = {**os.environ, "DATABASE_URL": pg.url, "SESSION_STYLE": "context"}
    server = subprocess.Popen(
        server_argv("hypercorn", Launch(mode=Mode.sync, port=port)),
        cwd=ROOT,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    try:
        for _ in range(300):
            try:
                if get_json(f"http://127.0.0.1:{port}/health", 1)[0] == 200:
                    break
            except OSError:
                subprocess.run(["sleep", "0.1"])
        out = tmp_path / "run"
        done = harness(
            "run",
            "--target",
            f"http://127.0.0.1:{port}",
            "--modes",
            "sync",
            "--connections",
            "1,4",
            "--duration",
            "1s",
            "--warmup",
            "0",
            "--out",
            str(out),
        )
        assert done.returncode == 0, done.stderr
        assert server.poll() is None  # the harness left the server running
    finally:
        kill_group(server)
    records = RunDir.open(out).records()
    assert len(records) == 2
    for r in records:
        assert r.verdict is Verdict.ok
        assert r.cell.target == f"http://127.0.0.1:{port}"
        assert (r.cell.server, r.cell.style, r.cell.pool, r.cell.tokens, r.cell.workers) == (
            None,
            None,
            None,
            None,
            None,
        )
        assert r.pool_timeouts is None and r.server_errors is None
        assert r.wrk is not None and r.wrk.ok_requests > 0
        assert r.cpu is not None and r.cpu.server_s is None and r.cpu.wrk_s is not None
    summary = (out / "summary.md").read_text()
    assert f"## target http://127.0.0.1:{port} · list" in summary
    assert "| connections | sync unknown req/s |" in summary
    rows = list(csv.DictReader((out / "results.csv").open()))
    assert {r["pool_size"] for r in rows} == {""} and {r["server"] for r in rows} == {""}


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--target", "http://10.0.0.5:8001"], "is not a loopback address"),
        (["--target", "http://127.0.0.1"], "needs a port"),
        (["--target", "ftp://127.0.0.1:21"], "is not a base URL"),
        (["--target", "http://127.0.0.1:8001", "--pools", "5+10"], "--pools cannot be used"),
        (["--target", "http://127.0.0.1:8001"], "MODE: say which app"),
    ],
)
def test_target_mode_refuses_what_it_cannot_honour(args: list[str], message: str) -> None:
    done = harness("run", *args)
    assert done.returncode == 2
    assert message in done.stderr and "Traceback" not in done.stderr
