"""How the sync app reaches PostgreSQL, one class per layer (LAYER), each over SYNC_DRIVER.

Every layer offers the same four things: `unit()` (what a request works with: an ORM Session,
a Core Connection, or a driver connection, as a context manager that gives it back), the two
queries, and the pool's occupancy; the pool holds POOL_SIZE connections and lends up to
POOL_SIZE + MAX_OVERFLOW, waiting up to POOL_TIMEOUT for one. Kept line for line beside
async_db.py so the two can be diffed.

When the connection is taken: an ORM Session takes it at its first query, inside the endpoint;
a Core or driver unit takes it when the unit is opened (in a `dependency`, while the dependency
is entered). Either way a thread waits for it, holding a threadpool token.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import AbstractContextManager, contextmanager
from typing import Any

from sqlalchemy import create_engine, insert, select
from sqlalchemy.orm import Session, sessionmaker

from app.common import PoolExhausted, new_email
from app.models import INSERT_SQL, LIST_SQL, Inserted, User
from app.occupancy import sqlalchemy_pool_stats
from app.settings import Driver, Layer, Settings

USERS = User.__table__


class _Engine:
    """What the ORM and Core layers share: an engine, with SQLAlchemy's QueuePool."""

    def __init__(self, settings: Settings) -> None:
        self.engine = create_engine(
            settings.url_for(settings.SYNC_DRIVER),
            pool_size=settings.POOL_SIZE,
            max_overflow=settings.MAX_OVERFLOW,
            pool_timeout=settings.POOL_TIMEOUT,
        )
        self.pool_stats = sqlalchemy_pool_stats(self.engine, settings.pool_capacity)

    def open(self) -> None:
        pass  # the engine connects on demand

    def close(self) -> None:
        self.engine.dispose()


class Orm(_Engine):
    """The seed's way: a Session, select(User), mapped User objects."""

    def __init__(self, settings: Settings) -> None:
        super().__init__(settings)
        self.sessionmaker = sessionmaker(self.engine)

    def unit(self) -> AbstractContextManager[Any]:
        return self.sessionmaker()

    def list_users(self, session: Session) -> list[Any]:
        return list(session.scalars(select(User)))

    def insert_user(self, session: Session) -> Inserted:
        user = User(email=new_email())
        session.add(user)
        session.flush()
        inserted = Inserted(id=user.id)
        session.commit()
        return inserted


class Core(_Engine):
    """SQLAlchemy Core: the same engine and pool, select() on a Connection, rows mapped by hand."""

    def unit(self) -> AbstractContextManager[Any]:
        return self.engine.connect()

    def list_users(self, conn: Any) -> list[Any]:
        return [{"email": email} for _, email in conn.execute(select(USERS.c.id, USERS.c.email))]

    def insert_user(self, conn: Any) -> Inserted:
        with conn.begin():
            statement = insert(USERS).values(email=new_email()).returning(USERS.c.id)
            return Inserted(id=conn.execute(statement).scalar_one())


class DriverAlone:
    """The driver and a pool of its own, no SQLAlchemy; connections in autocommit, so a request
    sends its one statement (SQLAlchemy wraps it in a transaction: BEGIN, then ROLLBACK or
    COMMIT)."""

    def __init__(self, settings: Settings) -> None:
        self.capacity = settings.pool_capacity
        self.out, self.lock = 0, threading.Lock()  # connections lent out (threads share it)
        if settings.SYNC_DRIVER is Driver.psycopg:
            self.pool: Any = _PsycopgPool(settings)
        else:
            self.pool = BlockingPool(settings)

    def open(self) -> None:
        pass  # the pools open their first connections when built

    @contextmanager
    def unit(self) -> Iterator[Any]:
        with self.pool.connection() as conn:
            with self.lock:
                self.out += 1
            try:
                yield conn
            finally:
                with self.lock:
                    self.out -= 1

    def list_users(self, conn: Any) -> list[Any]:
        rows = self.pool.fetch(conn, LIST_SQL)
        return [{"email": email} for _, email in rows]

    def insert_user(self, conn: Any) -> Inserted:
        return Inserted(id=self.pool.insert(conn, new_email()))

    def pool_stats(self) -> dict[str, int | None]:
        """For `/_occupancy` (app/occupancy.py): connections lent out, the capacity, and the
        threads waiting for a connection."""
        return {
            "checked_out": self.out,
            "capacity": self.capacity,
            "pool_waiting": self.pool.waiting(),
        }

    def close(self) -> None:
        self.pool.close()


