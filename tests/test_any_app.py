"""Any app: a service the tool did not write, measured through TARGET (a path, a mix of
requests) and started by the harness through APP (under each server, in its own interpreter)."""

import json
import os
import shutil
import subprocess
import sys
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from harness.domain.axes import Stack, Verdict
from harness.domain.cell import UserApp
from harness.infra import postgres, stacks
from harness.infra.process import free_port, kill_group
from harness.store.rundir import RunDir
from servers.registry import USER_APP_DIR
from tests.cli import ROOT, harness
from tests.test_target import answers_health, hand_started

APPS = ROOT / "tests" / "apps"
ITEMS = ROOT / "examples" / "items"
QUICK = ("--duration", "1s", "--warmup", "0", "--repeats", "1")


@contextmanager
def user_server(
    app: str, directory: Path, ready: str = "/counts", python: str = sys.executable, **env: str
) -> Iterator[int]:
    """A user's app under uvicorn, started by hand (the way a user runs theirs), once `ready`
    answers 200."""
    port = free_port()
    proc = subprocess.Popen(
        [python, "-m", "uvicorn", app, "--port", str(port), "--log-level", "warning"],
        cwd=directory,
        env={**os.environ, **env},
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    try:
        assert answers_health(f"http://127.0.0.1:{port}{ready}", 30), "never ready"
        yield port
    finally:
        kill_group(proc)


def counts(port: int) -> dict[str, int]:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/counts", timeout=5) as r:
        return dict(json.load(r))


@pytest.mark.integration
def test_a_target_with_a_path_is_held_to_its_own_shape(
    pg: postgres.Database, tmp_path: Path
) -> None:
    with user_server("items_app:app", ITEMS, "/items", ITEMS_DATABASE_URL=pg.url) as port:
        out = tmp_path / "run"
        target = f"http://127.0.0.1:{port}/items"
        done = harness("run", "--target", target, "--mode", "sync", "--connections", "2",
                       *QUICK, "--out", str(out))  # fmt: skip
        assert done.returncode == 0, done.stderr
    (record,) = RunDir.open(out).records()
    assert record.verdict is Verdict.ok, record.judgement
    assert record.cell.requests is not None and record.cell.requests.label == "GET /items"
    assert record.wrk is not None and record.wrk.ok_requests > 100
    assert record.checks is not None and record.checks.answered >= 1
    assert record.checks.mismatched == 0
    summary = (out / "summary.md").read_text()
    assert f"## target http://127.0.0.1:{port} · `GET /items`" in summary
    assert "| connections | sync req/s |" in summary
    # What is not known of it is left out, not written as unknown.
    assert "unknown style" not in summary and "pool unknown" not in summary


@pytest.mark.integration
def test_a_request_mix_reaches_the_service_in_its_weights(tmp_path: Path) -> None:
    mix = tmp_path / "mix.toml"
    mix.write_text(
        '[[request]]\npath = "/orders/3"\nweight = 3\nheaders = { "X-Test" = "yes" }\n\n'
        '[[request]]\nmethod = "POST"\npath = "/orders"\nbody = \'{"sku": "a b\\"c"}\'\n'
    )
    with user_server("counting_app:app", APPS) as port:
        out = tmp_path / "run"
        done = harness("run", "--target", f"http://127.0.0.1:{port}", "--requests", str(mix),
                       "--mode", "async", "--load", "closed,open", "--rate", "200",
                       "--connections", "2", *QUICK, "--out", str(out))  # fmt: skip
        assert done.returncode == 0, done.stderr
        seen = counts(port)
    records = RunDir.open(out).records()
    assert {r.verdict for r in records} == {Verdict.ok}
    assert {r.cell.rate for r in records} == {None, 200.0}  # wrk, and the open loop
    get, post = seen["GET /orders/3 yes -"], seen['POST /orders - {"sku": "a b\\"c"}']
    assert set(seen) == {"GET /orders/3 yes -", 'POST /orders - {"sku": "a b\\"c"}'}
    assert 2.7 < get / post < 3.3, seen
    assert all(r.cell.requests and r.cell.requests.source == str(mix) for r in records)
    assert all(r.replay and f"REQUESTS={mix}" in r.replay.command for r in records)


@pytest.mark.integration
def test_answers_of_another_shape_under_load_are_errors(tmp_path: Path) -> None:
    with user_server("counting_app:app", APPS) as port:
        out = tmp_path / "run"
        done = harness("run", "--target", f"http://127.0.0.1:{port}/flaky", "--mode", "async",
                       "--connections", "2", *QUICK, "--out", str(out))  # fmt: skip
    assert done.returncode == 0, done.stderr
    (record,) = RunDir.open(out).records()
    assert record.verdict is Verdict.errors and record.judged_by == "answers"
    assert record.checks is not None and record.checks.mismatched >= 1
    assert 'GET /flaky answered another shape: {"error": "text"}' in record.judgement


@pytest.mark.integration
def test_a_frozen_target_is_not_measured_again(pg: postgres.Database, tmp_path: Path) -> None:
    postgres.reset_dataset(pg.url, 10)
    # The seed's deadlock, small: 4 tokens wait for 1 connection held by a request that waits
    # for a token.
    env = {"SESSION_STYLE": "dependency", "POOLS": "1+0", "TOKENS": "4", "POOL_TIMEOUT": "30s"}
    with hand_started("uvicorn", pg.url, **env) as (port, _):
        out = tmp_path / "run"
        done = harness("run", "--target", f"http://127.0.0.1:{port}", "--mode", "sync",
                       "--connections", "2,16", "--duration", "2s", "--warmup", "0",
                       "--repeats", "2", "--timeout", "1s", "--out", str(out))  # fmt: skip
    assert done.returncode == 0, done.stderr
    records = {(r.cell.connections, r.repeat): r for r in RunDir.open(out).records()}
    assert records[(2, 1)].verdict is Verdict.ok and records[(2, 2)].verdict is Verdict.ok
    assert records[(16, 1)].verdict is Verdict.collapsed
    skipped = records[(16, 2)]
    assert skipped.verdict is Verdict.not_measured and skipped.wrk is None
    assert skipped.judgement == "frozen since round 1 at 16 connections"
    summary = (out / "summary.md").read_text()
    assert "| 16 |" in summary and "collapsed 1/1" not in summary
    assert "collapsed; 1 not measured (frozen since round 1 at 16 connections)" in summary


@pytest.mark.integration
def test_the_threadpool_is_sized_without_editing_the_app() -> None:
    port = free_port()
    env = {
        **os.environ,
        "SYNCASYNC_APP": "counting_app:app",
        "SYNCASYNC_TOKENS": "7",
        "PYTHONPATH": os.pathsep.join([str(APPS), str(USER_APP_DIR)]),
    }
    argv = [sys.executable, "-m", "uvicorn", "syncasync_userapp:app", "--port", str(port)]
    proc = subprocess.Popen(argv, cwd=APPS, env=env, start_new_session=True,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)  # fmt: skip
    try:
        assert answers_health(f"http://127.0.0.1:{port}/threadpool", 30)
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/threadpool", timeout=5) as r:
            assert json.load(r)["anyio"] == 7
    finally:
        kill_group(proc)


def _app_run(out: Path, pg_url: str, python: str, servers: str) -> list:
    done = harness("run", "--app", "items_app:app", "--app-dir", str(ITEMS),
                   "--app-python", python, "--app-env", f"ITEMS_DATABASE_URL={pg_url}",
                   "--app-path", "/items", "--mode", "sync", "--server", servers,
                   "--tokens", "8", "--connections", "2", *QUICK, "--out", str(out))  # fmt: skip
    assert done.returncode == 0, done.stderr
    return RunDir.open(out).records()


@pytest.mark.integration
def test_an_app_is_started_under_each_server(pg: postgres.Database, tmp_path: Path) -> None:
    records = _app_run(tmp_path / "run", pg.url, sys.executable, "uvicorn,hypercorn")
    assert {r.cell.known("name") for r in records} == {"uvicorn", "hypercorn"}
    for r in records:
        assert r.verdict is Verdict.ok, r.judgement
        assert isinstance(r.cell.server, UserApp) and r.cell.server.tokens == 8
        assert r.wrk is not None and r.wrk.ok_requests > 100
        assert r.checks is not None and r.checks.mismatched == 0
        assert r.cpu is not None and r.cpu.server_s  # the harness started it: its CPU is known
    summary = (tmp_path / "run" / "summary.md").read_text()
    assert "## uvicorn app items_app:app · `GET /items`" in summary
    assert "- PostgreSQL: your app's own" in summary


@pytest.mark.integration
def test_an_app_runs_in_its_own_interpreter(pg: postgres.Database, tmp_path: Path) -> None:
    python = str(stacks.ensure_venv(Stack.y2021))  # FastAPI 0.63, SQLAlchemy 1.4, uvicorn 0.13
    records = _app_run(tmp_path / "run", pg.url, python, "uvicorn,gunicorn")
    assert {r.verdict for r in records} == {Verdict.ok}, [r.judgement for r in records]
    (entry,) = RunDir.open(tmp_path / "run").metadata()["provenance"]
    packages = entry["app_environments"][python]["packages"]
    assert packages["fastapi"] == "0.63.0" and packages["sqlalchemy"].startswith("1.4")


def test_an_interpreter_without_the_server_is_refused_in_one_line(tmp_path: Path) -> None:
    bare = tmp_path / "bare"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(bare)], check=True)
    done = harness("run", "--app", "items_app:app", "--app-dir", str(ITEMS),
                   "--app-python", str(bare / "bin" / "python"), "--app-path", "/items",
                   "--mode", "sync", "--dry-run")  # fmt: skip
    assert done.returncode == 2
    (line,) = done.stderr.strip().splitlines()
    assert "APP_PYTHON:" in line and "has no uvicorn, which SERVER=uvicorn needs" in line


