"""Async app: `async def` endpoints on the event loop, SQLAlchemy AsyncSession over asyncpg.

Kept line for line beside sync_app.py so the two can be diffed.
"""

import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI, Request
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession, create_async_engine

from app.common import session_dependency
from app.compat import async_sessionmaker, create_fastapi, size_threadpool
from app.models import Inserted, User, UserOut
from app.occupancy import install_occupancy, sqlalchemy_pool_stats
from app.settings import SessionStyle, Settings, load_settings


async def list_users(session: AsyncSession) -> list[User]:
    return list(await session.scalars(select(User)))


async def insert_user(session: AsyncSession) -> Inserted:
    user = User(email=f"{uuid.uuid4().hex}@example.com")
    session.add(user)
    await session.flush()
    inserted = Inserted(id=user.id)
    await session.commit()
    return inserted


async def get_session(request: Request) -> AsyncIterator[AsyncSession]:
    async with request.app.state.sessionmaker() as session:
        yield session


def create_app(settings: Settings | None = None) -> FastAPI:
    settings = settings or load_settings()

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        # The default limiter belongs to the running loop, so it can only be resized here.
        size_threadpool(settings.THREADPOOL_TOKENS)
        engine = create_async_engine(
            settings.url_for("asyncpg"),
            pool_size=settings.POOL_SIZE,
            max_overflow=settings.MAX_OVERFLOW,
            pool_timeout=settings.POOL_TIMEOUT,
        )
        app.state.pool_stats = sqlalchemy_pool_stats(engine, settings.pool_capacity)
        app.state.sessionmaker = async_sessionmaker(engine)
        yield
        await engine.dispose()

    app = create_fastapi(lifespan, title=f"async ({settings.SESSION_STYLE})")
    app.state.settings = settings
    if settings.OCCUPANCY:
        install_occupancy(app)

    @app.get("/health")
    async def health() -> dict[str, str]:
        return {"status": "ok"}

    if settings.SESSION_STYLE is SessionStyle.context:

        @app.get("/users", response_model=list[UserOut])
        async def users(request: Request) -> list[User]:
            """Every row; the session is opened and closed inside the endpoint."""
            async with request.app.state.sessionmaker() as session:
                return await list_users(session)

        @app.get("/users/insert-data-to-test", response_model=Inserted)
        async def insert(request: Request) -> Inserted:
            """Insert one row and commit; return its id."""
            async with request.app.state.sessionmaker() as session:
                return await insert_user(session)

        return app

    session_dep = session_dependency(get_session, settings)

    @app.get("/users", response_model=list[UserOut])
    async def users_dep(session: AsyncSession = session_dep) -> list[User]:
        """Every row; the session comes from a yield dependency (the seed's pattern)."""
        return await list_users(session)

    @app.get("/users/insert-data-to-test", response_model=Inserted)
    async def insert_dep(session: AsyncSession = session_dep) -> Inserted:
        """Insert one row and commit; return its id."""
        return await insert_user(session)

    return app
