"""The compose stack end to end, on a real Docker engine: `make test-docker`.

Builds the image, starts db, seed and the eight app services under a project name of its own,
checks every service on 127.0.0.1, runs the `wrk` service with the JSON report, measures a sync
service through the harness's target mode with wrk in a container (it must freeze at 100
connections), times how each service stops, and checks that `down -v` leaves no container,
volume or network of the project. Skipped, with the reason, where no Docker engine answers.

It runs whatever images the engine has under the compose file's names (postgres:15,
python:3.11-slim, skandyla/wrk, or POSTGRES_IMAGE, PYTHON_IMAGE and WRK_IMAGE).
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from app.settings import OLD_NAMES
from servers import compose
from servers.seed_db import DEFAULT_ROWS
from tests.cli import harness

pytestmark = pytest.mark.docker

ROOT = Path(__file__).resolve().parent.parent
HOST = "127.0.0.1"
APPS = {compose.service_name(s, m): port for (s, m), port in compose.PORTS.items()}
TARGET_SERVICE, TARGET_PORT = "gunicorn-sync", 8003  # the freeze docs/docker.md's checks name
# The default stop timeout of compose; no service may need it (servers/compose.py).
DOCKER_STOP_TIMEOUT_S = 10.0


def _engine_problem() -> str | None:
    if shutil.which("docker") is None:
        return "no docker command"
    try:
        info = subprocess.run(["docker", "info"], capture_output=True, text=True, timeout=30)
    except subprocess.TimeoutExpired:
        return "`docker info` did not answer within 30 s"
    if info.returncode != 0:
        lines = (info.stderr or info.stdout).strip().splitlines()
        return f"no Docker engine answers `docker info`: {lines[-1] if lines else info.returncode}"
    return None


def compose_client() -> list[str]:
    """`docker compose` (v2) where the plugin exists, else the standalone `docker-compose`."""
    probe = subprocess.run(["docker", "compose", "version"], capture_output=True, timeout=30)
    if probe.returncode == 0:
        return ["docker", "compose"]
    standalone = shutil.which("docker-compose")
    if standalone is None:
        pytest.skip("no compose client: neither `docker compose` nor `docker-compose`")
    return [standalone]


class Stack:
    """One compose project, its own name, the compose file's defaults for every setting."""

    def __init__(self) -> None:
        self.client = compose_client()
        # Its own project: containers, the volume and the network carry this name and label,
        # so the test neither touches nor counts any other stack.
        self.project = f"syncasynctest{os.getpid()}"
        # The verdicts below hold for the apps' defaults: a shell's or .env's POOLS (or its old
        # name POOL_SIZE) or WORKERS must not change them (the environment wins over .env).
        self.env = {
            **os.environ,
            **compose.settings_defaults(),
            **{old: "" for old in OLD_NAMES},
            "WORKERS": "1",
            "ROWS": str(DEFAULT_ROWS),
        }

    def run(
        self, *args: str, timeout: float = 120, check: bool = True
    ) -> subprocess.CompletedProcess[str]:
        argv = [*self.client, "-f", str(ROOT / "docker-compose.yml"), "-p", self.project, *args]
        out = subprocess.run(
            argv, capture_output=True, text=True, timeout=timeout, cwd=ROOT, env=self.env
        )
        if check and out.returncode != 0:
            pytest.fail(f"{' '.join(args)} exited {out.returncode}:\n{out.stderr[-2000:]}")
        return out

    def container(self, service: str) -> str:
        ids = self.run("ps", "-a", "-q", service).stdout.split()
        assert len(ids) == 1, (service, ids)
        return ids[0]

    def leftovers(self) -> dict[str, list[str]]:
        """Containers, volumes and networks of this project, by label and by name."""
        found: dict[str, list[str]] = {}
        for kind, listing in (
            ("containers", ["ps", "-a"]),
            ("volumes", ["volume", "ls"]),
            ("networks", ["network", "ls"]),
        ):
            names: set[str] = set()
            label = f"label=com.docker.compose.project={self.project}"
            for selector in (label, f"name={self.project}"):
                out = subprocess.run(
                    ["docker", *listing, "-q", "--filter", selector],
                    capture_output=True,
                    text=True,
                    timeout=30,
                    check=True,
                )
                names.update(out.stdout.split())
            found[kind] = sorted(names)
        return found


def get_json(port: int, path: str) -> tuple[int, Any]:
    with urllib.request.urlopen(f"http://{HOST}:{port}{path}", timeout=5) as response:
        return response.status, json.loads(response.read())


def port_is_free(port: int) -> bool:
    with socket.socket() as s:
        # As a server would bind it: connections of an earlier run in TIME_WAIT do not count.
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind((HOST, port))
        except OSError:
            return False
    return True


@pytest.fixture(scope="module")
def stack() -> Iterator[Stack]:
    # Skipped here rather than for the module, so that the tests are collected and reported as
    # skipped (pytest -m docker would otherwise collect nothing and exit 5).
    if (problem := _engine_problem()) is not None:
        pytest.skip(problem)
    busy = [port for port in APPS.values() if not port_is_free(port)]
    if busy:
        pytest.fail(f"ports {busy} on {HOST} are taken; the compose stack publishes 8000-8007")
    s = Stack()
    try:
        s.run("build", timeout=1200)
        s.run("up", "-d", timeout=300)
        yield s
    finally:
        s.run("down", "-v", "--remove-orphans", timeout=300, check=False)


