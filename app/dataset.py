"""The data set every measurement starts from: the `users` table with exactly ROWS rows.

One function for everyone who resets it: the harness before every cell, and the compose file's
one-shot `seed` service (servers/seed_db.py).
"""

from sqlalchemy import NullPool, create_engine, func, select, text
from sqlalchemy.engine import make_url

from app.models import Base, User

DEFAULT_ROWS = 10


def reset_dataset(url: str, rows: int) -> int:
    """Recreate the apps' `users` table with exactly `rows` rows; return the count read back."""
    if rows < 0:
        raise ValueError("rows must be >= 0")
    # psycopg2 named explicitly: since SQLAlchemy 2.1 a bare postgresql:// means psycopg 3.
    engine = create_engine(make_url(url).set(drivername="postgresql+psycopg2"), poolclass=NullPool)
    try:
        Base.metadata.drop_all(engine)
        Base.metadata.create_all(engine)
        with engine.begin() as conn:
            conn.execute(
                text(
                    "insert into users (email) select 'user' || i || '@example.com' "
                    "from generate_series(1, :rows) as i"
                ),
                {"rows": rows},
            )
            conn.execute(text("analyze users"))
        with engine.connect() as conn:
            return int(conn.execute(select(func.count()).select_from(User)).scalar_one())
    finally:
        engine.dispose()
