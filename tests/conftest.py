"""Shared fixtures: one real throwaway PostgreSQL for the whole session."""

from collections.abc import Iterator

import pytest

from harness import postgres


@pytest.fixture(scope="session")
def pg() -> Iterator[postgres.Database]:
    with postgres.throwaway_cluster(max_connections=300) as db:
        yield db


@pytest.fixture
def db_url(pg: postgres.Database) -> str:
    postgres.reset_dataset(pg.url, 10)
    return pg.url
