"""Both apps, every driver, layer and session style, every endpoint, in-process against the real
PostgreSQL."""

import inspect
import threading
import time
from collections.abc import Iterator
from typing import Any

import anyio.to_thread
import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient

from app import async_app, sync_app
from app.common import PoolExhausted
from app.settings import Driver, Layer, SessionStyle, Settings
from app.styles import ASYNC_DRIVERS, SYNC_DRIVERS
from harness.infra import postgres

APPS = {"sync": sync_app, "async": async_app}
DRIVERS = {"sync": SYNC_DRIVERS, "async": ASYNC_DRIVERS}
COMBINATIONS = [
    (mode, driver, layer, style)
    for mode in APPS
    for driver in DRIVERS[mode]
    for layer in Layer
    for style in SessionStyle
    # `blocking` is the async app's only, and runs the sync driver whatever the async one is.
    if style is not SessionStyle.blocking or (mode == "async" and driver is ASYNC_DRIVERS[0])
]


def settings_for(mode: str, driver: Driver, **values: object) -> Settings:
    return Settings(**{f"{mode.upper()}_DRIVER": driver, **values})  # type: ignore[arg-type]


@pytest.fixture(params=COMBINATIONS, ids=lambda p: "-".join(p))
def client(request: pytest.FixtureRequest, db_url: str) -> Iterator[TestClient]:
    mode, driver, layer, style = request.param
    settings = settings_for(
        mode, driver, DATABASE_URL=db_url, LAYER=layer, SESSION_STYLE=style, THREADPOOL_TOKENS=7
    )
    app: FastAPI = APPS[mode].create_app(settings)
    with TestClient(app) as test_client:
        yield test_client


def test_blocking_is_async_def_on_the_sync_session_and_the_sync_app_refuses_it() -> None:
    settings = Settings(DATABASE_URL="postgresql://nobody@127.0.0.1:1/none", STYLE="blocking")
    with pytest.raises(ValueError, match="STYLE=blocking is the async app's"):
        sync_app.create_app(settings)
    app = async_app.create_app(settings)
    (users,) = [r for r in app.routes if getattr(r, "path", "") == "/users"]
    assert inspect.iscoroutinefunction(users.endpoint)  # type: ignore[attr-defined]
    assert "(blocking, psycopg2, orm)" in app.title


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


@pytest.mark.integration
def test_dependency_scope_function_ends_the_session_with_the_endpoint(db_url: str) -> None:
    for scope, expected in (("function", {"function"}), (None, {None})):
        given = {"DEPENDENCY_SCOPE": scope} if scope else {}
        for module in APPS.values():
            app = module.create_app(Settings(DATABASE_URL=db_url, **given))  # type: ignore[arg-type]
            scopes = {
                d.scope
                for route in app.routes
                if getattr(route, "path", "").startswith("/users")
                for d in _depends(route)
            }
            assert scopes == expected
    with pytest.raises(ValueError, match="DEPENDENCY_SCOPE"):
        Settings(DATABASE_URL=db_url, DEPENDENCY_SCOPE="later")  # type: ignore[arg-type]


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
    title: str = client.app.title  # type: ignore[attr-defined]
    sync = title.startswith("sync") or "(blocking," in title  # `blocking` runs the sync pool
    assert idle["pool_waiting"] == (0 if sync else None)
    # Tasks waiting at an async SQLAlchemy pool (the driver layer's own pools do not say).
    sqlalchemy_async = not sync and title.endswith(("orm)", "core)"))
    assert idle.get("pool_tasks_waiting") == (0 if sqlalchemy_async else None)
    assert idle["loop_lag_ms"] is not None and idle["loop_lag_ms"] >= 0
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


@pytest.mark.integration
@pytest.mark.parametrize("layer", list(Layer))
@pytest.mark.parametrize(("mode", "driver"), [(m, d) for m in APPS for d in DRIVERS[m]])
def test_a_lent_connection_is_counted_and_an_empty_pool_times_out(
    mode: str, driver: Driver, layer: Layer, db_url: str
) -> None:
    """Pool 1+0, timeout 0.5 s: while one unit holds the connection, pool_stats counts it, and
    a second unit waits 0.5 s, then fails with the timeout the harness counts in server logs."""
    settings = settings_for(
        mode, driver, DATABASE_URL=db_url, LAYER=layer, POOL_SIZE=1, MAX_OVERFLOW=0,
        POOL_TIMEOUT=0.5,
    )  # fmt: skip
    app = APPS[mode].create_app(settings)
    with TestClient(app) as c:
        db, stats = c.app.state.db, c.app.state.pool_stats  # type: ignore[attr-defined]
        if mode == "sync":
            with db.unit() as unit:
                db.list_users(unit)  # an ORM Session takes its connection at its first query
                assert (stats()["checked_out"], stats()["capacity"]) == (1, 1)
                failed: list[BaseException] = []
                thread = threading.Thread(target=second_unit, args=(db, failed))
                thread.start()
                deadline = time.monotonic() + 0.4
                while stats()["pool_waiting"] != 1 and time.monotonic() < deadline:
                    time.sleep(0.01)
                waiting = stats()["pool_waiting"]
                thread.join()
            assert waiting == 1  # a thread blocked on the pool, as /_occupancy reports it
            error = failed[0]
        else:

            async def hold() -> BaseException:
                async with db.unit() as unit:
                    await db.list_users(unit)
                    assert (stats()["checked_out"], stats()["capacity"]) == (1, 1)
                    try:
                        async with db.unit() as other:
                            await db.list_users(other)
                    except Exception as exc:
                        return exc
                raise AssertionError("a second connection was lent from a pool of one")

            error = c.portal.call(hold)  # type: ignore[union-attr]
        with pytest.raises(Exception) as info:
            raise error
        assert stats()["checked_out"] == 0
    text = f"{type(info.value).__name__}: {info.value}"
    if layer is Layer.driver:
        assert isinstance(info.value, PoolExhausted)
        assert "pool limit of size 1 overflow 0 reached, connection timed out, timeout 0.50" in text
    else:
        assert text.startswith("TimeoutError: QueuePool limit of size 1 overflow 0 reached")


def second_unit(db: Any, failed: list[BaseException]) -> None:
    try:
        with db.unit() as unit:
            db.list_users(unit)
    except Exception as exc:
        failed.append(exc)


def test_a_driver_must_fit_its_app() -> None:
    url = "postgresql://nobody@127.0.0.1:1/none"
    with pytest.raises(
        ValueError, match="asyncpg is not a driver of the sync app; choose psycopg2 or psycopg"
    ):
        Settings(DATABASE_URL=url, SYNC_DRIVER="asyncpg")  # type: ignore[arg-type]
    with pytest.raises(
        ValueError, match="psycopg2 is not a driver of the async app; choose asyncpg or psycopg"
    ):
        Settings(DATABASE_URL=url, ASYNC_DRIVER="psycopg2")  # type: ignore[arg-type]
