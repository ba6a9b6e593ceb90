"""The async version of items_app.py: the same endpoints and answers, written as an async
service is (`async def` endpoints, SQLAlchemy's asyncio extension with asyncpg, a session per
request from a `Depends` generator), so that `make decide` can set one against the other:
`APP=items_app:app,items_async:app MODES=sync,async`. Either one creates the table and its 20
items on start-up if they are not there."""

import os

from fastapi import Depends, FastAPI
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker, create_async_engine

engine = create_async_engine(
    os.environ["ITEMS_DATABASE_URL"].replace("postgresql://", "postgresql+asyncpg://", 1),
    pool_size=int(os.environ.get("ITEMS_POOL_SIZE", "5")),
    max_overflow=int(os.environ.get("ITEMS_MAX_OVERFLOW", "10")),
)
SessionLocal = async_sessionmaker(engine)
app = FastAPI()


@app.on_event("startup")
async def create_items() -> None:
    async with engine.begin() as conn:
        await conn.execute(
            text(
                "CREATE TABLE IF NOT EXISTS items "
                "(id serial PRIMARY KEY, name text NOT NULL, price numeric NOT NULL)"
            )
        )
        if not (await conn.execute(text("SELECT count(*) FROM items"))).scalar():
            for i in range(1, 21):
                await conn.execute(
                    text("INSERT INTO items (name, price) VALUES (:n, :p)"),
                    {"n": f"item {i}", "p": i * 1.5},
                )


async def get_session():
    async with SessionLocal() as session:
        yield session


@app.get("/items")
async def list_items(limit: int = 10, session: AsyncSession = Depends(get_session)) -> dict:
    rows = (
        await session.execute(
            text("SELECT id, name, price FROM items ORDER BY id LIMIT :limit"), {"limit": limit}
        )
    ).fetchall()
    items = [{"id": r.id, "name": r.name, "price": float(r.price)} for r in rows]
    return {"count": len(items), "items": items}


@app.get("/items/{item_id}")
async def get_item(item_id: int, session: AsyncSession = Depends(get_session)) -> dict:
    row = (
        await session.execute(
            text("SELECT id, name, price FROM items WHERE id = :id"), {"id": item_id}
        )
    ).fetchone()
    return {"item": {"id": row.id, "name": row.name, "price": float(row.price)} if row else None}
