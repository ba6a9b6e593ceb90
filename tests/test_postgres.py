import os
from pathlib import Path

import psutil
import pytest

from harness.domain.errors import HarnessError
from harness.infra import postgres
from harness.infra.process import free_port

pytestmark = pytest.mark.integration


def test_throwaway_cluster_serves_and_leaves_nothing_behind() -> None:
    with postgres.throwaway_cluster(max_connections=42) as db:
        assert db.pid is not None
        postmaster = psutil.Process(db.pid)
        data_dir = Path(postmaster.cwd())
        settings = postgres.server_settings(db.url)
        assert settings["max_connections"] == "42"
        assert postgres.reset_dataset(db.url, 7) == 7
        listening = {
            c.laddr for c in postmaster.net_connections("tcp") if c.status == psutil.CONN_LISTEN
        }
        assert listening and all(addr.ip == "127.0.0.1" for addr in listening)
        if os.geteuid() == 0:
            assert postmaster.username() != "root"
        pids = [db.pid, *(c.pid for c in postmaster.children(recursive=True))]
    assert not data_dir.exists()
    assert not any(
        psutil.pid_exists(pid) and psutil.Process(pid).status() != "zombie" for pid in pids
    )


def test_reset_dataset_is_exact_each_time(pg: postgres.Database) -> None:
    assert postgres.reset_dataset(pg.url, 25) == 25
    postgres.delete_row(pg.url, 1)
    assert postgres.count_rows(pg.url) == 24
    assert postgres.reset_dataset(pg.url, 25) == 25
    assert postgres.reset_dataset(pg.url, 0) == 0


def test_existing_database_is_used_as_given(pg: postgres.Database) -> None:
    db = postgres.check_reachable(pg.url.replace("postgresql://", "postgresql+asyncpg://"))
    assert not db.managed and db.pid is None
    assert db.url == pg.url


def test_unreachable_database_says_why() -> None:
    url = f"postgresql://bench@127.0.0.1:{free_port()}/bench"
    with pytest.raises(HarnessError, match=r"is unreachable: .*(refused|could not connect)"):
        postgres.check_reachable(url)
