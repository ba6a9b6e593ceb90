"""How the async app reaches PostgreSQL, one class per layer (LAYER), each over ASYNC_DRIVER.

Every layer offers the same four things: `unit()` (what a request works with: an AsyncSession,
a Core AsyncConnection, or a driver connection, as an async context manager that gives it back),
the two queries, and the pool's occupancy; the pool holds POOL_SIZE connections and lends up to
POOL_SIZE + MAX_OVERFLOW, waiting up to POOL_TIMEOUT for one. Kept line for line beside
sync_db.py so the two can be diffed.

When the connection is taken: an ORM AsyncSession takes it at its first query, inside the
endpoint; a Core or driver unit takes it when the unit is opened (in a `dependency`, while the
dependency is entered). Either way a task waits for it, on the event loop: no thread is held.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from typing import Any

from sqlalchemy import insert, select
from sqlalchemy.ext.asyncio import AsyncSession, create_async_engine

from app.common import PoolExhausted, new_email
from app.compat import async_sessionmaker
from app.models import INSERT_SQL, INSERT_SQL_ASYNCPG, LIST_SQL, Inserted, User
from app.occupancy import sqlalchemy_pool_stats
from app.settings import Driver, Layer, Settings

USERS = User.__table__


class _Engine:
    """What the ORM and Core layers share: an engine, with SQLAlchemy's pool."""

    def __init__(self, settings: Settings) -> None:
        self.engine = create_async_engine(
            settings.url_for(settings.ASYNC_DRIVER),
            pool_size=settings.POOL_SIZE,
            max_overflow=settings.MAX_OVERFLOW,
            pool_timeout=settings.POOL_TIMEOUT,
        )
        self.pool_stats = sqlalchemy_pool_stats(self.engine, settings.pool_capacity)

    async def open(self) -> None:
        pass  # the engine connects on demand

    async def close(self) -> None:
        await self.engine.dispose()


class Orm(_Engine):
    """The seed's way: an AsyncSession, select(User), mapped User objects."""

    def __init__(self, settings: Settings) -> None:
        super().__init__(settings)
        self.sessionmaker = async_sessionmaker(self.engine)

    def unit(self) -> AbstractAsyncContextManager[Any]:
        return self.sessionmaker()

    async def list_users(self, session: AsyncSession) -> list[Any]:
        return list(await session.scalars(select(User)))

    async def insert_user(self, session: AsyncSession) -> Inserted:
        user = User(email=new_email())
        session.add(user)
        await session.flush()
        inserted = Inserted(id=user.id)
        await session.commit()
        return inserted


class Core(_Engine):
    """SQLAlchemy Core: the same engine and pool, select() on a Connection, rows mapped by hand."""

    def unit(self) -> AbstractAsyncContextManager[Any]:
        return self.engine.connect()

    async def list_users(self, conn: Any) -> list[Any]:
        result = await conn.execute(select(USERS.c.id, USERS.c.email))
        return [{"email": email} for _, email in result]

    async def insert_user(self, conn: Any) -> Inserted:
        async with conn.begin():
            statement = insert(USERS).values(email=new_email()).returning(USERS.c.id)
            return Inserted(id=(await conn.execute(statement)).scalar_one())


class DriverAlone:
    """The driver and a pool of its own, no SQLAlchemy; connections in autocommit, so a request
    sends its one statement (SQLAlchemy wraps it in a transaction: BEGIN, then ROLLBACK or
    COMMIT)."""

    def __init__(self, settings: Settings) -> None:
        self.capacity = settings.pool_capacity
        self.out = 0  # connections lent out (one event loop: no lock)
        if settings.ASYNC_DRIVER is Driver.psycopg:
            self.pool: Any = _PsycopgPool(settings)
        else:
            self.pool = _AsyncpgPool(settings)

    async def open(self) -> None:
        await self.pool.open()

    @asynccontextmanager
    async def unit(self) -> AsyncIterator[Any]:
        async with self.pool.connection() as conn:
            self.out += 1
            try:
                yield conn
            finally:
                self.out -= 1

    async def list_users(self, conn: Any) -> list[Any]:
        rows = await self.pool.fetch(conn, LIST_SQL)
        return [{"email": email} for _, email in rows]

    async def insert_user(self, conn: Any) -> Inserted:
        return Inserted(id=await self.pool.insert(conn, new_email()))

    def pool_stats(self) -> dict[str, int | None]:
        """For `/_occupancy` (app/occupancy.py): connections lent out, the capacity; the
        waiters are tasks, not threads (as for SQLAlchemy's async pool): None."""
        return {"checked_out": self.out, "capacity": self.capacity, "pool_waiting": None}

    async def close(self) -> None:
        await self.pool.close()


class _PsycopgPool:
    """psycopg_pool.AsyncConnectionPool: min_size POOL_SIZE, max_size the capacity."""

    def __init__(self, settings: Settings) -> None:
        import psycopg_pool  # not in the 2021 stack, which refuses psycopg

        self.settings, self.errors = settings, psycopg_pool.PoolTimeout
        self.pool = psycopg_pool.AsyncConnectionPool(
            settings.libpq_url,
            min_size=settings.POOL_SIZE,
            max_size=settings.pool_capacity,
            timeout=settings.POOL_TIMEOUT,
            kwargs={"autocommit": True},
            open=False,  # an async pool is opened inside the running loop
        )

    async def open(self) -> None:
        await self.pool.open()

    @asynccontextmanager
    async def connection(self) -> AsyncIterator[Any]:
        try:
            conn = await self.pool.getconn()
        except self.errors as exc:
            raise PoolExhausted(self.settings, "psycopg_pool") from exc
        try:
            yield conn
        finally:
            await self.pool.putconn(conn)

    async def fetch(self, conn: Any, sql: str) -> list[Any]:
        async with conn.cursor() as cur:
            await cur.execute(sql)
            return list(await cur.fetchall())

    async def insert(self, conn: Any, email: str) -> int:
        async with conn.cursor() as cur:
            await cur.execute(INSERT_SQL, (email,))
            return int((await cur.fetchone())[0])

    async def close(self) -> None:
        await self.pool.close()


class _AsyncpgPool:
    """asyncpg's own pool: min_size POOL_SIZE, max_size the capacity; acquire waits up to
    POOL_TIMEOUT. asyncpg has no implicit transactions: a statement outside one commits."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.pool: Any = None

    async def open(self) -> None:
        import asyncpg

        self.pool = await asyncpg.create_pool(
            self.settings.libpq_url,
            min_size=self.settings.POOL_SIZE,
            max_size=self.settings.pool_capacity,
        )

    @asynccontextmanager
    async def connection(self) -> AsyncIterator[Any]:
        try:
            conn = await self.pool.acquire(timeout=self.settings.POOL_TIMEOUT)
        except TimeoutError as exc:
            raise PoolExhausted(self.settings, "asyncpg") from exc
        try:
            yield conn
        finally:
            await self.pool.release(conn)

    async def fetch(self, conn: Any, sql: str) -> list[Any]:
        return list(await conn.fetch(sql))

    async def insert(self, conn: Any, email: str) -> int:
        return int(await conn.fetchval(INSERT_SQL_ASYNCPG, email))

    async def close(self) -> None:
        if self.pool is not None:
            await self.pool.close()


LAYERS: dict[Layer, Any] = {Layer.orm: Orm, Layer.core: Core, Layer.driver: DriverAlone}


def open_database(settings: Settings) -> Any:
    """The layer's database for this process, built in the lifespan (then `await db.open()`)."""
    return LAYERS[settings.LAYER](settings)
