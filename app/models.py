"""The seed's table and response schema, shared by both apps."""

from pydantic import BaseModel, ConfigDict
from sqlalchemy import Integer, String
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column


class Base(DeclarativeBase):
    pass


class User(Base):
    __tablename__ = "users"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    email: Mapped[str] = mapped_column(String(255), index=True)


class UserOut(BaseModel):
    """The seed's response model. Its validation is what takes a second threadpool token."""

    model_config = ConfigDict(from_attributes=True)

    email: str


class Inserted(BaseModel):
    id: int
