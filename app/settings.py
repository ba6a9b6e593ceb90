"""The one settings class both apps read, from the environment, at start."""

from pydantic import Field, ValidationError
from sqlalchemy.engine import URL, make_url
from sqlalchemy.exc import ArgumentError

from app import compat
from app.compat import PYDANTIC_V1, BaseSettings, field_validator
from app.styles import ASYNC_DRIVERS, SYNC_DRIVERS, Driver, Layer, SessionStyle

__all__ = ["Driver", "Layer", "SessionStyle", "Settings", "SettingsError", "load_settings"]


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
    POOL_SIZE: int = Field(5, ge=1, le=10_000)
    MAX_OVERFLOW: int = Field(10, ge=0, le=10_000)
    POOL_TIMEOUT: float = Field(30.0, gt=0, le=3600)
    THREADPOOL_TOKENS: int = Field(40, ge=1, le=10_000)
    SESSION_STYLE: SessionStyle = SessionStyle.dependency
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
                f"{compat.default_executor_threads()} threads here; unset THREADPOOL_TOKENS"
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


def load_settings() -> Settings:
    try:
        return Settings()  # type: ignore[call-arg]  # fields come from the environment
    except ValidationError as exc:
        problems = "; ".join(
            f"{'.'.join(str(p) for p in err['loc']) or 'settings'}: {err['msg']}"
            for err in exc.errors()
        )
        raise SettingsError(f"invalid settings: {problems}") from None
