"""The seed's table and response schema, shared by both apps and both stacks.

The table is declared in the classic style (`declarative_base`), which SQLAlchemy 1.4 and 2.x
both read the same way; `DeclarativeBase` is 2.0-only, and so is `mapped_column`, which
app/compat.py gives 1.4 as the plain `Column` it maps the same.
"""

from typing import Any

from pydantic import BaseModel
from sqlalchemy import Integer, String
from sqlalchemy.orm import Mapped, declarative_base

from app.compat import PYDANTIC_V1, mapped_column

Base: Any = declarative_base()  # a class made at run time: to a type checker, any class

# What the driver layer sends, written as SQLAlchemy renders select(User) for the other layers
# (and as pgbench's ceiling runs it); %s is psycopg's placeholder, asyncpg's is $1.
LIST_SQL = "SELECT users.id, users.email FROM users"
INSERT_SQL = "INSERT INTO users (email) VALUES (%s) RETURNING users.id"
INSERT_SQL_ASYNCPG = INSERT_SQL.replace("%s", "$1")


class User(Base):
    __tablename__ = "users"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    email: Mapped[str] = mapped_column(String(255), index=True, nullable=False)


class UserOut(BaseModel):
    """The seed's response model. Its validation is what takes a second threadpool token."""

    if PYDANTIC_V1:  # the 2021 stack: pydantic 1 spells from_attributes `orm_mode`

        class Config:
            orm_mode = True

    else:
        model_config = {"from_attributes": True}

    email: str


class Inserted(BaseModel):
    id: int
