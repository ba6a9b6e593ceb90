"""The vocabulary the apps and the harness share: how an endpoint gets its database connection
(session style), which driver reaches PostgreSQL, and through which layer.

Standard library only, so the harness's domain model can name them without importing pydantic
or SQLAlchemy.
"""

from enum import StrEnum


class SessionStyle(StrEnum):
    """How an endpoint gets its database session (or, below the ORM, its connection)."""

    dependency = "dependency"  # the seed's: Depends() on a generator that yields and closes
    context = "context"  # `with SessionLocal() as session:` inside the endpoint
    limited = "limited"  # the dependency, with Depends(max_concurrency=pool capacity)
    # A mistake, kept to be diagnosed: an `async def` endpoint that opens the sync session, so
    # each query blocks the event loop. Async mode only.
    blocking = "blocking"


class Driver(StrEnum):
    """The PostgreSQL driver, named explicitly (SQLAlchemy 2.1 reads postgresql:// as psycopg)."""

    psycopg2 = "psycopg2"  # sync only
    asyncpg = "asyncpg"  # async only
    psycopg = "psycopg"  # psycopg 3: sync and async


SYNC_DRIVERS = (Driver.psycopg2, Driver.psycopg)
ASYNC_DRIVERS = (Driver.asyncpg, Driver.psycopg)


class Layer(StrEnum):
    """What sits between the endpoint and the driver."""

    orm = "orm"  # SQLAlchemy ORM: a Session, select(User), mapped objects (the seed's)
    core = "core"  # SQLAlchemy Core: select() on a Connection, rows mapped by hand
    driver = "driver"  # the driver and its own connection pool, no SQLAlchemy


# Each setting's name as a user sets it (as `make bench` spells it), and the older names of what
# it sets, which the apps still read (app/settings.py); the harness clears all of them from the
# environment its servers inherit, then sets its own.
NAMES: dict[str, tuple[str, ...]] = {
    "POOLS": ("POOL_SIZE", "MAX_OVERFLOW"),  # one pool: SIZE+OVERFLOW, e.g. 5+10
    "POOL_TIMEOUT": (),  # 30s, 500ms (or seconds alone, as before)
    "TOKENS": ("THREADPOOL_TOKENS",),
    "STYLE": ("SESSION_STYLE",),
    "DRIVERS": ("SYNC_DRIVER", "ASYNC_DRIVER"),  # each app takes the one that fits it
    "LAYER": (),
    "OCCUPANCY": (),
}
OLD_NAMES = {old: new for new, olds in NAMES.items() for old in olds}
