"""Both apps, every session style, every endpoint, in-process against the real PostgreSQL."""

from collections.abc import Iterator

import anyio.to_thread
import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient

from app import async_app, sync_app
from app.settings import SessionStyle, Settings
from harness.infra import postgres

APPS = {"sync": sync_app, "async": async_app}


@pytest.fixture(params=[(m, s) for m in APPS for s in SessionStyle], ids=lambda p: f"{p[0]}-{p[1]}")
def client(request: pytest.FixtureRequest, db_url: str) -> Iterator[TestClient]:
    mode, style = request.param
    settings = Settings(DATABASE_URL=db_url, SESSION_STYLE=style, THREADPOOL_TOKENS=7)
    app: FastAPI = APPS[mode].create_app(settings)
    with TestClient(app) as test_client:
        yield test_client


def test_health_needs_no_database() -> None:
    settings = Settings(DATABASE_URL="postgresql://nobody@127.0.0.1:1/none")
    for module in APPS.values():
        with TestClient(module.create_app(settings)) as c:
            assert c.get("/health").json() == {"status": "ok"}


@pytest.mark.integration
def test_users_returns_every_row_as_email_objects(client: TestClient, db_url: str) -> None:
    response = client.get("/users")
    assert response.status_code == 200
    body = response.json()
    assert len(body) == postgres.count_rows(db_url) == 10
    assert all(set(item) == {"email"} for item in body)
    assert body[0] == {"email": "user1@example.com"}


@pytest.mark.integration
def test_insert_adds_exactly_one_row_and_returns_its_id(client: TestClient, db_url: str) -> None:
    before = postgres.count_rows(db_url)
    first = client.get("/users/insert-data-to-test").json()
    second = client.get("/users/insert-data-to-test").json()
    assert postgres.count_rows(db_url) == before + 2
    assert second["id"] == first["id"] + 1
    assert len(client.get("/users").json()) == before + 2


@pytest.mark.integration
def test_threadpool_tokens_are_applied_in_the_running_loop(client: TestClient) -> None:
    async def tokens() -> float:
        return anyio.to_thread.current_default_thread_limiter().total_tokens

    # The TestClient's portal runs in the app's loop, where the lifespan set the limiter.
    assert client.portal.call(tokens) == 7  # type: ignore[union-attr]


@pytest.mark.integration
def test_limited_style_caps_the_dependency_at_pool_capacity(db_url: str) -> None:
    settings = Settings(DATABASE_URL=db_url, SESSION_STYLE="limited", POOL_SIZE=3, MAX_OVERFLOW=2)
    for module in APPS.values():
        app = module.create_app(settings)
        limits = {
            d.max_concurrency
            for route in app.routes
            if getattr(route, "path", "").startswith("/users")
            for d in _depends(route)
        }
        assert limits == {5}


def _depends(route: object) -> list:
    import inspect
    import typing

    hints = typing.get_type_hints(route.endpoint, include_extras=True)  # type: ignore[attr-defined]
    found = []
    # A Depends is either Annotated metadata or a parameter's default (the apps use the default,
    # which FastAPI 0.63 of the 2021 stack understands too).
    for name, param in inspect.signature(route.endpoint).parameters.items():  # type: ignore[attr-defined]
        found.extend(getattr(hints.get(name), "__metadata__", ()))
        if param.default is not inspect.Parameter.empty:
            found.append(param.default)
    return found


@pytest.mark.integration
def test_occupancy_reports_the_threadpool_the_pool_and_the_requests(client: TestClient) -> None:
    idle = client.get("/_occupancy").json()
    assert idle["tokens_total"] == 7 and idle["tokens_in_use"] == 0 and idle["waiting"] == 0
    assert idle["checked_out"] == 0 and idle["capacity"] == 15
    # Threads blocked on the pool: a sync pool's count; an async pool's waiters are not threads.
    sync = client.app.title.startswith("sync")  # type: ignore[attr-defined]
    assert idle["pool_waiting"] == (0 if sync else None)
    assert (idle["in_flight"], idle["ok"], idle["errors"]) == (0, 0, 0)
    client.get("/users")
    client.get("/users")
    client.get("/no-such-page")
    after = client.get("/_occupancy").json()
    # The side channel counts itself out; every pooled connection is back.
    assert (after["in_flight"], after["ok"], after["errors"]) == (0, 2, 1)
    assert after["checked_out"] == 0 and after["pid"] == idle["pid"]


def test_occupancy_can_be_turned_off() -> None:
    settings = Settings(DATABASE_URL="postgresql://nobody@127.0.0.1:1/none", OCCUPANCY=False)
    for module in APPS.values():
        with TestClient(module.create_app(settings)) as c:
            assert c.get("/_occupancy").status_code == 404
            assert c.get("/health").status_code == 200


def test_an_unhandled_error_counts_as_an_error_answer() -> None:
    """A pool timeout escapes the app; the server answers 500 outside the counting wrapper."""
    import anyio

    from app.occupancy import Counts, Requests

    async def failing(scope: object, receive: object, send: object) -> None:
        raise TimeoutError("QueuePool limit reached")

    counts = Counts()
    wrapped = Requests(failing, counts)

    async def call() -> None:
        with pytest.raises(TimeoutError):
            await wrapped({"type": "http", "path": "/users"}, None, None)  # type: ignore[arg-type]

    anyio.run(call)
    assert (counts.in_flight, counts.ok, counts.errors) == (0, 0, 1)
