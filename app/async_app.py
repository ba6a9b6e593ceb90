"""Async app: `async def` endpoints on the event loop, PostgreSQL through app/async_db.py
(the ORM over asyncpg by default; LAYER and ASYNC_DRIVER choose another).

Kept line for line beside sync_app.py so the two can be diffed.
"""

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from fastapi import FastAPI, Request

from app import async_db, sync_db
from app.common import session_dependency
from app.compat import create_fastapi, size_threadpool
from app.models import Inserted, UserOut
from app.occupancy import install_occupancy, side_channel
from app.settings import SessionStyle, Settings, load_settings


async def get_session(request: Request) -> AsyncIterator[Any]:
    async with request.app.state.db.unit() as unit:
        yield unit


def create_app(settings: Settings | None = None) -> FastAPI:
    settings = settings or load_settings()

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        # The default limiter belongs to the running loop, so it can only be resized here.
        size_threadpool(settings.THREADPOOL_TOKENS)
        if blocking:
            db = sync_db.open_database(settings)
            db.open()
        else:
            db = async_db.open_database(settings)
            await db.open()
        app.state.db, app.state.pool_stats = db, db.pool_stats
        async with side_channel(app, settings):
            yield
        if blocking:
            db.close()
        else:
            await db.close()

    blocking = settings.SESSION_STYLE is SessionStyle.blocking
    driver = settings.SYNC_DRIVER if blocking else settings.ASYNC_DRIVER
    title = f"async ({settings.SESSION_STYLE}, {driver}, {settings.LAYER})"
    app = create_fastapi(lifespan, title=title)
    app.state.settings = settings
    if settings.OCCUPANCY:
        install_occupancy(app)

    @app.get("/health")
    async def health() -> dict[str, str]:
        return {"status": "ok"}

    if settings.SESSION_STYLE is SessionStyle.context:
        _context_routes(app)
    elif blocking:
        _blocking_routes(app)
    else:
        _dependency_routes(app, settings)
    return app


def _context_routes(app: FastAPI) -> None:
    @app.get("/users", response_model=list[UserOut])
    async def users(request: Request) -> list[Any]:
        """Every row; the session is opened and closed inside the endpoint."""
        db = request.app.state.db
        async with db.unit() as unit:
            return await db.list_users(unit)

    @app.get("/users/insert-data-to-test", response_model=Inserted)
    async def insert(request: Request) -> Inserted:
        """Insert one row and commit; return its id."""
        db = request.app.state.db
        async with db.unit() as unit:
            return await db.insert_user(unit)


def _blocking_routes(app: FastAPI) -> None:
    @app.get("/users", response_model=list[UserOut])
    async def users_blocking(request: Request) -> list[Any]:
        """The mistake: the sync session inside `async def`, so the loop waits on the query."""
        db = request.app.state.db
        with db.unit() as unit:
            return db.list_users(unit)

    @app.get("/users/insert-data-to-test", response_model=Inserted)
    async def insert_blocking(request: Request) -> Inserted:
        """The mistake, for the insert: the event loop waits on the commit."""
        db = request.app.state.db
        with db.unit() as unit:
            return db.insert_user(unit)


def _dependency_routes(app: FastAPI, settings: Settings) -> None:
    session_dep = session_dependency(get_session, settings)

    @app.get("/users", response_model=list[UserOut])
    async def users_dep(request: Request, unit: Any = session_dep) -> list[Any]:
        """Every row; the session comes from a yield dependency (the seed's pattern)."""
        return await request.app.state.db.list_users(unit)

    @app.get("/users/insert-data-to-test", response_model=Inserted)
    async def insert_dep(request: Request, unit: Any = session_dep) -> Inserted:
        """Insert one row and commit; return its id."""
        return await request.app.state.db.insert_user(unit)
