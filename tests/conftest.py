"""Shared fixtures: one real throwaway PostgreSQL for the whole session."""

from collections.abc import Iterator

import pytest

from harness.infra import postgres


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
