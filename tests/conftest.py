"""Shared fixtures: one real throwaway PostgreSQL for the whole session."""

import os
from collections.abc import Iterator

import pytest

from harness.infra import postgres, process


@pytest.fixture(scope="session", autouse=True)
def own_live_records(tmp_path_factory: pytest.TempPathFactory) -> None:
    """The tests' harnesses (in this process and every one it starts) keep their records of
    children and their measuring lock apart from the machine's: a harness killed here earlier
    must not make a test print, or end, anything, and a user's bench must not refuse them."""
    os.environ[process.LIVE_ENV] = str(tmp_path_factory.mktemp("live"))


@pytest.fixture(scope="session")
def pg() -> Iterator[postgres.Database]:
    with postgres.throwaway_cluster(max_connections=300) as db:
        yield db


@pytest.fixture
def db_url(pg: postgres.Database) -> str:
    postgres.reset_dataset(pg.url, 10)
    return pg.url


# Fixtures that start a real component; a test using one must be marked `integration`, so that
# `make test-fast` (-m "not integration") never starts PostgreSQL.
REAL_COMPONENTS = {"pg", "db_url"}


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    unmarked = [
        item.nodeid
        for item in items
        if REAL_COMPONENTS & set(getattr(item, "fixturenames", ()))
        and item.get_closest_marker("integration") is None
    ]
    if unmarked:
        raise pytest.UsageError(
            "these tests start PostgreSQL but are not marked integration: " + ", ".join(unmarked)
        )
