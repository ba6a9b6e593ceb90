"""The one settings class both apps read, from the environment, at start.

A user sets them by the names `make bench` gives them (POOLS, TOKENS, STYLE, DRIVERS, ...):
in the shell or .env for compose, or by the harness for the servers it starts. The apps' older
names (POOL_SIZE and MAX_OVERFLOW, THREADPOOL_TOKENS, SESSION_STYLE, SYNC_DRIVER and
ASYNC_DRIVER) are still read, and a line at start says which name replaces them.
"""

import re
import sys
from typing import Any, Literal

from pydantic import Field, ValidationError
from sqlalchemy.engine import URL, make_url
from sqlalchemy.exc import ArgumentError

from app import compat
from app.compat import PYDANTIC_V1, BaseSettings, before_validation, field_validator
from app.styles import (
    ASYNC_DRIVERS,
    NAMES,
    OLD_NAMES,
    SYNC_DRIVERS,
    Driver,
    Layer,
    SessionStyle,
)

__all__ = [
    "NAMES",
    "OLD_NAMES",
    "Driver",
    "Layer",
    "SessionStyle",
    "Settings",
    "SettingsError",
    "load_settings",
]


def _seconds(text: str) -> float:
    match = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*(ms|s|m)?\s*", text)
    if not match:
        raise ValueError(f"POOL_TIMEOUT: {text!r} is not a duration, e.g. 30s or 500ms")
    return float(match[1]) * {"ms": 0.001, "s": 1.0, "m": 60.0, None: 1.0}[match[2]]


def _drivers(text: str) -> dict[str, str]:
    """DRIVERS as the two apps' drivers, in any order: each app takes the one listed that fits
    it alone (psycopg2 the sync app, asyncpg the async one), and psycopg, which fits both, drives
    whichever has none; a driver left driving no app, or two for one app, is refused."""
    names = list(dict.fromkeys(t.strip() for t in text.split(",") if t.strip()))
    for name in names:
        if name not in {d.value for d in Driver}:
            raise ValueError(f"DRIVERS: {name!r} is not a driver; choose from {', '.join(Driver)}")
    out: dict[str, str] = {}
    for field, fits in (("SYNC_DRIVER", SYNC_DRIVERS), ("ASYNC_DRIVER", ASYNC_DRIVERS)):
        alone = [n for n in names if Driver(n) in fits and n != Driver.psycopg]
        if len(alone) > 1:
            raise ValueError(f"DRIVERS: {' and '.join(alone)} both drive one app; give one")
        if alone:
            out[field] = alone[0]
        elif Driver.psycopg.value in names:
            out[field] = Driver.psycopg.value
    if Driver.psycopg.value in names and Driver.psycopg.value not in out.values():
        raise ValueError(
            f"DRIVERS: {', '.join(names)}: psycopg would drive no app (each has a driver)"
        )
    return out


def one_name_each(values: dict[str, Any]) -> dict[str, Any]:
    """The names a user sets, as the fields the apps read; an old name alone is read as it
    always was; a setting given by both its names is refused. Empty values count as unset
    (compose passes every name, set or not)."""
    values = {k: v for k, v in values.items() if v != ""}
    out = {k: v for k, v in values.items() if k not in NAMES or not NAMES[k]}
    for new, olds in NAMES.items():
        if new not in values or not olds:
            continue
        if both := [old for old in olds if old in values]:
            raise ValueError(
                f"{new} and {', '.join(both)} set the same thing; {', '.join(both)} is its old "
                f"name: give {new} only"
            )
        text = str(values[new])
        if new == "POOLS":
            match = re.fullmatch(r"\s*(\d+)\+(\d+)\s*", text)
            if not match:
                raise ValueError(
                    f"POOLS: {text!r} is not one pool SIZE+OVERFLOW, e.g. 5+10 (an app serves "
                    "one pool: run one compose stack per pool)"
                )
            out |= {"POOL_SIZE": match[1], "MAX_OVERFLOW": match[2]}
        elif new == "DRIVERS":
            out |= _drivers(text)
        else:
            out[olds[0]] = values[new]
    if isinstance(out.get("POOL_TIMEOUT"), str):
        out["POOL_TIMEOUT"] = _seconds(out["POOL_TIMEOUT"])
    return out


