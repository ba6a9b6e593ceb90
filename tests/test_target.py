"""Target mode: measure a server the test started itself; the harness starts and stops nothing."""

import csv
import os
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from harness.domain.axes import Verdict
from harness.domain.cell import Target
from harness.infra import postgres
from harness.infra.process import free_port, kill_group
from harness.infra.server import get_json
from harness.store.rundir import RunDir
from servers.registry import Launch, Mode, server_argv
from tests.cli import ROOT, harness


def answers_health(url: str, within_s: float) -> bool:
    deadline = time.monotonic() + within_s
    while time.monotonic() < deadline:
        try:
            if get_json(url, 1)[0] == 200:
                return True
        except OSError:
            time.sleep(0.1)
    return False


@contextmanager
def hand_started(
    server: str, db_url: str, *, mode: Mode = Mode.sync, workers: int = 1, **env: str
) -> Iterator[tuple[int, subprocess.Popen[bytes]]]:
    """(port, process) of a demo app started the way a user would, not by the harness."""
    port = free_port()
    proc = subprocess.Popen(
        server_argv(server, Launch(mode=mode, port=port, workers=workers)),
        cwd=ROOT,
        env={**os.environ, "DATABASE_URL": db_url, **env},
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    try:
        assert answers_health(f"http://127.0.0.1:{port}/health", within_s=30), "never ready"
        yield port, proc
    finally:
        kill_group(proc)


@pytest.mark.integration
def test_target_mode_measures_a_hand_started_server(pg: postgres.Database, tmp_path: Path) -> None:
    postgres.reset_dataset(pg.url, 10)
    with hand_started("hypercorn", pg.url, SESSION_STYLE="context") as (port, server):
        out = tmp_path / "run"
        done = harness(
            "run",
            "--repeats",
            "1",
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
    records = RunDir.open(out).records()
    assert len(records) == 2
    for r in records:
        assert r.verdict is Verdict.ok
        assert r.cell.target == f"http://127.0.0.1:{port}"
        assert r.cell.server == Target(f"http://127.0.0.1:{port}") and r.cell.config is None
        assert {r.cell.known(name) for name in ("style", "pool", "tokens", "workers")} == {None}
        assert r.pool_timeouts is None and r.server_errors is None
        assert r.wrk is not None and r.wrk.ok_requests > 0
        assert r.cpu is not None and r.cpu.server_s is None and r.cpu.wrk_s is not None
    summary = (out / "summary.md").read_text()
    assert f"## target http://127.0.0.1:{port} · list" in summary
    assert "| connections | sync req/s |" in summary  # what is unknown is left out
    # What the harness cannot know about a server it did not start is written as unknown.
    assert "- PostgreSQL: unknown (target mode" in summary
    assert "- Packages: unknown (target mode" in summary
    (entry,) = RunDir.open(out).metadata()["provenance"]
    assert entry["packages"] is None and entry["database"] is None
    rows = list(csv.DictReader((out / "results.csv").open()))
    assert {r["pool_size"] for r in rows} == {""} and {r["server"] for r in rows} == {""}