def _namespace_problem() -> str | None:
    """Why this machine cannot give a test a network namespace of its own, if it cannot."""
    if not (shutil.which("unshare") and shutil.which("ip")):
        return "unshare (util-linux) or ip (iproute2) is not installed"
    tried = subprocess.run(
        ["unshare", "-rn", "ip", "addr", "add", "10.77.0.1/32", "dev", "lo"],
        capture_output=True,
        text=True,
    )
    return None if tried.returncode == 0 else f"no network namespace here: {tried.stderr.strip()}"


@pytest.mark.integration
def test_a_remote_target_is_loaded_only_when_allowed(tmp_path: Path) -> None:
    if problem := _namespace_problem():
        pytest.skip(problem)
    # A namespace of the test's own, where 10.77.0.1 is a non-loopback address of this "machine":
    # nothing outside it is ever sent anything.
    script = """
set -e
ip link set lo up
ip addr add 10.77.0.1/32 dev lo
"$PYTHON" -m uvicorn counting_app:app --app-dir "$APPS" --host 10.77.0.1 --port 18777 \
    --log-level warning &
server=$!
trap 'kill $server' EXIT
for i in $(seq 100); do "$PYTHON" -c "import urllib.request as u; \
u.urlopen('http://10.77.0.1:18777/counts', timeout=1)" 2>/dev/null && break; sleep 0.1; done
set +e
"$PYTHON" -m harness run --target http://10.77.0.1:18777/orders/1 --mode async --dry-run
echo "refused=$?"
"$PYTHON" -m harness run --target http://10.77.0.1:18777/orders/1 --mode async --allow-remote \
    --connections 2 --duration 1s --warmup 0 --repeats 1 --out "$OUT"
echo "measured=$?"
"""
    out = tmp_path / "run"
    env = {**os.environ, "PYTHON": sys.executable, "APPS": str(APPS), "OUT": str(out)}
    done = subprocess.run(
        ["unshare", "-rn", "sh", "-c", script],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert "refused=2" in done.stdout, done.stderr
    assert "say so with ALLOW_REMOTE=1" in done.stderr
    assert "measured=0" in done.stdout, done.stderr
    (record,) = RunDir.open(out).records()
    assert record.verdict is Verdict.ok and record.cell.target == "http://10.77.0.1:18777"
    assert (
        "- Remote target (10.77.0.1): every latency includes the network"
        in (out / "summary.md").read_text()
    )


@pytest.mark.integration
def test_a_failure_map_of_an_app_finds_its_deadlock(tmp_path: Path) -> None:
    # The seed's deadlock in a user's app: 4 tokens, a pool of 1, a session from `Depends`; a
    # request that holds the connection needs a token to finish while 4 others wait for it.
    # Its database: the throwaway PostgreSQL the harness starts when APP_ENV asks for one.
    env = "ITEMS_DATABASE_URL={database} ITEMS_POOL_SIZE=1 ITEMS_MAX_OVERFLOW=0"
    out = tmp_path / "map"
    done = harness("map", "--app", "items_app:app", "--app-dir", str(ITEMS), "--app-env", env,
                   "--app-path", "/items", "--mode", "sync", "--server", "uvicorn",
                   "--tokens", "4", "--workers", "1", "--start", "2", "--ceiling", "16",
                   "--duration", "1s", "--timeout", "1s", "--onsets", "cold,warm",
                   "--boundary-probes", "1", "--out", str(out))  # fmt: skip
    assert done.returncode == 0, done.stderr
    records = RunDir.open(out).records()
    held = [r.cell.connections for r in records if r.verdict is Verdict.ok]
    froze = [r for r in records if r.verdict is Verdict.collapsed]
    assert held and froze and max(held) < min(r.cell.connections for r in froze)
    assert {r.cell.onset for r in records} == {"cold", "warm"}
    # Where its threads stood: every token's thread waits for the one pooled connection.
    dumps = [r.threads for r in froze if r.threads and not r.threads.error]
    assert dumps and all(d.waiting_for_connection >= 3 for d in dumps)
    summary = (out / "summary.md").read_text()
    assert "| app | onset | tokens T | workers | measured |" in summary
    assert "threadpool threads waiting for a pooled connection" in summary
    assert "Ceilings" not in summary  # none is measured for a user's app
    assert "throwaway cluster" in summary
    # The record keeps the placeholder, not the throwaway's URL: a resume gets its own.
    assert {r.cell.user_app.env for r in records if r.cell.user_app} == {
        (
            ("ITEMS_DATABASE_URL", "{database}"),
            ("ITEMS_POOL_SIZE", "1"),
            ("ITEMS_MAX_OVERFLOW", "0"),
        )
    }


@pytest.mark.integration
def test_a_decision_sets_a_sync_app_against_an_async_one(
    pg: postgres.Database, tmp_path: Path
) -> None:
    out = tmp_path / "decide"
    done = harness("decide", "--app", "items_app:app,items_async:app", "--modes", "sync,async",
                   "--app-dir", str(ITEMS), "--app-env", f"ITEMS_DATABASE_URL={pg.url}",
                   "--app-path", "/items", "--server", "uvicorn", "--workers", "1",
                   "--connections", "2", "--duration", "1s", "--repeats", "2", "--budget", "0",
                   "--out", str(out))  # fmt: skip
    assert done.returncode == 0, done.stderr
    records = RunDir.open(out).records()
    assert {(r.cell.mode, r.cell.user_app.app) for r in records if r.cell.user_app} == {
        ("sync", "items_app:app"),
        ("async", "items_async:app"),
    }
    page = (out / "decision.md").read_text()
    assert "- Your apps: `items_app:app` (sync), `items_async:app` (async)" in page
    assert "| - | - |" in page  # its database latency and rows are the app's own
    assert "async / sync" in page and "sync app" in page