class Settings(BaseSettings):
    if PYDANTIC_V1:  # the 2021 stack: pydantic 1's own BaseSettings, configured by a class

        class Config:
            case_sensitive = True
            frozen = True
            extra = "ignore"
            validate_all = False  # as in pydantic 2, defaults skip the validators below

    else:
        model_config = {"case_sensitive": True, "frozen": True, "extra": "ignore"}

    DATABASE_URL: str
    # The names a user sets (NAMES), read into the fields below by `one_name_each`.
    POOLS: str | None = None
    TOKENS: str | None = None
    STYLE: str | None = None
    DRIVERS: str | None = None
    POOL_SIZE: int = Field(5, ge=1, le=10_000)
    MAX_OVERFLOW: int = Field(10, ge=0, le=10_000)
    POOL_TIMEOUT: float = Field(30.0, gt=0, le=3600)
    THREADPOOL_TOKENS: int = Field(40, ge=1, le=10_000)
    SESSION_STYLE: SessionStyle = SessionStyle.dependency
    # When a `dependency` session's exit runs: FastAPI's default (request) runs it after the
    # response is sent, so the connection is held through serialization and sending; function
    # runs it when the endpoint returns. An experiment's setting: no harness axis sets it.
    DEPENDENCY_SCOPE: Literal["request", "function"] = "request"
    # The side channel (app/occupancy.py); off only to measure what it costs.
    OCCUPANCY: bool = True
    # Where each worker process registers the port of a side channel of its own, so that every
    # process is sampled, not whichever accepts the server's port; set by the harness per server
    # start. Unset: `GET /_occupancy` on the server's port only.
    OCCUPANCY_DIR: str | None = None
    # One driver per app, so one environment serves both apps (and every compose service).
    SYNC_DRIVER: Driver = Driver.psycopg2
    ASYNC_DRIVER: Driver = Driver.asyncpg
    LAYER: Layer = Layer.orm

    @before_validation
    def _one_name_each(cls, values: dict[str, Any]) -> dict[str, Any]:
        return one_name_each(values)

    @field_validator("DATABASE_URL")
    @classmethod
    def _postgres_url(cls, value: str) -> str:
        try:
            url = make_url(value)
        except ArgumentError as exc:
            raise ValueError(f"not a database URL: {value!r}") from exc
        if url.get_backend_name() != "postgresql":
            raise ValueError(f"must be a postgresql:// URL, got {url.drivername!r}")
        return value

    # What the 2021 stack lacks is refused, not ignored. A field validator runs only for a value
    # that was given (an environment variable or an argument), never for the default: so under
    # Starlette < 0.15 any THREADPOOL_TOKENS is refused, even 40, and its absence is accepted.
    @field_validator("THREADPOOL_TOKENS")
    @classmethod
    def _tokens_have_a_limiter(cls, value: int) -> int:
        if not compat.ANYIO_THREADPOOL:
            raise ValueError(
                f"cannot be set with Starlette {compat.STARLETTE_VERSION}: it runs sync code on "
                "asyncio's default executor, whose size is fixed at min(32, cpus + 4) = "
                f"{compat.default_executor_threads()} threads here; unset TOKENS "
                "(THREADPOOL_TOKENS)"
            )
        return value

    @field_validator("SESSION_STYLE")
    @classmethod
    def _style_is_available(cls, value: SessionStyle) -> SessionStyle:
        if value is SessionStyle.limited and not compat.has_max_concurrency():
            from fastapi import __version__ as fastapi_version

            raise ValueError(
                f"'limited' needs Depends(max_concurrency=...), which FastAPI {fastapi_version} "
                "does not have (FastAPI 0.163+); choose dependency or context"
            )
        return value

    @field_validator("DEPENDENCY_SCOPE")
    @classmethod
    def _scope_is_available(cls, value: str) -> str:
        if value == "function" and not compat.has_dependency_scope():
            raise ValueError("function needs Depends(scope=...) (FastAPI 0.121+); unset it")
        return value

    @field_validator("SYNC_DRIVER")
    @classmethod
    def _sync_driver(cls, value: Driver) -> Driver:
        return _available(value, SYNC_DRIVERS, "sync")

    @field_validator("ASYNC_DRIVER")
    @classmethod
    def _async_driver(cls, value: Driver) -> Driver:
        return _available(value, ASYNC_DRIVERS, "async")

    @property
    def pool_capacity(self) -> int:
        """Connections one process can hold at once: pool_size + max_overflow."""
        return self.POOL_SIZE + self.MAX_OVERFLOW

    def url_for(self, driver: str) -> URL:
        # Name the driver explicitly: since SQLAlchemy 2.1 a bare postgresql:// means psycopg 3.
        return make_url(self.DATABASE_URL).set(drivername=f"postgresql+{driver}")

    @property
    def libpq_url(self) -> str:
        """DATABASE_URL as the drivers themselves take it (postgresql://, password kept)."""
        url = make_url(self.DATABASE_URL).set(drivername="postgresql")
        return url.render_as_string(hide_password=False)


def _available(value: Driver, fits: tuple[Driver, ...], mode: str) -> Driver:
    if value not in fits:
        raise ValueError(f"{value} is not a driver of the {mode} app; choose {' or '.join(fits)}")
    if value is Driver.psycopg and compat.SQLALCHEMY_V1:
        raise ValueError(
            f"psycopg (3) needs SQLAlchemy 2's postgresql+psycopg dialect, and SQLAlchemy "
            f"{compat.SQLALCHEMY_VERSION} (the 2021 stack) has none; choose {fits[0]}"
        )
    return value


class SettingsError(SystemExit):
    """Raised at start for invalid settings; exits with one readable message, not a traceback."""


def old_names_in(environ: dict[str, str]) -> str:
    """The line an app says at start when the environment uses old names ('' if none)."""
    old = [name for name in OLD_NAMES if environ.get(name)]
    if not old:
        return ""
    news = ", ".join(dict.fromkeys(OLD_NAMES[name] for name in old))
    what = "old names" if len(old) > 1 else "an old name"
    return f"note: {', '.join(old)}: {what}, still read; set {news} instead (make bench's names)"


def load_settings() -> Settings:
    import os

    environ = dict(os.environ)
    if line := old_names_in(environ):
        print(line, file=sys.stderr)

    def named(field: str) -> str:
        """A field's error under the name the user gave it (TOKENS for THREADPOOL_TOKENS)."""
        new = OLD_NAMES.get(field)
        return new if new and environ.get(new) else field

    try:
        return Settings()  # type: ignore[call-arg]  # fields come from the environment
    except ValidationError as exc:
        # A field's error names the field; one of several fields (one_name_each) names them.
        problems = "; ".join(
            f"{'.'.join(named(str(p)) for p in err['loc'])}: {err['msg']}"
            if err["loc"] and err["loc"] != ("__root__",)
            else err["msg"].removeprefix("Value error, ")
            for err in exc.errors()
        )
        raise SettingsError(f"invalid settings: {problems}") from None
