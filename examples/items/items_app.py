"""A small FastAPI service of the kind this tool is for, written as its users write theirs: sync
endpoints, SQLAlchemy with psycopg2, a session per request from a `Depends` generator. It is not
part of the demo: docs/your-service.md measures it with `APP=items_app:app
APP_DIR=examples/items`, and the tests use it as "your own app" (another path, another response
shape, its own settings).

It runs unchanged on FastAPI 0.63 with SQLAlchemy 1.4 (2021) and on today's versions.
"""

import os

from fastapi import Depends, FastAPI
from sqlalchemy import create_engine, text
from sqlalchemy.orm import Session, sessionmaker

engine = create_engine(
    os.environ["ITEMS_DATABASE_URL"],
    pool_size=int(os.environ.get("ITEMS_POOL_SIZE", "5")),
    max_overflow=int(os.environ.get("ITEMS_MAX_OVERFLOW", "10")),
)
SessionLocal = sessionmaker(bind=engine)
app = FastAPI()


@app.on_event("startup")
def create_items() -> None:
    with engine.begin() as conn:
        conn.execute(
            text(
                "CREATE TABLE IF NOT EXISTS items "
                "(id serial PRIMARY KEY, name text NOT NULL, price numeric NOT NULL)"
            )
        )
        if not conn.execute(text("SELECT count(*) FROM items")).scalar():
            for i in range(1, 21):
                conn.execute(
                    text("INSERT INTO items (name, price) VALUES (:n, :p)"),
                    {"n": f"item {i}", "p": i * 1.5},
                )


def get_session():
    session = SessionLocal()
    try:
        yield session
    finally:
        session.close()


@app.get("/items")
def list_items(limit: int = 10, session: Session = Depends(get_session)) -> dict:
    rows = session.execute(
        text("SELECT id, name, price FROM items ORDER BY id LIMIT :limit"), {"limit": limit}
    ).fetchall()
    items = [{"id": r.id, "name": r.name, "price": float(r.price)} for r in rows]
    return {"count": len(items), "items": items}


@app.get("/items/{item_id}")
def get_item(item_id: int, session: Session = Depends(get_session)) -> dict:
    row = session.execute(
        text("SELECT id, name, price FROM items WHERE id = :id"), {"id": item_id}
    ).fetchone()
    return {"item": {"id": row.id, "name": row.name, "price": float(row.price)} if row else None}
