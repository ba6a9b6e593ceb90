"""Sync app: `def` endpoints run in FastAPI's threadpool, PostgreSQL through app/sync_db.py
(the ORM over psycopg2 by default; LAYER and SYNC_DRIVER choose another).

Kept line for line beside async_app.py so the two can be diffed.
"""

from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from typing import Any

from fastapi import FastAPI, Request

from app import sync_db
from app.common import session_dependency
from app.compat import create_fastapi, size_threadpool
from app.models import Inserted, UserOut
from app.occupancy import install_occupancy, side_channel
from app.settings import SessionStyle, Settings, load_settings


def get_session(request: Request) -> Iterator[Any]:
    with request.app.state.db.unit() as unit:
        yield unit


def create_app(settings: Settings | None = None) -> FastAPI:
    settings = settings or load_settings()
    if settings.SESSION_STYLE is SessionStyle.blocking:
        # Not silently the dependency: `blocking` is the async app's mistake, no sync style.
        raise ValueError("STYLE=blocking is the async app's (async def calling the sync session)")

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        # The default limiter belongs to the running loop, so it can only be resized here.
        size_threadpool(settings.THREADPOOL_TOKENS)
        db = sync_db.open_database(settings)
        db.open()
        app.state.db, app.state.pool_stats = db, db.pool_stats
        async with side_channel(app, settings):
            yield
        db.close()

    title = f"sync ({settings.SESSION_STYLE}, {settings.SYNC_DRIVER}, {settings.LAYER})"
    app = create_fastapi(lifespan, title=title)
    app.state.settings = settings
    if settings.OCCUPANCY:
        install_occupancy(app)

    @app.get("/health")
    def health() -> dict[str, str]:
        return {"status": "ok"}

    if settings.SESSION_STYLE is SessionStyle.context:
        _context_routes(app)
    else:
        _dependency_routes(app, settings)
    return app


def _context_routes(app: FastAPI) -> None:
    @app.get("/users", response_model=list[UserOut])
    def users(request: Request) -> list[Any]:
        """Every row; the session is opened and closed inside the endpoint."""
        db = request.app.state.db
        with db.unit() as unit:
            return db.list_users(unit)

    @app.get("/users/insert-data-to-test", response_model=Inserted)
    def insert(request: Request) -> Inserted:
        """Insert one row and commit; return its id."""
        db = request.app.state.db
        with db.unit() as unit:
            return db.insert_user(unit)


def _dependency_routes(app: FastAPI, settings: Settings) -> None:
    session_dep = session_dependency(get_session, settings)

    @app.get("/users", response_model=list[UserOut])
    def users_dep(request: Request, unit: Any = session_dep) -> list[Any]:
        """Every row; the session comes from a yield dependency (the seed's pattern)."""
        return request.app.state.db.list_users(unit)

    @app.get("/users/insert-data-to-test", response_model=Inserted)
    def insert_dep(request: Request, unit: Any = session_dep) -> Inserted:
        """Insert one row and commit; return its id."""
        return request.app.state.db.insert_user(unit)
