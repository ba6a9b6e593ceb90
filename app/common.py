"""What the sync and async apps share beyond the table: how a session style becomes a Depends,
and the one error every driver pool's timeout becomes."""

import uuid
from collections.abc import Callable
from typing import Any

from fastapi import Depends

from app.settings import SessionStyle, Settings


def session_dependency(dependency: Callable[..., Any], settings: Settings) -> Any:
    """One Depends object for all routes of an app, so `limited` has one limit per process."""
    options: dict[str, Any] = {}
    if settings.SESSION_STYLE is SessionStyle.limited:
        options["max_concurrency"] = settings.pool_capacity
    if settings.DEPENDENCY_SCOPE == "function":
        options["scope"] = "function"
    return Depends(dependency, **options)


class PoolExhausted(TimeoutError):
    """No connection within POOL_TIMEOUT: what the driver layer raises for every driver's pool,
    worded like SQLAlchemy's QueuePool timeout, so the harness counts both the same way."""

    def __init__(self, settings: Settings, driver: str) -> None:
        super().__init__(
            f"{driver} pool limit of size {settings.POOL_SIZE} overflow {settings.MAX_OVERFLOW} "
            f"reached, connection timed out, timeout {settings.POOL_TIMEOUT:.2f}"
        )


def new_email() -> str:
    return f"{uuid.uuid4().hex}@example.com"