class _DbApi:
    """psycopg2 and psycopg share the DB-API: cursors, %s placeholders."""

    def fetch(self, conn: Any, sql: str) -> list[Any]:
        with conn.cursor() as cur:
            cur.execute(sql)
            return list(cur.fetchall())

    def insert(self, conn: Any, email: str) -> int:
        with conn.cursor() as cur:
            cur.execute(INSERT_SQL, (email,))
            return int(cur.fetchone()[0])


class _PsycopgPool(_DbApi):
    """psycopg_pool.ConnectionPool: min_size POOL_SIZE, max_size the capacity."""

    def __init__(self, settings: Settings) -> None:
        import psycopg_pool  # not in the 2021 stack, which refuses psycopg

        self.settings, self.errors = settings, psycopg_pool.PoolTimeout
        self.pool = psycopg_pool.ConnectionPool(
            settings.libpq_url,
            min_size=settings.POOL_SIZE,
            max_size=settings.pool_capacity,
            timeout=settings.POOL_TIMEOUT,
            kwargs={"autocommit": True},
            open=True,
        )

    def waiting(self) -> int:
        return int(self.pool.get_stats().get("requests_waiting", 0))

    @contextmanager
    def connection(self) -> Iterator[Any]:
        try:
            conn = self.pool.getconn()
        except self.errors as exc:
            raise PoolExhausted(self.settings, "psycopg_pool") from exc
        try:
            yield conn
        finally:
            self.pool.putconn(conn)

    def close(self) -> None:
        self.pool.close()


class BlockingPool(_DbApi):
    """psycopg2's ThreadedConnectionPool raises PoolError when all its connections are out,
    where SQLAlchemy's pool and psycopg_pool make the thread wait up to POOL_TIMEOUT. For the
    same behaviour a semaphore of the capacity stands in front of it: `getconn` waits on it (the
    frame a thread dump shows, harness/domain/occupancy.py), and raises PoolExhausted after
    POOL_TIMEOUT. The pool keeps POOL_SIZE connections (minconn) and closes the others when they
    come back, as SQLAlchemy's pool does with its overflow."""

    def __init__(self, settings: Settings) -> None:
        from psycopg2.pool import ThreadedConnectionPool

        self.settings = settings
        self.slots = threading.BoundedSemaphore(settings.pool_capacity)
        self.waiters, self.lock = 0, threading.Lock()
        self.pool = ThreadedConnectionPool(
            settings.POOL_SIZE, settings.pool_capacity, settings.libpq_url
        )

    def waiting(self) -> int:
        return self.waiters

    def getconn(self) -> Any:
        with self.lock:
            self.waiters += 1
        try:
            got = self.slots.acquire(timeout=self.settings.POOL_TIMEOUT)
        finally:
            with self.lock:
                self.waiters -= 1
        if not got:
            raise PoolExhausted(self.settings, "psycopg2")
        try:
            conn = self.pool.getconn()
        except BaseException:
            self.slots.release()
            raise
        conn.autocommit = True
        return conn

    def putconn(self, conn: Any) -> None:
        try:
            self.pool.putconn(conn)
        finally:
            self.slots.release()

    @contextmanager
    def connection(self) -> Iterator[Any]:
        conn = self.getconn()
        try:
            yield conn
        finally:
            self.putconn(conn)

    def close(self) -> None:
        self.pool.closeall()


LAYERS: dict[Layer, Any] = {Layer.orm: Orm, Layer.core: Core, Layer.driver: DriverAlone}


def open_database(settings: Settings) -> Any:
    """The layer's database for this process, built in the lifespan (then `db.open()`)."""
    return LAYERS[settings.LAYER](settings)