def wait_healthy(port: int, timeout: float = 120.0) -> None:
    deadline = time.monotonic() + timeout
    while True:
        try:
            if get_json(port, "/health")[0] == 200:
                return
        except OSError:
            pass
        if time.monotonic() > deadline:
            pytest.fail(f"{HOST}:{port}/health did not answer within {timeout:g}s")
        time.sleep(0.5)


# --- the stack as `up -d` left it -------------------------------------------------------------


def test_db_is_healthy_and_the_seed_finished(stack: Stack) -> None:
    for port in APPS.values():
        wait_healthy(port)
    inspect = ["docker", "inspect", "-f"]
    db = subprocess.run(
        [*inspect, "{{.State.Health.Status}}", stack.container("db")],
        capture_output=True,
        text=True,
        check=True,
    )
    assert db.stdout.strip() == "healthy"
    seed = subprocess.run(
        [*inspect, "{{.State.Status}} {{.State.ExitCode}}", stack.container("seed")],
        capture_output=True,
        text=True,
        check=True,
    )
    assert seed.stdout.split() == ["exited", "0"]


@pytest.mark.parametrize("service", list(APPS))
def test_every_service_serves_the_seeded_rows_on_loopback(stack: Stack, service: str) -> None:
    port = APPS[service]
    wait_healthy(port)
    assert get_json(port, "/health") == (200, {"status": "ok"})
    status, users = get_json(port, "/users")
    assert status == 200
    assert users == [{"email": f"user{i}@example.com"} for i in range(1, DEFAULT_ROWS + 1)]


def test_ports_are_published_on_loopback_only(stack: Stack) -> None:
    for service, port in APPS.items():
        out = stack.run("port", service, str(port)).stdout.strip()
        assert out == f"{HOST}:{port}", (service, out)


def test_the_wrk_service_prints_the_json_report(stack: Stack) -> None:
    from harness.infra import wrk

    url = f"http://{HOST}:{APPS['uvicorn-async']}/users"
    out = stack.run(
        *("run", "--rm", "-T", "wrk", "-t2", "-c12", "-d2s"),
        *("-s", "/scripts/wrk_report.lua", url),
        timeout=120,
    )
    result = wrk.parse(out.stdout, 12)
    assert result.requests > 0 and result.duration_s >= 1.5
    assert result.histograms is not None  # the image's wrk exports its buckets too
    assert result.status_errors == 0 and result.connect_errors == 0 and result.timeouts == 0
    assert 0 < result.p50_ms <= result.p99_ms <= result.max_ms


# --- the harness against a compose service -----------------------------------------------------


def test_target_mode_with_wrk_in_docker_judges_the_sync_freeze(
    stack: Stack, tmp_path: Path
) -> None:
    out = tmp_path / "run"
    image = ("--wrk-image", os.environ["WRK_IMAGE"]) if os.environ.get("WRK_IMAGE") else ()
    done = harness(
        *("run", "--target", f"http://{HOST}:{TARGET_PORT}", "--modes", "sync"),
        *("--wrk", "docker", *image, "--connections", "12,100", "--repeats", "1"),
        *("--duration", "3s", "--warmup", "1s", "--out", str(out)),
        timeout=300,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    records = [json.loads(p.read_text()) for p in (out / "cells").glob("*.json")]
    verdicts = {r["cell"]["connections"]: r["verdict"] for r in records}
    assert verdicts == {12: "ok", 100: "collapsed"}, verdicts
    assert all(r["cell"]["target"] == f"http://{HOST}:{TARGET_PORT}" for r in records)


# --- stopping: every service promptly, then nothing of the project left ------------------------


def test_every_service_stops_well_before_the_stop_timeout(stack: Stack) -> None:
    """The frozen TARGET_SERVICE included: it is killed after the apps' grace period."""
    url = f"http://{HOST}:{APPS['uvicorn-async']}/health"
    probe = f"{stack.project}_wrkstop"
    stack.run("run", "-d", "-T", "--name", probe, "wrk", "-t1", "-c1", "-d60s", url)
    took: dict[str, float] = {}
    try:
        t0 = time.monotonic()
        subprocess.run(["docker", "stop", probe], capture_output=True, check=True, timeout=60)
        took["wrk"] = time.monotonic() - t0
    finally:
        subprocess.run(["docker", "rm", "-f", probe], capture_output=True, timeout=60)
    for service in [*APPS, "db"]:
        t0 = time.monotonic()
        stack.run("stop", service, timeout=60)
        took[service] = time.monotonic() - t0
    slow = {name: round(s, 1) for name, s in took.items() if s >= DOCKER_STOP_TIMEOUT_S / 2}
    assert not slow, f"waited for the stop timeout: {slow} (all: {took})"


def test_down_leaves_no_container_volume_or_network(stack: Stack) -> None:
    assert stack.leftovers()["containers"], "the stack should still exist before down"
    t0 = time.monotonic()
    stack.run("down", "-v", "--remove-orphans", timeout=120)
    assert time.monotonic() - t0 < DOCKER_STOP_TIMEOUT_S
    assert stack.leftovers() == {"containers": [], "volumes": [], "networks": []}
