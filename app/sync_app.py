"""Sync app: `def` endpoints run in FastAPI's threadpool, SQLAlchemy Session over psycopg2.

Kept line for line beside async_app.py so the two can be diffed.
"""

import uuid
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager

from fastapi import FastAPI, Request
from sqlalchemy import create_engine, select
from sqlalchemy.orm import Session, sessionmaker

from app.common import session_dependency
from app.compat import create_fastapi, size_threadpool
from app.models import Inserted, User, UserOut
from app.occupancy import install_occupancy, sqlalchemy_pool_stats
from app.settings import SessionStyle, Settings, load_settings


def list_users(session: Session) -> list[User]:
    return list(session.scalars(select(User)))


def insert_user(session: Session) -> Inserted:
    user = User(email=f"{uuid.uuid4().hex}@example.com")
    session.add(user)
    session.flush()
    inserted = Inserted(id=user.id)
    session.commit()
    return inserted


def get_session(request: Request) -> Iterator[Session]:
    with request.app.state.sessionmaker() as session:
        yield session


def create_app(settings: Settings | None = None) -> FastAPI:
    settings = settings or load_settings()

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        # The default limiter belongs to the running loop, so it can only be resized here.
        size_threadpool(settings.THREADPOOL_TOKENS)
        engine = create_engine(
            settings.url_for("psycopg2"),
            pool_size=settings.POOL_SIZE,
            max_overflow=settings.MAX_OVERFLOW,
            pool_timeout=settings.POOL_TIMEOUT,
        )
        app.state.pool_stats = sqlalchemy_pool_stats(engine, settings.pool_capacity)
        app.state.sessionmaker = sessionmaker(engine)
        yield
        engine.dispose()

    app = create_fastapi(lifespan, title=f"sync ({settings.SESSION_STYLE})")
    app.state.settings = settings
    if settings.OCCUPANCY:
        install_occupancy(app)

    @app.get("/health")
    def health() -> dict[str, str]:
        return {"status": "ok"}

    if settings.SESSION_STYLE is SessionStyle.context:

        @app.get("/users", response_model=list[UserOut])
        def users(request: Request) -> list[User]:
            """Every row; the session is opened and closed inside the endpoint."""
            with request.app.state.sessionmaker() as session:
                return list_users(session)

        @app.get("/users/insert-data-to-test", response_model=Inserted)
        def insert(request: Request) -> Inserted:
            """Insert one row and commit; return its id."""
            with request.app.state.sessionmaker() as session:
                return insert_user(session)

        return app

    session_dep = session_dependency(get_session, settings)

    @app.get("/users", response_model=list[UserOut])
    def users_dep(session: Session = session_dep) -> list[User]:
        """Every row; the session comes from a yield dependency (the seed's pattern)."""
        return list_users(session)

    @app.get("/users/insert-data-to-test", response_model=Inserted)
    def insert_dep(session: Session = session_dep) -> Inserted:
        """Insert one row and commit; return its id."""
        return insert_user(session)

    return app
